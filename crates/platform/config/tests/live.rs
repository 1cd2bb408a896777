//! `Live<T>` fed by a real file and a real NATS KV bucket.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use zocalo_config::live::{Live, NatsKvSource, Validate};
use zocalo_testkit::nats::{create_kv_bucket, nats_url};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Knobs {
    per_second: u32,
    flags: BTreeMap<String, bool>,
}

impl Validate for Knobs {
    fn validate(&self) -> Result<(), String> {
        if self.per_second > 1000 {
            return Err(format!("per_second {} is over 1000", self.per_second));
        }
        Ok(())
    }
}

fn knobs(per_second: u32) -> Knobs {
    Knobs {
        per_second,
        ..Knobs::default()
    }
}

/// Wait (bounded) until the live value satisfies `done`.
async fn eventually(live: &Live<Knobs>, what: &str, done: impl Fn(&Knobs) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(&live.get()) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; have {:?}",
            live.get()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn valid_text_is_applied_and_announced_invalid_text_is_rejected() {
    let live = Live::new(knobs(5));
    let mut changes = live.subscribe();
    live.apply_toml("per_second = 7\n[flags]\nbeta = true\n", "test")
        .unwrap();
    assert_eq!(live.get().per_second, 7);
    assert_eq!(live.get().flags.get("beta"), Some(&true));
    assert!(changes.has_changed().unwrap());
    assert_eq!(changes.borrow_and_update().per_second, 7);

    let syntax = live.apply_toml("per_second = ", "test").unwrap_err();
    let value = live.apply_toml("per_second = 5000", "test").unwrap_err();
    let typo = live.apply_toml("per_secnod = 3", "test").unwrap_err();
    let wrong_type = live
        .apply_toml("per_second = \"fast\"", "test")
        .unwrap_err();
    assert!(value.to_string().contains("over 1000"), "{value}");
    assert!(typo.to_string().contains("per_secnod"), "{typo}");
    assert!(!syntax.to_string().is_empty() && !wrong_type.to_string().is_empty());
    assert_eq!(live.get().per_second, 7, "the running value stays");
    assert!(
        !changes.has_changed().unwrap(),
        "rejections are not announced"
    );

    live.apply_toml("", "test").unwrap();
    assert_eq!(
        *live.get(),
        Knobs::default(),
        "missing keys take the defaults"
    );
}

#[tokio::test]
async fn a_watched_file_is_followed_and_bad_versions_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.toml");
    std::fs::write(&path, "per_second = 1\n").unwrap();
    let live = Live::new(Knobs::default());
    let stop = CancellationToken::new();
    let _watcher = live
        .watch_file(path.clone(), Duration::from_millis(50), stop.clone())
        .unwrap();
    assert_eq!(live.get().per_second, 1, "applied before watching starts");

    std::fs::write(&path, "per_second = 2\n").unwrap();
    eventually(&live, "the new file content", |k| k.per_second == 2).await;

    // Several polls' worth of a broken file: the running value stays.
    std::fs::write(&path, "per_second = [").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(&path, "per_second = 2000\n").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(live.get().per_second, 2);

    // Replaced by rename, as editors and config managers do.
    let staged = dir.path().join("staged.toml");
    std::fs::write(&staged, "per_second = 3\n").unwrap();
    std::fs::rename(&staged, &path).unwrap();
    eventually(&live, "the renamed-in file", |k| k.per_second == 3).await;
    stop.cancel();
}

#[tokio::test]
async fn an_invalid_file_at_startup_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.toml");
    std::fs::write(&path, "per_second = 9999\n").unwrap();
    let live = Live::new(knobs(4));
    let error = live
        .watch_file(path, Duration::from_secs(1), CancellationToken::new())
        .unwrap_err();
    assert!(error.to_string().contains("over 1000"), "{error}");
    assert_eq!(live.get().per_second, 4);
    let missing = live
        .watch_file(
            dir.path().join("nope.toml"),
            Duration::from_secs(1),
            CancellationToken::new(),
        )
        .unwrap_err();
    assert!(missing.to_string().contains("cannot read"), "{missing}");
}

#[tokio::test]
async fn a_nats_kv_key_is_followed() {
    let Some(url) = nats_url() else {
        return;
    };
    let client = async_nats::connect(&url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let bucket = format!("live-test-{}", uuid::Uuid::new_v4().simple());
    let store = create_kv_bucket(&jetstream, &bucket).await;
    store
        .put("gateway", "per_second = 11".into())
        .await
        .unwrap();

    let live: Arc<Live<Knobs>> = Live::new(Knobs::default());
    let stop = CancellationToken::new();
    let source = NatsKvSource {
        url,
        bucket: bucket.clone(),
        key: "gateway".into(),
    };
    let _watcher = live.watch_nats(source, stop.clone());
    eventually(&live, "the value already in the bucket", |k| {
        k.per_second == 11
    })
    .await;

    store
        .put("gateway", "per_second = 12\n[flags]\nx = true".into())
        .await
        .unwrap();
    eventually(&live, "a new put", |k| k.per_second == 12).await;

    store
        .put("gateway", "per_second = 99999".into())
        .await
        .unwrap();
    store.delete("gateway").await.unwrap();
    store
        .put("gateway", "per_second = 13".into())
        .await
        .unwrap();
    eventually(&live, "the put after the rejected one", |k| {
        k.per_second == 13
    })
    .await;
    assert_eq!(live.get().flags.get("x"), None);

    stop.cancel();
    jetstream.delete_key_value(&bucket).await.unwrap();
}

#[tokio::test]
async fn a_follower_gets_the_current_value_then_each_accepted_one_until_stopped() {
    let live = Live::new(knobs(1));
    let stop = CancellationToken::new();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let task = live.follow(stop.clone(), move |value: &Knobs| {
        let _ = seen_tx.send(value.per_second);
    });
    let next = async |seen: &mut tokio::sync::mpsc::UnboundedReceiver<u32>| {
        tokio::time::timeout(Duration::from_secs(5), seen.recv())
            .await
            .expect("a value within seconds")
    };
    assert_eq!(next(&mut seen).await, Some(1), "the current value first");
    live.apply_toml("per_second = 5000", "test").unwrap_err();
    live.apply_toml("per_second = 7", "test").unwrap();
    assert_eq!(
        next(&mut seen).await,
        Some(7),
        "rejected values never reach it"
    );
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the follower ends when stopped")
        .unwrap();
    assert_eq!(next(&mut seen).await, None, "nothing after the stop");
}
