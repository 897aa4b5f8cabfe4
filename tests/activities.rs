//! `replay --emit activities` (the dry run) on every capture of both labs, checked against
//! the truth files: inbound answered → Inbound, inbound not answered → Missed, outbound →
//! Outbound + Completed; Call_Start_Time is the call's start in the lab's time zone;
//! Call_Duration is the talk time. Nothing that needs a Zoho lookup is present.

mod support;

use std::collections::HashMap;

use serde_json::Value;

fn dry_run(lab: &str, capture: &str) -> Vec<Value> {
    let dir = support::root().join("fixtures").join(lab);
    let out = support::bridge()
        .arg("replay")
        .arg(dir.join(capture))
        .arg("--config")
        .arg(dir.join("bridge.toml"))
        .args(["--emit", "activities"])
        .output()
        .expect("run");
    support::success_stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn parse_mmss(s: &str) -> i64 {
    let (m, sec) = s.split_once(':').expect("MM:SS");
    m.parse::<i64>().expect("minutes") * 60 + sec.parse::<i64>().expect("seconds")
}

fn check_lab(lab: &str) {
    let dir = support::root().join("fixtures").join(lab);
    let tz = jiff::tz::TimeZone::get("Europe/Rome").expect("tz");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(base) = name.strip_suffix(".truth.json") else {
            continue;
        };
        let truth: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        let Some(calls) = truth["calls"].as_array() else {
            continue;
        };
        let capture = if dir.join(format!("{base}.ami")).exists() {
            format!("{base}.ami")
        } else {
            format!("{base}.ami.gz")
        };
        let lines = dry_run(lab, &capture);
        let by_id: HashMap<&str, &Value> = lines
            .iter()
            .map(|l| (l["linkedid"].as_str().unwrap_or(""), l))
            .collect();
        assert_eq!(
            lines.len(),
            calls.len(),
            "{capture}: one activity per call (catch-all trigger)"
        );
        for t in calls {
            let id = t["linkedid"].as_str().expect("linkedid");
            let line = by_id
                .get(id)
                .unwrap_or_else(|| panic!("{capture} {id}: no activity"));
            assert_eq!(line["trigger"], "every call");
            let r = &line["record"];
            let answered = t["final_status"] == "answered";
            let want_type = match (t["direction"].as_str(), answered) {
                (Some("inbound"), true) => "Inbound",
                (Some("inbound"), false) => "Missed",
                _ => "Outbound",
            };
            assert_eq!(r["Call_Type"], want_type, "{capture} {id}");
            if want_type == "Outbound" {
                assert_eq!(r["Outgoing_Call_Status"], "Completed", "{capture} {id}");
            }
            let start: jiff::Timestamp = t["start_time"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("start");
            // The truth's times are when its recorder received the event, a few ms after
            // the PBX's own Timestamp: compare within a second, and check the zone's offset.
            let got_text = r["Call_Start_Time"].as_str().expect("start time");
            let got = jiff::Zoned::strptime("%Y-%m-%dT%H:%M:%S%:z", got_text)
                .expect("ISO 8601 with offset");
            assert!(
                (got.timestamp().as_second() - start.as_second()).abs() <= 1,
                "{capture} {id}: {got_text} vs {start}"
            );
            let offset = start.to_zoned(tz.clone()).offset();
            assert_eq!(
                got.offset(),
                offset,
                "{capture} {id}: offset of Europe/Rome"
            );
            assert!(!got_text.contains('.'), "no fraction");
            if answered {
                let talk = t["talk_seconds"].as_i64().expect("talk");
                let got = parse_mmss(r["Call_Duration"].as_str().expect("duration"));
                // A session capture's call that was up while the bridge heard nothing (a gap
                // between sessions) ended or was answered inside it: known to within the gap.
                let states = &t["observed"]["state_at_session_boundaries"];
                let hidden = ["disconnect", "reconnect"]
                    .iter()
                    .any(|b| !matches!(states[*b].as_str(), None | Some("not-started" | "ended")));
                let gap = truth["gaps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g["gap_seconds"].as_f64())
                    .fold(0.0, f64::max);
                let tol = if hidden { 1 + gap.ceil() as i64 } else { 1 };
                assert!(
                    (got - talk).abs() <= tol,
                    "{capture} {id}: duration {got} vs talk {talk}"
                );
            }
            if want_type == "Missed" {
                assert!(r.get("Call_Duration").is_none(), "{capture} {id}");
            }
            for lookup in ["Owner", "Who_Id", "What_Id", "$se_module"] {
                assert!(
                    r.get(lookup).is_none(),
                    "{capture} {id}: {lookup} needs Zoho"
                );
            }
            assert_eq!(r["Caller_ID"], t["caller_number"], "{capture} {id}");
            checked += 1;
        }
    }
    assert!(checked > 100, "{lab}: {checked}");
}

#[test]
fn ami_real_activities_match_the_truth() {
    check_lab("ami-real");
}

#[test]
fn ami_sip_activities_match_the_truth() {
    check_lab("ami-sip");
}
