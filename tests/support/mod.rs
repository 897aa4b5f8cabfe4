//! Shared helpers of the integration tests.
#![allow(dead_code)]

pub mod ami_server;

use std::io::Read;
use std::path::{Path, PathBuf};

/// The project's root (tests run from anywhere).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A capture's recorded bytes (`.gz` decompressed).
pub fn read_capture(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .expect("gunzip");
        out
    } else {
        raw
    }
}

/// Runs recorded AMI bytes through the call tracker, as `replay --emit calls` does, and
/// returns the finished calls in end order.
pub fn finished_calls(
    bytes: &[u8],
    cfg: ami_zoho_bridge::config::CallsConfig,
) -> Vec<ami_zoho_bridge::calls::Call> {
    use ami_zoho_bridge::ami::replay::Replay;
    use ami_zoho_bridge::ami::SourceEvent;
    use ami_zoho_bridge::calls::{Micros, Output, Tracker};
    let mut tracker = Tracker::new(cfg);
    let mut out = Vec::new();
    for ev in Replay::new(bytes) {
        match ev.expect("decode") {
            SourceEvent::Message(m) => tracker.on_message(&m, Micros(0), &mut out),
            SourceEvent::Reconnected { .. } => tracker.on_reconnect(),
            _ => {}
        }
    }
    tracker.finish(&mut out);
    out.into_iter()
        .filter_map(|o| match o {
            Output::Finished(c) => Some(*c),
            Output::Moment(..) => None,
        })
        .collect()
}

/// The project's binary, as a command to run.
pub fn bridge() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_ami-zoho-bridge"))
}

/// Asserts the command succeeded (showing its stderr if not) and returns its stdout.
pub fn success_stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
