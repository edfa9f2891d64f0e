//! Bad input at start: each case gives one clear error line naming what is
//! wrong and a non-zero exit, and leaves nothing running or half-created.

use std::path::Path;
use std::process::Command;

const KEY: &str = "8d3c0b7e1f2a4d5c6b7a8998a7b6c5d4e3f201f2e3d4c5b6a79881726354a5b6";

fn config(dir: &Path, replication_port: u16) -> String {
    ironrootd::config::TwoNodeLayout {
        cluster_id: 1,
        key_hex: KEY.to_owned(),
        nodes: [
            ("a".into(), [127, 0, 0, 1].into()),
            ("b".into(), [127, 0, 0, 2].into()),
        ],
        witness: None,
        vip: [127, 0, 0, 10].into(),
        prefix_len: 8,
        interface: "lo".into(),
        dead_ms: 1500,
        store_dir: dir.join("store"),
        replication_port,
        handle_key_file: dir.join("handle.key"),
        admin_socket: dir.join("admin.sock"),
        metrics_listen: "127.0.0.1:0".into(),
        extra: String::new(),
    }
    .render()
}

/// Run ironrootd on `text` as node `a`; (exit code, stderr).
fn start(dir: &Path, text: &str) -> (i32, String) {
    let path = dir.join("ironroot.toml");
    std::fs::write(&path, text).expect("write config");
    let output = Command::new(env!("CARGO_BIN_EXE_ironrootd"))
        .args(["--config", &path.display().to_string(), "--node", "a"])
        .output()
        .expect("run ironrootd");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    lines[0]
}

#[test]
fn a_malformed_config_names_the_file_and_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("handle.key"), "00".repeat(32)).expect("key");
    let text = config(dir.path(), 17790).replace("[store]", "[store]\nbogus = 1");
    let (code, stderr) = start(dir.path(), &text);
    assert_ne!(code, 0);
    let line = one_line(&stderr);
    assert!(
        line.starts_with("ironrootd: ") && line.contains("ironroot.toml") && line.contains("bogus"),
        "{line}"
    );
    assert!(
        !dir.path().join("store").exists(),
        "nothing created before validation"
    );
}

#[test]
fn a_missing_key_file_names_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stderr) = start(dir.path(), &config(dir.path(), 17791));
    assert_ne!(code, 0);
    let line = one_line(&stderr);
    assert!(
        line.contains("nfs.handle_key_file") && line.contains("handle.key"),
        "{line}"
    );
}

#[test]
fn a_port_in_use_names_the_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("handle.key"), "00".repeat(32)).expect("key");
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let (code, stderr) = start(dir.path(), &config(dir.path(), port));
    assert_ne!(code, 0);
    let line = one_line(&stderr);
    assert!(
        line.contains(&format!("store.replication_port {port}")) && line.contains("in use"),
        "{line}"
    );
    assert!(
        !dir.path().join("admin.sock").exists(),
        "the admin API never started"
    );
}

/// Whether this process runs as root (mounting needs it).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
    })
}

#[test]
fn a_store_directory_on_a_full_disk_is_refused_before_anything_starts() {
    if !is_root() {
        assert!(
            std::env::var("IRONROOT_REQUIRE_PEERS").as_deref() != Ok("1"),
            "needs root to mount a tmpfs (IRONROOT_REQUIRE_PEERS=1)"
        );
        eprintln!("skipped: needs root to mount a tmpfs");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("handle.key"), "00".repeat(32)).expect("key");
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).expect("store dir");
    let path = dir.path().join("ironroot.toml");
    std::fs::write(&path, config(dir.path(), 17792)).expect("write config");
    // A 512 KiB tmpfs filled to the last block, in a private mount
    // namespace: it disappears with the process, nothing to clean up.
    // Bounded: a daemon that started anyway is killed after 30 s.
    let script = format!(
        "mount -t tmpfs -o size=512k tmpfs {store} && \
         (dd if=/dev/zero of={store}/fill bs=4k 2>/dev/null; true) && \
         exec timeout 30 {daemon} --config {config} --node a",
        store = store.display(),
        daemon = env!("CARGO_BIN_EXE_ironrootd"),
        config = path.display(),
    );
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("run unshare");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{stderr}");
    let line = one_line(&stderr);
    assert!(
        line.starts_with(&format!(
            "ironrootd: store.dir {}: cannot write 1 MiB",
            store.display()
        )) && line.contains("No space left on device"),
        "{line}"
    );
    assert!(
        !dir.path().join("admin.sock").exists(),
        "the admin API never started"
    );
    assert_eq!(
        std::fs::read_dir(&store).expect("store dir").count(),
        0,
        "the tmpfs was private to the daemon's mount namespace"
    );
}
