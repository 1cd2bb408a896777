//! One conformance suite for every object store adapter: the local
//! directory, and S3 against a `moto` server this test starts (skipped,
//! saying so, when `moto_server` is not installed).

mod moto;
mod suite;

use zocalo_objects::{LocalStore, ObjectStore as _};

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store: std::sync::Arc<dyn zocalo_objects::ObjectStore> =
                        std::sync::Arc::new(zocalo_objects::LocalStore::open(dir.path()).await.unwrap());
                    super::suite::$name(store).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(server) = super::moto::Moto::start() else {
                        eprintln!("moto_server is not installed: S3 variant not run");
                        return;
                    };
                    let store = server.store(stringify!($name)).await;
                    super::suite::$name(store).await;
                }
            )*
        }
    };
}

conformance!(
    round_trip_of_a_streamed_object,
    ranges_read_parts_of_an_object,
    missing_objects_are_not_found,
    a_failed_body_leaves_nothing_visible,
    concurrent_writers_never_expose_a_mixed_object,
    delete_is_idempotent_and_list_follows_prefixes,
    invalid_keys_are_refused,
);

/// A local-only promise: what a crash leaves in the temporary directory is
/// removed once it is old enough, and nothing younger is touched.
#[tokio::test]
async fn stale_partial_uploads_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).await.unwrap();
    let temp = dir.path().join(".tmp");
    let old = temp.join("crashed-upload");
    let young = temp.join("upload-in-progress");
    std::fs::write(&old, b"half a video").unwrap();
    std::fs::write(&young, b"still arriving").unwrap();
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(an_hour_ago)
        .unwrap();

    let removed = store
        .remove_stale_uploads(std::time::Duration::from_secs(600))
        .await
        .unwrap();

    assert_eq!(removed, 1);
    assert!(!old.exists(), "the stale partial upload is gone");
    assert!(young.exists(), "a recent one may still be written");
    assert!(
        store.list("").await.unwrap().is_empty(),
        "temporary files are never listed"
    );
}
