//! Calls to the public APIs through the gateway, as any client makes them:
//! JSON over HTTP with the user's bearer token.

use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, RequestBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zocalo_http::{FieldError, Problem};

/// Files (uploads, videos played or downloaded) take as long as they take,
/// within the gateway's own limit for uploads.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);

/// A failed call: the API's problem, or no answer at all.
#[derive(Debug, Clone)]
pub enum ApiError {
    /// The API answered with an error status (and usually a problem body).
    Status(u16, Option<Problem>),
    /// No usable answer: unreachable, timed out, or not what we expect.
    Unavailable(String),
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status(status, _) => Some(*status),
            ApiError::Unavailable(_) => None,
        }
    }

    /// The fields the API found invalid (a 422 with `errors`), if any.
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            ApiError::Status(_, Some(problem)) => problem.errors.clone(),
            _ => Vec::new(),
        }
    }

    /// What the API said, for the person filling the form.
    pub fn detail(&self) -> String {
        match self {
            ApiError::Status(_, Some(problem)) => problem
                .detail
                .clone()
                .unwrap_or_else(|| problem.title.clone()),
            ApiError::Status(status, None) => format!("the request failed ({status})"),
            ApiError::Unavailable(_) => "the service is unavailable; try again shortly".into(),
        }
    }
}

#[derive(Clone)]
pub struct Gateway {
    http: reqwest::Client,
    base: String,
}

impl Gateway {
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            // The gateway's redirects, if any, are for browsers, not us.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the gateway client")?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("accept", "application/json");
        let request = zocalo_http::traced(request);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> Result<T, ApiError> {
        decode(self.request(Method::GET, path, token)).await
    }

    /// GET with a query string built from `query` (blank values are left
    /// out, so an empty filter is no filter).
    pub async fn get_query<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        token: Option<&str>,
    ) -> Result<T, ApiError> {
        let query: Vec<_> = query.iter().filter(|(_, v)| !v.trim().is_empty()).collect();
        decode(self.request(Method::GET, path, token).query(&query)).await
    }

    /// A JSON request with a body; `idempotency_key` makes a resubmitted
    /// form create nothing twice.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &impl Serialize,
        idempotency_key: Option<&str>,
    ) -> Result<T, ApiError> {
        let mut request = self.request(method, path, token).json(body);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        decode(request).await
    }

    /// A request whose answer has no body worth reading.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> Result<(), ApiError> {
        let response = self
            .request(method, path, token)
            .send()
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        check(response).await.map(drop)
    }

    /// A file of the visitor's (a PDF, a video), its answer left unread so
    /// that it can be streamed on; `range` is the browser's `Range`. A 416
    /// (a range past the end) is an error like any other refusal.
    pub async fn fetch(
        &self,
        path: &str,
        token: &str,
        range: Option<&axum::http::HeaderValue>,
    ) -> Result<reqwest::Response, ApiError> {
        let request = zocalo_http::traced(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(token),
        );
        let mut request = request.timeout(TRANSFER_TIMEOUT);
        if let Some(range) = range {
            request = request.header("range", range.as_bytes());
        }
        let response = request
            .send()
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        check(response).await
    }

    /// A streamed upload: `body` goes to `path` as it arrives, with the
    /// browser's `content_type` (multipart, with its boundary).
    pub async fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
        content_type: &str,
        body: reqwest::Body,
    ) -> Result<T, ApiError> {
        let request = self
            .request(Method::POST, path, Some(token))
            .header("content-type", content_type)
            .timeout(TRANSFER_TIMEOUT)
            .body(body);
        decode(request).await
    }

    /// Whether the gateway answers at all (readiness).
    pub async fn ping(&self) -> Result<(), ApiError> {
        let response = self
            .http
            .get(format!("{}/live", self.base))
            .send()
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        check(response).await.map(drop)
    }

    /// A form-encoded call to one of the OAuth2 endpoints (`/auth/revoke`).
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Result<(), ApiError> {
        let response = self
            .request(Method::POST, path, None)
            .form(form)
            .send()
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        check(response).await.map(drop)
    }

    /// The OAuth2 token endpoint (form-encoded), forwarding the browser's
    /// address so that login limits count per person, not per web instance.
    pub async fn token<T: DeserializeOwned>(
        &self,
        form: &[(&str, &str)],
        client_ip: Option<&str>,
    ) -> Result<T, ApiError> {
        let mut request = self.request(Method::POST, "/auth/token", None).form(form);
        if let Some(ip) = client_ip {
            request = request.header("x-forwarded-for", ip);
        }
        decode(request).await
    }
}

async fn check(response: reqwest::Response) -> Result<reqwest::Response, ApiError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let problem = response.json::<Problem>().await.ok();
    Err(ApiError::Status(status.as_u16(), problem))
}

async fn decode<T: DeserializeOwned>(request: RequestBuilder) -> Result<T, ApiError> {
    let response = request
        .send()
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    check(response)
        .await?
        .json::<T>()
        .await
        .map_err(|e| ApiError::Unavailable(format!("unexpected answer: {e}")))
}
