//! The DHCP and TFTP counters reach the metrics endpoint: under the
//! simulator (turmoil, through the network seam), a node runs the real DHCP
//! and TFTP drivers and the metrics endpoint; a client does a DORA exchange,
//! sends a truncated datagram and fetches a file by TFTP, then scrapes
//! `GET /metrics` and finds each of them counted.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use ironroot_dhcp::{
    Config, DhcpServer, DriverOptions, MemoryLeaseLog, MemoryRegistry, PoolConfig, SharedCounters,
};
use ironroot_net::turmoil_backend::{Segment, SimRuntime};
use ironroot_net::{Clock, Runtime, UdpBind, UdpSocket, VipControl, VipSpec};
use ironroot_tftp::{MemorySource, TftpConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
const METRICS_PORT: u16 = 9450;
const FILE_LEN: usize = 3000;

fn file() -> Vec<u8> {
    (0..FILE_LEN).map(|i| (i * 7 % 251) as u8).collect()
}

fn dhcp_request(kind: MessageType, requested: Option<Ipv4Addr>) -> Vec<u8> {
    let mut message = Message::new_with_id(
        42,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &[0x52, 0x54, 0, 0, 0, 1],
    );
    message.set_opcode(Opcode::BootRequest);
    message.opts_mut().insert(DhcpOption::MessageType(kind));
    if let Some(ip) = requested {
        message
            .opts_mut()
            .insert(DhcpOption::RequestedIpAddress(ip));
        message.opts_mut().insert(DhcpOption::ServerIdentifier(VIP));
    }
    let mut bytes = Vec::new();
    message
        .encode(&mut Encoder::new(&mut bytes))
        .expect("encodes");
    bytes
}

async fn dhcp_ask(socket: &impl UdpSocket, bytes: &[u8]) -> std::io::Result<Message> {
    socket
        .send_to(bytes, SocketAddr::from((Ipv4Addr::BROADCAST, 67)))
        .await?;
    let mut buf = vec![0u8; 1500];
    let meta = socket.recv_from(&mut buf).await?;
    Message::decode(&mut Decoder::new(&buf[..meta.len]))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Lock-step RRQ of `name` from the VIP; the file's bytes.
async fn tftp_get(rt: &SimRuntime, name: &str) -> std::io::Result<Vec<u8>> {
    let socket = rt.bind_udp(UdpBind::any(0)).await?;
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(name.as_bytes());
    rrq.extend_from_slice(b"\0octet\0");
    socket.send_to(&rrq, SocketAddr::from((VIP, 69))).await?;
    let mut content = Vec::new();
    let mut buf = vec![0u8; 600];
    loop {
        let meta = socket.recv_from(&mut buf).await?;
        let packet = &buf[..meta.len];
        assert_eq!(&packet[..2], &[0, 3], "DATA expected: {packet:?}");
        content.extend_from_slice(&packet[4..]);
        socket
            .send_to(&[0, 4, packet[2], packet[3]], meta.peer)
            .await?;
        if packet.len() - 4 < 512 {
            return Ok(content);
        }
    }
}

async fn scrape(rt: &SimRuntime) -> std::io::Result<String> {
    let mut stream = rt
        .connect_tcp(
            SocketAddr::from((VIP, METRICS_PORT)),
            Duration::from_secs(2),
        )
        .await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: node\r\n\r\n")
        .await?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await?;
    Ok(reply)
}

fn node(sim: &mut turmoil::Sim<'static>, segment: &Segment) {
    let segment = segment.clone();
    sim.host("node", move || {
        let segment = segment.clone();
        async move {
            let rt = SimRuntime::start(segment, "node", 3).await?;
            rt.vip().claim(&VipSpec::new(VIP, 24, "sim0")).await?;
            let mut config = Config::new(VIP, Ipv4Addr::new(255, 255, 255, 0));
            config.pool = Some(PoolConfig {
                start: Ipv4Addr::new(10, 0, 0, 100),
                end: Ipv4Addr::new(10, 0, 0, 103),
                lease_secs: 600,
                offer_hold_secs: 30,
                decline_quarantine_secs: 300,
            });
            let dhcp_counters = Arc::new(SharedCounters::default());
            let dhcp = DhcpServer::new(config, MemoryRegistry::new(4))?
                .with_counters(Arc::clone(&dhcp_counters));
            let mut source = MemorySource::new();
            source.insert("pxelinux.0", file());
            let tftp = ironroot_tftp::Server::new(TftpConfig::default().validate()?, source);
            let listener = ironroot_tftp::driver::bind(&rt, &tftp).await?;
            tokio::spawn(ironroot_tftp::driver::run(
                rt.clone(),
                Arc::clone(&tftp),
                listener,
            ));
            let metrics = rt
                .listen_tcp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, METRICS_PORT)))
                .await?;
            tokio::spawn(ironrootd::metrics::serve(rt.clone(), metrics, move || {
                let mut samples = ironrootd::metrics::dhcp_samples(&dhcp_counters.snapshot());
                samples.extend(ironrootd::metrics::tftp_samples(
                    &tftp.counters().snapshot(),
                    tftp.active(),
                ));
                samples
            }));
            let log = Arc::new(MemoryLeaseLog::default());
            let options = DriverOptions::standard(false, None);
            ironroot_dhcp::serve(rt, dhcp, log, options, std::future::pending()).await?;
            Ok(())
        }
    });
}

#[test]
fn dhcp_and_tftp_counters_are_scraped() {
    let mut sim = turmoil::Builder::new()
        .epoch(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(2))
        .simulation_duration(Duration::from_secs(30))
        .rng_seed(9)
        .build();
    let segment = Segment::new();
    node(&mut sim, &segment);
    let seg = segment.clone();
    sim.client("client", async move {
        let rt = SimRuntime::start(seg, "client", 4).await?;
        rt.sleep(Duration::from_millis(100)).await;
        let socket = rt
            .bind_udp(UdpBind {
                broadcast: true,
                ..UdpBind::any(68)
            })
            .await?;
        let offer = dhcp_ask(&socket, &dhcp_request(MessageType::Discover, None)).await?;
        let ip = offer.yiaddr();
        let ack = dhcp_ask(&socket, &dhcp_request(MessageType::Request, Some(ip))).await?;
        assert_eq!(ack.yiaddr(), ip);
        // Truncated: dropped and counted, never answered.
        socket
            .send_to(
                &[1, 1, 6, 0, 9],
                SocketAddr::from((Ipv4Addr::BROADCAST, 67)),
            )
            .await?;
        let fetched =
            ironroot_net::timeout(&rt, Duration::from_secs(5), tftp_get(&rt, "pxelinux.0"))
                .await??;
        assert_eq!(fetched, file());
        rt.sleep(Duration::from_millis(50)).await;
        let text = ironroot_net::timeout(&rt, Duration::from_secs(5), scrape(&rt)).await??;
        for line in [
            "ironroot_dhcp_requests_total{type=\"discover\"} 1\n",
            "ironroot_dhcp_requests_total{type=\"request\"} 1\n",
            "ironroot_dhcp_replies_total{type=\"offer\"} 1\n",
            "ironroot_dhcp_replies_total{type=\"ack\"} 1\n",
            "ironroot_dhcp_replies_total{type=\"nak\"} 0\n",
            "ironroot_dhcp_replies_sent_total 2\n",
            "ironroot_dhcp_dropped_total{reason=\"truncated\"} 1\n",
            "ironroot_dhcp_lease_writes_total 1\n",
            "ironroot_dhcp_pool_addresses 4\n",
            "ironroot_tftp_transfers_started_total 1\n",
            "ironroot_tftp_transfers_completed_total 1\n",
            "ironroot_tftp_transfers_failed_total 0\n",
            "ironroot_tftp_file_bytes_completed_total 3000\n",
            "ironroot_tftp_data_bytes_sent_total 3000\n",
            "ironroot_tftp_data_blocks_sent_total 6\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        Ok(())
    });
    sim.run().expect("simulation");
}
