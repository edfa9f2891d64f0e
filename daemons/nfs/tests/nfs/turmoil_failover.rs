//! Under turmoil: a client reads a file through a failover. Node `a` holds
//! the VIP and serves; it crashes mid-read; node `b` (same handle key, same
//! store content) claims the VIP; the client reconnects and carries on with
//! the handles it already has — no NFS3ERR_STALE or BADHANDLE, identical
//! bytes.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ironroot_net::turmoil_backend::{Segment, SimRuntime, SimStream};
use ironroot_net::{Runtime, VipControl, VipSpec};
use ironroot_nfs::record::encode_record;
use ironroot_nfs::rpc::{self, Accept, ReplyHead};
use ironroot_nfs::{driver, MemFs, Server, Tree};
use nfs3_types::mount::{dirpath, mountres3};
use nfs3_types::nfs3::*;
use nfs3_types::xdr_codec::Opaque;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
const NFS_PORT: u16 = 2049;
const FILE_BYTES: usize = 64 << 10;
const CHUNK_BYTES: u32 = 4096;
/// The read after which the test crashes node `a`.
const CRASH_AFTER_CHUNKS: usize = 5;
const ATTEMPTS_MAX: usize = 200;

fn content() -> Vec<u8> {
    (0..FILE_BYTES).map(|i| (i * 7 % 253) as u8).collect()
}

fn vip_spec() -> VipSpec {
    VipSpec {
        lifetime: Duration::from_secs(3600),
        ..VipSpec::new(VIP, 24, "sim0")
    }
}

async fn node(
    segment: Segment,
    name: &'static str,
    go: Arc<AtomicBool>,
) -> Result<(), Box<dyn std::error::Error>> {
    let rt = SimRuntime::start(segment, name, 7).await?;
    while !go.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = match turmoil::lookup("client") {
        std::net::IpAddr::V4(v4) => v4,
        std::net::IpAddr::V6(_) => return Err("IPv6 client".into()),
    };
    let mut tree = Tree::empty();
    tree.add_file("big", 0o644, 0, 0, &content());
    let mut fs = MemFs::new();
    fs.add_client(client, 1, Arc::new(tree));
    let config = ironroot_nfs::Config {
        portmap_port: NFS_PORT,
        mount_port: NFS_PORT,
        nfs_port: NFS_PORT,
        ..config()
    };
    let endpoint = driver::bind(&rt, Ipv4Addr::UNSPECIFIED, NFS_PORT).await?;
    rt.vip().claim(&vip_spec()).await?;
    driver::serve(rt, Arc::new(Server::new(config, fs)), vec![endpoint]).await?;
    Ok(())
}

/// One call on the current connection, reconnecting to the VIP as needed.
async fn call_once(
    rt: &SimRuntime,
    conn: &mut Option<SimStream>,
    message: &[u8],
) -> std::io::Result<Vec<u8>> {
    if conn.is_none() {
        *conn = Some(
            rt.connect_tcp(SocketAddr::from((VIP, NFS_PORT)), Duration::from_secs(1))
                .await?,
        );
    }
    let Some(stream) = conn.as_mut() else {
        unreachable!()
    };
    let exchange = async {
        stream.write_all(&encode_record(message)).await?;
        let mut header = [0u8; 4];
        stream.read_exact(&mut header).await?;
        let mut reply = vec![0u8; (u32::from_be_bytes(header) & 0x7fff_ffff) as usize];
        stream.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    let result = ironroot_net::timeout(rt, Duration::from_secs(2), exchange)
        .await
        .map_err(std::io::Error::from)
        .and_then(|r| r);
    if result.is_err() {
        *conn = None;
    }
    result
}

/// The client side: one connection to the VIP at a time.
struct Client {
    rt: SimRuntime,
    conn: Option<SimStream>,
    xid: u32,
    failed_attempts: Arc<AtomicUsize>,
}

impl Client {
    /// A call retried like a hard mount retries it; returns the results.
    async fn call(&mut self, prog: u32, proc_: u32, args: &[u8]) -> Vec<u8> {
        self.xid += 1;
        let message = rpc::encode_call(self.xid, prog, 3, proc_, &unix(0, 0), args);
        for _ in 0..ATTEMPTS_MAX {
            if let Ok(reply) = call_once(&self.rt, &mut self.conn, &message).await {
                let (_, head, results) = rpc::decode_reply(&reply).unwrap();
                assert_eq!(head, ReplyHead::Accepted(Accept::Success));
                return results.to_vec();
            }
            self.failed_attempts.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("call {proc_} failed {ATTEMPTS_MAX} times");
    }
}

async fn reader(
    segment: Segment,
    crash_now: Arc<AtomicBool>,
    failed_attempts: Arc<AtomicUsize>,
) -> turmoil::Result {
    let rt = SimRuntime::start(segment, "client", 7).await?;
    let mut client = Client {
        rt,
        conn: None,
        xid: 0,
        failed_attempts,
    };
    let mounted = client
        .call(100_005, 1, &pack(&dirpath(Opaque::borrowed(b"/"))))
        .await;
    let mountres3::Ok(ok) = unpack::<mountres3>(&mounted) else {
        panic!("MNT failed")
    };
    let root = nfs_fh3 {
        data: Opaque::owned(ok.fhandle.0.to_vec()),
    };
    let args = pack(&diropargs3 {
        dir: root.clone(),
        name: filename3(Opaque::borrowed(b"big")),
    });
    let LOOKUP3res::Ok(found) = unpack::<LOOKUP3res>(&client.call(100_003, 3, &args).await) else {
        panic!("LOOKUP")
    };
    let mut data = Vec::new();
    for chunk in 0.. {
        if chunk == CRASH_AFTER_CHUNKS {
            crash_now.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let args = pack(&READ3args {
            file: found.object.clone(),
            offset: data.len() as u64,
            count: CHUNK_BYTES,
        });
        match unpack::<READ3res>(&client.call(100_003, 6, &args).await) {
            READ3res::Ok(ok) => {
                data.extend_from_slice(&ok.data);
                if ok.eof {
                    break;
                }
            }
            READ3res::Err((status, _)) => panic!("READ after {} bytes: {status}", data.len()),
        }
    }
    assert_eq!(data, content(), "bytes read through the failover");
    // The root handle issued by `a` still resolves on `b`.
    let attrs = unpack::<GETATTR3res>(&client.call(100_003, 1, &pack(&root)).await);
    assert!(
        matches!(attrs, GETATTR3res::Ok(_)),
        "root handle after failover"
    );
    Ok(())
}

#[test]
fn client_reads_through_a_failover_without_stale_handles() {
    let segment = Segment::new();
    let mut sim = turmoil::Builder::new()
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(1))
        .simulation_duration(Duration::from_secs(120))
        .rng_seed(7)
        .build();
    let (a_go, b_go) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(false)),
    );
    for (name, go) in [("a", Arc::clone(&a_go)), ("b", Arc::clone(&b_go))] {
        let segment = segment.clone();
        sim.host(name, move || node(segment.clone(), name, Arc::clone(&go)));
    }
    let crash_now = Arc::new(AtomicBool::new(false));
    let failed_attempts = Arc::new(AtomicUsize::new(0));
    sim.client(
        "client",
        reader(
            segment.clone(),
            Arc::clone(&crash_now),
            Arc::clone(&failed_attempts),
        ),
    );
    let mut crashed = false;
    while !sim.step().expect("simulation") {
        if !crashed && crash_now.load(Ordering::SeqCst) {
            crashed = true;
            let a = sim.lookup("a");
            sim.crash("a");
            segment.host_died(a, ironroot_net::Instant::from_origin(sim.elapsed()));
            b_go.store(true, Ordering::SeqCst);
        }
    }
    assert!(crashed, "the failover happened");
    // The crash cost the client at least one failed attempt (it really
    // lost its server) and no more than the failover takes.
    let failed = failed_attempts.load(Ordering::SeqCst);
    assert!((1..50).contains(&failed), "{failed} failed attempts");
    assert_eq!(
        segment.holders(VIP, ironroot_net::Instant::from_origin(sim.elapsed())),
        vec![sim.lookup("b")]
    );
}
