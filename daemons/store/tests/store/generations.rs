//! Generations, file ids, the journal's crash recovery, compaction and the
//! read API, on the in-memory storage with its crash semantics.

use std::path::Path;
use std::sync::Arc;

use ironroot_store::journal::Lease;
use ironroot_store::model::{NodeKind, Timestamp};
use ironroot_store::stage::import_dir;
use ironroot_store::storage::{MemStorage, Storage};
use ironroot_store::store::{Store, StoreError};

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn t(secs: i64) -> Timestamp {
    Timestamp { secs, nanos: 0 }
}

fn primary(storage: Arc<dyn Storage>) -> Store {
    let (mut store, _) = Store::open(storage).unwrap();
    store.promote(1, 0);
    store
}

fn node_at(store: &Store, image: &str, path: &[&str]) -> ironroot_store::model::Node {
    let mut node = store.state().current(image).unwrap().root.clone();
    for name in path {
        let NodeKind::Dir { tree } = &node.kind else {
            panic!("not a dir")
        };
        node = store.objects().get_tree(tree).unwrap().entries[name.as_bytes()].clone();
    }
    node
}

#[test]
fn file_ids_follow_content_and_dir_times_only_move_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path();
    write(src, "etc/hostname", b"one");
    write(src, "etc/keep", b"same");
    write(src, "bin/tool", &vec![7u8; 300_000]);
    let mut store = primary(Arc::new(MemStorage::new()));
    let g1 = store
        .import_dir("debian", src, t(100), "first")
        .unwrap()
        .seq;
    let etc1 = node_at(&store, "debian", &["etc"]);
    let host1 = node_at(&store, "debian", &["etc", "hostname"]);
    let keep1 = node_at(&store, "debian", &["etc", "keep"]);

    write(src, "etc/hostname", b"two");
    let g2 = store
        .import_dir("debian", src, t(200), "second")
        .unwrap()
        .seq;
    let etc2 = node_at(&store, "debian", &["etc"]);
    let host2 = node_at(&store, "debian", &["etc", "hostname"]);
    assert_eq!(etc1.file_id, etc2.file_id, "directories keep their id");
    assert_ne!(host1.file_id, host2.file_id, "changed content, new id");
    assert_eq!(
        keep1.file_id,
        node_at(&store, "debian", &["etc", "keep"]).file_id
    );
    assert!(etc2.meta.mtime > etc1.meta.mtime && etc2.meta.ctime > etc1.meta.ctime);
    assert_eq!(store.state().generations[&g2].parent, Some(g1));

    let g3 = store
        .rollback("debian", g1, t(300), "rollback")
        .unwrap()
        .seq;
    let etc3 = node_at(&store, "debian", &["etc"]);
    assert_eq!(etc3.file_id, etc1.file_id);
    assert!(etc3.meta.mtime > etc2.meta.mtime, "monotonic on rollback");
    assert_eq!(store.state().current("debian").unwrap().id, g3);
    let host3 = node_at(&store, "debian", &["etc", "hostname"]);
    assert_eq!(store.read_file(host3.file_id, 0, 100).unwrap(), b"one");
    // The old file id still reads the old content: handles pin content.
    assert_eq!(store.read_file(host2.file_id, 0, 100).unwrap(), b"two");
    let tool = node_at(&store, "debian", &["bin", "tool"]);
    assert_eq!(
        store.read_file(tool.file_id, 299_990, 100).unwrap(),
        vec![7u8; 10]
    );
}

#[test]
fn hard_links_share_one_file_id() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "a", b"linked");
    std::fs::hard_link(tmp.path().join("a"), tmp.path().join("b")).unwrap();
    write(tmp.path(), "c", b"linked");
    let mut store = primary(Arc::new(MemStorage::new()));
    store.import_dir("img", tmp.path(), t(1), "m").unwrap();
    let (a, b, c) = (
        node_at(&store, "img", &["a"]),
        node_at(&store, "img", &["b"]),
        node_at(&store, "img", &["c"]),
    );
    assert_eq!(a.file_id, b.file_id);
    assert_ne!(a.file_id, c.file_id, "same bytes, separate inode");
    assert_eq!((a.meta.nlink, c.meta.nlink), (2, 1));
}

#[test]
fn secondary_refuses_writes_and_never_allocates() {
    let (mut store, _) = Store::open(Arc::new(MemStorage::new())).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        store.import_dir("x", tmp.path(), t(1), "m"),
        Err(StoreError::NotPrimary)
    ));
}

#[test]
fn acknowledged_entries_survive_crashes_at_any_point() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "f", b"content");
    for seed in 0..40u64 {
        let mem = Arc::new(MemStorage::new());
        let mut store = primary(mem.clone());
        let mut acked = Vec::new();
        for i in 0..(seed % 7 + 1) {
            write(tmp.path(), "f", format!("content {i}").as_bytes());
            acked.push(
                store
                    .import_dir("img", tmp.path(), t(i as i64), "m")
                    .unwrap(),
            );
            let lease = Lease {
                ipv4: [10, 0, 0, i as u8],
                expires_unix_secs: 99,
            };
            acked.push(store.record_lease([2, 0, 0, 0, 0, 1], lease).unwrap());
        }
        // A write in flight when the node dies.
        write(tmp.path(), "f", b"in flight");
        let staged = import_dir(store.objects_mut(), tmp.path()).unwrap();
        drop(staged);
        let hash_at_ack = store.state().content_hash();
        drop(store);
        mem.crash(Some(seed));
        let (reopened, _) = Store::open(mem.clone()).unwrap();
        assert_eq!(reopened.state().content_hash(), hash_at_ack, "seed {seed}");
        for record in &acked {
            let stored = reopened.journal().read_from(record.seq, 1).unwrap();
            assert_eq!(stored.first(), Some(record));
        }
        let root = &reopened.state().current("img").unwrap().root;
        let NodeKind::Dir { tree } = &root.kind else {
            panic!()
        };
        let tree = reopened.objects().get_tree(tree).unwrap();
        let last = format!("content {}", seed % 7);
        assert_eq!(
            reopened
                .read_file(tree.entries[&b"f"[..]].file_id, 0, 64)
                .unwrap(),
            last.as_bytes()
        );
    }
}

#[test]
fn torn_journal_tail_is_truncated_on_open() {
    let mem = Arc::new(MemStorage::new());
    let mut store = primary(mem.clone());
    let lease = Lease {
        ipv4: [10, 0, 0, 1],
        expires_unix_secs: 1,
    };
    store.record_lease([1; 6], lease.clone()).unwrap();
    let journal = mem
        .list()
        .unwrap()
        .into_iter()
        .find(|n| n.starts_with("journal-"))
        .unwrap();
    let len = mem.len(&journal).unwrap().unwrap();
    mem.append(&journal, b"IRr1\x01garbage").unwrap();
    mem.sync(&journal).unwrap();
    drop(store);
    let (mut store, report) = Store::open(mem.clone()).unwrap();
    assert_eq!(report.journal_truncated_bytes, 12);
    assert_eq!(mem.len(&journal).unwrap(), Some(len));
    store.promote(1, 0);
    assert_eq!(store.record_lease([1; 6], lease).unwrap().seq, 2);
}

#[test]
fn compaction_keeps_the_state_and_the_next_entries() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "f", b"v1");
    let mem = Arc::new(MemStorage::new());
    let mut store = primary(mem.clone());
    store.import_dir("img", tmp.path(), t(1), "one").unwrap();
    store.compact().unwrap();
    write(tmp.path(), "f", b"v2");
    store.import_dir("img", tmp.path(), t(2), "two").unwrap();
    let hash = store.state().content_hash();
    assert_eq!(store.journal().first_seq(), Some(2));
    drop(store);
    let (reopened, report) = Store::open(mem).unwrap();
    assert_eq!(report.entries_replayed, 1);
    assert_eq!(reopened.state().content_hash(), hash);
    assert_eq!(reopened.state().generations.len(), 2);
}

#[test]
fn client_views_layer_exceptions_over_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, extra) = (tmp.path().join("image"), tmp.path().join("extra"));
    write(&image, "etc/hostname", b"generic");
    write(&image, "etc/motd", b"hello");
    write(&extra, "etc/hostname", b"node7");
    write(&extra, "etc/ssh/key", b"secret");
    let mut store = primary(Arc::new(MemStorage::new()));
    store.import_dir("debian", &image, t(1), "m").unwrap();
    let staged = import_dir(store.objects_mut(), &extra).unwrap();
    let mac = [2, 0, 0, 0, 0, 7];
    store
        .upsert_client(mac, "node7", [10, 0, 0, 7], "debian", Some(&staged))
        .unwrap();
    store
        .upsert_client([2, 0, 0, 0, 0, 8], "node8", [10, 0, 0, 8], "debian", None)
        .unwrap();

    let view = store.view_by_ipv4([10, 0, 0, 7]).unwrap();
    let objects = store.objects();
    let etc = view.lookup(objects, &view.root, b"etc").unwrap().unwrap();
    let names: Vec<_> = view.readdir(objects, &etc).unwrap().into_keys().collect();
    assert_eq!(
        names,
        vec![b"hostname".to_vec(), b"motd".to_vec(), b"ssh".to_vec()]
    );
    let host = view.lookup(objects, &etc, b"hostname").unwrap().unwrap();
    assert_eq!(store.read_file(host.node.file_id, 0, 64).unwrap(), b"node7");
    let index = view.index(objects).unwrap();
    assert_eq!(index[&etc.node.file_id].node.file_id, etc.node.file_id);

    let other = store.view(&[2, 0, 0, 0, 0, 8]).unwrap();
    let etc8 = other.lookup(objects, &other.root, b"etc").unwrap().unwrap();
    assert_eq!(
        etc8.node.file_id, etc.node.file_id,
        "merged dir keeps the image's id"
    );
    let host8 = other.lookup(objects, &etc8, b"hostname").unwrap().unwrap();
    assert_eq!(
        store.read_file(host8.node.file_id, 0, 64).unwrap(),
        b"generic"
    );
    assert!(matches!(
        store.view_by_ipv4([10, 0, 0, 9]),
        Err(StoreError::UnknownAddress { .. })
    ));
}

#[test]
fn tar_import_matches_directory_import() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src, "usr/bin/tool", &vec![1u8; 100_000]);
    write(&src, "etc/hostname", b"x");
    std::os::unix::fs::symlink("../etc/hostname", src.join("usr/name")).unwrap();
    std::fs::hard_link(src.join("usr/bin/tool"), src.join("usr/bin/tool2")).unwrap();
    let tarball = tmp.path().join("root.tar");
    let status = std::process::Command::new("tar")
        .args(["--format=pax", "--xattrs", "-C"])
        .arg(&src)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let mut store = primary(Arc::new(MemStorage::new()));
    store
        .import_tar("img", std::fs::File::open(&tarball).unwrap(), t(1), "tar")
        .unwrap();
    store.import_dir("dir", &src, t(1), "dir").unwrap();
    for path in [
        &["usr", "bin", "tool"][..],
        &["etc", "hostname"],
        &["usr", "name"],
    ] {
        let (a, b) = (node_at(&store, "img", path), node_at(&store, "dir", path));
        assert_eq!(a.kind, b.kind, "{path:?}");
        assert_eq!(
            (a.meta.mode, a.meta.uid, a.meta.mtime),
            (b.meta.mode, b.meta.uid, b.meta.mtime)
        );
    }
    let (t1, t2) = (
        node_at(&store, "img", &["usr", "bin", "tool"]),
        node_at(&store, "img", &["usr", "bin", "tool2"]),
    );
    assert_eq!((t1.file_id, t1.meta.nlink), (t2.file_id, 2));
}

#[test]
fn retention_expires_old_generations_and_gc_frees_their_objects() {
    use ironroot_store::gc::Retention;
    let tmp = tempfile::tempdir().unwrap();
    let mem = Arc::new(MemStorage::new());
    let mut store = primary(mem.clone());
    let mut ids = Vec::new();
    for i in 0..4i64 {
        write(tmp.path(), "f", format!("version {i}").as_bytes());
        store
            .import_dir("img", tmp.path(), t(1_000 * i), "m")
            .unwrap();
        ids.push(node_at(&store, "img", &["f"]).file_id);
        store.objects_mut().seal().unwrap();
    }
    let day = 24 * 3600;
    // Everything is younger than a day: nothing expires.
    assert!(store
        .expired_generations(Retention::default(), t(3_000))
        .is_empty());
    let retention = Retention {
        generations_per_image_min: 2,
        age_min_secs: day as u64,
    };
    let expired = store.expired_generations(retention, t(3_000 + day));
    assert_eq!(
        expired,
        vec![1, 2],
        "the 2 newest kept, the older ones expired"
    );
    let retention = Retention {
        generations_per_image_min: 1,
        age_min_secs: 100,
    };
    let record = store
        .expire_generations(retention, t(3_000))
        .unwrap()
        .unwrap();
    assert_eq!(store.state().generations.len(), 1, "{record:?}");
    let report = store.collect_garbage().unwrap();
    assert!(report.objects_after < report.objects_before && report.bytes_freed > 0);
    assert!(matches!(
        store.read_file(ids[0], 0, 10),
        Err(StoreError::StaleFile { .. })
    ));
    assert_eq!(store.read_file(ids[3], 0, 64).unwrap(), b"version 3");
    drop(store);
    let (reopened, _) = Store::open(mem).unwrap();
    assert_eq!(reopened.read_file(ids[3], 0, 64).unwrap(), b"version 3");
}

#[test]
fn a_compaction_that_crashed_before_removing_segments_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "f", b"v1");
    let mem = Arc::new(MemStorage::new());
    let mut store = primary(mem.clone());
    store.import_dir("img", tmp.path(), t(1), "one").unwrap();
    let segment = mem
        .list()
        .unwrap()
        .into_iter()
        .find(|n| n.starts_with("journal-"))
        .unwrap();
    let old = mem.read_all(&segment).unwrap();
    store.compact().unwrap();
    drop(store);
    mem.write_atomic(&segment, &old).unwrap();
    let mut store = primary(mem.clone());
    assert_eq!(store.state().last_seq(), 1);
    write(tmp.path(), "f", b"v2");
    assert_eq!(
        store
            .import_dir("img", tmp.path(), t(2), "two")
            .unwrap()
            .seq,
        2
    );
    let hash = store.state().content_hash();
    drop(store);
    assert_eq!(Store::open(mem).unwrap().0.state().content_hash(), hash);
}

#[test]
fn a_file_whose_bytes_rotted_is_an_error_not_wrong_data() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "f", b"precious file content");
    let mem = Arc::new(MemStorage::new());
    let mut store = primary(mem.clone());
    store.import_dir("img", tmp.path(), t(1), "m").unwrap();
    let f = node_at(&store, "img", &["f"]);
    let pack = mem
        .list()
        .unwrap()
        .into_iter()
        .find(|n| n.starts_with("pack-"))
        .unwrap();
    let bytes = mem.read_all(&pack).unwrap();
    let at = bytes.windows(8).position(|w| w == b"precious").unwrap();
    assert!(mem.corrupt(&pack, at));
    let err = store.read_file(f.file_id, 0, 64).unwrap_err();
    assert!(matches!(
        err,
        StoreError::Object(ironroot_store::objects::ObjectError::Corrupt { .. })
    ));
    drop(store);
    // Reopening skips the damaged record and keeps every one after it
    // (the tree and blob were written after the chunk).
    let (store, report) = Store::open(mem).unwrap();
    assert!(report.pack.corrupt_bytes > 0 && report.pack.truncated_bytes == 0);
    assert!(store.read_file(f.file_id, 0, 64).is_err());
    assert!(store
        .objects()
        .get_tree(
            &store
                .state()
                .current("img")
                .unwrap()
                .root
                .kind
                .object()
                .unwrap()
        )
        .is_ok());
}
