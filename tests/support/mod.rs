//! Shared helpers of the integration tests.
#![allow(dead_code)]

pub mod ami_server;
pub mod live_pbx;
pub mod originate_server;
pub mod pbx;
pub mod pbx_model;

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

/// Runs recorded AMI bytes through the call tracker, as `replay --emit calls` and the daemon
/// do (skimming the events the tracker does not read), and returns the finished calls in end
/// order.
pub fn finished_calls(
    bytes: &[u8],
    cfg: ami_zoho_bridge::config::CallsConfig,
) -> Vec<ami_zoho_bridge::calls::Call> {
    finished_calls_with(bytes, cfg, true)
}

/// [`finished_calls`], with or without skimming.
pub fn finished_calls_with(
    bytes: &[u8],
    cfg: ami_zoho_bridge::config::CallsConfig,
    skim: bool,
) -> Vec<ami_zoho_bridge::calls::Call> {
    use ami_zoho_bridge::ami::replay::Replay;
    use ami_zoho_bridge::ami::AmiCodec;
    use ami_zoho_bridge::calls::{tracker_codec, Micros, Output, Tracker};
    let mut tracker = Tracker::new(cfg);
    let mut out = Vec::new();
    let codec = match skim {
        true => tracker_codec(),
        false => AmiCodec::default(),
    };
    for ev in Replay::new(bytes).with_codec(codec) {
        tracker.feed(&ev.expect("decode"), Micros(0), &mut out);
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

/// `zoho authorize --account ACCOUNT --code CODE --config CONFIG` with the account's client
/// secret in `ZOHO_CLIENT_SECRET`, as an admin runs it once; panics (with its stderr) if it
/// fails. The code comes from the simulator (`SimHandle::grant_code`).
pub async fn authorize(config: &Path, account: &str, code: String, client_secret: &str) {
    let (config, account, secret) = (
        config.to_path_buf(),
        account.to_string(),
        client_secret.to_string(),
    );
    let out = tokio::task::spawn_blocking(move || {
        bridge()
            .args(["zoho", "authorize", "--account", &account, "--code", &code])
            .arg("--config")
            .arg(&config)
            .env("ZOHO_CLIENT_SECRET", &secret)
            .output()
            .expect("run authorize")
    })
    .await
    .expect("join");
    success_stdout(&out);
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

/// The PostgreSQL cluster for tests (`scripts/pg-test-cluster.sh` prints it). Absent: the
/// PostgreSQL tests say so and pass, unless `AZB_REQUIRE_PG=1` (CI) makes that a failure.
pub fn pg_url() -> Option<String> {
    let url = std::env::var("AZB_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        assert!(
            std::env::var("AZB_REQUIRE_PG").as_deref() != Ok("1"),
            "AZB_REQUIRE_PG=1 but AZB_TEST_PG_URL is not set"
        );
        eprintln!(
            "SKIPPED: no PostgreSQL (run `eval \"$(scripts/pg-test-cluster.sh)\"` to test it)"
        );
    }
    url
}

/// Creates an empty database on the cluster at `base` and returns its URL.
pub async fn fresh_pg_database(base: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "azb_test_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(base)
        .await
        .expect("connect to AZB_TEST_PG_URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    let (prefix, _) = base.rsplit_once('/').expect("database in the URL");
    format!("{prefix}/{name}")
}
