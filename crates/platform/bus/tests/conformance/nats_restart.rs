//! A NATS server that comes back without its storage (a fresh pod, a lost
//! volume): the bus must declare its streams and consumers again by itself,
//! so that jobs and events flow without restarting the process. Runs a
//! private `nats-server` (never the shared one) and returns early when it
//! is not installed.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zocalo_bus::{Event, JobOptions};

const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A JetStream server on a free loopback port, with a fresh storage
/// directory on every start; killed on drop.
struct Server {
    port: u16,
    child: Child,
    store: std::path::PathBuf,
}

impl Server {
    fn start(port: u16) -> std::io::Result<Self> {
        let store = std::env::temp_dir().join(format!("zocalo-nats-{}", uuid::Uuid::new_v4()));
        let child = Command::new(NATS_SERVER)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
            .arg("-sd")
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = Self { port, child, store };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Retry `attempt` every 100 ms until it yields, for at most 30 s.
async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_without_its_storage_gets_streams_and_consumers_again() {
    let port = free_port();
    let first = match Server::start(port) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("skipping: cannot run {NATS_SERVER}: {error}");
            return;
        }
    };
    let url = format!("nats://127.0.0.1:{}", first.port);
    let bus = zocalo_bus::connect(&url).await.unwrap();
    // A process that only consumes (a worker): no failed publish of its own
    // tells it that the server lost everything.
    let worker = zocalo_bus::connect(&url).await.unwrap();
    let visibility = Duration::from_secs(5);
    // Consumers exist and are cached before the loss.
    bus.jobs
        .enqueue("mail", serde_json::json!({"n": 1}), JobOptions::default())
        .await
        .unwrap();
    let job = worker
        .jobs
        .reserve("mail", visibility)
        .await
        .unwrap()
        .unwrap();
    worker.jobs.ack(&job).await.unwrap();
    assert!(
        worker
            .events
            .next("orders", "billing", Duration::from_millis(50))
            .await
            .unwrap()
            .is_none()
    );

    drop(first);
    let _second = Server::start(port).unwrap();

    let id = eventually("enqueueing", || async {
        bus.jobs
            .enqueue("mail", serde_json::json!({"n": 2}), JobOptions::default())
            .await
            .ok()
    })
    .await;
    let job = eventually("reserving", || async {
        worker.jobs.reserve("mail", visibility).await.ok().flatten()
    })
    .await;
    assert_eq!(job.id, id);
    worker.jobs.ack(&job).await.unwrap();

    let event = Event::new("orders", "order.paid", serde_json::json!({"order": 7}));
    eventually("publishing", || async {
        bus.events.publish(&event).await.ok()
    })
    .await;
    let received = eventually("consuming events", || async {
        worker
            .events
            .next("orders", "billing", Duration::from_millis(200))
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(received.id, event.id);
}
