//! Shared by the gate's tests: a gate in its own key namespace, and fresh stores on every
//! database. The machine's Redis is `STOCKGUARD_REDIS_URL` (default 127.0.0.1:6379); like the
//! databases, it is required when `STOCKGUARD_REQUIRE_DB` is set (CI), skipped loudly otherwise.

#![allow(dead_code, unreachable_pub, unused_macros)]

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use stockguard_core::{DeductError, InventoryStore, OrderRequest, OrderStrategy, Quantity, SkuId};
use stockguard_mysql::{MySqlConfig, MySqlStore};
use stockguard_postgres::{PgConfig, PgStore};
use stockguard_redis_gate::{Gate, GateConfig, RedisTarget};
use stockguard_sqlite::{SqliteConfig, SqliteStore};
use stockguard_testkit::{TestDatabase, TestSqliteFile};

pub fn redis_url() -> String {
    std::env::var("STOCKGUARD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A namespace no other test uses, so tests share one Redis without seeing each other's keys.
pub fn namespace() -> String {
    let name = stockguard_testkit::unique_name();
    format!("t{}", &name[name.len() - 24..])
}

/// A gate on `url` in a fresh namespace, with `tune` applied; `None` (skipped) only when Redis
/// is unreachable and no database is required.
pub async fn gate_on(url: &str, tune: impl FnOnce(&mut GateConfig)) -> Option<Arc<Gate>> {
    let mut config = GateConfig::new(RedisTarget::parse(url).expect("redis url"));
    config.namespace = namespace();
    config.redis_timeout = Duration::from_secs(2);
    tune(&mut config);
    // The gate starts with Redis down (it fails open or closed until Redis answers), so
    // whether Redis is there is asked with a PING.
    let connected = match Gate::connect(config).await {
        Ok(gate) if gate.ping().await => Ok(gate),
        Ok(_) => Err(stockguard_core::DeductError::Unavailable {
            reason: "redis does not answer",
            retry_after: Duration::from_secs(1),
            source: None,
        }),
        Err(error) => Err(error),
    };
    match connected {
        Ok(gate) => Some(Arc::new(gate)),
        Err(error) if !stockguard_testkit::database_required() => {
            let _ = writeln!(std::io::stderr(), "\n*** SKIPPED REDIS GATE TEST *** {error}\n");
            None
        }
        Err(error) => panic!("Redis is required here (STOCKGUARD_REQUIRE_DB): {error}"),
    }
}

pub async fn gate(tune: impl FnOnce(&mut GateConfig)) -> Option<Arc<Gate>> {
    gate_on(&redis_url(), tune).await
}

/// A raw connection to the machine's Redis, for planting drift.
pub async fn raw_redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

pub fn sku(name: &str) -> SkuId {
    SkuId::parse(name).expect("sku")
}

pub fn qty(units: i64) -> Quantity {
    Quantity::new(units).expect("quantity")
}

/// A `locked` test order (the conformance suite's helper).
pub fn order(id: &str, lines: &[(&SkuId, i64)]) -> OrderRequest {
    stockguard_core::conformance::order(id, lines, OrderStrategy::Locked)
}

pub async fn stock<S: InventoryStore>(store: &S, sku: &SkuId) -> i64 {
    store.stock(sku).await.expect("stock").stock
}

pub fn is_short(answer: &Result<impl std::fmt::Debug, DeductError>) -> bool {
    matches!(answer, Err(DeductError::InsufficientStock { .. }))
}

/// Whatever keeps a test's database alive until the test ends.
pub type Guard = Box<dyn std::any::Any + Send>;

pub async fn sqlite() -> Option<(SqliteStore, Guard)> {
    let file = TestSqliteFile::new();
    let store = sqlite_on(&file).await;
    Some((store, Box::new(file)))
}

/// A store on `file`, migrated; several may share one file, as several services would.
pub async fn sqlite_on(file: &TestSqliteFile) -> SqliteStore {
    let mut config = SqliteConfig::new(file.path());
    config.max_connections = 8;
    config.acquire_timeout = Duration::from_secs(30);
    config.busy_timeout = Duration::from_secs(10);
    let store = SqliteStore::connect(config).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

pub async fn postgres() -> Option<(PgStore, Guard)> {
    let database = TestDatabase::postgres().await?;
    let mut config = PgConfig::new(database.url());
    config.max_connections = 16;
    config.acquire_timeout = Duration::from_secs(30);
    let store = PgStore::connect(config).await.expect("connect");
    store.migrate().await.expect("migrate");
    Some((store, Box::new(database)))
}

pub async fn mariadb() -> Option<(MySqlStore, Guard)> {
    let database = TestDatabase::mysql().await?;
    let mut config = MySqlConfig::new(database.url());
    config.max_connections = 16;
    config.acquire_timeout = Duration::from_secs(30);
    let store = MySqlStore::connect(config).await.expect("connect");
    store.migrate().await.expect("migrate");
    Some((store, Box::new(database)))
}

/// One `#[tokio::test]` per case and database: `crate::$case(store)` on a fresh SQLite,
/// PostgreSQL and MariaDB store.
macro_rules! on_every_database {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some((store, _guard)) = crate::support::sqlite().await else { return };
                    crate::$case(store).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some((store, _guard)) = crate::support::postgres().await else { return };
                    crate::$case(store).await;
                }
            )+
        }
        mod mariadb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some((store, _guard)) = crate::support::mariadb().await else { return };
                    crate::$case(store).await;
                }
            )+
        }
    };
}
