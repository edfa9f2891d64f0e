//! An echo service written once against [`Runtime`], so every backend can be
//! proven end to end with the same code: UDP replies leave from the address
//! the request was sent to (IP_PKTINFO), TCP echoes lines through split
//! halves with bounded line length, bounded connections and an idle timeout.
//!
//! A test fixture and a template for real drivers; nothing in production
//! serves it. It must never read a clock or spawn anything but plain
//! `tokio::spawn` tasks, or it would stop running under the simulator.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::{timeout, Runtime, TcpListener, TcpStream, UdpBind, UdpSocket};

/// Bounds of one echo server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EchoLimits {
    /// Longest datagram echoed whole; longer ones are echoed truncated.
    pub datagram_bytes_max: usize,
    /// Longest TCP line, newline included; a longer one closes the connection.
    pub line_bytes_max: usize,
    /// Connections served at once; more are closed on accept.
    pub connections_max: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for EchoLimits {
    fn default() -> EchoLimits {
        EchoLimits {
            datagram_bytes_max: 2048,
            line_bytes_max: 1024,
            connections_max: 64,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// What an echo server did, for assertions and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EchoStats {
    pub datagrams_echoed: u64,
    pub datagram_send_errors: u64,
    pub lines_echoed: u64,
    pub lines_too_long: u64,
    pub connections_refused: u64,
    pub connections_idle_closed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    datagrams_echoed: AtomicU64,
    datagram_send_errors: AtomicU64,
    lines_echoed: AtomicU64,
    lines_too_long: AtomicU64,
    connections_refused: AtomicU64,
    connections_idle_closed: AtomicU64,
    connections_open: AtomicUsize,
}

/// An echo server on one runtime; clones share counters.
#[derive(Clone, Debug)]
pub struct EchoServer<R: Runtime> {
    rt: R,
    limits: EchoLimits,
    counters: Arc<Counters>,
}

/// Bind `0.0.0.0:port` and echo datagrams forever, default limits.
pub async fn serve_udp<R: Runtime>(rt: R, port: u16) -> io::Result<()> {
    let socket = rt.bind_udp(UdpBind::any(port)).await?;
    EchoServer::new(rt, EchoLimits::default())
        .serve_udp_on(socket)
        .await
}

/// Listen on `0.0.0.0:port` and echo lines forever, default limits.
pub async fn serve_tcp<R: Runtime>(rt: R, port: u16) -> io::Result<()> {
    let listener = rt
        .listen_tcp(SocketAddr::from(([0, 0, 0, 0], port)))
        .await?;
    EchoServer::new(rt, EchoLimits::default())
        .serve_tcp_on(listener)
        .await
}

impl<R: Runtime> EchoServer<R> {
    pub fn new(rt: R, limits: EchoLimits) -> EchoServer<R> {
        EchoServer {
            rt,
            limits,
            counters: Arc::default(),
        }
    }

    pub fn stats(&self) -> EchoStats {
        let c = &self.counters;
        EchoStats {
            datagrams_echoed: c.datagrams_echoed.load(Ordering::Relaxed),
            datagram_send_errors: c.datagram_send_errors.load(Ordering::Relaxed),
            lines_echoed: c.lines_echoed.load(Ordering::Relaxed),
            lines_too_long: c.lines_too_long.load(Ordering::Relaxed),
            connections_refused: c.connections_refused.load(Ordering::Relaxed),
            connections_idle_closed: c.connections_idle_closed.load(Ordering::Relaxed),
        }
    }

    /// Echo every datagram from the address it was sent to; returns only
    /// when receiving fails.
    pub async fn serve_udp_on(&self, socket: R::Udp) -> io::Result<()> {
        let mut buf = vec![0u8; self.limits.datagram_bytes_max];
        loop {
            let meta = socket.recv_from(&mut buf).await?;
            let payload = buf.get(..meta.len).unwrap_or(&buf[..]);
            let sent = if is_unicast(meta.local) {
                socket.send_from(payload, meta.peer, meta.local).await
            } else {
                // A broadcast cannot be a source address: let routing pick.
                socket.send_to(payload, meta.peer).await
            };
            let counter = match sent {
                Ok(_) => &self.counters.datagrams_echoed,
                Err(err) => {
                    tracing::debug!(peer = %meta.peer, error = %err, "echo reply failed");
                    &self.counters.datagram_send_errors
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Accept connections and echo their lines, each in its own task;
    /// returns only when accepting fails for a reason other than a client
    /// that aborted first.
    pub async fn serve_tcp_on(&self, listener: R::Listener) -> io::Result<()> {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                // A client that gave up before we accepted is its problem,
                // not the listener's.
                Err(err) if err.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(err) => return Err(err),
            };
            let open = self
                .counters
                .connections_open
                .fetch_add(1, Ordering::AcqRel);
            if open >= self.limits.connections_max {
                self.counters
                    .connections_open
                    .fetch_sub(1, Ordering::AcqRel);
                self.counters
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                drop(stream);
                continue;
            }
            let server = self.clone();
            tokio::spawn(async move {
                if let Err(err) = server.echo_lines(stream).await {
                    tracing::debug!(%peer, error = %err, "echo connection ended");
                }
                server
                    .counters
                    .connections_open
                    .fetch_sub(1, Ordering::AcqRel);
            });
        }
    }

    async fn echo_lines(&self, stream: R::Stream) -> io::Result<()> {
        let (read_half, mut write_half) = stream.into_split();
        let mut reader = BufReader::new(read_half);
        let mut line = Vec::with_capacity(self.limits.line_bytes_max);
        let take_max = u64::try_from(self.limits.line_bytes_max).unwrap_or(u64::MAX);
        loop {
            line.clear();
            let mut bounded = (&mut reader).take(take_max);
            let read = bounded.read_until(b'\n', &mut line);
            let Ok(read) = timeout(&self.rt, self.limits.idle_timeout, read).await else {
                self.counters
                    .connections_idle_closed
                    .fetch_add(1, Ordering::Relaxed);
                return Ok(());
            };
            if read? == 0 {
                return Ok(()); // the peer closed
            }
            if line.last() != Some(&b'\n') {
                // Either the line outgrew the limit or the peer closed
                // mid-line; both end the conversation.
                if line.len() >= self.limits.line_bytes_max {
                    self.counters.lines_too_long.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(());
            }
            write_half.write_all(&line).await?;
            self.counters.lines_echoed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn is_unicast(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => !(v4.is_broadcast() || v4.is_multicast() || v4.is_unspecified()),
        IpAddr::V6(v6) => !(v6.is_multicast() || v6.is_unspecified()),
    }
}

/// Send `payload` to a UDP echo server and return the reply and the
/// address it came from. `bind` is the client's own socket address.
pub async fn udp_request<R: Runtime>(
    rt: &R,
    bind: UdpBind,
    server: SocketAddr,
    payload: &[u8],
    wait: Duration,
) -> io::Result<(Vec<u8>, SocketAddr)> {
    let socket = rt.bind_udp(bind).await?;
    socket.send_to(payload, server).await?;
    let mut buf = vec![0u8; payload.len().saturating_add(1).max(512)];
    let meta = timeout(rt, wait, socket.recv_from(&mut buf)).await??;
    buf.truncate(meta.len);
    Ok((buf, meta.peer))
}

/// Connect to a TCP echo server, send each line (a newline is appended),
/// and return the lines echoed back, newlines stripped. Every step is
/// bounded by `wait`.
pub async fn tcp_request_lines<R: Runtime>(
    rt: &R,
    server: SocketAddr,
    lines: &[&str],
    wait: Duration,
) -> io::Result<Vec<String>> {
    let stream = rt.connect_tcp(server, wait).await?;
    let (read_half, mut write_half) = stream.into_split();
    let mut reader = BufReader::new(read_half);
    let mut echoed = Vec::with_capacity(lines.len());
    for line in lines {
        let request = format!("{line}\n");
        timeout(rt, wait, write_half.write_all(request.as_bytes())).await??;
        let mut reply = String::new();
        let read = timeout(rt, wait, reader.read_line(&mut reply)).await??;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("echo server {server} closed the connection"),
            ));
        }
        echoed.push(reply.trim_end_matches('\n').to_owned());
    }
    Ok(echoed)
}
