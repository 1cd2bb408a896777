//! `X-Request-Id`: a good incoming id is kept, a bad or missing one is
//! replaced; either way the upstream and the client see the same id.

use crate::support::{gateway_over_reviews, header};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_incoming_id_is_forwarded_and_returned() {
    let (gateway, _upstream, _) = gateway_over_reviews().await;

    let response = gateway
        .client
        .get("/api/reviews")
        .header("x-request-id", "trace-0123.abc_DEF")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "x-request-id"),
        Some("trace-0123.abc_DEF")
    );
    assert_eq!(
        header(&response, "x-echo-x-request-id"),
        Some("trace-0123.abc_DEF")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ids_are_replaced_everywhere() {
    let (gateway, _upstream, _) = gateway_over_reviews().await;

    let too_long = "a".repeat(200);
    for bad in ["has space", too_long.as_str()] {
        let response = gateway
            .client
            .get("/api/reviews")
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        let returned = header(&response, "x-request-id").unwrap();
        assert_ne!(returned, bad);
        assert_eq!(returned.len(), 32, "a fresh uuid");
        assert_eq!(header(&response, "x-echo-x-request-id"), Some(returned));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_id_is_minted_and_gateway_errors_carry_one_too() {
    let (gateway, _upstream, _) = gateway_over_reviews().await;

    let response = gateway.client.get("/api/reviews").send().await.unwrap();
    let minted = header(&response, "x-request-id").unwrap();
    assert!(minted.chars().all(|c| c.is_ascii_hexdigit()) && minted.len() == 32);
    assert_eq!(header(&response, "x-echo-x-request-id"), Some(minted));

    let other = gateway.client.get("/api/reviews").send().await.unwrap();
    assert_ne!(
        header(&other, "x-request-id"),
        Some(minted),
        "ids are unique"
    );

    let not_found = gateway.client.get("/nowhere").send().await.unwrap();
    assert!(header(&not_found, "x-request-id").is_some());
}
