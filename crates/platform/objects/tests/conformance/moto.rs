//! A private `moto` S3 server on a free loopback port, killed on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zocalo_objects::{ObjectStore, ObjectsSettings, S3Store};

pub struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    /// Start `moto_server`, or `None` when it is not installed.
    pub fn start() -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    /// A store on a fresh bucket named after the test.
    pub async fn store(&self, test: &str) -> Arc<dyn ObjectStore> {
        let bucket = test.replace('_', "-");
        let created = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .unwrap();
        assert!(
            created.status().is_success(),
            "bucket: {}",
            created.status()
        );
        let settings = ObjectsSettings {
            url: format!("s3://{bucket}/under-a-prefix"),
            s3_endpoint: Some(self.endpoint.clone()),
            s3_access_key_id: Some("testing".into()),
            s3_secret_access_key: Some(zocalo_config::Secret::new("testing".to_owned())),
            s3_allow_http: true,
            ..ObjectsSettings::default()
        };
        Arc::new(S3Store::open(&settings).unwrap())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
