//! What each agent's screen shows for each live call: a pure state machine (no I/O, no
//! clock), fed with per-agent [`Signal`]s and answering with the [`Notice`]s to send.
//!
//! Why here and not in the call tracker: the tracker knows calls; this knows screens. A
//! ringall queue rings six phones for one call, a linear queue rings them in turn, a transfer
//! rings a new phone after the first agent has left: each phone's pop-up has a life of its
//! own (ringing → answered → ended, or ringing → closed when a colleague took the call or the
//! ring moved on, or missed when nobody took it), and Zoho must hear about each transition
//! exactly once, in order. The rules:
//! - a phone that rings gets `ringing` once while it rings (again if it rings again later);
//! - the phone that answers gets `answered`; every other phone still ringing is closed
//!   (no missed call for them: a colleague took it);
//! - a phone whose ring stops without an answer is closed; if the call ends with nobody having
//!   answered, every phone it rang gets one `missed`;
//! - a transfer rings the new phone with a new id and `transferred_from` the old one; the
//!   agent who transferred gets `ended` for their part;
//! - the agent who had the call at the end gets `ended` with start and duration;
//! - an outbound call gets one `dialed` notice at its end, with the far end's outcome.

use std::collections::HashMap;

use crate::calls::{Call, Direction, Micros, Status};

/// An agent as seen on a ringing phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRef {
    /// The extension (`1001` of `SIP/1001` or `Local/1001@agents/n`): the screen's key.
    pub ext: String,
    /// The agent's e-mail (from `[agents]`): who the pop-up is for.
    pub email: String,
}

/// What happened to one agent's phone in one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    Ring {
        call: String,
        agent: AgentRef,
        /// Known from the tracker's moment: opens a screen; `None` only acts on an open one.
        direction: Option<Direction>,
        customer: Option<String>,
        customer_name: Option<String>,
        queue: Option<String>,
        at: Micros,
    },
    RingStop {
        call: String,
        ext: String,
        at: Micros,
    },
    Answer {
        call: String,
        agent: AgentRef,
        at: Micros,
    },
    End(Box<Call>),
}

/// The state a notice moves an agent's pop-up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Ringing,
    Answered,
    /// The pop-up goes away without a call log: a colleague took the call, or the ring moved on.
    Closed,
    Missed,
    /// The agent's part of an answered call is over (hang-up or transfer).
    Ended,
    /// An outbound call's outcome (`ended` when the far end answered).
    Dialed(DialState),
}

impl Kind {
    pub fn is_end(self) -> bool {
        matches!(self, Kind::Missed | Kind::Ended | Kind::Dialed(_))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ringing => "ringing",
            Kind::Answered => "answered",
            Kind::Closed => "closed",
            Kind::Missed => "missed",
            Kind::Ended => "ended",
            Kind::Dialed(d) => d.as_str(),
        }
    }
}

/// PhoneBridge's outbound outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DialState {
    Ended,
    Busy,
    NoAnswer,
    Rejected,
    NotAvailable,
    Invalid,
}

impl DialState {
    pub fn as_str(self) -> &'static str {
        match self {
            DialState::Ended => "ended",
            DialState::Busy => "busy",
            DialState::NoAnswer => "noanswer",
            DialState::Rejected => "rejected",
            DialState::NotAvailable => "notavailable",
            DialState::Invalid => "invalid",
        }
    }

    /// The far end's outcome from the call's final status.
    pub fn of(status: Status) -> DialState {
        match status {
            Status::Answered => DialState::Ended,
            Status::Busy => DialState::Busy,
            Status::NoAnswer | Status::Cancelled | Status::Timeout | Status::Abandoned => {
                DialState::NoAnswer
            }
            Status::Congestion | Status::Failed => DialState::NotAvailable,
        }
    }
}

/// One notification for one agent's screen.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The call's id (its Linkedid).
    pub call: String,
    /// The id Zoho knows this pop-up by: the call's, or a new one after a transfer.
    pub id: String,
    /// The id of the call this ring was transferred from.
    pub transferred_from: Option<String>,
    pub agent: AgentRef,
    pub kind: Kind,
    pub direction: Direction,
    pub customer: Option<String>,
    pub customer_name: Option<String>,
    pub queue: Option<String>,
    /// When the customer's call (or the agent's part of it) started.
    pub start: Option<Micros>,
    /// Seconds talked (ended) or waited (missed).
    pub duration: Option<u32>,
    /// PBX time of the moment.
    pub at: Micros,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phone {
    Ringing,
    /// Rang and stopped without an answer: missed if nobody takes the call.
    Rang,
    Answered,
    /// Closed because a colleague answered, or done with its part: nothing more to send.
    Done,
}

#[derive(Debug)]
struct AgentScreen {
    agent: AgentRef,
    phone: Phone,
    id: String,
    transferred_from: Option<String>,
    answered_at: Option<Micros>,
}

#[derive(Debug)]
struct Screen {
    direction: Direction,
    customer: Option<String>,
    customer_name: Option<String>,
    queue: Option<String>,
    started: Micros,
    agents: Vec<AgentScreen>,
    /// The extension that has the call now.
    holder: Option<String>,
    transfers: u32,
}

/// Every open call's screens. Bounded: calls that never end are evicted by age.
#[derive(Debug, Default)]
pub struct Screens {
    calls: HashMap<String, Screen>,
}

/// Calls open longer than this (stream time) are forgotten: the tracker has evicted them too.
const MAX_AGE_MICROS: i64 = 12 * 3600 * 1_000_000;
/// At most this many open calls; the oldest goes first.
const MAX_CALLS: usize = 100_000;

impl Screens {
    pub fn open_calls(&self) -> usize {
        self.calls.len()
    }

    /// Applies one signal and appends the notices it causes.
    pub fn apply(&mut self, signal: Signal, out: &mut Vec<Notice>) {
        match signal {
            Signal::Ring {
                call,
                agent,
                direction,
                customer,
                customer_name,
                queue,
                at,
            } => {
                if !self.calls.contains_key(&call) {
                    if direction != Some(Direction::Inbound) {
                        return;
                    }
                    self.evict(at);
                    self.calls.insert(
                        call.clone(),
                        Screen {
                            direction: Direction::Inbound,
                            customer,
                            customer_name,
                            queue,
                            started: at,
                            agents: Vec::new(),
                            holder: None,
                            transfers: 0,
                        },
                    );
                }
                let Some(s) = self.calls.get_mut(&call) else {
                    return;
                };
                ring(&call, s, agent, at, out);
            }
            Signal::RingStop { call, ext, at } => {
                let Some(s) = self.calls.get_mut(&call) else {
                    return;
                };
                if let Some(i) = s.agents.iter().position(|a| a.agent.ext == ext) {
                    if s.agents[i].phone == Phone::Ringing {
                        s.agents[i].phone = Phone::Rang;
                        out.push(notice(&call, s, i, Kind::Closed, at));
                    }
                }
            }
            Signal::Answer { call, agent, at } => {
                let Some(s) = self.calls.get_mut(&call) else {
                    return;
                };
                answer(&call, s, agent, at, out);
            }
            Signal::End(c) => self.end(&c, out),
        }
    }

    fn end(&mut self, c: &Call, out: &mut Vec<Notice>) {
        let call = c.linkedid.0.clone();
        let at = c.ended_at;
        if c.direction == Direction::Outbound {
            if let (Some(ext), Some(email)) = (&c.agent_extension, &c.agent_email) {
                let state = DialState::of(c.status);
                out.push(Notice {
                    call: call.clone(),
                    id: call.clone(),
                    transferred_from: None,
                    agent: AgentRef {
                        ext: ext.clone(),
                        email: email.clone(),
                    },
                    kind: Kind::Dialed(state),
                    direction: Direction::Outbound,
                    customer: c.callee.clone(),
                    customer_name: None,
                    queue: None,
                    start: Some(c.started_at),
                    duration: Some(if state == DialState::Ended {
                        c.talk_seconds
                    } else {
                        0
                    }),
                    at,
                });
            }
            return;
        }
        let Some(mut s) = self.calls.remove(&call) else {
            return;
        };
        let taken = s.agents.iter().any(|a| a.answered_at.is_some());
        let waited = (at.0 - s.started.0).max(0) / 1_000_000;
        for i in 0..s.agents.len() {
            let kind = match s.agents[i].phone {
                Phone::Answered => Kind::Ended,
                Phone::Ringing if taken => Kind::Closed,
                Phone::Ringing | Phone::Rang if !taken => Kind::Missed,
                _ => continue,
            };
            let mut n = notice(&call, &s, i, kind, at);
            if kind == Kind::Ended {
                let from = s.agents[i].answered_at.unwrap_or(s.started);
                n.start = Some(from);
                n.duration = Some(((at.0 - from.0).max(0) / 1_000_000) as u32);
            } else if kind == Kind::Missed {
                n.start = Some(s.started);
                n.duration = Some(waited as u32);
            }
            s.agents[i].phone = Phone::Done;
            out.push(n);
        }
    }

    fn evict(&mut self, now: Micros) {
        if self.calls.len() < MAX_CALLS {
            self.calls
                .retain(|_, s| now.0 - s.started.0 < MAX_AGE_MICROS);
            return;
        }
        if let Some(oldest) = self
            .calls
            .iter()
            .min_by_key(|(_, s)| s.started)
            .map(|(k, _)| k.clone())
        {
            self.calls.remove(&oldest);
        }
    }
}

fn notice(call: &str, s: &Screen, i: usize, kind: Kind, at: Micros) -> Notice {
    let a = &s.agents[i];
    Notice {
        call: call.to_string(),
        id: a.id.clone(),
        transferred_from: a.transferred_from.clone(),
        agent: a.agent.clone(),
        kind,
        direction: s.direction,
        customer: s.customer.clone(),
        customer_name: s.customer_name.clone(),
        queue: s.queue.clone(),
        start: None,
        duration: None,
        at,
    }
}

fn ring(call: &str, s: &mut Screen, agent: AgentRef, at: Micros, out: &mut Vec<Notice>) {
    let i = match s.agents.iter().position(|a| a.agent.ext == agent.ext) {
        Some(i) => {
            if matches!(s.agents[i].phone, Phone::Ringing | Phone::Answered) {
                return;
            }
            i
        }
        None => {
            s.agents.push(AgentScreen {
                agent,
                phone: Phone::Rang,
                id: call.to_string(),
                transferred_from: None,
                answered_at: None,
            });
            s.agents.len() - 1
        }
    };
    // A ring after another agent has had the call is a transfer: a new pop-up id that
    // points at the old one, and the transferring agent's part is over.
    let holder = s.holder.clone().filter(|h| *h != s.agents[i].agent.ext);
    if let Some(h) = holder {
        if let Some(j) = s.agents.iter().position(|a| a.agent.ext == h) {
            let from = s.agents[j].id.clone();
            if s.agents[j].phone == Phone::Answered {
                let start = s.agents[j].answered_at.unwrap_or(s.started);
                let mut n = notice(call, s, j, Kind::Ended, at);
                n.start = Some(start);
                n.duration = Some(((at.0 - start.0).max(0) / 1_000_000) as u32);
                out.push(n);
                s.agents[j].phone = Phone::Done;
            }
            s.transfers += 1;
            s.agents[i].id = format!("{call}-t{}", s.transfers);
            s.agents[i].transferred_from = Some(from);
            s.agents[i].answered_at = None;
            s.holder = None;
        }
    }
    s.agents[i].phone = Phone::Ringing;
    out.push(notice(call, s, i, Kind::Ringing, at));
}

fn answer(call: &str, s: &mut Screen, agent: AgentRef, at: Micros, out: &mut Vec<Notice>) {
    let known = s.agents.iter().position(|a| a.agent.ext == agent.ext);
    if known.is_some_and(|i| s.agents[i].phone == Phone::Answered) {
        return;
    }
    // An answer with no ring seen (a capture joined mid-call): pop it up first.
    let i = match known {
        Some(i) if s.agents[i].phone == Phone::Ringing => i,
        _ => {
            ring(call, s, agent.clone(), at, out);
            match s.agents.iter().position(|a| a.agent.ext == agent.ext) {
                Some(i) => i,
                None => return,
            }
        }
    };
    for j in 0..s.agents.len() {
        if j != i && s.agents[j].phone == Phone::Ringing {
            s.agents[j].phone = Phone::Done;
            out.push(notice(call, s, j, Kind::Closed, at));
        }
        // Those who rang earlier and stopped get no missed call: a colleague took it.
        if j != i && s.agents[j].phone == Phone::Rang {
            s.agents[j].phone = Phone::Done;
        }
    }
    s.agents[i].phone = Phone::Answered;
    s.agents[i].answered_at = Some(at);
    s.holder = Some(s.agents[i].agent.ext.clone());
    out.push(notice(call, s, i, Kind::Answered, at));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(ext: &str) -> AgentRef {
        AgentRef {
            ext: ext.into(),
            email: format!("a{ext}@example.com"),
        }
    }

    fn ring(ext: &str, t: i64) -> Signal {
        Signal::Ring {
            call: "c1".into(),
            agent: agent(ext),
            direction: Some(Direction::Inbound),
            customer: Some("+393331588952".into()),
            customer_name: None,
            queue: Some("support".into()),
            at: Micros(t * 1_000_000),
        }
    }

    fn ended(status: Status, t: i64) -> Signal {
        Signal::End(Box::new(Call {
            linkedid: crate::calls::LinkedId("c1".into()),
            direction: Direction::Inbound,
            caller: None,
            caller_name: None,
            callee: None,
            queue: None,
            agent: None,
            agent_extension: None,
            agent_email: None,
            outbound_route: None,
            status,
            started_at: Micros(0),
            answered_at: None,
            ended_at: Micros(t * 1_000_000),
            ring_seconds: None,
            talk_seconds: 0,
            hold_seconds: None,
            hangup_by: None,
            transfers: vec![],
            tags: Default::default(),
            incomplete: false,
            unknown: vec![],
            gaps: vec![],
            original_caller: None,
            channels: vec![],
        }))
    }

    fn run(signals: Vec<Signal>) -> Vec<(String, &'static str, String)> {
        let mut s = Screens::default();
        let mut out = Vec::new();
        for sig in signals {
            s.apply(sig, &mut out);
        }
        assert_eq!(s.open_calls(), 0, "a screen left open");
        out.into_iter()
            .map(|n| (n.agent.ext, n.kind.as_str(), n.id))
            .collect()
    }

    fn v(list: &[(&str, &'static str, &str)]) -> Vec<(String, &'static str, String)> {
        list.iter()
            .map(|(a, k, i)| (a.to_string(), *k, i.to_string()))
            .collect()
    }

    #[test]
    fn ringall_losers_close_without_missed() {
        let got = run(vec![
            ring("1001", 1),
            ring("1002", 1),
            ring("1001", 1), // the queue's DialBegin after AgentCalled: no second pop
            Signal::Answer {
                call: "c1".into(),
                agent: agent("1002"),
                at: Micros(3_000_000),
            },
            Signal::RingStop {
                call: "c1".into(),
                ext: "1001".into(),
                at: Micros(3_000_000),
            },
            ended(Status::Answered, 20),
        ]);
        assert_eq!(
            got,
            v(&[
                ("1001", "ringing", "c1"),
                ("1002", "ringing", "c1"),
                ("1001", "closed", "c1"),
                ("1002", "answered", "c1"),
                ("1002", "ended", "c1"),
            ])
        );
    }

    #[test]
    fn linear_queue_nobody_took_it_is_missed_for_each_phone_rung() {
        let stop = |e: &str| Signal::RingStop {
            call: "c1".into(),
            ext: e.into(),
            at: Micros(9_000_000),
        };
        let got = run(vec![
            ring("1005", 1),
            stop("1005"),
            ring("1006", 8),
            stop("1006"),
            ring("1005", 10),
            stop("1005"),
            ended(Status::Timeout, 20),
        ]);
        assert_eq!(
            got,
            v(&[
                ("1005", "ringing", "c1"),
                ("1005", "closed", "c1"),
                ("1006", "ringing", "c1"),
                ("1006", "closed", "c1"),
                ("1005", "ringing", "c1"),
                ("1005", "closed", "c1"),
                ("1005", "missed", "c1"),
                ("1006", "missed", "c1"),
            ])
        );
    }

    #[test]
    fn transfer_pops_at_the_new_agent_and_ends_the_first() {
        let mut s = Screens::default();
        let mut out = Vec::new();
        for sig in [
            ring("1003", 1),
            Signal::Answer {
                call: "c1".into(),
                agent: agent("1003"),
                at: Micros(2_000_000),
            },
            Signal::Ring {
                call: "c1".into(),
                agent: agent("1005"),
                direction: None,
                customer: None,
                customer_name: None,
                queue: None,
                at: Micros(30_000_000),
            },
            Signal::Answer {
                call: "c1".into(),
                agent: agent("1005"),
                at: Micros(33_000_000),
            },
            ended(Status::Answered, 60),
        ] {
            s.apply(sig, &mut out);
        }
        let kinds: Vec<_> = out
            .iter()
            .map(|n| (n.agent.ext.as_str(), n.kind.as_str(), n.id.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("1003", "ringing", "c1"),
                ("1003", "answered", "c1"),
                ("1003", "ended", "c1"),
                ("1005", "ringing", "c1-t1"),
                ("1005", "answered", "c1-t1"),
                ("1005", "ended", "c1-t1"),
            ]
        );
        assert_eq!(out[3].transferred_from.as_deref(), Some("c1"));
        assert_eq!(out[2].duration, Some(28));
        assert_eq!(out[5].duration, Some(27));
    }

    #[test]
    fn signals_for_unknown_or_outbound_calls_open_nothing() {
        let mut s = Screens::default();
        let mut out = Vec::new();
        s.apply(
            Signal::Ring {
                call: "x".into(),
                agent: agent("1001"),
                direction: Some(Direction::Internal),
                customer: None,
                customer_name: None,
                queue: None,
                at: Micros(0),
            },
            &mut out,
        );
        s.apply(
            Signal::Answer {
                call: "y".into(),
                agent: agent("1001"),
                at: Micros(0),
            },
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(s.open_calls(), 0);
    }
}
