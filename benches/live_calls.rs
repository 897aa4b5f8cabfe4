//! Memory per live call in the tracker, measured with a counting allocator: N concurrent
//! inbound queue calls (trunk leg, queue join, agent rung and connected, bridged) are fed in
//! and left open; the growth of live heap bytes divided by N is the figure.
//!
//! `cargo bench --bench live_calls` prints `live_calls=N bytes_per_live_call=B`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use ami_zoho_bridge::ami::Message;
use ami_zoho_bridge::calls::{Micros, Tracker};
use ami_zoho_bridge::config::CallsConfig;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: delegates every call to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn snapshot(
    prefix: &str,
    chan: &str,
    uid: &str,
    linked: &str,
    ctx: &str,
    exten: &str,
) -> Vec<(String, String)> {
    vec![
        (format!("{prefix}Channel"), chan.to_string()),
        (format!("{prefix}ChannelState"), "6".into()),
        (format!("{prefix}ChannelStateDesc"), "Up".into()),
        (format!("{prefix}CallerIDNum"), "+390612345678".into()),
        (format!("{prefix}CallerIDName"), "Mario Rossi".into()),
        (format!("{prefix}ConnectedLineNum"), "<unknown>".into()),
        (format!("{prefix}ConnectedLineName"), "<unknown>".into()),
        (format!("{prefix}Language"), "en".into()),
        (format!("{prefix}AccountCode"), "".into()),
        (format!("{prefix}Context"), ctx.into()),
        (format!("{prefix}Exten"), exten.into()),
        (format!("{prefix}Priority"), "1".into()),
        (format!("{prefix}Uniqueid"), uid.into()),
        (format!("{prefix}Linkedid"), linked.into()),
    ]
}

fn event(name: &str, ts: f64, parts: &[&[(String, String)]], extra: &[(&str, &str)]) -> Message {
    let mut pairs: Vec<(String, String)> = vec![
        ("Event".into(), name.into()),
        ("Privilege".into(), "call,all".into()),
        ("Timestamp".into(), format!("{ts:.6}")),
    ];
    for p in parts {
        pairs.extend(p.iter().cloned());
    }
    pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Message::from_pairs(&pairs)
}

fn call_events(i: usize) -> Vec<Message> {
    let t = 1_800_000_000.0 + i as f64 * 0.001;
    let caller_uid = format!("1800000000.{}", 2 * i);
    let agent_uid = format!("1800000000.{}", 2 * i + 1);
    let caller = snapshot(
        "",
        &format!("SIP/carrier-{:08x}", 2 * i),
        &caller_uid,
        &caller_uid,
        "from-trunk",
        "0699990001",
    );
    let agent = snapshot(
        "Dest",
        &format!("SIP/1001-{:08x}", 2 * i + 1),
        &agent_uid,
        &caller_uid,
        "from-agents",
        "s",
    );
    let agent_plain = snapshot(
        "",
        &format!("SIP/1001-{:08x}", 2 * i + 1),
        &agent_uid,
        &caller_uid,
        "from-agents",
        "s",
    );
    let bridge = format!("bridge-{i:08}");
    vec![
        event("Newchannel", t, &[&caller], &[]),
        event(
            "QueueCallerJoin",
            t + 0.1,
            &[&caller],
            &[("Queue", "support"), ("Position", "1"), ("Count", "1")],
        ),
        event("Newchannel", t + 0.2, &[&agent_plain], &[]),
        event(
            "AgentCalled",
            t + 0.2,
            &[&caller, &agent],
            &[
                ("Queue", "support"),
                ("Interface", "SIP/1001"),
                ("MemberName", "Agent 1001"),
            ],
        ),
        event(
            "DialBegin",
            t + 0.2,
            &[&caller, &agent],
            &[("DialString", "SIP/1001")],
        ),
        event(
            "DialEnd",
            t + 2.0,
            &[&caller, &agent],
            &[("DialStatus", "ANSWER")],
        ),
        event(
            "AgentConnect",
            t + 2.0,
            &[&caller, &agent],
            &[
                ("Queue", "support"),
                ("Interface", "SIP/1001"),
                ("MemberName", "Agent 1001"),
                ("HoldTime", "2"),
                ("RingTime", "2"),
            ],
        ),
        event(
            "BridgeEnter",
            t + 2.0,
            &[&caller],
            &[("BridgeUniqueid", bridge.as_str())],
        ),
        event(
            "BridgeEnter",
            t + 2.0,
            &[&agent_plain],
            &[("BridgeUniqueid", bridge.as_str())],
        ),
    ]
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let mut tracker = Tracker::new(CallsConfig::default());
    let mut out = Vec::new();
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..n {
        for m in call_events(i) {
            tracker.on_message(&m, Micros(0), &mut out);
        }
    }
    let after = LIVE.load(Ordering::Relaxed);
    assert!(out.is_empty());
    println!(
        "live_calls={} bytes_per_live_call={}",
        tracker.live_calls(),
        (after - before) / tracker.live_calls().max(1) as isize
    );
}
