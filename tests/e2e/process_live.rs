//! The live configuration of a `zocalo serve <service>` process: its log
//! level follows a watched file without a restart, and a broken new
//! version is rejected, logged, and leaves the running level in force.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::distributed::Served;
use super::support::eventually;
use super::tempfile_dir;

/// Debug for the HTTP layer is where each request's "finished" line is.
const VERBOSE: &str = "log_level = \"info,tower_http=debug\"\n";

/// GET `/api/content` with a fresh request id; whether a log line naming
/// that id arrives within `wait`.
async fn request_is_logged(
    http: &reqwest::Client,
    served: &Served,
    logs: &Receiver<String>,
    wait: Duration,
) -> bool {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let response = http
        .get(format!("{}/api/content", served.url()))
        .header("x-request-id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    line_within(logs, wait, |line| line.contains(&id)).is_some()
}

/// The first line passing `wanted` within `wait`, skipping others.
fn line_within(
    logs: &Receiver<String>,
    wait: Duration,
    wanted: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + wait;
    while let Ok(line) = logs.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if wanted(&line) {
            return Some(line);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_log_level_follows_the_live_file_and_survives_a_bad_one() {
    let dir = tempfile_dir::Dir::new();
    let live = dir.0.join("reviews-live.toml");
    std::fs::write(&live, "[feature_flags]\n").unwrap();
    let env = [(
        "ZOCALO_LIVE_CONFIG_FILE".to_owned(),
        live.to_str().unwrap().to_owned(),
    )];
    // The harness starts every process with ZOCALO_LOG__FILTER=warn.
    let (mut served, logs) = Served::start_with_logs("reviews", &env);
    let http = reqwest::Client::new();

    assert!(
        !request_is_logged(&http, &served, &logs, Duration::from_millis(500)).await,
        "at warn a request logs nothing"
    );

    std::fs::write(&live, VERBOSE).unwrap();
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(100),
        async || {
            if request_is_logged(&http, &served, &logs, Duration::from_millis(300)).await {
                Ok(())
            } else {
                Err("the new log level in force within seconds".to_owned())
            }
        },
    )
    .await;

    std::fs::write(&live, "log_level = \"info,[[\"\n").unwrap();
    let rejected = line_within(&logs, Duration::from_secs(10), |line| {
        line.contains("live configuration rejected")
    })
    .expect("the broken version is logged as rejected");
    assert!(rejected.contains("invalid log filter"), "{rejected}");
    assert!(
        request_is_logged(&http, &served, &logs, Duration::from_secs(2)).await,
        "the running level stays after a rejected version"
    );

    served.signal("-TERM");
    assert!(served.exit_status().await.success());
}
