//! RFC 1813 section 3.3: every procedure except READDIR(PLUS) (see
//! rfc1813_3_3_16_readdir), including the write procedures, which all
//! answer NFS3ERR_ROFS.

use ironroot_nfs::rpc::{Accept, Auth, ReplyHead};
use ironroot_nfs::server::NFS_PROGRAM;
use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::Opaque;

use crate::support::*;

#[test]
fn section_3_3_1_getattr() {
    let server = server();
    let root = root(&server, KNOWN);
    let hello = lookup(&server, KNOWN, &root, "hello");
    match nfs::<GETATTR3res>(&server, KNOWN, 1, &pack(&hello)) {
        GETATTR3res::Ok(ok) => {
            let attrs = ok.obj_attributes;
            assert_eq!(attrs.type_, ftype3::NF3REG);
            assert_eq!(attrs.size, 12);
            assert_eq!(attrs.mode, 0o644);
            assert!(attrs.nlink >= 1);
            assert_eq!(attrs.fsid, server.config().fsid);
        }
        GETATTR3res::Err((status, _)) => panic!("{status}"),
    }
    match nfs::<GETATTR3res>(&server, KNOWN, 1, &pack(&root)) {
        GETATTR3res::Ok(ok) => assert_eq!(ok.obj_attributes.type_, ftype3::NF3DIR),
        GETATTR3res::Err((status, _)) => panic!("{status}"),
    }
}

#[test]
fn section_3_3_3_lookup_errors() {
    let server = server();
    let root = root(&server, KNOWN);
    let hello = lookup(&server, KNOWN, &root, "hello");
    let ask = |dir: &nfs_fh3, name: &[u8]| {
        let args = pack(&diropargs3 {
            dir: dir.clone(),
            name: filename3(Opaque::borrowed(name)),
        });
        match nfs::<LOOKUP3res>(&server, KNOWN, 3, &args) {
            LOOKUP3res::Ok(_) => nfsstat3::NFS3_OK,
            LOOKUP3res::Err((status, fail)) => {
                if status != nfsstat3::NFS3ERR_BADHANDLE {
                    assert!(fail.dir_attributes.is_some(), "dir attributes on {status}");
                }
                status
            }
        }
    };
    assert_eq!(ask(&root, b"missing"), nfsstat3::NFS3ERR_NOENT);
    assert_eq!(ask(&hello, b"x"), nfsstat3::NFS3ERR_NOTDIR);
    assert_eq!(ask(&root, &[b'a'; 256]), nfsstat3::NFS3ERR_NAMETOOLONG);
    assert_eq!(ask(&root, b"."), nfsstat3::NFS3_OK);
    assert_eq!(ask(&root, b".."), nfsstat3::NFS3_OK);
    // Another client's file is not in this view.
    assert_eq!(ask(&root, b"hostname"), nfsstat3::NFS3ERR_NOENT);
}

fn access(server: &ironroot_nfs::Server<ironroot_nfs::MemFs>, auth: &Auth, fh: &nfs_fh3) -> u32 {
    let args = pack(&ACCESS3args {
        object: fh.clone(),
        access: 0x3f,
    });
    match nfs_as::<ACCESS3res>(server, KNOWN, auth, 4, &args) {
        ACCESS3res::Ok(ok) => ok.access,
        ACCESS3res::Err((status, _)) => panic!("{status}"),
    }
}

#[test]
fn section_3_3_4_access_from_mode_bits_and_credentials() {
    let server = server();
    let root = root(&server, KNOWN);
    let run = lookup(&server, KNOWN, &root, "run"); // 0o750 uid 10 gid 20
    let hello = lookup(&server, KNOWN, &root, "hello"); // 0o644
    let secret = lookup(&server, KNOWN, &root, "secret"); // 0o600 root
    let (read, lookup_, execute) = (ACCESS3_READ, ACCESS3_LOOKUP, ACCESS3_EXECUTE);
    assert_eq!(access(&server, &unix(10, 99), &run), read | execute);
    assert_eq!(
        access(
            &server,
            &Auth::Unix {
                uid: 5,
                gid: 1,
                gids: vec![20]
            },
            &run
        ),
        read | execute
    );
    assert_eq!(access(&server, &unix(5, 20), &run), read | execute);
    assert_eq!(access(&server, &unix(5, 5), &run), 0);
    assert_eq!(access(&server, &unix(5, 5), &hello), read);
    assert_eq!(access(&server, &Auth::None, &hello), read);
    assert_eq!(access(&server, &unix(5, 5), &secret), 0);
    // uid 0: read anything, execute only with some execute bit.
    assert_eq!(access(&server, &unix(0, 0), &secret), read);
    assert_eq!(access(&server, &unix(0, 0), &run), read | execute);
    assert_eq!(access(&server, &unix(0, 0), &root), read | lookup_);
    assert_eq!(access(&server, &unix(5, 5), &root), read | lookup_);
    // MODIFY, EXTEND and DELETE are never granted, not even to root.
    for fh in [&run, &hello, &root] {
        assert_eq!(
            access(&server, &unix(0, 0), fh) & (ACCESS3_MODIFY | ACCESS3_EXTEND | ACCESS3_DELETE),
            0
        );
    }
}

#[test]
fn section_3_3_5_readlink() {
    let server = server();
    let root = root(&server, KNOWN);
    let link = lookup(&server, KNOWN, &root, "link");
    match nfs::<READLINK3res>(&server, KNOWN, 5, &pack(&link)) {
        READLINK3res::Ok(ok) => assert_eq!(ok.data.0.as_ref(), b"hello"),
        READLINK3res::Err((status, _)) => panic!("{status}"),
    }
    let hello = lookup(&server, KNOWN, &root, "hello");
    assert!(matches!(
        nfs::<READLINK3res>(&server, KNOWN, 5, &pack(&hello)),
        READLINK3res::Err((nfsstat3::NFS3ERR_INVAL, _))
    ));
}

fn read(
    server: &ironroot_nfs::Server<ironroot_nfs::MemFs>,
    fh: &nfs_fh3,
    offset: u64,
    count: u32,
) -> READ3res<'static> {
    nfs(
        server,
        KNOWN,
        6,
        &pack(&READ3args {
            file: fh.clone(),
            offset,
            count,
        }),
    )
}

#[test]
fn section_3_3_6_read_counts_and_eof() {
    let mut config = config();
    config.read_bytes_max = 4096;
    let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let mut tree = trees().0;
    tree.add_file("large", 0o644, 0, 0, &content);
    let mut fs = ironroot_nfs::MemFs::new();
    fs.add_client(KNOWN, 1, std::sync::Arc::new(tree));
    let server = ironroot_nfs::Server::new(config, fs);
    let root = root(&server, KNOWN);
    let large = lookup(&server, KNOWN, &root, "large");
    let mut data = Vec::new();
    let mut offset = 0;
    loop {
        match read(&server, &large, offset, 100_000) {
            READ3res::Ok(ok) => {
                assert!(ok.count <= 4096, "count {} over rtmax", ok.count);
                assert_eq!(ok.count as usize, ok.data.len());
                data.extend_from_slice(&ok.data);
                offset += u64::from(ok.count);
                assert_eq!(ok.eof, offset >= 10_000);
                if ok.eof {
                    break;
                }
            }
            READ3res::Err((status, _)) => panic!("{status}"),
        }
    }
    assert_eq!(data, content);
    // A small request is served exactly, even at an odd size.
    match read(&server, &large, 3, 5) {
        READ3res::Ok(ok) => assert_eq!((ok.data.as_ref(), ok.eof), (&content[3..8], false)),
        READ3res::Err((status, _)) => panic!("{status}"),
    }
    match read(&server, &large, 20_000, 10) {
        READ3res::Ok(ok) => assert!(ok.eof && ok.count == 0),
        READ3res::Err((status, _)) => panic!("{status}"),
    }
    assert!(matches!(
        read(&server, &root, 0, 10),
        READ3res::Err((nfsstat3::NFS3ERR_ISDIR, _))
    ));
}

#[test]
fn section_3_3_18_to_20_fsstat_fsinfo_pathconf() {
    let server = server();
    let root = root(&server, KNOWN);
    match nfs::<FSINFO3res>(&server, KNOWN, 19, &pack(&root)) {
        FSINFO3res::Ok(ok) => {
            assert_eq!(ok.rtmax, server.config().read_bytes_max);
            assert_eq!(ok.dtpref, server.config().readdir_bytes_max);
            assert_eq!(
                ok.properties & (FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS),
                FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS
            );
            assert_eq!(ok.properties & FSF3_CANSETTIME, 0);
        }
        FSINFO3res::Err((status, _)) => panic!("{status}"),
    }
    match nfs::<FSSTAT3res>(&server, KNOWN, 18, &pack(&root)) {
        FSSTAT3res::Ok(ok) => {
            assert_eq!(ok.tbytes, 12 + 10 + 1 + 5 + 300);
            assert_eq!((ok.fbytes, ok.abytes, ok.afiles), (0, 0, 0));
        }
        FSSTAT3res::Err((status, _)) => panic!("{status}"),
    }
    match nfs::<PATHCONF3res>(&server, KNOWN, 20, &pack(&root)) {
        PATHCONF3res::Ok(ok) => assert!(ok.name_max == 255 && ok.no_trunc && ok.case_preserving),
        PATHCONF3res::Err((status, _)) => panic!("{status}"),
    }
}

#[test]
fn write_procedures_answer_rofs_with_their_wcc_shape() {
    let server = server();
    // (procedure, bytes after the status: FALSE words for absent attributes)
    let shapes = [
        (2, 8),
        (7, 8),
        (8, 8),
        (9, 8),
        (10, 8),
        (11, 8),
        (12, 8),
        (13, 8),
        (14, 16),
        (15, 12),
        (21, 8),
    ];
    for auth in [unix(0, 0), unix(1000, 1000), Auth::None] {
        for (proc_, rest) in shapes {
            for from in [KNOWN, UNKNOWN] {
                let (head, results) =
                    call_raw(&server, from, NFS_PROGRAM, 3, proc_, &auth, &[1, 2, 3]);
                assert_eq!(head, ReplyHead::Accepted(Accept::Success));
                assert_eq!(
                    unpack::<nfsstat3>(&results),
                    nfsstat3::NFS3ERR_ROFS,
                    "proc {proc_}"
                );
                assert_eq!(results.len(), 4 + rest, "proc {proc_} result shape");
                assert!(results[4..].iter().all(|b| *b == 0));
            }
        }
    }
    // The typed decoders agree with the shapes.
    let (_, results) = call_raw(&server, KNOWN, NFS_PROGRAM, 3, 14, &unix(0, 0), &[]);
    assert!(matches!(
        unpack::<RENAME3res>(&results),
        RENAME3res::Err((nfsstat3::NFS3ERR_ROFS, _))
    ));
    let (_, results) = call_raw(&server, KNOWN, NFS_PROGRAM, 3, 15, &unix(0, 0), &[]);
    assert!(matches!(
        unpack::<LINK3res>(&results),
        LINK3res::Err((nfsstat3::NFS3ERR_ROFS, _))
    ));
}

#[test]
fn unknown_client_gets_acces_on_every_read_procedure() {
    let server = server();
    let root = root(&server, KNOWN);
    for proc_ in [1, 4, 5, 18, 19, 20] {
        let mut args = pack(&root);
        args.extend_from_slice(&[0; 16]);
        let (_, results) = call_raw(&server, UNKNOWN, NFS_PROGRAM, 3, proc_, &unix(0, 0), &args);
        assert_eq!(
            unpack::<nfsstat3>(&results),
            nfsstat3::NFS3ERR_ACCES,
            "proc {proc_}"
        );
    }
}

#[test]
fn section_3_3_0_null() {
    let (head, results) = call_raw(&server(), UNKNOWN, NFS_PROGRAM, 3, 0, &Auth::None, &[]);
    assert_eq!(head, ReplyHead::Accepted(Accept::Success));
    assert!(results.is_empty());
}
