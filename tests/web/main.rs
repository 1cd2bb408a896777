//! The web front end against a real `zocalo up`: pages render through the
//! gateway, forms work end to end, CSRF tokens are enforced, session
//! cookies are safe and refreshed, API errors become pages and field
//! messages.

mod cinema;
mod client;
mod stack;
mod videos;

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use client::{Visitor, value_after};
use stack::{ADMIN_EMAIL, ADMIN_PASSWORD, Stack};

const PASSWORD: &str = "correct horse 42";

fn assert_safe_cookie(line: &str) {
    for flag in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
        assert!(line.contains(flag), "{flag} missing from {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_through_the_gateway_with_safe_headers_and_cached_assets() {
    let stack = Stack::start();
    let mut visitor = Visitor::new(&stack.base);

    let home = visitor.get("/").await;
    assert_eq!(home.status, 200);
    assert!(home.content_type.starts_with("text/html"));
    home.assert_contains("<h1>Welcome to Zócalo</h1>");
    home.assert_contains(r#"href="/reviews""#);
    home.assert_contains(r#"href="/books""#);
    assert_safe_cookie(home.set_cookie("zocalo_csrf").expect("a CSRF cookie"));

    for (path, heading) in [
        ("/reviews", "<h1>Reviews</h1>"),
        ("/cameras", "<h1>Cameras</h1>"),
        ("/lenses", "<h1>Lenses</h1>"),
        ("/books", "<h1>Books</h1>"),
        ("/signin", "<h1>Sign in</h1>"),
        ("/signup", "<h1>Create an account</h1>"),
        ("/cart", "<h1>Your cart</h1>"),
    ] {
        let page = visitor.get(path).await;
        assert_eq!(page.status, 200, "{path}");
        page.assert_contains(heading);
    }

    // Pages that need an account send the visitor to sign in and back.
    for path in [
        "/account",
        "/orders",
        "/sales",
        "/books/new",
        "/reviews/new",
        "/checkout",
    ] {
        let page = visitor.get(path).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{path}");
        let expected = format!("/signin?next={}", path.replace('/', "%2F"));
        assert_eq!(page.location.as_deref(), Some(expected.as_str()), "{path}");
    }

    // Unknown pages and things are friendly 404 pages, APIs keep problems.
    for path in [
        "/no-such-page",
        "/reviews/0190a1b2-0000-7000-8000-000000000000",
        "/books/0190a1b2-0000-7000-8000-000000000000",
    ] {
        let page = visitor.get(path).await;
        assert_eq!(page.status, 404, "{path}");
        assert!(page.content_type.starts_with("text/html"), "{path}");
        page.assert_contains("Page not found");
    }
    let api = visitor.get("/api/books/not-a-uuid").await;
    assert!(api.content_type.starts_with("application/problem+json"));

    // Assets: hashed names, cached for a year; an unknown hash is 404.
    let css = value_after(&home.html, r#"rel="stylesheet" href=""#).unwrap();
    let js = value_after(&home.html, r#"<script src=""#).unwrap();
    for asset in [&css, &js] {
        let response = reqwest::get(stack.url(asset)).await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        assert_eq!(
            response.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
    }
    let stale = reqwest::get(stack.url("/assets/app.0000000000.css"))
        .await
        .unwrap();
    assert_eq!(stale.status(), 404);

    // HTML is personal: never stored by shared caches, scripts only ours.
    let response = reqwest::get(stack.url("/")).await.unwrap();
    assert_eq!(response.headers()["cache-control"], "private, no-store");
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("form-action 'self'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_in_and_out_with_http_only_cookies_and_refresh() {
    let stack = Stack::start();
    let mut ana = Visitor::new(&stack.base);

    let done = ana.sign_up("Ana Torres", "ana@example.com", PASSWORD).await;
    assert_eq!(done.location.as_deref(), Some("/"));
    assert_safe_cookie(done.set_cookie("zocalo_access").expect("access cookie"));
    assert_safe_cookie(done.set_cookie("zocalo_refresh").expect("refresh cookie"));
    let account = ana.get("/account").await;
    assert_eq!(account.status, 200);
    account.assert_contains("ana@example.com");
    account.assert_contains("Sign out");

    // The access token is gone (expired): the refresh token brings a new
    // pair, and parallel requests share one refresh instead of tripping
    // the reuse detection of auth.
    ana.cookies.remove("zocalo_access");
    let cookie = ana
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let http = reqwest::Client::new();
    let parallel = (0..4).map(|_| {
        http.get(stack.url("/account"))
            .header("cookie", &cookie)
            .send()
    });
    for response in futures_util::future::join_all(parallel).await {
        let response = response.unwrap();
        assert_eq!(
            response.status(),
            200,
            "every parallel request stays signed in"
        );
    }
    let refreshed = ana.get("/account").await;
    assert_eq!(refreshed.status, 200);
    assert_safe_cookie(
        refreshed
            .set_cookie("zocalo_access")
            .expect("a new access token"),
    );
    assert_eq!(ana.get("/account").await.status, 200, "the new pair works");

    // Signing out revokes the refresh token and clears both cookies.
    let home = ana.get("/").await;
    let out = ana.submit("/signout", &home, &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(
        out.set_cookie("zocalo_access")
            .unwrap()
            .contains("Max-Age=0")
    );
    assert!(
        out.set_cookie("zocalo_refresh")
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(ana.get("/account").await.status, StatusCode::SEE_OTHER);

    // Wrong password: the form says so; the right one signs in.
    let form = ana.get("/signin").await;
    let wrong = ana
        .submit(
            "/signin",
            &form,
            &[("email", "ana@example.com"), ("password", "not it at all")],
        )
        .await;
    assert_eq!(wrong.status, 200);
    wrong.assert_contains("Wrong email or password.");
    assert!(wrong.set_cookie("zocalo_access").is_none());
    let back = ana
        .submit(
            "/signin",
            &wrong,
            &[
                ("email", "ana@example.com"),
                ("password", PASSWORD),
                ("next", "/orders"),
            ],
        )
        .await;
    assert_eq!(back.location.as_deref(), Some("/orders"));
    // Only local paths are followed after sign-in.
    let mut eve = Visitor::new(&stack.base);
    let form = eve.get("/signin?next=//evil.example").await;
    let done = eve
        .submit(
            "/signin",
            &form,
            &[
                ("email", "ana@example.com"),
                ("password", PASSWORD),
                ("next", "//evil.example"),
            ],
        )
        .await;
    assert_eq!(done.location.as_deref(), Some("/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_a_matching_csrf_token_are_refused() {
    let stack = Stack::start();
    let mut mallory = Visitor::new(&stack.base);
    let mut victim = Visitor::new(&stack.base);
    victim
        .sign_up("Victim", "victim@example.com", PASSWORD)
        .await;
    let victim_page = victim.get("/books").await;
    let attacker_page = mallory.get("/signin").await;

    let book = [
        ("title", "Forged"),
        ("author", "Nobody"),
        ("isbn", "9780142437889"),
        ("condition", "good"),
        ("amount", "1.00"),
        ("currency", "USD"),
        ("stock", "1"),
        ("description", ""),
    ];
    // No token at all.
    let none = victim.post("/books/new", &book).await;
    assert_eq!(none.status, 403);
    none.assert_contains("This form has expired");
    // A token made for another browser's cookie.
    let token = client::csrf_of(&attacker_page.html);
    let mut forged = vec![("csrf", token.as_str())];
    forged.extend_from_slice(&book);
    assert_eq!(victim.post("/books/new", &forged).await.status, 403);
    // A token without its cookie.
    let token = client::csrf_of(&victim_page.html);
    let mut stripped = Visitor::new(&stack.base);
    stripped.cookies = victim.cookies.clone();
    stripped.cookies.remove("zocalo_csrf");
    let mut form = vec![("csrf", token.as_str())];
    form.extend_from_slice(&book);
    assert_eq!(stripped.post("/books/new", &form).await.status, 403);
    // Sign-in is protected too (login CSRF).
    let signin = mallory
        .post(
            "/signin",
            &[("email", "victim@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(signin.status, 403);

    // Nothing was listed; the genuine form works.
    let listed: serde_json::Value = reqwest::get(stack.url("/api/books"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 0);
    let sell = victim.get("/books/new").await;
    let done = victim.submit("/books/new", &sell, &book).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.html);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_field_errors_show_next_to_their_fields() {
    let stack = Stack::start();
    let mut ana = Visitor::new(&stack.base);

    let form = ana.get("/signup").await;
    let short = ana
        .submit(
            "/signup",
            &form,
            &[
                ("name", "Ana"),
                ("email", "not-an-email"),
                ("password", "short"),
            ],
        )
        .await;
    assert_eq!(short.status, 200);
    short.assert_contains(r#"id="e-password""#);
    short.assert_contains(r#"id="e-email""#);
    short.assert_contains(r#"aria-invalid="true""#);
    short.assert_contains(r#"value="Ana""#);

    ana.sign_up("Ana", "ana@example.com", PASSWORD).await;
    let mut twin = Visitor::new(&stack.base);
    let form = twin.get("/signup").await;
    let taken = twin
        .submit(
            "/signup",
            &form,
            &[
                ("name", "Ana"),
                ("email", "ana@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(taken.status, 200);
    taken.assert_contains("an account with this email already exists");

    let sell = ana.get("/books/new").await;
    let bad = ana
        .submit(
            "/books/new",
            &sell,
            &[
                ("title", "Rayuela"),
                ("author", "Julio Cortázar"),
                ("isbn", "9780142437880"),
                ("condition", "good"),
                ("amount", "0.00"),
                ("currency", "USD"),
                ("stock", "1"),
                ("description", ""),
            ],
        )
        .await;
    assert_eq!(bad.status, 200);
    bad.assert_contains(r#"id="e-isbn""#);
    bad.assert_contains(r#"id="e-amount""#);
    bad.assert_contains(r#"value="Rayuela""#);

    let catalog = ana.get("/books?min_price=cheap").await;
    assert_eq!(catalog.status, 200);
    catalog.assert_contains(r#"id="e-min_price""#);
}

/// An admin makes Ana an editor; she previews and publishes a review that
/// anyone can then find and read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_previews_and_publishes_a_review_that_readers_find() {
    let stack = Stack::start();
    let admin_token = stack.api_token(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let camera = stack.camera(&admin_token, "Fujifilm", "X-T5").await;
    let mut ana = Visitor::new(&stack.base);
    ana.sign_up("Ana Torres", "ana@example.com", PASSWORD).await;
    assert_eq!(
        ana.get("/reviews/new").await.status,
        403,
        "not an editor yet"
    );

    let mut admin = Visitor::new(&stack.base);
    admin.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let people = admin.get("/admin/users").await;
    assert_eq!(people.status, 200);
    let marker = r#"<form method="post" action="/admin/users/"#;
    let start = people.html.find("ana@example.com").unwrap();
    let ana_id = value_after(&people.html[start..], marker).unwrap();
    let ana_id = ana_id.trim_end_matches("/roles").to_owned();
    let granted = admin
        .submit(
            &format!("/admin/users/{ana_id}/roles"),
            &people,
            &[("role", "editor"), ("change", "grant")],
        )
        .await;
    assert_eq!(granted.status, StatusCode::SEE_OTHER);
    assert_eq!(ana.get("/admin/users").await.status, 403, "only admins");

    // New roles come with the next token.
    ana.sign_in("ana@example.com", PASSWORD).await;
    let editor = ana.get("/reviews/new").await;
    assert_eq!(editor.status, 200);
    editor.assert_contains("Fujifilm X-T5");
    let key = value_after(&editor.html, r#"name="key" value=""#).unwrap();
    let target = format!("camera:{camera}");
    let fields = [
        ("key", key.as_str()),
        ("target", target.as_str()),
        ("title", "A joyful little camera"),
        ("rating", "4"),
        (
            "content",
            "Dials everywhere.\n\nThe film simulations are lovely.",
        ),
    ];
    let mut preview_fields = fields.to_vec();
    preview_fields.push(("action", "preview"));
    let preview = ana.submit("/reviews/new", &editor, &preview_fields).await;
    assert_eq!(preview.status, 200);
    preview.assert_contains("<h2 id=\"preview-title\">Preview</h2>");
    preview.assert_contains("<p>The film simulations are lovely.</p>");
    let none: serde_json::Value = reqwest::get(stack.url("/api/content"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        none["items"].as_array().unwrap().len(),
        0,
        "a preview saves nothing"
    );

    let mut publish_fields = fields.to_vec();
    publish_fields.push(("action", "publish"));
    let published = ana.submit("/reviews/new", &preview, &publish_fields).await;
    assert_eq!(
        published.status,
        StatusCode::SEE_OTHER,
        "{}",
        published.html
    );
    let review_path = published.location.unwrap();
    // Publishing the same form twice creates one review.
    let again = ana.submit("/reviews/new", &preview, &publish_fields).await;
    assert_eq!(again.location.as_deref(), Some(review_path.as_str()));

    let mut reader = Visitor::new(&stack.base);
    let found = reader.get("/reviews?q=simulations").await;
    found.assert_contains("A joyful little camera");
    let missing = reader.get("/reviews?q=rangefinder").await;
    missing.assert_contains("No reviews found.");
    let review = reader.get(&review_path).await;
    assert_eq!(review.status, 200);
    review.assert_contains("<p>Dials everywhere.</p>");
    review.assert_contains(r#"aria-label="4 out of 5""#);
    let camera_page = reader.get(&format!("/cameras/{camera}")).await;
    camera_page.assert_contains("A joyful little camera");

    // Editing goes through the same preview-and-save form.
    let edit = ana.get(&format!("{review_path}/edit")).await;
    assert_eq!(edit.status, 200);
    let saved = ana
        .submit(
            &format!("{review_path}/edit"),
            &edit,
            &[
                ("title", "A joyful camera"),
                ("rating", "5"),
                ("content", "Dials everywhere."),
                ("action", "publish"),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.html);
    // The editor reads her change at once (anonymous readers may see the
    // cached version for a few seconds).
    ana.get(&review_path)
        .await
        .assert_contains("A joyful camera");

    // Compare needs two; with two it shows them side by side.
    let other = stack.camera(&admin_token, "Sony", "A7 IV").await;
    let one = reader.get(&format!("/compare?camera={camera}")).await;
    assert_eq!(one.status, StatusCode::SEE_OTHER);
    let both = reader
        .get(&format!("/compare?camera={camera}&camera={other}"))
        .await;
    assert_eq!(both.status, 200);
    both.assert_contains("Sony A7 IV");
    both.assert_contains("5.0 / 5 (1 review)");
}

/// Bea sells a book; Carl buys it through cart and checkout and watches
/// the order arrive; Bea sees the sale; nobody else sees the order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_book_is_sold_bought_and_delivered_through_the_pages() {
    let stack = Stack::start();
    let mut bea = Visitor::new(&stack.base);
    bea.sign_up("Bea", "bea@example.com", PASSWORD).await;
    let sell = bea.get("/books/new").await;
    let listed = bea
        .submit(
            "/books/new",
            &sell,
            &[
                ("title", "Pedro Páramo"),
                ("author", "Juan Rulfo"),
                ("isbn", "9780142437889"),
                ("condition", "like_new"),
                ("amount", "12.50"),
                ("currency", "usd"),
                ("stock", "2"),
                ("description", "Barely read."),
            ],
        )
        .await;
    assert_eq!(listed.status, StatusCode::SEE_OTHER, "{}", listed.html);
    let book_path = listed.location.unwrap();
    bea.get(&book_path)
        .await
        .assert_contains("one of your listings");

    let mut carl = Visitor::new(&stack.base);
    carl.sign_up("Carl", "carl@example.com", PASSWORD).await;
    let found = carl
        .get("/books?q=paramo&condition=like_new&max_price=20")
        .await;
    found.assert_contains("Pedro Páramo");
    let none = carl.get("/books?author=borges").await;
    none.assert_contains("No books found.");
    let book = carl.get(&book_path).await;
    book.assert_contains("12.50 USD");
    let book_id = book_path.trim_start_matches("/books/");
    let added = carl
        .submit("/cart", &book, &[("book_id", book_id), ("quantity", "1")])
        .await;
    assert_eq!(added.location.as_deref(), Some("/cart"));
    let cart = carl.get("/cart").await;
    cart.assert_contains("Pedro Páramo");
    cart.assert_contains("<strong>12.50 USD</strong>");

    let checkout = carl.get("/checkout").await;
    let key = value_after(&checkout.html, r#"name="key" value=""#).unwrap();
    let bad_card = carl
        .submit(
            "/checkout",
            &checkout,
            &[
                ("key", key.as_str()),
                ("shipping_address", "Av. Juárez 10, Ciudad de México"),
                ("provider", "dhl"),
                ("card", "1234"),
            ],
        )
        .await;
    assert_eq!(bad_card.status, 200);
    bad_card.assert_contains(r#"id="e-card""#);
    let placed = carl
        .submit(
            "/checkout",
            &bad_card,
            &[
                ("key", key.as_str()),
                ("shipping_address", "Av. Juárez 10, Ciudad de México"),
                ("provider", "dhl"),
                ("card", "4242 4242 4242 4242"),
            ],
        )
        .await;
    assert_eq!(placed.status, StatusCode::SEE_OTHER, "{}", placed.html);
    let order_path = placed.location.clone().unwrap();
    assert!(
        placed
            .set_cookie("zocalo_cart")
            .unwrap()
            .contains("Max-Age=0"),
        "cart emptied"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = carl.get(&format!("{order_path}/status")).await;
        let state: serde_json::Value = serde_json::from_str(&status.html).unwrap();
        if state["status"] == "delivered" {
            assert_eq!(state["final"], true);
            break;
        }
        assert_ne!(state["status"], "failed", "{state}");
        assert!(Instant::now() < deadline, "not delivered: {state}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let order = carl.get(&order_path).await;
    order.assert_contains("Delivered");
    order.assert_contains("Pedro Páramo");
    carl.get("/orders").await.assert_contains(&order_path);

    // Bea's sales come from the order.paid events.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sales = bea.get("/sales").await;
        if sales.html.contains("Pedro Páramo") {
            sales.assert_contains("12.50 USD");
            break;
        }
        assert!(Instant::now() < deadline, "sale never shown");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Someone else's order is not found, not forbidden.
    assert_eq!(bea.get(&order_path).await.status, 404);
}
