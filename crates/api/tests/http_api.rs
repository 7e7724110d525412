//! The real server on port 0 over real PostgreSQL, MariaDB and SQLite (a fresh database each):
//! every status the API documents, idempotent replay, auth, limits, metrics and shutdown.

#[macro_use]
mod common;

use common::{Backend, Harness, expect_problem};
use serde_json::json;

per_backend!(
    documented_statuses,
    idempotent_replay,
    auth_on_mutations,
    operations_endpoints,
    body_limit,
    conditional_deduction,
);

/// The seed's optimistic flow over HTTP: read the version (`ETag`), deduct with `If-Match`
/// (or `expected_version`); a stale version is 412 `version_mismatch` and changes nothing.
async fn conditional_deduction(backend: Backend) {
    let Some(h) = Harness::start(backend).await else {
        return;
    };
    h.create_sku("cond", 5).await;
    let read = h.get("/v1/skus/cond").await;
    let etag = read.headers()["etag"].to_str().unwrap().to_owned();
    let body: serde_json::Value = read.json().await.unwrap();
    assert_eq!(etag, format!("\"{}\"", body["version"]));
    let applied = h
        .client
        .post(h.url("/v1/skus/cond/deduct"))
        .header("if-match", &etag)
        .json(&json!({"quantity": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(applied.status(), 200);
    let stale = h
        .client
        .post(h.url("/v1/skus/cond/deduct"))
        .header("if-match", &etag)
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    let problem = expect_problem(stale, 412, "version_mismatch").await;
    let now: serde_json::Value = h.get("/v1/skus/cond").await.json().await.unwrap();
    assert_eq!(problem["current_version"], now["version"]);
    assert_eq!(now["stock"], 3, "the stale deduction changed nothing");
    let by_body = h
        .post_json(
            "/v1/skus/cond/deduct",
            json!({"quantity": 1, "expected_version": now["version"]}),
        )
        .await;
    assert_eq!(by_body.status(), 200);
    let conflicting = h
        .client
        .post(h.url("/v1/skus/cond/deduct"))
        .header("if-match", "\"1\"")
        .json(&json!({"quantity": 1, "expected_version": 2}))
        .send()
        .await
        .unwrap();
    expect_problem(conflicting, 422, "invalid_input").await;
    h.shutdown().await;
}

async fn documented_statuses(backend: Backend) {
    let Some(h) = Harness::start(backend).await else {
        return;
    };

    // 201 + receipt.
    let created = h
        .post_json("/v1/skus", json!({"sku": "tee-red", "initial_stock": 3}))
        .await;
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    assert_eq!(
        created,
        json!({"sku": "tee-red", "stock": 3, "reserved": 0, "initial_stock": 3, "version": 0})
    );

    // 409 already exists.
    let again = h
        .post_json("/v1/skus", json!({"sku": "tee-red", "initial_stock": 1}))
        .await;
    expect_problem(again, 409, "already_exists").await;

    // 200 stock.
    let stock: serde_json::Value = h.get("/v1/skus/tee-red").await.json().await.unwrap();
    assert_eq!(stock["stock"], 3);

    // 200 deduct receipt.
    let deducted = h
        .post_json("/v1/skus/tee-red/deduct", json!({"quantity": 2}))
        .await;
    assert_eq!(deducted.status(), 200);
    let receipt: serde_json::Value = deducted.json().await.unwrap();
    assert_eq!(receipt["remaining"], 1);
    assert_eq!(receipt["replayed"], false);
    assert_eq!(receipt["strategy"], "guarded");
    assert!(receipt["ledger_id"].as_i64().unwrap() > 0);

    // 409 insufficient stock with `available`, and nothing changed.
    let oversell = h
        .post_json("/v1/skus/tee-red/deduct", json!({"quantity": 2}))
        .await;
    let problem = expect_problem(oversell, 409, "insufficient_stock").await;
    assert_eq!(problem["available"], 1);
    assert_eq!(problem["requested"], 2);
    let stock: serde_json::Value = h.get("/v1/skus/tee-red").await.json().await.unwrap();
    assert_eq!(stock["stock"], 1);

    // Every strategy the adapter supports answers the same way; SQLite has no `sharded`.
    for strategy in [
        "pessimistic",
        "no_wait",
        "optimistic",
        "guarded",
        "coalesced",
        "sharded",
    ] {
        let sku = format!("s-{strategy}");
        h.create_sku(&sku, 1).await;
        if backend == Backend::Sqlite && strategy == "sharded" {
            let unsupported = h
                .post_json(
                    &format!("/v1/skus/{sku}/deduct"),
                    json!({"quantity": 1, "strategy": strategy}),
                )
                .await;
            let problem = expect_problem(unsupported, 422, "invalid_input").await;
            assert!(
                problem["detail"].as_str().unwrap().contains("sharded"),
                "{problem}"
            );
            continue;
        }
        let ok = h
            .post_json(
                &format!("/v1/skus/{sku}/deduct"),
                json!({"quantity": 1, "strategy": strategy}),
            )
            .await;
        assert_eq!(ok.status(), 200, "{strategy}: {}", ok.text().await.unwrap());
        let refused = h
            .post_json(
                &format!("/v1/skus/{sku}/deduct"),
                json!({"quantity": 1, "strategy": strategy}),
            )
            .await;
        let problem = expect_problem(refused, 409, "insufficient_stock").await;
        assert_eq!(problem["available"], 0, "{strategy}");
    }

    // 404 unknown SKU on every SKU route.
    expect_problem(h.get("/v1/skus/nope").await, 404, "not_found").await;
    expect_problem(h.get("/v1/skus/nope/ledger").await, 404, "not_found").await;
    expect_problem(
        h.post_json("/v1/skus/nope/deduct", json!({"quantity": 1})).await,
        404,
        "not_found",
    )
    .await;
    expect_problem(
        h.post_json("/v1/skus/nope/restock", json!({"quantity": 1})).await,
        404,
        "not_found",
    )
    .await;
    // Unknown route and wrong method are problems too.
    expect_problem(h.get("/v1/nothing-here").await, 404, "route_not_found").await;
    let wrong_method = h.client.delete(h.url("/v1/skus/tee-red")).send().await.unwrap();
    expect_problem(wrong_method, 405, "method_not_allowed").await;

    // 422: domain validation, malformed JSON, wrong types, unknown fields, bad path, bad query.
    for (path, body) in [
        ("/v1/skus/tee-red/deduct", json!({"quantity": 0})),
        ("/v1/skus/tee-red/deduct", json!({"quantity": -5})),
        ("/v1/skus/tee-red/deduct", json!({"quantity": 1_000_000_001_i64})),
        ("/v1/skus/tee-red/deduct", json!({"quantity": "one"})),
        ("/v1/skus/tee-red/deduct", json!({"quantity": 1.5})),
        ("/v1/skus/tee-red/deduct", json!({})),
        (
            "/v1/skus/tee-red/deduct",
            json!({"quantity": 1, "strategy": "yolo"}),
        ),
        (
            "/v1/skus/tee-red/deduct",
            json!({"quantity": 1, "surprise": true}),
        ),
        ("/v1/skus/tee-red/restock", json!({"quantity": 0})),
        ("/v1/skus", json!({"sku": "has space", "initial_stock": 1})),
        ("/v1/skus", json!({"sku": "", "initial_stock": 1})),
        ("/v1/skus", json!({"sku": "x".repeat(65), "initial_stock": 1})),
        ("/v1/skus", json!({"sku": "neg", "initial_stock": -1})),
        (
            "/v1/skus",
            json!({"sku": "huge", "initial_stock": 1_000_000_000_000_001_i64}),
        ),
        ("/v1/skus", json!([1, 2, 3])),
    ] {
        let response = h.post_json(path, body.clone()).await;
        let problem = expect_problem(response, 422, "invalid_input").await;
        assert!(!problem["detail"].as_str().unwrap().is_empty(), "{path} {body}");
    }
    let malformed = h
        .client
        .post(h.url("/v1/skus/tee-red/deduct"))
        .header("content-type", "application/json")
        .body("{\"quantity\": ")
        .send()
        .await
        .unwrap();
    expect_problem(malformed, 422, "invalid_input").await;
    expect_problem(
        h.post_json("/v1/skus/bad%20sku/deduct", json!({"quantity": 1}))
            .await,
        422,
        "invalid_input",
    )
    .await;
    expect_problem(h.get("/v1/skus/bad%21").await, 422, "invalid_input").await;
    expect_problem(
        h.get("/v1/skus/tee-red/ledger?limit=0").await,
        422,
        "invalid_input",
    )
    .await;
    expect_problem(
        h.get("/v1/skus/tee-red/ledger?limit=1001").await,
        422,
        "invalid_input",
    )
    .await;
    expect_problem(
        h.get("/v1/skus/tee-red/ledger?after_id=abc").await,
        422,
        "invalid_input",
    )
    .await;
    // A restock past the stock maximum is refused and changes nothing.
    h.create_sku("full", 1_000_000_000_000_000).await;
    expect_problem(
        h.post_json("/v1/skus/full/restock", json!({"quantity": 1})).await,
        422,
        "invalid_input",
    )
    .await;

    // 415 without a JSON content type.
    let not_json = h
        .client
        .post(h.url("/v1/skus/tee-red/deduct"))
        .body("quantity=1")
        .send()
        .await
        .unwrap();
    expect_problem(not_json, 415, "unsupported_media_type").await;

    // Restock: 200 receipt and a ledger row.
    let restocked = h
        .post_json("/v1/skus/tee-red/restock", json!({"quantity": 5}))
        .await;
    assert_eq!(restocked.status(), 200);
    let restocked: serde_json::Value = restocked.json().await.unwrap();
    assert_eq!(restocked["stock_after"], 6);

    // Ledger pagination: two rows (deduct 2, restock 5), one per page.
    let first: serde_json::Value = h
        .get("/v1/skus/tee-red/ledger?limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["entries"].as_array().unwrap().len(), 1);
    assert_eq!(first["entries"][0]["delta"], -2);
    assert_eq!(first["entries"][0]["reason"], "deduct");
    let after = first["next_after_id"].as_i64().expect("a full page has a cursor");
    let second: serde_json::Value = h
        .get(&format!("/v1/skus/tee-red/ledger?limit=1&after_id={after}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["entries"][0]["delta"], 5);
    assert_eq!(second["entries"][0]["reason"], "restock");
    let last = second["next_after_id"].as_i64().unwrap();
    let third: serde_json::Value = h
        .get(&format!("/v1/skus/tee-red/ledger?limit=1&after_id={last}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(third["entries"], json!([]));
    assert_eq!(third["next_after_id"], json!(null));

    // Audit: clean.
    let audit: serde_json::Value = h.get("/v1/audit").await.json().await.unwrap();
    assert_eq!(audit["clean"], true, "{audit}");
    assert_eq!(audit["discrepancies"], json!([]));

    h.shutdown().await;
}

async fn idempotent_replay(backend: Backend) {
    let Some(h) = Harness::start(backend).await else {
        return;
    };
    h.create_sku("mug", 10).await;
    let deduct = |key: &'static str, quantity: i64| {
        h.client
            .post(h.url("/v1/skus/mug/deduct"))
            .header("Idempotency-Key", key)
            .json(&json!({"quantity": quantity}))
            .send()
    };
    let first = deduct("order-42", 3).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: serde_json::Value = first.json().await.unwrap();
    assert_eq!(first["replayed"], false);

    let again = deduct("order-42", 3).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["replayed"], true);
    assert_eq!(again["ledger_id"], first["ledger_id"]);
    assert_eq!(again["remaining"], 7);

    // The strategy is not part of the idempotent identity: a replay under another strategy
    // still returns the original receipt.
    let other_strategy = h
        .client
        .post(h.url("/v1/skus/mug/deduct"))
        .header("Idempotency-Key", "order-42")
        .json(&json!({"quantity": 3, "strategy": "pessimistic"}))
        .send()
        .await
        .unwrap();
    let other_strategy: serde_json::Value = other_strategy.json().await.unwrap();
    assert_eq!(other_strategy["replayed"], true);
    assert_eq!(other_strategy["ledger_id"], first["ledger_id"]);

    // Same key, different body: 422 and nothing changes.
    expect_problem(
        deduct("order-42", 4).await.unwrap(),
        422,
        "idempotency_key_reused",
    )
    .await;
    let stock: serde_json::Value = h.get("/v1/skus/mug").await.json().await.unwrap();
    assert_eq!(stock["stock"], 7);
    let ledger: serde_json::Value = h.get("/v1/skus/mug/ledger").await.json().await.unwrap();
    assert_eq!(ledger["entries"].as_array().unwrap().len(), 1);
    assert_eq!(ledger["entries"][0]["idempotency_key"], "order-42");

    // Malformed keys are 422.
    for bad in ["x".repeat(129), "has space".to_owned()] {
        let response = h
            .client
            .post(h.url("/v1/skus/mug/deduct"))
            .header("Idempotency-Key", bad)
            .json(&json!({"quantity": 1}))
            .send()
            .await
            .unwrap();
        expect_problem(response, 422, "invalid_input").await;
    }
    h.shutdown().await;
}

async fn auth_on_mutations(backend: Backend) {
    let Some(h) = Harness::start_with(backend, |s| s.auth_token = Some("s3cret-token".into())).await else {
        return;
    };
    let body = json!({"sku": "locked", "initial_stock": 5});
    let missing = h.post_json("/v1/skus", body.clone()).await;
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    expect_problem(missing, 401, "unauthorized").await;
    for header in [
        "Bearer wrong",
        "Bearer s3cret-toke",
        "Bearer s3cret-token-x",
        "Basic s3cret-token",
        "s3cret-token",
    ] {
        let response = h
            .client
            .post(h.url("/v1/skus"))
            .header("Authorization", header)
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_problem(response, 401, "unauthorized").await;
    }
    // Auth is checked before the body: a bad body without a token is still 401.
    expect_problem(
        h.post_json("/v1/skus", json!({"nope": 1})).await,
        401,
        "unauthorized",
    )
    .await;
    let with_token = |path: &str, body: serde_json::Value| {
        h.client
            .post(h.url(path))
            .bearer_auth("s3cret-token")
            .json(&body)
            .send()
    };
    assert_eq!(with_token("/v1/skus", body.clone()).await.unwrap().status(), 201);
    expect_problem(
        h.post_json("/v1/skus/locked/deduct", json!({"quantity": 1}))
            .await,
        401,
        "unauthorized",
    )
    .await;
    expect_problem(
        h.post_json("/v1/skus/locked/restock", json!({"quantity": 1}))
            .await,
        401,
        "unauthorized",
    )
    .await;
    assert_eq!(
        with_token("/v1/skus/locked/deduct", json!({"quantity": 1}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        with_token("/v1/skus/locked/restock", json!({"quantity": 1}))
            .await
            .unwrap()
            .status(),
        200
    );
    // Reads stay open, except the audit (it reads the whole ledger).
    assert_eq!(h.get("/v1/skus/locked").await.status(), 200);
    assert_eq!(h.get("/v1/skus/locked/ledger").await.status(), 200);
    expect_problem(h.get("/v1/audit").await, 401, "unauthorized").await;
    let stock: serde_json::Value = h.get("/v1/skus/locked").await.json().await.unwrap();
    assert_eq!(
        stock["stock"], 5,
        "only the authorized deduct and restock applied"
    );
    h.shutdown().await;
}

async fn operations_endpoints(backend: Backend) {
    let Some(h) = Harness::start(backend).await else {
        return;
    };
    let health: serde_json::Value = h.get("/healthz").await.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready = h.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready");

    h.create_sku("metered", 2).await;
    for strategy in ["guarded", "coalesced"] {
        let response = h
            .post_json(
                "/v1/skus/metered/deduct",
                json!({"quantity": 1, "strategy": strategy}),
            )
            .await;
        assert_eq!(response.status(), 200);
    }
    let _ = h
        .post_json("/v1/skus/metered/deduct", json!({"quantity": 1}))
        .await;
    let metrics = h.get("/metrics").await;
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = metrics.text().await.unwrap();
    for needle in [
        "stockguard_deductions_total{strategy=\"guarded\",outcome=\"ok\"} 1",
        "stockguard_deductions_total{strategy=\"coalesced\",outcome=\"ok\"} 1",
        "stockguard_deductions_total{strategy=\"guarded\",outcome=\"insufficient_stock\"} 1",
        "stockguard_deduct_retries_total{strategy=\"guarded\"} 0",
        "stockguard_lock_wait_seconds_count{strategy=\"guarded\"} 1",
        "stockguard_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/skus/{sku}/deduct\",status=\"200\"} 2",
        "stockguard_coalescer_batch_size_count 1",
        "stockguard_coalescer_queue_depth 0",
        "stockguard_pool_connections{state=\"in_use\"}",
        "stockguard_pool_connections{state=\"idle\"}",
    ] {
        assert!(text.contains(needle), "metrics lack {needle:?}:\n{text}");
    }
    // Every statement above took a pooled connection, autocommit ones included: each wait
    // is in the histogram, on every database.
    let acquires: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("stockguard_pool_acquire_wait_seconds_count "))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no pool wait count:\n{text}"));
    assert!(acquires >= 4, "pool waits recorded: {acquires}\n{text}");
    assert!(text.contains("# TYPE stockguard_pool_acquire_wait_seconds histogram"));

    let spec = h.get("/openapi.json").await;
    assert_eq!(spec.status(), 200);
    let spec: serde_json::Value = spec.json().await.unwrap();
    let expected: serde_json::Value = serde_json::from_str(&stockguard_api::openapi_pretty_json()).unwrap();
    assert_eq!(spec, expected);
    let docs = h.get("/docs").await;
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text().await.unwrap().contains("swagger-ui"),
        "the Swagger UI page"
    );
    h.shutdown().await;
}

async fn body_limit(backend: Backend) {
    let Some(h) = Harness::start_with(backend, |s| s.body_limit_bytes = 256).await else {
        return;
    };
    h.create_sku("big", 1).await;
    let padding = "x".repeat(300);
    let oversized = h
        .post_json("/v1/skus/big/deduct", json!({"quantity": 1, "pad": padding}))
        .await;
    expect_problem(oversized, 413, "payload_too_large").await;
    h.shutdown().await;
}
