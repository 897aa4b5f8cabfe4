//! PhoneBridge's refusals, as the simulator gives them and as the client reports them:
//! PBX_NOT_INTEGRATED before `integrate`, one provider per org, missing scopes, missing
//! parameters, a raw `+`, ISO times, 500, timeouts. Then the daemon with a PhoneBridge that
//! refuses everything: the errors are logged with the call and the agent, counted in
//! `/metrics`, and the REST Call activities still go out.

#[path = "support/paced_ami.rs"]
mod paced_ami;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ami_zoho_bridge::config::AccountConfig;
use ami_zoho_bridge::zoho::oauth::OAuth;
use ami_zoho_bridge::zoho::phonebridge::PhoneBridge;
use ami_zoho_bridge::zoho::sim::{self, Fault, SimClient, SimHandle, SimLimits};
use ami_zoho_bridge::zoho::{Retry, ZohoError};

const PB_SCOPES: &str = "PhoneBridge.call.log,PhoneBridge.zohoone.search";

async fn sim_with(clients: &[(&str, &str)]) -> SimHandle {
    let mut seed = sim::demo_seed();
    for (id, secret) in clients {
        seed.clients.push(SimClient {
            client_id: id.to_string(),
            client_secret: secret.to_string(),
        });
    }
    SimHandle::start("127.0.0.1:0".parse().unwrap(), seed, SimLimits::default())
        .await
        .expect("simulator")
}

async fn client(
    sim: &SimHandle,
    dir: &std::path::Path,
    id: &str,
    secret: &str,
    scopes: &str,
) -> PhoneBridge {
    let acc = AccountConfig {
        accounts_url: Some(sim.url("eu")),
        api_domain: Some(sim.url("eu")),
        client_id: id.into(),
        client_secret: Some(ami_zoho_bridge::secret::Secret::new(secret)),
        token_file: Some(dir.join(format!("tokens-{id}.json"))),
        ..AccountConfig::default()
    };
    let oauth = Arc::new(OAuth::new(id, &acc, reqwest::Client::new()).expect("oauth"));
    let code = sim.grant_code(id, "eu", scopes, None);
    oauth.exchange_code(&code).await.expect("exchange");
    PhoneBridge::new(oauth, Duration::from_secs(2)).expect("client")
}

fn code(e: &ZohoError) -> &str {
    e.code().unwrap_or("none")
}

fn ringing(user: &str) -> Vec<(&'static str, String)> {
    vec![
        ("type", "received".into()),
        ("state", "ringing".into()),
        ("id", "1795465952.102".into()),
        ("from", "+393331588952".into()),
        ("to", "+390699991001".into()),
        ("zohouser", user.into()),
    ]
}

#[tokio::test]
async fn the_simulator_refuses_what_zoho_refuses() {
    let sim = sim_with(&[("1000.PBA", "a-secret"), ("1000.PBB", "b-secret")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = client(&sim, dir.path(), "1000.PBA", "a-secret", PB_SCOPES).await;
    let b = client(&sim, dir.path(), "1000.PBB", "b-secret", PB_SCOPES).await;
    // The demo org's agent1001@example.com (id 5725767000000411002).
    let user = "pb5725767000000411002";

    let e = a
        .callnotify(&ringing(user))
        .await
        .expect_err("before integrate");
    assert_eq!(code(&e), "PBX_NOT_INTEGRATED", "{e}");
    assert_eq!(e.retry(), Retry::Permanent);

    a.integrate(true).await.expect("integrate");
    let e = b.integrate(true).await.expect_err("second provider");
    assert_eq!(code(&e), "DIFFERENT_PROVIDER_ALREADY_ENABLED", "{e}");

    let users = a.users().await.expect("users");
    assert!(
        users
            .iter()
            .any(|u| u.zohouser == user && u.email == "agent1001@example.com"),
        "{users:?}"
    );

    a.callnotify(&ringing(user)).await.expect("ringing");

    let mut missing = ringing(user);
    missing.retain(|(k, _)| *k != "from");
    let e = a.callnotify(&missing).await.expect_err("no from");
    assert_eq!(code(&e), "REQUIRED_PARAM_MISSING", "{e}");
    assert!(matches!(e, ZohoError::Api { status: 400, .. }), "{e:?}");

    let mut missed = ringing(user);
    missed[1].1 = "missed".into();
    let e = a
        .callnotify(&missed)
        .await
        .expect_err("missed without start_time");
    assert_eq!(code(&e), "REQUIRED_PARAM_MISSING", "{e}");
    missed.push(("start_time", "2026-11-23T20:32:32Z".into()));
    let e = a.callnotify(&missed).await.expect_err("ISO time");
    assert_eq!(code(&e), "INVALID_DATA", "{e}");
    missed.pop();
    missed.push(("start_time", "2026-11-23 20:32:32".into()));
    a.callnotify(&missed).await.expect("missed with a GMT time");

    // A raw `+` in a form body is a space: not E.164.
    let token = {
        let t: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("tokens-1000.PBA.json")).expect("tokens"),
        )
        .expect("json");
        t["access_token"]
            .as_str()
            .expect("access token")
            .to_string()
    };
    let raw = reqwest::Client::new()
        .post(format!("{}/phonebridge/v3/callnotify", sim.url("eu")))
        .header("Authorization", format!("Zoho-oauthtoken {token}"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("type=received&state=ringing&id=x1&from=+393331588952&to=%2B390699991001&zohouser={user}"))
        .send()
        .await
        .expect("send");
    assert_eq!(raw.status().as_u16(), 400);

    sim.inject(Fault::Status(500));
    let e = a.callnotify(&ringing(user)).await.expect_err("500");
    assert_eq!(code(&e), "INTERNAL_ERROR", "{e}");
    assert_eq!(e.retry(), Retry::Transient);

    // A token without the PhoneBridge scopes (the CRM Self Client's).
    let crm = client(&sim, dir.path(), "1000.PBB", "b-secret", sim::BRIDGE_SCOPES).await;
    let e = crm.callnotify(&ringing(user)).await.expect_err("scope");
    assert_eq!(code(&e), "OAUTH_SCOPE_MISMATCH", "{e}");
    assert!(matches!(e, ZohoError::Api { status: 401, .. }), "{e:?}");

    // Revoked grant: 401 INVALID_TOKEN, one refresh, which fails: reported, not retried forever.
    sim.inject(Fault::RevokeTokens);
    let e = a.callnotify(&ringing(user)).await.expect_err("revoked");
    assert!(matches!(e, ZohoError::OAuth { .. }), "{e:?}");

    // The timeline shows what the agent saw: one ringing, then the missed call.
    let t = sim.phonebridge_timeline();
    let states: Vec<&str> = t["agent1001@example.com"]
        .iter()
        .map(|p| p.state.as_str())
        .collect();
    assert_eq!(states, ["ringing", "missed"]);
}

#[tokio::test]
async fn a_silent_zoho_is_a_timeout_not_a_hang() {
    let sim = sim_with(&[("1000.PBA", "a-secret")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = client(&sim, dir.path(), "1000.PBA", "a-secret", PB_SCOPES).await;
    a.integrate(true).await.expect("integrate");
    sim.inject(Fault::Slow(Duration::from_secs(30)));
    let started = Instant::now();
    let e = a
        .callnotify(&ringing("pb5725767000000411002"))
        .await
        .expect_err("timeout");
    assert!(e.to_string().contains("timed out"), "{e}");
    assert_eq!(e.retry(), Retry::Transient);
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// The daemon with a PhoneBridge that refuses every notification (never integrated): each
/// refusal is logged with the call and the agent and counted in `/metrics`, and the REST Call
/// activity of the call still reaches Zoho.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_logged_counted_and_leave_the_call_activity_alone() {
    let sim = sim_with(&[("1000.LABCLIENT", "lab-secret"), ("1000.PBA", "a-secret")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = support::read_capture(
        &support::root().join("fixtures/ami-sip/inbound-answered-agent-hangup.ami"),
    );
    let port = paced_ami::paced_ami(support::ami_server::capture_body(&capture), 4.0).await;
    let http_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
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
    let url = sim.url("eu");
    let main = doc["zoho"]["accounts"]["main"]
        .as_table_mut()
        .expect("main");
    main.insert("accounts_url".into(), url.clone().into());
    main.insert("api_domain".into(), url.clone().into());
    main.insert(
        "token_file".into(),
        dir.path()
            .join("tokens-main.json")
            .display()
            .to_string()
            .into(),
    );
    main.insert("timeout_seconds".into(), 1.0.into());
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            r#"{doc}
[zoho.accounts.pb]
accounts_url = "{url}"
api_domain = "{url}"
client_id = "1000.PBA"
client_secret = "a-secret"
token_file = "{pb_tokens}"
timeout_seconds = 1.0
phone_index = false

[zoho.phonebridge]
account = "pb"
log_calls = false
agent_number = "+39069999{{ext}}"
users = {{ "agent1001@example.com" = "pb5725767000000411002", "agent1002@example.com" = "pb5725767000000411003" }}

[[pbx]]
name = "lab"
host = "127.0.0.1"
port = {port}
username = "bridge"
secret = "{secret}"
auth = "plain"

[store]
url = "sqlite://{db}"

[delivery]
lease_seconds = 3
poll_seconds = 0.2

[http]
listen = "127.0.0.1:{http_port}"
token = "metrics-token"

[agi]
listen = ""
"#,
            doc = toml::to_string(&doc).expect("toml"),
            pb_tokens = dir.path().join("tokens-pb.json").display(),
            secret = paced_ami::AMI_SECRET,
            db = dir.path().join("bridge.db").display(),
        ),
    )
    .expect("config");
    // Both accounts authorised; PhoneBridge never enabled for the org.
    for (account, client, scopes) in [
        ("main", "1000.LABCLIENT", sim::BRIDGE_SCOPES),
        ("pb", "1000.PBA", PB_SCOPES),
    ] {
        let code = sim.grant_code(client, "eu", scopes, None);
        support::authorize(&config, account, code, "lab-secret").await;
    }
    let log_path = dir.path().join("run.log");
    let mut child = support::bridge()
        .args(["run", "--config"])
        .arg(&config)
        .env("ZOHO_CLIENT_SECRET", "lab-secret")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("run");
    let linkedid = "1795465417.2";
    let until = Instant::now() + Duration::from_secs(60);
    let mut metrics = String::new();
    let mut done = false;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let delivered = sim.records("Calls").iter().any(|r| {
            r["Description"]
                .as_str()
                .is_some_and(|d| d.contains(&format!("Linkedid: {linkedid}")))
        });
        if let Ok(r) = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{http_port}/metrics"))
            .bearer_auth("metrics-token")
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            metrics = r.text().await.unwrap_or_default();
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if delivered && metrics.contains("PBX_NOT_INTEGRATED") && log.contains("state=\"closed\"") {
            done = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(done, "metrics:\n{metrics}\nlog:\n{log}");
    // Logged with the call and the agent.
    let refusal = log
        .lines()
        .find(|l| l.contains("PhoneBridge callnotify failed") && l.contains("PBX_NOT_INTEGRATED"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(
        refusal.contains(&format!("linkedid={linkedid}")),
        "{refusal}"
    );
    assert!(refusal.contains("agent=agent100"), "{refusal}");
    let counted = metrics
        .lines()
        .find(|l| l.starts_with("azb_phonebridge_errors_total") && l.contains("PBX_NOT_INTEGRATED"))
        .unwrap_or_else(|| panic!("not counted:\n{metrics}"));
    assert!(!counted.ends_with(" 0"), "{counted}");
    // Nothing was shown in Zoho, and the REST Call exists: the refusal did not stop it.
    assert!(sim.phonebridge_timeline().is_empty());
}
