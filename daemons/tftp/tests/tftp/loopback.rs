//! The driver on real loopback sockets with a minimal client written here:
//! each transfer has its own TID, replies leave from the address the
//! request was sent to, a stranger's datagram gets ERROR 5 without
//! disturbing the transfer, and timeouts retransmit in real time.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use ironroot_tftp::wire::{self, ErrorCode, Mode, Opcode, Packet};
use ironroot_tftp::{DirSource, MemorySource};

use crate::harness::*;

fn client(ip: &str) -> UdpSocket {
    let socket = UdpSocket::bind(format!("{ip}:0")).expect("bind client");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    socket
}

fn receive(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 70_000];
    let (len, from) = socket.recv_from(&mut buf).expect("a reply within 5 s");
    buf.truncate(len);
    (buf, from)
}

fn memory(files: &[(&str, &[u8])]) -> MemorySource {
    let mut source = MemorySource::new();
    for (path, bytes) in files {
        source.insert(path, bytes.to_vec());
    }
    source
}

#[test]
fn transfer_uses_a_new_tid_and_replies_from_the_address_asked() {
    let content = pattern(5000);
    let mut config = config();
    config.bind = std::net::Ipv4Addr::UNSPECIFIED;
    let running = Running::start(config, memory(&[("f", &content)]));
    let socket = client("127.0.0.1");
    // 127.0.0.2 is loopback too: it stands in for the VIP.
    let vip: SocketAddr = format!("127.0.0.2:{}", running.port())
        .parse()
        .expect("addr");
    socket
        .send_to(&rrq("f", &[("blksize", "1468")]), vip)
        .expect("send");
    let (oack, tid) = receive(&socket);
    assert_eq!(
        oack_of(&oack),
        vec![("blksize".to_string(), "1468".to_string())]
    );
    assert_eq!(
        tid.ip(),
        vip.ip(),
        "reply did not leave from the address asked"
    );
    assert_ne!(
        tid.port(),
        running.port(),
        "transfer reused the listener's port"
    );
    let mut file = Vec::new();
    let mut block = 0u16;
    socket.send_to(&ack(0), tid).expect("ack");
    loop {
        let (bytes, from) = receive(&socket);
        assert_eq!(from, tid);
        let Ok(Packet::Data { block: got, data }) = wire::decode(&bytes) else {
            panic!("expected DATA");
        };
        assert_eq!(got, block + 1);
        block = got;
        file.extend_from_slice(data);
        socket.send_to(&ack(block), tid).expect("ack");
        if data.len() < 1468 {
            break;
        }
    }
    assert_eq!(file, content);
    running.wait_idle();
    assert_eq!(running.server.counters().snapshot().transfers_completed, 1);
}

#[test]
fn stranger_gets_unknown_tid_and_the_transfer_goes_on() {
    let content = pattern(700);
    let running = Running::start(config(), memory(&[("f", &content)]));
    let socket = client("127.0.0.1");
    socket.send_to(&rrq("f", &[]), running.addr).expect("send");
    let (first, tid) = receive(&socket);
    assert_eq!(data_blocks(&[first])[0].0, 1);
    let stranger = client("127.0.0.1");
    stranger.send_to(&ack(1), tid).expect("send");
    let (reply, _) = receive(&stranger);
    assert!(matches!(
        wire::decode(&reply),
        Ok(Packet::Error {
            code: ErrorCode::UnknownTransferId,
            ..
        })
    ));
    socket.send_to(&ack(1), tid).expect("ack");
    let (second, _) = receive(&socket);
    assert_eq!(data_blocks(&[second]), vec![(2, content[512..].to_vec())]);
    socket.send_to(&ack(2), tid).expect("ack");
    running.wait_idle();
    let counters = running.server.counters().snapshot();
    assert_eq!((counters.unknown_tid, counters.transfers_completed), (1, 1));
}

#[test]
fn unanswered_data_is_retransmitted_then_abandoned() {
    let mut config = config();
    config.timeout_ms = 50;
    config.retries_max = 2;
    let running = Running::start(config, memory(&[("f", b"hello")]));
    let socket = client("127.0.0.1");
    socket.send_to(&rrq("f", &[]), running.addr).expect("send");
    let (first, tid) = receive(&socket);
    let (again, from) = receive(&socket);
    assert_eq!((again, from), (first.clone(), tid));
    let (third, _) = receive(&socket);
    assert_eq!(third, first);
    running.wait_idle();
    let counters = running.server.counters().snapshot();
    assert_eq!((counters.transfers_timed_out, counters.data_resent), (1, 2));
}

#[test]
fn write_request_and_escapes_are_refused_on_the_wire() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret"), b"secret").expect("write");
    let tree = tempfile::tempdir().expect("tempdir");
    std::fs::write(tree.path().join("ok"), b"ok").expect("write");
    std::os::unix::fs::symlink(outside.path().join("secret"), tree.path().join("leak"))
        .expect("symlink");
    let running = Running::start(config(), DirSource::new(tree.path()).expect("source"));
    let socket = client("127.0.0.1");
    let cases: [(Vec<u8>, ErrorCode); 4] = [
        (
            request(Opcode::Wrq, "ok", Mode::Octet, &[]),
            ErrorCode::AccessViolation,
        ),
        (rrq("../secret", &[]), ErrorCode::AccessViolation),
        (rrq("leak", &[]), ErrorCode::AccessViolation),
        (rrq("absent", &[]), ErrorCode::FileNotFound),
    ];
    for (datagram, expected) in cases {
        socket.send_to(&datagram, running.addr).expect("send");
        let (reply, _) = receive(&socket);
        match wire::decode(&reply) {
            Ok(Packet::Error { code, .. }) => assert_eq!(code, expected),
            other => panic!("expected ERROR {expected:?}, got {other:?}"),
        }
    }
    assert_eq!(std::fs::read(tree.path().join("ok")).expect("read"), b"ok");
    let counters = running.server.counters().snapshot();
    assert_eq!(
        (
            counters.write_refused,
            counters.path_refused,
            counters.not_found
        ),
        (1, 2, 1)
    );
}
