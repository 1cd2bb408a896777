//! What every whole-stack test needs around the processes it runs: the
//! shared backends from the environment, the lines a started process
//! prints, bounded polling, metrics scraped over HTTP, and a tally of what
//! a background load saw.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a started process gets to say it is ready.
const STARTUP: Duration = Duration::from_secs(60);

/// The shared NATS server, or `None` (saying which test is skipped) when
/// `ZOCALO_TEST_NATS_URL` is unset.
pub(crate) fn nats_url(test: &str) -> Option<String> {
    let url = std::env::var("ZOCALO_TEST_NATS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("ZOCALO_TEST_NATS_URL is unset: {test} test not run");
    }
    url
}

/// A discovery bucket no other test uses.
pub(crate) fn unique_bucket() -> String {
    format!("t_{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// Run `command` to its end; panics with what it wrote to stderr unless it
/// succeeded.
pub(crate) fn run_ok(command: &mut std::process::Command) -> std::process::Output {
    let output = command.output().expect("run the command");
    assert!(
        output.status.success(),
        "{:?} failed: {}",
        command,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The lines `child` prints on its (piped) stdout, read on a thread so
/// that waiting for one can time out.
pub(crate) fn stdout_lines(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    lines
}

/// The lines `child` writes to its (piped) stderr, where it logs.
pub(crate) fn stderr_lines(child: &mut Child) -> Receiver<String> {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    lines
}

/// The first line (within a minute) that `ready` turns into a value;
/// panics naming `what` was awaited otherwise.
pub(crate) fn wait_for_line<T>(
    lines: &Receiver<String>,
    what: &str,
    mut ready: impl FnMut(&str) -> Option<T>,
) -> T {
    let deadline = Instant::now() + STARTUP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{what} within {STARTUP:?}"));
        if let Some(value) = ready(&line) {
            return value;
        }
    }
}

/// Run `check` every `every` until it succeeds, failing with its last
/// reason once `within` has passed.
pub(crate) async fn eventually<T>(
    within: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(reason) => assert!(Instant::now() < deadline, "{reason}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Send `request` and decode its JSON answer.
pub(crate) async fn json(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// The body of an order for one copy of `book`.
pub(crate) fn one_copy_order(
    book: impl Into<Value>,
    address: &str,
    provider: &str,
    card: &str,
) -> Value {
    serde_json::json!({
        "items": [{"book_id": book.into(), "quantity": 1}],
        "shipping_address": address,
        "provider": provider,
        "card": card
    })
}

/// Send an order placement and return the order, which must be accepted
/// (202: the saga goes on in the background).
pub(crate) async fn accepted_order(request: reqwest::RequestBuilder) -> Value {
    let placed = request.send().await.unwrap();
    let status = placed.status();
    let body: Value = placed.json().await.unwrap_or_default();
    assert_eq!(status, 202, "order accepted: {body}");
    body
}

/// The Prometheus text a process serves at `/metrics`.
pub(crate) async fn metrics(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The values of the samples of `name` whose labels contain every one of
/// `labels` (each written `key="value"`).
pub(crate) fn samples<'a>(
    metrics: &'a str,
    name: &str,
    labels: &'a [&str],
) -> impl Iterator<Item = f64> + 'a {
    let prefix = format!("{name}{{");
    metrics
        .lines()
        .filter(move |line| {
            line.starts_with(&prefix) && labels.iter().all(|label| line.contains(label))
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
}

/// Client tasks generating a background load until stopped.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Spawn `clients` tasks, each running what `client` makes of the flag
    /// that tells it to stop.
    pub fn start<F>(clients: usize, mut client: impl FnMut(Arc<AtomicBool>) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|_| tokio::spawn(client(stop.clone())))
            .collect();
        Self { stop, clients }
    }

    /// Tell every client to stop and wait until all have.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.unwrap();
        }
    }
}

/// What a background load saw: how many requests, and why any failed.
#[derive(Default)]
pub(crate) struct Tally {
    pub requests: u64,
    pub failures: Vec<String>,
}

impl Tally {
    /// Count one request; a transport error or a status `ok` rejects is a
    /// failure (with the body). The accepted response is handed back.
    pub async fn record(
        &mut self,
        result: reqwest::Result<reqwest::Response>,
        ok: impl Fn(reqwest::StatusCode) -> bool,
    ) -> Option<reqwest::Response> {
        self.requests += 1;
        match result {
            Ok(response) if ok(response.status()) => return Some(response),
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                self.failures.push(format!("{status}: {body}"));
            }
            Err(error) => self.failures.push(format!("transport: {error}")),
        }
        None
    }

    /// The load ran (more than `at_least` requests) and nothing failed.
    pub fn assert_ran_without_failures(&self, at_least: u64) {
        eprintln!(
            "load: {} requests, {} failures",
            self.requests,
            self.failures.len()
        );
        assert!(
            self.requests > at_least,
            "the load ran ({} requests)",
            self.requests
        );
        assert!(
            self.failures.is_empty(),
            "{} of {} requests failed: {:?}",
            self.failures.len(),
            self.requests,
            &self.failures[..self.failures.len().min(5)]
        );
    }
}
