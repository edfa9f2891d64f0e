//! File handles (RFC 1813 section 2.5 and ARCHITECTURE "NFS"): MAC-checked,
//! bound to one client's view, stable across server instances, STALE once
//! a pinned version is collected.

use ironroot_nfs::{Config, HandleKey, MemFs, Server, Tree};
use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::Opaque;

use crate::support::*;

fn getattr_status(server: &Server<MemFs>, from: std::net::Ipv4Addr, fh: &nfs_fh3) -> nfsstat3 {
    match nfs::<GETATTR3res>(server, from, 1, &pack(fh)) {
        GETATTR3res::Ok(_) => nfsstat3::NFS3_OK,
        GETATTR3res::Err((status, _)) => status,
    }
}

#[test]
fn forged_or_foreign_handles_are_badhandle() {
    let server = server();
    let root = root(&server, KNOWN);
    let hello = lookup(&server, KNOWN, &root, "hello");
    assert!(hello.data.len() <= 64);
    let mut forged = hello.data.to_vec();
    forged[8] ^= 0x40; // another file id, MAC unchanged
    let forged = nfs_fh3 {
        data: Opaque::owned(forged),
    };
    assert_eq!(
        getattr_status(&server, KNOWN, &forged),
        nfsstat3::NFS3ERR_BADHANDLE
    );
    assert_eq!(
        getattr_status(
            &server,
            KNOWN,
            &nfs_fh3 {
                data: Opaque::owned(vec![1; 7])
            }
        ),
        nfsstat3::NFS3ERR_BADHANDLE
    );
    // Client 2's genuine root handle, presented by client 1, and the reverse.
    let other_root = crate::support::root(&server, OTHER);
    assert_eq!(
        getattr_status(&server, KNOWN, &other_root),
        nfsstat3::NFS3ERR_BADHANDLE
    );
    assert_eq!(
        getattr_status(&server, OTHER, &hello),
        nfsstat3::NFS3ERR_BADHANDLE
    );
    // A handle MAC'd with another cluster's key.
    let foreign = HandleKey::new([1; 32]).encode(&ironroot_nfs::Handle {
        client: 1,
        file_id: 2,
        version: Some(1),
    });
    assert_eq!(
        getattr_status(
            &server,
            KNOWN,
            &nfs_fh3 {
                data: Opaque::owned(foreign)
            }
        ),
        nfsstat3::NFS3ERR_BADHANDLE
    );
    assert!(ironroot_nfs::Counters::get(&server.counters().bad_handle) >= 4);
}

#[test]
fn handles_survive_a_restart_and_a_failover_to_an_identical_node() {
    let first = server();
    let root = root(&first, KNOWN);
    let hello = lookup(&first, KNOWN, &root, "hello");
    // The standby: same key, same store content, a different process.
    let standby = server();
    assert_eq!(getattr_status(&standby, KNOWN, &hello), nfsstat3::NFS3_OK);
    assert_eq!(crate::support::root(&standby, KNOWN), root);
    // A node with another key refuses them.
    let mut fs = MemFs::new();
    fs.add_client(KNOWN, 1, std::sync::Arc::new(trees().0));
    let stranger = Server::new(
        Config {
            handle_key: [3; 32],
            ..config()
        },
        fs,
    );
    assert_eq!(
        getattr_status(&stranger, KNOWN, &hello),
        nfsstat3::NFS3ERR_BADHANDLE
    );
}

#[test]
fn updated_file_keeps_old_version_until_collected_then_stale() {
    let server = server();
    let root = root(&server, KNOWN);
    let old = lookup(&server, KNOWN, &root, "hello");
    let file_id = match nfs::<GETATTR3res>(&server, KNOWN, 1, &pack(&old)) {
        GETATTR3res::Ok(ok) => ok.obj_attributes.fileid,
        GETATTR3res::Err((status, _)) => panic!("{status}"),
    };
    assert!(server.fs().update_tree(1, |tree| tree.update_file(
        file_id,
        b"new content\n",
        1_800_000_000_000_000_000,
    )));
    let new = lookup(&server, KNOWN, &root, "hello");
    assert_ne!(new, old, "a new version gets a new handle");
    let read = |fh: &nfs_fh3, server: &Server<MemFs>| match nfs::<READ3res>(
        server,
        KNOWN,
        6,
        &pack(&READ3args {
            file: fh.clone(),
            offset: 0,
            count: 100,
        }),
    ) {
        READ3res::Ok(ok) => Ok(ok.data.to_vec()),
        READ3res::Err((status, _)) => Err(status),
    };
    assert_eq!(read(&old, &server), Ok(b"hello world\n".to_vec()));
    assert_eq!(read(&new, &server), Ok(b"new content\n".to_vec()));
    assert!(server.fs().update_tree(1, Tree::collect_retained));
    assert_eq!(read(&old, &server), Err(nfsstat3::NFS3ERR_STALE));
    assert_eq!(
        getattr_status(&server, KNOWN, &old),
        nfsstat3::NFS3ERR_STALE
    );
    assert_eq!(read(&new, &server), Ok(b"new content\n".to_vec()));
    // The directory handle carries no version: still valid.
    assert_eq!(getattr_status(&server, KNOWN, &root), nfsstat3::NFS3_OK);
}
