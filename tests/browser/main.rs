//! Browser tests: real Chromium (headless, through chromedriver) against a
//! real `zocalo up`, at a phone and a desktop viewport. Each test signs up,
//! signs in, goes through the reviews flow (an admin grants the editor
//! role; the editor previews and publishes a review; readers browse,
//! search and read) and the book store flow (a seller lists a book, a buyer
//! buys it through cart and checkout and watches the live status reach
//! "Delivered", the seller sees the sale), plus comparison, a forbidden
//! and a missing page. Every page visited is
//! screenshotted under `<target>/screenshots/` and checked with axe-core:
//! any `serious` or `critical` violation fails the test.
//!
//! Needs `chromedriver` and `chromium` (Debian packages of those names) and
//! axe-core's `axe.min.js` (`ZOCALO_TEST_AXE`, by default where `.ci/run`
//! installs it). Without them the tests say so and pass, except under CI
//! (`CI` set), where a missing tool fails them. Run them alone with
//! `cargo nextest run -p zocalo --test browser`.

#[path = "../web/stack.rs"]
mod stack;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use stack::{ADMIN_EMAIL, ADMIN_PASSWORD, MANAGER_PASSWORD, Stack};

const DEFAULT_AXE: &str = "/var/cache/zocalo/axe/node_modules/axe-core/axe.min.js";
const PASSWORD: &str = "correct horse 42";
/// How long a page or an element may take to appear.
const WAIT: Duration = Duration::from_secs(15);

struct Viewport {
    name: &'static str,
    width: u32,
    height: u32,
    mobile: bool,
}

const PHONE: Viewport = Viewport {
    name: "phone",
    width: 390,
    height: 844,
    mobile: true,
};
const DESKTOP: Viewport = Viewport {
    name: "desktop",
    width: 1366,
    height: 900,
    mobile: false,
};

/// The tools, or `None` (having said why) when they are missing outside CI.
fn tools() -> Option<(String, String)> {
    let driver =
        std::env::var("ZOCALO_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let axe_path = std::env::var("ZOCALO_TEST_AXE").unwrap_or_else(|_| DEFAULT_AXE.into());
    let has_driver = Command::new(&driver)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let axe = std::fs::read_to_string(&axe_path).ok();
    match (has_driver, axe) {
        (true, Some(axe)) => Some((driver, axe)),
        (has_driver, axe) => {
            let missing = format!(
                "browser tests need chromedriver (found: {has_driver}) and axe-core at {axe_path} (found: {})",
                axe.is_some()
            );
            assert!(std::env::var_os("CI").is_none(), "{missing}");
            eprintln!("{missing}: not run");
            None
        }
    }
}

/// A chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start(binary: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

/// Where screenshots go: `<target>/screenshots/`.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One browser session at one viewport, checking every page it shows.
struct Browser {
    client: Client,
    base: String,
    viewport: &'static Viewport,
    axe: String,
    shots: PathBuf,
    pages: usize,
}

impl Browser {
    async fn open(driver: &Driver, base: &str, viewport: &'static Viewport, axe: String) -> Self {
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={},{}", viewport.width, viewport.height),
        ];
        if let Ok(binary) = std::env::var("ZOCALO_TEST_CHROMIUM") {
            args.push(format!("--binary={binary}"));
        }
        // The device metrics make the viewport exactly the size asked for
        // (a window size would include the browser's own frame).
        let (ratio, mobile) = if viewport.mobile {
            (2.0, true)
        } else {
            (1.0, false)
        };
        let options = json!({
            "args": args,
            "mobileEmulation": {"deviceMetrics": {
                "width": viewport.width, "height": viewport.height,
                "pixelRatio": ratio, "touch": mobile, "mobile": mobile
            }}
        });
        let mut capabilities = fantoccini::wd::Capabilities::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .expect("a Chromium session");
        client
            .update_timeouts(TimeoutConfiguration::new(
                Some(Duration::from_secs(30)),
                Some(Duration::from_secs(30)),
                Some(Duration::ZERO),
            ))
            .await
            .unwrap();
        let shots = screenshot_dir();
        // Only this run's pages: an earlier run may have visited others.
        for old in std::fs::read_dir(&shots).unwrap().flatten() {
            if old
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("{}-", viewport.name))
            {
                let _ = std::fs::remove_file(old.path());
            }
        }
        Self {
            client,
            base: base.to_owned(),
            viewport,
            axe,
            shots,
            pages: 0,
        }
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    /// Wait until the address contains `part`: after a form is sent with
    /// GET to the page it is on, the old page's elements are still there
    /// for a moment, and one found then is gone when it is used.
    async fn url_contains(&self, part: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let url = self.client.current_url().await.unwrap();
            if url.as_str().contains(part) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the address never contained {part:?}; still {url}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until the page's `<h1>` contains `text`.
    async fn heading(&self, text: &str) {
        let xpath = format!("//h1[contains(., \"{text}\")]");
        if self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::XPath(&xpath))
            .await
            .is_err()
        {
            let url = self.client.current_url().await.unwrap();
            let source = self.client.source().await.unwrap_or_default();
            panic!("no <h1> with {text:?} at {url}:\n{source}");
        }
    }

    /// Screenshot the page and run axe-core on it: no serious or critical
    /// violation may remain.
    async fn check(&mut self, name: &str) {
        self.pages += 1;
        let png = self.client.screenshot().await.unwrap();
        let file = self.shots.join(format!(
            "{}-{:02}-{name}.png",
            self.viewport.name, self.pages
        ));
        std::fs::write(&file, png).unwrap();
        self.client.execute(&self.axe, vec![]).await.unwrap();
        let violations = self
            .client
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                axe.run(document, { resultTypes: ["violations"] })
                  .then(r => done(r.violations
                    .filter(v => v.impact === "serious" || v.impact === "critical")
                    .map(v => ({ id: v.id, impact: v.impact, help: v.help,
                                 nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ")) }))))
                  .catch(e => done([{ id: "axe-failed", help: String(e) }]));"#,
                vec![],
            )
            .await
            .unwrap();
        let url = self.client.current_url().await.unwrap();
        assert_eq!(
            violations,
            json!([]),
            "accessibility violations on {url} ({}, {name})",
            self.viewport.name
        );
    }

    async fn fill(&self, css: &str, value: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Follow the link whose text is exactly `text`, once the page has it.
    async fn link(&self, text: &str) {
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::LinkText(text))
            .await
            .unwrap_or_else(|e| panic!("link {text:?}: {e}"))
            .click()
            .await
            .unwrap();
    }

    async fn sign_up(&mut self, name: &str, email: &str) {
        self.goto("/").await;
        self.link("Sign up").await;
        self.heading("Create an account").await;
        self.check("sign-up").await;
        self.fill("#f-name", name).await;
        self.fill("#f-email", email).await;
        self.fill("#f-password", PASSWORD).await;
        self.click("form.stack button[type=submit]").await;
        self.heading("Welcome to Zócalo").await;
        self.signed_in_as(name).await;
    }

    async fn sign_in(&mut self, email: &str, password: &str, name: &str) {
        self.goto("/signin").await;
        self.heading("Sign in").await;
        self.fill("#f-email", email).await;
        self.fill("#f-password", password).await;
        self.click("form.stack button[type=submit]").await;
        self.heading("Welcome to Zócalo").await;
        self.signed_in_as(name).await;
    }

    async fn signed_in_as(&self, name: &str) {
        let account = self
            .client
            .find(Locator::Css("nav.account a[href='/account']"))
            .await
            .expect("the account link of a signed-in visitor");
        assert_eq!(account.text().await.unwrap(), name);
    }

    async fn sign_out(&self) {
        self.click("nav.account button[type=submit]").await;
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::LinkText("Sign in"))
            .await
            .unwrap();
    }

    /// Text of the element at `css`.
    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

async fn whole_flow(viewport: &'static Viewport) {
    let Some((driver_binary, axe)) = tools() else {
        return;
    };
    let stack = Stack::start();
    let admin_token = stack.api_token(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    stack.camera(&admin_token, "Fujifilm", "X-T5").await;
    stack.camera(&admin_token, "Sony", "A7 IV").await;
    let movie_title = format!("Amores perros ({})", viewport.name);
    let manager = format!("mara-{}@example.com", viewport.name);
    let (_, showtime) = stack.showtime(&manager, &movie_title).await;
    let driver = Driver::start(&driver_binary);
    let mut b = Browser::open(&driver, &stack.base, viewport, axe).await;
    let v = viewport.name;
    let (seller, seller_email) = (format!("Sol {v}"), format!("sol-{v}@example.com"));
    let (buyer, buyer_email) = (format!("Beto {v}"), format!("beto-{v}@example.com"));

    b.goto("/").await;
    b.heading("Welcome to Zócalo").await;
    b.check("home").await;

    // Sign up (lands signed in), sign out, sign in again.
    b.sign_up(&seller, &seller_email).await;
    b.check("home-signed-in").await;
    b.sign_out().await;
    b.link("Sign in").await;
    b.heading("Sign in").await;
    b.check("sign-in").await;
    b.sign_in(&seller_email, PASSWORD, &seller).await;
    b.goto("/account").await;
    b.heading("Your account").await;
    b.check("account").await;

    // Reviews: the admin makes the seller an editor.
    b.sign_out().await;
    b.sign_in(ADMIN_EMAIL, ADMIN_PASSWORD, "Administrator")
        .await;
    b.goto("/admin/users").await;
    b.heading("People and roles").await;
    b.check("admin-users").await;
    b.click(&format!("button[aria-label='Make editor: {seller}']"))
        .await;
    b.client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Css(&format!(
            "button[aria-label='Revoke editor: {seller}']"
        )))
        .await
        .unwrap();
    b.sign_out().await;
    b.sign_in(&seller_email, PASSWORD, &seller).await;

    // The editor writes a review, previews it, publishes it.
    b.goto("/reviews/new").await;
    b.heading("Write a review").await;
    b.check("review-editor").await;
    b.client
        .find(Locator::Css("#f-target"))
        .await
        .unwrap()
        .select_by_label("Fujifilm X-T5")
        .await
        .unwrap();
    let title = format!("Dials for days ({v})");
    b.fill("#f-title", &title).await;
    b.click("input[name=rating][value='4']").await;
    b.fill(
        "#f-content",
        "Every setting has its own dial.\n\nThe film simulations make editing optional.",
    )
    .await;
    b.click("button[value=preview]").await;
    b.client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("preview-title"))
        .await
        .unwrap();
    b.check("review-preview").await;
    b.click("button[value=publish]").await;
    b.heading(&title).await;
    b.check("review").await;

    // Readers browse, search and read.
    b.goto("/reviews").await;
    b.heading("Reviews").await;
    b.check("reviews").await;
    b.fill("#q", "simulations").await;
    b.click("form.filters button[type=submit]").await;
    b.url_contains("q=simulations").await;
    b.heading("matching").await;
    b.check("reviews-search").await;
    b.link(&title).await;
    b.heading(&title).await;
    b.goto("/cameras").await;
    b.heading("Cameras").await;
    b.check("cameras").await;
    b.click("input[aria-label='Compare Fujifilm X-T5']").await;
    b.click("input[aria-label='Compare Sony A7 IV']").await;
    b.click("main form button[type=submit]").await;
    b.heading("Side by side").await;
    b.check("compare").await;
    b.goto("/cameras").await;
    b.link("Fujifilm X-T5").await;
    b.heading("Fujifilm X-T5").await;
    b.check("camera").await;

    // Book store: the seller lists a book.
    let book = format!("Pedro Páramo ({v})");
    b.goto("/books/new").await;
    b.heading("Sell a book").await;
    b.check("sell").await;
    b.fill("#f-title", &book).await;
    b.fill("#f-author", "Juan Rulfo").await;
    b.fill("#f-isbn", "978-0-14-243788-9").await;
    b.fill("#f-amount", "12.50").await;
    b.fill("#f-description", "Barely read.").await;
    b.click("form.stack button[type=submit]").await;
    b.heading(&book).await;
    b.check("book-own").await;
    b.sign_out().await;

    // Another person buys it; not being an editor, they may not write.
    b.sign_up(&buyer, &buyer_email).await;
    b.goto("/reviews/new").await;
    b.heading("You may not do that").await;
    b.check("forbidden").await;
    b.goto("/books").await;
    b.heading("Books").await;
    b.check("catalog").await;
    b.fill("#q", "paramo").await;
    b.click("form.filters button[type=submit]").await;
    b.url_contains("q=paramo").await;
    b.client
        .wait()
        .at_most(WAIT)
        .for_element(Locator::LinkText(&book))
        .await
        .unwrap();
    b.link(&book).await;
    b.heading(&book).await;
    b.check("book").await;
    b.click("form.inline-form button[type=submit]").await;
    b.heading("Your cart").await;
    b.check("cart").await;
    b.link("Check out").await;
    b.heading("Checkout").await;
    b.check("checkout").await;
    b.fill("#f-shipping_address", "Av. Juárez 10, Ciudad de México")
        .await;
    b.fill("#f-card", "4242 4242 4242 4242").await;
    b.click("form.stack button[type=submit]").await;
    b.heading("Order").await;
    b.check("order").await;
    // The live status follows the order without reloading the page.
    b.client
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css("#order-status[data-status=delivered]"))
        .await
        .expect("the live status reaches delivered");
    assert_eq!(b.text("#order-status").await, "Delivered");
    let cancel = b
        .client
        .find(Locator::Css("[data-cancel-form]"))
        .await
        .unwrap();
    assert!(
        !cancel.is_displayed().await.unwrap(),
        "no cancelling a delivered order"
    );
    b.check("order-delivered").await;
    b.goto("/orders").await;
    b.heading("Your orders").await;
    b.check("orders").await;
    b.sign_out().await;

    // The seller sees the sale (projected from the payment event).
    b.sign_in(&seller_email, PASSWORD, &seller).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        b.goto("/sales").await;
        b.heading("Your sales").await;
        if b.client.find(Locator::LinkText(&book)).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the sale never showed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    b.check("sales").await;
    cinema_flow(&mut b, &movie_title, &showtime).await;
    upload_flow(&mut b).await;
    b.sign_out().await;

    // The cinema's manager screens.
    b.sign_in(&manager, MANAGER_PASSWORD, "Mara").await;
    b.goto("/cinema/manage").await;
    b.heading("Manage cinemas").await;
    b.check("cinema-manage").await;

    b.goto("/no-such-page").await;
    b.heading("Page not found").await;
    b.check("not-found").await;

    b.client.close().await.unwrap();
}

/// Now showing → the movie → its seat map, a seat picked on the grid (the
/// live count follows) → checkout → the tickets.
async fn cinema_flow(b: &mut Browser, title: &str, showtime: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        b.goto("/cinema").await;
        b.heading("Now showing").await;
        if b.client.find(Locator::LinkText(title)).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the movie never showed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    b.check("now-showing").await;
    b.link(title).await;
    b.heading(title).await;
    b.check("movie").await;
    b.click(&format!("a[href='/cinema/showtimes/{showtime}']"))
        .await;
    b.heading(title).await;
    b.click("label[for=seat-A2]").await;
    b.click("label[for=seat-A3]").await;
    assert_eq!(b.text("[data-seat-summary]").await, "2 seats, 180.00 MXN");
    b.check("seat-map").await;
    b.click("form[data-seat-map] button[type=submit]").await;
    b.heading("Checkout").await;
    assert_eq!(b.text("#chosen-seats").await, "A2, A3");
    b.check("cinema-checkout").await;
    b.fill("#f-card", "4242 4242 4242 4242").await;
    b.click("form.stack button[type=submit]").await;
    b.heading("Your tickets").await;
    b.check("tickets").await;
}

/// The upload page, a clip sent with its progress bar, and its page
/// playing the processed video.
async fn upload_flow(b: &mut Browser) {
    b.goto("/videos").await;
    b.heading("Your videos").await;
    b.check("videos").await;
    let clip = b.shots.join(format!("{}-clip.mp4", b.viewport.name));
    if !stack::clip(&clip) {
        assert!(
            std::env::var_os("CI").is_none(),
            "ffmpeg is needed under CI"
        );
        return;
    }
    let input = b.client.find(Locator::Css("#f-file")).await.unwrap();
    input.send_keys(&clip.to_string_lossy()).await.unwrap();
    b.click("form[data-upload] button[type=submit]").await;
    b.heading("clip.mp4").await;
    // The page reloads once processed, with the player.
    b.client
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css("video.player"))
        .await
        .expect("the processed video plays on its page");
    b.check("video").await;
    let _ = std::fs::remove_file(clip);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_sign_up_reviews_and_book_store() {
    whole_flow(&PHONE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desktop_sign_up_reviews_and_book_store() {
    whole_flow(&DESKTOP).await;
}
