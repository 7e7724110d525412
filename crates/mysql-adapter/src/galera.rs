//! What the adapter does differently on MariaDB Galera: reads that decide an answer wait
//! for the cluster first, and a stock or ledger write that finds itself outside a transaction
//! is refused.
//!
//! Why the second: MariaDB 10.11 Galera can abort a local transaction for a conflicting replicated write
//! (a brute-force abort) while one of its statements runs, and still answer that statement
//! with success. The transaction is gone, so the statements that follow run in autocommit,
//! each committed at once: a ledger row commits without the stock change it records. The
//! Galera bench found it (a hot SKU with writes spread over three nodes sold one unit in a
//! few hundred twice), and `tests/galera.rs` reproduces it when these triggers are left out.
//!
//! Every write of the engine to these tables runs inside `BEGIN … COMMIT`, where
//! `@@in_transaction` is 1. A write that sees 0 is one of the statements a silent abort set
//! loose: it fails with 1213, which the adapter maps to a definite rollback, and the engine
//! retries the whole change. Replicated writes do not fire triggers (row events are applied
//! as rows), and a maintenance session (the bench's resets, an operator's repair) may write
//! outside a transaction after `SET @stockguard_maintenance = 1`.

use sqlx::pool::PoolConnection;
use sqlx::{Executor, MySql};
use stockguard_core::engine::Fault;
use stockguard_sql as common;

use crate::backend::MySqlBackend;
use crate::sql;

/// `(table, event)` pairs guarded: every change to stock, reservations, buckets, the ledger,
/// orders and holds. (Creating a SKU inserts its row alone, in autocommit: not guarded.)
const GUARDED: &[(&str, &str)] = &[
    ("inventory", "UPDATE"),
    ("inventory_bucket", "INSERT"),
    ("inventory_bucket", "UPDATE"),
    ("inventory_ledger", "INSERT"),
    ("inventory_order", "INSERT"),
    ("inventory_hold", "INSERT"),
    ("inventory_hold", "UPDATE"),
];

/// The trigger for one table and event.
fn trigger(table: &str, event: &str) -> String {
    format!(
        "CREATE TRIGGER IF NOT EXISTS stockguard_{table}_{name}_in_tx BEFORE {event} ON {table} \
         FOR EACH ROW IF @@in_transaction = 0 AND @stockguard_maintenance IS NULL THEN \
         SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = \
         'stockguard: a write outside its transaction (the transaction was aborted by Galera)'; \
         END IF",
        name = event.to_lowercase(),
    )
}

impl MySqlBackend {
    /// Installs the guard triggers (idempotent; DDL, replicated to every node).
    pub(crate) async fn install_galera_guards(&self) -> Result<(), sqlx::Error> {
        for (table, event) in GUARDED {
            self.pool
                .inner()
                .execute(sqlx::AssertSqlSafe(trigger(table, event)))
                .await?;
        }
        Ok(())
    }

    /// A pooled connection for an autocommit read that decides an answer (a key's ledger row,
    /// a miss's facts, an order, a hold, a stock level). On Galera this node first applies
    /// every write the cluster committed before the read (`wsrep_sync_wait`, for this one
    /// statement): the read may be resolving a write another node committed.
    ///
    /// Never inside a transaction: MariaDB 10.11 lets a causal wait inside a transaction
    /// abort that transaction for a conflicting replicated write and still answer the read,
    /// so its later statements run and commit one by one, outside it (a ledger row without
    /// its stock change; the module's comment says more).
    pub(crate) async fn causal_connection(
        &self,
        context: &'static str,
    ) -> Result<PoolConnection<MySql>, Fault> {
        let mut connection = self.connection(context).await?;
        if self.galera {
            common::execute(&mut *connection, sql::WAIT_FOR_CLUSTER)
                .await
                .map_err(self.fault(context))?;
        }
        Ok(connection)
    }

    /// Before a resolution's transaction: on Galera, this node applies every write the cluster
    /// committed so far, outside the transaction (see [`MySqlBackend::causal_connection`]).
    pub(crate) async fn wait_for_cluster(&self, context: &'static str) -> Result<(), Fault> {
        if self.galera {
            drop(self.causal_connection(context).await?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_refuses_writes_outside_a_transaction_as_a_deadlock() {
        let sql = trigger("inventory_ledger", "INSERT");
        assert!(sql.starts_with(
            "CREATE TRIGGER IF NOT EXISTS stockguard_inventory_ledger_insert_in_tx BEFORE INSERT ON inventory_ledger"
        ));
        assert!(sql.contains("@@in_transaction = 0 AND @stockguard_maintenance IS NULL"));
        assert!(sql.contains("MYSQL_ERRNO = 1213"));
    }
}
