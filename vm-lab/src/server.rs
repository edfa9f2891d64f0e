//! The server side a lab boots its clients from. Pluggable: the baseline
//! made of peers runs today; the ironroot side (two `ironrootd` nodes and a
//! witness, each in its own namespace) is a typed variant that refuses
//! until the lab drives that daemon.

use std::path::{Path, PathBuf};

use ironroot_boot::Mac;
use serde::Serialize;

use crate::baseline::{BaselineClient, BaselineServer, BaselineSpec};
use crate::bootsrc::{client_boot, write_tftp_tree, BootFiles};
use crate::error::LabError;
use crate::net::{client_addr, client_mac, LabNet, SERVER_ADDR};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// dnsmasq + nfs-ganesha (+ rpcbind): the benchmark baseline.
    Baseline,
    /// Two `ironrootd` nodes and a witness.
    Ironroot,
}

/// Why the ironroot server side cannot run yet.
pub const IRONROOT_UNAVAILABLE: &str = "the lab does not drive ironrootd yet (two nodes and a \
     witness in their own namespaces from a generated config, the client root and kernel imported \
     through the admin API); use --server baseline";

impl ServerKind {
    /// Whether this server side can be started at all, before any
    /// namespace is made for it.
    pub fn check_available(self) -> Result<(), LabError> {
        match self {
            ServerKind::Baseline => Ok(()),
            ServerKind::Ironroot => Err(LabError::ServerUnavailable {
                server: "ironroot",
                reason: IRONROOT_UNAVAILABLE,
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Baseline => "baseline",
            ServerKind::Ironroot => "ironroot",
        }
    }

    pub fn parse(text: &str) -> Option<ServerKind> {
        match text {
            "baseline" => Some(ServerKind::Baseline),
            "ironroot" => Some(ServerKind::Ironroot),
            _ => None,
        }
    }
}

/// What the server side serves: the same for every kind.
pub struct ServeSpec<'a> {
    pub boot: &'a BootFiles,
    pub image_root: &'a Path,
    pub run_dir: &'a Path,
    pub vms: usize,
}

pub enum ServerSide {
    Baseline(BaselineServer),
}

pub fn client_name(index: usize) -> String {
    format!("lab-vm{index}")
}

pub fn mac_text(mac: [u8; 6]) -> String {
    Mac(mac).to_string()
}

impl ServerSide {
    pub fn start(kind: ServerKind, net: &LabNet, spec: &ServeSpec) -> Result<ServerSide, LabError> {
        match kind {
            ServerKind::Baseline => start_baseline(net, spec).map(ServerSide::Baseline),
            ServerKind::Ironroot => {
                Err(kind
                    .check_available()
                    .err()
                    .unwrap_or(LabError::ServerUnavailable {
                        server: "ironroot",
                        reason: IRONROOT_UNAVAILABLE,
                    }))
            }
        }
    }

    /// The directory the clients' root is served from, as the server sees it.
    pub fn served_root(&self) -> PathBuf {
        match self {
            ServerSide::Baseline(server) => server.spec.export_root.clone(),
        }
    }

    pub fn check_alive(&mut self) -> Result<(), LabError> {
        match self {
            ServerSide::Baseline(server) => server.check_alive(),
        }
    }

    pub fn logs(&self) -> String {
        match self {
            ServerSide::Baseline(server) => server.logs(),
        }
    }
}

fn start_baseline(net: &LabNet, spec: &ServeSpec) -> Result<BaselineServer, LabError> {
    let debs = crate::bootsrc::deb_cache();
    let tftp_root = spec.run_dir.join("tftp");
    let clients: Vec<(Mac, ironroot_boot::ClientBoot)> = (0..spec.vms)
        .map(|i| {
            (
                Mac(client_mac(i)),
                client_boot(SERVER_ADDR, &client_name(i)),
            )
        })
        .collect();
    write_tftp_tree(&debs, &tftp_root, spec.boot, &clients)?;
    let baseline_clients = (0..spec.vms)
        .map(|i| BaselineClient {
            mac: mac_text(client_mac(i)),
            addr: client_addr(i),
            name: client_name(i),
            ipxe_script: ironroot_boot::bootcfg::ipxe_script_path(Mac(client_mac(i))),
        })
        .collect();
    BaselineServer::start(BaselineSpec {
        netns: net.names.server_ns.clone(),
        iface: net.names.server_iface.clone(),
        server_addr: SERVER_ADDR,
        pool: (client_addr(0), client_addr(crate::net::VMS_MAX)),
        tftp_root,
        export_root: spec.image_root.to_path_buf(),
        run_dir: spec.run_dir.join("baseline"),
        clients: baseline_clients,
        chainload: "ipxe/undionly.kpxe".into(),
    })
}
