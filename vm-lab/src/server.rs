//! The server side a lab boots its clients from: ironroot itself (two
//! `ironrootd` nodes and a witness, each in its own namespace), or the
//! benchmark baseline made of peers (dnsmasq, nfs-ganesha).

use std::path::{Path, PathBuf};

use ironroot_boot::Mac;
use serde::Serialize;

use crate::baseline::{BaselineClient, BaselineServer, BaselineSpec};
use ironroot_net::Clock;

use crate::bootsrc::{client_boot, write_tftp_tree, BootFiles, LAB_IMAGE};
use crate::error::LabError;
use crate::image::tree_checksum;
use crate::ironroot::{IronrootServer, IronrootSpec};
use crate::net::{client_addr, client_mac, LabNet, SERVER_ADDR};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// dnsmasq + nfs-ganesha (+ rpcbind): the benchmark baseline.
    Baseline,
    /// Two `ironrootd` nodes and a witness.
    Ironroot,
}

impl ServerKind {
    /// Whether this server side can be started at all, before any
    /// namespace is made for it.
    pub fn check_available(self) -> Result<(), LabError> {
        match self {
            ServerKind::Baseline => Ok(()),
            ServerKind::Ironroot => {
                crate::ironroot::Binaries::find()
                    .map(|_| ())
                    .map_err(|reason| LabError::ServerUnavailable {
                        server: "ironroot",
                        reason,
                    })
            }
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
    Baseline(Box<BaselineServer>),
    Ironroot(Box<IronrootServer>),
}

pub fn client_name(index: usize) -> String {
    format!("lab-vm{index}")
}

pub fn mac_text(mac: [u8; 6]) -> String {
    Mac(mac).to_string()
}

impl ServerSide {
    pub fn start<C: Clock>(
        kind: ServerKind,
        net: &mut LabNet,
        spec: &ServeSpec,
        clock: &C,
    ) -> Result<ServerSide, LabError> {
        match kind {
            ServerKind::Baseline => {
                start_baseline(net, spec).map(|s| ServerSide::Baseline(Box::new(s)))
            }
            ServerKind::Ironroot => {
                let kernel = crate::bootsrc::deb_cache().kernel()?;
                let clients = (0..spec.vms)
                    .map(|i| (client_name(i), mac_text(client_mac(i)), client_addr(i)))
                    .collect();
                let ironroot = IronrootSpec {
                    run_dir: spec.run_dir,
                    image: LAB_IMAGE,
                    image_root: spec.image_root,
                    kernel_deb: &kernel.path,
                    clients,
                };
                IronrootServer::start(net, &ironroot, clock)
                    .map(|server| ServerSide::Ironroot(Box::new(server)))
            }
        }
    }

    /// The ironroot side, or an error naming the case that needs it.
    pub fn ironroot(&mut self, case: &'static str) -> Result<&mut IronrootServer, LabError> {
        match self {
            ServerSide::Ironroot(server) => Ok(server),
            ServerSide::Baseline(_) => Err(LabError::CaseRefused {
                case,
                server: "baseline",
                reason: "the case drives ironrootd nodes",
            }),
        }
    }

    /// Set-up steps of the server side and their durations.
    pub fn setup_ms(&self) -> Vec<(&'static str, u64)> {
        match self {
            ServerSide::Baseline(server) => server.setup_ms.clone(),
            ServerSide::Ironroot(server) => server.setup_ms.clone(),
        }
    }

    /// The directory the clients' root is served from, as the server sees it.
    pub fn served_root(&self) -> PathBuf {
        match self {
            ServerSide::Baseline(server) => server.spec.export_root.clone(),
            ServerSide::Ironroot(server) => server.imported_root.clone(),
        }
    }

    /// What a client must never change: the exported tree's checksum
    /// (baseline), or the store's content hash on each node (ironroot).
    pub fn fingerprint(&self) -> Result<String, LabError> {
        match self {
            ServerSide::Baseline(server) => tree_checksum(&server.spec.export_root),
            ServerSide::Ironroot(server) => Ok((0..server.nodes.len())
                .map(|i| server.content_hash(i).unwrap_or_else(|| "down".into()))
                .collect::<Vec<_>>()
                .join(",")),
        }
    }

    pub fn check_alive(&mut self) -> Result<(), LabError> {
        match self {
            ServerSide::Baseline(server) => server.check_alive(),
            ServerSide::Ironroot(server) => server.check_alive(),
        }
    }

    pub fn logs(&self) -> String {
        match self {
            ServerSide::Baseline(server) => server.logs(),
            ServerSide::Ironroot(server) => server.logs(),
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
