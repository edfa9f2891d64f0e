//! Per-client files produced on request through the `Generated` hook take
//! precedence over the tree and depend on the asking client.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ironroot_tftp::{Generated, MemorySource, Server, TftpPath, WithGenerated};

use crate::harness::*;

struct PxelinuxByAddress;

impl Generated for PxelinuxByAddress {
    fn generate(&self, path: &TftpPath, client: IpAddr) -> Option<Arc<[u8]>> {
        let components = path.components();
        if components.len() == 2
            && components[0] == "pxelinux.cfg"
            && components[1].starts_with("01-")
        {
            let text = format!("default linux\nappend root=/dev/nfs ip={client}\n");
            return Some(text.into_bytes().into());
        }
        None
    }
}

#[test]
fn generated_config_depends_on_the_client_and_tree_files_still_serve() {
    let mut tree = MemorySource::new();
    tree.insert("pxelinux.0", pattern(3000));
    let source = WithGenerated {
        generated: PxelinuxByAddress,
        tree,
    };
    let server = Server::new(config().validate().expect("valid"), source);
    let mac_path = "pxelinux.cfg/01-52-54-00-12-34-56";
    let start_generic = |client: SocketAddr, datagram: &[u8]| match server.handle_request(
        ironroot_net::Instant::ZERO,
        client,
        datagram,
    ) {
        ironroot_tftp::Decision::Start { transfer, ticket } => (transfer, ticket),
        other => panic!("expected a transfer, got {other:?}"),
    };
    let (mut transfer, _t1) = start_generic(CLIENT, &rrq(mac_path, &[]));
    assert_eq!(
        fetch(&mut transfer).0,
        b"default linux\nappend root=/dev/nfs ip=10.0.0.42\n"
    );
    let other: SocketAddr = "10.0.0.77:3000".parse().expect("addr");
    let (mut transfer, _t2) = start_generic(other, &rrq(mac_path, &[]));
    assert!(String::from_utf8(fetch(&mut transfer).0)
        .expect("utf8")
        .contains("ip=10.0.0.77"));
    let third: SocketAddr = "10.0.0.42:2001".parse().expect("addr");
    let (mut transfer, _t3) = start_generic(third, &rrq("pxelinux.0", &[]));
    assert_eq!(fetch(&mut transfer).0, pattern(3000));
    let fourth: SocketAddr = "10.0.0.42:2002".parse().expect("addr");
    let missing = server.handle_request(
        ironroot_net::Instant::ZERO,
        fourth,
        &rrq("pxelinux.cfg/default", &[]),
    );
    assert!(matches!(missing, ironroot_tftp::Decision::Refuse { .. }));
}
