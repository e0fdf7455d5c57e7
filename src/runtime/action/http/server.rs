//! The server behind [`serve`](super::serve) and [`serve_until`](super::serve_until): an
//! accept loop holding at most [`ServeOptions::connections_max`] connections, each served by
//! hyper's HTTP/1 connection and closed by a watchdog when it takes too long to send a request
//! head or stays idle too long.
//!
//! The watchdog sees a connection in one of two phases. *Busy*: a request is being handled
//! (its body read, its handler run); no timer applies, the handler decides. *Waiting*: no
//! request is in flight; the deadline is [`ServeOptions::header_read_timeout`] after the first
//! byte of the next request (or after the accept, for a connection's first request), and
//! [`ServeOptions::idle_timeout`] after the previous response while no byte has arrived.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

/// How [`serve_with`](super::serve_with) treats connections: the defaults suit a service on
/// the open network; tests and trusted networks may shorten or widen them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// How long a client has to send a request's head (request line and headers), counted
    /// from its first byte, or from the accept for a connection's first request. A client
    /// that is slower is disconnected without an answer. Default 10 s.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request without sending a byte;
    /// then it is closed. Default 60 s.
    pub idle_timeout: Duration,
    /// Most connections open at once. At the cap the server stops accepting (new clients wait
    /// in the listener's backlog) until a connection closes, so it never runs out of file
    /// descriptors because of clients; keep it well below the process's descriptor limit
    /// (`ulimit -n`). At least 1. Default 512.
    pub connections_max: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            connections_max: 512,
        }
    }
}

/// How long to wait before accepting again after the listener failed (for example at the
/// file-descriptor limit), so a persistent failure does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

pub(super) async fn run(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let slots_max = options
        .connections_max
        .clamp(1, (u32::MAX as usize).min(Semaphore::MAX_PERMITS));
    let slots = Arc::new(Semaphore::new(slots_max));
    // Dropped or set when the server stops: every connection then shuts down gracefully.
    let (stop, stopped) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    if !is_connection_error(&e) {
                        tracing::error!(error = %e, "HTTP server: accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (router, options, stopped) = (router.clone(), options.clone(), stopped.clone());
        tokio::spawn(async move {
            connection(stream, router, &options, stopped).await;
            drop(slot);
        });
    }
    // Refuse new connections, let the open ones finish, and wait until every slot is back.
    drop(listener);
    let _ = stop.send(());
    let _all = slots.acquire_many(slots_max as u32).await;
    Ok(())
}

/// Errors of one incoming connection (the client went away during the handshake): not the
/// listener's fault, accept the next one at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn connection(
    stream: TcpStream,
    router: Router,
    options: &ServeOptions,
    mut stopped: watch::Receiver<()>,
) {
    let phase = Arc::new(Watch::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        phase: phase.clone(),
    });
    let service = TowerToHyperService::new(router);
    let tracked = {
        let phase = phase.clone();
        hyper::service::service_fn(move |request| {
            phase.request_started();
            let response = hyper::service::Service::call(&service, request);
            let phase = phase.clone();
            async move {
                let response = response.await;
                phase.request_done();
                response
            }
        })
    };
    // No hyper timer: the watchdog below keeps the deadlines (hyper's own header timer would
    // also count a kept-alive connection's idle time as header time).
    let mut builder = http1::Builder::new();
    builder.header_read_timeout(None);
    let mut conn = pin!(builder.serve_connection(io, tracked));
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = stopped.changed(), if !stopping => {
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
            why = phase.expired(options) => {
                tracing::debug!(why, "HTTP connection closed by the server");
                return;
            }
        }
    }
}

/// Where a connection stands, for its watchdog.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// No request in flight since `since` (the accept, or the end of the previous response).
    Waiting {
        since: Instant,
        /// When the next request's first byte arrived.
        first_byte: Option<Instant>,
        /// False for a connection's first request: its head is due `header_read_timeout`
        /// after the accept.
        kept_alive: bool,
    },
    /// This many requests are being handled.
    Busy(usize),
}

struct Watch {
    phase: Mutex<Phase>,
    /// Wakes the watchdog when the phase changes (its deadline may be earlier now).
    changed: tokio::sync::Notify,
}

impl Watch {
    fn new() -> Self {
        Watch {
            phase: Mutex::new(Phase::Waiting {
                since: Instant::now(),
                first_byte: None,
                kept_alive: false,
            }),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Phase) -> R) -> R {
        // A poisoned lock only means a panic elsewhere; the phase itself is always whole.
        let mut phase = self
            .phase
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        f(&mut phase)
    }

    fn bytes_read(&self) {
        let started = self.with(|phase| match phase {
            Phase::Waiting {
                first_byte: first @ None,
                ..
            } => {
                *first = Some(Instant::now());
                true
            }
            _ => false,
        });
        if started {
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        self.with(|phase| {
            *phase = match *phase {
                Phase::Waiting { .. } => Phase::Busy(1),
                Phase::Busy(n) => Phase::Busy(n + 1),
            }
        });
        self.changed.notify_one();
    }

    fn request_done(&self) {
        self.with(|phase| {
            *phase = match *phase {
                Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
                _ => Phase::Waiting {
                    since: Instant::now(),
                    first_byte: None,
                    kept_alive: true,
                },
            }
        });
        self.changed.notify_one();
    }

    /// Completes when the connection has outlived its current deadline, saying which.
    async fn expired(&self, options: &ServeOptions) -> &'static str {
        loop {
            let deadline = self.with(|phase| match *phase {
                Phase::Waiting {
                    first_byte: Some(first),
                    ..
                } => first
                    .checked_add(options.header_read_timeout)
                    .map(|at| (at, "request head too slow")),
                Phase::Waiting {
                    since,
                    kept_alive: false,
                    ..
                } => since
                    .checked_add(options.header_read_timeout)
                    .map(|at| (at, "no request head in time")),
                Phase::Waiting { since, .. } => since
                    .checked_add(options.idle_timeout)
                    .map(|at| (at, "idle")),
                Phase::Busy(_) => None,
            });
            // No deadline: busy, or a timeout too far away to count.
            match deadline {
                Some((at, why)) if Instant::now() >= at => return why,
                Some((at, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

/// The connection's socket, telling the watchdog when bytes arrive.
struct Watched {
    inner: TcpStream,
    phase: Arc<Watch>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.phase.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves `router` on `listener` with the default [`ServeOptions`] until the task is dropped
/// (then open connections finish their request in flight and close).
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    serve_with(
        listener,
        router,
        ServeOptions::default(),
        std::future::pending(),
    )
    .await
}

/// Serves `router` on `listener` with the default [`ServeOptions`] until `shutdown`
/// completes, then stops accepting, lets requests in flight finish and returns once every
/// connection is closed.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, ServeOptions::default(), shutdown).await
}

/// [`serve_until`] with `options`: at most [`ServeOptions::connections_max`] connections, each
/// closed when its request head is slower than [`ServeOptions::header_read_timeout`] or it
/// idles longer than [`ServeOptions::idle_timeout`]. HTTP/1.1 only.
///
/// Errors accepting connections (for example at the file-descriptor limit) are logged through
/// `tracing` and retried after a short pause; they do not stop the server.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run(listener, router, options, shutdown).await
}
