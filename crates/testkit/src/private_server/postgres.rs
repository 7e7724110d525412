//! A private PostgreSQL server: a copy of an `initdb` template and a `postgres` process of
//! our own on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustix::process::Signal;
use sqlx::Connection;

use super::process::{
    RunAs, from_template, io_error, kill_tree, private_dir, run_tool, signal, spawn_logged, sweep_orphans,
    wait_exit,
};
use super::{SERVER_WAIT, ServerError, free_port, log_tail, off_runtime, started_or_skip};

/// Directory holding `initdb` and `postgres`, when they are neither in the Debian layout
/// (`/usr/lib/postgresql/<major>/bin`) nor on `PATH`.
pub const PG_BINDIR_ENV: &str = "STOCKGUARD_PG_BINDIR";

/// Trust for user `postgres` (no passwords in tests), and 1 MiB WAL segments instead of 16:
/// the data directory is copied for every server, and a 16 MiB segment was 40% of it.
const INITDB_ARGS: &[&str] = &[
    "-A",
    "trust",
    "-U",
    "postgres",
    "-E",
    "UTF8",
    "--no-locale",
    "--wal-segsize=1",
];

/// Private directories are `$TMPDIR/stockguard-pg-*`.
const DIR_PREFIX: &str = "stockguard-pg-";

/// How a [`PrivatePostgres`] is configured. Everything else is PostgreSQL's default, except
/// `fsync = off` and `shared_buffers = 32MB` (see [`PrivatePostgres`]).
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    max_connections: Option<u32>,
    settings: Vec<(String, String)>,
}

impl PostgresOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Caps connections at exactly `limit`: `superuser_reserved_connections` is set to 0,
    /// because every client of a private server is the superuser `postgres`, so the reserved
    /// slots would silently raise the limit they see. Connection `limit + 1` gets SQLSTATE
    /// 53300 (too_many_connections).
    pub fn max_connections(mut self, limit: u32) -> Self {
        self.max_connections = Some(limit);
        self
    }

    /// Appends `name = 'value'` to `postgresql.conf` (later settings win, so this overrides
    /// the defaults above). The value is quoted for you, e.g. `setting("lock_timeout", "1s")`.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }
}

/// A PostgreSQL server of one's own, for tests that restart, crash or starve it.
///
/// Trust authentication for user `postgres` on `127.0.0.1`; the unix socket sits in the
/// server's private directory. `fsync = off` because the server is only ever killed as a
/// process, never with its machine: the kernel still holds every write, so crash recovery
/// behaves as with fsync, minus the disk waits on a shared box.
///
/// Dropping it shuts the server down immediately and deletes its directory.
#[derive(Debug)]
pub struct PrivatePostgres {
    config: Config,
    state: Arc<Mutex<State>>,
    // Only here to be deleted on drop, after `Drop::drop` stopped the server.
    _dir: tempfile::TempDir,
}

#[derive(Debug, Clone)]
struct Config {
    bin_dir: PathBuf,
    run_as: RunAs,
    dir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
}

#[derive(Debug, Default)]
struct State {
    // The postmaster: we spawn it ourselves (not via pg_ctl) so we can reap it at once.
    postmaster: Option<Child>,
    last_start: Duration,
}

impl PrivatePostgres {
    /// Initialises a fresh data directory and starts the server; waits up to
    /// [`SERVER_WAIT`] for it to accept connections.
    pub async fn start(options: PostgresOptions) -> Result<Self, ServerError> {
        off_runtime(move || Self::start_blocking(&options)).await
    }

    /// [`PrivatePostgres::start`], or `None` after a loud message when PostgreSQL is not
    /// installed and no database is required; panics (with the log tail) on other failures.
    pub async fn start_or_skip(options: PostgresOptions) -> Option<Self> {
        started_or_skip("PostgreSQL", Self::start(options).await)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.config.port)
    }

    /// The loopback TCP port; the same across restarts.
    pub fn port(&self) -> u16 {
        self.config.port
    }

    /// The postmaster's process id while it runs; a new one after every restart.
    pub fn pid(&self) -> Option<u32> {
        self.lock().postmaster.as_ref().map(Child::id)
    }

    /// How long the last start (or restart's start half) took until connections were accepted.
    pub fn last_start_duration(&self) -> Duration {
        self.lock().last_start
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.config.data
    }

    /// Where the server's stdout and stderr go, across restarts.
    pub fn log_path(&self) -> &Path {
        &self.config.log
    }

    /// The log's last lines, for a failing test's message.
    pub fn log_tail(&self) -> String {
        log_tail(&self.config.log)
    }

    /// When the running server started, from `pg_postmaster_start_time()` (microseconds):
    /// observable proof, from the client's side, that a restart happened.
    pub async fn started_at(&self) -> Result<SystemTime, sqlx::Error> {
        postgres_started_at(&self.url()).await
    }

    /// Fast shutdown (SIGINT: sessions are terminated, then a checkpoint), then a start on the
    /// same port with the same data. Starts the server if it was stopped or killed, after
    /// crash recovery in the latter case.
    pub async fn restart(&mut self) -> Result<(), ServerError> {
        let (config, state) = (self.config.clone(), Arc::clone(&self.state));
        off_runtime(move || {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            config.stop(&mut state, Signal::INT)?;
            config.start(&mut state)
        })
        .await
    }

    /// Fast shutdown; the data stays for a later [`PrivatePostgres::restart`].
    pub async fn stop(&mut self) -> Result<(), ServerError> {
        let (config, state) = (self.config.clone(), Arc::clone(&self.state));
        off_runtime(move || {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            config.stop(&mut state, Signal::INT)
        })
        .await
    }

    /// An immediate crash: SIGKILL to the postmaster and every backend and helper process,
    /// so clients lose their connections at once and no shutdown checkpoint is written.
    /// [`PrivatePostgres::restart`] then runs crash recovery.
    pub async fn kill(&mut self) {
        let (config, state) = (self.config.clone(), Arc::clone(&self.state));
        off_runtime(move || {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            config.kill(&mut state);
        })
        .await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn start_blocking(options: &PostgresOptions) -> Result<Self, ServerError> {
        let bin_dir = bin_dir()?;
        let run_as = RunAs::for_server("postgres")?;
        sweep_orphans(DIR_PREFIX, "data/postmaster.pid", Signal::QUIT);
        let dir = private_dir(DIR_PREFIX, run_as)?;
        let data = dir.path().join("data");
        let version = std::process::Command::new(bin_dir.join("postgres"))
            .arg("--version")
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default();
        let bin = bin_dir.display().to_string();
        let mut key = vec![bin.as_str(), version.as_str()];
        key.extend_from_slice(INITDB_ARGS);
        from_template("postgres", &key, &data, run_as, |data, log| {
            let mut initdb = run_as.command(&bin_dir.join("initdb"));
            // --no-sync: the template is copied, and a crash while building leaves no template.
            initdb.arg("-D").arg(data).args(INITDB_ARGS).arg("--no-sync");
            run_tool("initdb", &mut initdb, log)
        })?;
        let mut config = Config {
            bin_dir,
            run_as,
            dir: dir.path().to_path_buf(),
            log: dir.path().join("server.log"),
            data,
            port: free_port().map_err(|e| io_error("finding a free port".into(), e, ""))?,
        };
        config.write_settings(options)?;
        let mut state = State::default();
        if let Err(first) = config.start(&mut state) {
            // Someone may have taken the free port between our probe and the server's bind.
            if !log_tail(&config.log).contains("could not bind") {
                return Err(first);
            }
            config.port = free_port().map_err(|e| io_error("finding a free port".into(), e, ""))?;
            config.start(&mut state)?;
        }
        Ok(Self {
            config,
            state: Arc::new(Mutex::new(state)),
            _dir: dir,
        })
    }
}

impl Config {
    fn write_settings(&self, options: &PostgresOptions) -> Result<(), ServerError> {
        let quote = |value: &str| format!("'{}'", value.replace('\'', "''"));
        let mut conf = String::from("\n# stockguard private server\n");
        let mut set = |name: &str, value: &str| {
            conf.push_str(&format!("{name} = {}\n", quote(value)));
        };
        set("listen_addresses", "127.0.0.1");
        set("unix_socket_directories", &self.dir.display().to_string());
        set("fsync", "off");
        set("shared_buffers", "32MB");
        if let Some(limit) = options.max_connections {
            set("max_connections", &limit.to_string());
            set("superuser_reserved_connections", "0");
        }
        for (name, value) in &options.settings {
            set(name, value);
        }
        let path = self.data.join("postgresql.conf");
        let appended = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, conf.as_bytes()));
        appended.map_err(|source| io_error(format!("writing {}", path.display()), source, ""))
    }

    /// Spawns the postmaster and waits until its lock file says it accepts connections.
    fn start(&self, state: &mut State) -> Result<(), ServerError> {
        let started = Instant::now();
        let mut command = self.run_as.command(&self.bin_dir.join("postgres"));
        command
            .arg("-D")
            .arg(&self.data)
            .arg("-p")
            .arg(self.port.to_string())
            .current_dir(&self.dir);
        let mut child = spawn_logged("starting PostgreSQL", &mut command, &self.log)?;
        let pid = child.id().to_string();
        let deadline = started + SERVER_WAIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(ServerError::Failed {
                    step: format!("starting PostgreSQL on port {}", self.port),
                    detail: format!("postgres exited with {status}"),
                    log_tail: log_tail(&self.log),
                });
            }
            // postmaster.pid: line 1 the pid, line 8 the status pg_ctl -w waits for too.
            let lock = std::fs::read_to_string(self.data.join("postmaster.pid")).unwrap_or_default();
            let lines: Vec<&str> = lock.lines().collect();
            if lines.first() == Some(&pid.as_str()) && lines.get(7).map(|s| s.trim()) == Some("ready") {
                break;
            }
            if Instant::now() >= deadline {
                kill_tree(&mut child);
                return Err(ServerError::Timeout {
                    step: format!("starting PostgreSQL on port {}", self.port),
                    waited: SERVER_WAIT,
                    log_tail: log_tail(&self.log),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        state.postmaster = Some(child);
        state.last_start = started.elapsed();
        Ok(())
    }

    /// Shuts down with `how` (SIGINT fast, SIGQUIT immediate); SIGKILLs after [`SERVER_WAIT`].
    fn stop(&self, state: &mut State, how: Signal) -> Result<(), ServerError> {
        let Some(mut child) = state.postmaster.take() else {
            return Ok(());
        };
        let _ = signal(child.id(), how);
        if wait_exit(&mut child, SERVER_WAIT).is_none() {
            kill_tree(&mut child);
            return Err(ServerError::Timeout {
                step: "stopping PostgreSQL".into(),
                waited: SERVER_WAIT,
                log_tail: log_tail(&self.log),
            });
        }
        Ok(())
    }

    fn kill(&self, state: &mut State) {
        let Some(mut child) = state.postmaster.take() else {
            return;
        };
        kill_tree(&mut child);
        // A killed postmaster leaves its small SysV segment behind (line 7 of the lock file:
        // key and id). A restart would reclaim it, but a test that never restarts would leak
        // one per kill until the machine runs out of segments.
        let lock = std::fs::read_to_string(self.data.join("postmaster.pid")).unwrap_or_default();
        if let Some(id) = lock.lines().nth(6).and_then(|l| l.split_whitespace().nth(1)) {
            let _ = std::process::Command::new("ipcrm")
                .args(["-m", id])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut state = self.lock();
        // Immediate shutdown: the data is about to be deleted, so no checkpoint is worth
        // waiting for, but the postmaster still removes its shared memory.
        if self.config.stop(&mut state, Signal::QUIT).is_err() {
            // stop() already SIGKILLed it; the log is gone with the directory.
            eprintln!("warning: the private PostgreSQL did not stop within {SERVER_WAIT:?}");
        }
    }
}

/// The directory with `initdb` and `postgres`.
fn bin_dir() -> Result<PathBuf, ServerError> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(dir) = std::env::var(PG_BINDIR_ENV) {
        let dir = PathBuf::from(dir);
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(ServerError::NotInstalled(format!(
                "{PG_BINDIR_ENV}={} has no initdb and postgres",
                dir.display()
            )))
        };
    }
    // Debian and Ubuntu keep server binaries off PATH, one directory per major version.
    let newest_debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((major, bin))
        })
        .max();
    if let Some((_, bin)) = newest_debian {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .find(|dir| has_server(dir))
        .ok_or_else(|| {
            ServerError::NotInstalled(format!(
                "no PostgreSQL server programs (initdb, postgres) in /usr/lib/postgresql/*/bin \
                 or on PATH; install the server or set {PG_BINDIR_ENV}"
            ))
        })
}

/// When the PostgreSQL server at `url` started, from `pg_postmaster_start_time()`: whichever
/// server answers there (a private one, or a cluster's primary behind a proxy).
pub async fn postgres_started_at(url: &str) -> Result<SystemTime, sqlx::Error> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let epoch_s: f64 = sqlx::query_scalar("SELECT extract(epoch FROM pg_postmaster_start_time())::float8")
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(epoch_s))
}
