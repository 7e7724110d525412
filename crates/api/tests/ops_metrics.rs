//! Every metric the dashboard and the alert rules in docs/ops name is in `/metrics` once the
//! service has served a little traffic, so a renamed or dropped metric fails here rather than
//! leaving a panel empty and an alert silent. On embedded SQLite, so it always runs; every
//! chaos cell repeats the check against the service it ran under faults.

mod common;

use common::{Backend, Harness};
use serde_json::json;
use stockguard_api::metrics::named;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_docs_ops_names_is_exposed() {
    let named = named::named_in_ops_docs().expect("docs/ops/grafana-dashboard.json is JSON");
    assert!(
        named.len() >= 15,
        "docs/ops names suspiciously few metrics: {named:?}"
    );
    let Some(h) = Harness::start(Backend::Sqlite).await else {
        return;
    };
    // A little of everything a shop does: deductions of each kind that makes series
    // (committed, coalesced, refused) and reads.
    h.create_sku("metered", 3).await;
    for strategy in ["guarded", "coalesced", "pessimistic"] {
        let response = h
            .post_json(
                "/v1/skus/metered/deduct",
                json!({"quantity": 1, "strategy": strategy}),
            )
            .await;
        assert_eq!(response.status(), 200, "{strategy}");
    }
    let refused = h
        .post_json("/v1/skus/metered/deduct", json!({"quantity": 1}))
        .await;
    assert_eq!(refused.status(), 409);
    assert_eq!(h.get("/v1/skus/metered").await.status(), 200);
    assert_eq!(h.get("/v1/skus/unknown").await.status(), 404);

    let scrape = h.get("/metrics").await.text().await.unwrap();
    let missing = named::missing_from(&named, &scrape);
    assert!(
        missing.is_empty(),
        "docs/ops (dashboard or alert rules) name metrics that /metrics does not expose: \
         {missing:?}\n--- /metrics ---\n{scrape}"
    );
    h.shutdown().await;
}
