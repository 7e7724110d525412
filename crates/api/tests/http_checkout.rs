//! The checkout endpoints over real PostgreSQL, MariaDB and SQLite: `POST /v1/orders` (every
//! status it documents, the refusal bodies that name lines, replay by order id, the orders
//! metric, the audit's order check) and `POST /v1/skus/{sku}/adjustments`.

#[macro_use]
mod common;

use common::{Backend, Harness, execute_sql, expect_problem};
use serde_json::json;

per_backend!(order_statuses, audit_catches_an_order_missing_a_line, adjustments);

async fn order_statuses(backend: Backend) {
    let Some(h) = Harness::start(backend).await else {
        return;
    };
    h.create_sku("cart-a", 5).await;
    h.create_sku("cart-b", 2).await;

    // 200: duplicate lines summed, one line per SKU in SKU order.
    let body = json!({"order_id": "ord-1", "strategy": "locked",
        "lines": [{"sku": "cart-b", "quantity": 1}, {"sku": "cart-a", "quantity": 1}, {"sku": "cart-a", "quantity": 2}]});
    let placed = h.post_json("/v1/orders", body.clone()).await;
    assert_eq!(placed.status(), 200);
    assert_eq!(placed.headers()["idempotency-key"], "ord-1");
    let receipt: serde_json::Value = placed.json().await.unwrap();
    assert_eq!(receipt["replayed"], false);
    assert_eq!(receipt["strategy"], "locked");
    let lines: Vec<_> = receipt["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["sku"].as_str().unwrap().to_owned(),
                l["quantity"].as_i64().unwrap(),
                l["remaining"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![("cart-a".to_owned(), 3, 2), ("cart-b".to_owned(), 1, 1)]
    );

    // 200 replay, with the header.
    let replay = h.post_json("/v1/orders", body).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let again: serde_json::Value = replay.json().await.unwrap();
    assert_eq!(again["lines"], receipt["lines"]);

    // 409 order_mismatch, naming the differing line.
    let reused = h
        .post_json(
            "/v1/orders",
            json!({"order_id": "ord-1", "lines": [{"sku": "cart-a", "quantity": 3}]}),
        )
        .await;
    let problem = expect_problem(reused, 409, "order_mismatch").await;
    assert_eq!(
        problem["mismatches"],
        json!([{"sku": "cart-b", "stored": 1, "given": 0}])
    );

    // 409 insufficient_stock, naming every short line.
    let short = h
        .post_json(
            "/v1/orders",
            json!({"order_id": "ord-2",
            "lines": [{"sku": "cart-a", "quantity": 3}, {"sku": "cart-b", "quantity": 2}]}),
        )
        .await;
    let problem = expect_problem(short, 409, "insufficient_stock").await;
    assert_eq!(
        problem["lines"],
        json!([{"sku": "cart-a", "requested": 3, "available": 2}, {"sku": "cart-b", "requested": 2, "available": 1}])
    );

    // 404 naming every unknown SKU.
    let unknown = h
        .post_json("/v1/orders", json!({"order_id": "ord-3",
            "lines": [{"sku": "nope-2", "quantity": 1}, {"sku": "cart-a", "quantity": 1}, {"sku": "nope-1", "quantity": 1}]}))
        .await;
    let problem = expect_problem(unknown, 404, "not_found").await;
    assert_eq!(problem["skus"], json!(["nope-1", "nope-2"]));

    // 422: no lines, too many, a bad id, a bad line.
    for bad in [
        json!({"order_id": "ord-4", "lines": []}),
        json!({"order_id": "ord-4", "lines": (0..101).map(|i| json!({"sku": format!("s{i}"), "quantity": 1})).collect::<Vec<_>>()}),
        json!({"order_id": "has space", "lines": [{"sku": "cart-a", "quantity": 1}]}),
        json!({"order_id": "ord-4", "lines": [{"sku": "cart-a", "quantity": 0}]}),
        json!({"order_id": "ord-4", "lines": [{"sku": "cart-a", "quantity": 1}], "strategy": "sharded"}),
    ] {
        expect_problem(h.post_json("/v1/orders", bad).await, 422, "invalid_input").await;
    }

    // Nothing the refusals touched changed.
    let a: serde_json::Value = h.get("/v1/skus/cart-a").await.json().await.unwrap();
    let b: serde_json::Value = h.get("/v1/skus/cart-b").await.json().await.unwrap();
    assert_eq!((a["stock"].as_i64(), b["stock"].as_i64()), (Some(2), Some(1)));
    let audit: serde_json::Value = h.get("/v1/audit").await.json().await.unwrap();
    assert_eq!(audit["clean"], true, "{audit}");
    assert_eq!(audit["orders_checked"], 1, "{audit}");

    // A coalesced order, alone in its batch, answers like any other.
    let coalesced = h
        .post_json(
            "/v1/orders",
            json!({"order_id": "ord-5", "lines": [{"sku": "cart-b", "quantity": 1}], "strategy": "coalesced"}),
        )
        .await;
    assert_eq!(coalesced.status(), 200);
    let receipt: serde_json::Value = coalesced.json().await.unwrap();
    assert_eq!(receipt["strategy"], "coalesced");
    assert_eq!(receipt["lines"][0]["remaining"], 0);

    let metrics = h.get("/metrics").await.text().await.unwrap();
    for series in [
        "stockguard_orders_total{strategy=\"coalesced\",outcome=\"ok\"} 1",
        "stockguard_orders_total{strategy=\"locked\",outcome=\"ok\"} 1",
        "stockguard_orders_total{strategy=\"locked\",outcome=\"replayed\"} 1",
        "stockguard_orders_total{strategy=\"guarded\",outcome=\"order_mismatch\"} 1",
        "stockguard_orders_total{strategy=\"guarded\",outcome=\"insufficient_stock\"} 1",
        "stockguard_orders_total{strategy=\"guarded\",outcome=\"not_found\"} 1",
    ] {
        assert!(metrics.contains(series), "missing {series}");
    }
    h.shutdown().await;
}

/// The audit's order check catches a planted fault: an order that claims one line more than
/// its ledger rows (as a bug that applied only some lines would leave it), and ledger rows of
/// an order that was never placed.
async fn audit_catches_an_order_missing_a_line(backend: Backend) {
    let Some(h) = Harness::start(backend).await else {
        return;
    };
    h.create_sku("aud-a", 5).await;
    h.create_sku("aud-b", 5).await;
    let placed = h
        .post_json(
            "/v1/orders",
            json!({"order_id": "aud-1",
            "lines": [{"sku": "aud-a", "quantity": 1}, {"sku": "aud-b", "quantity": 1}]}),
        )
        .await;
    assert_eq!(placed.status(), 200);
    let audit: serde_json::Value = h.get("/v1/audit").await.json().await.unwrap();
    assert_eq!(
        (audit["clean"].as_bool(), audit["orders_checked"].as_u64()),
        (Some(true), Some(1)),
        "{audit}"
    );

    execute_sql(
        &h.db,
        "UPDATE inventory_order SET line_count = line_count + 1 WHERE order_id = 'aud-1'",
    )
    .await;
    let audit: serde_json::Value = h.get("/v1/audit").await.json().await.unwrap();
    assert_eq!(audit["clean"], false, "{audit}");
    assert_eq!(
        audit["incomplete_orders"],
        json!([{"order_id": "aud-1", "line_count": 3, "ledger_rows": 2}])
    );
    assert_eq!(
        audit["discrepancies"],
        json!([]),
        "the SKUs still reconcile: only the order check sees it"
    );

    execute_sql(
        &h.db,
        "UPDATE inventory_order SET order_id = 'aud-renamed' WHERE order_id = 'aud-1'",
    )
    .await;
    let audit: serde_json::Value = h.get("/v1/audit").await.json().await.unwrap();
    assert_eq!(
        audit["incomplete_orders"],
        json!([
            {"order_id": "aud-1", "line_count": 0, "ledger_rows": 2},
            {"order_id": "aud-renamed", "line_count": 3, "ledger_rows": 0},
        ])
    );
    h.shutdown().await;
}

async fn adjustments(backend: Backend) {
    let Some(h) = Harness::start(backend).await else {
        return;
    };
    h.create_sku("adj-a", 5).await;
    let send = |key: Option<&'static str>, body: serde_json::Value| {
        let mut request = h.client.post(h.url("/v1/skus/adj-a/adjustments")).json(&body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send()
    };
    let returned = send(
        Some("ret-1"),
        json!({"quantity": 2, "reason": "return", "reference": "RMA-9"}),
    )
    .await
    .unwrap();
    assert_eq!(returned.status(), 200);
    let receipt: serde_json::Value = returned.json().await.unwrap();
    assert_eq!(
        (
            &receipt["stock_after"],
            &receipt["reason"],
            &receipt["reference"],
            &receipt["replayed"]
        ),
        (&json!(7), &json!("return"), &json!("RMA-9"), &json!(false))
    );
    let replay = send(
        Some("ret-1"),
        json!({"quantity": 2, "reason": "return", "reference": "RMA-9"}),
    )
    .await
    .unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let reused = send(Some("ret-1"), json!({"quantity": -1, "reason": "damage"}))
        .await
        .unwrap();
    expect_problem(reused, 422, "idempotency_key_reused").await;
    let too_much = send(None, json!({"quantity": -10, "reason": "damage"}))
        .await
        .unwrap();
    let problem = expect_problem(too_much, 409, "insufficient_stock").await;
    assert_eq!(
        (problem["available"].as_i64(), problem["requested"].as_i64()),
        (Some(7), Some(10))
    );
    for bad in [
        json!({"quantity": 1, "reason": "damage"}),
        json!({"quantity": -1, "reason": "return"}),
        json!({"quantity": 0, "reason": "recount"}),
        json!({"quantity": 1, "reason": "theft"}),
        json!({"quantity": 1, "reason": "recount", "reference": ""}),
    ] {
        expect_problem(send(None, bad).await.unwrap(), 422, "invalid_input").await;
    }
    let counted = send(None, json!({"quantity": -7, "reason": "recount"}))
        .await
        .unwrap();
    assert_eq!(counted.status(), 200);
    let missing = h
        .post_json(
            "/v1/skus/adj-none/adjustments",
            json!({"quantity": 1, "reason": "restock"}),
        )
        .await;
    expect_problem(missing, 404, "not_found").await;

    let ledger: serde_json::Value = h.get("/v1/skus/adj-a/ledger").await.json().await.unwrap();
    let rows: Vec<_> = ledger["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["delta"].clone(),
                r["reason"].clone(),
                r["adjustment"].clone(),
                r["reference"].clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (json!(2), json!("adjust"), json!("return"), json!("RMA-9")),
            (json!(-7), json!("adjust"), json!("recount"), json!(null)),
        ]
    );
    let audit: serde_json::Value = h.get("/v1/audit").await.json().await.unwrap();
    assert_eq!(audit["clean"], true, "{audit}");
    h.shutdown().await;
}
