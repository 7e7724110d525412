//! The hold primitives on MySQL/MariaDB: claiming a hold id, and reading, locking and
//! resolving holds. A hold's lines are written by `orders.rs`'s line primitives.

use chrono::{DateTime, Utc};
use sqlx::MySql;
use stockguard_core::engine::{Backend, Fault, StoredHold, StoredHoldRow};
use stockguard_core::{HoldCheck, HoldId, HoldState, SkuId};

use stockguard_sql as common;

use crate::ServerFlavor;
use crate::backend::{MySqlBackend, MySqlTx};
use crate::sql;

impl MySqlBackend {
    pub(crate) async fn claim_hold_in(
        &self,
        tx: &mut MySqlTx,
        hold_id: &HoldId,
        lines: &str,
        line_count: usize,
        ttl_s: u32,
    ) -> Result<DateTime<Utc>, Fault> {
        let line_count = u32::try_from(line_count).unwrap_or(u32::MAX);
        if self.flavor == ServerFlavor::MariaDb {
            return sqlx::query_scalar(sql::CLAIM_HOLD_RETURNING)
                .bind(hold_id.as_str())
                .bind(lines)
                .bind(line_count)
                .bind(ttl_s)
                .fetch_one(&mut **tx)
                .await
                .map_err(self.fault("claiming a hold id"));
        }
        sqlx::query(sql::CLAIM_HOLD)
            .bind(hold_id.as_str())
            .bind(lines)
            .bind(line_count)
            .bind(ttl_s)
            .execute(&mut **tx)
            .await
            .map_err(self.fault("claiming a hold id"))?;
        sqlx::query_scalar(sql::HOLD_EXPIRY)
            .bind(hold_id.as_str())
            .fetch_one(&mut **tx)
            .await
            .map_err(self.fault("reading a hold's expiry"))
    }

    /// The hold read (or locked) by `statement`, with its ledger rows.
    pub(crate) async fn hold_on(
        &self,
        connection: &mut sqlx::MySqlConnection,
        statement: &'static str,
        hold_id: &HoldId,
    ) -> Result<Option<StoredHold>, Fault> {
        let found = common::find_hold::<MySql>(connection, statement, sql::HOLD_ENTRIES, hold_id)
            .await
            .map_err(self.fault("reading a hold"))?;
        Ok(common::stored_holds(found)?.pop())
    }

    pub(crate) async fn find_hold_in(&self, hold_id: &HoldId) -> Result<Option<StoredHold>, Fault> {
        let mut connection = self.causal_connection("reading a hold").await?;
        self.hold_on(&mut connection, sql::FIND_HOLD, hold_id).await
    }

    /// Waits out whatever holds the hold's row, then `skus`' rows (the order every hold
    /// change takes them in), then reads the hold.
    pub(crate) async fn settle_and_find_hold_in(
        &self,
        skus: &[&SkuId],
        hold_id: &HoldId,
    ) -> Result<Option<StoredHold>, Fault> {
        self.wait_for_cluster("resolving a lost answer").await?;
        let mut tx = common::Tx::begin(&self.pool, "BEGIN")
            .await
            .map_err(self.fault("resolving a lost answer"))?;
        let mut settled = sqlx::query(sql::SETTLE_HOLD)
            .bind(hold_id.as_str())
            .execute(&mut *tx)
            .await
            .map(|_| ());
        for sku in skus {
            if settled.is_ok() {
                settled = sqlx::query(sql::SETTLE_ROW)
                    .bind(sku.as_str())
                    .execute(&mut *tx)
                    .await
                    .map(|_| ());
            }
        }
        let found = match settled {
            Ok(()) => self.hold_on(&mut tx, sql::FIND_HOLD, hold_id).await,
            Err(error) => Err(self.fault("waiting out the lost transaction's locks")(error)),
        };
        self.rollback(tx).await;
        found
    }

    pub(crate) async fn has_due_holds_in(&self, sku: &SkuId) -> Result<bool, Fault> {
        let mut connection = self.connection("looking for due holds").await?;
        let due: i64 = sqlx::query_scalar(sql::HAS_DUE_ON)
            .bind(sku.as_str())
            .fetch_one(&mut *connection)
            .await
            .map_err(self.fault("looking for due holds"))?;
        Ok(due != 0)
    }

    pub(crate) async fn lock_due_holds_in(
        &self,
        tx: &mut MySqlTx,
        sku: Option<&SkuId>,
        limit: u32,
    ) -> Result<Vec<StoredHold>, Fault> {
        let rows: Vec<StoredHoldRow> = match sku {
            Some(sku) => sqlx::query_as(sql::LOCK_DUE_ON).bind(sku.as_str()).bind(limit),
            None => sqlx::query_as(sql::LOCK_DUE_ANY).bind(limit),
        }
        .fetch_all(&mut **tx)
        .await
        .map_err(self.fault("locking due holds"))?;
        let found = common::holds_with_entries::<MySql>(tx, rows, sql::HOLD_ENTRIES)
            .await
            .map_err(self.fault("reading due holds"))?;
        common::stored_holds(found)
    }

    pub(crate) async fn set_hold_state_in(
        &self,
        tx: &mut MySqlTx,
        hold_id: &HoldId,
        state: HoldState,
    ) -> Result<(), Fault> {
        sqlx::query(sql::SET_HOLD_STATE)
            .bind(state.as_str())
            .bind(hold_id.as_str())
            .execute(&mut **tx)
            .await
            .map(|_| ())
            .map_err(self.fault("resolving a hold"))
    }

    pub(crate) async fn hold_check_in(&self) -> Result<HoldCheck, Fault> {
        let mut connection = self.connection("checking holds").await?;
        common::hold_check::<MySql>(&mut connection, sql::HOLD_ROWS, sql::RESERVED_MISMATCHES)
            .await
            .map_err(self.fault("checking holds"))
    }
}
