//! Distributed mode as an operator runs it: separate `zocalo serve`
//! processes meeting through NATS discovery, reviews on PostgreSQL, two
//! gateways in front. One reviews instance is killed with SIGKILL under a
//! constant load of reads and idempotent writes; the clients must not see a
//! single failure, and a replacement instance must get traffic within
//! seconds.

use std::collections::BTreeSet;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;
use zocalo_testkit::{Backend, database};

use super::support::{Load, Tally, eventually, json, metrics, nats_url, samples, unique_bucket};
use super::{ADMIN_EMAIL, ADMIN_PASSWORD, access, free_port, tempfile_dir, zocalo};

/// One `zocalo serve <service>` process; killed if the test ends first.
pub(crate) struct Served {
    child: Child,
    pub port: u16,
    _data: tempfile_dir::Dir,
}

impl Served {
    /// Start `zocalo serve <service>` with `env` and wait for the line
    /// saying where it listens.
    pub fn start(service: &str, env: &[(String, String)]) -> Self {
        Self::launch(&["serve", service], env, Stdio::inherit())
    }

    /// Like [`Served::start`], with the log lines (stderr) handed back.
    pub fn start_with_logs(service: &str, env: &[(String, String)]) -> (Self, Receiver<String>) {
        let mut served = Self::launch(&["serve", service], env, Stdio::piped());
        let logs = super::support::stderr_lines(&mut served.child);
        (served, logs)
    }

    /// Start `zocalo worker <service>` and wait until it says it runs
    /// (`port` stays 0: a worker listens nowhere).
    pub fn start_worker(service: &str, env: &[(String, String)]) -> Self {
        Self::launch(&["worker", service], env, Stdio::inherit())
    }

    fn launch(args: &[&str], env: &[(String, String)], logs: Stdio) -> Self {
        let data = tempfile_dir::Dir::new();
        let mut child = zocalo()
            .args(args)
            .env("ZOCALO_DATA_DIR", &data.0)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(logs)
            .spawn()
            .expect("spawn zocalo serve");
        let lines = super::support::stdout_lines(&mut child);
        // Owned from here on, so a failed start still reaps the process.
        let mut served = Self {
            child,
            port: 0,
            _data: data,
        };
        served.port = super::support::wait_for_line(
            &lines,
            &format!("zocalo {args:?} said it runs"),
            |line| {
                if let Some((_, port)) = line.split_once(" listening on port ") {
                    return Some(port.parse().expect("a port number"));
                }
                line.ends_with(" worker running").then_some(0)
            },
        );
        served
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// SIGSTOP, returning once every thread of the process is stopped
    /// (`kill` returns when the signal is sent, not when it took effect).
    pub fn freeze(&self) {
        self.signal("-STOP");
        let stat = format!("/proc/{}/stat", self.child.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(&stat).unwrap_or_default();
            // The state follows the parenthesised command name.
            if state
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T'))
            {
                return;
            }
            assert!(Instant::now() < deadline, "the process did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub async fn exit_status(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "zocalo did not stop");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment every process of one deployment shares.
pub(crate) fn deployment_env(
    nats_url: &str,
    bucket: &str,
    public_url: &str,
) -> Vec<(String, String)> {
    [
        ("ZOCALO_PUBLIC_URL", public_url),
        ("ZOCALO_DISCOVERY__KIND", "nats"),
        ("ZOCALO_DISCOVERY__NATS_URL", nats_url),
        ("ZOCALO_DISCOVERY__BUCKET", bucket),
        ("ZOCALO_DISCOVERY__TTL_MS", "3000"),
        ("ZOCALO_DISCOVERY__HEARTBEAT_MS", "500"),
        ("ZOCALO_ADMIN_EMAIL", ADMIN_EMAIL),
        ("ZOCALO_ADMIN_PASSWORD", ADMIN_PASSWORD),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub(crate) fn with(base: &[(String, String)], extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut env = base.to_vec();
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    env
}

/// Poll a gateway's metrics until it balances over `count` reviews
/// instances (as discovery reports them).
pub(crate) async fn wait_for_instances(http: &reqwest::Client, gateway: &str, count: usize) {
    let wanted = format!("discovery_instances{{service=\"reviews\"}} {count}");
    eventually(
        Duration::from_secs(20),
        Duration::from_millis(200),
        async || {
            if metrics(http, gateway)
                .await
                .lines()
                .any(|line| line == wanted)
            {
                Ok(())
            } else {
                Err(format!("{gateway} never saw {count} reviews instances"))
            }
        },
    )
    .await;
}

/// The number of `GET /api/content` requests an instance has answered.
pub(crate) async fn content_requests(http: &reqwest::Client, instance: &str) -> u64 {
    let metrics = metrics(http, instance).await;
    samples(
        &metrics,
        "http_requests_total",
        &["route=\"/api/content\"", "method=\"GET\""],
    )
    .sum::<f64>() as u64
}

/// Poll until `instance` has answered `count` more content requests than
/// `before`, within 10 s: it is in rotation.
pub(crate) async fn wait_for_traffic(
    http: &reqwest::Client,
    instance: &str,
    before: u64,
    what: &str,
) {
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(200),
        async || {
            if content_requests(http, instance).await >= before + 20 {
                Ok(())
            } else {
                Err(format!("{what} got no traffic within 10 s"))
            }
        },
    )
    .await;
}

/// What the load saw: failures with their reason, and the ids of created
/// reviews (one per distinct Idempotency-Key).
#[derive(Default)]
struct Outcome {
    tally: Tally,
    created: BTreeSet<String>,
}

/// One client: alternate gateways, mostly reads, every fourth request an
/// idempotent write, until `stop`.
async fn client_load(
    http: reqwest::Client,
    gateways: [String; 2],
    token: String,
    camera_id: String,
    stop: Arc<AtomicBool>,
    outcome: Arc<Mutex<Outcome>>,
) {
    // Bounded even if `stop` were never set.
    for n in 0..20_000u32 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let gateway = &gateways[n as usize % 2];
        let result = if n % 4 == 3 {
            let key = uuid::Uuid::new_v4().to_string();
            http.post(format!("{gateway}/api/reviews"))
                .bearer_auth(&token)
                .header("idempotency-key", &key)
                .json(&json!({"title": format!("Under load {key}"), "content": "Written while an instance died.", "rating": 4, "camera_id": camera_id}))
                .send()
                .await
        } else {
            http.get(format!("{gateway}/api/content?limit=5"))
                .send()
                .await
        };
        let mut outcome = outcome.lock().await;
        let accepted = outcome
            .tally
            .record(result, |status| status.is_success())
            .await;
        if let Some(response) = accepted.filter(|response| response.status() == 201) {
            let body: Value = response.json().await.unwrap();
            outcome
                .created
                .insert(body["id"].as_str().unwrap().to_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_reviews_instance_under_load_fails_no_request() {
    let Some(nats_url) = nats_url("distributed") else {
        return;
    };
    let Some(reviews_db) = database(Backend::Postgres).await else {
        eprintln!("ZOCALO_TEST_POSTGRES_URL is unset: distributed test not run");
        return;
    };
    let bucket = unique_bucket();
    let gateway_ports = [free_port(), free_port()];
    let gateways = gateway_ports.map(|port| format!("http://127.0.0.1:{port}"));
    let env = deployment_env(&nats_url, &bucket, &gateways[0]);

    let auth = Served::start("auth", &env);
    let jwks = format!("{}/.well-known/jwks.json", auth.url());
    let reviews_env = with(
        &env,
        &[
            ("ZOCALO_REVIEWS__DATABASE_URL", reviews_db.url.clone()),
            ("ZOCALO_REVIEWS__JWKS_URL", jwks),
        ],
    );
    let mut reviews: Vec<Served> = (0..3)
        .map(|_| Served::start("reviews", &reviews_env))
        .collect();
    let _gateways: Vec<Served> = gateway_ports
        .iter()
        .map(|port| {
            Served::start(
                "gateway",
                &with(
                    &env,
                    &[
                        ("ZOCALO_GATEWAY__LISTEN", format!("127.0.0.1:{port}")),
                        ("ZOCALO_GATEWAY__RATE_LIMIT__PER_SECOND", "0".into()),
                        // Every read must reach an instance: this test
                        // counts what each one serves.
                        ("ZOCALO_GATEWAY__CACHE__ENABLED", "false".into()),
                    ],
                ),
            )
        })
        .collect();
    let http = reqwest::Client::new();
    for gateway in &gateways {
        wait_for_instances(&http, gateway, 3).await;
    }

    // An editor with a camera to write about.
    let editor = super::register_and_login_at(&http, &gateways[0], "kai@example.com").await;
    let admin = super::login_at(&http, &gateways[1], ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let granted = http
        .put(format!(
            "{}/auth/users/{}/roles/editor",
            gateways[1],
            super::user_id(&http, &gateways[1], access(&editor)).await
        ))
        .bearer_auth(access(&admin))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 200);
    let editor = super::login_at(&http, &gateways[0], "kai@example.com", "a-good-password").await;
    let camera = json(
        http.post(format!("{}/api/cameras", gateways[0]))
            .bearer_auth(access(&editor))
            .json(&json!({"brand": "Leica", "model": "Q3", "sensor": "full frame", "megapixels": 60.3, "released": 2023})),
    )
    .await;
    let camera_id = camera["id"].as_str().unwrap().to_owned();

    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let load = Load::start(4, |stop| {
        client_load(
            http.clone(),
            gateways.clone(),
            access(&editor).to_owned(),
            camera_id.clone(),
            stop,
            outcome.clone(),
        )
    });

    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = reviews.remove(0);
    victim.signal("-KILL");
    tokio::time::sleep(Duration::from_secs(4)).await;

    // A replacement comes up and is given traffic by both gateways.
    let replacement = Served::start("reviews", &reviews_env);
    wait_for_traffic(&http, &replacement.url(), 0, "the new instance").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    load.stop().await;
    drop(victim);

    let outcome = outcome.lock().await;
    eprintln!("{} reviews created", outcome.created.len());
    outcome.tally.assert_ran_without_failures(100);
    for survivor in &reviews {
        assert!(content_requests(&http, &survivor.url()).await > 0);
    }

    // Every acknowledged write exists exactly once: retried POSTs were
    // replayed, not duplicated.
    let page = json(http.get(format!(
        "{}/api/content?camera_id={camera_id}&limit=100",
        gateways[0]
    )))
    .await;
    let mut stored = BTreeSet::new();
    let mut cursor = page["next_cursor"].as_str().map(str::to_owned);
    let mut items = page["items"].as_array().unwrap().clone();
    // At most a few pages: bounded by the load's write count.
    for _ in 0..200 {
        for item in items.drain(..) {
            assert!(
                stored.insert(item["id"].as_str().unwrap().to_owned()),
                "a review listed twice"
            );
        }
        let Some(next) = cursor.take() else { break };
        let page = json(http.get(format!(
            "{}/api/content?camera_id={camera_id}&limit=100&cursor={next}",
            gateways[0]
        )))
        .await;
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        items = page["items"].as_array().unwrap().clone();
    }
    assert_eq!(
        stored, outcome.created,
        "the stored reviews are exactly the acknowledged ones"
    );
}
