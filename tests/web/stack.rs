//! A running `zocalo up` for the web tests (shared with the browser
//! tests): the real binary on a free port with a fresh data directory,
//! killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_EMAIL: &str = "root@example.com";
pub const ADMIN_PASSWORD: &str = "root-password-1";

pub struct Stack {
    child: Child,
    pub base: String,
    data: std::path::PathBuf,
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Stack {
    /// Start the whole stack and wait (at most a minute) until the gateway
    /// says where it listens.
    pub fn start() -> Self {
        let data = std::env::temp_dir().join(format!("zocalo-web-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&data).unwrap();
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_zocalo"))
            .env_remove("ZOCALO_CONFIG")
            .env("ZOCALO_LOG__FILTER", "warn")
            .env("ZOCALO_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("ZOCALO_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("ZOCALO_ORDERS__SHIPPING_STEP_MS", "200")
            // Many sign-ins from one address in a short test.
            .env("ZOCALO_AUTH__LOGIN_PER_IP__BURST", "1000")
            .env("ZOCALO_AUTH__LOGIN_PER_ACCOUNT__BURST", "1000")
            .args(["up", "--port", &port.to_string(), "--data-dir"])
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn zocalo up");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let base = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines
                .recv_timeout(left)
                .expect("zocalo up starts within a minute");
            if let Some(base) = line.strip_prefix("gateway listening on ") {
                break base.to_owned();
            }
        };
        Self { child, base, data }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An access token for `email`, straight from the token endpoint.
    pub async fn api_token(&self, email: &str, password: &str) -> String {
        let response = reqwest::Client::new()
            .post(self.url("/auth/token"))
            .form(&[
                ("grant_type", "password"),
                ("username", email),
                ("password", password),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "token for {email}");
        let body: serde_json::Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A camera listed through the API (editors and admins may).
    pub async fn camera(&self, token: &str, brand: &str, model: &str) -> String {
        let response = reqwest::Client::new()
            .post(self.url("/api/cameras"))
            .bearer_auth(token)
            .json(&serde_json::json!({
                "brand": brand, "model": model, "sensor": "full frame",
                "megapixels": 24.2, "released": 2021
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "camera listed");
        let body: serde_json::Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }
}
