use std::collections::HashMap;

use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};
use zocalo_http::auth::{KeySource, TokenVerifier};
use zocalo_http::ratelimit::RateLimit;
use zocalo_testkit::{Backend, backend_tests, expect_problem};

use crate::helpers::{ADMIN_EMAIL, ADMIN_PASSWORD, ISSUER, TestApp, spawn, spawn_with};

backend_tests!(
    register_creates_a_user_without_its_hash,
    duplicate_and_invalid_registrations_are_refused,
    fifty_parallel_registrations_of_one_email_create_one_account,
    password_grant_issues_verifiable_tokens,
    wrong_password_and_unknown_email_look_the_same,
    refresh_tokens_rotate_and_reuse_revokes_the_family,
    revoke_and_logout_end_sessions,
    admin_grants_and_revokes_roles,
    users_are_listed_page_by_page,
    client_credentials_grant_for_services,
    login_is_rate_limited_per_account,
    key_rotation_keeps_old_tokens_valid,
    bad_input_gets_problem_json_never_500,
    discovery_documents_are_published,
);

async fn register_creates_a_user_without_its_hash(backend: Backend) {
    let app = spawn(backend).await;
    let response = app.register("Ana@Example.com", "a-good-password").await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["email"], "ana@example.com");
    assert_eq!(body["roles"], json!([]));
    assert_eq!(
        location,
        format!("/auth/users/{}", body["id"].as_str().unwrap())
    );
    let text = body.to_string();
    assert!(
        !text.contains("password") && !text.contains("argon2"),
        "{text}"
    );
}

async fn duplicate_and_invalid_registrations_are_refused(backend: Backend) {
    let app = spawn(backend).await;
    app.user("ana@example.com").await;
    let again = app.register("ANA@example.com", "another-password").await;
    expect_problem(again, 409).await;

    let invalid = app
        .api
        .post("/auth/register")
        .json(&json!({"email": "not-an-email", "password": "short", "name": ""}))
        .send()
        .await
        .unwrap();
    let body = expect_problem(invalid, 422).await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "password", "name"]);
}

async fn fifty_parallel_registrations_of_one_email_create_one_account(backend: Backend) {
    let app = spawn(backend).await;
    let attempts = (0..50).map(|_| {
        let api = app.api.clone();
        async move {
            api.post("/auth/register")
                .json(&json!({"email": "race@example.com", "password": "a-good-password", "name": "Ana"}))
                .send()
                .await
                .unwrap()
        }
    });
    let statuses: Vec<u16> = futures_join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.status().as_u16())
        .collect();
    let created = statuses.iter().filter(|s| **s == 201).count();
    let conflicts = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!((created, conflicts), (1, 49), "{statuses:?}");
}

/// Await all futures concurrently (a tiny `join_all` to avoid a dependency).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

async fn verifier_for(app: &TestApp) -> std::sync::Arc<TokenVerifier> {
    let jwks: JwkSet = app
        .api
        .get("/.well-known/jwks.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    TokenVerifier::new(KeySource::Static(jwks), ISSUER, "zocalo-api")
}

async fn password_grant_issues_verifiable_tokens(backend: Backend) {
    let app = spawn(backend).await;
    let id = app.user("ana@example.com").await;
    let response = app.login("ana@example.com", "a-good-password").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens: Value = response.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    assert!(tokens["refresh_token"].as_str().unwrap().len() >= 40);

    let access = tokens["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(access).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert!(header.kid.is_some());
    let claims = verifier_for(&app).await.verify(access).await.unwrap();
    assert_eq!(claims.sub, id);
    assert_eq!(claims.iss, ISSUER);
    assert_eq!(claims.aud, "zocalo-api");
    assert_eq!(claims.exp - claims.iat, 900);
    assert_eq!(claims.email.as_deref(), Some("ana@example.com"));

    let me: Value = app
        .api
        .get("/auth/me")
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "ana@example.com");
    expect_problem(app.api.get("/auth/me").send().await.unwrap(), 401).await;
    expect_problem(
        app.api
            .get("/auth/me")
            .bearer_auth("garbage")
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
}

async fn wrong_password_and_unknown_email_look_the_same(backend: Backend) {
    let app = spawn(backend).await;
    app.user("ana@example.com").await;
    let wrong = app.login("ana@example.com", "not-the-password").await;
    let unknown = app.login("nobody@example.com", "not-the-password").await;
    let wrong = expect_problem(wrong, 400).await;
    let unknown = expect_problem(unknown, 400).await;
    assert_eq!(wrong["error"], "invalid_grant");
    assert_eq!(wrong, unknown);
}

async fn refresh_tokens_rotate_and_reuse_revokes_the_family(backend: Backend) {
    let app = spawn(backend).await;
    app.user("ana@example.com").await;
    let first = app.tokens("ana@example.com", "a-good-password").await;
    let first_refresh = first["refresh_token"].as_str().unwrap();

    let second: Value = app.refresh(first_refresh).await.json().await.unwrap();
    let second_refresh = second["refresh_token"].as_str().unwrap();
    assert_ne!(first_refresh, second_refresh);
    assert!(second["access_token"].is_string());

    // Reusing the first token is theft or a bug: both it and its successor die.
    let reuse = expect_problem(app.refresh(first_refresh).await, 400).await;
    assert_eq!(reuse["error"], "invalid_grant");
    let after = expect_problem(app.refresh(second_refresh).await, 400).await;
    assert_eq!(after["error"], "invalid_grant");

    // Another login (another family) is unaffected.
    let other = app.tokens("ana@example.com", "a-good-password").await;
    assert_eq!(
        app.refresh(other["refresh_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
    expect_problem(app.refresh("never-issued").await, 400).await;
}

async fn revoke_and_logout_end_sessions(backend: Backend) {
    let app = spawn(backend).await;
    app.user("ana@example.com").await;
    let a = app.tokens("ana@example.com", "a-good-password").await;
    let revoked = app
        .api
        .post("/auth/revoke")
        .form(&[("token", a["refresh_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    expect_problem(app.refresh(a["refresh_token"].as_str().unwrap()).await, 400).await;
    let unknown = app
        .api
        .post("/auth/revoke")
        .form(&[("token", "unknown")])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 200, "revocation reveals nothing");

    let b = app.tokens("ana@example.com", "a-good-password").await;
    let c = app.tokens("ana@example.com", "a-good-password").await;
    let logout = app
        .api
        .post("/auth/logout")
        .bearer_auth(b["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    for session in [&b, &c] {
        expect_problem(
            app.refresh(session["refresh_token"].as_str().unwrap())
                .await,
            400,
        )
        .await;
    }
}

async fn admin_grants_and_revokes_roles(backend: Backend) {
    let app = spawn(backend).await;
    let id = app.user("ana@example.com").await;
    let admin = app.admin_token().await;
    let ana = app.tokens("ana@example.com", "a-good-password").await;
    let ana_access = ana["access_token"].as_str().unwrap();
    let path = format!("/auth/users/{id}/roles/editor");

    expect_problem(app.api.put(&path).send().await.unwrap(), 401).await;
    expect_problem(
        app.api
            .put(&path)
            .bearer_auth(ana_access)
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;

    let granted: Value = app
        .api
        .put(&path)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(granted["roles"], json!(["editor"]));
    // Granting twice is idempotent.
    let again = app.api.put(&path).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(again.status(), 200);

    // The next token carries the role, also through a refresh.
    let refreshed: Value = app
        .refresh(ana["refresh_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let claims = verifier_for(&app)
        .await
        .verify(refreshed["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims.roles, vec!["editor"]);

    let revoked: Value = app
        .api
        .delete(&path)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(revoked["roles"], json!([]));

    let missing = format!("/auth/users/{}/roles/editor", uuid::Uuid::new_v4());
    expect_problem(
        app.api
            .put(&missing)
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    let bad_role = format!("/auth/users/{id}/roles/emperor");
    expect_problem(
        app.api
            .put(&bad_role)
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    let bad_id = app
        .api
        .put("/auth/users/not-a-uuid/roles/editor")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_problem(bad_id, 404).await;
}

async fn users_are_listed_page_by_page(backend: Backend) {
    let app = spawn(backend).await;
    for i in 0..5 {
        app.user(&format!("user{i}@example.com")).await;
    }
    let admin = app.admin_token().await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut request = app.api.get("/auth/users?limit=2").bearer_auth(&admin);
        if let Some(c) = &cursor {
            request = request.query(&[("cursor", c)]);
        }
        let page: Value = request.send().await.unwrap().json().await.unwrap();
        for user in page["items"].as_array().unwrap() {
            seen.push(user["email"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6, "admin and five users: {seen:?}");
    assert_eq!(seen[0], ADMIN_EMAIL, "creation order");
    let bad = app
        .api
        .get("/auth/users?limit=1000")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    expect_problem(bad, 422).await;
}

async fn client_credentials_grant_for_services(backend: Backend) {
    let app = spawn(backend).await;
    let admin = app.admin_token().await;
    let created: Value = app
        .api
        .post("/auth/clients")
        .bearer_auth(&admin)
        .json(&json!({"name": "orders worker"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, secret) = (
        created["client_id"].as_str().unwrap(),
        created["client_secret"].as_str().unwrap(),
    );
    let response = app
        .api
        .post("/auth/token")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.unwrap();
    assert!(
        tokens.get("refresh_token").is_none(),
        "no refresh token for clients"
    );
    let claims = verifier_for(&app)
        .await
        .verify(tokens["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims.sub, format!("client:{id}"));
    assert_eq!(claims.roles, vec!["service"]);
    assert_eq!(claims.email, None, "a service client has no email");

    let wrong = app
        .api
        .post("/auth/token")
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", "nope"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(expect_problem(wrong, 401).await["error"], "invalid_client");
    let unsupported = app
        .api
        .post("/auth/token")
        .form(&[("grant_type", "implicit")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_problem(unsupported, 400).await["error"],
        "unsupported_grant_type"
    );
}

async fn login_is_rate_limited_per_account(backend: Backend) {
    let app = spawn_with(backend, |s| {
        s.login_per_account = RateLimit {
            per_second: 0.01,
            burst: 3,
        };
    })
    .await;
    app.user("ana@example.com").await;
    for _ in 0..3 {
        assert_eq!(
            app.login("ana@example.com", "wrong-password")
                .await
                .status(),
            400
        );
    }
    let limited = app.login("ana@example.com", "a-good-password").await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    expect_problem(limited, 429).await;
    // Other accounts are not locked out by Ana's attacker.
    assert_eq!(app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.status(), 200);
}

async fn key_rotation_keeps_old_tokens_valid(backend: Backend) {
    let app = spawn(backend).await;
    let admin = app.admin_token().await;
    let old_kid = jsonwebtoken::decode_header(&admin).unwrap().kid.unwrap();
    let rotated: Value = app
        .api
        .post("/auth/keys/rotate")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(rotated["kid"].as_str().unwrap(), old_kid);

    let fresh = app.admin_token().await;
    assert_eq!(
        jsonwebtoken::decode_header(&fresh).unwrap().kid.unwrap(),
        rotated["kid"].as_str().unwrap()
    );
    let verifier = verifier_for(&app).await;
    verifier
        .verify(&admin)
        .await
        .expect("old token still verifies");
    verifier.verify(&fresh).await.expect("new token verifies");
    let me = app
        .api
        .get("/auth/me")
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
}

async fn bad_input_gets_problem_json_never_500(backend: Backend) {
    let app = spawn(backend).await;
    zocalo_testkit::assert_rejects_malformed_json(&app.api, "/auth/register", None).await;
    let missing_field = app
        .api
        .post("/auth/register")
        .json(&json!({"email": "a@b.co"}))
        .send()
        .await
        .unwrap();
    expect_problem(missing_field, 422).await;
    // Its own connection: the server answers 413 without reading the body
    // and closes, which a pooled connection would only learn on reuse.
    let oversized = zocalo_testkit::Client::new(app.api.base.clone())
        .post("/auth/register")
        .json(&json!({"email": "a@b.co", "password": "x".repeat(3 * 1024 * 1024), "name": "n"}))
        .send()
        .await
        .unwrap();
    expect_problem(oversized, 413).await;
    let sql = app
        .register("x'); DROP TABLE users; --@example.com", "a-good-password")
        .await;
    assert!(sql.status() == 201 || sql.status() == 422);
    let login_sql = app.login("' OR '1'='1", "' OR '1'='1").await;
    expect_problem(login_sql, 400).await;
    let form_as_json = app
        .api
        .post("/auth/token")
        .json(&json!({"grant_type": "password"}))
        .send()
        .await
        .unwrap();
    expect_problem(form_as_json, 415).await;
    expect_problem(app.api.get("/auth/nowhere").send().await.unwrap(), 404).await;
    expect_problem(app.api.delete("/auth/register").send().await.unwrap(), 405).await;
    // The table is still there.
    assert_eq!(app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.status(), 200);
}

async fn discovery_documents_are_published(backend: Backend) {
    let app = spawn(backend).await;
    let metadata: HashMap<String, Value> = app
        .api
        .get("/.well-known/oauth-authorization-server")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["issuer"], ISSUER);
    assert!(
        metadata["token_endpoint"]
            .as_str()
            .unwrap()
            .ends_with("/auth/token")
    );
    let openapi: Value = app
        .api
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    assert!(openapi["paths"]["/auth/token"]["post"].is_object());
    assert_eq!(app.api.get("/live").send().await.unwrap().status(), 200);
    assert_eq!(app.api.get("/ready").send().await.unwrap().status(), 200);
    let metrics = app
        .api
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
}
