//! A bare HTTP/1.1 reverse proxy: what a hyper server, a pooled hyper client
//! and one more loopback hop cost at least, with none of the gateway's work
//! (no routing table, limits, token checks, balancing, tracing, metrics or
//! header rewriting beyond `Host`). It is the floor the gateway's proxy path
//! is compared with in bench/results.md.
//!
//!     bare-proxy LISTEN_ADDR UPSTREAM_ADDR     (e.g. 127.0.0.1:18091 127.0.0.1:18082)

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt as _;
use hyper::body::{Bytes, Incoming};
use hyper::header::HOST;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Upstream = Client<HttpConnector, Incoming>;
type ProxyBody = BoxBody<Bytes, hyper::Error>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare-proxy LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN_ADDR is host:port");
    let authority: &'static str = Box::leak(upstream.into_boxed_str());
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(512)
        .build(connector);
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let client = client.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| forward(client.clone(), authority, request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    client: Upstream,
    authority: &'static str,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    parts.uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path)
        .build()
        .expect("a valid upstream URI");
    parts.headers.insert(HOST, authority.parse().expect("a valid Host"));
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => Ok(response.map(|body| body.boxed())),
        Err(_) => {
            let mut response = Response::new(
                http_body_util::Empty::new()
                    .map_err(|never: Infallible| match never {})
                    .boxed(),
            );
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            Ok(response)
        }
    }
}
