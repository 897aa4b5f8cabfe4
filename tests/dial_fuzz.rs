//! Whatever Zoho (or anyone who learnt the secret) puts into the click's parameters, the
//! PBX receives nothing but the one expected `Originate`: no second action, no extra header,
//! no other channel, context or variable.

mod dial_lab;
mod support;

use dial_lab::*;
use support::originate_server::OriginateServerConfig;

use proptest::prelude::*;
use std::sync::OnceLock;

fn rt_and_lab() -> &'static (tokio::runtime::Runtime, Lab) {
    static LAB: OnceLock<(tokio::runtime::Runtime, Lab)> = OnceLock::new();
    LAB.get_or_init(|| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let lab = rt.block_on(lab_with(
            OriginateServerConfig::default(),
            "per_agent_per_minute = 600\nglobal_per_minute = 6000\n",
        ));
        (rt, lab)
    })
}

fn injections() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\r\nAction: Hangup\r\nChannel: /.*/\r\n".to_string()),
        Just("\nExten: 899123456".to_string()),
        Just("\r\n\r\nAction: Originate\r\nChannel: SIP/evil".to_string()),
        Just("%0d%0aAction: Hangup".to_string()),
        Just("\u{0}".to_string()),
        Just(",CTD_ID=x".to_string()),
        Just("@from-internal".to_string()),
        Just("&Local/1@x".to_string()),
        Just("\u{2028}\u{85}".to_string()),
        "[\\x00-\\x1f]{1,4}",
    ]
}

fn numbers() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        "+390298765432",
        "0298765432",
        "+39 06 1234 5678",
        "0039 06 11112222",
        "3391234567",
        "+39899123456",
        "+442079460000",
    ]);
    prop_oneof![
        1 => any::<String>(),
        1 => "[0-9+ ()./-]{0,60}",
        2 => (known.clone(), injections()).prop_map(|(n, i)| format!("{n}{i}")),
        2 => (injections(), known.clone()).prop_map(|(i, n)| format!("{i}{n}")),
        3 => known.prop_map(String::from),
    ]
}

fn users() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["zu-2001", "zu-2002", "zu-2010"]).prop_map(String::from),
        1 => (Just("zu-2002".to_string()), injections()).prop_map(|(u, i)| format!("{u}{i}")),
        1 => any::<String>(),
    ]
}

/// Percent-encoded as a form would, or sent raw (line breaks and all).
fn put(body: &mut String, name: &str, value: &str, raw: bool) {
    if !body.is_empty() {
        body.push('&');
    }
    body.push_str(name);
    body.push('=');
    if raw {
        body.push_str(value);
    } else {
        body.extend(form_urlencoded::byte_serialize(value.as_bytes()));
    }
}

fn check_actions(lab: &Lab) -> Result<(), TestCaseError> {
    let channel = regex::Regex::new(r"^Local/20(0[1-9]|10)@agents$").unwrap();
    let variable = regex::Regex::new(r"^CTD_ID=c2d-[0-9a-f]{16}$").unwrap();
    let names = [
        "Action", "Channel", "Context", "Exten", "Priority", "CallerID", "Timeout", "Async",
        "Variable", "ActionID",
    ];
    for a in lab.server.all_actions() {
        let name = a.name();
        prop_assert!(
            name == "Originate" || name == "Ping",
            "unexpected action {a:?}"
        );
        if name != "Originate" {
            continue;
        }
        let got: Vec<&str> = a.headers.iter().map(|(k, _)| k.as_str()).collect();
        prop_assert_eq!(&got[..], &names[..], "{:?}", a.raw);
        let g = |k: &str| a.get(k).unwrap();
        prop_assert!(channel.is_match(&g("Channel")), "{:?}", a.raw);
        prop_assert_eq!(g("Context"), "from-agents");
        prop_assert!(
            g("Exten").chars().all(|c| c.is_ascii_digit()),
            "{:?}",
            a.raw
        );
        prop_assert!(variable.is_match(&g("Variable")), "{:?}", a.raw);
        prop_assert_eq!(g("Variable"), format!("CTD_ID={}", g("ActionID")));
        prop_assert_eq!(format!("Local/{}@agents", g("CallerID")), g("Channel"));
    }
    prop_assert!(lab.server.state.lock().unwrap().garbage_lines.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn parameters_never_produce_another_action(
        number in numbers(),
        user in users(),
        raw in any::<bool>(),
        in_query in any::<bool>(),
        extra in "[a-z]{1,8}",
        extra_value in any::<String>(),
    ) {
        let (rt, lab) = rt_and_lab();
        let before = lab.originates().len();
        let status = rt.block_on(async {
            let mut body = String::new();
            put(&mut body, "zohouser", &user, raw);
            put(&mut body, "tonumber", &number, raw);
            put(&mut body, &extra, &extra_value, raw);
            let client = reqwest::Client::new();
            let req = if in_query {
                // A raw line break cannot be in a URL: the query is always encoded.
                let mut q = String::new();
                put(&mut q, "zohouser", &user, false);
                put(&mut q, "tonumber", &number, false);
                client.get(format!("{}/phonebridge/clicktodial?{q}", lab.http))
            } else {
                client
                    .post(format!("{}/phonebridge/clicktodial", lab.http))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
            };
            req.header("X-Azb-Click-Token", SECRET)
                .timeout(WAIT)
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
        let status = status.expect("the endpoint answers");
        prop_assert!([200, 400, 403, 502].contains(&status), "status {status}");
        let after = lab.originates().len();
        prop_assert!(after - before <= 1);
        prop_assert_eq!(after - before == 1, status == 200 || status == 502);
        check_actions(lab)?;
    }
}
