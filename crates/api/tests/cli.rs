//! The `stockguard` binary: bind safety, migrate, audit exit codes.

mod common;

use std::process::Command;

use common::{Backend, TestDb};

fn stockguard() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stockguard"));
    // The developer's environment must not leak into these tests.
    for (key, _) in std::env::vars() {
        if key.starts_with("STOCKGUARD_") {
            command.env_remove(key);
        }
    }
    command
}

#[test]
fn serve_refuses_a_public_bind_without_a_token() {
    let file = stockguard_testkit::TestSqliteFile::new();
    let output = stockguard()
        .args(["--bind", "0.0.0.0:0", "--database-url"])
        .arg(file.path())
        .arg("serve")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without an auth token"), "{stderr}");
    assert!(stderr.contains("--insecure"), "{stderr}");
    assert!(!file.path().exists(), "refused before touching the database");
}

#[test]
fn bench_points_to_the_harness() {
    let output = stockguard().arg("bench").output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("just bench"));
}

#[test]
fn env_and_config_file_are_read_with_flags_winning() {
    let dir = stockguard_testkit::TestSqliteFile::new();
    let config = dir.path().with_file_name("stockguard.toml");
    std::fs::write(&config, "pool_size = 0\n").unwrap();
    // The file's invalid pool size is reported…
    let output = stockguard()
        .arg("--config")
        .arg(&config)
        .arg("migrate")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("pool_size"));
    // …unless the environment overrides it, and a flag beats the environment.
    let db_url = format!("sqlite://{}", dir.path().display());
    let output = stockguard()
        .arg("--config")
        .arg(&config)
        .env("STOCKGUARD_POOL_SIZE", "0")
        .args(["--pool-size", "2", "--database-url", &db_url, "migrate"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(&config, "unknown_key = 1\n").unwrap();
    let output = stockguard()
        .arg("--config")
        .arg(&config)
        .arg("migrate")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "unknown keys are refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_exits_non_zero_on_a_discrepancy() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let url = db.url();
    let migrate = stockguard()
        .args(["--database-url", &url, "migrate"])
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    common::execute_sql(
        &db,
        "INSERT INTO inventory (sku, stock, initial_stock) VALUES ('ok-sku', 5, 5), ('tampered', 4, 5)",
    )
    .await;
    let audit = stockguard()
        .args(["--database-url", &url, "audit"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&audit.stdout);
    assert_eq!(audit.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("1 discrepancies"), "{stdout}");
    assert!(stdout.contains("tampered"), "{stdout}");
    assert!(!stdout.contains("ok-sku"), "{stdout}");
    common::execute_sql(&db, "UPDATE inventory SET stock = 5 WHERE sku = 'tampered'").await;
    let audit = stockguard()
        .args(["--database-url", &url, "audit"])
        .output()
        .unwrap();
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stdout)
    );
}

#[test]
fn serve_refuses_a_default_strategy_the_database_lacks() {
    let file = stockguard_testkit::TestSqliteFile::new();
    let output = stockguard()
        .args([
            "--bind",
            "127.0.0.1:0",
            "--default-strategy",
            "sharded",
            "--database-url",
        ])
        .arg(file.path())
        .arg("serve")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("default strategy sharded is not supported on sqlite"),
        "{stderr}"
    );
}

/// A password planted in the database URL, in the user part or the query string, and the
/// auth token never reach stdout, stderr or the logs (text or JSON, at the most verbose
/// level) of any command that fails to connect, while the error still says where it tried
/// to connect and why.
#[test]
fn no_secret_reaches_any_output() {
    const PASSWORD: &str = "hunter2-planted";
    const TOKEN: &str = "token-planted-0123";
    let urls = [
        format!("postgres://app:{PASSWORD}@127.0.0.1:1/shop"),
        format!("postgres://127.0.0.1:1/shop?user=app&password={PASSWORD}"),
        format!("mysql://app:{PASSWORD}@127.0.0.1:1/shop"),
        format!("mariadb://app:{PASSWORD}@127.0.0.1:1/shop?password={PASSWORD}"),
    ];
    for url in &urls {
        for command in ["serve", "migrate", "audit"] {
            for json in ["false", "true"] {
                let output = stockguard()
                    .env("STOCKGUARD_DATABASE_URL", url)
                    .env("STOCKGUARD_AUTH_TOKEN", TOKEN)
                    .env("STOCKGUARD_JSON_LOGS", json)
                    .env("STOCKGUARD_BIND", "127.0.0.1:0")
                    .env("STOCKGUARD_ACQUIRE_TIMEOUT_MS", "300")
                    .env("RUST_LOG", "trace")
                    .arg(command)
                    .output()
                    .unwrap();
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                let case = format!("{command} on {url} (json logs: {json})");
                assert!(!output.status.success(), "{case} cannot connect:\n{text}");
                assert!(!text.contains(PASSWORD), "{case} printed the password:\n{text}");
                assert!(!text.contains(TOKEN), "{case} printed the token:\n{text}");
                assert!(
                    text.contains(r#"database "shop" on 127.0.0.1:1 as user "app""#),
                    "{case} names its target:\n{text}"
                );
                assert!(text.contains("connecting to"), "{case} says what failed:\n{text}");
            }
        }
    }
}
