//! The OpenAPI document of the gateway's own endpoints.
//!
//! The proxied APIs are described by each service's `/openapi.json`; this
//! document lists the admin endpoints and, as an extension, the route table
//! so that an operator can see where each prefix goes.

use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use utoipa::openapi::{InfoBuilder, OpenApiBuilder, PathsBuilder, Response};

use crate::routes::RouteTable;

pub(crate) fn document(routes: &RouteTable) -> serde_json::Value {
    let paths = [
        ("/live", "The process is up", "alive"),
        (
            "/ready",
            "The gateway can verify tokens (the auth service's keys are reachable)",
            "ready; 503 when not",
        ),
        ("/metrics", "Prometheus metrics", "metrics in text format"),
        ("/openapi.json", "This document", "an OpenAPI document"),
    ]
    .into_iter()
    .fold(PathsBuilder::new(), |paths, (path, summary, ok)| {
        paths.path(
            path,
            PathItem::new(
                HttpMethod::Get,
                OperationBuilder::new()
                    .summary(Some(summary))
                    .response("200", Response::new(ok)),
            ),
        )
    });
    let doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Zócalo gateway")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Routes requests by path prefix to the services (see `x-zocalo-routes`), \
                     verifying bearer tokens and enforcing limits first. Errors are \
                     RFC 9457 `application/problem+json`.",
                )),
        )
        .paths(paths.build())
        .build();
    let mut value = serde_json::to_value(doc).unwrap_or_default();
    let table: Vec<_> = routes
        .iter()
        .map(|r| {
            serde_json::json!({
                "prefix": &*r.prefix,
                "service": &*r.service,
                "methods": r.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                "has_instances": r.has_upstreams(),
            })
        })
        .collect();
    if let Some(object) = value.as_object_mut() {
        object.insert("x-zocalo-routes".into(), table.into());
    }
    value
}
