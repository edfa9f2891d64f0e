//! Loopback round trips through the tokio backend's UDP path (recvmsg with
//! IP_PKTINFO, sendmsg with a chosen source) against plain tokio sockets,
//! and TCP line echo through split halves. Prints microseconds per round
//! trip; asserts nothing about speed.
//!
//! `cargo run --release -p ironroot-net --example tokio_udp_bench [round_trips]`

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use ironroot_net::echo::{EchoLimits, EchoServer};
use ironroot_net::tokio_backend::TokioRuntime;
use ironroot_net::{Clock, Runtime, TcpListener, UdpBind, UdpSocket};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const ROUND_TRIPS_DEFAULT: u32 = 20_000;
const PAYLOAD_BYTES: usize = 512;

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let round_trips = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("round_trips {arg:?}: {err}"),
            )
        })?,
        None => ROUND_TRIPS_DEFAULT,
    };
    let rt = TokioRuntime::new()?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let bind = UdpBind {
        addr: loopback,
        broadcast: false,
        device: None,
    };

    let server = rt.bind_udp(bind.clone()).await?;
    let server_addr = server.local_addr()?;
    let echo = EchoServer::new(rt.clone(), EchoLimits::default());
    tokio::spawn(async move { echo.serve_udp_on(server).await });
    let client = rt.bind_udp(bind).await?;
    let seam = measure(&rt, round_trips, || udp_round_trip(&client, server_addr)).await?;

    let plain_server = tokio::net::UdpSocket::bind(loopback).await?;
    let plain_addr = plain_server.local_addr()?;
    tokio::spawn(plain_echo(plain_server));
    let plain_client = tokio::net::UdpSocket::bind(loopback).await?;
    let plain = measure(&rt, round_trips, || {
        plain_round_trip(&plain_client, plain_addr)
    })
    .await?;

    let listener = rt.listen_tcp(loopback).await?;
    let tcp_addr = listener.local_addr()?;
    let echo = EchoServer::new(rt.clone(), EchoLimits::default());
    tokio::spawn(async move { echo.serve_tcp_on(listener).await });
    let tcp = tcp_line_echo(&rt, tcp_addr, round_trips).await?;

    println!("{round_trips} round trips on loopback, {PAYLOAD_BYTES}-byte datagrams:");
    println!("  UDP via the seam (IP_PKTINFO both ways): {seam:.1} us");
    println!("  UDP via plain tokio sockets:             {plain:.1} us");
    println!("  TCP line echo via the seam:              {tcp:.1} us");
    Ok(())
}

/// Mean microseconds per call of `step`.
async fn measure<F, Fut>(rt: &TokioRuntime, round_trips: u32, mut step: F) -> io::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = io::Result<()>>,
{
    let start = rt.now();
    for _ in 0..round_trips {
        step().await?;
    }
    let elapsed = rt.now() - start;
    Ok(elapsed.as_secs_f64() * 1e6 / f64::from(round_trips.max(1)))
}

async fn tcp_line_echo(rt: &TokioRuntime, server: SocketAddr, round_trips: u32) -> io::Result<f64> {
    let stream = rt.connect_tcp(server, Duration::from_secs(5)).await?;
    let (read_half, mut write_half) = stream.into_split();
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    let start = rt.now();
    for _ in 0..round_trips {
        write_half.write_all(b"a line of moderate length\n").await?;
        line.clear();
        reader.read_line(&mut line).await?;
    }
    let elapsed = rt.now() - start;
    Ok(elapsed.as_secs_f64() * 1e6 / f64::from(round_trips.max(1)))
}

async fn udp_round_trip(client: &impl UdpSocket, server: SocketAddr) -> io::Result<()> {
    let payload = [0x5a; PAYLOAD_BYTES];
    let mut buf = [0u8; PAYLOAD_BYTES + 1];
    client.send_to(&payload, server).await?;
    let meta = client.recv_from(&mut buf).await?;
    check_echo(meta.len)
}

async fn plain_round_trip(client: &tokio::net::UdpSocket, server: SocketAddr) -> io::Result<()> {
    let payload = [0x5a; PAYLOAD_BYTES];
    let mut buf = [0u8; PAYLOAD_BYTES + 1];
    client.send_to(&payload, server).await?;
    let (len, _) = client.recv_from(&mut buf).await?;
    check_echo(len)
}

fn check_echo(len: usize) -> io::Result<()> {
    if len == PAYLOAD_BYTES {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("echo returned {len} bytes, sent {PAYLOAD_BYTES}"),
    ))
}

async fn plain_echo(socket: tokio::net::UdpSocket) -> io::Result<()> {
    let mut buf = [0u8; 2048];
    loop {
        let (len, peer) = socket.recv_from(&mut buf).await?;
        socket.send_to(&buf[..len], peer).await?;
    }
}
