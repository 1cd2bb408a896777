//! The cinema's command side through `zocalo up` and its gateway: an admin
//! opens a cinema and makes a manager of an account, the manager schedules
//! a showtime, a customer buys seats; reads go to the query side.

use serde_json::{Value, json};

use super::{ADMIN_EMAIL, ADMIN_PASSWORD, Stack, access, register_and_login, user_id};

pub(crate) async fn post(stack: &Stack, token: &str, path: &str, body: Value) -> reqwest::Response {
    stack
        .http
        .post(stack.url(path))
        .bearer_auth(token)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&body)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn created(
    stack: &Stack,
    token: &str,
    path: &str,
    body: Value,
    id: &str,
) -> String {
    let response = post(stack, token, path, body).await;
    assert_eq!(response.status(), 201, "POST {path}");
    let body: Value = response.json().await.unwrap();
    body[id].as_str().unwrap().to_owned()
}

/// GET a ticket PDF until the worker has made it (404 with `Retry-After`
/// before), at most 20 s.
async fn ticket_pdf(stack: &Stack, token: &str, path: &str) -> Vec<u8> {
    for _ in 0..200 {
        let response = stack
            .http
            .get(stack.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            assert_eq!(response.headers()["content-type"], "application/pdf");
            return response.bytes().await.unwrap().to_vec();
        }
        assert_eq!(response.status(), 404, "{path}");
        assert!(response.headers().contains_key("retry-after"), "{path}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no ticket PDF at {path}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_buys_seats_of_a_showtime_a_manager_scheduled() {
    let stack = Stack::start();
    let admin = stack.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let admin = access(&admin);
    let chain = created(
        &stack,
        admin,
        "/api/cinema/chains",
        json!({"name": "Cinemex"}),
        "chain_id",
    )
    .await;
    let cinema = json!({"chain_id": chain, "name": "Cinemex Polanco", "city": "CDMX", "address": "Moliere 222"});
    let cinema = created(&stack, admin, "/api/cinema/cinemas", cinema, "cinema_id").await;

    let mara = register_and_login(&stack, "mara@example.com").await;
    let mara_id = user_id(&stack.http, &stack.base, access(&mara)).await;
    for path in [
        format!("/auth/users/{mara_id}/roles/manager"),
        format!("/api/cinema/cinemas/{cinema}/managers/{mara_id}"),
    ] {
        let granted = stack
            .http
            .put(stack.url(&path))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap();
        assert!(
            granted.status().is_success(),
            "PUT {path}: {}",
            granted.status()
        );
    }
    let mara = stack.login("mara@example.com", "a-good-password").await;
    let manager = access(&mara);
    let room = json!({"cinema_id": cinema, "name": "Sala 3", "rows": 2, "seats_per_row": 5, "disabled": ["A1"]});
    let room = created(&stack, manager, "/api/cinema/rooms", room, "room_id").await;
    let movie = json!({"title": "Y tu mamá también", "duration_min": 106});
    let movie = created(&stack, manager, "/api/cinema/movies", movie, "movie_id").await;
    let showtime = json!({"movie_id": movie, "room_id": room, "starts_at": "2030-07-01T20:00:00Z",
        "prices": [{"class": "standard", "cents": 8500}]});
    let showtime = created(
        &stack,
        manager,
        "/api/cinema/showtimes",
        showtime,
        "showtime_id",
    )
    .await;

    let customer = register_and_login(&stack, "carla@example.com").await;
    let customer = access(&customer);
    let path = format!("/api/cinema/showtimes/{showtime}/purchases");
    let bought = post(
        &stack,
        customer,
        &path,
        json!({"quantity": 3, "card": "4242424242424242"}),
    )
    .await;
    assert_eq!(bought.status(), 201);
    let bought: Value = bought.json().await.unwrap();
    assert_eq!(bought["status"], "completed");
    assert_eq!(bought["tickets"].as_array().unwrap().len(), 3);
    assert_eq!(bought["total_cents"], 3 * 8500);

    // The ticket PDF is made in the background and served, through the
    // gateway, to its buyer only.
    let purchase = bought["purchase_id"].as_str().unwrap();
    let ticket = bought["tickets"][0]["ticket_id"].as_str().unwrap();
    for pdf in [
        format!("/api/cinema/tickets/purchases/{purchase}.pdf"),
        format!("/api/cinema/tickets/{ticket}.pdf"),
    ] {
        let document = ticket_pdf(&stack, customer, &pdf).await;
        assert!(document.starts_with(b"%PDF-"), "{pdf}");
        let stranger = stack
            .http
            .get(stack.url(&pdf))
            .bearer_auth(manager)
            .send()
            .await
            .unwrap();
        assert_eq!(stranger.status(), 404, "{pdf}");
    }
    let too_many = post(
        &stack,
        customer,
        &path,
        json!({"quantity": 7, "card": "4242424242424242"}),
    )
    .await;
    assert_eq!(too_many.status(), 409);
    let problem: Value = too_many.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("only 6 free"),
        "{problem}"
    );

    // Reads belong to the query side.
    let read = stack
        .http
        .get(stack.url("/api/cinema/chains"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert!(stack.stop().success());
}
