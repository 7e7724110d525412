//! A `stockguard serve` process (the binary, with its stderr piped as a log collector would)
//! on an embedded SQLite file and a free port.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

/// Longest wait for the server to say where it listens.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The running process, the lines it has written so far, and its database.
pub struct Served {
    child: Child,
    base: String,
    lines: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
    _db: stockguard_testkit::TestSqliteFile,
}

/// `stockguard` with none of the developer's settings: no `STOCKGUARD_*`, `DATABASE_URL`,
/// `RUST_LOG`, `NO_COLOR` or `OTEL_*` leaks into a test.
pub fn stockguard_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stockguard"));
    for (key, _) in std::env::vars() {
        if key.starts_with("STOCKGUARD_")
            || key.starts_with("OTEL_")
            || key == "DATABASE_URL"
            || key == "RUST_LOG"
            || key == "NO_COLOR"
        {
            command.env_remove(key);
        }
    }
    command
}

impl Served {
    /// `stockguard serve` with default settings (and JSON log lines if asked).
    pub fn start(json_logs: bool) -> Self {
        Self::start_with(if json_logs { &["--json-logs"] } else { &[] }, &[])
    }

    /// `stockguard serve` with more flags and environment variables.
    pub fn start_with(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let db = stockguard_testkit::TestSqliteFile::new();
        let mut command = stockguard_command();
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--database-url"])
            .arg(db.path())
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let reader = std::thread::spawn({
            let lines = Arc::clone(&lines);
            move || {
                for line in BufReader::new(stderr).lines() {
                    let line = line.unwrap();
                    if let Some(addr) = listening_address(&line) {
                        let _ = addr_tx.send(addr);
                    }
                    lines.lock().unwrap().push(line);
                }
            }
        });
        let addr = addr_rx
            .recv_timeout(STARTUP_TIMEOUT)
            .unwrap_or_else(|_| panic!("no `serving` line:\n{}", lines.lock().unwrap().join("\n")));
        Self {
            child,
            base: format!("http://{addr}"),
            lines,
            reader,
            _db: db,
        }
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, then every line the process wrote.
    pub fn stop(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        self.reader.join().unwrap();
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        assert!(exit.success(), "clean exit on SIGTERM:\n{}", lines.join("\n"));
        lines
    }
}

/// The address in the start-up line, text (`addr=127.0.0.1:PORT`) or JSON (`"addr":"…"`).
fn listening_address(line: &str) -> Option<String> {
    if !line.contains("serving") {
        return None;
    }
    if let Ok(event) = serde_json::from_str::<Value>(line) {
        return event["addr"].as_str().map(str::to_owned);
    }
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    Some(rest.split_whitespace().next()?.to_owned())
}
