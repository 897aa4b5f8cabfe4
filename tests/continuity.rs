//! Continuity acceptance (issue 10): the real daemon binary (`run --config`) reading a live
//! AMI test server that replays a recorded capture at its pace with `Timestamp:`s rewritten to
//! now (plus a PBX clock skew), drops the session and *loses* the events of each gap, answers
//! `CoreShowChannels` / `QueueStatus` from the channels alive at that point, and keeps playing
//! while the bridge is killed -9 or stopped with SIGTERM and started again. Zoho is the
//! simulator, the store a real SQLite file.
//!
//! Every call of the truth file must reach Zoho exactly once with the right Call_Type; its
//! start (as stored, to the microsecond) within 1.5 s and its duration within 3 s of the truth
//! (times as served: scaled by the replay speed, shifted by the skew), or within the hidden
//! window's length where a gap or the bridge's downtime hides the moment; and no call is held
//! more than 10 s past its end (the row's creation wall time against the end's replay time, or
//! the end of the window that hid it). A call whose whole life falls in a hidden window cannot
//! be known to anyone listening to AMI; such calls are listed, not required.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ami_zoho_bridge::zoho::sim::{self, SimClient, SimHandle, SimLimits, BRIDGE_SCOPES};
use serde_json::Value;
use sqlx::Row;
use support::ami_server::capture_body;
use support::live_pbx::{epoch_now, Gap, LiveConfig, LiveServer};

const CLIENT_ID: &str = "1000.LABCLIENT";
const CLIENT_SECRET: &str = "lab-client-secret";
const AMI_SECRET: &str = "lab-ami-secret";
const HTTP_TOKEN: &str = "lab-http-token";

const MIXED: (&str, &str, &str) = (
    "fixtures/ami-real/mixed-small.ami",
    "fixtures/ami-real/mixed-small.truth.json",
    "fixtures/ami-real/bridge.toml",
);
const BUSY: (&str, &str, &str) = (
    "fixtures/ami-sip/busyhour-seed11.ami.gz",
    "fixtures/ami-sip/busyhour-seed11.truth.json",
    "fixtures/ami-sip/bridge.toml",
);

/// How the bridge is interrupted at a moment of the capture.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// kill -9 at `at` seconds of capture time, started again `down` wall seconds later.
    Kill { at: f64, down: f64 },
    /// SIGTERM at `at`, started again `down` wall seconds later.
    Term { at: f64, down: f64 },
}

#[derive(Clone, Debug)]
struct Case {
    files: (&'static str, &'static str, &'static str),
    speed: f64,
    skew: f64,
    gaps: Vec<Gap>,
    stop: Option<Stop>,
}

/// One truth call, its times as served (host wall clock, epoch seconds).
#[derive(Debug, Clone)]
struct TruthCall {
    linkedid: String,
    call_type: &'static str,
    answered: bool,
    start: f64,
    end: f64,
    /// Answered: talk seconds (scaled); otherwise end − start.
    duration: f64,
}

/// A stored call.
#[derive(Debug, Clone)]
struct Stored {
    status: String,
    started: f64,
    ended: f64,
    talk: f64,
    created: f64,
}

fn iso_epoch(v: &Value) -> Option<f64> {
    let t: jiff::Timestamp = v.as_str()?.parse().ok()?;
    Some(t.as_microsecond() as f64 / 1e6)
}

fn truth_calls(path: &str, server: &LiveServer) -> Vec<TruthCall> {
    let text = std::fs::read_to_string(support::root().join(path)).expect("truth");
    let truth: Value = serde_json::from_str(&text).expect("truth json");
    truth["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| {
            let direction = c["direction"].as_str().expect("direction");
            let status = c["final_status"].as_str().expect("final_status");
            let answered = status == "answered";
            let start = server.wall_time(iso_epoch(&c["start_time"]).expect("start_time"));
            let end = server.wall_time(iso_epoch(&c["end_time"]).expect("end_time"));
            let duration = if answered {
                server.scaled(c["talk_seconds"].as_f64().unwrap_or(0.0))
            } else {
                end - start
            };
            TruthCall {
                linkedid: c["linkedid"].as_str().expect("linkedid").to_string(),
                call_type: match (direction, answered) {
                    ("inbound", true) => "Inbound",
                    ("inbound", false) => "Missed",
                    _ => "Outbound",
                },
                answered,
                start,
                end,
                duration,
            }
        })
        .collect()
}

struct Rig {
    sim: SimHandle,
    ami: LiveServer,
    dir: tempfile::TempDir,
    config: PathBuf,
    case: Case,
    /// Wall windows in which the bridge heard nothing: (from, to).
    hidden: Vec<(f64, f64)>,
    children: Vec<Child>,
    /// `/metrics` of the last bridge, read just before it is stopped.
    metrics: String,
}

impl Rig {
    async fn start(case: Case) -> Rig {
        let mut seed = sim::demo_seed();
        seed.clients.push(SimClient {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
        });
        let sim = SimHandle::start("127.0.0.1:0".parse().unwrap(), seed, SimLimits::default())
            .await
            .expect("simulator");
        let body = capture_body(&support::read_capture(&support::root().join(case.files.0)));
        let ami = LiveServer::start(LiveConfig {
            username: "bridge".into(),
            secret: AMI_SECRET.into(),
            body,
            speed: case.speed,
            skew_seconds: case.skew,
            gaps: case.gaps.clone(),
            lead_in: 4.0,
        })
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("bridge.toml");
        let rig = Rig {
            sim,
            ami,
            dir,
            config,
            case,
            hidden: Vec::new(),
            children: Vec::new(),
            metrics: String::new(),
        };
        rig.write_config();
        rig.authorize().await;
        rig
    }

    fn store_path(&self) -> PathBuf {
        self.dir.path().join("bridge.db")
    }

    fn write_config(&self) {
        let text =
            std::fs::read_to_string(support::root().join(self.case.files.2)).expect("bridge.toml");
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
        main.insert("timeout_seconds".into(), 2.0.into());
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
url = "sqlite://{store}"
instance = "bridge-a"

[delivery]
workers = 2
lease_seconds = 5
backoff_initial_seconds = 0.1
backoff_max_seconds = 1
poll_seconds = 0.2

[http]
listen = "127.0.0.1:0"
token = "{HTTP_TOKEN}"

[agi]
listen = ""
"#,
            port = self.ami.port,
            store = self.store_path().display(),
        );
        std::fs::write(
            &self.config,
            format!("{}\n{extra}", toml::to_string(&doc).expect("toml out")),
        )
        .expect("write config");
    }

    async fn authorize(&self) {
        let code = self.sim.grant_code(CLIENT_ID, "eu", BRIDGE_SCOPES, None);
        support::authorize(&self.config, "main", code, CLIENT_SECRET).await;
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("run-{n}.log"))
    }

    fn spawn(&mut self) {
        let n = self.children.len();
        let log = std::fs::File::create(self.log_path(n)).expect("log");
        let child = support::bridge()
            .args(["run", "--config"])
            .arg(&self.config)
            .env("ZOHO_CLIENT_SECRET", CLIENT_SECRET)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the bridge");
        self.children.push(child);
    }

    fn logs(&self) -> String {
        (0..self.children.len())
            .map(|n| std::fs::read_to_string(self.log_path(n)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----- restart -----\n")
    }

    /// Zoho Call records by Linkedid (from the Description).
    fn delivered(&self) -> BTreeMap<String, Vec<Value>> {
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for r in self.sim.records("Calls") {
            let id = r["Description"]
                .as_str()
                .and_then(|d| d.lines().find_map(|l| l.strip_prefix("Linkedid: ")))
                .map(str::to_string);
            if let Some(id) = id {
                out.entry(id).or_default().push(r);
            }
        }
        out
    }

    async fn stored(&self) -> BTreeMap<String, Stored> {
        let url = format!("sqlite://{}?mode=ro", self.store_path().display());
        let pool = sqlx::sqlite::SqlitePool::connect(&url)
            .await
            .expect("open the store");
        let rows = sqlx::query(
            "SELECT linkedid, status, started_at, ended_at, talk_seconds, created_at FROM interactions",
        )
        .fetch_all(&pool)
        .await
        .expect("read interactions");
        pool.close().await;
        rows.iter()
            .map(|r| {
                let us = |k: &str| r.get::<i64, _>(k) as f64 / 1e6;
                (
                    r.get::<String, _>("linkedid"),
                    Stored {
                        status: r.get("status"),
                        started: us("started_at"),
                        ended: us("ended_at"),
                        talk: r.get::<i64, _>("talk_seconds") as f64,
                        created: us("created_at"),
                    },
                )
            })
            .collect()
    }

    /// Runs the case: bridge up, interruptions, the whole capture played, every call
    /// delivered (or a time limit), SIGTERM.
    async fn run(&mut self) {
        self.spawn();
        if let Some(stop) = self.case.stop {
            let (at, down, kill) = match stop {
                Stop::Kill { at, down } => (at, down, true),
                Stop::Term { at, down } => (at, down, false),
            };
            let when = self.ami.wall_time(self.ami.ts0 + at);
            tokio::time::sleep(Duration::from_secs_f64((when - epoch_now()).max(0.0))).await;
            let from = epoch_now();
            let child = self.children.last_mut().expect("child");
            if kill {
                child.kill().expect("SIGKILL");
                let _ = child.wait();
            } else {
                terminate(child);
            }
            tokio::time::sleep(Duration::from_secs_f64(down)).await;
            let logins = self.ami.state.lock().unwrap().logins_ok;
            self.spawn();
            wait_for("the restarted bridge's login", 30, || {
                self.ami.state.lock().unwrap().logins_ok > logins
            })
            .await;
            self.hidden.push((from, epoch_now()));
        }
        let play_end = self.ami.wall_time(self.ami.ts_end);
        let limit = (play_end - epoch_now()).max(0.0) as u64 + 60;
        wait_for("the capture played to its end", limit, || {
            self.ami.finished()
        })
        .await;
        // Gaps: from the drop to the login that ended it.
        let drops = self.ami.state.lock().unwrap().drops.clone();
        let logins = self.ami.state.lock().unwrap().login_times.clone();
        for (from, until) in drops {
            let back = logins.iter().copied().find(|t| *t >= from).unwrap_or(until);
            self.hidden.push((from, back.max(until)));
        }
        let expected: Vec<String> = truth_calls(self.case.files.1, &self.ami)
            .into_iter()
            .filter(|c| !self.wholly_hidden(c))
            .map(|c| c.linkedid)
            .collect();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until && !expected.iter().all(|id| self.delivered().contains_key(id))
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Anything sent twice would show up in the next moments too.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        self.metrics = self.scrape().await;
        let child = self.children.last_mut().expect("child");
        terminate(child);
    }

    /// `/metrics` of the running bridge (its HTTP port is in its log).
    async fn scrape(&self) -> String {
        let n = self.children.len().saturating_sub(1);
        let log = std::fs::read_to_string(self.log_path(n)).unwrap_or_default();
        let Some(addr) = log
            .lines()
            .filter(|l| l.contains("HTTP: /healthz"))
            .find_map(|l| l.split("listen=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(|a| a.trim_matches('"').to_string())
        else {
            return String::new();
        };
        let resp = reqwest::Client::new()
            .get(format!("http://{addr}/metrics"))
            .bearer_auth(HTTP_TOKEN)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("GET /metrics");
        resp.text().await.expect("metrics text")
    }

    /// The value of a metric line for PBX `lab` (0 when absent).
    fn metric(&self, name: &str) -> f64 {
        self.metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains("pbx=\"lab\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    fn hiding(&self, t: f64) -> Option<(f64, f64)> {
        self.hidden
            .iter()
            .copied()
            .find(|(from, to)| t >= *from && t <= *to)
    }

    fn wholly_hidden(&self, c: &TruthCall) -> bool {
        self.hidden
            .iter()
            .any(|(from, to)| c.start >= *from && c.end <= *to)
    }

    /// Checks every truth call; returns the failures, one line each.
    async fn verdict(&self) -> Vec<String> {
        let delivered = self.delivered();
        let stored = self.stored().await;
        let mut failures = Vec::new();
        let mut skipped = Vec::new();
        for c in truth_calls(self.case.files.1, &self.ami) {
            if self.wholly_hidden(&c) {
                skipped.push(c.linkedid.clone());
                continue;
            }
            let id = &c.linkedid;
            let records = delivered.get(id).map(Vec::as_slice).unwrap_or(&[]);
            if records.len() != 1 {
                failures.push(format!("{id}: {} Zoho records, want 1", records.len()));
                continue;
            }
            let got_type = records[0]["Call_Type"].as_str().unwrap_or("?");
            if got_type != c.call_type {
                failures.push(format!("{id}: Call_Type {got_type}, want {}", c.call_type));
            }
            let Some(s) = stored.get(id) else {
                failures.push(format!("{id}: not in the store"));
                continue;
            };
            let window = |t: f64| self.hiding(t).map_or(0.0, |(a, b)| b - a);
            let start_tol = 1.5 + window(c.start);
            let start_err = (s.started - self.ami.skew) - c.start;
            if start_err.abs() > start_tol {
                failures.push(format!(
                    "{id}: start off by {start_err:+.2} s (tolerance {start_tol:.1})"
                ));
            }
            let got_duration = if c.answered {
                s.talk
            } else {
                s.ended - s.started
            };
            let dur_tol = 3.0 + window(c.end).max(window(c.start));
            if (got_duration - c.duration).abs() > dur_tol {
                failures.push(format!(
                    "{id}: duration {got_duration:.1} s, want {:.1} (tolerance {dur_tol:.1}; status {})",
                    c.duration, s.status
                ));
            }
            let due = self.hiding(c.end).map_or(c.end, |(_, to)| to.max(c.end));
            let held = s.created - due;
            if held > 10.0 {
                failures.push(format!("{id}: finalised {held:.1} s after its end"));
            }
        }
        let extra: Vec<&String> = delivered
            .keys()
            .filter(|id| {
                !truth_calls(self.case.files.1, &self.ami)
                    .iter()
                    .any(|c| &c.linkedid == *id)
            })
            .collect();
        if !extra.is_empty() {
            failures.push(format!("records of calls not in the truth: {extra:?}"));
        }
        let st = self.ami.state.lock().unwrap();
        eprintln!(
            "case {:?}: hidden windows {:?}; events lost {} of {}; lists answered {}; calls wholly hidden (not required): {skipped:?}; failures {}",
            self.case,
            self.hidden
                .iter()
                .map(|(a, b)| format!("{:.1} s", b - a))
                .collect::<Vec<_>>(),
            st.lost,
            st.lost + st.sent,
            st.lists_answered,
            failures.len()
        );
        failures
    }
}

async fn wait_for(what: &str, secs: u64, f: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

async fn check(case: Case) -> Rig {
    let mut rig = Rig::start(case).await;
    rig.run().await;
    let failures = rig.verdict().await;
    if !failures.is_empty() {
        let keep = std::env::temp_dir().join(format!("azb-continuity-{}.log", rig.ami.port));
        let _ = std::fs::write(&keep, rig.logs());
        panic!(
            "{} failure(s) (bridge log: {}):\n{}",
            failures.len(),
            keep.display(),
            failures.join("\n")
        );
    }
    rig
}

// mixed-small: 5 overlapping calls in 22 s. At 2.5 s the inbound call is in its IVR/queue, the
// outbound call rings; at 9 s the inbound call talks, the internal call is about to end.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_small_pbx_ahead_90s_two_gaps() {
    let rig = check(Case {
        files: MIXED,
        speed: 1.0,
        skew: 90.0,
        gaps: vec![
            Gap {
                at: 2.5,
                seconds: 2.0,
            },
            Gap {
                at: 9.0,
                seconds: 5.0,
            },
        ],
        stop: None,
    })
    .await;
    // The gaps as /metrics tells them: two, about 2 s + 5 s of stream lost.
    assert_eq!(rig.metric("azb_ami_gaps_total"), 2.0, "{}", rig.metrics);
    let lost = rig.metric("azb_ami_gap_seconds_total");
    assert!((6.5..9.0).contains(&lost), "gap seconds {lost}");
    assert!(
        rig.metric("azb_calls_resynced_total") >= 1.0,
        "{}",
        rig.metrics
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_small_pbx_behind_90s_two_gaps() {
    check(Case {
        files: MIXED,
        speed: 1.0,
        skew: -90.0,
        gaps: vec![
            Gap {
                at: 3.5,
                seconds: 3.0,
            },
            Gap {
                at: 12.0,
                seconds: 4.0,
            },
        ],
        stop: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_small_kill_9_while_calls_are_up() {
    let rig = check(Case {
        files: MIXED,
        speed: 1.0,
        skew: 90.0,
        gaps: Vec::new(),
        stop: Some(Stop::Kill { at: 7.0, down: 1.0 }),
    })
    .await;
    // At 7 s four calls are up: the restarted bridge loaded them from the store.
    assert!(
        rig.metric("azb_calls_recovered_total") >= 1.0,
        "{}",
        rig.metrics
    );
    assert_eq!(rig.metric("azb_ami_gaps_total"), 1.0, "{}", rig.metrics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_small_sigterm_restart_while_calls_are_up() {
    check(Case {
        files: MIXED,
        speed: 1.0,
        skew: -90.0,
        gaps: Vec::new(),
        stop: Some(Stop::Term { at: 7.0, down: 1.0 }),
    })
    .await;
}

// busyhour-seed11: 121 calls in about 8.5 minutes, played 4 times faster (times scaled).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busyhour_pbx_ahead_90s_two_gaps() {
    check(Case {
        files: BUSY,
        speed: 4.0,
        skew: 90.0,
        gaps: vec![
            Gap {
                at: 120.0,
                seconds: 2.0,
            },
            Gap {
                at: 300.0,
                seconds: 3.0,
            },
        ],
        stop: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busyhour_pbx_behind_90s_kill_9_then_restart() {
    check(Case {
        files: BUSY,
        speed: 4.0,
        skew: -90.0,
        gaps: Vec::new(),
        stop: Some(Stop::Kill {
            at: 200.0,
            down: 1.0,
        }),
    })
    .await;
}
