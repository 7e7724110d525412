//! Process, signal and directory plumbing shared by the private servers.

use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use super::{SERVER_WAIT, ServerError, log_tail};

/// Set to `1` to initialise every private server's data directory from scratch instead of
/// copying this machine's cached template (slower; rules out a damaged template).
pub const NO_TEMPLATE_ENV: &str = "STOCKGUARD_NO_SERVER_TEMPLATE";

/// The OS identity a server runs as: a dedicated system user when we are root (PostgreSQL
/// refuses root, and a server running as root could write anywhere), ourselves otherwise.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunAs {
    uid: u32,
    gid: u32,
    switch: bool,
}

impl RunAs {
    pub(crate) fn for_server(user: &str) -> Result<Self, ServerError> {
        if !rustix::process::geteuid().is_root() {
            return Ok(Self {
                uid: rustix::process::geteuid().as_raw(),
                gid: rustix::process::getegid().as_raw(),
                switch: false,
            });
        }
        // `id` goes through NSS, so users from LDAP or systemd-userdb resolve too.
        let id = |flag: &str| -> Result<u32, ServerError> {
            let out = Command::new("id")
                .args([flag, user])
                .output()
                .map_err(|source| io_error(format!("looking up OS user {user}"), source, ""))?;
            let text = String::from_utf8_lossy(&out.stdout);
            match text.trim().parse() {
                Ok(id) if out.status.success() => Ok(id),
                _ => Err(ServerError::NotInstalled(format!(
                    "running as root, the server must run as OS user `{user}`, which does not \
                     exist ({})",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))),
            }
        };
        Ok(Self {
            uid: id("-u")?,
            gid: id("-g")?,
            switch: true,
        })
    }

    /// A command that runs `program` as this identity, with no stdin.
    pub(crate) fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        if self.switch {
            // std calls setgroups(0) before setuid when root, so root's groups are dropped too;
            // runuser would do the same, but would leave itself between us and the server's pid.
            command.uid(self.uid).gid(self.gid);
        }
        command.stdin(Stdio::null());
        command
    }

    /// Hands a directory we created to the server's user.
    pub(crate) fn own(&self, path: &Path) -> Result<(), ServerError> {
        if self.switch {
            std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).map_err(|source| {
                io_error(
                    format!("chown {} to uid {}", path.display(), self.uid),
                    source,
                    "",
                )
            })?;
        }
        Ok(())
    }

    fn cache_key_part(&self) -> u32 {
        self.uid
    }
}

pub(crate) fn io_error(step: String, source: std::io::Error, log_tail: &str) -> ServerError {
    ServerError::Io {
        step,
        source,
        log_tail: log_tail.to_owned(),
    }
}

/// The file in a private directory naming the test process that owns it: its pid, then its
/// pid namespace (a pid means nothing outside its namespace, and /tmp may be shared).
const OWNER_FILE: &str = "owner.pid";

fn owner_record() -> String {
    let namespace = std::fs::read_link("/proc/self/ns/pid").unwrap_or_default();
    format!("{}\n{}\n", std::process::id(), namespace.display())
}

/// A fresh 0700 temp directory owned by the server's user, removed when dropped. It names
/// this process as its owner, so [`sweep_orphans`] can tell when nobody will drop it.
pub(crate) fn private_dir(prefix: &str, run_as: RunAs) -> Result<tempfile::TempDir, ServerError> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|source| io_error(format!("creating a temp dir {prefix}*"), source, ""))?;
    let owner = dir.path().join(OWNER_FILE);
    std::fs::write(&owner, owner_record())
        .map_err(|source| io_error(format!("writing {}", owner.display()), source, ""))?;
    run_as.own(dir.path())?;
    Ok(dir)
}

/// Stops the servers and deletes the directories of test processes that died without
/// dropping their servers (SIGKILL, abort, a CI job's timeout), which would otherwise run
/// and fill /tmp until the machine is rebooted.
///
/// Only directories whose owner is gone from our pid namespace are touched, and only a
/// process whose command line names the directory is signalled, so a reused pid is safe.
/// `polite` is tried first (it lets PostgreSQL remove its shared memory); SIGKILL follows.
pub(crate) fn sweep_orphans(prefix: &str, server_pid_file: &str, polite: Signal) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let ours = owner_record();
    let our_namespace = ours.lines().nth(1).unwrap_or_default();
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(prefix))
        {
            continue;
        }
        let dir = entry.path();
        let owner = std::fs::read_to_string(dir.join(OWNER_FILE)).unwrap_or_default();
        let mut lines = owner.lines();
        let (Some(pid), Some(namespace)) = (lines.next(), lines.next()) else {
            continue;
        };
        let owner_alive = pid.parse().map_or(true, alive);
        if owner_alive || namespace != our_namespace {
            continue;
        }
        let server = std::fs::read_to_string(dir.join(server_pid_file)).unwrap_or_default();
        if let Some(server) = server.lines().next().and_then(|l| l.trim().parse().ok()) {
            let cmdline = std::fs::read(format!("/proc/{server}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy()) {
                stop_orphan(server, polite);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn alive(pid: u32) -> bool {
    proc_state(pid).is_some_and(|(state, _)| state != 'Z')
}

fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Stops a server that is not our child (we cannot reap it), politely first.
fn stop_orphan(pid: u32, polite: Signal) {
    let _ = signal(pid, polite);
    if wait_gone(pid, Duration::from_secs(10)) {
        return;
    }
    let _ = signal(pid, Signal::STOP);
    let children = children_of(pid);
    let _ = signal(pid, Signal::KILL);
    for child in children {
        let _ = signal(child, Signal::KILL);
    }
    wait_gone(pid, Duration::from_secs(10));
}

/// Opens (appending) the log a server or tool writes its stdout and stderr to. We open it,
/// not the server, so the file's permissions never stand in the way.
fn open_log(log: &Path) -> Result<(File, File), ServerError> {
    let open = || {
        let file = OpenOptions::new().create(true).append(true).open(log)?;
        let second = file.try_clone()?;
        Ok::<_, std::io::Error>((file, second))
    };
    open().map_err(|source| io_error(format!("opening log {}", log.display()), source, ""))
}

/// Spawns `command` with stdout and stderr appended to `log`.
pub(crate) fn spawn_logged(step: &str, command: &mut Command, log: &Path) -> Result<Child, ServerError> {
    let (out, err) = open_log(log)?;
    command
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|source| {
            io_error(
                format!("{step}: starting {:?}", command.get_program()),
                source,
                &log_tail(log),
            )
        })
}

/// Runs a setup tool to completion within [`SERVER_WAIT`], its output going to `log`.
pub(crate) fn run_tool(step: &str, command: &mut Command, log: &Path) -> Result<(), ServerError> {
    let mut child = spawn_logged(step, command, log)?;
    match wait_exit(&mut child, SERVER_WAIT) {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(ServerError::Failed {
            step: step.to_owned(),
            detail: format!("{:?} exited with {status}", command.get_program()),
            log_tail: log_tail(log),
        }),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(ServerError::Timeout {
                step: step.to_owned(),
                waited: SERVER_WAIT,
                log_tail: log_tail(log),
            })
        }
    }
}

/// Waits up to `timeout` for `child` to exit; `None` if it is still running.
pub(crate) fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            // An error here means the child was already reaped; nothing left to wait for.
            Err(_) => return Some(ExitStatus::default()),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

pub(crate) fn signal(pid: u32, signal: Signal) -> std::io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| std::io::Error::other(format!("not a process id: {pid}")))?;
    kill_process(pid, signal).map_err(std::io::Error::from)
}

/// `(state, parent pid)` of a process from `/proc/<pid>/stat`, `None` once it is gone.
fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_state(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// SIGKILLs `child` and every process it forked, like a crash of the whole machine would.
///
/// Killing only a PostgreSQL postmaster leaves its backends serving their clients for a
/// while, and a restart refuses to start while they still hold the old shared memory. The
/// postmaster is stopped first so it cannot fork a child we would miss.
pub(crate) fn kill_tree(child: &mut Child) {
    let pid = child.id();
    let _ = signal(pid, Signal::STOP);
    let children = children_of(pid);
    let _ = signal(pid, Signal::KILL);
    for &orphan in &children {
        let _ = signal(orphan, Signal::KILL);
    }
    // Reaping our own child at once matters: this container's init reaps orphans late, and a
    // zombie still "owns" its pid, which PostgreSQL's lock file check would take as alive.
    let _ = child.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    // The orphans are init's to reap; gone or a zombie means they hold no memory or sockets.
    while children
        .iter()
        .any(|&orphan| proc_state(orphan).is_some_and(|(state, _)| state != 'Z'))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Puts a ready-made data directory at `dest` (which must not exist yet): a copy of this
/// machine's template for `key`, built once by `build` into a fresh directory. Initialising
/// takes seconds (MariaDB: about 4 s), a copy a fraction of that.
///
/// The template lives under the system temp dir, one per server version, user and setup
/// arguments, and is published by an atomic rename, so concurrent test processes either use
/// a complete one or build their own and lose the race harmlessly.
pub(crate) fn from_template(
    kind: &str,
    key: &[&str],
    dest: &Path,
    run_as: RunAs,
    build: impl FnOnce(&Path, &Path) -> Result<(), ServerError>,
) -> Result<(), ServerError> {
    if std::env::var(NO_TEMPLATE_ENV).is_ok_and(|v| v == "1") {
        let log = dest.with_extension("init.log");
        return build(dest, &log);
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (key, run_as.cache_key_part()).hash(&mut hasher);
    let root = std::env::temp_dir().join("stockguard-server-templates");
    let template = root.join(format!("{kind}-{:016x}", hasher.finish()));
    if !template.join("data").is_dir() {
        build_template(&root, &template, run_as, build)?;
    }
    let copied = Command::new("cp")
        .arg("-a")
        .arg(template.join("data"))
        .arg(dest)
        .output()
        .map_err(|source| io_error("copying the data dir template".into(), source, ""))?;
    if !copied.status.success() {
        return Err(ServerError::Failed {
            step: format!("copying {} to {}", template.display(), dest.display()),
            detail: String::from_utf8_lossy(&copied.stderr).into_owned(),
            log_tail: String::new(),
        });
    }
    Ok(())
}

fn build_template(
    root: &Path,
    template: &Path,
    run_as: RunAs,
    build: impl FnOnce(&Path, &Path) -> Result<(), ServerError>,
) -> Result<(), ServerError> {
    std::fs::create_dir_all(root)
        .map_err(|source| io_error(format!("creating {}", root.display()), source, ""))?;
    let building = tempfile::Builder::new()
        .prefix(".building-")
        .tempdir_in(root)
        .map_err(|source| io_error(format!("creating a dir in {}", root.display()), source, ""))?;
    run_as.own(building.path())?;
    build(&building.path().join("data"), &building.path().join("init.log"))?;
    let built: PathBuf = building.keep();
    if std::fs::rename(&built, template).is_err() {
        // Another process published the same template first; theirs is as good as ours.
        let _ = std::fs::remove_dir_all(&built);
        if !template.join("data").is_dir() {
            return Err(ServerError::Failed {
                step: format!("publishing template {}", template.display()),
                detail: "rename failed and no template exists".into(),
                log_tail: String::new(),
            });
        }
    }
    Ok(())
}
