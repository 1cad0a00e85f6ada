//! `GET /openapi.json`: the OpenAPI 3.1 document of the API, generated from the handlers'
//! `#[utoipa::path]` annotations and the body types of [`crate::types`] (their
//! `ToSchema`). The router registers each handler through the same `routes!` that adds
//! its annotation to the document, so every route is documented; [`complete`] then adds
//! what every operation shares (authentication's 401, the body limit's 413). The error
//! answers several routes give are described once in [`crate::responses`].

use std::sync::LazyLock;

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use utoipa::Modify;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, OpenApi, Ref, RefOr, Type};

use crate::responses::{
    BadName, BadTaskId, NoConnector, NoPlugin, NoTask, NotStored, OffsetsFailed, ShuttingDown,
};
use crate::types::{ConfigValue, ConnectorName, ErrorBody, ListItem, PatchValue};

/// What the document says besides the operations.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "sluice REST API",
        description = "Kafka Connect's REST API as sluice serves it: Kafka Connect's paths, \
            bodies, status codes and error shape (`{\"error_code\", \"message\"}`), and \
            sluice's additions (`/metrics`, `/openapi.json`). See docs/rest.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    // Schemas that only parameters, maps or other schemas refer to (`routes!` collects
    // those of bodies); `references_resolve` checks nothing is missing.
    components(
        schemas(ErrorBody, ConnectorName, ConfigValue, ListItem, PatchValue),
        // The shared error answers; the sets of `crate::responses` refer to them by name.
        responses(
            BadName, NoConnector, BadTaskId, NoTask, NoPlugin, NotStored, OffsetsFailed,
            ShuttingDown
        )
    ),
    modifiers(&Security),
    tags(
        (name = "server", description = "The worker"),
        (name = "connectors", description = "Connectors: create, configure, control"),
        (name = "tasks", description = "A connector's tasks"),
        (name = "offsets", description = "KIP-875: a connector's offsets"),
        (name = "topics", description = "KIP-558: a connector's active topics"),
        (name = "plugins", description = "Connector plugins and config validation"),
        (name = "admin", description = "KIP-495: log levels"),
    )
)]
pub struct ApiDoc;

/// `rest.auth`: none, HTTP Basic or bearer tokens; the document allows all three.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "rest.auth=basic: a user:password of rest.auth.credentials.file",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("rest.auth=bearer: a token of rest.auth.token.file"))
                    .build(),
            ),
        );
        doc.security = Some(vec![
            // rest.auth=none (the default): no credentials.
            SecurityRequirement::default(),
            SecurityRequirement::new("basic", Vec::<String>::new()),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
        ]);
    }
}

/// Paths that answer without credentials (the authentication middleware's list).
const OPEN_PATHS: &[&str] = &["/health"];

/// Adds the responses every operation shares: 401 (unless the path is open) and, with a
/// request body, 413.
pub fn complete(mut doc: OpenApi) -> OpenApi {
    let error = || {
        ContentBuilder::new()
            .schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody"))))
            .build()
    };
    let components = doc.components.get_or_insert_with(Default::default);
    components.responses.insert(
        "Unauthorized".into(),
        RefOr::T(
            ResponseBuilder::new()
                .description(
                    "rest.auth is set and the request has no valid credentials; \
                     WWW-Authenticate carries the challenge",
                )
                .header(
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(Type::String))
                        .build(),
                )
                .content("application/json", error())
                .build(),
        ),
    );
    components.responses.insert(
        "PayloadTooLarge".into(),
        RefOr::T(
            ResponseBuilder::new()
                .description(format!(
                    "The request body is larger than {} bytes",
                    crate::BODY_LIMIT
                ))
                .content("application/json", error())
                .build(),
        ),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        let open = OPEN_PATHS.contains(&path.as_str());
        for operation in operations(item) {
            if !open {
                operation.responses.responses.insert(
                    "401".into(),
                    RefOr::Ref(Ref::from_response_name("Unauthorized")),
                );
            }
            if operation.request_body.is_some() {
                operation.responses.responses.insert(
                    "413".into(),
                    RefOr::Ref(Ref::from_response_name("PayloadTooLarge")),
                );
            }
        }
    }
    doc
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The document, rendered once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    crate::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
});

/// The OpenAPI document (3.1) of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "server",
    responses(
        (status = 200, description = "This document", content_type = "application/json",
         body = inline(Object)),
    )
)]
pub(crate) async fn openapi_json() -> Response {
    ([(CONTENT_TYPE, "application/json")], DOCUMENT.as_str()).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn routes(doc: &OpenApi) -> BTreeSet<String> {
        let mut all = BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            let mut item = item.clone();
            for (method, op) in [
                ("GET", &item.get),
                ("PUT", &item.put),
                ("POST", &item.post),
                ("DELETE", &item.delete),
                ("PATCH", &item.patch),
            ] {
                if op.is_some() {
                    all.insert(format!("{method} {path}"));
                }
            }
            assert!(operations(&mut item).count() > 0);
        }
        all
    }

    /// The document lists exactly these routes: a route added to the router outside
    /// `routes!` (so undocumented) or removed shows here.
    #[test]
    fn every_route_is_documented() {
        let doc = crate::openapi();
        let expected: BTreeSet<String> = [
            "GET /",
            "GET /health",
            "GET /connectors",
            "POST /connectors",
            "GET /connectors/{name}",
            "DELETE /connectors/{name}",
            "GET /connectors/{name}/config",
            "PUT /connectors/{name}/config",
            "PATCH /connectors/{name}/config",
            "GET /connectors/{name}/status",
            "POST /connectors/{name}/restart",
            "PUT /connectors/{name}/pause",
            "PUT /connectors/{name}/resume",
            "PUT /connectors/{name}/stop",
            "GET /connectors/{name}/offsets",
            "PATCH /connectors/{name}/offsets",
            "DELETE /connectors/{name}/offsets",
            "GET /connectors/{name}/tasks",
            "GET /connectors/{name}/tasks/{task}/status",
            "POST /connectors/{name}/tasks/{task}/restart",
            "GET /connectors/{name}/topics",
            "PUT /connectors/{name}/topics/reset",
            "GET /connector-plugins",
            "GET /connector-plugins/{plugin}/config",
            "PUT /connector-plugins/{plugin}/config/validate",
            "GET /admin/loggers",
            "GET /admin/loggers/",
            "GET /admin/loggers/{logger}",
            "PUT /admin/loggers/{logger}",
            "GET /metrics",
            "GET /openapi.json",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(routes(&doc), expected);
    }

    /// Every operation: an id, a tag, a success and its errors in the error shape; path
    /// parameters declared; 401 everywhere but /health; 413 with every request body.
    #[test]
    fn operations_are_complete() {
        let mut doc = crate::openapi();
        let json = serde_json::to_value(&doc).unwrap();
        assert!(json["openapi"].as_str().unwrap().starts_with("3."));
        let mut ids = BTreeSet::new();
        for (path, item) in doc.paths.paths.iter_mut() {
            for op in operations(item) {
                let id = op.operation_id.clone().unwrap();
                assert!(ids.insert(id.clone()), "operation id {id} twice");
                assert!(op.tags.as_ref().is_some_and(|t| !t.is_empty()), "{id}");
                let codes: Vec<&String> = op.responses.responses.keys().collect();
                assert!(codes.iter().any(|c| c.starts_with('2')), "{id}: {codes:?}");
                assert_eq!(
                    codes.iter().any(|c| *c == "401"),
                    path != "/health",
                    "{id}: {codes:?}"
                );
                assert_eq!(
                    codes.iter().any(|c| *c == "413"),
                    op.request_body.is_some(),
                    "{id}: {codes:?}"
                );
                let declared: BTreeSet<String> = op
                    .parameters
                    .iter()
                    .flatten()
                    .filter(|p| matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Path))
                    .map(|p| p.name.clone())
                    .collect();
                let in_path: BTreeSet<String> = path
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                    .map(String::from)
                    .collect();
                assert_eq!(declared, in_path, "{id}");
                // Every error answers the error shape (/health's 500 is KIP-1017's shape).
                for (code, response) in &op.responses.responses {
                    if !code.starts_with('4') && !code.starts_with('5') || path == "/health" {
                        continue;
                    }
                    let text = serde_json::to_string(response).unwrap();
                    assert!(
                        text.contains("ErrorBody") || text.contains("#/components/responses/"),
                        "{id} {code}: {text}"
                    );
                }
            }
        }
        assert!(json["components"]["schemas"]["ErrorBody"]["properties"]["error_code"].is_object());
    }

    /// Every `$ref` points at something the document has.
    #[test]
    fn references_resolve() {
        fn walk(node: &serde_json::Value, root: &serde_json::Value, seen: &mut usize) {
            match node {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::String(target)) = map.get("$ref") {
                        let pointer = target.strip_prefix('#').expect("a local reference");
                        assert!(root.pointer(pointer).is_some(), "{target} is missing");
                        *seen += 1;
                    }
                    map.values().for_each(|v| walk(v, root, seen));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, root, seen)),
                _ => {}
            }
        }
        let doc = serde_json::to_value(crate::openapi()).unwrap();
        let mut seen = 0;
        walk(&doc, &doc, &mut seen);
        assert!(seen > 50, "{seen} references");
    }
}
