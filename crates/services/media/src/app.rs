//! Building and running the media service: the HTTP API with its outbox
//! relay and object garbage collection ([`Application`]), and the video
//! workers ([`Worker`]), which `zocalo up` runs together and `zocalo worker
//! media` runs alone (with ffmpeg in its image).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use zocalo_bus::{Bus, JobError, JobHandler, WorkerOptions};
use zocalo_contracts::media::{PROCESS_QUEUE, ProcessVideo};
use zocalo_http::auth::{KeySource, TokenVerifier};
use zocalo_http::server::Server;
use zocalo_objects::{ObjectStore, ObjectsSettings};
use zocalo_store::DatabaseSettings;

use crate::ffmpeg::Pipeline;
use crate::processing::Processor;
use crate::store::{self, TasksStore};

/// The logo shown on the cards when `logo_path` is not set.
const DEFAULT_LOGO: &[u8] = include_bytes!("../assets/logo.png");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: String,
    pub database_read_url: Option<String>,
    pub database_read_urls: Vec<String>,
    pub database_max_connections: usize,
    /// `sqlite://…/bus.db` (embedded) or `nats://…` (JetStream).
    pub bus_url: String,
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
    /// Where originals and processed videos are kept.
    pub objects: ObjectsSettings,
    /// Largest accepted upload; larger ones get 413 as soon as they pass it.
    pub max_upload_bytes: u64,
    /// Processing attempts before a task fails for good (dead letter).
    pub max_attempts: u32,
    /// Videos one worker process converts at once.
    pub worker_concurrency: usize,
    pub ffmpeg_path: PathBuf,
    pub ffprobe_path: PathBuf,
    /// util-linux `setpriv`, used to have ffmpeg killed when its worker
    /// dies; empty (or not found) starts ffmpeg directly.
    pub setpriv_path: PathBuf,
    /// PNG shown on the 2-second cards; a logo shipped with Zócalo when
    /// absent.
    pub logo_path: Option<PathBuf>,
    /// Output width; the height follows from 16:9.
    pub output_width: u32,
    pub output_fps: u32,
    pub x264_preset: String,
    pub x264_crf: u8,
    /// The most one ffmpeg run may take before it is killed.
    pub ffmpeg_timeout_secs: u64,
    /// How long a job a worker took stays hidden from the others: if that
    /// worker dies, the video is processed again after this long. Must be
    /// longer than `ffmpeg_timeout_secs` plus the copying.
    pub job_visibility_secs: u64,
    /// Where workers keep inputs and outputs while converting.
    pub scratch_dir: PathBuf,
    /// How often the status stream looks for changes.
    pub status_poll_ms: u64,
    pub relay_interval_ms: u64,
    pub gc_interval_secs: u64,
    /// Objects and partial uploads younger than this are never collected.
    pub gc_grace_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: "sqlite://data/media.db".into(),
            database_read_url: None,
            database_read_urls: Vec::new(),
            database_max_connections: 16,
            bus_url: "sqlite://data/bus.db".into(),
            jwks_url: "http://127.0.0.1:8080/.well-known/jwks.json".into(),
            issuer: "http://127.0.0.1:8080".into(),
            audience: "zocalo-api".into(),
            objects: ObjectsSettings::default(),
            max_upload_bytes: 512 * 1024 * 1024,
            max_attempts: 3,
            worker_concurrency: 2,
            ffmpeg_path: "ffmpeg".into(),
            ffprobe_path: "ffprobe".into(),
            setpriv_path: "setpriv".into(),
            logo_path: None,
            output_width: 1280,
            output_fps: 30,
            x264_preset: "veryfast".into(),
            x264_crf: 23,
            ffmpeg_timeout_secs: 600,
            job_visibility_secs: 900,
            scratch_dir: std::env::temp_dir().join("zocalo-media"),
            status_poll_ms: 500,
            relay_interval_ms: 200,
            gc_interval_secs: 600,
            gc_grace_secs: 3600,
        }
    }
}

impl Settings {
    pub fn database(&self) -> DatabaseSettings {
        DatabaseSettings {
            url: self.database_url.clone(),
            read_url: self.database_read_url.clone(),
            read_urls: self.database_read_urls.clone(),
            max_connections: self.database_max_connections,
            ..DatabaseSettings::default()
        }
    }

    async fn objects(&self) -> anyhow::Result<Arc<dyn ObjectStore>> {
        zocalo_objects::open(&self.objects)
            .await
            .map_err(|e| anyhow::anyhow!("key `media.objects.url`: {e}"))
    }

    /// Refuse settings that would make processing run twice or never.
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.job_visibility_secs > self.ffmpeg_timeout_secs,
            "key `media.job_visibility_secs`: must be longer than `media.ffmpeg_timeout_secs`, or a slow video is processed twice"
        );
        anyhow::ensure!(
            self.output_width >= 16,
            "key `media.output_width`: at least 16"
        );
        anyhow::ensure!(
            self.x264_preset.bytes().all(|b| b.is_ascii_lowercase()),
            "key `media.x264_preset`: an x264 preset name such as `veryfast`"
        );
        Ok(())
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn TasksStore>,
    pub objects: Arc<dyn ObjectStore>,
    pub verifier: Arc<TokenVerifier>,
    /// Wakes the outbox relay as soon as an upload committed its job.
    pub relay_wake: Arc<Notify>,
    pub max_upload_bytes: u64,
    pub max_attempts: u32,
    pub status_poll: Duration,
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// The HTTP API, the outbox relay and object garbage collection.
pub struct Application {
    server: Server,
    state: AppState,
    bus: Bus,
    relay_interval: Duration,
    gc_interval: Duration,
    gc_grace: Duration,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let keys = KeySource::Url(settings.jwks_url.clone());
        Self::build_with_keys(settings, keys).await
    }

    /// Build with a given key source; tests pass the JWK set of the tokens
    /// they mint.
    pub async fn build_with_keys(
        settings: Settings,
        keys: impl Into<KeySource>,
    ) -> anyhow::Result<Self> {
        settings.check()?;
        let verifier = TokenVerifier::new(keys.into(), &settings.issuer, &settings.audience);
        let store = store::open(&settings.database()).await?;
        let objects = settings.objects().await?;
        let bus = zocalo_bus::connect(&settings.bus_url).await?;
        let state = AppState {
            store,
            objects,
            verifier,
            relay_wake: Arc::new(Notify::new()),
            max_upload_bytes: settings.max_upload_bytes,
            max_attempts: settings.max_attempts,
            status_poll: Duration::from_millis(settings.status_poll_ms.max(10)),
        };
        Ok(Self {
            server: Server::bind(settings.listen, crate::routes::router(state.clone())).await?,
            state,
            bus,
            relay_interval: Duration::from_millis(settings.relay_interval_ms.max(10)),
            gc_interval: Duration::from_secs(settings.gc_interval_secs.max(1)),
            gc_grace: Duration::from_secs(settings.gc_grace_secs),
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Collect garbage once now (what the periodic task does).
    pub async fn collect_garbage(&self) -> anyhow::Result<crate::gc::Collected> {
        crate::gc::collect(
            self.state.store.as_ref(),
            self.state.objects.as_ref(),
            self.gc_grace,
        )
        .await
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let relay = tokio::spawn(zocalo_bus::outbox::run_relay_with_wake(
            self.state.store.outbox(),
            self.bus.clone(),
            self.relay_interval,
            self.state.relay_wake.clone(),
            shutdown.clone(),
        ));
        let gc = tokio::spawn(run_gc(
            self.state.clone(),
            self.gc_interval,
            self.gc_grace,
            shutdown.clone(),
        ));
        let served = self.server.run_until_stopped(shutdown).await;
        let _ = relay.await;
        let _ = gc.await;
        served
    }
}

async fn run_gc(state: AppState, every: Duration, grace: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if let Err(error) =
            crate::gc::collect(state.store.as_ref(), state.objects.as_ref(), grace).await
        {
            tracing::warn!(
                error = format!("{error:#}"),
                "object garbage collection failed"
            );
        }
    }
}

/// The video workers: `worker_concurrency` consumers of `media.process`.
pub struct Worker {
    processor: Arc<Processor>,
    bus: Bus,
    options: WorkerOptions,
}

impl Worker {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.check()?;
        let store = store::open(&settings.database()).await?;
        let objects = settings.objects().await?;
        let bus = zocalo_bus::connect(&settings.bus_url).await?;
        tokio::fs::create_dir_all(&settings.scratch_dir)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "key `media.scratch_dir` ({}): {e}",
                    settings.scratch_dir.display()
                )
            })?;
        let scratch = std::path::absolute(&settings.scratch_dir)?;
        let logo = match &settings.logo_path {
            Some(path) => std::path::absolute(path)?,
            None => {
                // Written aside and renamed: workers sharing the scratch
                // directory never read a half-written logo.
                let path = scratch.join("default-logo.png");
                let temp = scratch.join(format!(".logo-{}", uuid::Uuid::new_v4().simple()));
                tokio::fs::write(&temp, DEFAULT_LOGO).await?;
                tokio::fs::rename(&temp, &path).await?;
                path
            }
        };
        let pipeline = Pipeline {
            ffmpeg: settings.ffmpeg_path.clone(),
            ffprobe: settings.ffprobe_path.clone(),
            setpriv: usable_setpriv(&settings.setpriv_path).await,
            logo,
            width: settings.output_width,
            fps: settings.output_fps.clamp(1, 120),
            preset: settings.x264_preset.clone(),
            crf: settings.x264_crf.min(51),
            timeout: Duration::from_secs(settings.ffmpeg_timeout_secs.max(1)),
        };
        let processor = Arc::new(Processor {
            store,
            objects,
            pipeline,
            scratch,
            shutdown: CancellationToken::new(),
        });
        let options = WorkerOptions {
            concurrency: settings.worker_concurrency.max(1),
            visibility: Duration::from_secs(settings.job_visibility_secs.max(1)),
            ..WorkerOptions::default()
        };
        Ok(Self {
            processor,
            bus,
            options,
        })
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        // Conversions in progress stop with the worker (and are retried by
        // another one) instead of holding the shutdown for minutes.
        let stop_ffmpeg = self.processor.shutdown.clone();
        let forward = shutdown.clone();
        tokio::spawn(async move {
            forward.cancelled().await;
            stop_ffmpeg.cancel();
        });
        zocalo_bus::run_worker(
            self.bus.jobs.clone(),
            PROCESS_QUEUE,
            job_handler(self.processor.clone()),
            self.options,
            shutdown,
        )
        .await;
    }
}

/// `path` if it runs and knows `--pdeathsig`.
async fn usable_setpriv(path: &std::path::Path) -> Option<PathBuf> {
    if path.as_os_str().is_empty() {
        return None;
    }
    let help = tokio::process::Command::new(path)
        .arg("--help")
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    match help {
        Ok(output) if String::from_utf8_lossy(&output.stdout).contains("--pdeathsig") => {
            Some(path.to_path_buf())
        }
        _ => {
            tracing::warn!(path = %path.display(), "no usable setpriv: an ffmpeg may outlive a killed worker");
            None
        }
    }
}

fn job_handler(processor: Arc<Processor>) -> JobHandler {
    Arc::new(move |job| {
        let processor = processor.clone();
        async move {
            let payload: ProcessVideo = serde_json::from_value(job.payload.clone())
                .map_err(|e| JobError::Fatal(format!("unreadable job: {e}")))?;
            processor.handle(payload.task_id, &job).await
        }
        .boxed()
    })
}
