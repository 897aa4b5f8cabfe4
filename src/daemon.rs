//! The daemon: one AMI session per PBX → call tracker → triggers → outbox, and the delivery
//! workers draining the outbox into Zoho. `replay --deliver` runs the same stages on a capture.
//!
//! Shutdown (SIGTERM, SIGINT): stop reading the PBXs, store every call that has ended (those
//! still in their grace period included), stop leasing, let in-flight Zoho requests finish.
//! Whatever is still pending stays in the outbox for the next start.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod continuity;
pub use continuity::StreamClock;
use continuity::{GapMeter, LiveSaver};

use crate::ami::{AmiClient, ClientConfig, SourceEvent};
use crate::calls::{Call, Micros, Output, Tracker};
use crate::config::{Config, PbxConfig};
use crate::delivery::{zoho_clients, Delivery};
use crate::pipeline::Pipeline;
use crate::store::{now_micros, Store, StoreError};
use crate::triggers::On;

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A configuration problem (exit code 2); the message names the key.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("PBX '{pbx}': {message}")]
    Ami { pbx: String, message: String },
    /// A task that cannot be restarted in place panicked: `run` ends with an error (non-zero
    /// exit) so that the service manager restarts the whole bridge.
    #[error("task {task} panicked: {message}")]
    Panicked { task: String, message: String },
}

/// The stages every source feeds: tracker output → store → delivery.
pub struct Bridge {
    pub pipeline: Arc<Pipeline>,
    pub store: Store,
    pub delivery: Arc<Delivery>,
    /// The real-time path (PhoneBridge pop-ups, agent page), when configured.
    pub notify: Option<Arc<crate::notify::Notify>>,
}

impl Bridge {
    /// Opens the store and builds the Zoho clients: everything but the event sources.
    pub async fn start(cfg: &Config) -> Result<Bridge, DaemonError> {
        let pipeline = Arc::new(Pipeline::new(cfg).map_err(DaemonError::Config)?);
        let store = Store::open(&cfg.store.url).await?;
        let apis = zoho_clients(cfg).map_err(|e| DaemonError::Config(e.to_string()))?;
        let delivery = Arc::new(Delivery::new(cfg, store.clone(), apis));
        let notify = crate::notify::wanted(cfg)
            .then(|| crate::notify::from_config(cfg, CancellationToken::new()))
            .transpose()
            .map_err(|e| DaemonError::Config(e.to_string()))?;
        Ok(Bridge {
            pipeline,
            store,
            delivery,
            notify,
        })
    }

    /// The CRM account of the first configuration (the agent page names callers with it).
    pub fn crm_api(&self, cfg: &Config) -> Option<Arc<crate::zoho::api::ZohoApi>> {
        let account = &cfg.zoho.configurations.values().next()?.account;
        self.delivery.apis().get(account).cloned()
    }

    /// Hands tracker outputs on: triggers, render, one transaction per call, wake a worker.
    /// A store that refuses is retried (the call is not dropped) until `stop`.
    pub async fn handle(&self, pbx: &str, outputs: &mut Vec<Output>, stop: &CancellationToken) {
        for o in outputs.drain(..) {
            match o {
                Output::Finished(call) => self.finished(pbx, &call, stop).await,
                Output::Moment(m, call) => self.moment(pbx, On::of(m), &call, stop).await,
            }
        }
    }

    async fn finished(&self, pbx: &str, call: &Call, stop: &CancellationToken) {
        let span = tracing::info_span!("call", linkedid = %call.linkedid, pbx);
        self.persist(pbx, call, On::End, stop)
            .instrument(span)
            .await
    }

    async fn moment(&self, pbx: &str, on: On, call: &Call, stop: &CancellationToken) {
        let span = tracing::info_span!("moment", linkedid = %call.linkedid, pbx);
        self.persist(pbx, call, on, stop).instrument(span).await
    }

    /// Stores what `on` makes of `call`: at the end the call itself and its records, at a
    /// live moment only the records (if any trigger fired). A store that refuses is retried
    /// with backoff until `stop`, so nothing is dropped while the bridge runs.
    async fn persist(&self, pbx: &str, call: &Call, on: On, stop: &CancellationToken) {
        let mut wait = Duration::from_millis(200);
        loop {
            match self.store_once(pbx, call, on).await {
                Ok(()) => return,
                Err(e) if !stop.is_cancelled() => {
                    tracing::error!(error = %e, retry_in_ms = wait.as_millis() as u64, "storing a call's records");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    let json = serde_json::to_string(call).unwrap_or_default();
                    tracing::error!(error = %e, call = %json, "shutting down with the store unavailable: this call is only in the log");
                    return;
                }
            }
        }
    }

    /// One attempt at storing a tracker output, in its call's span; Ok once committed.
    pub async fn try_store(&self, pbx: &str, output: &Output) -> Result<(), String> {
        let (call, on, span) = match output {
            Output::Finished(call) => (
                call,
                On::End,
                tracing::info_span!("call", linkedid = %call.linkedid, pbx),
            ),
            Output::Moment(m, call) => (
                call,
                On::of(*m),
                tracing::info_span!("moment", linkedid = %call.linkedid, pbx),
            ),
        };
        self.store_once(pbx, call, on)
            .instrument(span)
            .await
            .map_err(|e| e.to_string())
    }

    /// One transaction for what `on` makes of `call`; "call finished" is logged only after
    /// it committed.
    async fn store_once(&self, pbx: &str, call: &Call, on: On) -> Result<(), StoreError> {
        let finished = on == On::End;
        // Records that cannot be rendered come back parked (failed, with the reason and the
        // call's snapshot), so the call is stored whatever the configuration says.
        let mut activities = self.pipeline.records(pbx, call, on);
        crate::requeue::log_unrendered(&activities);
        // With [zoho.phonebridge] log_calls, Zoho's PhoneBridge log is the call's Call record.
        let logged_by_phonebridge = finished
            && self
                .notify
                .as_ref()
                .is_some_and(|n| n.is_logged(&call.linkedid.0));
        if logged_by_phonebridge {
            activities.retain(|a| a.module != "Calls");
        }
        if !finished && activities.is_empty() {
            return Ok(());
        }
        let at = now_micros();
        let added = if finished {
            let e164 = self.pipeline.remote_e164(call);
            self.store
                .record_call(pbx, call, e164.as_deref(), &activities, at)
                .await?
        } else {
            self.store
                .record_moment(pbx, &call.linkedid.0, &activities, at)
                .await?
        };
        if finished {
            metrics::counter!("azb_calls_finished_total", "pbx" => pbx.to_string(), "status" => call.status.as_str()).increment(1);
            tracing::info!(
                status = call.status.as_str(),
                direction = call.direction.as_str(),
                records = added,
                "call finished"
            );
        }
        if logged_by_phonebridge {
            if let Some(n) = &self.notify {
                n.take_logged(&call.linkedid.0);
            }
        }
        if added > 0 {
            self.delivery.wake();
        }
        Ok(())
    }
}

/// Binds a configured listener; failing to is a configuration error naming the key.
async fn listen(key: &str, addr: &str) -> Result<tokio::net::TcpListener, DaemonError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| DaemonError::Config(format!("key {key}: cannot listen on {addr}: {e}")))
}

/// Events taken from the AMI queue per pass of the ingest loop.
const EVENT_BATCH: usize = 512;

/// At shutdown, how long the store may take to write the calls still waiting; the unit's
/// `TimeoutStopSec` (90 s) covers this, the 30 s delivery drain and the HTTP drain.
const STORE_DRAIN: Duration = Duration::from_secs(20);

/// Watches the tracker's live-call count against `limits.max_live_calls`: a gauge always, a
/// counter and one warning each time the cap is crossed. (Evicting calls is the tracker's
/// business: see `max_call_age_seconds`.)
struct LiveCap {
    pbx: String,
    max: usize,
    over: bool,
}

impl LiveCap {
    fn new(pbx: &str, max: usize) -> LiveCap {
        LiveCap {
            pbx: pbx.to_string(),
            max,
            over: false,
        }
    }

    fn check(&mut self, live: usize) {
        metrics::gauge!("azb_live_calls", "pbx" => self.pbx.clone()).set(live as f64);
        let over = live > self.max;
        if over && !self.over {
            metrics::counter!("azb_live_calls_over_cap_total", "pbx" => self.pbx.clone())
                .increment(1);
            tracing::warn!(pbx = %self.pbx, live_calls = live, cap = self.max, "more live calls than limits.max_live_calls");
        }
        self.over = over;
    }
}

/// How long a FastAGI tag waits for its channel to appear on AMI.
const TAG_WAIT: Duration = Duration::from_secs(5);

/// A tracker with moments turned on when a trigger wants them.
pub fn tracker_for(cfg: &Config) -> Tracker {
    let mut calls = cfg.calls.clone();
    calls.emit_moments |= cfg.triggers.iter().any(|t| t.on != On::End);
    calls.emit_moments |= crate::notify::wanted(cfg);
    Tracker::new(calls)
}

/// Reads one PBX until `stop`, then stores the calls that have ended.
pub async fn ingest_pbx(
    bridge: Arc<Bridge>,
    cfg: Arc<Config>,
    pbx: PbxConfig,
    index: usize,
    health: Arc<crate::ops::Health>,
    mut tags: tokio::sync::broadcast::Receiver<crate::agi::Tag>,
    stop: CancellationToken,
) -> Result<(), DaemonError> {
    let secret = pbx.secret(index).map_err(DaemonError::Config)?;
    let mut client_cfg = ClientConfig::new(&pbx.host, pbx.port, &pbx.username, secret);
    client_cfg.auth = pbx.auth;
    // The session feeds the call tracker only: the events it reads nothing of are skimmed.
    client_cfg.skim = Some(crate::calls::skimmable);
    client_cfg.queue_events = cfg.limits.ami_queue_events;
    client_cfg.queue_wait = Duration::from_millis(cfg.limits.ami_queue_wait_ms.min(10_000));
    client_cfg.ping_interval = crate::ops::seconds(pbx.ping_seconds, Duration::from_secs(20))
        .max(Duration::from_millis(100));
    // After every login the PBX's channels and queues are listed, and the tracker reconciles.
    client_cfg.resync = true;
    // What this instance knew of live calls when it last stopped, before the first session.
    let instance = cfg.store.instance_name();
    let mut tracker = tracker_for(&cfg);
    let restored = continuity::restore(&bridge.store, &pbx.name, &instance, &mut tracker).await;
    let mut clock = restored.clock;
    let mut gaps = GapMeter::new(&pbx.name, &restored);
    let mut saver = LiveSaver::start(bridge.store.clone(), &pbx.name, &instance);
    let Some((_client, mut events)) = connect_retrying(&client_cfg, &pbx.name, &stop).await else {
        return Ok(());
    };
    tracing::info!(pbx = %pbx.name, host = %pbx.host, port = pbx.port, "AMI connected");
    crate::supervise::test_panic("pbx");
    health.set_pbx(&pbx.name, true);
    let events_total = metrics::counter!("azb_ami_events_total", "pbx" => pbx.name.clone());
    let reconnects = metrics::counter!("azb_ami_reconnects_total", "pbx" => pbx.name.clone());
    // Finished calls wait here while the store cannot write, so reading goes on.
    let give_up = CancellationToken::new();
    let (queue, writer) = crate::persist::PersistQueue::start(
        bridge.clone(),
        pbx.name.clone(),
        cfg.limits.store_queue_calls,
        health.clone(),
        give_up.clone(),
    );
    let mut live_cap = LiveCap::new(&pbx.name, cfg.limits.max_live_calls);
    let mut batch = Vec::with_capacity(EVENT_BATCH);
    let mut outputs = Vec::new();
    // Live calls are saved four times a second when they changed: after a kill -9 only what
    // happened in the last quarter second before it is unknown to the next start.
    let mut save_tick = tokio::time::interval(Duration::from_millis(250));
    save_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending_tags: Vec<(std::time::Instant, crate::agi::Tag)> = Vec::new();
    let mut tags_open = true;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut screens = bridge
        .notify
        .as_ref()
        .map(|n| crate::notify::Live::new(n.clone()));
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            // Events are taken in batches: one pass of this loop per batch rather than per
            // event keeps the tracker ahead of the reader (see the AMI queue's policy).
            n = events.recv_many(&mut batch, EVENT_BATCH) => {
                if n == 0 {
                    break;
                }
                for ev in batch.drain(..) {
                    if let SourceEvent::Message(m) = &ev {
                        events_total.increment(1);
                        clock.observe(m);
                    } else {
                        session_event(&pbx.name, &ev, &health, &reconnects, &mut gaps);
                    }
                    let before = outputs.len();
                    tracker.feed(&ev, clock.now(), &mut outputs);
                    // The agent screens read the event with the moments it caused (only those:
                    // a batch's earlier outputs are still in `outputs`).
                    if let (Some(s), SourceEvent::Message(m)) = (screens.as_mut(), &ev) {
                        s.message(m, &outputs[before..]);
                    }
                }
            },
            tag = tags.recv(), if tags_open => match tag {
                Ok(t) => pending_tags.push((std::time::Instant::now(), t)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(lost = n, "FastAGI tags arrived faster than they were applied");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => tags_open = false,
            },
            // Time moves on between events only once the PBX's clock is known.
            _ = tick.tick(), if clock.is_known() => {
                tracker.tick(clock.now(), &mut outputs);
                live_cap.check(tracker.live_calls());
            }
            // Only while nothing finished waits for the store (see PersistQueue::is_settled).
            _ = save_tick.tick(), if queue.is_settled() => saver.offer(&tracker, &clock),
        }
        // A tag can come before the channel's first event: it waits a few seconds for it.
        pending_tags.retain(|(at, t)| {
            !tracker.tag(&t.uniqueid, &t.key, &t.value) && at.elapsed() < TAG_WAIT
        });
        if !outputs.is_empty() {
            if let Some(s) = screens.as_mut() {
                s.finished(&outputs);
            }
            continuity::count_resynced(&pbx.name, &outputs);
            tokio::select! {
                _ = queue.push(&mut outputs) => {}
                _ = stop.cancelled() => {}
            }
        }
    }
    // From here the store gets STORE_DRAIN to take what waits; then the rest is logged.
    let deadline = give_up.clone();
    tokio::spawn(async move {
        tokio::time::sleep(STORE_DRAIN).await;
        deadline.cancel();
    });
    // Calls whose channels have all hung up are finished, grace period or not.
    let grace = (cfg.calls.grace_seconds * 1e6) as i64 + 1;
    tracker.tick(Micros(clock.now().0 + grace), &mut outputs);
    queue.push_or_log(&mut outputs, &give_up).await;
    drop(queue);
    let _ = writer.await;
    // The calls still up are saved: the next start carries on with them.
    saver.finish(&tracker, &clock).await;
    Ok(())
}

/// The session markers: health, reconnect and gap metrics, logs. (The tracker gets them too.)
fn session_event(
    pbx: &str,
    ev: &SourceEvent,
    health: &crate::ops::Health,
    reconnects: &metrics::Counter,
    gaps: &mut GapMeter,
) {
    match ev {
        SourceEvent::Connected { .. } => {
            health.set_pbx(pbx, true);
            gaps.connected();
        }
        SourceEvent::Reconnected { .. } => {
            health.set_pbx(pbx, true);
            reconnects.increment(1);
            gaps.connected();
            tracing::warn!(pbx, "AMI reconnected: the PBX's channel and queue lists reconcile the calls that spanned the gap");
        }
        SourceEvent::Disconnected { reason } => {
            health.set_pbx(pbx, false);
            gaps.disconnected();
            tracing::warn!(pbx, %reason, "AMI disconnected; reconnecting");
        }
        SourceEvent::Resync { items } => {
            tracing::info!(
                pbx,
                items = items.len(),
                "AMI resync lists handed to the tracker"
            );
        }
        SourceEvent::Message(_) => {}
    }
}

/// The first session of a PBX, retried with backoff until `stop`: a PBX that is down at start,
/// or refuses the login (a wrong secret, a user not yet in manager.conf), is not a reason to
/// stop reading the others. It stays "not connected" in `/readyz` meanwhile, and a refused
/// login is retried more slowly (Asterisk logs every failed login).
async fn connect_retrying(
    cfg: &ClientConfig,
    pbx: &str,
    stop: &CancellationToken,
) -> Option<(AmiClient, tokio::sync::mpsc::Receiver<SourceEvent>)> {
    let mut wait = Duration::from_secs(1);
    loop {
        let max = match AmiClient::connect(cfg.clone()).await {
            Ok(c) => return Some(c),
            Err(e @ crate::ami::AmiError::LoginFailed { .. }) => {
                tracing::error!(pbx, error = %e, retry_in_s = wait.as_secs(), "AMI login refused: check pbx username and secret, and manager.conf");
                Duration::from_secs(300)
            }
            Err(e) => {
                tracing::error!(pbx, error = %e, retry_in_s = wait.as_secs(), "AMI connect");
                Duration::from_secs(30)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return None,
        }
        wait = (wait * 2).min(max);
    }
}

/// `ami-zoho-bridge run`: until SIGTERM or SIGINT.
pub async fn run(cfg: Config) -> Result<(), DaemonError> {
    let mut shutdown = ShutdownSignal::install();
    if cfg.pbx.is_empty() {
        return Err(DaemonError::Config(
            "key pbx: no [[pbx]] section: nothing to read".into(),
        ));
    }
    for (i, p) in cfg.pbx.iter().enumerate() {
        p.secret(i).map_err(DaemonError::Config)?;
    }
    let cfg = Arc::new(cfg);
    let bridge = Arc::new(Bridge::start(&cfg).await?);
    let health = Arc::new(crate::ops::Health::default());
    for p in &cfg.pbx {
        health.set_pbx(&p.name, false);
    }
    let stop_ingest = CancellationToken::new();
    let stop_workers = CancellationToken::new();
    // The recorder first: what the tasks count from their first moment (a panic at start
    // included) must reach /metrics.
    let metrics = crate::ops::install_metrics();
    let workers = bridge
        .delivery
        .spawn_supervised(stop_workers.clone(), health.clone());
    let stop_http = CancellationToken::new();
    let http = if cfg.http.listen.is_empty() {
        None
    } else {
        let ops = crate::ops::Ops {
            health: health.clone(),
            metrics,
            apis: bridge.delivery.apis().clone(),
        };
        let router = crate::http::router(&cfg, bridge.store.clone(), Some(ops))
            .map_err(DaemonError::Config)?;
        let router = match (&bridge.notify, &cfg.agent_page) {
            (Some(n), Some(_)) => router.merge(
                crate::agent_page::router(&cfg, n, bridge.crm_api(&cfg))
                    .map_err(DaemonError::Config)?,
            ),
            _ => router,
        };
        let listener = listen("http.listen", &cfg.http.listen).await?;
        let stop = stop_http.clone();
        let limits = crate::websec::ServeLimits::from_config(&cfg.http);
        Some(tokio::spawn(async move {
            if let Err(e) = crate::http::serve_with(listener, router, limits, stop).await {
                tracing::error!(error = %e, "HTTP server");
            }
        }))
    };
    let (tags, _) = tokio::sync::broadcast::channel::<crate::agi::Tag>(1024);
    let agi = if cfg.agi.listen.is_empty() {
        None
    } else {
        let zoho = cfg
            .agi
            .account
            .as_ref()
            .or_else(|| cfg.zoho.accounts.keys().next())
            .and_then(|a| bridge.delivery.apis().get(a).cloned());
        let handler = Arc::new(crate::agi::Handler {
            zoho,
            tags: tags.clone(),
            limits: crate::agi::Limits {
                header: crate::ops::seconds(cfg.agi.header_timeout_seconds, Duration::from_secs(2))
                    .max(Duration::from_millis(100)),
                ..crate::agi::Limits::default()
            },
        });
        let access = crate::agi::Access::from_config(&cfg.agi).map_err(DaemonError::Config)?;
        let listener = listen("agi.listen", &cfg.agi.listen).await?;
        tracing::info!(listen = %cfg.agi.listen, allow = ?cfg.agi.allow, "FastAGI: zoho-lookup, tag");
        Some(tokio::spawn(crate::agi::serve_with(
            listener,
            handler,
            access,
            stop_http.clone(),
        )))
    };
    warm_up().await;
    let mut sources = tokio::task::JoinSet::new();
    for (i, p) in cfg.pbx.iter().enumerate() {
        sources.spawn(ingest_pbx(
            bridge.clone(),
            cfg.clone(),
            p.clone(),
            i,
            health.clone(),
            tags.subscribe(),
            stop_ingest.clone(),
        ));
    }
    tracing::info!(pbxs = cfg.pbx.len(), workers = workers.len(), store = %crate::store::redact_url(&cfg.store.url), "bridge running");
    let mut failure = None;
    tokio::select! {
        _ = shutdown.wait() => tracing::info!("shutting down: no more AMI reading; storing ended calls"),
        Some(done) = sources.join_next() => {
            failure = source_failure(done, &health);
            if failure.is_none() {
                tracing::error!("a PBX session ended by itself; stopping");
            }
        }
    }
    stop_ingest.cancel();
    while let Some(done) = sources.join_next().await {
        if let Some(e) = source_failure(done, &health) {
            tracing::error!(error = %e, "PBX session ended");
            failure.get_or_insert(e);
        }
    }
    stop_workers.cancel();
    let drain = futures::future::join_all(workers);
    if tokio::time::timeout(Duration::from_secs(30), drain)
        .await
        .is_err()
    {
        tracing::warn!("deliveries still in flight after 30 s; their leases will run out and they will be checked first next time");
    }
    stop_http.cancel();
    for h in [http, agi].into_iter().flatten() {
        let _ = h.await;
    }
    bridge.store.close().await;
    tracing::info!("stopped");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What a finished PBX task means for `run`'s exit: its error, or its panic turned into one
/// (counted and logged; see [`crate::supervise`]).
fn source_failure(
    done: Result<Result<(), DaemonError>, tokio::task::JoinError>,
    health: &crate::ops::Health,
) -> Option<DaemonError> {
    match done {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => {
            let message = crate::supervise::panic_text(e);
            health.task_panicked("pbx");
            health.set_task_down("pbx", Some(format!("panicked: {message}")));
            tracing::error!(panic = %message, "a PBX task panicked; the bridge stops with an error");
            Some(DaemonError::Panicked {
                task: "pbx".into(),
                message,
            })
        }
    }
}

/// Loads what the first finished call would otherwise load inside the event loop: the phone
/// number metadata (libphonenumber's, parsed on first use: seconds in a debug build, and the
/// calls ending meanwhile would be finalised that much late).
async fn warm_up() {
    let started = std::time::Instant::now();
    let _ = tokio::task::spawn_blocking(|| crate::phone::forms("+390612345678", None, 0)).await;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "phone metadata loaded"
    );
}

/// SIGTERM (systemd stop) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    ShutdownSignal::install().wait().await
}

/// SIGTERM and SIGINT, caught from the moment [`ShutdownSignal::install`] is called. `run`
/// installs it first thing: a stop that comes while the bridge is still starting (restoring
/// its state, loading phone metadata) must end it cleanly, not by the signal's default action
/// (exit 143, which systemd counts as a failure).
pub struct ShutdownSignal {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    /// Registers the handlers now (needs a Tokio runtime).
    pub fn install() -> ShutdownSignal {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            ShutdownSignal {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            ShutdownSignal {}
        }
    }

    /// Resolves at the first SIGTERM or SIGINT (Ctrl-C).
    pub async fn wait(&mut self) {
        #[cfg(unix)]
        {
            match (&mut self.term, &mut self.int) {
                (Some(t), Some(i)) => {
                    tokio::select! {
                        _ = t.recv() => {}
                        _ = i.recv() => {}
                    }
                }
                (Some(t), None) => {
                    t.recv().await;
                }
                (None, Some(i)) => {
                    i.recv().await;
                }
                (None, None) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
