//! The stockguard service: an HTTP API (axum) over any stockguard store, with the
//! configuration, metrics and shutdown handling a production deployment needs.
//! The `stockguard` binary is a thin CLI over this library.

pub mod config;
pub mod http;
pub mod metrics;
pub mod problem;
pub mod server;
pub mod store;
pub mod sweeper;
pub mod telemetry;

pub use config::{CliSettings, DatabaseTarget, Settings};
pub use http::{ApiDoc, AppState, openapi_pretty_json, router};
pub use server::{RunningServer, open_existing_store, open_store, start};
pub use store::AnyStore;
