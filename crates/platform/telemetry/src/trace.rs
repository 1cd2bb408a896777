//! Distributed tracing: OpenTelemetry spans behind our `tracing` spans, W3C
//! trace context (`traceparent`) in and out of processes, OTLP export, and the
//! trace id on every JSON log line.
//!
//! Every process always gets a tracer provider, so trace ids are minted and
//! propagated and logs correlate across processes even when nothing collects
//! the spans. Only when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set does a batch exporter send
//! them, as OTLP/HTTP protobuf. The SDK reads `OTEL_SERVICE_NAME` and
//! `OTEL_TRACES_SAMPLER`(`_ARG`) itself.
//!
//! The batch processor runs on a thread of its own and the exporter's HTTP
//! client on a small runtime of its own, because [`crate::init_logging`] runs
//! before the application's tokio runtime exists (and must not depend on it).

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HttpClient, HttpError};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::Span;
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Subscriber};
use tracing_opentelemetry::{OpenTelemetrySpanExt, get_otel_context};
use tracing_subscriber::Registry;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The W3C header that carries the trace id and the caller's span id.
pub const TRACEPARENT: &str = "traceparent";
const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);
const TRACESTATE_HEADER: HeaderName = HeaderName::from_static("tracestate");

/// The name our spans are reported under when `OTEL_SERVICE_NAME` is unset.
const DEFAULT_SERVICE_NAME: &str = "zocalo";

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();

fn propagator() -> &'static TraceContextPropagator {
    PROPAGATOR.get_or_init(|| {
        // Also the global one, for libraries that propagate through it.
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        TraceContextPropagator::new()
    })
}

/// The process's tracer provider, built on first use from the environment.
fn provider() -> &'static SdkTracerProvider {
    PROVIDER.get_or_init(|| {
        let resource = Resource::builder();
        let resource = if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
            resource
        } else {
            resource.with_service_name(DEFAULT_SERVICE_NAME)
        };
        let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
        if let Some(exporter) = otlp_exporter() {
            builder = builder.with_batch_exporter(exporter);
        }
        let provider = builder.build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        provider
    })
}

/// The tracer our `tracing` spans are recorded with.
pub(crate) fn tracer() -> SdkTracer {
    propagator();
    provider().tracer("zocalo")
}

/// Whether spans leave the process (an OTLP endpoint is configured).
pub fn exporting() -> bool {
    otlp_endpoint().is_some()
}

fn otlp_endpoint() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .filter_map(|name| std::env::var(name).ok())
    .find(|value| !value.trim().is_empty())
}

fn otlp_exporter() -> Option<opentelemetry_otlp::SpanExporter> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    otlp_endpoint()?;
    let client = match ExportClient::start() {
        Ok(client) => client,
        Err(error) => {
            // The log subscriber is not installed yet: stderr is all we have.
            eprintln!("OTLP export disabled: cannot start its HTTP client: {error}");
            return None;
        }
    };
    // The builder reads the endpoint, headers and timeout from the standard
    // environment variables itself.
    match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(client)
        .build()
    {
        Ok(exporter) => Some(exporter),
        Err(error) => {
            eprintln!("OTLP export disabled: {error}");
            None
        }
    }
}

/// Send the spans still buffered and stop exporting. Binaries call it last
/// thing before exiting; without an exporter it does nothing.
pub fn shutdown_tracing() {
    if let Some(provider) = PROVIDER.get()
        && exporting()
        && let Err(error) = provider.shutdown()
    {
        eprintln!("flushing traces failed: {error}");
    }
}

/// The exporter's HTTP client: our reqwest, driven by a one-thread runtime of
/// its own because the SDK's batch thread polls exports outside tokio.
#[derive(Debug, Clone)]
struct ExportClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl ExportClient {
    fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            client,
            runtime: handle,
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let response = client.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        });
        let (status, headers, body) = sent.await??;
        let mut response = http::Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// Make `span` a child of the trace context in `headers` (`traceparent`,
/// `tracestate`). Without a valid `traceparent` the span starts a new trace.
/// Call it before the span is first entered.
pub fn set_parent_from_headers(span: &Span, headers: &HeaderMap) {
    if headers.contains_key(TRACEPARENT) {
        let parent = propagator().extract(&HeaderExtractor(headers));
        set_parent(span, parent);
    }
}

/// Make `span` a child of the span a `traceparent` value names (a job's or an
/// event's producer). An invalid value leaves the span a new trace.
pub fn set_parent_from_traceparent(span: &Span, traceparent: &str) {
    let mut carrier = std::collections::HashMap::with_capacity(1);
    carrier.insert(TRACEPARENT.to_owned(), traceparent.to_owned());
    set_parent(span, propagator().extract(&carrier));
}

fn set_parent(span: &Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        // Fails only when the span is disabled or already started: then it
        // keeps the trace it has.
        let _ = span.set_parent(parent);
    }
}

/// Write `span`'s trace context into outgoing request headers: the
/// `traceparent` and `tracestate` the W3C propagator writes, formatted in
/// place rather than through `format!` and header parsing, because the
/// gateway does this for every request it relays. An empty trace state is
/// removed rather than sent empty (the same to a W3C receiver), so that a
/// client's own `tracestate` never passes through unparsed.
pub fn inject_headers(span: &Span, headers: &mut HeaderMap) {
    let context = span.context();
    let otel_span = context.span();
    let ids = otel_span.span_context();
    if !ids.is_valid() {
        return;
    }
    headers.insert(TRACEPARENT_HEADER, traceparent_value(ids));
    let state = ids.trace_state().header();
    match HeaderValue::from_str(&state) {
        Ok(value) if !state.is_empty() => headers.insert(TRACESTATE_HEADER, value),
        _ => headers.remove(TRACESTATE_HEADER),
    };
}

/// `00-<trace id>-<span id>-<flags>` in lowercase hex (W3C Trace Context).
fn traceparent_value(ids: &SpanContext) -> HeaderValue {
    let mut text = [0u8; 55];
    text[..3].copy_from_slice(b"00-");
    write_hex(&mut text[3..35], &ids.trace_id().to_bytes());
    text[35] = b'-';
    write_hex(&mut text[36..52], &ids.span_id().to_bytes());
    text[52] = b'-';
    let flags = ids.trace_flags() & TraceFlags::SAMPLED;
    write_hex(&mut text[53..55], &[flags.to_u8()]);
    HeaderValue::from_bytes(&text).expect("hex is a valid header value")
}

fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
}

/// Write the current span's trace context into outgoing request headers.
pub fn inject_current(headers: &mut HeaderMap) {
    inject_headers(&Span::current(), headers);
}

/// The current span's `traceparent`, to store with a job or an event; `None`
/// outside any traced span.
pub fn current_traceparent() -> Option<String> {
    let context = Span::current().context();
    let span = context.span();
    let ids = span.span_context();
    ids.is_valid().then(|| {
        let value = traceparent_value(ids);
        value.to_str().expect("hex is ASCII").to_owned()
    })
}

/// The current span's trace id in hex, `None` outside any traced span.
pub fn current_trace_id() -> Option<String> {
    let context = Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The dispatch a formatter looks trace ids up through; set once the
/// subscriber it belongs to is built.
#[derive(Clone, Default)]
pub(crate) struct DispatchCell(Arc<OnceLock<WeakDispatch>>);

impl DispatchCell {
    pub(crate) fn set(&self, dispatch: &Dispatch) {
        let _ = self.0.set(dispatch.downgrade());
    }

    /// The trace and span id of the innermost traced span the calling thread
    /// is in.
    fn current_ids(&self) -> Option<(String, String)> {
        let dispatch = self.0.get()?.upgrade()?;
        let current = dispatch.current_span();
        let registry = dispatch.downcast_ref::<Registry>()?;
        let innermost = registry.span(current.id()?)?;
        // A library's span may be the innermost one; its traced ancestor is
        // the one that names the trace.
        innermost.scope().find_map(|span| {
            let context = get_otel_context(&span.id(), &dispatch)?;
            let otel_span = context.span();
            let ids = otel_span.span_context();
            ids.is_valid()
                .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
        })
    }
}

/// Wraps the JSON event formatter to start each line inside a traced span
/// with `"trace_id"` and `"span_id"`.
pub(crate) struct WithTraceIds<F> {
    pub(crate) inner: F,
    pub(crate) dispatch: DispatchCell,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = self.dispatch.current_ids() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
            ),
            None => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use super::*;
    use crate::{LogFormat, log_dispatch};

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER_SPAN: &str = "00f067aa0ba902b7";

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    impl Lines {
        fn parsed(&self) -> Vec<serde_json::Value> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }
    }

    fn caller_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            format!("00-{TRACE_ID}-{CALLER_SPAN}-01").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn lines_inside_a_continued_trace_carry_its_id_even_in_library_spans() {
        let lines = Lines::default();
        let dispatch = log_dispatch(LogFormat::Json, "info,hyper=debug", lines.clone());
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("request");
            set_parent_from_headers(&span, &caller_headers());
            let _request = span.enter();
            tracing::info!("in the request");
            // A span we do not trace (below info): the line still names the
            // request's trace.
            let library = tracing::debug_span!(target: "hyper", "library");
            let _library = library.enter();
            tracing::warn!("in a library span");
        });
        tracing::dispatcher::with_default(&dispatch, || tracing::info!("outside"));

        let lines = lines.parsed();
        assert_eq!(lines.len(), 3, "{lines:?}");
        for line in &lines[..2] {
            assert_eq!(line["trace_id"], TRACE_ID, "{line}");
            let span_id = line["span_id"].as_str().unwrap();
            assert_eq!(span_id.len(), 16);
            assert_ne!(span_id, CALLER_SPAN, "our span is a child of the caller's");
        }
        assert_eq!(lines[0]["message"], "in the request");
        assert_eq!(lines[0]["span"]["name"], "request");
        assert_eq!(lines[1]["span"]["name"], "library");
        assert_eq!(
            lines[1]["span_id"], lines[0]["span_id"],
            "the traced ancestor's"
        );
        assert!(lines[2].get("trace_id").is_none(), "{}", lines[2]);
    }

    #[test]
    fn a_quiet_log_level_still_traces_and_names_the_trace_on_warnings() {
        let lines = Lines::default();
        let dispatch = log_dispatch(LogFormat::Json, "warn", lines.clone());
        let forwarded = tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("request");
            set_parent_from_headers(&span, &caller_headers());
            let _request = span.enter();
            tracing::info!("filtered out");
            tracing::warn!("kept");
            let mut outgoing = HeaderMap::new();
            inject_current(&mut outgoing);
            (outgoing, current_traceparent(), current_trace_id())
        });
        let lines = lines.parsed();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["trace_id"], TRACE_ID);

        let (outgoing, traceparent, trace_id) = forwarded;
        let header = outgoing[TRACEPARENT].to_str().unwrap();
        assert_eq!(Some(header), traceparent.as_deref());
        assert_eq!(trace_id.as_deref(), Some(TRACE_ID));
        let parts: Vec<&str> = header.split('-').collect();
        assert_eq!(parts[1], TRACE_ID, "{header}");
        assert_ne!(parts[2], CALLER_SPAN, "the callee's parent is our span");
        assert_eq!(parts[2], lines[0]["span_id"], "and the one the logs name");
    }

    #[test]
    fn without_a_caller_trace_a_new_one_starts_and_a_job_continues_it() {
        let lines = Lines::default();
        let dispatch = log_dispatch(LogFormat::Json, "info", lines.clone());
        tracing::dispatcher::with_default(&dispatch, || {
            let traceparent = {
                let span = tracing::info_span!("request");
                set_parent_from_headers(&span, &HeaderMap::new());
                let _entered = span.enter();
                tracing::info!("enqueueing");
                current_traceparent().expect("a fresh trace")
            };
            let job = tracing::info_span!("job");
            set_parent_from_traceparent(&job, &traceparent);
            job.in_scope(|| tracing::info!("handling"));
            let garbage = tracing::info_span!("job");
            set_parent_from_traceparent(&garbage, "00-not-a-trace");
            garbage.in_scope(|| tracing::info!("handling garbage"));
        });
        let lines = lines.parsed();
        assert_eq!(lines.len(), 3, "{lines:?}");
        let trace = lines[0]["trace_id"].as_str().unwrap();
        assert_eq!(trace.len(), 32);
        assert_eq!(lines[1]["trace_id"], trace, "the job joins the trace");
        assert_ne!(lines[1]["span_id"], lines[0]["span_id"]);
        assert_ne!(lines[2]["trace_id"], trace, "a bad traceparent starts anew");
    }

    #[test]
    fn the_callers_trace_state_goes_on_and_a_stray_one_does_not() {
        let dispatch = log_dispatch(LogFormat::Json, "warn", Lines::default());
        tracing::dispatcher::with_default(&dispatch, || {
            let mut incoming = caller_headers();
            incoming.insert("tracestate", "vendor=abc".parse().unwrap());
            let span = tracing::info_span!("request");
            set_parent_from_headers(&span, &incoming);
            let mut outgoing = incoming.clone();
            inject_headers(&span, &mut outgoing);
            assert_eq!(outgoing["tracestate"], "vendor=abc");
            let header = outgoing[TRACEPARENT].to_str().unwrap();
            assert!(header.starts_with(&format!("00-{TRACE_ID}-")), "{header}");
            assert!(header.ends_with("-01"), "sampled: {header}");

            // Without a caller's traceparent its tracestate means nothing.
            let mut stray = HeaderMap::new();
            stray.insert("tracestate", "client=forged".parse().unwrap());
            let fresh = tracing::info_span!("request");
            set_parent_from_headers(&fresh, &stray);
            inject_headers(&fresh, &mut stray);
            assert!(!stray.contains_key("tracestate"), "{stray:?}");
            assert_eq!(stray[TRACEPARENT].len(), 55);
        });
    }

    #[test]
    fn outside_any_span_there_is_nothing_to_propagate() {
        let dispatch = log_dispatch(LogFormat::Json, "info", Lines::default());
        tracing::dispatcher::with_default(&dispatch, || {
            assert_eq!(current_traceparent(), None);
            assert_eq!(current_trace_id(), None);
            let mut headers = HeaderMap::new();
            inject_current(&mut headers);
            assert!(!headers.contains_key(TRACEPARENT));
        });
    }
}
