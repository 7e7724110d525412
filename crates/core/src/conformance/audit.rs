//! The incremental audit: it reads only what is new, vouches for the rest, agrees with the
//! full audit, and never reports a false discrepancy while writes run beside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{deduct_patiently, qty, sku};
use crate::{DeductRequest, IncrementalAuditReport, InventoryStore, RestockRequest, SkuId, Strategy};

async fn incremental<S: InventoryStore>(store: &S) -> IncrementalAuditReport {
    let report = store.audit_incremental().await.expect("incremental audit");
    assert!(report.is_clean(), "incremental audit: {report:?}");
    report
}

/// Sequentially: the first audit reads every row and stores checkpoints; the next reads
/// nothing; after more changes it reads exactly the new rows; its totals always equal the
/// full audit's.
pub async fn incremental_audit_reads_only_new_rows<S: InventoryStore>(store: &S, strategy: Strategy) {
    let skus: Vec<SkuId> = (0..3)
        .map(|i| sku(&format!("inc-{}-{i}", strategy.as_str())))
        .collect();
    for s in &skus {
        store.create_sku(s, 100).await.expect("create");
    }
    // A SKU with no ledger rows is checked, and needs no checkpoint.
    let idle = sku(&format!("inc-{}-idle", strategy.as_str()));
    store.create_sku(&idle, 7).await.expect("create");
    let deduct = |s: &SkuId, units: i64| DeductRequest::new(s.clone(), qty(units), strategy);
    for (i, s) in skus.iter().enumerate() {
        for _ in 0..=i {
            deduct_patiently(store, deduct(s, 2)).await.expect("deduct");
        }
    }
    let rows =
        |report: &IncrementalAuditReport| report.ledger_rows_verified + report.ledger_rows_checkpointed;

    let first = incremental(store).await;
    assert_eq!(first.skus_checked, 4);
    assert_eq!(
        (first.ledger_rows_verified, first.ledger_rows_checkpointed),
        (6, 0)
    );
    assert_eq!(first.checkpoints_saved, 3, "the idle SKU needs none: {first:?}");

    let second = incremental(store).await;
    assert_eq!(
        (second.ledger_rows_verified, second.ledger_rows_checkpointed),
        (0, 6)
    );
    assert_eq!(second.checkpoints_saved, 0);

    deduct_patiently(store, deduct(&skus[0], 5))
        .await
        .expect("deduct");
    store
        .restock(RestockRequest::new(idle.clone(), qty(3)))
        .await
        .expect("restock");
    let third = incremental(store).await;
    assert_eq!(
        (third.ledger_rows_verified, third.ledger_rows_checkpointed),
        (2, 6)
    );
    assert_eq!(third.checkpoints_saved, 2);

    let full = store.audit().await.expect("full audit");
    assert!(full.is_clean(), "{full:?}");
    assert_eq!(full.ledger_rows, rows(&third));
    assert_eq!(third.skus_reread, 0, "nothing ran beside it: {third:?}");
}

/// Audits run back to back while 32 tasks deduct from a few hot SKUs with every strategy the
/// store has (`Sharded` commits a SKU's rows from several buckets in any order, so a row may
/// commit below a checkpoint's mark): no audit reports a discrepancy, and the last one's
/// totals equal the full audit's.
pub async fn incremental_audit_beside_writes<S: InventoryStore>(store: Arc<S>) {
    const TASKS: usize = 32;
    const AUDITS_MAX: usize = 200;
    let strategies = store.capabilities().strategies;
    let skus: Arc<Vec<SkuId>> = Arc::new((0..4).map(|i| sku(&format!("inc-load-{i}"))).collect());
    for s in skus.iter() {
        store.create_sku(s, 1_000_000).await.expect("create");
    }
    let deadline = Instant::now() + super::concurrency_duration().max(Duration::from_secs(1));
    let mut tasks = Vec::new();
    for task_index in 0..TASKS {
        let store = Arc::clone(&store);
        let skus = Arc::clone(&skus);
        let strategy = strategies[task_index % strategies.len()];
        tasks.push(tokio::spawn(async move {
            let mut count = 0_usize;
            while Instant::now() < deadline {
                let request = DeductRequest::new(skus[count % skus.len()].clone(), qty(1), strategy);
                deduct_patiently(&*store, request).await.expect("deduct");
                count += 1;
            }
        }));
    }
    let mut audits = 0;
    let mut reread = 0;
    while Instant::now() < deadline && audits < AUDITS_MAX {
        reread += incremental(&*store).await.skus_reread;
        audits += 1;
    }
    for task in tasks {
        task.await.expect("join");
    }
    let last = incremental(&*store).await;
    let full = store.audit().await.expect("full audit");
    assert!(full.is_clean(), "{full:?}");
    assert_eq!(
        full.ledger_rows,
        last.ledger_rows_verified + last.ledger_rows_checkpointed
    );
    eprintln!(
        "conformance incremental_audit_beside_writes: backend={} audits={audits} skus_reread={reread}",
        store.backend()
    );
    assert!(audits > 1, "the audits ran beside the writes");
}
