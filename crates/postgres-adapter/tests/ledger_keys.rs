//! The ledger's PostgreSQL-specific schema (migration 0008): it has no foreign key to
//! inventory, so what the key used to stop is stopped by triggers, and what it used to make
//! impossible, a ledger row naming a missing SKU, is reported by both audits. Its keys compare
//! bytewise.

use stockguard_core::{DeductRequest, InventoryStore, Quantity, SkuId, Strategy};
use stockguard_postgres::{PgConfig, PgStore};

async fn refused(pool: &sqlx::PgPool, statement: &'static str) -> String {
    let error = sqlx::query(statement).execute(pool).await.expect_err(statement);
    let code = error
        .as_database_error()
        .and_then(|db| db.code())
        .map(|code| code.into_owned());
    assert_eq!(code.as_deref(), Some("23503"), "{statement}: {error}");
    error.to_string()
}

#[tokio::test]
async fn a_sku_with_history_stays_and_rows_of_a_missing_sku_fail_both_audits() {
    let Some(database) = stockguard_testkit::TestDatabase::postgres().await else {
        return;
    };
    let store = PgStore::connect(PgConfig::new(database.url()))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let sku = SkuId::parse("kept").unwrap();
    store.create_sku(&sku, 10).await.expect("create");
    let request = DeductRequest::new(sku.clone(), Quantity::new(3).unwrap(), Strategy::Guarded);
    store.deduct(request).await.expect("deduct");
    assert!(store.audit().await.expect("audit").is_clean());
    assert!(store.audit_incremental().await.expect("incremental").is_clean());

    let pool = sqlx::PgPool::connect(database.url()).await.expect("pool");
    // What the foreign key stopped, the triggers stop: the SKU keeps its row while it has
    // ledger rows. A SKU without history may still go.
    let message = refused(&pool, "DELETE FROM inventory WHERE sku = 'kept'").await;
    assert!(message.contains("kept"), "{message}");
    refused(&pool, "UPDATE inventory SET sku = 'renamed' WHERE sku = 'kept'").await;
    sqlx::query("DELETE FROM inventory_bucket")
        .execute(&pool)
        .await
        .unwrap();
    refused(&pool, "TRUNCATE inventory, inventory_bucket").await;
    sqlx::query("INSERT INTO inventory (sku, stock, initial_stock) VALUES ('fresh', 1, 1)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM inventory WHERE sku = 'fresh'")
        .execute(&pool)
        .await
        .expect("a SKU without history can be deleted");

    // Ledger rows of a SKU inventory does not hold, summing to zero so that no stock figure
    // could give them away: both audits report the SKU, and keep reporting it.
    sqlx::query(
        "INSERT INTO inventory_ledger (sku, delta, stock_after, reason) \
         VALUES ('ghost', 4, 4, 'restock'), ('ghost', -4, 0, 'deduct')",
    )
    .execute(&pool)
    .await
    .expect("the ledger has no foreign key");
    for _ in 0..2 {
        let full = store.audit().await.expect("audit");
        let incremental = store.audit_incremental().await.expect("incremental");
        for discrepancies in [&full.discrepancies, &incremental.discrepancies] {
            assert_eq!(discrepancies.len(), 1, "{discrepancies:?}");
            let found = &discrepancies[0];
            assert!(found.missing_sku, "{found:?}");
            assert_eq!(found.snapshot.sku.as_str(), "ghost");
            assert_eq!(found.snapshot.ledger_rows, 2);
        }
        assert!(!full.is_clean() && !incremental.is_clean());
    }

    // Keys compare bytewise: equality was already byte equality, and now order is too.
    let collation: Option<String> = sqlx::query_scalar(
        "SELECT collation_name FROM information_schema.columns \
         WHERE table_name = 'inventory_ledger' AND column_name = 'idempotency_key'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(collation.as_deref(), Some("C"));
    pool.close().await;
    store.close().await;
}
