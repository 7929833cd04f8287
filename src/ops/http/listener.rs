//! The endpoint's listening socket with the two limits `axum::serve` does not have: at most
//! [`MAX_CONNECTIONS`] connections at once, and a deadline on each connection's whole life.
//!
//! Why here and not in tower middleware: a request timeout layer starts once hyper has read a
//! request head, so a client that opens a connection and sends its head one byte a minute (slowloris)
//! would hold a slot forever; and a concurrency layer counts requests, not sockets. Both limits belong
//! to the connection, so they are in the [`Listener`] axum accepts from: a semaphore permit taken
//! before `accept` (more clients wait in the kernel's backlog) and released when the connection is
//! dropped, and a timer checked on every read and write. Connections are not kept alive (see the
//! parent module), so a connection's life is one request's.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// Connections served at once; more wait in the accept backlog.
pub const MAX_CONNECTIONS: usize = 32;
/// The longest a connection (one request: head, body, handler, response) may take.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// A [`TcpListener`] whose connections are counted and timed.
pub struct LimitedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    /// [`CONNECTION_DEADLINE`], shorter in tests.
    deadline: Duration,
}

impl LimitedListener {
    pub fn new(inner: TcpListener, deadline: Duration) -> Self {
        LimitedListener {
            inner,
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            deadline,
        }
    }
}

impl Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed, so acquiring only waits.
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let io = LimitedStream {
                        stream,
                        deadline: Box::pin(tokio::time::sleep(self.deadline)),
                        _permit: permit,
                    };
                    return (io, addr);
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "HTTP endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// One accepted connection: its slot is freed when hyper drops it; past its deadline every read and
/// write fails, which makes hyper close it.
pub struct LimitedStream {
    stream: TcpStream,
    /// Boxed so that the stream is `Unpin`, as hyper wants it.
    deadline: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl LimitedStream {
    /// Registers the deadline's waker along with the socket's, so that an idle connection is woken
    /// and failed when its time is up.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "HTTP connection deadline")
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Closing is always allowed, even late.
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
