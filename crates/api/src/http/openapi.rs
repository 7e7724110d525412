//! The OpenAPI document generated from the handlers, and the routes that serve it and the
//! interactive docs page.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::dto::StrategyName;
use super::handlers;
use crate::problem::ProblemDetails;

/// `GET /openapi.json`: the document as checked into `docs/openapi.json`.
pub(crate) async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        openapi_pretty_json(),
    )
        .into_response()
}

/// Where the interactive docs page is served (`/docs` redirects to `/docs/`).
pub const DOCS_PATH: &str = "/docs";

/// Swagger UI at [`DOCS_PATH`], from files compiled into the binary (nothing is fetched from
/// a CDN, so the page works offline), reading the document `/openapi.json` serves.
pub(crate) fn docs_ui() -> SwaggerUi {
    // The online validator badge would send the spec's URL to swagger.io: off.
    SwaggerUi::new(DOCS_PATH).config(Config::from("/openapi.json").validator_url("none"))
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, generated from the operations in [`handlers`].
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "stockguard",
        description = "Oversell-proof inventory deduction. Errors are application/problem+json (RFC 9457) with a stable `type` of the form urn:stockguard:problem:<kind>. Mutations need `Authorization: Bearer <token>` when the server has a token configured.",
    ),
    paths(
        handlers::create_sku,
        handlers::get_stock,
        handlers::restock,
        handlers::deduct,
        handlers::ledger,
        super::orders::place_order,
        super::holds::reserve,
        super::holds::get_hold,
        super::holds::confirm,
        super::holds::release,
        super::adjustments::adjust,
        handlers::audit,
        handlers::healthz,
        handlers::readyz,
        handlers::metrics_text,
    ),
    components(schemas(ProblemDetails, StrategyName)),
    modifiers(&BearerAuth),
    tags(
        (name = "inventory", description = "Stock, deductions and the ledger"),
        (name = "orders", description = "Multi-line orders: all lines or none"),
        (name = "holds", description = "Holds while the customer pays: confirm, release, or expire, once"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// The spec as checked into `docs/openapi.json` (pretty JSON, trailing newline).
pub fn openapi_pretty_json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    text.push('\n');
    text
}
