//! The test NATS server: its URL and key-value buckets made by hand.

use async_nats::jetstream::Context;
use async_nats::jetstream::kv::Store;
use async_nats::jetstream::stream::{Config, DiscardPolicy};

/// `ZOCALO_TEST_NATS_URL`, e.g. `nats://127.0.0.1:4222`; prints why when
/// unset, for the test that returns early.
pub fn nats_url() -> Option<String> {
    let url = std::env::var("ZOCALO_TEST_NATS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("ZOCALO_TEST_NATS_URL is unset: NATS test not run");
    }
    url
}

/// A KV bucket made as `nats kv add` makes it. `create_key_value` cannot be
/// used: it first reads the account info, whose 2.9 server format this
/// client version no longer parses.
pub async fn create_kv_bucket(jetstream: &Context, bucket: &str) -> Store {
    jetstream
        .create_stream(Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            discard: DiscardPolicy::New,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .unwrap();
    jetstream.get_key_value(bucket).await.unwrap()
}
