//! Telemetry shared by every Zócalo process: JSON logs, distributed traces
//! ([`trace`]), the Prometheus metrics recorder and the admin router
//! (`/live`, `/ready`, `/metrics`).
//!
//! Metrics go through the `metrics` facade to one process-wide Prometheus
//! recorder; every series carries a `service` label so that `zocalo up`, which
//! runs all services in one process, still tells them apart. This crate
//! depends on no other crate of ours.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use tracing::{Dispatch, Level};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layered, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

pub mod trace;

pub use trace::shutdown_tracing;

/// How logs are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for collectors.
    #[default]
    Json,
    /// Human-readable lines, for a terminal.
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info,zocalo_gateway=debug`.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            filter: "info".into(),
        }
    }
}

/// Changes the installed subscriber's filter; set once by [`init_logging`].
type FilterReloader = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

static FILTER_RELOADER: OnceLock<FilterReloader> = OnceLock::new();
/// The filter the process started with, to go back to.
static INITIAL_FILTER: OnceLock<String> = OnceLock::new();

/// Install the global log subscriber and the tracer (see [`trace`]). Calling
/// it twice is harmless (the second call is ignored), which keeps tests that
/// build several apps simple. Its filter can be changed later with
/// [`set_log_filter`]; it filters log lines only, never which spans are
/// traced.
pub fn init_logging(settings: &LogSettings) {
    let directive = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| EnvFilter::try_new(f).is_ok())
        .or_else(|| {
            EnvFilter::try_new(&settings.filter)
                .is_ok()
                .then(|| settings.filter.clone())
        })
        .unwrap_or_else(|| "info".to_owned());
    let (subscriber, reload, cell) = build_subscriber(settings.format, &directive, std::io::stderr);
    if subscriber.try_init().is_ok() {
        tracing::dispatcher::get_default(|dispatch| cell.set(dispatch));
        let _ = FILTER_RELOADER.set(reload);
        let _ = INITIAL_FILTER.set(directive);
        if trace::exporting() {
            tracing::info!("exporting traces over OTLP");
        }
    }
}

/// The subscriber [`init_logging`] installs, writing to `writer`: for tests
/// that read the log lines a request produces. Use it with
/// `tracing::dispatcher::with_default` or `set_default`.
pub fn log_dispatch<W>(format: LogFormat, directive: &str, writer: W) -> Dispatch
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (subscriber, _reload, cell) = build_subscriber(format, directive, writer);
    let dispatch = Dispatch::new(subscriber);
    cell.set(&dispatch);
    dispatch
}

type Traced = Layered<Box<dyn Layer<Registry> + Send + Sync>, Registry>;
type Logged = Layered<Box<dyn Layer<Traced> + Send + Sync>, Traced>;

/// Registry + OpenTelemetry layer (info spans, whatever the log level) +
/// the formatter behind a reloadable filter.
fn build_subscriber<W>(
    format: LogFormat,
    directive: &str,
    writer: W,
) -> (Logged, FilterReloader, trace::DispatchCell)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // Spans at info and above are ours (requests, jobs, events); libraries
    // keep theirs at debug or trace, so they cost nothing here.
    let traced_spans = filter_fn(|meta| meta.is_span() && *meta.level() <= Level::INFO);
    let otel: Box<dyn Layer<Registry> + Send + Sync> = tracing_opentelemetry::layer()
        .with_tracer(trace::tracer())
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        // Entering a span would also make its context OpenTelemetry's
        // "current" one, on every poll of every instrumented future: ~9,000
        // instructions per proxied request. Nothing here reads that
        // context (propagation and log fields take it from the span).
        .with_context_activation(false)
        .with_filter(traced_spans)
        .boxed();
    let (filter, handle) = reload::Layer::new(EnvFilter::new(directive));
    let cell = trace::DispatchCell::default();
    let logs: Box<dyn Layer<Traced> + Send + Sync> = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .map_event_format(|inner| trace::WithTraceIds {
                inner,
                dispatch: cell.clone(),
            })
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .compact()
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    let subscriber = Registry::default().with(otel).with(logs);
    let reload = reloader(move |f| handle.reload(f).map_err(|e| e.to_string()));
    (subscriber, reload, cell)
}

fn reloader(f: impl Fn(EnvFilter) -> Result<(), String> + Send + Sync + 'static) -> FilterReloader {
    Box::new(f)
}

/// Whether `directive` is a valid `EnvFilter` (`info`, `warn,zocalo_gateway=debug`).
pub fn validate_log_filter(directive: &str) -> Result<(), String> {
    EnvFilter::builder()
        .parse(directive)
        .map(drop)
        .map_err(|e| format!("invalid log filter {directive:?}: {e}"))
}

/// Replace the running log filter without a restart (live configuration).
/// Fails on an invalid directive, or when [`init_logging`] did not install
/// the subscriber (another one was installed first).
pub fn set_log_filter(directive: &str) -> Result<(), String> {
    validate_log_filter(directive)?;
    let reload = FILTER_RELOADER
        .get()
        .ok_or("the log subscriber was not installed by init_logging")?;
    reload(EnvFilter::new(directive))?;
    tracing::info!(filter = directive, "log filter changed");
    Ok(())
}

/// Go back to the filter the process started with.
pub fn reset_log_filter() -> Result<(), String> {
    let initial = INITIAL_FILTER
        .get()
        .ok_or("the log subscriber was not installed by init_logging")?;
    set_log_filter(initial)
}

/// Puts a live log level in force, touching the filter only when the level
/// changes: `Some` replaces the filter, `None` goes back to the one the
/// process started with. One per process (the filter is global).
#[derive(Debug, Default)]
pub struct LogLevelFollower {
    /// The level last applied; `None` is the starting filter.
    applied: Option<String>,
}

impl LogLevelFollower {
    pub fn apply(&mut self, level: Option<&str>) {
        if level == self.applied.as_deref() {
            return;
        }
        let result = match level {
            Some(level) => set_log_filter(level),
            None => reset_log_filter(),
        };
        if let Err(reason) = result {
            tracing::warn!(%reason, "log level not changed");
        }
        self.applied = level.map(str::to_owned);
    }
}

/// Buckets for request latency, in seconds: fine-grained below 10 ms because
/// most reads finish there.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("static bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test binary that
            // embeds us); then our handle renders nothing, which is acceptable.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Histograms keep raw samples until upkeep folds them in; without a
/// periodic upkeep an unscraped process would grow without bound.
fn spawn_metrics_upkeep(handle: PrometheusHandle) {
    static STARTED: OnceLock<()> = OnceLock::new();
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    STARTED.get_or_init(|| {
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    });
}

/// A readiness probe: `Ok` when the service can do useful work.
pub type ReadyFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
pub type ReadinessCheck = Arc<dyn Fn() -> ReadyFuture + Send + Sync>;

/// A readiness check that always passes, for services without dependencies.
pub fn always_ready() -> ReadinessCheck {
    Arc::new(|| Box::pin(async { Ok(()) }))
}

/// `/live`, `/ready` and `/metrics` for one service.
pub fn admin_router<S>(ready: ReadinessCheck) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let handle = metrics_handle();
    spawn_metrics_upkeep(handle.clone());
    Router::new()
        .route("/live", get(|| async { "ok" }))
        .route(
            "/ready",
            get(move || {
                let ready = ready.clone();
                async move { readiness_response(ready().await) }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    handle.run_upkeep();
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        handle.render(),
                    )
                }
            }),
        )
}

fn readiness_response(result: Result<(), String>) -> Response {
    match result {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(reason) => {
            tracing::warn!(%reason, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}"),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_filter_changes_at_run_time_and_bad_ones_are_refused() {
        init_logging(&LogSettings {
            format: LogFormat::Json,
            filter: "warn".into(),
        });
        // RUST_LOG may override the start filter; the checks below do not
        // depend on where it started.
        set_log_filter("debug").unwrap();
        assert!(tracing::enabled!(tracing::Level::DEBUG));
        set_log_filter("error").unwrap();
        assert!(!tracing::enabled!(tracing::Level::INFO));
        assert!(tracing::enabled!(tracing::Level::ERROR));

        let refused = set_log_filter("info,[[").unwrap_err();
        assert!(refused.contains("invalid log filter"), "{refused}");
        assert!(
            !tracing::enabled!(tracing::Level::INFO),
            "a refused filter leaves the running one"
        );
        reset_log_filter().unwrap();
    }
}
