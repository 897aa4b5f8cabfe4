//! Streams that lose events: the affected calls end as incomplete, once, and nothing hangs or
//! grows without bound.

mod support;

use std::collections::HashSet;

use ami_zoho_bridge::ami::replay::Replay;
use ami_zoho_bridge::ami::Message;
use ami_zoho_bridge::calls::{Call, Micros, Output, Tracker};
use ami_zoho_bridge::config::{CallsConfig, Config};

fn lab_config() -> CallsConfig {
    Config::load(Some(&support::root().join("fixtures/ami-real/bridge.toml")))
        .expect("config")
        .calls
}

fn feed(tracker: &mut Tracker, bytes: &[u8], out: &mut Vec<Output>) {
    for ev in Replay::new(bytes) {
        tracker.feed(&ev.expect("decode"), Micros(0), out);
    }
}

fn finished(out: &[Output]) -> Vec<Call> {
    out.iter()
        .filter_map(|o| match o {
            Output::Finished(c) => Some((**c).clone()),
            Output::Moment(..) => None,
        })
        .collect()
}

fn truth(name: &str) -> serde_json::Value {
    let path = support::root().join("fixtures/ami-real").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("truth")).expect("json")
}

#[test]
fn pbx_killed_then_reconnected_ends_the_cut_calls_as_incomplete() {
    let dir = support::root().join("fixtures/ami-real");
    let mut tracker = Tracker::new(lab_config());
    let mut out = Vec::new();
    feed(
        &mut tracker,
        &support::read_capture(&dir.join("asterisk-killed-midcall.ami")),
        &mut out,
    );
    assert!(
        finished(&out).is_empty(),
        "the stream just stops: nothing has ended yet"
    );
    tracker.on_reconnect();
    // The new session's FullyBooted says the PBX booted after those calls started.
    feed(
        &mut tracker,
        &support::read_capture(&dir.join("asterisk-killed-midcall.reconnect.ami")),
        &mut out,
    );
    let calls = finished(&out);
    let t = truth("asterisk-killed-midcall.truth.json");
    let expected: HashSet<&str> = t["calls_in_progress"]
        .as_array()
        .expect("calls_in_progress")
        .iter()
        .filter_map(|c| c["linkedid"].as_str())
        .collect();
    let got: HashSet<&str> = calls.iter().map(|c| c.linkedid.0.as_str()).collect();
    assert_eq!(
        got, expected,
        "emitted without waiting for the end of the stream"
    );
    assert!(calls
        .iter()
        .all(|c| c.incomplete && c.status.as_str() == "answered"));
    assert_eq!(tracker.live_calls(), 0);
    let mut rest = Vec::new();
    tracker.finish(&mut rest);
    assert!(finished(&rest).is_empty(), "each call exactly once");
}

#[test]
fn capture_cut_short_ends_open_calls_as_incomplete_and_the_rest_normally() {
    let dir = support::root().join("fixtures/ami-real");
    let data = support::read_capture(&dir.join("mixed-small.ami"));
    let t = truth("mixed-small.truth.json");
    for fraction in [0.3, 0.5, 0.8] {
        let cut = (data.len() as f64 * fraction) as usize;
        let part = &data[..cut];
        let mut tracker = Tracker::new(lab_config());
        let mut out = Vec::new();
        feed(&mut tracker, part, &mut out);
        tracker.finish(&mut out);
        let calls = finished(&out);
        // The last event time inside the cut.
        let text = String::from_utf8_lossy(part);
        let last_ts = text
            .lines()
            .filter_map(|l| l.strip_prefix("Timestamp: "))
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .fold(0.0, f64::max);
        let mut seen = HashSet::new();
        for c in &calls {
            assert!(
                seen.insert(c.linkedid.0.clone()),
                "{} emitted twice",
                c.linkedid
            );
            let truth_call = t["calls"]
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .find(|x| x["linkedid"].as_str() == Some(c.linkedid.0.as_str()))
                })
                .expect("only calls that happened");
            let end: jiff::Timestamp = truth_call["end_time"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("end");
            let ended_inside = (end.as_microsecond() as f64 / 1e6) < last_ts - 0.5;
            assert_eq!(
                !c.incomplete, ended_inside,
                "cut {fraction}: {} incomplete={}",
                c.linkedid, c.incomplete
            );
        }
        assert!(!calls.is_empty());
        assert_eq!(tracker.live_calls(), 0);
    }
}

fn newchannel(uid: &str, ts: f64) -> Message {
    Message::from_pairs(&[
        ("Event", "Newchannel".to_string()),
        ("Timestamp", format!("{ts:.6}")),
        ("Channel", format!("SIP/carrier-{uid}")),
        ("Context", "from-trunk".to_string()),
        ("Exten", "0699990001".to_string()),
        ("CallerIDNum", "+390612345678".to_string()),
        ("Uniqueid", uid.to_string()),
        ("Linkedid", uid.to_string()),
    ])
}

#[test]
fn calls_that_never_hang_up_are_evicted_after_the_maximum_age() {
    let mut tracker = Tracker::new(CallsConfig {
        max_call_age_seconds: 60.0,
        ..CallsConfig::default()
    });
    let mut out = Vec::new();
    for i in 0..1000 {
        tracker.on_message(
            &newchannel(
                &format!("1800000000.{i}"),
                1_800_000_000.0 + i as f64 * 0.01,
            ),
            Micros(0),
            &mut out,
        );
    }
    assert_eq!(tracker.live_calls(), 1000);
    assert!(finished(&out).is_empty());
    // Hangups lost: much later traffic evicts them all, as incomplete.
    tracker.on_message(
        &newchannel("1800009999.1", 1_800_000_200.0),
        Micros(0),
        &mut out,
    );
    let evicted = finished(&out);
    assert_eq!(evicted.len(), 1000);
    assert!(evicted.iter().all(|c| c.incomplete));
    assert_eq!(tracker.live_calls(), 1);
}

/// Live moments for triggers: an agent rung who does not answer (reject), the next one rung and
/// answering, the hang-up; each fired on the call as known so far.
#[test]
fn moments_ring_reject_answer_hangup_in_order() {
    let dir = support::root().join("fixtures/ami-real");
    let mut tracker = Tracker::new(CallsConfig {
        emit_moments: true,
        ..lab_config()
    });
    let mut out = Vec::new();
    feed(
        &mut tracker,
        &support::read_capture(&dir.join("inbound-ring-noanswer-next-agent.ami")),
        &mut out,
    );
    tracker.finish(&mut out);
    let moments: Vec<String> = out
        .iter()
        .filter_map(|o| match o {
            Output::Moment(m, c) => Some(format!("{m:?}:{}", c.agent.as_deref().unwrap_or("-"))),
            Output::Finished(_) => None,
        })
        .collect();
    // billing is linear: Agent 1013 rings 8 s (AgentRingNoAnswer), then Agent 1014 answers.
    assert_eq!(
        moments,
        vec![
            "Ring:-",
            "Reject:-",
            "Ring:-",
            "Answer:Agent 1014",
            "Hangup:Agent 1014"
        ],
        "{moments:?}"
    );
    assert_eq!(finished(&out).len(), 1);
}

/// A PBX without `timestampevents = yes`: replayed times come from CEL `EventTime` (whole
/// seconds), so they are within two seconds of what happened, and the rest is unchanged.
#[test]
fn without_timestamps_replay_uses_cel_event_time() {
    let dir = support::root().join("fixtures/ami-real");
    let data = support::read_capture(&dir.join("inbound-answered-agent-hangup.ami"));
    let text = String::from_utf8_lossy(&data);
    let stripped: String = text
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("Timestamp: "))
        .collect();
    assert!(!stripped.contains("Timestamp: 17"));
    let calls = support::finished_calls(stripped.as_bytes(), lab_config());
    let t = truth("inbound-answered-agent-hangup.truth.json");
    let tc = &t["calls"][0];
    assert_eq!(calls.len(), 1);
    let c = &calls[0];
    assert_eq!(c.status.as_str(), "answered");
    for (want, got) in [
        (&tc["start_time"], Some(c.started_at)),
        (&tc["answer_time"], c.answered_at),
        (&tc["end_time"], Some(c.ended_at)),
    ] {
        let want: jiff::Timestamp = want.as_str().and_then(|s| s.parse().ok()).expect("time");
        let got = got.expect("time").0 as f64 / 1e6;
        let diff = (got - want.as_microsecond() as f64 / 1e6).abs();
        assert!(diff <= 2.0, "{want} vs {got}: {diff} s");
    }
}

/// The example configuration shipped in `config/` loads and validates as it is.
#[test]
fn example_config_loads() {
    let cfg = Config::load(Some(
        &support::root().join("config/ami-zoho-bridge.example.toml"),
    ))
    .expect("example config");
    assert_eq!(cfg.triggers.len(), 2);
    assert_eq!(cfg.pbx.len(), 1);
    assert_eq!(cfg.pbx[0].secret_env.as_deref(), Some("AMI_SECRET"));
    assert!(cfg.store.url.starts_with("sqlite://"));
    assert_eq!(
        cfg.calls.agents.get("1002").map(String::as_str),
        Some("anna.bianchi@example.com")
    );
}
