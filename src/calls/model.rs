//! What a call is, once the events have been put together.

use std::fmt;

use serde::{Serialize, Serializer};

/// A point in time, in microseconds since the Unix epoch (AMI `Timestamp:` precision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(pub i64);

impl Micros {
    /// Parses an AMI `Timestamp:` / CEL `EventTime`-style `<seconds>.<fraction>` value.
    pub fn parse_epoch(text: &[u8]) -> Option<Micros> {
        let text = std::str::from_utf8(text).ok()?.trim();
        let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
        let secs: i64 = secs.parse().ok()?;
        let mut micros = 0i64;
        for (i, c) in frac.chars().take(6).enumerate() {
            micros += i64::from(c.to_digit(10)?) * 10i64.pow(5 - i as u32);
        }
        Some(Micros(secs * 1_000_000 + micros))
    }

    pub fn seconds_since(self, earlier: Micros) -> f64 {
        (self.0 - earlier.0) as f64 / 1e6
    }

    pub fn to_timestamp(self) -> Option<jiff::Timestamp> {
        jiff::Timestamp::from_microsecond(self.0).ok()
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_timestamp() {
            Some(t) => write!(f, "{}", t.round(jiff::Unit::Millisecond).unwrap_or(t)),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for Micros {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The call's id towards the CRM: the Linkedid of its oldest channel.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct LinkedId(pub String);

impl fmt::Display for LinkedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
    Internal,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Internal => "internal",
        }
    }
}

/// The final status, in the vocabulary of Asterisk's DialStatus plus the queue outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// An agent or the far end answered.
    Answered,
    /// The caller hung up while queued or ringing.
    Abandoned,
    /// Queue timeout, empty or unavailable queue: nobody answered before the caller was sent on.
    Timeout,
    Busy,
    NoAnswer,
    /// The calling side gave up before an outbound call was answered.
    Cancelled,
    Congestion,
    /// Channel unavailable and other failures.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Answered => "answered",
            Status::Abandoned => "abandoned",
            Status::Timeout => "timeout",
            Status::Busy => "busy",
            Status::NoAnswer => "noanswer",
            Status::Cancelled => "cancelled",
            Status::Congestion => "congestion",
            Status::Failed => "failed",
        }
    }

    /// Maps a `DialStatus` / `DIALSTATUS` value.
    pub fn from_dial_status(v: &str) -> Option<Status> {
        Some(match v {
            "ANSWER" => Status::Answered,
            "BUSY" => Status::Busy,
            "NOANSWER" => Status::NoAnswer,
            "CANCEL" => Status::Cancelled,
            "CONGESTION" => Status::Congestion,
            "CHANUNAVAIL" | "ABORT" => Status::Failed,
            _ => return None,
        })
    }
}

/// Who ended an answered call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HangupBy {
    Agent,
    Caller,
    Callee,
    Transfer,
}

/// One transfer of the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transfer {
    pub kind: &'static str,
    pub target: Option<String>,
    pub at: Micros,
}

/// A channel the call was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leg {
    pub uniqueid: String,
    pub channel: String,
    pub hangup_cause: Option<u16>,
}

/// A finished call, as the CRM will see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Call {
    pub linkedid: LinkedId,
    pub direction: Direction,
    pub caller: Option<String>,
    pub caller_name: Option<String>,
    pub callee: Option<String>,
    pub queue: Option<String>,
    pub agent: Option<String>,
    pub agent_extension: Option<String>,
    pub agent_email: Option<String>,
    pub outbound_route: Option<String>,
    pub status: Status,
    pub started_at: Micros,
    pub answered_at: Option<Micros>,
    pub ended_at: Micros,
    pub ring_seconds: Option<u32>,
    pub talk_seconds: u32,
    pub hold_seconds: Option<u32>,
    pub hangup_by: Option<HangupBy>,
    pub transfers: Vec<Transfer>,
    pub tags: std::collections::BTreeMap<String, String>,
    /// The call did not end normally: events were lost (reconnect, PBX restart, cut capture).
    pub incomplete: bool,
    pub channels: Vec<Leg>,
}
