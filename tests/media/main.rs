//! Video tasks with real processes: a `zocalo worker media` killed with
//! SIGKILL in the middle of a conversion (another worker finishes the job
//! when it reappears), and the memory of `zocalo up` while a 200 MB upload
//! streams through its gateway into object storage.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zocalo_testkit::TestTokens;

/// A started `zocalo` process, killed when dropped.
struct Process {
    child: Child,
}

impl Process {
    /// Start `zocalo <args>` and return it with the first stdout line that
    /// `ready` accepts (within a minute).
    fn start<T>(
        args: &[&str],
        env: &[(&str, String)],
        mut ready: impl FnMut(&str) -> Option<T>,
    ) -> (Self, T) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zocalo"))
            .args(args)
            .env_remove("ZOCALO_CONFIG")
            .env("ZOCALO_LOG__FILTER", "warn")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn zocalo");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let process = Self { child };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("zocalo {args:?} did not start"));
            if let Some(value) = ready(&line) {
                return (process, value);
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill_hard(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

fn have_ffmpeg(test: &str) -> bool {
    let found = Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("ffmpeg is not installed: {test} not run");
    }
    found
}

fn clip(dir: &std::path::Path, secs: u32) -> Vec<u8> {
    let path = dir.join("clip.mp4");
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=size=320x240:rate=25:duration={secs}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=330:duration={secs}"))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
        ])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(path).unwrap()
}

async fn task(http: &reqwest::Client, base: &str, token: &str, id: &str) -> Value {
    http.get(format!("{base}/api/tasks/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Whether an ffmpeg process works in `dir`.
fn ffmpeg_running_in(dir: &std::path::Path) -> bool {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        cmdline.starts_with("ffmpeg") && cmdline.contains(&needle)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_leaves_the_job_to_another_that_completes_it() {
    if !have_ffmpeg("a_worker_killed_mid_job…") {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let tokens = TestTokens::new();
    let jwks = serde_json::to_value(tokens.jwks()).unwrap();
    let keys = zocalo_testkit::serve::serve(axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    ))
    .await;
    let shared = vec![
        ("ZOCALO_DATA_DIR", data.path().display().to_string()),
        ("ZOCALO_PUBLIC_URL", zocalo_testkit::ISSUER.to_owned()),
        ("ZOCALO_MEDIA__JWKS_URL", format!("{}/jwks.json", keys.url)),
        ("ZOCALO_MEDIA__RELAY_INTERVAL_MS", "50".to_owned()),
        // A worker that dies holds its job this long.
        ("ZOCALO_MEDIA__FFMPEG_TIMEOUT_SECS", "12".to_owned()),
        ("ZOCALO_MEDIA__JOB_VISIBILITY_SECS", "13".to_owned()),
    ];
    let with = |extra: &[(&'static str, String)]| {
        let mut env = shared.clone();
        env.extend(extra.iter().cloned());
        env
    };
    let (_api, port) = Process::start(&["serve", "media"], &shared, |line| {
        line.split_once(" listening on port ")
            .map(|(_, port)| port.parse::<u16>().unwrap())
    });
    let base = format!("http://127.0.0.1:{port}");
    // The first worker is slow on purpose (big output, slowest preset).
    let slow_scratch = data.path().join("scratch-slow");
    let (mut slow, ()) = Process::start(
        &["worker", "media"],
        &with(&[
            ("ZOCALO_MEDIA__X264_PRESET", "slower".into()),
            ("ZOCALO_MEDIA__OUTPUT_WIDTH", "1280".into()),
            (
                "ZOCALO_MEDIA__SCRATCH_DIR",
                slow_scratch.display().to_string(),
            ),
        ]),
        |line| line.ends_with("worker running").then_some(()),
    );

    let http = reqwest::Client::new();
    let owner = uuid::Uuid::new_v4().to_string();
    let token = tokens.token(&owner, &[]);
    let part = reqwest::multipart::Part::bytes(clip(data.path(), 20)).file_name("long.mp4");
    let created: Value = http
        .post(format!("{base}/api/tasks"))
        .bearer_auth(&token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();

    // Kill the worker once it is converting.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = task(&http, &base, &token, &id).await;
        // Progress shows ffmpeg is converting and reporting.
        let progress = now["progress"].as_u64().unwrap_or(0);
        if now["status"] == "processing" && progress > 0 && ffmpeg_running_in(&slow_scratch) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never reported progress: {now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    slow.kill_hard();
    let killed_at = Instant::now();
    // Its ffmpeg goes too (parent-death signal).
    while ffmpeg_running_in(&slow_scratch) {
        assert!(
            killed_at.elapsed() < Duration::from_secs(10),
            "an orphaned ffmpeg kept running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let orphan_gone_after = killed_at.elapsed();

    let (_fast, ()) = Process::start(
        &["worker", "media"],
        &with(&[
            ("ZOCALO_MEDIA__X264_PRESET", "ultrafast".into()),
            ("ZOCALO_MEDIA__OUTPUT_WIDTH", "320".into()),
            (
                "ZOCALO_MEDIA__SCRATCH_DIR",
                data.path().join("scratch-fast").display().to_string(),
            ),
        ]),
        |line| line.ends_with("worker running").then_some(()),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let done = loop {
        let now = task(&http, &base, &token, &id).await;
        if now["status"] == "processed" || now["status"] == "failed" {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "not completed after the retry: {now}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done["status"], "processed", "{done}");
    assert_eq!(
        done["attempts"], 2,
        "the second delivery completed it: {done}"
    );
    eprintln!(
        "killed worker: its ffmpeg ended {orphan_gone_after:?} later; job completed {:?} after the kill",
        killed_at.elapsed()
    );
    let output = http
        .get(format!("{base}/api/tasks/{id}/processed"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(output.status(), 200);
    assert!(output.bytes().await.unwrap().len() > 1000);
}

/// Resident memory of a process, in KiB, from /proc (`VmRSS`, or `VmHWM`
/// for the peak since it started).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

const UPLOAD_BYTES: usize = 200 * 1024 * 1024;
const CHUNK: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mb_upload_through_the_gateway_keeps_memory_bounded() {
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = [
        (
            "ZOCALO_MEDIA__MAX_UPLOAD_BYTES",
            (300 * 1024 * 1024).to_string(),
        ),
        // No conversion of this upload: only the transfer is measured.
        (
            "ZOCALO_MEDIA__FFMPEG_PATH",
            "/nonexistent/ffmpeg".to_owned(),
        ),
    ];
    let (up, base) = Process::start(
        &[
            "up",
            "--port",
            &port.to_string(),
            "--data-dir",
            &data.path().display().to_string(),
        ],
        &env,
        |line| {
            line.strip_prefix("gateway listening on ")
                .map(str::to_owned)
        },
    );
    let http = reqwest::Client::new();
    let registered = http
        .post(format!("{base}/auth/register"))
        .json(
            &json!({"email": "uploader@example.com", "password": "a-good-password", "name": "Up"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let tokens: Value = http
        .post(format!("{base}/auth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "uploader@example.com"),
            ("password", "a-good-password"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = tokens["access_token"].as_str().unwrap().to_owned();

    let pid = up.pid();
    let before = memory_kib(pid, "VmRSS:");
    let peak = Arc::new(AtomicU64::new(before));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(memory_kib(pid, "VmRSS:"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // An MP4 header, then zeros: generated as it is sent, never held here.
    let chunks = (0..UPLOAD_BYTES / CHUNK).map(|i| {
        let mut chunk = vec![0u8; CHUNK];
        if i == 0 {
            chunk[..24].copy_from_slice(b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2");
        }
        Ok::<_, std::io::Error>(chunk)
    });
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let part = reqwest::multipart::Part::stream(body).file_name("big.mp4");
    let started = Instant::now();
    let response = http
        .post(format!("{base}/api/tasks"))
        .bearer_auth(&token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let status = response.status();
    let created: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["original_size"], UPLOAD_BYTES);

    let peak = peak.load(Ordering::Relaxed);
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "200 MiB upload through the gateway in {elapsed:?} ({:.0} MiB/s); RSS {} MiB before, {} MiB peak (+{growth_mib} MiB), VmHWM {} MiB",
        200.0 / elapsed.as_secs_f64(),
        before / 1024,
        peak / 1024,
        memory_kib(pid, "VmHWM:") / 1024,
    );
    // Holding the file would cost 200 MiB; streaming costs buffers.
    assert!(
        growth_mib < 64,
        "RSS grew by {growth_mib} MiB during the upload"
    );
    let stored = std::fs::metadata(
        data.path()
            .join("objects/tasks")
            .join(created["id"].as_str().unwrap())
            .join("original"),
    )
    .unwrap();
    assert_eq!(stored.len(), UPLOAD_BYTES as u64);
}
