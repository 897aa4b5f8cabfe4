//! Grouping: channels proven to belong together (Dial pairs, Local halves, shared bridges,
//! queue caller and member, transfers) are joined into one call, the older one surviving.

use super::channels::DEST;
use super::*;

impl Tracker {
    /// Links the `Dest*` channel of an event to the call of its caller channel.
    pub(super) fn link_dest(&mut self, key: CallKey, m: &Message, ts: Micros) -> Option<CallKey> {
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
    pub(super) fn union_channels(&mut self, a: &str, b: &str) {
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
}
