//! The AMI client against a real TCP server replaying a recorded capture.

mod support;

use std::time::Duration;

use ami_zoho_bridge::ami::client::ActionResult;
use ami_zoho_bridge::ami::{Action, AmiClient, AmiError, AuthMethod, ClientConfig, SourceEvent};
use ami_zoho_bridge::secret::Secret;
use support::ami_server::{capture_body, AmiServer, ServerConfig};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

const SECRET: &str = "lab-secret-Zq81";

fn body() -> Vec<u8> {
    let capture = support::read_capture(&support::root().join("fixtures/ami-real/mixed-small.ami"));
    capture_body(&capture)
}

/// Every message of the body, as the independent reader sees it: its raw text.
fn body_messages(body: &[u8]) -> Vec<Vec<u8>> {
    let starts = support::ami_server::message_starts(body);
    let mut out = Vec::new();
    for (i, &s) in starts.iter().enumerate() {
        let e = starts.get(i + 1).copied().unwrap_or(body.len());
        out.push(body[s..e].to_vec());
    }
    out
}

fn server_config(body: Vec<u8>) -> ServerConfig {
    ServerConfig {
        username: "bridge".into(),
        secret: SECRET.into(),
        body,
        answer_ping: true,
        cut_at: None,
        once: false,
    }
}

fn client_config(port: u16, auth: AuthMethod, secret: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new("127.0.0.1", port, "bridge", Secret::new(secret));
    cfg.auth = auth;
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.action_timeout = Duration::from_secs(5);
    cfg.backoff_initial = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(400);
    cfg
}

/// Collects `n` messages, returning them and the markers seen in between.
async fn collect(rx: &mut Receiver<SourceEvent>, n: usize) -> (Vec<Vec<u8>>, Vec<String>) {
    let mut messages = Vec::new();
    let mut markers = Vec::new();
    while messages.len() < n {
        let ev = timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("events keep coming")
            .expect("stream open");
        match ev {
            SourceEvent::Message(m) => messages.push(m.as_bytes().to_vec()),
            SourceEvent::Connected { .. } => markers.push("connected".into()),
            SourceEvent::Reconnected { .. } => markers.push("reconnected".into()),
            SourceEvent::Disconnected { .. } => markers.push("disconnected".into()),
            SourceEvent::Resync { .. } => markers.push("resync".into()),
        }
    }
    (messages, markers)
}

async fn login_and_stream(auth: AuthMethod) {
    let body = body();
    let expected = body_messages(&body);
    let server = AmiServer::start(server_config(body)).await;
    let (_client, mut rx) = AmiClient::connect(client_config(server.port, auth, SECRET))
        .await
        .expect("login");
    let (got, markers) = collect(&mut rx, expected.len()).await;
    assert_eq!(markers, vec!["connected"]);
    let events = got.iter().filter(|m| m.starts_with(b"Event:")).count();
    assert_eq!(events, 702, "mixed-small.truth.json: capture_event_count");
    assert_eq!(got, expected);
}

#[tokio::test]
async fn plain_login_streams_every_event() {
    login_and_stream(AuthMethod::Plain).await;
}

#[tokio::test]
async fn md5_login_streams_every_event_and_never_sends_the_secret() {
    let body = body();
    let server = AmiServer::start(server_config(body)).await;
    let (_client, _rx) = AmiClient::connect(client_config(server.port, AuthMethod::Md5, SECRET))
        .await
        .expect("md5 login");
    {
        let st = server.state.lock().unwrap();
        assert_eq!(st.logins_ok, 1);
        assert!(st
            .actions
            .iter()
            .all(|a| a.values().all(|v| !v.contains(SECRET))));
        let challenged = st
            .actions
            .iter()
            .any(|a| a.get("action").map(String::as_str) == Some("Challenge"));
        assert!(challenged);
    }
    login_and_stream(AuthMethod::Md5).await;
}

#[tokio::test]
async fn wrong_password_is_a_clear_error_without_the_secret() {
    let server = AmiServer::start(server_config(body())).await;
    for auth in [AuthMethod::Plain, AuthMethod::Md5] {
        let wrong = "wrong-Secret-77";
        let err = AmiClient::connect(client_config(server.port, auth, wrong))
            .await
            .err()
            .expect("login must fail");
        let text = err.to_string();
        assert!(matches!(err, AmiError::LoginFailed { .. }), "{text}");
        assert!(
            text.contains(&format!("127.0.0.1:{}", server.port)),
            "{text}"
        );
        assert!(text.contains("bridge"), "{text}");
        assert!(text.contains("Authentication failed"), "{text}");
        assert!(
            !text.contains(wrong) && !format!("{err:?}").contains(wrong),
            "{text}"
        );
    }
    assert_eq!(server.state.lock().unwrap().logins_failed, 2);
}

#[tokio::test]
async fn actions_get_their_response_and_event_lists_their_items() {
    let body = body();
    let n = body_messages(&body).len();
    let server = AmiServer::start(server_config(body)).await;
    let (client, mut rx) = AmiClient::connect(client_config(server.port, AuthMethod::Md5, SECRET))
        .await
        .expect("login");
    let pong = client
        .send(Action::new("Ping"))
        .await
        .expect("ping answered");
    assert_eq!(pong.get_str("Ping").as_deref(), Some("Pong"));
    let ActionResult { response, events } = client
        .send_list(Action::new("CoreShowChannels"))
        .await
        .expect("list");
    assert_eq!(response.get_str("EventList").as_deref(), Some("start"));
    // Every call of the capture has ended: the list is its Complete event, counting none.
    assert_eq!(events.len(), 1);
    assert!(events[0].is_event("CoreShowChannelsComplete"));
    assert_eq!(events[0].get_str("ListItems").as_deref(), Some("0"));
    let err = client
        .send(Action::new("NoSuchThing"))
        .await
        .expect("answered");
    assert_eq!(err.get_str("Response").as_deref(), Some("Error"));
    // List items and responses to our actions do not leak into the live stream.
    let (got, _) = collect(&mut rx, n).await;
    assert!(got
        .iter()
        .all(|m| !m.windows(15).any(|w| w == b"CoreShowChannel")));
    assert!(timeout(Duration::from_millis(300), rx.recv())
        .await
        .is_err());
}

#[tokio::test]
async fn keepalive_timeout_drops_and_reconnects() {
    let mut cfg = server_config(
        b"Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n".to_vec(),
    );
    cfg.answer_ping = false;
    let server = AmiServer::start(cfg).await;
    let mut ccfg = client_config(server.port, AuthMethod::Md5, SECRET);
    ccfg.ping_interval = Duration::from_millis(150);
    ccfg.ping_timeout = Duration::from_millis(300);
    let (_client, mut rx) = AmiClient::connect(ccfg).await.expect("login");
    let mut markers = Vec::new();
    while !markers.contains(&"reconnected") {
        match timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a marker")
            .expect("open")
        {
            SourceEvent::Disconnected { reason } => {
                assert!(reason.contains("Ping"), "{reason}");
                markers.push("disconnected");
            }
            SourceEvent::Reconnected { .. } => markers.push("reconnected"),
            _ => {}
        }
    }
    assert_eq!(markers, vec!["disconnected", "reconnected"]);
    assert!(server.state.lock().unwrap().connections >= 2);
}

#[tokio::test]
async fn cut_mid_frame_reconnects_without_loss_or_duplicates() {
    let body = body();
    let expected = body_messages(&body);
    // Cut in the middle of message 300, not on a boundary.
    let starts = support::ami_server::message_starts(&body);
    let cut = starts[300] + 17;
    let mut cfg = server_config(body);
    cfg.cut_at = Some(cut);
    let server = AmiServer::start(cfg).await;
    let (_client, mut rx) = AmiClient::connect(client_config(server.port, AuthMethod::Md5, SECRET))
        .await
        .expect("login");
    let (got, markers) = collect(&mut rx, expected.len()).await;
    assert_eq!(markers, vec!["connected", "disconnected", "reconnected"]);
    assert_eq!(got.len(), expected.len());
    assert_eq!(
        got, expected,
        "every message exactly once, in order, none partial"
    );
    assert_eq!(server.state.lock().unwrap().logins_ok, 2);
}

/// `watch` as an operator runs it: the secret from the environment, every message as a JSON
/// line, exit after the stream has been idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_every_message_and_exits_when_idle() {
    let body = body();
    let expected = body_messages(&body).len();
    let server = AmiServer::start(server_config(body)).await;
    let port = server.port.to_string();
    let out = tokio::task::spawn_blocking(move || {
        support::bridge()
            .args([
                "watch",
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--username",
                "bridge",
            ])
            .args(["--emit", "events", "--idle-exit", "1"])
            .env("AMI_SECRET", SECRET)
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    let stdout = support::success_stdout(&out);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), expected);
    assert_eq!(lines.iter().filter(|l| l["event"].is_string()).count(), 702);
    assert!(!stdout.contains(SECRET) && !String::from_utf8_lossy(&out.stderr).contains(SECRET));
    // Without the environment variable: a usage error, exit code 2.
    let out = support::bridge()
        .args(["watch", "--username", "bridge"])
        .env_remove("AMI_SECRET")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}
