//! The MySQL adapter on a 3-node MariaDB Galera cluster of our own (`PrivateGalera`): one
//! store per node, as three service instances with writes spread over all nodes would be.
//!
//! On Galera a conflicting write from another node fails at COMMIT with a certification
//! error (1213), not at the lock. It is a definite rollback: the engine must retry it inside
//! the deadline and never answer it as outcome unknown. And a read on one node must see what
//! another node committed before it (`wsrep_sync_wait = 1`), or a retry's lookup could miss a
//! committed row.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use stockguard_core::conformance::{
    adjustment_semantics, concurrent_invariants_across, hold_semantics, lost_answers_are_resolved,
    order_semantics, sequential_semantics,
};
use stockguard_core::{
    DeductRequest, GaleraFacts, IdempotencyKey, InventoryStore, OrderStrategy, Quantity, RetryCause, SkuId,
    Strategy,
};
use stockguard_mysql::{MySqlConfig, MySqlStore};
use stockguard_testkit::PrivateGalera;

const NODES: usize = 3;

async fn open(url: &str) -> Arc<MySqlStore> {
    let mut config = MySqlConfig::new(url);
    config.max_connections = 12;
    // Certification failures are retried; a generous deadline keeps the test about answers.
    config.lock_timeout = Duration::from_secs(10);
    Arc::new(MySqlStore::connect(config).await.expect("connect"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn galera_writes_spread_over_three_nodes_keep_every_answer_true() {
    let Some(cluster) = PrivateGalera::start_or_skip(NODES).await else {
        return;
    };
    let urls = cluster.urls();
    let mut admin = sqlx::MySqlConnection::connect(&urls[0]).await.expect("admin");
    sqlx::query("CREATE DATABASE stockguard")
        .execute(&mut admin)
        .await
        .expect("create db");
    admin.close().await.expect("close");
    let mut stores = Vec::new();
    for url in &urls {
        stores.push(open(&url.replace("/mysql", "/stockguard")).await);
    }
    stores[0].migrate().await.expect("migrate");

    // Each node's probe sees the cluster, and reads wait for the cluster's earlier commits.
    for store in &stores {
        let report = store.probe().await.expect("probe");
        assert_eq!(
            report.probe.galera,
            Some(GaleraFacts {
                cluster_size: u32::try_from(NODES).unwrap(),
                causal_reads: true,
                session_sync_wait: 0,
            }),
            "{report:?}"
        );
        assert!(report.refused.is_empty(), "{:?}", report.refused);
    }

    // One hot SKU, 64 tasks spread over the three nodes, for every strategy; then 16 SKUs.
    // Stock enough for the whole run: a causal wait inside a transaction lost about one
    // transaction in a few hundred conflicting ones (see `causal_connection`).
    for strategy in Strategy::ALL {
        concurrent_invariants_across(stores.clone(), strategy, 1, 5_000).await;
    }
    concurrent_invariants_across(stores.clone(), Strategy::Coalesced, 16, 40).await;
    let certification_retries: u64 = stores
        .iter()
        .flat_map(|store| store.stats().retries())
        .filter(|(cause, _)| *cause == RetryCause::Deadlock)
        .map(|(_, count)| count)
        .sum();
    eprintln!("galera: certification failures and deadlocks retried: {certification_retries}");
    for store in &stores {
        assert_eq!(
            store.stats().outcome_unknown(),
            0,
            "a rollback answered as unknown"
        );
    }

    // A keyed deduction committed through one node, retried through the next at once: the
    // retry's lookup on the other node sees the row, and replays the first receipt.
    let sku = SkuId::parse("cross-node").unwrap();
    stores[0].create_sku(&sku, 1_000).await.expect("create");
    for round in 0..60 {
        let key = IdempotencyKey::parse(format!("cross-{round}")).unwrap();
        let strategy = [Strategy::Guarded, Strategy::Coalesced, Strategy::Pessimistic][round % 3];
        let request =
            DeductRequest::new(sku.clone(), Quantity::new(2).unwrap(), strategy).with_idempotency_key(key);
        let first = stores[round % NODES]
            .deduct(request.clone())
            .await
            .expect("first");
        let retry = stores[(round + 1) % NODES].deduct(request).await.expect("retry");
        assert!(
            retry.replayed,
            "round {round}: the retry on another node deducted again"
        );
        assert_eq!(
            (retry.ledger_id, retry.remaining),
            (first.ledger_id, first.remaining)
        );
    }
    assert_eq!(stores[2].stock(&sku).await.expect("stock").stock, 1_000 - 2 * 60);

    // A lost answer is resolved by its key on a Galera node, as on a single server.
    lost_answers_are_resolved(Arc::clone(&stores[1]), Strategy::Coalesced).await;
    lost_answers_are_resolved(Arc::clone(&stores[2]), Strategy::Guarded).await;

    // Every other flow, each on some node: the guards must refuse none of its writes.
    for (index, strategy) in Strategy::ALL.into_iter().enumerate() {
        sequential_semantics(&*stores[index % NODES], strategy).await;
    }
    for (index, strategy) in OrderStrategy::ALL.into_iter().enumerate() {
        order_semantics(&*stores[index % NODES], strategy).await;
    }
    // Once: its audit counts every hold in the database.
    hold_semantics(&*stores[1], OrderStrategy::ALL[0]).await;
    adjustment_semantics(&*stores[2]).await;

    a_write_loose_after_an_abort_is_refused(&urls).await;

    for (index, store) in stores.iter().enumerate() {
        let report = store.audit().await.expect("audit");
        assert!(report.is_clean(), "node {index}: {report:?}");
        store.close().await;
    }
}

/// The guard itself, step by step: a transaction on node 2 is aborted by a conflicting
/// write committed on node 1; its next statement reports it, and the statement after that,
/// which MariaDB would run in autocommit and commit at once, is refused by the guard instead.
async fn a_write_loose_after_an_abort_is_refused(urls: &[String]) {
    let database = |url: &String| url.replace("/mysql", "/stockguard");
    let mut victim = sqlx::MySqlConnection::connect(&database(&urls[1]))
        .await
        .expect("victim");
    let mut winner = sqlx::MySqlConnection::connect(&database(&urls[0]))
        .await
        .expect("winner");
    // The winner stands for another node's committed write: a plain autocommit statement,
    // which the guards let through only in a maintenance session.
    sqlx::query("SET @stockguard_maintenance = 1")
        .execute(&mut winner)
        .await
        .expect("marker");
    let rows_before = ledger_rows(&mut winner).await;
    sqlx::query("BEGIN").execute(&mut victim).await.expect("begin");
    sqlx::query("UPDATE inventory SET stock = stock - 1 WHERE sku = 'cross-node'")
        .execute(&mut victim)
        .await
        .expect("the victim's update");
    sqlx::query("UPDATE inventory SET stock = stock - 1 WHERE sku = 'cross-node'")
        .execute(&mut winner)
        .await
        .expect("the winner's update, committed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let aborted = sqlx::query("SELECT stock FROM inventory WHERE sku = 'cross-node'")
        .fetch_one(&mut victim)
        .await;
    assert!(
        aborted.is_err(),
        "the aborted transaction's next statement must fail"
    );
    let loose = sqlx::query(
        "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
         VALUES ('cross-node', -1, 0, 'deduct', 'loose-after-abort')",
    )
    .execute(&mut victim)
    .await;
    match loose {
        Err(sqlx::Error::Database(error)) => {
            assert!(error.message().contains("outside its transaction"), "{error}")
        }
        other => panic!("a ledger write outside its transaction must be refused: {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ledger_rows(&mut winner).await, rows_before);
    // Without the maintenance marker, an autocommit stock change is refused as well.
    sqlx::query("UPDATE inventory SET stock = stock + 1 WHERE sku = 'cross-node'")
        .execute(&mut victim)
        .await
        .expect_err("outside a transaction, a stock change is refused without the marker");
    // Put the winner's unit back so the audit below reconciles: a maintenance repair.
    sqlx::query("UPDATE inventory SET stock = stock + 1 WHERE sku = 'cross-node'")
        .execute(&mut winner)
        .await
        .expect("a maintenance repair");
}

async fn ledger_rows(connection: &mut sqlx::MySqlConnection) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM inventory_ledger WHERE sku = 'cross-node'")
        .fetch_one(connection)
        .await
        .expect("count")
}
