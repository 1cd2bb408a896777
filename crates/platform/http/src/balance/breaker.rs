//! One endpoint's circuit breaker: closed → open → half-open → closed.
//!
//! The closed state, where every request is, costs atomic loads only: the
//! state and the open deadline are mirrored in atomics so that a pick can
//! skip an open endpoint without taking its lock. The lock guards the
//! transitions, which happen a few times per outage, not per request.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use super::BreakerSettings;

/// Trial requests let through at once while half-open: one is enough to
/// learn whether the endpoint is back, and a hanging endpoint then holds
/// one request, not a burst.
const HALF_OPEN_TRIALS: u32 = 1;

/// The state of a breaker, as the `upstream_breaker_state` gauge reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BreakerState {
    Closed = 0,
    HalfOpen = 1,
    Open = 2,
}

impl BreakerState {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Closed,
            1 => Self::HalfOpen,
            _ => Self::Open,
        }
    }
}

/// What a failure did to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureOutcome {
    /// Nothing changed state.
    Counted,
    /// The failure streak reached the threshold: the balancer decides
    /// whether ejecting this endpoint is allowed.
    Tripped,
    /// A trial failed and the breaker opened again, for longer.
    Reopened,
}

#[derive(Debug)]
struct Transitions {
    state: BreakerState,
    /// Failed trials since the breaker last closed: the open period doubles
    /// with each.
    reopens: u32,
    trials: u32,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    /// Mirrors `Transitions::state` for lock-free reads.
    state: AtomicU8,
    /// When an open breaker may let a trial through (ms on the balancer's
    /// clock); mirrored so that an open endpoint is skipped without locking.
    open_until_ms: AtomicU64,
    /// Mirrors `Transitions::trials`, same reason.
    trials: AtomicU32,
    /// Failures in a row while closed.
    failures: AtomicU32,
    transitions: Mutex<Transitions>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: AtomicU8::new(BreakerState::Closed as u8),
            open_until_ms: AtomicU64::new(0),
            trials: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            transitions: Mutex::new(Transitions {
                state: BreakerState::Closed,
                reopens: 0,
                trials: 0,
            }),
        }
    }
}

impl Breaker {
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn is_closed(&self) -> bool {
        self.state() == BreakerState::Closed
    }

    /// Failures in a row while closed; at or over the threshold an endpoint
    /// still closed is only kept in rotation by the ejection cap.
    pub fn failure_streak(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn open_until_ms(&self) -> u64 {
        self.open_until_ms.load(Ordering::Relaxed)
    }

    /// A success: the streak ends, and a successful trial closes the
    /// breaker. Returns the new state when it changed.
    pub fn on_success(&self, trial: bool) -> Option<BreakerState> {
        // A load first: most successes find no streak, and a store would
        // bounce the cache line between cores for nothing.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if !trial {
            // A straggler sent before the breaker opened proves little.
            return None;
        }
        let mut t = self.lock();
        if t.state != BreakerState::HalfOpen {
            return None;
        }
        t.reopens = 0;
        t.trials = 0;
        self.failures.store(0, Ordering::Relaxed);
        Some(self.set_state(&mut t, BreakerState::Closed))
    }

    pub fn on_failure(
        &self,
        trial: bool,
        now_ms: u64,
        settings: &BreakerSettings,
    ) -> FailureOutcome {
        if trial {
            let mut t = self.lock();
            if t.state == BreakerState::HalfOpen {
                t.reopens = t.reopens.saturating_add(1);
                self.open_locked(&mut t, now_ms, settings);
                return FailureOutcome::Reopened;
            }
            return FailureOutcome::Counted;
        }
        if !self.is_closed() {
            return FailureOutcome::Counted;
        }
        let streak = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if streak >= settings.consecutive_failures.max(1) {
            FailureOutcome::Tripped
        } else {
            FailureOutcome::Counted
        }
    }

    /// Eject: open for the current backoff period. Returns false when the
    /// breaker was no longer closed (someone else opened it).
    pub fn open(&self, now_ms: u64, settings: &BreakerSettings) -> bool {
        let mut t = self.lock();
        if t.state != BreakerState::Closed {
            return false;
        }
        self.open_locked(&mut t, now_ms, settings);
        true
    }

    /// Claim a trial slot if the open period is over (open → half-open) or
    /// a half-open slot is free. Returns the new state as well when the
    /// breaker moved to half-open.
    pub fn try_trial(&self, now_ms: u64) -> (bool, Option<BreakerState>) {
        // Lock-free refusals for the common cases: still open, or the trial
        // already in flight.
        match self.state() {
            BreakerState::Closed => return (false, None),
            BreakerState::Open if now_ms < self.open_until_ms() => return (false, None),
            BreakerState::HalfOpen if self.trials.load(Ordering::Relaxed) >= HALF_OPEN_TRIALS => {
                return (false, None);
            }
            _ => {}
        }
        let mut t = self.lock();
        let mut changed = None;
        if t.state == BreakerState::Open && now_ms >= self.open_until_ms() {
            t.trials = 0;
            changed = Some(self.set_state(&mut t, BreakerState::HalfOpen));
        }
        if t.state == BreakerState::HalfOpen && t.trials < HALF_OPEN_TRIALS {
            t.trials += 1;
            self.trials.store(t.trials, Ordering::Relaxed);
            return (true, changed);
        }
        (false, changed)
    }

    /// A trial was cancelled before it told anything: free its slot.
    pub fn release_trial(&self) {
        let mut t = self.lock();
        if t.state == BreakerState::HalfOpen && t.trials > 0 {
            t.trials -= 1;
            self.trials.store(t.trials, Ordering::Relaxed);
        }
    }

    fn open_locked(&self, t: &mut Transitions, now_ms: u64, settings: &BreakerSettings) {
        let period = open_period_ms(settings, t.reopens);
        t.trials = 0;
        self.trials.store(0, Ordering::Relaxed);
        self.open_until_ms
            .store(now_ms.saturating_add(period), Ordering::Relaxed);
        self.set_state(t, BreakerState::Open);
    }

    fn set_state(&self, t: &mut Transitions, state: BreakerState) -> BreakerState {
        t.state = state;
        self.state.store(state as u8, Ordering::Release);
        state
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Transitions> {
        // The state stays consistent even if a holder panicked: every
        // transition is a few plain assignments.
        self.transitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `open_ms`, doubled for each failed trial, capped at `max_open_ms`.
pub(crate) fn open_period_ms(settings: &BreakerSettings, reopens: u32) -> u64 {
    let factor = 1u64.checked_shl(reopens.min(32)).unwrap_or(u64::MAX);
    settings
        .open_ms
        .saturating_mul(factor)
        .min(settings.max_open_ms.max(settings.open_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: 3,
            open_ms: 100,
            max_open_ms: 350,
            max_ejection_percent: 50,
        }
    }

    #[test]
    fn trips_after_the_streak_and_a_success_resets_it() {
        let breaker = Breaker::default();
        let s = settings();
        assert_eq!(breaker.on_failure(false, 0, &s), FailureOutcome::Counted);
        assert_eq!(breaker.on_failure(false, 0, &s), FailureOutcome::Counted);
        breaker.on_success(false);
        assert_eq!(breaker.on_failure(false, 0, &s), FailureOutcome::Counted);
        assert_eq!(breaker.on_failure(false, 0, &s), FailureOutcome::Counted);
        assert_eq!(breaker.on_failure(false, 0, &s), FailureOutcome::Tripped);
        assert!(breaker.is_closed(), "tripping alone does not eject");
    }

    #[test]
    fn open_half_open_closed() {
        let breaker = Breaker::default();
        let s = settings();
        assert!(breaker.open(1_000, &s));
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.try_trial(1_099), (false, None), "still open");
        assert_eq!(
            breaker.try_trial(1_100),
            (true, Some(BreakerState::HalfOpen))
        );
        assert_eq!(
            breaker.try_trial(1_100),
            (false, None),
            "one trial at a time"
        );
        assert_eq!(breaker.on_success(true), Some(BreakerState::Closed));
        assert!(breaker.is_closed());
    }

    #[test]
    fn failed_trials_double_the_open_period_up_to_the_cap() {
        let breaker = Breaker::default();
        let s = settings();
        breaker.open(0, &s);
        for expected in [200, 350, 350] {
            let now = breaker.open_until_ms();
            assert!(breaker.try_trial(now).0);
            assert_eq!(breaker.on_failure(true, now, &s), FailureOutcome::Reopened);
            assert_eq!(breaker.state(), BreakerState::Open);
            assert_eq!(breaker.open_until_ms() - now, expected);
        }
        // A successful trial resets the backoff for the next outage.
        let now = breaker.open_until_ms();
        assert!(breaker.try_trial(now).0);
        breaker.on_success(true);
        breaker.open(now, &s);
        assert_eq!(breaker.open_until_ms() - now, 100);
    }

    #[test]
    fn a_cancelled_trial_frees_its_slot_and_stragglers_do_not_close() {
        let breaker = Breaker::default();
        let s = settings();
        breaker.open(0, &s);
        assert!(breaker.try_trial(100).0);
        assert_eq!(breaker.on_success(false), None, "not the trial");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        breaker.release_trial();
        assert!(breaker.try_trial(100).0, "the slot is free again");
    }
}
