//! Shared helpers: requests built with dhcproto (an encoder independent of
//! the server's), replies read back with a plain TLV walk.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode, UnknownOption};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use ironroot_dhcp::{
    Config, DhcpServer, Incoming, MemoryRegistry, Outgoing, PoolConfig, Reservation,
};
use ironroot_dhcp::{Mac, SERVER_PORT};
use ironroot_net::Instant;

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
pub const MASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

pub fn mac(last: u8) -> Mac {
    Mac([0x52, 0x54, 0, 0, 0, last])
}

pub fn reservation(last: u8) -> Reservation {
    Reservation {
        mac: mac(last),
        name: format!("node{last}"),
        ip: Ipv4Addr::new(10, 0, 0, 20 + last),
        image: "debian12".into(),
    }
}

pub fn config() -> Config {
    let mut config = Config::new(VIP, MASK);
    config.routers = vec![ROUTER];
    config
}

pub fn pool_config(start: u8, end: u8) -> Config {
    let mut config = self::config();
    config.pool = Some(PoolConfig {
        start: Ipv4Addr::new(10, 0, 0, start),
        end: Ipv4Addr::new(10, 0, 0, end),
        lease_secs: 600,
        offer_hold_secs: 30,
        decline_quarantine_secs: 300,
    });
    config
}

/// A server with reservations for the given MAC suffixes.
pub fn server(config: Config, reserved: &[u8]) -> DhcpServer<MemoryRegistry> {
    let mut registry = MemoryRegistry::new(1024);
    for last in reserved {
        registry.insert(reservation(*last)).expect("reservation");
    }
    DhcpServer::new(config, registry).expect("valid config")
}

/// A client request, as a firmware would send it.
pub struct Req {
    pub message: Message,
}

impl Req {
    pub fn new(kind: MessageType, mac: Mac) -> Req {
        let mut message = Message::new_with_id(
            0x0bad_cafe,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac.0,
        );
        message.set_opcode(Opcode::BootRequest);
        message.opts_mut().insert(DhcpOption::MessageType(kind));
        Req { message }
    }

    pub fn broadcast_flag(mut self) -> Req {
        self.message.set_flags(Flags::default().set_broadcast());
        self
    }

    pub fn ciaddr(mut self, ip: Ipv4Addr) -> Req {
        self.message.set_ciaddr(ip);
        self
    }

    pub fn giaddr(mut self, ip: Ipv4Addr) -> Req {
        self.message.set_giaddr(ip);
        self
    }

    pub fn requested(self, ip: Ipv4Addr) -> Req {
        self.option(DhcpOption::RequestedIpAddress(ip))
    }

    pub fn server_id(self, ip: Ipv4Addr) -> Req {
        self.option(DhcpOption::ServerIdentifier(ip))
    }

    pub fn raw(self, code: u8, value: &[u8]) -> Req {
        self.option(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(code),
            value.to_vec(),
        )))
    }

    pub fn option(mut self, option: DhcpOption) -> Req {
        self.message.opts_mut().insert(option);
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.message
            .encode(&mut Encoder::new(&mut buf))
            .expect("encodes");
        buf
    }
}

/// Deliver `bytes` as a broadcast from an unconfigured client.
pub fn incoming(bytes: &[u8]) -> Incoming<'_> {
    Incoming {
        bytes,
        peer: SocketAddr::from(([0, 0, 0, 0], 68)),
        local_ip: IpAddr::V4(Ipv4Addr::BROADCAST),
        local_port: SERVER_PORT,
    }
}

pub fn at(secs: u64) -> Instant {
    Instant::from_millis(secs * 1000)
}

/// Send one request and return what comes out at once.
pub fn exchange(server: &mut DhcpServer<MemoryRegistry>, now: Instant, req: &Req) -> Vec<Outgoing> {
    let bytes = req.bytes();
    server.handle(now, incoming(&bytes))
}

/// When records queued at `now` are due to be written: the end of their
/// gather window.
pub fn window_end(server: &DhcpServer<MemoryRegistry>, now: Instant) -> Instant {
    now + Duration::from_millis(server.config().limits.lease_gather_ms)
}

/// Complete every lease write due at `now` and return the ACKs it
/// released.
pub fn commit_at(server: &mut DhcpServer<MemoryRegistry>, now: Instant) -> Vec<Outgoing> {
    while let Some(write) = server.poll_lease_write(now) {
        server.handle_lease_durable(now, write.id);
    }
    std::iter::from_fn(|| server.poll_transmit()).collect()
}

/// Let the gather window of records queued by `now` pass, complete every
/// lease write then and return the ACKs it released.
pub fn commit(server: &mut DhcpServer<MemoryRegistry>, now: Instant) -> Vec<Outgoing> {
    let end = window_end(server, now);
    commit_at(server, end)
}

/// A decoded reply.
pub struct Reply {
    pub message: Message,
    pub options: BTreeMap<u8, Vec<u8>>,
    /// Codes in wire order.
    pub order: Vec<u8>,
}

impl Reply {
    pub fn kind(&self) -> u8 {
        self.options.get(&53).map_or(0, |value| value[0])
    }

    pub fn opt(&self, code: u8) -> Option<&[u8]> {
        self.options.get(&code).map(Vec::as_slice)
    }

    pub fn opt_str(&self, code: u8) -> Option<String> {
        self.opt(code)
            .map(|value| String::from_utf8_lossy(value).into_owned())
    }

    pub fn file(&self) -> String {
        self.message
            .fname()
            .map(|bytes| {
                String::from_utf8_lossy(bytes)
                    .trim_end_matches('\0')
                    .to_string()
            })
            .unwrap_or_default()
    }
}

pub fn parse(out: &Outgoing) -> Reply {
    parse_bytes(&out.bytes)
}

pub fn parse_bytes(bytes: &[u8]) -> Reply {
    let message = Message::decode(&mut Decoder::new(bytes)).expect("reply decodes");
    assert_eq!(message.opcode(), Opcode::BootReply);
    let mut options = BTreeMap::new();
    let mut order = Vec::new();
    let mut i = 240;
    while i < bytes.len() {
        match bytes[i] {
            0 => i += 1,
            255 => break,
            code => {
                let len = usize::from(bytes[i + 1]);
                options
                    .entry(code)
                    .or_insert_with(Vec::new)
                    .extend_from_slice(&bytes[i + 2..i + 2 + len]);
                order.push(code);
                i += 2 + len;
            }
        }
    }
    Reply {
        message,
        options,
        order,
    }
}

pub const OFFER: u8 = 2;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;
