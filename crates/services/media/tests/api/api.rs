//! The HTTP contract: what is refused and how (problem+json, never 500),
//! privacy (someone else's task is 404 everywhere), listing, ranges,
//! deletion, and garbage collection of orphaned objects.

use std::time::Duration;

use futures_util::stream;
use serde_json::Value;
use uuid::Uuid;
use zocalo_media::domain::{original_key, processed_key};
use zocalo_media::store::Deleted;
use zocalo_testkit::{Backend, backend_tests, expect_problem};

use crate::support::{Options, TestApp, clip, have_ffmpeg, spawn};

backend_tests!(
    bad_uploads_are_problems_never_500,
    tasks_are_private_to_their_owner,
    downloads_support_ranges,
    delete_removes_the_task_and_its_files_unless_processing,
    listing_orders_and_limits,
);

/// A small file that sniffs as MP4 (the worker is off in these tests).
fn mp4_like(size: usize) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0, 0x18];
    bytes.extend_from_slice(b"ftypisom\0\0\x02\0isomiso2");
    bytes.extend((0..size.saturating_sub(bytes.len())).map(|i| (i % 251) as u8));
    bytes
}

fn no_workers() -> Options {
    Options {
        workers: false,
        max_upload_bytes: 100_000,
        ..Options::default()
    }
}

async fn bad_uploads_are_problems_never_500(backend: Backend) {
    let app = spawn(backend, no_workers()).await;
    let (_, token) = app.user();

    let anonymous = app.api.post("/api/tasks").send().await.unwrap();
    expect_problem(anonymous, 401).await;
    let not_multipart = app
        .api
        .post("/api/tasks")
        .bearer_auth(&token)
        .json(&serde_json::json!({"file": "x"}))
        .send()
        .await
        .unwrap();
    expect_problem(not_multipart, 400).await;

    let other_field = reqwest::multipart::Form::new().text("title", "no file here");
    let response = app
        .api
        .post("/api/tasks")
        .bearer_auth(&token)
        .multipart(other_field)
        .send()
        .await
        .unwrap();
    let problem = expect_problem(response, 422).await;
    assert_eq!(problem["errors"][0]["field"], "file");

    expect_problem(app.upload(&token, Vec::new(), "empty.mp4").await, 422).await;
    let text = b"just some text, named like a movie".to_vec();
    let problem = expect_problem(app.upload(&token, text, "movie.mp4").await, 422).await;
    assert!(problem.to_string().contains("not a video"), "{problem}");
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10".to_vec();
    expect_problem(app.upload(&token, png, "clip.mov").await, 422).await;

    // Over the limit: refused by its declared length, and cut off while
    // streaming when the length is not declared.
    expect_problem(app.upload(&token, mp4_like(300_000), "big.mp4").await, 413).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..30)
        .map(|i| {
            Ok(if i == 0 {
                mp4_like(10_000)
            } else {
                vec![7u8; 10_000]
            })
        })
        .collect();
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(stream::iter(chunks)))
        .file_name("streamed.mp4");
    let response = app
        .api
        .post("/api/tasks")
        .bearer_auth(&token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    expect_problem(response, 413).await;
    assert_eq!(
        app.objects.list("tasks").await.unwrap().len(),
        0,
        "refused uploads leave no object behind"
    );

    for query in ["max=0", "max=101", "order=sideways"] {
        let response = app.get_as(&token, &format!("/api/tasks?{query}")).await;
        expect_problem(response, 422).await;
    }
    for query in ["max=lots", "colour=red"] {
        let response = app.get_as(&token, &format!("/api/tasks?{query}")).await;
        expect_problem(response, 400).await;
    }
    let response = app.get_as(&token, "/api/tasks/not-a-uuid").await;
    expect_problem(response, 404).await;

    // Accepted: the name is cleaned, the type comes from the content.
    let task = app
        .accepted(&token, mp4_like(5_000), "../../etc/holiday\".mov")
        .await;
    assert_eq!(task["file_name"], "holiday.mov");
    assert_eq!(task["content_type"], "video/mp4");
    assert_eq!(task["original_size"], 5_000);
}

async fn tasks_are_private_to_their_owner(backend: Backend) {
    let app = spawn(backend, no_workers()).await;
    let (_, alice) = app.user();
    let (_, bob) = app.user();
    let task = app.accepted(&alice, mp4_like(2_000), "alice.mp4").await;
    let id = task["id"].as_str().unwrap();

    for path in ["", "/original", "/processed", "/events"] {
        let response = app.get_as(&bob, &format!("/api/tasks/{id}{path}")).await;
        expect_problem(response, 404).await;
    }
    let response = app.delete_as(&bob, &format!("/api/tasks/{id}")).await;
    expect_problem(response, 404).await;
    let bobs: Vec<Value> = app.get_as(&bob, "/api/tasks").await.json().await.unwrap();
    assert!(bobs.is_empty());

    assert_eq!(app.task(&alice, id).await["status"], "uploaded");
    let unknown = Uuid::now_v7();
    let response = app.get_as(&alice, &format!("/api/tasks/{unknown}")).await;
    expect_problem(response, 404).await;
    let service = app.tokens.token("client:orders", &["service"]);
    let response = app.get_as(&service, &format!("/api/tasks/{id}")).await;
    expect_problem(response, 404).await;
}

async fn downloads_support_ranges(backend: Backend) {
    let app = spawn(backend, no_workers()).await;
    let (_, token) = app.user();
    let original = mp4_like(10_000);
    let task = app.accepted(&token, original.clone(), "r.mp4").await;
    let id = task["id"].as_str().unwrap();
    let get = |range: Option<&'static str>| {
        let mut request = app
            .api
            .get(&format!("/api/tasks/{id}/original"))
            .bearer_auth(&token);
        if let Some(range) = range {
            request = request.header("range", range);
        }
        request.send()
    };

    let whole = get(None).await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.headers()["content-type"], "video/mp4");
    assert_eq!(
        whole.headers()["content-disposition"],
        "attachment; filename=\"r.mp4\""
    );
    assert_eq!(whole.bytes().await.unwrap(), original);

    let part = get(Some("bytes=100-199")).await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 100-199/10000");
    assert_eq!(part.headers()["content-length"], "100");
    assert_eq!(part.bytes().await.unwrap(), original[100..200]);

    let tail = get(Some("bytes=-10")).await.unwrap();
    assert_eq!(tail.headers()["content-range"], "bytes 9990-9999/10000");
    assert_eq!(tail.bytes().await.unwrap(), original[9990..]);

    let beyond = get(Some("bytes=10000-")).await.unwrap();
    assert_eq!(beyond.headers()["content-range"], "bytes */10000");
    expect_problem(beyond, 416).await;
    // Several ranges are answered with the whole file (allowed by HTTP).
    let several = get(Some("bytes=0-1,5-6")).await.unwrap();
    assert_eq!(several.status(), 200);

    let processed = app.download(&token, id, "processed").await;
    expect_problem(processed, 409).await;
}

async fn delete_removes_the_task_and_its_files_unless_processing(backend: Backend) {
    let app = spawn(backend, no_workers()).await;
    let (owner, token) = app.user();
    let busy = app.accepted(&token, mp4_like(1_000), "busy.mp4").await;
    let busy_id: Uuid = busy["id"].as_str().unwrap().parse().unwrap();
    let idle = app.accepted(&token, mp4_like(1_000), "idle.mp4").await;
    let idle_id: Uuid = idle["id"].as_str().unwrap().parse().unwrap();

    // A worker holds `busy`.
    app.store.start_processing(busy_id).await.unwrap().unwrap();
    let response = app
        .delete_as(&token, &format!("/api/tasks/{busy_id}"))
        .await;
    expect_problem(response, 409).await;
    assert!(app.objects.head(&original_key(busy_id)).await.is_ok());

    let response = app
        .delete_as(&token, &format!("/api/tasks/{idle_id}"))
        .await;
    assert_eq!(response.status(), 204);
    assert!(
        app.objects.head(&original_key(idle_id)).await.is_err(),
        "its file is gone"
    );
    let response = app.get_as(&token, &format!("/api/tasks/{idle_id}")).await;
    expect_problem(response, 404).await;
    let again = app
        .delete_as(&token, &format!("/api/tasks/{idle_id}"))
        .await;
    expect_problem(again, 404).await;

    // Deletion and a worker taking the task race: exactly one wins.
    let racing = app.accepted(&token, mp4_like(1_000), "race.mp4").await;
    let racing_id: Uuid = racing["id"].as_str().unwrap().parse().unwrap();
    let (deleted, taken) = tokio::join!(
        app.store.delete_task(owner, racing_id),
        app.store.start_processing(racing_id)
    );
    match (deleted.unwrap(), taken.unwrap()) {
        (Deleted::Removed, None) | (Deleted::Processing, Some(_)) => {}
        other => panic!("both or neither won: {other:?}"),
    }
}

async fn listing_orders_and_limits(backend: Backend) {
    let app = spawn(backend, no_workers()).await;
    let (_, token) = app.user();
    let mut ids = Vec::new();
    for n in 0..5 {
        let task = app
            .accepted(&token, mp4_like(1_000 + n), &format!("{n}.mp4"))
            .await;
        ids.push(task["id"].as_str().unwrap().to_owned());
    }
    let list = |query: &'static str| {
        let request = app
            .api
            .get(&format!("/api/tasks{query}"))
            .bearer_auth(&token);
        async move {
            let tasks: Vec<Value> = request.send().await.unwrap().json().await.unwrap();
            tasks
                .iter()
                .map(|t| t["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list("").await, ids);
    assert_eq!(list("?order=asc&max=2").await, ids[..2]);
    let newest: Vec<String> = ids.iter().rev().take(3).cloned().collect();
    assert_eq!(list("?order=desc&max=3").await, newest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_objects_and_stale_uploads_are_collected() {
    let app = spawn(Backend::Sqlite, no_workers()).await;
    let (_, token) = app.user();
    let kept = app.accepted(&token, mp4_like(1_000), "kept.mp4").await;
    let kept_id: Uuid = kept["id"].as_str().unwrap().parse().unwrap();
    let orphan = Uuid::now_v7();
    for key in [original_key(orphan), processed_key(orphan)] {
        let body = stream::iter([Ok(bytes::Bytes::from_static(b"left behind"))]);
        app.objects.put(&key, Box::pin(body)).await.unwrap();
    }
    let stale = std::path::Path::new(&app.settings.objects.url).join(".tmp/interrupted");
    std::fs::write(&stale, b"half").unwrap();

    let mut settings = app.settings.clone();
    settings.gc_grace_secs = 0;
    let collector = zocalo_media::Application::build_with_keys(settings, app.tokens.jwks())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let collected = collector.collect_garbage().await.unwrap();

    assert_eq!(collected.orphans, 2);
    assert_eq!(collected.stale_uploads, 1);
    assert!(app.objects.head(&original_key(orphan)).await.is_err());
    assert!(
        app.objects.head(&original_key(kept_id)).await.is_ok(),
        "a task's file stays"
    );
    assert!(!stale.exists());
}

/// Used by the concurrency test too: the task's processed output exists.
pub async fn has_output(app: &TestApp, id: Uuid) -> bool {
    app.objects.head(&processed_key(id)).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processed_task_downloads_and_deletes_with_both_files() {
    if !have_ffmpeg("a_processed_task…") {
        return;
    }
    let app = spawn(Backend::Sqlite, Options::default()).await;
    let (_, token) = app.user();
    let bytes = clip(app.dir.path(), "d.mp4", (160, 120), 1.0, true);
    let task = app.accepted(&token, bytes, "d.mp4").await;
    let id: Uuid = task["id"].as_str().unwrap().parse().unwrap();
    let task = app
        .settled(&token, &id.to_string(), Duration::from_secs(60))
        .await;
    assert_eq!(task["status"], "processed");
    let response = app.download(&token, &id.to_string(), "processed").await;
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"d-processed.mp4\""
    );
    assert!(has_output(&app, id).await);

    let response = app.delete_as(&token, &format!("/api/tasks/{id}")).await;
    assert_eq!(response.status(), 204);
    assert!(!has_output(&app, id).await);
    assert!(app.objects.list("tasks").await.unwrap().is_empty());
}
