//! Throwaway HTTP servers for tests: an axum router on a loopback port 0,
//! stopped when the test drops the handle.

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

/// A router being served on loopback; the server stops when this drops.
pub struct Served {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _stop: DropGuard,
}

impl Served {
    /// `127.0.0.1:<port>`, the form discovery sources and static lists use.
    pub fn authority(&self) -> &str {
        self.url.trim_start_matches("http://")
    }
}

/// Serve `router` on a fresh loopback port until the returned handle drops.
pub async fn serve(router: Router) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(zocalo_http::server::serve(listener, router, stop.clone()));
    Served {
        url,
        _stop: stop.drop_guard(),
    }
}
