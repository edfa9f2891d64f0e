//! Shared helpers: a server over files in memory, request builders and a
//! well-behaved client that drains a transfer in virtual time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ironroot_net::Instant;
use ironroot_tftp::wire::{self, ErrorCode, Mode, Opcode, Packet, RawOption, Request};
use ironroot_tftp::{Decision, MemorySource, Outcome, Server, TftpConfig, Ticket, Transfer};

pub const CLIENT: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::new(10, 0, 0, 42),
    2000,
));

pub fn config() -> TftpConfig {
    TftpConfig {
        bind: std::net::Ipv4Addr::LOCALHOST,
        port: 0,
        ..TftpConfig::default()
    }
}

pub fn server_with(config: TftpConfig, files: &[(&str, &[u8])]) -> Arc<Server<MemorySource>> {
    let mut source = MemorySource::new();
    for (path, bytes) in files {
        source.insert(path, bytes.to_vec());
    }
    Server::new(config.validate().expect("valid config"), source)
}

pub fn server(files: &[(&str, &[u8])]) -> Arc<Server<MemorySource>> {
    server_with(config(), files)
}

pub fn request(opcode: Opcode, filename: &str, mode: Mode, options: &[(&str, &str)]) -> Vec<u8> {
    let request = Request {
        filename,
        mode,
        options: options
            .iter()
            .map(|(name, value)| RawOption { name, value })
            .collect(),
    };
    let mut out = Vec::new();
    wire::encode_request(&mut out, opcode, &request);
    out
}

pub fn rrq(filename: &str, options: &[(&str, &str)]) -> Vec<u8> {
    request(Opcode::Rrq, filename, Mode::Octet, options)
}

pub fn ack(block: u16) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode_ack(&mut out, block);
    out
}

pub fn error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode_error(&mut out, code, message);
    out
}

/// Admit `datagram` from `client`, or fail the test.
pub fn start_from(
    server: &Arc<Server<MemorySource>>,
    client: SocketAddr,
    datagram: &[u8],
) -> (Box<Transfer>, Ticket) {
    match server.handle_request(Instant::ZERO, client, datagram) {
        Decision::Start { transfer, ticket } => (transfer, ticket),
        other => panic!("expected a transfer, got {other:?}"),
    }
}

pub fn start(server: &Arc<Server<MemorySource>>, datagram: &[u8]) -> (Box<Transfer>, Ticket) {
    start_from(server, CLIENT, datagram)
}

/// The ERROR a request is refused with, or fail the test.
pub fn refusal(server: &Arc<Server<MemorySource>>, datagram: &[u8]) -> (ErrorCode, String) {
    match server.handle_request(Instant::ZERO, CLIENT, datagram) {
        Decision::Refuse { reply } => match wire::decode(&reply) {
            Ok(Packet::Error { code, message }) => (code, message.to_string()),
            other => panic!("refusal is not an ERROR: {other:?}"),
        },
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Everything the transfer wants to send now.
pub fn drain(transfer: &mut Transfer) -> Vec<Vec<u8>> {
    let mut sent = Vec::new();
    let mut out = Vec::new();
    while transfer.poll_transmit(&mut out) {
        sent.push(out.clone());
    }
    sent
}

pub fn data_blocks(sent: &[Vec<u8>]) -> Vec<(u16, Vec<u8>)> {
    sent.iter()
        .map(|bytes| match wire::decode(bytes) {
            Ok(Packet::Data { block, data }) => (block, data.to_vec()),
            other => panic!("expected DATA, got {other:?}"),
        })
        .collect()
}

pub fn oack_of(bytes: &[u8]) -> Vec<(String, String)> {
    match wire::decode(bytes) {
        Ok(Packet::Oack { options }) => options
            .iter()
            .map(|option| (option.name.to_string(), option.value.to_string()))
            .collect(),
        other => panic!("expected an OACK, got {other:?}"),
    }
}

/// A client that acknowledges the last DATA of everything the server sent
/// in one go (a whole window), answers an OACK with ACK 0, and advances
/// virtual time by 1 ms per round. Returns the file and how it ended.
pub fn fetch(transfer: &mut Transfer) -> (Vec<u8>, Outcome) {
    fetch_after(transfer, None)
}

/// [`fetch`] for a transfer whose packets up to DATA `acked` the test
/// already drained: acknowledges it first, collects what follows.
pub fn fetch_after(transfer: &mut Transfer, acked: Option<u16>) -> (Vec<u8>, Outcome) {
    let mut now = Instant::ZERO;
    let mut file = Vec::new();
    let mut expected: u16 = acked.map_or(1, |block| block.wrapping_add(1));
    if let Some(block) = acked {
        transfer.handle_datagram(now, &ack(block));
    }
    for _round in 0..10_000_000u64 {
        if let Some(outcome) = transfer.outcome() {
            return (file, outcome.clone());
        }
        let sent = drain(transfer);
        now += Duration::from_millis(1);
        let mut last_good = None;
        for bytes in &sent {
            match wire::decode(bytes) {
                Ok(Packet::Oack { .. }) => last_good = Some(0),
                Ok(Packet::Data { block, data }) if block == expected => {
                    file.extend_from_slice(data);
                    expected = expected.wrapping_add(1);
                    last_good = Some(block);
                }
                other => panic!("unexpected packet {other:?}"),
            }
        }
        let block = last_good.expect("the server sent nothing while the client waits");
        transfer.handle_datagram(now, &ack(block));
    }
    panic!("transfer did not end");
}

/// Bytes 0, 1, 2, ... wrapping, so a misplaced block shows.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|index| (index % 251) as u8).collect()
}

/// Our server on real loopback sockets (tokio backend), stopped on drop.
pub struct Running<S: ironroot_tftp::FileSource> {
    pub addr: SocketAddr,
    pub server: Arc<Server<S>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl<S: ironroot_tftp::FileSource> Running<S> {
    pub fn start(config: TftpConfig, source: S) -> Running<S> {
        use ironroot_net::tokio_backend::TokioRuntime;
        let server = Server::new(config.validate().expect("valid config"), source);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (addr, task) = runtime.block_on(async {
            let rt = TokioRuntime::with_seed(1);
            let listener = ironroot_tftp::driver::bind(&rt, &server)
                .await
                .expect("bind");
            let addr = ironroot_net::UdpSocket::local_addr(&listener).expect("local addr");
            let task = tokio::spawn(ironroot_tftp::driver::run(rt, server.clone(), listener));
            (addr, task)
        });
        Running {
            addr,
            server,
            task,
            runtime: Some(runtime),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Wait (bounded) until no transfer runs, so counters are final.
    pub fn wait_idle(&self) {
        for _ in 0..500 {
            if self.server.active() == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("transfers still running after 5 s");
    }
}

impl<S: ironroot_tftp::FileSource> Drop for Running<S> {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}
