//! The incremental audit's reads and its checkpoint upsert (see core's `AuditCheckpoints`).

use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, QueryBuilder, Type};
use stockguard_core::engine::Fault;
use stockguard_core::{AuditCheckpoint, CheckpointedSnapshot, SkuId, StoredCheckpointedRow};

use crate::corrupt;

/// The start of the checkpoint upsert; `VALUES` rows follow, then the adapter's conflict
/// clause, which replaces the three figures and stamps `verified_at`.
const INSERT_CHECKPOINTS: &str =
    "INSERT INTO inventory_audit_checkpoint (sku, through_ledger_id, ledger_delta_sum, ledger_rows) ";

/// The checkpointed read: `sql` returns `StoredCheckpointedRow`s. With `sku`, it is the
/// one-SKU read from the start, which takes the SKU as its only parameter.
pub async fn checkpointed<DB>(
    connection: &mut DB::Connection,
    sql: &'static str,
    sku: Option<&SkuId>,
) -> Result<Vec<StoredCheckpointedRow>, sqlx::Error>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    StoredCheckpointedRow: for<'r> FromRow<'r, DB::Row>,
{
    let query = sqlx::query_as(sql);
    let query = match sku {
        Some(sku) => query.bind(sku.as_str()),
        None => query,
    };
    query.fetch_all(&mut *connection).await
}

/// Checkpointed snapshots from stored rows, each SKU id re-checked.
pub fn checkpointed_snapshots(rows: Vec<StoredCheckpointedRow>) -> Result<Vec<CheckpointedSnapshot>, Fault> {
    CheckpointedSnapshot::from_stored_rows(rows).map_err(corrupt)
}

/// Inserts or replaces `checkpoints` in one statement; `on_conflict` is the adapter's clause.
pub async fn save_checkpoints<DB>(
    connection: &mut DB::Connection,
    checkpoints: &[AuditCheckpoint],
    on_conflict: &'static str,
) -> Result<(), sqlx::Error>
where
    DB: Database + sqlx::database::HasStatementCache,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    if checkpoints.is_empty() {
        return Ok(());
    }
    let mut upsert = QueryBuilder::<DB>::new(INSERT_CHECKPOINTS);
    upsert.push_values(checkpoints, |mut row, checkpoint| {
        row.push_bind(checkpoint.sku.as_str())
            .push_bind(checkpoint.through_ledger_id)
            .push_bind(checkpoint.ledger_delta_sum)
            .push_bind(checkpoint.ledger_rows);
    });
    upsert.push(on_conflict);
    // Its text changes with the batch's size: not worth a prepared statement per size.
    upsert.build().persistent(false).execute(&mut *connection).await?;
    Ok(())
}
