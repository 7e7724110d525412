//! Migrations move existing data forward: a database written by the schema before the orders
//! migration keeps its rows, keys and audit, and takes orders afterwards.

use stockguard_core::InventoryStore;
use stockguard_postgres::{PgConfig, PgStore};

#[tokio::test]
async fn the_orders_migration_moves_existing_data_forward() {
    let Some(database) = stockguard_testkit::TestDatabase::postgres().await else {
        return;
    };
    let pool = sqlx::PgPool::connect(database.url()).await.expect("pool");
    stockguard_postgres::MIGRATOR
        .run_to(2, &pool)
        .await
        .expect("the migrations before orders");
    for statement in stockguard_core::conformance::PRE_ORDERS_SEED {
        sqlx::query(statement).execute(&pool).await.expect("seed");
    }
    pool.close().await;
    let store = PgStore::connect(PgConfig::new(database.url()))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate forward");
    stockguard_core::conformance::seeded_data_carries_forward(&store).await;
    store.close().await;
}
