//! Public captures from other projects (Asterisk 13, VoIPGRID's cacofonisk recordings):
//! calls that a person reading the events agrees with. Each row says what the scenario is,
//! what we expect and why; the expectations were written from reading the event streams
//! (DialEnd statuses, hangup causes, transfer events), not from this code's output.
//!
//! These recordings are JSON arrays of parsed events; they are turned back into AMI wire
//! bytes (`Key: Value\r\n` lines, an empty line after each event) and go through the same
//! codec and tracker as a live session. They carry no `Timestamp:`, so only grouping, caller,
//! callee, status and transfers are checked, with the default configuration (no trunks
//! configured: every call is internal).

mod support;

use ami_zoho_bridge::calls::Call;
use ami_zoho_bridge::config::CallsConfig;

fn wire(json_path: &str) -> Vec<u8> {
    let path = support::root()
        .join("fixtures/ami-public/cacofonisk/tests/fixtures")
        .join(json_path);
    let text = std::fs::read_to_string(&path).expect("fixture");
    let events: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(&text).expect("json");
    let mut out = Vec::new();
    for e in events {
        for (k, v) in e {
            if k == "content" {
                continue;
            }
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn calls(json_path: &str) -> Vec<Call> {
    support::finished_calls(&wire(json_path), CallsConfig::default())
}

/// (file, status, caller, callee, transfers, why)
const EXPECTED: &[(&str, &str, &str, &str, usize, &str)] = &[
    (
        "simple/ab_success_a_hangup.json",
        "answered",
        "150010001",
        "202",
        0,
        "A calls B, B answers, A hangs up",
    ),
    (
        "simple/ab_success_b_hangup.json",
        "answered",
        "150010001",
        "202",
        0,
        "A calls B, B answers, B hangs up",
    ),
    (
        "simple/ab_a_cancel.json",
        "cancelled",
        "150010001",
        "202",
        0,
        "A hangs up while B rings: DialEnd CANCEL",
    ),
    (
        "simple/ab_reject.json",
        "busy",
        "150010001",
        "202",
        0,
        "B rejects: DialEnd BUSY, cause 17",
    ),
    (
        "simple/ab_dnd.json",
        "busy",
        "150010001",
        "202",
        0,
        "B on do-not-disturb: DialEnd BUSY, cause 17",
    ),
    (
        "simple/ab_callgroup.json",
        "answered",
        "150010001",
        "401",
        0,
        "A calls group 401, one member answers",
    ),
    (
        "simple/ab_callgroup_no_answer.json",
        "noanswer",
        "150010001",
        "401",
        0,
        "group 401: one member busy, the other does not answer; last DialEnd NOANSWER",
    ),
    (
        "simple/a_created_no_answer.json",
        "cancelled",
        "+31150010001",
        "+31150010004",
        0,
        "a channel appears and hangs up (cause 0) before anything is dialled",
    ),
    (
        "queue/queue_simple.json",
        "answered",
        "+31150010001",
        "+31150010004",
        0,
        "a queue call answered by a member",
    ),
    (
        "queue/queue_group.json",
        "answered",
        "+31150010001",
        "+31150010004",
        0,
        "a queue with a group member, answered",
    ),
    (
        "queue/queue_a_cancel.json",
        // The caller gave up while the queue rang: QueueCallerAbandon names the queue
        // (670100-540100), so this is a queue call the caller abandoned (issue 10), not an
        // outbound dial cancelled.
        "abandoned",
        "+31150010001",
        "+31150010004",
        0,
        "the caller hangs up while the queue rings",
    ),
    (
        "queue/queue_blind_xfer.json",
        "answered",
        "+31260010001",
        "+31150010001",
        1,
        "answered, then a blind transfer to 202",
    ),
    (
        "queue/queue_attn_xfer.json",
        "answered",
        "+31260010001",
        "+31150010001",
        1,
        "answered, then an attended transfer to 202",
    ),
    (
        "xfer_blind/xfer_blind_abbcac.json",
        "answered",
        "150010001",
        "202",
        1,
        "A-B answered, B blind-transfers A to C (203)",
    ),
    (
        "xfer_blind/xfer_blind_b_no_answer.json",
        "answered",
        "150010001",
        "202",
        1,
        "A-B answered, then a blind transfer that C does not answer: A did talk to B",
    ),
    (
        "xfer_blind/xfer_blind_reject.json",
        "answered",
        "150010001",
        "202",
        1,
        "A-B answered, the transfer target rejects: still an answered call",
    ),
    (
        "xfer_attended/xfer_abbcac.json",
        "answered",
        "150010001",
        "202",
        1,
        "A-B answered, B consults C and joins A with C: one conversation for A",
    ),
    (
        "xfer_attended/xfer_abacbc.json",
        "answered",
        "150010001",
        "202",
        1,
        "attended transfer by A",
    ),
    (
        "xfer_misc/call_forwarding.json",
        "answered",
        "+31260010001",
        "+31150010001",
        0,
        "the callee forwards; the forwarded leg answers",
    ),
    (
        "xfer_misc/sip_pickup.json",
        "answered",
        "150010001",
        "202",
        0,
        "another phone picks the ringing call up",
    ),
    (
        "xfer_misc/star_pickup.json",
        "answered",
        "150010001",
        "202",
        0,
        "pickup with a feature code",
    ),
    (
        "mobile/acceptance_timeout.json",
        "noanswer",
        "+31150010003",
        "+31260010001",
        0,
        "a mobile leg that never confirms the call: the caller's dial ends NOANSWER",
    ),
    (
        "mobile/acceptance_reject.json",
        "noanswer",
        "+31150010003",
        "+31260010001",
        0,
        "the mobile answers but refuses the acceptance prompt: NOANSWER for the caller",
    ),
    (
        "mobile/acceptance_simple.json",
        "answered",
        "+31150010001",
        "+31150010004",
        0,
        "the mobile accepts",
    ),
    (
        "originate/ctd-account-world-deny-a.json",
        "busy",
        // The calling side of a click-to-dial is the agent whose phone the Originate rang
        // (SIP/150010001, caller id 201), as for a call the agent dialled by hand (issue 10).
        "201",
        "ID400381",
        0,
        "click-to-dial: the agent's own phone rejects (DialEnd BUSY)",
    ),
];

#[test]
fn public_scenarios_give_the_calls_a_person_expects() {
    let mut failures = Vec::new();
    for (file, status, caller, callee, transfers, why) in EXPECTED {
        let got = calls(file);
        let [call] = got.as_slice() else {
            failures.push(format!("{file}: expected one call, got {}", got.len()));
            continue;
        };
        let actual = (
            call.status.as_str(),
            call.caller.as_deref().unwrap_or(""),
            call.callee.as_deref().unwrap_or(""),
            call.transfers.len(),
        );
        if actual != (*status, *caller, *callee, *transfers) {
            failures.push(format!(
                "{file} ({why}): expected {:?}, got {actual:?}",
                (status, caller, callee, transfers)
            ));
        }
        if call.incomplete {
            failures.push(format!("{file}: marked incomplete"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn two_recorded_calls_stay_two_calls() {
    // Two separate calls (different Linkedids) recorded in one stream must not merge.
    let got = calls("simple/ab_success_twoclients.json");
    assert_eq!(got.len(), 2);
    assert_ne!(got[0].linkedid, got[1].linkedid);
    assert!(got.iter().all(|c| c.status.as_str() == "answered"));
}
