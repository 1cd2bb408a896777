//! The public listing API: publishing, editing, browsing, caching, and bad
//! input that must never become a 500.

use std::collections::HashSet;

use serde_json::{Value, json};
use uuid::Uuid;
use zocalo_testkit::{Backend, backend_tests, expect_problem};

use crate::helpers::{ISBN, fields, id_of, listing, one_item, spawn, titles};

backend_tests!(
    sellers_list_books_and_anyone_reads_them,
    invalid_listings_report_every_field,
    sellers_edit_and_withdraw_only_their_own_books,
    search_and_filters_narrow_the_listing,
    every_sort_order_pages_through_all_books_once,
    public_reads_are_cacheable,
    bad_input_gets_problem_json_never_500,
    operability_endpoints_answer,
);

async fn sellers_list_books_and_anyone_reads_them(backend: Backend) {
    let app = spawn(backend).await;
    let response = app
        .post_book(&app.seller.1, &listing("Dune", "Frank Herbert", "12.5", 3))
        .await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/books/{id}"));
    assert_eq!(created["seller_id"], app.seller.0.to_string());
    assert_eq!(created["isbn"], "9780306406157", "stored without hyphens");
    assert_eq!(
        created["price"],
        json!({"amount": "12.50", "currency": "USD"})
    );
    assert_eq!(created["stock"], 3);
    assert_eq!(created["status"], "active");
    assert_eq!(created["condition"], "good");

    let public = app.get_json(&format!("/api/books/{id}")).await;
    assert_eq!(public, created);
    let page = app.books("").await;
    assert_eq!(page["items"][0], created);
    assert!(page["next_cursor"].is_null());

    let x_isbn = json!({"title": "Old", "author": "A", "isbn": "0-8044-2957-x",
        "condition": "acceptable", "price": {"amount": "7", "currency": "EUR"}, "stock": 0});
    let old = app
        .get_json(&format!("/api/books/{}", app.book_with(&x_isbn).await))
        .await;
    assert_eq!(old["isbn"], "080442957X");
    assert_eq!(old["price"]["amount"], "7.00");
    assert_eq!(old["description"], "");

    let body = listing("Emma", "Jane Austen", "5.00", 1);
    expect_problem(
        app.api.post("/api/books").json(&body).send().await.unwrap(),
        401,
    )
    .await;
    let expired = app.tokens.token_with(
        &Uuid::now_v7().to_string(),
        &[],
        zocalo_testkit::AUDIENCE,
        -120,
    );
    expect_problem(app.post_book(&expired, &body).await, 401).await;
    // Listings belong to people; a service client cannot be a seller.
    expect_problem(app.post_book(&app.service, &body).await, 403).await;
    let (_, another_user) = app.user(&[]);
    assert_eq!(app.post_book(&another_user, &body).await.status(), 201);
}

async fn invalid_listings_report_every_field(backend: Backend) {
    let app = spawn(backend).await;
    let bad = json!({
        "title": "  ", "author": "Ok", "isbn": "978-0-306-40615-8", "condition": "mint",
        "price": {"amount": "1.234", "currency": "USD"}, "stock": -1
    });
    let problem = expect_problem(app.post_book(&app.seller.1, &bad).await, 422).await;
    assert_eq!(
        fields(&problem),
        ["title", "isbn", "condition", "price.amount", "stock"]
    );

    let float_price = json!({
        "title": "T", "author": "A", "isbn": "0306406153", "condition": "new",
        "price": {"amount": 12.5, "currency": "usd"}, "stock": 10001
    });
    let problem = expect_problem(app.post_book(&app.seller.1, &float_price).await, 422).await;
    assert_eq!(
        fields(&problem),
        ["isbn", "price.amount", "price.currency", "stock"]
    );

    let problem = expect_problem(app.post_book(&app.seller.1, &json!({})).await, 422).await;
    assert_eq!(
        fields(&problem),
        ["title", "author", "isbn", "condition", "price", "stock"]
    );

    for (amount, field) in [
        ("0", "price.amount"),
        ("1000000.01", "price.amount"),
        ("-3", "price.amount"),
        ("1e2", "price.amount"),
    ] {
        let mut body = listing("T", "A", amount, 1);
        body["isbn"] = json!(ISBN);
        let problem = expect_problem(app.post_book(&app.seller.1, &body).await, 422).await;
        assert_eq!(fields(&problem), [field], "amount {amount}");
    }
    let mut max = listing("Rare", "A", "1000000.00", 1);
    max["stock"] = json!(10000);
    assert_eq!(app.post_book(&app.seller.1, &max).await.status(), 201);
    assert_eq!(app.books("").await["items"].as_array().unwrap().len(), 1);
}

async fn sellers_edit_and_withdraw_only_their_own_books(backend: Backend) {
    let app = spawn(backend).await;
    let id = app.book("Ulysses", "20.00", 2).await;
    let path = format!("/api/books/{id}");
    let before = app.get_json(&path).await;

    let patched = app
        .api
        .patch(&path)
        .bearer_auth(&app.seller.1)
        .json(&json!({"price": {"amount": "18.99", "currency": "EUR"}, "stock": 5, "title": "Ulysses (1922)", "condition": "like_new"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(
        patched["price"],
        json!({"amount": "18.99", "currency": "EUR"})
    );
    assert_eq!(patched["stock"], 5);
    assert_eq!(patched["condition"], "like_new");
    assert_eq!(patched["author"], before["author"]);
    assert_ne!(patched["updated_at"], before["updated_at"]);
    assert_eq!(patched["created_at"], before["created_at"]);

    let (_, stranger) = app.user(&[]);
    let (_, admin) = app.user(&["admin"]);
    for token in [&stranger, &admin] {
        let theirs = app
            .api
            .patch(&path)
            .bearer_auth(token)
            .json(&json!({"stock": 0}))
            .send()
            .await
            .unwrap();
        expect_problem(theirs, 404).await;
        let theirs = app
            .api
            .delete(&path)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        expect_problem(theirs, 404).await;
    }
    let missing = app
        .api
        .patch(&format!("/api/books/{}", Uuid::now_v7()))
        .bearer_auth(&app.seller.1)
        .json(&json!({"stock": 1}))
        .send()
        .await
        .unwrap();
    expect_problem(missing, 404).await;
    for bad in [
        json!({"stock": -1}),
        json!({"isbn": "0306406152"}),
        json!({}),
        json!({"price": {"amount": "1.001", "currency": "EUR"}}),
    ] {
        let invalid = app
            .api
            .patch(&path)
            .bearer_auth(&app.seller.1)
            .json(&bad)
            .send()
            .await
            .unwrap();
        expect_problem(invalid, 422).await;
    }
    assert_eq!(app.stock(id).await, 5, "refused edits changed nothing");

    let withdrawn = app
        .api
        .delete(&path)
        .bearer_auth(&app.seller.1)
        .send()
        .await
        .unwrap();
    assert_eq!(withdrawn.status(), 204);
    let again = app
        .api
        .delete(&path)
        .bearer_auth(&app.seller.1)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 204, "withdrawing twice is harmless");
    expect_problem(app.api.get(&path).send().await.unwrap(), 404).await;
    expect_problem(
        app.api
            .get(&path)
            .bearer_auth(&stranger)
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    let own = app
        .api
        .get(&path)
        .bearer_auth(&app.seller.1)
        .send()
        .await
        .unwrap();
    assert_eq!(
        own.status(),
        200,
        "the seller still sees a withdrawn listing"
    );
    assert!(
        own.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("private")
    );
    let own: Value = own.json().await.unwrap();
    assert_eq!(own["status"], "withdrawn");
    assert!(app.books("").await["items"].as_array().unwrap().is_empty());
    assert!(
        app.books(&format!("?seller_id={}", app.seller.0)).await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let late_edit = app
        .api
        .patch(&path)
        .bearer_auth(&app.seller.1)
        .json(&json!({"stock": 9}))
        .send()
        .await
        .unwrap();
    expect_problem(late_edit, 409).await;
    let reserve = app.reserve(&one_item(Uuid::now_v7(), id, 1)).await;
    let problem = expect_problem(reserve, 422).await;
    assert_eq!(fields(&problem), ["items[0].book_id"]);
}

async fn search_and_filters_narrow_the_listing(backend: Backend) {
    let app = spawn(backend).await;
    let hobbit = json!({"title": "The Hobbit", "author": "J.R.R. Tolkien", "isbn": "9780261102217",
        "description": "A wizard and thirteen dwarves.", "condition": "good",
        "price": {"amount": "9.99", "currency": "USD"}, "stock": 2});
    let solitude = json!({"title": "One Hundred Years of Solitude", "author": "Gabriel García Márquez",
        "isbn": "978-0-06-088328-7", "description": "Macondo, over generations.", "condition": "like_new",
        "price": {"amount": "15.00", "currency": "USD"}, "stock": 1});
    let dune = json!({"title": "Dune", "author": "Frank Herbert", "isbn": ISBN,
        "description": "Spice, sand and wizards of a sort.", "condition": "new",
        "price": {"amount": "25.00", "currency": "EUR"}, "stock": 4});
    app.book_with(&hobbit).await;
    app.book_with(&solitude).await;
    let (other_seller, other_token) = app.user(&[]);
    let response = app.post_book(&other_token, &dune).await;
    assert_eq!(response.status(), 201);
    id_of(response).await;

    let find = |query: &str| {
        let query = query.to_owned();
        let app = &app;
        async move {
            let mut found = titles(&app.books(&query).await);
            found.sort();
            found
        }
    };
    assert_eq!(
        find("?q=wizard").await,
        ["Dune", "The Hobbit"],
        "stemmed, over descriptions"
    );
    assert_eq!(find("?q=TOLKIEN").await, ["The Hobbit"], "over authors");
    assert_eq!(
        find("?q=solitude%20years").await,
        ["One Hundred Years of Solitude"]
    );
    assert!(
        find("?q=solitude%20spice").await.is_empty(),
        "all words must match"
    );
    assert_eq!(
        find("?author=tolk").await,
        ["The Hobbit"],
        "author contains"
    );
    assert_eq!(
        find("?author=GARC%C3%8DA").await,
        ["One Hundred Years of Solitude"],
        "case folded beyond ASCII"
    );
    assert_eq!(
        find("?isbn=0-06-088328-6").await.len(),
        0,
        "an ISBN-10 is not its ISBN-13"
    );
    assert_eq!(
        find("?isbn=9780060883287").await,
        ["One Hundred Years of Solitude"]
    );
    assert_eq!(find(&format!("?isbn={ISBN}")).await, ["Dune"]);
    assert_eq!(find("?condition=new").await, ["Dune"]);
    assert_eq!(
        find("?min_price=10&max_price=20").await,
        ["One Hundred Years of Solitude"]
    );
    assert_eq!(
        find("?max_price=9.99").await,
        ["The Hobbit"],
        "bounds are inclusive"
    );
    assert_eq!(find("?currency=EUR").await, ["Dune"]);
    assert_eq!(find(&format!("?seller_id={other_seller}")).await, ["Dune"]);
    assert_eq!(
        find(&format!("?seller_id={}&q=wizard", app.seller.0)).await,
        ["The Hobbit"],
        "filters combine"
    );
    assert_eq!(
        find("?author=&q=%20").await.len(),
        3,
        "blank filters are ignored"
    );

    let problem = expect_problem(
        app.api
            .get("/api/books?condition=mint&min_price=abc&sort=cheap&isbn=123&currency=usd&limit=0")
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(
        fields(&problem),
        [
            "isbn",
            "condition",
            "min_price",
            "currency",
            "sort",
            "limit"
        ]
    );
    let problem = expect_problem(
        app.api
            .get("/api/books?min_price=5&max_price=4")
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(fields(&problem), ["max_price"]);
}

async fn every_sort_order_pages_through_all_books_once(backend: Backend) {
    let app = spawn(backend).await;
    let mut listed = Vec::new();
    for i in 0..23u32 {
        // Several books share each price, so ties must be broken by id.
        let amount = format!("{}.{:02}", 1 + i % 5, (i * 7) % 3);
        let id = app.book(&format!("book {i:02}"), &amount, 1).await;
        let cents = (1 + i % 5) * 100 + (i * 7) % 3;
        listed.push((cents, id));
    }
    let mut price_asc = listed.clone();
    price_asc.sort();
    let mut price_desc = price_asc.clone();
    price_desc.reverse();
    let mut newest: Vec<Uuid> = listed.iter().map(|(_, id)| *id).collect();
    newest.reverse();
    let ids = |pairs: Vec<(u32, Uuid)>| pairs.into_iter().map(|(_, id)| id).collect::<Vec<_>>();

    for (sort, expected) in [
        ("newest", newest),
        ("price_asc", ids(price_asc)),
        ("price_desc", ids(price_desc)),
    ] {
        let mut seen: Vec<Uuid> = Vec::new();
        let mut query = format!("?sort={sort}&limit=4");
        for _ in 0..10 {
            let page = app.books(&query).await;
            let items = page["items"].as_array().unwrap();
            assert!(items.len() <= 4);
            seen.extend(
                items
                    .iter()
                    .map(|b| b["id"].as_str().unwrap().parse::<Uuid>().unwrap()),
            );
            match page["next_cursor"].as_str() {
                Some(cursor) => query = format!("?sort={sort}&limit=4&cursor={cursor}"),
                None => break,
            }
        }
        let distinct: HashSet<_> = seen.iter().collect();
        assert_eq!(distinct.len(), seen.len(), "{sort}: no book twice");
        assert_eq!(seen, expected, "{sort}: every book, in order");
    }

    let first = app.books("?sort=price_asc&limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let problem = expect_problem(
        app.api
            .get(&format!("/api/books?sort=price_desc&cursor={cursor}"))
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(fields(&problem), ["cursor"]);
    for garbage in ["abc", "%22%3B--", "bjox"] {
        let response = app
            .api
            .get(&format!("/api/books?cursor={garbage}"))
            .send()
            .await
            .unwrap();
        expect_problem(response, 422).await;
    }
    assert_eq!(
        app.books("").await["items"].as_array().unwrap().len(),
        20,
        "default limit"
    );
}

async fn public_reads_are_cacheable(backend: Backend) {
    let app = spawn(backend).await;
    let id = app.book("Middlemarch", "11.00", 4).await;
    for path in ["/api/books".to_owned(), format!("/api/books/{id}")] {
        let first = app.api.get(&path).send().await.unwrap();
        assert!(
            first.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("max-age=10")
        );
        let etag = first.headers()["etag"].to_str().unwrap().to_owned();
        let revalidated = app
            .api
            .get(&path)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(revalidated.status(), 304, "{path}");
        assert!(revalidated.text().await.unwrap().is_empty());
    }
    let etag = app
        .api
        .get(&format!("/api/books/{id}"))
        .send()
        .await
        .unwrap()
        .headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    // A sale changes the stock, hence the body, hence the ETag.
    assert_eq!(
        app.reserve(&one_item(Uuid::now_v7(), id, 1)).await.status(),
        201
    );
    let changed = app
        .api
        .get(&format!("/api/books/{id}"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let internal = app.reservation(Uuid::now_v7()).await;
    assert_eq!(internal.headers()["cache-control"], "no-store");
}

async fn bad_input_gets_problem_json_never_500(backend: Backend) {
    let app = spawn(backend).await;
    let token = app.seller.1.clone();
    zocalo_testkit::assert_rejects_malformed_json(&app.api, "/api/books", Some(&token)).await;
    let mut wrong_field = listing("T", "A", "1.00", 1);
    wrong_field["stock"] = json!("many");
    expect_problem(app.post_book(&token, &wrong_field).await, 422).await;
    let mut fractional = listing("T", "A", "1.00", 1);
    fractional["stock"] = json!(1.5);
    expect_problem(app.post_book(&token, &fractional).await, 422).await;

    // Hostile text is stored and searched as text.
    let hostile = "'); DROP TABLE books; -- \" * : NEAR( OR title:x ^ AND NOT";
    let id = app.book_with(&listing(hostile, hostile, "3.00", 1)).await;
    for q in [
        hostile,
        "\"",
        "*",
        "a:b",
        "(",
        ")",
        "NOT",
        "' OR 1=1 --",
        "-",
        "^",
        "a AND",
        "NEAR(a b)",
        "%",
        "_",
        "\\",
        "\u{0}",
    ] {
        for param in ["q", "author", "isbn"] {
            let response = app
                .api
                .get("/api/books")
                .query(&[(param, q)])
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            assert!(
                status == 200 || status == 422,
                "{param}={q:?} gave {status}"
            );
        }
    }
    let found = app
        .api
        .get("/api/books")
        .query(&[("q", "DROP TABLE")])
        .send()
        .await
        .unwrap();
    let found: Value = found.json().await.unwrap();
    assert_eq!(found["items"][0]["id"], id.to_string());
    let by_author = app
        .api
        .get("/api/books")
        .query(&[("author", "drop table books; --")])
        .send()
        .await
        .unwrap();
    let by_author: Value = by_author.json().await.unwrap();
    assert_eq!(by_author["items"][0]["id"], id.to_string());

    for (path, status) in [
        ("/api/books?seller_id=nope", 400),
        ("/api/books?limit=1000", 422),
        ("/api/books?limit=-1", 400),
        ("/api/books?min_price=1.001", 422),
        ("/api/books/not-an-id", 404),
        ("/api/nothing", 404),
    ] {
        expect_problem(app.api.get(path).send().await.unwrap(), status).await;
    }
    expect_problem(app.api.put("/api/books").send().await.unwrap(), 405).await;
    let long_q = "x".repeat(201);
    expect_problem(
        app.api
            .get("/api/books")
            .query(&[("q", &long_q)])
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;

    let internal_malformed = app
        .api
        .post("/internal/reservations")
        .bearer_auth(&app.service)
        .header("content-type", "application/json")
        .body("[")
        .send()
        .await
        .unwrap();
    expect_problem(internal_malformed, 400).await;
    let bad_quantity = app
        .reserve(
            &json!({"reservation_id": Uuid::now_v7(), "items": [{"book_id": id, "quantity": "x"}]}),
        )
        .await;
    expect_problem(bad_quantity, 422).await;
    let bad_id = app
        .reserve(&json!({"reservation_id": "order-1", "items": [{"book_id": id, "quantity": 1}]}))
        .await;
    expect_problem(bad_id, 422).await;
    let huge = app
        .reserve(&json!({"reservation_id": Uuid::now_v7(), "items": [{"book_id": id, "quantity": i64::MAX}], "ttl_secs": -5}))
        .await;
    assert_eq!(
        fields(&expect_problem(huge, 422).await),
        ["items[0].quantity", "ttl_secs"]
    );
    let not_an_id = app
        .api
        .post("/internal/reservations/nope/commit")
        .bearer_auth(&app.service)
        .send()
        .await
        .unwrap();
    expect_problem(not_an_id, 404).await;
    assert_eq!(
        app.get_json(&format!("/api/books/{id}")).await["title"],
        hostile
    );
}

async fn operability_endpoints_answer(backend: Backend) {
    let app = spawn(backend).await;
    assert_eq!(app.api.get("/live").send().await.unwrap().status(), 200);
    assert_eq!(app.api.get("/ready").send().await.unwrap().status(), 200);
    let book = app.book("Metrics", "1.00", 1).await;
    assert_eq!(
        app.reserve(&one_item(Uuid::now_v7(), book, 1))
            .await
            .status(),
        201
    );
    app.books("").await;
    let metrics = app
        .api
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("route=\"/api/books\""), "{metrics}");
    assert!(metrics.contains("catalog_reservations_total"), "{metrics}");
    let openapi = app.get_json("/openapi.json").await;
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    assert!(openapi["paths"]["/api/books"]["get"].is_object());
    assert!(openapi["paths"]["/internal/reservations"]["post"].is_object());
    assert!(openapi["paths"]["/internal/reservations/{id}/return"]["post"].is_object());
    assert!(openapi["components"]["schemas"]["Book"].is_object());
}
