//! Redis for tests: the shared server named by `ZOCALO_TEST_REDIS_URL`, and
//! throwaway `redis-server` processes a test may stop and restart to prove
//! behaviour while Redis is down (the shared server is never touched).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `ZOCALO_TEST_REDIS_URL`, e.g. `redis://127.0.0.1:6379`.
pub fn redis_url() -> Option<String> {
    std::env::var("ZOCALO_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A key prefix no other test (or run) uses.
pub fn unique_prefix(test: &str) -> String {
    format!("zocalo-test:{test}:{}:", uuid::Uuid::new_v4().simple())
}

/// A private, non-persistent `redis-server` on a loopback port; killed on
/// drop.
pub struct RedisProcess {
    port: u16,
    child: Option<Child>,
}

impl RedisProcess {
    /// Start one on a free port; `None` (with the reason printed) when
    /// `redis-server` is not installed.
    pub fn start() -> Option<Self> {
        let port = free_port();
        let mut process = Self { port, child: None };
        if let Err(error) = process.spawn() {
            eprintln!("skipping: cannot run redis-server: {error}");
            return None;
        }
        Some(process)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the server (SIGKILL: an outage, not a goodbye) and wait for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A paused process dies on SIGKILL all the same.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freeze the server (SIGSTOP): connections stay open but nothing is
    /// answered, as with an overloaded or partitioned Redis.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undo [`RedisProcess::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Start it again on the same port, with no data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn().expect("redis-server restarts");
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        wait_until_listening(self.port);
        Ok(())
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn wait_until_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("redis-server did not listen on port {port} within 10 s");
}
