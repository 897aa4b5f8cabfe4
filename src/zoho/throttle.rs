//! How many requests one account may have in flight: at most `max_in_flight`, halved on every
//! 429 and grown back by one per window of successes (additive increase, multiplicative
//! decrease, as TCP does).
//!
//! Zoho caps concurrent requests per org (10 to 25 by edition) and answers 429 past the cap;
//! it also answers 429 when the day's credits run out. A bridge that only retried would keep
//! knocking at the same rate; one that slows down lets the org's other applications (and other
//! bridges sharing the org) through, then finds its way back up. The default cap stays below
//! the smallest paid edition's, so one bridge alone never meets it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The window arithmetic, without the waiting: unit-tested on its own.
#[derive(Debug, Clone)]
pub struct Aimd {
    max: usize,
    window: f64,
    /// When the last 429 came: the window does not grow again for [`COOL_DOWN`] after it,
    /// or at a cap of one it would go back to two at the first success and meet the cap again.
    throttled_at: Option<Instant>,
}

/// How long after a 429 the window stays where it was cut to.
pub const COOL_DOWN: Duration = Duration::from_secs(5);

impl Aimd {
    pub fn new(max: usize) -> Aimd {
        let max = max.max(1);
        Aimd {
            max,
            window: max as f64,
            throttled_at: None,
        }
    }

    /// Requests that may be in flight now.
    pub fn limit(&self) -> usize {
        (self.window.floor() as usize).clamp(1, self.max)
    }

    /// An answer that was not a 429 at `now`: one more request per window of successes,
    /// once the cool-down after the last 429 is over.
    pub fn success(&mut self, now: Instant) {
        if self
            .throttled_at
            .is_some_and(|t| now.saturating_duration_since(t) < COOL_DOWN)
        {
            return;
        }
        self.window = (self.window + 1.0 / self.window).min(self.max as f64);
    }

    /// A 429 at `now`: half as many.
    pub fn throttled(&mut self, now: Instant) {
        self.window = (self.window / 2.0).max(1.0);
        self.throttled_at = Some(now);
    }
}

struct State {
    aimd: Aimd,
    in_flight: usize,
}

/// The gate every request of one account passes.
pub struct InFlight {
    state: Mutex<State>,
    freed: Notify,
}

/// A place in flight; given back on drop.
pub struct Slot<'a> {
    gate: &'a InFlight,
}

impl InFlight {
    pub fn new(max: usize) -> InFlight {
        InFlight {
            state: Mutex::new(State {
                aimd: Aimd::new(max),
                in_flight: 0,
            }),
            freed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two numbers always left consistent: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a place under the current limit.
    pub async fn acquire(&self) -> Slot<'_> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a release between the check and the wait is seen.
            freed.as_mut().enable();
            {
                let mut s = self.lock();
                if s.in_flight < s.aimd.limit() {
                    s.in_flight += 1;
                    return Slot { gate: self };
                }
            }
            freed.await;
        }
    }

    /// Feeds an answer back: `throttled` for a 429.
    pub fn answered(&self, throttled: bool) {
        let mut s = self.lock();
        if throttled {
            s.aimd.throttled(Instant::now());
            tracing::warn!(
                limit = s.aimd.limit(),
                "Zoho answered 429: fewer requests in flight for a while"
            );
        } else {
            s.aimd.success(Instant::now());
        }
        metrics::gauge!("azb_zoho_in_flight_limit").set(s.aimd.limit() as f64);
    }

    /// The current limit (for metrics and tests).
    pub fn limit(&self) -> usize {
        self.lock().aimd.limit()
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        {
            let mut s = self.gate.lock();
            s.in_flight = s.in_flight.saturating_sub(1);
        }
        self.gate.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_429_and_grows_back_by_one_per_window() {
        let t0 = Instant::now();
        let mut a = Aimd::new(8);
        assert_eq!(a.limit(), 8);
        a.throttled(t0);
        assert_eq!(a.limit(), 4);
        a.throttled(t0);
        a.throttled(t0);
        a.throttled(t0);
        assert_eq!(a.limit(), 1, "never below one");
        // Within the cool-down successes do not widen it.
        a.success(t0 + Duration::from_secs(1));
        assert_eq!(a.limit(), 1);
        let later = t0 + COOL_DOWN;
        // Then from 1: one success brings it to 2; at 2, each success adds 1/window, so
        // three more (2 → 2.5 → 2.9 → 3.24) reach 3.
        a.success(later);
        assert_eq!(a.limit(), 2);
        a.success(later);
        a.success(later);
        assert_eq!(a.limit(), 2);
        a.success(later);
        assert_eq!(a.limit(), 3);
        for _ in 0..1000 {
            a.success(later);
        }
        assert_eq!(a.limit(), 8, "never above the configured cap");
    }

    #[tokio::test]
    async fn waits_for_a_place_under_the_limit() {
        let gate = std::sync::Arc::new(InFlight::new(2));
        let a = gate.acquire().await;
        let _b = gate.acquire().await;
        let g2 = gate.clone();
        let third = tokio::spawn(async move {
            let _c = g2.acquire().await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!third.is_finished(), "a third request waits");
        drop(a);
        tokio::time::timeout(std::time::Duration::from_secs(5), third)
            .await
            .expect("released in time")
            .expect("join");
        // After a 429 the limit is 1: with one place held, the next waits.
        gate.answered(true);
        assert_eq!(gate.limit(), 1);
    }
}
