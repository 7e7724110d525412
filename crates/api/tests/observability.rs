//! What an operator sees of a running `stockguard serve` (the binary, with its stderr piped as
//! a log collector would): an access log line per request carrying its request id, the id
//! returned on every response, no colour codes off a terminal, JSON lines on request, and the
//! process and build metrics.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::served::Served;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn text_access_log_request_ids_and_process_metrics() {
    let served = Served::start(false);
    let client = reqwest::Client::new();
    let create = client
        .post(served.url("/v1/skus"))
        .json(&json!({"sku": "mug", "initial_stock": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 201);
    // A valid client id is kept and returned.
    let deduct = client
        .post(served.url("/v1/skus/mug/deduct"))
        .header("x-request-id", "order-1001.try-1")
        .json(&json!({"quantity": 2, "strategy": "pessimistic"}))
        .send()
        .await
        .unwrap();
    assert_eq!(deduct.status(), 200);
    assert_eq!(deduct.headers()["x-request-id"], "order-1001.try-1");
    // An invalid one (too long, or with characters unsafe in a log line) is replaced, and
    // every response carries an id, whatever its status.
    let mut generated = Vec::new();
    for (method, path, id) in [
        ("GET", "/v1/skus/mug", "x".repeat(129)),
        ("GET", "/v1/skus/mug", "a b".to_owned()),
        ("GET", "/no-such-route", String::new()),
        ("DELETE", "/v1/skus/mug", String::new()),
        ("POST", "/v1/skus/mug/deduct", String::new()),
        ("GET", "/healthz", String::new()),
    ] {
        let mut request = client.request(method.parse().unwrap(), served.url(path));
        if !id.is_empty() {
            request = request.header("x-request-id", &id);
        }
        if method == "POST" {
            request = request.json(&json!([1]));
        }
        let response = request.send().await.unwrap();
        let returned = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(
            returned.len(),
            32,
            "{method} {path} ({}): a generated id",
            response.status()
        );
        assert!(returned.bytes().all(|b| b.is_ascii_hexdigit()), "{returned}");
        generated.push(returned);
    }

    let metrics = client
        .get(served.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
            .parse()
            .unwrap()
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "start {started}, now {now}"
    );
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_open_fds") >= 3.0);
    assert!(value("process_max_fds") >= value("process_open_fds"));
    assert!(value("process_cpu_seconds_total") >= 0.0);
    let build_info = format!(
        "stockguard_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&build_info), 1.0);

    let lines = served.stop();
    let log = lines.join("\n");
    assert!(!log.contains('\u{1b}'), "colour codes off a terminal:\n{log}");
    let access = |needle: &str| {
        lines
            .iter()
            .find(|line| line.contains("stockguard::access") && line.contains(needle))
            .unwrap_or_else(|| panic!("no access line with {needle}:\n{log}"))
            .clone()
    };
    let deduct_line = access("request_id=order-1001.try-1");
    for part in [
        "INFO",
        "sku=mug",
        "strategy=pessimistic",
        "attempts=1",
        "outcome=ok",
        "method=POST",
        "route=/v1/skus/{sku}/deduct ",
        "status=200",
        "latency_ms=",
    ] {
        assert!(deduct_line.contains(part), "{part} missing: {deduct_line}");
    }
    for (id, route_status) in generated.iter().zip([
        "route=/v1/skus/{sku} status=200",
        "route=/v1/skus/{sku} status=200",
        "route=unmatched status=404",
        "route=/v1/skus/{sku} status=405",
        "route=/v1/skus/{sku}/deduct status=422",
        "route=/healthz status=200",
    ]) {
        let line = access(&format!("request_id={id}"));
        assert!(line.contains(route_status), "{route_status} missing: {line}");
    }
    assert!(!log.contains(&"x".repeat(129)), "the over-long id was not logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line() {
    let served = Served::start(true);
    let client = reqwest::Client::new();
    let create = client
        .post(served.url("/v1/skus"))
        .header("x-request-id", "json-create")
        .json(&json!({"sku": "cup", "initial_stock": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 201);
    let lines = served.stop();
    let events: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let access = events
        .iter()
        .find(|e| e["target"] == "stockguard::access" && e["span"]["request_id"] == "json-create")
        .unwrap_or_else(|| panic!("no access event:\n{}", lines.join("\n")));
    assert_eq!(access["level"], "INFO");
    assert_eq!(access["method"], "POST");
    assert_eq!(access["route"], "/v1/skus");
    assert_eq!(access["status"], 201);
    assert!(access["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(access["span"]["sku"], "cup");
}
