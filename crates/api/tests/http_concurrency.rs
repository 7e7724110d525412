//! Many concurrent keep-alive clients over HTTP on one hot SKU per strategy, on real
//! PostgreSQL, MariaDB and SQLite: never oversold, every success one ledger row.

#[macro_use]
mod common;

use common::{Backend, Harness};
use serde_json::json;

per_backend!(concurrent_clients_never_oversell);

/// 64 concurrent keep-alive clients hammer one SKU per strategy; stock never goes negative,
/// successes equal deduct ledger rows, and the audit passes.
async fn concurrent_clients_never_oversell(backend: Backend) {
    const CLIENTS: usize = 64;
    const REQUESTS_PER_CLIENT: usize = 5;
    const INITIAL_STOCK: i64 = 150;
    let Some(h) = Harness::start_with(backend, |s| s.pool_size = 8).await else {
        return;
    };
    for strategy in backend.strategies() {
        let sku = format!("hot-{strategy}");
        h.create_sku(&sku, INITIAL_STOCK).await;
        let mut tasks = Vec::new();
        for client in 0..CLIENTS {
            let (http, url) = (h.client.clone(), h.url(&format!("/v1/skus/{sku}/deduct")));
            tasks.push(tokio::spawn(async move {
                let mut statuses = Vec::new();
                for request in 0..REQUESTS_PER_CLIENT {
                    let response = http
                        .post(&url)
                        .header("Idempotency-Key", format!("{strategy}-{client}-{request}"))
                        .json(&json!({"quantity": 1, "strategy": strategy}))
                        .send()
                        .await
                        .expect("request");
                    let status = response.status().as_u16();
                    let body: serde_json::Value = response.json().await.expect("JSON body");
                    statuses.push((status, body["type"].as_str().map(str::to_owned)));
                }
                statuses
            }));
        }
        let mut successes = 0i64;
        // Refusals for contention rather than stock (a lock timeout, optimistic retries
        // given up, a busy database): each leaves a unit unsold that a later request may
        // or may not pick up, so only without them must every unit sell.
        let mut contention_refusals = 0usize;
        for task in tasks {
            for (status, kind) in task.await.unwrap() {
                match status {
                    200 => successes += 1,
                    409 | 503 => {
                        let kind = kind.unwrap_or_default();
                        assert!(
                            kind.ends_with("insufficient_stock")
                                || kind.ends_with("lock_timeout")
                                || kind.ends_with("conflict")
                                || kind.ends_with("unavailable"),
                            "{strategy}: unexpected {status} {kind}"
                        );
                        if !kind.ends_with("insufficient_stock") {
                            contention_refusals += 1;
                        }
                    }
                    other => panic!("{strategy}: unexpected status {other} ({kind:?})"),
                }
            }
        }
        let stock: serde_json::Value = h.get(&format!("/v1/skus/{sku}")).await.json().await.unwrap();
        assert_eq!(
            stock["stock"].as_i64().unwrap(),
            INITIAL_STOCK - successes,
            "{strategy}"
        );
        assert!(successes <= INITIAL_STOCK, "{strategy}: oversold");
        if contention_refusals == 0 {
            // Every refusal said "sold out": 320 requests for 150 units sell every unit.
            assert_eq!(successes, INITIAL_STOCK, "{strategy}: all stock sold");
        }
        let ledger: serde_json::Value = h
            .get(&format!("/v1/skus/{sku}/ledger?limit=1000"))
            .await
            .json()
            .await
            .unwrap();
        let deduct_rows = ledger["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["reason"] == "deduct")
            .count();
        assert_eq!(
            i64::try_from(deduct_rows).unwrap(),
            successes,
            "{strategy}: successes = ledger rows"
        );
    }
    let audit: serde_json::Value = h.get("/v1/audit").await.json().await.unwrap();
    assert_eq!(audit["clean"], true, "{audit}");
    h.shutdown().await;
}
