//! Throughput check: a trivial upstream and a gateway in front of it, so
//! that `wrk` can compare direct and proxied requests. Prints both ports.

use axum::Router;
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use zocalo_gateway::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Log as production does, so that per-request spans cost what they will.
    zocalo_telemetry::init_logging(&zocalo_telemetry::LogSettings::default());
    let body: &'static str = Box::leak("x".repeat(1024).into_boxed_str());
    let upstream = Router::new().fallback(get(move || async move { body }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, upstream).await });

    let mut settings = Settings {
        listen: "127.0.0.1:0".parse()?,
        rate_limit: None,
        ..Settings::default()
    };
    for route in &mut settings.routes {
        route.upstreams = vec![upstream_url.clone()];
    }
    let app = Application::build(settings).await?;
    println!(
        "upstream {upstream_url} gateway http://127.0.0.1:{}",
        app.port()
    );
    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        signal.cancel();
    });
    app.run_until_stopped(stop).await?;
    Ok(())
}
