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
