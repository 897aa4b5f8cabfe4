//! Events in, calls out: a pure state machine (no I/O, no clock of its own).
//!
//! Channels are grouped into calls by a union of every relation the events prove: a shared
//! Linkedid, a Dial (caller ↔ destination), the two halves of a Local channel, a queue caller
//! and its member leg, a shared bridge, a transfer. A call is finished when all of its channels
//! have hung up and a grace period has passed in stream time (late `AgentComplete` and `Cdr`
//! events belong to it); it is then emitted exactly once.
//!
//! Time is the event's own `Timestamp:` when the PBX sends it, else the time the caller passes
//! in (arrival time live). Replays of captures with timestamps are therefore deterministic.

use std::borrow::Cow;
use std::collections::BTreeMap;

// Keys are channel ids from the PBX: a fast non-cryptographic hash is the right trade.
use rustc_hash::FxHashMap as HashMap;

use crate::ami::Message;
use crate::config::CallsConfig;

use super::model::{Call, Direction, HangupBy, Leg, LinkedId, Micros, Status, Transfer};

/// A moment of a live call that triggers can fire on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Moment {
    /// An agent's phone (or the far end) starts ringing.
    Ring,
    Answer,
    /// The answered call hung up.
    Hangup,
    /// An agent was rung and did not take the call.
    Reject,
}

/// What the tracker hands on.
#[derive(Debug, Clone)]
pub enum Output {
    /// A live moment, with the call as known so far.
    Moment(Moment, Box<Call>),
    /// A finished call, emitted once.
    Finished(Box<Call>),
}

/// The tracker's live state, as saved between runs of the bridge (serialisable, versioned).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LiveState {
    pub version: u32,
}

type CallKey = u64;

#[derive(Debug)]
struct Chan {
    call: CallKey,
    name: String,
    local: bool,
    hung_up: Option<Micros>,
    cause: Option<u16>,
}

#[derive(Debug, Default)]
struct CallState {
    linkedid: String,
    /// Channel uniqueids in creation order; the first is the call's origin.
    channels: Vec<String>,
    live: usize,
    started_at: Micros,
    last_event: Micros,
    all_ended_at: Option<Micros>,
    first_context: String,
    first_name: String,
    caller: Option<String>,
    caller_name: Option<String>,
    callee: Option<String>,
    queue: Option<String>,
    queue_status: Option<String>,
    agent: Option<String>,
    agent_interface: Option<String>,
    agent_email: Option<String>,
    connected_at: Option<Micros>,
    hold_seconds: Option<u32>,
    ring_seconds: Option<u32>,
    agent_talk: Option<u32>,
    agent_reason: Option<String>,
    /// Last `DIALSTATUS` set on the origin (the dialplan's own verdict).
    origin_dial_status: Option<String>,
    /// Last `DialEnd` status of a dial made by the origin.
    origin_dial_end: Option<String>,
    /// `DialEnd` status of the Originate that rang the first channel (click-to-call).
    originate_status: Option<String>,
    origin_dial_answer: Option<Micros>,
    origin_dial_begin: Option<Micros>,
    route: Option<String>,
    trunk_leg: bool,
    first_hangup_request_origin: Option<bool>,
    transfers: Vec<Transfer>,
    tags: BTreeMap<String, String>,
    incomplete: bool,
    fired_hangup: bool,
    /// When the caller was talking again after a transfer.
    transfer_resumed_at: Option<Micros>,
    /// A blind transfer waits for its target's answer.
    awaiting_transfer_answer: bool,
}

/// The correlator. Feed it messages in wire order; collect the outputs.
pub struct Tracker {
    cfg: CallsConfig,
    channels: HashMap<String, Chan>,
    calls: HashMap<CallKey, CallState>,
    by_linkedid: HashMap<String, CallKey>,
    /// Live Local channels by name, to pair `;1` and `;2`.
    local_names: HashMap<String, String>,
    /// (queue, interface) of the last AgentConnect → call: AgentComplete may lack channel fields.
    queue_members: HashMap<(String, String), CallKey>,
    bridges: HashMap<String, Vec<String>>,
    next_key: CallKey,
    now: Micros,
    last_flush: Micros,
    peak_live: usize,
}

const GRACE_DEFAULT: f64 = 2.0;

/// How often (in stream time) finished calls are looked for: a call is emitted at most this
/// much after its grace period, and the scan costs O(live calls) only this often.
const FLUSH_EVERY_MICROS: i64 = 250_000;

/// The events the correlator reads; everything else (CEL, RTCPSent, DeviceStateChange, Cdr,
/// AGIExec…, and Newexten, Newstate, DialState, which add nothing the events above do not
/// carry: about two thirds of a busy PBX's traffic) is dropped before any field is read.
///
/// The events the correlator reads nothing of but their `Timestamp`, and that no action
/// lists or answers: a codec feeding the tracker may skim them
/// ([`AmiCodec::with_skim`](crate::ami::AmiCodec::with_skim)). They are the bulk of a busy
/// PBX's traffic and its longest events (CEL and Cdr carry 30 to 45 headers).
pub fn skimmable(event: &[u8]) -> bool {
    matches!(
        event,
        b"CEL"
            | b"Cdr"
            | b"RTCPSent"
            | b"RTCPReceived"
            | b"Newexten"
            | b"Newstate"
            | b"NewConnectedLine"
            | b"DialState"
            | b"DeviceStateChange"
            | b"ChannelTalkingStart"
            | b"ChannelTalkingStop"
    )
}

/// The codec for a stream that feeds a tracker: it skims the [`skimmable`] events.
pub fn tracker_codec() -> crate::ami::AmiCodec {
    crate::ami::AmiCodec::default().with_skim(skimmable)
}

/// A byte-string pattern match compiles to a switch on the length and a few byte compares,
/// where a list of names would cost a comparison each.
fn relevant(event: &[u8]) -> bool {
    matches!(
        event,
        b"Newchannel"
            | b"Hangup"
            | b"DialBegin"
            | b"DialEnd"
            | b"VarSet"
            | b"QueueCallerJoin"
            | b"QueueCallerAbandon"
            | b"AgentCalled"
            | b"AgentRingNoAnswer"
            | b"AgentConnect"
            | b"AgentComplete"
            | b"HangupRequest"
            | b"LocalBridge"
            | b"BridgeEnter"
            | b"BridgeLeave"
            | b"BridgeDestroy"
            | b"BlindTransfer"
            | b"AttendedTransfer"
            | b"UserEvent"
            | b"Shutdown"
            | b"FullyBooted"
            | b"NewCallerid"
    )
}

/// Header names of a channel snapshot with a given prefix, spelled out once.
struct Snap {
    uniqueid: &'static str,
    channel: &'static str,
    linkedid: &'static str,
    context: &'static str,
    exten: &'static str,
    num: &'static str,
    name: &'static str,
}

macro_rules! snap {
    ($p:literal) => {
        Snap {
            uniqueid: concat!($p, "Uniqueid"),
            channel: concat!($p, "Channel"),
            linkedid: concat!($p, "Linkedid"),
            context: concat!($p, "Context"),
            exten: concat!($p, "Exten"),
            num: concat!($p, "CallerIDNum"),
            name: concat!($p, "CallerIDName"),
        }
    };
}

const PLAIN: Snap = snap!("");
const DEST: Snap = snap!("Dest");
const TRANSFER_SNAPS: [Snap; 5] = [
    snap!("Transferer"),
    snap!("Transferee"),
    snap!("OrigTransferer"),
    snap!("SecondTransferer"),
    snap!("TransferTarget"),
];

impl Tracker {
    pub fn new(cfg: CallsConfig) -> Tracker {
        Tracker {
            cfg,
            channels: HashMap::default(),
            calls: HashMap::default(),
            by_linkedid: HashMap::default(),
            local_names: HashMap::default(),
            queue_members: HashMap::default(),
            bridges: HashMap::default(),
            next_key: 1,
            now: Micros(0),
            last_flush: Micros(0),
            peak_live: 0,
        }
    }

    /// Calls currently tracked (live, or waiting out their grace period).
    pub fn live_calls(&self) -> usize {
        self.calls.len()
    }

    /// The most calls tracked at once so far.
    pub fn peak_live_calls(&self) -> usize {
        self.peak_live
    }

    /// Processes one message. `arrival` is used when the event has no `Timestamp:`.
    pub fn on_message(&mut self, m: &Message, arrival: Micros, out: &mut Vec<Output>) {
        let Some(event) = m.event() else { return };
        // Every event moves stream time on, even those the correlator does not read.
        let ts = m
            .get("Timestamp")
            .and_then(Micros::parse_epoch)
            .or_else(|| self.event_time(m))
            .unwrap_or(if arrival.0 > 0 { arrival } else { self.now });
        if ts > self.now {
            self.now = ts;
        }
        // None of these is ever an item of a list action (those are CoreShowChannel,
        // QueueMember ...), so no ActionID check is needed: the client keeps responses and list
        // items to itself anyway.
        if relevant(event) {
            if let Ok(event) = std::str::from_utf8(event) {
                self.apply(event, m, ts, out);
            }
        }
        if self.now.0 - self.last_flush.0 >= FLUSH_EVERY_MICROS {
            self.flush_due(out);
        }
    }

    /// Without `timestampevents`, the best time a recorded stream carries: CEL's `EventTime`
    /// (`YYYY-MM-DD HH:MM:SS[.ffffff]` in the PBX's zone, `calls.pbx_timezone`). Events without
    /// it take the last time seen, so replayed times are good to a second or two.
    fn event_time(&self, m: &Message) -> Option<Micros> {
        let text = std::str::from_utf8(m.get("EventTime")?).ok()?.trim();
        if let Some(epoch) = Micros::parse_epoch(text.as_bytes()) {
            return Some(epoch);
        }
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let civil = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", whole).ok()?;
        let tz = jiff::tz::TimeZone::get(&self.cfg.pbx_timezone).unwrap_or(jiff::tz::TimeZone::UTC);
        let second = civil.to_zoned(tz).ok()?.timestamp().as_second();
        let micros = Micros::parse_epoch(format!("0.{frac}").as_bytes()).map_or(0, |m| m.0);
        Some(Micros(second * 1_000_000 + micros))
    }

    /// Attaches a tag (from the dialplan, over FastAGI) to the live call that owns channel
    /// `uniqueid`; triggers and templates see it. False when no live call has the channel.
    pub fn tag(&mut self, uniqueid: &str, key: &str, value: &str) -> bool {
        let Some(key_of_call) = self.channels.get(uniqueid).map(|c| c.call) else {
            return false;
        };
        match self.calls.get_mut(&key_of_call) {
            Some(call) => {
                call.tags.insert(key.to_string(), value.to_string());
                true
            }
            None => false,
        }
    }

    /// Hands one item of an event source to the tracker: the single entry point that the
    /// daemon, `watch`, `replay` and the tests share, so they cannot treat a source differently.
    /// `estimate` is the PBX time to give a message without a `Timestamp:` (live: the stream
    /// clock's estimate; replay: `Micros(0)`, meaning the last stream time seen).
    pub fn feed(&mut self, ev: &crate::ami::SourceEvent, estimate: Micros, out: &mut Vec<Output>) {
        use crate::ami::SourceEvent;
        match ev {
            SourceEvent::Message(m) => self.on_message(m, estimate, out),
            SourceEvent::Reconnected { .. } => self.on_reconnect(),
            SourceEvent::Disconnected { .. } => self.on_disconnect(),
            SourceEvent::Resync { items } => self.reconcile(items, out),
            SourceEvent::Connected { .. } => {}
        }
    }

    /// The AMI session dropped: from the last event seen until the next login, events are lost.
    pub fn on_disconnect(&mut self) {}

    /// Reconciles live state with the answers of `CoreShowChannels` and `QueueStatus` after a
    /// login (see [`SourceEvent::Resync`](crate::ami::SourceEvent::Resync)).
    pub fn reconcile(&mut self, items: &[Message], out: &mut Vec<Output>) {
        let _ = (items, out);
    }

    /// What the tracker knows of live calls, to persist so that a restarted bridge can carry
    /// on (see [`Tracker::restore_live`]).
    pub fn save_live(&self) -> LiveState {
        LiveState::default()
    }

    /// Loads what [`Tracker::save_live`] saved, before the first event of a new process.
    pub fn restore_live(&mut self, state: LiveState) {
        let _ = state;
    }

    /// A new AMI session after a drop: events in the gap are lost. Calls that spanned it are
    /// marked incomplete; their channels still end them if the events come.
    pub fn on_reconnect(&mut self) {
        for call in self.calls.values_mut() {
            call.incomplete = true;
        }
    }

    /// Advances stream time without an event (live: a timer), flushing calls past their grace.
    pub fn tick(&mut self, now: Micros, out: &mut Vec<Output>) {
        if now > self.now {
            self.now = now;
        }
        self.flush_due(out);
    }

    /// End of the stream: every call still open is emitted, marked incomplete if it had live
    /// channels.
    pub fn finish(&mut self, out: &mut Vec<Output>) {
        let mut keys: Vec<CallKey> = self.calls.keys().copied().collect();
        keys.sort_by_key(|k| {
            self.calls
                .get(k)
                .map(|c| (c.all_ended_at.unwrap_or(self.now), c.started_at))
        });
        for key in keys {
            if let Some(c) = self.calls.get_mut(&key) {
                if c.live > 0 {
                    c.incomplete = true;
                }
            }
            self.finalize(key, out);
        }
    }

    fn grace(&self) -> i64 {
        let g = if self.cfg.grace_seconds.is_finite() && self.cfg.grace_seconds >= 0.0 {
            self.cfg.grace_seconds
        } else {
            GRACE_DEFAULT
        };
        (g * 1e6) as i64
    }

    fn flush_due(&mut self, out: &mut Vec<Output>) {
        self.last_flush = self.now;
        let grace = self.grace();
        let max_age = (self.cfg.max_call_age_seconds * 1e6) as i64;
        let now = self.now;
        let mut due: Vec<(Micros, CallKey)> = self
            .calls
            .iter()
            .filter_map(|(k, c)| match c.all_ended_at {
                Some(end) if now.0 - end.0 >= grace => Some((end, *k)),
                None if now.0 - c.last_event.0 > max_age => Some((c.last_event, *k)),
                _ => None,
            })
            .collect();
        if due.is_empty() {
            return;
        }
        due.sort();
        for (_, key) in due {
            if let Some(c) = self.calls.get_mut(&key) {
                if c.all_ended_at.is_none() {
                    c.incomplete = true;
                }
            }
            self.finalize(key, out);
        }
    }

    // ---- event application -------------------------------------------------------------

    fn apply(&mut self, event: &str, m: &Message, ts: Micros, out: &mut Vec<Output>) {
        match event {
            "Newchannel" => {
                self.channel(m, &PLAIN, ts);
            }
            "Hangup" => self.on_hangup(m, ts, out),
            "DialBegin" => self.on_dial_begin(m, ts, out),
            "DialEnd" => self.on_dial_end(m, ts, out),
            "VarSet" => self.on_varset(m, ts),
            "QueueCallerJoin" => {
                if let Some(k) = self.channel(m, &PLAIN, ts) {
                    let q = text(m, "Queue");
                    self.call_mut(k).queue = q;
                }
            }
            "QueueCallerAbandon" => {
                self.channel(m, &PLAIN, ts);
            }
            "AgentCalled" => {
                if let Some(k) = self.channel(m, &PLAIN, ts) {
                    self.link_dest(k, m, ts);
                    self.moment(k, Moment::Ring, out);
                }
            }
            "AgentRingNoAnswer" => {
                if let Some(k) = self.channel(m, &PLAIN, ts) {
                    self.moment(k, Moment::Reject, out);
                }
            }
            "AgentConnect" => self.on_agent_connect(m, ts, out),
            "AgentComplete" => self.on_agent_complete(m, ts),
            "HangupRequest" => {
                if let Some(k) = self.channel(m, &PLAIN, ts) {
                    let origin = self.is_origin(k, m);
                    let c = self.call_mut(k);
                    if c.first_hangup_request_origin.is_none() {
                        c.first_hangup_request_origin = Some(origin);
                    }
                }
            }
            "LocalBridge" => {
                let a = text(m, "LocalOneUniqueid");
                let b = text(m, "LocalTwoUniqueid");
                if let (Some(a), Some(b)) = (a, b) {
                    self.union_channels(&a, &b);
                }
            }
            "BridgeEnter" => self.on_bridge_enter(m, ts),
            "BridgeLeave" => {
                self.channel(m, &PLAIN, ts);
                if let (Some(b), Some(u)) = (lossy(m, "BridgeUniqueid"), lossy(m, "Uniqueid")) {
                    if let Some(members) = self.bridges.get_mut(&*b) {
                        members.retain(|x| *x != *u);
                    }
                }
            }
            "BridgeDestroy" => {
                if let Some(b) = lossy(m, "BridgeUniqueid") {
                    self.bridges.remove(&*b);
                }
            }
            "BlindTransfer" | "AttendedTransfer" => self.on_transfer(event, m, ts),
            "UserEvent" => self.on_user_event(m, ts),
            "Shutdown" => self.end_everything(ts),
            "FullyBooted" => self.on_fully_booted(m),
            // An originated channel's caller id arrives here, after its Newchannel.
            "NewCallerid" => {
                self.channel(m, &PLAIN, ts);
            }
            _ => {}
        }
    }

    /// Finds or creates the channel of an event's snapshot (prefix "" or "Dest" ...), records
    /// what it tells about the call, and returns the call's key.
    fn channel(&mut self, m: &Message, snap: &Snap, ts: Micros) -> Option<CallKey> {
        let uid = field(m, snap.uniqueid)?;
        let key = match self.channels.get(uid) {
            Some(c) => c.call,
            None => self.new_channel(m, snap, uid, ts)?,
        };
        self.observe_snapshot(key, m, snap, uid, ts);
        Some(key)
    }

    fn new_channel(&mut self, m: &Message, snap: &Snap, uid: &str, ts: Micros) -> Option<CallKey> {
        let name = text(m, snap.channel)?;
        let linkedid = text(m, snap.linkedid).unwrap_or_else(|| uid.to_string());
        let context = text(m, snap.context).unwrap_or_default();
        let local = name.starts_with("Local/");
        let key = match self.by_linkedid.get(&linkedid) {
            Some(k) if self.calls.contains_key(k) => *k,
            _ => {
                let k = self.next_key;
                self.next_key += 1;
                self.calls.insert(
                    k,
                    CallState {
                        linkedid: linkedid.clone(),
                        started_at: ts,
                        last_event: ts,
                        first_context: context.clone(),
                        first_name: name.clone(),
                        ..CallState::default()
                    },
                );
                self.by_linkedid.insert(linkedid, k);
                self.peak_live = self.peak_live.max(self.calls.len());
                k
            }
        };
        {
            let c = self.call_mut(key);
            c.channels.push(uid.to_string());
            c.live += 1;
            c.all_ended_at = None;
        }
        self.channels.insert(
            uid.to_string(),
            Chan {
                call: key,
                name: name.clone(),
                local,
                hung_up: None,
                cause: None,
            },
        );
        if local {
            if let Some(base) = local_base(&name) {
                match self.local_names.get(base) {
                    Some(other) if other != uid => {
                        let other = other.clone();
                        self.union_channels(uid, &other);
                    }
                    _ => {
                        self.local_names.insert(base.to_string(), uid.to_string());
                    }
                }
            }
        }
        self.channels.get(uid).map(|c| c.call)
    }

    /// Caller id, dialled number and route hints from a snapshot of the call's first channel
    /// (or its Local partner, for the route).
    fn observe_snapshot(&mut self, key: CallKey, m: &Message, snap: &Snap, uid: &str, ts: Micros) {
        let Some(c) = self.calls.get_mut(&key) else {
            return;
        };
        c.last_event = c.last_event.max(ts);
        let is_first = c.channels.first().is_some_and(|f| f == uid);
        if !is_first && !is_origin_partner(c, uid) {
            return;
        }
        if c.route.is_none() {
            if let Some(ctx) = field(m, snap.context) {
                let cfg = &self.cfg;
                c.route = cfg.routes.get(ctx).cloned().or_else(|| {
                    cfg.route_context_prefixes
                        .iter()
                        .any(|p| !p.is_empty() && ctx.starts_with(p.as_str()))
                        .then(|| ctx.to_string())
                });
            }
        }
        if !is_first {
            return;
        }
        if c.caller.is_none() {
            if let Some(n) = text(m, snap.num).filter(|n| known(n)) {
                c.caller = Some(n);
                c.caller_name = text(m, snap.name).filter(|n| known(n));
            }
        }
        if c.callee.is_none() {
            if let Some(e) =
                field(m, snap.exten).filter(|e| !matches!(*e, "" | "s" | "h" | "i" | "t"))
            {
                c.callee = Some(e.to_string());
            }
        }
    }

    fn on_hangup(&mut self, m: &Message, ts: Micros, out: &mut Vec<Output>) {
        let Some(key) = self.channel(m, &PLAIN, ts) else {
            return;
        };
        let Some(uid) = lossy(m, "Uniqueid") else {
            return;
        };
        let uid = &*uid;
        let cause = field(m, "Cause").and_then(|c| c.parse().ok());
        let mut newly = false;
        if let Some(ch) = self.channels.get_mut(uid) {
            if ch.hung_up.is_none() {
                ch.hung_up = Some(ts);
                ch.cause = cause;
                newly = true;
            }
            if ch.local {
                if let Some(base) = local_base(&ch.name) {
                    if self.local_names.get(base).map(String::as_str) == Some(uid) {
                        self.local_names.remove(base);
                    }
                }
            }
        }
        if !newly {
            return;
        }
        let is_first = self
            .calls
            .get(&key)
            .and_then(|c| c.channels.first())
            .map(String::as_str)
            == Some(uid);
        let c = self.call_mut(key);
        c.live = c.live.saturating_sub(1);
        if c.live == 0 {
            c.all_ended_at = Some(ts);
        }
        let answered = c.connected_at.is_some() || c.origin_dial_answer.is_some();
        if is_first && answered && !c.fired_hangup {
            c.fired_hangup = true;
            self.moment(key, Moment::Hangup, out);
        }
    }

    fn on_dial_begin(&mut self, m: &Message, ts: Micros, out: &mut Vec<Output>) {
        let caller = self.channel(m, &PLAIN, ts);
        let dest = self.channel(m, &DEST, ts);
        let (Some(ck), Some(_)) = (caller, dest) else {
            return;
        };
        let key = self.link_dest(ck, m, ts).unwrap_or(ck);
        let dest_context = lossy(m, "DestContext").unwrap_or_default();
        let dest_name = lossy(m, "DestChannel").unwrap_or_default();
        let trunkish = self.is_trunk(&dest_context, &dest_name)
            || self
                .cfg
                .outbound_contexts
                .iter()
                .any(|c| *c == *dest_context);
        let origin = self.is_origin(key, m);
        let c = self.call_mut(key);
        if trunkish {
            c.trunk_leg = true;
        }
        if origin {
            c.origin_dial_begin.get_or_insert(ts);
            // Queue calls ring on AgentCalled; the queue's own dials would ring twice.
            if c.queue.is_none() {
                self.moment(key, Moment::Ring, out);
            }
        }
    }

    fn on_dial_end(&mut self, m: &Message, ts: Micros, out: &mut Vec<Output>) {
        let caller = self.channel(m, &PLAIN, ts);
        let dest = self.channel(m, &DEST, ts);
        let status = field(m, "DialStatus").unwrap_or_default().to_string();
        let Some(key) = caller else {
            // An Originate's dial has no caller: it rings the call's first channel.
            if let Some(k) = dest {
                let first = self.calls.get(&k).and_then(|c| c.channels.first().cloned());
                if first.as_deref() == field(m, "DestUniqueid") && !status.is_empty() {
                    self.call_mut(k).originate_status = Some(status);
                }
            }
            return;
        };
        let key = self.link_dest(key, m, ts).unwrap_or(key);
        if status == "ANSWER" {
            let c = self.call_mut(key);
            if c.awaiting_transfer_answer {
                c.awaiting_transfer_answer = false;
                c.transfer_resumed_at = Some(ts);
            }
        }
        if !self.is_origin(key, m) {
            return;
        }
        let c = self.call_mut(key);
        if !status.is_empty() {
            c.origin_dial_end = Some(status.clone());
        }
        if status == "ANSWER" && c.origin_dial_answer.is_none() {
            c.origin_dial_answer = Some(ts);
            if c.queue.is_none() {
                self.moment(key, Moment::Answer, out);
            }
        }
    }

    fn on_varset(&mut self, m: &Message, ts: Micros) {
        let Some(var) = field(m, "Variable") else {
            return;
        };
        let var = var.trim_start_matches('_');
        let is_route = var.eq_ignore_ascii_case(self.cfg.route_variable.trim_start_matches('_'));
        let is_email = !self.cfg.agent_email_variable.is_empty()
            && var.eq_ignore_ascii_case(self.cfg.agent_email_variable.trim_start_matches('_'));
        let is_queue_status = var == "QUEUESTATUS";
        let is_dial_status = var == "DIALSTATUS";
        let is_recording = var == "MIXMONITOR_FILENAME";
        // VarSet is the most frequent event: decide from the name before any other work.
        if !(is_route || is_email || is_queue_status || is_dial_status || is_recording) {
            return;
        }
        let Some(key) = self.channel(m, &PLAIN, ts) else {
            return;
        };
        let Some(value) = text(m, "Value").filter(|v| !v.is_empty()) else {
            return;
        };
        let origin = self.is_origin(key, m);
        let c = self.call_mut(key);
        if is_route {
            c.route = Some(value);
        } else if is_email {
            c.agent_email = Some(value);
        } else if is_queue_status {
            c.queue_status = Some(value);
        } else if is_recording {
            // The first recording of the call is its recording (a transfer may start another).
            c.tags
                .entry(crate::recordings::RECORDING_TAG.to_string())
                .or_insert(value);
        } else if origin {
            c.origin_dial_status = Some(value);
        }
    }

    fn on_agent_connect(&mut self, m: &Message, ts: Micros, out: &mut Vec<Output>) {
        let Some(key) = self.channel(m, &PLAIN, ts) else {
            return;
        };
        let key = self.link_dest(key, m, ts).unwrap_or(key);
        let member = text(m, "MemberName");
        let interface = text(m, "Interface");
        if let (Some(q), Some(i)) = (text(m, "Queue"), interface.clone()) {
            self.queue_members.insert((q, i), key);
        }
        let c = self.call_mut(key);
        if c.connected_at.is_some() {
            return;
        }
        c.connected_at = Some(ts);
        c.agent = member;
        c.agent_interface = interface;
        c.hold_seconds = number(m, "HoldTime");
        c.ring_seconds = number(m, "RingTime");
        if let Some(q) = text(m, "Queue") {
            c.queue = Some(q);
        }
        self.moment(key, Moment::Answer, out);
    }

    fn on_agent_complete(&mut self, m: &Message, ts: Micros) {
        let key = match self.channel(m, &PLAIN, ts) {
            Some(k) => Some(k),
            None => match (text(m, "Queue"), text(m, "Interface")) {
                (Some(q), Some(i)) => self.queue_members.get(&(q, i)).copied(),
                _ => None,
            },
        };
        let Some(key) = key else { return };
        if !self.calls.contains_key(&key) {
            return;
        }
        let c = self.call_mut(key);
        if c.agent_talk.is_none() {
            c.agent_talk = number(m, "TalkTime");
            c.agent_reason = text(m, "Reason");
        }
    }

    fn on_bridge_enter(&mut self, m: &Message, ts: Micros) {
        let Some(key) = self.channel(m, &PLAIN, ts) else {
            return;
        };
        let (Some(bridge), Some(uid)) = (lossy(m, "BridgeUniqueid"), text(m, "Uniqueid")) else {
            return;
        };
        if let Some(swap) = lossy(m, "SwapUniqueid") {
            self.union_channels(&uid, &swap);
        }
        // Taken out while the channels are joined (joining never touches bridges).
        let (bridge, mut members) = self
            .bridges
            .remove_entry(&*bridge)
            .unwrap_or_else(|| (bridge.into_owned(), Vec::new()));
        for other in &members {
            self.union_channels(&uid, other);
        }
        members.push(uid);
        self.bridges.insert(bridge, members);
        let _ = key;
    }

    fn on_transfer(&mut self, event: &str, m: &Message, ts: Micros) {
        let mut keys = Vec::new();
        for snap in &TRANSFER_SNAPS {
            if let Some(k) = self.channel(m, snap, ts) {
                keys.push(k);
            }
        }
        let Some(&first) = keys.first() else { return };
        let Some(anchor) = self
            .calls
            .get(&first)
            .and_then(|c| c.channels.first().cloned())
        else {
            return;
        };
        for snap in &TRANSFER_SNAPS {
            if let Some(uid) = lossy(m, snap.uniqueid) {
                self.union_channels(&anchor, &uid);
            }
        }
        let Some(key) = self.channels.get(&anchor).map(|c| c.call) else {
            return;
        };
        let target = [
            "Extension",
            "TransferTargetExten",
            "TransferTargetCallerIDNum",
            "SecondTransfererConnectedLineNum",
        ]
        .into_iter()
        .find_map(|h| text(m, h).filter(|v| known(v)));
        let kind = if event == "BlindTransfer" {
            "blind"
        } else {
            "attended"
        };
        let c = self.call_mut(key);
        if kind == "blind" {
            c.awaiting_transfer_answer = true;
        } else {
            c.transfer_resumed_at = Some(ts);
        }
        self.call_mut(key).transfers.push(Transfer {
            kind,
            target,
            at: ts,
        });
    }

    fn on_user_event(&mut self, m: &Message, ts: Micros) {
        let Some(key) = self.channel(m, &PLAIN, ts) else {
            return;
        };
        let name = text(m, "UserEvent").unwrap_or_default();
        if name.eq_ignore_ascii_case("OutboundRoute") {
            if let Some(r) = text(m, "Route") {
                self.call_mut(key).route = Some(r);
            }
        }
    }

    fn on_fully_booted(&mut self, m: &Message) {
        // A PBX that booted after a call started cannot still carry it.
        let Some(uptime) = number(m, "Uptime") else {
            return;
        };
        let boot = Micros(self.now.0 - i64::from(uptime) * 1_000_000);
        let stale: Vec<CallKey> = self
            .calls
            .iter()
            .filter(|(_, c)| c.live > 0 && c.started_at < boot)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            self.end_call(k, self.now);
        }
    }

    /// The PBX is shutting down: it hangs every channel up first, so calls that ended in the
    /// last grace period ended because of the shutdown, not normally.
    fn end_everything(&mut self, ts: Micros) {
        let grace = self.grace();
        let keys: Vec<CallKey> = self
            .calls
            .iter()
            .filter(|(_, c)| c.live > 0 || c.all_ended_at.is_some_and(|e| ts.0 - e.0 <= grace))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            let live = self.calls.get(&k).is_some_and(|c| c.live > 0);
            if live {
                self.end_call(k, ts);
            } else {
                self.call_mut(k).incomplete = true;
            }
        }
    }

    /// Ends a call whose channels will never report (PBX gone): incomplete, ended now.
    fn end_call(&mut self, key: CallKey, ts: Micros) {
        let c = self.call_mut(key);
        c.incomplete = true;
        c.live = 0;
        c.all_ended_at = Some(ts);
        let uids = c.channels.clone();
        for u in uids {
            if let Some(ch) = self.channels.get_mut(&u) {
                ch.hung_up.get_or_insert(ts);
            }
        }
    }

    // ---- grouping ----------------------------------------------------------------------

    /// Links the `Dest*` channel of an event to the call of its caller channel.
    fn link_dest(&mut self, key: CallKey, m: &Message, ts: Micros) -> Option<CallKey> {
        let dest = lossy(m, "DestUniqueid")?;
        if !self.channels.contains_key(&*dest) {
            self.channel(m, &DEST, ts)?;
        }
        let first = self.calls.get(&key)?.channels.first()?.clone();
        self.union_channels(&first, &dest);
        // The union may have moved this call into an older one.
        self.channels.get(&first).map(|c| c.call)
    }

    /// Puts two channels' calls together: the younger call's channels move to the older one.
    fn union_channels(&mut self, a: &str, b: &str) {
        let (Some(ka), Some(kb)) = (
            self.channels.get(a).map(|c| c.call),
            self.channels.get(b).map(|c| c.call),
        ) else {
            return;
        };
        if ka == kb {
            return;
        }
        let (Some(ca), Some(cb)) = (self.calls.get(&ka), self.calls.get(&kb)) else {
            return;
        };
        let (keep, gone) = if (ca.started_at, ka) <= (cb.started_at, kb) {
            (ka, kb)
        } else {
            (kb, ka)
        };
        let Some(old) = self.calls.remove(&gone) else {
            return;
        };
        for u in &old.channels {
            if let Some(ch) = self.channels.get_mut(u) {
                ch.call = keep;
            }
        }
        self.by_linkedid.insert(old.linkedid.clone(), keep);
        for v in self.queue_members.values_mut() {
            if *v == gone {
                *v = keep;
            }
        }
        let Some(c) = self.calls.get_mut(&keep) else {
            return;
        };
        c.channels.extend(old.channels);
        c.live += old.live;
        c.all_ended_at = if c.live == 0 {
            c.all_ended_at.max(old.all_ended_at)
        } else {
            None
        };
        c.last_event = c.last_event.max(old.last_event);
        merge_opt(&mut c.queue, old.queue);
        merge_opt(&mut c.queue_status, old.queue_status);
        merge_opt(&mut c.route, old.route);
        merge_opt(&mut c.agent_email, old.agent_email);
        if c.connected_at.is_none() && old.connected_at.is_some() {
            c.connected_at = old.connected_at;
            c.agent = old.agent;
            c.agent_interface = old.agent_interface;
            c.hold_seconds = old.hold_seconds;
            c.ring_seconds = old.ring_seconds;
        }
        merge_opt(&mut c.agent_talk, old.agent_talk);
        merge_opt(&mut c.agent_reason, old.agent_reason);
        c.trunk_leg |= old.trunk_leg;
        c.incomplete |= old.incomplete;
        c.transfers.extend(old.transfers);
        c.tags.extend(old.tags);
    }

    // ---- helpers -----------------------------------------------------------------------

    fn call_mut(&mut self, key: CallKey) -> &mut CallState {
        self.calls.entry(key).or_default()
    }

    fn is_trunk(&self, context: &str, name: &str) -> bool {
        self.cfg.trunk_contexts.iter().any(|c| c == context)
            || self
                .cfg
                .trunk_channels
                .iter()
                .any(|p| !p.is_empty() && name.starts_with(p.as_str()))
    }

    /// Whether the event's channel is the call's first channel or that channel's Local partner
    /// (the half that runs the dialplan and dials, in Local-channel set-ups).
    fn is_origin(&self, key: CallKey, m: &Message) -> bool {
        let Some(uid) = lossy(m, "Uniqueid") else {
            return false;
        };
        self.calls.get(&key).is_some_and(|c| {
            c.channels.first().map(String::as_str) == Some(&*uid) || is_origin_partner(c, &uid)
        }) && self.channels.contains_key(&*uid)
    }

    fn moment(&mut self, key: CallKey, moment: Moment, out: &mut Vec<Output>) {
        if !self.cfg.emit_moments {
            return;
        }
        if let Some(call) = self.build(key) {
            out.push(Output::Moment(moment, Box::new(call)));
        }
    }

    fn finalize(&mut self, key: CallKey, out: &mut Vec<Output>) {
        let built = self.build(key);
        if let Some(c) = self.calls.remove(&key) {
            for u in &c.channels {
                if let Some(ch) = self.channels.remove(u) {
                    if ch.local {
                        if let Some(base) = local_base(&ch.name) {
                            if self.local_names.get(base) == Some(u) {
                                self.local_names.remove(base);
                            }
                        }
                    }
                }
            }
            if self.by_linkedid.get(&c.linkedid) == Some(&key) {
                self.by_linkedid.remove(&c.linkedid);
            }
            self.queue_members.retain(|_, v| *v != key);
        }
        if let Some(call) = built {
            out.push(Output::Finished(Box::new(call)));
        }
    }

    /// The call as known now.
    fn build(&self, key: CallKey) -> Option<Call> {
        let c = self.calls.get(&key)?;
        let first = c.channels.first()?;
        let first_chan = self.channels.get(first)?;
        let inbound = self.is_trunk(&c.first_context, &c.first_name);
        let direction = if inbound {
            Direction::Inbound
        } else if c.route.is_some() || c.trunk_leg {
            Direction::Outbound
        } else {
            Direction::Internal
        };
        let status = self.status(c, direction);
        let answered_at = if direction == Direction::Inbound || c.queue.is_some() {
            c.connected_at.or(c.origin_dial_answer)
        } else {
            c.origin_dial_answer.or(c.connected_at)
        };
        let answered_at = if status == Status::Answered {
            answered_at
        } else {
            None
        };
        let ended_at = first_chan
            .hung_up
            .or(c.all_ended_at)
            .unwrap_or(c.last_event);
        let talk_seconds = match (answered_at, c.agent_talk, c.transfer_resumed_at) {
            (Some(_), Some(t), _) if c.transfers.is_empty() => t,
            // After a transfer: the first agent's part, then the target's from when it took
            // the caller (its answer, or the attended transfer's completion) to the end.
            (Some(_), Some(t), Some(resumed)) => {
                t + ended_at.seconds_since(resumed).round().max(0.0) as u32
            }
            (Some(a), _, _) => ended_at.seconds_since(a).round().max(0.0) as u32,
            _ => 0,
        };
        let ring_seconds = match direction {
            Direction::Inbound => c.ring_seconds,
            _ => match (answered_at, c.origin_dial_begin) {
                (Some(a), Some(b)) => Some(a.seconds_since(b).round().max(0.0) as u32),
                _ => None,
            },
        };
        let (agent, agent_extension) = match direction {
            Direction::Inbound => (
                c.agent.clone(),
                c.agent_interface.as_deref().and_then(interface_extension),
            ),
            _ => (c.caller_name.clone().or(c.caller.clone()), c.caller.clone()),
        };
        let agent_email = c
            .agent_email
            .clone()
            .or_else(|| self.agent_email(&agent, &agent_extension, c));
        let hangup_by = self.hangup_by(c, direction, status);
        let channels = c
            .channels
            .iter()
            .filter_map(|u| {
                self.channels.get(u).map(|ch| Leg {
                    uniqueid: u.clone(),
                    channel: ch.name.clone(),
                    hangup_cause: ch.cause,
                })
            })
            .collect();
        let linkedid = LinkedId(c.linkedid.clone());
        Some(Call {
            linkedid,
            direction,
            caller: c.caller.clone(),
            caller_name: c.caller_name.clone(),
            callee: c.callee.clone(),
            queue: c.queue.clone(),
            agent,
            agent_extension,
            agent_email,
            outbound_route: if direction == Direction::Outbound {
                c.route.clone()
            } else {
                None
            },
            status,
            started_at: c.started_at,
            answered_at,
            ended_at,
            ring_seconds,
            talk_seconds,
            hold_seconds: c.hold_seconds,
            hangup_by,
            transfers: c.transfers.clone(),
            tags: c.tags.clone(),
            incomplete: c.incomplete,
            channels,
        })
    }

    fn status(&self, c: &CallState, direction: Direction) -> Status {
        if direction == Direction::Inbound || c.queue.is_some() {
            if c.connected_at.is_some() {
                return Status::Answered;
            }
            if c.queue.is_some() {
                return match c.queue_status.as_deref() {
                    Some(
                        "TIMEOUT" | "FULL" | "JOINEMPTY" | "LEAVEEMPTY" | "JOINUNAVAIL"
                        | "LEAVEUNAVAIL",
                    ) => Status::Timeout,
                    _ => Status::Abandoned,
                };
            }
        }
        // The dialplan's DIALSTATUS is the verdict; without it (no `dialplan` event class),
        // an answered dial of the origin, else its last DialEnd, else the Originate's.
        // A dial of the origin that was answered makes the call answered, whatever later
        // dials (a transfer that rang out) reported.
        if let Some(s) = c
            .origin_dial_status
            .as_deref()
            .and_then(Status::from_dial_status)
        {
            return s;
        }
        if c.origin_dial_answer.is_some() {
            return Status::Answered;
        }
        let verdict = [&c.origin_dial_end, &c.originate_status]
            .into_iter()
            .find_map(|s| s.as_deref().and_then(Status::from_dial_status));
        if let Some(s) = verdict {
            return s;
        }
        match direction {
            Direction::Inbound => Status::Abandoned,
            // The calling side hung up before anything answered.
            _ => Status::Cancelled,
        }
    }

    fn hangup_by(&self, c: &CallState, direction: Direction, status: Status) -> Option<HangupBy> {
        if status != Status::Answered {
            return None;
        }
        if direction == Direction::Inbound {
            return match c.agent_reason.as_deref() {
                Some("agent") => Some(HangupBy::Agent),
                Some("caller") => Some(HangupBy::Caller),
                Some("transfer") => Some(HangupBy::Transfer),
                _ => None,
            };
        }
        c.first_hangup_request_origin.map(|origin| {
            if origin {
                HangupBy::Agent
            } else {
                HangupBy::Callee
            }
        })
    }

    fn agent_email(
        &self,
        agent: &Option<String>,
        ext: &Option<String>,
        c: &CallState,
    ) -> Option<String> {
        let agents = &self.cfg.agents;
        [
            agent.as_deref(),
            ext.as_deref(),
            c.agent_interface.as_deref(),
        ]
        .into_iter()
        .flatten()
        .find_map(|k| agents.get(k).cloned())
    }
}

fn is_origin_partner(c: &CallState, uid: &str) -> bool {
    // In Local-channel set-ups the first channel (;1) is a device and its ;2 partner (the
    // next channel, same name base) runs the dialplan.
    match (c.channels.first(), c.channels.get(1)) {
        (Some(_), Some(second)) if second == uid => {
            let base = local_base(&c.first_name);
            base.is_some()
        }
        _ => false,
    }
}

fn merge_opt<T>(into: &mut Option<T>, from: Option<T>) {
    if into.is_none() {
        *into = from;
    }
}

/// `Local/x@y-0000001a;1` → `Local/x@y-0000001a`.
fn local_base(name: &str) -> Option<&str> {
    name.strip_suffix(";1").or_else(|| name.strip_suffix(";2"))
}

/// `SIP/1002`, `PJSIP/1002`, `Local/1002@agents/n` → `1002`.
fn interface_extension(interface: &str) -> Option<String> {
    let rest = interface.split_once('/')?.1;
    let ext = rest.split(['@', '/', '-']).next()?;
    (!ext.is_empty()).then(|| ext.to_string())
}

fn known(v: &str) -> bool {
    !v.is_empty() && v != "<unknown>" && v != "unknown"
}

/// A header as text, borrowed; non-UTF-8 values (which ids and states never are) give None.
fn field<'m>(m: &'m Message, name: &str) -> Option<&'m str> {
    m.get(name).and_then(|v| std::str::from_utf8(v).ok())
}

fn text(m: &Message, name: &str) -> Option<String> {
    lossy(m, name).map(Cow::into_owned)
}

/// A field as text, borrowed from the message unless it has to be repaired (non-UTF-8): for
/// lookups, which need no copy.
fn lossy<'m>(m: &'m Message, name: &str) -> Option<Cow<'m, str>> {
    // `from_utf8` first: its ASCII fast path is much cheaper than the lossy decoder's.
    m.get(name).map(|v| match std::str::from_utf8(v) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(v),
    })
}

fn number(m: &Message, name: &str) -> Option<u32> {
    m.get(name)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok())
}
