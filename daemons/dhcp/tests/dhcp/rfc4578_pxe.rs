//! RFC 4578 (option 93), PXE spec 2.1 (options 60/43, proxyDHCP on 4011)
//! and iPXE's conventions (user class, option 175): every client gets the
//! boot file that fits it, and iPXE never gets iPXE again.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use dhcproto::v4::{Architecture, DhcpOption, MessageType};
use ironroot_dhcp::{Incoming, Mode, PXE_PORT, SERVER_PORT};

use crate::support::*;

fn offer_for(req: Req) -> Reply {
    let mut server = server(config(), &[1]);
    let out = exchange(&mut server, at(0), &req);
    parse(&out[0])
}

fn pxe(arch: u16) -> Req {
    Req::new(MessageType::Discover, mac(1))
        .option(DhcpOption::ClientSystemArchitecture(Architecture::from(
            arch,
        )))
        .option(DhcpOption::ClassIdentifier(
            format!("PXEClient:Arch:{arch:05}:UNDI:002001").into_bytes(),
        ))
}

#[test]
fn bios_gets_undionly() {
    let reply = offer_for(pxe(0));
    assert_eq!(reply.file(), "undionly.kpxe");
    assert_eq!(reply.opt_str(67).as_deref(), Some("undionly.kpxe"));
    assert_eq!(reply.opt_str(66), Some(VIP.to_string()));
    assert_eq!(reply.message.siaddr(), VIP);
}

#[test]
fn efi_x64_gets_snponly() {
    assert_eq!(offer_for(pxe(7)).file(), "snponly.efi");
    assert_eq!(offer_for(pxe(9)).file(), "snponly.efi");
}

#[test]
fn pxe_clients_get_option_60_and_43() {
    let reply = offer_for(pxe(7));
    assert_eq!(reply.opt(60), Some(&b"PXEClient"[..]));
    // PXE_DISCOVERY_CONTROL = 8: boot the file in this reply.
    assert_eq!(reply.opt(43), Some(&[6, 1, 8, 255][..]));
}

#[test]
fn arch_comes_from_the_vendor_class_when_93_is_missing() {
    let req = Req::new(MessageType::Discover, mac(1)).option(DhcpOption::ClassIdentifier(
        b"PXEClient:Arch:00007:UNDI:003010".to_vec(),
    ));
    assert_eq!(offer_for(req).file(), "snponly.efi");
}

#[test]
fn ipxe_by_user_class_gets_its_script_and_no_pxedhcp() {
    let req = pxe(0).option(DhcpOption::UserClass(b"iPXE".to_vec()));
    let reply = offer_for(req);
    let script = format!("tftp://{VIP}/ipxe/clients/52-54-00-00-00-01.ipxe");
    assert_eq!(reply.file(), script);
    assert_eq!(reply.opt_str(67), Some(script));
    assert_eq!(reply.opt(175), Some(&[176, 1, 1][..]));
}

#[test]
fn ipxe_by_option_175_is_detected_too() {
    let req = pxe(7).raw(175, &[19, 1, 1, 22, 1, 1]);
    assert!(offer_for(req).file().ends_with(".ipxe"));
}

#[test]
fn plain_clients_get_the_default_file_and_root_path() {
    let reply = offer_for(Req::new(MessageType::Discover, mac(1)));
    assert_eq!(reply.file(), "undionly.kpxe");
    assert_eq!(reply.opt_str(17), Some(format!("{VIP}:/")));
    assert!(reply.opt(60).is_none() && reply.opt(175).is_none());
}

#[test]
fn templates_and_table_come_from_config() {
    let mut config = config();
    config.boot.ipxe_script = "http://{vip}/ipxe/{name}-{image}.ipxe".into();
    config.boot.arch_files = vec![ironroot_dhcp::ArchFile {
        arch: 7,
        file: "ipxe.efi".into(),
    }];
    config.boot.root_path = String::new();
    let mut server = server(config, &[1]);
    let out = exchange(&mut server, at(0), &pxe(7));
    assert_eq!(parse(&out[0]).file(), "ipxe.efi");
    assert!(parse(&out[0]).opt(17).is_none());
    let ipxe = pxe(7).option(DhcpOption::UserClass(b"iPXE".to_vec()));
    let out = exchange(&mut server, at(0), &ipxe);
    assert_eq!(
        parse(&out[0]).file(),
        format!("http://{VIP}/ipxe/node1-debian12.ipxe")
    );
}

fn proxy_server() -> ironroot_dhcp::DhcpServer<ironroot_dhcp::MemoryRegistry> {
    let mut config = config();
    config.mode = Mode::Proxy;
    server(config, &[1])
}

#[test]
fn proxy_offer_has_boot_options_but_no_address() {
    let mut server = proxy_server();
    let out = exchange(&mut server, at(0), &pxe(0));
    let reply = parse(&out[0]);
    assert_eq!(reply.kind(), OFFER);
    assert!(reply.message.yiaddr().is_unspecified());
    assert!(reply.opt(51).is_none() && reply.opt(1).is_none());
    assert_eq!(reply.opt(60), Some(&b"PXEClient"[..]));
    assert_eq!(reply.file(), "undionly.kpxe");
    assert_eq!(reply.message.siaddr(), VIP);
}

#[test]
fn proxy_answers_requests_on_4011_to_the_sender() {
    let mut server = proxy_server();
    let client = Ipv4Addr::new(10, 0, 0, 21);
    let req = Req::new(MessageType::Request, mac(1))
        .ciaddr(client)
        .option(DhcpOption::ClientSystemArchitecture(Architecture::from(7)))
        .option(DhcpOption::ClassIdentifier(
            b"PXEClient:Arch:00007:UNDI:003010".to_vec(),
        ));
    let bytes = req.bytes();
    let peer = SocketAddr::from((client, 68));
    let out = server.handle(
        at(0),
        Incoming {
            bytes: &bytes,
            peer,
            local_ip: IpAddr::V4(VIP),
            local_port: PXE_PORT,
        },
    );
    assert_eq!(out[0].to, peer);
    let reply = parse(&out[0]);
    assert_eq!(reply.kind(), ACK);
    assert_eq!(reply.file(), "snponly.efi");
    assert!(reply.message.yiaddr().is_unspecified());
}

#[test]
fn proxy_ignores_non_pxe_clients_and_requests_on_67() {
    let mut server = proxy_server();
    assert!(exchange(&mut server, at(0), &Req::new(MessageType::Discover, mac(1))).is_empty());
    let req = pxe(0);
    let mut request = Req::new(MessageType::Request, mac(1));
    request.message.set_opts(req.message.opts().clone());
    request
        .message
        .opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Request));
    let bytes = request.bytes();
    let out = server.handle(
        at(0),
        Incoming {
            bytes: &bytes,
            peer: SocketAddr::from(([0, 0, 0, 0], 68)),
            local_ip: IpAddr::V4(Ipv4Addr::BROADCAST),
            local_port: SERVER_PORT,
        },
    );
    assert!(out.is_empty());
    assert_eq!(server.counters().ignored_by_proxy, 2);
}
