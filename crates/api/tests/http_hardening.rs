//! What the service does with requests an operator would not want served: bodies that are not
//! JSON objects, bodies larger or shorter than they claim, the audit without a token or while
//! another audit runs.

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Backend, Harness, TestDb, expect_problem};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

per_backend!(non_object_bodies_change_nothing, audit_needs_a_token);

/// Arrays and scalars are refused with a 422 that says what was sent, and nothing changes:
/// serde would otherwise read `[1]` as a deduct body and `["sku", 5]` as a new SKU.
async fn non_object_bodies_change_nothing(backend: Backend) {
    let Some(h) = Harness::start(backend).await else {
        return;
    };
    h.create_sku("mug", 5).await;
    for (path, body, named) in [
        ("/v1/skus", json!(["arr-sku", 5]), "an array"),
        ("/v1/skus/mug/deduct", json!([1]), "an array"),
        ("/v1/skus/mug/deduct", json!([1, "guarded"]), "an array"),
        ("/v1/skus/mug/restock", json!([5]), "an array"),
        ("/v1/skus/mug/deduct", json!(1), "a number"),
        ("/v1/skus/mug/deduct", json!("1"), "a string"),
        ("/v1/skus/mug/deduct", json!(true), "a boolean"),
        ("/v1/skus/mug/deduct", json!(null), "null"),
    ] {
        let problem = expect_problem(h.post_json(path, body.clone()).await, 422, "invalid_input").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(
            detail.contains("must be a JSON object") && detail.contains(named),
            "{path} {body}: {detail}"
        );
    }
    expect_problem(h.get("/v1/skus/arr-sku").await, 404, "not_found").await;
    let stock: serde_json::Value = h.get("/v1/skus/mug").await.json().await.unwrap();
    assert_eq!(stock["stock"], 5, "nothing was deducted or restocked");
    let ledger: serde_json::Value = h.get("/v1/skus/mug/ledger").await.json().await.unwrap();
    assert_eq!(ledger["entries"], json!([]));
    h.shutdown().await;
}

/// Writes `request` on a fresh connection (then ends the sending half if `half_close`) and
/// reads one response: status line, headers and a Content-Length body, within `deadline`.
async fn raw_exchange(addr: SocketAddr, request: &[u8], half_close: bool, deadline: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    if half_close {
        stream.shutdown().await.unwrap();
    }
    let read = async {
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.unwrap();
            received.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&received).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| {
                        line.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return text;
                }
            }
            assert!(n > 0, "connection closed mid-response: {text:?}");
        }
    };
    tokio::time::timeout(deadline, read)
        .await
        .expect("a response within the deadline")
}

/// A declared Content-Length over the limit is refused at once, before the body (which never
/// comes) is waited for: not a 503 when the request timeout expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn declared_oversize_is_413_at_once() {
    let Some(h) = Harness::start_with(Backend::Sqlite, |s| {
        s.body_limit_bytes = 1024;
        s.request_timeout = Duration::from_secs(5);
    })
    .await
    else {
        return;
    };
    h.create_sku("mug", 5).await;
    let started = Instant::now();
    let response = raw_exchange(
        h.server.addr(),
        b"POST /v1/skus/mug/deduct HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
          Content-Length: 10000000000\r\n\r\n{\"qua",
        false,
        Duration::from_secs(2),
    )
    .await;
    let elapsed = started.elapsed();
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains("urn:stockguard:problem:payload_too_large"),
        "{response}"
    );
    assert!(elapsed < Duration::from_secs(1), "answered after {elapsed:?}");
    let stock: serde_json::Value = h.get("/v1/skus/mug").await.json().await.unwrap();
    assert_eq!(stock["stock"], 5);
    h.shutdown().await;
}

/// A body that ends (the client closes its sending half) before its declared length is a
/// 400: the request is broken on the wire, which is not an input validation failure (422).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn body_cut_short_is_400() {
    let Some(h) = Harness::start(Backend::Sqlite).await else {
        return;
    };
    h.create_sku("mug", 5).await;
    let response = raw_exchange(
        h.server.addr(),
        b"POST /v1/skus/mug/deduct HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
          Content-Length: 50\r\n\r\n{\"quantity\": 1}",
        true,
        Duration::from_secs(2),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        response.contains("urn:stockguard:problem:bad_request"),
        "{response}"
    );
    let stock: serde_json::Value = h.get("/v1/skus/mug").await.json().await.unwrap();
    assert_eq!(stock["stock"], 5, "nothing was deducted");
    h.shutdown().await;
}

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
    // Long enough for the first audit to hold the gate and wait on the lock in the database,
    // even on a loaded machine; well inside its 2 s request timeout.
    tokio::time::sleep(Duration::from_millis(1000)).await;
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
