//! The real-time path end to end: a busy hour played live by a TCP AMI server at a multiple
//! of its recorded pace → `ami-zoho-bridge run` → the Zoho simulator's PhoneBridge, whose
//! per-user timelines are checked against the truth files (which agents rang, who answered,
//! how the call ended) — expected values from the truth files only.

#[path = "support/paced_ami.rs"]
mod paced_ami;
mod support;
use paced_ami::paced_ami;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use ami_zoho_bridge::zoho::sim::{self, PopEntry, SimClient, SimHandle, SimLimits, SimUser};

const CRM_CLIENT: &str = "1000.LABCLIENT";
const CRM_SECRET: &str = "lab-client-secret";
const PB_CLIENT: &str = "1000.PBPROVIDER";
const PB_SECRET: &str = "pb-provider-secret";
const PB_SCOPES: &str = "PhoneBridge.call.log,PhoneBridge.zohoone.search";
use paced_ami::AMI_SECRET;

/// `Agent 1001` → `1001`.
fn ext_of(member: &str) -> String {
    member.trim_start_matches("Agent ").to_string()
}

fn email_of(ext: &str) -> String {
    format!("agent{ext}@example.com")
}

struct Rig {
    sim: SimHandle,
    dir: tempfile::TempDir,
    truth: Value,
}

impl Rig {
    async fn start(set: &str, capture: &str, speed: f64, log_calls: bool) -> Rig {
        let truth: Value = serde_json::from_str(
            &std::fs::read_to_string(
                support::root().join(format!("fixtures/{set}/{capture}.truth.json")),
            )
            .expect("truth"),
        )
        .expect("truth json");
        // Every agent extension that appears in the truth file is a Zoho user.
        let mut exts = BTreeSet::new();
        for c in truth["calls"].as_array().expect("calls") {
            for k in ["agent", "transfer_to", "caller_name"] {
                if let Some(a) = c[k].as_str().filter(|a| a.starts_with("Agent ")) {
                    exts.insert(ext_of(a));
                }
            }
            for a in c["observed"]["agents_rung"]
                .as_array()
                .into_iter()
                .flatten()
            {
                exts.insert(ext_of(a.as_str().expect("agent")));
            }
        }
        let mut seed = sim::demo_seed();
        seed.users.retain(|u| !u.email.starts_with("agent"));
        for (i, ext) in exts.iter().enumerate() {
            seed.users.push(SimUser {
                id: format!("57257670000004{:05}", 20_000 + i),
                email: email_of(ext),
                full_name: format!("Agent {ext}"),
                active: true,
            });
        }
        for (id, secret) in [(CRM_CLIENT, CRM_SECRET), (PB_CLIENT, PB_SECRET)] {
            seed.clients.push(SimClient {
                client_id: id.into(),
                client_secret: secret.into(),
            });
        }
        let sim = SimHandle::start("127.0.0.1:0".parse().unwrap(), seed, SimLimits::default())
            .await
            .expect("simulator");
        let bytes = support::read_capture(
            &support::root().join(format!("fixtures/{set}/{capture}.ami.gz")),
        );
        let body = support::ami_server::capture_body(&bytes);
        let port = paced_ami(body, speed).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let rig = Rig { sim, dir, truth };
        rig.write_config(set, port, &exts, log_calls);
        rig
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("bridge.toml")
    }

    fn write_config(&self, set: &str, port: u16, exts: &BTreeSet<String>, log_calls: bool) {
        let text =
            std::fs::read_to_string(support::root().join(format!("fixtures/{set}/bridge.toml")))
                .expect("bridge.toml");
        let mut doc: toml::Table = text.parse().expect("toml");
        let url = self.sim.url("eu");
        let agents: toml::Table = exts
            .iter()
            .map(|e| (e.clone(), toml::Value::from(email_of(e))))
            .collect();
        doc.insert("agents".into(), agents.into());
        // The lab's catch-all trigger stays: with log_calls, PhoneBridge's log is the Call
        // record of notified calls and the REST Call is written for the others only.
        let zoho = doc["zoho"].as_table_mut().expect("zoho");
        let accounts = zoho["accounts"].as_table_mut().expect("accounts");
        let main = accounts["main"].as_table_mut().expect("main");
        main.insert("accounts_url".into(), url.clone().into());
        main.insert("api_domain".into(), url.clone().into());
        main.insert(
            "token_file".into(),
            self.dir
                .path()
                .join("tokens-main.json")
                .display()
                .to_string()
                .into(),
        );
        main.insert("timeout_seconds".into(), 1.0.into());
        let text = format!(
            r#"{doc}
[zoho.accounts.pb]
accounts_url = "{url}"
api_domain = "{url}"
client_id = "{PB_CLIENT}"
client_secret = "{PB_SECRET}"
token_file = "{tokens}"
phone_index = false
timeout_seconds = 1.0

[zoho.phonebridge]
account = "pb"
log_calls = {log_calls}
agent_number = "+39069999{{ext}}"
ring_deadline_seconds = 30

[[pbx]]
name = "lab"
host = "127.0.0.1"
port = {port}
username = "bridge"
secret = "{AMI_SECRET}"
auth = "plain"

[store]
url = "sqlite://{db}"

[delivery]
lease_seconds = 3

[http]
listen = ""

[agi]
listen = ""
"#,
            doc = toml::to_string(&doc).expect("toml out"),
            tokens = self.dir.path().join("tokens-pb.json").display(),
            db = self.dir.path().join("bridge.db").display(),
        );
        std::fs::write(self.config(), text).expect("write config");
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        support::bridge()
            .args(args)
            .arg("--config")
            .arg(self.config())
            .env("ZOHO_CLIENT_SECRET", CRM_SECRET)
            .output()
            .expect("run the CLI")
    }

    /// The admin authorises the provider, then enables it for the org.
    async fn authorize_and_enable(&self) {
        let crm = self
            .sim
            .grant_code(CRM_CLIENT, "eu", sim::BRIDGE_SCOPES, None);
        let out = self.cli(&["zoho", "authorize", "--account", "main", "--code", &crm]);
        support::success_stdout(&out);
        let code = self.sim.grant_code(PB_CLIENT, "eu", PB_SCOPES, None);
        let me = self.config();
        let out = tokio::task::spawn_blocking(move || {
            support::bridge()
                .args([
                    "zoho",
                    "authorize",
                    "--account",
                    "pb",
                    "--code",
                    &code,
                    "--config",
                ])
                .arg(me)
                .env("ZOHO_CLIENT_SECRET", CRM_SECRET)
                .output()
                .expect("authorize")
        })
        .await
        .expect("join");
        support::success_stdout(&out);
        let out = self.cli(&["phonebridge", "enable"]);
        support::success_stdout(&out);
    }

    fn spawn(&self) -> Child {
        let log = std::fs::File::create(self.dir.path().join("run.log")).expect("log");
        support::bridge()
            .args(["run", "--config"])
            .arg(self.config())
            .env("ZOHO_CLIENT_SECRET", CRM_SECRET)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the bridge")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("run.log")).unwrap_or_default()
    }
}

/// What the truth says each call must show, and the checks of the timelines against it.
struct Expect {
    linkedid: String,
    call_id: String,
    direction: String,
    status: String,
    rang: BTreeSet<String>,
    answered: BTreeSet<String>,
    agent: Option<String>,
}

fn expectations(truth: &Value) -> Vec<Expect> {
    let mut out = Vec::new();
    for c in truth["calls"].as_array().expect("calls") {
        let direction = c["direction"].as_str().unwrap_or_default().to_string();
        let caller = c["caller_number"].as_str().unwrap_or_default();
        // A pop-up needs the customer's number: anonymous callers get none.
        if direction == "inbound" && !caller.chars().any(|ch| ch.is_ascii_digit()) {
            continue;
        }
        let mut rang: BTreeSet<String> = c["observed"]["agents_rung"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(email_of_member)
            .collect();
        let mut answered = BTreeSet::new();
        if direction == "inbound" {
            if let Some(a) = c["agent"].as_str() {
                answered.insert(email_of_member(a));
            }
            if let Some(t) = c["transfer_to"].as_str() {
                rang.insert(email_of_member(t));
                if c["observed"]["transfer_answered_by"].is_string() {
                    answered.insert(email_of_member(t));
                }
            }
        }
        out.push(Expect {
            linkedid: c["linkedid"].as_str().expect("linkedid").to_string(),
            call_id: c["call_id"].as_str().unwrap_or_default().to_string(),
            direction,
            status: c["final_status"].as_str().unwrap_or_default().to_string(),
            rang,
            answered,
            agent: c["agent"].as_str().map(email_of_member),
        });
    }
    out
}

fn email_of_member(m: &str) -> String {
    email_of(&ext_of(m))
}

/// The entries of one call in every user's timeline.
fn entries_of<'t>(
    timelines: &'t std::collections::HashMap<String, Vec<PopEntry>>,
    call: &str,
) -> BTreeMap<&'t str, Vec<&'t PopEntry>> {
    let mut by_user: BTreeMap<&str, Vec<&PopEntry>> = BTreeMap::new();
    for (user, list) in timelines {
        for e in list.iter().filter(|e| e.call == call) {
            by_user.entry(user.as_str()).or_default().push(e);
        }
    }
    by_user
}

/// Every problem of the timelines against the truth (empty: all good).
fn check(sim: &SimHandle, expects: &[Expect], truth_ids: &[String]) -> Vec<String> {
    let timelines = sim.phonebridge_timeline();
    let records = sim.records("Calls");
    let mut problems = Vec::new();
    for e in expects {
        let got = entries_of(&timelines, &e.linkedid);
        let tag = format!("{} {} {} {}", e.call_id, e.linkedid, e.direction, e.status);
        let logged = records
            .iter()
            .filter(|r| r["$phonebridge_call"].as_str() == Some(e.linkedid.as_str()))
            .count();
        if e.direction == "outbound" {
            let want = match e.status.as_str() {
                "answered" => "ended",
                "busy" => "busy",
                "noanswer" | "cancelled" => "noanswer",
                _ => "notavailable",
            };
            let agent = e.agent.clone().unwrap_or_default();
            let states: Vec<&str> = got
                .get(agent.as_str())
                .map(|v| v.iter().map(|p| p.state.as_str()).collect())
                .unwrap_or_default();
            if states != [want] || got.len() != 1 {
                problems.push(format!(
                    "{tag}: outbound: want [{want}] for {agent}, got {got:?}"
                ));
            }
            if logged != 1 {
                problems.push(format!("{tag}: {logged} PhoneBridge Call records, want 1"));
            }
            continue;
        }
        if e.direction != "inbound" {
            if !got.is_empty() {
                problems.push(format!("{tag}: internal call popped up: {got:?}"));
            }
            continue;
        }
        let users: BTreeSet<String> = got.keys().map(|s| s.to_string()).collect();
        if users != e.rang {
            problems.push(format!(
                "{tag}: rang {:?}, timelines of {:?}",
                e.rang, users
            ));
        }
        let ringing: BTreeSet<String> = got
            .iter()
            .filter(|(_, v)| v.iter().any(|p| p.state == "ringing"))
            .map(|(u, _)| u.to_string())
            .collect();
        if ringing != e.rang {
            problems.push(format!(
                "{tag}: ringing for {ringing:?}, truth rang {:?}",
                e.rang
            ));
        }
        let answered: BTreeSet<String> = got
            .iter()
            .filter(|(_, v)| v.iter().any(|p| p.state == "answered"))
            .map(|(u, _)| u.to_string())
            .collect();
        if answered != e.answered {
            problems.push(format!(
                "{tag}: answered by {answered:?}, truth {:?}",
                e.answered
            ));
        }
        let taken = e.status == "answered";
        for (user, list) in &got {
            let states: Vec<&str> = list.iter().map(|p| p.state.as_str()).collect();
            if states.first() != Some(&"ringing") {
                problems.push(format!("{tag}: {user} did not start ringing: {states:?}"));
            }
            let last = states.last().copied().unwrap_or_default();
            let missed = states.iter().filter(|s| **s == "missed").count();
            if e.answered.contains(*user) {
                let a = states.iter().position(|s| *s == "answered");
                let end = states.iter().rposition(|s| *s == "ended");
                if !(a.is_some() && end.is_some() && a < end && last == "ended") {
                    problems.push(format!(
                        "{tag}: {user} answered: want ringing..answered..ended, got {states:?}"
                    ));
                }
            } else if taken {
                if last != "closed" || missed > 0 {
                    problems.push(format!("{tag}: {user} lost the ring to a colleague: want closed and no missed, got {states:?}"));
                }
            } else if last != "missed" || missed != 1 {
                problems.push(format!(
                    "{tag}: nobody took it: want one missed at the end for {user}, got {states:?}"
                ));
            }
        }
        let want_logged = usize::from(!e.rang.is_empty());
        if logged != want_logged {
            problems.push(format!(
                "{tag}: {logged} PhoneBridge Call records, want {want_logged}"
            ));
        }
    }
    // Exactly one Call record per call in Zoho, whoever wrote it.
    for id in truth_ids {
        let pb = records
            .iter()
            .filter(|r| r["$phonebridge_call"].as_str() == Some(id.as_str()))
            .count();
        let rest = records
            .iter()
            .filter_map(|r| r["Description"].as_str())
            .filter(|d| {
                d.lines()
                    .any(|l| l.strip_prefix("Linkedid: ") == Some(id.as_str()))
            })
            .count();
        if pb + rest != 1 {
            problems.push(format!(
                "{id}: {pb} PhoneBridge + {rest} REST Call records, want one in all"
            ));
        }
    }
    problems
}

async fn busy_hour(set: &str, capture: &str, speed: f64) {
    let rig = Rig::start(set, capture, speed, true).await;
    rig.authorize_and_enable().await;
    let expects = expectations(&rig.truth);
    let truth_ids: Vec<String> = rig.truth["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| c["linkedid"].as_str().expect("linkedid").to_string())
        .collect();
    assert!(expects.len() > 80, "{} calls", expects.len());
    let mut child = rig.spawn();
    let started = Instant::now();
    let limit = Duration::from_secs(240);
    let mut problems = check(&rig.sim, &expects, &truth_ids);
    let mut stable = 0;
    let mut last_requests = 0;
    while started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(500)).await;
        problems = check(&rig.sim, &expects, &truth_ids);
        let requests = rig.sim.phonebridge_requests();
        if problems.is_empty() {
            break;
        }
        // Nothing new for a while after the capture's end: the answer will not change.
        stable = if requests == last_requests {
            stable + 1
        } else {
            0
        };
        last_requests = requests;
        if stable > 20 && requests > 0 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = rig.log();
    let keep = support::root().join(format!("target/notify-{capture}.log"));
    let _ = std::fs::write(&keep, &log);
    assert!(
        problems.is_empty(),
        "{} problems of {} calls:\n{}\n--- log tail:\n{}",
        problems.len(),
        expects.len(),
        problems.join("\n"),
        log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
    );
    assert!(!log.contains("PhoneBridge callnotify failed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busyhour_seed11_timelines_match_the_truth() {
    busy_hour("ami-sip", "busyhour-seed11", speed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busyhour_seed7_timelines_match_the_truth() {
    busy_hour("ami-real", "busyhour-seed7", speed()).await;
}

/// The replay speed (a multiple of the recorded pace): `AZB_NOTIFY_SPEED`, default 40.
fn speed() -> f64 {
    std::env::var("AZB_NOTIFY_SPEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40.0)
}
