//! Shared pages: home, sign up, sign in, sign out, account, and the
//! administration of roles.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::Deserialize;
use uuid::Uuid;

use crate::app::AppState;
use crate::csrf::CsrfForm;
use crate::error::WebError;
use crate::gateway::ApiError;
use crate::models::{Page, User};
use crate::session::{self, Jar, Tokens, Visitor};
use crate::views::{Chrome, FormErrors, local_path, render};

/// Roles the administration page grants; the others belong to
/// applications that manage them elsewhere.
const GRANTABLE: [&str; 1] = ["editor"];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/signup", get(signup_page).post(signup))
        .route("/signin", get(signin_page).post(signin))
        .route("/signout", post(signout))
        .route("/account", get(account))
        .route("/admin/users", get(users))
        .route("/admin/users/{id}/roles", post(change_role))
}

#[derive(Template)]
#[template(path = "home.html")]
struct Home {
    chrome: Chrome,
}

async fn home(Extension(visitor): Extension<Visitor>) -> Result<Response, WebError> {
    render(Home {
        chrome: Chrome::new(&visitor, "Zócalo", "home"),
    })
}

#[derive(Debug, Default, Deserialize)]
struct Next {
    next: Option<String>,
}

/// The sign-up and sign-in forms (sign-in has no name).
#[derive(Debug, Default, Deserialize)]
struct AccountForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    /// Where to go once signed in.
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "signup.html")]
struct Signup {
    chrome: Chrome,
    form: AccountForm,
    errors: FormErrors,
}

#[derive(Template)]
#[template(path = "signin.html")]
struct Signin {
    chrome: Chrome,
    form: AccountForm,
    errors: FormErrors,
}

/// A form shown again never shows the password back.
fn without_password(form: AccountForm) -> AccountForm {
    AccountForm {
        password: String::new(),
        ..form
    }
}

fn signup_view(
    visitor: &Visitor,
    form: AccountForm,
    errors: FormErrors,
) -> Result<Response, WebError> {
    render(Signup {
        chrome: Chrome::new(visitor, "Create an account", "account"),
        form: without_password(form),
        errors,
    })
}

fn signin_view(
    visitor: &Visitor,
    form: AccountForm,
    errors: FormErrors,
) -> Result<Response, WebError> {
    render(Signin {
        chrome: Chrome::new(visitor, "Sign in", "account"),
        form: without_password(form),
        errors,
    })
}

fn arriving(next: Next) -> AccountForm {
    AccountForm {
        next: next.next,
        ..AccountForm::default()
    }
}

async fn signup_page(
    Extension(visitor): Extension<Visitor>,
    Query(next): Query<Next>,
) -> Result<Response, WebError> {
    signup_view(&visitor, arriving(next), FormErrors::none())
}

async fn signin_page(
    Extension(visitor): Extension<Visitor>,
    Query(next): Query<Next>,
) -> Result<Response, WebError> {
    signin_view(&visitor, arriving(next), FormErrors::none())
}

/// Create the account, then sign in with it straight away.
async fn signup(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    CsrfForm(form): CsrfForm<AccountForm>,
) -> Result<Response, WebError> {
    let body =
        serde_json::json!({"name": form.name, "email": form.email, "password": form.password});
    let created: Result<User, ApiError> = state
        .gateway
        .send(Method::POST, "/auth/register", None, &body, None)
        .await;
    if let Err(error) = created {
        return signup_view(&visitor, form, FormErrors::from_api(error, &[])?);
    }
    let tokens = password_grant(&state, &visitor, &form.email, &form.password).await?;
    Ok(signed_in(&state, &tokens, form.next.as_deref()))
}

async fn password_grant(
    state: &AppState,
    visitor: &Visitor,
    email: &str,
    password: &str,
) -> Result<Tokens, ApiError> {
    let form = [
        ("grant_type", "password"),
        ("username", email),
        ("password", password),
    ];
    state
        .gateway
        .token(&form, visitor.client_ip.as_deref())
        .await
}

/// A redirect to where the visitor was going, with the session cookies.
fn signed_in(state: &AppState, tokens: &Tokens, next: Option<&str>) -> Response {
    let mut response = Redirect::to(&local_path(next)).into_response();
    for cookie in session::token_cookies(tokens, state.secure_cookies) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

async fn signin(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    CsrfForm(form): CsrfForm<AccountForm>,
) -> Result<Response, WebError> {
    match password_grant(&state, &visitor, &form.email, &form.password).await {
        Ok(tokens) => Ok(signed_in(&state, &tokens, form.next.as_deref())),
        Err(error) => {
            let message = match error.status() {
                Some(400) => "Wrong email or password.",
                Some(429) => "Too many attempts. Wait a few seconds and try again.",
                _ => return Err(error.into()),
            };
            let mut errors = FormErrors::none();
            errors.general = Some(message.into());
            signin_view(&visitor, form, errors)
        }
    }
}

#[derive(Debug, Deserialize)]
struct Empty {}

/// Revoke this browser's refresh token (other devices stay signed in) and
/// forget both tokens.
async fn signout(
    State(state): State<AppState>,
    headers: HeaderMap,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response, WebError> {
    if let Some(refresh) = Jar::from_headers(&headers).get(session::REFRESH_COOKIE)
        && let Err(error) = state
            .gateway
            .post_form("/auth/revoke", &[("token", refresh)])
            .await
    {
        tracing::warn!(?error, "could not revoke a refresh token at sign-out");
    }
    let mut response = Redirect::to("/").into_response();
    for cookie in session::cleared_cookies(state.secure_cookies) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

#[derive(Template)]
#[template(path = "account.html")]
struct Account {
    chrome: Chrome,
    user: User,
}

async fn account(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
) -> Result<Response, WebError> {
    let signed_in = visitor.require("/account")?;
    let user: User = state
        .gateway
        .get("/auth/me", Some(&signed_in.access_token))
        .await?;
    render(Account {
        chrome: Chrome::new(&visitor, "Your account", "account"),
        user,
    })
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct Users {
    chrome: Chrome,
    users: Vec<User>,
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Cursor {
    cursor: Option<String>,
}

async fn users(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Query(cursor): Query<Cursor>,
) -> Result<Response, WebError> {
    let signed_in = visitor.require("/admin/users")?;
    let query = [
        ("limit", "50".to_owned()),
        ("cursor", cursor.cursor.unwrap_or_default()),
    ];
    let page: Page<User> = state
        .gateway
        .get_query("/auth/users", &query, Some(&signed_in.access_token))
        .await?;
    let next = page.next();
    render(Users {
        chrome: Chrome::new(&visitor, "People and roles", "account"),
        users: page.items,
        next,
    })
}

#[derive(Debug, Deserialize)]
struct RoleForm {
    role: String,
    /// `grant` or `revoke`.
    change: String,
}

async fn change_role(
    State(state): State<AppState>,
    Extension(visitor): Extension<Visitor>,
    Path(id): Path<Uuid>,
    CsrfForm(form): CsrfForm<RoleForm>,
) -> Result<Response, WebError> {
    let signed_in = visitor.require("/admin/users")?;
    if !GRANTABLE.contains(&form.role.as_str()) {
        return Err(WebError::BadRequest(format!(
            "the role `{}` is not granted here",
            form.role
        )));
    }
    let method = match form.change.as_str() {
        "grant" => Method::PUT,
        "revoke" => Method::DELETE,
        _ => {
            return Err(WebError::BadRequest(
                "change must be grant or revoke".into(),
            ));
        }
    };
    let path = format!("/auth/users/{id}/roles/{}", form.role);
    state
        .gateway
        .call(method, &path, Some(&signed_in.access_token))
        .await?;
    Ok(Redirect::to("/admin/users").into_response())
}
