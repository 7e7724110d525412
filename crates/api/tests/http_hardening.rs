//! What the service does with requests an operator would not want served: the audit without a
//! token or while another audit runs.

mod common;

use std::time::Duration;

use common::{Backend, Harness, TestDb, expect_problem};
use serde_json::json;

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

per_backend!(audit_needs_a_token);

const AUTH_TOKEN: &str = "main-token";
const AUDIT_TOKEN: &str = "audit-only-token";

async fn audit_needs_a_token(backend: Backend) {
    let Some(h) = Harness::start_with(backend, |s| {
        s.auth_token = Some(AUTH_TOKEN.into());
        s.audit_token = Some(AUDIT_TOKEN.into());
    })
    .await
    else {
        return;
    };
    let audit = |token: Option<&str>| {
        let request = h.client.get(h.url("/v1/audit"));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };
    for token in [None, Some("wrong"), Some("audit-only-toke")] {
        let refused = audit(token).await.unwrap();
        assert_eq!(refused.headers()["www-authenticate"], "Bearer");
        expect_problem(refused, 401, "unauthorized").await;
    }
    for token in [AUTH_TOKEN, AUDIT_TOKEN] {
        let response = audit(Some(token)).await.unwrap();
        assert_eq!(response.status(), 200, "{token}");
        let report: serde_json::Value = response.json().await.unwrap();
        assert_eq!(report["clean"], true);
    }
    // The audit token reads the audit and nothing else.
    let create = h
        .client
        .post(h.url("/v1/skus"))
        .bearer_auth(AUDIT_TOKEN)
        .json(&json!({"sku": "nope", "initial_stock": 1}))
        .send()
        .await
        .unwrap();
    expect_problem(create, 401, "unauthorized").await;
    h.shutdown().await;
}

/// Holds a lock that makes the audit's read wait: PostgreSQL's ACCESS EXCLUSIVE table lock,
/// MariaDB's `LOCK TABLES … WRITE`. (SQLite in WAL mode lets readers past any writer, so it
/// has no such lock; the gate under test is the same code on every backend.)
enum ReadBlocker {
    Pg(sqlx::PgConnection),
    MySql(sqlx::MySqlConnection),
}

impl ReadBlocker {
    async fn hold(db: &TestDb) -> Self {
        use sqlx::Connection;
        let TestDb::Server(server) = db else {
            panic!("server databases only");
        };
        if server.url().starts_with("postgres") {
            let mut conn = sqlx::PgConnection::connect(server.url()).await.unwrap();
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            sqlx::query("LOCK TABLE inventory IN ACCESS EXCLUSIVE MODE")
                .execute(&mut conn)
                .await
                .unwrap();
            Self::Pg(conn)
        } else {
            let mut conn = sqlx::MySqlConnection::connect(server.url()).await.unwrap();
            sqlx::query("LOCK TABLES inventory WRITE")
                .execute(&mut conn)
                .await
                .unwrap();
            Self::MySql(conn)
        }
    }

    async fn release(self) {
        match self {
            Self::Pg(mut conn) => {
                sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            }
            Self::MySql(mut conn) => {
                sqlx::query("UNLOCK TABLES").execute(&mut conn).await.unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_audits_run_one_at_a_time() {
    audits_run_one_at_a_time(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_audits_run_one_at_a_time() {
    audits_run_one_at_a_time(Backend::MySql).await;
}

async fn audits_run_one_at_a_time(backend: Backend) {
    // The request times out before the database gives up on the lock.
    let Some(h) = Harness::start_with(backend, |s| {
        s.request_timeout = Duration::from_secs(2);
        s.lock_timeout = Duration::from_secs(10);
    })
    .await
    else {
        return;
    };
    h.create_sku("audited", 3).await;
    let blocker = ReadBlocker::hold(&h.db).await;
    let first = tokio::spawn({
        let (client, url) = (h.client.clone(), h.url("/v1/audit"));
        async move { client.get(url).send().await.unwrap() }
    });
    // Long enough for the first audit to be waiting on the lock in the database.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!first.is_finished(), "the first audit waits for the lock");
    let second = h.get("/v1/audit").await;
    let retry_after: u64 = second.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    expect_problem(second, 429, "audit_in_progress").await;
    // The first one times out while still waiting; its turn ends with it, so the next audit
    // is let through (and waits on the lock in turn) rather than refused.
    expect_problem(first.await.unwrap(), 503, "request_timeout").await;
    expect_problem(h.get("/v1/audit").await, 503, "request_timeout").await;
    blocker.release().await;
    let report = h.get("/v1/audit").await;
    assert_eq!(report.status(), 200, "the gate is free once no audit runs");
    h.shutdown().await;
}
