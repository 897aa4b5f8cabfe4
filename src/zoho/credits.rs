//! Zoho API credits as Zoho counts them, and the day's projected use against the budget.
//!
//! Zoho meters every org with a daily budget of credits over a rolling 24 hours: a read costs
//! one, an insert of N records costs ⌈N/10⌉. The bridge spends most of its credits on Call
//! inserts, so batching them by tens is what keeps a contact center inside its budget; this
//! module is the bookkeeping that shows whether it does. Zoho's own figure, the
//! `X-API-CREDITS-REMAINING` header (sent, by some accounts, only once half the budget is
//! spent), is kept when present: it also counts what other applications of the org spend.
//!
//! Pure logic: times are passed in (seconds), nothing here does I/O.

use std::collections::VecDeque;

/// Records one credit pays for in an insert, update or upsert.
pub const RECORDS_PER_CREDIT: usize = 10;

/// The rolling window Zoho meters over.
pub const DAY_SECONDS: u64 = 24 * 3600;

/// Credits of an insert of `records` records (an empty insert is still a request).
pub fn insert_cost(records: usize) -> u64 {
    records.div_ceil(RECORDS_PER_CREDIT).max(1) as u64
}

/// Credits of a request: writes by their records, everything else one.
pub fn request_cost(write_records: Option<usize>) -> u64 {
    write_records.map_or(1, insert_cost)
}

/// Bucket width of the rolling window.
const BUCKET_SECONDS: u64 = 60;

/// Below this much history a projection would turn the start-up reads (users, phone index)
/// into an alarming daily rate: the rate is taken over at least this long.
const MIN_PROJECTION_SECONDS: u64 = 3600;

/// How often the budget warning may repeat while the projection stays high.
const WARN_EVERY_SECONDS: u64 = 3600;

/// Why the budget warning fired.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetWarning {
    /// Credits this bridge is on course to spend in 24 hours.
    pub projected: f64,
    /// Credits the org has used, per Zoho's header (all its applications), when known.
    pub org_used: Option<u64>,
    pub budget: u64,
    pub share: f64,
}

/// Credits spent by one account (one org), over the last 24 hours.
#[derive(Debug, Clone)]
pub struct CreditMeter {
    budget: Option<u64>,
    warn_share: f64,
    started: u64,
    total: u64,
    /// `(minute start, credits)`, oldest first, none older than a day.
    buckets: VecDeque<(u64, u64)>,
    remaining: Option<u64>,
    last_warned: Option<u64>,
}

impl CreditMeter {
    /// `budget`: the org's daily credits when configured; `warn_share`: the share of it past
    /// which the projected use is worth a warning.
    pub fn new(budget: Option<u64>, warn_share: f64, now: u64) -> CreditMeter {
        CreditMeter {
            budget,
            warn_share,
            started: now,
            total: 0,
            buckets: VecDeque::new(),
            remaining: None,
            last_warned: None,
        }
    }

    /// Notes `cost` credits spent at `now`.
    pub fn spend(&mut self, now: u64, cost: u64) {
        self.total += cost;
        let minute = now - now % BUCKET_SECONDS;
        match self.buckets.back_mut() {
            Some((m, c)) if *m == minute => *c += cost,
            _ => self.buckets.push_back((minute, cost)),
        }
        self.expire(now);
    }

    /// Zoho's `X-API-CREDITS-REMAINING`.
    pub fn set_remaining(&mut self, remaining: u64) {
        self.remaining = Some(remaining);
    }

    pub fn remaining(&self) -> Option<u64> {
        self.remaining
    }

    /// Credits spent since the meter started.
    pub fn total(&self) -> u64 {
        self.total
    }

    fn expire(&mut self, now: u64) {
        while let Some((m, _)) = self.buckets.front() {
            if m + DAY_SECONDS + BUCKET_SECONDS <= now {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    /// Credits spent in the last 24 hours.
    pub fn last_day(&self, now: u64) -> u64 {
        self.buckets
            .iter()
            .filter(|(m, _)| m + DAY_SECONDS + BUCKET_SECONDS > now)
            .map(|(_, c)| c)
            .sum()
    }

    /// Credits at the present rate over 24 hours: the last day's use scaled from the time
    /// observed (at least an hour, at most a day).
    pub fn projected_day(&self, now: u64) -> f64 {
        let observed = now
            .saturating_sub(self.started)
            .clamp(MIN_PROJECTION_SECONDS, DAY_SECONDS);
        self.last_day(now) as f64 * DAY_SECONDS as f64 / observed as f64
    }

    /// A warning when the projected use (or what Zoho says the org has used) passes the
    /// configured share of the budget; at most once an hour.
    pub fn check(&mut self, now: u64) -> Option<BudgetWarning> {
        let budget = self.budget?;
        let limit = budget as f64 * self.warn_share;
        let projected = self.projected_day(now);
        let org_used = self.remaining.map(|r| budget.saturating_sub(r));
        let over = projected > limit || org_used.is_some_and(|u| u as f64 > limit);
        if !over {
            return None;
        }
        if self
            .last_warned
            .is_some_and(|t| now < t + WARN_EVERY_SECONDS)
        {
            return None;
        }
        self.last_warned = Some(now);
        Some(BudgetWarning {
            projected,
            org_used,
            budget,
            share: self.warn_share,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_cost_one_credit_per_ten_records() {
        // Zoho: ⌈records / 10⌉ per insert; the figures are worked by hand.
        assert_eq!(insert_cost(1), 1);
        assert_eq!(insert_cost(9), 1);
        assert_eq!(insert_cost(10), 1);
        assert_eq!(insert_cost(11), 2);
        assert_eq!(insert_cost(20), 2);
        assert_eq!(insert_cost(100), 10);
        assert_eq!(insert_cost(0), 1);
        assert_eq!(request_cost(None), 1);
        assert_eq!(request_cost(Some(25)), 3);
    }

    #[test]
    fn the_window_forgets_after_a_day() {
        let t0 = 1_000_000;
        let mut m = CreditMeter::new(None, 0.8, t0);
        m.spend(t0, 5);
        m.spend(t0 + 30, 2);
        m.spend(t0 + 3600, 1);
        assert_eq!(m.last_day(t0 + 3600), 8);
        assert_eq!(m.total(), 8);
        // A day and two minutes after the first spend, only the last one is left.
        assert_eq!(m.last_day(t0 + DAY_SECONDS + 120), 1);
        m.spend(t0 + DAY_SECONDS + 3000, 1);
        assert_eq!(m.last_day(t0 + DAY_SECONDS + 3000), 2);
        assert_eq!(m.total(), 9);
    }

    #[test]
    fn projection_scales_the_observed_rate_to_a_day() {
        let t0 = 0;
        let mut m = CreditMeter::new(Some(50_000), 0.8, t0);
        // 100 credits in the first ten minutes: projected over at least an hour → 2 400.
        m.spend(t0 + 600, 100);
        assert_eq!(m.projected_day(t0 + 600), 2400.0);
        // After two hours with 1 000 credits in all: 12 000 a day.
        m.spend(t0 + 7200, 900);
        assert_eq!(m.projected_day(t0 + 7200), 12_000.0);
        assert!(m.check(t0 + 7200).is_none());
    }

    #[test]
    fn warns_past_the_share_once_an_hour() {
        let mut m = CreditMeter::new(Some(10_000), 0.5, 0);
        // 300 credits in the first hour → 7 200 a day, past half of 10 000.
        m.spend(3600, 300);
        let w = m.check(3600).expect("warning");
        assert_eq!(w.projected, 7200.0);
        assert_eq!(w.budget, 10_000);
        assert!(m.check(3700).is_none(), "repeats at most once an hour");
        // Another 300 by two hours: 600 over 7 200 s → 7 200 a day, still past the share.
        m.spend(7200, 300);
        assert!(m.check(3600 + WARN_EVERY_SECONDS).is_some());
    }

    #[test]
    fn zoho_s_remaining_header_counts_the_whole_org() {
        let mut m = CreditMeter::new(Some(10_000), 0.8, 0);
        m.spend(10, 1);
        assert!(m.check(10).is_none());
        // Other applications spent most of the budget: Zoho says 1 500 remain.
        m.set_remaining(1500);
        let w = m.check(20).expect("warning from the header");
        assert_eq!(w.org_used, Some(8500));
        // Without a budget there is nothing to compare with.
        let mut n = CreditMeter::new(None, 0.8, 0);
        n.set_remaining(1);
        assert!(n.check(0).is_none());
    }
}
