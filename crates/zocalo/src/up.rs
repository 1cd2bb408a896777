//! Running services: all of them in one process (`up`), one (`serve`), or
//! only their migrations (`migrate`).

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Service;
use crate::settings::Settings;

/// Start auth, then reviews (which verifies tokens with auth's keys), then
/// the gateway in front of both; stop all on ctrl-c or SIGTERM.
pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let gateway_port = settings.gateway.listen.port();
    settings.share_issuer(gateway_port);

    let auth = zocalo_auth::Application::build(settings.auth.clone(), settings.admin())
        .await
        .context("starting auth")?;
    let auth_url = format!("http://127.0.0.1:{}", auth.port());
    if settings.reviews.jwks_url == zocalo_reviews::Settings::default().jwks_url {
        settings.reviews.jwks_url = format!("{auth_url}/.well-known/jwks.json");
    }
    let reviews = zocalo_reviews::Application::build(settings.reviews.clone())
        .await
        .context("starting reviews")?;
    let reviews_url = format!("http://127.0.0.1:{}", reviews.port());

    settings
        .gateway
        .set_upstreams("auth", std::slice::from_ref(&auth_url));
    settings
        .gateway
        .set_upstreams("reviews", std::slice::from_ref(&reviews_url));
    let gateway = zocalo_gateway::Application::build(settings.gateway.clone())
        .await
        .context("starting the gateway")?;
    let gateway_url = format!("http://127.0.0.1:{}", gateway.port());

    println!("auth listening on {auth_url}");
    println!("reviews listening on {reviews_url}");
    println!("gateway listening on {gateway_url}");
    tracing::info!(%gateway_url, %auth_url, %reviews_url, "zocalo up");

    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    tasks.spawn(auth.run_until_stopped(shutdown.clone()));
    tasks.spawn(reviews.run_until_stopped(shutdown.clone()));
    tasks.spawn(gateway.run_until_stopped(shutdown.clone()));
    wait(tasks, shutdown).await
}

/// One service, for a container or a pod.
pub async fn serve(service: Service, mut settings: Settings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    match service {
        Service::Gateway => {
            let app = zocalo_gateway::Application::build(settings.gateway).await?;
            println!("gateway listening on port {}", app.port());
            tasks.spawn(app.run_until_stopped(shutdown.clone()));
        }
        Service::Auth => {
            let admin = settings.admin();
            let app = zocalo_auth::Application::build(settings.auth, admin).await?;
            println!("auth listening on port {}", app.port());
            tasks.spawn(app.run_until_stopped(shutdown.clone()));
        }
        Service::Reviews => {
            settings.reviews.audience = settings.auth.audience.clone();
            let app = zocalo_reviews::Application::build(settings.reviews).await?;
            println!("reviews listening on port {}", app.port());
            tasks.spawn(app.run_until_stopped(shutdown.clone()));
        }
    }
    wait(tasks, shutdown).await
}

/// Run until a signal (or a server failing), then drain every server.
async fn wait(
    mut tasks: JoinSet<std::io::Result<()>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut first_error = None;
    tokio::select! {
        () = zocalo_http::server::shutdown_signal() => {
            tracing::info!("shutting down: draining in-flight requests");
        }
        Some(ended) = tasks.join_next() => {
            first_error = Some(match ended {
                Ok(Ok(())) => anyhow::anyhow!("a server stopped unexpectedly"),
                Ok(Err(error)) => anyhow::Error::from(error).context("a server failed"),
                Err(error) => anyhow::Error::from(error).context("a server panicked"),
            });
        }
    }
    shutdown.cancel();
    while let Some(ended) = tasks.join_next().await {
        if let Ok(Err(error)) = ended {
            tracing::warn!(%error, "server ended with an error during shutdown");
        }
    }
    println!("zocalo stopped");
    first_error.map_or(Ok(()), Err)
}

/// Open each service's store, which applies its pending migrations.
pub async fn migrate(service: Option<Service>, settings: Settings) -> anyhow::Result<()> {
    let wants = |s: Service| service.is_none_or(|asked| asked == s);
    if wants(Service::Auth) {
        zocalo_auth::store::open(&settings.auth.database())
            .await
            .context("migrating auth")?;
        println!("auth: migrations applied");
    }
    if wants(Service::Reviews) {
        zocalo_reviews::store::open(&settings.reviews.database())
            .await
            .context("migrating reviews")?;
        println!("reviews: migrations applied");
    }
    if service == Some(Service::Gateway) {
        println!("gateway: has no database");
    }
    Ok(())
}
