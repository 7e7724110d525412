//! The start-up probe on a real PostgreSQL: it finds every clause the adapter writes
//! honoured, and its judgement is shown to catch a server that ignores a clause, by trying
//! statements that behave as such a server would (a plain `FOR UPDATE` waits where an ignored
//! `SKIP LOCKED` would; a plain `SELECT` returns the held row, as TiDB's ignored one does).

use stockguard_core::{InventoryStore, Strategy, Support};
use stockguard_postgres::{PgConfig, PgStore};
use stockguard_sql::probe;

fn is_lock_wait(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"))
}

const SQL: probe::ProbeSql = probe::ProbeSql {
    short_lock_wait: "SET lock_timeout = '1s'",
    hold_row: "SELECT id FROM stockguard_probe WHERE id = 1 FOR UPDATE",
};

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

#[tokio::test]
async fn the_probe_calls_a_clause_that_waits_or_returns_the_held_row_ignored() {
    let Some(database) = stockguard_testkit::TestDatabase::postgres().await else {
        return;
    };
    let store = PgStore::connect(PgConfig::new(database.url()))
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let pool = store.adapter().pool();
    let attempt = |sql| probe::attempt_on_held_row(pool, SQL, sql);
    // What a server ignoring SKIP LOCKED or NOWAIT by waiting does: a plain FOR UPDATE.
    let waits = "SELECT id FROM stockguard_probe WHERE id = 1 FOR UPDATE";
    let found = probe::skip_locked(attempt(waits).await.expect("attempt"), is_lock_wait);
    assert!(
        matches!(&found, Support::Ignored { how } if how.starts_with("waited")),
        "{found:?}"
    );
    let found = probe::nowait(attempt(waits).await.expect("attempt"), is_lock_wait);
    assert!(
        matches!(&found, Support::Ignored { how } if how.starts_with("waited")),
        "{found:?}"
    );
    // What TiDB's ignored SKIP LOCKED does: the held row comes back.
    let reads = "SELECT id FROM stockguard_probe WHERE id = 1";
    let found = probe::skip_locked(attempt(reads).await.expect("attempt"), is_lock_wait);
    assert_eq!(
        found,
        Support::Ignored {
            how: "returned the row another transaction holds".into()
        }
    );
    // A clause the server does not know is unsupported, not honoured.
    let unknown = "SELECT id FROM stockguard_probe WHERE id = 1 FOR UPDATE SKIP EVERYTHING";
    let found = probe::skip_locked(attempt(unknown).await.expect("attempt"), is_lock_wait);
    assert!(matches!(found, Support::Unsupported { .. }), "{found:?}");
    store.close().await;
}
