//! Real peer: the libnfs command-line tools (Debian `libnfs-utils`:
//! `nfs-ls`, `nfs-cat`, `nfs-cp`) against the daemon on real loopback
//! sockets. URLs name the export's subdirectory holding a file (libnfs
//! mounts the parent of the file a URL names), so files are addressed as
//! `nfs://127.0.0.1//dir/file?version=3&nfsport=P&mountport=P`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use ironroot_nfs::{Counters, LoadLimits, MemFs, Tree};

use crate::support::*;

/// The real tree served: IRONROOT_NFS_TEST_TREE or /usr/share/doc.
fn test_tree() -> PathBuf {
    std::env::var_os("IRONROOT_NFS_TEST_TREE")
        .map_or_else(|| PathBuf::from("/usr/share/doc"), PathBuf::from)
}

/// Relative path -> (is a regular file, size, BLAKE3 of the content).
type Disk = BTreeMap<String, (bool, u64, Option<blake3::Hash>)>;

/// What is on disk: relative path -> (is a regular file, size, BLAKE3).
fn walk(root: &Path, dir: &Path, out: &mut Disk) {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if meta.is_file() {
            let hash = blake3::hash(&std::fs::read(&path).unwrap());
            out.insert(rel, (true, meta.len(), Some(hash)));
        } else {
            out.insert(rel, (false, 0, None));
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
}

/// Load the tree and walk it, bracketed by a second walk: the system tree
/// may be changing (a package being installed), so retry until both walks
/// agree and the served tree is the one compared against.
fn load_stable(root: &Path) -> (Tree, Disk) {
    const ATTEMPTS_MAX: usize = 5;
    for _ in 0..ATTEMPTS_MAX {
        let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
        walk(root, root, &mut before);
        let tree = Tree::from_dir(root, LoadLimits::default()).expect("load the test tree");
        walk(root, root, &mut after);
        if before == after {
            return (tree, after);
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    panic!(
        "{} kept changing during {ATTEMPTS_MAX} loads",
        root.display()
    );
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"))
}

fn daemon_for(tree: Tree, client_addr: std::net::Ipv4Addr) -> Daemon {
    let mut fs = MemFs::new();
    fs.add_client(client_addr, 1, Arc::new(tree));
    Daemon::start(fs)
}

#[test]
fn libnfs_lists_and_reads_every_file_of_a_real_tree() {
    if peer_program("nfs-ls", "libnfs-utils").is_none()
        || peer_program("nfs-cat", "libnfs-utils").is_none()
    {
        return;
    }
    let root = test_tree();
    let (tree, disk) = load_stable(&root);
    assert!(
        disk.len() > 100,
        "{} has only {} entries",
        root.display(),
        disk.len()
    );
    let daemon = daemon_for(tree, KNOWN);

    let listing = run("nfs-ls", &["-R", &daemon.url("/")]);
    assert!(
        listing.status.success(),
        "nfs-ls: {}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let mut listed = BTreeMap::new();
    for line in String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|l| !l.is_empty())
    {
        // "mode nlink uid gid size path"
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.len() >= 6, "unexpected nfs-ls line {line:?}");
        listed.insert(fields[5..].join(" "), fields[4].parse::<u64>().unwrap());
    }
    let disk_names: Vec<&String> = disk.keys().collect();
    let listed_names: Vec<&String> = listed.keys().collect();
    assert_eq!(listed_names.len(), disk_names.len(), "entry count differs");
    assert_eq!(listed_names, disk_names, "nfs-ls -R lists exactly the tree");

    let files: Vec<(&String, u64, blake3::Hash)> = disk
        .iter()
        .filter_map(|(path, (_, size, hash))| hash.map(|hash| (path, *size, hash)))
        .collect();
    for (path, size, _) in &files {
        assert_eq!(listed[*path], *size, "size of {path}");
    }
    let url = |path: &str| daemon.url(&format!("//{path}"));
    let checked = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for worker in 0..4 {
            let (files, checked, url) = (&files, &checked, &url);
            scope.spawn(move || {
                for (path, _, hash) in files.iter().skip(worker).step_by(4) {
                    let out = run("nfs-cat", &[&url(path)]);
                    assert!(
                        out.status.success(),
                        "nfs-cat {path}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    assert_eq!(blake3::hash(&out.stdout), *hash, "content of {path}");
                    checked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(checked.into_inner(), files.len());
    println!(
        "libnfs read {} files and listed {} entries of {}",
        files.len(),
        disk.len(),
        root.display()
    );
}

#[test]
fn libnfs_writes_fail_read_only() {
    let Some(_) = peer_program("nfs-cp", "libnfs-utils") else {
        return;
    };
    let daemon = daemon_for(trees().0, KNOWN);
    let local = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(local.path(), b"must not land").unwrap();
    for target in ["//new-file", "//hello", "//dir/new-file"] {
        let out = run(
            "nfs-cp",
            &[local.path().to_str().unwrap(), &daemon.url(target)],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "nfs-cp to {target} succeeded");
        assert!(
            stderr.contains("NFS3ERR_ROFS"),
            "nfs-cp to {target}: {stderr}"
        );
    }
    assert!(Counters::get(&daemon.server.counters().rofs) >= 3);
    // Nothing changed: the file still reads back as before.
    let out = run("nfs-cat", &[&daemon.url("//hello")]);
    assert_eq!(out.stdout, b"hello world\n");
}

#[test]
fn libnfs_unknown_client_is_refused() {
    let Some(_) = peer_program("nfs-ls", "libnfs-utils") else {
        return;
    };
    // The registry knows only 127.0.0.2; libnfs connects from 127.0.0.1.
    let daemon = daemon_for(trees().0, OTHER);
    let out = run("nfs-ls", &[&daemon.url("/")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "nfs-ls succeeded from an unknown address"
    );
    assert!(
        stderr.contains("MNT3ERR_ACCES") || stderr.contains("ermission"),
        "nfs-ls: {stderr}"
    );
    assert!(out.stdout.is_empty());
    assert!(Counters::get(&daemon.server.counters().unknown_client) >= 1);
}
