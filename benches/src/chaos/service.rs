//! The service under test: a real `stockguard serve` process (the binary built from
//! crates/api), on one loopback port that every restart reuses, with its output appended to
//! a log file. The runner pauses, kills and restarts it; any exit it did not cause is a
//! crash.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal, kill_process};
use stockguard_core::Strategy;
use tokio::process::{Child, Command};

/// Bound on one start: migrations included, on a busy machine.
const START_WAIT: Duration = Duration::from_secs(30);
/// Starts tried before giving up (a start fails if the database is briefly unreachable).
const START_TRIES: u32 = 3;

/// How the service is started.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The `stockguard` binary.
    pub bin: PathBuf,
    /// Loopback port, the same across restarts.
    pub port: u16,
    /// What the service connects to (the proxy, or a SQLite file).
    pub database_url: String,
    /// The strategy under test (the service's default; overrides are off).
    pub strategy: Strategy,
    /// Bearer token for mutations.
    pub token: String,
    /// Where its stdout and stderr go, across restarts.
    pub log: PathBuf,
    /// `request_timeout_ms`: the engine's deadline is 90 % of it.
    pub request_timeout: Duration,
    /// Pool size.
    pub pool_size: u32,
    /// Wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// Wait for a row lock.
    pub lock_timeout: Duration,
    /// Time in-flight requests get after SIGTERM.
    pub shutdown_grace: Duration,
    /// The admission gate's Redis (`+gate` cells), reconciled every
    /// [`RECONCILE_INTERVAL`](super::gate::RECONCILE_INTERVAL).
    pub redis_url: Option<String>,
}

/// One exit of the service that the runner did not cause.
#[derive(Debug, Clone)]
pub struct Crash {
    /// The process id.
    pub pid: u32,
    /// Its exit status.
    pub status: String,
}

/// A running (or restarting) `stockguard serve`.
#[derive(Debug)]
pub struct Service {
    config: ServiceConfig,
    child: Option<Child>,
    http: reqwest::Client,
    crashes: Vec<Crash>,
}

impl Service {
    /// Starts the service and waits until `/readyz` answers 200.
    pub async fn start(config: ServiceConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(3))
            .build()
            .context("building the readiness client")?;
        let mut service = Self {
            config,
            child: None,
            http,
            crashes: Vec::new(),
        };
        service.spawn().await?;
        Ok(service)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.config.port)
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// How it was started.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Sends `signal` to the running process.
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self.pid().context("the service is not running")?;
        let pid = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .context("not a process id")?;
        kill_process(pid, signal).with_context(|| format!("sending {signal:?} to the service"))
    }

    /// The pool gauges from `/metrics`: connections in use and the pool's size. `None` when
    /// the service does not answer (paused, restarting, shedding).
    pub async fn pool_gauges(&self) -> Option<(u64, u64)> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base_url()))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let gauge = |prefix: &str| -> Option<u64> {
            text.lines()
                .find_map(|line| line.strip_prefix(prefix))
                .and_then(|value| value.trim().parse().ok())
        };
        Some((
            gauge("stockguard_pool_connections{state=\"in_use\"} ")?,
            gauge("stockguard_pool_max_connections ")?,
        ))
    }

    /// The process's state letter from `/proc` (`T` while stopped).
    pub fn proc_state(&self) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        stat[stat.rfind(')')? + 1..]
            .split_whitespace()
            .next()?
            .chars()
            .next()
    }

    /// SIGKILL, and reap it.
    pub async fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("the service is not running")?;
        child.start_kill().context("SIGKILL to the service")?;
        Ok(child.wait().await?)
    }

    /// SIGTERM, and wait up to `limit` for it to exit (SIGKILL after that). The exit
    /// status and how long the drain took.
    pub async fn terminate(&mut self, limit: Duration) -> anyhow::Result<(ExitStatus, Duration)> {
        self.signal(Signal::TERM)?;
        let started = Instant::now();
        let mut child = self.child.take().context("the service is not running")?;
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => Ok((status?, started.elapsed())),
            Err(_) => {
                child.start_kill()?;
                let status = child.wait().await?;
                Ok((status, started.elapsed()))
            }
        }
    }

    /// Starts it again on the same port; how long until it was ready.
    pub async fn restart(&mut self) -> anyhow::Result<Duration> {
        if self.child.is_some() {
            bail!("restart while the service is still running");
        }
        let started = Instant::now();
        self.spawn().await?;
        Ok(started.elapsed())
    }

    /// If the process exited without the runner causing it: records the crash, restarts
    /// the service and returns the crash.
    pub async fn check_crashed(&mut self) -> anyhow::Result<Option<Crash>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let Some(status) = child.try_wait()? else {
            return Ok(None);
        };
        let crash = Crash {
            pid: child.id().unwrap_or(0),
            status: status.to_string(),
        };
        self.child = None;
        self.crashes.push(crash.clone());
        self.spawn().await?;
        Ok(Some(crash))
    }

    /// Every crash so far.
    pub fn crashes(&self) -> &[Crash] {
        &self.crashes
    }

    /// The service's `/metrics` text right now.
    pub async fn scrape_metrics(&self) -> anyhow::Result<String> {
        let url = format!("{}/metrics", self.base_url());
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("scraping {url}"))?;
        anyhow::ensure!(
            response.status().is_success(),
            "scraping {url}: {}",
            response.status()
        );
        Ok(response.text().await?)
    }

    /// Graceful stop at the end of a run.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            let limit = self.config.shutdown_grace + Duration::from_secs(5);
            self.terminate(limit).await?;
        }
        Ok(())
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut last = None;
        for _ in 0..START_TRIES {
            match self.spawn_once().await {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(error) => {
                    last = Some(error);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no start was tried")))
    }

    async fn spawn_once(&self) -> anyhow::Result<Child> {
        let config = &self.config;
        let log = open_log(&config.log)?;
        let mut command = Command::new(&config.bin);
        // Nothing from the caller's environment may change what is under test.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("STOCKGUARD_") {
                command.env_remove(name);
            }
        }
        let millis = |d: Duration| d.as_millis().to_string();
        command
            .arg("serve")
            .env("STOCKGUARD_DATABASE_URL", &config.database_url)
            .env("STOCKGUARD_BIND", format!("127.0.0.1:{}", config.port))
            .env("STOCKGUARD_AUTH_TOKEN", &config.token)
            .env("STOCKGUARD_DEFAULT_STRATEGY", config.strategy.as_str())
            .env("STOCKGUARD_NO_STRATEGY_OVERRIDE", "true")
            .env("STOCKGUARD_POOL_SIZE", config.pool_size.to_string())
            .env("STOCKGUARD_ACQUIRE_TIMEOUT_MS", millis(config.acquire_timeout))
            .env("STOCKGUARD_LOCK_TIMEOUT_MS", millis(config.lock_timeout))
            .env("STOCKGUARD_REQUEST_TIMEOUT_MS", millis(config.request_timeout))
            .env("STOCKGUARD_SHUTDOWN_GRACE_MS", millis(config.shutdown_grace))
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        if let Some(url) = &config.redis_url {
            command
                .env("STOCKGUARD_REDIS_URL", url)
                .env(
                    "STOCKGUARD_REDIS_RECONCILE_INTERVAL_MS",
                    millis(super::gate::RECONCILE_INTERVAL),
                )
                .env(
                    "STOCKGUARD_REDIS_UNKNOWN_GRACE_MS",
                    millis(super::gate::unknown_grace(config.request_timeout)),
                );
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", config.bin.display()))?;
        let ready = format!("{}/readyz", self.base_url());
        let deadline = Instant::now() + START_WAIT;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "stockguard serve exited with {status} while starting; see {}",
                    config.log.display()
                );
            }
            if let Ok(response) = self.http.get(&ready).send().await
                && response.status().is_success()
            {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                let _ = child.wait().await;
                bail!(
                    "stockguard serve was not ready within {START_WAIT:?}; see {}",
                    config.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn open_log(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// The `stockguard` binary next to the running one (both are built into the same target
/// directory), or `explicit` when given.
pub fn find_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let me = std::env::current_exe().context("locating the running binary")?;
    let dir = me.parent().context("the running binary has no directory")?;
    // Test binaries live one level down, in target/<profile>/deps.
    for candidate in [dir.join("stockguard"), dir.join("../stockguard")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no stockguard binary beside {}: build it first (cargo build -p stockguard-api) or pass --service-bin",
        me.display()
    )
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
