//! The agent page in headless Chromium: two agents of the ringall queue `support` open their
//! personal links; the PBX (a TCP AMI server playing `ami-sip/inbound-answered-agent-hangup`
//! at its recorded pace) rings both; agent 1001 answers. Truth: the call from +390612345678
//! rang Agents 1001, 1002, 1003, 1004, 1007, 1008 and Agent 1001 answered. Agent 1001's card
//! must show ringing (with the Contact's name from the simulator), answered, ended; agent
//! 1002's must ring, then close. A link for 1001 cannot read 1002's stream (403).
//! Screenshots are kept under `target/`.
//!
//! Skipped (with a message) when Chromium is not installed, unless `AZB_REQUIRE_BROWSER=1`.

#[path = "support/paced_ami.rs"]
mod paced_ami;
mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use ami_zoho_bridge::zoho::sim::{self, SimClient, SimHandle, SimLimits, SimPerson};

const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";
const LINK_SECRET: &str = "agent-page-test-link-secret";
const LINKEDID: &str = "1795465417.2";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_for_port(port: u16) {
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Driver {
    http: reqwest::blocking::Client,
    base: String,
}

impl Driver {
    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req
            .send()
            .expect("webdriver")
            .json()
            .expect("webdriver json");
        assert!(v["value"]["error"].is_null(), "{path}: {v}");
        v["value"].clone()
    }

    fn session(&self, profile: &std::path::Path) -> String {
        let s = self.call(
            reqwest::Method::POST,
            "/session",
            Some(json!({ "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update",
                             "--disable-sync", "--window-size=900,700",
                             format!("--user-data-dir={}", profile.display())]
                }
            }}})),
        );
        s["sessionId"].as_str().expect("session id").to_string()
    }

    fn run(&self, sid: &str, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            &format!("/session/{sid}/execute/sync"),
            Some(json!({ "script": script, "args": [] })),
        )
    }

    fn screenshot(&self, sid: &str, name: &str) {
        let shot = self.call(
            reqwest::Method::GET,
            &format!("/session/{sid}/screenshot"),
            None,
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().expect("screenshot"))
            .expect("base64");
        let target = support::root().join("target");
        std::fs::create_dir_all(&target).expect("target");
        std::fs::write(target.join(name), png).expect("screenshot file");
    }
}

/// The states agent `sid`'s page received for the call, in order, and the Contact names.
fn log_of(d: &Driver, sid: &str) -> Vec<(String, Option<String>)> {
    d.run(sid, "return window.agentLog || []")
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["call"] == LINKEDID)
        .map(|e| {
            (
                e["state"].as_str().unwrap_or_default().to_string(),
                e["contact"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn agent_cards_in_headless_chromium() {
    if !(std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(DRIVER).exists()) {
        assert!(
            std::env::var("AZB_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "AZB_REQUIRE_BROWSER=1 but {CHROMIUM} or {DRIVER} is missing"
        );
        eprintln!("SKIPPED: no Chromium (apt-get install chromium chromium-driver)");
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut seed = sim::demo_seed();
    // The caller is a Contact of the org (and nothing else has the number).
    seed.leads.clear();
    seed.contacts.push(SimPerson {
        id: "5725767000000512077".into(),
        full_name: "Carla Neri".into(),
        phones: [("Phone".to_string(), "06 1234 5678".to_string())].into(),
        owner_email: None,
    });
    seed.clients.push(SimClient {
        client_id: "1000.LABCLIENT".into(),
        client_secret: "lab-secret".into(),
    });
    let sim = rt
        .block_on(SimHandle::start(
            "127.0.0.1:0".parse().unwrap(),
            seed,
            SimLimits::default(),
        ))
        .expect("simulator");
    let capture = support::read_capture(
        &support::root().join("fixtures/ami-sip/inbound-answered-agent-hangup.ami"),
    );
    let gate = Arc::new(tokio::sync::Notify::new());
    let ami_port = rt.block_on(paced_ami::paced_ami_gated(
        support::ami_server::capture_body(&capture),
        1.0,
        Some(gate.clone()),
    ));
    let http_port = free_port();
    let url = sim.url("eu");
    let text = std::fs::read_to_string(support::root().join("fixtures/ami-sip/bridge.toml"))
        .expect("bridge.toml");
    let mut doc: toml::Table = text.parse().expect("toml");
    let agents: toml::Table = (1001..=1012)
        .map(|e| {
            (
                e.to_string(),
                toml::Value::from(format!("agent{e}@example.com")),
            )
        })
        .collect();
    doc.insert("agents".into(), agents.into());
    let main = doc["zoho"]["accounts"]["main"]
        .as_table_mut()
        .expect("main");
    main.insert("accounts_url".into(), url.clone().into());
    main.insert("api_domain".into(), url.clone().into());
    main.insert(
        "token_file".into(),
        dir.path().join("tokens.json").display().to_string().into(),
    );
    main.insert("timeout_seconds".into(), 1.0.into());
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            r#"{doc}
[agent_page]
link_secret_env = "AZB_AGENT_LINK_SECRET"

[[pbx]]
name = "lab"
host = "127.0.0.1"
port = {ami_port}
username = "bridge"
secret = "{secret}"
auth = "plain"

[store]
url = "sqlite://{db}"

[delivery]
lease_seconds = 3

[http]
listen = "127.0.0.1:{http_port}"
token = "admin-token"

[agi]
listen = ""
"#,
            doc = toml::to_string(&doc).expect("toml"),
            secret = paced_ami::AMI_SECRET,
            db = dir.path().join("bridge.db").display(),
        ),
    )
    .expect("config");
    let code = sim.grant_code("1000.LABCLIENT", "eu", sim::BRIDGE_SCOPES, None);
    rt.block_on(support::authorize(&config, "main", code, "lab-secret"));
    let link = |email: &str| -> String {
        let out = support::bridge()
            .args(["agent-link", email, "--config"])
            .arg(&config)
            .env("AZB_AGENT_LINK_SECRET", LINK_SECRET)
            .output()
            .expect("agent-link");
        support::success_stdout(&out).trim().to_string()
    };
    let link_a = link("agent1001@example.com");
    let link_b = link("agent1002@example.com");
    assert!(
        link_a.starts_with(&format!("http://127.0.0.1:{http_port}/agent?")),
        "{link_a}"
    );

    let bridge = support::bridge()
        .args(["run", "--config"])
        .arg(&config)
        .env("ZOHO_CLIENT_SECRET", "lab-secret")
        .env("AZB_AGENT_LINK_SECRET", LINK_SECRET)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("run.log")).expect("log"))
        .spawn()
        .expect("run");
    let _bridge = Killed(bridge);
    wait_for_port(http_port);

    // A's link does not open B's stream, nor the admin API.
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let query_a = link_a.split_once('?').expect("query").1;
    let stolen = query_a.replace("agent1001%40example.com", "agent1002%40example.com");
    let r = http
        .get(format!(
            "http://127.0.0.1:{http_port}/agent/events?{stolen}"
        ))
        .send()
        .expect("events");
    assert_eq!(r.status().as_u16(), 403);
    let r = http
        .get(format!(
            "http://127.0.0.1:{http_port}/api/interactions?{query_a}"
        ))
        .send()
        .expect("api");
    assert_eq!(r.status().as_u16(), 401);

    let driver_port = free_port();
    let driver = Command::new(DRIVER)
        .arg(format!("--port={driver_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver");
    let _driver = Killed(driver);
    wait_for_port(driver_port);
    let d = Driver {
        http: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client"),
        base: format!("http://127.0.0.1:{driver_port}"),
    };
    let a = d.session(&dir.path().join("profile-a"));
    let b = d.session(&dir.path().join("profile-b"));
    for (sid, link) in [(&a, &link_a), (&b, &link_b)] {
        d.call(
            reqwest::Method::POST,
            &format!("/session/{sid}/url"),
            Some(json!({ "url": link })),
        );
    }
    // Both pages connected before the phone rings.
    let until = Instant::now() + Duration::from_secs(30);
    for sid in [&a, &b] {
        while d.run(sid, "return document.getElementById('status').textContent") != "connected" {
            assert!(Instant::now() < until, "the page never connected");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    gate.notify_one();

    // While it rings: A's card, with the Contact's name.
    let until = Instant::now() + Duration::from_secs(60);
    let mut shot_ringing = false;
    loop {
        let ringing = d.run(&a, &format!(
            "const c = document.getElementById('call-{LINKEDID}'); return c ? c.className + '|' + c.textContent : ''"
        ));
        let s = ringing.as_str().unwrap_or_default().to_string();
        if !shot_ringing && s.contains("ringing") && s.contains("Carla Neri") {
            d.screenshot(&a, "agent-page-ringing.png");
            shot_ringing = true;
        }
        let log = log_of(&d, &a);
        if log.iter().any(|(s, _)| s == "ended") {
            break;
        }
        assert!(
            Instant::now() < until,
            "no end of the call on A's page: {log:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.screenshot(&a, "agent-page-ended.png");
    d.screenshot(&b, "agent-page-closed.png");
    let log_a = log_of(&d, &a);
    let states_a: Vec<&str> = log_a
        .iter()
        .map(|(s, _)| s.as_str())
        .filter(|s| *s != "contact")
        .collect();
    assert_eq!(states_a, ["ringing", "answered", "ended"], "{log_a:?}");
    let contact_at = log_a
        .iter()
        .position(|(s, c)| s == "contact" && c.as_deref() == Some("Carla Neri"));
    let answered_at = log_a.iter().position(|(s, _)| s == "answered");
    assert!(
        contact_at.is_some() && contact_at < answered_at,
        "the Contact's name while ringing: {log_a:?}"
    );
    assert!(
        shot_ringing,
        "the ringing card with the Contact's name was on screen"
    );
    let log_b = log_of(&d, &b);
    let states_b: Vec<&str> = log_b
        .iter()
        .map(|(s, _)| s.as_str())
        .filter(|s| *s != "contact")
        .collect();
    assert_eq!(states_b, ["ringing", "closed"], "{log_b:?}");
    // The last calls list has the call on A's page.
    let rows = d.run(&a, "return document.getElementById('recent').textContent");
    assert!(
        rows.as_str().unwrap_or_default().contains("ended"),
        "{rows}"
    );
    for sid in [a, b] {
        d.call(reqwest::Method::DELETE, &format!("/session/{sid}"), None);
    }
}
