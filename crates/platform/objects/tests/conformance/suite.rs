//! What every adapter promises, written once against the trait.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use zocalo_objects::{ByteRange, ByteStream, ObjectError, ObjectStore};

/// `size` bytes of a pattern that differs per `seed`, so mixed-up halves
/// of two objects are detectable.
fn pattern(seed: u8, size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed as u32) as u8)
        .collect()
}

/// `data` as a stream of 64 KiB chunks, as an upload arrives.
fn chunks(data: Vec<u8>) -> ByteStream<'static> {
    let bytes = Bytes::from(data);
    let pieces: Vec<std::io::Result<Bytes>> = (0..bytes.len())
        .step_by(64 * 1024)
        .map(|start| Ok(bytes.slice(start..(start + 64 * 1024).min(bytes.len()))))
        .collect();
    stream::iter(pieces).boxed()
}

async fn read_all(store: &dyn ObjectStore, key: &str, range: Option<ByteRange>) -> Vec<u8> {
    let object = store.get(key, range).await.unwrap();
    let bytes: Vec<Bytes> = object.body.try_collect().await.unwrap();
    bytes.concat()
}

/// Larger than one S3 part (5 MiB), so the multipart path runs too.
const LARGE: usize = 6 * 1024 * 1024 + 123;

pub async fn round_trip_of_a_streamed_object(store: Arc<dyn ObjectStore>) {
    let data = pattern(1, LARGE);
    let size = store
        .put("videos/a/original", chunks(data.clone()))
        .await
        .unwrap();
    assert_eq!(size, LARGE as u64);
    assert_eq!(
        store.head("videos/a/original").await.unwrap().size,
        LARGE as u64
    );
    assert!(read_all(store.as_ref(), "videos/a/original", None).await == data);

    let small = pattern(2, 1000);
    store
        .put("videos/a/original", chunks(small.clone()))
        .await
        .unwrap();
    assert_eq!(
        read_all(store.as_ref(), "videos/a/original", None).await,
        small,
        "put replaces"
    );

    store.put("empty", chunks(Vec::new())).await.unwrap();
    assert_eq!(store.head("empty").await.unwrap().size, 0);
    assert!(read_all(store.as_ref(), "empty", None).await.is_empty());
}

pub async fn ranges_read_parts_of_an_object(store: Arc<dyn ObjectStore>) {
    let data = pattern(3, 10_000);
    store.put("r", chunks(data.clone())).await.unwrap();

    let bounded = store
        .get(
            "r",
            Some(ByteRange::Bounded {
                first: 100,
                last: 199,
            }),
        )
        .await
        .unwrap();
    assert_eq!((bounded.size, bounded.range.clone()), (10_000, 100..200));
    let bytes: Vec<Bytes> = bounded.body.try_collect().await.unwrap();
    assert_eq!(bytes.concat(), data[100..200]);

    assert_eq!(
        read_all(store.as_ref(), "r", Some(ByteRange::From(9_990))).await,
        data[9_990..]
    );
    assert_eq!(
        read_all(store.as_ref(), "r", Some(ByteRange::Last(7))).await,
        data[9_993..]
    );
    assert_eq!(
        read_all(
            store.as_ref(),
            "r",
            Some(ByteRange::Bounded {
                first: 9_000,
                last: 99_999
            })
        )
        .await,
        data[9_000..],
        "a range past the end is cut at the end"
    );
    let beyond = store.get("r", Some(ByteRange::From(10_000))).await;
    assert!(
        matches!(
            beyond,
            Err(ObjectError::RangeNotSatisfiable { size: 10_000 })
        ),
        "{beyond:?}"
    );
}

pub async fn missing_objects_are_not_found(store: Arc<dyn ObjectStore>) {
    assert!(matches!(
        store.get("nope", None).await,
        Err(ObjectError::NotFound(_))
    ));
    assert!(matches!(
        store.head("no/such/key").await,
        Err(ObjectError::NotFound(_))
    ));
    assert!(matches!(
        store.get("nope", Some(ByteRange::From(0))).await,
        Err(ObjectError::NotFound(_))
    ));
}

/// The body's own error comes back, and neither a new key nor a replaced
/// one shows a partial object.
pub async fn a_failed_body_leaves_nothing_visible(store: Arc<dyn ObjectStore>) {
    fn failing_after(data: Vec<u8>) -> ByteStream<'static> {
        chunks(data)
            .chain(stream::once(async {
                Err(std::io::Error::other("client went away"))
            }))
            .boxed()
    }
    let failed = store.put("new", failing_after(pattern(4, LARGE))).await;
    match failed {
        Err(ObjectError::Body(error)) => assert_eq!(error.to_string(), "client went away"),
        other => panic!("expected the body's error, got {other:?}"),
    }
    assert!(matches!(
        store.head("new").await,
        Err(ObjectError::NotFound(_))
    ));

    let old = pattern(5, 5000);
    store.put("kept", chunks(old.clone())).await.unwrap();
    assert!(
        store
            .put("kept", failing_after(pattern(6, 100_000)))
            .await
            .is_err()
    );
    assert_eq!(
        read_all(store.as_ref(), "kept", None).await,
        old,
        "the old object stays whole"
    );

    let listed: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(listed, ["kept"], "no partial object is listed");
}

/// Writers racing on one key while readers read it: every read sees one
/// writer's object whole.
pub async fn concurrent_writers_never_expose_a_mixed_object(store: Arc<dyn ObjectStore>) {
    const SIZE: usize = 300_000;
    store.put("race", chunks(pattern(0, SIZE))).await.unwrap();
    let writers: Vec<_> = (1..=6u8)
        .map(|seed| {
            let store = store.clone();
            tokio::spawn(async move { store.put("race", chunks(pattern(seed, SIZE))).await })
        })
        .collect();
    let readers: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { read_all(store.as_ref(), "race", None).await })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().unwrap();
    }
    let whole: Vec<Vec<u8>> = (0..=6u8).map(|seed| pattern(seed, SIZE)).collect();
    for reader in readers {
        let seen = reader.await.unwrap();
        assert!(
            whole.contains(&seen),
            "a read saw a mixed or partial object"
        );
    }
    let last = read_all(store.as_ref(), "race", None).await;
    assert!(whole.contains(&last));
}

pub async fn delete_is_idempotent_and_list_follows_prefixes(store: Arc<dyn ObjectStore>) {
    for key in [
        "tasks/1/original",
        "tasks/1/processed",
        "tasks/2/original",
        "tasks-other",
        "pdf/x",
    ] {
        store.put(key, chunks(pattern(7, 10))).await.unwrap();
    }
    let mut under_tasks: Vec<String> = store
        .list("tasks")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    under_tasks.sort();
    assert_eq!(
        under_tasks,
        ["tasks/1/original", "tasks/1/processed", "tasks/2/original"]
    );
    let one = store.list("tasks/1/original").await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!((one[0].key.as_str(), one[0].size), ("tasks/1/original", 10));
    assert!(store.list("nothing/here").await.unwrap().is_empty());

    store.delete("tasks/1/original").await.unwrap();
    store.delete("tasks/1/original").await.unwrap();
    store.delete("never/existed").await.unwrap();
    assert!(matches!(
        store.head("tasks/1/original").await,
        Err(ObjectError::NotFound(_))
    ));
    assert_eq!(store.list("").await.unwrap().len(), 4);
}

pub async fn invalid_keys_are_refused(store: Arc<dyn ObjectStore>) {
    for key in ["", "../etc/passwd", "a/../../b", "/abs", ".tmp/x", "a b"] {
        assert!(
            matches!(
                store.put(key, chunks(vec![1])).await,
                Err(ObjectError::InvalidKey(_))
            ),
            "{key:?}"
        );
        assert!(
            matches!(store.get(key, None).await, Err(ObjectError::InvalidKey(_))),
            "{key:?}"
        );
        assert!(
            matches!(store.delete(key).await, Err(ObjectError::InvalidKey(_))),
            "{key:?}"
        );
    }
    assert!(matches!(
        store.list("../x").await,
        Err(ObjectError::InvalidKey(_))
    ));
}
