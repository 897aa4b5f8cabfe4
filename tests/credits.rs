//! Zoho's credits and concurrency cap, end to end: `bench-deliver` (the real pipeline, store
//! and delivery workers) replays the recorded busy hour into the Zoho simulator with latency
//! and a cap on requests in flight. Expected counts come from the capture's truth file and
//! from Zoho's pricing worked by hand, never from the code under test. Nothing here is timed:
//! timings are what the benchmark prints, not what the tests assert.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

const CAPTURE: &str = "fixtures/ami-sip/busyhour-seed11.ami.gz";
const TRUTH: &str = "fixtures/ami-sip/busyhour-seed11.truth.json";

fn truth_calls() -> usize {
    let text = std::fs::read_to_string(support::root().join(TRUTH)).expect("truth");
    let truth: serde_json::Value = serde_json::from_str(&text).expect("truth json");
    truth["calls"].as_array().expect("calls").len()
}

/// The lab's bridge.toml with a `[delivery]` section and account overrides appended.
fn config(dir: &std::path::Path, delivery: &str, account: &str) -> std::path::PathBuf {
    let base = std::fs::read_to_string(support::root().join("fixtures/ami-sip/bridge.toml"))
        .expect("bridge.toml");
    let mut doc: toml::Table = base.parse().expect("toml");
    let extra: toml::Table = account.parse().expect("account toml");
    let main = doc["zoho"]["accounts"]["main"]
        .as_table_mut()
        .expect("account");
    for (k, v) in extra {
        main.insert(k, v);
    }
    let path = dir.join("bridge.toml");
    std::fs::write(
        &path,
        format!(
            "{}\n[delivery]\n{delivery}\n",
            toml::to_string(&doc).expect("toml out")
        ),
    )
    .expect("write config");
    path
}

/// Runs `bench-deliver` (at most three minutes) and returns its last line's `key=value`s.
fn bench(config: &std::path::Path, args: &[&str]) -> HashMap<String, String> {
    let mut child = support::bridge()
        .arg("bench-deliver")
        .arg(support::root().join(CAPTURE))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run bench-deliver");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bench-deliver did not finish in three minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    let text = support::success_stdout(&out);
    let last = text.lines().last().expect("a last line");
    last.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(m: &HashMap<String, String>, k: &str) -> u64 {
    m.get(k)
        .unwrap_or_else(|| panic!("no {k} in {m:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{k} is not a count: {m:?}"))
}

#[test]
fn inserts_carry_ten_records_and_credits_are_counted_as_zoho_counts_them() {
    let calls = truth_calls();
    let dir = tempfile::tempdir().expect("tempdir");
    // A long linger: every call of the capture is due within it at 1000×, so only the last
    // partial batch waits for it, and the batch sizes do not depend on the machine's speed.
    let cfg = config(
        dir.path(),
        "linger_seconds = 5\nbatch_size = 50\nworkers = 2",
        "",
    );
    let m = bench(
        &cfg,
        &[
            "--speed",
            "1000",
            "--zoho-latency-ms",
            "50",
            "--zoho-concurrency",
            "10",
        ],
    );
    assert_eq!(num(&m, "activities") as usize, calls, "{m:?}");
    assert_eq!(num(&m, "zoho_records") as usize, calls, "{m:?}");
    assert_eq!(num(&m, "duplicates"), 0, "{m:?}");
    assert_eq!(num(&m, "failed") + num(&m, "pending"), 0, "{m:?}");
    // 121 calls: twelve credits pay for 120 records in tens, one more for the last record.
    assert_eq!(
        num(&m, "insert_credits") as usize,
        calls.div_ceil(10),
        "inserts in tens: {m:?}"
    );
    assert!(num(&m, "inserts") < calls as u64 / 2, "{m:?}");
    // The bridge's own count equals the simulator's (Zoho's) count, reads included.
    assert_eq!(num(&m, "credits"), num(&m, "zoho_credits"), "{m:?}");
    assert!(num(&m, "credits") > num(&m, "insert_credits"), "{m:?}");
    assert_eq!(num(&m, "throttled_429"), 0, "{m:?}");
    assert!(
        num(&m, "sim_max_in_flight") <= 8,
        "max_in_flight default: {m:?}"
    );
}

#[test]
fn a_429_from_the_cap_slows_the_bridge_down_and_nothing_is_lost_or_doubled() {
    let calls = truth_calls();
    let dir = tempfile::tempdir().expect("tempdir");
    // Four workers sending at once into an org that takes one request at a time.
    let cfg = config(
        dir.path(),
        "linger_seconds = 0\nbatch_size = 5\nworkers = 4\nbackoff_initial_seconds = 0.2\nbackoff_max_seconds = 2",
        "max_in_flight = 8",
    );
    let m = bench(
        &cfg,
        &[
            "--speed",
            "1000",
            "--zoho-latency-ms",
            "100",
            "--zoho-concurrency",
            "1",
        ],
    );
    let throttled = num(&m, "throttled_429");
    assert!(throttled > 0, "the cap was met: {m:?}");
    assert_eq!(throttled, num(&m, "sim_429_concurrency"), "{m:?}");
    assert_eq!(num(&m, "activities") as usize, calls, "{m:?}");
    assert_eq!(num(&m, "zoho_records") as usize, calls, "{m:?}");
    assert_eq!(num(&m, "duplicates"), 0, "{m:?}");
    assert_eq!(num(&m, "failed") + num(&m, "pending"), 0, "{m:?}");
    // A 429 costs no credit: the two counts still agree.
    assert_eq!(num(&m, "credits"), num(&m, "zoho_credits"), "{m:?}");
}
