//! Building a [`Call`] from what the tracker knows: direction, status, answer and talk time,
//! agent, who hung up. Pure reading of the call's state; used for live moments and the
//! finished call alike.

use super::*;

impl Tracker {
    /// The call as known now.
    pub(super) fn build(&self, key: CallKey) -> Option<Call> {
        let c = self.calls.get(&key)?;
        let first = c.channels.first()?;
        let first_chan = self.channels.get(first)?;
        let inbound = self.is_trunk(&c.first_context, &c.first_name);
        let direction = if inbound {
            Direction::Inbound
        } else if c.route.is_some()
            || c.trunk_leg
            // A click-to-dial whose agent never answered: the number was never dialled, but
            // the call was one to the outside world.
            || (c.originated && c.origin_dial_begin.is_none() && c.callee.is_some())
        {
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
            // A click-to-dial's agent is the phone the Originate rang (its caller id, an
            // extension), never the CLI the dialplan set on the Local channel for the far end.
            _ if c.originate_agent.is_some() => {
                (c.originate_agent.clone(), c.originate_agent.clone())
            }
            _ => (c.caller_name.clone().or(c.caller.clone()), c.caller.clone()),
        };
        // The calling side of a click-to-dial is the agent, as for a call dialled by hand.
        let caller = c.originate_agent.clone().or_else(|| c.caller.clone());
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
        let mut unknown_fields = c.unknown.clone();
        if c.incomplete && c.live > 0 {
            unknown_fields.push(Unknown::EndedAt);
        }
        if self.now.0 == 0 {
            // A stream without any clock: its times are not known at all.
            unknown_fields.extend([Unknown::StartedAt, Unknown::EndedAt]);
            if answered_at.is_some() {
                unknown_fields.push(Unknown::AnsweredAt);
            }
        }
        if direction == Direction::Outbound && c.route.is_none() && c.originated {
            // A click-to-dial that never reached the dialplan's route.
            unknown_fields.push(Unknown::OutboundRoute);
        }
        if status != Status::Answered {
            unknown_fields.retain(|u| !matches!(u, Unknown::AnsweredAt | Unknown::Agent));
        }
        unknown_fields.sort();
        unknown_fields.dedup();
        let unknown = unknown_fields.into_iter().map(Unknown::as_str).collect();
        Some(Call {
            linkedid,
            direction,
            caller,
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
            // Precise: events were lost and some field could not be established. A click-to-
            // dial that never reached a route has none to establish; a stream without a clock
            // has no times at all, which says nothing of the call.
            incomplete: c.incomplete
                || c.unknown.iter().any(|u| *u != Unknown::OutboundRoute)
                    && status == Status::Answered,
            unknown,
            gaps: c.gaps.clone(),
            original_caller: c.original_caller.clone(),
            channels,
        })
    }

    pub(super) fn status(&self, c: &CallState, direction: Direction) -> Status {
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
        // The Originate's own ANSWER is the agent's phone answering, not the call.
        let originate = c.originate_status.as_deref().filter(|s| *s != "ANSWER");
        let verdict = [c.origin_dial_end.as_deref(), originate]
            .into_iter()
            .find_map(|s| s.and_then(Status::from_dial_status));
        if let Some(s) = verdict {
            return s;
        }
        match direction {
            Direction::Inbound => Status::Abandoned,
            // The calling side hung up before anything answered.
            _ => Status::Cancelled,
        }
    }

    pub(super) fn hangup_by(
        &self,
        c: &CallState,
        direction: Direction,
        status: Status,
    ) -> Option<HangupBy> {
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

    pub(super) fn agent_email(
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
