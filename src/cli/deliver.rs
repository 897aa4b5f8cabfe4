//! `replay --deliver`: the daemon's stages (tracker, triggers, store, delivery) on a capture.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use ami_zoho_bridge::config::Config;

use super::UsageError;

/// `replay FILE --deliver`: the daemon's stages on a recorded capture, then wait for the
/// outbox to drain and print a summary line.
pub(crate) async fn replay_deliver(
    file: &Path,
    cfg: Config,
    speed: Option<f64>,
    wait: f64,
) -> anyhow::Result<()> {
    use ami_zoho_bridge::daemon::Bridge;
    use tokio_util::sync::CancellationToken;

    let bridge = Bridge::start(&cfg).await.map_err(daemon_error)?;
    let stop = CancellationToken::new();
    let workers = bridge.delivery.spawn(stop.clone());
    let calls = replay_into(&bridge, &cfg, file, speed).await?;
    let stats = drain(&bridge, wait).await?;
    stop.cancel();
    futures::future::join_all(workers).await;
    bridge.store.close().await;
    println!(
        "{}",
        serde_json::json!({
            "calls": calls,
            "delivered": stats.delivered,
            "failed": stats.failed,
            "pending": stats.pending,
        })
    );
    if stats.failed > 0 {
        eprintln!(
            "warning: {} record(s) parked as failed, with the reason: `ami-zoho-bridge outbox list --state failed`, then `outbox retry --all-failed` once fixed",
            stats.failed
        );
    }
    if stats.pending > 0 {
        anyhow::bail!(
            "{} record(s) still pending after {wait} s (they stay in the outbox)",
            stats.pending
        );
    }
    Ok(())
}

/// Configuration problems found when the bridge starts exit with code 2, like a bad file.
pub(crate) fn daemon_error(e: ami_zoho_bridge::daemon::DaemonError) -> anyhow::Error {
    match e {
        ami_zoho_bridge::daemon::DaemonError::Config(m) => UsageError(m).into(),
        other => other.into(),
    }
}

/// How many of `outputs` are finished calls.
pub(crate) fn finished_count(outputs: &[ami_zoho_bridge::calls::Output]) -> usize {
    outputs
        .iter()
        .filter(|o| matches!(o, ami_zoho_bridge::calls::Output::Finished(_)))
        .count()
}

/// Feeds a capture through tracker and triggers into the store, at `speed` × the recorded
/// pace (as fast as possible without). Returns the number of finished calls.
pub(crate) async fn replay_into(
    bridge: &ami_zoho_bridge::daemon::Bridge,
    cfg: &Config,
    file: &Path,
    speed: Option<f64>,
) -> anyhow::Result<usize> {
    use ami_zoho_bridge::ami::replay::Replay;
    use ami_zoho_bridge::ami::SourceEvent;
    use ami_zoho_bridge::calls::Micros;
    use ami_zoho_bridge::daemon::tracker_for;
    use tokio_util::sync::CancellationToken;

    let replay = Replay::open(file)
        .with_context(|| format!("opening capture {}", file.display()))?
        .with_codec(ami_zoho_bridge::calls::tracker_codec());
    let mut tracker = tracker_for(cfg);
    let mut outputs = Vec::new();
    let never = CancellationToken::new();
    let pace = speed.filter(|s| s.is_finite() && *s > 0.0);
    let started = std::time::Instant::now();
    let mut first_ts: Option<i64> = None;
    let mut calls = 0usize;
    for event in replay {
        let event = event?;
        if let SourceEvent::Message(m) = &event {
            let ts = m.get("Timestamp").and_then(Micros::parse_epoch);
            if let (Some(x), Some(ts)) = (pace, ts) {
                let t0 = *first_ts.get_or_insert(ts.0);
                let due = Duration::from_secs_f64(((ts.0 - t0).max(0) as f64 / 1e6) / x);
                if let Some(sleep) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(sleep).await;
                }
            }
        }
        tracker.feed(&event, Micros(0), &mut outputs);
        calls += finished_count(&outputs);
        bridge.handle("replay", &mut outputs, &never).await;
    }
    tracker.finish(&mut outputs);
    calls += finished_count(&outputs);
    bridge.handle("replay", &mut outputs, &never).await;
    Ok(calls)
}

/// Waits until nothing is pending (or `wait` seconds pass) and returns the outbox counts.
pub(crate) async fn drain(
    bridge: &ami_zoho_bridge::daemon::Bridge,
    wait: f64,
) -> anyhow::Result<ami_zoho_bridge::store::OutboxStats> {
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(wait.max(0.0));
    loop {
        let s = bridge.store.outbox_stats().await?;
        if s.pending == 0 || std::time::Instant::now() >= deadline {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
