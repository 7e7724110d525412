//! The start-up probe on a real MariaDB (or MySQL): it finds every clause the adapter writes
//! honoured and refuses nothing. (Its judgement of a misbehaving server is checked in
//! `src/probe.rs`, with the adapter's own probe statements.)

use stockguard_core::{InventoryStore, Strategy, Support};
use stockguard_mysql::{MySqlConfig, MySqlStore, ServerFlavor};

#[tokio::test]
async fn the_probe_finds_every_clause_honoured_and_refuses_nothing() {
    let Some(database) = stockguard_testkit::TestDatabase::mysql().await else {
        return;
    };
    let store = MySqlStore::connect(MySqlConfig::new(database.url()))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let report = store.probe().await.expect("probe");
    let probe = &report.probe;
    let product = match store.adapter().flavor() {
        ServerFlavor::MariaDb => "MariaDB",
        ServerFlavor::MySql => "MySQL",
    };
    assert_eq!(probe.product, product);
    assert_eq!(probe.isolation, "read committed");
    assert_eq!(probe.galera, None, "the shared server runs no Galera");
    assert_eq!(
        (&probe.skip_locked, &probe.nowait, &probe.for_no_key_update),
        (&Support::Honoured, &Support::Honoured, &Support::NotApplicable),
        "{probe:?}"
    );
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert_eq!(store.capabilities().strategies, Strategy::ALL.to_vec());
    assert_eq!(store.probe_report(), Some(report));
    store.close().await;
}
