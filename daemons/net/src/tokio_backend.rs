//! Real sockets, clock and VIP control (tokio, socket2, rtnetlink, AF_PACKET).
//!
//! The production backend of the seam. It is the one place, with the
//! turmoil backend, allowed to read the real clock and the OS RNG; every
//! such call carries `#[allow(clippy::disallowed_methods)]` on exactly the
//! function that makes it.

mod garp;
pub mod sockdiag;
mod tcp;
pub mod tickle;
mod udp;
mod vip;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

pub use tcp::TokioTcpListener;
pub use udp::TokioUdpSocket;
pub use vip::{TokioVip, VipCounters};

use crate::{Clock, Instant, Runtime, UdpBind};

/// Binds retried while a port is in use (see `listen_tcp`): half a second.
const LISTEN_RETRIES: u32 = 20;
const LISTEN_RETRY_PAUSE: Duration = Duration::from_millis(25);

/// The production [`Runtime`]: real sockets, the process's monotonic clock
/// and a seed drawn once from the OS. Cheap to clone; clones share the
/// origin, the seed and the VIP state.
#[derive(Clone, Debug)]
pub struct TokioRuntime {
    origin: std::time::Instant,
    seed: u64,
    vip: TokioVip,
}

impl TokioRuntime {
    /// A runtime whose seed comes from the OS RNG.
    pub fn new() -> io::Result<TokioRuntime> {
        Ok(TokioRuntime::with_seed(os_seed()?))
    }

    /// A runtime with a fixed seed (replaying a recorded run, tests).
    #[allow(clippy::disallowed_methods)] // the origin of this backend's clock
    pub fn with_seed(seed: u64) -> TokioRuntime {
        TokioRuntime {
            origin: std::time::Instant::now(),
            seed,
            vip: TokioVip::new(),
        }
    }
}

#[allow(clippy::disallowed_methods)] // the production seed is the one draw from the OS
fn os_seed() -> io::Result<u64> {
    use rand::RngCore;
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|err| io::Error::other(format!("drawing the seed from the OS RNG: {err}")))?;
    Ok(u64::from_le_bytes(bytes))
}

impl Clock for TokioRuntime {
    #[allow(clippy::disallowed_methods)] // this backend's monotonic clock
    fn now(&self) -> Instant {
        Instant::from_origin(std::time::Instant::now().saturating_duration_since(self.origin))
    }

    #[allow(clippy::disallowed_methods)] // this backend's wall clock
    fn wall_clock(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep(&self, duration: Duration) -> impl std::future::Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

impl Runtime for TokioRuntime {
    type Udp = TokioUdpSocket;
    type Stream = tokio::net::TcpStream;
    type Listener = TokioTcpListener;
    type Vip = TokioVip;

    // tokio registers sockets with the reactor of the task that awaits, so
    // the work happens at the first poll, not at the call.
    async fn bind_udp(&self, bind: UdpBind) -> io::Result<TokioUdpSocket> {
        TokioUdpSocket::bind(&bind)
    }

    // SO_REUSEADDR lets a listener bind over TIME_WAIT connections, but a
    // connection still closing (FIN_WAIT, LAST_ACK: the peer's FIN not yet
    // processed, as under load) holds the port for a moment longer: retry
    // for a bounded while before reporting the port in use.
    async fn listen_tcp(&self, addr: SocketAddr) -> io::Result<TokioTcpListener> {
        let mut tries = 0;
        loop {
            match TokioTcpListener::bind(addr) {
                Err(err) if err.kind() == io::ErrorKind::AddrInUse && tries < LISTEN_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(LISTEN_RETRY_PAUSE).await;
                }
                result => return result,
            }
        }
    }

    async fn connect_tcp(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<tokio::net::TcpStream> {
        tcp::connect(addr, timeout).await
    }

    fn seed(&self) -> u64 {
        self.seed
    }

    fn vip(&self) -> TokioVip {
        self.vip.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_starts_near_zero_and_is_monotonic() {
        let rt = TokioRuntime::with_seed(7);
        let first = rt.now();
        let second = rt.now();
        assert!(second >= first);
        assert!(first.since_origin() < Duration::from_secs(5));
        assert_eq!(rt.seed(), 7);
    }

    #[test]
    fn os_seeds_differ_between_runtimes() {
        let a = TokioRuntime::new().map(|rt| rt.seed());
        let b = TokioRuntime::new().map(|rt| rt.seed());
        assert!(matches!((a, b), (Ok(a), Ok(b)) if a != b));
    }

    #[test]
    fn clones_share_the_origin() {
        let rt = TokioRuntime::with_seed(1);
        let clone = rt.clone();
        std::thread::sleep(Duration::from_millis(20));
        assert!(clone.now() >= Instant::from_millis(20));
        assert!(rt.now() >= Instant::from_millis(20));
    }
}
