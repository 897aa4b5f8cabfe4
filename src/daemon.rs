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
}

/// The stages every source feeds: tracker output → store → delivery.
pub struct Bridge {
    pub pipeline: Arc<Pipeline>,
    pub store: Store,
    pub delivery: Arc<Delivery>,
}

impl Bridge {
    /// Opens the store and builds the Zoho clients: everything but the event sources.
    pub async fn start(cfg: &Config) -> Result<Bridge, DaemonError> {
        let pipeline = Arc::new(Pipeline::new(cfg).map_err(DaemonError::Config)?);
        let store = Store::open(&cfg.store.url).await?;
        let apis = zoho_clients(cfg).map_err(|e| DaemonError::Config(e.to_string()))?;
        let delivery = Arc::new(Delivery::new(cfg, store.clone(), apis));
        Ok(Bridge {
            pipeline,
            store,
            delivery,
        })
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
        let finished = on == On::End;
        let activities = self.pipeline.records(pbx, call, on).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot render the call's records; they are not stored");
            Vec::new()
        });
        if !finished && activities.is_empty() {
            return;
        }
        let e164 = if finished {
            self.pipeline.remote_e164(call)
        } else {
            None
        };
        let at = now_micros();
        let mut wait = Duration::from_millis(200);
        loop {
            let stored = if finished {
                self.store
                    .record_call(pbx, call, e164.as_deref(), &activities, at)
                    .await
            } else {
                self.store
                    .record_moment(pbx, &call.linkedid.0, &activities, at)
                    .await
            };
            match stored {
                Ok(added) => {
                    if finished {
                        metrics::counter!("azb_calls_finished_total", "pbx" => pbx.to_string(), "status" => call.status.as_str()).increment(1);
                        tracing::info!(
                            status = call.status.as_str(),
                            direction = call.direction.as_str(),
                            records = added,
                            "call finished"
                        );
                    }
                    if added > 0 {
                        self.delivery.wake();
                    }
                    return;
                }
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
}

/// Binds a configured listener; failing to is a configuration error naming the key.
async fn listen(key: &str, addr: &str) -> Result<tokio::net::TcpListener, DaemonError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| DaemonError::Config(format!("key {key}: cannot listen on {addr}: {e}")))
}

/// How long a FastAGI tag waits for its channel to appear on AMI.
const TAG_WAIT: Duration = Duration::from_secs(5);

/// A tracker with moments turned on when a trigger wants them.
pub fn tracker_for(cfg: &Config) -> Tracker {
    let mut calls = cfg.calls.clone();
    calls.emit_moments |= cfg.triggers.iter().any(|t| t.on != On::End);
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
    client_cfg.ping_interval = Duration::from_secs_f64(pbx.ping_seconds);
    // After every login the PBX's channels and queues are listed, and the tracker reconciles.
    client_cfg.resync = true;
    let name = pbx.name.clone();
    // What this instance knew of live calls when it last stopped, before the first session.
    let instance = cfg.store.instance_name();
    let mut tracker = tracker_for(&cfg);
    let restored = continuity::restore(&bridge.store, &pbx.name, &instance, &mut tracker).await;
    let mut clock = restored.clock;
    let mut gaps = GapMeter::new(&pbx.name, &restored);
    let mut saver = LiveSaver::start(bridge.store.clone(), &pbx.name, &instance);
    let ami_error = |e: crate::ami::AmiError| DaemonError::Ami {
        pbx: name.clone(),
        message: e.to_string(),
    };
    // The first login is retried too: a PBX that is down at start is not a reason to exit.
    let mut wait = Duration::from_secs(1);
    let (_client, mut events) = loop {
        match AmiClient::connect(client_cfg.clone()).await {
            Ok(c) => break c,
            Err(e @ crate::ami::AmiError::LoginFailed { .. }) => return Err(ami_error(e)),
            Err(e) => {
                tracing::error!(pbx = %pbx.name, error = %e, retry_in_s = wait.as_secs(), "AMI connect");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => return Ok(()),
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    };
    tracing::info!(pbx = %pbx.name, host = %pbx.host, port = pbx.port, "AMI connected");
    health.set_pbx(&pbx.name, true);
    let events_total = metrics::counter!("azb_ami_events_total", "pbx" => pbx.name.clone());
    let reconnects = metrics::counter!("azb_ami_reconnects_total", "pbx" => pbx.name.clone());
    let mut outputs = Vec::new();
    // Live calls are saved four times a second when they changed: after a kill -9 only what
    // happened in the last quarter second before it is unknown to the next start.
    let mut save_tick = tokio::time::interval(Duration::from_millis(250));
    save_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending_tags: Vec<(std::time::Instant, crate::agi::Tag)> = Vec::new();
    let mut tags_open = true;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            ev = events.recv() => match ev {
                None => break,
                Some(ev) => {
                    if let SourceEvent::Message(m) = &ev {
                        events_total.increment(1);
                        clock.observe(m);
                    } else {
                        session_event(&pbx.name, &ev, &health, &reconnects, &mut gaps);
                    }
                    tracker.feed(&ev, clock.now(), &mut outputs);
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
            _ = tick.tick(), if clock.is_known() => tracker.tick(clock.now(), &mut outputs),
            _ = save_tick.tick() => saver.offer(&tracker, &clock),
        }
        // A tag can come before the channel's first event: it waits a few seconds for it.
        pending_tags.retain(|(at, t)| {
            !tracker.tag(&t.uniqueid, &t.key, &t.value) && at.elapsed() < TAG_WAIT
        });
        if !outputs.is_empty() {
            continuity::count_resynced(&pbx.name, &outputs);
            bridge.handle(&pbx.name, &mut outputs, &stop).await;
        }
    }
    // Calls whose channels have all hung up are finished, grace period or not.
    let grace = (cfg.calls.grace_seconds * 1e6) as i64 + 1;
    tracker.tick(Micros(clock.now().0 + grace), &mut outputs);
    bridge
        .handle(&pbx.name, &mut outputs, &CancellationToken::new())
        .await;
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

/// `ami-zoho-bridge run`: until SIGTERM or SIGINT.
pub async fn run(cfg: Config) -> Result<(), DaemonError> {
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
    let workers = bridge.delivery.spawn(stop_workers.clone());
    let stop_http = CancellationToken::new();
    let http = if cfg.http.listen.is_empty() {
        None
    } else {
        let ops = crate::ops::Ops {
            health: health.clone(),
            metrics: crate::ops::install_metrics(),
            apis: bridge.delivery.apis().clone(),
        };
        let router = crate::http::router(&cfg, bridge.store.clone(), Some(ops))
            .map_err(DaemonError::Config)?;
        let listener = listen("http.listen", &cfg.http.listen).await?;
        let stop = stop_http.clone();
        Some(tokio::spawn(async move {
            if let Err(e) = crate::http::serve(listener, router, stop).await {
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
            limits: crate::agi::Limits::default(),
        });
        let listener = listen("agi.listen", &cfg.agi.listen).await?;
        tracing::info!(listen = %cfg.agi.listen, "FastAGI: zoho-lookup, tag");
        Some(tokio::spawn(crate::agi::serve(
            listener,
            handler,
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
        _ = shutdown_signal() => tracing::info!("shutting down: no more AMI reading; storing ended calls"),
        Some(done) = sources.join_next() => {
            if let Ok(Err(e)) = done {
                failure = Some(e);
            }
        }
    }
    stop_ingest.cancel();
    while let Some(done) = sources.join_next().await {
        if let Ok(Err(e)) = done {
            tracing::error!(error = %e, "PBX session ended");
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
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
