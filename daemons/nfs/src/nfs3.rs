//! NFSv3 procedures (RFC 1813 section 3.3), read-only.

use nfs3_types::nfs3::{
    fattr3, ftype3, nfs_fh3, nfsstat3, nfstime3, post_op_attr, specdata3, FSINFO3resok,
    FSSTAT3resok, Nfs3Option, PATHCONF3resok, FSF3_HOMOGENEOUS, FSF3_LINK, FSF3_SYMLINK,
};
use nfs3_types::xdr_codec::Opaque;

use crate::fs::{Attrs, ClientId, FileId, Filesystem, FsError, Node, NodeKind};
use crate::handle::Handle;
use crate::rpc::Accept;
use crate::server::{Caller, Counters, ProcResult, Reply, Server};
use crate::xdr::{put, put_opaque, put_u32, Reader};

/// RFC 1813: handles are at most 64 bytes, names we serve at most 255.
pub(crate) const FH_BYTES_MAX: usize = 64;
pub(crate) const NAME_BYTES_MAX: usize = 255;

/// READ results besides the data: status, post_op_attr, count, eof, length.
const READ_OVERHEAD_BYTES: usize = 4 + 4 + 84 + 4 + 4 + 4;

pub(crate) const ACCESS3_READ: u32 = 0x01;
pub(crate) const ACCESS3_LOOKUP: u32 = 0x02;
pub(crate) const ACCESS3_EXECUTE: u32 = 0x20;

/// Procedures that would modify the file system, and how many wcc_data
/// (and leading post_op_attr) their failure results carry.
fn rofs_shape(proc_: u32) -> Option<(usize, usize)> {
    match proc_ {
        2 | 7 | 8 | 9 | 10 | 11 | 12 | 13 | 21 => Some((0, 1)),
        14 => Some((0, 2)),
        15 => Some((1, 1)),
        _ => None,
    }
}

/// A procedure failed: its status, and the attributes its failure result
/// may carry.
pub(crate) struct Failure {
    pub status: nfsstat3,
    pub attrs: Option<Node>,
}

impl From<nfsstat3> for Failure {
    fn from(status: nfsstat3) -> Failure {
        Failure {
            status,
            attrs: None,
        }
    }
}

pub(crate) type NfsResult = Result<Reply, Failure>;

fn garbage<E>(_: E) -> Accept {
    Accept::GarbageArgs
}

impl<F: Filesystem> Server<F> {
    pub(crate) fn handle_nfs(&self, caller: &Caller, proc_: u32, args: &[u8]) -> ProcResult {
        if proc_ == 0 {
            return Ok(Reply::default());
        }
        if let Some((attrs, wccs)) = rofs_shape(proc_) {
            Counters::bump(&self.counters.rofs);
            let mut out = Vec::new();
            put(&mut out, &nfsstat3::NFS3ERR_ROFS);
            // Absent attributes: pre_op_attr and post_op_attr both FALSE.
            for _ in 0..attrs + 2 * wccs {
                put_u32(&mut out, 0);
            }
            return Ok(out.into());
        }
        if !matches!(proc_, 1 | 3 | 4 | 5 | 6 | 16..=20) {
            return Err(Accept::ProcUnavail);
        }
        let mut reader = Reader::new(args);
        let fh = reader.opaque(FH_BYTES_MAX).map_err(garbage)?;
        let outcome = match caller.client {
            None => {
                Counters::bump(&self.counters.unknown_client);
                Err(Failure::from(nfsstat3::NFS3ERR_ACCES))
            }
            Some(client) => self.dispatch(caller, client, proc_, fh, &mut reader)?,
        };
        Ok(match outcome {
            Ok(out) => out,
            Err(failure) => self.encode_failure(proc_, failure).into(),
        })
    }

    fn dispatch(
        &self,
        caller: &Caller,
        client: ClientId,
        proc_: u32,
        fh: &[u8],
        reader: &mut Reader<'_>,
    ) -> Result<NfsResult, Accept> {
        Ok(match proc_ {
            1 => self.getattr(client, fh),
            3 => {
                let name = reader.opaque(usize::MAX).map_err(garbage)?;
                self.lookup(client, fh, name)
            }
            4 => {
                let requested = reader.u32().map_err(garbage)?;
                self.access(caller, client, fh, requested)
            }
            5 => self.readlink(client, fh),
            6 => {
                let offset = reader.u64().map_err(garbage)?;
                let count = reader.u32().map_err(garbage)?;
                let count = count.min(
                    u32::try_from(caller.reply_bytes_max.saturating_sub(READ_OVERHEAD_BYTES))
                        .unwrap_or(u32::MAX),
                );
                self.read(client, fh, offset, count)
            }
            16 | 17 => {
                let cookie = reader.u64().map_err(garbage)?;
                let verifier = reader.fixed::<8>().map_err(garbage)?;
                let count = reader.u32().map_err(garbage)?;
                let plus = proc_ == 17;
                let maxcount = if plus {
                    reader.u32().map_err(garbage)?
                } else {
                    count
                };
                let maxcount =
                    maxcount.min(u32::try_from(caller.reply_bytes_max).unwrap_or(u32::MAX));
                let request = crate::readdir::Request {
                    cookie,
                    verifier,
                    dircount: count,
                    maxcount,
                    plus,
                };
                self.readdir(client, fh, &request)
            }
            18 => self.fsstat(client, fh),
            19 => self.fsinfo(client, fh),
            _ => self.pathconf(client, fh),
        })
    }

    fn encode_failure(&self, proc_: u32, failure: Failure) -> Vec<u8> {
        match failure.status {
            nfsstat3::NFS3ERR_BADHANDLE => Counters::bump(&self.counters.bad_handle),
            nfsstat3::NFS3ERR_STALE => Counters::bump(&self.counters.stale),
            nfsstat3::NFS3ERR_BAD_COOKIE => Counters::bump(&self.counters.bad_cookie),
            _ => {}
        }
        let mut out = Vec::new();
        put(&mut out, &failure.status);
        // GETATTR3res carries nothing on failure; every other read
        // procedure carries one post_op_attr.
        if proc_ != 1 {
            put(&mut out, &self.post_op(failure.attrs.as_ref()));
        }
        out
    }

    /// Verify a handle and resolve it in the caller's own view.
    pub(crate) fn resolve(&self, client: ClientId, fh: &[u8]) -> Result<Node, Failure> {
        let handle = self
            .key
            .decode(fh)
            .map_err(|_| nfsstat3::NFS3ERR_BADHANDLE)?;
        // The MAC covers the client id: a handle of another view is refused
        // even though it verifies.
        if handle.client != client {
            return Err(nfsstat3::NFS3ERR_BADHANDLE.into());
        }
        self.fs
            .node(client, handle.file_id, handle.version)
            .map_err(|e| map_fs_error(&e).into())
    }

    pub(crate) fn handle_of(&self, client: ClientId, node: &Node) -> Vec<u8> {
        self.key.encode(&Handle {
            client,
            file_id: node.file_id,
            version: node.version,
        })
    }

    pub(crate) fn fattr(&self, node: &Node) -> fattr3 {
        fattr_of(&node.attrs, node.file_id, self.config.fsid)
    }

    pub(crate) fn post_op(&self, node: Option<&Node>) -> post_op_attr {
        match node {
            Some(node) => Nfs3Option::Some(self.fattr(node)),
            None => Nfs3Option::None,
        }
    }

    fn getattr(&self, client: ClientId, fh: &[u8]) -> NfsResult {
        let node = self.resolve(client, fh)?;
        let mut out = Vec::new();
        put(&mut out, &nfsstat3::NFS3_OK);
        put(&mut out, &self.fattr(&node));
        Ok(out.into())
    }

    fn lookup(&self, client: ClientId, fh: &[u8], name: &[u8]) -> NfsResult {
        let dir = self.resolve(client, fh)?;
        let fail = |status| Failure {
            status,
            attrs: Some(dir.clone()),
        };
        if dir.attrs.kind != NodeKind::Directory {
            return Err(fail(nfsstat3::NFS3ERR_NOTDIR));
        }
        if name.len() > NAME_BYTES_MAX {
            return Err(fail(nfsstat3::NFS3ERR_NAMETOOLONG));
        }
        let node = self
            .fs
            .lookup(client, dir.file_id, name)
            .map_err(|e| fail(map_fs_error(&e)))?;
        let mut out = Vec::new();
        put(&mut out, &nfsstat3::NFS3_OK);
        put(
            &mut out,
            &nfs_fh3 {
                data: Opaque::owned(self.handle_of(client, &node)),
            },
        );
        put(&mut out, &self.post_op(Some(&node)));
        put(&mut out, &self.post_op(Some(&dir)));
        Ok(out.into())
    }

    fn access(&self, caller: &Caller, client: ClientId, fh: &[u8], requested: u32) -> NfsResult {
        let node = self.resolve(client, fh)?;
        let granted = access_granted(&node.attrs, &caller.auth);
        let mut out = Vec::new();
        put(&mut out, &nfsstat3::NFS3_OK);
        put(&mut out, &self.post_op(Some(&node)));
        put_u32(&mut out, requested & granted);
        Ok(out.into())
    }

    fn readlink(&self, client: ClientId, fh: &[u8]) -> NfsResult {
        let node = self.resolve(client, fh)?;
        if node.attrs.kind != NodeKind::Symlink {
            return Err(Failure {
                status: nfsstat3::NFS3ERR_INVAL,
                attrs: Some(node),
            });
        }
        let target = self
            .fs
            .readlink(client, node.file_id)
            .map_err(|e| map_fs_error(&e))?;
        let mut out = Vec::new();
        put(&mut out, &nfsstat3::NFS3_OK);
        put(&mut out, &self.post_op(Some(&node)));
        put_opaque(&mut out, &target);
        Ok(out.into())
    }

    fn read(&self, client: ClientId, fh: &[u8], offset: u64, count: u32) -> NfsResult {
        let node = self.resolve(client, fh)?;
        let status = match node.attrs.kind {
            NodeKind::Regular => nfsstat3::NFS3_OK,
            NodeKind::Directory => nfsstat3::NFS3ERR_ISDIR,
            _ => nfsstat3::NFS3ERR_INVAL,
        };
        if status != nfsstat3::NFS3_OK {
            return Err(Failure {
                status,
                attrs: Some(node),
            });
        }
        // Limits are cut to a multiple of 4 so XDR padding never pushes a
        // reply over them; a smaller request is served exactly.
        let len = count.min(self.config.read_bytes_max & !3) as usize;
        let data = self
            .fs
            .read(client, node.file_id, node.version, offset, len)
            .map_err(|e| Failure {
                status: map_fs_error(&e),
                attrs: Some(node.clone()),
            })?;
        let eof = offset.saturating_add(data.len() as u64) >= node.attrs.size_bytes;
        let mut out = Vec::with_capacity(128);
        put(&mut out, &nfsstat3::NFS3_OK);
        put(&mut out, &self.post_op(Some(&node)));
        put_u32(&mut out, u32::try_from(data.len()).unwrap_or(u32::MAX));
        put_u32(&mut out, u32::from(eof));
        // The opaque's length here; its bytes go out as they are in the store.
        put_u32(&mut out, u32::try_from(data.len()).unwrap_or(u32::MAX));
        Ok(Reply { head: out, data })
    }

    fn fsstat(&self, client: ClientId, fh: &[u8]) -> NfsResult {
        let node = self.resolve(client, fh)?;
        let stats = self.fs.stats(client);
        let mut out = Vec::new();
        put(&mut out, &nfsstat3::NFS3_OK);
        put(
            &mut out,
            &FSSTAT3resok {
                obj_attributes: self.post_op(Some(&node)),
                tbytes: stats.total_bytes,
                fbytes: 0,
                abytes: 0,
                tfiles: stats.total_files,
                ffiles: 0,
                afiles: 0,
                invarsec: 0,
            },
        );
        Ok(out.into())
    }

    fn fsinfo(&self, client: ClientId, fh: &[u8]) -> NfsResult {
        let node = self.resolve(client, fh)?;
        let read_max = self.config.read_bytes_max;
        let mut out = Vec::new();
        put(&mut out, &nfsstat3::NFS3_OK);
        put(
            &mut out,
            &FSINFO3resok {
                obj_attributes: self.post_op(Some(&node)),
                rtmax: read_max,
                rtpref: read_max,
                rtmult: 4096,
                // Clients size their write buffers from these; every WRITE
                // answers ROFS whatever its size.
                wtmax: read_max,
                wtpref: read_max,
                wtmult: 4096,
                dtpref: self.config.readdir_bytes_max,
                maxfilesize: u64::MAX,
                time_delta: nfstime3 {
                    seconds: 0,
                    nseconds: 1,
                },
                properties: FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS,
            },
        );
        Ok(out.into())
    }

    fn pathconf(&self, client: ClientId, fh: &[u8]) -> NfsResult {
        let node = self.resolve(client, fh)?;
        let mut out = Vec::new();
        put(&mut out, &nfsstat3::NFS3_OK);
        put(
            &mut out,
            &PATHCONF3resok {
                obj_attributes: self.post_op(Some(&node)),
                linkmax: u32::MAX,
                name_max: NAME_BYTES_MAX as u32,
                no_trunc: true,
                chown_restricted: true,
                case_insensitive: false,
                case_preserving: true,
            },
        );
        Ok(out.into())
    }
}

/// What the caller may do, from the mode bits and AUTH_UNIX credentials.
/// Like Linux: uid 0 may read and search anything and execute a file with
/// any execute bit. MODIFY, EXTEND and DELETE are never granted.
pub fn access_granted(attrs: &Attrs, auth: &crate::rpc::Auth) -> u32 {
    let is_dir = attrs.kind == NodeKind::Directory;
    let uid = auth.uid();
    let bits = if uid == 0 {
        let any_x = attrs.mode & 0o111 != 0;
        0o4 | if is_dir || any_x { 0o1 } else { 0 }
    } else if uid == attrs.uid {
        (attrs.mode >> 6) & 0o7
    } else if auth.in_group(attrs.gid) {
        (attrs.mode >> 3) & 0o7
    } else {
        attrs.mode & 0o7
    };
    let mut granted = 0;
    if bits & 0o4 != 0 {
        granted |= ACCESS3_READ;
    }
    if bits & 0o1 != 0 {
        granted |= if is_dir {
            ACCESS3_LOOKUP
        } else {
            ACCESS3_EXECUTE
        };
    }
    granted
}

pub(crate) fn map_fs_error(error: &FsError) -> nfsstat3 {
    match error {
        FsError::NotFound => nfsstat3::NFS3ERR_NOENT,
        FsError::NotDirectory(_) => nfsstat3::NFS3ERR_NOTDIR,
        FsError::IsDirectory(_) => nfsstat3::NFS3ERR_ISDIR,
        FsError::NotSymlink(_) => nfsstat3::NFS3ERR_INVAL,
        FsError::Stale { .. } => nfsstat3::NFS3ERR_STALE,
        FsError::NoView(_) => nfsstat3::NFS3ERR_ACCES,
        FsError::Io(_) => nfsstat3::NFS3ERR_IO,
    }
}

fn nfstime(ns: u64) -> nfstime3 {
    nfstime3 {
        seconds: u32::try_from(ns / 1_000_000_000).unwrap_or(u32::MAX),
        nseconds: (ns % 1_000_000_000) as u32,
    }
}

pub(crate) fn fattr_of(attrs: &Attrs, file_id: FileId, fsid: u64) -> fattr3 {
    let type_ = match attrs.kind {
        NodeKind::Regular => ftype3::NF3REG,
        NodeKind::Directory => ftype3::NF3DIR,
        NodeKind::Symlink => ftype3::NF3LNK,
        NodeKind::BlockDevice => ftype3::NF3BLK,
        NodeKind::CharDevice => ftype3::NF3CHR,
        NodeKind::Socket => ftype3::NF3SOCK,
        NodeKind::Fifo => ftype3::NF3FIFO,
    };
    fattr3 {
        type_,
        mode: attrs.mode & 0o7777,
        nlink: attrs.nlink.max(1),
        uid: attrs.uid,
        gid: attrs.gid,
        size: attrs.size_bytes,
        used: attrs.used_bytes,
        rdev: specdata3 {
            specdata1: attrs.rdev.0,
            specdata2: attrs.rdev.1,
        },
        fsid,
        fileid: file_id,
        atime: nfstime(attrs.atime_ns),
        mtime: nfstime(attrs.mtime_ns),
        ctime: nfstime(attrs.ctime_ns),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::Auth;

    fn attrs(kind: NodeKind, mode: u32, nlink: u32) -> Attrs {
        Attrs {
            kind,
            mode,
            nlink,
            uid: 10,
            gid: 20,
            size_bytes: 1,
            used_bytes: 0,
            rdev: (8, 1),
            atime_ns: 1_500_000_000_123_456_789,
            mtime_ns: 0,
            ctime_ns: 0,
        }
    }

    #[test]
    fn nlink_is_never_zero_and_times_keep_nanoseconds() {
        let fattr = fattr_of(&attrs(NodeKind::BlockDevice, 0o660, 0), 5, 9);
        assert_eq!(fattr.nlink, 1);
        assert_eq!(fattr.type_, ftype3::NF3BLK);
        assert_eq!((fattr.rdev.specdata1, fattr.rdev.specdata2), (8, 1));
        assert_eq!(
            (fattr.atime.seconds, fattr.atime.nseconds),
            (1_500_000_000, 123_456_789)
        );
        assert_eq!((fattr.fsid, fattr.fileid), (9, 5));
    }

    #[test]
    fn setuid_bits_do_not_grant_access() {
        let file = attrs(NodeKind::Regular, 0o4000, 1);
        assert_eq!(
            access_granted(
                &file,
                &Auth::Unix {
                    uid: 0,
                    gid: 0,
                    gids: vec![]
                }
            ),
            ACCESS3_READ
        );
        assert_eq!(
            access_granted(
                &file,
                &Auth::Unix {
                    uid: 10,
                    gid: 0,
                    gids: vec![]
                }
            ),
            0
        );
        let other_x = attrs(NodeKind::Regular, 0o001, 1);
        assert_eq!(access_granted(&other_x, &Auth::None), ACCESS3_EXECUTE);
        // The owner class decides even when "other" would allow more.
        let owner_none = attrs(NodeKind::Regular, 0o007, 1);
        assert_eq!(
            access_granted(
                &owner_none,
                &Auth::Unix {
                    uid: 10,
                    gid: 0,
                    gids: vec![]
                }
            ),
            0
        );
    }
}
