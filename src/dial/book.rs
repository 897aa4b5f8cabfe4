//! The clicks in flight, and what the AMI stream says became of each. Pure: messages and the
//! clock go in, updates come out; unit-tested on the recorded click-to-dial captures.
//!
//! A click is found in the stream three ways, in the order they arrive on Asterisk 22:
//! the `VarSet` of the tagging variable (first on the originated channel `;1`, whose
//! Uniqueid is the call's Linkedid: from then on the click can be hung up), the
//! `OriginateResponse` with the click's ActionID (the agent answered, or why not), then the
//! agent leg's own `DialEnd` (the far end answered, was busy, did not answer) or, when the
//! number was never dialled, its `Hangup` and cause.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::report::ClickErrorCode;
use crate::ami::originate::{OriginateResponse, Reason};
use crate::ami::Message;

/// How a click ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The agent and the far end are talking.
    Connected,
    /// Reported to where the click came from.
    Failed {
        code: ClickErrorCode,
        reason: String,
    },
    /// The agent gave up before the far end answered: nothing to report.
    Cancelled { reason: String },
    /// The PBX never said (timeout, lost session): nothing is reported, nothing retried.
    Unknown { reason: String },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Connected => "connected",
            Outcome::Failed { .. } => "failed",
            Outcome::Cancelled { .. } => "cancelled",
            Outcome::Unknown { .. } => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Sent; the agent's phone rings.
    Queued,
    /// The agent answered; the number is being dialled.
    AgentAnswered,
    /// The far end answered: kept for call control until the channel hangs up.
    Connected,
}

/// One click in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    pub id: String,
    pub agent_email: String,
    pub agent_ext: String,
    pub zohouser: Option<String>,
    pub e164: String,
    /// The Zoho record the click came from (`Contacts/123…`), when given.
    pub record: Option<String>,
    /// The originated channel (`Local/2002@agents-00000026;1`) and its Uniqueid.
    pub channel: Option<String>,
    pub uniqueid: Option<String>,
    pub phase: Phase,
    pub deadline: Instant,
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    AgentAnswered {
        id: String,
        channel: String,
    },
    /// The click as it was when it ended (it has left the book, unless connected).
    Finished {
        click: Box<Click>,
        outcome: Outcome,
    },
}

/// Clicks in flight, bounded.
#[derive(Debug)]
pub struct ClickBook {
    clicks: HashMap<String, Click>,
    variable: String,
    /// Waits after the agent answered (far end ringing).
    far_end_timeout: Duration,
    /// How long a connected click stays for call control.
    connected_ttl: Duration,
    max: usize,
}

/// The book is full: refuse the click rather than forget one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many clicks in flight ({0})")]
pub struct Full(pub usize);

impl ClickBook {
    pub fn new(variable: &str, far_end_timeout: Duration, max: usize) -> ClickBook {
        ClickBook {
            clicks: HashMap::new(),
            variable: variable.trim_start_matches('_').to_string(),
            far_end_timeout,
            connected_ttl: Duration::from_secs(4 * 3600),
            max,
        }
    }

    pub fn len(&self) -> usize {
        self.clicks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clicks.is_empty()
    }

    /// Adds a click about to be sent (`deadline`: when its `OriginateResponse` is overdue).
    pub fn insert(&mut self, click: Click) -> Result<(), Full> {
        if self.clicks.len() >= self.max {
            return Err(Full(self.max));
        }
        self.clicks.insert(click.id.clone(), click);
        Ok(())
    }

    pub fn remove(&mut self, id: &str) -> Option<Click> {
        self.clicks.remove(id)
    }

    pub fn get(&self, id: &str) -> Option<&Click> {
        self.clicks.get(id)
    }

    /// The click a call-control reference names: the click id, or the call's Uniqueid /
    /// Linkedid.
    pub fn find(&self, callref: &str) -> Option<&Click> {
        self.clicks.get(callref).or_else(|| {
            self.clicks
                .values()
                .find(|c| c.uniqueid.as_deref() == Some(callref))
        })
    }

    /// Reads one message of the stream.
    pub fn on_message(&mut self, m: &Message, now: Instant, out: &mut Vec<Update>) {
        if self.clicks.is_empty() {
            return;
        }
        let Some(event) = m.event() else { return };
        match event {
            b"VarSet" => self.on_varset(m),
            b"OriginateResponse" => {
                if let Some(r) = OriginateResponse::parse(m) {
                    self.on_originate_response(r, now, out);
                }
            }
            b"DialEnd" => self.on_dial_end(m, out),
            b"Hangup" => self.on_hangup(m, out),
            _ => {}
        }
    }

    fn by_uniqueid(&mut self, m: &Message) -> Option<&mut Click> {
        let uid = m.get("Uniqueid")?;
        self.clicks
            .values_mut()
            .find(|c| c.uniqueid.as_deref().map(str::as_bytes) == Some(uid))
    }

    fn on_varset(&mut self, m: &Message) {
        let is_ours = m.get_str("Variable").is_some_and(|v| {
            v.trim_start_matches('_')
                .eq_ignore_ascii_case(&self.variable)
        });
        if !is_ours {
            return;
        }
        let Some(value) = m.get_str("Value") else {
            return;
        };
        if let Some(c) = self.clicks.get_mut(value.as_ref()) {
            // The first channel that gets it is the originated one (`;1`); the Local
            // channel's other half inherits it a moment later.
            if c.channel.is_none() {
                c.channel = m.get_str("Channel").map(|s| s.into_owned());
                c.uniqueid = m.get_str("Uniqueid").map(|s| s.into_owned());
            }
        }
    }

    fn on_originate_response(&mut self, r: OriginateResponse, now: Instant, out: &mut Vec<Update>) {
        let Some(c) = self.clicks.get_mut(&r.action_id) else {
            return;
        };
        if c.phase != Phase::Queued {
            return;
        }
        if r.success {
            c.phase = Phase::AgentAnswered;
            c.channel = Some(r.channel.clone());
            if r.uniqueid.is_some() {
                c.uniqueid = r.uniqueid;
            }
            c.deadline = now + self.far_end_timeout;
            out.push(Update::AgentAnswered {
                id: c.id.clone(),
                channel: r.channel,
            });
            return;
        }
        let (code, reason) = match r.reason {
            Reason::NoAnswer => (
                ClickErrorCode::NoAnswer,
                "the agent's phone was not answered",
            ),
            Reason::Busy => (ClickErrorCode::Busy, "the agent's phone is busy"),
            Reason::HungUp => (
                ClickErrorCode::Rejected,
                "the agent's phone rejected the call",
            ),
            Reason::Congestion => (
                ClickErrorCode::NotAvailable,
                "congestion on the way to the agent's phone",
            ),
            Reason::Unreachable => (
                ClickErrorCode::NotAvailable,
                "the agent's phone could not be reached (no such device or channel unavailable)",
            ),
            Reason::Answered | Reason::Other(_) => (
                ClickErrorCode::NotAvailable,
                "the PBX could not place the call",
            ),
        };
        let Some(click) = self.clicks.remove(&r.action_id) else {
            return;
        };
        out.push(Update::Finished {
            click: Box::new(click),
            outcome: Outcome::Failed {
                code,
                reason: format!(
                    "{reason} (OriginateResponse Failure, Reason {})",
                    reason_code(r.reason)
                ),
            },
        });
    }

    fn on_dial_end(&mut self, m: &Message, out: &mut Vec<Update>) {
        let Some(c) = self.by_uniqueid(m) else { return };
        if c.phase != Phase::AgentAnswered {
            return;
        }
        let status = m
            .get_str("DialStatus")
            .map(|s| s.trim().to_ascii_uppercase())
            .unwrap_or_default();
        let failed = |code, what: &str| Outcome::Failed {
            code,
            reason: format!("{what} (DialStatus {status})"),
        };
        let outcome = match status.as_str() {
            "ANSWER" => Outcome::Connected,
            "BUSY" => failed(ClickErrorCode::Busy, "the number is busy"),
            "NOANSWER" => failed(ClickErrorCode::NoAnswer, "the number did not answer"),
            "CHANUNAVAIL" => failed(ClickErrorCode::NotAvailable, "the number is unreachable"),
            "CONGESTION" => failed(
                ClickErrorCode::NotAvailable,
                "congestion on the outbound route",
            ),
            "CANCEL" | "ABORT" => Outcome::Cancelled {
                reason: format!(
                    "the agent hung up before the number answered (DialStatus {status})"
                ),
            },
            _ => return,
        };
        let click = if outcome == Outcome::Connected {
            c.phase = Phase::Connected;
            c.clone()
        } else {
            let id = c.id.clone();
            match self.clicks.remove(&id) {
                Some(c) => c,
                None => return,
            }
        };
        out.push(Update::Finished {
            click: Box::new(click),
            outcome,
        });
    }

    fn on_hangup(&mut self, m: &Message, out: &mut Vec<Update>) {
        let Some(c) = self.by_uniqueid(m) else { return };
        let id = c.id.clone();
        match c.phase {
            // The agent's phone was never answered: the OriginateResponse says why.
            Phase::Queued => {}
            Phase::Connected => {
                self.clicks.remove(&id);
            }
            // Hung up after the agent answered and before any DialEnd: the number was never
            // dialled (no route, refused by the dialplan) or the agent hung up at once.
            Phase::AgentAnswered => {
                let cause: u32 = m
                    .get_str("Cause")
                    .and_then(|c| c.trim().parse().ok())
                    .unwrap_or(0);
                let code = match cause {
                    17 => Some(ClickErrorCode::Busy),
                    18 | 19 => Some(ClickErrorCode::NoAnswer),
                    21 => Some(ClickErrorCode::Rejected),
                    1 | 3 | 22 | 28 => Some(ClickErrorCode::Invalid),
                    27 | 34 | 38 | 41 | 42 | 44 => Some(ClickErrorCode::NotAvailable),
                    _ => None,
                };
                let outcome = match code {
                    Some(code) => Outcome::Failed {
                        code,
                        reason: format!(
                            "the call ended before the number answered (hangup cause {cause})"
                        ),
                    },
                    None => Outcome::Cancelled {
                        reason: format!(
                            "the call ended before the number was dialled (hangup cause {cause})"
                        ),
                    },
                };
                if let Some(click) = self.clicks.remove(&id) {
                    out.push(Update::Finished {
                        click: Box::new(click),
                        outcome,
                    });
                }
            }
        }
    }

    /// Closes clicks the PBX has said nothing about in time.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Update>) {
        let overdue: Vec<String> = self
            .clicks
            .values()
            .filter(|c| now >= c.deadline)
            .map(|c| c.id.clone())
            .collect();
        for id in overdue {
            let Some(c) = self.clicks.remove(&id) else {
                continue;
            };
            let reason = match c.phase {
                Phase::Queued => "no OriginateResponse from the PBX in time",
                Phase::AgentAnswered => "no result of dialling the number in time",
                // A connected call past its call-control lifetime just leaves.
                Phase::Connected => continue,
            };
            out.push(Update::Finished {
                click: Box::new(c),
                outcome: Outcome::Unknown {
                    reason: reason.into(),
                },
            });
        }
    }

    /// Marks a connected click's deadline as its call-control lifetime.
    pub fn keep_connected(&mut self, id: &str, now: Instant) {
        if let Some(c) = self.clicks.get_mut(id) {
            c.deadline = now + self.connected_ttl;
        }
    }

    /// Every click whose session is gone: its outcome will never be seen.
    pub fn drain_unknown(&mut self, reason: &str, out: &mut Vec<Update>) {
        for (_, c) in self.clicks.drain() {
            if c.phase != Phase::Connected {
                out.push(Update::Finished {
                    click: Box::new(c),
                    outcome: Outcome::Unknown {
                        reason: reason.into(),
                    },
                });
            }
        }
    }
}

fn reason_code(r: Reason) -> u32 {
    match r {
        Reason::Unreachable => 0,
        Reason::HungUp => 1,
        Reason::NoAnswer => 3,
        Reason::Answered => 4,
        Reason::Busy => 5,
        Reason::Congestion => 8,
        Reason::Other(n) => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ami::replay::Replay;
    use crate::ami::SourceEvent;

    fn capture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/fixtures/ami-real/{name}.ami",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The click id the capture's own session sent (from its truth file).
    fn recorded_id(name: &str) -> String {
        let path = format!(
            "{}/fixtures/ami-real/{name}.truth.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let truth: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        truth["calls"][0]["observed"]["ctd_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn truth(name: &str) -> serde_json::Value {
        let path = format!(
            "{}/fixtures/ami-real/{name}.truth.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// Plays a capture into a book holding the recorded click; returns the updates and the
    /// channel the book learnt.
    fn play(name: &str) -> (Vec<Update>, Option<String>) {
        let id = recorded_id(name);
        let now = Instant::now();
        let mut book = ClickBook::new("CTD_ID", Duration::from_secs(300), 100);
        book.insert(Click {
            id: id.clone(),
            agent_email: "a@example.com".into(),
            agent_ext: "2002".into(),
            zohouser: None,
            e164: "+390298765432".into(),
            record: None,
            channel: None,
            uniqueid: None,
            phase: Phase::Queued,
            deadline: now + Duration::from_secs(45),
        })
        .unwrap();
        let mut out = Vec::new();
        let mut channel = None;
        // Through the codec the daemon reads a PBX with (events the tracker ignores skimmed).
        for ev in Replay::new(&capture(name)[..]).with_codec(crate::calls::tracker_codec()) {
            if let SourceEvent::Message(m) = ev.unwrap() {
                book.on_message(&m, now, &mut out);
                if channel.is_none() {
                    channel = book.get(&id).and_then(|c| c.channel.clone());
                }
            }
        }
        (out, channel)
    }

    fn finished(out: &[Update]) -> Vec<Outcome> {
        out.iter()
            .filter_map(|u| match u {
                Update::Finished { outcome, .. } => Some(outcome.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn far_end_busy_after_the_agent_answered() {
        for name in ["ctd-busy", "ctd2-busy"] {
            let t = truth(name);
            assert_eq!(t["calls"][0]["final_status"], "busy");
            let (out, channel) = play(name);
            assert!(matches!(out[0], Update::AgentAnswered { .. }), "{name}");
            assert_eq!(
                channel.as_deref(),
                t["calls"][0]["observed"]["caller_channel"].as_str(),
                "{name}"
            );
            let f = finished(&out);
            assert_eq!(f.len(), 1, "{name}: {out:?}");
            assert!(
                matches!(
                    &f[0],
                    Outcome::Failed {
                        code: ClickErrorCode::Busy,
                        ..
                    }
                ),
                "{name}: {f:?}"
            );
        }
    }

    #[test]
    fn far_end_no_answer() {
        for name in ["ctd-noanswer", "ctd2-noanswer"] {
            assert_eq!(truth(name)["calls"][0]["final_status"], "noanswer");
            let f = finished(&play(name).0);
            assert_eq!(f.len(), 1, "{name}");
            assert!(
                matches!(
                    &f[0],
                    Outcome::Failed {
                        code: ClickErrorCode::NoAnswer,
                        ..
                    }
                ),
                "{name}: {f:?}"
            );
        }
    }

    #[test]
    fn agent_never_answers() {
        for name in ["ctd-agent-noanswer", "ctd2-agent-noanswer"] {
            let t = truth(name);
            assert_eq!(t["calls"][0]["observed"]["agent_answered"], false);
            let (out, channel) = play(name);
            // Known before the OriginateResponse, from the VarSet: hang-up works while ringing.
            assert_eq!(
                channel.as_deref(),
                t["calls"][0]["observed"]["caller_channel"].as_str()
            );
            let f = finished(&out);
            assert_eq!(f.len(), 1, "{name}: {out:?}");
            match &f[0] {
                Outcome::Failed { code, reason } => {
                    assert_eq!(*code, ClickErrorCode::NoAnswer);
                    assert!(reason.contains("Reason 3"), "{reason}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn answered_calls_connect_and_leave_on_hangup() {
        for name in ["ctd-answered-agent-hangup", "ctd2-answered-callee-hangup"] {
            assert_eq!(truth(name)["calls"][0]["final_status"], "answered");
            let f = finished(&play(name).0);
            assert_eq!(f, vec![Outcome::Connected], "{name}");
        }
    }

    #[test]
    fn the_daemon_never_skims_what_the_book_reads() {
        for event in ["VarSet", "OriginateResponse", "DialEnd", "Hangup"] {
            assert!(!crate::calls::skimmable(event.as_bytes()), "{event}");
        }
    }

    #[test]
    fn overdue_clicks_are_closed_as_unknown_and_the_book_is_bounded() {
        let now = Instant::now();
        let mut book = ClickBook::new("CTD_ID", Duration::from_secs(300), 1);
        let click = |id: &str| Click {
            id: id.into(),
            agent_email: "a@example.com".into(),
            agent_ext: "2002".into(),
            zohouser: None,
            e164: "+390298765432".into(),
            record: None,
            channel: None,
            uniqueid: None,
            phase: Phase::Queued,
            deadline: now + Duration::from_secs(45),
        };
        book.insert(click("c2d-1")).unwrap();
        assert_eq!(book.insert(click("c2d-2")), Err(Full(1)));
        let mut out = Vec::new();
        book.tick(now + Duration::from_secs(44), &mut out);
        assert!(out.is_empty());
        book.tick(now + Duration::from_secs(45), &mut out);
        assert!(matches!(
            &out[0],
            Update::Finished {
                outcome: Outcome::Unknown { .. },
                ..
            }
        ));
        assert!(book.is_empty());
    }
}
