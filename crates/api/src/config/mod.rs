//! Service configuration. Precedence, highest first: command-line flags, `STOCKGUARD_*`
//! environment variables (clap reads both), `DATABASE_URL` for the database URL alone, the
//! optional TOML config file, built-in defaults.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use serde::Deserialize;
use stockguard_core::{EngineConfig, Strategy};

pub use self::target::DatabaseTarget;
use crate::http::dto::StrategyName;
use crate::telemetry::OtlpSettings;

mod redis;
mod target;

pub use self::redis::RedisArgs;

/// Where `serve` keeps its data when no database URL is configured.
pub const DEFAULT_SQLITE_PATH: &str = "./stockguard.db";
/// Default listen address: loopback only, so a fresh install is not exposed by accident.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// Default largest accepted request body, in bytes. Every request body is a few small fields.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 16 * 1024;
/// Default number of `/v1` requests served at once; beyond it requests are shed with 503.
pub const DEFAULT_CONCURRENCY_LIMIT: usize = 512;
/// Default time a `/v1` request may take before it is answered with 503.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Default pool size.
pub const DEFAULT_POOL_SIZE: u32 = 16;
/// Default wait for a pooled connection.
pub const DEFAULT_ACQUIRE_TIMEOUT_MS: u64 = 2_000;
/// Default wait for a row lock (PostgreSQL/MySQL) or the write lock (SQLite busy timeout).
pub const DEFAULT_LOCK_TIMEOUT_MS: u64 = 2_000;
/// Default time in-flight requests get to finish after a shutdown signal.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 15_000;
/// Default pause between hold sweeps; 0 turns the service's sweeper off.
pub const DEFAULT_HOLD_SWEEP_INTERVAL_MS: u64 = 1_000;
/// Default due holds expired per sweep transaction.
pub const DEFAULT_HOLD_SWEEP_BATCH: u32 = 100;

/// The optional TOML config file. Every key is optional; keys mirror the long flag names
/// with `_` for `-`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Database URL (`postgres://…`, `mysql://…`, `mariadb://…`, `sqlite://…` or a file path).
    pub database_url: Option<String>,
    /// Strategy used when a request names none.
    pub default_strategy: Option<Strategy>,
    /// Whether a request may choose its own strategy.
    pub allow_strategy_override: Option<bool>,
    /// Most pooled connections.
    pub pool_size: Option<u32>,
    /// Wait for a pooled connection.
    pub acquire_timeout_ms: Option<u64>,
    /// Wait for a row lock.
    pub lock_timeout_ms: Option<u64>,
    /// Time a request may take.
    pub request_timeout_ms: Option<u64>,
    /// Listen address.
    pub bind: Option<SocketAddr>,
    /// Bearer token required on mutations and the audit.
    pub auth_token: Option<String>,
    /// Bearer token for the audit only.
    pub audit_token: Option<String>,
    /// Largest request body.
    pub body_limit_bytes: Option<usize>,
    /// Requests served at once.
    pub concurrency_limit: Option<usize>,
    /// JSON log lines instead of text.
    pub json_logs: Option<bool>,
    /// Time in-flight requests get after a shutdown signal.
    pub shutdown_grace_ms: Option<u64>,
    /// Buckets a `sharded` SKU's stock is spread over.
    pub shard_buckets: Option<u32>,
    /// Spread a SKU on its first `sharded` deduction instead of on contention.
    pub spread_eagerly: Option<bool>,
    /// Client keys of committed deductions kept in memory to answer retries.
    pub recent_keys_max: Option<usize>,
    /// Pause between hold sweeps, in milliseconds; 0: no sweeper.
    pub hold_sweep_interval_ms: Option<u64>,
    /// Due holds expired per sweep transaction.
    pub hold_sweep_batch: Option<u32>,
    /// OTLP/HTTP collector spans are exported to (needs the `otlp` feature).
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub otlp_service_name: Option<String>,
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("parsing config file {}: {e}", path.display()))
    }
}

/// Where the data lives: the flags of every command that opens the database.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Database")]
pub struct DatabaseArgs {
    /// TOML config file (lowest precedence after the defaults).
    #[arg(long, env = "STOCKGUARD_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Database URL: postgres://…, mysql://… or mariadb://…, sqlite://PATH or a plain file path.
    /// Falls back to DATABASE_URL; without either, the embedded SQLite file ./stockguard.db.
    #[arg(
        long,
        env = "STOCKGUARD_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Wait for a database connection before giving up (serve: before answering 503), in
    /// milliseconds.
    #[arg(long, env = "STOCKGUARD_ACQUIRE_TIMEOUT_MS", value_name = "MS")]
    pub acquire_timeout_ms: Option<u64>,
}

/// The flags only `serve` uses. A boolean is a switch: given (or its variable set to true) it
/// turns the setting on; absent, the config file or the default decides.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Service")]
pub struct ServeArgs {
    /// Strategy used when a request names none.
    #[arg(
        long,
        env = "STOCKGUARD_DEFAULT_STRATEGY",
        value_enum,
        value_name = "STRATEGY"
    )]
    pub default_strategy: Option<StrategyName>,
    /// Refuse (422) a deduct body that names its own strategy: every deduction uses the default.
    #[arg(long, env = "STOCKGUARD_NO_STRATEGY_OVERRIDE", value_parser = BoolishValueParser::new())]
    pub no_strategy_override: bool,
    /// Most pooled database connections.
    #[arg(long, env = "STOCKGUARD_POOL_SIZE", value_name = "N")]
    pub pool_size: Option<u32>,
    /// Wait for a row lock (SQLite: the write lock) before answering 503, in milliseconds.
    #[arg(long, env = "STOCKGUARD_LOCK_TIMEOUT_MS", value_name = "MS")]
    pub lock_timeout_ms: Option<u64>,
    /// Time a /v1 request may take before it is answered with 503, in milliseconds.
    #[arg(long, env = "STOCKGUARD_REQUEST_TIMEOUT_MS", value_name = "MS")]
    pub request_timeout_ms: Option<u64>,
    /// Listen address (default 127.0.0.1:8080).
    #[arg(long, env = "STOCKGUARD_BIND", value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    /// Bearer token required on every mutation (POST) and on GET /v1/audit. Prefer the env
    /// var over the flag, which shows up in process listings.
    #[arg(
        long,
        env = "STOCKGUARD_AUTH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub auth_token: Option<String>,
    /// A second bearer token that may run GET /v1/audit and nothing else (for monitoring).
    #[arg(
        long,
        env = "STOCKGUARD_AUDIT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub audit_token: Option<String>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "STOCKGUARD_BODY_LIMIT_BYTES", value_name = "BYTES")]
    pub body_limit_bytes: Option<usize>,
    /// /v1 requests served at once; more are shed with 503.
    #[arg(long, env = "STOCKGUARD_CONCURRENCY_LIMIT", value_name = "N")]
    pub concurrency_limit: Option<usize>,
    /// Time in-flight requests get to finish after SIGTERM/Ctrl-C, in milliseconds.
    #[arg(long, env = "STOCKGUARD_SHUTDOWN_GRACE_MS", value_name = "MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Buckets a `sharded` SKU's stock is spread over (1..=256; PostgreSQL and MySQL/MariaDB).
    #[arg(long, env = "STOCKGUARD_SHARD_BUCKETS", value_name = "N")]
    pub shard_buckets: Option<u32>,
    /// Pause between sweeps of expired holds, in milliseconds (default 1000; 0 turns this
    /// instance's sweeper off: expiry still takes effect at read time).
    #[arg(long, env = "STOCKGUARD_HOLD_SWEEP_INTERVAL_MS", value_name = "MS")]
    pub hold_sweep_interval_ms: Option<u64>,
    /// Expired holds one sweep transaction resolves (1..=1000, default 100).
    #[arg(long, env = "STOCKGUARD_HOLD_SWEEP_BATCH", value_name = "N")]
    pub hold_sweep_batch: Option<u32>,
    /// `sharded` spreads a SKU on its first deduction instead of the first time two
    /// deductions meet on its row.
    #[arg(long, env = "STOCKGUARD_SPREAD_EAGERLY", value_parser = BoolishValueParser::new())]
    pub spread_eagerly: bool,
    /// Client keys of committed deductions kept in memory, so a client's retry is answered
    /// without the database (0..=262144, default 8192; 0 turns the memory off).
    #[arg(long, env = "STOCKGUARD_RECENT_KEYS_MAX", value_name = "N")]
    pub recent_keys_max: Option<usize>,
    /// Export spans over OTLP/HTTP (protobuf) to this collector, e.g. http://127.0.0.1:4318
    /// (/v1/traces is appended). Needs a binary built with the `otlp` feature; without it,
    /// serve refuses to start.
    #[arg(long, env = "STOCKGUARD_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// service.name of the exported spans (default stockguard).
    #[arg(long, env = "STOCKGUARD_OTLP_SERVICE_NAME", value_name = "NAME")]
    pub otlp_service_name: Option<String>,
    /// The Redis admission gate (flags and environment only).
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// Everything given on the command line or in the environment (clap fills both); `None` (or
/// `false` for a switch) means "not given here", so the config file or the default applies.
#[derive(Debug, Clone, Default)]
pub struct CliSettings {
    /// Database flags.
    pub database: DatabaseArgs,
    /// Service flags (all unset for commands other than `serve`).
    pub serve: ServeArgs,
    /// `--json-logs`.
    pub json_logs: bool,
}

/// The resolved settings the service runs with. `Debug` leaves the token out.
#[derive(Clone)]
pub struct Settings {
    /// Where the data lives.
    pub database: DatabaseTarget,
    /// True when no URL was configured and the embedded SQLite default is in use.
    pub database_is_default: bool,
    /// Strategy used when a request names none.
    pub default_strategy: Strategy,
    /// Whether a request may name its own strategy.
    pub allow_strategy_override: bool,
    /// Most pooled connections.
    pub pool_size: u32,
    /// Wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// Wait for a row lock / the SQLite write lock.
    pub lock_timeout: Duration,
    /// Time a /v1 request may take.
    pub request_timeout: Duration,
    /// Listen address.
    pub bind: SocketAddr,
    /// Bearer token for mutations and the audit.
    pub auth_token: Option<String>,
    /// Bearer token for the audit only.
    pub audit_token: Option<String>,
    /// Largest request body, in bytes.
    pub body_limit_bytes: usize,
    /// /v1 requests served at once.
    pub concurrency_limit: usize,
    /// JSON log lines.
    pub json_logs: bool,
    /// Time in-flight requests get after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Buckets a `sharded` SKU's stock is spread over.
    pub shard_buckets: u32,
    /// `sharded` spreads a SKU on its first deduction.
    pub spread_eagerly: bool,
    /// Client keys of committed deductions kept in memory to answer retries.
    pub recent_keys_max: usize,
    /// Pause between hold sweeps; zero: no sweeper.
    pub hold_sweep_interval: Duration,
    /// Due holds expired per sweep transaction.
    pub hold_sweep_batch: u32,
    /// Span export, when configured (only a binary with the `otlp` feature accepts it).
    pub otlp: Option<OtlpSettings>,
    /// The Redis admission gate, when `--redis-url` is set.
    pub redis_gate: Option<stockguard_redis_gate::GateConfig>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("database", &self.database)
            .field("database_is_default", &self.database_is_default)
            .field("default_strategy", &self.default_strategy)
            .field("allow_strategy_override", &self.allow_strategy_override)
            .field("pool_size", &self.pool_size)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("bind", &self.bind)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "<set>"))
            .field("audit_token", &self.audit_token.as_ref().map(|_| "<set>"))
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("concurrency_limit", &self.concurrency_limit)
            .field("json_logs", &self.json_logs)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("shard_buckets", &self.shard_buckets)
            .field("spread_eagerly", &self.spread_eagerly)
            .field("recent_keys_max", &self.recent_keys_max)
            .field("hold_sweep_interval", &self.hold_sweep_interval)
            .field("hold_sweep_batch", &self.hold_sweep_batch)
            .field("otlp", &self.otlp)
            .field("redis_gate", &self.redis_gate.as_ref().map(|gate| gate.when_down))
            .finish()
    }
}

/// The variable many tools (sqlx-cli, Heroku-style platforms) use for the database URL; read
/// when `STOCKGUARD_DATABASE_URL` and `--database-url` are both absent.
pub const DATABASE_URL_FALLBACK_ENV: &str = "DATABASE_URL";

impl Settings {
    /// Applies flags/env over the config file (if any) over the defaults.
    pub fn resolve(cli: &CliSettings) -> anyhow::Result<Self> {
        let file = match &cli.database.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let mut cli = cli.clone();
        if cli.database.database_url.is_none() {
            cli.database.database_url = std::env::var(DATABASE_URL_FALLBACK_ENV)
                .ok()
                .filter(|url| !url.trim().is_empty());
        }
        Self::merge(cli, file)
    }

    /// The precedence rule itself, separate from file reading so it can be tested.
    pub fn merge(cli: CliSettings, file: FileConfig) -> anyhow::Result<Self> {
        let CliSettings {
            database: db,
            serve,
            json_logs,
        } = cli;
        let url = db.database_url.or(file.database_url);
        let database_is_default = url.is_none();
        let database = match url {
            Some(url) => DatabaseTarget::parse(&url)?,
            None => DatabaseTarget::Sqlite(PathBuf::from(DEFAULT_SQLITE_PATH)),
        };
        let token = |cli: Option<String>, file: Option<String>| cli.or(file).filter(|t| !t.is_empty());
        let millis = |cli: Option<u64>, file: Option<u64>, default: u64| {
            Duration::from_millis(cli.or(file).unwrap_or(default))
        };
        let settings = Self {
            database,
            database_is_default,
            default_strategy: serve
                .default_strategy
                .map(Strategy::from)
                .or(file.default_strategy)
                .unwrap_or(Strategy::Guarded),
            // A switch can only turn its setting on (`--no-strategy-override` turns this off).
            allow_strategy_override: !serve.no_strategy_override
                && file.allow_strategy_override.unwrap_or(true),
            pool_size: serve.pool_size.or(file.pool_size).unwrap_or(DEFAULT_POOL_SIZE),
            acquire_timeout: millis(
                db.acquire_timeout_ms,
                file.acquire_timeout_ms,
                DEFAULT_ACQUIRE_TIMEOUT_MS,
            ),
            lock_timeout: millis(
                serve.lock_timeout_ms,
                file.lock_timeout_ms,
                DEFAULT_LOCK_TIMEOUT_MS,
            ),
            request_timeout: millis(
                serve.request_timeout_ms,
                file.request_timeout_ms,
                DEFAULT_REQUEST_TIMEOUT_MS,
            ),
            bind: match serve.bind.or(file.bind) {
                Some(bind) => bind,
                None => DEFAULT_BIND.parse()?,
            },
            auth_token: token(serve.auth_token, file.auth_token),
            audit_token: token(serve.audit_token, file.audit_token),
            body_limit_bytes: serve
                .body_limit_bytes
                .or(file.body_limit_bytes)
                .unwrap_or(DEFAULT_BODY_LIMIT_BYTES),
            concurrency_limit: serve
                .concurrency_limit
                .or(file.concurrency_limit)
                .unwrap_or(DEFAULT_CONCURRENCY_LIMIT),
            json_logs: json_logs || file.json_logs.unwrap_or(false),
            shutdown_grace: millis(
                serve.shutdown_grace_ms,
                file.shutdown_grace_ms,
                DEFAULT_SHUTDOWN_GRACE_MS,
            ),
            shard_buckets: serve
                .shard_buckets
                .or(file.shard_buckets)
                .unwrap_or(stockguard_core::sharding::DEFAULT_SHARD_BUCKETS),
            spread_eagerly: serve.spread_eagerly || file.spread_eagerly.unwrap_or(false),
            recent_keys_max: serve
                .recent_keys_max
                .or(file.recent_keys_max)
                .unwrap_or(EngineConfig::default().recent_keys_max),
            hold_sweep_interval: Duration::from_millis(
                serve
                    .hold_sweep_interval_ms
                    .or(file.hold_sweep_interval_ms)
                    .unwrap_or(DEFAULT_HOLD_SWEEP_INTERVAL_MS),
            ),
            hold_sweep_batch: serve
                .hold_sweep_batch
                .or(file.hold_sweep_batch)
                .unwrap_or(DEFAULT_HOLD_SWEEP_BATCH),
            otlp: OtlpSettings::resolve(
                serve.otlp_endpoint.or(file.otlp_endpoint),
                serve.otlp_service_name.or(file.otlp_service_name),
            )?,
            redis_gate: None,
        };
        let settings = Self {
            redis_gate: serve.redis.resolve(settings.request_timeout)?,
            ..settings
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.pool_size >= 1, "pool_size must be at least 1");
        anyhow::ensure!(
            self.concurrency_limit >= 1,
            "concurrency_limit must be at least 1"
        );
        anyhow::ensure!(
            self.body_limit_bytes >= 64,
            "body_limit_bytes must be at least 64"
        );
        anyhow::ensure!(
            !self.request_timeout.is_zero()
                && !self.acquire_timeout.is_zero()
                && !self.lock_timeout.is_zero(),
            "timeouts must be positive"
        );
        stockguard_core::sharding::check_bucket_count(self.shard_buckets)
            .map_err(|e| anyhow::anyhow!("shard_buckets: {e}"))?;
        anyhow::ensure!(
            self.recent_keys_max <= stockguard_core::RECENT_KEYS_MAX,
            "recent_keys_max must be at most {}",
            stockguard_core::RECENT_KEYS_MAX
        );
        anyhow::ensure!(
            (1..=stockguard_core::HOLD_SWEEP_BATCH_MAX).contains(&self.hold_sweep_batch),
            "hold_sweep_batch must be between 1 and {}",
            stockguard_core::HOLD_SWEEP_BATCH_MAX
        );
        Ok(())
    }

    /// Settings for tests and the in-process benchmark: given database, port 0, defaults otherwise.
    pub fn for_database(database: DatabaseTarget) -> Self {
        let mut settings =
            Self::merge(CliSettings::default(), FileConfig::default()).expect("defaults are valid");
        settings.database = database;
        settings.database_is_default = false;
        settings.bind = "127.0.0.1:0".parse().expect("literal address");
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_env_beat_the_file_which_beats_defaults() {
        let cli = CliSettings {
            serve: ServeArgs {
                pool_size: Some(3),
                ..ServeArgs::default()
            },
            ..CliSettings::default()
        };
        let file = FileConfig {
            pool_size: Some(9),
            concurrency_limit: Some(7),
            ..FileConfig::default()
        };
        let settings = Settings::merge(cli, file).unwrap();
        assert_eq!(settings.pool_size, 3);
        assert_eq!(settings.concurrency_limit, 7);
        assert_eq!(settings.body_limit_bytes, DEFAULT_BODY_LIMIT_BYTES);
        assert!(settings.database_is_default);
        assert_eq!(
            settings.database,
            DatabaseTarget::Sqlite(DEFAULT_SQLITE_PATH.into())
        );
    }

    #[test]
    fn switches_turn_settings_on_or_leave_them_to_the_file() {
        let defaults = Settings::merge(CliSettings::default(), FileConfig::default()).unwrap();
        assert!(defaults.allow_strategy_override && !defaults.json_logs && !defaults.spread_eagerly);
        let file = FileConfig {
            json_logs: Some(true),
            allow_strategy_override: Some(false),
            ..FileConfig::default()
        };
        let settings = Settings::merge(CliSettings::default(), file).unwrap();
        assert!(settings.json_logs && !settings.allow_strategy_override);
        let cli = CliSettings {
            json_logs: true,
            serve: ServeArgs {
                no_strategy_override: true,
                spread_eagerly: true,
                default_strategy: Some(StrategyName::NoWait),
                ..ServeArgs::default()
            },
            ..CliSettings::default()
        };
        let settings = Settings::merge(cli, FileConfig::default()).unwrap();
        assert!(settings.json_logs && settings.spread_eagerly && !settings.allow_strategy_override);
        assert_eq!(settings.default_strategy, Strategy::NoWait);
    }

    #[test]
    fn recent_keys_default_and_are_bounded() {
        let settings = Settings::merge(CliSettings::default(), FileConfig::default()).unwrap();
        assert_eq!(settings.recent_keys_max, EngineConfig::default().recent_keys_max);
        let file = FileConfig {
            recent_keys_max: Some(stockguard_core::RECENT_KEYS_MAX + 1),
            ..FileConfig::default()
        };
        let error = Settings::merge(CliSettings::default(), file).unwrap_err();
        assert!(error.to_string().contains("recent_keys_max"), "{error}");
    }

    #[test]
    fn shard_settings_default_and_are_bounded() {
        let settings = Settings::merge(CliSettings::default(), FileConfig::default()).unwrap();
        assert_eq!(
            (settings.shard_buckets, settings.spread_eagerly),
            (stockguard_core::sharding::DEFAULT_SHARD_BUCKETS, false)
        );
        let file = FileConfig {
            shard_buckets: Some(0),
            ..FileConfig::default()
        };
        let error = Settings::merge(CliSettings::default(), file).unwrap_err();
        assert!(error.to_string().contains("shard_buckets"), "{error}");
        let cli = CliSettings {
            serve: ServeArgs {
                shard_buckets: Some(32),
                spread_eagerly: true,
                ..ServeArgs::default()
            },
            ..CliSettings::default()
        };
        let file = FileConfig {
            shard_buckets: Some(500),
            ..FileConfig::default()
        };
        let settings = Settings::merge(cli, file).unwrap();
        assert_eq!((settings.shard_buckets, settings.spread_eagerly), (32, true));
    }

    #[cfg(not(feature = "otlp"))]
    #[test]
    fn a_build_without_otlp_refuses_an_endpoint_from_flags_env_or_file() {
        use crate::telemetry::TelemetryError;
        let cli = CliSettings {
            serve: ServeArgs {
                otlp_endpoint: Some("http://127.0.0.1:4318".into()),
                ..ServeArgs::default()
            },
            ..CliSettings::default()
        };
        let file = FileConfig {
            otlp_endpoint: Some("http://127.0.0.1:4318".into()),
            ..FileConfig::default()
        };
        for (cli, file) in [(cli, FileConfig::default()), (CliSettings::default(), file)] {
            let error = Settings::merge(cli, file).unwrap_err();
            assert!(
                matches!(
                    error.downcast_ref::<TelemetryError>(),
                    Some(TelemetryError::OtlpNotBuilt { .. })
                ),
                "{error:#}"
            );
        }
    }

    #[test]
    fn debug_leaves_secrets_out() {
        let target = DatabaseTarget::parse("postgres://app:hunter2@db.example/shop").unwrap();
        let settings = Settings {
            auth_token: Some("hunter2".into()),
            audit_token: Some("hunter2".into()),
            ..Settings::for_database(target)
        };
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
