//! Calls as people make them happen, and the truth each one must come out as.
//!
//! A [`CallPlan`] says who calls whom and how everybody behaves (who answers after how many
//! seconds, who hangs up, what the far end does, transfers, recording); the driver turns it
//! into an `Originate` with `LAB_*` variables for `tests/pbx/extensions.conf`. [`CallPlan::expected`]
//! states, from the plan alone and the lab's rules (`fixtures/ami-real/README.md`), what the
//! bridge must report: the truth never comes from the bridge's output.

/// Seconds the `atxfer` feature waits for more digits before dialling (`transferdigittimeout`).
pub const ATXFER_DIGIT_WAIT: f64 = 3.0;

/// What the bridge must report for a call: the plan's truth, never the bridge's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub linkedid: String,
    pub direction: &'static str,
    pub status: &'static str,
    pub caller: String,
    pub callee: String,
    pub queue: Option<String>,
    pub agent: Option<String>,
    pub outbound_route: Option<String>,
}

/// The inbound queues of the lab and their DIDs (`fixtures/ami-real/README.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    /// ringall, 15 s member timeout, Agents 1001-1005.
    Support,
    /// rrmemory, 8 s member timeout, Agents 1005-1008.
    Sales,
    /// ringall, 6 s, Agents 1011-1012 who never answer; the queue times out after 20 s.
    Helpdesk,
    /// linear, 8 s: Agent 1013 always rings first, then Agent 1014.
    Billing,
}

impl Queue {
    pub fn did(self) -> &'static str {
        match self {
            Queue::Support => "0699990001",
            Queue::Sales => "0699990002",
            Queue::Helpdesk => "0699990003",
            Queue::Billing => "0699990004",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Queue::Support => "support",
            Queue::Sales => "sales",
            Queue::Helpdesk => "helpdesk",
            Queue::Billing => "billing",
        }
    }

    /// Seconds from the call's start until member `ext` starts ringing, at the latest: the
    /// welcome prompt (1 s), then for linear/rrmemory queues a full ring of every member tried
    /// before (member timeout + 1 s retry).
    fn latest_ring_start(self, ext: &str) -> f64 {
        let ivr = 2.0;
        match self {
            Queue::Support | Queue::Helpdesk => ivr,
            Queue::Billing if ext == "1014" => ivr + 8.0 + 1.5,
            Queue::Billing => ivr,
            // Round robin with memory: up to three others before this one.
            Queue::Sales => ivr + 3.0 * 9.5,
        }
    }
}

/// Who ends an answered call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HangupBy {
    /// The caller (inbound) or the calling agent (outbound, internal).
    Caller,
    /// The agent who answered (inbound), the far end (outbound), the callee (internal).
    Callee,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferKind {
    Blind,
    Attended,
}

/// A transfer by the agent who answered, `after` seconds into the conversation, to agent `to`,
/// who rings `ring` seconds and talks `talk` seconds (after `consult` seconds of consultation,
/// for an attended one).
#[derive(Clone, Debug)]
pub struct Transfer {
    pub kind: TransferKind,
    pub to: String,
    pub after: f64,
    pub ring: f64,
    pub consult: f64,
    pub talk: f64,
}

/// The far end of an outbound call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pstn {
    /// Rings `ring` s, answers, talks `talk` s (unless the agent hangs up first).
    Answer {
        ring: f64,
        talk: f64,
    },
    Busy,
    Congestion,
    /// Rings until the route's Dial timeout (`dial_timeout` s).
    NoAnswer {
        dial_timeout: u32,
    },
    /// Rejects before answering (cause 21).
    Reject,
}

impl Pstn {
    pub fn answer(ring: f64, talk: f64) -> Pstn {
        Pstn::Answer { ring, talk }
    }
}

/// One call as a person makes it happen.
#[derive(Clone, Debug)]
pub enum CallPlan {
    /// A caller dials a DID: IVR, queue, agents.
    Inbound {
        queue: Queue,
        caller_num: String,
        caller_name: String,
        /// The agent who answers and after how many seconds of ringing; `None`: nobody does.
        answer: Option<(String, f64)>,
        /// Seconds of conversation before `hangup_by` hangs up.
        talk: f64,
        hangup_by: HangupBy,
        /// Unanswered calls: the caller hangs up after this many seconds (`None`: waits as
        /// long as the PBX lets them).
        patience: Option<f64>,
        transfer: Option<Transfer>,
        record: bool,
    },
    /// Agent `agent` (20xx) dials `number` through the outbound routes.
    Outbound {
        agent: String,
        number: String,
        pstn: Pstn,
        /// Answered calls: who hangs up after the far end's talk time.
        hangup_by: HangupBy,
        /// The agent gives up after this many seconds of ringing (a cancelled call).
        give_up: Option<f64>,
    },
    /// Agent `agent` (20xx) calls agent `target`, who answers after `ring` s.
    Internal {
        agent: String,
        target: String,
        ring: f64,
        talk: f64,
        hangup_by: HangupBy,
    },
}

/// How a plan becomes an Originate.
pub(super) struct Originate {
    pub(super) channel: String,
    pub(super) caller_id: String,
    /// Seconds the `;1` half (the person) stays once answered.
    pub(super) wait: u32,
    /// Originate `Timeout`: how long the person waits for an answer.
    pub(super) timeout_s: u32,
    pub(super) vars: Vec<(&'static str, String)>,
}

fn secs(x: f64) -> String {
    format!("{x:.1}")
}

impl CallPlan {
    /// An inbound call to `queue` that `agent` answers after `ring` s; they talk `talk` s and
    /// `hangup_by` ends it.
    pub fn inbound_answered(
        queue: Queue,
        caller: (&str, &str),
        agent: &str,
        ring: f64,
        talk: f64,
        hangup_by: HangupBy,
    ) -> CallPlan {
        CallPlan::Inbound {
            queue,
            caller_num: caller.0.into(),
            caller_name: caller.1.into(),
            answer: Some((agent.into(), ring)),
            talk,
            hangup_by,
            patience: None,
            transfer: None,
            record: false,
        }
    }

    /// An inbound call nobody answers; the caller hangs up after `patience` s (`None`: the
    /// queue times out first).
    pub fn inbound_unanswered(
        queue: Queue,
        caller: (&str, &str),
        patience: Option<f64>,
    ) -> CallPlan {
        CallPlan::Inbound {
            queue,
            caller_num: caller.0.into(),
            caller_name: caller.1.into(),
            answer: None,
            talk: 0.0,
            hangup_by: HangupBy::Caller,
            patience,
            transfer: None,
            record: false,
        }
    }

    pub fn outbound(agent: &str, number: &str, pstn: Pstn) -> CallPlan {
        CallPlan::Outbound {
            agent: agent.into(),
            number: number.into(),
            pstn,
            hangup_by: HangupBy::Callee,
            give_up: None,
        }
    }

    pub fn internal(agent: &str, target: &str, ring: f64, talk: f64) -> CallPlan {
        CallPlan::Internal {
            agent: agent.into(),
            target: target.into(),
            ring,
            talk,
            hangup_by: HangupBy::Callee,
        }
    }

    /// Who hangs up an answered call.
    pub fn hangup_by(mut self, by: HangupBy) -> CallPlan {
        match &mut self {
            CallPlan::Inbound { hangup_by, .. }
            | CallPlan::Outbound { hangup_by, .. }
            | CallPlan::Internal { hangup_by, .. } => *hangup_by = by,
        }
        self
    }

    /// Outbound: the agent gives up after `after` s of ringing.
    pub fn give_up(mut self, after: f64) -> CallPlan {
        if let CallPlan::Outbound { give_up, .. } = &mut self {
            *give_up = Some(after);
        }
        self
    }

    /// Inbound answered: the agent transfers the caller.
    pub fn transfer(&self) -> Option<&Transfer> {
        match self {
            CallPlan::Inbound { transfer, .. } => transfer.as_ref(),
            _ => None,
        }
    }

    pub fn with_transfer(mut self, t: Transfer) -> CallPlan {
        if let CallPlan::Inbound { transfer, .. } = &mut self {
            *transfer = Some(t);
        }
        self
    }

    /// Inbound: MixMonitor records the call into the PBX's `recordings/<id>.wav`.
    pub fn record(mut self) -> CallPlan {
        if let CallPlan::Inbound { record, .. } = &mut self {
            *record = true;
        }
        self
    }

    pub(super) fn kind(&self) -> &'static str {
        match self {
            CallPlan::Inbound { .. } => "in",
            CallPlan::Outbound { .. } => "out",
            CallPlan::Internal { .. } => "int",
        }
    }

    /// About how long the call lasts, in seconds (for schedules).
    pub fn duration(&self) -> f64 {
        match self {
            CallPlan::Inbound {
                queue,
                answer,
                talk,
                patience,
                transfer,
                ..
            } => match answer {
                Some((ext, ring)) => {
                    let t = transfer
                        .as_ref()
                        .map(|t| t.after + t.ring + t.consult + t.talk + ATXFER_DIGIT_WAIT)
                        .unwrap_or(*talk);
                    queue.latest_ring_start(ext) + ring + t
                }
                None => patience.unwrap_or(26.0),
            },
            CallPlan::Outbound { pstn, give_up, .. } => match (pstn, give_up) {
                (_, Some(g)) => *g,
                (Pstn::Answer { ring, talk }, _) => ring + talk,
                (Pstn::NoAnswer { dial_timeout }, _) => f64::from(*dial_timeout),
                (Pstn::Reject, _) => 1.0,
                _ => 0.5,
            },
            CallPlan::Internal { ring, talk, .. } => ring + talk,
        }
    }

    pub(super) fn originate(&self) -> Originate {
        match self {
            CallPlan::Inbound {
                queue,
                caller_num,
                caller_name,
                answer,
                talk,
                hangup_by,
                patience,
                transfer,
                record,
            } => {
                let mut vars = Vec::new();
                let wait = match answer {
                    Some((ext, ring)) => {
                        vars.push(("LAB_ANSWER", ext.clone()));
                        vars.push(("LAB_RING", secs(*ring)));
                        let latest_answer = queue.latest_ring_start(ext) + ring;
                        match (transfer, hangup_by) {
                            (Some(t), _) => {
                                // The agents hang up: the first by transferring, the target
                                // after its talk time; the caller stays on the line.
                                vars.push(("LAB_TALK", "3600".into()));
                                vars.push(("LAB_XRING", secs(t.ring)));
                                vars.push(("LAB_XTALK", secs(t.talk)));
                                3600
                            }
                            (None, HangupBy::Callee) => {
                                vars.push(("LAB_TALK", secs(*talk)));
                                3600
                            }
                            (None, HangupBy::Caller) => {
                                // Patience counts from the start: the latest answer plus the
                                // talk time, so the call is answered whatever the queue does.
                                vars.push(("LAB_TALK", "3600".into()));
                                (latest_answer + talk).ceil() as u32
                            }
                        }
                    }
                    None => {
                        vars.push(("LAB_ANSWER", "nobody".into()));
                        patience.map(|p| p.ceil() as u32).unwrap_or(3600)
                    }
                };
                if *record {
                    vars.push(("LAB_RECORD", "1".into()));
                }
                Originate {
                    channel: format!("Local/{}@from-trunk", queue.did()),
                    caller_id: format!("\"{caller_name}\" <{caller_num}>"),
                    wait,
                    timeout_s: 30,
                    vars,
                }
            }
            CallPlan::Outbound {
                agent,
                number,
                pstn,
                hangup_by,
                give_up,
            } => {
                let mut vars = Vec::new();
                let mut wait = 3600;
                match pstn {
                    Pstn::Answer { ring, talk } => {
                        vars.push(("LAB_PSTN", "answer".to_string()));
                        vars.push(("LAB_PRING", secs(*ring)));
                        match hangup_by {
                            HangupBy::Callee => vars.push(("LAB_PTALK", secs(*talk))),
                            HangupBy::Caller => {
                                vars.push(("LAB_PTALK", "3600".into()));
                                wait = talk.ceil() as u32;
                            }
                        }
                    }
                    Pstn::Busy => vars.push(("LAB_PSTN", "busy".into())),
                    Pstn::Congestion => vars.push(("LAB_PSTN", "congestion".into())),
                    Pstn::NoAnswer { dial_timeout } => {
                        vars.push(("LAB_PSTN", "noanswer".into()));
                        vars.push(("LAB_DIAL_TIMEOUT", dial_timeout.to_string()));
                    }
                    Pstn::Reject => vars.push(("LAB_PSTN", "reject".into())),
                }
                Originate {
                    channel: format!("Local/{number}@from-agents"),
                    caller_id: format!("\"Agent {agent}\" <{agent}>"),
                    wait,
                    // The agent's patience while it rings: a cancel, or longer than any ring.
                    timeout_s: give_up.map(|g| g.ceil() as u32).unwrap_or(60),
                    vars,
                }
            }
            CallPlan::Internal {
                agent,
                target,
                ring,
                talk,
                hangup_by,
            } => {
                let mut vars = vec![("LAB_ANSWER", target.clone()), ("LAB_RING", secs(*ring))];
                let wait = match hangup_by {
                    HangupBy::Callee => {
                        vars.push(("LAB_TALK", secs(*talk)));
                        3600
                    }
                    HangupBy::Caller => {
                        vars.push(("LAB_TALK", "3600".into()));
                        talk.ceil() as u32
                    }
                };
                Originate {
                    channel: format!("Local/{target}@from-agents"),
                    caller_id: format!("\"Agent {agent}\" <{agent}>"),
                    wait,
                    timeout_s: 60,
                    vars,
                }
            }
        }
    }

    /// The truth of the call as planned (the lab's rules: `fixtures/ami-real/README.md`).
    pub fn expected(&self, linkedid: &str) -> Expected {
        match self {
            CallPlan::Inbound {
                queue,
                caller_num,
                answer,
                patience,
                ..
            } => Expected {
                linkedid: linkedid.into(),
                direction: "inbound",
                status: match (answer, patience) {
                    (Some(_), _) => "answered",
                    (None, Some(_)) => "abandoned",
                    (None, None) => "timeout",
                },
                caller: caller_num.clone(),
                callee: queue.did().into(),
                queue: Some(queue.name().into()),
                agent: answer.as_ref().map(|(ext, _)| format!("Agent {ext}")),
                outbound_route: None,
            },
            CallPlan::Outbound {
                agent,
                number,
                pstn,
                give_up,
                ..
            } => {
                let route = if number.starts_with("00") {
                    "route-international"
                } else if number.starts_with('3') {
                    "route-mobile"
                } else {
                    "route-italy"
                };
                let status = if route == "route-international" {
                    "failed"
                } else {
                    match (pstn, give_up) {
                        (Pstn::Answer { ring, .. }, Some(g)) if g <= ring => "cancelled",
                        (Pstn::NoAnswer { .. }, Some(_)) => "cancelled",
                        (Pstn::Answer { .. }, _) => "answered",
                        (Pstn::Busy, _) => "busy",
                        (Pstn::Congestion, _) => "congestion",
                        (Pstn::NoAnswer { .. }, None) => "noanswer",
                        (Pstn::Reject, _) => "failed",
                    }
                };
                Expected {
                    linkedid: linkedid.into(),
                    direction: "outbound",
                    status,
                    caller: agent.clone(),
                    callee: number.clone(),
                    queue: None,
                    agent: Some(format!("Agent {agent}")),
                    outbound_route: Some(route.into()),
                }
            }
            CallPlan::Internal { agent, target, .. } => Expected {
                linkedid: linkedid.into(),
                direction: "internal",
                status: "answered",
                caller: agent.clone(),
                callee: target.clone(),
                queue: None,
                agent: Some(format!("Agent {agent}")),
                outbound_route: None,
            },
        }
    }
}
