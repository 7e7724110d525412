//! The hold endpoints over real PostgreSQL, MariaDB and SQLite: `POST /v1/holds`,
//! `GET /v1/holds/{id}`, `POST /v1/holds/{id}/confirm` and `/release` (every status they
//! document, replay by hold id, the refusal bodies), `reserved` in the stock read, the holds
//! metric, and the audit's hold checks catching planted faults.

#[macro_use]
mod common;

use common::{Backend, Harness, execute_sql, expect_problem};
use serde_json::json;

per_backend!(hold_lifecycle, audit_catches_a_hold_resolved_twice);

async fn hold_lifecycle(backend: Backend) {
    let Some(h) = Harness::start(backend).await else {
        return;
    };
    h.create_sku("hold-a", 5).await;
    h.create_sku("hold-b", 2).await;

    let body = json!({"hold_id": "chk-1", "ttl_s": 600,
        "lines": [{"sku": "hold-b", "quantity": 1}, {"sku": "hold-a", "quantity": 2}, {"sku": "hold-a", "quantity": 1}]});
    let placed = h.post_json("/v1/holds", body.clone()).await;
    assert_eq!(placed.status(), 200);
    assert_eq!(placed.headers()["idempotency-key"], "chk-1");
    let hold: serde_json::Value = placed.json().await.unwrap();
    assert_eq!(
        (&hold["state"], &hold["replayed"]),
        (&json!("active"), &json!(false))
    );
    assert_eq!(
        hold["lines"],
        json!([
            {"sku": "hold-a", "quantity": 3, "confirmed": 0, "returned": 0, "available": 2},
            {"sku": "hold-b", "quantity": 1, "confirmed": 0, "returned": 0, "available": 1},
        ])
    );
    let stock: serde_json::Value = h.get("/v1/skus/hold-a").await.json().await.unwrap();
    assert_eq!((&stock["stock"], &stock["reserved"]), (&json!(2), &json!(3)));

    let replay = h.post_json("/v1/holds", body).await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let reused = h
        .post_json(
            "/v1/holds",
            json!({"hold_id": "chk-1", "ttl_s": 600, "lines": [{"sku": "hold-a", "quantity": 1}]}),
        )
        .await;
    let problem = expect_problem(reused, 409, "hold_mismatch").await;
    assert!(problem["mismatches"].is_array(), "{problem}");
    let short = h
        .post_json(
            "/v1/holds",
            json!({"hold_id": "chk-2", "ttl_s": 600, "lines": [{"sku": "hold-a", "quantity": 3}]}),
        )
        .await;
    let problem = expect_problem(short, 409, "insufficient_stock").await;
    assert_eq!(
        problem["lines"],
        json!([{"sku": "hold-a", "requested": 3, "available": 2}])
    );
    for bad in [
        json!({"hold_id": "chk-3", "ttl_s": 0, "lines": [{"sku": "hold-a", "quantity": 1}]}),
        json!({"hold_id": "chk-3", "ttl_s": 604_801, "lines": [{"sku": "hold-a", "quantity": 1}]}),
        json!({"hold_id": "chk 3", "ttl_s": 60, "lines": [{"sku": "hold-a", "quantity": 1}]}),
        json!({"hold_id": "chk-3", "ttl_s": 60, "lines": []}),
        json!({"hold_id": "chk-3", "ttl_s": 60, "lines": [{"sku": "hold-a", "quantity": 1}], "strategy": "coalesced"}),
        json!({"hold_id": "chk-3", "lines": [{"sku": "hold-a", "quantity": 1}]}),
    ] {
        let response = h.post_json("/v1/holds", bad.clone()).await;
        assert!(
            matches!(response.status().as_u16(), 422 | 400),
            "{bad}: {}",
            response.status()
        );
    }

    // Partial confirm: 2 of hold-a's 3 units sold, hold-b released.
    let confirmed = h
        .post_json(
            "/v1/holds/chk-1/confirm",
            json!({"lines": [{"sku": "hold-a", "quantity": 2}]}),
        )
        .await;
    assert_eq!(confirmed.status(), 200);
    let receipt: serde_json::Value = confirmed.json().await.unwrap();
    assert_eq!(receipt["state"], "confirmed");
    assert_eq!(
        receipt["lines"],
        json!([
            {"sku": "hold-a", "quantity": 3, "confirmed": 2, "returned": 1, "available": 3},
            {"sku": "hold-b", "quantity": 1, "confirmed": 0, "returned": 1, "available": 2},
        ])
    );
    let again = h
        .post_json(
            "/v1/holds/chk-1/confirm",
            json!({"lines": [{"sku": "hold-a", "quantity": 2}]}),
        )
        .await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let problem = expect_problem(
        h.post_json("/v1/holds/chk-1/release", json!({})).await,
        409,
        "hold_resolved",
    )
    .await;
    assert_eq!(problem["state"], "confirmed");
    let read: serde_json::Value = h.get("/v1/holds/chk-1").await.json().await.unwrap();
    assert_eq!(
        (&read["state"], &read["lines"]),
        (&json!("confirmed"), &receipt["lines"])
    );

    // Release, a confirm after it, a confirm naming too much.
    let placed = h
        .post_json(
            "/v1/holds",
            json!({"hold_id": "chk-4", "ttl_s": 60, "lines": [{"sku": "hold-a", "quantity": 1}]}),
        )
        .await;
    assert_eq!(placed.status(), 200);
    expect_problem(
        h.post_json(
            "/v1/holds/chk-4/confirm",
            json!({"lines": [{"sku": "hold-a", "quantity": 2}]}),
        )
        .await,
        422,
        "invalid_input",
    )
    .await;
    let released = h
        .client
        .post(h.url("/v1/holds/chk-4/release"))
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), 200);
    let problem = expect_problem(
        h.post_json("/v1/holds/chk-4/confirm", json!({})).await,
        409,
        "hold_resolved",
    )
    .await;
    assert_eq!(problem["state"], "released");
    expect_problem(h.get("/v1/holds/no-such").await, 404, "not_found").await;
    expect_problem(
        h.post_json("/v1/holds/no-such/confirm", json!({})).await,
        404,
        "not_found",
    )
    .await;

    // A confirm's body may be left out (every unit sold); a body that is not JSON is 415.
    let placed = h
        .post_json(
            "/v1/holds",
            json!({"hold_id": "chk-6", "ttl_s": 60, "lines": [{"sku": "hold-b", "quantity": 1}]}),
        )
        .await;
    assert_eq!(placed.status(), 200);
    let not_json = h
        .client
        .post(h.url("/v1/holds/chk-6/confirm"))
        .header("content-type", "text/plain")
        .body("all")
        .send()
        .await
        .unwrap();
    expect_problem(not_json, 415, "unsupported_media_type").await;
    let bare = h
        .client
        .post(h.url("/v1/holds/chk-6/confirm"))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 200);
    let bare: serde_json::Value = bare.json().await.unwrap();
    assert_eq!(bare["lines"][0]["confirmed"], 1, "{bare}");

    // Expiry at read time: a 1-second hold reads as expired, and confirming it is refused.
    let placed = h
        .post_json(
            "/v1/holds",
            json!({"hold_id": "chk-5", "ttl_s": 1, "lines": [{"sku": "hold-a", "quantity": 3}]}),
        )
        .await;
    assert_eq!(placed.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    let read: serde_json::Value = h.get("/v1/holds/chk-5").await.json().await.unwrap();
    assert_eq!(read["state"], "expired");
    let problem = expect_problem(
        h.post_json("/v1/holds/chk-5/confirm", json!({})).await,
        409,
        "hold_expired",
    )
    .await;
    assert!(problem["expires_at"].is_string(), "{problem}");
    let stock: serde_json::Value = h.get("/v1/skus/hold-a").await.json().await.unwrap();
    assert_eq!((&stock["stock"], &stock["reserved"]), (&json!(3), &json!(0)));

    let metrics = h.get("/metrics").await.text().await.unwrap();
    for line in [
        "stockguard_holds_total{operation=\"reserve\",outcome=\"ok\"} 4",
        "stockguard_holds_total{operation=\"confirm\",outcome=\"hold_expired\"} 1",
        "stockguard_holds_total{operation=\"release\",outcome=\"ok\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    let audit: serde_json::Value = h.get("/v1/audit").await.json().await.unwrap();
    assert_eq!(
        (&audit["clean"], &audit["holds_checked"]),
        (&json!(true), &json!(4)),
        "{audit}"
    );
    h.shutdown().await;
}

/// The audit's hold checks catch planted faults: a confirmed hold stored as released (as a
/// bug that resolved it a second time would leave it), and a SKU whose `reserved` drifted.
async fn audit_catches_a_hold_resolved_twice(backend: Backend) {
    let Some(h) = Harness::start(backend).await else {
        return;
    };
    h.create_sku("aud-h", 5).await;
    for id in ["audh-1", "audh-2"] {
        let placed = h
            .post_json(
                "/v1/holds",
                json!({"hold_id": id, "ttl_s": 600, "lines": [{"sku": "aud-h", "quantity": 1}]}),
            )
            .await;
        assert_eq!(placed.status(), 200);
    }
    let confirmed = h.post_json("/v1/holds/audh-1/confirm", json!({})).await;
    assert_eq!(confirmed.status(), 200);
    let audit: serde_json::Value = h.get("/v1/audit").await.json().await.unwrap();
    assert_eq!(audit["clean"], true, "{audit}");

    execute_sql(
        &h.db,
        "UPDATE inventory_hold SET state = 'released' WHERE hold_id = 'audh-1'",
    )
    .await;
    let audit: serde_json::Value = h.get("/v1/audit").await.json().await.unwrap();
    assert_eq!(audit["clean"], false, "{audit}");
    assert_eq!(audit["bad_holds"][0]["hold_id"], "audh-1", "{audit}");
    assert_eq!(audit["discrepancies"], json!([]), "only the hold check sees it");

    execute_sql(
        &h.db,
        "UPDATE inventory SET reserved = reserved + 1 WHERE sku = 'aud-h'",
    )
    .await;
    let audit: serde_json::Value = h.get("/v1/audit").await.json().await.unwrap();
    assert_eq!(
        audit["reserved_mismatches"],
        json!([{"sku": "aud-h", "reserved": 2, "active_holds": 1}]),
        "{audit}"
    );
    h.shutdown().await;
}
