//! results.json, report.md and the SVG plots.

mod checkout_table;
mod flash_table;
mod http_table;
mod keyed_table;
mod markdown;
mod plots;
mod results;
mod tables;
mod view;

pub use checkout_table::HOLD_ORDER_RATIO_TARGET;
pub use http_table::{HTTP_RATIO_TARGET, HttpComparison, http_comparisons};
pub use keyed_table::{KeyedComparison, keyed_comparisons};
pub use markdown::write_markdown;
pub use plots::write_plots;
pub use results::{MachineInfo, Results};
pub use tables::{CONFLICT_BANDS, SHED_FRACTION_MAX};
