//! RFC 5531 (ONC RPC v2): reply_stat, accept_stat and reject_stat cases,
//! credentials (section 8, 9; appendix A) and record marking (section 11).

use ironroot_nfs::record::{encode_record, RecordDecoder};
use ironroot_nfs::rpc::{self, Accept, Auth, ReplyHead};
use ironroot_nfs::server::{MOUNT_PROGRAM, NFS_PROGRAM, PORTMAP_PROGRAM};

use crate::support::*;

#[test]
fn section_9_prog_unavail_for_unknown_program() {
    let server = server();
    let (head, _) = call_raw(&server, KNOWN, 100_021, 4, 0, &Auth::None, &[]);
    assert_eq!(head, ReplyHead::Accepted(Accept::ProgUnavail));
}

#[test]
fn section_9_prog_mismatch_reports_supported_range() {
    let server = server();
    for (prog, vers, low) in [
        (NFS_PROGRAM, 4, 3),
        (NFS_PROGRAM, 2, 3),
        (MOUNT_PROGRAM, 1, 3),
        (PORTMAP_PROGRAM, 3, 2),
    ] {
        let (head, _) = call_raw(&server, KNOWN, prog, vers, 0, &Auth::None, &[]);
        assert_eq!(
            head,
            ReplyHead::Accepted(Accept::ProgMismatch { low, high: low }),
            "prog {prog} v{vers}"
        );
    }
}

#[test]
fn section_9_proc_unavail_for_unknown_procedure() {
    let server = server();
    for prog in [NFS_PROGRAM, MOUNT_PROGRAM] {
        let (head, _) = call_raw(&server, KNOWN, prog, 3, 22, &Auth::None, &[]);
        assert_eq!(head, ReplyHead::Accepted(Accept::ProcUnavail));
    }
    let (head, _) = call_raw(&server, KNOWN, PORTMAP_PROGRAM, 2, 9, &Auth::None, &[]);
    assert_eq!(head, ReplyHead::Accepted(Accept::ProcUnavail));
}

#[test]
fn section_9_garbage_args_for_truncated_arguments() {
    let server = server();
    // GETATTR with a handle length that runs past the end of the message.
    let (head, _) = call_raw(
        &server,
        KNOWN,
        NFS_PROGRAM,
        3,
        1,
        &Auth::None,
        &[0, 0, 0, 40, 1, 2],
    );
    assert_eq!(head, ReplyHead::Accepted(Accept::GarbageArgs));
    // A handle longer than NFS3_FHSIZE.
    let mut args = vec![0, 0, 0, 65];
    args.extend_from_slice(&[0; 68]);
    let (head, _) = call_raw(&server, KNOWN, NFS_PROGRAM, 3, 1, &Auth::None, &args);
    assert_eq!(head, ReplyHead::Accepted(Accept::GarbageArgs));
    let (head, _) = call_raw(
        &server,
        KNOWN,
        MOUNT_PROGRAM,
        3,
        1,
        &Auth::None,
        &[0, 0, 4, 1],
    );
    assert_eq!(head, ReplyHead::Accepted(Accept::GarbageArgs));
}

#[test]
fn section_9_rpc_mismatch_for_rpc_version_other_than_2() {
    let server = server();
    let mut message = rpc::encode_call(5, NFS_PROGRAM, 3, 0, &Auth::None, &[]);
    message[8..12].copy_from_slice(&3u32.to_be_bytes());
    let reply = server.handle(peer(KNOWN), &message).unwrap();
    let (xid, head, _) = rpc::decode_reply(&reply).unwrap();
    assert_eq!(xid, 5);
    assert_eq!(head, ReplyHead::RpcMismatch { low: 2, high: 2 });
}

#[test]
fn section_9_replies_and_garbage_get_no_reply() {
    let server = server();
    let mut message = rpc::encode_call(5, NFS_PROGRAM, 3, 0, &Auth::None, &[]);
    message[4..8].copy_from_slice(&1u32.to_be_bytes()); // a REPLY
    assert_eq!(server.handle(peer(KNOWN), &message), None);
    assert_eq!(server.handle(peer(KNOWN), &[1, 2, 3]), None);
    assert_eq!(server.handle(peer(KNOWN), &message[..10]), None);
}

#[test]
fn section_8_auth_unix_limits_and_unknown_flavors() {
    let server = server();
    let too_many_gids = Auth::Unix {
        uid: 1,
        gid: 1,
        gids: (0..17).collect(),
    };
    let (head, _) = call_raw(&server, KNOWN, NFS_PROGRAM, 3, 0, &too_many_gids, &[]);
    assert_eq!(head, ReplyHead::AuthError(1)); // AUTH_BADCRED
    let mut message = rpc::encode_call(6, NFS_PROGRAM, 3, 0, &Auth::None, &[]);
    message[24..28].copy_from_slice(&6u32.to_be_bytes()); // RPCSEC_GSS
    let (_, head, _) = rpc::decode_reply(&server.handle(peer(KNOWN), &message).unwrap()).unwrap();
    assert_eq!(head, ReplyHead::AuthError(5)); // AUTH_TOOWEAK
                                               // An opaque_auth body over 400 bytes.
    let mut message = rpc::encode_call(6, NFS_PROGRAM, 3, 0, &Auth::None, &[]);
    message[28..32].copy_from_slice(&401u32.to_be_bytes());
    let (_, head, _) = rpc::decode_reply(&server.handle(peer(KNOWN), &message).unwrap()).unwrap();
    assert_eq!(head, ReplyHead::AuthError(1));
    let sixteen = Auth::Unix {
        uid: 1,
        gid: 1,
        gids: (0..16).collect(),
    };
    let (head, _) = call_raw(&server, KNOWN, NFS_PROGRAM, 3, 0, &sixteen, &[]);
    assert_eq!(head, ReplyHead::Accepted(Accept::Success));
}

#[test]
fn section_11_record_marking_multi_fragment_and_bound() {
    let server = server();
    let message = rpc::encode_call(77, NFS_PROGRAM, 3, 0, &unix(0, 0), &[]);
    let (first, second) = message.split_at(13);
    let mut stream = Vec::new();
    stream.extend_from_slice(&(first.len() as u32).to_be_bytes());
    stream.extend_from_slice(first);
    stream.extend_from_slice(&(second.len() as u32 | 0x8000_0000).to_be_bytes());
    stream.extend_from_slice(second);
    let mut decoder = RecordDecoder::new(1024);
    decoder.push(&stream);
    let record = decoder.poll_record().unwrap().expect("one record");
    let reply = server.handle(peer(KNOWN), &record).unwrap();
    let framed = encode_record(&reply);
    assert_eq!(
        u32::from_be_bytes(framed[..4].try_into().unwrap()),
        0x8000_0000 | reply.len() as u32
    );
    assert_eq!(rpc::decode_reply(&reply).unwrap().0, 77);
    let mut bounded = RecordDecoder::new(16);
    bounded.push(&stream);
    assert!(bounded.poll_record().is_err());
}
