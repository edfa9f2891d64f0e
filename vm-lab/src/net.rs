//! The lab's network: a switch namespace holding a bridge and one tap per
//! VM, and a server namespace joined to the bridge by a veth pair. Nothing
//! is routed: the namespaces have no link to the host's network. Every
//! name carries the lab's PID, and everything is removed when [`LabNet`]
//! drops (deleting a namespace deletes its interfaces).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::LabError;
use crate::host::{ip, ip_cleanup};
use crate::ra::RaSender;

/// VMs on one bridge (the lab's address plan has room for 100).
pub const VMS_MAX: usize = 32;
/// The lab subnet, private to the namespaces.
pub const SUBNET: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 0);
pub const PREFIX_LEN: u8 = 24;
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const FIRST_CLIENT_HOST: u8 = 100;

/// Namespaces of one lab: switch, server and the hosts added to it.
pub const HOSTS_MAX: usize = 8;

static LABS_CREATED: AtomicU32 = AtomicU32::new(0);

/// Names of one lab instance, unique per process and per lab in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabNames {
    pub tag: String,
    pub switch_ns: String,
    pub server_ns: String,
    pub bridge: String,
    /// Switch side of the server's veth pair.
    pub server_port: String,
    /// Server side of it, inside the server namespace.
    pub server_iface: String,
}

impl LabNames {
    /// `pid` and `serial` make the names unique; interface names stay
    /// within the kernel's 15 bytes.
    pub fn new(pid: u32, serial: u32) -> LabNames {
        let tag = if serial == 0 {
            format!("{pid}")
        } else {
            format!("{pid}x{serial}")
        };
        LabNames {
            switch_ns: format!("irl-{tag}-sw"),
            server_ns: format!("irl-{tag}-srv"),
            bridge: format!("ib{tag}"),
            server_port: format!("is{tag}"),
            server_iface: "lab0".into(),
            tag,
        }
    }

    /// The switch-side port of the host added with `suffix`; the server
    /// namespace's port is [`LabNames::server_port`].
    pub fn host_port(&self, suffix: char) -> String {
        format!("is{}{suffix}", self.tag)
    }

    pub fn tap(&self, vm_index: usize) -> String {
        format!("it{}v{vm_index}", self.tag)
    }
}

/// The client address and MAC of VM `index`.
pub fn client_addr(index: usize) -> Ipv4Addr {
    let host = FIRST_CLIENT_HOST as usize + index.min(VMS_MAX);
    Ipv4Addr::new(10, 99, 0, host as u8)
}

pub fn client_mac(index: usize) -> [u8; 6] {
    [0x52, 0x54, 0x00, 0x99, 0x00, index.min(VMS_MAX) as u8]
}

pub struct LabNet {
    pub names: LabNames,
    namespaces: Vec<String>,
    taps: Vec<String>,
    ra: Option<RaSender>,
}

impl LabNet {
    pub fn create() -> Result<LabNet, LabError> {
        let serial = LABS_CREATED.fetch_add(1, Ordering::SeqCst);
        let names = LabNames::new(std::process::id(), serial);
        let mut net = LabNet {
            names,
            namespaces: Vec::new(),
            taps: Vec::new(),
            ra: None,
        };
        net.build()?;
        Ok(net)
    }

    fn build(&mut self) -> Result<(), LabError> {
        let n = self.names.clone();
        for ns in [&n.switch_ns, &n.server_ns] {
            ip(&["netns", "add", ns])?;
            self.namespaces.push(ns.clone());
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        let sw = n.switch_ns.as_str();
        // No STP and no multicast snooping: ports forward at once and the
        // router advertisement (to all-nodes) reaches every tap.
        ip(&[
            "-n",
            sw,
            "link",
            "add",
            &n.bridge,
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        ip(&[
            "-n",
            sw,
            "link",
            "add",
            &n.server_port,
            "type",
            "veth",
            "peer",
            "name",
            &n.server_iface,
            "netns",
            &n.server_ns,
        ])?;
        ip(&[
            "-n",
            sw,
            "link",
            "set",
            &n.server_port,
            "master",
            &n.bridge,
            "up",
        ])?;
        ip(&["-n", sw, "link", "set", &n.bridge, "up"])?;
        let server = format!("{SERVER_ADDR}/{PREFIX_LEN}");
        let srv = n.server_ns.as_str();
        ip(&["-n", srv, "addr", "add", &server, "dev", &n.server_iface])?;
        ip(&["-n", srv, "link", "set", &n.server_iface, "up"])?;
        self.ra = Some(RaSender::start(&n.switch_ns, &n.bridge)?);
        Ok(())
    }

    /// A tap for VM `index`, enslaved to the bridge; QEMU must run in the
    /// switch namespace to open it.
    pub fn add_tap(&mut self, index: usize) -> Result<String, LabError> {
        if self.taps.len() >= VMS_MAX {
            return Err(LabError::LimitExceeded {
                limit: "VMS_MAX",
                value: self.taps.len() + 1,
                max: VMS_MAX,
            });
        }
        let tap = self.names.tap(index);
        let sw = self.names.switch_ns.clone();
        ip(&["-n", &sw, "tuntap", "add", "dev", &tap, "mode", "tap"])?;
        self.taps.push(tap.clone());
        ip(&[
            "-n",
            &sw,
            "link",
            "set",
            &tap,
            "master",
            &self.names.bridge,
            "up",
        ])?;
        Ok(tap)
    }

    /// Another host on the bridge: namespace `irl-<tag>-<suffix>` with
    /// `lab0` at `addr`; `suffix` is one lowercase letter (it also names the
    /// switch-side port). Returns the namespace.
    pub fn add_host(&mut self, suffix: char, addr: Ipv4Addr) -> Result<String, LabError> {
        if self.namespaces.len() >= HOSTS_MAX {
            return Err(LabError::LimitExceeded {
                limit: "HOSTS_MAX",
                value: self.namespaces.len() + 1,
                max: HOSTS_MAX,
            });
        }
        let ns = format!("irl-{}-{suffix}", self.names.tag);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let port = self.names.host_port(suffix);
        let sw = self.names.switch_ns.clone();
        ip(&[
            "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "lab0", "netns", &ns,
        ])?;
        ip(&[
            "-n",
            &sw,
            "link",
            "set",
            &port,
            "master",
            &self.names.bridge,
            "up",
        ])?;
        let cidr = format!("{addr}/{PREFIX_LEN}");
        ip(&["-n", &ns, "addr", "add", &cidr, "dev", "lab0"])?;
        ip(&["-n", &ns, "link", "set", "lab0", "up"])?;
        Ok(ns)
    }

    /// Takes a host's bridge port down (`up` false) or up again: its link
    /// is cut as if its cable were pulled.
    pub fn set_port(&self, port: &str, up: bool) -> Result<(), LabError> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.names.switch_ns, "link", "set", port, state])?;
        Ok(())
    }

    /// Router advertisements sent so far (the report shows the RA ran).
    pub fn ra_sent(&self) -> u64 {
        self.ra.as_ref().map_or(0, RaSender::sent)
    }
}

impl Drop for LabNet {
    fn drop(&mut self) {
        self.ra.take();
        // Deleting a namespace removes its interfaces (taps, veth, bridge);
        // the processes in it were ours and are gone by now.
        for ns in self.namespaces.drain(..).rev() {
            if let Err(e) = ip_cleanup(&["netns", "del", &ns]) {
                eprintln!("vm-lab: cleanup: cannot delete namespace {ns}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limit() {
        let names = LabNames::new(4_194_304, 12);
        for iface in [
            &names.bridge,
            &names.server_port,
            &names.server_iface,
            &names.tap(31),
            &names.host_port('w'),
        ] {
            assert!(iface.len() <= 15, "{iface}");
        }
        assert_eq!(names.switch_ns, "irl-4194304x12-sw");
        assert_ne!(LabNames::new(7, 0).bridge, LabNames::new(7, 1).bridge);
    }

    #[test]
    fn client_plan_stays_in_the_subnet() {
        assert_eq!(client_addr(0), Ipv4Addr::new(10, 99, 0, 100));
        assert_eq!(client_mac(3), [0x52, 0x54, 0, 0x99, 0, 3]);
        assert_eq!(client_addr(VMS_MAX + 50), client_addr(VMS_MAX));
    }
}
