//! PhoneBridge's refusals, as the simulator gives them and as the client reports them:
//! PBX_NOT_INTEGRATED before `integrate`, one provider per org, missing scopes, missing
//! parameters, a raw `+`, ISO times, 500, timeouts. Then the daemon with a PhoneBridge that
//! refuses everything: the errors are logged with the call and the agent, counted in
//! `/metrics`, and the REST Call activities still go out.

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

async fn client(sim: &SimHandle, dir: &std::path::Path, id: &str, secret: &str, scopes: &str) -> PhoneBridge {
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

    let e = a.callnotify(&ringing(user)).await.expect_err("before integrate");
    assert_eq!(code(&e), "PBX_NOT_INTEGRATED", "{e}");
    assert_eq!(e.retry(), Retry::Permanent);

    a.integrate(true).await.expect("integrate");
    let e = b.integrate(true).await.expect_err("second provider");
    assert_eq!(code(&e), "DIFFERENT_PROVIDER_ALREADY_ENABLED", "{e}");

    let users = a.users().await.expect("users");
    assert!(users.iter().any(|u| u.zohouser == user && u.email == "agent1001@example.com"), "{users:?}");

    a.callnotify(&ringing(user)).await.expect("ringing");

    let mut missing = ringing(user);
    missing.retain(|(k, _)| *k != "from");
    let e = a.callnotify(&missing).await.expect_err("no from");
    assert_eq!(code(&e), "REQUIRED_PARAM_MISSING", "{e}");
    assert!(matches!(e, ZohoError::Api { status: 400, .. }), "{e:?}");

    let mut missed = ringing(user);
    missed[1].1 = "missed".into();
    let e = a.callnotify(&missed).await.expect_err("missed without start_time");
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
        t["access_token"].as_str().expect("access token").to_string()
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
    let states: Vec<&str> = t["agent1001@example.com"].iter().map(|p| p.state.as_str()).collect();
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
