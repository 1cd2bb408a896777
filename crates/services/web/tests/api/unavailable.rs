//! With its gateway unreachable (a port where
//! nothing listens): pages that need no API still render, the others are a
//! "service unavailable" page with `Retry-After`, never a 500 or JSON.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use zocalo_web::{Application, Settings};

/// A loopback port that was free a moment ago: connections are refused.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn without_a_gateway_pages_say_the_service_is_unavailable() {
    let settings = Settings {
        gateway_url: format!("http://127.0.0.1:{}", closed_port()),
        gateway_timeout_ms: 2_000,
        ..Settings::default()
    };
    let app = Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(stop.clone()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let home = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(home.status(), 200, "the home page needs no API");

    for path in [
        "/reviews",
        "/books",
        "/cameras",
        "/reviews/0190a1b2-0000-7000-8000-000000000000",
    ] {
        let page = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(page.status(), 503, "{path}");
        assert_eq!(page.headers()["retry-after"], "5", "{path}");
        let content_type = page.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            content_type.starts_with("text/html"),
            "{path}: {content_type}"
        );
        let html = page.text().await.unwrap();
        assert!(html.contains("Service unavailable"), "{path}: {html}");
    }

    let missing = http.get(format!("{base}/nowhere")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("Page not found"));
    let wrong_method = http.delete(format!("{base}/books")).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert!(
        wrong_method
            .text()
            .await
            .unwrap()
            .contains("Not allowed here")
    );

    let ready = http.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready without its gateway");
    let live = http.get(format!("{base}/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);

    stop.cancel();
    server.await.unwrap().unwrap();
}
