//! What a call is, once the events have been put together.

use std::fmt;

use serde::{Serialize, Serializer};

/// A point in time, in microseconds since the Unix epoch (AMI `Timestamp:` precision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(pub i64);

impl Micros {
    /// Parses an AMI `Timestamp:` / CEL `EventTime`-style `<seconds>.<fraction>` value.
    pub fn parse_epoch(text: &[u8]) -> Option<Micros> {
        // Read on every event: one pass of byte arithmetic, no UTF-8 validation, no allocation.
        let text = match text {
            [first, .., last] if *first > b' ' && *last > b' ' => text,
            _ => text.trim_ascii(),
        };
        let (secs, frac) = match text.iter().position(|&b| b == b'.') {
            Some(dot) => (&text[..dot], &text[dot + 1..]),
            None => (text, &text[..0]),
        };
        if secs.is_empty() || secs.len() > 12 {
            return None;
        }
        let mut seconds: i64 = 0;
        for &b in secs {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            seconds = seconds * 10 + i64::from(d);
        }
        // Microseconds: the first six fraction digits, padded with zeros.
        let mut micros: i64 = 0;
        let mut scale = 100_000;
        for &b in frac.iter().take(6) {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            micros += i64::from(d) * scale;
            scale /= 10;
        }
        Some(Micros(seconds * 1_000_000 + micros))
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

/// How a call was transferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferKind {
    Blind,
    Attended,
}

/// One transfer of the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transfer {
    pub kind: TransferKind,
    pub target: Option<String>,
    pub at: Micros,
}

/// A stretch of PBX time in which the bridge heard nothing from the PBX (an AMI session that
/// dropped, a restart of the bridge): whatever happened in it is known only from the resync
/// that followed, so a time that fell in it is known to within `to - from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub from: Micros,
    pub to: Micros,
}

/// A channel the call was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leg {
    pub uniqueid: String,
    pub channel: String,
    pub hangup_cause: Option<u16>,
}

/// A finished call, as the CRM will see it.
#[cfg(test)]
mod tests {
    use super::Micros;

    #[test]
    fn epoch_timestamps() {
        assert_eq!(
            Micros::parse_epoch(b"1795465726.916439"),
            Some(Micros(1_795_465_726_916_439))
        );
        assert_eq!(
            Micros::parse_epoch(b"1795465726.9"),
            Some(Micros(1_795_465_726_900_000))
        );
        assert_eq!(
            Micros::parse_epoch(b" 1795465726 "),
            Some(Micros(1_795_465_726_000_000))
        );
        assert_eq!(
            Micros::parse_epoch(b"1795465726.1234567"),
            Some(Micros(1_795_465_726_123_456))
        );
        for bad in [&b""[..], b"abc", b"12.3x", b"-1.0", b"99999999999999"] {
            assert_eq!(
                Micros::parse_epoch(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

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
    /// The call did not end normally: events were lost (reconnect, PBX restart, cut capture)
    /// and some field could not be established; `unknown` names which.
    pub incomplete: bool,
    /// The fields that could not be established (`"ended_at"`, `"answered_at"`, `"agent"`,
    /// `"started_at"`…); empty for a call seen whole. The times of a stream that carries no
    /// clock at all (no `Timestamp`, no CEL `EventTime`) are named here too.
    pub unknown: Vec<&'static str>,
    /// The stretches of the call during which the bridge heard nothing from the PBX.
    pub gaps: Vec<Gap>,
    /// The caller id first seen on the call's first channel, when the PBX presented another
    /// one afterwards (the dialplan rewrote or masked it); `caller` is the presented one.
    pub original_caller: Option<String>,
    pub channels: Vec<Leg>,
}
