//! Traces leave the process over OTLP/HTTP: a collector on loopback
//! receives the spans of a request made through the gateway, all in the
//! client's trace, the service's span a child of the gateway's; an order's
//! saga (outbox, jobs, calls to catalog) stays in the trace that placed it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;

use crate::{Stack, free_port, tempfile_dir};

const TRACE_ID: &str = "5b8aa5a2d2c872e8321cf37308d69df2";
const CLIENT_SPAN: &str = "051581bf3cb55c13";

/// One span as the collector received it; ids in hex.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    /// The `service` field of a request span (which service served it).
    served_by: Option<String>,
    trace_id: String,
    span_id: String,
    parent: String,
}

/// A minimal OTLP/HTTP trace collector: decodes every export it is sent.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Received>>>,
    _stop: tokio_util::sync::DropGuard,
}

impl Collector {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
        let app = Router::new()
            .route("/v1/traces", post(export))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = tokio_util::sync::CancellationToken::new();
        let signal = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(signal.cancelled_owned())
                .await
        });
        Self {
            url,
            spans,
            _stop: stop.drop_guard(),
        }
    }

    /// `zocalo up` exporting its traces here, with `env` besides.
    fn export_from_stack(&self, env: &[(&str, &str)]) -> Stack {
        let data = tempfile_dir::Dir::new();
        let mut env = env.to_vec();
        env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", self.url.as_str()));
        let mut stack = Stack::start_in(&data.0, free_port(), &env);
        stack._data = Some(data);
        stack
    }

    /// The spans of `trace_id` once `complete` holds for them, or those
    /// received when `within` has passed (the caller's assertions say
    /// what was missing).
    async fn spans_once(
        &self,
        trace_id: &str,
        within: Duration,
        every: Duration,
        complete: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.in_trace(trace_id);
            if complete(&spans) || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(every).await;
        }
    }

    fn in_trace(&self, trace_id: &str) -> Vec<Received> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

async fn export(
    State(spans): State<Arc<Mutex<Vec<Received>>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], Vec<u8>) {
    let protobuf = [(header::CONTENT_TYPE, "application/x-protobuf")];
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type != Some("application/x-protobuf") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, protobuf, Vec::new());
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, protobuf, Vec::new());
    };
    let mut received = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| string(kv.value.as_ref()?))
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            let served_by = span
                .attributes
                .iter()
                .find(|kv| kv.key == "service")
                .and_then(|kv| string(kv.value.as_ref()?));
            received.push(Received {
                service: service.clone(),
                name: span.name,
                served_by,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
            });
        }
    }
    // An empty ExportTraceServiceResponse: everything accepted.
    (StatusCode::OK, protobuf, Vec::new())
}

fn string(value: &opentelemetry_proto::tonic::common::v1::AnyValue) -> Option<String> {
    match value.value.as_ref()? {
        AnyValue::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_spans_reach_the_otlp_collector_in_the_clients_trace() {
    let collector = Collector::start().await;
    // A batch delay longer than the test: spans can only arrive through the
    // flush on SIGTERM, which is what this proves.
    let stack = collector.export_from_stack(&[
        ("OTEL_SERVICE_NAME", "zocalo-e2e"),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    ]);
    let response = stack
        .http
        .get(stack.url("/api/content?q=lens"))
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // The spans end once the response has been sent in full.
    response.bytes().await.unwrap();

    let status = stack.stop();
    assert!(status.success(), "zocalo stopped cleanly: {status}");
    // The flush happened before the process exited; a short grace covers
    // the collector's own bookkeeping.
    let spans = collector
        .spans_once(
            TRACE_ID,
            Duration::from_secs(5),
            Duration::from_millis(50),
            |spans| spans.len() >= 2,
        )
        .await;
    assert!(
        spans.len() >= 2,
        "gateway and service spans: {spans:?}; all received: {:?}",
        collector.spans.lock().unwrap()
    );
    assert!(spans.iter().all(|s| s.service == "zocalo-e2e"), "{spans:?}");
    assert!(spans.iter().all(|s| s.name == "request"), "{spans:?}");
    let gateway = spans
        .iter()
        .find(|s| s.parent == CLIENT_SPAN)
        .unwrap_or_else(|| panic!("a span whose parent is the client's: {spans:?}"));
    assert!(
        spans.iter().any(|s| s.parent == gateway.span_id),
        "the service's span is a child of the gateway's: {spans:?}"
    );
}

/// An order placed in a trace is processed in it: the orders request, the
/// outbox relay, the saga's jobs and the orders → catalog calls all report
/// spans of the client's trace (exported periodically this time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orders_saga_runs_in_the_trace_of_the_request_that_placed_it() {
    const ORDER_TRACE: &str = "7c1d1b7e3f0a4c2d9e8f6a5b4c3d2e1f";
    let collector = Collector::start().await;
    let stack = collector.export_from_stack(&[("OTEL_BSP_SCHEDULE_DELAY", "200")]);
    let seller = crate::register_and_login(&stack, "sol@example.com").await;
    let buyer = crate::register_and_login(&stack, "bruno@example.com").await;
    let book = crate::list_book(&stack, &seller, 1).await;
    let order = crate::support::accepted_order(
        stack
            .http
            .post(stack.url("/api/orders"))
            .bearer_auth(crate::access(&buyer))
            .header("traceparent", format!("00-{ORDER_TRACE}-{CLIENT_SPAN}-01"))
            .header("idempotency-key", "traced-purchase")
            .json(&crate::support::one_copy_order(
                book["id"].clone(),
                "Corrientes 1234, Buenos Aires",
                "dhl",
                "4242 4242 4242 4242",
            )),
    )
    .await;
    crate::wait_for_status(&stack, &buyer, order["id"].as_str().unwrap(), "delivered").await;

    let served_by = |spans: &[Received], service: &str| {
        spans
            .iter()
            .any(|s| s.name == "request" && s.served_by.as_deref() == Some(service))
    };
    // A parent span ends (and is exported) after its children.
    let orphans = |spans: &[Received]| -> Vec<Received> {
        spans
            .iter()
            .filter(|s| s.parent != CLIENT_SPAN && !spans.iter().any(|p| p.span_id == s.parent))
            .cloned()
            .collect()
    };
    let spans = collector
        .spans_once(
            ORDER_TRACE,
            Duration::from_secs(15),
            Duration::from_millis(100),
            |spans| {
                ["gateway", "orders", "catalog"]
                    .iter()
                    .all(|service| served_by(spans, service))
                    && spans.iter().any(|s| s.name == "job")
                    && orphans(spans).is_empty()
            },
        )
        .await;
    let names: Vec<(&str, Option<&str>)> = spans
        .iter()
        .map(|s| (s.name.as_str(), s.served_by.as_deref()))
        .collect();
    for service in ["gateway", "orders", "catalog"] {
        assert!(
            served_by(&spans, service),
            "no {service} request span: {names:?}"
        );
    }
    assert!(
        spans.iter().any(|s| s.name == "job"),
        "no job span: {names:?}"
    );
    assert!(
        spans.iter().any(|s| s.name == "outbox_relay"),
        "no relay span: {names:?}"
    );
    // Every span but the gateway's has its parent inside the trace.
    let orphans = orphans(&spans);
    assert!(
        orphans.is_empty(),
        "spans whose parent is missing: {orphans:?}"
    );
    assert!(stack.stop().success());
}
