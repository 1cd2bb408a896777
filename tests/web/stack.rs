//! A running `zocalo up` for the web tests (shared with the browser
//! tests): the real binary on a free port with a fresh data directory,
//! killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ADMIN_EMAIL: &str = "root@example.com";
pub const ADMIN_PASSWORD: &str = "root-password-1";
/// The password of the cinema manager [`Stack::showtime`] registers.
pub const MANAGER_PASSWORD: &str = "manager password 7";

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

/// A one-second test clip made by ffmpeg at `path`; false without ffmpeg.
pub fn clip(path: &std::path::Path) -> bool {
    Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc=size=160x120:rate=10:duration=1")
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
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
    /// says where it listens. The gateway's port is chosen before `zocalo
    /// up` binds it (the web pages and token issuer must know it), so
    /// another process may take it in between: then start again on another.
    pub fn start() -> Self {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            match Self::try_start() {
                Ok(stack) => return stack,
                Err(why) if attempt < ATTEMPTS => {
                    eprintln!("zocalo up did not start ({why}); again")
                }
                Err(why) => panic!("zocalo up starts within a minute: {why}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn try_start() -> Result<Self, String> {
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
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(base) = line.strip_prefix("gateway listening on ") {
                        let base = base.to_owned();
                        return Ok(Self { child, base, data });
                    }
                }
                Err(error) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let _ = std::fs::remove_dir_all(&data);
                    return Err(error.to_string());
                }
            }
        }
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

    /// POST `body` to `path` with `token`; the new resource's `id` field.
    async fn created(&self, token: &str, path: &str, body: serde_json::Value, id: &str) -> String {
        let response = reqwest::Client::new()
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "POST {path}");
        let body: serde_json::Value = response.json().await.unwrap();
        body[id].as_str().unwrap().to_owned()
    }

    async fn put(&self, token: &str, path: &str) {
        let response = reqwest::Client::new()
            .put(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "PUT {path}");
    }

    /// A cinema with one room of 2 × 5 seats, run by a manager registered
    /// as `manager_email`, showing `title` the day after tomorrow at 90.00
    /// a seat: the movie's and the showtime's ids.
    pub async fn showtime(&self, manager_email: &str, title: &str) -> (String, String) {
        use chrono::Timelike;
        let password = MANAGER_PASSWORD;
        let admin = self.api_token(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        let chain = serde_json::json!({"name": "Cinépolis"});
        let chain = self
            .created(&admin, "/api/cinema/chains", chain, "chain_id")
            .await;
        let cinema = serde_json::json!({"chain_id": chain, "name": "Cinépolis Diana",
            "city": "CDMX", "address": "Reforma 423"});
        let cinema = self
            .created(&admin, "/api/cinema/cinemas", cinema, "cinema_id")
            .await;
        let registered = reqwest::Client::new()
            .post(self.url("/auth/register"))
            .json(
                &serde_json::json!({"email": manager_email, "password": password, "name": "Mara"}),
            )
            .send()
            .await
            .unwrap();
        assert!(registered.status().is_success(), "manager registered");
        let token = self.api_token(manager_email, password).await;
        let me: serde_json::Value = reqwest::Client::new()
            .get(self.url("/auth/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = me["id"].as_str().unwrap();
        self.put(&admin, &format!("/auth/users/{id}/roles/manager"))
            .await;
        self.put(
            &admin,
            &format!("/api/cinema/cinemas/{cinema}/managers/{id}"),
        )
        .await;
        // A token that carries the new role.
        let token = self.api_token(manager_email, password).await;
        let room = serde_json::json!({"cinema_id": cinema, "name": "Sala 1", "rows": 2, "seats_per_row": 5});
        let room = self
            .created(&token, "/api/cinema/rooms", room, "room_id")
            .await;
        let movie = serde_json::json!({"title": title, "duration_min": 154});
        let movie = self
            .created(&token, "/api/cinema/movies", movie, "movie_id")
            .await;
        let starts = (chrono::Utc::now() + chrono::Duration::days(2))
            .with_second(0)
            .and_then(|t| t.with_nanosecond(0))
            .unwrap();
        let showtime = serde_json::json!({"movie_id": movie, "room_id": room,
            "starts_at": starts.to_rfc3339(), "prices": [{"class": "standard", "cents": 9000}]});
        let showtime = self
            .created(&token, "/api/cinema/showtimes", showtime, "showtime_id")
            .await;
        (movie, showtime)
    }
}
