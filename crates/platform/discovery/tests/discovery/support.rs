//! Buckets nobody else uses, a private NATS server, and bounded waiting.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::sync::watch;
use zocalo_discovery::{Instance, Instances};
pub use zocalo_testkit::nats::nats_url;
pub use zocalo_testkit::replica::free_port;

/// No test may take longer than this, whatever goes wrong.
const TEST_LIMIT: Duration = Duration::from_secs(60);

pub async fn bounded(test: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("test exceeded its time limit");
}

/// A bucket name unique to this test.
pub fn bucket() -> String {
    format!("t_{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// Deletes the bucket when the test ends (best effort).
pub async fn drop_bucket(url: &str, bucket: &str) {
    if let Ok(client) = async_nats::connect(url).await {
        let _ = async_nats::jetstream::new(client)
            .delete_key_value(bucket)
            .await;
    }
}

pub fn instance(service: &str, port: u16) -> Instance {
    Instance {
        id: uuid::Uuid::new_v4().to_string(),
        service: service.into(),
        url: format!("http://127.0.0.1:{port}"),
        version: "1.2.3".into(),
        zone: Some("zone-a".into()),
    }
}

pub fn ids(instances: &Instances) -> Vec<String> {
    instances.iter().map(|i| i.id.clone()).collect()
}

pub fn sorted_ids(instances: &[&Instance]) -> Vec<String> {
    let mut ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
    ids.sort();
    ids
}

/// Wait until the watched list satisfies `ready`, at most `limit`; returns
/// the last list seen either way.
pub async fn wait_for(
    receiver: &mut watch::Receiver<Instances>,
    limit: Duration,
    ready: impl Fn(&Instances) -> bool,
) -> Instances {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let current = receiver.borrow_and_update().clone();
        if ready(&current) {
            return current;
        }
        match tokio::time::timeout_at(deadline, receiver.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return receiver.borrow().clone(),
        }
    }
}

/// The `nats-server` executable: `ZOCALO_TEST_NATS_SERVER`, else the one
/// on `PATH`, else the Debian package's `/usr/sbin/nats-server`.
pub fn nats_server_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ZOCALO_TEST_NATS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("nats-server"));
    let found = on_path
        .chain([PathBuf::from("/usr/sbin/nats-server")])
        .find(|path| path.is_file());
    if found.is_none() {
        eprintln!("no nats-server executable found: test not run");
    }
    found
}

/// A `nats-server` with JetStream of this test's own, on `port` with its
/// store in `dir`; killed when dropped.
pub struct OwnNats {
    child: Child,
}

impl OwnNats {
    pub async fn start(binary: &Path, port: u16, dir: &Path) -> Self {
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nats-server");
        // Owned from here on, so a failed start still reaps the process.
        let server = Self { child };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server did not start listening on port {port}");
    }

    /// Like `kill -9`: no goodbye to the clients.
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.stop();
    }
}
