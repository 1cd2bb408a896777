//! TLS at the gateway of a real `zocalo up`: HTTPS with a certificate made
//! by `zocalo admin dev-cert`, HTTP/2 over ALPN, HSTS, the plain-HTTP
//! redirect, and a renewed certificate served without a restart.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, support, tempfile_dir, zocalo};

/// `zocalo admin dev-cert` into `dir`; the PEM certificate it wrote.
fn dev_cert(dir: &Path) -> Vec<u8> {
    support::run_ok(zocalo().args(["admin", "dev-cert", "--out-dir"]).arg(dir));
    std::fs::read(dir.join("cert.pem")).unwrap()
}

/// A client that trusts only `cert_pem` and follows no redirects.
fn trusting(cert_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_https_redirects_http_and_reloads_its_certificate() {
    let data = tempfile_dir::Dir::new();
    let tls = data.0.join("tls");
    let first_cert = dev_cert(&tls);
    let (https_port, http_port) = (free_port(), free_port());
    let cert_file = tls.join("cert.pem");
    let key_file = tls.join("key.pem");
    let mut child = zocalo()
        .args(["up", "--port", &https_port.to_string(), "--data-dir"])
        .arg(&data.0)
        .env("ZOCALO_GATEWAY__TLS__CERT_FILE", &cert_file)
        .env("ZOCALO_GATEWAY__TLS__KEY_FILE", &key_file)
        .env("ZOCALO_GATEWAY__TLS__RELOAD_INTERVAL_MS", "200")
        .env(
            "ZOCALO_GATEWAY__TLS__REDIRECT_LISTEN",
            format!("127.0.0.1:{http_port}"),
        )
        .env("ZOCALO_GATEWAY__HSTS", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = support::stdout_lines(&mut child);
    let stack = Killed(child);
    let base = support::wait_for_line(&lines, "the gateway listening", |line| {
        line.strip_prefix("gateway listening on ")
            .map(str::to_owned)
    });
    assert_eq!(base, format!("https://127.0.0.1:{https_port}"));

    // HTTPS end to end (gateway → catalog), over HTTP/2, with HSTS.
    let client = trusting(&first_cert);
    let books = client
        .get(format!("https://localhost:{https_port}/api/books"))
        .send()
        .await
        .unwrap();
    assert_eq!(books.status(), 200);
    assert_eq!(books.version(), reqwest::Version::HTTP_2, "h2 via ALPN");
    let hsts = books.headers()["strict-transport-security"]
        .to_str()
        .unwrap();
    assert!(hsts.starts_with("max-age="), "{hsts}");
    let body: serde_json::Value = books.json().await.unwrap();
    assert!(body["items"].is_array(), "{body}");

    // A client that does not trust the certificate is refused.
    let stranger = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    let refused = stranger
        .get(format!("https://localhost:{https_port}/live"))
        .send()
        .await;
    assert!(refused.is_err(), "an untrusted certificate is not accepted");

    // Plain HTTP is redirected to the same path over HTTPS.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirected = plain
        .get(format!("http://localhost:{http_port}/api/books?q=rayuela"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirected.status(), 308);
    assert_eq!(
        redirected.headers()["location"],
        format!("https://localhost:{https_port}/api/books?q=rayuela").as_str()
    );

    // A broken pair (a key that is not the certificate's) is refused and
    // the certificate in force keeps serving.
    let other = data.0.join("other");
    let second_cert = dev_cert(&other);
    std::fs::copy(other.join("key.pem"), &key_file).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let still = trusting(&first_cert)
        .get(format!("https://localhost:{https_port}/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), 200, "the old pair still serves");

    // Completing the renewal puts the new certificate in force without a
    // restart: new connections verify against it only.
    std::fs::copy(other.join("cert.pem"), &cert_file).unwrap();
    let renewed = trusting(&second_cert);
    support::eventually(
        Duration::from_secs(10),
        Duration::from_millis(100),
        async || {
            renewed
                .get(format!("https://localhost:{https_port}/live"))
                .send()
                .await
                .map_err(|e| format!("renewed certificate not served: {e}"))
        },
    )
    .await;
    let old_trust = trusting(&first_cert)
        .get(format!("https://localhost:{https_port}/live"))
        .send()
        .await;
    assert!(
        old_trust.is_err(),
        "the first certificate is no longer served"
    );

    // The gateway counted one rejected and one accepted reload.
    let metrics = support::metrics(&renewed, &format!("https://localhost:{https_port}")).await;
    let reloads = |result: &str| {
        support::samples(
            &metrics,
            "tls_certificate_reloads_total",
            &[&format!("result=\"{result}\"")],
        )
        .sum::<f64>()
    };
    assert!(reloads("rejected") >= 1.0, "{metrics}");
    assert!(reloads("ok") >= 1.0, "{metrics}");

    // SIGTERM drains and stops the TLS and redirect listeners cleanly.
    let mut stack = stack;
    let pid = stack.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = support::eventually(
        Duration::from_secs(20),
        Duration::from_millis(50),
        async || {
            stack
                .0
                .try_wait()
                .unwrap()
                .ok_or("still running after SIGTERM".to_owned())
        },
    )
    .await;
    assert!(status.success(), "clean exit: {status:?}");
}
