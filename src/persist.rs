//! Between a PBX's call tracker and the store: a bounded queue of tracker outputs and the task
//! that writes them.
//!
//! Why a queue: the tracker must keep reading the PBX while the store cannot write (a full
//! disk, a PostgreSQL failover), or events pile up in front of it and the AMI session is
//! dropped. So finished calls and live moments wait here, in order, up to
//! `limits.store_queue_calls`; the writer retries the oldest with backoff until it is
//! committed, and `/readyz` says 503 with the store's error meanwhile. When the queue is full,
//! pushing waits: the tracker stops, the AMI queue fills, and the AMI client drops and
//! re-establishes the session (see [`crate::ami::client`]): bounded memory at every stage.
//!
//! A call is logged "call finished" only once its transaction committed. Nothing waiting is
//! dropped while the bridge runs; on shutdown the writer keeps trying until the shutdown
//! deadline, then writes every call still waiting to the log as JSON (error level), so the
//! stop stays within the unit's `TimeoutStopSec` even with a dead store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::calls::Output;
use crate::daemon::Bridge;
use crate::ops::Health;

/// The sending side, held by the PBX's ingest loop.
pub struct PersistQueue {
    tx: mpsc::Sender<Output>,
    health: Arc<Health>,
    /// Outputs pushed and not yet committed (or logged): queued or in the writer's hands.
    unsettled: Arc<AtomicUsize>,
}

impl PersistQueue {
    /// Starts the writer for `pbx`. `give_up` fires at the shutdown deadline: from then on,
    /// what is still waiting goes to the log instead of the store.
    pub fn start(
        bridge: Arc<Bridge>,
        pbx: String,
        capacity: usize,
        health: Arc<Health>,
        give_up: CancellationToken,
    ) -> (PersistQueue, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let unsettled = Arc::new(AtomicUsize::new(0));
        let writer = tokio::spawn(write_all(
            bridge,
            pbx,
            rx,
            health.clone(),
            give_up,
            unsettled.clone(),
        ));
        let queue = PersistQueue {
            tx,
            health,
            unsettled,
        };
        (queue, writer)
    }

    /// Nothing pushed is waiting for the store. The live-call snapshot is only saved then:
    /// a call the tracker has finished is out of the snapshot, so saving one while that call
    /// still waits here would lose it to a kill -9 in between.
    pub fn is_settled(&self) -> bool {
        self.unsettled.load(Ordering::Acquire) == 0
    }

    /// Queues the outputs in order, waiting for room when the queue is full (back-pressure
    /// on the tracker). Cancel-safe: an output not yet queued stays in `outputs`. Returns
    /// false when the writer is gone.
    pub async fn push(&self, outputs: &mut Vec<Output>) -> bool {
        while !outputs.is_empty() {
            let Ok(permit) = self.tx.reserve().await else {
                return false;
            };
            self.unsettled.fetch_add(1, Ordering::AcqRel);
            permit.send(outputs.remove(0));
        }
        self.health
            .set_store_queue(self.tx.max_capacity() - self.tx.capacity());
        true
    }

    /// Queues the outputs unless `give_up` fires first; what could not be queued goes to the
    /// log.
    pub async fn push_or_log(&self, outputs: &mut Vec<Output>, give_up: &CancellationToken) {
        tokio::select! {
            _ = self.push(outputs) => {}
            _ = give_up.cancelled() => {}
        }
        for o in outputs.drain(..) {
            log_unstored(&o);
        }
    }
}

async fn write_all(
    bridge: Arc<Bridge>,
    pbx: String,
    mut rx: mpsc::Receiver<Output>,
    health: Arc<Health>,
    give_up: CancellationToken,
    unsettled: Arc<AtomicUsize>,
) {
    let capacity = rx.max_capacity();
    while let Some(output) = rx.recv().await {
        store_one(&bridge, &pbx, &output, &rx, &health, &give_up).await;
        unsettled.fetch_sub(1, Ordering::AcqRel);
        health.set_store_queue(rx.len().min(capacity));
    }
}

/// Stores one output, retrying while the store refuses, until it commits or `give_up`.
async fn store_one(
    bridge: &Bridge,
    pbx: &str,
    output: &Output,
    rx: &mpsc::Receiver<Output>,
    health: &Health,
    give_up: &CancellationToken,
) {
    {
        if give_up.is_cancelled() {
            log_unstored(output);
            return;
        }
        let mut wait = Duration::from_millis(200);
        loop {
            let attempt = bridge.try_store(pbx, output);
            health.set_store_writing(true);
            let result = tokio::select! {
                r = attempt => r,
                _ = give_up.cancelled() => Err("shutdown deadline reached".to_string()),
            };
            health.set_store_writing(false);
            match result {
                Ok(()) => {
                    health.set_store_error(None);
                    break;
                }
                Err(e) if !give_up.is_cancelled() => {
                    health.set_store_error(Some(e.clone()));
                    tracing::error!(error = %e, waiting = rx.len() + 1, retry_in_ms = wait.as_millis() as u64, "the store cannot write; calls wait in memory");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = give_up.cancelled() => {}
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(_) => {
                    log_unstored(output);
                    break;
                }
            }
        }
    }
}

fn log_unstored(output: &Output) {
    let call = match output {
        Output::Finished(call) => call,
        Output::Moment(_, call) => call,
    };
    let json = serde_json::to_string(call).unwrap_or_default();
    metrics::counter!("azb_calls_unstored_total").increment(1);
    tracing::error!(linkedid = %call.linkedid, call = %json, "stopping with the store unavailable: this call is only in the log");
}
