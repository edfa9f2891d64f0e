//! Shared helpers: a server over a small in-memory tree and a way to call
//! it with encoded arguments and decode the results.

#![allow(dead_code)]

use std::io::Cursor;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use ironroot_nfs::rpc::{self, Accept, Auth, ReplyHead};
use ironroot_nfs::server::{MOUNT_PROGRAM, NFS_PROGRAM};
use ironroot_nfs::{Config, MemFs, Server, Tree};
use nfs3_types::nfs3::nfs_fh3;
use nfs3_types::xdr_codec::{Opaque, Pack, Unpack};

pub const KNOWN: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
pub const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
pub const UNKNOWN: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);

pub fn peer(ip: Ipv4Addr) -> SocketAddrV4 {
    SocketAddrV4::new(ip, 800)
}

pub fn config() -> Config {
    Config {
        handle_key: [42; 32],
        portmap_port: 111,
        mount_port: 20048,
        nfs_port: 2049,
        ..Config::default()
    }
}

/// Client 1 at 127.0.0.1 sees `hello` (0o644), `run` (0o750, uid 10,
/// gid 20), `secret` (0o600), `link` -> `hello`, `dir/`, and `big` (300
/// bytes); client 2 at 127.0.0.2 sees only its own `hostname`.
pub fn trees() -> (Tree, Tree) {
    let mut tree = Tree::empty();
    tree.add_file("hello", 0o644, 0, 0, b"hello world\n");
    tree.add_file("run", 0o750, 10, 20, b"#!/bin/sh\n");
    tree.add_file("secret", 0o600, 0, 0, b"s");
    tree.add_symlink("link", "hello");
    tree.add_dir("dir", 0o755);
    tree.add_file("big", 0o644, 0, 0, &[7u8; 300]);
    let mut other = Tree::empty();
    other.add_file("hostname", 0o644, 0, 0, b"web-02\n");
    (tree, other)
}

pub fn server() -> Server<MemFs> {
    server_with(trees().0)
}

pub fn server_with(tree: Tree) -> Server<MemFs> {
    let mut fs = MemFs::new();
    fs.add_client(KNOWN, 1, Arc::new(tree));
    fs.add_client(OTHER, 2, Arc::new(trees().1));
    Server::new(config(), fs)
}

pub fn unix(uid: u32, gid: u32) -> Auth {
    Auth::Unix {
        uid,
        gid,
        gids: vec![],
    }
}

pub fn pack<T: Pack>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    value.pack(&mut out).unwrap();
    out
}

pub fn unpack<T: Unpack>(bytes: &[u8]) -> T {
    let mut cursor = Cursor::new(bytes);
    let (value, _) = T::unpack(&mut cursor).unwrap();
    value
}

/// Call and return the reply head and results.
pub fn call_raw(
    server: &Server<MemFs>,
    from: Ipv4Addr,
    prog: u32,
    vers: u32,
    proc_: u32,
    auth: &Auth,
    args: &[u8],
) -> (ReplyHead, Vec<u8>) {
    let message = rpc::encode_call(0x1234, prog, vers, proc_, auth, args);
    let reply = server.handle(peer(from), &message).expect("a reply");
    let (xid, head, results) = rpc::decode_reply(&reply).unwrap();
    assert_eq!(xid, 0x1234);
    (head, results.to_vec())
}

/// An NFSv3 call that must be accepted; returns the decoded results.
pub fn nfs<T: Unpack>(server: &Server<MemFs>, from: Ipv4Addr, proc_: u32, args: &[u8]) -> T {
    nfs_as(server, from, &unix(1000, 1000), proc_, args)
}

pub fn nfs_as<T: Unpack>(
    server: &Server<MemFs>,
    from: Ipv4Addr,
    auth: &Auth,
    proc_: u32,
    args: &[u8],
) -> T {
    let (head, results) = call_raw(server, from, NFS_PROGRAM, 3, proc_, auth, args);
    assert_eq!(head, ReplyHead::Accepted(Accept::Success));
    unpack(&results)
}

/// The root handle of the view of `from`, through MOUNT.
pub fn root(server: &Server<MemFs>, from: Ipv4Addr) -> nfs_fh3 {
    let args = pack(&nfs3_types::mount::dirpath(Opaque::borrowed(b"/")));
    let (head, results) = call_raw(server, from, MOUNT_PROGRAM, 3, 1, &unix(0, 0), &args);
    assert_eq!(head, ReplyHead::Accepted(Accept::Success));
    match unpack::<nfs3_types::mount::mountres3>(&results) {
        nfs3_types::mount::mountres3::Ok(ok) => nfs_fh3 {
            data: Opaque::owned(ok.fhandle.0.to_vec()),
        },
        nfs3_types::mount::mountres3::Err(err) => panic!("MNT failed: {err}"),
    }
}

/// Look `name` up in the directory `dir` and return its handle.
pub fn lookup(server: &Server<MemFs>, from: Ipv4Addr, dir: &nfs_fh3, name: &str) -> nfs_fh3 {
    use nfs3_types::nfs3::{diropargs3, filename3, LOOKUP3res};
    let args = pack(&diropargs3 {
        dir: dir.clone(),
        name: filename3(Opaque::borrowed(name.as_bytes())),
    });
    match nfs::<LOOKUP3res>(server, from, 3, &args) {
        LOOKUP3res::Ok(ok) => ok.object,
        LOOKUP3res::Err((status, _)) => panic!("LOOKUP {name}: {status}"),
    }
}

/// A daemon on real loopback sockets (tokio backend), serving portmap,
/// MOUNT and NFS on one port over TCP and UDP.
pub struct Daemon {
    pub port: u16,
    pub server: Arc<Server<MemFs>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Daemon {
    pub fn start(fs: MemFs) -> Daemon {
        Daemon::start_with(fs, |_| {})
    }

    /// Start with a configuration adjusted by `adjust` (ports are set after).
    pub fn start_with(fs: MemFs, adjust: impl FnOnce(&mut Config)) -> Daemon {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let net = ironroot_net::tokio_backend::TokioRuntime::with_seed(1);
        let endpoint = runtime
            .block_on(ironroot_nfs::driver::bind(&net, KNOWN, 0))
            .expect("bind loopback");
        let port = endpoint.port().unwrap();
        let mut config = config();
        adjust(&mut config);
        (config.portmap_port, config.mount_port, config.nfs_port) = (port, port, port);
        let server = Arc::new(Server::new(config, fs));
        runtime.spawn(ironroot_nfs::driver::serve(
            net,
            Arc::clone(&server),
            vec![endpoint],
        ));
        Daemon {
            port,
            server,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "nfs://127.0.0.1{path}?version=3&nfsport={0}&mountport={0}",
            self.port
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A peer program the test needs, or `None` (and a printed line) when it
/// is missing and peers are not required; with IRONROOT_REQUIRE_PEERS=1 a
/// missing peer fails the test.
pub fn peer_program(name: &str, package: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        let required = std::env::var("IRONROOT_REQUIRE_PEERS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{name} not found: install the Debian package {package} (scripts/packages/nfs.txt)"
        );
        println!("skipping: {name} not found (Debian package {package})");
    }
    found
}
