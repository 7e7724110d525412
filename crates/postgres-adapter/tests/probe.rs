//! The start-up probe on a real PostgreSQL: it finds every clause the adapter writes
//! honoured and refuses nothing. (Its judgement of a misbehaving server is checked in
//! `src/probe.rs`, with the adapter's own probe statements.)

use stockguard_core::{InventoryStore, Strategy, Support};
use stockguard_postgres::{PgConfig, PgStore};

#[tokio::test]
async fn the_probe_finds_every_clause_honoured_and_refuses_nothing() {
    let Some(database) = stockguard_testkit::TestDatabase::postgres().await else {
        return;
    };
    let store = PgStore::connect(PgConfig::new(database.url()))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let report = store.probe().await.expect("probe");
    let probe = &report.probe;
    assert_eq!(probe.product, "PostgreSQL");
    assert_eq!(probe.isolation, "read committed");
    assert_eq!(
        (&probe.skip_locked, &probe.nowait, &probe.for_no_key_update),
        (&Support::Honoured, &Support::Honoured, &Support::Honoured),
        "{probe:?}"
    );
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(store.capabilities().strategies, Strategy::ALL.to_vec());
    assert_eq!(store.probe_report(), Some(report));
    store.close().await;
}
