//! The `stockguard` binary: bind safety, migrate, audit exit codes.

mod common;

use std::process::Command;

use common::{Backend, TestDb};

fn stockguard() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stockguard"));
    // The developer's environment must not leak into these tests.
    for (key, _) in std::env::vars() {
        if key.starts_with("STOCKGUARD_") || key == "DATABASE_URL" {
            command.env_remove(key);
        }
    }
    command
}

#[test]
fn serve_refuses_a_public_bind_without_a_token() {
    let file = stockguard_testkit::TestSqliteFile::new();
    let output = stockguard()
        .args(["serve", "--bind", "0.0.0.0:0", "--database-url"])
        .arg(file.path())
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
    let db_url = format!("sqlite://{}", dir.path().display());
    std::fs::write(&config, "acquire_timeout_ms = 0\n").unwrap();
    let migrate = |env_timeout: Option<&str>, flag_timeout: Option<&str>| {
        let mut command = stockguard();
        command
            .args(["migrate", "--database-url", &db_url, "--config"])
            .arg(&config);
        if let Some(ms) = env_timeout {
            command.env("STOCKGUARD_ACQUIRE_TIMEOUT_MS", ms);
        }
        if let Some(ms) = flag_timeout {
            command.args(["--acquire-timeout-ms", ms]);
        }
        command.output().unwrap()
    };
    // The file's invalid timeout is reported…
    let output = migrate(None, None);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("timeouts must be positive"));
    // …unless the environment overrides it, and a flag beats the environment.
    for (env, flag) in [(Some("2000"), None), (Some("0"), Some("2000"))] {
        let output = migrate(env, flag);
        assert!(
            output.status.success(),
            "env {env:?}, flag {flag:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::write(&config, "unknown_key = 1\n").unwrap();
    let output = migrate(None, None);
    assert_eq!(output.status.code(), Some(2), "unknown keys are refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_exits_non_zero_on_a_discrepancy() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let url = db.url();
    let migrate = stockguard()
        .args(["migrate", "--database-url", &url])
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
        .args(["audit", "--database-url", &url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&audit.stdout);
    assert_eq!(audit.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("1 discrepancies"), "{stdout}");
    assert!(stdout.contains("tampered"), "{stdout}");
    assert!(!stdout.contains("ok-sku"), "{stdout}");
    common::execute_sql(&db, "UPDATE inventory SET stock = 5 WHERE sku = 'tampered'").await;
    let audit = stockguard()
        .args(["audit", "--database-url", &url])
        .output()
        .unwrap();
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stdout)
    );
}

/// `stockguard audit` opens what is there: a missing SQLite file, a missing server database
/// or a database without the schema is an error that says so, and nothing is created.
#[tokio::test(flavor = "multi_thread")]
async fn audit_is_read_only() {
    // No URL at all, in an empty directory: the default ./stockguard.db is not created.
    let empty = stockguard_testkit::TestSqliteFile::new();
    let dir = empty.path().parent().unwrap().to_owned();
    let output = stockguard().arg("audit").current_dir(&dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("no SQLite database at ./stockguard.db"),
        "{stderr}"
    );
    assert!(stderr.contains("stockguard migrate"), "{stderr}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing was created");
    // A named file that is missing.
    let output = stockguard()
        .args(["audit", "--database-url"])
        .arg(format!("sqlite://{}", empty.path().display()))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(!empty.path().exists(), "nothing was created");
    // A database that does not exist on the server.
    if let Some(db) = TestDb::create(Backend::Postgres).await {
        let missing = stockguard_testkit::unique_name();
        let url = stockguard_testkit::with_database(&db.url(), &missing);
        let output = stockguard()
            .args(["audit", "--database-url", &url])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(
            stderr.contains(&missing) && stderr.contains("connecting to"),
            "{stderr}"
        );
    }
    // A database without the schema, on every backend: refused, and still without it.
    for backend in [Backend::Postgres, Backend::MySql, Backend::Sqlite] {
        let Some(db) = TestDb::create(backend).await else {
            continue;
        };
        if let TestDb::Sqlite(file) = &db {
            std::fs::File::create(file.path()).unwrap();
        }
        let output = stockguard()
            .args(["audit", "--database-url", &db.url()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{backend:?}: {stderr}");
        assert!(stderr.contains("stockguard migrate"), "{backend:?}: {stderr}");
        assert_eq!(
            common::table_count(&db).await,
            0,
            "{backend:?}: the audit created tables"
        );
    }
}

#[test]
fn serve_refuses_a_default_strategy_the_database_lacks() {
    let file = stockguard_testkit::TestSqliteFile::new();
    let output = stockguard()
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--default-strategy",
            "sharded",
            "--database-url",
        ])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("default strategy sharded is not supported on sqlite"),
        "{stderr}"
    );
}

fn help(args: &[&str]) -> String {
    let output = stockguard().args(args).arg("--help").output().unwrap();
    assert!(output.status.success(), "{args:?} --help");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn each_command_lists_only_its_own_flags() {
    let top = help(&[]);
    for flag in ["--database-url", "--pool-size", "--bind", "--auth-token"] {
        assert!(!top.contains(flag), "`stockguard --help` lists {flag}:\n{top}");
    }
    let serve = help(&["serve"]);
    for flag in [
        "--database-url",
        "--pool-size",
        "--bind",
        "--auth-token",
        "--insecure",
        "--otlp-endpoint",
        "--otlp-service-name",
    ] {
        assert!(serve.contains(flag), "`serve --help` lacks {flag}:\n{serve}");
    }
    // The strategies are enumerated, with what each does.
    for strategy in [
        "pessimistic",
        "no_wait",
        "optimistic",
        "guarded",
        "coalesced",
        "sharded",
    ] {
        assert!(
            serve.contains(&format!("{strategy}:")),
            "`serve --help` lacks {strategy}:\n{serve}"
        );
    }
    for command in ["migrate", "audit"] {
        let text = help(&[command]);
        assert!(text.contains("--database-url"), "{command}:\n{text}");
        for flag in [
            "--pool-size",
            "--bind",
            "--auth-token",
            "--insecure",
            "--default-strategy",
            "--otlp-endpoint",
        ] {
            assert!(!text.contains(flag), "`{command} --help` lists {flag}:\n{text}");
        }
    }
}

#[test]
fn switches_take_no_value_and_strategies_are_checked_by_name() {
    // `--json-logs` before the command is a switch, not `--json-logs <VALUE>` eating "bench".
    let output = stockguard().args(["--json-logs", "bench"]).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let file = stockguard_testkit::TestSqliteFile::new();
    let output = stockguard()
        .args(["migrate", "--json-logs", "--database-url"])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.trim().is_empty());
    for line in stderr.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    let output = stockguard()
        .args(["serve", "--default-strategy", "yolo"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("possible values") && stderr.contains("no_wait"),
        "{stderr}"
    );
}

#[test]
fn database_url_is_the_fallback_for_the_database_url() {
    let fallback = stockguard_testkit::TestSqliteFile::new();
    let preferred = stockguard_testkit::TestSqliteFile::new();
    let output = stockguard()
        .env("DATABASE_URL", format!("sqlite://{}", fallback.path().display()))
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(fallback.path().exists(), "DATABASE_URL was used");
    std::fs::remove_file(fallback.path()).unwrap();
    let output = stockguard()
        .env("DATABASE_URL", format!("sqlite://{}", fallback.path().display()))
        .env(
            "STOCKGUARD_DATABASE_URL",
            format!("sqlite://{}", preferred.path().display()),
        )
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        preferred.path().exists() && !fallback.path().exists(),
        "STOCKGUARD_DATABASE_URL wins"
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
            for json in [false, true] {
                let mut run = stockguard();
                run.env("STOCKGUARD_DATABASE_URL", url)
                    .env("STOCKGUARD_AUTH_TOKEN", TOKEN)
                    .env("STOCKGUARD_BIND", "127.0.0.1:0")
                    .env("STOCKGUARD_ACQUIRE_TIMEOUT_MS", "300")
                    .env("RUST_LOG", "trace")
                    .arg(command);
                if json {
                    run.arg("--json-logs");
                }
                let output = run.output().unwrap();
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

/// The README's first screen (its first 30 lines) shows, beside the two set-up commands, the
/// service started in one command on embedded SQLite and a deduction with curl.
#[test]
fn readme_first_screen_shows_the_service() {
    let readme = include_str!("../../../README.md");
    let first_screen = readme.lines().take(30).collect::<Vec<_>>().join("\n");
    for needle in [
        "pip install rust-just && just bench",
        "cargo test --workspace",
        "cargo run --release -p stockguard-api -- serve",
        "localhost:8080/v1/skus/tee/deduct",
    ] {
        assert!(
            first_screen.contains(needle),
            "{needle:?} is not on the README's first screen"
        );
    }
}

/// A binary built without the `otlp` feature cannot export spans: asked to, by flag or
/// variable, `serve` refuses before it opens the database, naming the missing feature.
#[cfg(not(feature = "otlp"))]
#[test]
fn serve_refuses_an_otlp_endpoint_without_the_otlp_feature() {
    let file = stockguard_testkit::TestSqliteFile::new();
    for by_env in [false, true] {
        let mut command = stockguard();
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--database-url"])
            .arg(file.path());
        if by_env {
            command.env("STOCKGUARD_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        } else {
            command.args(["--otlp-endpoint", "http://127.0.0.1:4318"]);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(2), "refused as configuration");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--otlp-endpoint (STOCKGUARD_OTLP_ENDPOINT")
                && stderr.contains("built without the `otlp` feature"),
            "{stderr}"
        );
        assert!(!file.path().exists(), "refused before touching the database");
    }
}

/// The incremental audit (the default) against `--full`, on every backend: a row changed
/// after the checkpoint is caught by both; a row the checkpoint already covers only by
/// `--full`, which is exactly what the docs say each proves.
#[tokio::test(flavor = "multi_thread")]
async fn incremental_audit_catches_what_follows_its_checkpoint() {
    for backend in [Backend::Postgres, Backend::MySql, Backend::Sqlite] {
        let Some(db) = TestDb::create(backend).await else {
            continue;
        };
        let url = db.url();
        let run = |args: &[&str]| {
            let output = stockguard()
                .arg("audit")
                .args(args)
                .args(["--database-url", &url])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            (output.status.code(), stdout)
        };
        let migrate = stockguard()
            .args(["migrate", "--database-url", &url])
            .output()
            .unwrap();
        assert!(migrate.status.success(), "{backend:?}");
        for sql in [
            "INSERT INTO inventory (sku, stock, initial_stock) VALUES ('a', 8, 10)",
            "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
             VALUES ('a', -1, 9, 'deduct', 'k1'), ('a', -1, 8, 'deduct', 'k2')",
        ] {
            common::execute_sql(&db, sql).await;
        }
        let (code, stdout) = run(&[]);
        assert_eq!(code, Some(0), "{backend:?}: {stdout}");
        assert!(
            stdout.contains("2 ledger rows read, 0 vouched for"),
            "{backend:?}: {stdout}"
        );
        assert!(stdout.contains("1 checkpoints saved"), "{backend:?}: {stdout}");

        // Before the checkpoint: the incremental audit does not read that row, so it passes;
        // the full audit catches it.
        common::execute_sql(
            &db,
            "UPDATE inventory_ledger SET delta = -2 WHERE stock_after = 9",
        )
        .await;
        let (code, stdout) = run(&[]);
        assert_eq!(code, Some(0), "{backend:?}: {stdout}");
        assert!(
            stdout.contains("0 ledger rows read, 2 vouched for"),
            "{backend:?}: {stdout}"
        );
        let (code, stdout) = run(&["--full"]);
        assert_eq!(code, Some(1), "{backend:?}: {stdout}");
        assert!(
            stdout.contains("1 discrepancies") && stdout.contains("  a:"),
            "{backend:?}: {stdout}"
        );

        // After the checkpoint: both catch it, and the checkpoint does not move past it.
        for sql in [
            "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
             VALUES ('a', -1, 7, 'deduct', 'k3')",
            "UPDATE inventory SET stock = 7 WHERE sku = 'a'",
            "UPDATE inventory_ledger SET delta = -3 WHERE stock_after = 7",
        ] {
            common::execute_sql(&db, sql).await;
        }
        for args in [&[][..], &[][..], &["--full"][..]] {
            let (code, stdout) = run(args);
            assert_eq!(code, Some(1), "{backend:?} {args:?}: {stdout}");
            assert!(
                stdout.contains("1 discrepancies") && stdout.contains("  a:"),
                "{backend:?}: {stdout}"
            );
        }
        let (_, stdout) = run(&[]);
        assert!(stdout.contains("0 checkpoints saved"), "{backend:?}: {stdout}");
    }
}
