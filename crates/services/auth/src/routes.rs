//! The auth service's HTTP API.

use std::net::IpAddr;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;
use zocalo_http::Problem;
use zocalo_http::auth::{AuthUser, Claims, roles};
use zocalo_http::extract::{Form, Json, Path, Query};
use zocalo_store::StoreError;

use crate::app::{AdminBootstrap, AppState};
use crate::domain::{
    DisplayName, Email, NewUser, NextRefresh, OAuthClient, Password, RefreshOutcome, Role, User,
    validate,
};
use crate::keys::{random_secret, secret_hash};
use crate::passwords;

pub fn router(state: AppState) -> Router {
    let ready_store = state.store.clone();
    let api = Router::new()
        .route("/auth/register", post(register))
        .route("/auth/token", post(token))
        .route("/auth/revoke", post(revoke))
        .route("/auth/logout", post(logout))
        .route("/auth/me", get(me))
        .route("/auth/users", get(list_users))
        .route(
            "/auth/users/{id}/roles/{role}",
            put(grant_role).delete(revoke_role),
        )
        .route("/auth/clients", post(create_client))
        .route("/auth/keys/rotate", post(rotate_keys))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .with_state(state);
    let ready: zocalo_telemetry::ReadinessCheck = std::sync::Arc::new(move || {
        let store = ready_store.clone();
        Box::pin(async move { store.ping().await.map_err(|e| e.to_string()) })
    });
    let openapi = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    zocalo_http::server::finish("auth", api, ready, openapi)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Zócalo auth",
        description = "Accounts, roles and the OAuth2 token endpoint."
    ),
    paths(
        register,
        token,
        revoke,
        logout,
        me,
        list_users,
        grant_role,
        revoke_role,
        create_client,
        rotate_keys,
        jwks,
        metadata
    ),
    components(schemas(
        User,
        RegisterRequest,
        TokenRequest,
        TokenResponse,
        RevokeRequest,
        UserPage,
        NewClient,
        ClientCreated,
        Role
    ))
)]
struct ApiDoc;

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    email: String,
    password: String,
    name: String,
}

/// Create an account. New accounts have no roles; an admin grants them.
#[utoipa::path(post, path = "/auth/register", request_body = RegisterRequest,
    responses((status = 201, body = User), (status = 409, description = "email taken"), (status = 422, description = "invalid field")))]
async fn register(
    State(state): State<AppState>,
    Json(request): Json<RegisterRequest>,
) -> Result<Response, Problem> {
    let (email, password, name) = validate(
        Email::parse(&request.email),
        Password::parse(&request.password),
        DisplayName::parse(&request.name),
    )?;
    let user = create_user(&state, email, password, name).await?;
    let location =
        HeaderValue::from_str(&format!("/auth/users/{}", user.id)).map_err(Problem::internal)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(user),
    )
        .into_response())
}

async fn create_user(
    state: &AppState,
    email: Email,
    password: Password,
    name: DisplayName,
) -> Result<User, Problem> {
    let password_hash = passwords::hash(password.expose().to_owned()).await?;
    let user = NewUser {
        id: Uuid::now_v7(),
        email,
        name,
        password_hash,
        created_at: Utc::now(),
    };
    state.store.create_user(user).await.map_err(|e| match e {
        StoreError::Conflict(_) => Problem::conflict("an account with this email already exists"),
        other => other.into(),
    })
}

/// Create the bootstrap admin unless an account with that email exists.
pub async fn ensure_admin(state: &AppState, admin: AdminBootstrap) -> anyhow::Result<()> {
    let email = Email::parse(&admin.email)
        .map_err(|e| anyhow::anyhow!("ZOCALO_ADMIN_EMAIL {}", e.message))?;
    if state.store.credentials(email.as_str()).await?.is_some() {
        tracing::info!(email = email.as_str(), "admin account already exists");
        return Ok(());
    }
    let password = Password::parse(&admin.password)
        .map_err(|e| anyhow::anyhow!("ZOCALO_ADMIN_PASSWORD {}", e.message))?;
    let name = DisplayName::parse("Administrator").map_err(|e| anyhow::anyhow!(e.message))?;
    match create_user(state, email, password, name).await {
        Ok(user) => {
            state.store.grant_role(user.id, Role::Admin).await?;
            tracing::info!(email = user.email, "admin account created");
            Ok(())
        }
        // Another instance created it at the same moment.
        Err(problem) if problem.status == 409 => Ok(()),
        Err(problem) => Err(anyhow::anyhow!(problem.to_string())),
    }
}

/// Create or update a service client declared in configuration.
pub async fn seed_client(state: &AppState, seed: &crate::app::ClientSeed) -> anyhow::Result<()> {
    if seed.client_secret.expose().len() < 16 {
        anyhow::bail!(
            "client {}: client_secret must have at least 16 characters",
            seed.client_id
        );
    }
    if let Some(bad) = seed
        .roles
        .iter()
        .find(|r| !roles::ALL.contains(&r.as_str()))
    {
        anyhow::bail!("client {}: unknown role `{bad}`", seed.client_id);
    }
    let client = OAuthClient {
        client_id: seed.client_id.clone(),
        secret_hash: secret_hash(seed.client_secret.expose()),
        name: seed.name.clone(),
        roles: seed.roles.clone(),
        created_at: Utc::now(),
    };
    state.store.save_client(client).await?;
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    grant_type: String,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    #[allow(dead_code)]
    scope: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

/// The caller's address, believing `X-Forwarded-For` only from trusted peers.
struct ClientAddr(Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        Ok(ClientAddr(zocalo_http::client_ip::client_ip(
            parts,
            true,
            &state.settings.trusted_proxies,
        )))
    }
}

fn invalid_grant(description: &str) -> Problem {
    Problem::oauth(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

fn invalid_request(description: &str) -> Problem {
    Problem::oauth(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// OAuth2 token endpoint (RFC 6749 §3.2), form-encoded.
#[utoipa::path(post, path = "/auth/token", request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, body = TokenResponse), (status = 400, description = "invalid_grant / invalid_request / unsupported_grant_type"), (status = 401, description = "invalid_client"), (status = 429, description = "too many attempts")))]
async fn token(
    State(state): State<AppState>,
    ClientAddr(ip): ClientAddr,
    Form(request): Form<TokenRequest>,
) -> Result<Response, Problem> {
    let response = match request.grant_type.as_str() {
        "password" => password_grant(&state, ip, &request).await?,
        "refresh_token" => refresh_grant(&state, &request).await?,
        "client_credentials" => client_credentials_grant(&state, &request).await?,
        _ => {
            return Err(Problem::oauth(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant_type must be password, refresh_token or client_credentials",
            ));
        }
    };
    Ok((
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(response),
    )
        .into_response())
}

async fn password_grant(
    state: &AppState,
    ip: Option<IpAddr>,
    request: &TokenRequest,
) -> Result<TokenResponse, Problem> {
    let (Some(username), Some(password)) = (&request.username, &request.password) else {
        return Err(invalid_request("username and password are required"));
    };
    let email = username.trim().to_lowercase();
    if let Some(ip) = ip {
        state.login_by_ip.check(&ip.to_string()).await?;
    }
    state.login_by_account.check(&email).await?;
    let credentials = state.store.credentials(&email).await?;
    let hash = credentials.as_ref().map(|c| c.password_hash.clone());
    let matches = passwords::verify(password.clone(), hash).await?;
    let user = match credentials {
        Some(c) if matches => c.user,
        // Same answer whether or not the account exists.
        _ => return Err(invalid_grant("invalid username or password")),
    };
    let family = Uuid::now_v7();
    let refresh = random_secret();
    let now = Utc::now();
    state
        .store
        .insert_refresh(
            &secret_hash(&refresh),
            family,
            &user.id.to_string(),
            now + Duration::seconds(state.settings.refresh_ttl_secs),
            now,
        )
        .await?;
    issue(
        state,
        user.id.to_string(),
        user.roles,
        Some(user.name),
        Some(user.email),
        Some(refresh),
    )
    .await
}

async fn refresh_grant(state: &AppState, request: &TokenRequest) -> Result<TokenResponse, Problem> {
    let Some(presented) = &request.refresh_token else {
        return Err(invalid_request("refresh_token is required"));
    };
    let next = random_secret();
    let now = Utc::now();
    let outcome = state
        .store
        .rotate_refresh(
            &secret_hash(presented),
            NextRefresh {
                hash: secret_hash(&next),
                expires_at: now + Duration::seconds(state.settings.refresh_ttl_secs),
            },
            now,
        )
        .await?;
    match outcome {
        RefreshOutcome::Rotated { subject, .. } => {
            let user = subject.parse().ok().map(|id| state.store.user(id));
            let user = match user {
                Some(lookup) => lookup.await?,
                None => None,
            };
            let Some(user) = user else {
                return Err(invalid_grant("the account no longer exists"));
            };
            issue(
                state,
                subject,
                user.roles,
                Some(user.name),
                Some(user.email),
                Some(next),
            )
            .await
        }
        RefreshOutcome::Reused { family } => {
            tracing::warn!(%family, "refresh token reused: family revoked");
            metrics::counter!("auth_refresh_reuse_total").increment(1);
            Err(invalid_grant(
                "refresh token reused; all its sessions are revoked",
            ))
        }
        RefreshOutcome::Invalid => Err(invalid_grant(
            "refresh token is invalid, expired or revoked",
        )),
    }
}

async fn client_credentials_grant(
    state: &AppState,
    request: &TokenRequest,
) -> Result<TokenResponse, Problem> {
    let invalid_client = || {
        Problem::oauth(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        )
    };
    let (Some(id), Some(secret)) = (&request.client_id, &request.client_secret) else {
        return Err(invalid_client());
    };
    let client = state.store.client(id).await?.ok_or_else(invalid_client)?;
    if client.secret_hash != secret_hash(secret) {
        return Err(invalid_client());
    }
    issue(
        state,
        format!("client:{}", client.client_id),
        client.roles,
        Some(client.name),
        None,
        None,
    )
    .await
}

async fn issue(
    state: &AppState,
    subject: String,
    roles: Vec<String>,
    name: Option<String>,
    email: Option<String>,
    refresh_token: Option<String>,
) -> Result<TokenResponse, Problem> {
    let now = Utc::now().timestamp();
    let ttl = state.settings.access_ttl_secs;
    let claims = Claims {
        sub: subject,
        roles,
        name,
        email,
        iss: state.settings.issuer.clone(),
        aud: state.settings.audience.clone(),
        iat: now,
        exp: now + ttl,
        jti: Uuid::new_v4().to_string(),
    };
    let access_token = state.keys.current().await.sign(&claims)?;
    metrics::counter!("auth_tokens_issued_total").increment(1);
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: ttl,
        refresh_token,
    })
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RevokeRequest {
    token: String,
    #[allow(dead_code)]
    token_type_hint: Option<String>,
}

/// RFC 7009 revocation: revokes a refresh token and every token rotated
/// from the same login. Always 200, so it reveals nothing about the token.
#[utoipa::path(post, path = "/auth/revoke", request_body(content = RevokeRequest, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "revoked, or was not a live token")))]
async fn revoke(
    State(state): State<AppState>,
    Form(request): Form<RevokeRequest>,
) -> Result<StatusCode, Problem> {
    if let Some((family, _)) = state
        .store
        .refresh_owner(&secret_hash(&request.token))
        .await?
    {
        state.store.revoke_family(family, Utc::now()).await?;
    }
    Ok(StatusCode::OK)
}

/// Sign out everywhere: revokes every refresh token of the caller. Access
/// tokens already issued stay valid until they expire (15 minutes).
#[utoipa::path(post, path = "/auth/logout", security(("bearer" = [])),
    responses((status = 204), (status = 401)))]
async fn logout(State(state): State<AppState>, user: AuthUser) -> Result<StatusCode, Problem> {
    state
        .store
        .revoke_subject(&user.subject, Utc::now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user.
#[utoipa::path(get, path = "/auth/me", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401)))]
async fn me(State(state): State<AppState>, user: AuthUser) -> Result<Json<User>, Problem> {
    let id = user.user_id()?;
    state
        .store
        .user(id)
        .await?
        .map(Json)
        .ok_or_else(Problem::not_found)
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    limit: Option<u32>,
    cursor: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    items: Vec<User>,
    next_cursor: Option<Uuid>,
}

/// Every account, in creation order (admin).
#[utoipa::path(get, path = "/auth/users", security(("bearer" = [])),
    params(("limit" = Option<u32>, Query, description = "1–100, default 50"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, body = UserPage), (status = 401), (status = 403)))]
async fn list_users(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<PageQuery>,
) -> Result<Json<UserPage>, Problem> {
    user.require_role(roles::ADMIN)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(Problem::invalid_field("limit", "must be between 1 and 100"));
    }
    let mut items = state.store.users(query.cursor, limit + 1).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|u| u.id)
    } else {
        None
    };
    Ok(Json(UserPage { items, next_cursor }))
}

/// Grant a role (admin).
#[utoipa::path(put, path = "/auth/users/{id}/roles/{role}", security(("bearer" = [])),
    params(("id" = Uuid, Path), ("role" = Role, Path)),
    responses((status = 200, body = User), (status = 404), (status = 422)))]
async fn grant_role(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, role)): Path<(Uuid, String)>,
) -> Result<Json<User>, Problem> {
    change_role(&state, &user, id, &role, true).await
}

/// Revoke a role (admin).
#[utoipa::path(delete, path = "/auth/users/{id}/roles/{role}", security(("bearer" = [])),
    params(("id" = Uuid, Path), ("role" = Role, Path)),
    responses((status = 200, body = User), (status = 404), (status = 422)))]
async fn revoke_role(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, role)): Path<(Uuid, String)>,
) -> Result<Json<User>, Problem> {
    change_role(&state, &user, id, &role, false).await
}

async fn change_role(
    state: &AppState,
    caller: &AuthUser,
    id: Uuid,
    role: &str,
    grant: bool,
) -> Result<Json<User>, Problem> {
    caller.require_role(roles::ADMIN)?;
    let role: Role = role.parse()?;
    let exists = if grant {
        state.store.grant_role(id, role).await?
    } else {
        state.store.revoke_role(id, role).await?
    };
    if !exists {
        return Err(Problem::not_found());
    }
    state
        .store
        .user(id)
        .await?
        .map(Json)
        .ok_or_else(Problem::not_found)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct NewClient {
    name: String,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientCreated {
    client_id: String,
    /// Shown once; only its hash is stored.
    client_secret: String,
    name: String,
    roles: Vec<String>,
}

/// Register a service client for the client_credentials grant (admin).
#[utoipa::path(post, path = "/auth/clients", security(("bearer" = [])), request_body = NewClient,
    responses((status = 201, body = ClientCreated), (status = 403), (status = 422)))]
async fn create_client(
    State(state): State<AppState>,
    user: AuthUser,
    Json(request): Json<NewClient>,
) -> Result<Response, Problem> {
    user.require_role(roles::ADMIN)?;
    let name = DisplayName::parse(&request.name).map_err(|e| Problem::invalid_fields(vec![e]))?;
    let mut client_roles = if request.roles.is_empty() {
        vec![roles::SERVICE.to_owned()]
    } else {
        request.roles
    };
    if let Some(bad) = client_roles
        .iter()
        .find(|r| !roles::ALL.contains(&r.as_str()))
    {
        return Err(Problem::invalid_field(
            "roles",
            format!("unknown role `{bad}`"),
        ));
    }
    client_roles.sort();
    client_roles.dedup();
    let secret = random_secret();
    let client = OAuthClient {
        client_id: format!("c_{}", Uuid::new_v4().simple()),
        secret_hash: secret_hash(&secret),
        name: name.as_str().to_owned(),
        roles: client_roles.clone(),
        created_at: Utc::now(),
    };
    let created = ClientCreated {
        client_id: client.client_id.clone(),
        client_secret: secret,
        name: client.name.clone(),
        roles: client_roles,
    };
    state.store.save_client(client).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

#[derive(Debug, Serialize)]
struct Rotated {
    kid: String,
}

/// Start signing with a new key (admin). Older keys stay published so that
/// tokens they signed verify until they expire.
#[utoipa::path(post, path = "/auth/keys/rotate", security(("bearer" = [])),
    responses((status = 200, description = "the new key id"), (status = 403)))]
async fn rotate_keys(State(state): State<AppState>, user: AuthUser) -> Result<Response, Problem> {
    user.require_role(roles::ADMIN)?;
    let kid = state.keys.rotate(state.store.as_ref()).await?;
    state.verifier.set_keys(&state.keys.jwks().await).await;
    Ok(Json(Rotated { kid }).into_response())
}

/// The public keys that verify access tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", responses((status = 200, description = "a JWK set")))]
async fn jwks(State(state): State<AppState>) -> Response {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(state.keys.jwks().await),
    )
        .into_response()
}

/// RFC 8414 authorization server metadata.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", responses((status = 200, description = "metadata")))]
async fn metadata(State(state): State<AppState>) -> Json<serde_json::Value> {
    let base = state.settings.public_url.trim_end_matches('/');
    Json(serde_json::json!({
        "issuer": state.settings.issuer,
        "token_endpoint": format!("{base}/auth/token"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "revocation_endpoint": format!("{base}/auth/revoke"),
        "registration_endpoint": format!("{base}/auth/register"),
        "grant_types_supported": ["password", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "response_types_supported": [],
        "token_endpoint_auth_signing_alg_values_supported": ["EdDSA"],
    }))
}
