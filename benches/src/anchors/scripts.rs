//! The anchors' own SQL and Lua, copied verbatim from `../shared/anchors/` into
//! `benches/anchors/` (the test below keeps the copies honest), and the few textual
//! variations the harness makes: the batch size, and one statement per call.

/// The pgbench scripts (`pg_hot_row.sh`).
const PG_SCHEMA: &str = include_str!("../../anchors/pgbench/schema.sql");
const PG_PESSIMISTIC: &str = include_str!("../../anchors/pgbench/pessimistic.sql");
const PG_OPTIMISTIC: &str = include_str!("../../anchors/pgbench/optimistic.sql");
const PG_GUARDED: &str = include_str!("../../anchors/pgbench/guarded.sql");
const PG_BATCH32: &str = include_str!("../../anchors/pgbench/batch32.sql");
/// The sysbench script and schema (`mariadb_hot_row.sh`).
const MYSQL_SCHEMA: &str = include_str!("../../anchors/sysbench/schema.sql");
const SYSBENCH_CASE: &str = include_str!("../../anchors/sysbench/case.lua");

/// The batch size the anchors' own batch case uses; other sizes replace it in the text.
const ANCHOR_BATCH: u32 = 32;

/// One deduction pattern, as the anchors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnchorCase {
    /// `SELECT … FOR UPDATE`, check, `UPDATE`, log row: the seed article's flow.
    Pessimistic,
    /// Read the version, then a version-checked `UPDATE` and the log row (no retry: a miss
    /// writes nothing).
    Optimistic,
    /// One conditional `UPDATE` plus the log row.
    Guarded,
    /// `size` one-unit deductions and `size` log rows in one transaction: the ceiling a
    /// coalescing strategy can approach.
    Batch {
        /// Deductions per transaction.
        size: u32,
    },
}

impl AnchorCase {
    /// The case's name in reports (`batch32`, as the anchor scripts print it).
    pub fn name(self) -> String {
        match self {
            AnchorCase::Pessimistic => "pessimistic".to_owned(),
            AnchorCase::Optimistic => "optimistic".to_owned(),
            AnchorCase::Guarded => "guarded".to_owned(),
            AnchorCase::Batch { size } => format!("batch{size}"),
        }
    }

    /// Ledger rows (units) one successful transaction writes.
    pub fn units_per_transaction(self) -> u32 {
        match self {
            AnchorCase::Batch { size } => size,
            _ => 1,
        }
    }

    /// The pgbench script of this case.
    pub fn pgbench_script(self) -> String {
        match self {
            AnchorCase::Pessimistic => PG_PESSIMISTIC.to_owned(),
            AnchorCase::Optimistic => PG_OPTIMISTIC.to_owned(),
            AnchorCase::Guarded => PG_GUARDED.to_owned(),
            AnchorCase::Batch { size } => with_batch_size(PG_BATCH32, size),
        }
    }

    /// The sysbench `MODE` and the Lua script to run it with (`case.lua`; a batch of another
    /// size has its `32` replaced).
    pub fn sysbench_mode_and_script(self) -> (String, String) {
        match self {
            AnchorCase::Batch { size } => ("batch".to_owned(), with_batch_size(SYSBENCH_CASE, size)),
            other => (other.name(), SYSBENCH_CASE.to_owned()),
        }
    }
}

/// `text` with the anchors' batch size replaced by `size`. The scripts spell the size only
/// as the literal `32`, which the test below checks.
fn with_batch_size(text: &str, size: u32) -> String {
    text.replace(&ANCHOR_BATCH.to_string(), &size.to_string())
}

/// The PostgreSQL schema and its 100,000 SKUs, one statement per element (`VACUUM` cannot
/// run inside the implicit transaction of a multi-statement call).
pub(super) fn pg_schema_statements() -> Vec<&'static str> {
    statements(PG_SCHEMA)
}

/// The MySQL/MariaDB schema and its 100,000 SKUs. The script fills them from MariaDB's
/// `seq_1_to_100000` sequence engine; MySQL has none, so there (`mariadb` false) the same
/// rows come from a recursive CTE.
pub(super) fn mysql_schema_statements(mariadb: bool) -> Vec<&'static str> {
    const MYSQL_FILL: [&str; 2] = [
        "SET SESSION cte_max_recursion_depth = 100001",
        "INSERT INTO inventory (sku, stock) WITH RECURSIVE seq (n) AS (SELECT 1 UNION ALL \
         SELECT n + 1 FROM seq WHERE n < 100000) SELECT n, 1000000000000 FROM seq",
    ];
    statements(MYSQL_SCHEMA)
        .into_iter()
        .flat_map(
            |statement| match statement.contains("seq_1_to_100000") && !mariadb {
                true => MYSQL_FILL.to_vec(),
                false => vec![statement],
            },
        )
        .collect()
}

fn statements(text: &'static str) -> Vec<&'static str> {
    text.split(';').map(str::trim).filter(|s| !s.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// `../shared/anchors` beside the repository, when it is there (always for `.ci/run`; a
    /// GitHub runner has no `../shared`, and then there is nothing to compare with).
    fn shared_script(name: &str) -> Option<String> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/anchors")
            .join(name);
        let text = std::fs::read_to_string(&path).ok();
        if text.is_none() {
            eprintln!("{} is absent: the copies are not compared", path.display());
        }
        text
    }

    #[test]
    fn every_copy_appears_verbatim_in_the_shared_anchor_scripts() {
        let copies = [
            ("pg_hot_row.sh", PG_SCHEMA),
            ("pg_hot_row.sh", PG_PESSIMISTIC),
            ("pg_hot_row.sh", PG_OPTIMISTIC),
            ("pg_hot_row.sh", PG_GUARDED),
            ("pg_hot_row.sh", PG_BATCH32),
            ("mariadb_hot_row.sh", MYSQL_SCHEMA),
            ("mariadb_hot_row.sh", SYSBENCH_CASE),
        ];
        for (script, copy) in copies {
            let Some(original) = shared_script(script) else {
                return;
            };
            assert!(
                original.contains(copy.trim_end()),
                "benches/anchors/ has drifted from ../shared/anchors/{script}:\n{copy}"
            );
        }
    }

    #[test]
    fn another_batch_size_replaces_every_32_and_nothing_else() {
        for text in [PG_BATCH32, SYSBENCH_CASE] {
            let literal_count = text.matches("32").count();
            assert!(literal_count >= 3, "the batch size is spelled `32` in {text}");
            let resized = with_batch_size(text, 128);
            assert_eq!(resized.matches("128").count(), literal_count);
            assert!(!resized.contains("32"));
        }
        assert!(
            AnchorCase::Batch { size: 64 }
                .pgbench_script()
                .contains("generate_series(1,64)")
        );
        let (mode, lua) = AnchorCase::Batch { size: 128 }.sysbench_mode_and_script();
        assert_eq!(mode, "batch");
        assert!(lua.contains("for i = 1, 128 do"));
        assert_eq!(pg_schema_statements().len(), 4);
        assert_eq!(mysql_schema_statements(true).len(), 3);
        let mysql = mysql_schema_statements(false);
        assert_eq!(mysql.len(), 4);
        assert!(mysql.iter().all(|s| !s.contains("seq_1_to")));
    }
}
