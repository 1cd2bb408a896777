//! Real ffmpeg on generated clips: every shape comes out 16:9, at most
//! 20 s plus two 2-second cards, H.264/AAC, playable to the end; a corrupt
//! file fails with a reason; a conversion that keeps timing out is killed,
//! retried, and dead-lettered with its reason; status streams as events.

use std::time::Duration;

use zocalo_contracts::media::PROCESS_QUEUE;
use zocalo_testkit::Backend;

use crate::support::{Options, TestApp, clip, corrupt_mp4, have_ffmpeg, probe, spawn};

/// Seconds of slack on durations: encoders round to frames and AAC frames.
const SLACK: f64 = 0.35;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clips_of_every_shape_become_16_9_with_cards_and_at_most_24_seconds() {
    if !have_ffmpeg("clips_of_every_shape…") {
        return;
    }
    let app = spawn(Backend::Sqlite, Options::default()).await;
    let (_, token) = app.user();
    let dir = app.dir.path();
    let cases = [
        ("4-3 with sound", (160, 120), 3.0, true),
        ("portrait 9-16", (90, 160), 2.0, true),
        ("cinema 21-9 longer than 20 s", (210, 90), 23.0, true),
        ("16-9 without sound", (160, 90), 2.5, false),
    ];
    let mut uploaded = Vec::new();
    for (name, size, secs, audio) in cases {
        let bytes = clip(
            dir,
            &format!("{}.mp4", name.replace(' ', "_")),
            size,
            secs,
            audio,
        );
        let task = app.accepted(&token, bytes, &format!("{name}.mp4")).await;
        uploaded.push((name, secs, task["id"].as_str().unwrap().to_owned()));
    }
    for (name, secs, id) in uploaded {
        let task = app.settled(&token, &id, Duration::from_secs(120)).await;
        assert_eq!(task["status"], "processed", "{name}: {task}");
        assert_eq!(task["progress"], 100);
        assert_eq!(task["attempts"], 1);
        let response = app.download(&token, &id, "processed").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "video/mp4");
        let bytes = response.bytes().await.unwrap();
        assert_eq!(task["processed_size"], bytes.len());
        let out = probe(dir, &bytes);
        assert_eq!(out.width * 9, out.height * 16, "{name}: 16:9, got {out:?}");
        assert_eq!((out.width, out.height), (320, 180), "{name}");
        assert_eq!(out.video_codec, "h264", "{name}");
        assert_eq!(
            out.audio_codec.as_deref(),
            Some("aac"),
            "{name}: sound, silent if none"
        );
        let expected = f64::min(secs, 20.0) + 4.0;
        assert!(out.duration <= 24.0 + SLACK, "{name}: {out:?}");
        assert!(
            (out.duration - expected).abs() <= SLACK,
            "{name}: expected {expected} s, {out:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_video_fails_with_a_reason_and_is_not_retried() {
    if !have_ffmpeg("a_corrupt_video_fails…") {
        return;
    }
    let app = spawn(Backend::Sqlite, Options::default()).await;
    let (_, token) = app.user();
    let task = app.accepted(&token, corrupt_mp4(), "broken.mp4").await;
    assert_eq!(
        task["content_type"], "video/mp4",
        "it looks like an MP4 at first"
    );
    let id = task["id"].as_str().unwrap();

    let task = app.settled(&token, id, Duration::from_secs(60)).await;
    assert_eq!(task["status"], "failed");
    let reason = task["failure_reason"].as_str().unwrap();
    assert!(
        reason.contains("not a readable video") || reason.contains("no video stream"),
        "{reason}"
    );
    assert_eq!(task["attempts"], 1, "retrying cannot help a corrupt file");
    let dead = app.bus.jobs.dead_letters(PROCESS_QUEUE).await.unwrap();
    assert_eq!(dead.len(), 1);
    let response = app.download(&token, id, "processed").await;
    zocalo_testkit::expect_problem(response, 409).await;
}

/// A conversion that always outlasts its time limit: ffmpeg is killed each
/// time, the job is retried, and after the last attempt the task fails
/// with the reason and the job is a dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_video_is_killed_retried_and_dead_lettered() {
    if !have_ffmpeg("a_poison_video…") {
        return;
    }
    let options = Options {
        output_width: 1920,
        preset: "veryslow",
        ffmpeg_timeout_secs: 1,
        max_attempts: 2,
        worker_concurrency: 1,
        ..Options::default()
    };
    let app = spawn(Backend::Sqlite, options).await;
    let (_, token) = app.user();
    let bytes = clip(app.dir.path(), "heavy.mp4", (640, 360), 20.0, true);
    let task = app.accepted(&token, bytes, "heavy.mp4").await;
    let id = task["id"].as_str().unwrap();

    let task = app.settled(&token, id, Duration::from_secs(60)).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["attempts"], 2);
    let reason = task["failure_reason"].as_str().unwrap();
    assert!(reason.starts_with("gave up after 2 attempts"), "{reason}");
    assert!(reason.contains("longer than 1s"), "{reason}");
    let dead = app.bus.jobs.dead_letters(PROCESS_QUEUE).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(no_ffmpeg_left(app.dir.path()), "the killed ffmpeg is gone");
}

/// No ffmpeg process is working in `dir` (every one of ours runs there).
fn no_ffmpeg_left(dir: &std::path::Path) -> bool {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc").unwrap().flatten().all(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        !(cmdline.starts_with("ffmpeg") && cmdline.contains(&needle))
    })
}

/// `GET /api/tasks/{id}/events` sends the task at once, then each change
/// (progress only grows), and ends with the processed task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_stream_as_server_sent_events() {
    if !have_ffmpeg("status_changes_stream…") {
        return;
    }
    let (_app, response) = stream_from_upload(Options::default(), 12.0).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = tokio::time::timeout(Duration::from_secs(60), response.text())
        .await
        .expect("the stream ends once the task is processed")
        .unwrap();
    let tasks = task_events(&text);
    let statuses: Vec<&str> = tasks
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.first(), Some(&"uploaded"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"processed"), "{statuses:?}");
    assert!(statuses.contains(&"processing"), "{statuses:?}");
    let progress: Vec<u64> = tasks
        .iter()
        .filter(|t| t["status"] == "processing")
        .map(|t| t["progress"].as_u64().unwrap())
        .collect();
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress only grows: {progress:?}"
    );
    let versions: Vec<i64> = tasks
        .iter()
        .map(|t| t["version"].as_i64().unwrap())
        .collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "one event per change: {versions:?}"
    );
}

/// A worker in the same process as the API (`zocalo up`) wakes the status
/// stream as soon as the task changes, without waiting for the stream's own
/// reads: here those come once an hour, yet the stream ends with the
/// processed task as soon as the conversion is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_in_this_process_wakes_the_status_stream_at_once() {
    if !have_ffmpeg("a_worker_in_this_process_wakes…") {
        return;
    }
    let options = Options {
        status_poll_ms: 3_600_000,
        ..Options::default()
    };
    let (_app, response) = stream_from_upload(options, 3.0).await;
    let text = tokio::time::timeout(Duration::from_secs(60), response.text())
        .await
        .expect("the stream ends when the task is processed, not at the next hourly read")
        .unwrap();
    let tasks = task_events(&text);
    assert_eq!(
        tasks.first().map(|t| &t["status"]),
        Some(&"uploaded".into())
    );
    assert_eq!(
        tasks.last().map(|t| &t["status"]),
        Some(&"processed".into())
    );
}

/// Upload a clip of `seconds`, open its event stream, and only then start
/// a worker: the stream sees the task from `uploaded` on, and has to be
/// told of every change rather than find the task settled at its first
/// read.
async fn stream_from_upload(options: Options, seconds: f64) -> (TestApp, reqwest::Response) {
    let app = spawn(
        Backend::Sqlite,
        Options {
            workers: false,
            ..options
        },
    )
    .await;
    let (_, token) = app.user();
    let bytes = clip(app.dir.path(), "sse.mp4", (160, 120), seconds, true);
    let task = app.accepted(&token, bytes, "sse.mp4").await;
    let id = task["id"].as_str().unwrap().to_owned();
    let response = app
        .api
        .get(&format!("/api/tasks/{id}/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let worker = zocalo_media::Worker::build(app.settings.clone())
        .await
        .unwrap();
    tokio::spawn(worker.run_until_stopped(app.shutdown.clone()));
    (app, response)
}

/// The tasks of a stream's `task` events, in order.
fn task_events(text: &str) -> Vec<serde_json::Value> {
    text.split("\n\n")
        .filter(|event| event.contains("event: task"))
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect()
}
