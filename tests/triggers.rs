//! Motion-style triggers on the calls of real captures. The expected matches are written by
//! hand from the truth files (queue, final_status, direction, outbound_route of each call),
//! not from the rule engine's output.

mod support;

use std::collections::BTreeSet;

use ami_zoho_bridge::calls::Call;
use ami_zoho_bridge::config::Config;
use ami_zoho_bridge::triggers::{On, Rules, Trigger};

fn lab_calls(lab: &str, capture: &str) -> Vec<Call> {
    let dir = support::root().join("fixtures").join(lab);
    let cfg = Config::load(Some(&dir.join("bridge.toml"))).expect("config");
    support::finished_calls(&support::read_capture(&dir.join(capture)), cfg.calls)
}

fn rules(toml_triggers: &str) -> Rules {
    #[derive(serde::Deserialize)]
    struct File {
        triggers: Vec<Trigger>,
    }
    let file: File = toml::from_str(toml_triggers).expect("triggers");
    Rules::new(&file.triggers, None).expect("valid rules")
}

/// Which calls (by linkedid) fire each trigger at the end.
fn fired(rules: &Rules, calls: &[Call], name: &str) -> BTreeSet<String> {
    calls
        .iter()
        .filter(|c| rules.fire(c, On::End).any(|t| t.name == name))
        .map(|c| c.linkedid.0.clone())
        .collect()
}

/// (linkedid, direction, final_status, queue, outbound_route) of a truth call.
type TruthRow = (String, String, String, Option<String>, Option<String>);

const RULES: &str = r#"
[[triggers]]
name = "support answered"
all = [ { field = "queue", op = "equals", value = "support" },
        { field = "status", op = "equals", value = "answered" } ]
actions = [ { zoho_call = "default" } ]

[[triggers]]
name = "route-italy not answered"
all = [ { field = "outbound_route", op = "equals", value = "route-italy" },
        { field = "status", op = "not_equals", value = "answered" } ]
actions = [ { zoho_call = "default" } ]

[[triggers]]
name = "missed inbound"
all = [ { field = "direction", op = "equals", value = "inbound" } ]
any = [ { field = "status", op = "equals", value = "abandoned" },
        { field = "status", op = "equals", value = "timeout" } ]
actions = [ { zoho_task = "default" } ]

[[triggers]]
name = "mobile or international"
all = [ { field = "outbound_route", op = "matches", value = "^route-(mobile|international)$" } ]
actions = [ { zoho_call = "default" } ]

[[triggers]]
name = "everything"
actions = [ { zoho_call = "default" } ]

[[triggers]]
name = "on answer only"
on = "answer"
actions = [ { zoho_call = "default" } ]
"#;

#[test]
fn motion_style_rules_on_the_mixed_captures() {
    let r = rules(RULES);
    // ami-real mixed-small (truth): .104 inbound support answered, .106 outbound route-italy
    // answered, .110 inbound sales abandoned, .122 outbound route-mobile busy, .126 internal.
    let calls = lab_calls("ami-real", "mixed-small.ami");
    let truth: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(support::root().join("fixtures/ami-real/mixed-small.truth.json"))
            .expect("truth"),
    )
    .expect("json");
    let ids: Vec<TruthRow> = truth["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| {
            (
                c["linkedid"].as_str().unwrap_or_default().to_string(),
                c["direction"].as_str().unwrap_or_default().to_string(),
                c["final_status"].as_str().unwrap_or_default().to_string(),
                c["queue"].as_str().map(str::to_string),
                c["outbound_route"].as_str().map(str::to_string),
            )
        })
        .collect();
    // Hand-written from the truth rows above: which linkedid each rule must fire for.
    let pick = |f: &dyn Fn(&TruthRow) -> bool| -> BTreeSet<String> {
        ids.iter().filter(|c| f(c)).map(|c| c.0.clone()).collect()
    };
    let support_answered = pick(&|c| c.3.as_deref() == Some("support") && c.2 == "answered");
    let italy_missed = pick(&|c| c.4.as_deref() == Some("route-italy") && c.2 != "answered");
    let missed_inbound = pick(&|c| c.1 == "inbound" && (c.2 == "abandoned" || c.2 == "timeout"));
    assert_eq!(
        support_answered.len(),
        1,
        "mixed-small has one answered support call"
    );
    assert!(
        italy_missed.is_empty(),
        "its route-italy call was answered; the busy one is route-mobile"
    );
    assert_eq!(missed_inbound.len(), 1, "and one abandoned inbound call");
    assert_eq!(fired(&r, &calls, "support answered"), support_answered);
    assert_eq!(fired(&r, &calls, "route-italy not answered"), italy_missed);
    assert_eq!(fired(&r, &calls, "missed inbound"), missed_inbound);
    let mobile = pick(&|c| c.4.as_deref() == Some("route-mobile"));
    assert_eq!(mobile.len(), 1);
    assert_eq!(fired(&r, &calls, "mobile or international"), mobile);
    assert_eq!(
        fired(&r, &calls, "everything").len(),
        5,
        "no conditions: always"
    );
    assert!(
        fired(&r, &calls, "on answer only").is_empty(),
        "not an end trigger"
    );
}

#[test]
fn route_patterns_and_timeouts_on_single_captures() {
    let r = rules(RULES);
    // outbound-answered-callee-hangup: route-mobile, answered (truth).
    let mobile = lab_calls("ami-real", "outbound-answered-callee-hangup.ami");
    assert_eq!(fired(&r, &mobile, "mobile or international").len(), 1);
    assert!(fired(&r, &mobile, "route-italy not answered").is_empty());
    // outbound-failed: route-international, CHANUNAVAIL -> failed (truth).
    let failed = lab_calls("ami-sip", "outbound-failed.ami");
    assert_eq!(fired(&r, &failed, "mobile or international").len(), 1);
    // inbound-queue-timeout: helpdesk, timeout (truth): an any-of match.
    let timeout = lab_calls("ami-sip", "inbound-queue-timeout.ami");
    assert_eq!(fired(&r, &timeout, "missed inbound").len(), 1);
    assert!(fired(&r, &timeout, "support answered").is_empty());
    // outbound-busy on route-italy (truth: busy).
    let busy = lab_calls("ami-sip", "outbound-busy.ami");
    assert_eq!(fired(&r, &busy, "route-italy not answered").len(), 1);
}

/// A bad configuration stops the command with exit code 2 and names the file, the trigger
/// and the key.
#[test]
fn bad_configuration_names_file_trigger_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = std::fs::read_to_string(support::root().join("fixtures/ami-real/bridge.toml"))
        .expect("config");
    let capture = support::root().join("fixtures/ami-real/outbound-busy.ami");
    let cases = [
        (
            "[[triggers]]\nname = \"bad op\"\nall = [ { field = \"queue\", op = \"similar\", value = \"x\" } ]\nactions = [ { zoho_call = \"default\" } ]\n",
            vec!["bad op", "op", "similar"],
        ),
        (
            "[zoho.configurations.broken]\naccount = \"main\"\nsubject = \"{{ caller \"\n",
            vec!["zoho.configurations.broken", "subject"],
        ),
        (
            "[zoho.configurations.orphan]\naccount = \"nobody\"\n",
            vec!["zoho.configurations.orphan.account", "nobody"],
        ),
        (
            "[[triggers]]\nname = \"no config\"\nactions = [ { zoho_call = \"missing\" } ]\n",
            vec!["no config", "actions", "missing"],
        ),
    ];
    for (i, (extra, words)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, format!("{base}\n{extra}")).expect("write");
        let out = support::bridge()
            .arg("replay")
            .arg(&capture)
            .arg("--config")
            .arg(&path)
            .args(["--emit", "activities"])
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "case {i}: {stderr}");
        assert!(
            stderr.contains(&format!("bad-{i}.toml")),
            "case {i} names the file: {stderr}"
        );
        for w in words {
            assert!(stderr.contains(w), "case {i} names {w}: {stderr}");
        }
    }
}
