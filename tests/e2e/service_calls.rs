//! Calls between services in distributed mode: `zocalo worker orders`
//! finds catalog and auth through NATS discovery (its configured addresses
//! point nowhere) and keeps completing orders when one of two catalog
//! instances is killed with SIGKILL.

use std::time::Duration;

use serde_json::{Value, json};
use zocalo_testkit::{Backend, database};

use super::distributed::{Served, deployment_env, with};
use super::support::{accepted_order, eventually, json, nats_url, one_copy_order, unique_bucket};
use super::{access, free_port, register_and_login_at, tempfile_dir};

const CLIENT_SECRET: &str = "orders-e2e-secret";

/// Auth's configuration: the orders service client, as an operator
/// declares it.
fn auth_config(dir: &tempfile_dir::Dir) -> String {
    let path = dir.0.join("auth.toml");
    std::fs::write(
        &path,
        format!(
            "[[auth.clients]]\nclient_id = \"orders\"\nclient_secret = \"{CLIENT_SECRET}\"\n\
             name = \"orders\"\nroles = [\"service\"]\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

async fn list_book(http: &reqwest::Client, catalog: &str, seller: &Value) -> String {
    let listed = http
        .post(format!("{catalog}/api/books"))
        .bearer_auth(access(seller))
        .json(&json!({
            "title": "El Aleph", "author": "Jorge Luis Borges", "isbn": "9780142437889",
            "description": "Paperback.", "condition": "good",
            "price": {"amount": "12.00", "currency": "USD"}, "stock": 5
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 201);
    let book: Value = listed.json().await.unwrap();
    book["id"].as_str().unwrap().to_owned()
}

/// Place an order for one copy and wait (at most 40 s) until delivered.
async fn buy(http: &reqwest::Client, orders: &str, buyer: &Value, book: &str, key: &str) {
    let order = accepted_order(
        http.post(format!("{orders}/api/orders"))
            .bearer_auth(access(buyer))
            .header("idempotency-key", key)
            .json(&one_copy_order(
                book,
                "Av. de Mayo 575, Buenos Aires",
                "dhl",
                "4242 4242 4242 4242",
            )),
    )
    .await;
    let url = format!("{orders}/api/orders/{}", order["id"].as_str().unwrap());
    eventually(
        Duration::from_secs(40),
        Duration::from_millis(100),
        async || {
            let current = json(http.get(&url).bearer_auth(access(buyer))).await;
            if current["status"] == "delivered" {
                return Ok(());
            }
            assert_ne!(current["status"], "failed", "{current}");
            Err(format!("order never delivered: {current}"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orders_worker_calls_discovered_instances_and_survives_losing_one() {
    let Some(nats_url) = nats_url("service-call") else {
        return;
    };
    let (Some(catalog_db), Some(orders_db)) = (
        database(Backend::Postgres).await,
        database(Backend::Postgres).await,
    ) else {
        eprintln!("ZOCALO_TEST_POSTGRES_URL is unset: service-call test not run");
        return;
    };
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let public_url = format!("http://127.0.0.1:{}", free_port());
    let env = deployment_env(&nats_url, &unique_bucket(), &public_url);
    let config = tempfile_dir::Dir::new();

    let auth = Served::start(
        "auth",
        &with(&env, &[("ZOCALO_CONFIG", auth_config(&config))]),
    );
    let jwks = format!("{}/.well-known/jwks.json", auth.url());
    let catalog_env = with(
        &env,
        &[
            ("ZOCALO_CATALOG__DATABASE_URL", catalog_db.url.clone()),
            ("ZOCALO_CATALOG__JWKS_URL", jwks.clone()),
        ],
    );
    let mut catalogs = [
        Served::start("catalog", &catalog_env),
        Served::start("catalog", &catalog_env),
    ];
    // Nothing listens at the configured addresses: only discovery can
    // lead the worker to catalog and auth.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let orders_env = with(
        &env,
        &[
            ("ZOCALO_ORDERS__DATABASE_URL", orders_db.url.clone()),
            ("ZOCALO_ORDERS__JWKS_URL", jwks),
            (
                "ZOCALO_ORDERS__BUS_URL",
                format!("{nats_url}?prefix=sc{}", &unique[..12]),
            ),
            ("ZOCALO_ORDERS__SHIPPING_STEP_MS", "100".into()),
            ("ZOCALO_ORDERS__CATALOG_URL", nowhere.clone()),
            ("ZOCALO_ORDERS__TOKEN_URL", format!("{nowhere}/auth/token")),
            ("ZOCALO_ORDERS__CLIENT_SECRET", CLIENT_SECRET.into()),
        ],
    );
    let orders = Served::start("orders", &orders_env);
    let _worker = Served::start_worker("orders", &orders_env);

    let http = reqwest::Client::new();
    let seller = register_and_login_at(&http, &auth.url(), "sara@example.com").await;
    let buyer = register_and_login_at(&http, &auth.url(), "beto@example.com").await;
    let book = list_book(&http, &catalogs[0].url(), &seller).await;

    buy(&http, &orders.url(), &buyer, &book, "before").await;

    catalogs[1].signal("-KILL");
    catalogs[1].exit_status().await;
    for key in ["after-1", "after-2", "after-3"] {
        buy(&http, &orders.url(), &buyer, &book, key).await;
    }
    let after = json(http.get(format!("{}/api/books/{book}", catalogs[0].url()))).await;
    assert_eq!(after["stock"], 1, "four copies sold, once each");
}
