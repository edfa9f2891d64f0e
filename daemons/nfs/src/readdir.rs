//! READDIR and READDIRPLUS (RFC 1813 sections 3.3.16 and 3.3.17).
//!
//! A cookie is a position in the directory's stable listing, where `.` is
//! position 0 and `..` position 1; the entry at position `p` carries cookie
//! `p + 1`, the position to resume at. The cookie verifier is a MAC of the
//! directory's id and times: it changes exactly when the listing may have
//! changed (a new generation gives the directory a newer mtime/ctime), is the
//! same on both nodes, and a stale one gets NFS3ERR_BAD_COOKIE.

use nfs3_types::nfs3::{nfs_fh3, nfsstat3, Nfs3Option};
use nfs3_types::xdr_codec::{Opaque, Pack};

use crate::fs::{ClientId, DirEntry, Filesystem, NodeKind};
use crate::nfs3::{map_fs_error, Failure, NfsResult};
use crate::server::Server;
use crate::xdr::{put, put_opaque, put_u32};

/// Entries fetched from the store per call while filling one reply.
const DIR_PAGE_ENTRIES_MAX: usize = 256;
/// Bytes of a reply before its entries: status, post_op_attr, verifier.
const HEADER_BYTES: usize = 4 + 4 + 84 + 8;
/// The end of the entry list and the eof flag.
const TRAILER_BYTES: usize = 8;

/// Arguments of READDIR / READDIRPLUS.
pub(crate) struct Request {
    pub cookie: u64,
    pub verifier: [u8; 8],
    /// READDIR `count`, READDIRPLUS `dircount`.
    pub dircount: u32,
    /// READDIRPLUS `maxcount` (equal to `dircount` for READDIR).
    pub maxcount: u32,
    pub plus: bool,
}

impl<F: Filesystem> Server<F> {
    pub(crate) fn cookie_verifier(&self, dir: &crate::fs::Node) -> [u8; 8] {
        let mut hasher = blake3::Hasher::new_keyed(&self.config.handle_key);
        hasher.update(b"cookieverf");
        hasher.update(&dir.file_id.to_be_bytes());
        hasher.update(&dir.attrs.mtime_ns.to_be_bytes());
        hasher.update(&dir.attrs.ctime_ns.to_be_bytes());
        let mut verifier = [0u8; 8];
        verifier.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
        verifier
    }

    pub(crate) fn readdir(&self, client: ClientId, fh: &[u8], request: &Request) -> NfsResult {
        let dir = self.resolve(client, fh)?;
        let fail = |status| Failure {
            status,
            attrs: Some(dir.clone()),
        };
        if dir.attrs.kind != NodeKind::Directory {
            return Err(fail(nfsstat3::NFS3ERR_NOTDIR));
        }
        let verifier = self.cookie_verifier(&dir);
        if request.cookie != 0 && request.verifier != verifier {
            return Err(fail(nfsstat3::NFS3ERR_BAD_COOKIE));
        }
        let reply_max = request.maxcount.min(self.config.readdir_bytes_max) as usize;
        let dircount_max = request.dircount as usize;
        let mut entries = Vec::new();
        let mut size = HEADER_BYTES + TRAILER_BYTES;
        let mut dir_bytes = 0usize;
        let mut count = 0usize;
        let mut position = usize::try_from(request.cookie).unwrap_or(usize::MAX);
        let eof = loop {
            let (page, page_eof) = self.entries_at(client, &dir, position).map_err(fail)?;
            let mut full = false;
            for entry in &page {
                let encoded = self.encode_entry(client, entry, position as u64 + 1, request.plus);
                let entry3_bytes = 8 + 4 + entry.name.len().div_ceil(4) * 4 + 8;
                let too_big = size + encoded.len() > reply_max
                    || (request.plus && dir_bytes + entry3_bytes > dircount_max);
                if too_big {
                    full = true;
                    break;
                }
                size += encoded.len();
                dir_bytes += entry3_bytes;
                entries.extend_from_slice(&encoded);
                count += 1;
                position += 1;
            }
            if full || page.is_empty() || page_eof {
                break page_eof && !full;
            }
        };
        if count == 0 && !eof {
            return Err(fail(nfsstat3::NFS3ERR_TOOSMALL));
        }
        let mut out = Vec::with_capacity(size);
        put(&mut out, &nfsstat3::NFS3_OK);
        put(&mut out, &self.post_op(Some(&dir)));
        out.extend_from_slice(&verifier);
        out.extend_from_slice(&entries);
        put_u32(&mut out, 0);
        put_u32(&mut out, u32::from(eof));
        Ok(out.into())
    }

    /// Entries from `position` of the listing with `.` and `..` in front.
    fn entries_at(
        &self,
        client: ClientId,
        dir: &crate::fs::Node,
        position: usize,
    ) -> Result<(Vec<DirEntry>, bool), nfsstat3> {
        let mut out = Vec::new();
        if position == 0 {
            out.push(DirEntry {
                name: b".".to_vec(),
                node: dir.clone(),
            });
        }
        if position <= 1 {
            let parent = self
                .fs
                .lookup(client, dir.file_id, b"..")
                .map_err(|e| map_fs_error(&e))?;
            out.push(DirEntry {
                name: b"..".to_vec(),
                node: parent,
            });
        }
        let start = position.saturating_sub(2);
        let page = self
            .fs
            .dir_page(client, dir.file_id, start, DIR_PAGE_ENTRIES_MAX)
            .map_err(|e| map_fs_error(&e))?;
        out.extend(page.entries);
        Ok((out, page.eof))
    }

    fn encode_entry(&self, client: ClientId, entry: &DirEntry, cookie: u64, plus: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + if plus { 140 } else { 0 });
        put_u32(&mut out, 1);
        put(&mut out, &entry.node.file_id);
        put_opaque(&mut out, &entry.name);
        put(&mut out, &cookie);
        if plus {
            put(&mut out, &self.post_op(Some(&entry.node)));
            let fh = nfs_fh3 {
                data: Opaque::owned(self.handle_of(client, &entry.node)),
            };
            let handle: Nfs3Option<nfs_fh3> = Nfs3Option::Some(fh);
            debug_assert!(handle.packed_size() <= 4 + 4 + 64);
            put(&mut out, &handle);
        }
        out
    }
}
