//! The real-time path: tracker moments → each agent's screen → Zoho PhoneBridge pop-ups and
//! the agent page, as the phones ring.
//!
//! Why a path of its own: a pop-up is worth something only while the phone rings. The
//! outbox batches, retries and waits for slow Call inserts; a ring notification behind it
//! would arrive after the call was answered. So the ingest task turns each AMI event (with
//! the moments the tracker made of it) into per-agent [`screens::Signal`]s and
//! [`screens::Notice`]s synchronously, with no I/O, and hands the notices to bounded queues
//! with `try_send`: the AMI reader never waits for Zoho, and Zoho's pace never reaches the
//! outbox. Workers (one queue per shard; one agent's notices of one call always on the same
//! shard, so they stay in order, while the phones of a ringall queue go out in parallel) send
//! them; a `ringing` older than `ring_deadline_seconds` is dropped, end
//! notifications are retried.
//!
//! Why per-agent state is derived here from the events and not in the tracker: the tracker's
//! `Moment::Ring` says a call rings, not which phone; the event that caused it
//! (`AgentCalled`, `DialBegin`, `AgentRingNoAnswer`, `DialEnd`, `AgentConnect`) names the
//! phone, so [`Observer`] reads those few headers beside the moment and leaves the tracker
//! alone.

pub mod config;
pub mod screens;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::ami::Message;
use crate::calls::{Direction, Micros, Output};
use crate::zoho::phonebridge::{gmt, PhoneBridge};
use crate::zoho::{Retry, ZohoError};

pub use screens::{AgentRef, DialState, Kind, Notice, Screens, Signal};

/// Whether `n` looks like an E.164 number: `+`, then 8 to 15 digits, no leading zero.
pub fn e164_ok(n: &str) -> bool {
    let Some(d) = n.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
}

/// `SIP/1002`, `SIP/1002-0000001a`, `PJSIP/1002`, `Local/1002@agents/n` → `1002`.
pub fn interface_extension(interface: &str) -> Option<String> {
    let rest = interface.split_once('/')?.1;
    let ext = rest.split(['@', '/', '-', ';']).next()?;
    (!ext.is_empty()).then(|| ext.to_string())
}

fn header(m: &Message, name: &str) -> Option<String> {
    m.get_str(name)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty() && v != "<unknown>")
}

/// A notice on its way, with the moment its AMI event arrived (for the ring deadline and
/// the latency figures).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub notice: Notice,
    pub arrival: Instant,
}

/// Turns AMI events and tracker outputs into notices: pure, one per PBX session.
pub struct Observer {
    agents: BTreeMap<String, String>,
    /// The `Linkedid` header of an event → the tracker's call id (they differ when a bridge
    /// rewrote the Linkedid), learned from events that came with a moment.
    aliases: HashMap<String, String>,
    screens: Screens,
}

/// Aliases kept at most; past this the map starts again (calls then use the header).
const MAX_ALIASES: usize = 200_000;

impl Observer {
    pub fn new(agents: BTreeMap<String, String>) -> Observer {
        Observer {
            agents,
            aliases: HashMap::new(),
            screens: Screens::default(),
        }
    }

    pub fn open_calls(&self) -> usize {
        self.screens.open_calls()
    }

    fn agent(&self, member: Option<&str>, interface: Option<&str>) -> Option<AgentRef> {
        let ext = interface.and_then(interface_extension)?;
        let email = [member, Some(ext.as_str()), interface]
            .into_iter()
            .flatten()
            .find_map(|k| self.agents.get(k).cloned())?;
        Some(AgentRef { ext, email })
    }

    /// The signals of one AMI event, given the outputs the tracker made of it.
    pub fn message(&mut self, m: &Message, outputs: &[Output], out: &mut Vec<Notice>) {
        let Some(event) = m.event() else { return };
        let relevant = matches!(
            event,
            b"AgentCalled" | b"AgentRingNoAnswer" | b"AgentConnect" | b"DialBegin" | b"DialEnd"
        );
        if !relevant {
            return;
        }
        let at = m
            .get("Timestamp")
            .and_then(Micros::parse_epoch)
            .unwrap_or(Micros(crate::store::now_micros()));
        let moment_call = outputs.iter().find_map(|o| match o {
            Output::Moment(_, c) => Some(c),
            _ => None,
        });
        let linked = header(m, "Linkedid");
        let call_id = match (moment_call, &linked) {
            (Some(c), Some(l)) => {
                if l != &c.linkedid.0 {
                    if self.aliases.len() >= MAX_ALIASES {
                        self.aliases.clear();
                    }
                    self.aliases.insert(l.clone(), c.linkedid.0.clone());
                }
                c.linkedid.0.clone()
            }
            (Some(c), None) => c.linkedid.0.clone(),
            (None, Some(l)) => self.aliases.get(l).cloned().unwrap_or_else(|| l.clone()),
            (None, None) => return,
        };
        let dest = header(m, "DestChannel");
        let signal = match event {
            b"AgentCalled" => {
                let Some(agent) = self.agent(
                    header(m, "MemberName").as_deref(),
                    header(m, "Interface").or(dest).as_deref(),
                ) else {
                    return;
                };
                Signal::Ring {
                    call: call_id,
                    agent,
                    direction: moment_call.map(|c| c.direction),
                    customer: moment_call
                        .and_then(|c| c.caller.clone())
                        .or_else(|| header(m, "CallerIDNum")),
                    customer_name: moment_call
                        .and_then(|c| c.caller_name.clone())
                        .or_else(|| header(m, "CallerIDName")),
                    queue: header(m, "Queue"),
                    at,
                }
            }
            b"AgentRingNoAnswer" => {
                let Some(ext) = header(m, "Interface")
                    .or(dest)
                    .as_deref()
                    .and_then(interface_extension)
                else {
                    return;
                };
                Signal::RingStop {
                    call: call_id,
                    ext,
                    at,
                }
            }
            b"AgentConnect" => {
                let Some(agent) = self.agent(
                    header(m, "MemberName").as_deref(),
                    header(m, "Interface").or(dest).as_deref(),
                ) else {
                    return;
                };
                Signal::Answer {
                    call: call_id,
                    agent,
                    at,
                }
            }
            b"DialBegin" => {
                // An Originate's dial (no calling channel) rings the agent's own phone for
                // an outbound call: not a pop-up.
                if header(m, "Uniqueid").is_none() {
                    return;
                }
                let Some(agent) = self.agent(None, dest.as_deref()) else {
                    return;
                };
                Signal::Ring {
                    call: call_id,
                    agent,
                    direction: moment_call.map(|c| c.direction),
                    customer: moment_call.and_then(|c| c.caller.clone()),
                    customer_name: moment_call.and_then(|c| c.caller_name.clone()),
                    queue: moment_call.and_then(|c| c.queue.clone()),
                    at,
                }
            }
            _ => {
                // DialEnd
                if header(m, "Uniqueid").is_none() {
                    return;
                }
                let Some(agent) = self.agent(None, dest.as_deref()) else {
                    return;
                };
                match header(m, "DialStatus").as_deref() {
                    Some("ANSWER") => Signal::Answer {
                        call: call_id,
                        agent,
                        at,
                    },
                    Some(_) => Signal::RingStop {
                        call: call_id,
                        ext: agent.ext,
                        at,
                    },
                    None => return,
                }
            }
        };
        self.screens.apply(signal, out);
    }

    /// The end notices of the calls the tracker finished.
    pub fn finished(&mut self, outputs: &[Output], out: &mut Vec<Notice>) {
        for o in outputs {
            if let Output::Finished(c) = o {
                self.screens.apply(Signal::End(c.clone()), out);
            }
        }
    }
}

/// Counters and latencies of the real-time path, for `/metrics` and `bench-notify`.
#[derive(Debug, Default)]
pub struct NotifyStats {
    /// Milliseconds from the AMI event's arrival to the notification leaving the bridge.
    pub latencies_ms: Vec<f64>,
    pub sent: u64,
    pub dropped_ringing: u64,
    pub failed: u64,
    pub lost: u64,
}

const MAX_LATENCIES: usize = 1_000_000;

impl NotifyStats {
    fn latency(&mut self, arrival: Instant) {
        if self.latencies_ms.len() < MAX_LATENCIES {
            self.latencies_ms
                .push(arrival.elapsed().as_secs_f64() * 1000.0);
        }
    }
}

/// The PhoneBridge side of the real-time path.
pub struct PhoneBridgeSink {
    pub client: PhoneBridge,
    pub cfg: config::PhoneBridgeConfig,
    pub default_country: String,
    /// e-mail → zohouser, from `/users` (the configured `users` win).
    users: tokio::sync::RwLock<(HashMap<String, String>, Option<Instant>)>,
}

impl PhoneBridgeSink {
    pub fn new(
        client: PhoneBridge,
        cfg: config::PhoneBridgeConfig,
        default_country: &str,
    ) -> PhoneBridgeSink {
        PhoneBridgeSink {
            client,
            cfg,
            default_country: default_country.to_string(),
            users: tokio::sync::RwLock::new((HashMap::new(), None)),
        }
    }

    /// The agent's PhoneBridge user id; Zoho's list is read at most once a minute.
    async fn zohouser(&self, email: &str) -> Option<String> {
        if let Some(u) = self.cfg.users.get(email) {
            return Some(u.clone());
        }
        let key = email.to_ascii_lowercase();
        {
            let g = self.users.read().await;
            if let Some(u) = g.0.get(&key) {
                return Some(u.clone());
            }
            if g.1.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
                return None;
            }
        }
        let mut g = self.users.write().await;
        if g.1.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            g.1 = Some(Instant::now());
            match self.client.users().await {
                Ok(list) => {
                    g.0 = list
                        .into_iter()
                        .map(|u| (u.email.to_ascii_lowercase(), u.zohouser))
                        .collect();
                }
                Err(e) => {
                    metrics::counter!("azb_phonebridge_errors_total", "code" => e.code().unwrap_or("network").to_string(), "state" => "users").increment(1);
                    tracing::warn!(error = %e, "PhoneBridge: cannot read the users list");
                }
            }
        }
        g.0.get(&key).cloned()
    }

    /// Whether Zoho will log this end notice as the call's Call record (`log_calls`, and the
    /// notice can be sent: numbers in E.164 and a known PhoneBridge user).
    fn will_log(&self, n: &Notice) -> bool {
        if !self.cfg.log_calls || !n.kind.is_end() {
            return false;
        }
        let user = self.cfg.users.contains_key(&n.agent.email)
            || self
                .users
                .try_read()
                .is_ok_and(|g| g.0.contains_key(&n.agent.email.to_ascii_lowercase()));
        user && self.params(n, String::new()).is_ok_and(|p| p.is_some())
    }

    /// The callnotify parameters of a notice; `Err(reason)` when it cannot be sent.
    fn params(
        &self,
        n: &Notice,
        zohouser: String,
    ) -> Result<Option<Vec<(&'static str, String)>>, &'static str> {
        let agent_number = config::agent_number(&self.cfg.agent_number, &n.agent.ext)
            .ok_or("agent number not E.164")?;
        let country = crate::phone::country(&self.default_country);
        let customer = n
            .customer
            .as_deref()
            .and_then(|c| crate::phone::forms(c, country, 0).e164)
            .filter(|c| e164_ok(c))
            .ok_or("no customer number")?;
        let log = self.cfg.log_calls;
        let (kind, state) = match (n.kind, log) {
            (Kind::Ringing, _) => ("ringing", "ringing"),
            (Kind::Answered, _) => ("answered", "answered"),
            (Kind::Missed, true) => ("missed", "missed"),
            (Kind::Ended, true) => ("ended", "ended"),
            (Kind::Dialed(d), true) => ("dialed", d.as_str()),
            // Without log_calls the bridge's REST Call is the record: close the pop-up with
            // an `ended` that carries no call log (no start_time, no duration).
            (Kind::Closed | Kind::Missed | Kind::Ended, _) => ("close", "ended"),
            (Kind::Dialed(_), false) => return Ok(None),
        };
        let call_type = if n.direction == Direction::Outbound {
            "dialed"
        } else {
            "received"
        };
        let (from, to) = if n.direction == Direction::Outbound {
            (agent_number, customer)
        } else {
            (customer, agent_number)
        };
        let mut p = vec![
            ("type", call_type.to_string()),
            ("state", state.to_string()),
            ("id", n.id.clone()),
            ("from", from),
            ("to", to),
            ("zohouser", zohouser),
        ];
        if kind == "ringing" {
            if let Some(t) = &n.transferred_from {
                p.push(("transferredcallid", t.clone()));
            }
        }
        if matches!(kind, "missed" | "ended" | "dialed") {
            p.push(("start_time", n.start.and_then(gmt).ok_or("no start time")?));
            if kind != "missed" {
                p.push(("duration", n.duration.unwrap_or(0).to_string()));
            }
        }
        Ok(Some(p))
    }

    /// Sends one notice; ringing within its deadline, end notices retried a few times.
    async fn send(&self, o: &Outgoing, stats: &Mutex<NotifyStats>) {
        let n = &o.notice;
        let state = n.kind.as_str();
        let deadline = Duration::from_secs_f64(self.cfg.ring_deadline_seconds);
        let late = |o: &Outgoing| n.kind == Kind::Ringing && o.arrival.elapsed() > deadline;
        let Some(zohouser) = self.zohouser(&n.agent.email).await else {
            metrics::counter!("azb_phonebridge_skipped_total", "reason" => "no PhoneBridge user")
                .increment(1);
            tracing::debug!(linkedid = %n.call, agent = %n.agent.email, state, "PhoneBridge: agent is no PhoneBridge user");
            return;
        };
        let params = match self.params(n, zohouser) {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(reason) => {
                metrics::counter!("azb_phonebridge_skipped_total", "reason" => reason).increment(1);
                tracing::debug!(linkedid = %n.call, agent = %n.agent.email, state, reason, "PhoneBridge: not sent");
                return;
            }
        };
        let mut wait = Duration::from_millis(500);
        for attempt in 1..=5u32 {
            if late(o) {
                stats.lock().map(|mut s| s.dropped_ringing += 1).ok();
                metrics::counter!("azb_phonebridge_dropped_total", "state" => "ringing")
                    .increment(1);
                tracing::warn!(linkedid = %n.call, agent = %n.agent.email, "PhoneBridge: ringing not sent within the deadline, dropped");
                return;
            }
            let result = if n.kind == Kind::Ringing {
                let left = deadline.saturating_sub(o.arrival.elapsed());
                match tokio::time::timeout(left, self.client.callnotify(&params)).await {
                    Ok(r) => r,
                    Err(_) => Err(ZohoError::Network {
                        message: "phonebridge/callnotify: no answer before the ring deadline"
                            .into(),
                        retry: Retry::Transient,
                    }),
                }
            } else {
                self.client.callnotify(&params).await
            };
            match result {
                Ok(()) => {
                    if let Ok(mut s) = stats.lock() {
                        s.sent += 1;
                        s.latency(o.arrival);
                    }
                    metrics::counter!("azb_phonebridge_sent_total", "state" => state).increment(1);
                    metrics::histogram!("azb_notify_latency_seconds", "sink" => "phonebridge")
                        .record(o.arrival.elapsed().as_secs_f64());
                    return;
                }
                Err(e) => {
                    let code = e.code().unwrap_or("network").to_string();
                    metrics::counter!("azb_phonebridge_errors_total", "code" => code.clone(), "state" => state).increment(1);
                    tracing::warn!(linkedid = %n.call, agent = %n.agent.email, state, attempt, code = %code, error = %e, "PhoneBridge callnotify failed");
                    let again = e.retry() != Retry::Permanent && n.kind != Kind::Ringing;
                    if !again || attempt == 5 {
                        if let Ok(mut s) = stats.lock() {
                            s.failed += 1;
                        }
                        return;
                    }
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }
}

/// The real-time path's handle: the daemon's ingest tasks give it notices, never waiting.
pub struct Notify {
    shards: Vec<mpsc::Sender<Outgoing>>,
    phonebridge: Option<Arc<PhoneBridgeSink>>,
    /// Calls whose Call record Zoho's PhoneBridge log is (`log_calls`): the REST Call is not
    /// written for them. Taken by the store path right after.
    logged: Mutex<std::collections::HashSet<String>>,
    pages: broadcast::Sender<Arc<Notice>>,
    agents: BTreeMap<String, String>,
    pub stats: Arc<Mutex<NotifyStats>>,
}

impl Notify {
    /// Starts the workers (none when PhoneBridge is off: the agent page reads the broadcast).
    pub fn start(
        phonebridge: Option<Arc<PhoneBridgeSink>>,
        agents: BTreeMap<String, String>,
        stop: CancellationToken,
    ) -> Arc<Notify> {
        let (queue, workers) = match &phonebridge {
            Some(pb) => (pb.cfg.queue, pb.cfg.concurrency),
            None => (1, 0),
        };
        let stats = Arc::new(Mutex::new(NotifyStats::default()));
        let mut shards = Vec::new();
        for _ in 0..workers {
            let (tx, mut rx) = mpsc::channel::<Outgoing>((queue / workers).max(16));
            shards.push(tx);
            let pb = phonebridge.clone();
            let stats = stats.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    let o = tokio::select! {
                        o = rx.recv() => match o { Some(o) => o, None => break },
                        _ = stop.cancelled() => break,
                    };
                    if let Some(pb) = &pb {
                        pb.send(&o, &stats).await;
                    }
                }
            });
        }
        // Read Zoho's user list (and so the token) now, not in front of the first ring.
        if let Some(pb) = phonebridge.clone() {
            tokio::spawn(async move {
                let _ = pb.zohouser("").await;
            });
        }
        let (pages, _) = broadcast::channel(4096);
        Arc::new(Notify {
            shards,
            phonebridge,
            logged: Mutex::new(Default::default()),
            pages,
            agents,
            stats,
        })
    }

    /// Whether PhoneBridge logs `call` itself (then the REST Call would be a second record).
    /// Asked for each finished call before its records are stored (store attempts may repeat).
    pub fn is_logged(&self, call: &str) -> bool {
        self.logged.lock().is_ok_and(|g| g.contains(call))
    }

    /// Forgets `call` once its records are stored; true when it was logged by PhoneBridge.
    pub fn take_logged(&self, call: &str) -> bool {
        self.logged.lock().is_ok_and(|mut g| g.remove(call))
    }

    fn note_logged(&self, notices: &[Notice]) {
        let Some(pb) = &self.phonebridge else { return };
        for n in notices {
            if pb.will_log(n) {
                if let Ok(mut g) = self.logged.lock() {
                    // Bounded: entries are taken at once; a leftover set this big is stale.
                    if g.len() > 100_000 {
                        g.clear();
                    }
                    g.insert(n.call.clone());
                }
            }
        }
    }

    /// A fresh observer for one PBX session.
    pub fn observer(&self) -> Observer {
        Observer::new(self.agents.clone())
    }

    /// Agent pages subscribe here (each filters its own agent's notices).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Notice>> {
        self.pages.subscribe()
    }

    /// Hands notices on without waiting: a full queue drops the notice, counted and logged.
    pub fn offer(&self, notices: &mut Vec<Notice>, arrival: Instant) {
        for n in notices.drain(..) {
            if self.pages.receiver_count() > 0 {
                let _ = self.pages.send(Arc::new(n.clone()));
            }
            if self.shards.is_empty() {
                continue;
            }
            // One agent's notices of one call stay in order on one shard; the phones of a
            // ringall queue ring in parallel on several.
            let shard = shard_of(&n.call, &n.agent.ext, self.shards.len());
            let kind = n.kind;
            let call = n.call.clone();
            let agent = n.agent.email.clone();
            if let Err(mpsc::error::TrySendError::Full(_)) =
                self.shards[shard].try_send(Outgoing { notice: n, arrival })
            {
                if kind.is_end() {
                    if let Ok(mut s) = self.stats.lock() {
                        s.lost += 1;
                    }
                    metrics::counter!("azb_phonebridge_dropped_total", "state" => kind.as_str())
                        .increment(1);
                    tracing::error!(linkedid = %call, agent = %agent, state = kind.as_str(), "PhoneBridge queue full: end notification not sent");
                } else {
                    if let Ok(mut s) = self.stats.lock() {
                        s.dropped_ringing += 1;
                    }
                    metrics::counter!("azb_phonebridge_dropped_total", "state" => kind.as_str())
                        .increment(1);
                    tracing::warn!(linkedid = %call, agent = %agent, state = kind.as_str(), "PhoneBridge queue full: notification dropped");
                }
            }
        }
    }

    /// Whether every queue is empty (for tests and benchmarks waiting for the last sends).
    pub fn idle(&self) -> bool {
        self.shards.iter().all(|s| s.capacity() == s.max_capacity())
    }
}

fn shard_of(call: &str, agent: &str, n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    call.hash(&mut h);
    agent.hash(&mut h);
    (h.finish() as usize) % n.max(1)
}

/// Whether the configuration asks for the real-time path.
pub fn wanted(cfg: &crate::config::Config) -> bool {
    cfg.zoho.phonebridge.is_some() || cfg.agent_page.is_some()
}

/// One PBX session's end of the real-time path: its observer and the shared [`Notify`].
/// The ingest task calls it with each event and with each batch of outputs; it never waits.
pub struct Live {
    notify: Arc<Notify>,
    observer: Observer,
    notices: Vec<Notice>,
    arrival: Instant,
}

impl Live {
    pub fn new(notify: Arc<Notify>) -> Live {
        Live {
            observer: notify.observer(),
            notify,
            notices: Vec::new(),
            arrival: Instant::now(),
        }
    }

    /// An AMI event just arrived, and the tracker made `outputs` of it.
    pub fn message(&mut self, m: &Message, outputs: &[Output]) {
        self.arrival = Instant::now();
        self.observer.message(m, outputs, &mut self.notices);
        if !self.notices.is_empty() {
            self.notify.offer(&mut self.notices, self.arrival);
        }
    }

    /// Outputs about to be handled: the finished calls' end notices.
    pub fn finished(&mut self, outputs: &[Output]) {
        self.observer.finished(outputs, &mut self.notices);
        if !self.notices.is_empty() {
            self.notify.note_logged(&self.notices);
            self.notify.offer(&mut self.notices, Instant::now());
        }
    }
}

/// Builds the real-time path from the configuration: PhoneBridge when `[zoho.phonebridge]`
/// is set; the broadcast for the agent page always.
pub fn from_config(
    cfg: &crate::config::Config,
    stop: CancellationToken,
) -> Result<Arc<Notify>, ZohoError> {
    let sink = match &cfg.zoho.phonebridge {
        Some(pb) => {
            let acc = cfg.zoho.accounts.get(&pb.account).ok_or_else(|| {
                ZohoError::Config(format!(
                    "zoho.phonebridge.account: no account '{}'",
                    pb.account
                ))
            })?;
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs_f64(pb.timeout_seconds.max(0.1)))
                .build()
                .map_err(|e| ZohoError::Config(format!("HTTP client: {e}")))?;
            let oauth = Arc::new(crate::zoho::oauth::OAuth::new(&pb.account, acc, http)?);
            let client = PhoneBridge::new(oauth, Duration::from_secs_f64(pb.timeout_seconds))?;
            Some(Arc::new(PhoneBridgeSink::new(
                client,
                pb.clone(),
                &cfg.calls.default_country,
            )))
        }
        None => None,
    };
    Ok(Notify::start(sink, cfg.agents.clone(), stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_and_extensions() {
        assert!(e164_ok("+393331588952"));
        assert!(!e164_ok("393331588952"));
        assert!(!e164_ok("+0612"));
        assert!(!e164_ok("anonymous"));
        assert_eq!(interface_extension("SIP/1001").as_deref(), Some("1001"));
        assert_eq!(
            interface_extension("SIP/1001-0000006a").as_deref(),
            Some("1001")
        );
        assert_eq!(
            interface_extension("Local/1005@agents/n").as_deref(),
            Some("1005")
        );
        assert_eq!(
            interface_extension("Local/1005@agents-00000003;1").as_deref(),
            Some("1005")
        );
    }
}
