//! What the media tests share: the service and its workers in this process
//! on a fresh database, real ffmpeg-made clips, uploads, polling and
//! ffprobe checks of what comes out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use zocalo_bus::Bus;
use zocalo_media::store::TasksStore;
use zocalo_media::{Application, Settings, Worker};
use zocalo_objects::ObjectStore;
use zocalo_testkit::{Backend, Client, TestDatabase, TestTokens};

/// How a test wants the service.
#[derive(Clone)]
pub struct Options {
    /// Run video workers in this process.
    pub workers: bool,
    pub worker_concurrency: usize,
    pub max_upload_bytes: u64,
    pub output_width: u32,
    pub output_fps: u32,
    pub preset: &'static str,
    pub ffmpeg_timeout_secs: u64,
    pub max_attempts: u32,
    /// How often a status stream reads the task again on its own.
    pub status_poll_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            workers: true,
            worker_concurrency: 2,
            max_upload_bytes: 64 * 1024 * 1024,
            // Tiny outputs keep the suite fast; the pipeline is the same.
            output_width: 320,
            output_fps: 15,
            preset: "ultrafast",
            ffmpeg_timeout_secs: 60,
            max_attempts: 3,
            status_poll_ms: 50,
        }
    }
}

pub struct TestApp {
    pub api: Client,
    pub tokens: TestTokens,
    pub store: Arc<dyn TasksStore>,
    pub objects: Arc<dyn ObjectStore>,
    pub bus: Bus,
    pub settings: Settings,
    pub shutdown: CancellationToken,
    pub dir: tempfile::TempDir,
    _db: TestDatabase,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Whether ffmpeg is here; tests that need it say so and return when not.
pub fn have_ffmpeg(test: &str) -> bool {
    let found = std::process::Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("ffmpeg is not installed: {test} not run");
    }
    found
}

pub async fn spawn(backend: Backend, options: Options) -> TestApp {
    let db = zocalo_testkit::database(backend).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = TestTokens::new();
    let mut settings = Settings {
        database_url: db.url.clone(),
        database_max_connections: 8,
        bus_url: format!("sqlite://{}", dir.path().join("bus.db").display()),
        issuer: zocalo_testkit::ISSUER.into(),
        audience: zocalo_testkit::AUDIENCE.into(),
        max_upload_bytes: options.max_upload_bytes,
        max_attempts: options.max_attempts,
        worker_concurrency: options.worker_concurrency,
        output_width: options.output_width,
        output_fps: options.output_fps,
        x264_preset: options.preset.into(),
        ffmpeg_timeout_secs: options.ffmpeg_timeout_secs,
        job_visibility_secs: options.ffmpeg_timeout_secs + 60,
        scratch_dir: dir.path().join("scratch"),
        status_poll_ms: options.status_poll_ms,
        relay_interval_ms: 50,
        ..Settings::default()
    };
    settings.objects.url = dir.path().join("objects").display().to_string();
    let app = Application::build_with_keys(settings.clone(), tokens.jwks())
        .await
        .unwrap();
    let port = app.port();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    if options.workers {
        let worker = Worker::build(settings.clone()).await.unwrap();
        tokio::spawn(worker.run_until_stopped(shutdown.clone()));
    }
    TestApp {
        api: Client::new(format!("http://127.0.0.1:{port}")),
        tokens,
        store: zocalo_media::store::open(&settings.database())
            .await
            .unwrap(),
        objects: zocalo_objects::open(&settings.objects).await.unwrap(),
        bus: zocalo_bus::connect(&settings.bus_url).await.unwrap(),
        settings,
        shutdown,
        dir,
        _db: db,
    }
}

impl TestApp {
    /// A token for a new user; the user id with it.
    pub fn user(&self) -> (Uuid, String) {
        let id = Uuid::new_v4();
        (id, self.tokens.token(&id.to_string(), &[]))
    }

    /// Upload `bytes` as the multipart field `file` named `name`.
    pub async fn upload(&self, token: &str, bytes: Vec<u8>, name: &str) -> reqwest::Response {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned());
        let form = reqwest::multipart::Form::new().part("file", part);
        self.api
            .post("/api/tasks")
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Upload and expect 201; the task.
    pub async fn accepted(&self, token: &str, bytes: Vec<u8>, name: &str) -> Value {
        let response = self.upload(token, bytes, name).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["status"], "uploaded");
        body
    }

    pub async fn task(&self, token: &str, id: &str) -> Value {
        let response = self
            .api
            .get(&format!("/api/tasks/{id}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Poll the task until it is processed or failed (at most `within`).
    pub async fn settled(&self, token: &str, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let task = self.task(token, id).await;
            if task["status"] == "processed" || task["status"] == "failed" {
                return task;
            }
            assert!(
                Instant::now() < deadline,
                "task not settled in {within:?}: {task}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET path` as the holder of `token`.
    pub async fn get_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.api.get(path).bearer_auth(token).send().await.unwrap()
    }

    /// `DELETE path` as the holder of `token`.
    pub async fn delete_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.api
            .delete(path)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn download(&self, token: &str, id: &str, which: &str) -> reqwest::Response {
        self.api
            .get(&format!("/api/tasks/{id}/{which}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

/// Make a clip with ffmpeg's test sources: `secs` long, `width`×`height`,
/// with a sine tone when `audio`.
pub fn clip(
    dir: &Path,
    name: &str,
    (width, height): (u32, u32),
    secs: f64,
    audio: bool,
) -> Vec<u8> {
    let path = dir.join(name);
    let mut command = std::process::Command::new("ffmpeg");
    command.args([
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
    ]);
    command.arg(format!(
        "testsrc=size={width}x{height}:rate=12:duration={secs}"
    ));
    if audio {
        command.args(["-f", "lavfi", "-i"]);
        command.arg(format!("sine=frequency=440:duration={secs}"));
        command.args(["-c:a", "aac", "-shortest"]);
    }
    command.args([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
    ]);
    command.arg(&path);
    let status = command.status().unwrap();
    assert!(status.success(), "ffmpeg could not make {name}");
    std::fs::read(&path).unwrap()
}

/// What ffprobe finds in a file.
#[derive(Debug)]
pub struct Probed {
    pub width: u64,
    pub height: u64,
    pub duration: f64,
    pub video_codec: String,
    pub audio_codec: Option<String>,
}

/// Probe `bytes` with ffprobe and decode every frame (`-count_frames`), so
/// a file that is not playable to the end fails here.
pub fn probe(dir: &Path, bytes: &[u8]) -> Probed {
    let path: PathBuf = dir.join(format!("probe-{}.mp4", Uuid::new_v4()));
    std::fs::write(&path, bytes).unwrap();
    let output = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let streams = json["streams"].as_array().unwrap();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .expect("a video stream");
    let audio = streams.iter().find(|s| s["codec_type"] == "audio");
    assert!(
        video["nb_read_frames"]
            .as_str()
            .unwrap_or("0")
            .parse::<u64>()
            .unwrap()
            > 0,
        "frames decode"
    );
    Probed {
        width: video["width"].as_u64().unwrap(),
        height: video["height"].as_u64().unwrap(),
        duration: json["format"]["duration"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        video_codec: video["codec_name"].as_str().unwrap().to_owned(),
        audio_codec: audio.map(|a| a["codec_name"].as_str().unwrap().to_owned()),
    }
}

/// A file that starts like an MP4 (so it is accepted) and is garbage after.
pub fn corrupt_mp4() -> Vec<u8> {
    let mut bytes = vec![0, 0, 0, 0x18];
    bytes.extend_from_slice(b"ftypisom\0\0\x02\0isomiso2");
    bytes.extend((0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    bytes
}
