//! PostgreSQL streaming replicas for tests.
//!
//! [`replica_url`] is the shared replica CI starts with
//! `scripts/pg-replica.sh start` (`ZOCALO_TEST_REPLICA_URL`); tests only read
//! from it. A test that stops, restarts or pauses a replica starts its own
//! [`OwnReplica`] on a free port with the same script, so it never disturbs
//! the shared one.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

/// `ZOCALO_TEST_REPLICA_URL`, e.g. `postgres://postgres@127.0.0.1:5433/postgres`;
/// prints why when unset, for the test that returns early.
pub fn replica_url() -> Option<String> {
    let url = std::env::var("ZOCALO_TEST_REPLICA_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!(
            "ZOCALO_TEST_REPLICA_URL is unset (run scripts/pg-replica.sh start): replica test not run"
        );
    }
    url
}

/// A free loopback port (nothing listens on it once this returns).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A replica of the local primary owned by one test: on a free port, in a
/// temporary directory, stopped when dropped. Needs root (the script runs
/// the cluster as the `postgres` user).
pub struct OwnReplica {
    pub port: u16,
    dir: tempfile::TempDir,
}

impl OwnReplica {
    /// Clone the primary and start streaming; panics with the script's
    /// output when that fails.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        // The cluster runs as the postgres user, which must reach its
        // directory inside ours.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("open the temporary directory to the postgres user");
        let replica = Self {
            port: free_port(),
            dir,
        };
        replica.restart();
        replica
    }

    /// The replica's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Start it again after [`OwnReplica::stop`] (it resumes streaming).
    pub fn restart(&self) {
        self.script("start");
    }

    /// Fast shutdown, like a crashed or stopped replica.
    pub fn stop(&self) {
        self.script("stop");
    }

    /// Stop applying WAL (it keeps receiving it): the replica falls behind
    /// without going away.
    pub async fn pause_replay(&self) {
        self.admin_sql("SELECT pg_wal_replay_pause()").await;
    }

    pub async fn resume_replay(&self) {
        self.admin_sql("SELECT pg_wal_replay_resume()").await;
    }

    async fn admin_sql(&self, sql: &str) {
        let (client, connection) = tokio_postgres::connect(&self.url(), NoTls)
            .await
            .expect("connect to the replica");
        tokio::spawn(connection);
        client
            .batch_execute(sql)
            .await
            .expect("replica admin query");
    }

    fn script(&self, command: &str) {
        let output = self.run_script(command).expect("run scripts/pg-replica.sh");
        assert!(
            output.status.success(),
            "pg-replica.sh {command} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn run_script(&self, command: &str) -> std::io::Result<Output> {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../scripts/pg-replica.sh");
        Command::new(script)
            .arg(command)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(self.dir.path().join("data"))
            .output()
    }
}

impl Drop for OwnReplica {
    fn drop(&mut self) {
        // Never panic here: the test may already be unwinding.
        let _ = self.run_script("stop");
    }
}

/// Wait (at most 20 s) until the replica at `replica` (any database URL of
/// it) has replayed everything the primary at `primary` had written when
/// this was called; `false` when it did not.
pub async fn wait_for_replay(primary: &str, replica: &str) -> bool {
    let target: String = query_text(primary, "SELECT pg_current_wal_lsn()::text").await;
    let (client, connection) = tokio_postgres::connect(replica, NoTls)
        .await
        .expect("connect to the replica");
    tokio::spawn(connection);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let caught_up: bool = client
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&target],
            )
            .await
            .expect("replay position")
            .get(0);
        if caught_up {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn query_text(url: &str, sql: &str) -> String {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to the primary");
    tokio::spawn(connection);
    client.query_one(sql, &[]).await.expect(sql).get(0)
}
