//! Events in, calls out: a pure state machine (no I/O, no clock of its own).
//!
//! Channels are grouped into calls by a union of every relation the events prove: a shared
//! Linkedid, a Dial (caller ↔ destination), the two halves of a Local channel, a queue caller
//! and its member leg, a shared bridge, a transfer. A call is finished when all of its channels
//! have hung up and a grace period has passed in stream time (late `AgentComplete` and `Cdr`
//! events belong to it); it is then emitted exactly once.
//!
//! One clock, the PBX's: an event's own `Timestamp:` (or CEL `EventTime`); for an event
//! without one, the estimate the caller passes to [`Tracker::feed`] (live: the stream clock's
//! PBX time), else the last stream time. Never the host's raw clock (the two clocks differ, and
//! a call would be evicted or dated wrongly) and never 0: events before a stream's first known
//! time take that time once it comes. A stream with no clock at all (no `Timestamp`, no CEL)
//! keeps its times unknown, and its calls say so (`unknown: ["started_at", …]`). `FullyBooted`,
//! sent without a `Timestamp` on every login, never moves the clock. Replays of captures with
//! timestamps are therefore deterministic.
//!
//! Continuity ([`resync`]): a dropped session or a restarted bridge is a gap; the login's
//! `CoreShowChannels`/`QueueStatus` answers reconcile what happened in it, and the calls that
//! lived through it record it (`gaps`). The live state ([`state`]) is saved and restored
//! whole, so a restarted bridge carries its calls on.

use std::borrow::Cow;
use std::collections::BTreeMap;

// Keys are channel ids from the PBX: a fast non-cryptographic hash is the right trade.
use rustc_hash::FxHashMap as HashMap;

use crate::ami::Message;
use crate::config::CallsConfig;

use super::model::{
    Call, Direction, Gap, HangupBy, Leg, LinkedId, Micros, Status, Transfer, TransferKind,
};
pub use state::{LiveState, LiveStateError};

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

type CallKey = u64;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Chan {
    call: CallKey,
    name: String,
    local: bool,
    #[serde(with = "state::raw_opt")]
    hung_up: Option<Micros>,
    cause: Option<u16>,
    /// The AMI session (see [`Tracker::session`]) of the channel's latest event.
    #[serde(default)]
    session: u32,
}

/// A field of a call that the events seen could not establish (see [`Call::unknown`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
enum Unknown {
    StartedAt,
    AnsweredAt,
    EndedAt,
    Agent,
    OutboundRoute,
}

impl Unknown {
    fn as_str(self) -> &'static str {
        match self {
            Unknown::StartedAt => "started_at",
            Unknown::AnsweredAt => "answered_at",
            Unknown::EndedAt => "ended_at",
            Unknown::Agent => "agent",
            Unknown::OutboundRoute => "outbound_route",
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct CallState {
    linkedid: String,
    /// Channel uniqueids in creation order; the first is the call's origin.
    channels: Vec<String>,
    live: usize,
    #[serde(with = "state::raw")]
    started_at: Micros,
    #[serde(with = "state::raw")]
    last_event: Micros,
    #[serde(with = "state::raw_opt")]
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
    #[serde(with = "state::raw_opt")]
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
    #[serde(with = "state::raw_opt")]
    origin_dial_answer: Option<Micros>,
    #[serde(with = "state::raw_opt")]
    origin_dial_begin: Option<Micros>,
    route: Option<String>,
    trunk_leg: bool,
    first_hangup_request_origin: Option<bool>,
    #[serde(with = "state::transfers")]
    transfers: Vec<Transfer>,
    tags: BTreeMap<String, String>,
    incomplete: bool,
    fired_hangup: bool,
    /// When the caller was talking again after a transfer.
    #[serde(with = "state::raw_opt")]
    transfer_resumed_at: Option<Micros>,
    /// A blind transfer waits for its target's answer.
    awaiting_transfer_answer: bool,
    /// Fields the events could not establish (events lost in a gap, a cut stream).
    unknown: Vec<Unknown>,
    /// Stretches of the call the bridge did not hear (see [`super::model::Gap`]).
    #[serde(with = "state::gaps")]
    gaps: Vec<Gap>,
    /// The first caller id of the first channel, kept when the PBX later presents another.
    original_caller: Option<String>,
    /// The first channel was rung by an `Originate` (click-to-dial).
    originated: bool,
    /// An originated call's agent: the caller id of the first device (non-Local channel) rung
    /// before the Originate was answered (the agent's phone), not the CLI the dialplan sets.
    originate_agent: Option<String>,
    /// The originated first channel dialled on its own (a click-to-dial reaching its number).
    first_dialled: bool,
    /// The answer time was put inside a gap by the resync; an `AgentComplete`'s `TalkTime`
    /// gives it exactly.
    answer_estimated: bool,
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
    /// PBX time: the last `Timestamp` (or estimate) seen; never the host's clock.
    now: Micros,
    last_flush: Micros,
    peak_live: usize,
    /// PBX time of the last event before the session dropped (or the bridge stopped), until
    /// the next login's resync closes the gap.
    gap_from: Option<Micros>,
    /// Counts session boundaries (a drop, a login). A resync's listing is taken while the new session's events already
    /// flow: a channel heard from in this session is alive whatever the listing says (it may
    /// have been created after the listing was made), so only channels last heard of in an
    /// earlier session can have ended unseen.
    session: u32,
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

mod build;
mod channels;
mod events;
mod group;
mod resync;
mod state;

use events::relevant;

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
            gap_from: None,
            session: 0,
        }
    }

    /// Calls currently tracked (live, or waiting out their grace period).
    pub fn live_calls(&self) -> usize {
        self.calls.len()
    }

    /// The tracker's clock: PBX time of the latest event (or estimate) it was given.
    pub fn now(&self) -> Micros {
        self.now
    }

    /// The most calls tracked at once so far.
    pub fn peak_live_calls(&self) -> usize {
        self.peak_live
    }

    /// Processes one message. `estimate` is the PBX time to give it when it carries no
    /// `Timestamp:` (live: the stream clock's estimate); `Micros(0)` means the last stream time
    /// seen (replay). The host's own clock is never read here.
    pub fn on_message(&mut self, m: &Message, estimate: Micros, out: &mut Vec<Output>) {
        let Some(event) = m.event() else { return };
        // Every event moves stream time on, even those the correlator does not read.
        let stamped = m
            .get("Timestamp")
            .and_then(Micros::parse_epoch)
            .or_else(|| self.event_time(m));
        let ts = match stamped {
            Some(t) => t,
            // `FullyBooted` opens every session without a `Timestamp`: it says nothing of the
            // time, whatever the caller estimates (the estimate may still be the old session's).
            None if estimate.0 > 0 && event != b"FullyBooted" => estimate,
            None => self.now,
        };
        if ts > self.now {
            if self.now.0 == 0 {
                self.first_time(ts);
            }
            self.now = ts;
        }
        // None of these is ever an item of a list action (those are CoreShowChannel,
        // QueueMember ...), so no ActionID check is needed: the client keeps responses and list
        // items to itself anyway.
        if relevant(event) {
            if let Ok(event) = std::str::from_utf8(event) {
                self.apply(event, m, ts, estimate, out);
            }
        }
        if self.now.0 - self.last_flush.0 >= FLUSH_EVERY_MICROS {
            self.flush_due(out);
        }
    }

    /// The stream's first known time: the events before it (a capture that starts without
    /// `Timestamp`s, CEL `EventTime` coming later) happened just before it, not in 1970. Their
    /// calls take it, so the clock's jump from "unknown" to it evicts nothing.
    #[cold]
    fn first_time(&mut self, t: Micros) {
        let fix = |m: &mut Micros| {
            if m.0 == 0 {
                *m = t;
            }
        };
        for c in self.calls.values_mut() {
            fix(&mut c.started_at);
            fix(&mut c.last_event);
            for m in [
                &mut c.all_ended_at,
                &mut c.connected_at,
                &mut c.origin_dial_answer,
                &mut c.origin_dial_begin,
                &mut c.transfer_resumed_at,
            ]
            .into_iter()
            .flatten()
            {
                fix(m);
            }
            for tr in &mut c.transfers {
                fix(&mut tr.at);
            }
        }
        for ch in self.channels.values_mut() {
            if let Some(h) = &mut ch.hung_up {
                fix(h);
            }
        }
        self.last_flush = t;
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
            SourceEvent::Disconnected { .. } => {
                // Live, the estimate is the PBX time of the drop: nothing was lost before it.
                if estimate > self.now && self.gap_from.is_none() {
                    self.gap_from = Some(estimate);
                }
                self.on_disconnect()
            }
            SourceEvent::Resync { items } => {
                if estimate > self.now {
                    self.now = estimate;
                }
                self.reconcile(items, out)
            }
            // The first session of this process: a tracker that already knows calls was
            // restored from a saved state, and what happened since the save is lost.
            SourceEvent::Connected { .. } => {
                self.session = self.session.wrapping_add(1);
                if !self.calls.is_empty() {
                    self.gap_from.get_or_insert(self.now);
                }
            }
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
}

fn is_origin_partner(c: &CallState, uid: &str) -> bool {
    // In Local-channel set-ups the first channel (;1) is a device and its ;2 partner (the
    // next channel, same name base) runs the dialplan. Not for a click-to-dial once its ;1
    // half dials: the ;2 half rang the agent's own phone, and the ;1 half, once the agent
    // answered, dials the number; the agent's answer is not the call's.
    if c.originated && c.first_dialled {
        return false;
    }
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

/// The interface a channel was created on: `SIP/1014-0000001a` → `SIP/1014`,
/// `Local/1014@agents-00000012;1` → `Local/1014@agents`; a queue member's location or a dial
/// string `Local/1014@agents/n` → `Local/1014@agents`. (Asterisk appends `-` and a sequence
/// number of at least 8 hex digits to the interface.)
fn interface_of(name: &str) -> &str {
    let name = local_base(name).unwrap_or(name);
    let name = name.strip_suffix("/n").unwrap_or(name);
    match name.rfind('-') {
        Some(i)
            if i > name.find('/').unwrap_or(0)
                && name.len() - i > 8
                && name[i + 1..].bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            &name[..i]
        }
        _ => name,
    }
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
