//! In-process clients over real loopback sockets: the `nfs3_client` crate
//! (portmap discovery, MOUNT, NFSv3 over TCP), raw UDP calls, and TCP record
//! marking through the async driver.

use std::net::SocketAddr;
use std::sync::Arc;

use ironroot_nfs::record::encode_record;
use ironroot_nfs::rpc::{self, Accept, Auth, ReplyHead};
use ironroot_nfs::MemFs;
use nfs3_client::nfs3_types::nfs3::*;
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::{TokioConnector, TokioIo};
use nfs3_client::{Nfs3ConnectionBuilder, PortmapperClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

fn daemon() -> Daemon {
    let mut fs = MemFs::new();
    fs.add_client(KNOWN, 1, Arc::new(trees().0));
    Daemon::start(fs)
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn nfs3_client_mounts_through_portmap_and_reads() {
    let daemon = daemon();
    block_on(async {
        let credential = opaque_auth::auth_unix(&auth_unix {
            uid: 0,
            gid: 0,
            ..auth_unix::default()
        });
        let mut connection = Nfs3ConnectionBuilder::new(TokioConnector, "127.0.0.1", "/")
            .portmapper_port(daemon.port)
            .connect_from_privileged_port(false)
            .credential(credential)
            .mount()
            .await
            .expect("mount through portmap");
        let root = connection.root_nfs_fh3();
        let found = connection
            .lookup(&LOOKUP3args {
                what: diropargs3 {
                    dir: root.clone(),
                    name: filename3(Opaque::borrowed(b"hello")),
                },
            })
            .await
            .unwrap()
            .unwrap();
        let read = connection
            .read(&READ3args {
                file: found.object.clone(),
                offset: 0,
                count: 4096,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.data.as_ref(), b"hello world\n");
        assert!(read.eof);
        let listing = connection
            .readdirplus(&READDIRPLUS3args {
                dir: root.clone(),
                cookie: 0,
                cookieverf: cookieverf3::default(),
                dircount: 4096,
                maxcount: 16384,
            })
            .await
            .unwrap()
            .unwrap();
        let names: Vec<String> = listing
            .reply
            .entries
            .0
            .iter()
            .map(|e| String::from_utf8_lossy(e.name.as_ref()).into_owned())
            .collect();
        assert_eq!(
            names,
            [".", "..", "big", "dir", "hello", "link", "run", "secret"]
        );
        let created = connection
            .mkdir(&MKDIR3args {
                where_: diropargs3 {
                    dir: root,
                    name: filename3(Opaque::borrowed(b"x")),
                },
                attributes: sattr3::default(),
            })
            .await
            .unwrap();
        assert!(matches!(
            created,
            Nfs3Result::Err((nfsstat3::NFS3ERR_ROFS, _))
        ));
        connection.unmount().await.unwrap();
    });
}

#[test]
fn portmap_over_tcp_lists_registrations() {
    let daemon = daemon();
    block_on(async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", daemon.port))
            .await
            .unwrap();
        let mut portmap = PortmapperClient::new(TokioIo::new(stream));
        portmap.null().await.unwrap();
        assert_eq!(portmap.getport(100_003, 3, 6).await.unwrap(), daemon.port);
        assert_eq!(portmap.getport(100_005, 3, 17).await.unwrap(), daemon.port);
        assert_eq!(portmap.dump().await.unwrap().len(), 6);
    });
}

#[test]
fn udp_calls_are_answered_from_the_address_they_were_sent_to() {
    let daemon = daemon();
    block_on(async {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server: SocketAddr = ([127, 0, 0, 1], daemon.port).into();
        let call = rpc::encode_call(
            99,
            100_000,
            2,
            3,
            &Auth::None,
            &[0, 1, 0x86, 0xa3, 0, 0, 0, 3, 0, 0, 0, 17, 0, 0, 0, 0],
        );
        socket.send_to(&call, server).await.unwrap();
        let mut buf = [0u8; 512];
        let (len, from) = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            socket.recv_from(&mut buf),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(from, server);
        let (xid, head, results) = rpc::decode_reply(&buf[..len]).unwrap();
        assert_eq!((xid, head), (99, ReplyHead::Accepted(Accept::Success)));
        assert_eq!(results, u32::from(daemon.port).to_be_bytes());
    });
}

#[test]
fn udp_read_replies_fit_in_a_datagram() {
    let mut fs = MemFs::new();
    let mut tree = ironroot_nfs::Tree::empty();
    tree.add_file("large", 0o644, 0, 0, &vec![1u8; 200_000]);
    fs.add_client(KNOWN, 1, Arc::new(tree));
    let daemon = Daemon::start(fs);
    let root = root(&daemon.server, KNOWN);
    let large = lookup(&daemon.server, KNOWN, &root, "large");
    block_on(async {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let args = pack(&READ3args {
            file: large,
            offset: 0,
            count: 1 << 20,
        });
        let call = rpc::encode_call(5, 100_003, 3, 6, &unix(0, 0), &args);
        socket
            .send_to(&call, ("127.0.0.1", daemon.port))
            .await
            .unwrap();
        let mut buf = vec![0u8; 70_000];
        let (len, _) = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            socket.recv_from(&mut buf),
        )
        .await
        .unwrap()
        .unwrap();
        let (_, _, results) = rpc::decode_reply(&buf[..len]).unwrap();
        let READ3res::Ok(ok) = unpack::<READ3res>(results) else {
            panic!("READ failed")
        };
        assert!(ok.count > 30_000 && !ok.eof, "count {}", ok.count);
    });
}

#[test]
fn tcp_multi_fragment_records_and_oversized_records() {
    let daemon = daemon();
    block_on(async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", daemon.port))
            .await
            .unwrap();
        let call = rpc::encode_call(1, 100_003, 3, 0, &unix(0, 0), &[]);
        let (first, second) = call.split_at(8);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(first.len() as u32).to_be_bytes());
        bytes.extend_from_slice(first);
        bytes.extend_from_slice(&(second.len() as u32 | 0x8000_0000).to_be_bytes());
        bytes.extend_from_slice(second);
        bytes.extend_from_slice(&encode_record(&rpc::encode_call(
            2,
            100_003,
            3,
            0,
            &Auth::None,
            &[],
        )));
        stream.write_all(&bytes).await.unwrap();
        let mut xids = Vec::new();
        for _ in 0..2 {
            let mut header = [0u8; 4];
            stream.read_exact(&mut header).await.unwrap();
            let len = (u32::from_be_bytes(header) & 0x7fff_ffff) as usize;
            let mut reply = vec![0u8; len];
            stream.read_exact(&mut reply).await.unwrap();
            xids.push(rpc::decode_reply(&reply).unwrap().0);
        }
        xids.sort_unstable();
        assert_eq!(xids, [1, 2]);
        // A record over record_bytes_max closes the connection.
        stream
            .write_all(&(0x8000_0000u32 | (1 << 20)).to_be_bytes())
            .await
            .unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read_to_end(&mut rest),
        )
        .await
        .unwrap();
        assert!(read.is_err() || rest.is_empty());
    });
    assert_eq!(
        ironroot_nfs::Counters::get(&daemon.server.counters().records_too_long),
        1
    );
}

#[test]
fn connections_over_the_limit_are_closed() {
    let mut fs = MemFs::new();
    fs.add_client(KNOWN, 1, Arc::new(trees().0));
    let daemon = Daemon::start_with(fs, |config| config.connections_max = 1);
    block_on(async {
        let mut first = tokio::net::TcpStream::connect(("127.0.0.1", daemon.port))
            .await
            .unwrap();
        // The first connection is being served.
        first
            .write_all(&encode_record(&rpc::encode_call(
                1,
                100_003,
                3,
                0,
                &Auth::None,
                &[],
            )))
            .await
            .unwrap();
        let mut header = [0u8; 4];
        first.read_exact(&mut header).await.unwrap();
        let mut second = tokio::net::TcpStream::connect(("127.0.0.1", daemon.port))
            .await
            .unwrap();
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), second.read(&mut byte))
            .await
            .unwrap();
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "second connection was served"
        );
    });
    assert_eq!(
        ironroot_nfs::Counters::get(&daemon.server.counters().connections_refused),
        1
    );
}

#[test]
fn served_connections_are_listed_until_they_close() {
    let mut fs = MemFs::new();
    fs.add_client(KNOWN, 1, Arc::new(trees().0));
    let daemon = Daemon::start(fs);
    block_on(async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", daemon.port))
            .await
            .unwrap();
        // A reply proves the server accepted and serves the connection.
        let null = encode_record(&rpc::encode_call(1, 100_003, 3, 0, &Auth::None, &[]));
        stream.write_all(&null).await.unwrap();
        let mut header = [0u8; 4];
        stream.read_exact(&mut header).await.unwrap();
        let (local, peer) = (stream.local_addr().unwrap(), stream.peer_addr().unwrap());
        let expected = match (peer, local) {
            (SocketAddr::V4(server), SocketAddr::V4(client)) => (server, client),
            other => panic!("not IPv4: {other:?}"),
        };
        assert_eq!(daemon.server.tcp_connections(), vec![expected]);
        drop(stream);
        // The server notices the close on its next read; bounded wait.
        for _ in 0..500 {
            if daemon.server.tcp_connections().is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!(
            "closed connection still listed: {:?}",
            daemon.server.tcp_connections()
        );
    });
}

/// A store whose READs wait at a gate, so a call stays in flight while its
/// retransmission arrives.
struct GatedFs {
    inner: MemFs,
    open: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl ironroot_nfs::Filesystem for GatedFs {
    fn client_by_addr(&self, addr: std::net::Ipv4Addr) -> Option<ironroot_nfs::ClientId> {
        self.inner.client_by_addr(addr)
    }
    fn root(&self, client: u32) -> Result<ironroot_nfs::Node, ironroot_nfs::FsError> {
        self.inner.root(client)
    }
    fn node(
        &self,
        client: u32,
        file_id: u64,
        version: Option<u64>,
    ) -> Result<ironroot_nfs::Node, ironroot_nfs::FsError> {
        self.inner.node(client, file_id, version)
    }
    fn lookup(
        &self,
        client: u32,
        dir: u64,
        name: &[u8],
    ) -> Result<ironroot_nfs::Node, ironroot_nfs::FsError> {
        self.inner.lookup(client, dir, name)
    }
    fn dir_page(
        &self,
        client: u32,
        dir: u64,
        start: usize,
        count_max: usize,
    ) -> Result<ironroot_nfs::DirPage, ironroot_nfs::FsError> {
        self.inner.dir_page(client, dir, start, count_max)
    }
    fn read(
        &self,
        client: u32,
        file_id: u64,
        version: Option<u64>,
        offset: u64,
        len: usize,
    ) -> Result<bytes::Bytes, ironroot_nfs::FsError> {
        let (lock, opened) = &*self.open;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = opened.wait(open).unwrap();
        }
        drop(open);
        self.inner.read(client, file_id, version, offset, len)
    }
    fn readlink(&self, client: u32, file_id: u64) -> Result<Vec<u8>, ironroot_nfs::FsError> {
        self.inner.readlink(client, file_id)
    }
    fn stats(&self, client: u32) -> ironroot_nfs::FsStats {
        self.inner.stats(client)
    }
}

#[test]
fn retransmission_of_a_call_in_flight_is_dropped() {
    let mut inner = MemFs::new();
    inner.add_client(KNOWN, 1, Arc::new(trees().0));
    let open = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let fs = GatedFs {
        inner,
        open: Arc::clone(&open),
    };
    // As ironrootd's runtime: no LIFO slot, so the call that blocks in the
    // filesystem cannot leave the sockets unpolled.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .disable_lifo_slot()
        .enable_all()
        .build()
        .unwrap();
    let net = ironroot_net::tokio_backend::TokioRuntime::with_seed(3);
    let endpoint = runtime
        .block_on(ironroot_nfs::driver::bind(&net, KNOWN, 0))
        .unwrap();
    let port = endpoint.port().unwrap();
    let server = Arc::new(ironroot_nfs::Server::new(config(), fs));
    runtime.spawn(ironroot_nfs::driver::serve(
        net,
        Arc::clone(&server),
        vec![endpoint],
    ));
    let hello = {
        let direct = server_with(trees().0);
        let root = root(&direct, KNOWN);
        lookup(&direct, KNOWN, &root, "hello")
    };
    let call = rpc::encode_call(
        4242,
        100_003,
        3,
        6,
        &unix(0, 0),
        &pack(&READ3args {
            file: hello,
            offset: 0,
            count: 100,
        }),
    );
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    socket.send_to(&call, ("127.0.0.1", port)).unwrap();
    // Wait until the first copy is being processed, then retransmit twice.
    let counters = server.counters();
    // Polls 5 ms apart, at most 30 s in all.
    let mut polls_left = 6000u32;
    while ironroot_nfs::Counters::get(&counters.calls) == 0 {
        polls_left = polls_left.checked_sub(1).expect("the call never arrived");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    socket.send_to(&call, ("127.0.0.1", port)).unwrap();
    socket.send_to(&call, ("127.0.0.1", port)).unwrap();
    while ironroot_nfs::Counters::get(&counters.duplicate_dropped) < 2 {
        // The first copy blocks in the filesystem: the retransmissions are
        // only seen if that does not stop the sockets being served.
        polls_left = polls_left
            .checked_sub(1)
            .expect("retransmissions not seen while the first copy was in the filesystem");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    *open.0.lock().unwrap() = true;
    open.1.notify_all();
    let mut buf = [0u8; 1024];
    let len = socket.recv(&mut buf).unwrap();
    let (xid, _, results) = rpc::decode_reply(&buf[..len]).unwrap();
    assert_eq!(xid, 4242);
    let READ3res::Ok(ok) = unpack::<READ3res>(results) else {
        panic!("READ failed")
    };
    assert_eq!(ok.data.as_ref(), b"hello world\n");
    // Exactly one reply: the retransmissions were dropped, not answered.
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    assert!(socket.recv(&mut buf).is_err(), "a second reply arrived");
    assert_eq!(ironroot_nfs::Counters::get(&counters.calls), 1);
    runtime.shutdown_background();
}
