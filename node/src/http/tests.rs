//! In-process checks of the routing itself: the OpenAPI document and the
//! routes served are the same set, and what no handler takes answers in
//! the one error shape. Handlers are not run for real here (there is no
//! node behind them); `tests/tests/node/openapi.rs` does that.

use actix_web::http::{Method, StatusCode};
use actix_web::test as actix_test;
use actix_web::App;
use troupe_protocol::ErrorBody;

use super::openapi::{document, linked};
use super::routes;

/// Every (method, path) the document lists, with path parameters filled in.
fn documented() -> Vec<(Method, String)> {
    let (doc, _) = document();
    let mut all = Vec::new();
    for (path, item) in &doc.paths.paths {
        let concrete = path
            .replace("{path}", "node/ingestor")
            .replace("{id}", "some-id");
        for (method, served) in [
            (Method::GET, item.get.is_some()),
            (Method::HEAD, item.head.is_some()),
            (Method::POST, item.post.is_some()),
            (Method::PUT, item.put.is_some()),
            (Method::DELETE, item.delete.is_some()),
            (Method::PATCH, item.patch.is_some()),
        ] {
            if served {
                assert!(
                    !concrete.contains('{'),
                    "a path parameter to fill in: {path}"
                );
                all.push((method, concrete.clone()));
            }
        }
    }
    all
}

/// Whether a response came from the fallback for what no handler takes.
fn from_fallback(status: StatusCode, body: &[u8]) -> bool {
    let error: Option<ErrorBody> = serde_json::from_slice(body).ok();
    status == StatusCode::METHOD_NOT_ALLOWED
        || (status == StatusCode::NOT_FOUND
            && error.is_some_and(|e| e.detail.starts_with("no route for")))
}

#[actix_web::test]
async fn every_documented_operation_is_served() {
    let app = actix_test::init_service(App::new().configure(routes)).await;
    let operations = documented();
    assert!(
        operations.len() > 30,
        "only {} operations",
        operations.len()
    );
    for (method, path) in operations {
        let req = actix_test::TestRequest::default()
            .method(method.clone())
            .uri(&path)
            .to_request();
        // Without a node behind it a handler fails (500), but it is reached.
        let response = actix_test::try_call_service(&app, req).await;
        let (status, body) = match response {
            Ok(response) => {
                let status = response.status();
                (status, actix_test::read_body(response).await.to_vec())
            }
            Err(e) => (e.as_response_error().status_code(), Vec::new()),
        };
        assert!(
            !from_fallback(status, &body),
            "{method} {path} is documented but not served: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn every_registered_handler_is_one_documented_operation() {
    // A handler registered twice, or two on one method and path, would be
    // merged into one operation and shadowed in routing.
    let (_, registered) = document();
    assert_eq!(registered, documented().len());
}

async fn error_of(method: Method, path: &str) -> (StatusCode, Option<String>, ErrorBody) {
    let app = actix_test::init_service(App::new().configure(routes)).await;
    let req = actix_test::TestRequest::default()
        .method(method)
        .uri(path)
        .to_request();
    let response = actix_test::call_service(&app, req).await;
    let status = response.status();
    let allow = response
        .headers()
        .get("Allow")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = actix_test::read_body(response).await;
    let error = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "not the error body ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, allow, error)
}

#[actix_web::test]
async fn an_unknown_route_is_a_404_in_the_error_shape() {
    let (status, _, error) = error_of(Method::GET, "/v1/nothing-here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error.error, "not_found");
    assert!(
        error.detail.contains("/v1/nothing-here"),
        "{}",
        error.detail
    );
}

#[actix_web::test]
async fn a_wrong_method_is_a_405_naming_the_allowed_ones() {
    let (status, allow, error) = error_of(Method::PATCH, "/v1/tasks").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(allow.as_deref(), Some("GET, POST"));
    assert_eq!(error.error, "method_not_allowed");

    let (status, allow, _) = error_of(Method::GET, "/v1/actors/node/ingestor/crash").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(allow.as_deref(), Some("POST"));

    let (status, allow, _) = error_of(Method::POST, "/v1/tasks/some-id").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(allow.as_deref(), Some("GET, DELETE"));
}

#[test]
fn the_document_is_openapi_3_1_with_the_bearer_scheme_and_error_body() {
    let (doc, _) = document();
    let json = serde_json::to_value(&doc).unwrap_or_default();
    assert!(json["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1")));
    assert_eq!(
        json["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(json["components"]["schemas"]["ErrorBody"].is_object());
    // A change may be refused for its token; a probe never is.
    let submit = &json["paths"]["/v1/tasks"]["post"]["responses"];
    for status in ["400", "401", "403", "413", "422", "429", "503"] {
        assert!(submit[status].is_object(), "POST /v1/tasks lacks {status}");
    }
    assert!(json["paths"]["/health"]["get"]["responses"]["401"].is_null());
    assert!(json["paths"]["/v1/tasks"]["get"]["responses"]["403"].is_null());
}

#[test]
fn links_name_operations_that_exist() {
    let json = linked(&document().0).expect("the document serializes");
    let mut ids = Vec::new();
    let mut targets = Vec::new();
    for item in json["paths"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
    {
        for operation in item.as_object().into_iter().flat_map(|o| o.values()) {
            ids.extend(operation["operationId"].as_str().map(str::to_owned));
            for response in operation["responses"]
                .as_object()
                .into_iter()
                .flat_map(|r| r.values())
            {
                for link in response["links"]
                    .as_object()
                    .into_iter()
                    .flat_map(|l| l.values())
                {
                    targets.extend(link["operationId"].as_str().map(str::to_owned));
                }
            }
        }
    }
    assert!(targets.len() >= 8, "{targets:?}");
    for target in targets {
        assert!(
            ids.contains(&target),
            "a link to {target}, which no operation is"
        );
    }
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "operation ids repeat: {ids:?}");
}

/// Every `.rs` file under `dir`.
fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_route_is_registered_but_through_the_document() {
    // actix can register a route without utoipa ever seeing it; the
    // document would then miss it. Routes::add is the one way in.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(
        files.len() > 10,
        "{} files under {}",
        files.len(),
        root.display()
    );
    let bypasses = [".route(", "web::resource(", "web::scope(", ".service("];
    for file in files.iter().filter(|f| !f.ends_with("http/tests.rs")) {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let allowed = file.ends_with("http/openapi.rs");
        for (n, line) in text.lines().enumerate() {
            let found = bypasses.iter().find(|b| line.contains(*b));
            assert!(
                found.is_none() || (allowed && line.contains("self.config.service(handler)")),
                "{}:{}: {} registers a route the OpenAPI document does not see; \
                 give the handler a route macro and #[utoipa::path] and add it in \
                 http::register",
                file.display(),
                n + 1,
                line.trim()
            );
        }
    }
}
