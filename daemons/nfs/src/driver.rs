//! The async driver: moves bytes between the network seam and [`Server`].
//!
//! Generic over `ironroot_net::Runtime`, so the same code runs on real
//! sockets and in the simulator. Each endpoint (one port) serves every
//! program over UDP and TCP; calls are dispatched by program number, so the
//! portmap, MOUNT and NFS ports may be the same or different.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Buf;
use ironroot_net::{Runtime, TcpListener, TcpStream, UdpBind, UdpSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

use crate::dedup::{Admission, InFlight};
use crate::fs::Filesystem;
use crate::record::{record_mark, RecordDecoder};
use crate::rpc::peek_xid;
use crate::server::{Counters, Reply, Server, UDP_REPLY_BYTES_MAX};

/// Largest datagram we read; bigger ones are truncated and fail to decode.
const UDP_DATAGRAM_BYTES_MAX: usize = 65_536;
/// Bytes read from a TCP stream at a time.
const TCP_READ_BYTES: usize = 64 << 10;
/// A TCP connection with no complete call for this long is closed (Linux
/// nfsd uses 6 minutes; clients reconnect transparently).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(360);
/// A reply the peer does not take within this time ends the connection, so
/// a client that stops reading cannot pin a connection slot forever.
pub const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// One bound port: a UDP socket and a TCP listener.
pub struct Endpoint<R: Runtime> {
    pub udp: Arc<R::Udp>,
    pub tcp: R::Listener,
}

impl<R: Runtime> Endpoint<R> {
    /// The port actually bound (useful when binding port 0 in tests).
    pub fn port(&self) -> io::Result<u16> {
        Ok(self.tcp.local_addr()?.port())
    }
}

/// Bind UDP and TCP on `ip:port`. With port 0 the TCP port is picked first
/// and UDP binds the same number.
pub async fn bind<R: Runtime>(runtime: &R, ip: Ipv4Addr, port: u16) -> io::Result<Endpoint<R>> {
    let tcp = runtime.listen_tcp(SocketAddr::from((ip, port))).await?;
    let port = tcp.local_addr()?.port();
    let mut bind = UdpBind::any(port);
    bind.addr = SocketAddr::from((ip, port));
    let udp = Arc::new(runtime.bind_udp(bind).await?);
    Ok(Endpoint { udp, tcp })
}

struct Shared<F> {
    server: Arc<Server<F>>,
    in_flight: Mutex<InFlight>,
    connections: Arc<Semaphore>,
}

impl<F: Filesystem> Shared<F> {
    fn admit(&self, peer: SocketAddrV4, message: &[u8]) -> Option<(SocketAddrV4, u32)> {
        let counters = self.server.counters();
        let Some(xid) = peek_xid(message) else {
            Counters::bump(&counters.not_a_call_dropped);
            return None;
        };
        let key = (peer, xid);
        let admission = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .begin(key);
        match admission {
            Admission::Process => Some(key),
            Admission::Duplicate => {
                Counters::bump(&counters.duplicate_dropped);
                None
            }
            Admission::Full => {
                Counters::bump(&counters.in_flight_full_dropped);
                None
            }
        }
    }

    fn finish(&self, key: (SocketAddrV4, u32)) {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish(key);
    }
}

/// Serve every endpoint until one of them fails.
pub async fn serve<R: Runtime, F: Filesystem>(
    runtime: R,
    server: Arc<Server<F>>,
    endpoints: Vec<Endpoint<R>>,
) -> io::Result<()> {
    let config = server.config().clone();
    let shared = Arc::new(Shared {
        server,
        in_flight: Mutex::new(InFlight::new(config.in_flight_max)),
        connections: Arc::new(Semaphore::new(config.connections_max)),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for endpoint in endpoints {
        tasks.spawn(serve_udp(Arc::clone(&shared), Arc::clone(&endpoint.udp)));
        tasks.spawn(serve_tcp(
            runtime.clone(),
            Arc::clone(&shared),
            endpoint.tcp,
        ));
    }
    match tasks.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(join_error)) => Err(io::Error::other(join_error)),
        None => Ok(()),
    }
}

fn v4(addr: SocketAddr) -> Option<SocketAddrV4> {
    match addr {
        SocketAddr::V4(addr) => Some(addr),
        SocketAddr::V6(addr) => addr
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddrV4::new(ip, addr.port())),
    }
}

async fn serve_udp<U: UdpSocket, F: Filesystem>(
    shared: Arc<Shared<F>>,
    socket: Arc<U>,
) -> io::Result<()> {
    let mut buf = vec![0u8; UDP_DATAGRAM_BYTES_MAX];
    loop {
        let meta = socket.recv_from(&mut buf).await?;
        let Some(peer) = v4(meta.peer) else { continue };
        let message = buf[..meta.len.min(buf.len())].to_vec();
        let Some(key) = shared.admit(peer, &message) else {
            continue;
        };
        let shared = Arc::clone(&shared);
        let socket = Arc::clone(&socket);
        tokio::spawn(async move {
            let reply = shared
                .server
                .handle_limited(peer, &message, UDP_REPLY_BYTES_MAX);
            if let Some(reply) = reply {
                // Leave from the address the call was sent to (the VIP).
                if let Err(error) = socket.send_from(&reply, meta.peer, meta.local).await {
                    tracing::debug!(%peer, %error, "UDP reply not sent");
                }
            }
            shared.finish(key);
        });
    }
}

async fn serve_tcp<R: Runtime, F: Filesystem>(
    runtime: R,
    shared: Arc<Shared<F>>,
    listener: R::Listener,
) -> io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let Ok(permit) = Arc::clone(&shared.connections).try_acquire_owned() else {
            Counters::bump(&shared.server.counters().connections_refused);
            continue;
        };
        let Some(peer) = v4(peer) else { continue };
        let local = stream.local_addr().ok().and_then(v4);
        let shared = Arc::clone(&shared);
        let runtime = runtime.clone();
        tokio::spawn(async move {
            // Tracked while served, so a node taking the VIP over learns it.
            let tracked = local.map(|local| Tracked::new(&shared.server, local, peer));
            if let Err(error) = serve_connection(runtime, Arc::clone(&shared), stream, peer).await {
                tracing::debug!(%peer, %error, "NFS connection closed");
            }
            drop(tracked);
            drop(permit);
        });
    }
}

/// A connection in the server's table for as long as this lives (also when
/// its task is aborted).
struct Tracked<F: Filesystem> {
    server: Arc<Server<F>>,
    local: SocketAddrV4,
    peer: SocketAddrV4,
}

impl<F: Filesystem> Tracked<F> {
    fn new(server: &Arc<Server<F>>, local: SocketAddrV4, peer: SocketAddrV4) -> Tracked<F> {
        server.track_connection(local, peer, true);
        Tracked {
            server: Arc::clone(server),
            local,
            peer,
        }
    }
}

impl<F: Filesystem> Drop for Tracked<F> {
    fn drop(&mut self) {
        self.server.track_connection(self.local, self.peer, false);
    }
}

async fn serve_connection<R: Runtime, F: Filesystem>(
    runtime: R,
    shared: Arc<Shared<F>>,
    stream: R::Stream,
    peer: SocketAddrV4,
) -> io::Result<()> {
    let config = shared.server.config().clone();
    let (mut reader, mut writer) = stream.into_split();
    let (replies, mut outbox) = mpsc::channel::<Reply>(config.in_flight_per_connection_max);
    let clock = runtime.clone();
    let writer_task = tokio::spawn(async move {
        while let Some(reply) = outbox.recv().await {
            // One vectored write of record mark and reply: no copy of READ data.
            let mark = record_mark(reply.len());
            let parts = Buf::chain(&mark[..], &reply.head[..]);
            let mut framed = Buf::chain(Buf::chain(parts, &reply.data[..]), reply.padding());
            ironroot_net::timeout(&clock, TCP_WRITE_TIMEOUT, writer.write_all_buf(&mut framed))
                .await??;
        }
        io::Result::Ok(())
    });
    let permits = Arc::new(Semaphore::new(config.in_flight_per_connection_max));
    let mut decoder = RecordDecoder::new(config.record_bytes_max);
    let mut buf = vec![0u8; TCP_READ_BYTES];
    let result = loop {
        let read = ironroot_net::timeout(&runtime, TCP_IDLE_TIMEOUT, reader.read(&mut buf)).await;
        let len = match read {
            Ok(Ok(0)) => break Ok(()),
            Ok(Ok(len)) => len,
            Ok(Err(error)) => break Err(error),
            Err(elapsed) => break Err(elapsed.into()),
        };
        if replies.is_closed() {
            break Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "replies cannot be sent",
            ));
        }
        decoder.push(&buf[..len]);
        if let Err(error) = dispatch_records(&shared, &permits, &replies, &mut decoder, peer).await
        {
            Counters::bump(&shared.server.counters().records_too_long);
            break Err(io::Error::new(io::ErrorKind::InvalidData, error));
        }
    };
    drop(replies);
    // Let calls in flight finish and their replies drain before closing.
    let _ = writer_task.await;
    result
}

async fn dispatch_records<F: Filesystem>(
    shared: &Arc<Shared<F>>,
    permits: &Arc<Semaphore>,
    replies: &mpsc::Sender<Reply>,
    decoder: &mut RecordDecoder,
    peer: SocketAddrV4,
) -> Result<(), crate::record::RecordError> {
    while let Some(record) = decoder.poll_record()? {
        // Back-pressure: stop reading while this connection has
        // `in_flight_per_connection_max` calls being processed.
        let Ok(permit) = Arc::clone(permits).acquire_owned().await else {
            break;
        };
        let Some(key) = shared.admit(peer, &record) else {
            continue;
        };
        let shared = Arc::clone(shared);
        let replies = replies.clone();
        tokio::spawn(async move {
            let reply = shared.server.handle_reply(peer, &record, usize::MAX);
            shared.finish(key);
            if let Some(reply) = reply {
                let _ = replies.send(reply).await;
            }
            drop(permit);
        });
    }
    Ok(())
}
