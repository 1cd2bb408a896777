//! `zocalo serve` with NATS discovery: the instance announces itself once
//! it answers, and leaves discovery when told to stop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zocalo_discovery::{Discovery, Instances, NatsDiscovery};

use super::{tempfile_dir, zocalo};

/// Far longer than the test: only deregistration can remove the entry.
const TTL_MS: &str = "30000";

/// Killed if the test fails before it stops.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_for(
    receiver: &mut tokio::sync::watch::Receiver<Instances>,
    limit: Duration,
    ready: impl Fn(&Instances) -> bool,
) -> Instances {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let current = receiver.borrow_and_update().clone();
        if ready(&current) || tokio::time::Instant::now() >= deadline {
            return current;
        }
        let _ = tokio::time::timeout_at(deadline, receiver.changed()).await;
    }
}

#[tokio::test]
async fn serve_registers_in_discovery_and_leaves_before_stopping() {
    let Ok(nats_url) = std::env::var("ZOCALO_TEST_NATS_URL") else {
        eprintln!("ZOCALO_TEST_NATS_URL is unset: discovery test not run");
        return;
    };
    let bucket = format!("t_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let data = tempfile_dir::Dir::new();
    let mut served = Served(
        zocalo()
            .args(["serve", "reviews"])
            .env("ZOCALO_DATA_DIR", &data.0)
            .env("ZOCALO_DISCOVERY__KIND", "nats")
            .env("ZOCALO_DISCOVERY__NATS_URL", &nats_url)
            .env("ZOCALO_DISCOVERY__BUCKET", &bucket)
            .env("ZOCALO_DISCOVERY__TTL_MS", TTL_MS)
            .env("ZOCALO_DISCOVERY__HEARTBEAT_MS", "500")
            .env("ZOCALO_DISCOVERY__ZONE", "zone-e2e")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn zocalo serve reviews"),
    );
    let child = &mut served.0;
    let stdout = child.stdout.take().unwrap();
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let port: u16 = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("zocalo serve printed its port");
        if let Some(port) = line.strip_prefix("Reviews listening on port ") {
            break port.parse().expect("a port number");
        }
    };

    let watcher = NatsDiscovery::connect(&nats_url, &bucket, Duration::from_secs(30))
        .await
        .expect("connecting to NATS");
    let mut reviews = watcher.watch("reviews").await.expect("watch reviews");
    let seen = wait_for(&mut reviews, Duration::from_secs(10), |list| {
        !list.is_empty()
    })
    .await;
    assert_eq!(seen.len(), 1, "one registered instance: {seen:?}");
    let instance = &seen[0];
    assert_eq!(instance.service, "reviews");
    assert_eq!(instance.url, format!("http://127.0.0.1:{port}"));
    assert_eq!(instance.zone.as_deref(), Some("zone-e2e"));
    assert!(!instance.version.is_empty());
    let answer = reqwest::get(format!("{}/api/content", instance.url))
        .await
        .expect("the advertised URL answers");
    assert_eq!(answer.status(), 200);

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let left = wait_for(&mut reviews, Duration::from_secs(5), |list| list.is_empty()).await;
    assert!(left.is_empty(), "still listed after SIGTERM: {left:?}");
    let stop_deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < stop_deadline,
            "zocalo did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");

    if let Ok(client) = async_nats::connect(&nats_url).await {
        let _ = async_nats::jetstream::new(client)
            .delete_key_value(&bucket)
            .await;
    }
}
