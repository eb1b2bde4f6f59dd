//! The gateway's accepted connections: at most `max_connections` served at once (the next one
//! is refused with GOAWAY ENHANCE_YOUR_CALM on a plaintext port, closed on TLS), an accept loop
//! that backs off and says so when accepting fails (out of file descriptors, say) instead of
//! spinning, and three timers on every connection, read from the calls open on it
//! ([`ConnectionCalls`]):
//!
//! - its first call must start within the handshake timeout (TLS handshake and HTTP/2 preface
//!   included), so connections that never speak do not pile up;
//! - a connection with no call open for the idle timeout is closed;
//! - a call still open well past its deadline means a peer that does not read its answers
//!   (a zero flow-control window): the connection is closed and its streams freed;
//! - at its maximum age (jittered by up to a tenth either way, as gRFC A9 has it, so that
//!   connections opened together do not age together) the server says GOAWAY
//!   ([`super::stack`] serves each connection on its own for that); calls still open when the
//!   grace after it runs out are cut with the connection.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures_util::Stream;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    time::Sleep,
};
use tonic::transport::server::Connected;

use crate::{
    middleware::connection::{CallsNow, ConnectionCalls, ConnectionInfo},
    observability::{Metrics, metrics::ConnectionClosed},
};

/// How long past its deadline a call may stay undelivered before its connection is closed: the
/// gateway answers at the deadline, and a peer that reads gets that answer in milliseconds.
const UNDELIVERED_GRACE: Duration = Duration::from_secs(5);
/// The first wait after a failed accept; it doubles up to [`MAX_ACCEPT_BACKOFF`].
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(5);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// How long a refused connection is given to read the GOAWAY before it is closed.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// The limits on accepted connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a new connection may take to start its first call.
    pub handshake_timeout: Duration,
    /// How long a connection may have no call open.
    pub idle_timeout: Duration,
    /// How long a connection lives.
    pub age: ConnectionAge,
    /// Whether the port speaks HTTP/2 in the clear (a refusal can then say GOAWAY).
    pub plaintext: bool,
}

/// How long a connection lives: GOAWAY at its maximum age, cut once the grace after it ran out.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionAge {
    /// The maximum age, before jitter.
    pub max: Duration,
    /// How long calls open at the maximum age may take to finish.
    pub grace: Duration,
}

impl ConnectionAge {
    /// How long after the GOAWAY the job streams on an aged connection end: long enough for the
    /// GOAWAY to arrive first, a small part of the grace.
    fn goaway_lead(self) -> Duration {
        (self.grace / 4).min(Duration::from_millis(250))
    }

    /// When a connection accepted at `accepted` reaches its maximum age: within a tenth of it
    /// either way.
    fn ages_at(self, accepted: Instant) -> Instant {
        use rand::RngExt;
        accepted + self.max.mul_f64(rand::rng().random_range(0.9..=1.1))
    }
}

/// The connections `listener` accepts, within `limits`, as tonic's incoming stream.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = io::Result<Connection>> {
    let open = Arc::new(AtomicUsize::new(0));
    futures_util::stream::unfold(
        (listener, open, metrics),
        move |(listener, open, metrics)| async move {
            let connection = accept(&listener, &open, &metrics, limits).await;
            Some((Ok(connection), (listener, open, metrics)))
        },
    )
}

/// The next connection within the cap; refuses those over it and waits out accept failures.
async fn accept(
    listener: &TcpListener,
    open: &Arc<AtomicUsize>,
    metrics: &Arc<Metrics>,
    limits: ConnectionLimits,
) -> Connection {
    let mut backoff = MIN_ACCEPT_BACKOFF;
    loop {
        let (stream, remote_addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors (EMFILE), say: retrying at once would spin.
                metrics.accept_failures.inc();
                tracing::warn!(%error, retry_in = ?backoff, "accepting a connection failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        backoff = MIN_ACCEPT_BACKOFF;
        if open.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            open.fetch_sub(1, Ordering::AcqRel);
            metrics.connections_refused.inc();
            tracing::debug!(%remote_addr, "connection refused: at the connection limit");
            tokio::spawn(refuse(stream, limits.plaintext));
            continue;
        }
        // Small gRPC frames must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        metrics.connections.inc();
        let accepted = Instant::now();
        return Connection {
            stream,
            remote_addr: Some(remote_addr),
            accepted,
            ages_at: limits.age.ages_at(accepted),
            calls: Arc::new(ConnectionCalls::new(accepted)),
            limits,
            timer: Box::pin(tokio::time::sleep_until(accepted.into())),
            timer_set_for: None,
            slot: Slot {
                open: open.clone(),
                metrics: metrics.clone(),
            },
        };
    }
}

/// HTTP/2's answer to a connection over the limit: the server preface (an empty SETTINGS frame)
/// and GOAWAY with ENHANCE_YOUR_CALM, then close. A TLS port just closes.
async fn refuse(mut stream: TcpStream, plaintext: bool) {
    if !plaintext {
        return;
    }
    const DEBUG: &[u8] = b"connection limit reached";
    let mut frames = vec![0, 0, 0, 0x4, 0, 0, 0, 0, 0];
    let length = (8 + DEBUG.len()) as u32;
    frames.extend_from_slice(&length.to_be_bytes()[1..]);
    frames.extend_from_slice(&[0x7, 0, 0, 0, 0, 0]);
    frames.extend_from_slice(&0u32.to_be_bytes()); // last stream id: none was processed
    frames.extend_from_slice(&0xbu32.to_be_bytes()); // ENHANCE_YOUR_CALM
    frames.extend_from_slice(DEBUG);
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(&frames).await?;
        stream.shutdown().await?;
        // Read until the peer closes, so closing does not reset the connection before the
        // GOAWAY is read.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}

/// Counts a served connection until it is dropped.
struct Slot {
    open: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.metrics.connections.dec();
    }
}

/// An accepted connection: the socket, with the timers that close it.
pub struct Connection {
    stream: TcpStream,
    remote_addr: Option<SocketAddr>,
    accepted: Instant,
    ages_at: Instant,
    calls: Arc<ConnectionCalls>,
    limits: ConnectionLimits,
    timer: Pin<Box<Sleep>>,
    timer_set_for: Option<Instant>,
    slot: Slot,
}

impl Connection {
    /// When the connection reaches its maximum age: the server says GOAWAY then.
    pub fn ages_at(&self) -> Instant {
        self.ages_at
    }

    /// When the connection must be closed as things stand, and why.
    fn closes_at(&self) -> (Instant, ConnectionClosed) {
        let aged = (
            self.ages_at + self.limits.age.grace,
            ConnectionClosed::AgeGraceExpired,
        );
        match self.closes_for_its_calls() {
            Some(timer) if timer.0 < aged.0 => timer,
            _ => aged,
        }
    }

    /// When the connection's calls (or their absence) close it, and why; `None`: not for now.
    fn closes_for_its_calls(&self) -> Option<(Instant, ConnectionClosed)> {
        match self.calls.now() {
            CallsNow::NoneYet(accepted) => Some((
                accepted + self.limits.handshake_timeout,
                ConnectionClosed::HandshakeTimeout,
            )),
            CallsNow::IdleSince(since) => {
                Some((since + self.limits.idle_timeout, ConnectionClosed::Idle))
            }
            CallsNow::Open(Some(deadline)) => {
                Some((deadline + UNDELIVERED_GRACE, ConnectionClosed::Undelivered))
            }
            CallsNow::Open(None) => None,
        }
    }

    /// Runs the timers while the connection waits for bytes: `Err` when it must close.
    fn check_timers(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            let (at, reason) = self.closes_at();
            if Instant::now() >= at {
                self.slot.metrics.connection_closed(reason);
                tracing::debug!(remote_addr = ?self.remote_addr, ?reason, "closing a connection");
                return Err(io::Error::new(io::ErrorKind::TimedOut, reason.as_str()));
            }
            if self.timer_set_for != Some(at) {
                self.timer.as_mut().reset(at.into());
                self.timer_set_for = Some(at);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo {
            remote_addr: self.remote_addr,
            accepted: self.accepted,
            ages_at: self.ages_at,
            job_streams_end_at: self.ages_at + self.limits.age.goaway_lead(),
            calls: self.calls.clone(),
        }
    }
}

impl Connection {
    /// What an I/O call that would wait answers: wait (with the timers armed), or the error
    /// that closes the connection. Checked on reads and writes alike: a peer that floods
    /// frames and never reads stalls the server's writes, and then reads are no longer polled.
    fn wait_or_close<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match self.check_timers(cx) {
            Ok(()) => Poll::Pending,
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Pending => this.wait_or_close(cx),
            ready => ready,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Pending => this.wait_or_close(cx),
            ready => ready,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.wait_or_close(cx),
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_flush(cx) {
            Poll::Pending => this.wait_or_close(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
