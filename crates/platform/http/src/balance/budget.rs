//! A retry budget in the manner of Finagle and linkerd: every request
//! deposits `ratio` of a token, every retry withdraws one, and deposits and
//! withdrawals expire after [`WINDOW_SECS`]. On top, `min_per_second ×
//! WINDOW_SECS` retries are always in reserve so that a client with little
//! traffic can still retry. During an outage the retries therefore add at
//! most `ratio` (plus the small reserve) to the load, however many tries
//! each request is allowed.
//!
//! The window is a ring of one-second slots of atomic counters: depositing
//! is two atomic operations, with no lock. A slot being recycled by one
//! thread while another counts into it may lose that count; the budget is
//! an approximation by nature and errs by a request or two.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::Counter;
use tokio::time::Instant;

use super::RetrySettings;

/// How long deposits and withdrawals count.
pub const WINDOW_SECS: u64 = 10;

/// A slot no second maps to, so fresh slots are outside every window.
const UNUSED: u64 = u64::MAX;

#[derive(Debug)]
struct Slot {
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl Slot {
    const fn new() -> Self {
        Self {
            second: AtomicU64::new(UNUSED),
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }
}

/// Whether a retry may be sent now; shared by every request to one service.
#[derive(Debug)]
pub struct RetryBudget {
    /// Tokens per request, in thousandths (integer arithmetic).
    ratio_milli: u64,
    reserve: u64,
    slots: [Slot; WINDOW_SECS as usize],
    start: Instant,
    retries_total: Counter,
    exhausted_total: Counter,
}

impl RetryBudget {
    pub fn new(service: &str, settings: &RetrySettings) -> Self {
        super::install_recorder();
        let labels = [("service", service.to_owned())];
        Self {
            ratio_milli: (settings.budget_ratio.clamp(0.0, 1000.0) * 1000.0).round() as u64,
            reserve: u64::from(settings.min_per_second) * WINDOW_SECS,
            slots: [const { Slot::new() }; WINDOW_SECS as usize],
            start: Instant::now(),
            retries_total: metrics::counter!("upstream_retries_total", &labels),
            exhausted_total: metrics::counter!("upstream_retry_budget_exhausted_total", &labels),
        }
    }

    /// Count one request (not a retry).
    pub fn deposit(&self) {
        self.slot(self.second())
            .requests
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Take a token for one retry; `false` (and a count in
    /// `upstream_retry_budget_exhausted_total`) when the budget is spent.
    pub fn try_withdraw(&self) -> bool {
        let now = self.second();
        let (requests, retries) = self.window_totals(now);
        let allowed = requests.saturating_mul(self.ratio_milli) / 1000 + self.reserve;
        if retries >= allowed {
            self.exhausted_total.increment(1);
            return false;
        }
        self.slot(now).retries.fetch_add(1, Ordering::Relaxed);
        self.retries_total.increment(1);
        true
    }

    fn second(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    /// The slot of `second`, emptied first if it still holds an older one.
    fn slot(&self, second: u64) -> &Slot {
        let slot = &self.slots[(second % WINDOW_SECS) as usize];
        let held = slot.second.load(Ordering::Acquire);
        if held != second
            && slot
                .second
                .compare_exchange(held, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.retries.store(0, Ordering::Relaxed);
        }
        slot
    }

    fn window_totals(&self, now: u64) -> (u64, u64) {
        let oldest = now.saturating_sub(WINDOW_SECS - 1);
        self.slots
            .iter()
            .filter(|slot| {
                let second = slot.second.load(Ordering::Acquire);
                second != UNUSED && (oldest..=now).contains(&second)
            })
            .fold((0, 0), |(requests, retries), slot| {
                (
                    requests + slot.requests.load(Ordering::Relaxed),
                    retries + slot.retries.load(Ordering::Relaxed),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn budget(ratio: f64, min_per_second: u32) -> RetryBudget {
        RetryBudget::new(
            "test",
            &RetrySettings {
                max_attempts: 3,
                budget_ratio: ratio,
                min_per_second,
            },
        )
    }

    fn withdrawals(budget: &RetryBudget, tries: usize) -> usize {
        (0..tries).filter(|_| budget.try_withdraw()).count()
    }

    #[tokio::test(start_paused = true)]
    async fn the_reserve_alone_allows_min_per_second_times_the_window() {
        let budget = budget(0.2, 1);
        assert_eq!(withdrawals(&budget, 100), 10);
        assert!(!budget.try_withdraw(), "exhausted");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_buy_a_fraction_of_a_retry_each() {
        let budget = budget(0.2, 0);
        assert!(!budget.try_withdraw(), "no requests, no reserve: no retry");
        for _ in 0..50 {
            budget.deposit();
        }
        assert_eq!(withdrawals(&budget, 100), 10, "50 × 0.2");
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_refills_as_the_window_slides() {
        let budget = budget(0.2, 0);
        for _ in 0..50 {
            budget.deposit();
        }
        assert_eq!(withdrawals(&budget, 100), 10);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(withdrawals(&budget, 1), 0, "still spent within the window");
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!(withdrawals(&budget, 10), 2, "new requests add tokens");
        tokio::time::advance(Duration::from_secs(6)).await;
        // The first 50 requests and their 10 retries have expired; the 10
        // requests at 5 s and their 2 retries still count.
        assert_eq!(withdrawals(&budget, 10), 0);
        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..25 {
            budget.deposit();
        }
        assert_eq!(withdrawals(&budget, 10), 5, "a fresh window");
    }
}
