//! Gaps and resync: what the tracker does when it stops hearing the PBX and starts again.
//!
//! An AMI session that drops (or a bridge that restarts) loses every event until the next
//! login, for good: Asterisk replays nothing. After each login the client lists the channels
//! that are up (`CoreShowChannels`) and the queues (`QueueStatus`); [`Tracker::reconcile`]
//! compares that picture with what the tracker knew:
//! - a known channel that is not listed hung up in the gap: its end is put in the middle of the
//!   gap (so it is off by at most half the gap), and the call records the gap;
//! - a call whose listed channels are up and bridged was answered (for a queue call, by the
//!   member whose leg is in the bridge: `QueueMember` names it);
//! - a listed channel never seen starts (or joins) a call from the listing: start = now −
//!   `Duration`, caller, callee, Linkedid, queue from `QueueEntry` or the `Queue` application.
//!
//! The list items carry no `Timestamp`: "now" is the tracker's clock when the lists completed
//! (the login's own timestamped events, or the live estimate the caller passes to `feed`).

use super::*;

/// One `CoreShowChannel` item, as far as the reconciliation reads it.
struct Listed<'m> {
    msg: &'m Message,
    uid: &'m str,
    linkedid: &'m str,
    up: bool,
    bridged: bool,
    application: &'m str,
    app_data: &'m str,
    /// Seconds since the channel was created.
    age: i64,
}

/// `HH:MM:SS` (hours may exceed 24) → seconds.
fn hms(v: &str) -> Option<i64> {
    let mut total = 0i64;
    for part in v.trim().split(':') {
        total = total * 60 + part.parse::<i64>().ok()?;
    }
    Some(total)
}

/// The sequence number of a uniqueid (`1795985707.36` → (1795985707, 36)), to order channels
/// created within the same second as Asterisk created them.
fn uid_order(uid: &str) -> (i64, i64) {
    let (a, b) = uid.split_once('.').unwrap_or((uid, "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

impl Tracker {
    /// The AMI session dropped: from the last event seen until the next login, events are lost.
    pub fn on_disconnect(&mut self) {
        self.session = self.session.wrapping_add(1);
        self.gap_from.get_or_insert(self.now);
    }

    /// A new AMI session after a drop. Nothing is concluded yet: the login's resync
    /// ([`Tracker::reconcile`]) says what happened in the gap, and calls whose channels still
    /// report end normally.
    pub fn on_reconnect(&mut self) {
        self.session = self.session.wrapping_add(1);
        self.gap_from.get_or_insert(self.now);
    }

    /// Reconciles live state with the answers of `CoreShowChannels` and `QueueStatus` after a
    /// login (see [`SourceEvent::Resync`](crate::ami::SourceEvent::Resync)).
    pub fn reconcile(&mut self, items: &[Message], out: &mut Vec<Output>) {
        let to = self.now;
        let from = self.gap_from.take().unwrap_or(to).min(to);
        let gap = Gap { from, to };
        let mid = Micros(from.0 + (to.0 - from.0) / 2);

        let mut listed: Vec<Listed> = Vec::new();
        let mut channels_complete = false;
        // uniqueid → queue, for callers still waiting.
        let mut entries: HashMap<&str, &str> = HashMap::default();
        // member interface → (queue, member name), for members in a call.
        let mut members: HashMap<&str, (&str, &str)> = HashMap::default();
        for m in items {
            match m.event() {
                Some(b"CoreShowChannel") => {
                    let (Some(uid), Some(_)) = (field(m, "Uniqueid"), field(m, "Channel")) else {
                        continue;
                    };
                    let state = field(m, "ChannelState").unwrap_or_default();
                    listed.push(Listed {
                        msg: m,
                        uid,
                        linkedid: field(m, "Linkedid").unwrap_or(uid),
                        up: state == "6" || field(m, "ChannelStateDesc") == Some("Up"),
                        bridged: field(m, "BridgeId").is_some_and(|b| !b.trim().is_empty()),
                        application: field(m, "Application").unwrap_or_default(),
                        app_data: field(m, "ApplicationData").unwrap_or_default(),
                        age: field(m, "Duration").and_then(hms).unwrap_or(0),
                    });
                }
                Some(b"CoreShowChannelsComplete") => channels_complete = true,
                Some(b"QueueEntry") => {
                    if let (Some(u), Some(q)) = (field(m, "Uniqueid"), field(m, "Queue")) {
                        entries.insert(u, q);
                    }
                }
                Some(b"QueueMember") => {
                    let in_call = field(m, "InCall") == Some("1");
                    if let (true, Some(q), Some(n)) = (in_call, field(m, "Queue"), field(m, "Name"))
                    {
                        for loc in [field(m, "Location"), field(m, "StateInterface")]
                            .into_iter()
                            .flatten()
                        {
                            members.insert(interface_of(loc), (q, n));
                        }
                    }
                }
                _ => {}
            }
        }

        // Calls alive when the bridge stopped hearing: they lived through the gap.
        if from < to {
            for c in self.calls.values_mut() {
                if c.live > 0 {
                    c.gaps.push(gap);
                }
            }
        }

        // Channels known but no longer listed hung up in the gap. Without the complete list
        // (the action failed, or was not allowed) nothing can be concluded.
        if channels_complete {
            let listed_uids: std::collections::HashSet<&str> =
                listed.iter().map(|l| l.uid).collect();
            let mut gone: Vec<String> = self
                .channels
                .iter()
                .filter(|(u, ch)| {
                    ch.hung_up.is_none()
                        && ch.session != self.session
                        && !listed_uids.contains(u.as_str())
                })
                .map(|(u, _)| u.clone())
                .collect();
            gone.sort_by_key(|u| uid_order(u));
            for uid in gone {
                self.hang_up_in_gap(&uid, mid);
            }
        }

        // Channels never seen, oldest first (the first channel of a call is its origin).
        let mut new: Vec<&Listed> = listed
            .iter()
            .filter(|l| !self.channels.contains_key(l.uid))
            .collect();
        new.sort_by_key(|l| (-l.age, l.uid != l.linkedid, uid_order(l.uid)));
        for l in &new {
            let start = Micros(to.0 - l.age * 1_000_000);
            if let Some(k) = self.channel(l.msg, &channels::PLAIN, start) {
                let c = self.call_mut(k);
                c.last_event = c.last_event.max(to);
                if c.started_at > start {
                    c.started_at = start;
                }
            }
        }

        // What the listing proves about each call with listed channels.
        let mut keys: Vec<CallKey> = Vec::new();
        for l in &listed {
            let Some(k) = self.channels.get(l.uid).map(|c| c.call) else {
                continue;
            };
            if !keys.contains(&k) {
                keys.push(k);
            }
            let queue = entries
                .get(l.uid)
                .copied()
                .or_else(|| {
                    (l.application == "Queue")
                        .then(|| l.app_data.split(',').next().unwrap_or_default())
                })
                .filter(|q| !q.is_empty());
            if let Some(q) = queue {
                let c = self.call_mut(k);
                if c.queue.is_none() {
                    c.queue = Some(q.to_string());
                }
            }
        }
        for k in keys {
            self.answer_from_listing(k, &listed, &members, from, to, out);
        }
        self.flush_due(out);
    }

    /// A channel that vanished while nobody listened: ended at `at` (the gap's middle).
    fn hang_up_in_gap(&mut self, uid: &str, at: Micros) {
        let Some(ch) = self.channels.get_mut(uid) else {
            return;
        };
        if ch.hung_up.is_some() {
            return;
        }
        ch.hung_up = Some(at);
        let key = ch.call;
        if ch.local {
            if let Some(base) = local_base(&ch.name) {
                if self.local_names.get(base).map(String::as_str) == Some(uid) {
                    self.local_names.remove(base);
                }
            }
        }
        let c = self.call_mut(key);
        c.live = c.live.saturating_sub(1);
        if c.live == 0 {
            c.all_ended_at = Some(at);
        }
    }

    /// A call whose listed channels are up and in a bridge was answered, if the tracker did
    /// not see it: in the gap (its time within it), or before the first login.
    fn answer_from_listing(
        &mut self,
        key: CallKey,
        listed: &[Listed],
        members: &HashMap<&str, (&str, &str)>,
        from: Micros,
        to: Micros,
        out: &mut Vec<Output>,
    ) {
        let Some(c) = self.calls.get(&key) else {
            return;
        };
        let mine: Vec<&Listed> = listed
            .iter()
            .filter(|l| self.channels.get(l.uid).is_some_and(|ch| ch.call == key))
            .collect();
        let talking = mine.iter().filter(|l| l.up && l.bridged).count();
        if talking < 2
            && !mine
                .iter()
                .any(|l| l.up && l.bridged && l.application == "AppQueue")
        {
            return;
        }
        // The answer happened after the later of the gap's start and the call's start.
        let earliest = from.max(c.started_at);
        let (at, known) = if earliest < to {
            (Micros(earliest.0 + (to.0 - earliest.0) / 2), from < to)
        } else {
            (to, false)
        };
        let queue_call = c.queue.is_some() || mine.iter().any(|l| l.application == "Queue");
        let first_seen_here = c.started_at >= from && from == to;
        if queue_call {
            if c.connected_at.is_some() {
                return;
            }
            // The member leg in the bridge names the agent.
            let agent = mine
                .iter()
                .filter(|l| l.up && l.bridged && l.application == "AppQueue")
                .find_map(|l| {
                    let name = field(l.msg, "Channel")?;
                    let base = interface_of(name);
                    members
                        .get(base)
                        .map(|(q, n)| (q.to_string(), n.to_string(), base.to_string()))
                });
            let c = self.call_mut(key);
            c.connected_at = Some(at);
            c.answer_estimated = true;
            if !known || first_seen_here {
                c.unknown.push(Unknown::AnsweredAt);
            }
            match agent {
                Some((q, n, iface)) => {
                    c.queue.get_or_insert(q);
                    c.agent = Some(n);
                    c.agent_interface = Some(iface);
                }
                None => c.unknown.push(Unknown::Agent),
            }
        } else {
            if c.origin_dial_answer.is_some() {
                return;
            }
            let c = self.call_mut(key);
            c.origin_dial_answer = Some(at);
            c.origin_dial_end = Some("ANSWER".into());
            c.answer_estimated = true;
            if !known || first_seen_here {
                c.unknown.push(Unknown::AnsweredAt);
            }
        }
        self.moment(key, Moment::Answer, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(pairs: &[(&str, &str)]) -> Message {
        Message::from_pairs(pairs)
    }

    fn newchannel(uid: &str, name: &str, linkedid: &str, ts: &str) -> Message {
        msg(&[
            ("Event", "Newchannel"),
            ("Timestamp", ts),
            ("Channel", name),
            ("Uniqueid", uid),
            ("Linkedid", linkedid),
            ("Context", "from-internal"),
            ("Exten", "1002"),
            ("CallerIDNum", "1001"),
        ])
    }

    fn listed(uid: &str, name: &str, linkedid: &str, duration: &str, bridge: &str) -> Message {
        msg(&[
            ("Event", "CoreShowChannel"),
            ("ActionID", "r-1"),
            ("Channel", name),
            ("ChannelState", "6"),
            ("ChannelStateDesc", "Up"),
            ("CallerIDNum", "1001"),
            ("Context", "from-internal"),
            ("Exten", "1002"),
            ("Uniqueid", uid),
            ("Linkedid", linkedid),
            ("Application", "Dial"),
            ("Duration", duration),
            ("BridgeId", bridge),
        ])
    }

    fn complete() -> Message {
        msg(&[
            ("Event", "CoreShowChannelsComplete"),
            ("ActionID", "r-1"),
            ("ListItems", "0"),
        ])
    }

    #[test]
    fn durations_and_interfaces() {
        assert_eq!(hms("00:00:07"), Some(7));
        assert_eq!(hms("26:01:02"), Some(26 * 3600 + 62));
        assert_eq!(hms("x"), None);
        assert_eq!(
            interface_of("Local/1014@agents-00000012;1"),
            "Local/1014@agents"
        );
        assert_eq!(interface_of("Local/1014@agents/n"), "Local/1014@agents");
        assert_eq!(interface_of("SIP/1014-0000001a"), "SIP/1014");
        assert_eq!(interface_of("SIP/trunk-a-0000001a"), "SIP/trunk-a");
        assert_eq!(interface_of("PJSIP/trunk-a"), "PJSIP/trunk-a");
    }

    /// A call whose channels vanished while the session was down ends in the middle of the
    /// gap and is emitted at the resync, with the gap recorded; a call still listed goes on.
    #[test]
    fn unlisted_channels_ended_in_the_gap() {
        let mut t = Tracker::new(CallsConfig::default());
        let mut out = Vec::new();
        t.on_message(
            &newchannel("10.1", "SIP/1001-1", "10.1", "100.0"),
            Micros(0),
            &mut out,
        );
        t.on_message(
            &newchannel("10.2", "SIP/1002-2", "10.1", "101.0"),
            Micros(0),
            &mut out,
        );
        t.on_message(
            &newchannel("20.1", "SIP/1003-3", "20.1", "102.0"),
            Micros(0),
            &mut out,
        );
        t.on_disconnect();
        // The new session's login: its first timestamped event is 110 s.
        let auth = msg(&[("Event", "SuccessfulAuth"), ("Timestamp", "110.0")]);
        t.on_message(&auth, Micros(0), &mut out);
        t.reconcile(
            &[
                listed("20.1", "SIP/1003-3", "20.1", "00:00:08", ""),
                complete(),
            ],
            &mut out,
        );
        let done: Vec<&Call> = out
            .iter()
            .filter_map(|o| match o {
                Output::Finished(c) => Some(&**c),
                Output::Moment(..) => None,
            })
            .collect();
        assert_eq!(done.len(), 1);
        let c = done[0];
        assert_eq!(c.linkedid.0, "10.1");
        // Gap from 102 s (the last event heard) to 110 s: ended at 106 s.
        assert_eq!(c.ended_at, Micros(106_000_000));
        assert_eq!(
            c.gaps,
            vec![Gap {
                from: Micros(102_000_000),
                to: Micros(110_000_000)
            }]
        );
        assert_eq!(t.live_calls(), 1);
    }

    /// A call never seen starts from the listing: start = now − Duration, answered when two of
    /// its channels are up in one bridge (a first login: the answer time is not known).
    #[test]
    fn a_call_never_seen_starts_from_the_listing() {
        let mut t = Tracker::new(CallsConfig::default());
        let mut out = Vec::new();
        let auth = msg(&[("Event", "SuccessfulAuth"), ("Timestamp", "200.0")]);
        t.on_message(&auth, Micros(0), &mut out);
        t.reconcile(
            &[
                listed("30.2", "SIP/1002-5", "30.1", "00:00:09", "b-1"),
                listed("30.1", "SIP/1001-4", "30.1", "00:00:12", "b-1"),
                complete(),
            ],
            &mut out,
        );
        t.finish(&mut out);
        let Some(Output::Finished(c)) = out.iter().find(|o| matches!(o, Output::Finished(_)))
        else {
            panic!("no call: {out:?}");
        };
        assert_eq!(c.linkedid.0, "30.1");
        assert_eq!(c.started_at, Micros(188_000_000));
        assert_eq!(c.caller.as_deref(), Some("1001"));
        assert_eq!(c.status, Status::Answered);
        assert!(c.unknown.contains(&"answered_at"), "{:?}", c.unknown);
        assert_eq!(c.channels[0].uniqueid, "30.1");
    }
}
