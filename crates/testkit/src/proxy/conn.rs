//! One proxied connection: a pump per direction, the cut state machine, and resets.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{CutMode, CutReport, MAX_PATTERN_LEN, PendingCut, Shared, reset};

/// Bound on connecting to the upstream; a client behind the proxy would wait this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One read; also the most a "chunk" (the unit a cut counts and matches in) can hold.
const CHUNK_LEN: usize = 64 * 1024;

/// How a connection ended.
enum End {
    /// Both sides closed in order; the closes were forwarded as they came.
    Closed,
    /// An error on either side, or `reset_all`: both sides get an RST.
    Abort,
    /// A cut fired: both sides get an RST, then the cut's owner hears of it.
    Cut(PendingCut, CutReport),
}

/// What one pump returns.
enum Flow {
    /// Its reader hit EOF and the close was passed on; the other direction may go on.
    Eof,
    /// The whole connection is over.
    End(End),
}

/// Where this connection is in an armed cut's life.
enum CutState {
    /// No cut has matched this connection.
    Idle,
    /// The pattern matched; the cut applies `remaining` client chunks later.
    Counting { cut: PendingCut, remaining: usize },
    /// `AfterReply`: the cut chunk is on its way (`written` once it is with the server);
    /// the server's next bytes are dropped and end the connection.
    AwaitingReply {
        cut: PendingCut,
        chunk_len: usize,
        written: bool,
    },
}

/// What to do with one client chunk.
enum Action {
    Forward,
    ForwardThenAwaitReply,
    Cut(PendingCut, CutReport),
}

/// The connection state both pumps see. A mutex, not a `Cell`: the pumps are futures of
/// one `Send` task, so what they share must be `Sync`, though they never contend.
struct Link {
    id: u64,
    cut: Mutex<CutState>,
}

impl Link {
    fn state(&self) -> std::sync::MutexGuard<'_, CutState> {
        self.cut.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides a client chunk's fate, matching an armed pattern against `window` (the tail
    /// of earlier chunks) plus `chunk`, so a pattern split across two reads still matches.
    fn on_client_chunk(&self, window: &mut Vec<u8>, chunk: &[u8], shared: &Shared) -> Action {
        let mut state = self.state();
        match std::mem::replace(&mut *state, CutState::Idle) {
            CutState::Idle => {
                let matched = shared.take_armed_if(|plan| contains(window, chunk, &plan.pattern));
                window.extend_from_slice(chunk);
                let excess = window.len().saturating_sub(MAX_PATTERN_LEN - 1);
                window.drain(..excess);
                match matched {
                    Some(cut) if cut.plan.nth_chunk_after > 0 => {
                        let remaining = cut.plan.nth_chunk_after;
                        *state = CutState::Counting { cut, remaining };
                        Action::Forward
                    }
                    Some(cut) => self.apply(&mut state, cut, chunk.len()),
                    None => Action::Forward,
                }
            }
            CutState::Counting { cut, remaining } if remaining > 1 => {
                *state = CutState::Counting {
                    cut,
                    remaining: remaining - 1,
                };
                Action::Forward
            }
            CutState::Counting { cut, .. } => self.apply(&mut state, cut, chunk.len()),
            // The client pump stops reading once a reply is awaited, so no chunk comes here.
            awaiting @ CutState::AwaitingReply { .. } => {
                *state = awaiting;
                Action::Forward
            }
        }
    }

    fn apply(&self, state: &mut CutState, cut: PendingCut, chunk_len: usize) -> Action {
        match cut.plan.mode {
            CutMode::BeforeSend => {
                let report = self.report(&cut, chunk_len, 0);
                Action::Cut(cut, report)
            }
            CutMode::AfterReply => {
                *state = CutState::AwaitingReply {
                    cut,
                    chunk_len,
                    written: false,
                };
                Action::ForwardThenAwaitReply
            }
        }
    }

    fn report(&self, cut: &PendingCut, chunk_len: usize, reply_bytes_dropped: usize) -> CutReport {
        CutReport {
            connection: self.id,
            mode: cut.plan.mode,
            chunk_len,
            reply_bytes_dropped,
        }
    }

    fn mark_written(&self) {
        if let CutState::AwaitingReply { written, .. } = &mut *self.state() {
            *written = true;
        }
    }

    /// The awaited cut, if server bytes read now are the reply to the cut chunk. Bytes read
    /// before the chunk was fully written cannot answer it, so they are forwarded.
    fn take_reply_cut(&self, reply_len: usize) -> Option<(PendingCut, CutReport)> {
        let mut state = self.state();
        if !matches!(&*state, CutState::AwaitingReply { written: true, .. }) {
            return None;
        }
        match std::mem::replace(&mut *state, CutState::Idle) {
            CutState::AwaitingReply { cut, chunk_len, .. } => {
                let report = self.report(&cut, chunk_len, reply_len);
                Some((cut, report))
            }
            _ => None,
        }
    }
}

/// True if `pattern` occurs in `window ++ chunk` ending inside `chunk`: matches wholly
/// inside the window were seen (and not armed for) before.
fn contains(window: &[u8], chunk: &[u8], pattern: &[u8]) -> bool {
    let keep = window.len().min(pattern.len() - 1);
    let mut haystack = Vec::with_capacity(keep + chunk.len());
    haystack.extend_from_slice(&window[window.len() - keep..]);
    haystack.extend_from_slice(chunk);
    haystack.windows(pattern.len()).any(|w| w == pattern)
}

/// Registers a connection as live for `reset_all`, and unregisters it however its task ends.
struct Live<'a> {
    id: u64,
    shared: &'a Shared,
}

impl<'a> Live<'a> {
    fn enter(id: u64, shared: &'a Shared) -> Self {
        shared.live.send_modify(|live| {
            live.insert(id);
        });
        Self { id, shared }
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.shared.live.send_modify(|live| {
            live.remove(&self.id);
        });
    }
}

/// Serves one accepted client until either side closes, a reset, or a cut.
pub(crate) async fn serve(id: u64, client: TcpStream, shared: Arc<Shared>) {
    let _live = Live::enter(id, &shared);
    // Subscribing marks the current epoch as seen: only resets from now on concern us.
    let mut resets = shared.reset_epoch.subscribe();
    let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&shared.upstream));
    let server = tokio::select! {
        connected = connect => match connected {
            Ok(Ok(server)) => server,
            // The upstream is down: the client sees a reset, as if the server were.
            _ => return reset(&client),
        },
        _ = resets.changed() => return reset(&client),
    };
    // Database protocols are request/response; Nagle would add delays no real link has.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let link = Link {
        id,
        cut: Mutex::new(CutState::Idle),
    };
    let end = tokio::select! {
        end = relay(&mut client_read, &mut client_write, &mut server_read, &mut server_write, &link, &shared) => end,
        _ = resets.changed() => End::Abort,
    };
    if matches!(end, End::Closed) {
        return;
    }
    reset(client_read.as_ref());
    reset(server_read.as_ref());
    // Dropping a write half would send a FIN before the RST; `forget` leaves the close to
    // the read half, which then resets. Unforwarded bytes in our buffers die here.
    client_write.forget();
    server_write.forget();
    drop((client_read, server_read));
    if let End::Cut(cut, report) = end {
        shared.cuts_fired.fetch_add(1, Ordering::SeqCst);
        let _ = cut.fired.send(report);
    }
}

/// Runs both directions until the connection is over. Both pumps are futures of this one
/// task, so a cut seen by one ends the other at once, and a write blocked in one direction
/// never stalls the other.
async fn relay(
    client_read: &mut OwnedReadHalf,
    client_write: &mut OwnedWriteHalf,
    server_read: &mut OwnedReadHalf,
    server_write: &mut OwnedWriteHalf,
    link: &Link,
    shared: &Shared,
) -> End {
    let up = pump_up(client_read, server_write, link, shared);
    let down = pump_down(server_read, client_write, link, shared);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    loop {
        tokio::select! {
            flow = &mut up, if !up_done => match flow {
                Flow::Eof => up_done = true,
                Flow::End(end) => return end,
            },
            flow = &mut down, if !down_done => match flow {
                Flow::Eof => down_done = true,
                Flow::End(end) => return end,
            },
        }
        if up_done && down_done {
            return End::Closed;
        }
    }
}

/// Client → server, where cuts are armed.
async fn pump_up(from: &mut OwnedReadHalf, to: &mut OwnedWriteHalf, link: &Link, shared: &Shared) -> Flow {
    let mut buf = vec![0_u8; CHUNK_LEN];
    let mut window = Vec::with_capacity(MAX_PATTERN_LEN);
    loop {
        let n = match read(from, &mut buf, shared).await {
            Ok(0) => return close_write(to).await,
            Ok(n) => n,
            Err(_) => return Flow::End(End::Abort),
        };
        let chunk = &buf[..n];
        match link.on_client_chunk(&mut window, chunk, shared) {
            Action::Forward => {
                if forward(to, chunk, shared).await.is_err() {
                    return Flow::End(End::Abort);
                }
            }
            Action::Cut(cut, report) => return Flow::End(End::Cut(cut, report)),
            Action::ForwardThenAwaitReply => {
                if forward(to, chunk, shared).await.is_err() {
                    return Flow::End(End::Abort);
                }
                link.mark_written();
                // Read nothing more from the client: anything it sends now would reach the
                // server after the statement the cut is about, muddying what was applied.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Server → client, where an awaited reply fires an `AfterReply` cut.
async fn pump_down(from: &mut OwnedReadHalf, to: &mut OwnedWriteHalf, link: &Link, shared: &Shared) -> Flow {
    let mut buf = vec![0_u8; CHUNK_LEN];
    loop {
        let n = match read(from, &mut buf, shared).await {
            Ok(n) => n,
            Err(_) => return Flow::End(End::Abort),
        };
        if let Some((cut, report)) = link.take_reply_cut(n) {
            // The reply (or the server's close, n = 0) never reaches the client.
            return Flow::End(End::Cut(cut, report));
        }
        if n == 0 {
            return close_write(to).await;
        }
        if forward(to, &buf[..n], shared).await.is_err() {
            return Flow::End(End::Abort);
        }
    }
}

/// Reads once, first waiting out a blackhole so the bytes stay in the kernel meanwhile.
async fn read(from: &mut OwnedReadHalf, buf: &mut [u8], shared: &Shared) -> std::io::Result<usize> {
    hold_while_blackholed(shared).await;
    from.read(buf).await
}

/// Writes one chunk after the configured delay, and after any blackhole that began while
/// it was being read.
async fn forward(to: &mut OwnedWriteHalf, chunk: &[u8], shared: &Shared) -> std::io::Result<()> {
    let delay = *shared.delay.borrow();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    hold_while_blackholed(shared).await;
    to.write_all(chunk).await
}

async fn hold_while_blackholed(shared: &Shared) {
    let mut blackhole = shared.blackhole.subscribe();
    // The sender lives in `shared`, which outlives this task, so this cannot fail.
    let _ = blackhole.wait_for(|on| !on).await;
}

/// Passes an EOF on as a FIN, keeping the other direction open (a half-close).
async fn close_write(to: &mut OwnedWriteHalf) -> Flow {
    match to.shutdown().await {
        Ok(()) => Flow::Eof,
        Err(_) => Flow::End(End::Abort),
    }
}
