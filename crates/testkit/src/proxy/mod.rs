//! A fault-injecting TCP proxy between a store and its database.
//!
//! Connection-level faults are what turn a committed write into an ambiguous answer, and
//! they are hard to provoke on purpose with a real network. The proxy forwards bytes
//! unchanged until told otherwise; then it can delay them, stop them (blackhole), refuse
//! new connections, reset every connection, or cut one connection at an exact point of the
//! conversation: right before or right after a statement reaches the server.
//!
//! Everything runs as tasks of the caller's tokio runtime; dropping the proxy aborts them
//! and closes every socket.

mod conn;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

/// Longest cut pattern; the per-connection window that catches a pattern split across two
/// reads holds one byte less than this.
pub const MAX_PATTERN_LEN: usize = 1024;

/// How long [`FaultProxy::reset_all`] waits for the connections it reset to be gone.
const RESET_WAIT: Duration = Duration::from_secs(5);

/// Where a cut happens relative to the client→server chunk that triggered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// Forward the chunk, wait for the server's first reply bytes, drop them and close both
    /// sides: the server has processed the statement (a COMMIT committed), but the client
    /// only sees its connection die. This is the ambiguous case.
    AfterReply,
    /// Close both sides without forwarding the chunk: nothing of it reached the server.
    BeforeSend,
}

/// A one-shot cut: which chunk triggers it and what happens then.
#[derive(Debug, Clone)]
pub struct CutPlan {
    pattern: Vec<u8>,
    mode: CutMode,
    nth_chunk_after: usize,
}

impl CutPlan {
    /// Cuts at the next client→server chunk containing `pattern` (e.g. `b"COMMIT"`).
    ///
    /// # Panics
    /// If `pattern` is empty or longer than [`MAX_PATTERN_LEN`].
    pub fn new(pattern: impl Into<Vec<u8>>, mode: CutMode) -> Self {
        let pattern = pattern.into();
        assert!(
            !pattern.is_empty() && pattern.len() <= MAX_PATTERN_LEN,
            "a cut pattern has 1..={MAX_PATTERN_LEN} bytes"
        );
        Self {
            pattern,
            mode,
            nth_chunk_after: 0,
        }
    }

    /// Cuts at the `n`-th client chunk after the one that matched, on the same connection,
    /// instead of at the matching chunk itself (`n = 0`, the default).
    ///
    /// For a prepared statement the SQL text travels alone: sqlx sends PostgreSQL's
    /// Parse/Describe/Sync and MySQL's COM_STMT_PREPARE, waits for the answer, and only then
    /// sends the execution (Bind/Execute/Sync, COM_STMT_EXECUTE) in a chunk that does not
    /// contain the text. `nth_chunk_after(1)` cuts at that execution. The text is sent only
    /// the first time a connection prepares the statement, so use a fresh connection or
    /// `.persistent(false)`. A chunk is one read of at most 64 KiB; clients that flush each
    /// round trip at once, like sqlx, send one chunk per round trip.
    pub fn nth_chunk_after(mut self, n: usize) -> Self {
        self.nth_chunk_after = n;
        self
    }
}

/// What happened when a cut fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutReport {
    /// The proxy's number for the connection that was cut (1 for the first accepted).
    pub connection: u64,
    /// The plan's mode.
    pub mode: CutMode,
    /// Bytes in the chunk the cut applied to (forwarded for `AfterReply`, dropped for
    /// `BeforeSend`).
    pub chunk_len: usize,
    /// Server bytes dropped instead of forwarded (`AfterReply` only; 0 if the server closed
    /// the connection without answering).
    pub reply_bytes_dropped: usize,
}

/// The cut did not fire: it was disarmed or replaced, or the connection it had matched
/// closed before the chunk it waited for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the armed cut was disarmed, replaced, or its connection closed before it fired")]
pub struct CutCancelled;

/// Waits for an armed cut. Dropping it does not disarm the cut.
#[derive(Debug)]
pub struct CutHandle {
    fired: oneshot::Receiver<CutReport>,
}

impl CutHandle {
    /// Resolves once the cut has fired and both sides of the connection are closed.
    pub async fn fired(self) -> Result<CutReport, CutCancelled> {
        self.fired.await.map_err(|_| CutCancelled)
    }

    /// [`CutHandle::fired`] with a bound, for tests that must not hang: `Ok(None)` on timeout.
    pub async fn fired_within(self, limit: Duration) -> Result<Option<CutReport>, CutCancelled> {
        match tokio::time::timeout(limit, self.fired()).await {
            Ok(fired) => fired.map(Some),
            Err(_) => Ok(None),
        }
    }
}

/// A cut waiting for its pattern, owned by whichever connection matches first.
#[derive(Debug)]
pub(crate) struct PendingCut {
    pub(crate) plan: CutPlan,
    pub(crate) fired: oneshot::Sender<CutReport>,
}

/// State the proxy's owner and its connection tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) upstream: String,
    pub(crate) refuse_new: watch::Sender<bool>,
    pub(crate) blackhole: watch::Sender<bool>,
    pub(crate) delay: watch::Sender<Duration>,
    /// Bumped by `reset_all`; a connection resets when it changes after the connection began.
    pub(crate) reset_epoch: watch::Sender<u64>,
    /// Ids of the connections being served, so `reset_all` can wait for them to be gone.
    pub(crate) live: watch::Sender<BTreeSet<u64>>,
    pub(crate) armed: Mutex<Option<PendingCut>>,
    pub(crate) cuts_fired: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) refused: AtomicU64,
}

impl Shared {
    pub(crate) fn take_armed_if(&self, matches: impl FnOnce(&CutPlan) -> bool) -> Option<PendingCut> {
        let mut armed = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
        match armed.as_ref() {
            Some(pending) if matches(&pending.plan) => armed.take(),
            _ => None,
        }
    }
}

/// A TCP proxy on a free loopback port in front of one upstream `host:port`.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    // Owns the connection tasks (in a JoinSet), so aborting it on drop ends them all.
    accept_task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream` (`host:port`),
    /// resolved on each connect. Must be called inside a tokio runtime.
    pub async fn start(upstream: impl Into<String>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: upstream.into(),
            refuse_new: watch::Sender::new(false),
            blackhole: watch::Sender::new(false),
            delay: watch::Sender::new(Duration::ZERO),
            reset_epoch: watch::Sender::new(0),
            live: watch::Sender::new(BTreeSet::new()),
            armed: Mutex::new(None),
            cuts_fired: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        });
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Self {
            addr,
            shared,
            accept_task,
        })
    }

    /// A proxy in front of the server a database URL points at (`scheme://[user@]host[:port]/…`;
    /// the port defaults to 5432 for `postgres`, 3306 for `mysql`/`mariadb`).
    pub async fn in_front_of(url: &str) -> std::io::Result<Self> {
        let (_, host_port, _) =
            split_url(url).ok_or_else(|| std::io::Error::other(format!("not a database URL: {url}")))?;
        Self::start(host_port).await
    }

    /// `url` with its host and port replaced by the proxy's, so a client connects through it.
    pub fn proxied_url(&self, url: &str) -> String {
        match split_url(url) {
            Some((head, _, tail)) => format!("{head}{}{tail}", self.addr),
            None => url.to_owned(),
        }
    }

    /// The proxy's listening address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Resets every open connection at both ends (RST, via a zero linger) and waits, up to
    /// 5 s, until they are gone; bytes read but not yet forwarded are dropped. Connections
    /// accepted afterwards are not affected. Returns how many connections were reset.
    pub async fn reset_all(&self) -> usize {
        let targets = self.shared.live.borrow().clone();
        self.shared.reset_epoch.send_modify(|epoch| *epoch += 1);
        let mut live = self.shared.live.subscribe();
        let _ = tokio::time::timeout(
            RESET_WAIT,
            live.wait_for(|now| targets.iter().all(|id| !now.contains(id))),
        )
        .await;
        targets.len()
    }

    /// While on, nothing is forwarded in either direction, but every socket stays open:
    /// clients and servers see silence, as behind a dead link. Bytes wait in the kernel's
    /// buffers and flow once it is off, like TCP after a partition heals; reset the
    /// connections instead to lose them.
    pub fn blackhole(&self, on: bool) {
        self.shared.blackhole.send_replace(on);
    }

    /// Delays every forwarded chunk, in both directions, by `delay` (zero: no delay).
    pub fn delay(&self, delay: Duration) {
        self.shared.delay.send_replace(delay);
    }

    /// While on, new connections are accepted and reset at once, so a client's connect
    /// fails like one refused by a server (open connections carry on).
    pub fn refuse_new(&self, on: bool) {
        self.shared.refuse_new.send_replace(on);
    }

    /// Arms a one-shot cut at the next client→server chunk containing `pattern`, on any
    /// connection (open or future); see [`CutMode`]. The pattern may straddle two reads.
    /// Replaces a cut that is armed but has not matched yet.
    pub fn arm_cut_after(&self, pattern: &[u8], mode: CutMode) -> CutHandle {
        self.arm_cut(CutPlan::new(pattern, mode))
    }

    /// Arms a one-shot cut described by `plan`; see [`FaultProxy::arm_cut_after`].
    pub fn arm_cut(&self, plan: CutPlan) -> CutHandle {
        let (fired, handle) = oneshot::channel();
        let mut armed = self.shared.armed.lock().unwrap_or_else(PoisonError::into_inner);
        *armed = Some(PendingCut { plan, fired });
        CutHandle { fired: handle }
    }

    /// Disarms a cut that has not matched yet; true if there was one.
    pub fn disarm(&self) -> bool {
        let mut armed = self.shared.armed.lock().unwrap_or_else(PoisonError::into_inner);
        armed.take().is_some()
    }

    /// How many cuts have fired since the proxy started.
    pub fn cuts_fired(&self) -> u64 {
        self.shared.cuts_fired.load(Ordering::SeqCst)
    }

    /// Connections accepted since the proxy started, refused ones included.
    pub fn connections_accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections reset at once because [`FaultProxy::refuse_new`] was on.
    pub fn connections_refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections being served right now.
    pub fn open_connections(&self) -> usize {
        self.shared.live.borrow().len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                // Accept errors (e.g. EMFILE) are transient; back off instead of spinning.
                let Ok((client, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let id = shared.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                if *shared.refuse_new.borrow() {
                    shared.refused.fetch_add(1, Ordering::SeqCst);
                    reset(&client);
                    continue;
                }
                connections.spawn(conn::serve(id, client, Arc::clone(&shared)));
            }
            // Reaps finished connection tasks so the set stays as small as the open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Makes the coming close of `stream` an RST instead of a FIN.
pub(crate) fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Splits `scheme://[userinfo@]host[:port]/rest` into (`scheme://[userinfo@]`, `host:port`,
/// `/rest`), filling in the scheme's default port.
fn split_url(url: &str) -> Option<(&str, String, &str)> {
    let scheme_end = url.find("://")? + 3;
    let authority_end = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    let host_start = authority.rfind('@').map_or(scheme_end, |i| scheme_end + i + 1);
    let host_port = &url[host_start..authority_end];
    let has_port = host_port
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok() && !host_port.ends_with(']'));
    let host_port = if has_port {
        host_port.to_owned()
    } else {
        let port = match &url[..scheme_end - 3] {
            "postgres" | "postgresql" => 5432,
            "mysql" | "mariadb" => 3306,
            _ => return None,
        };
        format!("{host_port}:{port}")
    };
    Some((&url[..host_start], host_port, &url[authority_end..]))
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls_split_into_prefix_authority_and_rest() {
        assert_eq!(
            split_url("postgres://postgres@127.0.0.1:5432/db?sslmode=disable"),
            Some((
                "postgres://postgres@",
                "127.0.0.1:5432".to_owned(),
                "/db?sslmode=disable"
            ))
        );
        assert_eq!(
            split_url("mysql://root:pw@localhost/mysql"),
            Some(("mysql://root:pw@", "localhost:3306".to_owned(), "/mysql"))
        );
        assert_eq!(split_url("no-scheme"), None);
    }
}
