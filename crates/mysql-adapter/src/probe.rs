//! What this MySQL-compatible server really does with the locking clauses the adapter writes
//! (see `stockguard_core::ServerProbe`), and whether it runs Galera. TiDB speaks this
//! protocol, names itself in `VERSION()`, and parses `SKIP LOCKED` without honouring it
//! (pingcap/tidb#69720): the probe is what tells.

use sqlx::mysql::MySqlConnectOptions;
use sqlx::{Connection, MySql};
use stockguard_core::{DeductError, GaleraFacts, LockFeature, ServerProbe, Strategy, Support};
use stockguard_sql::probe::{self, ProbeSql};

use crate::ServerFlavor;
use crate::backend::MySqlBackend;

/// The probe's statements.
const PROBE_SQL: ProbeSql = ProbeSql {
    short_lock_wait: "SET SESSION innodb_lock_wait_timeout = 1",
    hold_row: "SELECT id FROM stockguard_probe WHERE id = 1 FOR UPDATE",
};
const SKIP_LOCKED: &str = "SELECT id FROM stockguard_probe WHERE id = 1 FOR UPDATE SKIP LOCKED";
const NOWAIT: &str = "SELECT id FROM stockguard_probe WHERE id = 1 FOR UPDATE NOWAIT";
/// MariaDB names the session's isolation `tx_isolation` (10.x; `transaction_isolation`
/// arrived in 11.1), MySQL 8 only `transaction_isolation`.
const ISOLATION_MARIADB: &str = "SELECT VERSION(), @@SESSION.tx_isolation";
const ISOLATION_MYSQL: &str = "SELECT VERSION(), @@SESSION.transaction_isolation";
/// Present (and `ON`) only where Galera replication runs; MySQL 8 has no such variable.
const WSREP_ON: &str = "SHOW GLOBAL VARIABLES LIKE 'wsrep_on'";
const CLUSTER_SIZE: &str = "SHOW GLOBAL STATUS LIKE 'wsrep_cluster_size'";
const SYNC_WAIT: &str = "SHOW SESSION VARIABLES LIKE 'wsrep_sync_wait'";

/// 1205 (lock wait timeout, and MariaDB's `NOWAIT`) or 3572 (MySQL's `NOWAIT`).
fn is_lock_wait(error: &sqlx::Error) -> bool {
    matches!(crate::error::error_number(error), Some(1205 | 3572))
}

/// The product a `VERSION()` string names.
pub(crate) fn product(version: &str) -> &'static str {
    if version.contains("TiDB") {
        "TiDB"
    } else if version.contains("MariaDB") {
        "MariaDB"
    } else {
        "MySQL"
    }
}

/// `Value` of a one-row `SHOW … LIKE` answer (none when the variable does not exist).
async fn show_value(
    connection: &mut sqlx::MySqlConnection,
    sql: &'static str,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String, String)> = sqlx::query_as(sql).fetch_optional(connection).await?;
    Ok(row.map(|(_, value)| value))
}

impl MySqlBackend {
    /// The clauses each strategy's SQL (`sql.rs`) relies on: `NoWait` locks the row `NOWAIT`,
    /// and `Sharded` takes a free row or bucket with `SKIP LOCKED`. (MySQL has no `FOR NO KEY
    /// UPDATE`; the adapter never writes it.)
    pub(crate) fn clauses_of(strategy: Strategy) -> &'static [LockFeature] {
        match strategy {
            Strategy::NoWait => &[LockFeature::NoWait],
            Strategy::Sharded => &[LockFeature::SkipLocked],
            _ => &[],
        }
    }

    /// One short-lived connection to ask the server what it is and whether it runs Galera, which
    /// also surfaces the real cause (refused, no such host, wrong password) that a pool would
    /// hide behind a timeout.
    pub(crate) async fn detect_server(
        options: &MySqlConnectOptions,
    ) -> Result<(ServerFlavor, bool), DeductError> {
        let connect = |e| crate::error::fault(e, "connecting to MySQL", false).into_error();
        let mut connection = sqlx::MySqlConnection::connect_with(options)
            .await
            .map_err(connect)?;
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&mut connection)
            .await
            .map_err(connect)?;
        let wsrep_on = show_value(&mut connection, WSREP_ON).await.map_err(connect)?;
        let _ = connection.close().await;
        Ok((
            ServerFlavor::from_version(&version),
            wsrep_on.is_some_and(|value| value.eq_ignore_ascii_case("ON")),
        ))
    }

    pub(crate) async fn probe_server(&self) -> Result<ServerProbe, DeductError> {
        let failed = |e| crate::error::fault(e, "probing the server", false).into_error();
        let pool = self.pool.inner();
        // A pooled session, so the isolation and sync wait are the ones the engine runs at.
        let mut connection = pool.acquire().await.map_err(failed)?;
        let facts = match self.flavor {
            ServerFlavor::MariaDb => ISOLATION_MARIADB,
            ServerFlavor::MySql => ISOLATION_MYSQL,
        };
        let (version, isolation): (String, String) = sqlx::query_as(facts)
            .fetch_one(&mut *connection)
            .await
            .map_err(failed)?;
        let galera = if self.galera {
            let size = show_value(&mut connection, CLUSTER_SIZE).await.map_err(failed)?;
            let sync_wait = show_value(&mut connection, SYNC_WAIT).await.map_err(failed)?;
            let causal_reads = sqlx::query(crate::sql::WAIT_FOR_CLUSTER)
                .execute(&mut *connection)
                .await
                .is_ok();
            Some(GaleraFacts {
                cluster_size: size.and_then(|v| v.parse().ok()).unwrap_or(0),
                causal_reads,
                session_sync_wait: sync_wait.and_then(|v| v.parse().ok()).unwrap_or(0),
            })
        } else {
            None
        };
        drop(connection);
        let attempt = |sql| probe::attempt_on_held_row::<MySql>(pool, PROBE_SQL, sql);
        let skip_locked = probe::skip_locked(attempt(SKIP_LOCKED).await.map_err(failed)?, is_lock_wait);
        let nowait = probe::nowait(attempt(NOWAIT).await.map_err(failed)?, is_lock_wait);
        Ok(ServerProbe {
            product: product(&version).to_owned(),
            version,
            isolation: isolation.to_lowercase().replace('-', " "),
            galera,
            skip_locked,
            nowait,
            for_no_key_update: Support::NotApplicable,
        })
    }
}

#[cfg(test)]
mod tests {
    use stockguard_core::InventoryStore;

    use super::*;
    use crate::{MySqlConfig, MySqlStore};

    /// The adapter's own probe statements and lock-error test, judged against statements that
    /// behave as a misbehaving server would (see `assert_judges_misbehaviour`).
    #[tokio::test]
    async fn the_probe_calls_a_clause_that_waits_or_returns_the_held_row_ignored() {
        let Some(database) = stockguard_testkit::TestDatabase::mysql().await else {
            return;
        };
        let store = MySqlStore::connect(MySqlConfig::new(database.url()))
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        probe::assert_judges_misbehaviour(store.adapter().pool(), PROBE_SQL, is_lock_wait).await;
        store.close().await;
    }

    #[test]
    fn the_product_is_read_from_the_version_string() {
        assert_eq!(product("10.11.19-MariaDB-0+deb12u1"), "MariaDB");
        assert_eq!(product("8.4.3"), "MySQL");
        assert_eq!(product("8.0.11-TiDB-v7.5.1"), "TiDB");
    }
}
