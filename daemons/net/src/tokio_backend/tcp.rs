//! TCP on tokio: listeners with SO_REUSEADDR so a restarted daemon can bind
//! its port while old connections sit in TIME_WAIT, and TCP_NODELAY on every
//! stream because RPC records and heartbeats are small and latency-bound.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections the kernel queues before `accept` (a boot storm of
/// clients mounting at once must not see refused connections).
pub const LISTEN_BACKLOG_MAX: i32 = 1024;

/// A listening socket; accepted streams have TCP_NODELAY on.
#[derive(Debug)]
pub struct TokioTcpListener {
    inner: tokio::net::TcpListener,
}

impl TokioTcpListener {
    /// Bind `addr` with SO_REUSEADDR and listen. Needs a tokio runtime.
    pub fn bind(addr: SocketAddr) -> io::Result<TokioTcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(|err| context(err, format!("creating a TCP socket for {addr}")))?;
        socket
            .set_reuse_address(true)
            .map_err(|err| context(err, format!("SO_REUSEADDR on {addr}")))?;
        socket
            .bind(&addr.into())
            .map_err(|err| context(err, format!("binding TCP {addr}")))?;
        socket
            .listen(LISTEN_BACKLOG_MAX)
            .map_err(|err| context(err, format!("listening on TCP {addr}")))?;
        socket
            .set_nonblocking(true)
            .map_err(|err| context(err, format!("O_NONBLOCK on TCP {addr}")))?;
        let inner = tokio::net::TcpListener::from_std(socket.into())
            .map_err(|err| context(err, format!("registering TCP {addr} with tokio")))?;
        Ok(TokioTcpListener { inner })
    }
}

impl crate::TcpListener for TokioTcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
        let (stream, peer) = self.inner.accept().await?;
        stream
            .set_nodelay(true)
            .map_err(|err| context(err, format!("TCP_NODELAY on the stream from {peer}")))?;
        Ok((stream, peer))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Connect to `addr`, failing with `TimedOut` after `timeout`.
pub(super) async fn connect(
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<tokio::net::TcpStream> {
    let stream = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(connected) => {
            connected.map_err(|err| context(err, format!("connecting to TCP {addr}")))?
        }
        Err(_elapsed) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to TCP {addr}: no answer within {timeout:?}"),
            ))
        }
    };
    stream
        .set_nodelay(true)
        .map_err(|err| context(err, format!("TCP_NODELAY on the stream to {addr}")))?;
    Ok(stream)
}

impl crate::TcpStream for tokio::net::TcpStream {
    type ReadHalf = tokio::net::tcp::OwnedReadHalf;
    type WriteHalf = tokio::net::tcp::OwnedWriteHalf;

    fn into_split(self) -> (Self::ReadHalf, Self::WriteHalf) {
        tokio::net::TcpStream::into_split(self)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpStream::local_addr(self)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpStream::peer_addr(self)
    }
}

/// Keep the kind (callers match on it) and add what we were doing.
pub(super) fn context(err: io::Error, doing: String) -> io::Error {
    io::Error::new(err.kind(), format!("{doing}: {err}"))
}
