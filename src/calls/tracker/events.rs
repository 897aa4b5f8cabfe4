//! Event application: what each AMI event tells about its channel and call.
//!
//! Every handler finds (or creates) the channels the event names, records what the event
//! proves about the call (caller, queue, agent, dial outcomes, transfers), and lets the
//! grouping in [`super::group`] join calls that turn out to be one conversation.

use super::channels::{DEST, PLAIN, TRANSFER_SNAPS};
use super::*;

/// A byte-string pattern match compiles to a switch on the length and a few byte compares,
/// where a list of names would cost a comparison each.
pub(super) fn relevant(event: &[u8]) -> bool {
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
            | b"OriginateResponse"
    )
}

impl Tracker {
    pub(super) fn apply(
        &mut self,
        event: &str,
        m: &Message,
        ts: Micros,
        estimate: Micros,
        out: &mut Vec<Output>,
    ) {
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
                // The queue of a caller who gave up is named here even when no QueueCallerJoin
                // was recorded (a stream joined mid-call, a capture of call events only).
                if let Some(k) = self.channel(m, &PLAIN, ts) {
                    if let Some(q) = text(m, "Queue") {
                        self.call_mut(k).queue.get_or_insert(q);
                    }
                }
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
            "FullyBooted" => self.on_fully_booted(m, estimate),
            // An originated channel's caller id arrives here, after its Newchannel.
            "NewCallerid" => self.on_new_callerid(m, ts),
            "OriginateResponse" => self.on_originate_response(m),
            _ => {}
        }
    }

    pub(super) fn on_hangup(&mut self, m: &Message, ts: Micros, out: &mut Vec<Output>) {
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

    pub(super) fn on_dial_begin(&mut self, m: &Message, ts: Micros, out: &mut Vec<Output>) {
        let caller = self.channel(m, &PLAIN, ts);
        let dest = self.channel(m, &DEST, ts);
        let (Some(ck), Some(_)) = (caller, dest) else {
            // An Originate's dial has no caller: it rings the call's first channel (the
            // agent's phone of a click-to-dial), which then dials the number.
            if let Some(k) = dest {
                let first = self.calls.get(&k).and_then(|c| c.channels.first().cloned());
                let inbound = self
                    .calls
                    .get(&k)
                    .is_some_and(|c| self.is_trunk(&c.first_context, &c.first_name));
                // (An inbound call may be originated too: a test rig's caller. It stays one.)
                if !inbound && first.is_some() && first.as_deref() == field(m, "DestUniqueid") {
                    self.call_mut(k).originated = true;
                }
            }
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
        let first = self
            .calls
            .get(&key)
            .and_then(|c| c.channels.first())
            .is_some_and(|f| Some(f.as_str()) == field(m, "Uniqueid"));
        let c = self.call_mut(key);
        if trunkish {
            c.trunk_leg = true;
        }
        if origin && first && c.originated && !c.first_dialled {
            // A click-to-dial calls the number once the agent's phone answered: that number,
            // not the agent's own extension the Originate rang first, is the callee, and this
            // dial's outcome, not the agent leg's, is the call's.
            c.first_dialled = true;
            if let Some(e) = dialled_number(m) {
                c.callee = Some(e);
            }
            c.origin_dial_begin = None;
            c.origin_dial_answer = None;
            c.origin_dial_end = None;
            c.origin_dial_status = None;
        }
        if origin {
            c.origin_dial_begin.get_or_insert(ts);
            // Queue calls ring on AgentCalled; the queue's own dials would ring twice.
            if c.queue.is_none() {
                self.moment(key, Moment::Ring, out);
            }
        }
    }

    pub(super) fn on_dial_end(&mut self, m: &Message, ts: Micros, out: &mut Vec<Output>) {
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

    /// The outcome of an `Originate` (click-to-dial), sent to every session. Success names
    /// the first channel and the number it goes on to dial; Failure (the agent's phone was not
    /// answered, busy…) names only the dial string, so it is matched to the originated call
    /// of that interface still waiting for an outcome.
    pub(super) fn on_originate_response(&mut self, m: &Message) {
        let uid = field(m, "Uniqueid").filter(|u| known(u));
        let key = match uid.and_then(|u| self.channels.get(u)) {
            Some(ch) => Some(ch.call),
            None => {
                let Some(dial) = field(m, "Channel") else {
                    return;
                };
                let base = interface_of(dial);
                self.calls
                    .iter()
                    .filter(|(_, c)| c.originated && c.originate_status.is_none())
                    .filter(|(_, c)| interface_of(&c.first_name) == base)
                    .max_by_key(|(k, c)| (c.started_at, **k))
                    .map(|(k, _)| *k)
            }
        };
        let Some(key) = key else { return };
        let failed = field(m, "Response").is_some_and(|r| r.eq_ignore_ascii_case("Failure"));
        let exten = text(m, "Exten").filter(|e| known(e) && e != "s");
        let c = self.call_mut(key);
        if !c.originated {
            return;
        }
        if !c.first_dialled {
            // The number the agent's answer will dial (the only place it shows when the agent
            // never answers).
            if let Some(e) = exten.filter(|e| {
                e.trim_start_matches('+')
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            }) {
                c.callee = Some(e);
            }
        }
        if failed && c.originate_status.is_none() {
            // Asterisk's originate reasons: 1 hung up, 3 ringing (no answer), 5 busy,
            // 8 congestion; anything else is a failure.
            let status = match field(m, "Reason").map(str::trim) {
                Some("3") | Some("1") => "NOANSWER",
                Some("5") => "BUSY",
                Some("8") => "CONGESTION",
                _ => "CHANUNAVAIL",
            };
            c.originate_status = Some(status.to_string());
        }
    }

    /// An originated channel's caller id arrives here, after its Newchannel; and a dialplan
    /// that rewrites or masks the caller's number (`+31260xxxxxx`) before dialling says so
    /// here. The call keeps what the PBX presented, so a masked number never reaches the CRM,
    /// and the first number as `original_caller`.
    pub(super) fn on_new_callerid(&mut self, m: &Message, ts: Micros) {
        let Some(key) = self.channel(m, &PLAIN, ts) else {
            return;
        };
        let Some(c) = self.calls.get(&key) else {
            return;
        };
        let first = c.channels.first().map(String::as_str) == field(m, "Uniqueid");
        if !first || c.origin_dial_begin.is_some() || c.connected_at.is_some() {
            return;
        }
        let Some(num) = field(m, "CallerIDNum").filter(|n| known(n)) else {
            return;
        };
        // Only a caller's number that the PBX masks, or an external caller's number it
        // rewrites, is taken: an agent's extension rewritten to the company's CLI for the far
        // end (an outbound route) still names the agent who called.
        let masked = num.bytes().any(|b| matches!(b, b'x' | b'X' | b'*'))
            || num.eq_ignore_ascii_case("anonymous")
            || field(m, "CID-CallingPres").is_some_and(|p| p.contains("Prohibited"));
        let inbound = self.is_trunk(&c.first_context, &c.first_name);
        let Some(c) = self.calls.get_mut(&key) else {
            return;
        };
        if (masked || inbound) && c.caller.as_deref().is_some_and(|old| old != num) {
            if c.original_caller.is_none() {
                c.original_caller = c.caller.take();
            }
            c.caller = Some(num.to_string());
            c.caller_name = text(m, "CallerIDName").filter(|n| known(n));
        }
    }

    pub(super) fn on_varset(&mut self, m: &Message, ts: Micros) {
        let Some(var) = field(m, "Variable") else {
            return;
        };
        let var = var.trim_start_matches('_');
        let is_route = var.eq_ignore_ascii_case(self.cfg.route_variable.trim_start_matches('_'));
        let is_email = !self.cfg.agent_email_variable.is_empty()
            && var.eq_ignore_ascii_case(self.cfg.agent_email_variable.trim_start_matches('_'));
        let is_queue_status = var == "QUEUESTATUS";
        let is_dial_status = var == "DIALSTATUS";
        let is_answered_time = var == "ANSWEREDTIME_MS";
        // MixMonitor names its file here (Motion and FreePBX both record with it).
        let is_recording = var == "MIXMONITOR_FILENAME";
        // VarSet is the most frequent event: decide from the name before any other work.
        if !(is_route
            || is_email
            || is_queue_status
            || is_dial_status
            || is_answered_time
            || is_recording)
        {
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
        if is_answered_time {
            // Dial (and Queue) set it when they return: how long the answered party talked.
            // It dates an answer that the resync could only place inside a gap.
            if let (true, Ok(ms)) = (c.answer_estimated, value.trim().parse::<i64>()) {
                let at = Micros(ts.0 - ms * 1000).max(c.started_at);
                if c.origin_dial_answer.is_some() {
                    c.origin_dial_answer = Some(at);
                } else if c.connected_at.is_some() {
                    c.connected_at = Some(at);
                }
                c.answer_estimated = false;
                c.unknown.retain(|u| *u != Unknown::AnsweredAt);
            }
            return;
        }
        if is_route {
            c.route = Some(value);
        } else if is_email {
            c.agent_email = Some(value);
        } else if is_queue_status {
            c.queue_status = Some(value);
        } else if is_recording {
            // The first recording of a call wins (a transfer may start another).
            c.tags
                .entry(crate::recordings::RECORDING_TAG.to_string())
                .or_insert(value);
        } else if origin {
            c.origin_dial_status = Some(value);
        }
    }

    pub(super) fn on_agent_connect(&mut self, m: &Message, ts: Micros, out: &mut Vec<Output>) {
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

    pub(super) fn on_agent_complete(&mut self, m: &Message, ts: Micros) {
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
            // An answer the resync placed inside a gap: the member's talk time dates it.
            if let (true, Some(talk)) = (c.answer_estimated, c.agent_talk) {
                let at = Micros(ts.0 - i64::from(talk) * 1_000_000);
                c.connected_at = Some(at.max(c.started_at));
                c.answer_estimated = false;
                c.unknown.retain(|u| *u != Unknown::AnsweredAt);
                if c.hold_seconds.is_none() {
                    c.hold_seconds = number(m, "HoldTime");
                }
            }
        }
    }

    pub(super) fn on_bridge_enter(&mut self, m: &Message, ts: Micros) {
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

    pub(super) fn on_transfer(&mut self, event: &str, m: &Message, ts: Micros) {
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
        // Who the transferred party ends up with: a blind transfer's `Extension`; an
        // attended one's target channel when the consultation call was bridged to it, else
        // the party the transferer's second channel was talking to or had dialled (blonde).
        // `TransferTargetExten` is what the target itself dialled (often the transferer).
        let target = [
            "Extension",
            "TransferTargetCallerIDNum",
            "SecondTransfererConnectedLineNum",
            "SecondTransfererExten",
            "TransferTargetExten",
        ]
        .into_iter()
        .find_map(|h| text(m, h).filter(|v| known(v)));
        let kind = if event == "BlindTransfer" {
            TransferKind::Blind
        } else {
            TransferKind::Attended
        };
        let c = self.call_mut(key);
        if kind == TransferKind::Blind {
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

    pub(super) fn on_user_event(&mut self, m: &Message, ts: Micros) {
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

    pub(super) fn on_fully_booted(&mut self, m: &Message, estimate: Micros) {
        // A PBX that booted after a call started cannot still carry it.
        let Some(uptime) = number(m, "Uptime") else {
            return;
        };
        // Live, the estimate is the PBX's time now (the tracker's clock may still be the last
        // session's); replayed, the last stream time is the best there is.
        let now = if estimate > self.now {
            estimate
        } else {
            self.now
        };
        let boot = Micros(now.0 - i64::from(uptime) * 1_000_000);
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
    pub(super) fn end_everything(&mut self, ts: Micros) {
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
    pub(super) fn end_call(&mut self, key: CallKey, ts: Micros) {
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
}

/// The number a dial goes to: the `DialString`'s destination (`0298765432@fake-pstn`,
/// `SIP/trunk/+3126…`) when it is a phone number, else `DestExten`. Dialplans that dial through
/// Local channels named by internal tokens (`ID400377`) still name the number in the string.
fn dialled_number(m: &Message) -> Option<String> {
    let from_string = field(m, "DialString").and_then(|d| {
        let d = d.split('@').next()?;
        let d = d.rsplit('/').next()?;
        let digits = d.strip_prefix('+').unwrap_or(d);
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| d.to_string())
    });
    from_string.or_else(|| text(m, "DestExten").filter(|e| known(e) && e != "s"))
}
