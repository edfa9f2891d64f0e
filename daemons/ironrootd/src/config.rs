//! `/etc/ironroot/ironroot.toml`: one file for both nodes and the witness.
//! Parsed with unknown keys rejected, then validated into [`Settings`] for
//! one node (or the witness); every error names the key path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file as operators write it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IronrootFile {
    pub cluster: ironroot_cluster::ClusterFile,
    pub store: StoreSection,
    #[serde(default)]
    pub nfs: NfsSection,
    pub dhcp: ironroot_dhcp::Config,
    #[serde(default)]
    pub tftp: ironroot_tftp::TftpConfig,
    #[serde(default)]
    pub boot: BootSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub log: LogSection,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// Where the store keeps objects, the journal and refs.
    pub dir: PathBuf,
    /// Address the replication listener binds on this node; the peer
    /// connects to the same port on the peer's first link address.
    #[serde(default = "default_replication_port")]
    pub replication_port: u16,
    /// Who wins when both nodes wrote after their last common entry.
    #[serde(default)]
    pub after_split_brain: AfterSplitBrain,
    /// Whether the active node goes on acknowledging writes while the peer
    /// is away (once it is recorded Outdated), or refuses them.
    #[serde(default)]
    pub degraded: Degraded,
    /// How often the active node expires generations and collects the
    /// objects nothing retained reaches (0: never).
    #[serde(default = "default_gc_interval_secs")]
    pub gc_interval_secs: u64,
    /// Generations of each image always kept.
    #[serde(default = "default_keep_generations")]
    pub keep_generations: usize,
    /// Generations younger than this are kept (a client still running an
    /// old binary keeps reading it).
    #[serde(default = "default_keep_secs")]
    pub keep_secs: u64,
}

fn default_gc_interval_secs() -> u64 {
    3600
}

fn default_keep_generations() -> usize {
    ironroot_store::gc::Retention::default().generations_per_image_min
}

fn default_keep_secs() -> u64 {
    ironroot_store::gc::Retention::default().age_min_secs
}

/// `store.after_split_brain`, DRBD's after-sb policies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterSplitBrain {
    /// Report and refuse to connect until an operator resolves it.
    #[default]
    Disconnect,
    /// The side promoted later loses its changes (kept as branches).
    DiscardYoungerPrimary,
    /// The side with fewer changes (leases not counted) loses; a tie
    /// disconnects.
    DiscardLeastChanges,
    /// A side that changed nothing but leases loses; otherwise disconnect.
    DiscardZeroChanges,
}

/// `store.degraded`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Degraded {
    /// Acknowledge writes once the peer is recorded Outdated.
    #[default]
    AcceptWrites,
    /// Never acknowledge a write the peer does not hold.
    RefuseWrites,
}

impl AfterSplitBrain {
    pub fn policy(self) -> ironroot_store::replication::SplitBrainPolicy {
        use ironroot_store::replication::SplitBrainPolicy as P;
        match self {
            AfterSplitBrain::Disconnect => P::Disconnect,
            AfterSplitBrain::DiscardYoungerPrimary => P::DiscardYoungerPrimary,
            AfterSplitBrain::DiscardLeastChanges => P::DiscardLeastChanges,
            AfterSplitBrain::DiscardZeroChanges => P::DiscardZeroChanges,
        }
    }
}

impl Degraded {
    pub fn policy(self) -> ironroot_store::replication::DegradedPolicy {
        use ironroot_store::replication::DegradedPolicy as P;
        match self {
            Degraded::AcceptWrites => P::AcceptWhenOutdated,
            Degraded::RefuseWrites => P::RefuseWrites,
        }
    }
}

fn default_replication_port() -> u16 {
    7790
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NfsSection {
    pub portmap_port: u16,
    pub mount_port: u16,
    pub nfs_port: u16,
    /// 32 bytes, hex, identical on both nodes: the key of the file-handle MAC.
    pub handle_key_file: PathBuf,
    /// UDP port on which the active tells the standby its clients' TCP
    /// connections, so that after a takeover the new active resets them and
    /// the clients reconnect at once (0: off).
    pub takeover_hints_port: u16,
}

impl Default for NfsSection {
    fn default() -> NfsSection {
        NfsSection {
            portmap_port: 111,
            mount_port: 20048,
            nfs_port: 2049,
            handle_key_file: PathBuf::from("/etc/ironroot/handle.key"),
            takeover_hints_port: 7791,
        }
    }
}

/// What the generated boot configs add for every client.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootSection {
    /// Extra kernel command-line arguments (e.g. `no-timer-check`).
    pub kernel_extra: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    pub socket: PathBuf,
}

impl Default for AdminSection {
    fn default() -> AdminSection {
        AdminSection {
            socket: PathBuf::from("/run/ironroot/admin.sock"),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// `None` turns the endpoint off.
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsSection {
    fn default() -> MetricsSection {
        MetricsSection {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9450))),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// One JSON object per line instead of text.
    pub json: bool,
    /// A `tracing` filter (`info`, `debug`, `info,ironroot_dhcp=debug`);
    /// the environment variable `IRONROOT_LOG` overrides it. Reloaded on
    /// SIGHUP.
    pub level: Option<String>,
}

impl LogSection {
    /// The filter directive to run with when unset: `info`, without the
    /// netlink message crate's warnings about attributes newer kernels add
    /// (one per VIP renewal, harmless).
    pub const DEFAULT_FILTER: &'static str = "info,netlink_packet_route=error";

    /// The filter directive to run with.
    pub fn filter(&self) -> &str {
        self.level.as_deref().unwrap_or(Self::DEFAULT_FILTER)
    }

    fn validate(&self) -> Result<(), String> {
        tracing_subscriber::EnvFilter::try_new(self.filter())
            .map(|_| ())
            .map_err(|e| format!("{:?}: {e}", self.filter()))
    }
}

/// Why the configuration was refused: the file, the key path and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
}

/// What a node runs with.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    pub name: String,
    pub cluster: ironroot_cluster::ClusterConfig,
    pub store: StoreSection,
    pub nfs: NfsSection,
    pub handle_key: [u8; 32],
    pub dhcp: ironroot_dhcp::Config,
    pub tftp: ironroot_tftp::Config,
    pub boot_extra: Vec<String>,
    pub admin: AdminSection,
    pub metrics: MetricsSection,
    pub log: LogSection,
}

/// What the witness runs with.
#[derive(Clone, Debug)]
pub struct WitnessSettings {
    pub witness: ironroot_cluster::WitnessConfig,
    pub state_dir: PathBuf,
    pub log: LogSection,
}

impl IronrootFile {
    /// Read and parse (not yet validate) the file at `path`.
    pub fn load(path: &Path) -> Result<IronrootFile, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        IronrootFile::parse(&text, &file)
    }

    pub fn parse(text: &str, file: &str) -> Result<IronrootFile, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::Parse {
            file: file.to_owned(),
            message: one_line(text, &error),
        })
    }

    /// Validate for node `name`; reads the handle key file.
    pub fn node(&self, name: &str, file: &str) -> Result<NodeSettings, ConfigError> {
        let invalid = |path: &str, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            path: path.to_owned(),
            message,
        };
        let cluster = self
            .cluster
            .validate(name)
            .map_err(|e| invalid(&format!("cluster.{}", e.path), e.problem.to_string()))?;
        if self.store.keep_generations == 0 {
            return Err(invalid(
                "store.keep_generations",
                "must be at least 1: the active generation of every image is kept".to_owned(),
            ));
        }
        if cluster.vip.lifetime.subsec_millis() != 0 {
            return Err(invalid(
                "cluster.vip.lifetime_ms",
                "must be whole seconds: the kernel's valid_lft counts seconds".to_owned(),
            ));
        }
        self.dhcp
            .validate()
            .map_err(|e| invalid("dhcp", e.to_string()))?;
        check_dhcp_fits_the_journal(&self.dhcp)
            .map_err(|(path, message)| invalid(path, message))?;
        if self.dhcp.vip != cluster.vip.addr {
            return Err(invalid(
                "dhcp.vip",
                format!(
                    "{} differs from cluster.vip.addr {}",
                    self.dhcp.vip, cluster.vip.addr
                ),
            ));
        }
        let tftp = self
            .tftp
            .validate()
            .map_err(|e| invalid("tftp", e.to_string()))?;
        let ports = [
            ("nfs.portmap_port", self.nfs.portmap_port),
            ("nfs.mount_port", self.nfs.mount_port),
            ("nfs.nfs_port", self.nfs.nfs_port),
        ];
        for (i, (key, port)) in ports.iter().enumerate() {
            if *port == 0 || ports[..i].iter().any(|(_, other)| other == port) {
                return Err(invalid(key, format!("{port} is zero or used twice")));
            }
        }
        // UDP beside the services' and the heartbeats' own ports.
        let hints = self.nfs.takeover_hints_port;
        let heartbeat_ports = cluster.local.links.iter().map(|link| link.port());
        if hints != 0
            && (ports.iter().any(|(_, port)| *port == hints)
                || [67, 4011, 69].contains(&hints)
                || heartbeat_ports.clone().any(|port| port == hints))
        {
            return Err(invalid(
                "nfs.takeover_hints_port",
                format!("{hints} is a port of another service of this node"),
            ));
        }
        let handle_key = read_key(&self.nfs.handle_key_file)
            .map_err(|message| invalid("nfs.handle_key_file", message))?;
        self.log
            .validate()
            .map_err(|message| invalid("log.level", message))?;
        Ok(NodeSettings {
            name: name.to_owned(),
            cluster,
            store: self.store.clone(),
            nfs: self.nfs.clone(),
            handle_key,
            dhcp: self.dhcp.clone(),
            tftp,
            boot_extra: self.boot.kernel_extra.clone(),
            admin: self.admin.clone(),
            metrics: self.metrics.clone(),
            log: self.log.clone(),
        })
    }

    /// Validate for the witness role.
    pub fn witness(&self, file: &str) -> Result<WitnessSettings, ConfigError> {
        let witness = self
            .cluster
            .validate_witness()
            .map_err(|e| ConfigError::Invalid {
                file: file.to_owned(),
                path: format!("cluster.{}", e.path),
                message: e.problem.to_string(),
            })?;
        self.log
            .validate()
            .map_err(|message| ConfigError::Invalid {
                file: file.to_owned(),
                path: "log.level".to_owned(),
                message,
            })?;
        Ok(WitnessSettings {
            witness,
            state_dir: self.store.dir.clone(),
            log: self.log.clone(),
        })
    }
}

/// A TOML error on one line: `line L: message` (the toml crate's own text
/// spans several lines with a snippet).
fn one_line(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', " ");
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {message}")
        }
        None => message,
    }
}

/// A 32-byte key written as 64 hex digits (whitespace ignored).
pub fn read_key(path: &Path) -> Result<[u8; 32], String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let hex: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if hex.len() != 64 {
        return Err(format!(
            "{}: expected 64 hex digits, found {}",
            path.display(),
            hex.len()
        ));
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("{}: not hex at digit {}", path.display(), 2 * i))?;
    }
    Ok(key)
}

/// Pool leases go through the store's journal: a batch must fit one entry
/// and every pool address must fit the store's lease table.
fn check_dhcp_fits_the_journal(dhcp: &ironroot_dhcp::Config) -> Result<(), (&'static str, String)> {
    use ironroot_store::journal::LEASES_PER_ENTRY_MAX;
    use ironroot_store::state::LEASES_MAX;
    let batch = dhcp.limits.lease_records_per_write_max;
    if batch > LEASES_PER_ENTRY_MAX {
        return Err((
            "dhcp.limits.lease_records_per_write_max",
            format!("{batch} exceeds the journal's {LEASES_PER_ENTRY_MAX} leases per entry"),
        ));
    }
    if let Some(pool) = &dhcp.pool {
        let size =
            u64::from(u32::from(pool.end)).saturating_sub(u64::from(u32::from(pool.start))) + 1;
        if size > LEASES_MAX as u64 {
            return Err((
                "dhcp.pool",
                format!("{size} addresses exceed the store's {LEASES_MAX} recorded leases"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../deploy/ironroot.toml");

    fn with_key(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("handle.key");
        std::fs::write(&key, "00".repeat(32)).expect("key");
        (
            dir,
            text.replace("/etc/ironroot/handle.key", &key.display().to_string()),
        )
    }

    #[test]
    fn the_example_config_validates_for_both_nodes_and_the_witness() {
        let (_dir, text) = with_key(EXAMPLE);
        let file = IronrootFile::parse(&text, "ironroot.toml").expect("parses");
        for node in ["ctl-a", "ctl-b"] {
            let settings = file.node(node, "ironroot.toml").expect("validates");
            assert_eq!(settings.name, node);
        }
        file.witness("ironroot.toml").expect("witness validates");
    }

    #[test]
    fn the_takeover_hints_port_must_not_be_another_service_port() {
        let (_dir, text) = with_key(EXAMPLE);
        for clash in ["2049", "67", "694"] {
            let clashing = text.replace(
                "takeover_hints_port = 7791",
                &format!("takeover_hints_port = {clash}"),
            );
            let file = IronrootFile::parse(&clashing, "ironroot.toml").expect("parses");
            let error = file
                .node("ctl-a", "ironroot.toml")
                .expect_err("port clash")
                .to_string();
            assert_eq!(
                error,
                format!("ironroot.toml: nfs.takeover_hints_port: {clash} is a port of another service of this node")
            );
        }
        let off = text.replace("takeover_hints_port = 7791", "takeover_hints_port = 0");
        let file = IronrootFile::parse(&off, "ironroot.toml").expect("parses");
        assert_eq!(
            file.node("ctl-a", "ironroot.toml")
                .expect("0 turns hints off")
                .nfs
                .takeover_hints_port,
            0
        );
    }

    #[test]
    fn store_policies_parse_and_bad_ones_are_named() {
        let (_dir, text) = with_key(EXAMPLE);
        let file = IronrootFile::parse(&text, "ironroot.toml").expect("parses");
        let node = file.node("ctl-a", "ironroot.toml").expect("valid");
        assert_eq!(node.store.after_split_brain, AfterSplitBrain::Disconnect);
        assert_eq!(node.store.degraded, Degraded::AcceptWrites);
        let set = text
            .replace(
                "after_split_brain = \"disconnect\"",
                "after_split_brain = \"discard-younger-primary\"",
            )
            .replace(
                "degraded = \"accept-writes\"",
                "degraded = \"refuse-writes\"",
            );
        let file = IronrootFile::parse(&set, "ironroot.toml").expect("parses");
        let node = file.node("ctl-a", "ironroot.toml").expect("valid");
        assert_eq!(
            node.store.after_split_brain.policy(),
            ironroot_store::replication::SplitBrainPolicy::DiscardYoungerPrimary
        );
        assert_eq!(
            node.store.degraded.policy(),
            ironroot_store::replication::DegradedPolicy::RefuseWrites
        );
        let bad = text.replace(
            "after_split_brain = \"disconnect\"",
            "after_split_brain = \"newest\"",
        );
        let error = IronrootFile::parse(&bad, "ironroot.toml")
            .expect_err("unknown policy")
            .to_string();
        assert!(
            error.contains("after_split_brain") || error.contains("newest"),
            "{error}"
        );
    }

    #[test]
    fn errors_name_the_file_and_key_path() {
        let (_dir, text) = with_key(EXAMPLE);
        let unknown = text.replace("[store]\n", "[store]\ndri = \"x\"\n");
        let error = IronrootFile::parse(&unknown, "ironroot.toml")
            .expect_err("unknown key")
            .to_string();
        assert!(
            error.starts_with("ironroot.toml: ") && error.contains("dri"),
            "{error}"
        );

        let file = IronrootFile::parse(&text, "ironroot.toml").expect("parses");
        let error = file
            .node("ctl-c", "ironroot.toml")
            .expect_err("unknown node")
            .to_string();
        assert!(error.starts_with("ironroot.toml: cluster."), "{error}");

        let wrong_vip = text.replace("vip = \"192.0.2.10\"", "vip = \"192.0.2.11\"");
        let file = IronrootFile::parse(&wrong_vip, "ironroot.toml").expect("parses");
        let error = file
            .node("ctl-a", "ironroot.toml")
            .expect_err("vip mismatch")
            .to_string();
        assert_eq!(
            error,
            "ironroot.toml: dhcp.vip: 192.0.2.11 differs from cluster.vip.addr 192.0.2.10"
        );

        let mut file = IronrootFile::parse(&text, "ironroot.toml").expect("parses");
        file.dhcp.limits.lease_records_per_write_max = 5000;
        let error = file
            .node("ctl-a", "ironroot.toml")
            .expect_err("batch larger than a journal entry")
            .to_string();
        assert_eq!(
            error,
            "ironroot.toml: dhcp.limits.lease_records_per_write_max: 5000 exceeds the journal's 4096 leases per entry"
        );

        let missing_key = EXAMPLE.replace("/etc/ironroot/handle.key", "/nonexistent/handle.key");
        let file = IronrootFile::parse(&missing_key, "ironroot.toml").expect("parses");
        let error = file
            .node("ctl-a", "ironroot.toml")
            .expect_err("missing key file")
            .to_string();
        assert!(
            error.starts_with("ironroot.toml: nfs.handle_key_file: /nonexistent/handle.key:"),
            "{error}"
        );
    }
}

/// A two-node cluster (with or without a witness) written as a config file:
/// what labs, tests and first installs start from. `render` gives TOML that
/// [`IronrootFile::parse`] accepts; per-process paths are the caller's.
#[derive(Clone, Debug)]
pub struct TwoNodeLayout {
    pub cluster_id: u32,
    pub key_hex: String,
    /// (name, heartbeat address) of each node; link port 694.
    pub nodes: [(String, std::net::IpAddr); 2],
    /// Witness address (port 695); `None` runs with `unsafe_unfenced`.
    pub witness: Option<std::net::IpAddr>,
    pub vip: std::net::Ipv4Addr,
    pub prefix_len: u8,
    pub interface: String,
    pub dead_ms: u64,
    pub store_dir: PathBuf,
    pub replication_port: u16,
    pub handle_key_file: PathBuf,
    pub admin_socket: PathBuf,
    pub metrics_listen: String,
    /// Appended verbatim: further sections (`[boot]`, `[dhcp.boot]`, ...).
    pub extra: String,
}

impl TwoNodeLayout {
    pub fn render(&self) -> String {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        let mut text = format!(
            "[cluster]\ncluster_id = {}\nkey_hex = \"{}\"\nunsafe_unfenced = {}\n",
            self.cluster_id,
            self.key_hex,
            self.witness.is_none()
        );
        for (i, (name, addr)) in self.nodes.iter().enumerate() {
            text += &format!(
                "[[cluster.nodes]]\nname = \"{name}\"\nid = {}\nlinks = [\"{addr}:694\"]\n",
                i + 1
            );
        }
        if let Some(witness) = self.witness {
            text += &format!(
                "[cluster.witness]\naddr = \"{witness}:695\"\nlease_ms = {}\n",
                self.dead_ms
            );
        }
        text += &format!(
            "[cluster.timing]\ninterval_ms = 100\ndead_ms = {dead}\ninitial_dead_ms = {initial}\n\
             [cluster.vip]\naddr = \"{vip}\"\nprefix_len = {prefix}\ninterface = \"{interface}\"\nlifetime_ms = 1000\n\
             [store]\ndir = \"{store}\"\nreplication_port = {replication}\n\
             [nfs]\nhandle_key_file = \"{key}\"\n\
             [dhcp]\nvip = \"{vip}\"\nsubnet_mask = \"{mask}\"\n\
             [admin]\nsocket = \"{socket}\"\n\
             [metrics]\nlisten = \"{metrics}\"\n",
            dead = self.dead_ms,
            initial = self.dead_ms + 500,
            vip = self.vip,
            prefix = self.prefix_len,
            interface = self.interface,
            store = self.store_dir.display(),
            replication = self.replication_port,
            key = self.handle_key_file.display(),
            mask = std::net::Ipv4Addr::from(mask),
            socket = self.admin_socket.display(),
            metrics = self.metrics_listen,
        );
        text + &self.extra
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    #[test]
    fn a_rendered_two_node_layout_validates_for_both_nodes_and_the_witness() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("handle.key");
        std::fs::write(&key, "11".repeat(32)).expect("key");
        let layout = TwoNodeLayout {
            cluster_id: 3,
            key_hex: "ab".repeat(32),
            nodes: [
                ("a".into(), [10, 1, 0, 1].into()),
                ("b".into(), [10, 1, 0, 2].into()),
            ],
            witness: Some([10, 1, 0, 3].into()),
            vip: [10, 1, 0, 10].into(),
            prefix_len: 24,
            interface: "eth0".into(),
            dead_ms: 1500,
            store_dir: dir.path().join("store"),
            replication_port: 7790,
            handle_key_file: key,
            admin_socket: dir.path().join("admin.sock"),
            metrics_listen: "127.0.0.1:9450".into(),
            extra: "[boot]\nkernel_extra = [\"no-timer-check\"]\n".into(),
        };
        let file = IronrootFile::parse(&layout.render(), "layout.toml").expect("parses");
        for node in ["a", "b"] {
            file.node(node, "layout.toml").expect("node validates");
        }
        file.witness("layout.toml").expect("witness validates");
        let unfenced = TwoNodeLayout {
            witness: None,
            ..layout
        };
        let file = IronrootFile::parse(&unfenced.render(), "layout.toml").expect("parses");
        assert!(file.cluster.unsafe_unfenced);
    }
}
