//! Click-to-dial end to end: the PhoneBridge callback (real HTTP), the dial service, the real
//! AMI client, and a TCP AMI server that answers each `Originate` by playing the recorded
//! Asterisk 22 capture of that click (`fixtures/ami-real/ctd-*`). Expected values come from
//! the captures' `.sent` and `.truth.json` files.

mod support;

mod dial_lab;

use std::sync::Arc;
use std::time::Duration;

use ami_zoho_bridge::dial::report::ClickErrorCode;
use ami_zoho_bridge::secret::Secret;
use dial_lab::*;
use support::originate_server::OriginateServerConfig;

#[tokio::test]
async fn each_recorded_click_sends_the_recorded_originate_once_and_reports_the_truth() {
    let lab = lab().await;
    for (i, name) in CAPTURES.iter().enumerate() {
        let rec = &lab.recorded[*name];
        let agent = recorded_agent(rec);
        let resp = lab.click(&format!("zu-{agent}"), &e164(rec.exten())).await;
        assert_eq!(resp.status(), 200, "{name}");
        let body: serde_json::Value = resp.json().await.unwrap();
        let id = body["click_id"].as_str().unwrap().to_string();
        assert_eq!(body["to"], e164(rec.exten()), "{name}");

        // Exactly one more Originate, and it is the recorded one with our click id.
        let sent = lab.originates();
        assert_eq!(sent.len(), i + 1, "{name}");
        let ours = &sent[i];
        let mut want: Vec<(String, String)> = rec
            .originate
            .iter()
            .filter(|(k, _)| k != "Action")
            .map(|(k, v)| (k.clone(), v.replace(&rec.click_id, &id)))
            .collect();
        let at = want.iter().position(|(k, _)| k == "Async").unwrap();
        want.insert(at, ("Timeout".into(), "30000".into()));
        let got: Vec<(String, String)> = ours.headers[1..].to_vec();
        assert_eq!(got, want, "{name}");

        let outcome = lab.outcome(&id).await;
        let reports: Vec<_> = lab
            .reporter
            .reports()
            .into_iter()
            .filter(|r| r.click_id.as_deref() == Some(id.as_str()))
            .collect();
        match expected_code(name) {
            None => {
                assert_eq!(outcome.result, "connected", "{name}: {outcome:?}");
                assert!(reports.is_empty(), "{name}: {reports:?}");
            }
            Some(code) => {
                assert_eq!(outcome.result, "failed", "{name}: {outcome:?}");
                assert_eq!(reports.len(), 1, "{name}");
                assert_eq!(reports[0].code, code, "{name}");
                assert_eq!(
                    reports[0].zohouser.as_deref(),
                    Some(format!("zu-{agent}").as_str())
                );
                assert_eq!(reports[0].from, agent);
                assert_eq!(reports[0].to, e164(rec.exten()));
            }
        }
        let agent_answered = truth(name)["calls"][0]["observed"]["agent_answered"]
            .as_bool()
            .unwrap();
        if !agent_answered {
            // The agent's phone was never answered: the OriginateResponse failure says so.
            assert!(outcome.reason.contains("Reason 3"), "{name}: {outcome:?}");
        }
    }
    // Nothing is retried on its own.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lab.originates().len(), CAPTURES.len());
    assert_eq!(lab.server.actions("Hangup").len(), 0);
}

#[tokio::test]
async fn refused_clicks_send_nothing_and_leave_an_audit_line() {
    let lab = lab().await;
    let busy = &lab.recorded["ctd-busy"];
    let number = e164(busy.exten());
    /// What, the form, the secret header, the HTTP status, the audit result.
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, &'a str)>,
        Option<&'a str>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "no secret",
            vec![("zohouser", "zu-2002"), ("tonumber", &number)],
            None,
            401,
            "unauthorized",
        ),
        (
            "wrong secret",
            vec![("zohouser", "zu-2002"), ("tonumber", &number)],
            Some("s3cret-click-paraM"),
            401,
            "unauthorized",
        ),
        (
            "secret too long",
            vec![("zohouser", "zu-2002"), ("tonumber", &number)],
            Some("s3cret-click-paramx"),
            401,
            "unauthorized",
        ),
        (
            "unknown user",
            vec![("zohouser", "zu-9999"), ("tonumber", &number)],
            Some(SECRET),
            403,
            "unknown_user",
        ),
        (
            "foreign number",
            vec![("zohouser", "zu-2002"), ("tonumber", "+442079460000")],
            Some(SECRET),
            403,
            "blocked_number",
        ),
        (
            "premium rate",
            vec![("zohouser", "zu-2002"), ("tonumber", "+39899123456")],
            Some(SECRET),
            403,
            "blocked_number",
        ),
        (
            "not a number",
            vec![
                ("zohouser", "zu-2002"),
                ("tonumber", "0298765432\r\nAction: Hangup"),
            ],
            Some(SECRET),
            400,
            "invalid_number",
        ),
    ];
    for (what, form, secret, status, result) in cases {
        let before = lab.service.audit().len();
        let resp = lab.post("/phonebridge/clicktodial", &form, secret).await;
        assert_eq!(resp.status().as_u16(), status, "{what}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(
            !body["message"].as_str().unwrap_or("").is_empty(),
            "{what}: a reason"
        );
        let audit = lab.service.audit();
        assert_eq!(audit.len(), before + 1, "{what}: one audit line");
        assert_eq!(audit[before].result, result, "{what}: {:?}", audit[before]);
    }
    // An oversized body is refused before anything reads it.
    let big = "9".repeat(20 * 1024);
    let resp = lab
        .post(
            "/phonebridge/clicktodial",
            &[("zohouser", "zu-2002"), ("tonumber", &big)],
            Some(SECRET),
        )
        .await;
    assert_eq!(resp.status(), 413);
    // The secret as a parameter instead of a header works too (Zoho may send either).
    let resp = lab
        .post(
            "/phonebridge/clicktodial",
            &[
                ("zohouser", "zu-2002"),
                ("to", "+39 02 9876 5432"),
                ("X-Azb-Click-Token", SECRET),
            ],
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        lab.originates().len(),
        1,
        "only the authorised click dialled"
    );
    let all = lab.server.all_actions();
    assert!(
        all.iter()
            .all(|a| a.name() == "Originate" || a.name() == "Ping"),
        "{all:?}"
    );
}

#[tokio::test]
async fn a_burst_over_the_rate_limit_gets_429_and_no_originate() {
    let lab = lab_with(
        OriginateServerConfig::default(),
        "per_agent_per_minute = 3\nglobal_per_minute = 5\n",
    )
    .await;
    let number = e164(lab.recorded["ctd2-answered-callee-hangup"].exten());
    for _ in 0..3 {
        assert_eq!(lab.click("zu-2005", &number).await.status(), 200);
    }
    let resp = lab.click("zu-2005", &number).await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(lab.originates().len(), 3);
    // Another agent still has clicks, until the global limit.
    assert_eq!(lab.click("zu-2006", &number).await.status(), 200);
    assert_eq!(lab.click("zu-2007", &number).await.status(), 200);
    assert_eq!(lab.click("zu-2008", &number).await.status(), 429);
    assert_eq!(lab.originates().len(), 5);
    let limited = lab
        .service
        .audit()
        .into_iter()
        .filter(|a| a.result == "rate_limited")
        .count();
    assert_eq!(limited, 2);
}

#[tokio::test]
async fn the_pbx_refusing_the_originate_is_reported_not_retried() {
    let lab = lab_with(
        OriginateServerConfig {
            refuse_originate: Some("Permission denied".into()),
            ..Default::default()
        },
        "",
    )
    .await;
    let resp = lab
        .click("zu-2002", &e164(lab.recorded["ctd-busy"].exten()))
        .await;
    assert_eq!(resp.status(), 502);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{body}"
    );
    let reports = lab.reporter.reports();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].code, ClickErrorCode::NotAvailable);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lab.originates().len(), 1);
    assert_eq!(lab.service.in_flight(), 0);
}

#[tokio::test]
async fn call_control_hangs_up_the_clicked_channel_only() {
    let lab = lab_with(
        OriginateServerConfig {
            pause_after: Some("Event: OriginateResponse".into()),
            ..Default::default()
        },
        "",
    )
    .await;
    let name = "ctd-answered-agent-hangup";
    let rec = &lab.recorded[name];
    let agent = recorded_agent(rec);
    let resp = lab.click(&format!("zu-{agent}"), &e164(rec.exten())).await;
    assert_eq!(resp.status(), 200);
    let id = resp.json::<serde_json::Value>().await.unwrap()["click_id"]
        .as_str()
        .unwrap()
        .to_string();
    let want_channel = truth(name)["calls"][0]["observed"]["caller_channel"]
        .as_str()
        .unwrap()
        .to_string();
    let linkedid = truth(name)["calls"][0]["linkedid"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::timeout(WAIT, async {
        while lab
            .service
            .click_info(&id)
            .and_then(|c| c.channel)
            .is_none()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the click's channel");
    let control = |action: &'static str, user: String, callref: String| {
        let lab = &lab;
        async move {
            lab.post(
                &format!("/phonebridge/callcontrol/{action}"),
                &[("zohouser", user.as_str()), ("callrefid", callref.as_str())],
                Some(SECRET),
            )
            .await
            .status()
            .as_u16()
        }
    };
    // Another agent, an unknown call, no secret, an unsupported control: nothing reaches the PBX.
    assert_eq!(control("hangup", "zu-2009".into(), id.clone()).await, 403);
    assert_eq!(
        control(
            "hangup",
            format!("zu-{agent}"),
            "c2d-0000000000000000".into()
        )
        .await,
        404
    );
    assert_eq!(
        control("hangup", format!("zu-{agent}"), "/.*/".into()).await,
        404
    );
    assert_eq!(
        control("hold", format!("zu-{agent}"), id.clone()).await,
        404
    );
    let resp = lab
        .post(
            "/phonebridge/callcontrol/hangup",
            &[
                ("zohouser", format!("zu-{agent}").as_str()),
                ("callrefid", id.as_str()),
            ],
            None,
        )
        .await;
    assert_eq!(resp.status(), 401);
    assert!(lab.server.actions("Hangup").is_empty());
    // Mute and unmute act on the same channel, inbound audio of the agent's leg.
    assert_eq!(
        control("mute", format!("zu-{agent}"), id.clone()).await,
        200
    );
    assert_eq!(
        control("unmute", format!("zu-{agent}"), linkedid.clone()).await,
        200
    );
    let mutes = lab.server.actions("MuteAudio");
    assert_eq!(mutes.len(), 2);
    assert_eq!(
        mutes[0].get("Channel").as_deref(),
        Some(want_channel.as_str())
    );
    assert_eq!(mutes[0].get("State").as_deref(), Some("on"));
    assert_eq!(mutes[1].get("State").as_deref(), Some("off"));
    // The agent's own hang-up, by the call's Linkedid (what a call notification carries).
    assert_eq!(
        control("hangup", format!("zu-{agent}"), linkedid).await,
        200
    );
    let hangups = lab.server.actions("Hangup");
    assert_eq!(hangups.len(), 1);
    assert_eq!(
        hangups[0].get("Channel").as_deref(),
        Some(want_channel.as_str())
    );
    assert_eq!(hangups[0].all("Channel").len(), 1);
    // The rest of the recording plays: the call ends and leaves the book.
    let outcome = lab.outcome(&id).await;
    assert_eq!(outcome.result, "connected");
    tokio::time::timeout(WAIT, async {
        while lab.service.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the ended call leaves the book");
    assert_eq!(control("hangup", format!("zu-{agent}"), id).await, 404);
    assert_eq!(lab.server.actions("Hangup").len(), 1);
}

#[tokio::test]
async fn the_dial_command_follows_the_call_and_exits_by_outcome() {
    let lab = lab().await;
    let run = |args: Vec<String>| async move {
        let mut cmd = support::bridge();
        cmd.args(&args);
        let out = tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || cmd.output()))
            .await
            .expect("dial in time")
            .unwrap()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let config = lab.config_path.display().to_string();
    let args = |agent: &str, number: &str| {
        vec![
            "dial".into(),
            "--agent".into(),
            agent.into(),
            number.into(),
            "--config".into(),
            config.clone(),
        ]
    };
    // Far end busy: queued, agent answered, failed with busy; exit 1.
    let (code, stdout, _) = run(args("agent2002@example.com", "02 9876 5432")).await;
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(lines[0]["state"], "queued");
    assert_eq!(lines[0]["exten"], "0298765432");
    assert_eq!(lines[1]["state"], "agent_answered");
    assert_eq!(
        lines[1]["channel"],
        truth("ctd-busy")["calls"][0]["observed"]["caller_channel"]
    );
    assert_eq!(lines[2]["state"], "failed");
    assert_eq!(lines[2]["code"], "busy");
    // Answered: exit 0.
    let (code, stdout, stderr) = run(args("agent2001@example.com", "+390612345678")).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.lines().last().unwrap().contains("\"connected\""),
        "{stdout}"
    );
    // The audit line is on stderr.
    assert!(
        stderr.contains("click-to-dial") && stderr.contains("originated"),
        "{stderr}"
    );
    // Unknown agent: a usage error naming the key; blocked number: refused, exit 1.
    let (code, _, stderr) = run(args("nobody@example.com", "0298765432")).await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("agents"), "{stderr}");
    let (code, stdout, _) = run(args("agent2002@example.com", "+442079460000")).await;
    assert_eq!(code, Some(1));
    assert!(stdout.contains("blocked"), "{stdout}");
    assert_eq!(lab.originates().len(), 2);
}

/// The PhoneBridge reporter posts `clicktodialerror` as PhoneBridge wants it: form-encoded,
/// `+` as `%2B`, the account's token. A local stand-in plays Zoho's endpoint (the simulator's
/// PhoneBridge surface is built elsewhere).
#[tokio::test]
async fn the_phonebridge_reporter_posts_clicktodialerror() {
    use ami_zoho_bridge::dial::report::{ClickReport, ClickReporter, PhoneBridgeReporter};
    use axum::routing::post;
    type Seen = Arc<std::sync::Mutex<Vec<(String, String)>>>;
    let seen: Seen = Arc::default();
    let st = seen.clone();
    let zoho = axum::Router::new().route(
        "/phonebridge/v3/clicktodialerror",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let st = st.clone();
            async move {
                let auth = headers["authorization"].to_str().unwrap().to_string();
                st.lock().unwrap().push((auth, body));
                axum::Json(serde_json::json!({"status": "success", "code": "SUCCESS"}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, zoho).await });
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("pb.json");
    std::fs::write(
        &token_file,
        serde_json::json!({"refresh_token": "r", "access_token": "pb-access-token",
                           "expires_at": 4102444800i64, "api_domain": api})
        .to_string(),
    )
    .unwrap();
    let account = ami_zoho_bridge::config::AccountConfig {
        accounts_url: Some(api.clone()),
        api_domain: Some(api.clone()),
        client_id: "1000.PB".into(),
        client_secret: Some(Secret::new("x")),
        token_file: Some(token_file),
        ..Default::default()
    };
    let http = reqwest::Client::new();
    let oauth = ami_zoho_bridge::zoho::oauth::OAuth::new("pb", &account, http.clone()).unwrap();
    let reporter = PhoneBridgeReporter::new(Arc::new(oauth), http);
    reporter.report(ClickReport {
        click_id: Some("c2d-0123456789abcdef".into()),
        zohouser: Some("4150868000000225013".into()),
        agent_email: "agent2002@example.com".into(),
        from: "2002".into(),
        to: "+390298765432".into(),
        code: ClickErrorCode::Busy,
        message: "the number is busy (DialStatus BUSY)".into(),
    });
    let (auth, body) = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(x) = seen.lock().unwrap().first().cloned() {
                return x;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("clicktodialerror in time");
    assert_eq!(auth, "Zoho-oauthtoken pb-access-token");
    assert_eq!(
        body,
        "code=busy&from=2002&to=%2B390298765432&zohouser=4150868000000225013&message=the+number+is+busy+%28DialStatus+BUSY%29"
    );
}
