//! Supervision of the daemon's long-running tasks, so that no failure looks like success.
//!
//! A task that panics is logged (error level), counted (`azb_task_panics_total{task}`) and
//! shown by `/readyz` as down. Then, by kind:
//! - restartable tasks (delivery workers: their leases run out, a fresh worker takes over)
//!   are started again with a growing pause (0.5 s doubling to 30 s), and are shown up again
//!   once the new one has run for [`HEALTHY_AFTER`];
//! - tasks whose state cannot be rebuilt in place (a PBX session and its call tracker) turn
//!   into an error of `run`, hence a non-zero exit that systemd's `Restart=on-failure` acts on.
//!
//! Debug builds read `AZB_TEST_PANIC` (`delivery` or `pbx`): the named task panics once, so
//! tests can check all of the above on the real binary. Release builds never read it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::ops::Health;

/// A restarted task counts as healthy again after running this long.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(5);

/// The test hook: panics once per process at `point` when `AZB_TEST_PANIC` names it. A
/// no-op in release builds.
pub fn test_panic(point: &str) {
    #[cfg(debug_assertions)]
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        static FIRED: AtomicBool = AtomicBool::new(false);
        if std::env::var("AZB_TEST_PANIC").is_ok_and(|v| v == point)
            && !FIRED.swap(true, Ordering::SeqCst)
        {
            panic!("AZB_TEST_PANIC={point}: injected panic");
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

/// The text of a panic's payload, for the log.
pub fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into()),
        Err(e) => e.to_string(),
    }
}

/// Runs `make()`'s task until it ends by itself or `stop`; restarts it after a panic.
pub async fn restart_on_panic<F, Fut>(
    name: String,
    health: Arc<Health>,
    stop: CancellationToken,
    make: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut pause = Duration::from_millis(500);
    loop {
        let mut task = tokio::spawn(make());
        let healthy = tokio::time::sleep(HEALTHY_AFTER);
        tokio::pin!(healthy);
        let mut marked_up = false;
        let result = loop {
            tokio::select! {
                r = &mut task => break r,
                _ = &mut healthy, if !marked_up => {
                    health.set_task_down(&name, None);
                    marked_up = true;
                    pause = Duration::from_millis(500);
                }
            }
        };
        match result {
            Err(e) if e.is_panic() => {
                let why = panic_text(e);
                health.task_panicked(&name);
                health.set_task_down(&name, Some(format!("panicked: {why}")));
                tracing::error!(task = %name, panic = %why, restart_in_ms = pause.as_millis() as u64, "task panicked; starting a new one");
                if stop.is_cancelled() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => return,
                }
                pause = (pause * 2).min(Duration::from_secs(30));
            }
            _ => {
                health.set_task_down(&name, None);
                return;
            }
        }
    }
}
