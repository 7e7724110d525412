//! The fault proxy against an in-process upstream that echoes and records what it received,
//! so every fault can be checked from both ends without a database.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stockguard_testkit::{CutMode, CutPlan, FaultProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bound for anything that should happen promptly on loopback.
const PROMPT: Duration = Duration::from_secs(5);

/// An echo server that also keeps every byte it received, per connection.
struct Upstream {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: JoinHandle<()>,
}

impl Upstream {
    async fn start() -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let log = Arc::clone(&log);
                let slot = {
                    let mut log = log.lock().unwrap();
                    log.push(Vec::new());
                    log.len() - 1
                };
                connections.spawn(async move {
                    let mut buf = [0_u8; 4096];
                    while let Ok(n @ 1..) = socket.read(&mut buf).await {
                        log.lock().unwrap()[slot].extend_from_slice(&buf[..n]);
                        if socket.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { addr, received, task }
    }

    fn received(&self, connection: usize) -> Vec<u8> {
        self.received.lock().unwrap()[connection].clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxied() -> (Upstream, FaultProxy) {
    let upstream = Upstream::start().await;
    let proxy = FaultProxy::start(upstream.addr.to_string()).await.unwrap();
    (upstream, proxy)
}

/// Sends `message` and reads back exactly its length.
async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(message).await?;
    let mut echo = vec![0_u8; message.len()];
    tokio::time::timeout(PROMPT, stream.read_exact(&mut echo))
        .await
        .map_err(|_| std::io::Error::new(ErrorKind::TimedOut, "no echo"))??;
    Ok(echo)
}

/// What the client sees next: `Ok(0)` for EOF, an error for a reset.
async fn next_read(stream: &mut TcpStream) -> std::io::Result<usize> {
    let mut buf = [0_u8; 64];
    tokio::time::timeout(PROMPT, stream.read(&mut buf))
        .await
        .expect("the client should see the connection end promptly")
}

#[tokio::test]
async fn passes_bytes_through_and_tracks_connections() {
    let (upstream, proxy) = proxied().await;
    let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut a, b"hello").await.unwrap(), b"hello");
    assert_eq!(round_trip(&mut b, b"world").await.unwrap(), b"world");
    assert_eq!(proxy.open_connections(), 2);
    assert_eq!(proxy.connections_accepted(), 2);
    drop(a);
    let deadline = Instant::now() + PROMPT;
    while proxy.open_connections() > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.open_connections(), 1, "a closed client ends its connection");
    assert_eq!(upstream.received(0), b"hello");
}

#[tokio::test]
async fn before_send_cut_drops_the_chunk_even_when_the_pattern_straddles_two_reads() {
    let (upstream, proxy) = proxied().await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    let cut = proxy.arm_cut_after(b"COMMIT", CutMode::BeforeSend);
    // Each half is echoed back before the next is sent, so the proxy reads them separately.
    assert_eq!(round_trip(&mut client, b"xx COM").await.unwrap(), b"xx COM");
    client.write_all(b"MIT yy").await.unwrap();
    let report = cut.fired_within(PROMPT).await.unwrap().expect("the cut fires");
    assert_eq!(report.mode, CutMode::BeforeSend);
    assert_eq!(report.chunk_len, 6);
    assert!(matches!(next_read(&mut client).await, Ok(0) | Err(_)));
    assert_eq!(
        upstream.received(0),
        b"xx COM",
        "the cut chunk never reached the server"
    );
    assert_eq!(proxy.cuts_fired(), 1);
}

#[tokio::test]
async fn after_reply_cut_delivers_the_chunk_but_drops_the_reply() {
    let (upstream, proxy) = proxied().await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut client, b"BEGIN").await.unwrap(), b"BEGIN");
    let cut = proxy.arm_cut_after(b"COMMIT", CutMode::AfterReply);
    client.write_all(b"COMMIT;").await.unwrap();
    let report = cut.fired_within(PROMPT).await.unwrap().expect("the cut fires");
    assert_eq!(report.reply_bytes_dropped, 7, "the whole echo was the reply");
    let seen = next_read(&mut client).await;
    assert!(
        matches!(seen, Ok(0))
            || seen
                .as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
        "the client sees a dead connection, not the reply: {seen:?}"
    );
    assert_eq!(upstream.received(0), b"BEGINCOMMIT;");
    // One-shot: a new connection with the same pattern passes.
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut again, b"COMMIT").await.unwrap(), b"COMMIT");
    assert_eq!(proxy.cuts_fired(), 1);
}

#[tokio::test]
async fn a_cut_can_wait_for_a_later_chunk_of_the_matching_connection() {
    let (upstream, proxy) = proxied().await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    let cut = proxy.arm_cut(CutPlan::new(b"INSERT", CutMode::AfterReply).nth_chunk_after(1));
    // The matching chunk (a statement's prepare) passes with its answer...
    assert_eq!(
        round_trip(&mut client, b"PREPARE INSERT").await.unwrap(),
        b"PREPARE INSERT"
    );
    // ...and the next one (its execution) is the one cut.
    client.write_all(b"EXECUTE").await.unwrap();
    let report = cut.fired_within(PROMPT).await.unwrap().expect("the cut fires");
    assert_eq!(report.chunk_len, 7);
    assert!(matches!(next_read(&mut client).await, Ok(0) | Err(_)));
    assert_eq!(upstream.received(0), b"PREPARE INSERTEXECUTE");
}

#[tokio::test]
async fn a_disarmed_or_replaced_cut_reports_that_it_never_fired() {
    let (_upstream, proxy) = proxied().await;
    let first = proxy.arm_cut_after(b"A", CutMode::BeforeSend);
    let second = proxy.arm_cut_after(b"B", CutMode::BeforeSend);
    assert!(first.fired().await.is_err(), "replaced");
    assert!(proxy.disarm());
    assert!(second.fired().await.is_err(), "disarmed");
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut client, b"AB").await.unwrap(), b"AB");
}

#[tokio::test]
async fn reset_all_resets_open_connections_only() {
    let (_upstream, proxy) = proxied().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        round_trip(&mut client, b"ping").await.unwrap();
        clients.push(client);
    }
    assert_eq!(proxy.reset_all().await, 3);
    assert_eq!(proxy.open_connections(), 0);
    for client in &mut clients {
        let seen = next_read(client).await;
        assert!(
            seen.as_ref()
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionReset),
            "an RST, not a clean close: {seen:?}"
        );
    }
    let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut fresh, b"still up").await.unwrap(), b"still up");
}

#[tokio::test]
async fn blackhole_holds_bytes_until_lifted_and_keeps_the_socket_open() {
    let (_upstream, proxy) = proxied().await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut client, b"warm").await.unwrap();
    proxy.blackhole(true);
    client.write_all(b"lost?").await.unwrap();
    let mut echo = [0_u8; 5];
    let silent = tokio::time::timeout(Duration::from_millis(300), client.read_exact(&mut echo)).await;
    assert!(silent.is_err(), "nothing comes back through a blackhole");
    assert_eq!(proxy.open_connections(), 1);
    proxy.blackhole(false);
    tokio::time::timeout(PROMPT, client.read_exact(&mut echo))
        .await
        .expect("bytes flow again once the blackhole is lifted")
        .unwrap();
    assert_eq!(&echo, b"lost?");
}

#[tokio::test]
async fn delay_applies_to_each_direction() {
    let (_upstream, proxy) = proxied().await;
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut client, b"warm").await.unwrap();
    proxy.delay(Duration::from_millis(150));
    let started = Instant::now();
    round_trip(&mut client, b"slow").await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "up and down are both delayed: {took:?}"
    );
    proxy.delay(Duration::ZERO);
    let started = Instant::now();
    round_trip(&mut client, b"fast").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "the delay is gone"
    );
}

#[tokio::test]
async fn refuse_new_resets_new_connections_and_spares_open_ones() {
    let (_upstream, proxy) = proxied().await;
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    round_trip(&mut open, b"before").await.unwrap();
    proxy.refuse_new(true);
    let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(matches!(next_read(&mut refused).await, Ok(0) | Err(_)));
    assert_eq!(proxy.connections_refused(), 1);
    assert_eq!(round_trip(&mut open, b"during").await.unwrap(), b"during");
    proxy.refuse_new(false);
    let mut accepted = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(round_trip(&mut accepted, b"after").await.unwrap(), b"after");
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_port_and_connections() {
    let (_upstream, proxy) = proxied().await;
    let addr = proxy.addr();
    let mut client = TcpStream::connect(addr).await.unwrap();
    round_trip(&mut client, b"ping").await.unwrap();
    drop(proxy);
    assert!(matches!(next_read(&mut client).await, Ok(0) | Err(_)));
    // The listener goes with the aborted task; give the runtime a moment to drop it.
    let deadline = Instant::now() + PROMPT;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the proxy's port still accepts after drop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_unreachable_upstream_resets_the_client() {
    // A port that was free a moment ago: nothing listens there.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = free.local_addr().unwrap();
    drop(free);
    let proxy = FaultProxy::start(dead.to_string()).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(matches!(next_read(&mut client).await, Ok(0) | Err(_)));
}

#[tokio::test]
async fn proxied_urls_point_at_the_proxy() {
    let (_upstream, proxy) = proxied().await;
    assert_eq!(
        proxy.proxied_url("postgres://postgres@127.0.0.1:5432/db?x=1"),
        format!("postgres://postgres@{}/db?x=1", proxy.addr())
    );
}
