//! Per-service concurrency limits: one slow service cannot take every
//! connection and task of the gateway, and a saturated one sheds load at
//! once (503 + `Retry-After`) instead of queueing requests that would time
//! out anyway.
//!
//! A counter, not a semaphore: there is no queue to wait in, so entering is
//! one atomic increment and leaving one decrement.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use metrics::Counter;

#[derive(Debug)]
pub(crate) struct Bulkhead {
    in_flight: AtomicUsize,
    max: usize,
    shed: Counter,
}

impl Bulkhead {
    pub fn new(service: &str, max: usize) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            max,
            shed: metrics::counter!("gateway_load_shed_total", "service" => service.to_owned()),
        }
    }

    /// A slot for one request until the permit is dropped (when its response
    /// body has been sent), or `None` when the service is saturated.
    pub fn enter(self: &Arc<Self>) -> Option<Permit> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= self.max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.shed.increment(1);
            return None;
        }
        Some(Permit(self.clone()))
    }
}

/// One request's slot in its service's bulkhead.
#[derive(Debug)]
pub(crate) struct Permit(Arc<Bulkhead>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_frees_slots_on_drop() {
        let bulkhead = Arc::new(Bulkhead::new("svc", 2));
        let first = bulkhead.enter().unwrap();
        let _second = bulkhead.enter().unwrap();
        assert!(bulkhead.enter().is_none());
        drop(first);
        assert!(bulkhead.enter().is_some());
    }
}
