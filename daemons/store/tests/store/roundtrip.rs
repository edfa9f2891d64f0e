//! Import a real directory tree, export it elsewhere, and compare every
//! attribute `find -printf` and `stat` show, plus contents and xattrs.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use ironroot_store::commit::{commit, IdAllocator};
use ironroot_store::export::export_tree;
use ironroot_store::objects::ObjectStore;
use ironroot_store::stage::{import_dir, read_xattrs};
use ironroot_store::storage::MemStorage;

fn sh(cmd: &str) {
    let status = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(status.success(), "{cmd}");
}

/// Whether the test can run: it needs root (mknod, chown) and `find`.
/// Without them it fails under `IRONROOT_REQUIRE_PEERS=1`, else skips.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() == 0 };
    let find = Command::new("find").arg("--version").output().is_ok();
    let required = std::env::var("IRONROOT_REQUIRE_PEERS").as_deref() == Ok("1");
    if !(root && find) {
        assert!(
            !required,
            "needs root and findutils (root: {root}, find: {find})"
        );
        eprintln!("skipped: needs root and findutils (root: {root}, find: {find})");
        return false;
    }
    true
}

/// `find -printf` listing; directory sizes are the filesystem's choice.
fn listing(dir: &Path, with_atime: bool) -> Vec<String> {
    let format = if with_atime {
        "%P\t%y\t%m\t%U\t%G\t%s\t%T@\t%A@\t%l\t%n\\n"
    } else {
        "%P\t%y\t%m\t%U\t%G\t%s\t%T@\t%l\t%n\\n"
    };
    let out = Command::new("find")
        .arg(dir)
        .args(["-printf", format])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split('\t').collect();
            let kind = fields.get(1).copied();
            if kind == Some("d") {
                fields[5] = "-";
            }
            // Listing reads directories and symlinks, which moves their
            // atime: `atimes` checks those before anything reads them.
            if with_atime && matches!(kind, Some("d" | "l")) {
                fields[7] = "-";
            }
            fields.join(" ")
        })
        .collect();
    lines.sort();
    lines
}

fn rdevs(dir: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . \\( -type c -o -type b \\) -exec stat -c '%n %t %T' {{}} + | sort",
            dir.display()
        ))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

type Contents = BTreeMap<String, (blake3::Hash, BTreeMap<Vec<u8>, Vec<u8>>)>;

fn contents(dir: &Path) -> Contents {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let md = std::fs::symlink_metadata(&path).unwrap();
        let hash = if md.is_file() {
            blake3::hash(&std::fs::read(&path).unwrap())
        } else {
            blake3::hash(b"")
        };
        if md.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
        let rel = path.strip_prefix(dir).unwrap().display().to_string();
        out.insert(rel, (hash, read_xattrs(&path).unwrap()));
    }
    out
}

/// atime of every node, each taken before its directory is read.
fn atimes(dir: &Path) -> BTreeMap<String, (i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let md = std::fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(dir).unwrap().display().to_string();
        out.insert(rel, (md.atime(), md.atime_nsec()));
        if md.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    out
}

fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    // SAFETY: valid path and two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0);
}

fn build_tree(root: &Path) {
    let r = root.display();
    sh(&format!(
        "set -e; cd {r}; mkdir -p usr/bin etc tmp dev 'odd name'; \
         head -c 3000000 /dev/urandom > usr/bin/big; echo hi > etc/hostname; : > etc/empty; \
         cp usr/bin/big usr/bin/su; chmod 4755 usr/bin/su; chmod 2755 usr/bin; chmod 1777 tmp; \
         chown 1234:5678 etc/hostname; ln -s ../etc/hostname usr/name; ln usr/bin/big usr/bin/big2; \
         mkfifo tmp/fifo; mknod dev/null c 1 3; mknod dev/loop0 b 7 0; \
         echo x > 'odd name/f'; chown -h 42:43 usr/name; chmod 0640 etc/empty"
    ));
    let setfattr = |path: &str, name: &str, value: &[u8]| {
        let c = CString::new(root.join(path).as_os_str().as_bytes()).unwrap();
        let n = CString::new(name).unwrap();
        // SAFETY: valid NUL-terminated strings and a value buffer.
        let rc = unsafe {
            libc::lsetxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        assert_eq!(rc, 0, "setxattr {path} {name}");
    };
    setfattr("etc/hostname", "user.origin", b"test");
    setfattr("usr/bin", "user.dir", b"\x00\x01binary");
    stamp_times(root);
}

/// Give every node distinct nanosecond times; returns the atimes set.
fn stamp_times(root: &Path) -> BTreeMap<String, (i64, i64)> {
    let mut expected = BTreeMap::new();
    for (nanos, rel) in (1i64..).zip([
        "usr/bin/big",
        "usr/bin/su",
        "etc/hostname",
        "etc/empty",
        "usr/name",
        "tmp/fifo",
        "dev/null",
        "dev/loop0",
        "odd name/f",
        "odd name",
        "usr/bin",
        "usr",
        "etc",
        "tmp",
        "dev",
        "",
    ]) {
        let atime = (1_600_000_000, nanos * 7);
        set_times(
            &root.join(rel),
            atime,
            (1_500_000_000 + nanos, nanos * 123_456_789 % 1_000_000_000),
        );
        expected.insert(rel.to_owned(), atime);
    }
    expected
}

fn roundtrip(src: &Path, dst: &Path) {
    let mem = Arc::new(MemStorage::new());
    let (mut objects, _) = ObjectStore::open(mem).unwrap();
    let staged = import_dir(&mut objects, src).unwrap();
    let mut ids = IdAllocator {
        next: IdAllocator::FIRST,
    };
    let root = commit(&mut objects, &mut ids, &staged, None).unwrap();
    export_tree(&objects, &root, dst).unwrap();
}

#[test]
fn synthetic_tree_round_trips_every_attribute() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    std::fs::create_dir(&src).unwrap();
    build_tree(&src);
    let before = listing(&src, true);
    // Listing read directories and symlinks (moving their atime): stamp
    // again so the import sees known values.
    let expected_atimes = stamp_times(&src);
    roundtrip(&src, &dst);
    let exported_atimes = atimes(&dst);
    for (rel, atime) in &expected_atimes {
        assert_eq!(exported_atimes.get(rel), Some(atime), "atime of {rel:?}");
    }
    let after = listing(&dst, true);
    assert_eq!(before, after);
    assert!(before.iter().any(|l| l.starts_with("usr/bin/su f 4755 ")));
    assert!(before.iter().any(|l| l.starts_with("tmp d 1777 ")));
    assert!(before
        .iter()
        .any(|l| l.starts_with("usr/bin/big f 644 0 0 3000000 ") && l.ends_with(" 2")));
    assert_eq!(rdevs(&src), rdevs(&dst));
    assert!(rdevs(&dst).contains("./dev/loop0 7 0"));
    let (a, b) = (contents(&src), contents(&dst));
    assert_eq!(a, b);
    assert_eq!(
        b["etc/hostname"]
            .1
            .get(&b"user.origin"[..])
            .map(Vec::as_slice),
        Some(&b"test"[..])
    );
}

#[test]
fn real_system_tree_round_trips() {
    if !is_root() {
        return;
    }
    // Parts of this machine's Debian root: documentation (many small
    // files), /etc (owners and groups such as root:shadow, 0640 and 0600
    // modes, symlinks) and /usr/sbin (setuid and setgid programs among them
    // on most systems).
    for (src, least) in [("/usr/share/doc", 100), ("/etc", 100), ("/usr/sbin", 50)] {
        let src = Path::new(src);
        let tmp = tempfile::tempdir().unwrap();
        let dst = tmp.path().join("tree");
        let before = listing(src, false);
        roundtrip(src, &dst);
        assert_eq!(before, listing(&dst, false), "{}", src.display());
        assert_eq!(contents(src), contents(&dst), "{}", src.display());
        assert!(
            before.len() > least,
            "{}: a real tree: {} entries",
            src.display(),
            before.len()
        );
    }
}
