//! The gateway continues a client's trace, or starts one, and hands it to
//! the upstream as its own child span.

use zocalo_testkit::logs::CapturedLogs;

use crate::support::{dead_url, gateway_over_reviews, header, settings, spawn_gateway};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// (trace id, parent span id) of a `traceparent`.
fn parts(traceparent: &str) -> (String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    assert_eq!(fields[0], "00");
    (fields[1].to_owned(), fields[2].to_owned())
}

// One thread: the capturing subscriber set here covers the gateway's tasks.
#[tokio::test(flavor = "current_thread")]
async fn the_upstream_gets_the_clients_trace_with_the_gateway_span_as_parent() {
    let (logs, dispatch) = CapturedLogs::dispatch("info,tower_http=debug");
    let _subscriber = tracing::dispatcher::set_default(&dispatch);
    let (gateway, _upstream, _) = gateway_over_reviews().await;

    let response = gateway
        .client
        .get("/api/reviews")
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let forwarded = header(&response, "x-echo-traceparent").expect("a traceparent upstream");
    let (trace, parent) = parts(forwarded);
    assert_eq!(trace, TRACE_ID, "same trace as the client's");
    assert_ne!(parent, CLIENT_SPAN, "the gateway's span is the parent");

    // The gateway's own log line for the request names the trace and the
    // span the upstream was told about.
    let finished: Vec<_> = logs
        .lines()
        .into_iter()
        .filter(|line| line["span"]["name"] == "request" && line["trace_id"] == TRACE_ID)
        .collect();
    assert!(!finished.is_empty(), "{:?}", logs.lines());
    assert_eq!(finished[0]["span_id"], parent.as_str());
}

#[tokio::test(flavor = "current_thread")]
async fn a_request_without_trace_context_starts_a_fresh_trace_per_request() {
    let (_logs, dispatch) = CapturedLogs::dispatch("warn");
    let _subscriber = tracing::dispatcher::set_default(&dispatch);
    let (gateway, _upstream, _) = gateway_over_reviews().await;

    let mut traces = Vec::new();
    for _ in 0..2 {
        let response = gateway.client.get("/api/reviews").send().await.unwrap();
        assert_eq!(response.status(), 200);
        let forwarded = header(&response, "x-echo-traceparent").expect("a traceparent upstream");
        let (trace, parent) = parts(forwarded);
        assert_eq!(trace.len(), 32);
        assert_ne!(trace, "0".repeat(32));
        assert_eq!(parent.len(), 16);
        traces.push(trace);
    }
    assert_ne!(traces[0], traces[1], "each request is a trace of its own");

    // A malformed header is ignored, not forwarded.
    let response = gateway
        .client
        .get("/api/reviews")
        .header("traceparent", "00-garbage")
        .send()
        .await
        .unwrap();
    let forwarded = header(&response, "x-echo-traceparent").unwrap();
    assert_ne!(forwarded, "00-garbage");
    assert_eq!(parts(forwarded).0.len(), 32);
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_request_is_logged_at_error_in_its_trace_with_its_request_id() {
    // At info the request span's fields (its request id) are on each line.
    let (logs, dispatch) = CapturedLogs::dispatch("info");
    let _subscriber = tracing::dispatcher::set_default(&dispatch);
    let gateway = spawn_gateway(settings(&dead_url().await)).await;

    let response = gateway
        .client
        .get("/api/reviews")
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .header("x-request-id", "failing-request-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);

    let failed = logs.with_message("response failed");
    assert_eq!(failed.len(), 1, "{:?}", logs.lines());
    let line = &failed[0];
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["classification"], "Status code: 502 Bad Gateway");
    assert_eq!(line["trace_id"], TRACE_ID);
    assert_eq!(line["span"]["request_id"], "failing-request-1");
    assert!(line["latency"].as_str().unwrap().ends_with(" ms"), "{line}");
    assert!(
        logs.with_message("finished processing request").is_empty(),
        "at info the debug line stays out"
    );
}
