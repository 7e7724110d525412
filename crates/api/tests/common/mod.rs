//! Shared test support: a real server on port 0 over a fresh database of each kind.

#![allow(dead_code, unreachable_pub)]

/// Generates one `#[tokio::test]` per backend for each scenario function (`Backend` must be
/// in scope in the calling file). Needs `#[macro_use] mod common;`.
#[allow(unused_macros)]
macro_rules! per_backend {
    ($($scenario:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $scenario() { super::$scenario(super::Backend::Postgres).await; })*
        }
        mod mariadb {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $scenario() { super::$scenario(super::Backend::MySql).await; })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $scenario() { super::$scenario(super::Backend::Sqlite).await; })*
        }
    };
}

use std::sync::Arc;
use std::time::Duration;

use stockguard_api::{AnyStore, DatabaseTarget, RunningServer, Settings, open_store, start};
use stockguard_testkit::{TestDatabase, TestSqliteFile};

pub mod served;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    MySql,
    Sqlite,
}

impl Backend {
    /// The strategies this database runs, by their wire names (SQLite has no `sharded`).
    pub fn strategies(self) -> Vec<&'static str> {
        stockguard_core::Strategy::ALL
            .into_iter()
            .filter(|s| self != Backend::Sqlite || *s != stockguard_core::Strategy::Sharded)
            .map(stockguard_core::Strategy::as_str)
            .collect()
    }
}

/// Keeps the fresh database alive (and drops it afterwards).
#[derive(Debug)]
pub enum TestDb {
    Server(TestDatabase),
    Sqlite(TestSqliteFile),
}

impl TestDb {
    /// A fresh database, or `None` when the server is unavailable and not required.
    pub async fn create(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Postgres => TestDatabase::postgres().await.map(Self::Server),
            Backend::MySql => TestDatabase::mysql().await.map(Self::Server),
            Backend::Sqlite => Some(Self::Sqlite(TestSqliteFile::new())),
        }
    }

    /// Where it lives, as the service's database target.
    pub fn target(&self) -> DatabaseTarget {
        match self {
            Self::Server(db) => DatabaseTarget::parse(db.url()).expect("test URL parses"),
            Self::Sqlite(file) => DatabaseTarget::Sqlite(file.path()),
        }
    }

    /// The URL the CLI would take.
    pub fn url(&self) -> String {
        match self {
            Self::Server(db) => db.url().to_owned(),
            Self::Sqlite(file) => format!("sqlite://{}", file.path().display()),
        }
    }
}

/// A running server and everything it needs.
#[derive(Debug)]
pub struct Harness {
    pub server: RunningServer,
    pub client: reqwest::Client,
    pub db: TestDb,
    pub base: String,
}

impl Harness {
    /// A server with default settings on a fresh database.
    pub async fn start(backend: Backend) -> Option<Self> {
        Self::start_with(backend, |_| {}).await
    }

    /// A server with adjusted settings on a fresh database.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> Option<Self> {
        let db = TestDb::create(backend).await?;
        let mut settings = Settings::for_database(db.target());
        adjust(&mut settings);
        let store: AnyStore = open_store(&settings).await.expect("store opens and migrates");
        let server = start(&settings, Arc::new(store)).await.expect("server starts");
        let base = server.base_url();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build()
            .expect("client");
        Some(Self {
            server,
            client,
            db,
            base,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("request")
    }

    pub async fn create_sku(&self, sku: &str, stock: i64) {
        let response = self
            .post_json(
                "/v1/skus",
                serde_json::json!({"sku": sku, "initial_stock": stock}),
            )
            .await;
        assert_eq!(
            response.status(),
            201,
            "create {sku}: {}",
            response.text().await.unwrap()
        );
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await.expect("clean shutdown");
    }
}

/// Asserts a problem+json response with the given status and kind; returns the body.
pub async fn expect_problem(response: reqwest::Response, status: u16, kind: &str) -> serde_json::Value {
    let got = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.expect("body");
    assert_eq!(got, status, "status (body: {text})");
    assert_eq!(
        content_type, "application/problem+json",
        "content type (body: {text})"
    );
    let body: serde_json::Value = serde_json::from_str(&text).expect("problem body is JSON");
    assert_eq!(
        body["type"],
        format!("urn:stockguard:problem:{kind}"),
        "type (body: {text})"
    );
    assert_eq!(body["status"], status, "status field (body: {text})");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "title/detail: {text}"
    );
    body
}

/// A transaction on a separate connection that holds a SKU's row lock (SQLite: the
/// database write lock), so requests can be made to wait for real.
#[derive(Debug)]
pub enum LockHolder {
    Pg(sqlx::PgConnection),
    MySql(sqlx::MySqlConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl LockHolder {
    pub async fn hold(db: &TestDb, sku: &str) -> Self {
        use sqlx::Connection;
        match db {
            TestDb::Server(server) if server.url().starts_with("postgres") => {
                let mut conn = sqlx::PgConnection::connect(server.url()).await.unwrap();
                sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
                let locked = sqlx::query("SELECT stock FROM inventory WHERE sku = $1 FOR UPDATE")
                    .bind(sku)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                assert_eq!(locked.len(), 1, "the SKU row exists and is locked");
                Self::Pg(conn)
            }
            TestDb::Server(server) => {
                let mut conn = sqlx::MySqlConnection::connect(server.url()).await.unwrap();
                sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
                let locked = sqlx::query("SELECT stock FROM inventory WHERE sku = ? FOR UPDATE")
                    .bind(sku)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                assert_eq!(locked.len(), 1, "the SKU row exists and is locked");
                Self::MySql(conn)
            }
            TestDb::Sqlite(file) => {
                let url = format!("sqlite://{}", file.path().display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.unwrap();
                Self::Sqlite(conn)
            }
        }
    }

    pub async fn release(self) {
        match self {
            Self::Pg(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            }
            Self::MySql(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            }
            Self::Sqlite(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            }
        }
    }
}

/// Runs one statement on the test database over a separate connection.
pub async fn execute_sql(db: &TestDb, sql: &'static str) {
    use sqlx::Connection;
    match db {
        TestDb::Server(server) if server.url().starts_with("postgres") => {
            let mut conn = sqlx::PgConnection::connect(server.url()).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
        TestDb::Server(server) => {
            let mut conn = sqlx::MySqlConnection::connect(server.url()).await.unwrap();
            // An operator's repair session: on Galera the adapter's guards refuse writes made
            // outside a transaction unless the session says so (docs/distributed.md).
            sqlx::query("SET @stockguard_maintenance = 1")
                .execute(&mut conn)
                .await
                .unwrap();
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
        TestDb::Sqlite(file) => {
            let url = format!("sqlite://{}", file.path().display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
    }
}

/// How many tables the test database holds, read over a separate connection.
pub async fn table_count(db: &TestDb) -> i64 {
    use sqlx::Connection;
    match db {
        TestDb::Server(server) if server.url().starts_with("postgres") => {
            let mut conn = sqlx::PgConnection::connect(server.url()).await.unwrap();
            sqlx::query_scalar("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
        TestDb::Server(server) => {
            let mut conn = sqlx::MySqlConnection::connect(server.url()).await.unwrap();
            sqlx::query_scalar(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE()",
            )
            .fetch_one(&mut conn)
            .await
            .unwrap()
        }
        TestDb::Sqlite(file) => {
            let url = format!("sqlite://{}", file.path().display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
    }
}
