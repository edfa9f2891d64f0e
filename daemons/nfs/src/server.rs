//! The sans-IO server: one call in, at most one reply out. Dispatches
//! portmap v2, MOUNT v3 and NFSv3; the driver only moves bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::fs::{ClientId, Filesystem};
use crate::handle::{Handle, HandleKey};
use crate::rpc::{self, Accept, Auth, CallError};
use crate::xdr::{put_opaque, put_u32, Reader};

pub const PORTMAP_PROGRAM: u32 = 100_000;
pub const PORTMAP_VERSION: u32 = 2;
pub const MOUNT_PROGRAM: u32 = 100_005;
pub const MOUNT_VERSION: u32 = 3;
pub const NFS_PROGRAM: u32 = 100_003;
pub const NFS_VERSION: u32 = 3;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
/// RFC 1813 section 5.0: MNTPATHLEN.
const MOUNT_PATH_BYTES_MAX: usize = 1024;
const AUTH_UNIX_FLAVOR: u32 = 1;

/// Runtime configuration (validated by the daemon's config layer).
#[derive(Clone, Debug)]
pub struct Config {
    pub portmap_port: u16,
    pub mount_port: u16,
    pub nfs_port: u16,
    /// Cluster-wide secret for handle MACs; identical on both nodes.
    pub handle_key: [u8; 32],
    /// Identical on both nodes, never derived from a device.
    pub fsid: u64,
    /// The one export every client mounts.
    pub export_path: String,
    /// FSINFO rtmax; READ counts above it are cut to it.
    pub read_bytes_max: u32,
    /// FSINFO dtpref; READDIR(PLUS) replies never exceed it.
    pub readdir_bytes_max: u32,
    /// Largest TCP record accepted (calls are small: no WRITE data).
    pub record_bytes_max: usize,
    /// Entries of the MOUNT DUMP table.
    pub mounts_max: usize,
    /// TCP connections served at once per listener.
    pub connections_max: usize,
    /// Calls processed at once on one TCP connection.
    pub in_flight_per_connection_max: usize,
    /// Calls being processed at once over all transports (also the size of
    /// the retransmission de-duplication table).
    pub in_flight_max: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            portmap_port: 111,
            mount_port: 20048,
            nfs_port: 2049,
            handle_key: [0; 32],
            fsid: 0x6972_6f6e_726f_6f74,
            export_path: "/".to_owned(),
            read_bytes_max: 1 << 20,
            readdir_bytes_max: 64 << 10,
            record_bytes_max: 64 << 10,
            mounts_max: 4096,
            connections_max: 1024,
            in_flight_per_connection_max: 16,
            in_flight_max: 4096,
        }
    }
}

/// A configuration value out of its range; names the key path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("nfs.{key}: {value} is outside {min}..={max}")]
    OutOfRange {
        key: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("nfs.export_path: {0:?} is not an absolute path")]
    ExportPath(String),
}

impl Config {
    /// Check every limit against the range the server is built for.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ranges: [(&'static str, u64, u64, u64); 8] = [
            (
                "read_bytes_max",
                u64::from(self.read_bytes_max),
                4096,
                4 << 20,
            ),
            (
                "readdir_bytes_max",
                u64::from(self.readdir_bytes_max),
                1024,
                1 << 20,
            ),
            // A call carries at most a MNT path or two handles and a name.
            (
                "record_bytes_max",
                self.record_bytes_max as u64,
                2048,
                1 << 20,
            ),
            ("mounts_max", self.mounts_max as u64, 1, 1 << 20),
            ("connections_max", self.connections_max as u64, 1, 1 << 16),
            (
                "in_flight_per_connection_max",
                self.in_flight_per_connection_max as u64,
                1,
                1024,
            ),
            ("in_flight_max", self.in_flight_max as u64, 1, 1 << 20),
            ("fsid", self.fsid, 1, u64::MAX),
        ];
        for (key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::OutOfRange {
                    key,
                    value,
                    min,
                    max,
                });
            }
        }
        if !self.export_path.starts_with('/') {
            return Err(ConfigError::ExportPath(self.export_path.clone()));
        }
        Ok(())
    }
}

/// Drop and error counters (never log-and-drop without counting).
#[derive(Debug, Default)]
pub struct Counters {
    pub calls: AtomicU64,
    pub not_a_call_dropped: AtomicU64,
    pub rpc_mismatch: AtomicU64,
    pub auth_rejected: AtomicU64,
    pub prog_unavail: AtomicU64,
    pub prog_mismatch: AtomicU64,
    pub proc_unavail: AtomicU64,
    pub garbage_args: AtomicU64,
    pub unknown_client: AtomicU64,
    pub bad_handle: AtomicU64,
    pub stale: AtomicU64,
    pub rofs: AtomicU64,
    pub bad_cookie: AtomicU64,
    pub duplicate_dropped: AtomicU64,
    pub in_flight_full_dropped: AtomicU64,
    pub connections_refused: AtomicU64,
    pub records_too_long: AtomicU64,
    pub mounts_full: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The result of one procedure: its encoded results, or a non-success
/// accept status.
pub type ProcResult = Result<Reply, Accept>;

/// An encoded reply: `head`, then `data` (READ's file bytes, shared with
/// the store rather than copied), then XDR padding of `data`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub head: Vec<u8>,
    pub data: bytes::Bytes,
}

impl Reply {
    pub fn padding(&self) -> &'static [u8] {
        &[0u8; 3][..(4 - self.data.len() % 4) % 4]
    }

    pub fn len(&self) -> usize {
        self.head.len() + self.data.len() + self.padding().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The reply as one buffer (UDP datagrams, tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(self.padding());
        out
    }
}

impl From<Vec<u8>> for Reply {
    fn from(head: Vec<u8>) -> Reply {
        Reply {
            head,
            data: bytes::Bytes::new(),
        }
    }
}

/// Who is calling: the client (from the registry, by source address) and
/// the credentials of the call.
#[derive(Clone, Debug)]
pub struct Caller {
    pub peer: SocketAddrV4,
    pub client: Option<ClientId>,
    pub auth: Auth,
    /// Largest reply the transport can carry (a UDP datagram, or no limit
    /// beyond the configured ones over TCP).
    pub reply_bytes_max: usize,
}

/// Bytes of an accepted RPC reply header before the results.
pub const REPLY_HEADER_BYTES: usize = 24;
/// Largest UDP reply: below the 65,507 bytes of an IPv4 datagram, with room
/// for XDR padding.
pub const UDP_REPLY_BYTES_MAX: usize = 61_440;

/// Read-only NFSv3 server with portmap and MOUNT.
#[derive(Debug)]
pub struct Server<F> {
    pub(crate) config: Config,
    pub(crate) fs: F,
    pub(crate) key: HandleKey,
    pub(crate) counters: Counters,
    /// MOUNT DUMP table: who mounted what (advisory, per RFC 1813).
    mounts: Mutex<BTreeMap<Ipv4Addr, String>>,
    /// The TCP connections being served, (local, peer): what a node that
    /// takes the VIP over must reset (see `ironroot_cluster::hints`). At most
    /// `connections_max` entries: the driver admits no more.
    tcp_connections: Mutex<BTreeSet<(SocketAddrV4, SocketAddrV4)>>,
}

impl<F: Filesystem> Server<F> {
    /// A server over `fs`; `config` must have passed [`Config::validate`].
    pub fn new(config: Config, fs: F) -> Server<F> {
        assert_eq!(config.validate(), Ok(()), "unvalidated NFS configuration");
        let key = HandleKey::new(config.handle_key);
        Server {
            config,
            fs,
            key,
            counters: Counters::default(),
            mounts: Mutex::default(),
            tcp_connections: Mutex::default(),
        }
    }

    /// The TCP connections served now, as (local, peer) addresses.
    pub fn tcp_connections(&self) -> Vec<(SocketAddrV4, SocketAddrV4)> {
        let table = self
            .tcp_connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        table.iter().copied().collect()
    }

    /// The driver accepted (`open`) or ended a connection.
    pub(crate) fn track_connection(&self, local: SocketAddrV4, peer: SocketAddrV4, open: bool) {
        let mut table = self
            .tcp_connections
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if open {
            table.insert((local, peer));
        } else {
            table.remove(&(local, peer));
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn fs(&self) -> &F {
        &self.fs
    }

    /// Answer one RPC message from `peer`; `None` means drop it silently
    /// (RFC 5531 gives no reply for a message that is not a call).
    pub fn handle(&self, peer: SocketAddrV4, message: &[u8]) -> Option<Vec<u8>> {
        self.handle_reply(peer, message, usize::MAX)
            .map(|reply| reply.to_vec())
    }

    /// [`Server::handle`] for a transport whose replies may not exceed
    /// `reply_bytes_max` (UDP): READ and READDIR shrink to fit.
    pub fn handle_limited(
        &self,
        peer: SocketAddrV4,
        message: &[u8],
        reply_bytes_max: usize,
    ) -> Option<Vec<u8>> {
        self.handle_reply(peer, message, reply_bytes_max)
            .map(|reply| reply.to_vec())
    }

    /// [`Server::handle_limited`] without joining READ data to the rest, for
    /// transports that can send the parts with one vectored write.
    pub fn handle_reply(
        &self,
        peer: SocketAddrV4,
        message: &[u8],
        reply_bytes_max: usize,
    ) -> Option<Reply> {
        Counters::bump(&self.counters.calls);
        let call = match rpc::decode_call(message) {
            Ok(call) => call,
            Err(CallError::Garbage(_) | CallError::NotCall(_)) => {
                Counters::bump(&self.counters.not_a_call_dropped);
                return None;
            }
            Err(CallError::RpcMismatch { xid, .. }) => {
                Counters::bump(&self.counters.rpc_mismatch);
                return Some(rpc::rpc_mismatch(xid).into());
            }
            Err(CallError::Auth { xid, stat }) => {
                Counters::bump(&self.counters.auth_rejected);
                return Some(rpc::auth_error(xid, stat).into());
            }
        };
        let client = self.fs.client_by_addr(*peer.ip());
        let reply_bytes_max = reply_bytes_max.saturating_sub(REPLY_HEADER_BYTES);
        let caller = Caller {
            peer,
            client,
            auth: call.auth.clone(),
            reply_bytes_max,
        };
        let result = match (call.prog, call.vers) {
            (PORTMAP_PROGRAM, PORTMAP_VERSION) => self.handle_portmap(call.proc_, call.args),
            (MOUNT_PROGRAM, MOUNT_VERSION) => self.handle_mount(&caller, call.proc_, call.args),
            (NFS_PROGRAM, NFS_VERSION) => self.handle_nfs(&caller, call.proc_, call.args),
            (PORTMAP_PROGRAM, _) => Err(Accept::ProgMismatch { low: 2, high: 2 }),
            (MOUNT_PROGRAM, _) => Err(Accept::ProgMismatch { low: 3, high: 3 }),
            (NFS_PROGRAM, _) => Err(Accept::ProgMismatch { low: 3, high: 3 }),
            _ => Err(Accept::ProgUnavail),
        };
        Some(match result {
            Ok(results) => {
                let mut head = rpc::accepted(call.xid, Accept::Success);
                head.extend_from_slice(&results.head);
                Reply {
                    head,
                    data: results.data,
                }
            }
            Err(accept) => {
                self.count_accept(accept);
                rpc::accepted(call.xid, accept).into()
            }
        })
    }

    fn count_accept(&self, accept: Accept) {
        let counter = match accept {
            Accept::ProgUnavail => &self.counters.prog_unavail,
            Accept::ProgMismatch { .. } => &self.counters.prog_mismatch,
            Accept::ProcUnavail => &self.counters.proc_unavail,
            Accept::GarbageArgs | Accept::SystemErr | Accept::Success => {
                &self.counters.garbage_args
            }
        };
        Counters::bump(counter);
    }

    /// Every program and port we register with portmap, in DUMP order.
    pub fn mappings(&self) -> Vec<[u32; 4]> {
        let c = &self.config;
        let mut out = Vec::new();
        for (prog, vers, port) in [
            (PORTMAP_PROGRAM, PORTMAP_VERSION, c.portmap_port),
            (MOUNT_PROGRAM, MOUNT_VERSION, c.mount_port),
            (NFS_PROGRAM, NFS_VERSION, c.nfs_port),
        ] {
            for prot in [IPPROTO_TCP, IPPROTO_UDP] {
                out.push([prog, vers, prot, u32::from(port)]);
            }
        }
        out
    }

    /// RFC 1833 section 3: portmap version 2.
    fn handle_portmap(&self, proc_: u32, args: &[u8]) -> ProcResult {
        let mut out = Vec::new();
        match proc_ {
            0 => {}
            // SET and UNSET: registrations are fixed by configuration.
            1 | 2 => put_u32(&mut out, 0),
            3 => {
                let mut reader = Reader::new(args);
                let mut field = || reader.u32().map_err(|_| Accept::GarbageArgs);
                let (prog, vers, prot) = (field()?, field()?, field()?);
                let port = self
                    .mappings()
                    .iter()
                    .find(|m| m[0] == prog && m[1] == vers && m[2] == prot)
                    .map_or(0, |m| m[3]);
                put_u32(&mut out, port);
            }
            4 => {
                for mapping in self.mappings() {
                    put_u32(&mut out, 1);
                    for word in mapping {
                        put_u32(&mut out, word);
                    }
                }
                put_u32(&mut out, 0);
            }
            _ => return Err(Accept::ProcUnavail),
        }
        Ok(out.into())
    }

    /// RFC 1813 section 5: MOUNT version 3.
    fn handle_mount(&self, caller: &Caller, proc_: u32, args: &[u8]) -> ProcResult {
        let mut out = Vec::new();
        match proc_ {
            0 => {}
            1 => self.mount_mnt(caller, args, &mut out)?,
            2 => {
                let mounts = self.mounts.lock().unwrap_or_else(|e| e.into_inner());
                for (addr, path) in mounts.iter() {
                    put_u32(&mut out, 1);
                    put_opaque(&mut out, addr.to_string().as_bytes());
                    put_opaque(&mut out, path.as_bytes());
                }
                put_u32(&mut out, 0);
            }
            3 => {
                let _path = Reader::new(args)
                    .opaque(MOUNT_PATH_BYTES_MAX)
                    .map_err(|_| Accept::GarbageArgs)?;
                self.mounts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(caller.peer.ip());
            }
            4 => {
                self.mounts
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(caller.peer.ip());
            }
            5 => {
                put_u32(&mut out, 1);
                put_opaque(&mut out, self.config.export_path.as_bytes());
                put_u32(&mut out, 0); // no groups: access is decided per client address
                put_u32(&mut out, 0);
            }
            _ => return Err(Accept::ProcUnavail),
        }
        Ok(out.into())
    }

    /// The directory a MNT path names: the export or a directory below it
    /// (libnfs mounts the parent of the file a URL names).
    fn mount_root(&self, client: ClientId, path: &[u8]) -> Result<crate::fs::Node, u32> {
        const MNT3ERR_NOENT: u32 = 2;
        const MNT3ERR_ACCES: u32 = 13;
        const MNT3ERR_NOTDIR: u32 = 20;
        let export = self.config.export_path.as_bytes();
        let components = |path: &[u8]| -> Vec<Vec<u8>> {
            path.split(|b| *b == b'/')
                .filter(|c| !c.is_empty())
                .map(<[u8]>::to_vec)
                .collect()
        };
        let (export_parts, wanted) = (components(export), components(path));
        if !wanted.starts_with(&export_parts) {
            return Err(MNT3ERR_NOENT);
        }
        let mut node = self.fs.root(client).map_err(|_| MNT3ERR_ACCES)?;
        for name in &wanted[export_parts.len()..] {
            if node.attrs.kind != crate::fs::NodeKind::Directory {
                return Err(MNT3ERR_NOTDIR);
            }
            if name.as_slice() == b".." {
                return Err(MNT3ERR_ACCES);
            }
            node = self
                .fs
                .lookup(client, node.file_id, name)
                .map_err(|_| MNT3ERR_NOENT)?;
        }
        if node.attrs.kind != crate::fs::NodeKind::Directory {
            return Err(MNT3ERR_NOTDIR);
        }
        Ok(node)
    }

    fn mount_mnt(&self, caller: &Caller, args: &[u8], out: &mut Vec<u8>) -> Result<(), Accept> {
        const MNT3_OK: u32 = 0;
        const MNT3ERR_ACCES: u32 = 13;
        let path = Reader::new(args)
            .opaque(MOUNT_PATH_BYTES_MAX)
            .map_err(|_| Accept::GarbageArgs)?;
        let Some(client) = caller.client else {
            Counters::bump(&self.counters.unknown_client);
            put_u32(out, MNT3ERR_ACCES);
            return Ok(());
        };
        let root = match self.mount_root(client, path) {
            Ok(root) => root,
            Err(status) => {
                put_u32(out, status);
                return Ok(());
            }
        };
        let mut mounts = self.mounts.lock().unwrap_or_else(|e| e.into_inner());
        if mounts.len() < self.config.mounts_max || mounts.contains_key(caller.peer.ip()) {
            mounts.insert(
                *caller.peer.ip(),
                String::from_utf8_lossy(path).into_owned(),
            );
        } else {
            Counters::bump(&self.counters.mounts_full);
        }
        drop(mounts);
        let handle = Handle {
            client,
            file_id: root.file_id,
            version: None,
        };
        put_u32(out, MNT3_OK);
        put_opaque(out, &self.key.encode(&handle));
        put_u32(out, 1);
        put_u32(out, AUTH_UNIX_FLAVOR);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_limits_are_checked() {
        assert_eq!(Config::default().validate(), Ok(()));
        let config = Config {
            in_flight_max: 0,
            ..Config::default()
        };
        assert_eq!(
            config.validate(),
            Err(ConfigError::OutOfRange {
                key: "in_flight_max",
                value: 0,
                min: 1,
                max: 1 << 20
            })
        );
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("nfs.in_flight_max: 0"));
        let config = Config {
            export_path: "srv".to_owned(),
            ..Config::default()
        };
        assert_eq!(
            config.validate(),
            Err(ConfigError::ExportPath("srv".to_owned()))
        );
    }
}
