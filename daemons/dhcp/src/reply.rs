//! Building replies: which fields and options (RFC 2131 §4.3.1 table 3,
//! RFC 2132, PXE) and where they go (RFC 2131 §4.1).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use dhcproto::v4::{Flags, MessageType};

use crate::config::Config;
use crate::pxe::{self, BootOptions};
use crate::wire::{self, EncodeError, ReplyHeader, Request};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// PXE spec 2.1: boot server / proxyDHCP port.
pub const PXE_PORT: u16 = 4011;

/// One datagram for the driver to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub bytes: Vec<u8>,
    pub to: SocketAddr,
    /// Needs SO_BROADCAST (sent to 255.255.255.255).
    pub broadcast: bool,
    /// Source address: the VIP, which is also option 54.
    pub from: Ipv4Addr,
}

/// What the reply says, beyond the request it answers.
#[derive(Clone, Debug)]
pub struct ReplySpec<'a> {
    pub message_type: MessageType,
    /// 0.0.0.0 for NAK, INFORM's ACK and proxyDHCP.
    pub yiaddr: Ipv4Addr,
    /// Option 51 (with T1/T2); `None` for INFORM, NAK, proxyDHCP.
    pub lease_secs: Option<u32>,
    /// Option 12, if non-empty.
    pub hostname: &'a str,
    /// Boot options; `None` for NAK.
    pub boot: Option<BootOptions>,
    /// Network options (mask, routers, DNS); false for NAK and proxyDHCP.
    pub network: bool,
    /// Option 56 (NAK reason).
    pub message: &'a str,
    /// proxyDHCP replies on port 4011 go back to the sender.
    pub reply_to_sender: Option<SocketAddr>,
}

/// RFC 2131 §4.1, "constructing and sending DHCP messages".
pub fn destination(request: &Request, message_type: MessageType) -> (SocketAddr, bool) {
    let broadcast = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT));
    if !request.giaddr.is_unspecified() {
        // Through the relay agent, which delivers on the client's segment.
        return (
            SocketAddr::V4(SocketAddrV4::new(request.giaddr, SERVER_PORT)),
            false,
        );
    }
    if message_type == MessageType::Nak {
        return (broadcast, true);
    }
    if !request.ciaddr.is_unspecified() {
        return (
            SocketAddr::V4(SocketAddrV4::new(request.ciaddr, CLIENT_PORT)),
            false,
        );
    }
    // Broadcast flag set: broadcast. Flag clear: §4.1 asks for a unicast to
    // chaddr/yiaddr, which only works if the sender can write the ARP entry
    // for an address the client does not answer ARP for yet. A UDP socket
    // cannot, and the seam offers no raw link-layer send, so we broadcast,
    // as ISC dhcpd without raw sockets and many embedded servers do; every
    // client accepts a broadcast reply.
    (broadcast, true)
}

/// Encode the reply to `request`; `Err` if it does not fit the client.
pub fn build(
    config: &Config,
    request: &Request,
    spec: &ReplySpec<'_>,
) -> Result<Outgoing, EncodeError> {
    let is_nak = spec.message_type == MessageType::Nak;
    let mut flags = request.flags;
    if is_nak && !request.giaddr.is_unspecified() {
        // §4.3.2: the relay must broadcast a NAK to the client.
        flags = Flags::default().set_broadcast();
    }
    let boot_file = spec
        .boot
        .as_ref()
        .map(|boot| boot.file.clone())
        .unwrap_or_default();
    let header = ReplyHeader {
        xid: request.xid,
        flags,
        htype: request.htype,
        chaddr: request.chaddr.clone(),
        // Table 3: ciaddr is echoed in ACKs, zero in OFFER and NAK.
        ciaddr: match spec.message_type {
            MessageType::Ack => request.ciaddr,
            _ => Ipv4Addr::UNSPECIFIED,
        },
        yiaddr: spec.yiaddr,
        siaddr: if spec.boot.is_some() {
            config.vip
        } else {
            Ipv4Addr::UNSPECIFIED
        },
        giaddr: request.giaddr,
        sname: String::new(),
        file: if boot_file.len() <= crate::config::BOOT_FILE_BYTES_MAX {
            boot_file
        } else {
            String::new()
        },
    };
    let options = options(config, request, spec);
    let bytes = wire::encode_reply(&header, &options, request.reply_bytes_max())?;
    let (to, broadcast) = match spec.reply_to_sender {
        Some(sender) => (sender, false),
        None => destination(request, spec.message_type),
    };
    Ok(Outgoing {
        bytes,
        to,
        broadcast,
        from: config.vip,
    })
}

/// The options of a reply in the order they go on the wire: 53 and 54 first
/// (some firmware looks only there), 82 last (RFC 3046 §2.1).
fn options(config: &Config, request: &Request, spec: &ReplySpec<'_>) -> Vec<(u8, Vec<u8>)> {
    let mut options: Vec<(u8, Vec<u8>)> = vec![
        (53, vec![u8::from(spec.message_type)]),
        (54, config.vip.octets().to_vec()),
    ];
    if let Some(lease_secs) = spec.lease_secs {
        options.push((51, lease_secs.to_be_bytes().to_vec()));
        options.push((58, (lease_secs / 2).to_be_bytes().to_vec()));
        options.push((59, (lease_secs / 8 * 7).to_be_bytes().to_vec()));
    }
    if spec.network {
        network_options(config, spec, &mut options);
    }
    if let Some(boot) = &spec.boot {
        boot_options(config, boot, &mut options);
    }
    if !spec.message.is_empty() {
        options.push((56, spec.message.as_bytes().to_vec()));
    }
    if let Some(info) = request.relay_agent_info() {
        options.push((82, info.to_vec()));
    }
    options
}

fn network_options(config: &Config, spec: &ReplySpec<'_>, options: &mut Vec<(u8, Vec<u8>)>) {
    options.push((1, config.subnet_mask.octets().to_vec()));
    if !config.routers.is_empty() {
        options.push((
            3,
            config.routers.iter().flat_map(|ip| ip.octets()).collect(),
        ));
    }
    if !config.dns_servers.is_empty() {
        let servers = config
            .dns_servers
            .iter()
            .flat_map(|ip| ip.octets())
            .collect();
        options.push((6, servers));
    }
    if !spec.hostname.is_empty() {
        options.push((12, spec.hostname.as_bytes().to_vec()));
    }
    if let Some(domain) = &config.domain_name {
        options.push((15, domain.as_bytes().to_vec()));
    }
    options.push((28, config.broadcast().octets().to_vec()));
}

fn boot_options(config: &Config, boot: &BootOptions, options: &mut Vec<(u8, Vec<u8>)>) {
    if let Some(root_path) = &boot.root_path {
        options.push((17, root_path.as_bytes().to_vec()));
    }
    if boot.pxe_client {
        options.push((43, pxe::pxe_vendor_options()));
        options.push((60, b"PXEClient".to_vec()));
    }
    options.push((66, config.vip.to_string().into_bytes()));
    options.push((67, boot.file.as_bytes().to_vec()));
    if boot.ipxe && config.boot.ipxe_no_pxedhcp {
        options.push((pxe::OPTION_IPXE_ENCAP, pxe::ipxe_no_pxedhcp()));
    }
}
