//! The delivery fault matrix: the real daemon binary reading a real TCP AMI server that
//! replays a recorded busy hour, delivering into the Zoho simulator while things fail.
//! In every case the Call records in the simulator are exactly the calls of the truth file:
//! none missing, none twice.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ami_zoho_bridge::zoho::sim::{self, Fault, SimClient, SimHandle, SimLimits, BRIDGE_SCOPES};
use serde_json::Value;
use support::ami_server::{capture_body, AmiServer, ServerConfig};

const CLIENT_ID: &str = "1000.LABCLIENT";
const CLIENT_SECRET: &str = "lab-client-secret";
const AMI_SECRET: &str = "lab-ami-secret";
const HTTP_TOKEN: &str = "lab-http-token";
const CAPTURE: &str = "fixtures/ami-sip/busyhour-seed11.ami.gz";
const TRUTH: &str = "fixtures/ami-sip/busyhour-seed11.truth.json";

struct Rig {
    sim: SimHandle,
    ami: AmiServer,
    dir: tempfile::TempDir,
    /// Linkedids of the truth file's calls: each must become exactly one Call record.
    expected: Vec<String>,
    store_url: String,
}

#[derive(Default, Clone)]
struct Options {
    /// Another capture and its truth file than the busy hour.
    capture: Option<(&'static str, &'static str)>,
    /// Contacts added to the simulator's org: (id, name, phone).
    contacts: Vec<(&'static str, &'static str, &'static str)>,
    /// Serve the HTTP API on this port (0: any), with the token `HTTP_TOKEN`.
    http_port: Option<u16>,
    /// Overrides `Call_Purpose` of the default configuration (a value the org may not have).
    call_purpose: Option<String>,
    cut_at: Option<usize>,
    /// Unique key field on the Zoho side; without it, unknown outcomes are checked by search.
    unique_field: bool,
    timeout_seconds: Option<f64>,
    store_url: Option<String>,
    /// Stream the capture to every connection (bridges on one PBX), not to the first only.
    every_connection: bool,
}

fn truth_linkedids(path: &str) -> Vec<String> {
    let text = std::fs::read_to_string(support::root().join(path)).expect("truth");
    let truth: Value = serde_json::from_str(&text).expect("truth json");
    let mut ids: Vec<String> = truth["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c["linkedid"].as_str().expect("linkedid").to_string())
        .collect();
    ids.sort();
    ids
}

impl Rig {
    async fn start(opts: Options) -> Rig {
        let mut seed = sim::demo_seed();
        for (id, name, phone) in &opts.contacts {
            seed.contacts.push(sim::SimPerson {
                id: id.to_string(),
                full_name: name.to_string(),
                phones: [("Phone".to_string(), phone.to_string())].into(),
                owner_email: None,
            });
        }
        seed.clients.push(SimClient {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
        });
        let sim = SimHandle::start("127.0.0.1:0".parse().unwrap(), seed, SimLimits::default())
            .await
            .expect("simulator");
        let (capture, truth) = opts.capture.unwrap_or((CAPTURE, TRUTH));
        let body = capture_body(&support::read_capture(&support::root().join(capture)));
        let ami = AmiServer::start(ServerConfig {
            username: "bridge".into(),
            secret: AMI_SECRET.into(),
            body,
            answer_ping: true,
            cut_at: opts.cut_at,
            once: !opts.every_connection,
        })
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let store_url = opts
            .store_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bridge.db").display()));
        let rig = Rig {
            sim,
            ami,
            dir,
            expected: truth_linkedids(truth),
            store_url,
        };
        rig.write_config("a", &opts);
        rig.authorize().await;
        rig
    }

    fn config(&self, instance: &str) -> PathBuf {
        self.dir.path().join(format!("bridge-{instance}.toml"))
    }

    /// The lab's own bridge.toml, pointed at this AMI server, simulator and store.
    fn write_config(&self, instance: &str, opts: &Options) -> PathBuf {
        let text = std::fs::read_to_string(support::root().join("fixtures/ami-sip/bridge.toml"))
            .expect("bridge.toml");
        let mut doc: toml::Table = text.parse().expect("toml");
        let url = self.sim.url("eu");
        let zoho = doc["zoho"].as_table_mut().expect("zoho");
        let main = zoho["accounts"]["main"].as_table_mut().expect("account");
        main.insert("accounts_url".into(), url.clone().into());
        main.insert("api_domain".into(), url.into());
        main.insert(
            "token_file".into(),
            self.dir
                .path()
                .join("tokens.json")
                .display()
                .to_string()
                .into(),
        );
        // Shorter than the 3 s lease below, as the configuration requires.
        main.insert(
            "timeout_seconds".into(),
            opts.timeout_seconds.unwrap_or(1.0).into(),
        );
        if let Some(p) = &opts.call_purpose {
            zoho["configurations"]["default"]["fields"]
                .as_table_mut()
                .expect("fields")
                .insert("Call_Purpose".into(), p.clone().into());
        }
        if opts.unique_field {
            zoho["configurations"]["default"]
                .as_table_mut()
                .expect("configuration")
                .insert("unique_field".into(), "Bridge_Key__c".into());
        }
        let extra = format!(
            r#"
[[pbx]]
name = "lab"
host = "127.0.0.1"
port = {port}
username = "bridge"
secret = "{AMI_SECRET}"
auth = "md5"

[store]
url = "{store}"

[delivery]
workers = 2
batch_size = 20
lease_seconds = 3
backoff_initial_seconds = 0.1
backoff_max_seconds = 1
poll_seconds = 0.2
# Each due row sent at once: the fault matrix is about faults, not batching (tests/credits.rs).
linger_seconds = 0
instance = "{instance}"

[http]
listen = "{http}"
token = "{HTTP_TOKEN}"

[agi]
listen = ""
"#,
            port = self.ami.port,
            store = self.store_url,
            http = opts
                .http_port
                .map(|p| format!("127.0.0.1:{p}"))
                .unwrap_or_default(),
        );
        let path = self.config(instance);
        std::fs::write(
            &path,
            format!("{}\n{extra}", toml::to_string(&doc).expect("toml out")),
        )
        .expect("write config");
        path
    }

    /// `zoho authorize` with a fresh Self Client grant code, as an admin does once.
    async fn authorize(&self) {
        let code = self.sim.grant_code(CLIENT_ID, "eu", BRIDGE_SCOPES, None);
        support::authorize(&self.config("a"), "main", code, CLIENT_SECRET).await;
    }

    fn spawn(&self, instance: &str) -> Child {
        let log =
            std::fs::File::create(self.dir.path().join(format!("{instance}.log"))).expect("log");
        support::bridge()
            .args(["run", "--config"])
            .arg(self.config(instance))
            .env("ZOHO_CLIENT_SECRET", CLIENT_SECRET)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the bridge")
    }

    fn log(&self, instance: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{instance}.log"))).unwrap_or_default()
    }

    /// Linkedids of the Call records in the simulator, sorted, duplicates kept.
    fn delivered(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .sim
            .records("Calls")
            .iter()
            .filter_map(|r| r["Description"].as_str())
            .filter_map(|d| d.lines().find_map(|l| l.strip_prefix("Linkedid: ")))
            .map(str::to_string)
            .collect();
        ids.sort();
        ids
    }

    async fn wait_until(&self, what: &str, secs: u64, f: impl Fn(&Rig) -> bool) {
        let until = Instant::now() + Duration::from_secs(secs);
        while !f(self) {
            if Instant::now() > until {
                let keep = std::env::temp_dir().join(format!("azb-failed-{}.log", self.ami.port));
                let _ = std::fs::write(&keep, self.log("a"));
                panic!(
                    "(full log: {}) timed out waiting for {what}: {} of {} records; log:\n{}",
                    keep.display(),
                    self.sim.records("Calls").len(),
                    self.expected.len(),
                    tail(&self.log("a"))
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs one bridge until every expected record is in Zoho, then stops it with SIGTERM.
    async fn run_to_completion(&self, mut child: Child) {
        let n = self.expected.len();
        self.wait_until("every call delivered", 90, |r| {
            r.sim.records("Calls").len() >= n
        })
        .await;
        // Anything sent twice would show up in the next moments too.
        tokio::time::sleep(Duration::from_millis(800)).await;
        terminate(&mut child);
        self.assert_exactly_once();
    }

    fn assert_exactly_once(&self) {
        let got = self.delivered();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for id in &got {
            *counts.entry(id).or_default() += 1;
        }
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "delivered twice: {twice:?}");
        let missing: Vec<_> = self
            .expected
            .iter()
            .filter(|id| !counts.contains_key(id.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "missing: {missing:?}\n{}",
            tail(&self.log("a"))
        );
        assert_eq!(got, self.expected);
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn terminate(child: &mut Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                assert!(
                    status.success(),
                    "the bridge exits cleanly on SIGTERM: {status}"
                );
                return;
            }
            _ if Instant::now() > until => {
                let _ = child.kill();
                panic!("the bridge did not stop within 30 s of SIGTERM");
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

async fn case(opts: Options, faults: Vec<Fault>) -> Rig {
    let rig = Rig::start(opts).await;
    for f in faults {
        rig.sim.inject(f);
    }
    let child = rig.spawn("a");
    rig.run_to_completion(child).await;
    rig
}

fn repeat(f: Fault, n: usize) -> Vec<Fault> {
    (0..n).map(|_| f.clone()).collect()
}

/// Faults on record inserts only (lookups pass), where an unknown outcome can double a record.
fn on_insert(f: Fault, n: usize) -> Vec<Fault> {
    repeat(Fault::OnInsert(Box::new(f)), n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zoho_500s_are_retried() {
    let rig = case(Options::default(), repeat(Fault::Status(500), 6)).await;
    assert!(rig.log("a").contains("delivery will be retried"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zoho_429s_are_retried() {
    let rig = case(Options::default(), repeat(Fault::Status(429), 6)).await;
    assert!(rig.log("a").contains("TOO_MANY_REQUESTS"));
}

/// Answers slower than the client's timeout: the record is stored after the bridge gave up,
/// so the retry must find it instead of creating it again (checked by subject and time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_are_checked_before_resending() {
    let opts = Options {
        timeout_seconds: Some(1.0),
        ..Options::default()
    };
    let rig = case(opts, on_insert(Fault::Slow(Duration::from_millis(1500)), 3)).await;
    assert!(
        rig.log("a").contains("checking before sending again"),
        "{}",
        tail(&rig.log("a"))
    );
}

/// The connection drops after Zoho stored the records: with a unique field the bridge finds
/// them (or Zoho refuses the duplicate) and nothing is doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_after_store_with_unique_field() {
    let opts = Options {
        unique_field: true,
        ..Options::default()
    };
    let rig = case(opts, on_insert(Fault::DropAfterStore, 3)).await;
    assert!(
        rig.log("a").contains("checking before sending again"),
        "{}",
        tail(&rig.log("a"))
    );
}

/// The same without a unique field: the check searches by subject and start time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_after_store_without_unique_field() {
    let rig = case(Options::default(), on_insert(Fault::DropAfterStore, 3)).await;
    assert!(
        rig.log("a").contains("checking before sending again"),
        "{}",
        tail(&rig.log("a"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_expiry_mid_run() {
    let mut faults = repeat(Fault::Status(500), 2);
    faults.push(Fault::ExpireAccessTokens);
    let rig = case(Options::default(), faults).await;
    assert!(
        rig.sim.stats().refreshes >= 1,
        "the expired token was refreshed"
    );
}

/// The AMI connection is cut in the middle of a frame halfway through the hour; the client
/// reconnects and the PBX goes on from the cut frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ami_cut_mid_frame_and_reconnect() {
    let body_len = capture_body(&support::read_capture(&support::root().join(CAPTURE))).len();
    let opts = Options {
        cut_at: Some(body_len / 2 + 17),
        ..Options::default()
    };
    let rig = case(opts, Vec::new()).await;
    assert_eq!(rig.ami.state.lock().unwrap().logins_ok, 2);
}

/// SIGKILL while records are being delivered, then a restart: the PBX sends nothing old to
/// the new process, so everything must come from the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_delivery_then_restart() {
    let rig = Rig::start(Options::default()).await;
    // Slow Zoho so the kill lands mid-delivery, with requests in flight.
    for f in repeat(Fault::Slow(Duration::from_millis(300)), 40) {
        rig.sim.inject(f);
    }
    let mut child = rig.spawn("a");
    let store_url = rig.store_url.clone();
    let n = rig.expected.len() as i64;
    // Every call is in the store before the kill (the AMI server will not send them again).
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let stored = match ami_zoho_bridge::store::Store::open(&store_url).await {
            Ok(s) => {
                let c = s.interaction_count().await.unwrap_or(0);
                s.close().await;
                c
            }
            Err(_) => 0,
        };
        if stored >= n {
            break;
        }
        assert!(
            Instant::now() < until,
            "calls stored: {stored}\n{}",
            tail(&rig.log("a"))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.wait_until("some records delivered", 60, |r| {
        !r.sim.records("Calls").is_empty()
    })
    .await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let before = rig.sim.records("Calls").len();
    assert!(
        before < rig.expected.len(),
        "killed before the end ({before} delivered)"
    );
    let restarted = rig.spawn("a");
    rig.run_to_completion(restarted).await;
}

/// SIGTERM stops reading, stores the ended calls and lets in-flight requests finish; the next
/// start delivers the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_graceful_and_restart_resumes() {
    let rig = Rig::start(Options::default()).await;
    for f in repeat(Fault::Slow(Duration::from_millis(300)), 40) {
        rig.sim.inject(f);
    }
    let mut child = rig.spawn("a");
    rig.wait_until("some records delivered", 60, |r| {
        !r.sim.records("Calls").is_empty()
    })
    .await;
    terminate(&mut child);
    assert!(rig.log("a").contains("stopped"), "{}", tail(&rig.log("a")));
    let restarted = rig.spawn("a");
    rig.run_to_completion(restarted).await;
}

/// A fresh database on the PostgreSQL cluster of `AZB_TEST_PG_URL` (see
/// `scripts/pg-test-cluster.sh`), or None when there is none and it is not required.
async fn pg_database() -> Option<String> {
    match support::pg_url() {
        Some(base) => Some(support::fresh_pg_database(&base).await),
        None => None,
    }
}

/// Two bridge processes, an HA pair reading the same PBX, share one PostgreSQL outbox: both
/// see every call, each row is leased by one of them, and Zoho gets every call once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_share_one_postgres_outbox() {
    let Some(url) = pg_database().await else {
        return;
    };
    let opts = Options {
        store_url: Some(url),
        // Both bridges get the whole stream, as two bridges on one PBX would.
        every_connection: true,
        ..Options::default()
    };
    let rig = Rig::start(opts.clone()).await;
    rig.write_config("b", &opts);
    for f in on_insert(Fault::Slow(Duration::from_millis(150)), 30) {
        rig.sim.inject(f);
    }
    let a = rig.spawn("a");
    let b = rig.spawn("b");
    let n = rig.expected.len();
    rig.wait_until("every call delivered", 120, |r| {
        r.sim.records("Calls").len() >= n
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for mut child in [a, b] {
        terminate(&mut child);
    }
    rig.assert_exactly_once();
    let delivered_by = |i: &str| rig.log(i).matches(" delivered ").count();
    eprintln!(
        "deliveries: bridge a {}, bridge b {}",
        delivered_by("a"),
        delivered_by("b")
    );
    assert_eq!(
        delivered_by("a") + delivered_by("b"),
        n,
        "each row delivered by one bridge"
    );
}

fn run_cli(rig: &Rig, args: &[&str]) -> std::process::Output {
    support::bridge()
        .args(args)
        .arg("--config")
        .arg(rig.config("a"))
        .env("ZOHO_CLIENT_SECRET", CLIENT_SECRET)
        .output()
        .expect("run the binary")
}

/// `replay --deliver` on a capture whose records Zoho refuses (a picklist value the org does
/// not have): the rows are parked with Zoho's reason; `outbox list/show` show it; once the
/// administrator adds the value, `outbox retry` and the next run deliver them, and replaying
/// the same capture again stores and sends nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_records_are_parked_shown_and_retried() {
    let rig = Rig::start(Options {
        call_purpose: Some("Upselling".into()),
        ..Options::default()
    })
    .await;
    let capture = support::root().join("fixtures/ami-sip/mixed-small.ami");
    let capture = capture.to_str().expect("path");
    let replay = |rig: &Rig| {
        let out = run_cli(rig, &["replay", capture, "--deliver", "--wait", "30"]);
        let text = support::success_stdout(&out);
        serde_json::from_str::<Value>(text.trim()).expect("summary line")
    };
    let cli = |rig: &Rig, args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        support::success_stdout(&run_cli(rig, &args))
    };
    let first = tokio::task::block_in_place(|| replay(&rig));
    assert_eq!(first["calls"], 5, "mixed-small has five calls (truth file)");
    assert_eq!(
        (first["delivered"].as_i64(), first["failed"].as_i64()),
        (Some(0), Some(5))
    );
    assert!(rig.sim.records("Calls").is_empty());

    let listed = tokio::task::block_in_place(|| {
        cli(
            &rig,
            ["outbox", "list", "--state", "failed", "--json"]
                .map(String::from)
                .to_vec(),
        )
    });
    let rows: Vec<Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).expect("row json"))
        .collect();
    assert_eq!(rows.len(), 5);
    for r in &rows {
        let err = r["last_error"].as_str().unwrap_or_default();
        assert!(
            err.contains("INVALID_DATA") && err.contains("Call_Purpose"),
            "{err}"
        );
    }
    let id = rows[0]["id"].as_i64().expect("id").to_string();
    let shown = tokio::task::block_in_place(|| cli(&rig, vec!["outbox".into(), "show".into(), id]));
    let shown: Value = serde_json::from_str(&shown).expect("show json");
    assert_eq!(shown["payload"]["Call_Purpose"], "Upselling");
    assert_eq!(shown["state"], "failed");

    rig.sim.allow_picklist_value("Call_Purpose", "Upselling");
    let retried = tokio::task::block_in_place(|| {
        cli(
            &rig,
            ["outbox", "retry", "--all-failed"]
                .map(String::from)
                .to_vec(),
        )
    });
    assert!(retried.starts_with("5 row(s)"), "{retried}");
    let second = tokio::task::block_in_place(|| replay(&rig));
    assert_eq!(
        (second["delivered"].as_i64(), second["failed"].as_i64()),
        (Some(5), Some(0))
    );
    let truth = truth_linkedids("fixtures/ami-sip/mixed-small.truth.json");
    assert_eq!(rig.delivered(), truth, "each call once, after the retry");
}

/// The address the daemon's HTTP server took (`listen = "127.0.0.1:0"`), from its log.
fn http_address(rig: &Rig) -> String {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let log = rig.log("a");
        let found = log.lines().filter(|l| l.contains("HTTP: ")).find_map(|l| {
            l.split("listen=")
                .nth(1)?
                .split_whitespace()
                .next()
                .map(str::to_string)
        });
        if let Some(addr) = found {
            return addr;
        }
        assert!(
            Instant::now() < until,
            "the daemon never said where it listens:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Search from the CLI and the HTTP API after the daemon delivered `ami-sip/mixed-small`:
/// by Contact phone, Lead phone and user e-mail, in any written form, and nothing else.
/// Expected sets by hand from the truth file: .65 inbound from +390612345678 (the demo org's
/// Lead "06 1234 5678"), agent 1003; .66 outbound to 0612345678 (same Lead), agent 1009 (no
/// e-mail configured: the administrator owns it); .68 inbound from +393351112233 (a Contact
/// added here); .76 outbound to 3391234567 (nobody in the org); .78 internal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_by_contact_lead_and_user_from_cli_and_api() {
    let rig = Rig::start(Options {
        capture: Some((
            "fixtures/ami-sip/mixed-small.ami",
            "fixtures/ami-sip/mixed-small.truth.json",
        )),
        contacts: vec![("5725767000000512077", "Sara Neri", "+39 335 111 2233")],
        http_port: Some(0),
        ..Options::default()
    })
    .await;
    let mut child = rig.spawn("a");
    let n = rig.expected.len();
    rig.wait_until("every call delivered", 60, |r| {
        r.sim.records("Calls").len() >= n
    })
    .await;
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let store = ami_zoho_bridge::store::Store::open(&rig.store_url)
            .await
            .expect("store");
        let delivered = store.outbox_stats().await.expect("stats").delivered;
        store.close().await;
        if delivered as usize >= n {
            break;
        }
        assert!(Instant::now() < until, "outcomes stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cli = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["search", "--json"];
        all.extend_from_slice(args);
        let out = run_cli(&rig, &all);
        let mut ids: Vec<String> = support::success_stdout(&out)
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("json line");
                v["linkedid"].as_str().expect("linkedid").to_string()
            })
            .collect();
        ids.sort();
        ids
    };
    let lead = vec!["1795465841.65".to_string(), "1795465842.66".to_string()];
    let contact = vec!["1795465843.68".to_string()];
    let agent = vec!["1795465841.65".to_string()];
    tokio::task::block_in_place(|| {
        for form in ["06 1234 5678", "+390612345678", "0039 06 12345678"] {
            assert_eq!(cli(&["--lead-phone", form]), lead, "lead phone {form}");
            assert!(
                cli(&["--contact-phone", form]).is_empty(),
                "a Lead is not a Contact"
            );
        }
        for form in ["335 111 2233", "+39 335 1112233", "00393351112233"] {
            assert_eq!(
                cli(&["--contact-phone", form]),
                contact,
                "contact phone {form}"
            );
            assert!(cli(&["--lead-phone", form]).is_empty());
        }
        assert_eq!(cli(&["--user-email", "Agent1003@Example.com"]), agent);
        assert!(cli(&["--user-email", "agent2001@example.com"]).is_empty());
        assert_eq!(
            cli(&["--phone", "339 123 4567"]),
            vec!["1795465844.76".to_string()]
        );
        let bad = run_cli(&rig, &["search", "--phone", "not a number"]);
        assert_eq!(bad.status.code(), Some(2), "a bad number is a usage error");
    });

    let http = reqwest::Client::new();
    let base = format!("http://{}", http_address(&rig));
    let api = |query: &'static str, token: Option<&'static str>| {
        let mut req = http.get(format!("{base}/api/interactions?{query}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let mut ids: Vec<String> = body["interactions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["linkedid"].as_str().map(str::to_string))
                .collect();
            ids.sort();
            (status, ids, body)
        }
    };
    let health = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(api("lead_phone=06%201234%205678", None).await.0, 401);
    assert_eq!(
        api("lead_phone=06%201234%205678", Some("wrong")).await.0,
        401
    );
    let (status, ids, body) = api("lead_phone=0039%2006%2012345678", Some(HTTP_TOKEN)).await;
    assert_eq!((status, ids), (200, lead.clone()));
    let url = body["interactions"][0]["zoho_url"]
        .as_str()
        .unwrap_or_default();
    assert!(
        url.starts_with("https://crm.zoho.eu/crm/tab/Calls/"),
        "{url}"
    );
    assert_eq!(
        api("contact_phone=%2B393351112233", Some(HTTP_TOKEN))
            .await
            .1,
        contact
    );
    assert_eq!(
        api("user_email=AGENT1003%40example.com", Some(HTTP_TOKEN))
            .await
            .1,
        agent
    );
    assert_eq!(api("phone=nonsense", Some(HTTP_TOKEN)).await.0, 400);
    // The page: a sign-in form without the token, the rows with it.
    let page = http
        .get(format!("{base}/?lead_phone=061234%205678"))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status().as_u16(), 401);
    assert!(page
        .text()
        .await
        .unwrap_or_default()
        .contains("Access token"));
    // The token itself is no cookie: signing in gives a signed session instead.
    let raw = http
        .get(format!("{base}/?lead_phone=061234%205678"))
        .header("Cookie", format!("azb_session={HTTP_TOKEN}"))
        .send()
        .await
        .expect("page");
    assert_eq!(raw.status().as_u16(), 401);
    let signed_in = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .post(format!("{base}/login"))
        .form(&[("token", HTTP_TOKEN)])
        .send()
        .await
        .expect("login");
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .to_string();
    assert!(
        cookie.starts_with("azb_session=") && !cookie.contains(HTTP_TOKEN),
        "{cookie}"
    );
    let page = http
        .get(format!("{base}/?lead_phone=061234%205678"))
        .header("Cookie", cookie)
        .send()
        .await
        .expect("page");
    let html = page.text().await.unwrap_or_default();
    assert_eq!(html.matches("<tr class=\"row\">").count(), 2, "{html}");

    // Readiness and metrics.
    let plain: Value = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("readyz json");
    assert_eq!(
        plain,
        serde_json::json!({ "ready": true }),
        "no names without the token"
    );
    let ready = http
        .get(format!("{base}/readyz"))
        .bearer_auth(HTTP_TOKEN)
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status().as_u16(), 200);
    let ready: Value = ready.json().await.expect("readyz json");
    assert_eq!(
        (
            ready["pbx"]["lab"].as_bool(),
            ready["zoho"]["main"].as_bool()
        ),
        (Some(true), Some(true))
    );
    let unauthorised = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(unauthorised.status().as_u16(), 401);
    let metrics = http
        .get(format!("{base}/metrics"))
        .bearer_auth(HTTP_TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    // Truth: three answered calls, one abandoned, one busy; five records delivered.
    for line in [
        "azb_calls_finished_total{pbx=\"lab\",status=\"answered\"} 3",
        "azb_calls_finished_total{pbx=\"lab\",status=\"abandoned\"} 1",
        "azb_calls_finished_total{pbx=\"lab\",status=\"busy\"} 1",
        "azb_activities_delivered_total 5",
        "azb_outbox_rows{state=\"delivered\"} 5",
        "azb_ami_connected{pbx=\"lab\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(
        metrics.contains("azb_zoho_request_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("azb_ami_events_total{pbx=\"lab\"}"),
        "{metrics}"
    );
    terminate(&mut child);
}
