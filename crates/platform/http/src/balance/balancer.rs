//! The set of endpoints of one service, and the choice of one per try.
//!
//! The set lives behind an `ArcSwap`: picks read it without locking while
//! discovery replaces it. A pick costs a clock read only when some breaker
//! is not closed, a scan of the (small) set, and two atomic increments.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rand::Rng;
use tokio::time::Instant;

use super::breaker::{BreakerState, FailureOutcome};
use super::budget::RetryBudget;
use super::endpoint::{DEFAULT_WEIGHT, Endpoint, EndpointId, InvalidEndpoint};
use super::{BreakerSettings, RetrySettings, Strategy};

type EndpointSet = Vec<Arc<Endpoint>>;

/// Balances the requests to one service over its endpoints. Cheap to clone:
/// clones share the set and its state.
#[derive(Debug, Clone)]
pub struct Balancer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    service: String,
    strategy: Strategy,
    breaker: BreakerSettings,
    endpoints: ArcSwap<EndpointSet>,
    /// Weights by base URL (without a trailing `/`); URLs not listed weigh
    /// [`DEFAULT_WEIGHT`]. Kept apart from the set so that an endpoint that
    /// joins later gets its weight too.
    weights: ArcSwap<HashMap<String, u32>>,
    /// Ejection decisions look at the whole set; serialising them keeps the
    /// cap exact. Taken on failures that trip a breaker, never per request.
    ejections: Mutex<()>,
    next: AtomicUsize,
    start: Instant,
    budget: RetryBudget,
}

impl Balancer {
    pub fn new(
        service: &str,
        strategy: Strategy,
        breaker: BreakerSettings,
        retry: &RetrySettings,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                service: service.to_owned(),
                strategy,
                breaker,
                endpoints: ArcSwap::from_pointee(Vec::new()),
                weights: ArcSwap::from_pointee(HashMap::new()),
                ejections: Mutex::new(()),
                next: AtomicUsize::new(0),
                start: Instant::now(),
                budget: RetryBudget::new(service, retry),
            }),
        }
    }

    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// Replace the set with `urls` (duplicates collapse). Endpoints whose
    /// URL stays keep their breaker and in-flight count; new ones start
    /// closed. Nothing changes if any URL is invalid.
    pub fn set_endpoints(&self, urls: &[String]) -> Result<(), InvalidEndpoint> {
        let current = self.shared.endpoints.load_full();
        let mut next: Vec<Arc<Endpoint>> = Vec::with_capacity(urls.len());
        for url in urls {
            let normalized = url.trim_end_matches('/');
            if next.iter().any(|e| e.url() == normalized) {
                continue;
            }
            let endpoint = match current.iter().find(|e| e.url() == normalized) {
                Some(kept) => kept.clone(),
                None => Arc::new(Endpoint::new(&self.shared.service, url)?),
            };
            next.push(endpoint);
        }
        self.shared.endpoints.store(Arc::new(next));
        // Read the weights after the set is in place: a concurrent
        // `set_weights` then either sees the new set or is seen here.
        self.apply_weights();
        Ok(())
    }

    /// Give the endpoints listed in `weights` (base URLs) their weight and
    /// every other one [`DEFAULT_WEIGHT`]. A weight is a share of new
    /// requests relative to the others (3 and 1: three quarters and one
    /// quarter); 0 drains an endpoint: it gets no new requests while any
    /// endpoint with a weight can take them.
    pub fn set_weights<'a>(&self, weights: impl IntoIterator<Item = (&'a str, u32)>) {
        let weights = weights
            .into_iter()
            .map(|(url, weight)| (url.trim_end_matches('/').to_owned(), weight))
            .collect();
        self.shared.weights.store(Arc::new(weights));
        self.apply_weights();
    }

    fn apply_weights(&self) {
        let weights = self.shared.weights.load();
        for endpoint in self.shared.endpoints.load().iter() {
            let weight = weights
                .get(endpoint.url())
                .copied()
                .unwrap_or(DEFAULT_WEIGHT);
            endpoint.set_weight(weight);
        }
    }

    /// The current set.
    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.shared.endpoints.load_full()
    }

    /// How many endpoints the set has, ejected ones included.
    pub fn len(&self) -> usize {
        self.shared.endpoints.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.shared.endpoints.load().is_empty()
    }

    pub fn budget(&self) -> &RetryBudget {
        &self.shared.budget
    }

    /// An endpoint for one try, preferring any not in `avoid` (the ones a
    /// retried request already tried). An endpoint whose open period is over
    /// gets the trial request first, so recovery is noticed promptly. `None`
    /// when the set is empty or every endpoint is ejected.
    pub fn pick(&self, avoid: &[EndpointId]) -> Option<Pick> {
        let endpoints = self.shared.endpoints.load();
        if let Some(trial) = self.trial(&endpoints, avoid) {
            return Some(trial);
        }
        let weighted = |e: &Arc<Endpoint>| e.breaker.is_closed() && e.weight() > 0;
        let chosen = self
            .choose(&endpoints, own_weight, |e| {
                weighted(e) && !avoid.contains(&e.id())
            })
            .or_else(|| self.choose(&endpoints, own_weight, weighted))
            // Everything left is drained: serving beats refusing.
            .or_else(|| self.choose(&endpoints, equal_weight, |e| e.breaker.is_closed()))?;
        Some(Pick::new(chosen.clone(), self.shared.clone(), false))
    }

    /// How long until an ejected endpoint may be probed again (at least one
    /// second): the `Retry-After` for a service with every endpoint ejected.
    pub fn retry_after(&self) -> Duration {
        let now = self.shared.now_ms();
        let soonest = self
            .shared
            .endpoints
            .load()
            .iter()
            .filter(|e| e.breaker.state() == BreakerState::Open)
            .map(|e| e.breaker.open_until_ms().saturating_sub(now))
            .min()
            .unwrap_or(0);
        Duration::from_millis(soonest).max(Duration::from_secs(1))
    }

    fn trial(&self, endpoints: &[Arc<Endpoint>], avoid: &[EndpointId]) -> Option<Pick> {
        let mut now = None;
        for endpoint in endpoints {
            // A drained endpoint is not probed: it is to get no requests.
            if endpoint.breaker.is_closed()
                || avoid.contains(&endpoint.id())
                || endpoint.weight() == 0
            {
                continue;
            }
            let now = *now.get_or_insert_with(|| self.shared.now_ms());
            let (claimed, changed) = endpoint.breaker.try_trial(now);
            if let Some(state) = changed {
                endpoint.report_state(state);
            }
            if claimed {
                return Some(Pick::new(endpoint.clone(), self.shared.clone(), true));
            }
        }
        None
    }

    fn choose<'a>(
        &self,
        endpoints: &'a [Arc<Endpoint>],
        weigh: Weigh,
        usable: impl Fn(&Arc<Endpoint>) -> bool,
    ) -> Option<&'a Arc<Endpoint>> {
        match self.shared.strategy {
            Strategy::PowerOfTwoChoices => power_of_two_choices(endpoints, weigh, usable),
            Strategy::RoundRobin => {
                let start = self.shared.next.fetch_add(1, Ordering::Relaxed);
                round_robin(endpoints, start, weigh, usable)
            }
        }
    }
}

/// How much an endpoint counts in a choice.
type Weigh = fn(&Endpoint) -> u64;

fn own_weight(endpoint: &Endpoint) -> u64 {
    u64::from(endpoint.weight())
}

fn equal_weight(_: &Endpoint) -> u64 {
    1
}

/// Two distinct usable endpoints drawn with probability proportional to
/// their weight, the one with fewer requests in flight per unit of weight;
/// no allocation (the set is scanned to sum and to find the two). With
/// nothing in flight the first drawn wins, so idle traffic splits by weight
/// too.
fn power_of_two_choices(
    endpoints: &[Arc<Endpoint>],
    weigh: Weigh,
    usable: impl Fn(&Arc<Endpoint>) -> bool,
) -> Option<&Arc<Endpoint>> {
    let (count, total) = endpoints
        .iter()
        .filter(|e| usable(e))
        .fold((0usize, 0u64), |(count, total), e| {
            (count + 1, total + weigh(e))
        });
    if count == 0 || total == 0 {
        return None;
    }
    let mut rng = rand::thread_rng();
    let a = by_weight(endpoints, weigh, &usable, rng.gen_range(0..total), None)?;
    let rest = total - weigh(a);
    if count == 1 || rest == 0 {
        return Some(a);
    }
    let b = by_weight(
        endpoints,
        weigh,
        &usable,
        rng.gen_range(0..rest),
        Some(a.id()),
    )?;
    // a.in_flight / a.weight > b.in_flight / b.weight, without division.
    let load = |e: &Endpoint, other: &Endpoint| e.in_flight() as u128 * u128::from(weigh(other));
    Some(if load(b, a) < load(a, b) { b } else { a })
}

/// The usable endpoint (other than `skip`) whose share of the weight line
/// holds `point`.
fn by_weight(
    endpoints: &[Arc<Endpoint>],
    weigh: Weigh,
    usable: impl Fn(&Arc<Endpoint>) -> bool,
    mut point: u64,
    skip: Option<EndpointId>,
) -> Option<&Arc<Endpoint>> {
    for endpoint in endpoints
        .iter()
        .filter(|e| usable(e) && Some(e.id()) != skip)
    {
        let weight = weigh(endpoint);
        if point < weight {
            return Some(endpoint);
        }
        point -= weight;
    }
    None
}

/// Weighted round robin: turn `start` of every `total weight` turns lands
/// on the endpoint owning that slot, so each gets its weight's share of
/// each cycle (in runs, not interleaved: no lock, one counter).
fn round_robin(
    endpoints: &[Arc<Endpoint>],
    start: usize,
    weigh: Weigh,
    usable: impl Fn(&Arc<Endpoint>) -> bool,
) -> Option<&Arc<Endpoint>> {
    let total: u64 = endpoints
        .iter()
        .filter(|e| usable(e))
        .map(|e| weigh(e))
        .sum();
    if total == 0 {
        return None;
    }
    by_weight(endpoints, weigh, usable, start as u64 % total, None)
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A breaker tripped: open it if the cap allows, or if every endpoint is
    /// failing (then all the tripped ones open, and picks fail fast).
    fn eject(&self, tripped: &Arc<Endpoint>) {
        let _serial = self
            .ejections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let endpoints = self.endpoints.load();
        if !endpoints.iter().any(|e| e.id() == tripped.id()) {
            // Removed from the set meanwhile: nothing to eject from.
            return;
        }
        let ejected = endpoints.iter().filter(|e| !e.breaker.is_closed()).count();
        let total = endpoints.len();
        let threshold = self.breaker.consecutive_failures.max(1);
        let failing =
            |e: &&Arc<Endpoint>| e.breaker.is_closed() && e.breaker.failure_streak() >= threshold;
        let now = self.now_ms();
        if (ejected + 1) * 100 <= usize::from(self.breaker.max_ejection_percent) * total {
            self.open(tripped, now);
        } else if ejected + endpoints.iter().filter(failing).count() == total {
            for endpoint in endpoints.iter().filter(failing) {
                self.open(endpoint, now);
            }
        } else {
            tracing::debug!(
                endpoint = %tripped.url(),
                "endpoint failing but not ejected: ejection cap reached"
            );
        }
    }

    fn open(&self, endpoint: &Endpoint, now: u64) {
        if endpoint.breaker.open(now, &self.breaker) {
            endpoint.metrics.ejections.increment(1);
            endpoint.report_state(BreakerState::Open);
        }
    }
}

/// One try's endpoint. Counts as in flight until dropped; report how the
/// try went with [`Pick::success`] or [`Pick::failure`] (neither means it
/// was cancelled and tells nothing about the endpoint).
#[derive(Debug)]
pub struct Pick {
    endpoint: Arc<Endpoint>,
    shared: Arc<Shared>,
    trial: bool,
    reported: bool,
}

impl Pick {
    fn new(endpoint: Arc<Endpoint>, shared: Arc<Shared>, trial: bool) -> Self {
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        endpoint.metrics.in_flight.increment(1.0);
        Self {
            endpoint,
            shared,
            trial,
            reported: false,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn id(&self) -> EndpointId {
        self.endpoint.id()
    }

    /// Whether this is the trial request of a half-open endpoint.
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    /// The endpoint answered. Only the first report of a pick counts.
    pub fn success(&mut self) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        if let Some(state) = self.endpoint.breaker.on_success(self.trial) {
            self.endpoint.report_state(state);
        }
    }

    /// The endpoint failed: connect error, timeout of the try, or a
    /// 502/503/504. Only the first report of a pick counts.
    pub fn failure(&mut self) {
        if std::mem::replace(&mut self.reported, true) {
            return;
        }
        let now = self.shared.now_ms();
        match self
            .endpoint
            .breaker
            .on_failure(self.trial, now, &self.shared.breaker)
        {
            FailureOutcome::Counted => {}
            FailureOutcome::Tripped => self.shared.eject(&self.endpoint),
            FailureOutcome::Reopened => {
                self.endpoint.metrics.ejections.increment(1);
                self.endpoint.report_state(BreakerState::Open);
            }
        }
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.endpoint.metrics.in_flight.decrement(1.0);
        if self.trial && !self.reported {
            self.endpoint.breaker.release_trial();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn urls(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("http://10.0.0.{i}:80")).collect()
    }

    fn balancer(strategy: Strategy, n: usize) -> Balancer {
        let breaker = BreakerSettings {
            consecutive_failures: 2,
            open_ms: 1_000,
            max_open_ms: 4_000,
            max_ejection_percent: 50,
        };
        let balancer = Balancer::new("svc", strategy, breaker, &RetrySettings::default());
        balancer.set_endpoints(&urls(n)).unwrap();
        balancer
    }

    fn fail(balancer: &Balancer, url: &str, times: usize) {
        for _ in 0..times {
            let endpoint = find(balancer, url);
            let mut pick = Pick::new(endpoint, balancer.shared.clone(), false);
            pick.failure();
        }
    }

    fn find(balancer: &Balancer, url: &str) -> Arc<Endpoint> {
        balancer
            .endpoints()
            .iter()
            .find(|e| e.url() == url)
            .unwrap()
            .clone()
    }

    fn state(balancer: &Balancer, url: &str) -> BreakerState {
        find(balancer, url).breaker_state()
    }

    fn picked_urls(balancer: &Balancer, n: usize) -> HashMap<String, usize> {
        let mut seen = HashMap::new();
        for _ in 0..n {
            let mut pick = balancer.pick(&[]).unwrap();
            pick.success();
            *seen.entry(pick.endpoint().url().to_owned()).or_default() += 1;
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_prefers_the_less_loaded() {
        let balancer = balancer(Strategy::PowerOfTwoChoices, 2);
        let busy: Vec<Pick> = (0..5)
            .map(|_| {
                let endpoint = find(&balancer, "http://10.0.0.1:80");
                Pick::new(endpoint, balancer.shared.clone(), false)
            })
            .collect();
        for _ in 0..20 {
            let pick = balancer.pick(&[]).unwrap();
            assert_eq!(pick.endpoint().url(), "http://10.0.0.2:80");
        }
        drop(busy);
        assert_eq!(find(&balancer, "http://10.0.0.1:80").in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn round_robin_rotates_and_the_avoid_list_is_honoured() {
        let balancer = balancer(Strategy::RoundRobin, 3);
        let seen = picked_urls(&balancer, 6);
        assert!(seen.values().all(|&n| n == 2), "{seen:?}");

        let first = balancer.pick(&[]).unwrap();
        for _ in 0..10 {
            let retry = balancer.pick(&[first.id()]).unwrap();
            assert_ne!(retry.id(), first.id());
        }
        let all: Vec<_> = balancer.endpoints().iter().map(|e| e.id()).collect();
        assert!(
            balancer.pick(&all).is_some(),
            "avoiding everything still finds an endpoint"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_endpoint_is_ejected_then_probed_and_readmitted() {
        let balancer = balancer(Strategy::PowerOfTwoChoices, 2);
        let bad = "http://10.0.0.2:80";
        fail(&balancer, bad, 2);
        assert_eq!(state(&balancer, bad), BreakerState::Open);
        assert!(!picked_urls(&balancer, 20).contains_key(bad), "ejected");

        tokio::time::advance(Duration::from_millis(1_000)).await;
        let mut trial = balancer.pick(&[]).unwrap();
        assert_eq!(trial.endpoint().url(), bad, "the probe goes first");
        assert!(trial.is_trial());
        assert_eq!(state(&balancer, bad), BreakerState::HalfOpen);
        // While the trial is out, everything else goes to the healthy one.
        assert!(!picked_urls(&balancer, 10).contains_key(bad));
        trial.success();
        drop(trial);
        assert_eq!(state(&balancer, bad), BreakerState::Closed);
        assert!(picked_urls(&balancer, 50).contains_key(bad), "re-admitted");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_twice_as_long() {
        let balancer = balancer(Strategy::RoundRobin, 2);
        let bad = "http://10.0.0.1:80";
        fail(&balancer, bad, 2);
        tokio::time::advance(Duration::from_millis(1_000)).await;
        let mut trial = balancer.pick(&[]).unwrap();
        assert!(trial.is_trial());
        trial.failure();
        assert_eq!(state(&balancer, bad), BreakerState::Open);
        tokio::time::advance(Duration::from_millis(1_999)).await;
        assert!(!balancer.pick(&[]).unwrap().is_trial(), "still open");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(balancer.pick(&[]).unwrap().is_trial(), "2 s later");
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_is_capped_unless_everything_fails() {
        let balancer = balancer(Strategy::PowerOfTwoChoices, 4);
        let all = urls(4);
        fail(&balancer, &all[0], 2);
        fail(&balancer, &all[1], 2);
        fail(&balancer, &all[2], 2);
        let open = |b: &Balancer| {
            b.endpoints()
                .iter()
                .filter(|e| e.breaker_state() == BreakerState::Open)
                .count()
        };
        assert_eq!(open(&balancer), 2, "50 % of 4");
        assert_eq!(state(&balancer, &all[2]), BreakerState::Closed);
        fail(&balancer, &all[3], 2);
        assert_eq!(open(&balancer), 4, "all failing: all ejected");
        assert!(balancer.pick(&[]).is_none(), "answer fast");
        assert_eq!(balancer.retry_after(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_endpoint_can_be_ejected() {
        let balancer = balancer(Strategy::PowerOfTwoChoices, 1);
        fail(&balancer, &urls(1)[0], 2);
        assert!(balancer.pick(&[]).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn set_endpoints_keeps_the_state_of_those_that_stay() {
        let balancer = balancer(Strategy::PowerOfTwoChoices, 2);
        let all = urls(2);
        fail(&balancer, &all[0], 2);
        let kept = find(&balancer, &all[0]).id();
        let in_flight = balancer.pick(&[]).unwrap();
        assert_eq!(in_flight.endpoint().url(), all[1]);

        let next = vec![
            format!("{}/", all[0]),
            all[1].clone(),
            "http://10.0.0.9:80".to_owned(),
        ];
        balancer.set_endpoints(&next).unwrap();
        assert_eq!(balancer.endpoints().len(), 3);
        assert_eq!(find(&balancer, &all[0]).id(), kept);
        assert_eq!(state(&balancer, &all[0]), BreakerState::Open);
        assert_eq!(find(&balancer, &all[1]).in_flight(), 1);

        assert!(balancer.set_endpoints(&["ftp://x".to_owned()]).is_err());
        assert_eq!(
            balancer.endpoints().len(),
            3,
            "an invalid list changes nothing"
        );
        balancer.set_endpoints(&[]).unwrap();
        assert!(balancer.is_empty());
        assert!(balancer.pick(&[]).is_none());
        drop(in_flight);
    }

    fn weighted(strategy: Strategy, weights: &[u32]) -> Balancer {
        let balancer = balancer(strategy, weights.len());
        let all = urls(weights.len());
        balancer.set_weights(all.iter().map(String::as_str).zip(weights.iter().copied()));
        balancer
    }

    #[tokio::test(start_paused = true)]
    async fn weights_split_traffic_in_proportion() {
        for strategy in [Strategy::PowerOfTwoChoices, Strategy::RoundRobin] {
            let balancer = weighted(strategy, &[3, 1]);
            let seen = picked_urls(&balancer, 4000);
            let heavy = seen["http://10.0.0.1:80"] as f64;
            let light = seen["http://10.0.0.2:80"] as f64;
            let ratio = heavy / light;
            assert!((2.3..3.9).contains(&ratio), "{strategy:?}: {seen:?}");
        }
        let round_robin = weighted(Strategy::RoundRobin, &[3, 1]);
        let seen = picked_urls(&round_robin, 8);
        assert_eq!(seen["http://10.0.0.1:80"], 6, "exact per cycle");
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_compares_load_per_unit_of_weight() {
        let balancer = weighted(Strategy::PowerOfTwoChoices, &[4, 1]);
        // Three in flight on a weight of 4 is less load than one on 1.
        let _busy: Vec<Pick> = (0..3)
            .map(|_| {
                Pick::new(
                    find(&balancer, "http://10.0.0.1:80"),
                    balancer.shared.clone(),
                    false,
                )
            })
            .chain(std::iter::once(Pick::new(
                find(&balancer, "http://10.0.0.2:80"),
                balancer.shared.clone(),
                false,
            )))
            .collect();
        for _ in 0..20 {
            let pick = balancer.pick(&[]).unwrap();
            assert_eq!(pick.endpoint().url(), "http://10.0.0.1:80");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn weight_zero_drains_unless_nothing_else_is_left() {
        for strategy in [Strategy::PowerOfTwoChoices, Strategy::RoundRobin] {
            let balancer = weighted(strategy, &[1, 0, 1]);
            let seen = picked_urls(&balancer, 200);
            assert!(!seen.contains_key("http://10.0.0.2:80"), "{seen:?}");

            let first = balancer.pick(&[]).unwrap();
            let retry = balancer.pick(&[first.id()]).unwrap();
            assert_ne!(
                retry.endpoint().url(),
                "http://10.0.0.2:80",
                "not even for a retry"
            );

            balancer.set_weights([("http://10.0.0.1:80/", 0), ("http://10.0.0.3:80", 0)]);
            assert_eq!(
                find(&balancer, "http://10.0.0.2:80").weight(),
                1,
                "unlisted: default"
            );
            let seen = picked_urls(&balancer, 50);
            assert_eq!(seen.keys().collect::<Vec<_>>(), ["http://10.0.0.2:80"]);

            balancer.set_weights([
                ("http://10.0.0.1:80", 0),
                ("http://10.0.0.2:80", 0),
                ("http://10.0.0.3:80", 0),
            ]);
            assert!(balancer.pick(&[]).is_some(), "all drained: still served");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn endpoints_that_join_later_get_their_weight() {
        let balancer = balancer(Strategy::RoundRobin, 1);
        balancer.set_weights([("http://10.0.0.9:80", 0)]);
        balancer
            .set_endpoints(&["http://10.0.0.1:80".into(), "http://10.0.0.9:80".into()])
            .unwrap();
        assert_eq!(find(&balancer, "http://10.0.0.9:80").weight(), 0);
        assert!(!picked_urls(&balancer, 20).contains_key("http://10.0.0.9:80"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_pick_counts_neither_way() {
        let balancer = balancer(Strategy::PowerOfTwoChoices, 1);
        let url = &urls(1)[0];
        fail(&balancer, url, 1);
        drop(balancer.pick(&[]).unwrap());
        fail(&balancer, url, 1);
        assert_eq!(state(&balancer, url), BreakerState::Open, "streak unbroken");
    }
}
