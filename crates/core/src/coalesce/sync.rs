//! Swaps std primitives for loom's under `cfg(loom)`, so the handoff queue can be model
//! checked without changing its code (the tokio `loom` shim pattern).

#[cfg(loom)]
pub(crate) use loom::sync::Mutex;
#[cfg(not(loom))]
pub(crate) use std::sync::Mutex;
