//! A lean HTTP/1.1 load generator for the `http` transport: hyper's client connection
//! (`hyper::client::conn::http1`) over keep-alive TCP, one connection per requester opened up
//! front and reused; no pool bookkeeping, no redirects, no retries, no proxy lookup, no TLS.
//! The requesters share the machine's 2 cores with the service and the database, so every
//! cycle the client does not spend is one the service can.
//!
//! The same client measures the machine's trivial-request ceiling (`GET /healthz`), so an
//! HTTP figure reads as a share of what this machine can serve at all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The client gives up later than the server, so a slow request is answered by the service
/// (a 503 the tally can classify) rather than cut off on the wire.
pub const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting to a loopback port is immediate; anything slower means the service is gone.
pub const CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Keep-alive connections to one service, handed to one request at a time.
pub struct LeanClient {
    address: SocketAddr,
    host: HeaderValue,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl std::fmt::Debug for LeanClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanClient")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl LeanClient {
    /// Opens `connections` keep-alive connections to `address` (one per requester).
    pub async fn connect(address: SocketAddr, connections: usize) -> anyhow::Result<Self> {
        let host = HeaderValue::from_str(&address.to_string()).context("the address is a valid Host")?;
        let client = Self {
            address,
            host,
            idle: Mutex::new(Vec::with_capacity(connections)),
        };
        for _ in 0..connections {
            let connection = client.open().await?;
            client.give_back(connection);
        }
        Ok(client)
    }

    async fn open(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        open_http1(self.address, CLIENT_CONNECT_TIMEOUT).await
    }

    fn give_back(&self, connection: SendRequest<Full<Bytes>>) {
        if !connection.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(connection);
        }
    }

    /// A request for `path` (origin form) with this service's Host header.
    pub fn request(&self, method: Method, path: &str) -> hyper::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone())
    }

    /// Sends `request` on an idle connection (opening one when none is idle) and reads the
    /// whole answer; the connection goes back for the next request.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, Bytes)> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => self.open().await?,
        };
        let exchange = async {
            connection.ready().await?;
            let response = connection.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        let answered = tokio::time::timeout(CLIENT_REQUEST_TIMEOUT, exchange)
            .await
            .context("no answer in time")?;
        // A connection whose exchange failed is dropped; the next request opens a new one.
        if answered.is_ok() {
            self.give_back(connection);
        }
        answered
    }
}

/// The trivial-request ceiling: `requesters` tasks send `GET /healthz` back to back on
/// `client` for `duration`. Answers per second; every answer must be a 200.
pub async fn healthz_ceiling(
    client: &Arc<LeanClient>,
    requesters: usize,
    duration: Duration,
) -> anyhow::Result<f64> {
    let answered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + duration;
    let tasks: Vec<_> = (0..requesters)
        .map(|_| {
            let (client, answered) = (Arc::clone(client), Arc::clone(&answered));
            tokio::spawn(async move {
                while Instant::now() < until {
                    let request = client
                        .request(Method::GET, "/healthz")
                        .body(Full::new(Bytes::new()))?;
                    let (status, _) = client.send(request).await?;
                    if status != StatusCode::OK {
                        bail!("GET /healthz answered {status}");
                    }
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await.context("a ceiling requester panicked")??;
    }
    Ok(answered.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// One HTTP/1.1 keep-alive connection to `address`, without Nagle's delay. Its I/O runs
/// beside the requests, and it stays open, idle, until the sender is dropped.
pub(crate) async fn open_http1(
    address: std::net::SocketAddr,
    connect_timeout: std::time::Duration,
) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(address))
        .await
        .context("connecting timed out")?
        .context("connecting")?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
