//! What this PostgreSQL-compatible server really does with the locking clauses the adapter
//! writes (see `stockguard_core::ServerProbe`). CockroachDB and YugabyteDB speak this
//! protocol and name themselves in `version()`.

use sqlx::postgres::Postgres;
use stockguard_core::{DeductError, LockFeature, ServerProbe, Strategy};
use stockguard_sql::probe::{self, ProbeSql};

use crate::backend::PgBackend;

/// The probe's statements.
const PROBE_SQL: ProbeSql = ProbeSql {
    short_lock_wait: "SET lock_timeout = '1s'",
    hold_row: "SELECT id FROM stockguard_probe WHERE id = 1 FOR UPDATE",
};
const SKIP_LOCKED: &str = "SELECT id FROM stockguard_probe WHERE id = 1 FOR UPDATE SKIP LOCKED";
const NOWAIT: &str = "SELECT id FROM stockguard_probe WHERE id = 1 FOR UPDATE NOWAIT";
const NO_KEY_UPDATE: &str = "SELECT id FROM stockguard_probe WHERE id = 1 FOR NO KEY UPDATE";
/// The first word of `version()` is the product; the session's isolation is the pool's.
const FACTS: &str = "SELECT split_part(version(), ' ', 1), current_setting('server_version'), \
                     current_setting('transaction_isolation')";

/// 55P03 `lock_not_available`: both `NOWAIT`'s error and `lock_timeout`'s.
fn is_lock_wait(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"))
}

impl PgBackend {
    /// The clauses each strategy's SQL (`sql.rs`) relies on: the SKU row is locked `FOR NO KEY
    /// UPDATE` by the locking strategies, `NoWait` adds `NOWAIT`, and `Sharded` picks buckets
    /// with `SKIP LOCKED`.
    pub(crate) fn clauses_of(strategy: Strategy) -> &'static [LockFeature] {
        match strategy {
            Strategy::Pessimistic | Strategy::Coalesced => &[LockFeature::ForNoKeyUpdate],
            Strategy::NoWait => &[LockFeature::ForNoKeyUpdate, LockFeature::NoWait],
            Strategy::Sharded => &[LockFeature::ForNoKeyUpdate, LockFeature::SkipLocked],
            _ => &[],
        }
    }

    pub(crate) async fn probe_server(&self) -> Result<ServerProbe, DeductError> {
        let failed = |e| crate::error::fault(e, "probing the server", false).into_error();
        let pool = self.pool.inner();
        let mut connection = pool.acquire().await.map_err(failed)?;
        let (product, version, isolation): (String, String, String) = sqlx::query_as(FACTS)
            .fetch_one(&mut *connection)
            .await
            .map_err(failed)?;
        let for_no_key_update = probe::accepted(
            sqlx::query(NO_KEY_UPDATE)
                .fetch_all(&mut *connection)
                .await
                .map(|rows| rows.len()),
        );
        drop(connection);
        let attempt = |sql| probe::attempt_on_held_row::<Postgres>(pool, PROBE_SQL, sql);
        let skip_locked = probe::skip_locked(attempt(SKIP_LOCKED).await.map_err(failed)?, is_lock_wait);
        let nowait = probe::nowait(attempt(NOWAIT).await.map_err(failed)?, is_lock_wait);
        Ok(ServerProbe {
            product,
            version,
            isolation,
            galera: None,
            skip_locked,
            nowait,
            for_no_key_update,
        })
    }
}

#[cfg(test)]
mod tests {
    use stockguard_core::InventoryStore;

    use super::*;
    use crate::{PgConfig, PgStore};

    /// The adapter's own probe statements and lock-error test, judged against statements that
    /// behave as a misbehaving server would (see `assert_judges_misbehaviour`).
    #[tokio::test]
    async fn the_probe_calls_a_clause_that_waits_or_returns_the_held_row_ignored() {
        let Some(database) = stockguard_testkit::TestDatabase::postgres().await else {
            return;
        };
        let store = PgStore::connect(PgConfig::new(database.url()))
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        probe::assert_judges_misbehaviour(store.adapter().pool(), PROBE_SQL, is_lock_wait).await;
        store.close().await;
    }
}
