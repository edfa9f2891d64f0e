//! Two network namespaces joined by a veth pair, and the scenarios that run
//! in them. Names carry the test's PID and a tag, so parallel tests and
//! parallel runs never meet; `Drop` deletes both namespaces (and with them
//! every interface the test made).

use std::fs::File;
use std::future::Future;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use ironroot_net::echo::{udp_request, EchoLimits, EchoServer};
use ironroot_net::tokio_backend::{TokioRuntime, VipCounters};
use ironroot_net::{Clock, Runtime, UdpBind, UdpSocket, VipControl, VipError, VipSpec};
use socket2::{Domain, Protocol, Socket, Type};

const WAIT: Duration = Duration::from_secs(5);
const A_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 10);
/// Nobody answers ARP for it: connecting there can only time out.
const ABSENT: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 99);
const ECHO_PORT: u16 = 7;
const BROADCAST_PORT: u16 = 6767;
const ETH_P_ARP: u16 = 0x0806;

/// Namespaces `a` and `b`, `veth_a` in `a` (A_ADDR/24) cabled to `veth_b`
/// in `b` (B_ADDR/24), both up.
pub struct Pair {
    pub a: String,
    pub b: String,
    pub veth_a: String,
    pub veth_b: String,
    tag: String,
}

impl Pair {
    fn create(tag: &str) -> Result<Pair, String> {
        let pid = std::process::id();
        let pair = Pair {
            a: format!("irn{pid}{tag}a"),
            b: format!("irn{pid}{tag}b"),
            veth_a: format!("irv{pid}{tag}a"),
            veth_b: format!("irv{pid}{tag}b"),
            tag: tag.to_owned(),
        };
        ip(&["netns", "add", &pair.a])?;
        ip(&["netns", "add", &pair.b])?;
        #[rustfmt::skip]
        ip(&["link", "add", &pair.veth_a, "netns", &pair.a, "type", "veth",
             "peer", "name", &pair.veth_b, "netns", &pair.b])?;
        for (ns, dev, addr) in [
            (&pair.a, &pair.veth_a, A_ADDR),
            (&pair.b, &pair.veth_b, B_ADDR),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(pair)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            if let Err(err) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {err}");
            }
        }
    }
}

/// A fresh pair, or `None` after printing why this host cannot make one;
/// with IRONROOT_REQUIRE_PEERS=1 a missing prerequisite fails the test.
pub fn pair_or_skip(test: &str, tag: &str) -> Option<Pair> {
    let required = std::env::var("IRONROOT_REQUIRE_PEERS").is_ok_and(|v| v == "1");
    let problem = if !nix::unistd::geteuid().is_root() {
        Err("needs root to create network namespaces".to_owned())
    } else {
        ip(&["-V"])
            .map_err(|err| format!("needs iproute2 (scripts/packages/net.txt): {err}"))
            .and_then(|_| Pair::create(tag))
    };
    match problem {
        Ok(pair) => Some(pair),
        Err(why) if required => panic!("{test}: {why} (IRONROOT_REQUIRE_PEERS=1)"),
        Err(why) => {
            println!("skipping {test}: {why}");
            None
        }
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|err| format!("running ip {}: {err}", args.join(" ")))?;
    if !output.status.success() {
        return Err(format!(
            "ip {}: {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Remaining valid_lft of `addr` as `ip -4 addr show` prints it, or `None`
/// when the address is not there.
fn valid_lft_secs(ns: &str, dev: &str, addr: Ipv4Addr) -> Option<u64> {
    let listing = ip(&["-n", ns, "-4", "-o", "addr", "show", "dev", dev])
        .unwrap_or_else(|err| panic!("{err}"));
    let needle = format!("inet {addr}/");
    let line = listing.lines().find(|line| line.contains(&needle))?;
    let mut words = line
        .split_whitespace()
        .skip_while(|word| *word != "valid_lft");
    let value = words
        .nth(1)
        .unwrap_or_else(|| panic!("no valid_lft in {line:?}"));
    let secs = value
        .strip_suffix("sec")
        .and_then(|secs| secs.parse().ok())
        .unwrap_or_else(|| {
            panic!("VIP lifetime is {value:?}, not a finite number of seconds: {line:?}")
        });
    Some(secs)
}

fn link_mac(ns: &str, dev: &str) -> [u8; 6] {
    let listing =
        ip(&["-n", ns, "-o", "link", "show", "dev", dev]).unwrap_or_else(|err| panic!("{err}"));
    let mut words = listing
        .split_whitespace()
        .skip_while(|word| *word != "link/ether");
    let text = words
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {listing:?}"));
    let bytes: Vec<u8> = text
        .split(':')
        .filter_map(|byte| u8::from_str_radix(byte, 16).ok())
        .collect();
    <[u8; 6]>::try_from(bytes).unwrap_or_else(|_| panic!("bad MAC {text:?}"))
}

/// Run `task` on a new thread that first enters namespace `ns`.
fn spawn_in<T: Send + 'static>(
    ns: &str,
    task: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::Builder::new()
        .name(format!("netns-{ns}"))
        .spawn(move || {
            let file = File::open(&path).unwrap_or_else(|err| panic!("opening {path}: {err}"));
            // SAFETY: setns on a valid namespace fd changes only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", io::Error::last_os_error());
            task()
        })
        .unwrap_or_else(|err| panic!("spawning a thread for {ns}: {err}"))
}

fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|err| panic!("building a tokio runtime: {err}"))
        .block_on(future)
}

fn join<T>(handle: JoinHandle<T>, what: &str) -> T {
    handle
        .join()
        .unwrap_or_else(|_| panic!("{what} failed (see its panic above)"))
}

pub fn vip_lifecycle(pair: &Pair) {
    let spec = VipSpec {
        lifetime: Duration::from_secs(5),
        garp_count: 3,
        garp_interval: Duration::from_millis(100),
        ..VipSpec::new(VIP, 24, pair.veth_a.clone())
    };
    let (ready_tx, ready_rx) = mpsc::channel();
    let capture = spawn_in(&pair.b, move || capture_garps(VIP, 3, WAIT, ready_tx));
    ready_rx
        .recv_timeout(WAIT)
        .expect("the ARP capture in B never got ready");

    let (claimed_tx, claimed_rx) = mpsc::channel();
    let (replied_tx, replied_rx) = tokio::sync::oneshot::channel();
    let client = spawn_in(&pair.b, move || {
        claimed_rx
            .recv_timeout(WAIT)
            .expect("A never claimed the VIP");
        let rt = TokioRuntime::with_seed(2);
        let client_bind = UdpBind::any(0);
        let reply = block_on(udp_request(
            &rt,
            client_bind,
            (VIP, ECHO_PORT).into(),
            b"to-the-vip",
            WAIT,
        ));
        let _ = replied_tx.send(());
        reply
    });
    let (ns_a, spec_a) = (pair.a.clone(), spec.clone());
    let scenario = spawn_in(&pair.a, move || {
        block_on(lifecycle_in_a(ns_a, spec_a, claimed_tx, replied_rx))
    });

    let counters = join(scenario, "the VIP scenario in A");
    let (reply, from) = join(client, "the echo client in B").expect("echo through the VIP");
    assert_eq!(reply, b"to-the-vip");
    assert_eq!(
        from,
        SocketAddr::from((VIP, ECHO_PORT)),
        "the reply must leave from the VIP"
    );
    assert_eq!(
        (counters.claims, counters.renewals, counters.releases),
        (1, 1, 3)
    );
    assert_eq!((counters.garp_sent, counters.garp_failed), (3, 0));

    let frames = join(capture, "the ARP capture in B");
    let mac_a = link_mac(&pair.a, &pair.veth_a);
    assert_eq!(frames.len(), 3, "B must see garp_count announcements");
    for (_, frame) in &frames {
        assert_garp(frame, mac_a, VIP);
    }
    let span = frames[2].0.saturating_sub(frames[0].0);
    assert!(
        span >= Duration::from_millis(180),
        "announcements 100 ms apart arrived within {span:?}"
    );
    println!("{}: 3 GARPs over {span:?}", pair.tag);
}

async fn lifecycle_in_a(
    ns: String,
    spec: VipSpec,
    claimed: mpsc::Sender<()>,
    replied: tokio::sync::oneshot::Receiver<()>,
) -> VipCounters {
    let rt = TokioRuntime::with_seed(1);
    let vip = rt.vip();
    let dev = spec.interface.clone();
    assert!(!vip.holds(&spec).await.expect("holds before claim"));
    vip.claim(&spec).await.expect("claim");
    assert!(vip.holds(&spec).await.expect("holds after claim"));
    let claimed_lft = valid_lft_secs(&ns, &dev, VIP).expect("`ip addr` lists the VIP after claim");
    assert!(
        (4..=5).contains(&claimed_lft),
        "valid_lft {claimed_lft} after a 5 s claim"
    );

    // Bound to the wildcard: the reply can only come from the VIP through
    // IP_PKTINFO on both receive and send.
    let socket = rt
        .bind_udp(UdpBind::any(ECHO_PORT))
        .await
        .expect("binding the echo server");
    let server = EchoServer::new(rt.clone(), EchoLimits::default());
    let serving = tokio::spawn(async move { server.serve_udp_on(socket).await });
    claimed.send(()).expect("the client thread is gone");
    ironroot_net::timeout(&rt, WAIT, replied)
        .await
        .expect("no echo exchange within the wait")
        .expect("the client thread is gone");
    serving.abort();
    renew_then_release(&rt, &ns, &spec).await
}

async fn renew_then_release(rt: &TokioRuntime, ns: &str, spec: &VipSpec) -> VipCounters {
    let (vip, dev) = (rt.vip(), spec.interface.as_str());
    rt.sleep(Duration::from_secs(2)).await;
    let aged_lft = valid_lft_secs(ns, dev, VIP).expect("VIP still listed before renew");
    assert!(aged_lft <= 3, "valid_lft {aged_lft} did not count down");
    vip.renew(spec).await.expect("renew");
    let renewed_lft = valid_lft_secs(ns, dev, VIP).expect("VIP listed after renew");
    assert!(
        renewed_lft > aged_lft && renewed_lft <= 5,
        "renew left valid_lft at {renewed_lft}"
    );

    vip.release(spec).await.expect("release");
    assert!(!vip.holds(spec).await.expect("holds after release"));
    assert_eq!(
        valid_lft_secs(ns, dev, VIP),
        None,
        "`ip addr` still lists the VIP"
    );
    vip.release(spec)
        .await
        .expect("a second release must succeed");
    let renew_gone = vip.renew(spec).await;
    assert!(
        matches!(renew_gone, Err(VipError::Netlink(_))),
        "renew after release: {renew_gone:?}"
    );
    let elsewhere = VipSpec::new(VIP, 24, "irnosuchdev0");
    let missing = vip.claim(&elsewhere).await;
    assert!(
        matches!(missing, Err(VipError::NoSuchInterface(_))),
        "claim on a missing interface: {missing:?}"
    );
    vip.release(&elsewhere)
        .await
        .expect("release on a missing interface holds nothing");
    vip.counters()
}

/// ARP requests whose sender and target are `vip`, with arrival times,
/// until `count` arrived or `wait` ran out.
fn capture_garps(
    vip: Ipv4Addr,
    count: usize,
    wait: Duration,
    ready: mpsc::Sender<()>,
) -> Vec<(Duration, Vec<u8>)> {
    let protocol = Protocol::from(i32::from(ETH_P_ARP.to_be()));
    let socket =
        Socket::new(Domain::PACKET, Type::RAW, Some(protocol)).expect("AF_PACKET socket in B");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("SO_RCVTIMEO");
    ready.send(()).expect("the test thread is gone");
    let clock = TokioRuntime::with_seed(3);
    let mut frames = Vec::new();
    let mut buf = [0u8; 256];
    let deadline = clock.now() + wait;
    while frames.len() < count && clock.now() < deadline {
        let len = match (&socket).read(&mut buf) {
            Ok(len) => len,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(err) => panic!("reading the AF_PACKET socket: {err}"),
        };
        let frame = &buf[..len];
        let is_garp = frame.len() >= 42
            && frame[12..14] == ETH_P_ARP.to_be_bytes()
            && frame[20..22] == [0, 1]
            && frame[28..32] == vip.octets()
            && frame[38..42] == vip.octets();
        if is_garp {
            frames.push((clock.now().since_origin(), frame.to_vec()));
        }
    }
    frames
}

fn assert_garp(frame: &[u8], mac: [u8; 6], vip: Ipv4Addr) {
    assert_eq!(frame[0..6], [0xff; 6], "destination MAC");
    assert_eq!(frame[6..12], mac, "source MAC");
    assert_eq!(
        frame[14..20],
        [0, 1, 8, 0, 6, 4],
        "Ethernet/IPv4 ARP header"
    );
    assert_eq!(frame[22..28], mac, "sender hardware address");
    assert_eq!(frame[28..32], vip.octets(), "sender IP");
    assert_eq!(frame[38..42], vip.octets(), "target IP");
}

/// A node that gives the VIP away must stop announcing it at once, or its
/// late announcements would pull clients back from the new owner.
pub fn release_stops_announcements(pair: &Pair) {
    let spec = VipSpec {
        garp_count: 5,
        garp_interval: Duration::from_millis(200),
        ..VipSpec::new(VIP, 24, pair.veth_a.clone())
    };
    let (ready_tx, ready_rx) = mpsc::channel();
    let window = Duration::from_millis(1500);
    let capture = spawn_in(&pair.b, move || capture_garps(VIP, 5, window, ready_tx));
    ready_rx
        .recv_timeout(WAIT)
        .expect("the ARP capture in B never got ready");
    let scenario = spawn_in(&pair.a, move || {
        block_on(async move {
            let rt = TokioRuntime::with_seed(7);
            let vip = rt.vip();
            vip.claim(&spec).await.expect("claim");
            vip.release(&spec).await.expect("release");
            // Keep the runtime turning through the whole announcement
            // series, so a task that was not aborted would still send.
            rt.sleep(Duration::from_millis(1200)).await;
            vip.counters()
        })
    });
    let counters = join(scenario, "the claim-release scenario in A");
    let frames = join(capture, "the ARP capture in B");
    assert_eq!(
        (counters.garp_sent, frames.len()),
        (1, 1),
        "announcements after release"
    );
}

pub fn vip_expiry(pair: &Pair) {
    let spec = VipSpec {
        lifetime: Duration::from_secs(2),
        garp_count: 0,
        ..VipSpec::new(VIP, 24, pair.veth_a.clone())
    };
    let scenario = spawn_in(&pair.a, move || {
        block_on(async move {
            let rt = TokioRuntime::with_seed(4);
            let vip = rt.vip();
            vip.claim(&spec).await.expect("claim");
            let claimed_at = rt.now();
            let give_up = claimed_at + spec.lifetime + Duration::from_secs(3);
            while vip.holds(&spec).await.expect("holds") {
                assert!(rt.now() < give_up, "the kernel kept the VIP past {give_up}");
                rt.sleep(Duration::from_millis(50)).await;
            }
            rt.now() - claimed_at
        })
    });
    let gone_after = join(scenario, "the expiry scenario in A");
    assert!(
        gone_after >= Duration::from_secs(1),
        "the VIP vanished after only {gone_after:?}"
    );
    println!(
        "{}: a 2 s VIP left without renewal disappeared after {gone_after:?}",
        pair.tag
    );
}

/// A holds the VIP and stops renewing (its daemon died); B's claim probes,
/// hears A's kernel answer, and waits until the address has expired there
/// before adding it. A claim with a short probe wait fails instead, naming
/// the holder.
pub fn probe_waits_for_the_old_holder(pair: &Pair) {
    let lifetime = Duration::from_secs(2);
    let spec_a = VipSpec {
        lifetime,
        garp_count: 1,
        probe_wait: Duration::ZERO,
        ..VipSpec::new(VIP, 24, pair.veth_a.clone())
    };
    let spec_b_short = VipSpec {
        lifetime,
        garp_count: 1,
        probe_wait: Duration::from_millis(200),
        ..VipSpec::new(VIP, 24, pair.veth_b.clone())
    };
    let spec_b = VipSpec {
        probe_wait: Duration::from_secs(4),
        ..spec_b_short.clone()
    };
    let claimed_in_a = spawn_in(&pair.a, move || {
        block_on(async move {
            let rt = TokioRuntime::with_seed(6);
            rt.vip().claim(&spec_a).await.expect("claim in A");
        })
    });
    join(claimed_in_a, "the claim in A");
    let free_claim = spawn_in(&pair.b, {
        let spec = VipSpec {
            addr: Ipv4Addr::new(10, 213, 0, 11),
            ..spec_b_short.clone()
        };
        move || {
            block_on(async move {
                let rt = TokioRuntime::with_seed(8);
                let vip = rt.vip();
                let started = rt.now();
                vip.claim(&spec).await.expect("claim of a free address");
                let took = rt.now() - started;
                vip.release(&spec).await.expect("release");
                took
            })
        }
    });
    let free_took = join(free_claim, "the free claim in B");
    println!("{}: claiming a free address took {free_took:?}", pair.tag);
    let a_ns = pair.a.clone();
    let a_dev = pair.veth_a.clone();
    let outcome = spawn_in(&pair.b, move || {
        block_on(async move {
            let rt = TokioRuntime::with_seed(7);
            let vip = rt.vip();
            let short = vip.claim(&spec_b_short).await;
            let started = rt.now();
            vip.claim(&spec_b).await.expect("the patient claim in B");
            let waited = rt.now() - started;
            let still_in_a = Command::new("ip")
                .args(["-n", &a_ns, "-4", "addr", "show", "dev", &a_dev])
                .output()
                .map(|out| String::from_utf8_lossy(&out.stdout).contains(&VIP.to_string()))
                .unwrap_or(true);
            (short, waited, still_in_a)
        })
    });
    let (short, waited, still_in_a) = join(outcome, "the claims in B");
    match short {
        Err(VipError::InUse { holder, .. }) => {
            assert_eq!(holder.len(), 17, "holder should be a MAC, got {holder:?}")
        }
        other => panic!("a 200 ms probe while A holds the VIP must fail, got {other:?}"),
    }
    assert!(!still_in_a, "B claimed while A's kernel still held the VIP");
    assert!(
        waited >= Duration::from_millis(500),
        "B claimed after only {waited:?}: it cannot have waited for A's address"
    );
    println!(
        "{}: B's claim waited {waited:?} for A's unrenewed 2 s address to expire",
        pair.tag
    );
}

pub fn broadcast_and_connect_timeout(pair: &Pair) {
    // A second cable, entirely inside A: a broadcast bound to it must not
    // reach B.
    let (decoy, decoy_peer) = (format!("{}x", pair.veth_a), format!("{}y", pair.veth_a));
    #[rustfmt::skip]
    let decoy_setup = ip(&["-n", &pair.a, "link", "add", &decoy, "type", "veth", "peer", "name", &decoy_peer])
        .and_then(|_| ip(&["-n", &pair.a, "addr", "add", "10.214.0.1/24", "dev", &decoy]))
        .and_then(|_| ip(&["-n", &pair.a, "link", "set", &decoy, "up"]))
        .and_then(|_| ip(&["-n", &pair.a, "link", "set", &decoy_peer, "up"]));
    decoy_setup.unwrap_or_else(|err| panic!("{err}"));

    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver = spawn_in(&pair.b, move || {
        block_on(async move {
            let rt = TokioRuntime::with_seed(5);
            let socket = rt
                .bind_udp(UdpBind::any(BROADCAST_PORT))
                .await
                .expect("binding in B");
            ready_tx.send(()).expect("the test thread is gone");
            let mut buf = [0u8; 64];
            let meta = ironroot_net::timeout(&rt, WAIT, socket.recv_from(&mut buf))
                .await
                .expect("no broadcast reached B")
                .expect("recv in B");
            (buf[..meta.len].to_vec(), meta)
        })
    });
    ready_rx
        .recv_timeout(WAIT)
        .expect("B's receiver never got ready");

    let veth_a = pair.veth_a.clone();
    let sender = spawn_in(&pair.a, move || block_on(broadcast_from_a(decoy, veth_a)));
    join(sender, "the broadcasts from A");
    let (payload, meta) = join(receiver, "the receiver in B");
    assert_eq!(
        payload, b"right-device",
        "B got a broadcast sent on another device"
    );
    assert_eq!(meta.local, IpAddr::V4(Ipv4Addr::BROADCAST));
    assert_eq!(meta.peer.ip(), IpAddr::V4(A_ADDR));
}

async fn broadcast_from_a(decoy: String, veth_a: String) {
    let rt = TokioRuntime::with_seed(6);
    let to = SocketAddr::from((Ipv4Addr::BROADCAST, BROADCAST_PORT));
    let on = |device: &str| UdpBind {
        addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        broadcast: true,
        device: Some(device.to_owned()),
    };
    let wrong = rt.bind_udp(on(&decoy)).await.expect("binding to the decoy");
    wrong
        .send_to(b"wrong-device", to)
        .await
        .expect("broadcast on the decoy");

    let right = rt.bind_udp(on(&veth_a)).await.expect("binding to the veth");
    right.set_broadcast(false).expect("SO_BROADCAST off");
    let refused = right.send_to(b"no-permission", to).await;
    assert_eq!(
        refused.map_err(|err| err.kind()).err(),
        Some(io::ErrorKind::PermissionDenied)
    );
    right.set_broadcast(true).expect("SO_BROADCAST on");
    right
        .send_to(b"right-device", to)
        .await
        .expect("broadcast on the veth");

    let timed_out = rt
        .connect_tcp(SocketAddr::from((ABSENT, 9)), Duration::from_millis(300))
        .await;
    assert_eq!(
        timed_out.map_err(|err| err.kind()).err(),
        Some(io::ErrorKind::TimedOut)
    );
}
