//! The start-up probe on SQLite: one writer at a time, so no row-locking clause applies and
//! nothing is refused beyond what the adapter never implements (`Sharded`).

use stockguard_core::{InventoryStore, Strategy, Support};
use stockguard_sqlite::{SqliteConfig, SqliteStore};
use stockguard_testkit::TestSqliteFile;

#[tokio::test]
async fn the_probe_reports_sqlite_and_refuses_nothing() {
    let file = TestSqliteFile::new();
    let store = SqliteStore::connect(SqliteConfig::new(file.path()))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let report = store.probe().await.expect("probe");
    assert_eq!(report.probe.product, "SQLite");
    assert!(report.probe.version.starts_with('3'), "{:?}", report.probe);
    assert_eq!(report.probe.skip_locked, Support::NotApplicable);
    assert!(report.refused.is_empty());
    assert!(!store.capabilities().strategies.contains(&Strategy::Sharded));
    store.close().await;
}
