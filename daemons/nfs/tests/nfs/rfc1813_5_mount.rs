//! RFC 1813 section 5: MOUNT version 3.

use ironroot_nfs::rpc::{Accept, ReplyHead};
use ironroot_nfs::server::MOUNT_PROGRAM;
use nfs3_types::mount::{dirpath, exports, mountlist, mountres3, mountstat3};
use nfs3_types::xdr_codec::Opaque;

use crate::support::*;

fn mnt(
    server: &ironroot_nfs::Server<ironroot_nfs::MemFs>,
    from: std::net::Ipv4Addr,
    path: &str,
) -> mountres3<'static> {
    let args = pack(&dirpath(Opaque::borrowed(path.as_bytes())));
    let (head, results) = call_raw(server, from, MOUNT_PROGRAM, 3, 1, &unix(0, 0), &args);
    assert_eq!(head, ReplyHead::Accepted(Accept::Success));
    unpack(&results)
}

#[test]
fn section_5_2_1_mnt_returns_root_handle_and_auth_unix() {
    let server = server();
    match mnt(&server, KNOWN, "/") {
        mountres3::Ok(ok) => {
            assert!(ok.fhandle.0.len() <= 64);
            assert_eq!(ok.auth_flavors, vec![1]);
        }
        mountres3::Err(err) => panic!("MNT: {err}"),
    }
}

#[test]
fn section_5_2_1_unknown_client_is_refused_with_acces() {
    let server = server();
    assert!(matches!(
        mnt(&server, UNKNOWN, "/"),
        mountres3::Err(mountstat3::MNT3ERR_ACCES)
    ));
    assert!(matches!(
        mnt(&server, KNOWN, "/nope"),
        mountres3::Err(mountstat3::MNT3ERR_NOENT)
    ));
}

#[test]
fn section_5_2_2_to_5_2_4_dump_umnt_umntall() {
    let server = server();
    assert!(matches!(mnt(&server, KNOWN, "/"), mountres3::Ok(_)));
    assert!(matches!(mnt(&server, OTHER, "/"), mountres3::Ok(_)));
    let dump = |server| {
        let (_, results) = call_raw(server, KNOWN, MOUNT_PROGRAM, 3, 2, &unix(0, 0), &[]);
        unpack::<mountlist>(&results)
            .into_inner()
            .iter()
            .map(|m| String::from_utf8(m.ml_hostname.0.to_vec()).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(dump(&server), vec!["127.0.0.1", "127.0.0.2"]);
    let args = pack(&dirpath(Opaque::borrowed(b"/")));
    call_raw(&server, KNOWN, MOUNT_PROGRAM, 3, 3, &unix(0, 0), &args);
    assert_eq!(dump(&server), vec!["127.0.0.2"]);
    call_raw(&server, OTHER, MOUNT_PROGRAM, 3, 4, &unix(0, 0), &[]);
    assert!(dump(&server).is_empty());
}

#[test]
fn section_5_2_5_export_lists_the_root() {
    let (_, results) = call_raw(&server(), UNKNOWN, MOUNT_PROGRAM, 3, 5, &unix(0, 0), &[]);
    let list = unpack::<exports>(&results).into_inner();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].ex_dir.0.as_ref(), b"/");
}

#[test]
fn section_5_2_1_mnt_of_a_subdirectory_and_of_a_file() {
    let server = server();
    let sub = match mnt(&server, KNOWN, "/dir") {
        mountres3::Ok(ok) => ok.fhandle.0.to_vec(),
        mountres3::Err(err) => panic!("MNT /dir: {err}"),
    };
    let root = crate::support::root(&server, KNOWN);
    assert_eq!(
        crate::support::lookup(&server, KNOWN, &root, "dir")
            .data
            .to_vec(),
        sub
    );
    assert!(matches!(mnt(&server, KNOWN, "//dir/"), mountres3::Ok(_)));
    assert!(matches!(
        mnt(&server, KNOWN, "/hello"),
        mountres3::Err(mountstat3::MNT3ERR_NOTDIR)
    ));
    assert!(matches!(
        mnt(&server, KNOWN, "/dir/.."),
        mountres3::Err(mountstat3::MNT3ERR_ACCES)
    ));
    assert!(matches!(
        mnt(&server, UNKNOWN, "/dir"),
        mountres3::Err(mountstat3::MNT3ERR_ACCES)
    ));
}
