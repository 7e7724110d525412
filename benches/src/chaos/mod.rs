//! The chaos suite's history checker: a recorded history of every request (`history`), the
//! verdict against what the database holds (`checker`, pure), the database reader
//! (`snapshot`) and the negative controls that the checker must flag (`controls`). See
//! docs/reliability.md.
//!
//! Modules, in dependency order (no cycles): `history`, `checker`, `controls`, `snapshot`.

pub mod checker;
pub mod controls;
pub mod history;
pub mod snapshot;
