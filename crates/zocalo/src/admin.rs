//! `zocalo admin …`: one-off tasks around a deployment, each a small
//! function of its own so that more can be added beside them.
//!
//! - `rebuild` wipes a service's read models and replays their source
//!   (`rebuild cinema-query`: the cinema command side's event log);
//! - `dev-cert` writes a self-signed certificate and key for local TLS;
//! - `probe` checks an admin endpoint over plain HTTP and exits 0 or 1, for
//!   container health checks in images that have no shell or curl.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Rebuild a service's read models from scratch (`rebuild
    /// cinema-query`: replay the cinema command side's event log).
    Rebuild { service: crate::Service },
    /// Write a self-signed certificate (`cert.pem`) and its key (`key.pem`)
    /// for `gateway.tls`; clients trust `cert.pem` itself.
    DevCert {
        /// Where the two files go (created if missing).
        #[arg(long, default_value = "data/tls")]
        out_dir: PathBuf,
        /// Names and addresses the certificate is valid for.
        #[arg(long = "host", default_values = ["localhost", "127.0.0.1", "::1"])]
        hosts: Vec<String>,
    },
    /// GET an `http://host:port/path` URL; exit 0 on a 2xx answer within
    /// the timeout, 1 otherwise.
    Probe {
        #[arg(env = "ZOCALO_PROBE_URL", default_value = "http://127.0.0.1:8080/live")]
        url: String,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

pub async fn run(command: AdminCommand, settings: crate::settings::Settings) -> anyhow::Result<()> {
    match command {
        AdminCommand::Rebuild { service } => crate::up::rebuild(service, settings).await,
        AdminCommand::DevCert { out_dir, hosts } => dev_cert(&out_dir, hosts),
        AdminCommand::Probe { url, timeout_ms } => {
            tokio::time::timeout(Duration::from_millis(timeout_ms), probe(&url))
                .await
                .with_context(|| format!("{url}: no answer within {timeout_ms} ms"))?
        }
    }
}

/// A self-signed pair; the key file is readable by its owner only.
fn dev_cert(out_dir: &Path, hosts: Vec<String>) -> anyhow::Result<()> {
    let pair =
        rcgen::generate_simple_self_signed(hosts.clone()).context("generating the certificate")?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let cert = out_dir.join("cert.pem");
    let key = out_dir.join("key.pem");
    write_private(&key, pair.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, pair.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    println!(
        "wrote {} and {} for {}",
        cert.display(),
        key.display(),
        hosts.join(", ")
    );
    Ok(())
}

fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))
}

/// One HTTP/1.0 GET over a plain TCP connection: enough for `/live` and
/// `/ready`, with no HTTP client in the binary.
async fn probe(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs can be probed"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let status_line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    anyhow::ensure!(status.starts_with('2'), "{url}: {status_line}");
    println!("{url}: {status_line}");
    Ok(())
}
