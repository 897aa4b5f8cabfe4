//! Channels: finding or creating the channel an event names, and what its snapshot (caller
//! id, dialled number, context) tells about the call. A call is keyed by the Linkedid of the
//! channel that created it; a Local channel's two halves are paired by name.

use super::*;

/// Header names of a channel snapshot with a given prefix, spelled out once.
pub(super) struct Snap {
    pub(super) uniqueid: &'static str,
    channel: &'static str,
    linkedid: &'static str,
    context: &'static str,
    exten: &'static str,
    num: &'static str,
    name: &'static str,
}

macro_rules! snap {
    ($p:literal) => {
        Snap {
            uniqueid: concat!($p, "Uniqueid"),
            channel: concat!($p, "Channel"),
            linkedid: concat!($p, "Linkedid"),
            context: concat!($p, "Context"),
            exten: concat!($p, "Exten"),
            num: concat!($p, "CallerIDNum"),
            name: concat!($p, "CallerIDName"),
        }
    };
}

pub(super) const PLAIN: Snap = snap!("");
pub(super) const DEST: Snap = snap!("Dest");
pub(super) const TRANSFER_SNAPS: [Snap; 5] = [
    snap!("Transferer"),
    snap!("Transferee"),
    snap!("OrigTransferer"),
    snap!("SecondTransferer"),
    snap!("TransferTarget"),
];

impl Tracker {
    /// Finds or creates the channel of an event's snapshot (prefix "" or "Dest" ...), records
    /// what it tells about the call, and returns the call's key.
    pub(super) fn channel(&mut self, m: &Message, snap: &Snap, ts: Micros) -> Option<CallKey> {
        let uid = field(m, snap.uniqueid)?;
        let session = self.session;
        let key = match self.channels.get_mut(uid) {
            Some(c) => {
                c.session = session;
                c.call
            }
            None => self.new_channel(m, snap, uid, ts)?,
        };
        self.observe_snapshot(key, m, snap, uid, ts);
        Some(key)
    }

    pub(super) fn new_channel(
        &mut self,
        m: &Message,
        snap: &Snap,
        uid: &str,
        ts: Micros,
    ) -> Option<CallKey> {
        let name = text(m, snap.channel)?;
        let linkedid = text(m, snap.linkedid).unwrap_or_else(|| uid.to_string());
        let context = text(m, snap.context).unwrap_or_default();
        let local = name.starts_with("Local/");
        let key = match self.by_linkedid.get(&linkedid) {
            Some(k) if self.calls.contains_key(k) => *k,
            _ => {
                let k = self.next_key;
                self.next_key += 1;
                self.calls.insert(
                    k,
                    CallState {
                        linkedid: linkedid.clone(),
                        started_at: ts,
                        last_event: ts,
                        first_context: context.clone(),
                        first_name: name.clone(),
                        ..CallState::default()
                    },
                );
                self.by_linkedid.insert(linkedid, k);
                self.peak_live = self.peak_live.max(self.calls.len());
                k
            }
        };
        {
            let c = self.call_mut(key);
            c.channels.push(uid.to_string());
            c.live += 1;
            c.all_ended_at = None;
        }
        self.channels.insert(
            uid.to_string(),
            Chan {
                call: key,
                name: name.clone(),
                local,
                hung_up: None,
                cause: None,
                session: self.session,
            },
        );
        if local {
            if let Some(base) = local_base(&name) {
                match self.local_names.get(base) {
                    Some(other) if other != uid => {
                        let other = other.clone();
                        self.union_channels(uid, &other);
                    }
                    _ => {
                        self.local_names.insert(base.to_string(), uid.to_string());
                    }
                }
            }
        }
        self.channels.get(uid).map(|c| c.call)
    }

    /// Caller id, dialled number and route hints from a snapshot of the call's first channel
    /// (or its Local partner, for the route).
    pub(super) fn observe_snapshot(
        &mut self,
        key: CallKey,
        m: &Message,
        snap: &Snap,
        uid: &str,
        ts: Micros,
    ) {
        let Some(c) = self.calls.get_mut(&key) else {
            return;
        };
        c.last_event = c.last_event.max(ts);
        let is_first = c.channels.first().is_some_and(|f| f == uid);
        if c.originated && c.originate_status.is_none() && c.originate_agent.is_none() && !is_first
        {
            // Until the Originate is answered, a device rung in it is the agent's phone.
            let device = field(m, snap.channel).is_some_and(|n| !n.starts_with("Local/"));
            if device {
                c.originate_agent = text(m, snap.num).filter(|n| known(n));
            }
        }
        if !is_first && !is_origin_partner(c, uid) {
            return;
        }
        if c.route.is_none() {
            if let Some(ctx) = field(m, snap.context) {
                let cfg = &self.cfg;
                c.route = cfg.routes.get(ctx).cloned().or_else(|| {
                    cfg.route_context_prefixes
                        .iter()
                        .any(|p| !p.is_empty() && ctx.starts_with(p.as_str()))
                        .then(|| ctx.to_string())
                });
            }
        }
        if !is_first {
            return;
        }
        if c.caller.is_none() {
            if let Some(n) = text(m, snap.num).filter(|n| known(n)) {
                c.caller = Some(n);
                c.caller_name = text(m, snap.name).filter(|n| known(n));
            }
        }
        if c.callee.is_none() {
            if let Some(e) =
                field(m, snap.exten).filter(|e| !matches!(*e, "" | "s" | "h" | "i" | "t"))
            {
                c.callee = Some(e.to_string());
            }
        }
    }
}
