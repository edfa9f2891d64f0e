//! A network namespace made by the test, with a tap for the QEMU guest's
//! NIC, busybox udhcpd (Debian's busybox-static) handing out one static
//! lease, and optionally ironroot's own NFS server serving a directory.
//! Addresses are TEST-NET-1 inside the namespace; everything is removed on
//! drop and only processes and threads started here are stopped.

use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ironroot_net::tokio_backend::TokioRuntime;
use ironroot_nfs::driver::{bind, serve};
use ironroot_nfs::{Config, LoadLimits, MemFs, Server, Tree};

use super::busybox_binary;

pub const LAB_SERVER: &str = "192.0.2.1";
pub const LAB_SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const LAB_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
pub const LAB_TAP: &str = "irtap0";
/// QEMU's default MAC for the first NIC.
const GUEST_MAC: &str = "52:54:00:12:34:56";
const NFS_START_SECS_MAX: u64 = 10;

pub(super) struct Owned(pub(super) Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// ironroot's NFS server on its own thread inside the namespace.
pub(super) struct NfsServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for NfsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub struct Lab {
    pub netns: String,
    nfs: Option<NfsServer>,
    dhcpd: Option<Owned>,
}

pub fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Lab {
    /// `nfs_root`: a directory to serve as `VIP:/` to the guest.
    pub fn create(dir: &Path, nfs_root: Option<&Path>) -> Result<Lab, String> {
        let busybox = busybox_binary(dir).ok_or("busybox-static unavailable")?;
        static LABS: AtomicUsize = AtomicUsize::new(0);
        let serial = LABS.fetch_add(1, Ordering::Relaxed);
        let netns = format!("irboot{}-{serial}", std::process::id());
        ip(&["netns", "add", &netns])?;
        let mut lab = Lab {
            netns,
            nfs: None,
            dhcpd: None,
        };
        let ns = lab.netns.clone();
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns, "tuntap", "add", "dev", LAB_TAP, "mode", "tap"])?;
        let cidr = format!("{LAB_SERVER}/24");
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", LAB_TAP])?;
        ip(&["-n", &ns, "link", "set", LAB_TAP, "up"])?;
        lab.dhcpd = Some(start_udhcpd(&ns, LAB_TAP, &busybox, dir)?);
        if let Some(root) = nfs_root {
            lab.nfs = Some(start_nfs(&ns, root)?);
        }
        Ok(lab)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.dhcpd.take();
        self.nfs.take();
        let _ = ip(&["netns", "del", &self.netns]);
    }
}

pub(super) fn start_udhcpd(
    netns: &str,
    interface: &str,
    busybox: &Path,
    dir: &Path,
) -> Result<Owned, String> {
    let config = dir.join("udhcpd.conf");
    let text = format!(
        "start 192.0.2.100\nend 192.0.2.109\ninterface {interface}\n\
         lease_file {leases}\npidfile {pid}\nsiaddr {LAB_SERVER}\n\
         static_lease {GUEST_MAC} {LAB_CLIENT_IP}\n\
         option subnet 255.255.255.0\noption lease 600\n",
        leases = dir.join("leases").display(),
        pid = dir.join("udhcpd.pid").display(),
    );
    fs::write(&config, text).map_err(|e| e.to_string())?;
    fs::write(dir.join("leases"), b"").map_err(|e| e.to_string())?;
    let child = Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(busybox)
        .args(["udhcpd", "-f"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("udhcpd: {e}"))?;
    Ok(Owned(child))
}

/// Serves `root` to the guest's address on portmap 111, MOUNT 20048 and
/// NFS 2049 of the lab address, from a thread that joined the namespace.
pub(super) fn start_nfs(netns: &str, root: &Path) -> Result<NfsServer, String> {
    let tree = Tree::from_dir(root, LoadLimits::default()).map_err(|e| e.to_string())?;
    let ns_file = fs::File::open(format!("/var/run/netns/{netns}")).map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let thread = std::thread::spawn(move || {
        // SAFETY: setns only changes this thread's network namespace; the
        // descriptor is open for the duration of the call.
        if unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            let _ = ready_tx.send(Err(format!("setns: {}", std::io::Error::last_os_error())));
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async move {
            let net = TokioRuntime::with_seed(7);
            let mut memfs = MemFs::new();
            memfs.add_client(LAB_CLIENT_IP, 1, Arc::new(tree));
            let config = Config {
                handle_key: [7; 32],
                ..Config::default()
            };
            let server = Arc::new(Server::new(config, memfs));
            let mut endpoints = Vec::new();
            for port in [111, 20048, 2049] {
                match bind(&net, LAB_SERVER_IP, port).await {
                    Ok(endpoint) => endpoints.push(endpoint),
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("bind {port}: {e}")));
                        return;
                    }
                }
            }
            let _ = ready_tx.send(Ok(()));
            tokio::select! {
                result = serve(net, server, endpoints) => {
                    eprintln!("nfs server stopped: {result:?}");
                }
                _ = stop_rx => {}
            }
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(NFS_START_SECS_MAX))
        .map_err(|e| format!("nfs server did not start: {e}"))??;
    Ok(NfsServer {
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}
