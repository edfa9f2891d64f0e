//! Simulated PXE clients on one host: DHCP clients that do DORA and then
//! renew their lease (unicast to the VIP, as RFC 2131 RENEWING does), and
//! TFTP clients that fetch the boot file lock-step, retransmitting on
//! timeout and starting over when a transfer dies (as firmware does).
//! Everything they see is recorded for [`crate::services::check`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use ironroot_net::turmoil_backend::{Segment, SimRuntime};
use ironroot_net::{Clock, Instant, RecvMeta, Runtime, UdpBind, UdpSocket, VipControl, VipSpec};
use tokio::sync::mpsc;

use crate::scenario::Scenario;
use crate::services::{boot_file, ClientEvent, Services, ServicesShared, BOOT_FILE, PXE};
use crate::world::{host_seed, Log};

/// How long a DHCP client waits for an answer before sending again.
const DHCP_WAIT: Duration = Duration::from_millis(500);
/// REQUESTs in SELECTING before a client starts over with DISCOVER.
const SELECTING_TRIES_MAX: u32 = 4;
/// A TFTP client's retransmission timeout, and how many in a row it
/// allows before starting the fetch over.
const TFTP_WAIT: Duration = Duration::from_millis(250);
const TFTP_TRIES_MAX: u32 = 20;
/// Datagrams queued per DHCP client by the dispatcher; more are dropped.
const INBOX_MAX: usize = 16;

pub fn dhcp_client_name(i: u32) -> String {
    format!("dhcp-{i}")
}

pub fn tftp_client_name(i: u32) -> String {
    format!("tftp-{i}")
}

/// The MAC of DHCP client `dhcp-<i>`.
pub fn mac_of(client: &str) -> Option<[u8; 6]> {
    let i: u32 = client.strip_prefix("dhcp-")?.parse().ok()?;
    let [_, _, hi, lo] = i.to_be_bytes();
    Some([0x52, 0x54, 0x00, 0x5e, hi, lo])
}

/// A socket that loses each datagram it sends or receives with probability
/// `rate`, independently, from its own seeded RNG. (turmoil's link failure
/// rate partitions the whole link and drops everything in flight on it,
/// which is not independent loss.)
pub struct Lossy<U> {
    inner: U,
    rate: f64,
    rng: Mutex<Box<dyn rand::RngCore + Send>>,
}

impl<U: UdpSocket> Lossy<U> {
    pub fn new(inner: U, rate: f64, seed: u64, label: &str) -> Lossy<U> {
        Lossy {
            inner,
            rate,
            rng: Mutex::new(Box::new(ironroot_net::derive_rng(seed, label))),
        }
    }

    fn lost(&self) -> bool {
        use rand::Rng;
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        self.rate > 0.0 && rng.gen_bool(self.rate)
    }

    pub async fn send_to(&self, buf: &[u8], to: SocketAddr) -> std::io::Result<usize> {
        if self.lost() {
            return Ok(buf.len());
        }
        self.inner.send_to(buf, to).await
    }

    pub async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<RecvMeta> {
        loop {
            let meta = self.inner.recv_from(buf).await?;
            if !self.lost() {
                return Ok(meta);
            }
        }
    }
}

/// Register the PXE client host.
pub fn add(
    sim: &mut turmoil::Sim<'_>,
    scenario: &Scenario,
    segment: &Segment,
    log: &Log,
    shared: &ServicesShared,
    seed: u64,
) {
    let Some(services) = scenario.services.clone() else {
        return;
    };
    let (vip, end) = (scenario.vip, Instant::from_origin(scenario.duration));
    let (segment, log, shared) = (segment.clone(), log.clone(), shared.clone());
    let loss = services.loss_rate;
    sim.client(PXE, async move {
        let rt = SimRuntime::start(segment, PXE, host_seed(seed, PXE, 0)).await?;
        log.push(
            rt.now(),
            PXE,
            "pxe.start",
            format!("address {}", rt.host_addr()),
        );
        let socket = rt
            .bind_udp(UdpBind {
                broadcast: true,
                ..UdpBind::any(68)
            })
            .await?;
        let socket = Arc::new(Lossy::new(socket, loss, seed, "pxe/dhcp"));
        let mut inboxes = BTreeMap::new();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..services.dhcp_clients {
            let (tx, rx) = mpsc::channel(INBOX_MAX);
            inboxes.insert(i, tx);
            let client = DhcpClient {
                rt: rt.clone(),
                name: dhcp_client_name(i),
                index: i,
                socket: Arc::clone(&socket),
                inbox: rx,
                vip,
                shared: shared.clone(),
                xid: 0,
            };
            let early = services.dhcp_clients - services.late_dhcp_clients;
            let start = if i < early {
                Duration::from_millis(200 + 37 * u64::from(i))
            } else {
                services.late_start + Duration::from_millis(37 * u64::from(i - early))
            };
            tasks.spawn(client.run(start, services.renew, end));
        }
        tokio::spawn(dispatch(Arc::clone(&socket), inboxes));
        for i in 0..services.tftp_clients {
            let start = Duration::from_millis(300 + 53 * u64::from(i));
            tasks.spawn(fetch_loop(
                rt.clone(),
                tftp_client_name(i),
                vip,
                services.clone(),
                (shared.clone(), log.clone()),
                (start, end, seed),
            ));
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    });
}

/// Hand each DHCP reply to the client whose xid it carries.
async fn dispatch<U: UdpSocket>(
    socket: Arc<Lossy<U>>,
    inboxes: BTreeMap<u32, mpsc::Sender<Message>>,
) {
    let mut buf = vec![0u8; 1500];
    while let Ok(meta) = socket.recv_from(&mut buf).await {
        let Ok(message) = Message::decode(&mut Decoder::new(&buf[..meta.len])) else {
            continue;
        };
        if let Some(inbox) = inboxes.get(&(message.xid() >> 16)) {
            let _ = inbox.try_send(message);
        }
    }
}

struct DhcpClient<U: UdpSocket> {
    rt: SimRuntime,
    name: String,
    index: u32,
    socket: Arc<Lossy<U>>,
    inbox: mpsc::Receiver<Message>,
    vip: Ipv4Addr,
    shared: ServicesShared,
    xid: u16,
}

fn message_type(message: &Message) -> Option<MessageType> {
    match message.opts().get(OptionCode::MessageType) {
        Some(DhcpOption::MessageType(kind)) => Some(*kind),
        _ => None,
    }
}

impl<U: UdpSocket> DhcpClient<U> {
    fn mac(&self) -> [u8; 6] {
        mac_of(&self.name).unwrap_or_default()
    }

    fn request(
        &mut self,
        kind: MessageType,
        ciaddr: Ipv4Addr,
        requested: Option<Ipv4Addr>,
    ) -> (u32, Vec<u8>) {
        self.xid = self.xid.wrapping_add(1);
        let xid = (self.index << 16) | u32::from(self.xid);
        let mut message = Message::new_with_id(
            xid,
            ciaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &self.mac(),
        );
        message.set_opcode(Opcode::BootRequest);
        if ciaddr.is_unspecified() {
            message.set_flags(Flags::default().set_broadcast());
        }
        message.opts_mut().insert(DhcpOption::MessageType(kind));
        if let Some(ip) = requested {
            message
                .opts_mut()
                .insert(DhcpOption::RequestedIpAddress(ip));
            message
                .opts_mut()
                .insert(DhcpOption::ServerIdentifier(self.vip));
        }
        let mut bytes = Vec::new();
        let _ = message.encode(&mut Encoder::new(&mut bytes));
        (xid, bytes)
    }

    /// Send and wait (bounded) for the answer carrying `xid`.
    async fn ask(&mut self, xid: u32, bytes: &[u8], to: SocketAddr) -> Option<Message> {
        let _ = self.socket.send_to(bytes, to).await;
        let deadline = self.rt.now() + DHCP_WAIT;
        loop {
            let left = deadline.saturating_duration_since(self.rt.now());
            match ironroot_net::timeout(&self.rt, left, self.inbox.recv()).await {
                Ok(Some(message)) if message.xid() == xid => return Some(message),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    async fn run(mut self, start: Duration, renew: Duration, end: Instant) {
        self.rt.sleep(start).await;
        let broadcast = SocketAddr::from((Ipv4Addr::BROADCAST, 67));
        let mut bound: Option<Ipv4Addr> = None;
        while self.rt.now() < end {
            let Some(ip) = bound else {
                bound = self.dora(broadcast, end).await;
                continue;
            };
            self.rt.sleep(renew).await;
            // RENEWING: unicast to the server identifier (the VIP), again
            // and again until answered.
            loop {
                if self.rt.now() >= end {
                    return;
                }
                let (xid, bytes) = self.request(MessageType::Request, ip, None);
                let Some(reply) = self
                    .ask(xid, &bytes, SocketAddr::from((self.vip, 67)))
                    .await
                else {
                    continue;
                };
                match message_type(&reply) {
                    Some(MessageType::Ack) => {
                        let got = reply.yiaddr();
                        self.record(ClientEvent::Ack {
                            ip: got,
                            renewal: true,
                        });
                        bound = Some(got);
                    }
                    Some(MessageType::Nak) => {
                        self.record(ClientEvent::Nak { ip });
                        bound = None;
                    }
                    _ => continue,
                }
                break;
            }
        }
    }

    /// DISCOVER, OFFER, REQUEST, ACK; the address once ACKed (configured on
    /// the host so that unicast replies reach it).
    async fn dora(&mut self, broadcast: SocketAddr, end: Instant) -> Option<Ipv4Addr> {
        while self.rt.now() < end {
            let (xid, bytes) = self.request(MessageType::Discover, Ipv4Addr::UNSPECIFIED, None);
            let Some(offer) = self.ask(xid, &bytes, broadcast).await else {
                continue;
            };
            if message_type(&offer) != Some(MessageType::Offer) {
                continue;
            }
            let offered = offer.yiaddr();
            for _ in 0..SELECTING_TRIES_MAX {
                let (xid, bytes) =
                    self.request(MessageType::Request, Ipv4Addr::UNSPECIFIED, Some(offered));
                let Some(reply) = self.ask(xid, &bytes, broadcast).await else {
                    continue;
                };
                match message_type(&reply) {
                    Some(MessageType::Ack) => {
                        let ip = reply.yiaddr();
                        self.record(ClientEvent::Ack { ip, renewal: false });
                        let mut spec = VipSpec::new(ip, 24, "sim0");
                        spec.lifetime = Duration::from_secs(3600);
                        spec.garp_count = 1;
                        let _ = self.rt.vip().claim(&spec).await;
                        return Some(ip);
                    }
                    Some(MessageType::Nak) => {
                        self.record(ClientEvent::Nak { ip: offered });
                        break;
                    }
                    _ => {}
                }
            }
        }
        None
    }

    fn record(&self, event: ClientEvent) {
        self.shared.record(self.rt.now(), &self.name, event);
    }
}

/// Fetch the boot file `services.tftp_fetches` times, each on a new
/// socket, starting a fetch over whenever it dies.
async fn fetch_loop(
    rt: SimRuntime,
    name: String,
    vip: Ipv4Addr,
    services: Services,
    (shared, log): (ServicesShared, Log),
    (start, end, seed): (Duration, Instant, u64),
) {
    rt.sleep(start).await;
    let expected = boot_file(services.tftp_file_bytes);
    let (mut done, mut attempt) = (0, 0u32);
    while done < services.tftp_fetches && rt.now() < end {
        attempt += 1;
        let label = format!("pxe/{name}/{attempt}");
        let loss = (services.loss_rate, seed, label.as_str());
        let event = match fetch(&rt, vip, services.tftp_blksize, end, loss).await {
            Ok(bytes) => {
                done += 1;
                ClientEvent::TftpCompleted {
                    correct: bytes == expected,
                    bytes: bytes.len(),
                }
            }
            Err(why) => ClientEvent::TftpRetried { why },
        };
        let detail = match &event {
            ClientEvent::TftpCompleted { correct, bytes } => {
                format!("completed {bytes} bytes, correct: {correct}")
            }
            ClientEvent::TftpRetried { why } => format!("starting over: {why}"),
            _ => String::new(),
        };
        log.push(rt.now(), &name, "tftp", detail);
        shared.record(rt.now(), &name, event);
    }
}

fn rrq(blksize: u16) -> Vec<u8> {
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(BOOT_FILE.as_bytes());
    rrq.extend_from_slice(b"\0octet\0");
    if blksize != 512 {
        rrq.extend_from_slice(format!("blksize\0{blksize}\0").as_bytes());
    }
    rrq
}

/// One lock-step fetch from the VIP; the file, or why it was given up.
async fn fetch(
    rt: &SimRuntime,
    vip: Ipv4Addr,
    blksize: u16,
    end: Instant,
    (loss, seed, label): (f64, u64, &str),
) -> Result<Vec<u8>, String> {
    let socket = rt
        .bind_udp(UdpBind::any(0))
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let socket = Lossy::new(socket, loss, seed, label);
    let server = SocketAddr::from((vip, 69));
    // What to send again on a timeout, and where.
    let mut last: (Vec<u8>, SocketAddr) = (rrq(blksize), server);
    let mut tid: Option<SocketAddr> = None;
    let mut content = Vec::new();
    let mut block: u16 = 0;
    let mut buf = vec![0u8; usize::from(blksize) + 64];
    let mut misses = 0;
    let _ = socket.send_to(&last.0, last.1).await;
    loop {
        if rt.now() >= end {
            return Err("scenario ended".to_owned());
        }
        let received = ironroot_net::timeout(rt, TFTP_WAIT, socket.recv_from(&mut buf)).await;
        let Ok(Ok(meta)) = received else {
            misses += 1;
            if misses >= TFTP_TRIES_MAX {
                return Err(format!("{misses} timeouts in a row at block {block}"));
            }
            let _ = socket.send_to(&last.0, last.1).await;
            continue;
        };
        if meta.peer.ip() != IpAddr::V4(vip) || tid.is_some_and(|t| t != meta.peer) {
            continue;
        }
        let packet = &buf[..meta.len];
        match packet.get(..2) {
            // OACK: acknowledge with block 0.
            Some([0, 6]) if block == 0 => {
                tid = Some(meta.peer);
                misses = 0;
                last = (vec![0, 4, 0, 0], meta.peer);
                let _ = socket.send_to(&last.0, last.1).await;
            }
            Some([0, 3]) if packet.len() >= 4 => {
                tid = Some(meta.peer);
                let got = u16::from_be_bytes([packet[2], packet[3]]);
                if got == block.wrapping_add(1) {
                    misses = 0;
                    block = got;
                    let data = &packet[4..];
                    content.extend_from_slice(data);
                    last = (vec![0, 4, packet[2], packet[3]], meta.peer);
                    let _ = socket.send_to(&last.0, last.1).await;
                    if data.len() < usize::from(blksize) {
                        return Ok(content);
                    }
                } else {
                    // A duplicate: acknowledge what we have again.
                    let _ = socket.send_to(&last.0, last.1).await;
                }
            }
            Some([0, 5]) => {
                let message = String::from_utf8_lossy(packet.get(4..).unwrap_or_default());
                return Err(format!(
                    "ERROR from the server: {}",
                    message.trim_end_matches('\0')
                ));
            }
            _ => {}
        }
    }
}
