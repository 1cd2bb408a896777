use serde_json::{Value, json};
use zocalo_testkit::{Backend, backend_tests, expect_problem};

use crate::helpers::{id_of, spawn, titles};

backend_tests!(
    editors_list_cameras_and_lenses,
    writes_need_a_token_and_the_editor_role,
    a_review_is_published_read_and_changed_by_its_editor,
    content_is_newest_first_and_paginates_by_cursor,
    content_filters_by_target_brand_editor_and_text,
    public_reads_are_cacheable,
    compare_puts_specs_and_ratings_side_by_side,
    bad_input_gets_problem_json_never_500,
    operability_endpoints_answer,
);

async fn editors_list_cameras_and_lenses(backend: Backend) {
    let app = spawn(backend).await;
    let camera = app.camera("Sony", "A7 IV").await;
    let got = app.get_json(&format!("/api/cameras/{camera}")).await;
    assert_eq!(got["model"], "A7 IV");
    assert_eq!(got["megapixels"], 24.2);

    let duplicate = app
        .api
        .post("/api/cameras")
        .bearer_auth(&app.editor.1)
        .json(&json!({"brand": "sony", "model": "a7 iv", "sensor": "ff", "megapixels": 33}))
        .send()
        .await
        .unwrap();
    expect_problem(duplicate, 409).await;

    app.camera("Nikon", "Z6").await;
    app.lens("Sony", "FE 24-70 GM").await;
    let sony = app.get_json("/api/cameras?brand=SONY").await;
    assert_eq!(sony["items"].as_array().unwrap().len(), 1);
    let lenses = app.get_json("/api/lenses").await;
    assert_eq!(lenses["items"][0]["focal_max_mm"], 70.0);

    let first = app.get_json("/api/cameras?limit=1").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app
        .get_json(&format!("/api/cameras?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(second["items"][0]["brand"], "Nikon");
    assert!(second["next_cursor"].is_null());

    let bad_lens = app
        .api
        .post("/api/lenses")
        .bearer_auth(&app.editor.1)
        .json(&json!({"brand": "X", "model": "Y", "mount": "E", "focal_min_mm": 70, "focal_max_mm": 24, "max_aperture": 0}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(bad_lens, 422).await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 2);
    expect_problem(
        app.api
            .get(&format!("/api/cameras/{}", uuid::Uuid::now_v7()))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
}

async fn writes_need_a_token_and_the_editor_role(backend: Backend) {
    let app = spawn(backend).await;
    let camera = app.camera("Canon", "R5").await;
    let body = json!({"title": "t", "content": "c", "rating": 4, "camera_id": camera});
    expect_problem(
        app.api
            .post("/api/reviews")
            .json(&body)
            .send()
            .await
            .unwrap(),
        401,
    )
    .await;
    let (_, reader) = app.token_for(&[]);
    expect_problem(app.post_review(&reader, body.clone()).await, 403).await;
    let (_, seller) = app.token_for(&["seller"]);
    expect_problem(app.post_review(&seller, body.clone()).await, 403).await;
    let expired = app.tokens.token_with(
        &uuid::Uuid::now_v7().to_string(),
        &["editor"],
        zocalo_testkit::AUDIENCE,
        -120,
    );
    expect_problem(app.post_review(&expired, body.clone()).await, 401).await;
    let elsewhere = app.tokens.token_with(
        &uuid::Uuid::now_v7().to_string(),
        &["editor"],
        "other-api",
        600,
    );
    expect_problem(app.post_review(&elsewhere, body.clone()).await, 401).await;
    let (_, admin) = app.token_for(&["admin"]);
    assert_eq!(
        app.post_review(&admin, body).await.status(),
        201,
        "admins may write too"
    );
}

async fn a_review_is_published_read_and_changed_by_its_editor(backend: Backend) {
    let app = spawn(backend).await;
    let camera = app.camera("Fujifilm", "X-T5").await;
    let response = app
        .post_review(&app.editor.1, json!({"title": "Film looks", "content": "Lovely colours.", "rating": 5, "camera_id": camera}))
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/reviews/{}", created["id"].as_str().unwrap())
    );
    assert_eq!(created["editor_id"], app.editor.0.to_string());
    assert_eq!(created["target_brand"], "Fujifilm");
    let id = created["id"].as_str().unwrap();

    let public = app.get_json(&format!("/api/content/{id}")).await;
    assert_eq!(public["title"], "Film looks");

    let patched: Value = app
        .api
        .patch(&format!("/api/reviews/{id}"))
        .bearer_auth(&app.editor.1)
        .json(&json!({"rating": 4, "title": "Film looks, revisited"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["rating"], 4);
    assert_eq!(patched["content"], "Lovely colours.");
    assert_ne!(patched["updated_at"], created["updated_at"]);

    let (_, other_editor) = app.token_for(&["editor"]);
    let theirs = app
        .api
        .patch(&format!("/api/reviews/{id}"))
        .bearer_auth(&other_editor)
        .json(&json!({"rating": 1}))
        .send()
        .await
        .unwrap();
    expect_problem(theirs, 404).await;
    let theirs = app
        .api
        .delete(&format!("/api/reviews/{id}"))
        .bearer_auth(&other_editor)
        .send()
        .await
        .unwrap();
    expect_problem(theirs, 404).await;
    let (_, admin) = app.token_for(&["admin"]);
    let by_admin = app
        .api
        .patch(&format!("/api/reviews/{id}"))
        .bearer_auth(&admin)
        .json(&json!({"rating": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(by_admin.status(), 200);
    let invalid = app
        .api
        .patch(&format!("/api/reviews/{id}"))
        .bearer_auth(&app.editor.1)
        .json(&json!({"rating": 6}))
        .send()
        .await
        .unwrap();
    expect_problem(invalid, 422).await;

    let deleted = app
        .api
        .delete(&format!("/api/reviews/{id}"))
        .bearer_auth(&app.editor.1)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    expect_problem(
        app.api
            .get(&format!("/api/content/{id}"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;

    let no_target = app
        .post_review(
            &app.editor.1,
            json!({"title": "t", "content": "c", "rating": 3}),
        )
        .await;
    expect_problem(no_target, 422).await;
    let missing = app
        .post_review(
            &app.editor.1,
            json!({"title": "t", "content": "c", "rating": 3, "lens_id": uuid::Uuid::now_v7()}),
        )
        .await;
    assert_eq!(
        expect_problem(missing, 422).await["errors"][0]["field"],
        "lens_id"
    );
}

async fn content_is_newest_first_and_paginates_by_cursor(backend: Backend) {
    let app = spawn(backend).await;
    let camera = app.camera("Leica", "Q3").await;
    for i in 0..25 {
        app.review(camera, &format!("review {i:02}"), "text", 4)
            .await;
    }
    let mut seen = Vec::new();
    let mut query = "?limit=10".to_owned();
    for _ in 0..5 {
        let page = app.content(&query).await;
        seen.extend(titles(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=10&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("review {i:02}")).collect();
    assert_eq!(seen, expected);
    let default_page = app.content("").await;
    assert_eq!(default_page["items"].as_array().unwrap().len(), 20);
}

async fn content_filters_by_target_brand_editor_and_text(backend: Backend) {
    let app = spawn(backend).await;
    let nikon = app.camera("Nikon", "Zf").await;
    let sigma = app.lens("Sigma", "35 Art").await;
    app.review(
        nikon,
        "Retro body",
        "The dials are a joy; autofocus is quick.",
        5,
    )
    .await;
    let (other_id, other) = app.token_for(&["editor"]);
    let response = app
        .post_review(&other, json!({"title": "Sharp prime", "content": "Wide open sharpness is superb.", "rating": 4, "lens_id": sigma}))
        .await;
    assert_eq!(response.status(), 201);

    assert_eq!(
        titles(&app.content(&format!("?camera_id={nikon}")).await),
        ["Retro body"]
    );
    assert_eq!(
        titles(&app.content(&format!("?lens_id={sigma}")).await),
        ["Sharp prime"]
    );
    assert_eq!(titles(&app.content("?brand=sigma").await), ["Sharp prime"]);
    assert_eq!(
        titles(&app.content(&format!("?editor_id={other_id}")).await),
        ["Sharp prime"]
    );
    assert_eq!(titles(&app.content("?q=autofocus").await), ["Retro body"]);
    assert_eq!(titles(&app.content("?q=SHARPNESS").await), ["Sharp prime"]);
    assert_eq!(
        titles(&app.content("?q=dials%20quick").await),
        ["Retro body"],
        "all words must match"
    );
    assert!(titles(&app.content("?q=dials%20superb").await).is_empty());
    assert!(
        titles(&app.content("?brand=nikon&q=sharp").await).is_empty(),
        "filters combine"
    );
}

async fn public_reads_are_cacheable(backend: Backend) {
    let app = spawn(backend).await;
    let camera = app.camera("Ricoh", "GR III").await;
    app.review(camera, "Pocketable", "Great street camera.", 5)
        .await;
    let first = app.api.get("/api/content").send().await.unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        first.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );

    let revalidated = app
        .api
        .get("/api/content")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
    assert_eq!(revalidated.headers()["etag"].to_str().unwrap(), etag);
    assert!(revalidated.text().await.unwrap().is_empty());

    app.review(camera, "Second look", "Still great.", 4).await;
    let changed = app
        .api
        .get("/api/content")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200, "a new review changes the ETag");
}

async fn compare_puts_specs_and_ratings_side_by_side(backend: Backend) {
    let app = spawn(backend).await;
    let a = app.camera("Sony", "A1").await;
    let b = app.camera("Canon", "R3").await;
    app.review(a, "one", "x", 5).await;
    app.review(a, "two", "y", 4).await;
    let comparison = app.get_json(&format!("/api/compare?cameras={a},{b}")).await;
    assert_eq!(comparison["kind"], "cameras");
    let items = comparison["items"].as_array().unwrap();
    assert_eq!(items[0]["model"], "A1");
    assert_eq!(items[0]["review_count"], 2);
    assert_eq!(items[0]["average_rating"], 4.5);
    assert_eq!(items[1]["review_count"], 0);
    assert!(items[1]["average_rating"].is_null());

    let l1 = app.lens("Sony", "85 GM").await;
    let l2 = app.lens("Canon", "85 L").await;
    let lenses = app
        .get_json(&format!("/api/compare?lenses={l1},{l2}"))
        .await;
    assert_eq!(lenses["items"].as_array().unwrap().len(), 2);

    expect_problem(
        app.api
            .get(&format!("/api/compare?cameras={a}"))
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    expect_problem(app.api.get("/api/compare").send().await.unwrap(), 422).await;
    expect_problem(
        app.api
            .get(&format!("/api/compare?cameras={a},nope"))
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    let unknown = app
        .api
        .get(&format!(
            "/api/compare?cameras={a},{}",
            uuid::Uuid::now_v7()
        ))
        .send()
        .await
        .unwrap();
    expect_problem(unknown, 404).await;
}

async fn bad_input_gets_problem_json_never_500(backend: Backend) {
    let app = spawn(backend).await;
    let camera = app.camera("Olympus", "OM-1").await;
    let token = app.editor.1.clone();
    zocalo_testkit::assert_rejects_malformed_json(&app.api, "/api/reviews", Some(&token)).await;
    let wrong_field_type = app
        .post_review(
            &token,
            json!({"title": "t", "content": "c", "rating": "five", "camera_id": camera}),
        )
        .await;
    expect_problem(wrong_field_type, 422).await;
    let oversized = zocalo_testkit::Client::new(app.api.base.clone())
        .post("/api/reviews")
        .bearer_auth(&token)
        .json(&json!({"title": "t", "content": "x".repeat(3 * 1024 * 1024), "rating": 3, "camera_id": camera}))
        .send()
        .await
        .unwrap();
    expect_problem(oversized, 413).await;

    // Hostile text is stored and searched as text.
    let hostile = "'); DROP TABLE reviews; -- \" * : NEAR( OR";
    let id = app.review(camera, hostile, hostile, 3).await;
    for q in [hostile, "\"", "*", "a:b", "(", "NOT", "' OR 1=1 --"] {
        let response = app
            .api
            .get("/api/content")
            .query(&[("q", q)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "q={q}");
    }
    let found = app
        .api
        .get("/api/content")
        .query(&[("q", "DROP TABLE")])
        .send()
        .await
        .unwrap();
    let found: Value = found.json().await.unwrap();
    assert_eq!(found["items"][0]["id"], id.to_string());

    expect_problem(
        app.api
            .get("/api/content?camera_id=nope")
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    expect_problem(
        app.api.get("/api/content?limit=1000").send().await.unwrap(),
        422,
    )
    .await;
    expect_problem(
        app.api.get("/api/content?limit=-1").send().await.unwrap(),
        400,
    )
    .await;
    expect_problem(
        app.api.get("/api/content/not-an-id").send().await.unwrap(),
        404,
    )
    .await;
    expect_problem(app.api.get("/api/nothing").send().await.unwrap(), 404).await;
    expect_problem(app.api.put("/api/content").send().await.unwrap(), 405).await;
    let still_there = app
        .api
        .get(&format!("/api/content/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(still_there).await, id);
}

async fn operability_endpoints_answer(backend: Backend) {
    let app = spawn(backend).await;
    assert_eq!(app.api.get("/live").send().await.unwrap().status(), 200);
    assert_eq!(app.api.get("/ready").send().await.unwrap().status(), 200);
    app.content("").await;
    let metrics = app
        .api
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("route=\"/api/content\""), "{metrics}");
    let openapi = app.get_json("/openapi.json").await;
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    assert!(openapi["paths"]["/api/content"]["get"].is_object());
    let request_id = app
        .api
        .get("/live")
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(request_id.headers()["x-request-id"], "abc-123");
}
