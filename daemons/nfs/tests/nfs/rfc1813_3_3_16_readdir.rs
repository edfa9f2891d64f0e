//! RFC 1813 sections 3.3.16 (READDIR) and 3.3.17 (READDIRPLUS): cookies,
//! cookie verifiers, size limits, pagination of large directories.

use ironroot_nfs::{MemFs, Server, Tree};
use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::Pack;

use crate::support::*;

const ENTRIES: usize = 3000;

fn big_dir_server() -> (Server<MemFs>, nfs_fh3, Vec<String>) {
    let mut tree = Tree::empty();
    let dir = tree.add_dir("many", 0o755);
    let mut names: Vec<String> = (0..ENTRIES)
        .map(|i| format!("file-{i:05}-{}", "x".repeat(i % 37)))
        .collect();
    for name in &names {
        tree.add_empty_file_in(dir, name);
    }
    names.sort();
    let server = server_with(tree);
    let root = root(&server, KNOWN);
    let many = lookup(&server, KNOWN, &root, "many");
    (server, many, names)
}

fn readdir(
    server: &Server<MemFs>,
    dir: &nfs_fh3,
    cookie: u64,
    verf: cookieverf3,
    count: u32,
) -> READDIR3res<'static> {
    nfs(
        server,
        KNOWN,
        16,
        &pack(&READDIR3args {
            dir: dir.clone(),
            cookie,
            cookieverf: verf,
            count,
        }),
    )
}

fn readdirplus(
    server: &Server<MemFs>,
    dir: &nfs_fh3,
    cookie: u64,
    verf: cookieverf3,
    dircount: u32,
    maxcount: u32,
) -> READDIRPLUS3res<'static> {
    nfs(
        server,
        KNOWN,
        17,
        &pack(&READDIRPLUS3args {
            dir: dir.clone(),
            cookie,
            cookieverf: verf,
            dircount,
            maxcount,
        }),
    )
}

fn expected(names: &[String]) -> Vec<String> {
    let mut all = vec![".".to_owned(), "..".to_owned()];
    all.extend(names.iter().cloned());
    all
}

#[test]
fn readdir_paginates_without_repeats_or_gaps() {
    let (server, many, names) = big_dir_server();
    let (mut cookie, mut verf, mut seen, mut pages) = (0u64, cookieverf3::default(), Vec::new(), 0);
    loop {
        let ok = match readdir(&server, &many, cookie, verf, 1024) {
            READDIR3res::Ok(ok) => ok,
            READDIR3res::Err((status, _)) => panic!("page {pages}: {status}"),
        };
        let size = nfs3_types::nfs3::nfsstat3::NFS3_OK.packed_size() + ok.packed_size();
        assert!(size <= 1024, "reply of {size} bytes over count");
        pages += 1;
        verf = ok.cookieverf;
        for entry in ok.reply.entries.into_inner() {
            assert!(entry.cookie > cookie, "cookies increase");
            cookie = entry.cookie;
            seen.push(String::from_utf8(entry.name.0.to_vec()).unwrap());
        }
        if ok.reply.eof {
            break;
        }
        assert!(pages < 10_000);
    }
    assert!(pages > 10, "{pages} pages: the directory must paginate");
    assert_eq!(seen, expected(&names));
}

#[test]
fn readdirplus_paginates_with_handles_and_attributes() {
    let (server, many, names) = big_dir_server();
    let (mut cookie, mut verf, mut seen) = (0u64, cookieverf3::default(), Vec::new());
    loop {
        let ok = match readdirplus(&server, &many, cookie, verf, 512, 8192) {
            READDIRPLUS3res::Ok(ok) => ok,
            READDIRPLUS3res::Err((status, _)) => panic!("{status}"),
        };
        verf = ok.cookieverf;
        let eof = ok.reply.eof;
        for entry in ok.reply.entries.into_inner() {
            cookie = entry.cookie;
            let name = String::from_utf8(entry.name.0.to_vec()).unwrap();
            let Nfs3Option::Some(attrs) = entry.name_attributes else {
                panic!("no attributes for {name}")
            };
            assert_eq!(attrs.fileid, entry.fileid);
            let Nfs3Option::Some(fh) = entry.name_handle else {
                panic!("no handle for {name}")
            };
            if seen.len() % 500 == 7 {
                match nfs::<GETATTR3res>(&server, KNOWN, 1, &pack(&fh)) {
                    GETATTR3res::Ok(got) => assert_eq!(got.obj_attributes.fileid, entry.fileid),
                    GETATTR3res::Err((status, _)) => panic!("{status}"),
                }
            }
            seen.push(name);
        }
        if eof {
            break;
        }
    }
    assert_eq!(seen, expected(&names));
}

#[test]
fn bad_cookie_verifier_is_refused_and_zero_cookie_ignores_it() {
    let (server, many, _) = big_dir_server();
    let READDIR3res::Ok(first) = readdir(&server, &many, 0, cookieverf3([9; 8]), 1024) else {
        panic!("first page")
    };
    let last = first.reply.entries.0.last().unwrap().cookie;
    assert!(matches!(
        readdir(&server, &many, last, cookieverf3([9; 8]), 1024),
        READDIR3res::Err((nfsstat3::NFS3ERR_BAD_COOKIE, _))
    ));
    assert!(matches!(
        readdirplus(&server, &many, last, cookieverf3([9; 8]), 512, 4096),
        READDIRPLUS3res::Err((nfsstat3::NFS3ERR_BAD_COOKIE, _))
    ));
    assert!(matches!(
        readdir(&server, &many, last, first.cookieverf, 1024),
        READDIR3res::Ok(_)
    ));
}

#[test]
fn verifier_changes_when_the_directory_changes() {
    let mut tree = Tree::empty();
    let file = tree.add_file("a", 0o644, 0, 0, b"1");
    tree.add_file("b", 0o644, 0, 0, b"2");
    let server = server_with(tree);
    let root = root(&server, KNOWN);
    let READDIR3res::Ok(before) = readdir(&server, &root, 0, cookieverf3::default(), 4096) else {
        panic!()
    };
    assert!(server.fs().update_tree(1, |tree| tree.update_file(
        file,
        b"new",
        1_800_000_000_000_000_000
    )));
    let READDIR3res::Ok(after) = readdir(&server, &root, 0, cookieverf3::default(), 4096) else {
        panic!()
    };
    assert_ne!(before.cookieverf, after.cookieverf);
    assert!(matches!(
        readdir(&server, &root, 1, before.cookieverf, 4096),
        READDIR3res::Err((nfsstat3::NFS3ERR_BAD_COOKIE, _))
    ));
}

#[test]
fn too_small_and_not_a_directory() {
    let server = server();
    let root = root(&server, KNOWN);
    assert!(matches!(
        readdir(&server, &root, 0, cookieverf3::default(), 50),
        READDIR3res::Err((nfsstat3::NFS3ERR_TOOSMALL, _))
    ));
    let hello = lookup(&server, KNOWN, &root, "hello");
    assert!(matches!(
        readdir(&server, &hello, 0, cookieverf3::default(), 4096),
        READDIR3res::Err((nfsstat3::NFS3ERR_NOTDIR, _))
    ));
}
