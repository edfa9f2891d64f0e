//! ONC RPC version 2 (RFC 5531): call headers, AUTH_UNIX / AUTH_NONE
//! credentials and every reply shape a server sends.

use crate::xdr::{put_opaque, put_u32, Reader, XdrError};

pub const RPC_VERSION: u32 = 2;
const MSG_CALL: u32 = 0;
const MSG_REPLY: u32 = 1;
const AUTH_NONE: u32 = 0;
const AUTH_UNIX: u32 = 1;
/// RFC 5531 section 8.2: opaque_auth bodies are at most 400 bytes.
pub const AUTH_BODY_MAX: usize = 400;
/// RFC 5531 appendix A: machinename<255>, gids<16>.
pub const MACHINE_NAME_MAX: usize = 255;
pub const GIDS_MAX: usize = 16;

/// The uid and gid a call with AUTH_NONE is treated as.
pub const NOBODY_ID: u32 = 65534;

/// Caller credentials after parsing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    None,
    Unix { uid: u32, gid: u32, gids: Vec<u32> },
}

impl Auth {
    pub fn uid(&self) -> u32 {
        match self {
            Auth::None => NOBODY_ID,
            Auth::Unix { uid, .. } => *uid,
        }
    }

    /// Primary and supplementary groups.
    pub fn in_group(&self, group: u32) -> bool {
        match self {
            Auth::None => group == NOBODY_ID,
            Auth::Unix { gid, gids, .. } => *gid == group || gids.contains(&group),
        }
    }
}

/// A parsed call header; `args` is the procedure's still-encoded body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call<'a> {
    pub xid: u32,
    pub prog: u32,
    pub vers: u32,
    pub proc_: u32,
    pub auth: Auth,
    pub args: &'a [u8],
}

/// Why a message is not a call we can answer normally.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Too short or not a CALL: no reply is possible or sensible.
    #[error("not an RPC call: {0}")]
    Garbage(XdrError),
    #[error("message type {0} is not CALL")]
    NotCall(u32),
    /// Answer with MSG_DENIED / RPC_MISMATCH.
    #[error("RPC version {rpcvers} (xid {xid})")]
    RpcMismatch { xid: u32, rpcvers: u32 },
    /// Answer with MSG_DENIED / AUTH_ERROR.
    #[error("credential rejected (xid {xid}): {stat:?}")]
    Auth { xid: u32, stat: AuthStat },
}

/// auth_stat values we send (RFC 5531 section 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthStat {
    BadCred = 1,
    TooWeak = 5,
}

/// Read the xid of a message without decoding the rest (for de-duplication).
pub fn peek_xid(message: &[u8]) -> Option<u32> {
    Reader::new(message).u32().ok()
}

/// Decode a call header (RFC 5531 section 9, `call_body`).
pub fn decode_call(message: &[u8]) -> Result<Call<'_>, CallError> {
    let mut reader = Reader::new(message);
    let xid = reader.u32().map_err(CallError::Garbage)?;
    let mtype = reader.u32().map_err(CallError::Garbage)?;
    if mtype != MSG_CALL {
        return Err(CallError::NotCall(mtype));
    }
    let rpcvers = reader.u32().map_err(CallError::Garbage)?;
    if rpcvers != RPC_VERSION {
        return Err(CallError::RpcMismatch { xid, rpcvers });
    }
    let prog = reader.u32().map_err(CallError::Garbage)?;
    let vers = reader.u32().map_err(CallError::Garbage)?;
    let proc_ = reader.u32().map_err(CallError::Garbage)?;
    let bad_cred = CallError::Auth {
        xid,
        stat: AuthStat::BadCred,
    };
    let cred_flavor = reader.u32().map_err(|_| bad_cred.clone())?;
    let cred_body = reader.opaque(AUTH_BODY_MAX).map_err(|_| bad_cred.clone())?;
    let _verf_flavor = reader.u32().map_err(|_| bad_cred.clone())?;
    let _verf_body = reader.opaque(AUTH_BODY_MAX).map_err(|_| bad_cred.clone())?;
    let auth = match cred_flavor {
        AUTH_NONE => Auth::None,
        AUTH_UNIX => decode_auth_unix(cred_body).ok_or(bad_cred)?,
        _ => {
            return Err(CallError::Auth {
                xid,
                stat: AuthStat::TooWeak,
            })
        }
    };
    Ok(Call {
        xid,
        prog,
        vers,
        proc_,
        auth,
        args: reader.rest(),
    })
}

fn decode_auth_unix(body: &[u8]) -> Option<Auth> {
    let mut reader = Reader::new(body);
    let _stamp = reader.u32().ok()?;
    let _machine_name = reader.opaque(MACHINE_NAME_MAX).ok()?;
    let uid = reader.u32().ok()?;
    let gid = reader.u32().ok()?;
    let count = reader.u32().ok()? as usize;
    if count > GIDS_MAX {
        return None;
    }
    let mut gids = Vec::with_capacity(count);
    for _ in 0..count {
        gids.push(reader.u32().ok()?);
    }
    Some(Auth::Unix { uid, gid, gids })
}

/// How an accepted call ended (RFC 5531 `accept_stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    Success,
    ProgUnavail,
    ProgMismatch { low: u32, high: u32 },
    ProcUnavail,
    GarbageArgs,
    SystemErr,
}

fn reply_head(xid: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    put_u32(&mut out, xid);
    put_u32(&mut out, MSG_REPLY);
    out
}

/// MSG_ACCEPTED with an AUTH_NONE verifier; for `Success` the caller
/// appends the procedure's results.
pub fn accepted(xid: u32, accept: Accept) -> Vec<u8> {
    let mut out = reply_head(xid);
    put_u32(&mut out, 0); // MSG_ACCEPTED
    put_u32(&mut out, AUTH_NONE);
    put_opaque(&mut out, &[]);
    match accept {
        Accept::Success => put_u32(&mut out, 0),
        Accept::ProgUnavail => put_u32(&mut out, 1),
        Accept::ProgMismatch { low, high } => {
            put_u32(&mut out, 2);
            put_u32(&mut out, low);
            put_u32(&mut out, high);
        }
        Accept::ProcUnavail => put_u32(&mut out, 3),
        Accept::GarbageArgs => put_u32(&mut out, 4),
        Accept::SystemErr => put_u32(&mut out, 5),
    }
    out
}

/// MSG_DENIED / RPC_MISMATCH: we speak version 2 only.
pub fn rpc_mismatch(xid: u32) -> Vec<u8> {
    let mut out = reply_head(xid);
    put_u32(&mut out, 1); // MSG_DENIED
    put_u32(&mut out, 0); // RPC_MISMATCH
    put_u32(&mut out, RPC_VERSION);
    put_u32(&mut out, RPC_VERSION);
    out
}

/// MSG_DENIED / AUTH_ERROR.
pub fn auth_error(xid: u32, stat: AuthStat) -> Vec<u8> {
    let mut out = reply_head(xid);
    put_u32(&mut out, 1); // MSG_DENIED
    put_u32(&mut out, 1); // AUTH_ERROR
    put_u32(&mut out, stat as u32);
    out
}

/// Encode a call (used by tests and the benchmark client).
pub fn encode_call(
    xid: u32,
    prog: u32,
    vers: u32,
    proc_: u32,
    auth: &Auth,
    args: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + args.len());
    for word in [xid, MSG_CALL, RPC_VERSION, prog, vers, proc_] {
        put_u32(&mut out, word);
    }
    match auth {
        Auth::None => {
            put_u32(&mut out, AUTH_NONE);
            put_opaque(&mut out, &[]);
        }
        Auth::Unix { uid, gid, gids } => {
            let mut body = Vec::new();
            put_u32(&mut body, 0);
            put_opaque(&mut body, b"ironroot");
            put_u32(&mut body, *uid);
            put_u32(&mut body, *gid);
            put_u32(&mut body, u32::try_from(gids.len()).unwrap_or(0));
            for gid in gids {
                put_u32(&mut body, *gid);
            }
            put_u32(&mut out, AUTH_UNIX);
            put_opaque(&mut out, &body);
        }
    }
    put_u32(&mut out, AUTH_NONE);
    put_opaque(&mut out, &[]);
    out.extend_from_slice(args);
    out
}

/// A decoded reply header (for tests and clients).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyHead {
    Accepted(Accept),
    RpcMismatch { low: u32, high: u32 },
    AuthError(u32),
}

/// Decode a reply header; returns the xid, the header and the results.
pub fn decode_reply(message: &[u8]) -> Result<(u32, ReplyHead, &[u8]), XdrError> {
    let mut reader = Reader::new(message);
    let xid = reader.u32()?;
    let _mtype = reader.u32()?;
    let head = match reader.u32()? {
        0 => {
            let _flavor = reader.u32()?;
            let _body = reader.opaque(AUTH_BODY_MAX)?;
            ReplyHead::Accepted(match reader.u32()? {
                0 => Accept::Success,
                1 => Accept::ProgUnavail,
                2 => Accept::ProgMismatch {
                    low: reader.u32()?,
                    high: reader.u32()?,
                },
                3 => Accept::ProcUnavail,
                4 => Accept::GarbageArgs,
                _ => Accept::SystemErr,
            })
        }
        _ => match reader.u32()? {
            0 => ReplyHead::RpcMismatch {
                low: reader.u32()?,
                high: reader.u32()?,
            },
            _ => ReplyHead::AuthError(reader.u32()?),
        },
    };
    Ok((xid, head, reader.rest()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_round_trip_with_auth_unix() {
        let auth = Auth::Unix {
            uid: 1000,
            gid: 100,
            gids: vec![4, 27],
        };
        let bytes = encode_call(7, 100_003, 3, 1, &auth, &[0, 0, 0, 1]);
        let call = decode_call(&bytes).unwrap();
        assert_eq!(call.xid, 7);
        assert_eq!((call.prog, call.vers, call.proc_), (100_003, 3, 1));
        assert_eq!(call.auth, auth);
        assert_eq!(call.args, &[0, 0, 0, 1]);
    }

    #[test]
    fn too_many_gids_is_bad_cred() {
        let auth = Auth::Unix {
            uid: 0,
            gid: 0,
            gids: (0..17).collect(),
        };
        let bytes = encode_call(9, 100_003, 3, 0, &auth, &[]);
        assert_eq!(
            decode_call(&bytes),
            Err(CallError::Auth {
                xid: 9,
                stat: AuthStat::BadCred
            })
        );
    }
}
