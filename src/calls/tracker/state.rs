//! The tracker's live state, saved so that a restarted bridge carries its calls on.
//!
//! What is saved is the correlator's own state (channels, calls, the grouping indexes, the
//! clock), not a journal of events: it is as small as the calls that are up, and restoring it
//! gives a tracker that behaves exactly as the one that saved it (the round trip is tested by
//! cutting captures at every message and comparing with the unbroken run). Times are kept as
//! raw microseconds: the RFC 3339 text of the call JSON is rounded to the millisecond.
//! The format is versioned; a state of another version is refused by [`Tracker::restore_live`]
//! rather than half-read.

use super::*;

/// The format written by this build.
pub const LIVE_STATE_VERSION: u32 = 1;

/// The tracker's live state, as saved between runs of the bridge (serialisable, versioned).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LiveState {
    pub version: u32,
    #[serde(default)]
    body: Option<Body>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Body {
    #[serde(with = "raw")]
    now: Micros,
    #[serde(with = "raw")]
    last_flush: Micros,
    #[serde(with = "raw_opt")]
    gap_from: Option<Micros>,
    next_key: CallKey,
    peak_live: usize,
    #[serde(default)]
    session: u32,
    calls: Vec<(CallKey, CallState)>,
    channels: Vec<(String, Chan)>,
    by_linkedid: Vec<(String, CallKey)>,
    local_names: Vec<(String, String)>,
    queue_members: Vec<((String, String), CallKey)>,
    bridges: Vec<(String, Vec<String>)>,
}

/// Why a saved state was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum LiveStateError {
    #[error("saved tracker state has version {found}, this build reads version {expected}")]
    Version { found: u32, expected: u32 },
}

impl LiveState {
    /// Calls the state holds.
    pub fn calls(&self) -> usize {
        self.body.as_ref().map_or(0, |b| b.calls.len())
    }
}

fn sorted<K: Ord + Clone, V: Clone>(m: &HashMap<K, V>) -> Vec<(K, V)> {
    let mut v: Vec<(K, V)> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

impl Tracker {
    /// What the tracker knows of live calls, to persist so that a restarted bridge can carry
    /// on (see [`Tracker::restore_live`]). Sorted, so one state always gives the same bytes.
    pub fn save_live(&self) -> LiveState {
        LiveState {
            version: LIVE_STATE_VERSION,
            body: Some(Body {
                now: self.now,
                last_flush: self.last_flush,
                gap_from: self.gap_from,
                next_key: self.next_key,
                peak_live: self.peak_live,
                session: self.session,
                calls: sorted(&self.calls),
                channels: sorted(&self.channels),
                by_linkedid: sorted(&self.by_linkedid),
                local_names: sorted(&self.local_names),
                queue_members: sorted(&self.queue_members),
                bridges: sorted(&self.bridges),
            }),
        }
    }

    /// Loads what [`Tracker::save_live`] saved, before the first event of a new process. The
    /// first `Connected` after it opens a gap (what happened while the bridge was down), which
    /// the login's resync closes. A state of another version is not loaded (a warning says
    /// so; the login's resync then rebuilds what it can); see [`Tracker::try_restore_live`].
    pub fn restore_live(&mut self, state: LiveState) {
        if let Err(e) = self.try_restore_live(state) {
            tracing::warn!("not restoring the calls of the last run: {e}");
        }
    }

    /// [`Tracker::restore_live`], saying why a state was not loaded. An empty (default)
    /// state loads as nothing.
    pub fn try_restore_live(&mut self, state: LiveState) -> Result<(), LiveStateError> {
        if state.version != LIVE_STATE_VERSION && state.body.is_some() {
            return Err(LiveStateError::Version {
                found: state.version,
                expected: LIVE_STATE_VERSION,
            });
        }
        let Some(b) = state.body else { return Ok(()) };
        self.now = b.now;
        self.last_flush = b.last_flush;
        self.gap_from = b.gap_from;
        self.next_key = b.next_key;
        self.peak_live = b.peak_live;
        self.session = b.session;
        self.calls = b.calls.into_iter().collect();
        self.channels = b.channels.into_iter().collect();
        self.by_linkedid = b.by_linkedid.into_iter().collect();
        self.local_names = b.local_names.into_iter().collect();
        self.queue_members = b.queue_members.into_iter().collect();
        self.bridges = b.bridges.into_iter().collect();
        Ok(())
    }
}

/// `Micros` as its raw count (exact), not the RFC 3339 text of the call JSON.
pub(super) mod raw {
    use super::Micros;
    pub fn serialize<S: serde::Serializer>(m: &Micros, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(m.0)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Micros, D::Error> {
        <i64 as serde::Deserialize>::deserialize(d).map(Micros)
    }
}

pub(super) mod raw_opt {
    use super::Micros;
    pub fn serialize<S: serde::Serializer>(m: &Option<Micros>, s: S) -> Result<S::Ok, S::Error> {
        serde::Serialize::serialize(&m.map(|m| m.0), s)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Micros>, D::Error> {
        <Option<i64> as serde::Deserialize>::deserialize(d).map(|o| o.map(Micros))
    }
}

pub(super) mod transfers {
    use super::{Micros, Transfer, TransferKind};
    type Raw = (TransferKind, Option<String>, i64);
    pub fn serialize<S: serde::Serializer>(v: &[Transfer], s: S) -> Result<S::Ok, S::Error> {
        let raw: Vec<Raw> = v
            .iter()
            .map(|t| (t.kind, t.target.clone(), t.at.0))
            .collect();
        serde::Serialize::serialize(&raw, s)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Transfer>, D::Error> {
        let raw = <Vec<Raw> as serde::Deserialize>::deserialize(d)?;
        Ok(raw
            .into_iter()
            .map(|(kind, target, at)| Transfer {
                kind,
                target,
                at: Micros(at),
            })
            .collect())
    }
}

pub(super) mod gaps {
    use super::{Gap, Micros};
    pub fn serialize<S: serde::Serializer>(v: &[Gap], s: S) -> Result<S::Ok, S::Error> {
        let raw: Vec<(i64, i64)> = v.iter().map(|g| (g.from.0, g.to.0)).collect();
        serde::Serialize::serialize(&raw, s)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Gap>, D::Error> {
        let raw = <Vec<(i64, i64)> as serde::Deserialize>::deserialize(d)?;
        Ok(raw
            .into_iter()
            .map(|(f, t)| Gap {
                from: Micros(f),
                to: Micros(t),
            })
            .collect())
    }
}
