//! The stockguard simulation benchmark harness: seeded workloads driven through the real
//! library, in-process or over the HTTP service (and raw-SQL baselines and a negative
//! control), on real databases, with an in-database audit after every run. See
//! docs/benchmarks.md. The `chaos` module is the fault suite (docs/reliability.md).

pub mod anchors;
pub mod audit;
pub mod audit_scaling;
pub mod case;
pub mod chaos;
pub mod checkout;
pub mod db;
pub mod flash;
pub mod flash_faults;
pub mod flash_http;
mod flash_lock;
pub mod flash_plan;
pub mod flash_service_kill;
pub mod galera;
pub mod gate_overhead;
pub mod haproxy;
pub mod http;
pub mod instances;
pub mod key_contract;
pub mod measure;
pub mod pg_ha;
pub mod pg_ha_cluster;
pub mod profile;
pub mod raw;
pub mod redis_lock;
pub mod report;
pub mod runner;
pub mod service_memory;
pub mod tally;
pub mod verdict;
pub mod workload;
