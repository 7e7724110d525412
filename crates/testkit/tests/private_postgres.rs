//! Private PostgreSQL servers: real `postgres` processes, restarted, stopped, crashed and
//! starved of connections. Each test prints its timings (`--nocapture` shows them).

use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};
use stockguard_testkit::{PostgresOptions, PrivatePostgres, ServerError};

async fn connect(pg: &PrivatePostgres) -> PgConnection {
    PgConnection::connect(&pg.url())
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}\n{}", pg.url(), pg.log_tail()))
}

async fn rows(pg: &PrivatePostgres) -> i64 {
    let mut conn = connect(pg).await;
    sqlx::query_scalar("SELECT count(*) FROM kept")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn restart_keeps_port_and_data_and_is_visible_as_a_new_start() {
    let options = PostgresOptions::new().setting("lock_timeout", "1500ms");
    let timer = Instant::now();
    let Some(mut pg) = PrivatePostgres::start_or_skip(options).await else {
        return;
    };
    eprintln!(
        "postgres: start {:?} (server alone {:?})",
        timer.elapsed(),
        pg.last_start_duration()
    );
    assert_ne!(pg.port(), 5432, "never the shared server");
    let mut conn = connect(&pg).await;
    let lock_timeout: String = sqlx::query_scalar("SHOW lock_timeout")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(lock_timeout, "1500ms", "extra settings reach postgresql.conf");
    conn.execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)")
        .await
        .unwrap();
    conn.close().await.unwrap();
    let (port, pid, started) = (pg.port(), pg.pid().unwrap(), pg.started_at().await.unwrap());

    let timer = Instant::now();
    pg.restart().await.unwrap();
    eprintln!(
        "postgres: restart {:?} (start half {:?})",
        timer.elapsed(),
        pg.last_start_duration()
    );
    assert_eq!(pg.port(), port);
    assert_ne!(pg.pid().unwrap(), pid);
    assert!(
        pg.started_at().await.unwrap() > started,
        "pg_postmaster_start_time moved"
    );
    assert_eq!(rows(&pg).await, 1);
}

#[tokio::test]
async fn kill_drops_clients_at_once_and_restart_recovers_committed_rows() {
    let Some(mut pg) = PrivatePostgres::start_or_skip(PostgresOptions::new()).await else {
        return;
    };
    let mut conn = connect(&pg).await;
    conn.execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)")
        .await
        .unwrap();
    let mut idle = connect(&pg).await;

    pg.kill().await;
    assert_eq!(pg.pid(), None);
    let lost = tokio::time::timeout(Duration::from_secs(5), idle.execute("SELECT 1")).await;
    assert!(
        matches!(lost, Ok(Err(_))),
        "an open session dies with the server: {lost:?}"
    );
    assert!(PgConnection::connect(&pg.url()).await.is_err());

    let timer = Instant::now();
    pg.restart().await.unwrap();
    eprintln!(
        "postgres: start after SIGKILL (crash recovery) {:?}",
        timer.elapsed()
    );
    assert!(
        pg.log_tail().contains("not properly shut down"),
        "the restart ran crash recovery:\n{}",
        pg.log_tail()
    );
    assert_eq!(rows(&pg).await, 1);
}

#[tokio::test]
async fn stop_then_restart() {
    let Some(mut pg) = PrivatePostgres::start_or_skip(PostgresOptions::new()).await else {
        return;
    };
    let timer = Instant::now();
    pg.stop().await.unwrap();
    eprintln!("postgres: fast stop {:?}", timer.elapsed());
    assert_eq!(pg.pid(), None);
    assert!(PgConnection::connect(&pg.url()).await.is_err());
    pg.stop().await.unwrap();
    pg.restart().await.unwrap();
    connect(&pg).await.close().await.unwrap();
}

#[tokio::test]
async fn a_low_max_connections_refuses_the_next_with_53300() {
    let options = PostgresOptions::new().max_connections(3);
    let Some(pg) = PrivatePostgres::start_or_skip(options).await else {
        return;
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&pg).await);
    }
    let refused = PgConnection::connect(&pg.url()).await.unwrap_err();
    let code = refused
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("53300"), "{refused}");
    drop(held.pop());
    // The freed slot is reusable once the server has seen the close.
    let deadline = Instant::now() + Duration::from_secs(5);
    while PgConnection::connect(&pg.url()).await.is_err() {
        assert!(Instant::now() < deadline, "a freed slot was not reusable");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_failed_start_reports_the_server_log() {
    let options = PostgresOptions::new().setting("max_connections", "banana");
    let error = match PrivatePostgres::start(options).await {
        Err(ServerError::NotInstalled(_)) if !stockguard_testkit::database_required() => return,
        Err(error) => error.to_string(),
        Ok(_) => panic!("a server with max_connections = banana started"),
    };
    assert!(error.contains("last lines of"), "{error}");
    assert!(
        error.contains("max_connections"),
        "the log tail names the bad setting: {error}"
    );
}

#[tokio::test]
async fn two_servers_run_side_by_side_and_drop_removes_everything() {
    let Some(a) = PrivatePostgres::start_or_skip(PostgresOptions::new()).await else {
        return;
    };
    let Some(b) = PrivatePostgres::start_or_skip(PostgresOptions::new()).await else {
        return;
    };
    assert_ne!(a.port(), b.port());
    let (data_dir, pid, url) = (a.data_dir().to_path_buf(), a.pid().unwrap(), a.url());
    drop(a);
    assert!(!data_dir.exists(), "the data dir is deleted");
    let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(status.is_empty(), "the postmaster is gone (and reaped): {status}");
    assert!(PgConnection::connect(&url).await.is_err());
    connect(&b).await.close().await.unwrap();
}

#[tokio::test]
async fn the_next_start_stops_and_deletes_a_server_whose_owner_died() {
    let Some(orphan) = PrivatePostgres::start_or_skip(PostgresOptions::new()).await else {
        return;
    };
    let dir = orphan.data_dir().parent().unwrap().to_path_buf();
    let server_pid = orphan.pid().unwrap();
    // Pretend the owning test process was SIGKILLed: name an exited process as the owner...
    let mut exited = std::process::Command::new("true").spawn().unwrap();
    exited.wait().unwrap();
    let owner = std::fs::read_to_string(dir.join("owner.pid")).unwrap();
    let namespace = owner.lines().nth(1).unwrap();
    std::fs::write(dir.join("owner.pid"), format!("{}\n{namespace}\n", exited.id())).unwrap();
    // ...and never run its Drop, which is what a killed process does not get to do.
    #[allow(clippy::mem_forget)]
    std::mem::forget(orphan);

    let Some(_next) = PrivatePostgres::start_or_skip(PostgresOptions::new()).await else {
        return;
    };
    assert!(!dir.exists(), "the orphan's directory is deleted");
    // The orphan is still our (forgotten, unreaped) child, so a zombie counts as gone.
    let stat = std::fs::read_to_string(format!("/proc/{server_pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.trim_start().chars().next());
    assert!(
        matches!(state, None | Some(Some('Z'))),
        "the orphan server was stopped: {stat}"
    );
}
