//! What an operator meets: the real binary, a real TCP AMI server replaying a recorded busy
//! hour, the Zoho simulator, real SQLite files.
//!
//! - A configuration that cannot render a call's records at run time loses no call: every call
//!   is stored, its records parked `failed` with the reason; after the fix `outbox retry`
//!   renders them with the new configuration and each is delivered exactly once.
//! - Read-only commands refuse a missing store instead of creating one.
//! - `replay` says what it read and refuses what is not AMI.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ami_zoho_bridge::zoho::sim::{self, SimClient, SimHandle, SimLimits, BRIDGE_SCOPES};
use serde_json::Value;
use support::ami_server::{capture_body, AmiServer, ServerConfig};

const CLIENT_ID: &str = "1000.LABCLIENT";
const CLIENT_SECRET: &str = "lab-client-secret";
const AMI_SECRET: &str = "lab-ami-secret";
const CAPTURE: &str = "fixtures/ami-sip/busyhour-seed11.ami.gz";
const TRUTH: &str = "fixtures/ami-sip/busyhour-seed11.truth.json";

/// A template minijinja accepts when the file is read but cannot render: `shout` is no filter.
const BROKEN_DESCRIPTION: &str =
    "Status: {{ status | shout }}\nQueue: {{ queue or '-' }}\nLinkedid: {{ linkedid }}";
const FIXED_DESCRIPTION: &str =
    "Status: {{ status | upper }}\nQueue: {{ queue or '-' }}\nLinkedid: {{ linkedid }}";

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

struct Lab {
    sim: SimHandle,
    ami: AmiServer,
    dir: tempfile::TempDir,
}

impl Lab {
    async fn start() -> Lab {
        let mut seed = sim::demo_seed();
        seed.clients.push(SimClient {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
        });
        let sim = SimHandle::start("127.0.0.1:0".parse().unwrap(), seed, SimLimits::default())
            .await
            .expect("simulator");
        let body = capture_body(&support::read_capture(&support::root().join(CAPTURE)));
        let ami = AmiServer::start(ServerConfig {
            username: "bridge".into(),
            secret: AMI_SECRET.into(),
            body,
            answer_ping: true,
            cut_at: None,
            once: true,
        })
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        Lab { sim, ami, dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("bridge.toml")
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("bridge.db")
    }

    /// The lab's bridge.toml with `description` as the default configuration's description.
    fn write_config(&self, description: &str) {
        let text = std::fs::read_to_string(support::root().join("fixtures/ami-sip/bridge.toml"))
            .expect("bridge.toml");
        let mut doc: toml::Table = text.parse().expect("toml");
        let url = self.sim.url("eu");
        let zoho = doc["zoho"].as_table_mut().expect("zoho");
        let main = zoho["accounts"]["main"].as_table_mut().expect("account");
        main.insert("accounts_url".into(), url.clone().into());
        main.insert("api_domain".into(), url.into());
        main.remove("dc");
        main.insert(
            "token_file".into(),
            self.dir
                .path()
                .join("tokens.json")
                .display()
                .to_string()
                .into(),
        );
        main.insert("timeout_seconds".into(), 1.0.into());
        zoho["configurations"]["default"]
            .as_table_mut()
            .expect("configuration")
            .insert("description".into(), description.into());
        let extra = format!(
            r#"
[[pbx]]
name = "lab"
host = "127.0.0.1"
port = {port}
username = "bridge"
secret = "{AMI_SECRET}"

[store]
url = "sqlite://{store}"

[delivery]
lease_seconds = 3
backoff_initial_seconds = 0.1
backoff_max_seconds = 1
poll_seconds = 0.2

[http]
listen = ""

[agi]
listen = ""
"#,
            port = self.ami.port,
            store = self.store().display(),
        );
        std::fs::write(
            self.config(),
            format!("{}\n{extra}", toml::to_string(&doc).expect("toml out")),
        )
        .expect("write config");
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        support::bridge()
            .args(args)
            .arg("--config")
            .arg(self.config())
            .env("ZOHO_CLIENT_SECRET", CLIENT_SECRET)
            .output()
            .expect("run the binary")
    }

    fn spawn(&self) -> Child {
        let log = std::fs::File::create(self.dir.path().join("run.log")).expect("log");
        support::bridge()
            .args(["run", "--config"])
            .arg(self.config())
            .env("ZOHO_CLIENT_SECRET", CLIENT_SECRET)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the bridge")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("run.log")).unwrap_or_default()
    }

    /// The outbox rows `outbox list` shows in `state`, as JSON.
    fn rows(&self, state: &str) -> Vec<Value> {
        // Before the bridge made its store, `outbox list` refuses (and there is nothing).
        if !self.store().exists() {
            return Vec::new();
        }
        let out = self.cli(&[
            "outbox", "list", "--state", state, "--limit", "1000", "--json",
        ]);
        support::success_stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).expect("row json"))
            .collect()
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

    fn wait_until(&self, what: &str, secs: u64, f: impl Fn(&Lab) -> bool) {
        let until = Instant::now() + Duration::from_secs(secs);
        while !f(self) {
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
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
                assert!(status.success(), "clean exit on SIGTERM: {status}");
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

/// A template that fails at run time: the calls are stored, their records parked `failed`
/// with the reason (`outbox list`), nothing reaches Zoho; the admin fixes the file and runs
/// `outbox retry --all-failed` while the bridge still runs the old configuration: the retry
/// renders with the fixed file and every call is delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_template_at_run_time_loses_no_call() {
    let lab = Lab::start().await;
    let expected = truth_linkedids(TRUTH);
    assert_eq!(
        expected.len(),
        121,
        "the busy hour's truth file has 121 calls"
    );
    lab.write_config(BROKEN_DESCRIPTION);
    // The page's API on a free port, to see the reason where supervisors look.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let with_http = |lab: &Lab| {
        let text = std::fs::read_to_string(lab.config())
            .expect("config")
            .replace(
                "[http]\nlisten = \"\"",
                &format!("[http]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"page-token\""),
            );
        std::fs::write(lab.config(), text).expect("write");
    };
    with_http(&lab);
    let code = lab.sim.grant_code(CLIENT_ID, "eu", BRIDGE_SCOPES, None);
    tokio::task::block_in_place(|| {
        support::success_stdout(&lab.cli(&[
            "zoho",
            "authorize",
            "--account",
            "main",
            "--code",
            &code,
        ]))
    });
    let mut child = lab.spawn();
    tokio::task::block_in_place(|| {
        lab.wait_until("every call parked", 90, |l| {
            l.rows("failed").len() >= expected.len()
        });
    });
    // Nothing was sent, and nothing else is waiting.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(lab.sim.records("Calls").is_empty());
    let failed = tokio::task::block_in_place(|| lab.rows("failed"));
    assert_eq!(failed.len(), expected.len());
    assert!(tokio::task::block_in_place(|| lab.rows("pending")).is_empty());
    let mut parked: Vec<String> = failed
        .iter()
        .map(|r| r["linkedid"].as_str().expect("linkedid").to_string())
        .collect();
    parked.sort();
    assert_eq!(
        parked, expected,
        "one parked row per call of the truth file"
    );
    for r in &failed {
        let err = r["last_error"].as_str().unwrap_or_default();
        assert!(
            err.contains("zoho.configurations.default.description") && err.contains("shout"),
            "the reason names the key and the filter: {err}"
        );
        assert_eq!(r["unrendered"], true);
    }
    assert!(
        lab.log().contains("record stored as failed"),
        "{}",
        lab.log()
    );
    // The search page's data says failed, and why.
    let page = tokio::task::spawn_blocking(move || {
        reqwest::blocking::Client::new()
            .get(format!(
                "http://127.0.0.1:{port}/api/interactions?per_page=500"
            ))
            .bearer_auth("page-token")
            .timeout(Duration::from_secs(10))
            .send()
            .and_then(|r| r.json::<Value>())
            .expect("api")
    })
    .await
    .expect("join");
    assert_eq!(page["total"], expected.len(), "{page}");
    for i in page["interactions"].as_array().expect("rows") {
        assert_eq!(i["delivery"], "failed", "{i}");
        assert!(
            i["delivery_error"]
                .as_str()
                .unwrap_or_default()
                .contains("shout"),
            "{i}"
        );
    }
    // The calls themselves are in the interaction log.
    let store = ami_zoho_bridge::store::Store::open(&format!("sqlite://{}", lab.store().display()))
        .await
        .expect("store");
    assert_eq!(
        store.interaction_count().await.expect("count"),
        expected.len() as i64
    );
    store.close().await;

    // A retry with the file still broken renders nothing and says why (exit 1).
    let again = tokio::task::block_in_place(|| lab.cli(&["outbox", "retry", "--all-failed"]));
    assert_eq!(again.status.code(), Some(1));
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(
        said.contains("still cannot be rendered") && said.contains("shout"),
        "{said}"
    );

    lab.write_config(FIXED_DESCRIPTION);
    with_http(&lab);
    let retried = tokio::task::block_in_place(|| {
        support::success_stdout(&lab.cli(&["outbox", "retry", "--all-failed"]))
    });
    assert!(
        retried.starts_with(&format!(
            "{} row(s) queued again ({} rendered",
            expected.len(),
            expected.len()
        )),
        "{retried}"
    );
    tokio::task::block_in_place(|| {
        lab.wait_until("every call delivered", 90, |l| {
            l.sim.records("Calls").len() >= expected.len()
        });
    });
    // Anything sent twice would show in the next moments too.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    terminate(&mut child);
    let got = lab.delivered();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for id in &got {
        *counts.entry(id).or_default() += 1;
    }
    assert!(
        counts.values().all(|n| *n == 1),
        "delivered twice: {counts:?}"
    );
    assert_eq!(got, expected);
    // Rendered with the fixed template (upper-cased status), not the broken or default one.
    for r in lab.sim.records("Calls") {
        let d = r["Description"].as_str().unwrap_or_default();
        let status = d.lines().next().and_then(|l| l.strip_prefix("Status: "));
        assert!(
            status.is_some_and(|s| !s.is_empty() && s == s.to_uppercase()),
            "{d}"
        );
    }
    let after = tokio::task::block_in_place(|| lab.rows("delivered"));
    assert_eq!(after.len(), expected.len());
    let none = tokio::task::block_in_place(|| {
        support::success_stdout(&lab.cli(&["outbox", "retry", "--all-failed"]))
    });
    assert!(none.starts_with("0 row(s)"), "{none}");
}

/// `outbox list` and `search` where no store exists: an error naming the file, and no file
/// created.
#[test]
fn read_only_commands_refuse_a_missing_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("nothing-here.db");
    let cfg = dir.path().join("bridge.toml");
    std::fs::write(
        &cfg,
        format!("[store]\nurl = \"sqlite://{}\"\n", db.display()),
    )
    .expect("write");
    for args in [
        vec!["outbox", "list"],
        vec!["outbox", "show", "1"],
        vec!["search", "--phone", "0612345678"],
    ] {
        let out = support::bridge()
            .args(&args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("nothing-here.db") && err.contains("no store"),
            "{args:?}: {err}"
        );
        assert!(!db.exists(), "{args:?} created {}", db.display());
    }
}

fn replay(args: &[&str], file: &Path) -> std::process::Output {
    support::bridge()
        .arg("replay")
        .arg(file)
        .args(args)
        .output()
        .expect("run")
}

/// `replay` of what is not an AMI capture: exit 1 and a word why. A real capture: a summary
/// on stderr with the counts of the truth file.
#[test]
fn replay_says_what_it_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.ami");
    std::fs::write(&empty, b"").expect("write");
    let random = dir.path().join("random.bin");
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&random, bytes).expect("write");
    let readme = support::root().join("README.md");
    for (file, why) in [
        (&empty, "empty"),
        (&random, "not an AMI capture"),
        (&readme, "not an AMI capture"),
    ] {
        for emit in ["events", "calls"] {
            let out = replay(&["--emit", emit], file);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{}: {err}", file.display());
            assert!(err.contains(why), "{}: {err}", file.display());
            assert!(out.stdout.is_empty(), "{}", file.display());
        }
    }
    // A real capture: calls as in the truth file, and a summary line on stderr.
    let capture = support::root().join("fixtures/ami-sip/mixed-small.ami");
    let out = replay(&["--emit", "calls"], &capture);
    let text = support::success_stdout(&out);
    assert_eq!(
        text.lines().count(),
        5,
        "mixed-small has five calls (truth file)"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("5 calls"), "{err}");

    // `--emit activities` needs the triggers of a configuration.
    let out = replay(&["--emit", "activities"], &capture);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));

    // A directory and a broken gzip: the cause once.
    for (path, cause) in [
        (dir.path().to_path_buf(), "directory"),
        (dir.path().join("broken.ami.gz"), "gzip"),
    ] {
        if path.extension().is_some() {
            std::fs::write(&path, b"\x1f\x8bnot really gzip").expect("write");
        }
        let out = replay(&["--emit", "events"], &path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.to_lowercase().contains(cause), "{err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line, the cause once: {err}");
    }
}

/// `zoho test` refreshes with the configured secret every time (a wrong secret is caught even
/// while a cached access token is valid), tells a wrong secret from an unknown client, and
/// probes the Tasks scope when a trigger makes Tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zoho_test_proves_the_secret_and_every_scope() {
    let lab = Lab::start().await;
    lab.write_config(FIXED_DESCRIPTION);
    let zoho = |args: &[&str], secret: &str| {
        let mut all = vec!["zoho"];
        all.extend_from_slice(args);
        let out = support::bridge()
            .args(&all)
            .arg("--config")
            .arg(lab.config())
            .env("ZOHO_CLIENT_SECRET", secret)
            .output()
            .expect("run");
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // A grant without the Tasks scope.
    let scopes = BRIDGE_SCOPES.replace("ZohoCRM.modules.tasks.CREATE,", "");
    assert_ne!(scopes, BRIDGE_SCOPES);
    let code = lab.sim.grant_code(CLIENT_ID, "eu", &scopes, None);
    let (rc, text) = tokio::task::block_in_place(|| {
        zoho(
            &["authorize", "--account", "main", "--code", &code],
            "not-the-secret",
        )
    });
    assert_eq!(rc, Some(1), "{text}");
    assert!(text.contains("wrong client secret"), "{text}");
    let (rc, text) = tokio::task::block_in_place(|| {
        zoho(
            &["authorize", "--account", "main", "--code", &code],
            CLIENT_SECRET,
        )
    });
    assert_eq!(rc, Some(0), "{text}");
    let (rc, text) =
        tokio::task::block_in_place(|| zoho(&["test", "--account", "main"], CLIENT_SECRET));
    assert_eq!(rc, Some(0), "{text}");
    assert!(text.contains("is ready"), "{text}");
    let requests = lab.sim.stats().token_requests;
    // The access token in the file is valid for an hour: a wrong secret is still found.
    let (rc, text) =
        tokio::task::block_in_place(|| zoho(&["test", "--account", "main"], "not-the-secret"));
    assert_eq!(rc, Some(1), "{text}");
    assert!(
        text.contains("wrong client secret") && !text.contains("is ready"),
        "{text}"
    );
    assert!(
        lab.sim.stats().token_requests > requests,
        "zoho test asked for a token"
    );

    // A trigger that makes follow-up Tasks needs the scope the grant lacks.
    let mut cfg = std::fs::read_to_string(lab.config()).expect("config");
    cfg.push_str(
        "\n[[triggers]]\nname = \"abandoned: call back\"\nall = [ { field = \"status\", op = \"equals\", value = \"abandoned\" } ]\nactions = [ { zoho_task = \"default\" } ]\n",
    );
    std::fs::write(lab.config(), cfg).expect("write");
    let (rc, text) =
        tokio::task::block_in_place(|| zoho(&["test", "--account", "main"], CLIENT_SECRET));
    assert_eq!(rc, Some(1), "{text}");
    assert!(
        text.contains("missing OAuth scope ZohoCRM.modules.tasks.CREATE"),
        "{text}"
    );

    // An unknown client id is named as such.
    let cfg = std::fs::read_to_string(lab.config())
        .expect("config")
        .replace(CLIENT_ID, "1000.NOSUCHCLIENT");
    std::fs::write(lab.config(), cfg).expect("write");
    let (rc, text) =
        tokio::task::block_in_place(|| zoho(&["test", "--account", "main"], CLIENT_SECRET));
    assert_eq!(rc, Some(1), "{text}");
    assert!(text.contains("unknown client id"), "{text}");
}

/// The demo checks its port before replaying (and says how to pick another), and removes the
/// temporary folder it made.
#[test]
fn demo_checks_its_port_first_and_cleans_up() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = support::bridge()
        .args(["demo", "--listen", &addr])
        .env("TMPDIR", tmp.path())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&addr) && err.contains("--listen"), "{err}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("Replaying"),
        "nothing replayed before the port was checked"
    );
    drop(busy);

    let out = support::bridge()
        .args(["demo", "--no-serve"])
        .env("TMPDIR", tmp.path())
        .output()
        .expect("run");
    let text = support::success_stdout(&out);
    assert!(text.contains("121 calls"), "{text}");
    assert!(
        text.contains("1000.LABCLIENT"),
        "the simulated Self Client is named: {text}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("read tmp")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "the demo left {left:?} behind");
}

/// Two PBXs, one refusing the bridge's login: the other's calls are all delivered, the
/// refusing one is retried with backoff and shown not connected in `/readyz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_does_not_stop_the_other_pbx() {
    let lab = Lab::start().await;
    let refusing = AmiServer::start(ServerConfig {
        username: "bridge".into(),
        secret: "another-secret".into(),
        body: Vec::new(),
        answer_ping: true,
        cut_at: None,
        once: false,
    })
    .await;
    let expected = truth_linkedids(TRUTH);
    lab.write_config(FIXED_DESCRIPTION);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let text = std::fs::read_to_string(lab.config())
        .expect("config")
        .replace(
            "[http]\nlisten = \"\"",
            &format!("[http]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"page-token\""),
        );
    assert!(text.contains("page-token"));
    let text = format!(
        "{text}\n[[pbx]]\nname = \"refusing\"\nhost = \"127.0.0.1\"\nport = {}\nusername = \"bridge\"\nsecret = \"{AMI_SECRET}\"\n",
        refusing.port
    );
    std::fs::write(lab.config(), text).expect("write");
    let code = lab.sim.grant_code(CLIENT_ID, "eu", BRIDGE_SCOPES, None);
    tokio::task::block_in_place(|| {
        support::success_stdout(&lab.cli(&[
            "zoho",
            "authorize",
            "--account",
            "main",
            "--code",
            &code,
        ]))
    });
    let mut child = lab.spawn();
    tokio::task::block_in_place(|| {
        lab.wait_until("every call of the good PBX delivered", 90, |l| {
            l.sim.records("Calls").len() >= expected.len()
        });
        lab.wait_until("the refused login retried", 30, |_| {
            refusing.state.lock().unwrap().logins_failed >= 2
        });
    });
    assert!(
        child.try_wait().expect("status").is_none(),
        "the bridge keeps running"
    );
    let ready = tokio::task::spawn_blocking(move || {
        reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .bearer_auth("page-token")
            .timeout(Duration::from_secs(10))
            .send()
            .and_then(|r| r.json::<Value>())
            .expect("readyz")
    })
    .await
    .expect("join");
    assert_eq!(ready["pbx"]["lab"], true, "{ready}");
    assert_eq!(ready["pbx"]["refusing"], false, "{ready}");
    terminate(&mut child);
    assert!(lab.log().contains("AMI login refused"), "{}", lab.log());
    assert_eq!(lab.delivered(), expected);
}
