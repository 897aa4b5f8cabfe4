//! Which due rows to send now, so that inserts carry ten records (one Zoho credit pays for
//! ten) without holding a quiet PBX's calls.
//!
//! A group (one account and module) is sent when it holds ten due rows or more, in a multiple
//! of ten (the rest waits for company), or when its oldest row has waited `linger`. When calls
//! end faster than Zoho answers, the rows that become due while a request is in flight are
//! simply there for the next plan: batches grow with the load and no timer is involved. Pure
//! logic: the store supplies the groups, the worker acts on the plan.

use crate::store::DueGroup;
use crate::zoho::credits::RECORDS_PER_CREDIT;

/// What a worker does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The group to lease (index into the groups given) and how many of its rows.
    pub take: Option<(usize, usize)>,
    /// When a lingering group becomes ready (µs since the epoch), if one is waiting.
    pub wake_at: Option<i64>,
}

/// Plans one lease among `groups` at `now`; `limit`: most rows a lease may take.
pub fn plan(groups: &[DueGroup], now: i64, linger: i64, limit: usize) -> Plan {
    let limit = limit.max(1);
    let mut best: Option<(usize, usize, i64)> = None;
    let mut wake_at: Option<i64> = None;
    for (i, g) in groups.iter().enumerate() {
        if g.rows == 0 {
            continue;
        }
        let lingered = now - g.oldest_due >= linger;
        let take = if g.rows >= RECORDS_PER_CREDIT && limit >= RECORDS_PER_CREDIT {
            g.rows.min(limit) / RECORDS_PER_CREDIT * RECORDS_PER_CREDIT
        } else if lingered || g.rows >= limit {
            g.rows.min(limit)
        } else {
            let at = g.oldest_due + linger;
            wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
            continue;
        };
        // The group that has waited longest goes first.
        if best.is_none_or(|(_, _, oldest)| g.oldest_due < oldest) {
            best = Some((i, take, g.oldest_due));
        }
    }
    Plan {
        take: best.map(|(i, n, _)| (i, n)),
        wake_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn g(rows: usize, oldest_due: i64) -> DueGroup {
        DueGroup {
            account: "main".into(),
            module: "Calls".into(),
            rows,
            oldest_due,
        }
    }

    #[test]
    fn a_few_fresh_rows_wait_for_company_until_linger() {
        let p = plan(&[g(3, 10 * S)], 11 * S, 2 * S, 50);
        assert_eq!(p.take, None);
        assert_eq!(p.wake_at, Some(12 * S));
        // Once the oldest has waited two seconds, all three go.
        let p = plan(&[g(3, 10 * S)], 12 * S, 2 * S, 50);
        assert_eq!(p.take, Some((0, 3)));
    }

    #[test]
    fn ten_or_more_go_at_once_in_tens() {
        assert_eq!(
            plan(&[g(10, 10 * S)], 10 * S, 2 * S, 50).take,
            Some((0, 10))
        );
        assert_eq!(
            plan(&[g(27, 10 * S)], 10 * S, 2 * S, 50).take,
            Some((0, 20))
        );
        // The lease limit caps it, still in tens.
        assert_eq!(
            plan(&[g(95, 10 * S)], 10 * S, 2 * S, 50).take,
            Some((0, 50))
        );
        assert_eq!(
            plan(&[g(95, 10 * S)], 10 * S, 2 * S, 45).take,
            Some((0, 40))
        );
    }

    #[test]
    fn without_linger_everything_due_goes() {
        assert_eq!(plan(&[g(1, 10 * S)], 10 * S, 0, 50).take, Some((0, 1)));
        // A lease limit under ten sends what it may.
        assert_eq!(plan(&[g(7, 10 * S)], 10 * S, 2 * S, 5).take, Some((0, 5)));
    }

    #[test]
    fn the_longest_waiting_ready_group_first() {
        let groups = [g(12, 9 * S), g(2, 5 * S), g(1, 9 * S + 500_000)];
        // At 9.6 s: group 1 lingered (oldest 5 s), group 0 has ten; group 1 waited longest.
        let p = plan(&groups, 9 * S + 600_000, 2 * S, 50);
        assert_eq!(p.take, Some((1, 2)));
        assert_eq!(p.wake_at, Some(11 * S + 500_000));
    }
}
