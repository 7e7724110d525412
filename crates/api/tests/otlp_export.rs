//! With the `otlp` feature (`cargo test -p stockguard-api --features otlp --test otlp_export`):
//! `stockguard serve --otlp-endpoint` exports the request and deduction spans over OTLP/HTTP
//! (protobuf) to a collector, here a tiny receiver on loopback that keeps every body POSTed to
//! /v1/traces, and flushes the last spans on a graceful shutdown.

#![cfg(feature = "otlp")]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::served::{Served, stockguard_command};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::{AnyValue as AnyValueBox, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::json;

/// The bodies a receiver was sent, in arrival order.
type Received = Arc<Mutex<Vec<Bytes>>>;

/// An OTLP/HTTP trace receiver on a free loopback port: it answers every POST to /v1/traces
/// with 200 and keeps the body. Returns its base URL and what it received.
async fn start_receiver() -> (String, Received) {
    async fn keep(State(received): State<Received>, headers: HeaderMap, body: Bytes) -> StatusCode {
        assert_eq!(
            headers["content-type"], "application/x-protobuf",
            "OTLP/HTTP protobuf"
        );
        received.lock().unwrap().push(body);
        StatusCode::OK
    }
    let received = Received::default();
    let app = Router::new()
        .route("/v1/traces", post(keep))
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, received)
}

/// A span attribute's value as text (string, integer or boolean).
fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value {
        AnyValueBox {
            value: Some(AnyValue::StringValue(text)),
        } => Some(text.clone()),
        AnyValueBox {
            value: Some(AnyValue::IntValue(number)),
        } => Some(number.to_string()),
        AnyValueBox {
            value: Some(AnyValue::BoolValue(flag)),
        } => Some(flag.to_string()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn request_and_deduction_spans_reach_the_collector_by_shutdown() {
    let (collector, received) = start_receiver().await;
    // A schedule far beyond the test's length: every span must arrive through the flush at
    // shutdown, so losing the last batch on exit fails here rather than passing by timing.
    let served = Served::start_with(
        &[
            "--otlp-endpoint",
            &collector,
            "--otlp-service-name",
            "stockguard-otlp-test",
        ],
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );
    let client = reqwest::Client::new();
    let create = client
        .post(served.url("/v1/skus"))
        .json(&json!({"sku": "otlp-mug", "initial_stock": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 201);
    let deduct = client
        .post(served.url("/v1/skus/otlp-mug/deduct"))
        .header("x-request-id", "otlp-order-7")
        .json(&json!({"quantity": 2, "strategy": "optimistic"}))
        .send()
        .await
        .unwrap();
    assert_eq!(deduct.status(), 200);
    let log = served.stop().join("\n");

    let bodies = received.lock().unwrap().clone();
    assert!(!bodies.is_empty(), "nothing exported; the service said:\n{log}");
    let mut spans: Vec<Span> = Vec::new();
    let mut service_names = Vec::new();
    for body in &bodies {
        let request = ExportTraceServiceRequest::decode(body.as_ref()).expect("an OTLP protobuf body");
        for resource_spans in request.resource_spans {
            let resource = resource_spans.resource.unwrap_or_default();
            service_names.push(attribute(&resource.attributes, "service.name"));
            for scope_spans in resource_spans.scope_spans {
                spans.extend(scope_spans.spans);
            }
        }
    }
    assert!(
        service_names
            .iter()
            .all(|name| name.as_deref() == Some("stockguard-otlp-test")),
        "{service_names:?}"
    );
    let request_span = spans
        .iter()
        .find(|span| {
            span.name == "request"
                && attribute(&span.attributes, "request_id").as_deref() == Some("otlp-order-7")
        })
        .unwrap_or_else(|| {
            let names: Vec<_> = spans
                .iter()
                .map(|span| (&span.name, attribute(&span.attributes, "request_id")))
                .collect();
            panic!("no request span with request_id otlp-order-7 among {names:?}\n{log}")
        });
    let fields: HashMap<&str, Option<String>> = ["sku", "strategy", "attempts", "outcome"]
        .into_iter()
        .map(|key| (key, attribute(&request_span.attributes, key)))
        .collect();
    assert_eq!(fields["sku"].as_deref(), Some("otlp-mug"), "{fields:?}");
    assert_eq!(fields["strategy"].as_deref(), Some("optimistic"), "{fields:?}");
    assert_eq!(fields["attempts"].as_deref(), Some("1"), "{fields:?}");
    assert_eq!(fields["outcome"].as_deref(), Some("ok"), "{fields:?}");
    // The access log line travels as an event of the request span.
    assert!(
        request_span.events.iter().any(|event| event.name == "request"
            && attribute(&event.attributes, "status").as_deref() == Some("200")),
        "{:?}",
        request_span.events
    );
    // The engine's deduction span is the request span's child, in the same trace.
    let deduct_span = spans
        .iter()
        .find(|span| span.name == "deduct" && span.parent_span_id == request_span.span_id)
        .unwrap_or_else(|| panic!("no deduct span under the request span\n{log}"));
    assert_eq!(deduct_span.trace_id, request_span.trace_id);
    assert_eq!(
        attribute(&deduct_span.attributes, "sku").as_deref(),
        Some("otlp-mug")
    );
    assert_eq!(
        attribute(&deduct_span.attributes, "outcome").as_deref(),
        Some("committed")
    );
    assert!(log.contains("OTLP: the last spans are exported"), "{log}");
}

#[test]
fn serve_refuses_an_unusable_endpoint_at_start_up() {
    let file = stockguard_testkit::TestSqliteFile::new();
    for (endpoint, reason) in [
        ("ftp://127.0.0.1:4318", "the scheme must be http://"),
        ("https://collector.example:4318", "https is not supported"),
        ("127.0.0.1 4318", "not a URL"),
    ] {
        let output = stockguard_command()
            .args(["serve", "--bind", "127.0.0.1:0", "--database-url"])
            .arg(file.path())
            .args(["--otlp-endpoint", endpoint])
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{endpoint}: refused as configuration"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("invalid OTLP endpoint") && stderr.contains(reason),
            "{endpoint}: {stderr}"
        );
        assert!(!file.path().exists(), "refused before touching the database");
    }
}
