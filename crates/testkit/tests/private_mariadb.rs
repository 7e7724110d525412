//! Private MariaDB servers: real `mariadbd` processes, restarted, stopped, crashed and
//! starved of connections. Each test prints its timings (`--nocapture` shows them).

use std::time::{Duration, Instant};

use sqlx::mysql::MySqlDatabaseError;
use sqlx::{Connection, Executor, MySqlConnection};
use stockguard_testkit::{MariaDbOptions, PrivateMariaDb, ServerError};

async fn connect(db: &PrivateMariaDb) -> MySqlConnection {
    MySqlConnection::connect(&db.url())
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}\n{}", db.url(), db.log_tail()))
}

async fn rows(db: &PrivateMariaDb) -> i64 {
    let mut conn = connect(db).await;
    sqlx::query_scalar("SELECT count(*) FROM test.kept")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

async fn create_kept_row(conn: &mut MySqlConnection) {
    conn.execute("CREATE DATABASE test").await.unwrap();
    conn.execute("CREATE TABLE test.kept (id int) ENGINE=InnoDB")
        .await
        .unwrap();
    conn.execute("INSERT INTO test.kept VALUES (1)").await.unwrap();
}

#[tokio::test]
async fn restart_keeps_port_and_data_and_is_visible_as_a_new_start() {
    let options = MariaDbOptions::new().arg("--innodb-lock-wait-timeout=2");
    let timer = Instant::now();
    let Some(mut db) = PrivateMariaDb::start_or_skip(options).await else {
        return;
    };
    eprintln!(
        "mariadb: start {:?} (server alone {:?})",
        timer.elapsed(),
        db.last_start_duration()
    );
    assert_ne!(db.port(), 3306, "never the shared server");
    let mut conn = connect(&db).await;
    let wait: i64 = sqlx::query_scalar("SELECT CAST(@@innodb_lock_wait_timeout AS SIGNED)")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(wait, 2, "extra args reach mariadbd");
    create_kept_row(&mut conn).await;
    conn.close().await.unwrap();
    let (port, pid, started) = (db.port(), db.pid().unwrap(), db.started_at().await.unwrap());
    // started_at has whole seconds; make sure a restart lands in a later one.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let timer = Instant::now();
    db.restart().await.unwrap();
    eprintln!(
        "mariadb: restart {:?} (start half {:?})",
        timer.elapsed(),
        db.last_start_duration()
    );
    assert_eq!(db.port(), port);
    assert_ne!(db.pid().unwrap(), pid);
    assert!(db.started_at().await.unwrap() > started, "now - Uptime moved");
    assert_eq!(rows(&db).await, 1);
}

#[tokio::test]
async fn kill_drops_clients_at_once_and_restart_recovers_committed_rows() {
    let Some(mut db) = PrivateMariaDb::start_or_skip(MariaDbOptions::new()).await else {
        return;
    };
    let mut conn = connect(&db).await;
    create_kept_row(&mut conn).await;
    let mut idle = connect(&db).await;

    db.kill().await;
    assert_eq!(db.pid(), None);
    let lost = tokio::time::timeout(Duration::from_secs(5), idle.execute("SELECT 1")).await;
    assert!(
        matches!(lost, Ok(Err(_))),
        "an open session dies with the server: {lost:?}"
    );
    assert!(MySqlConnection::connect(&db.url()).await.is_err());

    let timer = Instant::now();
    db.restart().await.unwrap();
    eprintln!(
        "mariadb: start after SIGKILL (crash recovery) {:?}",
        timer.elapsed()
    );
    assert!(
        db.log_tail().contains("crash recovery"),
        "the restart ran crash recovery:\n{}",
        db.log_tail()
    );
    assert_eq!(rows(&db).await, 1, "a commit survives a process kill");
}

#[tokio::test]
async fn stop_then_restart() {
    let Some(mut db) = PrivateMariaDb::start_or_skip(MariaDbOptions::new()).await else {
        return;
    };
    let timer = Instant::now();
    db.stop().await.unwrap();
    eprintln!("mariadb: clean stop {:?}", timer.elapsed());
    assert_eq!(db.pid(), None);
    assert!(MySqlConnection::connect(&db.url()).await.is_err());
    db.restart().await.unwrap();
    connect(&db).await.close().await.unwrap();
}

#[tokio::test]
async fn a_low_max_connections_refuses_with_1040_after_roots_extra_slot() {
    // 10 is MariaDB's minimum; lower values are raised to it.
    let options = MariaDbOptions::new().max_connections(10);
    let Some(db) = PrivateMariaDb::start_or_skip(options).await else {
        return;
    };
    let mut held = vec![connect(&db).await];
    let limit: i64 = sqlx::query_scalar("SELECT CAST(@@max_connections AS SIGNED)")
        .fetch_one(&mut held[0])
        .await
        .unwrap();
    assert_eq!(limit, 10);
    // max_connections plus the one slot MariaDB keeps for CONNECTION ADMIN (root).
    while held.len() < 11 {
        held.push(connect(&db).await);
    }
    let refused = MySqlConnection::connect(&db.url()).await.unwrap_err();
    let number = refused
        .as_database_error()
        .and_then(|e| e.try_downcast_ref::<MySqlDatabaseError>())
        .map(MySqlDatabaseError::number);
    assert_eq!(number, Some(1040), "{refused}");
}

#[tokio::test]
async fn a_failed_start_reports_the_server_log() {
    let options = MariaDbOptions::new().arg("--no-such-option-for-stockguard");
    let error = match PrivateMariaDb::start(options).await {
        Err(ServerError::NotInstalled(_)) if !stockguard_testkit::database_required() => return,
        Err(error) => error.to_string(),
        Ok(_) => panic!("mariadbd accepted an unknown option"),
    };
    assert!(error.contains("last lines of"), "{error}");
    assert!(error.contains("no-such-option-for-stockguard"), "{error}");
}

#[tokio::test]
async fn drop_removes_the_server_and_its_directory() {
    let Some(db) = PrivateMariaDb::start_or_skip(MariaDbOptions::new()).await else {
        return;
    };
    let (data_dir, pid, url) = (db.data_dir().to_path_buf(), db.pid().unwrap(), db.url());
    drop(db);
    assert!(!data_dir.exists(), "the data dir is deleted");
    let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(status.is_empty(), "mariadbd is gone (and reaped): {status}");
    assert!(MySqlConnection::connect(&url).await.is_err());
}

#[tokio::test]
async fn the_next_start_stops_and_deletes_a_server_whose_owner_died() {
    let Some(orphan) = PrivateMariaDb::start_or_skip(MariaDbOptions::new()).await else {
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

    let Some(_next) = PrivateMariaDb::start_or_skip(MariaDbOptions::new()).await else {
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
