//! 100 uploads of a small clip at once from 20 users: every one accepted,
//! every one processed exactly once, and each user sees exactly their own.
//! On SQLite and PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;
use zocalo_testkit::{Backend, backend_tests};

use crate::api::has_output;
use crate::support::{Options, clip, have_ffmpeg, spawn};

backend_tests!(a_hundred_concurrent_uploads_from_twenty_users_are_each_processed_once);

const USERS: usize = 20;
const UPLOADS_PER_USER: usize = 5;

async fn a_hundred_concurrent_uploads_from_twenty_users_are_each_processed_once(backend: Backend) {
    if !have_ffmpeg("a_hundred_concurrent_uploads…") {
        return;
    }
    let options = Options {
        output_width: 160,
        output_fps: 10,
        worker_concurrency: 4,
        ..Options::default()
    };
    let app = spawn(backend, options).await;
    let video = clip(app.dir.path(), "tiny.mp4", (96, 72), 0.5, true);
    let users: Vec<(Uuid, String)> = (0..USERS).map(|_| app.user()).collect();

    let (app_ref, video_ref) = (&app, &video);
    let uploads = users.iter().flat_map(|(_, token)| {
        (0..UPLOADS_PER_USER).map(move |n| async move {
            app_ref
                .upload(token, video_ref.clone(), &format!("clip-{n}.mp4"))
                .await
        })
    });
    let responses = futures_util::future::join_all(uploads).await;
    let mut statuses = BTreeMap::new();
    for response in &responses {
        *statuses.entry(response.status().as_u16()).or_insert(0) += 1;
    }
    assert_eq!(
        statuses,
        BTreeMap::from([(201, USERS * UPLOADS_PER_USER)]),
        "all accepted"
    );

    let deadline = Instant::now() + Duration::from_secs(300);
    let mut seen_ids = BTreeSet::new();
    for (_, token) in &users {
        let tasks = loop {
            let response = app
                .api
                .get("/api/tasks?max=100")
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let tasks: Vec<Value> = response.json().await.unwrap();
            if tasks.iter().all(|t| t["status"] == "processed") {
                break tasks;
            }
            assert!(Instant::now() < deadline, "not all processed: {tasks:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert_eq!(
            tasks.len(),
            UPLOADS_PER_USER,
            "each user sees exactly their own"
        );
        for task in &tasks {
            assert_eq!(task["attempts"], 1, "processed exactly once: {task}");
            let id: Uuid = task["id"].as_str().unwrap().parse().unwrap();
            assert!(seen_ids.insert(id), "a task listed for two users");
            assert!(has_output(&app, id).await);
        }
    }
    assert_eq!(seen_ids.len(), USERS * UPLOADS_PER_USER);
    assert_eq!(
        app.objects.list("tasks").await.unwrap().len(),
        2 * USERS * UPLOADS_PER_USER,
        "one original and one output per task, nothing more"
    );
    let queue = zocalo_contracts::media::PROCESS_QUEUE;
    assert_eq!(app.bus.jobs.depth(queue).await.unwrap(), 0);
    assert!(app.bus.jobs.dead_letters(queue).await.unwrap().is_empty());
}
