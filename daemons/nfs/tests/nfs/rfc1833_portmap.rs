//! RFC 1833 section 3: portmap version 2 (NULL, GETPORT, DUMP).

use ironroot_nfs::rpc::{Accept, Auth, ReplyHead};
use ironroot_nfs::server::PORTMAP_PROGRAM;
use nfs3_types::portmap::{mapping, pmaplist};

use crate::support::*;

fn getport(prog: u32, vers: u32, prot: u32) -> u32 {
    let args = pack(&mapping {
        prog,
        vers,
        prot,
        port: 0,
    });
    let (head, results) = call_raw(&server(), KNOWN, PORTMAP_PROGRAM, 2, 3, &Auth::None, &args);
    assert_eq!(head, ReplyHead::Accepted(Accept::Success));
    unpack::<u32>(&results)
}

#[test]
fn section_3_1_null() {
    let (head, results) = call_raw(&server(), UNKNOWN, PORTMAP_PROGRAM, 2, 0, &Auth::None, &[]);
    assert_eq!(head, ReplyHead::Accepted(Accept::Success));
    assert!(results.is_empty());
}

#[test]
fn section_3_4_getport_registers_mount_and_nfs_on_tcp_and_udp() {
    assert_eq!(getport(100_003, 3, 6), 2049);
    assert_eq!(getport(100_003, 3, 17), 2049);
    assert_eq!(getport(100_005, 3, 6), 20048);
    assert_eq!(getport(100_005, 3, 17), 20048);
    assert_eq!(getport(100_000, 2, 6), 111);
    // Not registered: port 0.
    assert_eq!(getport(100_003, 4, 6), 0);
    assert_eq!(getport(100_021, 4, 6), 0);
}

#[test]
fn section_3_5_dump_lists_every_registration() {
    let (head, results) = call_raw(&server(), KNOWN, PORTMAP_PROGRAM, 2, 4, &Auth::None, &[]);
    assert_eq!(head, ReplyHead::Accepted(Accept::Success));
    let list = unpack::<pmaplist>(&results).into_inner();
    let mut seen: Vec<(u32, u32, u32, u32)> = list
        .iter()
        .map(|m| (m.prog, m.vers, m.prot, m.port))
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        vec![
            (100_000, 2, 6, 111),
            (100_000, 2, 17, 111),
            (100_003, 3, 6, 2049),
            (100_003, 3, 17, 2049),
            (100_005, 3, 6, 20048),
            (100_005, 3, 17, 20048),
        ]
    );
}

#[test]
fn section_3_2_set_is_refused() {
    let args = pack(&mapping {
        prog: 100_003,
        vers: 3,
        prot: 6,
        port: 9999,
    });
    let (_, results) = call_raw(&server(), KNOWN, PORTMAP_PROGRAM, 2, 1, &Auth::None, &args);
    assert_eq!(unpack::<u32>(&results), 0);
    assert_eq!(getport(100_003, 3, 6), 2049);
}
