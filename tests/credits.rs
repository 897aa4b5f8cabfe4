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

/// The client against the simulator in-process: reads cost one credit, inserts one per ten
/// records, Zoho's remaining-credits header is read, and an exhausted budget is a 429.
#[tokio::test]
async fn the_client_counts_credits_and_reads_zoho_s_remaining_header() {
    use ami_zoho_bridge::config::AccountConfig;
    use ami_zoho_bridge::secret::Secret;
    use ami_zoho_bridge::zoho::api::ZohoApi;
    use ami_zoho_bridge::zoho::oauth::OAuth;
    use ami_zoho_bridge::zoho::sim::{self, SimClient, SimHandle, SimLimits, BRIDGE_SCOPES};
    use ami_zoho_bridge::zoho::ZohoError;
    use serde_json::{json, Map, Value};
    use std::sync::Arc;

    let mut seed = sim::demo_seed();
    seed.clients.push(SimClient {
        client_id: "1000.CREDITS".into(),
        client_secret: "credits-secret".into(),
    });
    // A budget of 10 credits; Zoho's header once half is spent.
    let limits = SimLimits {
        daily_credits: Some(10),
        ..SimLimits::default()
    };
    let sim = SimHandle::start("127.0.0.1:0".parse().unwrap(), seed, limits)
        .await
        .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let acc = AccountConfig {
        accounts_url: Some(sim.url("eu")),
        api_domain: Some(sim.url("eu")),
        client_id: "1000.CREDITS".into(),
        client_secret: Some(Secret::new("credits-secret")),
        admin_email: Some("admin@example.com".into()),
        token_file: Some(dir.path().join("tokens.json")),
        timeout_seconds: 5.0,
        phone_index: false,
        ..AccountConfig::default()
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let oauth = Arc::new(OAuth::new("main", &acc, http.clone()).expect("oauth"));
    oauth
        .exchange_code(&sim.grant_code("1000.CREDITS", "eu", BRIDGE_SCOPES, None))
        .await
        .expect("grant");
    let api = ZohoApi::new(oauth, &acc, "IT", http);
    // One read: the user list (1 credit).
    api.admin().await.expect("admin");
    assert_eq!(api.credits_spent(), 1);
    assert_eq!(
        api.credits_remaining(),
        None,
        "no header before half is spent"
    );
    // 23 records in one insert: ⌈23/10⌉ = 3 credits.
    let record = |i: usize| -> Map<String, Value> {
        let v = json!({
            "Subject": format!("credit test {i}"),
            "Call_Type": "Inbound",
            "Call_Start_Time": "2026-11-23T21:32:02+01:00",
            "Call_Duration": "01:00",
        });
        v.as_object().expect("object").clone()
    };
    let records: Vec<_> = (0..23).map(record).collect();
    let out = api.insert("Calls", &records, None).await.expect("insert");
    assert_eq!(out.len(), 23);
    assert_eq!(api.credits_spent(), 4);
    assert_eq!(sim.stats().credits, 4);
    // Two more records → 5 of 10 spent: Zoho now says 5 remain.
    api.insert("Calls", &records[..2], None)
        .await
        .expect("insert");
    assert_eq!(api.credits_spent(), 5);
    assert_eq!(api.credits_remaining(), Some(5));
    let five_more: Vec<_> = (0..5).map(|_| records[..1].to_vec()).collect();
    for r in &five_more {
        api.insert("Calls", r, None).await.expect("insert");
    }
    assert_eq!(api.credits_remaining(), Some(0));
    // The budget is gone: 429, which costs nothing and counts as throttled.
    let e = api
        .insert("Calls", &records[..1], None)
        .await
        .expect_err("no credits left");
    assert!(matches!(e, ZohoError::Throttled { .. }), "{e:?}");
    assert_eq!(api.throttled_seen(), 1);
    assert_eq!(api.credits_spent(), 10);
    assert_eq!(sim.stats().throttled_credits, 1);
    assert_eq!(api.in_flight_limit(), 4, "the 429 halved the window of 8");
}
