//! One conformance suite for every bus adapter: each test in `jobs`,
//! `worker` and `events` runs against SQLite and, when
//! `ZOCALO_TEST_NATS_URL` names a server, NATS JetStream; `outbox` and
//! `inbox` run against the SQLite and PostgreSQL stores a service would use.

/// Run each `async fn name(kind: Kind)` as `sqlite::name` and `nats::name`.
/// NATS variants report and return when `ZOCALO_TEST_NATS_URL` is unset.
macro_rules! bus_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::support::bounded(super::$name(crate::support::Kind::Sqlite)).await
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if crate::support::nats_url().is_none() {
                        eprintln!("ZOCALO_TEST_NATS_URL is unset: NATS variant not run");
                        return;
                    }
                    crate::support::bounded(super::$name(crate::support::Kind::Nats)).await
                }
            )*
        }
    };
}

mod events;
mod inbox;
mod jobs;
mod nats_restart;
mod outbox;
mod support;
mod trace_context;
mod worker;
