//! A private MariaDB server: a copy of a `mariadb-install-db` template and a `mariadbd`
//! process of our own on a free loopback port.

use std::io::Read;
use std::net::TcpStream;
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

/// Path of `mariadbd`, when it is neither `/usr/sbin/mariadbd` nor on `PATH`.
pub const MARIADBD_ENV: &str = "STOCKGUARD_MARIADBD";

/// Private directories are `$TMPDIR/stockguard-mariadb-*`.
const DIR_PREFIX: &str = "stockguard-mariadb-";

/// Memory and I/O settings for both the install and every start, so several servers fit on
/// a small box beside the shared one: InnoDB's 128 MiB pool and Aria's 128 MiB cache are the
/// bulk of a default server's memory. Native AIO is off because each server would take
/// thousands of the machine's `aio-max-nr` contexts.
const SMALL: &[&str] = &[
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=8M",
    "--innodb-log-buffer-size=2M",
    "--innodb-use-native-aio=0",
    "--aria-pagecache-buffer-size=8M",
    "--key-buffer-size=1M",
    "--skip-log-bin",
];

/// How a [`PrivateMariaDb`] is configured.
#[derive(Debug, Clone, Default)]
pub struct MariaDbOptions {
    max_connections: Option<u32>,
    args: Vec<String>,
}

impl MariaDbOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `--max-connections`. MariaDB raises values below its minimum of 10 to 10 (with a
    /// warning in the log), and keeps one extra connection for a user with CONNECTION ADMIN,
    /// which `root` has: root gets `limit + 1` connections, and the next one fails with
    /// error 1040 (Too many connections).
    pub fn max_connections(mut self, limit: u32) -> Self {
        self.max_connections = Some(limit);
        self
    }

    /// Appends a `mariadbd` command-line option, e.g. `arg("--innodb-lock-wait-timeout=1")`;
    /// it comes last, so it overrides the defaults.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }
}

/// A MariaDB server of one's own, for tests that restart, crash or starve it.
///
/// `root` has no password over TCP on `127.0.0.1`; accounts match by IP only
/// (`--skip-name-resolve`). The server reads no option files (`--no-defaults`), so nothing
/// from `/etc/mysql` leaks in; the character set is set to what Debian's shared server uses
/// (utf8mb4, utf8mb4_general_ci). Commits reach the OS at once and the disk once a second
/// (`innodb_flush_log_at_trx_commit = 2`), which a process kill cannot tell apart from a
/// full flush.
///
/// Dropping it kills the server and deletes its directory.
#[derive(Debug)]
pub struct PrivateMariaDb {
    config: Config,
    state: Arc<Mutex<State>>,
    // Only here to be deleted on drop, after `Drop::drop` stopped the server.
    _dir: tempfile::TempDir,
}

#[derive(Debug, Clone)]
struct Config {
    mariadbd: PathBuf,
    run_as: RunAs,
    dir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    args: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    server: Option<Child>,
    last_start: Duration,
}

impl PrivateMariaDb {
    /// Copies (or first builds) an installed data directory and starts the server; waits up
    /// to [`SERVER_WAIT`] for it to accept connections.
    pub async fn start(options: MariaDbOptions) -> Result<Self, ServerError> {
        off_runtime(move || Self::start_blocking(options)).await
    }

    /// [`PrivateMariaDb::start`], or `None` after a loud message when MariaDB is not
    /// installed and no database is required; panics (with the log tail) on other failures.
    pub async fn start_or_skip(options: MariaDbOptions) -> Option<Self> {
        started_or_skip("MariaDB", Self::start(options).await)
    }

    /// `mysql://root@127.0.0.1:<port>/mysql`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/mysql", self.config.port)
    }

    /// The loopback TCP port; the same across restarts.
    pub fn port(&self) -> u16 {
        self.config.port
    }

    /// The server's process id while it runs; a new one after every restart.
    pub fn pid(&self) -> Option<u32> {
        self.lock().server.as_ref().map(Child::id)
    }

    /// How long the last start (or restart's start half) took until connections were accepted.
    pub fn last_start_duration(&self) -> Duration {
        self.lock().last_start
    }

    /// Drops a command-line option (every copy of it) from later starts: e.g. a Galera
    /// node's bootstrap flag, once the cluster exists.
    pub fn remove_arg(&mut self, arg: &str) {
        self.config.args.retain(|given| given != arg);
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.config.data
    }

    /// Where the server's output goes, across restarts.
    pub fn log_path(&self) -> &Path {
        &self.config.log
    }

    /// The log's last lines, for a failing test's message.
    pub fn log_tail(&self) -> String {
        log_tail(&self.config.log)
    }

    /// When the running server started, as `UNIX_TIMESTAMP() - Uptime` taken in one
    /// statement. Both are whole seconds from the same clock, so the result is the same on
    /// every call until a restart; but two starts within one second look alike, so compare
    /// [`PrivateMariaDb::pid`] as well where that matters.
    pub async fn started_at(&self) -> Result<SystemTime, sqlx::Error> {
        let mut conn = sqlx::MySqlConnection::connect(&self.url()).await?;
        let (now_s, uptime_s): (i64, String) = sqlx::query_as(
            "SELECT CAST(UNIX_TIMESTAMP() AS SIGNED), VARIABLE_VALUE \
             FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'UPTIME'",
        )
        .fetch_one(&mut conn)
        .await?;
        conn.close().await?;
        let uptime_s: i64 = uptime_s
            .parse()
            .map_err(|e| sqlx::Error::Decode(format!("Uptime {uptime_s:?}: {e}").into()))?;
        let started_s = u64::try_from(now_s - uptime_s)
            .map_err(|e| sqlx::Error::Decode(format!("start before 1970: {e}").into()))?;
        Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(started_s))
    }

    /// A clean shutdown (SIGTERM), then a start on the same port with the same data. Starts
    /// the server if it was stopped or killed, after InnoDB crash recovery in the latter case.
    pub async fn restart(&mut self) -> Result<(), ServerError> {
        let (config, state) = (self.config.clone(), Arc::clone(&self.state));
        off_runtime(move || {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            config.stop(&mut state)?;
            config.start(&mut state)
        })
        .await
    }

    /// A clean shutdown; the data stays for a later [`PrivateMariaDb::restart`].
    pub async fn stop(&mut self) -> Result<(), ServerError> {
        let (config, state) = (self.config.clone(), Arc::clone(&self.state));
        off_runtime(move || {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            config.stop(&mut state)
        })
        .await
    }

    /// An immediate crash: SIGKILL, so clients lose their connections at once.
    pub async fn kill(&mut self) {
        let state = Arc::clone(&self.state);
        off_runtime(move || {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(mut child) = state.server.take() {
                kill_tree(&mut child);
            }
        })
        .await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn start_blocking(options: MariaDbOptions) -> Result<Self, ServerError> {
        let mariadbd = mariadbd()?;
        let install_db = install_db()?;
        let run_as = RunAs::for_server("mysql")?;
        sweep_orphans(DIR_PREFIX, "mysqld.pid", Signal::KILL);
        let dir = private_dir(DIR_PREFIX, run_as)?;
        let data = dir.path().join("data");
        let version = std::process::Command::new(&mariadbd)
            .arg("--version")
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_default();
        let mut key = vec![version.as_str()];
        key.extend_from_slice(SMALL);
        from_template("mariadb", &key, &data, run_as, |data, log| {
            let mut install = run_as.command(&install_db);
            // --no-defaults must come first; it keeps /etc/mysql's datadir and socket out.
            install
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
                .arg("--skip-name-resolve")
                .args(SMALL);
            run_tool("mariadb-install-db", &mut install, log)
        })?;
        let mut args: Vec<String> = SMALL.iter().map(|s| (*s).to_owned()).collect();
        if let Some(limit) = options.max_connections {
            args.push(format!("--max-connections={limit}"));
        }
        args.extend(options.args);
        let mut config = Config {
            mariadbd,
            run_as,
            dir: dir.path().to_path_buf(),
            log: dir.path().join("server.log"),
            data,
            port: free_port().map_err(|e| io_error("finding a free port".into(), e, ""))?,
            args,
        };
        let mut state = State::default();
        if let Err(first) = config.start(&mut state) {
            // Someone may have taken the free port between our probe and the server's bind.
            if !log_tail(&config.log).contains("Address already in use") {
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
    /// Spawns `mariadbd` and waits until it greets a TCP client.
    fn start(&self, state: &mut State) -> Result<(), ServerError> {
        let started = Instant::now();
        let mut command = self.run_as.command(&self.mariadbd);
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.data.display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", self.dir.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", self.dir.join("mysqld.pid").display()))
            .arg(format!("--tmpdir={}", self.dir.display()))
            .args(["--bind-address=127.0.0.1", "--skip-networking=0"])
            .args(["--skip-name-resolve", "--innodb-flush-log-at-trx-commit=2"])
            .args([
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
            ])
            .args(&self.args)
            .current_dir(&self.dir);
        let mut child = spawn_logged("starting MariaDB", &mut command, &self.log)?;
        let deadline = started + SERVER_WAIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(ServerError::Failed {
                    step: format!("starting MariaDB on port {}", self.port),
                    detail: format!("mariadbd exited with {status}"),
                    log_tail: log_tail(&self.log),
                });
            }
            if greets(self.port) {
                break;
            }
            if Instant::now() >= deadline {
                kill_tree(&mut child);
                return Err(ServerError::Timeout {
                    step: format!("starting MariaDB on port {}", self.port),
                    waited: SERVER_WAIT,
                    log_tail: log_tail(&self.log),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        state.server = Some(child);
        state.last_start = started.elapsed();
        Ok(())
    }

    /// SIGTERM (a clean InnoDB shutdown); SIGKILL after [`SERVER_WAIT`].
    fn stop(&self, state: &mut State) -> Result<(), ServerError> {
        let Some(mut child) = state.server.take() else {
            return Ok(());
        };
        let _ = signal(child.id(), Signal::TERM);
        if wait_exit(&mut child, SERVER_WAIT).is_none() {
            kill_tree(&mut child);
            return Err(ServerError::Timeout {
                step: "stopping MariaDB".into(),
                waited: SERVER_WAIT,
                log_tail: log_tail(&self.log),
            });
        }
        Ok(())
    }
}

/// True once the server sends its handshake. MariaDB listens only after InnoDB recovery and
/// sends the greeting (or an error packet) first, so any bytes mean "up".
fn greets(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut header = [0_u8; 4];
    stream.read_exact(&mut header).is_ok()
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        // SIGKILL: the data is about to be deleted, so a clean shutdown buys nothing.
        if let Some(mut child) = self.lock().server.take() {
            kill_tree(&mut child);
        }
    }
}

fn mariadbd() -> Result<PathBuf, ServerError> {
    if let Ok(path) = std::env::var(MARIADBD_ENV) {
        return Ok(PathBuf::from(path));
    }
    find_program(&["mariadbd", "mysqld"], &["/usr/sbin", "/usr/libexec"]).ok_or_else(|| {
        ServerError::NotInstalled(format!(
            "no mariadbd in /usr/sbin, /usr/libexec or on PATH; install mariadb-server or set \
             {MARIADBD_ENV}"
        ))
    })
}

fn install_db() -> Result<PathBuf, ServerError> {
    find_program(&["mariadb-install-db", "mysql_install_db"], &["/usr/bin"])
        .ok_or_else(|| ServerError::NotInstalled("no mariadb-install-db in /usr/bin or on PATH".into()))
}

fn find_program(names: &[&str], extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = extra_dirs
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .collect();
    names
        .iter()
        .flat_map(|name| dirs.iter().map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}
