//! ironroot's read-only NFSv3 server (RFC 1813) with portmap v2 (RFC 1833)
//! and MOUNT v3, over ONC RPC (RFC 5531) on TCP and UDP.
//!
//! It serves every client its own view (its image's current generation
//! plus its exception overlay), chosen by the call's source address and
//! checked on every call. It must never modify anything: every procedure
//! that would (SETATTR, WRITE, CREATE, MKDIR, SYMLINK, MKNOD, REMOVE, RMDIR,
//! RENAME, LINK, COMMIT) answers NFS3ERR_ROFS before its arguments are even
//! looked at, whatever the caller's uid or mount options, because the root
//! filesystem of a diskless fleet is shared and replicated: a write could only
//! diverge the client from its image. It never opens a socket, reads a clock
//! or draws a random number inside the protocol logic ([`Server`] is sans-IO;
//! [`driver`] moves bytes through `ironroot_net::Runtime`).
//!
//! # Why every write answers NFS3ERR_ROFS
//! The check comes first, before the handle, the credentials or even the
//! arguments are decoded, so neither uid 0, nor a `rw` mount option, nor an
//! unknown or malformed call changes the answer (and nothing about the tree
//! leaks through error codes). Per procedure:
//! - SETATTR (chmod, chown, truncate, utimes): attributes belong to the image
//!   generation every client of that image shares, identical on both nodes.
//! - WRITE and COMMIT: there is nowhere to keep a client's bytes; taking them
//!   and dropping them later would be silent data loss. COMMIT has nothing
//!   to commit, and a WRITE verifier would promise stability we do not have.
//! - CREATE, MKDIR, SYMLINK, MKNOD, LINK: a new name would appear in a tree
//!   that only `ironroot image` changes, through the replicated journal.
//! - REMOVE, RMDIR, RENAME: `rm -rf /` on a client, even as root, must leave
//!   the image intact for every other client and for the next boot.
//!
//! Failure results carry the procedure's own shape (wcc_data with no
//! attributes, plus LINK's post_op_attr), which clients decode without
//! special cases; the client's `/var` and `/tmp` are tmpfs.
//!
//! # File handles
//! See [`handle`]: (client, file id, content version) plus a keyed MAC. No
//! boot time and no node identity, so handles stay valid across restarts and
//! failover; one constant fsid ([`Config::fsid`]) on both nodes.
//!
//! # How long until a client sees an image update
//! A changed file gets a new content version and its directory a newer
//! mtime/ctime. A Linux NFSv3 client revalidates a directory's attributes
//! after its attribute cache time (`acdirmin`..`acdirmax`) and a file's after
//! `acregmin`..`acregmax`; when the directory's mtime has changed it drops
//! its cached lookups and looks names up again, finding the new file. Under
//! the options the boot module generates (`actimeo=3`, from
//! `ironroot_boot::mount::ATTRIBUTE_CACHE_SECS`, which sets every one of
//! acregmin/acregmax/acdirmin/acdirmax to 3 s) a client that touches the
//! path sees an update at most 3 s after the generation is published on the
//! active node, plus one round trip (`actimeo=1` would make it 1 s). With the
//! kernel defaults (acregmin 3 s, acregmax 60 s, acdirmin 30 s, acdirmax
//! 60 s) it could take up to 60 s.
//! Processes that already hold the old file open keep reading the old
//! version by handle until the store's retention period ends; after that
//! the handle answers NFS3ERR_STALE.

pub mod dedup;
pub mod driver;
pub mod fs;
pub mod handle;
pub mod memfs;
pub mod nfs3;
mod readdir;
pub mod record;
pub mod rpc;
pub mod server;
pub mod xdr;

pub use dedup::{Admission, InFlight};
pub use fs::{
    Attrs, ClientId, DirEntry, DirPage, FileId, Filesystem, FsError, FsStats, Node, NodeKind,
};
pub use handle::{Handle, HandleError, HandleKey, HANDLE_BYTES};
pub use memfs::{LoadError, LoadLimits, MemFs, Tree};
pub use server::{Config, ConfigError, Counters, Server};

/// Decode one untrusted message the way the server does (the fuzz target
/// and its corpus replay test call this): RPC header, then the procedure's
/// arguments against an empty view.
pub fn fuzz_one(message: &[u8]) {
    use std::net::SocketAddrV4;
    let mut fs = MemFs::new();
    let mut tree = Tree::empty();
    tree.add_file("f", 0o644, 0, 0, b"data");
    fs.add_client(std::net::Ipv4Addr::LOCALHOST, 1, std::sync::Arc::new(tree));
    let server = Server::new(Config::default(), fs);
    let _ = server.handle(
        SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 700),
        message,
    );
    let mut records = record::RecordDecoder::new(1 << 16);
    records.push(message);
    while let Ok(Some(record)) = records.poll_record() {
        let _ = rpc::decode_call(&record);
    }
}
