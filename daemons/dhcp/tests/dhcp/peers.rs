//! Real DHCP clients against the real driver: two network namespaces made
//! by the test, joined by a veth pair; the server runs (on a thread that
//! entered the server namespace) with the tokio backend, the client is
//! busybox `udhcpc` (Debian `busybox`).

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ironroot_dhcp::{serve, DhcpServer, DriverOptions, LeaseLog, MemoryLeaseLog, MemoryRegistry};
use ironroot_net::tokio_backend::TokioRuntime;

use crate::support::*;

const CLIENT_WAIT: Duration = Duration::from_secs(30);
/// Poll interval of the bounded waits (counted, so no clock is read).
const POLL: Duration = Duration::from_millis(50);
const POLLS_MAX: u128 = CLIENT_WAIT.as_millis() / POLL.as_millis();

/// Whether the tools and privileges are there; with IRONROOT_REQUIRE_PEERS=1
/// their absence fails the test.
fn peers_available(programs: &[&str]) -> bool {
    let required = std::env::var("IRONROOT_REQUIRE_PEERS").is_ok_and(|v| v == "1");
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|program| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {program}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })
        .collect();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if missing.is_empty() && root {
        return true;
    }
    let why =
        format!("missing programs {missing:?} (packages: scripts/packages/dhcp.txt), root: {root}");
    assert!(!required, "IRONROOT_REQUIRE_PEERS=1 but {why}");
    eprintln!("skipping real-peer DHCP test: {why}");
    false
}

fn run(args: &[&str]) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap_or_else(|error| panic!("{args:?}: {error}"));
    assert!(status.success(), "{args:?} failed: {status}");
}

/// Two namespaces and a veth pair, removed on drop.
struct Lab {
    server_ns: String,
    client_ns: String,
    server_if: String,
    client_if: String,
    dir: PathBuf,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let pid = std::process::id();
        let lab = Lab {
            server_ns: format!("irdhcp-{tag}s-{pid}"),
            client_ns: format!("irdhcp-{tag}c-{pid}"),
            server_if: format!("ird{tag}s{}", pid % 100_000),
            client_if: format!("ird{tag}c{}", pid % 100_000),
            dir: std::env::temp_dir().join(format!("irdhcp-{tag}-{pid}")),
        };
        std::fs::create_dir_all(&lab.dir).expect("temp dir");
        run(&["ip", "netns", "add", &lab.server_ns]);
        run(&["ip", "netns", "add", &lab.client_ns]);
        run(&[
            "ip",
            "link",
            "add",
            &lab.server_if,
            "type",
            "veth",
            "peer",
            "name",
            &lab.client_if,
        ]);
        run(&["ip", "link", "set", &lab.server_if, "netns", &lab.server_ns]);
        run(&["ip", "link", "set", &lab.client_if, "netns", &lab.client_ns]);
        let vip = format!("{VIP}/24");
        lab.exec(
            &lab.server_ns,
            &["ip", "addr", "add", &vip, "dev", &lab.server_if],
        );
        for (ns, dev) in [
            (&lab.server_ns, &lab.server_if),
            (&lab.client_ns, &lab.client_if),
        ] {
            lab.exec(ns, &["ip", "link", "set", "lo", "up"]);
            lab.exec(ns, &["ip", "link", "set", dev, "up"]);
        }
        lab
    }

    fn exec(&self, ns: &str, args: &[&str]) {
        let mut all = vec!["ip", "netns", "exec", ns];
        all.extend_from_slice(args);
        run(&all);
    }

    fn client_mac(&self) -> ironroot_dhcp::Mac {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.client_ns, "cat"])
            .arg(format!("/sys/class/net/{}/address", self.client_if))
            .output()
            .expect("read MAC");
        let text = String::from_utf8_lossy(&output.stdout);
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(text.trim().split(':')) {
            *byte = u8::from_str_radix(part, 16).expect("hex");
        }
        ironroot_dhcp::Mac(mac)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it; the end may
        // still be in ours if setup failed half way.
        let _ = Command::new("ip")
            .args(["link", "del", &self.server_if])
            .stderr(Stdio::null())
            .status();
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server on its own thread inside the server namespace; stop it by
/// dropping or sending on the returned channel.
fn start_server(
    lab: &Lab,
    server: DhcpServer<MemoryRegistry>,
    log: Arc<MemoryLeaseLog>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<DhcpServer<MemoryRegistry>>,
) {
    let ns_path = Path::new("/var/run/netns").join(&lab.server_ns);
    let device = lab.server_if.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let ns = File::open(&ns_path).expect("open netns");
        // SAFETY: setns on a valid namespace fd affects only this thread,
        // which creates its sockets after the call.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio");
        runtime.block_on(async move {
            let options = DriverOptions::standard(false, Some(device));
            let serving = serve(TokioRuntime::with_seed(7), server, log, options, async {
                let _ = stopped.await;
            });
            let _ = ready_tx.send(());
            serving.await.expect("driver")
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server thread started");
    // Let the bind happen before the client's first DISCOVER.
    std::thread::sleep(Duration::from_millis(200));
    (stop, thread)
}

/// Wait for `child` at most `CLIENT_WAIT`; kill it (by PID) if it hangs.
fn wait_bounded(mut child: Child, what: &str) -> std::process::ExitStatus {
    for _ in 0..POLLS_MAX {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{what} did not finish within {CLIENT_WAIT:?}");
}

/// A client hook script that dumps its environment when `condition` holds.
fn env_script(lab: &Lab, condition: &str) -> (String, PathBuf) {
    let script = lab.dir.join("script.sh");
    let out = lab.dir.join("env");
    let text = format!(
        "#!/bin/sh\n{condition} && env > {}.tmp && mv {0}.tmp {0}\nexit 0\n",
        out.display()
    );
    std::fs::write(&script, text).expect("script");
    run(&["chmod", "+x", &script.display().to_string()]);
    (script.display().to_string(), out)
}

/// Parse `KEY=value` lines the udhcpc script wrote.
fn env_file(path: &Path) -> std::collections::BTreeMap<String, String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("udhcpc script output {}: {error}", path.display()));
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn udhcpc_gets_the_reserved_address_and_boot_options() {
    if !peers_available(&["ip", "busybox"]) {
        return;
    }
    let lab = Lab::new("u");
    let mac = lab.client_mac();
    let reserved = Ipv4Addr::new(10, 0, 0, 42);
    let mut registry = MemoryRegistry::new(16);
    registry
        .insert(ironroot_dhcp::Reservation {
            mac,
            name: "node42".into(),
            ip: reserved,
            image: "debian12".into(),
        })
        .expect("reservation");
    let server = DhcpServer::new(config(), registry).expect("config");
    let (stop, thread) = start_server(&lab, server, Arc::new(MemoryLeaseLog::default()));

    let (script, out) = env_script(&lab, "[ \"$1\" = bound ]");
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.client_ns, "busybox", "udhcpc"])
        .args(["-i", &lab.client_if, "-f", "-q", "-n", "-t", "5", "-T", "1"])
        .args(["-s", &script])
        .args([
            "-V",
            "PXEClient:Arch:00000:UNDI:002001",
            "-O",
            "rootpath",
            "-O",
            "bootfile",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn udhcpc");
    let status = wait_bounded(child, "udhcpc");
    let _ = stop.send(());
    let server = thread.join().expect("server thread");
    assert!(status.success(), "udhcpc got no lease: {status}");

    let env = env_file(&out);
    let get = |key: &str| env.get(key).map(String::as_str).unwrap_or("");
    assert_eq!(get("ip"), reserved.to_string());
    assert_eq!(get("serverid"), VIP.to_string());
    assert_eq!(get("siaddr"), VIP.to_string());
    assert_eq!(get("boot_file"), "undionly.kpxe");
    assert_eq!(get("bootfile"), "undionly.kpxe");
    assert_eq!(get("rootpath"), format!("{VIP}:/"));
    assert_eq!(get("hostname"), "node42");
    assert_eq!(get("subnet"), MASK.to_string());
    assert_eq!(get("router"), ROUTER.to_string());
    let counters = server.counters();
    assert!(counters.offers >= 1 && counters.acks >= 1, "{counters:?}");
    assert_eq!(
        counters.lease_writes, 0,
        "reservations need no journal write"
    );
}

#[test]
fn udhcpc_as_ipxe_gets_a_pool_lease_after_the_journal_write_and_its_script() {
    if !peers_available(&["ip", "busybox"]) {
        return;
    }
    let lab = Lab::new("p");
    let mac = lab.client_mac();
    let log = Arc::new(MemoryLeaseLog::default());
    let server = DhcpServer::new(pool_config(100, 110), MemoryRegistry::new(16)).expect("config");
    let (stop, thread) = start_server(&lab, server, Arc::clone(&log));
    let (script, out) = env_script(&lab, "[ \"$1\" = bound ]");
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.client_ns, "busybox", "udhcpc"])
        .args([
            "-i",
            &lab.client_if,
            "-f",
            "-q",
            "-n",
            "-t",
            "5",
            "-T",
            "1",
            "-s",
            &script,
        ])
        // User class "iPXE" (option 77) and client arch EFI x64 (93).
        .args(["-x", "0x4d:69505845", "-x", "0x5d:0007", "-O", "bootfile"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn udhcpc");
    let status = wait_bounded(child, "udhcpc");
    let _ = stop.send(());
    let server = thread.join().expect("server thread");
    assert!(status.success(), "udhcpc got no lease: {status}");

    let env = env_file(&out);
    let get = |key: &str| env.get(key).map(String::as_str).unwrap_or("");
    let ip: Ipv4Addr = get("ip").parse().expect("ip");
    assert!((100..=110).contains(&ip.octets()[3]), "{ip} from the pool");
    assert_eq!(get("lease"), "600");
    let script_url = format!("tftp://{VIP}/ipxe/clients/{}.ipxe", mac.hyphenated());
    assert_eq!(get("boot_file"), script_url);
    let records = log.records();
    assert_eq!(
        records.len(),
        1,
        "one durable lease before the ACK: {records:?}"
    );
    assert_eq!(records[0].ip, ip);
    assert_eq!(server.counters().lease_writes, 1);
}

#[test]
fn dhclient_gets_the_reserved_address_and_root_path() {
    if !peers_available(&["ip", "dhclient"]) {
        return;
    }
    let lab = Lab::new("d");
    let mut registry = MemoryRegistry::new(16);
    let reserved = Ipv4Addr::new(10, 0, 0, 43);
    registry
        .insert(ironroot_dhcp::Reservation {
            mac: lab.client_mac(),
            name: "node43".into(),
            ip: reserved,
            image: "debian12".into(),
        })
        .expect("reservation");
    let server = DhcpServer::new(config(), registry).expect("config");
    let (stop, thread) = start_server(&lab, server, Arc::new(MemoryLeaseLog::default()));
    let (script, out) = env_script(&lab, "[ \"$reason\" = BOUND ]");
    let conf = lab.dir.join("dhclient.conf");
    let request = "request subnet-mask, routers, host-name, root-path, dhcp-server-identifier;\n";
    std::fs::write(&conf, request).expect("conf");
    let dir = lab.dir.display().to_string();
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client_ns,
            "dhclient",
            "-4",
            "-d",
            "-1",
            "-sf",
            &script,
        ])
        .args(["-cf", &conf.display().to_string()])
        .args([
            "-lf",
            &format!("{dir}/leases"),
            "-pf",
            &format!("{dir}/pid"),
        ])
        .arg(&lab.client_if)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dhclient");
    // dhclient -d stays in the foreground after binding: wait for the
    // script's output, then stop it by its PID.
    for _ in 0..POLLS_MAX {
        if out.exists() {
            break;
        }
        std::thread::sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = stop.send(());
    let server = thread.join().expect("server thread");
    let env = env_file(&out);
    let get = |key: &str| env.get(key).map(String::as_str).unwrap_or("");
    assert_eq!(get("new_ip_address"), reserved.to_string());
    assert_eq!(get("new_dhcp_server_identifier"), VIP.to_string());
    assert_eq!(get("new_root_path"), format!("{VIP}:/"));
    assert_eq!(get("new_host_name"), "node43");
    assert_eq!(get("new_subnet_mask"), MASK.to_string());
    assert!(server.counters().acks >= 1);
}
