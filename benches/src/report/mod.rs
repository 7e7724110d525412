//! results.json, report.md and the SVG plots.

mod anchor_table;
mod audit_table;
mod checkout_table;
mod flash_table;
mod galera_table;
mod http_table;
mod instances_table;
mod keyed_table;
mod markdown;
mod pg_ha_table;
mod plots;
mod results;
mod service_memory_table;
mod setup_table;
mod tables;
mod view;

pub use anchor_table::{AnchorComparison, MYSQL_BATCH_TARGET, PG_BATCH_TARGET, anchor_comparisons};
pub use audit_table::INCREMENTAL_SPEEDUP_TARGET;
pub use checkout_table::HOLD_ORDER_RATIO_TARGET;
pub use http_table::{HTTP_RATIO_TARGET, HttpComparison, http_comparisons};
pub use keyed_table::{KeyedComparison, keyed_comparisons};
pub use markdown::write_markdown;
pub use plots::write_plots;
pub use results::{MachineInfo, Results};
pub use tables::{CONFLICT_BANDS, SHED_FRACTION_MAX};
