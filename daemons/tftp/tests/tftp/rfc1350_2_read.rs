//! RFC 1350 §2 and §5: read requests in octet and netascii mode, the end of
//! a file, and every request the read-only server must refuse.

use ironroot_tftp::wire::{ErrorCode, Mode, Opcode};
use ironroot_tftp::Outcome;

use crate::harness::*;

#[test]
fn octet_file_ends_with_a_short_block() {
    let content = pattern(1000);
    let server = server(&[("kernel", &content)]);
    let (mut transfer, _ticket) = start(&server, &rrq("kernel", &[]));
    let (file, outcome) = fetch(&mut transfer);
    assert_eq!(file, content);
    assert_eq!(
        outcome,
        Outcome::Completed {
            bytes: 1000,
            blocks: 2
        }
    );
}

#[test]
fn file_of_whole_blocks_ends_with_an_empty_block() {
    let content = pattern(1024);
    let server = server(&[("f", &content)]);
    let (mut transfer, _ticket) = start(&server, &rrq("f", &[]));
    let (file, outcome) = fetch(&mut transfer);
    assert_eq!(file, content);
    assert_eq!(
        outcome,
        Outcome::Completed {
            bytes: 1024,
            blocks: 3
        }
    );
}

#[test]
fn empty_file_is_one_empty_block() {
    let server = server(&[("empty", b"")]);
    let (mut transfer, _ticket) = start(&server, &rrq("empty", &[]));
    let sent = data_blocks(&drain(&mut transfer));
    assert_eq!(sent, vec![(1, vec![])]);
    let (_, outcome) = fetch_after(&mut transfer, Some(1));
    assert_eq!(
        outcome,
        Outcome::Completed {
            bytes: 0,
            blocks: 1
        }
    );
}

#[test]
fn netascii_translates_line_endings() {
    let server = server(&[("pxelinux.cfg/default", b"default linux\nlabel\r x\n")]);
    let datagram = request(Opcode::Rrq, "pxelinux.cfg/default", Mode::Netascii, &[]);
    let (mut transfer, _ticket) = start(&server, &datagram);
    let (file, _) = fetch(&mut transfer);
    assert_eq!(file, b"default linux\r\nlabel\r\0 x\r\n");
}

#[test]
fn netascii_across_many_blocks_matches_a_whole_translation() {
    let source: Vec<u8> = (0..5000).map(|index| b"ab\r\ncd\n\n"[index % 8]).collect();
    let mut expected = Vec::new();
    for byte in &source {
        match byte {
            b'\n' => expected.extend_from_slice(b"\r\n"),
            b'\r' => expected.extend_from_slice(b"\r\0"),
            other => expected.push(*other),
        }
    }
    let server = server(&[("text", &source)]);
    let datagram = request(Opcode::Rrq, "text", Mode::Netascii, &[("windowsize", "7")]);
    let (mut transfer, _ticket) = start(&server, &datagram);
    let (file, _) = fetch(&mut transfer);
    assert_eq!(file, expected);
}

#[test]
fn write_requests_are_refused_with_access_violation() {
    let server = server(&[]);
    let datagram = request(Opcode::Wrq, "upload", Mode::Octet, &[]);
    assert_eq!(refusal(&server, &datagram).0, ErrorCode::AccessViolation);
    assert_eq!(server.counters().snapshot().write_refused, 1);
    assert_eq!(server.active(), 0);
}

#[test]
fn mail_mode_and_malformed_requests_are_illegal_operations() {
    let server = server(&[("f", b"x")]);
    let mail = request(Opcode::Rrq, "f", Mode::Mail, &[]);
    assert_eq!(refusal(&server, &mail).0, ErrorCode::IllegalOperation);
    let (code, message) = refusal(&server, b"\x00\x01f\x00binary\x00");
    assert_eq!(code, ErrorCode::IllegalOperation);
    assert!(message.contains("binary"), "{message}");
    let (code, _) = refusal(&server, b"\x00\x01f\x00octet\x00blksize\x00");
    assert_eq!(code, ErrorCode::IllegalOperation);
}

#[test]
fn missing_files_are_not_found() {
    let server = server(&[("f", b"x")]);
    assert_eq!(refusal(&server, &rrq("g", &[])).0, ErrorCode::FileNotFound);
    assert_eq!(server.counters().snapshot().not_found, 1);
}

#[test]
fn paths_that_climb_out_are_access_violations() {
    let server = server(&[("f", b"x")]);
    for path in ["../f", "/../../etc/passwd", "a/../../f", "..\\f"] {
        assert_eq!(
            refusal(&server, &rrq(path, &[])).0,
            ErrorCode::AccessViolation,
            "{path}"
        );
    }
    // A leading slash names the root of the served tree, not the host's.
    let (mut transfer, _ticket) = start(&server, &rrq("/f", &[]));
    assert_eq!(fetch(&mut transfer).0, b"x");
}

#[test]
fn non_requests_on_the_listener_are_dropped_and_counted() {
    let server = server(&[]);
    for datagram in [ack(1), b"\x00".to_vec(), b"\x00\x07zz".to_vec()] {
        let decision = server.handle_request(ironroot_net::Instant::ZERO, CLIENT, &datagram);
        assert!(matches!(decision, ironroot_tftp::Decision::Drop));
    }
    assert_eq!(server.counters().snapshot().malformed_dropped, 3);
}
