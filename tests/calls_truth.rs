//! Every recorded capture through the call tracker, compared with what really happened
//! (`.truth.json`, recorded independently of the AMI stream): all calls, not most.

mod support;

use std::path::{Path, PathBuf};

use ami_zoho_bridge::calls::{Call, Micros};
use ami_zoho_bridge::config::Config;
use serde_json::Value;

fn run(capture: &Path, config: &Path) -> Vec<Call> {
    let cfg = Config::load(Some(config)).expect("lab config");
    support::finished_calls(&support::read_capture(capture), cfg.calls)
}

fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn time(v: &Value, key: &str) -> Option<f64> {
    let s = v.get(key)?.as_str()?;
    let ts: jiff::Timestamp = s.parse().ok()?;
    Some(ts.as_microsecond() as f64 / 1e6)
}

fn secs(m: Option<Micros>) -> Option<f64> {
    m.map(|m| m.0 as f64 / 1e6)
}

fn close(a: Option<f64>, b: Option<f64>, tolerance: f64) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= tolerance,
        (None, None) => true,
        _ => false,
    }
}

/// How far a time of this call may be off: 1 s, or for a session capture, the length of the
/// stretch the bridge could not hear while the call was up (a gap between sessions, or the
/// part of the call before the first login): a moment hidden there is known only to within it.
fn tolerance(top: &Value, truth: &Value) -> f64 {
    let states = &truth["observed"]["state_at_session_boundaries"];
    let hidden =
        |state: &Value| !matches!(state.as_str(), None | Some("not-started") | Some("ended"));
    let mut tol: f64 = 1.0;
    if let Some(gaps) = top.get("gaps").and_then(Value::as_array) {
        if hidden(&states["disconnect"]) || hidden(&states["reconnect"]) {
            for g in gaps {
                tol = tol.max(1.0 + g["gap_seconds"].as_f64().unwrap_or(0.0));
            }
        }
    }
    if hidden(&states["login"]) {
        let login = top["session_boundaries"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["what"] == "login"))
            .and_then(|b| b["epoch"].as_f64());
        if let (Some(login), Some(start)) = (login, time(truth, "start_time")) {
            tol = tol.max(1.0 + login - start);
        }
    }
    tol
}

/// Compares one truth call with the emitted call of the same linkedid; returns the differences.
fn compare(truth: &Value, call: &Call, cut_off: bool, tol: f64) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut check = |what: &str, want: Option<String>, got: Option<String>| {
        // Calls cut off by the PBX are described by a few keys only: check those present.
        if cut_off && want.is_none() {
            return;
        }
        // A field the call itself names as not established (the stream does not carry it):
        // reported by the caller of `compare` (only the expected few are allowed).
        if call.unknown.contains(&what) {
            return;
        }
        if want != got {
            diffs.push(format!("{what}: truth {want:?}, got {got:?}"));
        }
    };
    check(
        "direction",
        str_field(truth, "direction"),
        Some(call.direction.as_str().into()),
    );
    check(
        "caller",
        str_field(truth, "caller_number"),
        call.caller.clone(),
    );
    check(
        "callee",
        str_field(truth, "called_number"),
        call.callee.clone(),
    );
    check("queue", str_field(truth, "queue"), call.queue.clone());
    if call.direction.as_str() != "inbound" && call.caller_name.is_none() {
        // The calling agent's name is not in the stream (a click-to-dial's caller id is the
        // extension alone: `CallerIDName: <unknown>` everywhere): the extension must match.
        check(
            "agent_extension",
            str_field(truth, "agent_extension"),
            call.agent_extension.clone(),
        );
    } else {
        check("agent", str_field(truth, "agent"), call.agent.clone());
    }
    check(
        "outbound_route",
        str_field(truth, "outbound_route"),
        call.outbound_route.clone(),
    );
    if cut_off {
        check(
            "status",
            Some("answered".into()),
            Some(call.status.as_str().into()),
        );
        if !call.incomplete {
            diffs.push("a call cut off by the PBX must be marked incomplete".into());
        }
        return diffs;
    }
    check(
        "status",
        str_field(truth, "final_status"),
        Some(call.status.as_str().into()),
    );
    for (what, want, got) in [
        (
            "started_at",
            time(truth, "start_time"),
            secs(Some(call.started_at)),
        ),
        (
            "answered_at",
            time(truth, "answer_time"),
            secs(call.answered_at),
        ),
        (
            "ended_at",
            time(truth, "end_time"),
            secs(Some(call.ended_at)),
        ),
    ] {
        if !close(want, got, tol) {
            diffs.push(format!("{what}: truth {want:?}, got {got:?}"));
        }
    }
    if let Some(talk) = truth.get("talk_seconds").and_then(Value::as_f64) {
        if (talk - f64::from(call.talk_seconds)).abs() > tol {
            diffs.push(format!(
                "talk_seconds: truth {talk}, got {}",
                call.talk_seconds
            ));
        }
    }
    if call.incomplete {
        diffs.push("a normally ended call is marked incomplete".into());
    }
    diffs
}

/// Fields a call may name as not established, and where: a click-to-dial whose agent never
/// answered never reaches the outbound route, so no event names it (the truth has it from
/// the lab's plan).
const ALLOWED_UNKNOWN: &[(&str, &str)] = &[
    ("ctd-agent-noanswer.ami", "outbound_route"),
    ("ctd2-agent-noanswer.ami", "outbound_route"),
];

fn check_lab(lab: &str) {
    let dir = support::root().join("fixtures").join(lab);
    let config = dir.join("bridge.toml");
    let mut truths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("lab dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".truth.json"))
        .collect();
    truths.sort();
    let mut failures = Vec::new();
    let mut checked = 0;
    for truth_path in truths {
        let truth: Value =
            serde_json::from_str(&std::fs::read_to_string(&truth_path).expect("read"))
                .expect("json");
        let base = truth_path
            .to_string_lossy()
            .trim_end_matches(".truth.json")
            .to_string();
        let capture = [format!("{base}.ami"), format!("{base}.ami.gz")]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("capture beside its truth");
        let (list, cut_off) = match (truth.get("calls"), truth.get("calls_in_progress")) {
            (Some(Value::Array(c)), _) => (c.clone(), false),
            (_, Some(Value::Array(c))) => (c.clone(), true),
            _ => (Vec::new(), false),
        };
        let calls = run(&capture, &config);
        let name = capture
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for c in &calls {
            for u in &c.unknown {
                // A PBX killed mid-call never says when its calls ended.
                let allowed = (cut_off && *u == "ended_at")
                    || ALLOWED_UNKNOWN
                        .iter()
                        .any(|(file, field)| name == *file && u == field);
                if !allowed {
                    failures.push(format!("{name} {}: {u} not established", c.linkedid));
                }
            }
        }
        for t in &list {
            checked += 1;
            let linkedid = str_field(t, "linkedid").unwrap_or_default();
            let matching: Vec<&Call> = calls.iter().filter(|c| c.linkedid.0 == linkedid).collect();
            match matching.as_slice() {
                [one] => {
                    for d in compare(t, one, cut_off, tolerance(&truth, t)) {
                        failures.push(format!("{name} {linkedid}: {d}"));
                    }
                }
                [] => failures.push(format!("{name} {linkedid}: no call emitted")),
                many => failures.push(format!("{name} {linkedid}: emitted {} times", many.len())),
            }
        }
        // Nothing invented: every emitted call is one that happened.
        for c in &calls {
            if !list
                .iter()
                .any(|t| str_field(t, "linkedid").as_deref() == Some(c.linkedid.0.as_str()))
            {
                failures.push(format!(
                    "{name} {}: emitted a call the truth does not have",
                    c.linkedid
                ));
            }
        }
    }
    assert!(checked > 100, "{lab}: only {checked} calls checked");
    assert!(
        failures.is_empty(),
        "{lab}: {} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Skimming (the daemon's codec leaves the headers of CEL, RTCP, Newexten... unparsed past
/// `Timestamp`) changes no call: every capture gives the same calls, field for field, with
/// and without it.
#[test]
fn skimming_changes_no_call() {
    let mut compared = 0;
    for lab in ["ami-real", "ami-sip"] {
        let dir = support::root().join("fixtures").join(lab);
        let cfg = Config::load(Some(&dir.join("bridge.toml"))).expect("lab config");
        for entry in std::fs::read_dir(&dir).expect("lab dir") {
            let path = entry.expect("entry").path();
            let name = path.to_string_lossy().to_string();
            if !(name.ends_with(".ami") || name.ends_with(".ami.gz")) {
                continue;
            }
            let bytes = support::read_capture(&path);
            let json = |skim| {
                serde_json::to_value(support::finished_calls_with(
                    &bytes,
                    cfg.calls.clone(),
                    skim,
                ))
                .expect("json")
            };
            let full = json(false);
            assert_eq!(json(true), full, "{name}");
            compared += full.as_array().map_or(0, Vec::len);
        }
    }
    // 280 calls in all (the two busy hours alone have 231): guards against comparing nothing.
    assert!(compared >= 250, "only {compared} calls compared");
}

#[test]
fn ami_real_calls_match_the_truth() {
    check_lab("ami-real");
}

#[test]
fn ami_sip_calls_match_the_truth() {
    check_lab("ami-sip");
}
