//! Bodies pass through in both directions, large ones included, without the
//! gateway waiting for a whole body before relaying it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{BIG_CHUNK, BIG_CHUNKS, gateway_over_reviews, header};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_reach_the_upstream_and_come_back_intact() {
    let (gateway, _upstream, _) = gateway_over_reviews().await;

    let body: Vec<u8> = (0..3 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let response = gateway
        .client
        .post("/api/reviews/upload")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-echo-method"), Some("POST"));
    assert_eq!(header(&response, "x-echo-content-length"), Some("3145728"));
    let echoed = response.bytes().await.unwrap();
    assert!(echoed == body, "the echoed body differs from the one sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_streamed_responses_arrive_whole() {
    let (gateway, _upstream, _) = gateway_over_reviews().await;

    let response = gateway.client.get("/api/content/big").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), BIG_CHUNK * BIG_CHUNKS);
    for (i, chunk) in body.chunks(BIG_CHUNK).enumerate() {
        assert!(
            chunk.iter().all(|b| *b == i as u8),
            "chunk {i} is corrupted"
        );
    }
}

/// The upstream echoes as it reads. If the gateway buffered the request
/// body, the first chunk could not come back before the last was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_comes_back_before_the_request_body_is_finished() {
    let (gateway, _upstream, _) = gateway_over_reviews().await;

    let mut stream = TcpStream::connect(("127.0.0.1", gateway.port))
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /api/reviews/stream HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\
              Connection: close\r\n\r\n7\r\nhello-1\r\n",
        )
        .await
        .unwrap();
    let received = read_until(&mut stream, "hello-1").await;
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");

    stream
        .write_all(b"7\r\nhello-2\r\n0\r\n\r\n")
        .await
        .unwrap();
    let rest = read_until(&mut stream, "hello-2").await;
    assert!(rest.contains("hello-2"));
}

/// Read until `needle` shows up; panics after 5 s rather than hanging.
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "connection closed before {needle:?} arrived");
            seen.extend_from_slice(&buffer[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{needle:?} did not come back: the body was buffered"));
    String::from_utf8_lossy(&seen).into_owned()
}
