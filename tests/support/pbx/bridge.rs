//! The real daemon (`ami-zoho-bridge run`) against a live PBX, delivering into the Zoho
//! simulator with a SQLite store: the product as it runs, with only Zoho simulated.
//!
//! Its configuration is the lab's own `fixtures/ami-real/bridge.toml` (the conventions of the
//! recorded PBX, which the test PBX copies), with the port, secret, store and simulator filled
//! in, and a Description that lists the call's fields one per line, so a check reads the
//! direction, parties, queue, agent and status of every Call record Zoho received.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ami_zoho_bridge::zoho::sim::{self, SimClient, SimHandle, SimLimits, BRIDGE_SCOPES};
use serde_json::Value;

use super::plan::Expected;

const CLIENT_ID: &str = "1000.LABCLIENT";
const CLIENT_SECRET: &str = "lab-client-secret";

/// Every field a check compares, one `Key: value` line each (absent values are `-`).
const DESCRIPTION: &str = "Direction: {{ direction }}\nStatus: {{ status }}\nCaller: {{ caller }}\nCallee: {{ callee }}\nQueue: {{ queue or '-' }}\nAgent: {{ agent or '-' }}\nRoute: {{ outbound_route or '-' }}\nIncomplete: {{ incomplete }}\nLinkedid: {{ linkedid }}";

/// Options of a rig.
#[derive(Clone, Debug, Default)]
pub struct RigOptions {
    /// The AMI secret the bridge uses (default: the PBX's bridge secret).
    pub secret: Option<String>,
}

/// A bridge configured for one PBX (or a proxy in front of it), and its Zoho.
pub struct BridgeRig {
    pub sim: SimHandle,
    pub dir: tempfile::TempDir,
    config: PathBuf,
    runs: usize,
}

impl BridgeRig {
    /// A simulator, a config pointed at `127.0.0.1:port` with the PBX's bridge account, and the
    /// Zoho grant exchanged (`zoho authorize`), as an admin sets a bridge up.
    pub async fn start(pbx: &super::Pbx, port: u16, opts: RigOptions) -> BridgeRig {
        let mut seed = sim::demo_seed();
        seed.clients.push(SimClient {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
        });
        let sim = SimHandle::start(
            "127.0.0.1:0".parse().expect("addr"),
            seed,
            SimLimits::default(),
        )
        .await
        .expect("simulator");
        let dir = tempfile::Builder::new()
            .prefix("azb-live-")
            .tempdir()
            .expect("tempdir");
        let config = dir.path().join("bridge.toml");
        let rig = BridgeRig {
            sim,
            dir,
            config,
            runs: 0,
        };
        let secret = opts
            .secret
            .unwrap_or_else(|| pbx.bridge_login().1.to_string());
        rig.write_config(port, &secret);
        rig.authorize().await;
        rig
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    /// (Re)writes the configuration: the lab's bridge.toml plus this rig's PBX, store, Zoho.
    pub fn write_config(&self, port: u16, secret: &str) {
        let text =
            std::fs::read_to_string(crate::support::root().join("fixtures/ami-real/bridge.toml"))
                .expect("fixtures/ami-real/bridge.toml");
        let mut doc: toml::Table = text.parse().expect("bridge.toml is TOML");
        let url = self.sim.url("eu");
        let zoho = doc["zoho"].as_table_mut().expect("[zoho]");
        let main = zoho["accounts"]["main"].as_table_mut().expect("account");
        main.insert("accounts_url".into(), url.clone().into());
        main.insert("api_domain".into(), url.into());
        let tokens = self.dir.path().join("tokens.json");
        main.insert("token_file".into(), tokens.display().to_string().into());
        main.insert("timeout_seconds".into(), 2.0.into());
        zoho["configurations"]["default"]
            .as_table_mut()
            .expect("configuration")
            .insert("description".into(), DESCRIPTION.into());
        let store = self.dir.path().join("bridge.db");
        let extra = format!(
            r#"
[[pbx]]
name = "live"
host = "127.0.0.1"
port = {port}
username = "bridge"
secret = "{secret}"
auth = "md5"
ping_seconds = 5

[store]
url = "sqlite://{store}"

[delivery]
workers = 2
batch_size = 20
lease_seconds = 5
backoff_initial_seconds = 0.1
backoff_max_seconds = 1
poll_seconds = 0.2

[http]
listen = ""

[agi]
listen = ""
"#,
            store = store.display(),
        );
        std::fs::write(
            &self.config,
            format!("{}\n{extra}", toml::to_string(&doc).expect("toml out")),
        )
        .expect("write config");
    }

    async fn authorize(&self) {
        let code = self.sim.grant_code(CLIENT_ID, "eu", BRIDGE_SCOPES, None);
        crate::support::authorize(&self.config, "main", code, CLIENT_SECRET).await;
    }

    fn log_path(&self, run: usize) -> PathBuf {
        self.dir.path().join(format!("run-{run}.log"))
    }

    /// Starts `ami-zoho-bridge run` (its log in the rig's folder, one file per run).
    pub fn spawn(&mut self) -> Child {
        self.runs += 1;
        let log = std::fs::File::create(self.log_path(self.runs)).expect("log");
        crate::support::bridge()
            .args(["run", "--config"])
            .arg(&self.config)
            .env("ZOHO_CLIENT_SECRET", CLIENT_SECRET)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the bridge")
    }

    /// Every run's log, in order.
    pub fn log(&self) -> String {
        (1..=self.runs)
            .map(|r| std::fs::read_to_string(self.log_path(r)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- next run\n")
    }

    /// The last warnings and errors of the logs (for failure messages).
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits until Zoho holds at least `n` Call records; false after `timeout`.
    pub async fn wait_records(&self, n: usize, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while self.sim.records("Calls").len() < n {
            if Instant::now() > until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    /// The Call records in Zoho, by Linkedid (each Linkedid's records, in arrival order).
    pub fn records(&self) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
        let mut out: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
        for r in self.sim.records("Calls") {
            let fields: BTreeMap<String, String> = r["Description"]
                .as_str()
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let id = fields.get("Linkedid").cloned().unwrap_or_default();
            out.entry(id).or_default().push(fields);
        }
        out
    }

    /// Compares Zoho's Call records with what the driver asked for.
    pub fn check(&self, expected: &[Expected]) -> Report {
        let mut records = self.records();
        let mut report = Report::default();
        for e in expected {
            let Some(got) = records.remove(&e.linkedid) else {
                report.lost.push(e.clone());
                continue;
            };
            if got.len() > 1 {
                report.doubled.push((e.clone(), got.len()));
            }
            let r = &got[0];
            let want = [
                ("Direction", e.direction.to_string()),
                ("Status", e.status.to_string()),
                ("Caller", e.caller.clone()),
                ("Callee", e.callee.clone()),
                ("Queue", e.queue.clone().unwrap_or_else(|| "-".into())),
                ("Agent", e.agent.clone().unwrap_or_else(|| "-".into())),
                (
                    "Route",
                    e.outbound_route.clone().unwrap_or_else(|| "-".into()),
                ),
            ];
            let wrong: Vec<String> = want
                .iter()
                .filter(|(k, v)| r.get(*k).map(String::as_str) != Some(v.as_str()))
                .map(|(k, v)| format!("{k}: want {v:?}, got {:?}", r.get(*k)))
                .collect();
            if wrong.is_empty() {
                report.right += 1;
            } else {
                report.wrong.push((e.clone(), wrong));
            }
        }
        report.unexpected = records.into_values().flatten().collect();
        report
    }
}

/// How the bridge's Call records compare with the truth.
#[derive(Debug, Default)]
pub struct Report {
    pub right: usize,
    pub wrong: Vec<(Expected, Vec<String>)>,
    pub lost: Vec<Expected>,
    pub doubled: Vec<(Expected, usize)>,
    /// Records of no planned call.
    pub unexpected: Vec<BTreeMap<String, String>>,
}

impl Report {
    pub fn all_right(&self) -> bool {
        self.wrong.is_empty()
            && self.lost.is_empty()
            && self.doubled.is_empty()
            && self.unexpected.is_empty()
    }

    pub fn assert_all_right(&self) {
        assert!(self.all_right(), "{self}");
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "right {}, wrong {}, lost {}, doubled {}, unexpected {}",
            self.right,
            self.wrong.len(),
            self.lost.len(),
            self.doubled.len(),
            self.unexpected.len()
        )?;
        for (e, why) in &self.wrong {
            writeln!(
                f,
                "  wrong {} {} {} -> {}: {}",
                e.linkedid,
                e.direction,
                e.caller,
                e.callee,
                why.join("; ")
            )?;
        }
        for e in &self.lost {
            writeln!(
                f,
                "  lost {} {} {} {} -> {}",
                e.linkedid, e.direction, e.status, e.caller, e.callee
            )?;
        }
        for (e, n) in &self.doubled {
            writeln!(f, "  {n} records for {}", e.linkedid)?;
        }
        for r in &self.unexpected {
            writeln!(f, "  unexpected record {r:?}")?;
        }
        Ok(())
    }
}

/// SIGTERM, then waits (bounded) for the bridge to exit; its exit status.
pub fn terminate(child: &mut Child) -> Option<std::process::ExitStatus> {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            _ if Instant::now() > until => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Waits (bounded) for a process to exit by itself; its status, or `None` if it still runs.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            _ if Instant::now() > until => return None,
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The JSON value of a line (for `watch --emit calls` output).
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
