//! 503s (lock timeout, pool exhaustion, load shedding, request timeout), the opaque 500 and
//! graceful shutdown, each provoked for real: a separate connection holds the SKU's row lock
//! (SQLite: the write lock) so that requests genuinely wait.

#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, Harness, LockHolder, execute_sql, expect_problem};
use serde_json::json;

per_backend!(
    lock_timeout_is_503_with_retry_after,
    load_shedding_is_503,
    request_timeout_is_503,
    pool_exhaustion_is_503,
    internal_error_is_opaque_500,
    graceful_shutdown_finishes_in_flight_requests,
);

fn assert_retry_after(response: &reqwest::Response) {
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
}

async fn lock_timeout_is_503_with_retry_after(backend: Backend) {
    let Some(h) = Harness::start_with(backend, |s| s.lock_timeout = Duration::from_millis(300)).await else {
        return;
    };
    h.create_sku("busy", 5).await;
    let holder = LockHolder::hold(&h.db, "busy").await;
    for strategy in ["pessimistic", "no_wait"] {
        let response = h
            .post_json(
                "/v1/skus/busy/deduct",
                json!({"quantity": 1, "strategy": strategy}),
            )
            .await;
        assert_retry_after(&response);
        let body = expect_problem(response, 503, "lock_timeout").await;
        assert!(body["detail"].as_str().unwrap().contains("nothing was changed"));
    }
    holder.release().await;
    let stock: serde_json::Value = h.get("/v1/skus/busy").await.json().await.unwrap();
    assert_eq!(stock["stock"], 5, "refused requests changed nothing");
    h.shutdown().await;
}

async fn load_shedding_is_503(backend: Backend) {
    let Some(h) = Harness::start_with(backend, |s| {
        s.concurrency_limit = 1;
        s.lock_timeout = Duration::from_secs(10);
    })
    .await
    else {
        return;
    };
    h.create_sku("queue", 5).await;
    let holder = LockHolder::hold(&h.db, "queue").await;
    let waiting = tokio::spawn({
        let (client, url) = (h.client.clone(), h.url("/v1/skus/queue/deduct"));
        async move {
            client
                .post(url)
                .json(&json!({"quantity": 1, "strategy": "pessimistic"}))
                .send()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = h.get("/v1/skus/queue").await;
    assert_retry_after(&shed);
    expect_problem(shed, 503, "overloaded").await;
    // Operations endpoints are outside the limit.
    assert_eq!(h.get("/healthz").await.status(), 200);
    holder.release().await;
    assert_eq!(
        waiting.await.unwrap().status(),
        200,
        "the in-flight request completes"
    );
    assert_eq!(h.get("/v1/skus/queue").await.status(), 200, "capacity is back");
    let metrics = h.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("stockguard_http_shed_total 1"), "{metrics}");
    h.shutdown().await;
}

/// The engine's deadline sits inside the HTTP request timeout, so the engine gives the answer,
/// and it is true: a request still waiting for its lock when time runs out sent nothing that
/// could commit (definite 503 `unavailable`); a single-statement write already sent when time
/// runs out is `outcome_unknown`, with the key that resolves it.
async fn request_timeout_is_503(backend: Backend) {
    let Some(h) = Harness::start_with(backend, |s| {
        s.request_timeout = Duration::from_millis(300);
        s.lock_timeout = Duration::from_secs(10);
    })
    .await
    else {
        return;
    };
    h.create_sku("slow", 5).await;
    let holder = LockHolder::hold(&h.db, "slow").await;
    let response = h
        .post_json(
            "/v1/skus/slow/deduct",
            json!({"quantity": 1, "strategy": "pessimistic"}),
        )
        .await;
    assert_retry_after(&response);
    let body = expect_problem(response, 503, "unavailable").await;
    assert!(
        body["detail"].as_str().unwrap().contains("nothing was changed"),
        "{body}"
    );
    let written = h
        .client
        .post(h.url("/v1/skus/slow/deduct"))
        .header("idempotency-key", "slow-guarded-1")
        .json(&json!({"quantity": 1, "strategy": "guarded"}))
        .send()
        .await
        .expect("request");
    assert_retry_after(&written);
    let body = expect_problem(written, 503, "outcome_unknown").await;
    assert_eq!(body["idempotency_key"], "slow-guarded-1", "{body}");
    holder.release().await;
    // The key resolves it: replayed if the lost write committed once the lock was free,
    // applied now otherwise; either way exactly one ledger row.
    let retried = h
        .client
        .post(h.url("/v1/skus/slow/deduct"))
        .header("idempotency-key", "slow-guarded-1")
        .json(&json!({"quantity": 1, "strategy": "guarded"}))
        .send()
        .await
        .expect("request");
    assert_eq!(retried.status(), 200);
    let ledger: serde_json::Value = h.get("/v1/skus/slow/ledger").await.json().await.unwrap();
    let rows = ledger["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["idempotency_key"] == "slow-guarded-1")
        .count();
    assert_eq!(rows, 1, "{ledger}");
    let stock: serde_json::Value = h.get("/v1/skus/slow").await.json().await.unwrap();
    assert_eq!(stock["stock"], 4, "one unit, once");
    h.shutdown().await;
}

async fn pool_exhaustion_is_503(backend: Backend) {
    let Some(h) = Harness::start_with(backend, |s| {
        s.pool_size = 1;
        s.acquire_timeout = Duration::from_millis(300);
        s.lock_timeout = Duration::from_secs(10);
    })
    .await
    else {
        return;
    };
    h.create_sku("scarce", 5).await;
    let holder = LockHolder::hold(&h.db, "scarce").await;
    // This request takes the only pooled connection and waits for the row lock with it.
    let waiting = tokio::spawn({
        let (client, url) = (h.client.clone(), h.url("/v1/skus/scarce/deduct"));
        async move {
            client
                .post(url)
                .json(&json!({"quantity": 1, "strategy": "pessimistic"}))
                .send()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let starved = h
        .post_json("/v1/skus/scarce/restock", json!({"quantity": 1}))
        .await;
    assert_retry_after(&starved);
    let body = expect_problem(starved, 503, "unavailable").await;
    assert!(body["detail"].as_str().unwrap().contains("pool"), "{body}");
    holder.release().await;
    assert_eq!(waiting.await.unwrap().status(), 200);
    h.shutdown().await;
}

async fn internal_error_is_opaque_500(backend: Backend) {
    let Some(h) = Harness::start(backend).await else {
        return;
    };
    h.create_sku("broken", 5).await;
    // A schema the code does not expect: an internal error, not the client's fault.
    execute_sql(
        &h.db,
        "ALTER TABLE inventory_ledger RENAME TO inventory_ledger_moved",
    )
    .await;
    let response = h
        .post_json("/v1/skus/broken/deduct", json!({"quantity": 1}))
        .await;
    let body = expect_problem(response, 500, "internal").await;
    let text = body.to_string().to_lowercase();
    for leak in ["inventory_ledger", "relation", "table", "sql", "exist"] {
        assert!(!text.contains(leak), "the 500 body leaks {leak:?}: {text}");
    }
    h.shutdown().await;
}

async fn graceful_shutdown_finishes_in_flight_requests(backend: Backend) {
    let Some(h) = Harness::start_with(backend, |s| s.lock_timeout = Duration::from_secs(10)).await else {
        return;
    };
    h.create_sku("last-call", 5).await;
    let holder = LockHolder::hold(&h.db, "last-call").await;
    let in_flight = tokio::spawn({
        let (client, url) = (h.client.clone(), h.url("/v1/skus/last-call/deduct"));
        async move {
            client
                .post(url)
                .json(&json!({"quantity": 2, "strategy": "pessimistic"}))
                .send()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let common::Harness { server, db, base, .. } = h;
    let stopping = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown waits for the in-flight deduction"
    );
    // New connections are refused once shutdown began.
    let fresh = reqwest::Client::new();
    assert!(
        fresh.get(format!("{base}/healthz")).send().await.is_err(),
        "no longer accepting"
    );
    holder.release().await;
    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), 200, "the in-flight deduction finished");
    stopping.await.unwrap().expect("clean shutdown");
    // The deduction is durable: a new server on the same database sees it.
    let settings = stockguard_api::Settings::for_database(db.target());
    let store = stockguard_api::open_store(&settings).await.unwrap();
    let stock =
        stockguard_core::InventoryStore::stock(&store, &stockguard_core::SkuId::parse("last-call").unwrap())
            .await
            .unwrap();
    assert_eq!(stock.stock, 3);
    stockguard_core::InventoryStore::close(&store).await;
}
