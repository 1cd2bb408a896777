//! A served service joins its caller's trace: the request span continues the
//! incoming `traceparent`, every log line of the request names the trace, and
//! calls the handler makes carry it on to the next service.

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use zocalo_testkit::logs::CapturedLogs;
use zocalo_testkit::serve::serve;
use zocalo_testkit::text_of;

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

/// The next service: answers with the `traceparent` it was called with.
fn next_service() -> Router {
    Router::new().route(
        "/seen",
        get(|headers: HeaderMap| async move {
            headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned()
        }),
    )
}

/// The service under test: logs, then calls the next service.
fn service(next: String) -> Router {
    let api = Router::new().route(
        "/work",
        get(move || {
            let next = next.clone();
            async move {
                tracing::info!("working");
                let onward = reqwest::Client::new().get(format!("{next}/seen"));
                let seen = text_of(zocalo_http::traced(onward)).await;
                tracing::warn!(%seen, "called the next service");
                seen
            }
        }),
    );
    zocalo_http::server::finish(
        "traced",
        api,
        zocalo_telemetry::always_ready(),
        serde_json::json!({}),
    )
}

fn parts(traceparent: &str) -> (String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    (fields[1].to_owned(), fields[2].to_owned())
}

// One thread: the capturing subscriber set for this test covers the servers'
// tasks too.
#[tokio::test(flavor = "current_thread")]
async fn a_request_continues_the_callers_trace_in_logs_and_onward_calls() {
    let (logs, dispatch) = CapturedLogs::dispatch("info");
    let _subscriber = tracing::dispatcher::set_default(&dispatch);
    let next = serve(next_service()).await;
    let service = serve(service(next.url.clone())).await;
    let url = &service.url;
    let client = reqwest::Client::new();

    let seen = text_of(
        client
            .get(format!("{url}/work"))
            .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01")),
    )
    .await;
    let (trace, parent) = parts(&seen);
    assert_eq!(
        trace, TRACE_ID,
        "the onward call stays in the caller's trace"
    );
    assert_ne!(
        parent, CALLER_SPAN,
        "its parent is the service's request span"
    );

    let lines = logs.with_message("working");
    assert_eq!(lines.len(), 1, "{:?}", logs.lines());
    assert_eq!(lines[0]["trace_id"], TRACE_ID);
    assert_eq!(lines[0]["span_id"], parent.as_str());
    assert_eq!(lines[0]["span"]["name"], "request");
    let called = logs.with_message("called the next service");
    assert_eq!(called[0]["trace_id"], TRACE_ID);

    // Without a traceparent the request starts a trace of its own.
    let seen = text_of(client.get(format!("{url}/work"))).await;
    let (fresh, _) = parts(&seen);
    assert_ne!(fresh, TRACE_ID);
    let lines = logs.with_message("working");
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["trace_id"], fresh.as_str());
}
