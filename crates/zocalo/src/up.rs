//! Running services: all of them in one process (`up`), one (`serve`), the
//! job consumers of one (`worker`), or only their migrations (`migrate`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use zocalo_discovery::{
    Discovery, DiscoveryError, DiscoveryKind, DiscoverySettings, Instance, Instances,
    NatsDiscovery, Registration,
};
use zocalo_http::client::{ServiceClient, follow_instances};

use crate::Service;
use crate::settings::Settings;

type Servers = JoinSet<std::io::Result<()>>;

/// Run a worker beside the servers; it stops with them.
fn spawn_worker(servers: &mut Servers, run: impl Future<Output = ()> + Send + 'static) {
    servers.spawn(async move {
        run.await;
        Ok(())
    });
}

fn local(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// Start auth first (everyone verifies its tokens), then the applications,
/// then the gateway in front of them; stop all on ctrl-c or SIGTERM.
pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let gateway_port = settings.gateway.listen.port();
    settings.share_issuer(gateway_port);
    settings.embedded_orders_client();
    if settings.live_config_file.is_some() || settings.live_config_nats.is_some() {
        // One process, one log filter: the gateway's section owns it here.
        tracing::warn!(
            "live_config_file/live_config_nats are for `serve` and `worker`; `up` follows gateway.live"
        );
    }
    let shutdown = CancellationToken::new();
    let mut servers = Servers::new();

    let auth = zocalo_auth::Application::build(settings.auth.clone(), settings.admin())
        .await
        .context("starting auth")?;
    let auth_url = local(auth.port());
    let jwks = format!("{auth_url}/.well-known/jwks.json");
    servers.spawn(auth.run_until_stopped(shutdown.clone()));

    settings.reviews.jwks_url = jwks.clone();
    let reviews = zocalo_reviews::Application::build(settings.reviews.clone())
        .await
        .context("starting reviews")?;
    let reviews_url = local(reviews.port());
    servers.spawn(reviews.run_until_stopped(shutdown.clone()));

    settings.catalog.jwks_url = jwks.clone();
    let catalog = zocalo_catalog::Application::build(settings.catalog.clone())
        .await
        .context("starting catalog")?;
    let catalog_url = local(catalog.port());
    servers.spawn(catalog.run_until_stopped(shutdown.clone()));

    settings.orders.jwks_url = jwks.clone();
    settings.orders.catalog_url = catalog_url.clone();
    settings.orders.token_url = format!("{auth_url}/auth/token");
    let orders = zocalo_orders::Application::build(settings.orders.clone())
        .await
        .context("starting orders")?;
    let orders_url = local(orders.port());
    servers.spawn(orders.run_until_stopped(shutdown.clone()));
    let worker = zocalo_orders::Worker::build(settings.orders.clone())
        .await
        .context("starting the orders worker")?;
    spawn_worker(&mut servers, worker.run_until_stopped(shutdown.clone()));

    settings.cinema_command.jwks_url = jwks.clone();
    let cinema_command = zocalo_cinema_command::Application::build(settings.cinema_command.clone())
        .await
        .context("starting cinema-command")?;
    let cinema_command_url = local(cinema_command.port());
    servers.spawn(cinema_command.run_until_stopped(shutdown.clone()));

    // The pages call the APIs through the gateway, like any browser would.
    settings.web.gateway_url = local(gateway_port);
    let web = zocalo_web::Application::build(settings.web.clone())
        .await
        .context("starting web")?;
    let web_url = local(web.port());
    servers.spawn(web.run_until_stopped(shutdown.clone()));

    settings.cinema_query.jwks_url = jwks.clone();
    settings.cinema_query.command_url = cinema_command_url.clone();
    settings.cinema_query.token_url = format!("{auth_url}/auth/token");
    let cinema_query = zocalo_cinema_query::Application::build(settings.cinema_query.clone())
        .await
        .context("starting cinema-query")?;
    let cinema_query_url = local(cinema_query.port());
    servers.spawn(cinema_query.run_until_stopped(shutdown.clone()));

    let media_url = start_media(&mut settings, &jwks, &mut servers, &shutdown).await?;

    for (service, url) in [
        ("auth", &auth_url),
        ("reviews", &reviews_url),
        ("catalog", &catalog_url),
        ("orders", &orders_url),
        ("cinema-command", &cinema_command_url),
        ("web", &web_url),
        ("cinema-query", &cinema_query_url),
        ("media", &media_url),
    ] {
        settings
            .gateway
            .set_upstreams(service, std::slice::from_ref(url));
        println!("{service} listening on {url}");
    }
    let gateway = zocalo_gateway::Application::build(settings.gateway.clone())
        .await
        .context("starting the gateway")?;
    let gateway_url = settings.local_gateway_url(gateway.port());
    servers.spawn(gateway.run_until_stopped(shutdown.clone()));
    println!("gateway listening on {gateway_url}");
    tracing::info!(%gateway_url, "zocalo up");
    wait(servers, shutdown, None).await
}

/// The media API and its video workers, in this process; its address.
async fn start_media(
    settings: &mut Settings,
    jwks: &str,
    servers: &mut Servers,
    shutdown: &CancellationToken,
) -> anyhow::Result<String> {
    settings.media.jwks_url = jwks.to_owned();
    let media = zocalo_media::Application::build(settings.media.clone())
        .await
        .context("starting media")?;
    let url = local(media.port());
    servers.spawn(media.run_until_stopped(shutdown.clone()));
    let worker = zocalo_media::Worker::build(settings.media.clone())
        .await
        .context("starting the media worker")?;
    spawn_worker(servers, worker.run_until_stopped(shutdown.clone()));
    Ok(url)
}

/// One service, for a container or a pod.
pub async fn serve(service: Service, mut settings: Settings) -> anyhow::Result<()> {
    // Every process of a deployment must agree on the issuer and audience:
    // both come from `public_url` (default: the gateway's address).
    settings.share_issuer(settings.gateway.listen.port());
    let shutdown = CancellationToken::new();
    let mut servers = Servers::new();
    let port = match service {
        Service::Gateway => {
            let gateway = gateway_settings(&settings)?;
            let app = zocalo_gateway::Application::build(gateway).await?;
            follow_discovery(&settings.discovery, app.upstreams(), shutdown.clone()).await?;
            let port = app.port();
            servers.spawn(app.run_until_stopped(shutdown.clone()));
            port
        }
        Service::Auth => {
            let admin = settings.admin();
            let app = zocalo_auth::Application::build(settings.auth.clone(), admin).await?;
            let port = app.port();
            servers.spawn(app.run_until_stopped(shutdown.clone()));
            port
        }
        Service::Reviews => {
            let app = zocalo_reviews::Application::build(settings.reviews.clone()).await?;
            let port = app.port();
            servers.spawn(app.run_until_stopped(shutdown.clone()));
            port
        }
        Service::Catalog => {
            let app = zocalo_catalog::Application::build(settings.catalog.clone()).await?;
            let port = app.port();
            servers.spawn(app.run_until_stopped(shutdown.clone()));
            port
        }
        Service::Orders => {
            let app = zocalo_orders::Application::build(settings.orders.clone()).await?;
            let port = app.port();
            servers.spawn(app.run_until_stopped(shutdown.clone()));
            port
        }
        Service::CinemaCommand => {
            let app =
                zocalo_cinema_command::Application::build(settings.cinema_command.clone()).await?;
            let port = app.port();
            servers.spawn(app.run_until_stopped(shutdown.clone()));
            port
        }
        Service::Web => {
            if settings.web.csrf_secret.expose().is_empty() {
                tracing::warn!(
                    "web.csrf_secret is unset: this instance signs forms with a secret of its own, \
                     which other web instances refuse"
                );
            }
            let app = zocalo_web::Application::build(settings.web.clone()).await?;
            let port = app.port();
            servers.spawn(app.run_until_stopped(shutdown.clone()));
            port
        }
        Service::CinemaQuery => {
            let app =
                zocalo_cinema_query::Application::build(settings.cinema_query.clone()).await?;
            let port = app.port();
            servers.spawn(app.run_until_stopped(shutdown.clone()));
            port
        }
        Service::Media => {
            let app = zocalo_media::Application::build(settings.media.clone()).await?;
            let port = app.port();
            servers.spawn(app.run_until_stopped(shutdown.clone()));
            port
        }
    };
    // The gateway follows its own `gateway.live` (log level included).
    let _live = match service {
        Service::Gateway => None,
        _ => Some(crate::live::start(&settings, &shutdown)?),
    };
    println!("{service:?} listening on port {port}");
    let registration = register(&settings.discovery, service, port).await?;
    wait(servers, shutdown, registration).await
}

/// The gateway's settings for `serve`: with a discovery source and no
/// static `auth` instance, keys are fetched through the gateway itself
/// (`/.well-known` is routed to whichever auth instance is alive).
fn gateway_settings(settings: &Settings) -> anyhow::Result<zocalo_gateway::Settings> {
    let mut gateway = settings.gateway.clone();
    if settings.discovery.kind != DiscoveryKind::Static && gateway.effective_jwks_url().is_none() {
        // Through its own TLS listener the gateway would have to trust its
        // own certificate: name an auth address instead.
        anyhow::ensure!(
            gateway.tls.is_none(),
            "key `gateway.jwks_url`: required when the gateway terminates TLS with discovery"
        );
        let port = gateway.listen.port();
        anyhow::ensure!(
            port != 0,
            "key `gateway.jwks_url`: required when the gateway listens on port 0 with discovery"
        );
        gateway.jwks_url = Some(format!("http://127.0.0.1:{port}/.well-known/jwks.json"));
    }
    Ok(gateway)
}

/// Keep the gateway's instances in step with the discovery source: one task
/// per routed service, ended by `shutdown`. Static discovery needs none (the
/// route table already holds the configured upstreams).
async fn follow_discovery(
    settings: &DiscoverySettings,
    upstreams: zocalo_gateway::Upstreams,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(discovery) = discovery_source(settings).await? else {
        return Ok(());
    };
    let services: Vec<String> = upstreams.services().map(str::to_owned).collect();
    for service in services {
        let Some(instances) = watch_service(discovery.as_ref(), &service).await? else {
            tracing::warn!(%service, "discovery knows no such service: its routes get 503");
            continue;
        };
        let upstreams = upstreams.clone();
        follow_instances(instances, shutdown.clone(), move |urls| {
            if let Err(error) = upstreams.set(&service, urls) {
                tracing::warn!(%service, error = format!("{error:#}"), "ignoring discovered instances");
            }
        });
    }
    Ok(())
}

/// Point a worker's clients at the discovered instances of the services it
/// calls; with static discovery (or a service the source does not know)
/// they keep the configured addresses.
async fn follow_clients(
    settings: &DiscoverySettings,
    clients: &[&ServiceClient],
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(discovery) = discovery_source(settings).await? else {
        return Ok(());
    };
    for client in clients {
        match watch_service(discovery.as_ref(), client.service()).await? {
            Some(instances) => {
                client.follow(instances, shutdown.clone());
            }
            None => tracing::warn!(
                service = client.service(),
                "discovery knows no such service: calling the configured address"
            ),
        }
    }
    Ok(())
}

/// The configured discovery source; `None` for static lists, which the
/// settings already hold.
async fn discovery_source(
    settings: &DiscoverySettings,
) -> anyhow::Result<Option<Arc<dyn Discovery>>> {
    if settings.kind == DiscoveryKind::Static {
        return Ok(None);
    }
    let discovery = zocalo_discovery::from_settings(settings, Default::default())
        .await
        .context("connecting to discovery")?;
    Ok(Some(discovery))
}

/// The live instances of `service`; `None` when the source knows no such
/// service (a DNS source without a name for it).
async fn watch_service(
    discovery: &dyn Discovery,
    service: &str,
) -> anyhow::Result<Option<watch::Receiver<Instances>>> {
    match discovery.watch(service).await {
        Ok(instances) => Ok(Some(instances)),
        Err(DiscoveryError::UnknownService(_)) => Ok(None),
        Err(error) => Err(error).context("watching discovery"),
    }
}

/// With NATS discovery, announce this instance once it is bound, so no
/// one is sent to it before it can answer.
async fn register(
    settings: &DiscoverySettings,
    service: Service,
    port: u16,
) -> anyhow::Result<Option<Registration>> {
    if settings.kind != DiscoveryKind::Nats {
        return Ok(None);
    }
    let discovery = NatsDiscovery::connect(
        &settings.nats_url,
        &settings.bucket,
        Duration::from_millis(settings.ttl_ms),
    )
    .await
    .context("connecting to discovery")?;
    let instance = Instance {
        id: uuid::Uuid::new_v4().to_string(),
        service: service.name().to_owned(),
        url: advertised_url(settings.advertise_host.as_deref(), port),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        zone: settings.zone.clone(),
    };
    let registration = discovery
        .register(instance, Duration::from_millis(settings.heartbeat_ms))
        .await
        .context("registering in discovery")?;
    Ok(Some(registration))
}

fn advertised_url(host: Option<&str>, port: u16) -> String {
    match host.unwrap_or("127.0.0.1") {
        // An IPv6 literal needs brackets in a URL.
        host if host.contains(':') && !host.starts_with('[') => format!("http://[{host}]:{port}"),
        host => format!("http://{host}:{port}"),
    }
}

/// Only the job consumers of a service, scaled apart from its API.
pub async fn worker(service: Service, settings: Settings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let mut servers = Servers::new();
    match service {
        Service::Orders => {
            let clients = settings.orders.clients()?;
            follow_clients(
                &settings.discovery,
                &[&clients.catalog, &clients.auth],
                shutdown.clone(),
            )
            .await?;
            let worker =
                zocalo_orders::Worker::build_with_clients(settings.orders.clone(), clients).await?;
            spawn_worker(&mut servers, worker.run_until_stopped(shutdown.clone()));
        }
        // The outbox relay and the hold sweeper, which every serving
        // instance also runs: safe side by side.
        Service::CinemaCommand => {
            let worker =
                zocalo_cinema_command::Worker::build(settings.cinema_command.clone()).await?;
            spawn_worker(&mut servers, worker.run_until_stopped(shutdown.clone()));
        }
        Service::Media => {
            let worker = zocalo_media::Worker::build(settings.media.clone()).await?;
            spawn_worker(&mut servers, worker.run_until_stopped(shutdown.clone()));
        }
        other => anyhow::bail!("{other:?} has no job consumers"),
    }
    let _live = crate::live::start(&settings, &shutdown)?;
    if let Some(addr) = settings.worker_listen {
        let listener = zocalo_http::server::bind(addr)
            .await
            .with_context(|| format!("key `worker_listen`: cannot listen on {addr}"))?;
        println!(
            "{service:?} worker admin endpoints on port {}",
            listener.local_addr()?.port()
        );
        let admin = zocalo_telemetry::admin_router(zocalo_telemetry::always_ready());
        servers.spawn(zocalo_http::server::serve(
            listener,
            admin,
            shutdown.clone(),
        ));
    }
    println!("{service:?} worker running");
    wait(servers, shutdown, None).await
}

/// Run until a signal (or a server failing), then drain every server.
/// The instance leaves discovery first, so balancers stop sending it new
/// requests while the ones in flight finish.
async fn wait(
    mut servers: Servers,
    shutdown: CancellationToken,
    registration: Option<Registration>,
) -> anyhow::Result<()> {
    let mut first_error = None;
    tokio::select! {
        () = zocalo_http::server::shutdown_signal() => {
            tracing::info!("shutting down: draining in-flight requests");
        }
        Some(ended) = servers.join_next() => {
            first_error = Some(match ended {
                Ok(Ok(())) => anyhow::anyhow!("a server stopped unexpectedly"),
                Ok(Err(error)) => anyhow::Error::from(error).context("a server failed"),
                Err(error) => anyhow::Error::from(error).context("a server panicked"),
            });
        }
    }
    if let Some(registration) = registration {
        registration.deregister().await;
    }
    shutdown.cancel();
    while let Some(ended) = servers.join_next().await {
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
    if wants(Service::Catalog) {
        zocalo_catalog::store::open(&settings.catalog.database())
            .await
            .context("migrating catalog")?;
        println!("catalog: migrations applied");
    }
    if wants(Service::Orders) {
        zocalo_orders::store::open(&settings.orders.database())
            .await
            .context("migrating orders")?;
        println!("orders: migrations applied");
    }
    if wants(Service::CinemaCommand) {
        zocalo_cinema_command::store::open(&settings.cinema_command.database())
            .await
            .context("migrating cinema-command")?;
        println!("cinema-command: migrations applied");
    }
    if wants(Service::CinemaQuery) {
        zocalo_cinema_query::store::open(&settings.cinema_query.database())
            .await
            .context("migrating cinema-query")?;
        println!("cinema-query: migrations applied");
    }
    if wants(Service::Media) {
        zocalo_media::store::open(&settings.media.database())
            .await
            .context("migrating media")?;
        println!("media: migrations applied");
    }
    if service == Some(Service::Gateway) {
        println!("gateway: has no database");
    }
    if service == Some(Service::Web) {
        println!("web: has no database");
    }
    Ok(())
}

/// `zocalo admin rebuild <service>`: wipe the read models and replay the
/// source's events into them, finding the source through discovery like a
/// worker does.
pub async fn rebuild(service: Service, settings: Settings) -> anyhow::Result<()> {
    match service {
        Service::CinemaQuery => {
            let shutdown = CancellationToken::new();
            let clients = settings.cinema_query.clients()?;
            follow_clients(
                &settings.discovery,
                &[&clients.command, &clients.auth],
                shutdown.clone(),
            )
            .await?;
            let report = zocalo_cinema_query::rebuild(&settings.cinema_query, clients)
                .await
                .context("rebuilding cinema-query")?;
            shutdown.cancel();
            println!(
                "cinema-query: rebuilt from {} events ({} pages, up to log position {})",
                report.events, report.pages, report.last_seq
            );
            Ok(())
        }
        other => anyhow::bail!("{other:?} has no read models to rebuild"),
    }
}
