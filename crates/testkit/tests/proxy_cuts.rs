//! Cuts through the fault proxy against real servers: `AfterReply` at COMMIT leaves a
//! committed row behind an error (the ambiguous case the outcome contract is about), and
//! `BeforeSend` leaves nothing. Checked over a direct connection that bypasses the proxy.

use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, MySqlConnection, PgConnection};
use stockguard_testkit::{CutMode, CutPlan, FaultProxy, TestDatabase};

const PROMPT: Duration = Duration::from_secs(10);

async fn pg_rows(direct: &mut PgConnection, id: i32) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM probe WHERE id = $1")
        .bind(id)
        .fetch_one(direct)
        .await
        .unwrap()
}

async fn my_rows(direct: &mut MySqlConnection, id: i32) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM probe WHERE id = ?")
        .bind(id)
        .fetch_one(direct)
        .await
        .unwrap()
}

/// Waits until no session but `direct` is connected to the test database, so a cut
/// session's transaction has been rolled back (or committed) by the server.
async fn pg_sessions_gone(direct: &mut PgConnection, db: &TestDatabase) {
    let deadline = Instant::now() + PROMPT;
    loop {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(db.name())
        .fetch_one(&mut *direct)
        .await
        .unwrap();
        if others == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the cut session outlived the cut");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn my_sessions_gone(direct: &mut MySqlConnection, db: &TestDatabase) {
    let deadline = Instant::now() + PROMPT;
    loop {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
        )
        .bind(db.name())
        .fetch_one(&mut *direct)
        .await
        .unwrap();
        if others == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the cut session outlived the cut");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn postgres() -> Option<(TestDatabase, PgConnection, FaultProxy)> {
    let db = TestDatabase::postgres().await?;
    let mut direct = PgConnection::connect(db.url()).await.unwrap();
    direct
        .execute("CREATE TABLE probe (id int PRIMARY KEY, note text NOT NULL)")
        .await
        .unwrap();
    let proxy = FaultProxy::in_front_of(db.url()).await.unwrap();
    Some((db, direct, proxy))
}

async fn mariadb() -> Option<(TestDatabase, MySqlConnection, FaultProxy)> {
    let db = TestDatabase::mysql().await?;
    let mut direct = MySqlConnection::connect(db.url()).await.unwrap();
    direct
        .execute("CREATE TABLE probe (id int PRIMARY KEY, note text NOT NULL) ENGINE=InnoDB")
        .await
        .unwrap();
    let proxy = FaultProxy::in_front_of(db.url()).await.unwrap();
    Some((db, direct, proxy))
}

#[tokio::test]
async fn postgres_commit_cut_after_the_reply_is_committed_but_reported_as_an_error() {
    let Some((db, mut direct, proxy)) = postgres().await else {
        return;
    };
    let mut via = PgConnection::connect(&proxy.proxied_url(db.url())).await.unwrap();
    let mut tx = via.begin().await.unwrap();
    sqlx::query("INSERT INTO probe VALUES ($1, 'after reply')")
        .bind(1)
        .execute(&mut *tx)
        .await
        .unwrap();
    let cut = proxy.arm_cut_after(b"COMMIT", CutMode::AfterReply);
    let answer = tx.commit().await;
    assert!(
        answer.is_err(),
        "the client must not see the COMMIT's reply: {answer:?}"
    );
    let report = cut.fired_within(PROMPT).await.unwrap().expect("the cut fired");
    assert!(report.reply_bytes_dropped > 0, "{report:?}");
    assert_eq!(pg_rows(&mut direct, 1).await, 1, "the server committed");
}

#[tokio::test]
async fn postgres_commit_cut_before_sending_commits_nothing() {
    let Some((db, mut direct, proxy)) = postgres().await else {
        return;
    };
    let mut via = PgConnection::connect(&proxy.proxied_url(db.url())).await.unwrap();
    let mut tx = via.begin().await.unwrap();
    sqlx::query("INSERT INTO probe VALUES ($1, 'before send')")
        .bind(2)
        .execute(&mut *tx)
        .await
        .unwrap();
    let cut = proxy.arm_cut_after(b"COMMIT", CutMode::BeforeSend);
    assert!(tx.commit().await.is_err());
    cut.fired_within(PROMPT).await.unwrap().expect("the cut fired");
    pg_sessions_gone(&mut direct, &db).await;
    assert_eq!(
        pg_rows(&mut direct, 2).await,
        0,
        "the transaction was rolled back"
    );
}

#[tokio::test]
async fn postgres_autocommit_write_cut_at_its_execution_is_committed() {
    let Some((db, mut direct, proxy)) = postgres().await else {
        return;
    };
    let mut via = PgConnection::connect(&proxy.proxied_url(db.url())).await.unwrap();
    // The SQL text goes out with Parse; the Bind/Execute/Sync chunk after it runs the write.
    let cut = proxy.arm_cut(CutPlan::new(b"INSERT INTO probe", CutMode::AfterReply).nth_chunk_after(1));
    let answer = sqlx::query("INSERT INTO probe VALUES ($1, 'autocommit')")
        .bind(3)
        .execute(&mut via)
        .await;
    assert!(answer.is_err(), "{answer:?}");
    cut.fired_within(PROMPT).await.unwrap().expect("the cut fired");
    assert_eq!(pg_rows(&mut direct, 3).await, 1);
}

#[tokio::test]
async fn postgres_cut_after_a_prepare_reply_commits_nothing() {
    // Why `nth_chunk_after` exists: the chunk holding the SQL text is only the prepare, so a
    // cut after its reply happens before the write ran. A test cutting there proves nothing.
    let Some((db, mut direct, proxy)) = postgres().await else {
        return;
    };
    let mut via = PgConnection::connect(&proxy.proxied_url(db.url())).await.unwrap();
    let cut = proxy.arm_cut_after(b"INSERT INTO probe", CutMode::AfterReply);
    let answer = sqlx::query("INSERT INTO probe VALUES ($1, 'prepared only')")
        .bind(4)
        .execute(&mut via)
        .await;
    assert!(answer.is_err(), "{answer:?}");
    cut.fired_within(PROMPT).await.unwrap().expect("the cut fired");
    pg_sessions_gone(&mut direct, &db).await;
    assert_eq!(pg_rows(&mut direct, 4).await, 0);
}

#[tokio::test]
async fn mariadb_commit_cut_after_the_reply_is_committed_but_reported_as_an_error() {
    let Some((db, mut direct, proxy)) = mariadb().await else {
        return;
    };
    let mut via = MySqlConnection::connect(&proxy.proxied_url(db.url()))
        .await
        .unwrap();
    let mut tx = via.begin().await.unwrap();
    sqlx::query("INSERT INTO probe VALUES (?, 'after reply')")
        .bind(1)
        .execute(&mut *tx)
        .await
        .unwrap();
    let cut = proxy.arm_cut_after(b"COMMIT", CutMode::AfterReply);
    let answer = tx.commit().await;
    assert!(
        answer.is_err(),
        "the client must not see the COMMIT's reply: {answer:?}"
    );
    let report = cut.fired_within(PROMPT).await.unwrap().expect("the cut fired");
    assert!(report.reply_bytes_dropped > 0, "{report:?}");
    assert_eq!(my_rows(&mut direct, 1).await, 1, "the server committed");
}

#[tokio::test]
async fn mariadb_commit_cut_before_sending_commits_nothing() {
    let Some((db, mut direct, proxy)) = mariadb().await else {
        return;
    };
    let mut via = MySqlConnection::connect(&proxy.proxied_url(db.url()))
        .await
        .unwrap();
    let mut tx = via.begin().await.unwrap();
    sqlx::query("INSERT INTO probe VALUES (?, 'before send')")
        .bind(2)
        .execute(&mut *tx)
        .await
        .unwrap();
    let cut = proxy.arm_cut_after(b"COMMIT", CutMode::BeforeSend);
    assert!(tx.commit().await.is_err());
    cut.fired_within(PROMPT).await.unwrap().expect("the cut fired");
    my_sessions_gone(&mut direct, &db).await;
    assert_eq!(
        my_rows(&mut direct, 2).await,
        0,
        "the transaction was rolled back"
    );
}

#[tokio::test]
async fn mariadb_autocommit_write_cut_at_its_execution_is_committed() {
    let Some((db, mut direct, proxy)) = mariadb().await else {
        return;
    };
    let mut via = MySqlConnection::connect(&proxy.proxied_url(db.url()))
        .await
        .unwrap();
    // COM_STMT_PREPARE carries the text; the COM_STMT_EXECUTE after it runs the write.
    let cut = proxy.arm_cut(CutPlan::new(b"INSERT INTO probe", CutMode::AfterReply).nth_chunk_after(1));
    let answer = sqlx::query("INSERT INTO probe VALUES (?, 'autocommit')")
        .bind(3)
        .execute(&mut via)
        .await;
    assert!(answer.is_err(), "{answer:?}");
    cut.fired_within(PROMPT).await.unwrap().expect("the cut fired");
    assert_eq!(my_rows(&mut direct, 3).await, 1);
}
