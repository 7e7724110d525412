//! Trying a locking clause against a row another session holds: the flow of the SQL
//! adapters' probe ([`stockguard_core::Backend::probe`]). Each adapter supplies its SQL and
//! says which of its errors is a lock wait; what a result means is decided here, once.
//!
//! The probe opens two connections of its own rather than taking pooled ones, so that its
//! short lock wait never leaks into a session the engine later uses.

use std::time::{Duration, Instant};

use sqlx::{Connection, Database, Executor, Pool};
use stockguard_core::Support;

/// An adapter's probe statements.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSql {
    /// Run first on the trying session: sets its lock wait to [`PROBE_LOCK_WAIT`].
    pub short_lock_wait: &'static str,
    /// Takes the probe row's lock (run inside a transaction on the holding session).
    pub hold_row: &'static str,
}

/// How long the trying session waits for a lock: a clause that waits this long was not
/// honoured (an honoured `SKIP LOCKED` or `NOWAIT` answers in well under half of it).
pub const PROBE_LOCK_WAIT: Duration = Duration::from_secs(1);

/// What one attempt on the held row did.
#[derive(Debug)]
pub enum Attempt {
    /// It returned this many rows.
    Rows(usize),
    /// It failed, after this long.
    Failed {
        /// The server's error.
        error: sqlx::Error,
        /// From sending it to the error.
        after: Duration,
    },
}

/// Runs `attempt` (one statement with no parameters, reading the probe row with a locking
/// clause) in a transaction on one fresh session while another fresh session holds the
/// probe row's lock, then ends both.
pub async fn attempt_on_held_row<DB>(
    pool: &Pool<DB>,
    sql: ProbeSql,
    attempt: &'static str,
) -> Result<Attempt, sqlx::Error>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let options = pool.connect_options();
    let mut holder = DB::Connection::connect_with(&options).await?;
    let mut trier = DB::Connection::connect_with(&options).await?;
    (&mut holder).execute("BEGIN").await?;
    (&mut holder).execute(sql.hold_row).await?;
    (&mut trier).execute(sql.short_lock_wait).await?;
    (&mut trier).execute("BEGIN").await?;
    let sent = Instant::now();
    let outcome = match (&mut trier).fetch_all(attempt).await {
        Ok(rows) => Attempt::Rows(rows.len()),
        Err(error) => Attempt::Failed {
            error,
            after: sent.elapsed(),
        },
    };
    // Closing ends both transactions on the server; nothing was written.
    let _ = trier.close().await;
    let _ = holder.close().await;
    Ok(outcome)
}

const RETURNED_HELD_ROW: &str = "returned the row another transaction holds";

/// `FOR UPDATE SKIP LOCKED` on the held row: honoured when it returns nothing at once.
pub fn skip_locked(attempt: Attempt, is_lock_wait: impl Fn(&sqlx::Error) -> bool) -> Support {
    match attempt {
        Attempt::Rows(0) => Support::Honoured,
        Attempt::Rows(_) => Support::Ignored {
            how: RETURNED_HELD_ROW.to_owned(),
        },
        Attempt::Failed { error, after } if is_lock_wait(&error) => Support::Ignored {
            how: format!("waited {} ms for the held row's lock", after.as_millis()),
        },
        Attempt::Failed { error, .. } => Support::Unsupported {
            error: error.to_string(),
        },
    }
}

/// `FOR UPDATE NOWAIT` on the held row: honoured when it fails with a lock error at once.
pub fn nowait(attempt: Attempt, is_lock_wait: impl Fn(&sqlx::Error) -> bool) -> Support {
    match attempt {
        Attempt::Failed { error, after } if is_lock_wait(&error) => {
            if after < PROBE_LOCK_WAIT / 2 {
                Support::Honoured
            } else {
                Support::Ignored {
                    how: format!("waited {} ms for the held row's lock", after.as_millis()),
                }
            }
        }
        Attempt::Failed { error, .. } => Support::Unsupported {
            error: error.to_string(),
        },
        Attempt::Rows(0) => Support::Ignored {
            how: "skipped the held row instead of failing".to_owned(),
        },
        Attempt::Rows(_) => Support::Ignored {
            how: RETURNED_HELD_ROW.to_owned(),
        },
    }
}

/// A clause tried where nothing holds the row: honoured when the server accepts it.
pub fn accepted(result: Result<usize, sqlx::Error>) -> Support {
    match result {
        Ok(_) => Support::Honoured,
        Err(error) => Support::Unsupported {
            error: error.to_string(),
        },
    }
}

/// Checks the judging against statements that behave as a misbehaving server would, on a
/// real server whose schema has the probe row: a plain `FOR UPDATE` waits (as an ignored
/// `SKIP LOCKED` or `NOWAIT` does), a plain `SELECT` returns the held row (as TiDB's ignored
/// `SKIP LOCKED` does), and an unknown clause is refused. Panics on a wrong verdict.
#[cfg(feature = "test-utils")]
pub async fn assert_judges_misbehaviour<DB>(
    pool: &Pool<DB>,
    sql: ProbeSql,
    is_lock_wait: fn(&sqlx::Error) -> bool,
) where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let attempt = |statement| attempt_on_held_row(pool, sql, statement);
    let waits = "SELECT id FROM stockguard_probe WHERE id = 1 FOR UPDATE";
    let waited = |found: &Support| matches!(found, Support::Ignored { how } if how.starts_with("waited"));
    let found = skip_locked(attempt(waits).await.expect("attempt"), is_lock_wait);
    assert!(waited(&found), "a SKIP LOCKED that waits: {found:?}");
    let found = nowait(attempt(waits).await.expect("attempt"), is_lock_wait);
    assert!(waited(&found), "a NOWAIT that waits: {found:?}");
    let reads = "SELECT id FROM stockguard_probe WHERE id = 1";
    let found = skip_locked(attempt(reads).await.expect("attempt"), is_lock_wait);
    assert_eq!(
        found,
        Support::Ignored {
            how: RETURNED_HELD_ROW.to_owned()
        }
    );
    let unknown = "SELECT id FROM stockguard_probe WHERE id = 1 FOR UPDATE SKIP EVERYTHING";
    let found = skip_locked(attempt(unknown).await.expect("attempt"), is_lock_wait);
    assert!(
        matches!(found, Support::Unsupported { .. }),
        "an unknown clause: {found:?}"
    );
}
