//! The service with a Redis admission gate (`--redis-url`), over real PostgreSQL, MariaDB and
//! SQLite and the machine's Redis: a flash sale sells exactly its supply and the surplus is
//! refused 409 at the gate; orders are admitted line by line; /readyz and /metrics report the
//! gate. And on a private Redis that is killed: fail-closed answers 503 and reports not
//! ready, changing nothing.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, Harness, expect_problem};
use serde_json::json;
use stockguard_redis_gate::{GateConfig, RedisDownPolicy, RedisTarget};

per_backend!(flash_sale_through_the_gate);

fn redis_url() -> String {
    std::env::var("STOCKGUARD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A gate in a namespace of its own; `None` (skipped loudly) when the machine's Redis does
/// not answer and no database is required.
fn gate_config(url: &str) -> Option<GateConfig> {
    let reachable = std::net::TcpStream::connect_timeout(
        &url.trim_start_matches("redis://")
            .parse()
            .expect("a host:port Redis URL"),
        Duration::from_secs(1),
    )
    .is_ok();
    if !reachable && !stockguard_testkit::database_required() {
        eprintln!("\n*** SKIPPED REDIS GATE TEST *** no Redis at {url}\n");
        return None;
    }
    let mut config = GateConfig::new(RedisTarget::parse(url).expect("redis url"));
    let name = stockguard_testkit::unique_name();
    config.namespace = format!("h{}", &name[name.len() - 24..]);
    Some(config)
}

async fn metrics(h: &Harness) -> String {
    h.get("/metrics").await.text().await.unwrap()
}

async fn flash_sale_through_the_gate(backend: Backend) {
    let Some(config) = gate_config(&redis_url()) else {
        return;
    };
    let Some(h) = Harness::start_with(backend, |settings| settings.redis_gate = Some(config)).await else {
        return;
    };
    h.create_sku("flash-http", 3).await;
    let buyers: Vec<_> = (0..12)
        .map(|_| {
            let (client, url) = (h.client.clone(), h.url("/v1/skus/flash-http/deduct"));
            tokio::spawn(async move { client.post(url).json(&json!({"quantity": 1})).send().await })
        })
        .collect();
    let mut statuses: Vec<u16> = Vec::new();
    for buyer in buyers {
        let answer = buyer.await.unwrap().expect("request");
        statuses.push(answer.status().as_u16());
        if answer.status() == 409 {
            let problem: serde_json::Value = answer.json().await.unwrap();
            assert_eq!(
                problem["type"], "urn:stockguard:problem:insufficient_stock",
                "{problem}"
            );
        }
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [[200; 3].as_slice(), [409; 9].as_slice()].concat());
    let stock: serde_json::Value = h.get("/v1/skus/flash-http").await.json().await.unwrap();
    assert_eq!(stock["stock"], 0);

    // An order whose second line is short is refused at the gate and names the line.
    h.create_sku("gate-a", 5).await;
    h.create_sku("gate-b", 1).await;
    let lines = json!([{"sku": "gate-a", "quantity": 1}, {"sku": "gate-b", "quantity": 1}]);
    let placed = h
        .post_json("/v1/orders", json!({"order_id": "gate-http-1", "lines": lines}))
        .await;
    assert_eq!(placed.status(), 200, "{}", placed.text().await.unwrap());
    let short = h
        .post_json("/v1/orders", json!({"order_id": "gate-http-2", "lines": lines}))
        .await;
    let problem = expect_problem(short, 409, "insufficient_stock").await;
    assert_eq!(problem["lines"][0]["sku"], "gate-b", "{problem}");

    let ready: serde_json::Value = h.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["redis"], "up", "{ready}");
    let text = metrics(&h).await;
    for line in [
        // 3 sales, the first order's 2 lines, and the short order's first line (given back).
        "stockguard_gate_requests_total{decision=\"admitted\"} 6",
        "stockguard_gate_requests_total{decision=\"refused\"} 10",
        "stockguard_gate_records_total{end=\"settled\"} 5",
        "stockguard_gate_records_total{end=\"given_back\"} 1",
        "stockguard_gate_redis_up 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    let audit: serde_json::Value = h.get("/v1/audit").await.json().await.unwrap();
    assert_eq!(audit["clean"], true, "{audit}");
    let gate = h.server.state().gate().expect("the service has a gate").clone();
    for sku in ["flash-http", "gate-a", "gate-b"] {
        gate.forget(&sku.parse().unwrap()).await.expect("forget");
    }
    h.shutdown().await;
}

/// Fail-closed with Redis gone: deductions are 503 `unavailable` and change nothing, and the
/// service reports itself not ready; the counters say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fail_closed_when_redis_is_down() {
    let Some(mut redis) = stockguard_testkit::PrivateRedisNode::start_or_skip().await else {
        return;
    };
    let Some(mut config) = gate_config(&redis.node.url()) else {
        return;
    };
    config.when_down = RedisDownPolicy::FailClosed;
    config.redis_timeout = Duration::from_millis(300);
    let Some(h) = Harness::start_with(Backend::Sqlite, |settings| settings.redis_gate = Some(config)).await
    else {
        return;
    };
    h.create_sku("closed", 5).await;
    let sold = h
        .post_json("/v1/skus/closed/deduct", json!({"quantity": 1}))
        .await;
    assert_eq!(sold.status(), 200);

    redis.node.kill();
    let refused = h
        .post_json("/v1/skus/closed/deduct", json!({"quantity": 1}))
        .await;
    expect_problem(refused, 503, "unavailable").await;
    expect_problem(h.get("/readyz").await, 503, "not_ready").await;
    let stock: serde_json::Value = h.get("/v1/skus/closed").await.json().await.unwrap();
    assert_eq!(stock["stock"], 4, "a fail-closed refusal changed nothing");
    let text = metrics(&h).await;
    for line in [
        "stockguard_gate_requests_total{decision=\"refused_redis_down\"} 1",
        "stockguard_gate_redis_up 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    h.shutdown().await;
}
