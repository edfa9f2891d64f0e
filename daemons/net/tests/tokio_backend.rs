//! The tokio backend against the real kernel: loopback for sockets (echo,
//! IP_PKTINFO both ways, TCP options), and network namespaces joined by a
//! veth pair for everything that changes interfaces (VIP lifetime, renew,
//! release, gratuitous ARP, broadcast steered by SO_BINDTODEVICE).
//!
//! The namespace tests need root and iproute2 (`scripts/packages/net.txt`);
//! with `IRONROOT_REQUIRE_PEERS=1` they fail when either is missing,
//! otherwise they print why they skipped.

#[path = "tokio_backend/netns.rs"]
mod netns;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use ironroot_net::echo::{tcp_request_lines, udp_request, EchoLimits, EchoServer};
use ironroot_net::tokio_backend::TokioRuntime;
use ironroot_net::{Runtime, TcpListener, UdpBind, UdpSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(5);

fn runtime() -> TokioRuntime {
    TokioRuntime::with_seed(0x1e0)
}

fn loopback(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, last], port))
}

fn bind(addr: SocketAddr) -> UdpBind {
    UdpBind {
        addr,
        broadcast: false,
        device: None,
    }
}

#[tokio::test]
async fn echo_udp_replies_from_the_server_address() -> io::Result<()> {
    let rt = runtime();
    let socket = rt.bind_udp(bind(loopback(1, 0))).await?;
    let server_addr = socket.local_addr()?;
    let server = EchoServer::new(rt.clone(), EchoLimits::default());
    let serving = tokio::spawn({
        let server = server.clone();
        async move { server.serve_udp_on(socket).await }
    });
    for payload in [&b"ping"[..], &[0u8; 1400][..], &b""[..]] {
        let (reply, from) =
            udp_request(&rt, bind(loopback(1, 0)), server_addr, payload, WAIT).await?;
        assert_eq!(reply, payload);
        assert_eq!(from, server_addr);
    }
    assert_eq!(server.stats().datagrams_echoed, 3);
    serving.abort();
    Ok(())
}

#[tokio::test]
async fn echo_tcp_echoes_lines_and_bounds_their_length() -> io::Result<()> {
    let rt = runtime();
    let listener = rt.listen_tcp(loopback(1, 0)).await?;
    let server_addr = listener.local_addr()?;
    let limits = EchoLimits {
        line_bytes_max: 64,
        ..EchoLimits::default()
    };
    let server = EchoServer::new(rt.clone(), limits);
    let serving = tokio::spawn({
        let server = server.clone();
        async move { server.serve_tcp_on(listener).await }
    });
    let echoed = tcp_request_lines(&rt, server_addr, &["one", "", "three"], WAIT).await?;
    assert_eq!(echoed, ["one", "", "three"]);

    let too_long = "x".repeat(100);
    let refused = tcp_request_lines(&rt, server_addr, &[&too_long], WAIT).await;
    assert!(
        refused.is_err(),
        "a line over line_bytes_max must close the connection"
    );
    let stats = server.stats();
    assert_eq!(stats.lines_echoed, 3);
    assert_eq!(stats.lines_too_long, 1);
    serving.abort();
    Ok(())
}

/// Binds the wildcard on an ephemeral port so one socket sees two
/// destination addresses; every datagram stays on loopback.
#[tokio::test]
async fn pktinfo_reports_the_destination_address() -> io::Result<()> {
    let rt = runtime();
    let receiver = rt.bind_udp(UdpBind::any(0)).await?;
    let port = receiver.local_addr()?.port();
    let sender = rt.bind_udp(bind(loopback(1, 0))).await?;
    let mut buf = [0u8; 64];
    for last in [2, 4] {
        sender.send_to(b"where", loopback(last, port)).await?;
        let meta = ironroot_net::timeout(&rt, WAIT, receiver.recv_from(&mut buf)).await??;
        assert_eq!(meta.local, IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)));
        assert_eq!(meta.peer, sender.local_addr()?);
        assert_eq!(&buf[..meta.len], b"where");
    }
    Ok(())
}

#[tokio::test]
async fn send_from_sets_the_source_address() -> io::Result<()> {
    let rt = runtime();
    let receiver = rt.bind_udp(bind(loopback(1, 0))).await?;
    let sender = rt.bind_udp(bind(loopback(1, 0))).await?;
    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let sent = sender
        .send_from(b"from-3", receiver.local_addr()?, from)
        .await?;
    assert_eq!(sent, 6);
    let mut buf = [0u8; 64];
    let meta = ironroot_net::timeout(&rt, WAIT, receiver.recv_from(&mut buf)).await??;
    assert_eq!(
        meta.peer,
        SocketAddr::new(from, sender.local_addr()?.port())
    );
    assert_eq!(&buf[..meta.len], b"from-3");

    let v6 = sender
        .send_from(
            b"x",
            receiver.local_addr()?,
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        )
        .await;
    assert_eq!(
        v6.map_err(|err| err.kind()),
        Err(io::ErrorKind::InvalidInput)
    );
    Ok(())
}

#[tokio::test]
async fn tcp_streams_have_nodelay_and_listeners_rebind_over_time_wait() -> io::Result<()> {
    let rt = runtime();
    // An address of its own, so the other tests' sockets on 127.0.0.1
    // cannot take the port between the close and the rebind.
    let listener = rt.listen_tcp(loopback(201, 0)).await?;
    let addr = listener.local_addr()?;
    let mut client = rt.connect_tcp(addr, WAIT).await?;
    let (mut accepted, peer) = listener.accept().await?;
    assert_eq!(peer, client.local_addr()?);
    assert!(client.nodelay()? && accepted.nodelay()?);

    // The server closes first, leaving its side of the connection in
    // TIME_WAIT: only SO_REUSEADDR lets a restarted daemon bind again.
    accepted.write_all(b"bye").await?;
    drop(accepted);
    let mut received = Vec::new();
    client.read_to_end(&mut received).await?;
    assert_eq!(received, b"bye");
    drop(client);
    drop(listener);
    let rebound = match rt.listen_tcp(addr).await {
        Ok(rebound) => rebound,
        Err(err) => panic!(
            "rebinding {addr} over TIME_WAIT failed: {err}; sockets on that port now:\n{}",
            sockets_on_port(addr.port())
        ),
    };
    assert_eq!(rebound.local_addr()?, addr);

    drop(rebound);
    let refused = rt.connect_tcp(addr, WAIT).await;
    assert_eq!(
        refused.map_err(|err| err.kind()).err(),
        Some(io::ErrorKind::ConnectionRefused)
    );
    Ok(())
}

/// The kernel's TCP socket table rows for `port` (local or remote), as
/// `/proc/net/tcp` prints them, to tell what held a port when a bind failed.
fn sockets_on_port(port: u16) -> String {
    let needle = format!(":{port:04X} ");
    match std::fs::read_to_string("/proc/net/tcp") {
        Ok(table) => table
            .lines()
            .filter(|line| line.contains(&needle))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(err) => format!("(reading /proc/net/tcp: {err})"),
    }
}

#[tokio::test]
async fn udp_refuses_ipv6_with_a_clear_error() {
    let rt = runtime();
    let result = rt
        .bind_udp(bind(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))))
        .await;
    assert_eq!(
        result.map_err(|err| err.kind()).err(),
        Some(io::ErrorKind::Unsupported)
    );
}

#[test]
fn vip_claim_announce_serve_renew_release() {
    if let Some(pair) = netns::pair_or_skip("vip_claim_announce_serve_renew_release", "v") {
        netns::vip_lifecycle(&pair);
    }
}

#[test]
fn vip_release_stops_announcing_and_expiry_removes_it() {
    if let Some(pair) =
        netns::pair_or_skip("vip_release_stops_announcing_and_expiry_removes_it", "e")
    {
        netns::release_stops_announcements(&pair);
        netns::vip_expiry(&pair);
    }
}

#[test]
fn vip_claim_probes_and_waits_for_the_old_holder() {
    if let Some(pair) = netns::pair_or_skip("vip_claim_probes_and_waits_for_the_old_holder", "p") {
        netns::probe_waits_for_the_old_holder(&pair);
    }
}

#[test]
fn broadcast_leaves_the_bound_device_and_connect_times_out() {
    if let Some(pair) = netns::pair_or_skip(
        "broadcast_leaves_the_bound_device_and_connect_times_out",
        "b",
    ) {
        netns::broadcast_and_connect_timeout(&pair);
    }
}

/// Whether the test may run: root, or a skip message; with
/// `IRONROOT_REQUIRE_PEERS=1` a missing root fails the test.
fn root_or_skip(needs: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let required = std::env::var("IRONROOT_REQUIRE_PEERS").is_ok_and(|v| v == "1");
    assert!(!required, "needs root for {needs}");
    println!("skipping: needs root for {needs}");
    false
}

/// A connection whose server end vanished without a FIN or RST (the host
/// died, or this one took its address over) is reset by one tickle ACK from
/// the server's address, and not before. On loopback: the server end is
/// destroyed silently by closing it in TCP repair mode, so the kernel keeps
/// the address but has no socket for the connection, as after a takeover.
#[test]
fn a_tickle_ack_resets_a_connection_whose_server_vanished() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    if !root_or_skip("raw sockets and TCP repair") {
        return;
    }
    let server_ip = Ipv4Addr::new(127, 0, 0, 202);
    let listener = std::net::TcpListener::bind((server_ip, 0)).expect("listen");
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (mut accepted, _) = listener.accept().expect("accept");
    client.write_all(b"x").expect("client writes");
    let mut byte = [0u8; 1];
    accepted.read_exact(&mut byte).expect("server reads");
    let (server, client_end) = match (accepted.local_addr(), client.local_addr()) {
        (Ok(SocketAddr::V4(server)), Ok(SocketAddr::V4(client))) => (server, client),
        other => panic!("not IPv4: {other:?}"),
    };

    // TCP_REPAIR: a socket closed in repair mode sends nothing.
    const TCP_REPAIR: libc::c_int = 19;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket fd and a c_int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            accepted.as_raw_fd(),
            libc::IPPROTO_TCP,
            TCP_REPAIR,
            std::ptr::addr_of!(on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "TCP_REPAIR: {}", io::Error::last_os_error());
    drop(accepted);
    drop(listener);

    // Nothing told the client: its connection still looks established.
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let idle = client.read(&mut byte).map_err(|err| err.kind());
    assert!(
        matches!(
            idle,
            Err(io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
        ),
        "the client noticed before the tickle: {idle:?}"
    );

    let tickles =
        ironroot_net::tokio_backend::tickle::TickleSender::open(server_ip).expect("raw socket");
    tickles.send(server, client_end).expect("tickle sent");
    client.set_read_timeout(Some(WAIT)).unwrap();
    let after = client.read(&mut byte).map_err(|err| err.kind());
    assert_eq!(after, Err(io::ErrorKind::ConnectionReset));
    // A tickle for a connection that does not exist is harmless.
    tickles
        .send(server, SocketAddrV4::new([127, 0, 0, 1].into(), 9))
        .expect("tickle to nowhere sent");
}

/// `SOCK_DESTROY` on one local address takes its connections and leaves
/// its listeners (what a VIP claim and release do to stale sockets).
#[test]
fn connections_on_an_address_are_destroyed_and_listeners_kept() {
    use ironroot_net::tokio_backend::sockdiag::destroy_tcp_sockets;
    use std::io::Read;

    if !root_or_skip("SOCK_DESTROY (CAP_NET_ADMIN)") {
        return;
    }
    let address = Ipv4Addr::new(127, 0, 0, 204);
    let listener = std::net::TcpListener::bind((address, 0)).expect("listen");
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (_accepted, _) = listener.accept().expect("accept");
    // The client's end is on 127.0.0.1: only the server's end is counted.
    assert_eq!(destroy_tcp_sockets(address).expect("SOCK_DESTROY"), 1);
    client.set_read_timeout(Some(WAIT)).unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        client.read(&mut byte).map_err(|err| err.kind()),
        Err(io::ErrorKind::ConnectionReset)
    );
    let _again = std::net::TcpStream::connect(listener.local_addr().unwrap())
        .expect("the listener survived");
    listener.accept().expect("and accepts");
    assert_eq!(
        destroy_tcp_sockets(Ipv4Addr::new(127, 0, 0, 205)).expect("none"),
        0
    );
}
