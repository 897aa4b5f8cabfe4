//! Continuity of the call tracker: one PBX clock, sessions that drop and log in again
//! (resync), a bridge that saves its live state and is restarted. Every expectation comes
//! from the recorded captures' own truth files or session files, or from reading the events.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use ami_zoho_bridge::ami::replay::Replay;
use ami_zoho_bridge::ami::SourceEvent;
use ami_zoho_bridge::calls::{tracker_codec, Call, LiveState, Micros, Output, Tracker};
use ami_zoho_bridge::config::{CallsConfig, Config};
use serde_json::Value;

fn lab_config(lab: &str) -> CallsConfig {
    Config::load(Some(
        &support::root()
            .join("fixtures")
            .join(lab)
            .join("bridge.toml"),
    ))
    .expect("config")
    .calls
}

/// A cacofonisk recording (JSON array of parsed events) back on the wire.
fn cacofonisk_wire(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).expect("fixture");
    let events: Vec<serde_json::Map<String, Value>> = serde_json::from_str(&text).expect("json");
    let mut out = Vec::new();
    for e in events {
        for (k, v) in e {
            if k == "content" {
                continue;
            }
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every capture in `fixtures/` as (name, wire bytes, calls config).
fn every_capture() -> Vec<(String, Vec<u8>, CallsConfig)> {
    let root = support::root().join("fixtures");
    let mut files = Vec::new();
    files_under(&root, &mut files);
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let name = path
            .strip_prefix(&root)
            .expect("under fixtures")
            .to_string_lossy()
            .into_owned();
        let cfg = match name.split('/').next() {
            Some(lab @ ("ami-real" | "ami-sip")) => lab_config(lab),
            _ => CallsConfig::default(),
        };
        let bytes = if name.ends_with(".ami") || name.ends_with(".ami.gz") {
            support::read_capture(&path)
        } else if name.starts_with("ami-public/panoramisk/") && name.ends_with(".yaml") {
            std::fs::read(&path).expect("read")
        } else if name.starts_with("ami-public/cacofonisk/") && name.ends_with(".json") {
            cacofonisk_wire(&path)
        } else {
            continue;
        };
        out.push((name, bytes, cfg));
    }
    out
}

/// Feeds a capture as `replay` does; returns (session number, call) per finished call, and the
/// stream time at which each was emitted.
fn run_sessions(bytes: &[u8], cfg: CallsConfig) -> Vec<(u32, Micros, Call)> {
    let mut tracker = Tracker::new(cfg);
    let mut session = 0;
    let mut out = Vec::new();
    let mut calls = Vec::new();
    let mut take = |out: &mut Vec<Output>, session: u32, now: Micros| {
        for o in out.drain(..) {
            if let Output::Finished(c) = o {
                calls.push((session, now, *c));
            }
        }
    };
    for ev in Replay::new(bytes).with_codec(tracker_codec()) {
        let ev = ev.expect("decode");
        if matches!(ev, SourceEvent::Reconnected { .. }) {
            session += 1;
        }
        tracker.feed(&ev, Micros(0), &mut out);
        take(&mut out, session, tracker.now());
    }
    tracker.finish(&mut out);
    take(&mut out, session, tracker.now());
    calls
}

/// The rule: a Linkedid is emitted at most once per PBX session, over every capture we
/// have (Asterisk 11 to 22, with and without `Timestamp`s), and no call is dated 1970 when the
/// stream has a clock at all.
#[test]
fn every_capture_emits_each_linkedid_at_most_once_per_session() {
    let captures = every_capture();
    assert!(
        captures.len() >= 90,
        "only {} captures found",
        captures.len()
    );
    let mut failures = Vec::new();
    let mut calls_seen = 0;
    for (name, bytes, cfg) in captures {
        let calls = run_sessions(&bytes, cfg);
        calls_seen += calls.len();
        let mut seen = HashSet::new();
        for (session, _, c) in &calls {
            if !seen.insert((*session, c.linkedid.0.clone())) {
                failures.push(format!("{name}: {} emitted twice", c.linkedid));
            }
            let clockless = c.unknown.contains(&"started_at");
            if c.started_at.0 == 0 && !clockless {
                failures.push(format!("{name}: {} dated 1970", c.linkedid));
            }
        }
    }
    assert!(calls_seen > 300, "only {calls_seen} calls");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// panoramisk's `agent_not_in_pause` (Asterisk 11, no `Timestamp`, CEL `EventTime` from its
/// fifth event on): one SIP channel calls `*12`. Before the one clock, the events before the
/// first CEL were dated 1970, the first CEL's time evicted that call and the channel's later
/// events made a second one.
#[test]
fn a_capture_whose_clock_starts_late_gives_one_call_not_one_in_1970() {
    let path = support::root()
        .join("fixtures/ami-public/panoramisk/tests/fixtures/agent_not_in_pause.yaml");
    let bytes = std::fs::read(&path).expect("fixture");
    let calls = run_sessions(&bytes, CallsConfig::default());
    let mut by_channel: HashMap<String, usize> = HashMap::new();
    for (_, _, c) in &calls {
        let year = c.started_at.to_timestamp().expect("time").to_string();
        // 2014-10-20, the capture's CEL EventTime.
        assert!(
            year.starts_with("2014-10-20"),
            "{} starts {year}",
            c.linkedid
        );
        for leg in &c.channels {
            *by_channel.entry(leg.uniqueid.clone()).or_default() += 1;
        }
    }
    assert!(!calls.is_empty());
    assert!(
        by_channel.values().all(|n| *n == 1),
        "a channel in two calls: {by_channel:?}"
    );
    assert!(by_channel.contains_key("1413823936.3729"));
}

fn truth(name: &str) -> Value {
    let path = support::root().join("fixtures/ami-real").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("truth")).expect("json")
}

fn epoch(v: &Value) -> Option<f64> {
    let ts: jiff::Timestamp = v.as_str()?.parse().ok()?;
    Some(ts.as_microsecond() as f64 / 1e6)
}

fn secs(m: Micros) -> f64 {
    m.0 as f64 / 1e6
}

/// The replay of a capture with two sessions: the second session's banner is a reconnect, and
/// its two list answers come as one resync holding exactly the items the lists announced.
#[test]
fn a_banner_inside_a_capture_is_a_new_session_with_one_resync() {
    for name in ["resync-gap-3s", "resync-gap-12s"] {
        let bytes = std::fs::read(support::root().join(format!("fixtures/ami-real/{name}.ami")))
            .expect("capture");
        let events: Vec<SourceEvent> = Replay::new(&bytes[..])
            .map(|e| e.expect("decode"))
            .collect();
        let kinds: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                SourceEvent::Connected { .. } => Some("connected"),
                SourceEvent::Disconnected { .. } => Some("disconnected"),
                SourceEvent::Reconnected { .. } => Some("reconnected"),
                SourceEvent::Resync { .. } => Some("resync"),
                SourceEvent::Message(_) => None,
            })
            .collect();
        assert_eq!(
            kinds,
            ["connected", "disconnected", "reconnected", "resync"],
            "{name}"
        );
        let Some(SourceEvent::Resync { items }) = events
            .iter()
            .find(|e| matches!(e, SourceEvent::Resync { .. }))
        else {
            unreachable!()
        };
        for (item, complete) in [
            ("CoreShowChannel", "CoreShowChannelsComplete"),
            ("QueueMember", "QueueStatusComplete"),
        ] {
            let done = items
                .iter()
                .find(|m| m.is_event(complete))
                .unwrap_or_else(|| panic!("{name}: no {complete}"));
            let announced: usize = done
                .get_str("ListItems")
                .and_then(|v| v.parse().ok())
                .expect("ListItems");
            let count = items
                .iter()
                .filter(|m| {
                    if item == "CoreShowChannel" {
                        m.is_event(item)
                    } else {
                        m.is_event("QueueMember")
                            || m.is_event("QueueParams")
                            || m.is_event("QueueEntry")
                    }
                })
                .count();
            assert_eq!(count, announced, "{name}: {item}");
        }
        // Nothing else is swallowed: every other message is still handed on.
        let messages = events
            .iter()
            .filter(|e| matches!(e, SourceEvent::Message(_)))
            .count();
        let wire_messages = String::from_utf8_lossy(&bytes)
            .split("\r\n\r\n")
            .filter(|m| m.contains(": "))
            .count();
        assert_eq!(messages + items.len(), wire_messages, "{name}");
    }
}

/// Calls that were up while the session was down record the gap; a call that ended in the gap
/// (its channels missing from `CoreShowChannels`) is emitted within grace + gap of its end,
/// not held for `max_call_age_seconds`; calls not alive at the drop record none.
#[test]
fn calls_across_a_gap_record_it_and_none_is_held_open() {
    for name in ["resync-gap-3s", "resync-gap-12s"] {
        let t = truth(&format!("{name}.truth.json"));
        let gap = &t["gaps"][0];
        let disconnect = gap["disconnect_epoch"].as_f64().expect("disconnect");
        let reconnect = gap["reconnect_epoch"].as_f64().expect("reconnect");
        let cfg = lab_config("ami-real");
        let grace = cfg.grace_seconds;
        let bytes = std::fs::read(support::root().join(format!("fixtures/ami-real/{name}.ami")))
            .expect("capture");
        let calls = run_sessions(&bytes, cfg);
        let truth_calls = t["calls"].as_array().expect("calls");
        let mut with_gap = 0;
        for tc in truth_calls {
            let id = tc["linkedid"].as_str().expect("linkedid");
            let (_, emitted, c) = calls
                .iter()
                .find(|(_, _, c)| c.linkedid.0 == id)
                .unwrap_or_else(|| panic!("{name}: {id} not emitted"));
            let state = tc["observed"]["state_at_session_boundaries"]["disconnect"]
                .as_str()
                .unwrap_or("not-started");
            let alive = !matches!(state, "not-started" | "ended");
            if alive {
                with_gap += 1;
                assert_eq!(c.gaps.len(), 1, "{name} {id} ({state}): {:?}", c.gaps);
                let g = c.gaps[0];
                assert!(
                    secs(g.from) <= disconnect && secs(g.to) >= reconnect - 0.5,
                    "{name} {id}: gap {g:?}"
                );
            } else {
                assert!(c.gaps.is_empty(), "{name} {id} ({state}): {:?}", c.gaps);
            }
            let end = epoch(&tc["end_time"]).expect("end");
            let held = secs(*emitted) - end;
            let allowed = grace
                + 0.3
                + if alive {
                    reconnect - disconnect + 9.0
                } else {
                    0.0
                };
            assert!(
                held <= allowed,
                "{name} {id}: emitted {held:.1} s after its end (allowed {allowed:.1})"
            );
            assert!(!c.incomplete, "{name} {id}: {:?}", c.unknown);
        }
        assert!(
            with_gap >= 3,
            "{name}: only {with_gap} calls spanned the gap"
        );
    }
}

/// The calls of `events` with the tracker's state saved after `split` events and restored
/// (through its JSON form) into a fresh tracker that takes the rest.
fn run_split(events: &[SourceEvent], split: usize, cfg: &CallsConfig) -> Vec<Call> {
    let mut out = Vec::new();
    let mut first = Tracker::new(cfg.clone());
    for ev in &events[..split] {
        first.feed(ev, Micros(0), &mut out);
    }
    let json = serde_json::to_string(&first.save_live()).expect("save");
    drop(first);
    let state: LiveState = serde_json::from_str(&json).expect("load");
    let mut second = Tracker::new(cfg.clone());
    second.try_restore_live(state).expect("restore");
    for ev in &events[split..] {
        second.feed(ev, Micros(0), &mut out);
    }
    second.finish(&mut out);
    out.into_iter()
        .filter_map(|o| match o {
            Output::Finished(c) => Some(*c),
            Output::Moment(..) => None,
        })
        .collect()
}

/// Saving the live state at any message boundary and restoring it into a new tracker gives
/// exactly the calls of the unbroken run (property over every boundary of several captures).
#[test]
fn live_state_round_trips_at_every_message_boundary() {
    let mut splits = 0;
    for (lab, name, step) in [
        ("ami-real", "inbound-attended-transfer.ami", 1),
        ("ami-real", "outbound-busy.ami", 1),
        ("ami-real", "ctd-busy.ami", 1),
        ("ami-real", "resync-gap-3s.ami", 1),
        ("ami-real", "login-midcall-agent-ringing.ami", 1),
        ("ami-sip", "inbound-transfer.ami", 1),
        ("ami-real", "mixed-small.ami", 7),
    ] {
        let cfg = lab_config(lab);
        let bytes = support::read_capture(&support::root().join("fixtures").join(lab).join(name));
        let events: Vec<SourceEvent> = Replay::new(&bytes[..])
            .with_codec(tracker_codec())
            .map(|e| e.expect("decode"))
            .collect();
        let whole = serde_json::to_value(run_split(&events, 0, &cfg)).expect("json");
        assert!(
            whole.as_array().is_some_and(|a| !a.is_empty()),
            "{name}: no calls"
        );
        for split in (1..events.len()).step_by(step) {
            let got = serde_json::to_value(run_split(&events, split, &cfg)).expect("json");
            assert_eq!(got, whole, "{name}: split after event {split}");
            splits += 1;
        }
    }
    assert!(splits > 1500, "only {splits} splits");
}

/// A state of another format version is refused, not half-read; an empty one loads as nothing.
#[test]
fn live_state_of_another_version_is_refused() {
    let cfg = lab_config("ami-real");
    let bytes = std::fs::read(support::root().join("fixtures/ami-real/outbound-busy.ami"))
        .expect("capture");
    let mut t = Tracker::new(cfg.clone());
    let mut out = Vec::new();
    for ev in Replay::new(&bytes[..]).take(40) {
        t.feed(&ev.expect("decode"), Micros(0), &mut out);
    }
    let mut json: Value = serde_json::to_value(t.save_live()).expect("json");
    json["version"] = Value::from(999);
    let state: LiveState = serde_json::from_value(json).expect("parse");
    let mut fresh = Tracker::new(cfg.clone());
    let err = fresh.try_restore_live(state).expect_err("refused");
    assert!(err.to_string().contains("999"), "{err}");
    assert_eq!(fresh.live_calls(), 0);
    fresh
        .try_restore_live(LiveState::default())
        .expect("empty state");
    assert_eq!(fresh.live_calls(), 0);
}

/// A bridge restarted while calls are up: the saved state is restored, the new session's login
/// (`Connected`, then its resync) closes the gap. Here the restart is made from the 3 s gap
/// capture: the state saved at the first session's end is restored into a new tracker that
/// then sees the second session (no `Disconnected`/`Reconnected`: a new process). Every call
/// comes out as in the unbroken replay: same status, agent, queue, callee, once.
#[test]
fn a_restart_between_sessions_loses_no_call() {
    let cfg = lab_config("ami-real");
    let bytes = std::fs::read(support::root().join("fixtures/ami-real/resync-gap-3s.ami"))
        .expect("capture");
    let events: Vec<SourceEvent> = Replay::new(&bytes[..])
        .with_codec(tracker_codec())
        .map(|e| e.expect("decode"))
        .collect();
    let drop_at = events
        .iter()
        .position(|e| matches!(e, SourceEvent::Disconnected { .. }))
        .expect("two sessions");
    let mut out = Vec::new();
    let mut first = Tracker::new(cfg.clone());
    for ev in &events[..drop_at] {
        first.feed(ev, Micros(0), &mut out);
    }
    let saved = serde_json::to_string(&first.save_live()).expect("save");
    let mut second = Tracker::new(cfg.clone());
    second.restore_live(serde_json::from_str(&saved).expect("load"));
    for ev in &events[drop_at + 1..] {
        let ev = match ev {
            SourceEvent::Reconnected { banner } => SourceEvent::Connected {
                banner: banner.clone(),
            },
            other => other.clone(),
        };
        second.feed(&ev, Micros(0), &mut out);
    }
    second.finish(&mut out);
    let got: Vec<Call> = out
        .into_iter()
        .filter_map(|o| match o {
            Output::Finished(c) => Some(*c),
            Output::Moment(..) => None,
        })
        .collect();
    let t = truth("resync-gap-3s.truth.json");
    let truth_calls = t["calls"].as_array().expect("calls");
    assert_eq!(got.len(), truth_calls.len());
    for tc in truth_calls {
        let id = tc["linkedid"].as_str().expect("linkedid");
        let c = got
            .iter()
            .find(|c| c.linkedid.0 == id)
            .unwrap_or_else(|| panic!("{id} lost"));
        assert_eq!(Some(c.status.as_str()), tc["final_status"].as_str(), "{id}");
        assert_eq!(c.queue.as_deref(), tc["queue"].as_str(), "{id}");
        assert_eq!(c.callee.as_deref(), tc["called_number"].as_str(), "{id}");
        if tc["direction"] == "inbound" {
            assert_eq!(c.agent.as_deref(), tc["agent"].as_str(), "{id}");
        }
        let start = epoch(&tc["start_time"]).expect("start");
        assert!((secs(c.started_at) - start).abs() <= 1.0, "{id}: start");
        assert_eq!(c.gaps.len(), 1, "{id}: {:?}", c.gaps);
    }
}
