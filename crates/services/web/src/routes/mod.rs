//! The pages, by application, and what wraps them.

mod account;
mod books;
mod cinema;
mod cinema_manage;
mod reviews;
mod videos;

use axum::Router;
use axum::middleware;
use axum::response::Redirect;
use axum::routing::get;

use crate::app::AppState;
use crate::session;

pub fn router(state: AppState) -> Router {
    let pages = Router::new()
        .merge(account::routes())
        .merge(reviews::routes())
        .merge(books::routes())
        .merge(cinema::routes())
        .merge(cinema_manage::routes())
        .merge(videos::routes())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            session::visit,
        ))
        .with_state(state.clone());
    let assets = Router::new()
        .route("/assets/{name}", get(crate::assets::serve))
        .route(
            "/favicon.ico",
            get(|| async { Redirect::permanent(&crate::assets::ASSETS.icon.url) }),
        );
    let gateway = state.gateway.clone();
    let ready: zocalo_telemetry::ReadinessCheck = std::sync::Arc::new(move || {
        let gateway = gateway.clone();
        Box::pin(async move { gateway.ping().await.map_err(|e| e.detail()) })
    });
    let openapi = serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "Zócalo web", "version": env!("CARGO_PKG_VERSION"),
                 "description": "HTML pages; no JSON API."},
        "paths": {}
    });
    zocalo_http::server::finish("web", pages.merge(assets), ready, openapi)
        .layer(middleware::from_fn(crate::error::html_errors))
}
