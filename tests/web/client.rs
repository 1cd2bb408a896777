//! A browser stand-in over reqwest: it keeps cookies (as a browser on
//! `localhost` would, `Secure` ones included), never follows redirects on
//! its own, and reads the CSRF token out of forms.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

pub struct Visitor {
    http: reqwest::Client,
    base: String,
    pub cookies: BTreeMap<String, String>,
}

/// A page as fetched: status, where it redirects, the cookies it set and
/// its HTML.
pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub content_type: String,
    pub html: String,
}

impl Page {
    /// The `Set-Cookie` line for `name`, if the page set it.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.set_cookies
            .iter()
            .map(String::as_str)
            .find(|c| c.starts_with(&format!("{name}=")))
    }

    pub fn assert_contains(&self, text: &str) {
        assert!(
            self.html.contains(text),
            "page lacks {text:?}:\n{}",
            self.html
        );
    }
}

/// The value of the first hidden `csrf` field of `html`.
pub fn csrf_of(html: &str) -> String {
    value_after(html, r#"name="csrf" value=""#).expect("a form with a CSRF token")
}

/// The text after `marker` up to the next `"`.
pub fn value_after(html: &str, marker: &str) -> Option<String> {
    let start = html.find(marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_owned())
}

impl Visitor {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// A request to `path` to be finished by the caller (a multipart
    /// upload, a `Range`) and sent with [`Visitor::send`].
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// Send with this browser's cookies, keeping those the answer sets.
    pub async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let request = if self.cookies.is_empty() {
            request
        } else {
            request.header(COOKIE, self.cookie_header())
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let location = header(LOCATION);
        let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
        let set_cookies: Vec<String> = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        for cookie in &set_cookies {
            let pair = cookie.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            if value.is_empty() || cookie.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let html = response.text().await.unwrap();
        Page {
            status,
            location,
            set_cookies,
            content_type,
            html,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    /// POST a form as the browser would, with the CSRF token of `page`.
    pub async fn submit(&mut self, path: &str, page: &Page, fields: &[(&str, &str)]) -> Page {
        let token = csrf_of(&page.html);
        let mut form: Vec<(&str, &str)> = vec![("csrf", &token)];
        form.extend_from_slice(fields);
        self.post(path, &form).await
    }

    /// POST a form exactly as given (no token added).
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let request = self.http.post(format!("{}{path}", self.base)).form(form);
        self.send(request).await
    }

    /// Sign up through the form and land signed in.
    pub async fn sign_up(&mut self, name: &str, email: &str, password: &str) -> Page {
        let form = self.get("/signup").await;
        let done = self
            .submit(
                "/signup",
                &form,
                &[("name", name), ("email", email), ("password", password)],
            )
            .await;
        assert_eq!(
            done.status,
            StatusCode::SEE_OTHER,
            "signed up: {}",
            done.html
        );
        done
    }

    pub async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        let form = self.get("/signin").await;
        let done = self
            .submit(
                "/signin",
                &form,
                &[("email", email), ("password", password)],
            )
            .await;
        assert_eq!(
            done.status,
            StatusCode::SEE_OTHER,
            "signed in: {}",
            done.html
        );
        done
    }
}
