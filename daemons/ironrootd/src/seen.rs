//! Clients the services heard from lately, for `ironroot status`: the DHCP
//! server notes a reserved client's MAC when it looks its reservation up,
//! the TFTP server an address when a transfer asks for a file, and the NFS
//! server's open connections count as seen now. Bounded: at most
//! [`SEEN_MAX`] MACs and addresses; when full, entries older than
//! [`RECENT`] make room, and a newcomer finding none is not recorded.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironroot_net::Instant;
use ironroot_tftp::source::{FileSource, OpenError, OpenFile, TftpPath};
use serde::Serialize;

/// MACs and addresses remembered at most.
pub const SEEN_MAX: usize = 8192;
/// How long ago a client may have been heard from to count as recent.
pub const RECENT: Duration = Duration::from_secs(600);

/// Who a service heard from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Who {
    Mac([u8; 6]),
    Ip(Ipv4Addr),
}

/// Which service heard it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Dhcp,
    Tftp,
    Nfs,
}

type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;
type Connected = Arc<dyn Fn() -> Vec<Ipv4Addr> + Send + Sync>;

/// The record (see the module docs).
pub struct Seen {
    now: Clock,
    connected: Connected,
    heard: Mutex<HashMap<Who, (Instant, Via)>>,
}

/// One registered client heard from within [`RECENT`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecentClient {
    pub name: String,
    pub ip: Ipv4Addr,
    pub via: Via,
    pub secs_ago: u64,
}

impl Seen {
    /// `now` is the daemon's clock; `connected` lists the peers of the NFS
    /// server's open connections.
    pub fn new(now: Clock, connected: Connected) -> Seen {
        Seen {
            now,
            connected,
            heard: Mutex::new(HashMap::new()),
        }
    }

    pub fn now(&self) -> Instant {
        (self.now)()
    }

    pub fn note(&self, who: Who, via: Via) {
        let now = self.now();
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        if heard.len() >= SEEN_MAX && !heard.contains_key(&who) {
            heard.retain(|_, (at, _)| now.saturating_duration_since(*at) < RECENT);
            if heard.len() >= SEEN_MAX {
                return;
            }
        }
        heard.insert(who, (now, via));
    }

    /// The registered clients (name, MAC, address) heard from within
    /// [`RECENT`], most recent first, and how many other addresses were.
    pub fn recent<'a>(
        &self,
        clients: impl Iterator<Item = (&'a str, [u8; 6], Ipv4Addr)>,
    ) -> (Vec<RecentClient>, usize) {
        let now = self.now();
        let connected = (self.connected)();
        let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        let ago = |at: Instant| now.saturating_duration_since(at);
        let mut known = Vec::new();
        let mut registered_ips = std::collections::HashSet::new();
        for (name, mac, ip) in clients {
            registered_ips.insert(ip);
            let mut last: Option<(Duration, Via)> = None;
            let mut consider = |candidate: (Duration, Via)| {
                if last.is_none_or(|(best, _)| candidate.0 < best) {
                    last = Some(candidate);
                }
            };
            for who in [Who::Mac(mac), Who::Ip(ip)] {
                if let Some((at, via)) = heard.get(&who) {
                    consider((ago(*at), *via));
                }
            }
            if connected.contains(&ip) {
                consider((Duration::ZERO, Via::Nfs));
            }
            if let Some((since, via)) = last.filter(|(since, _)| *since < RECENT) {
                known.push(RecentClient {
                    name: name.to_owned(),
                    ip,
                    via,
                    secs_ago: since.as_secs(),
                });
            }
        }
        known.sort_by(|a, b| a.secs_ago.cmp(&b.secs_ago).then(a.name.cmp(&b.name)));
        let mut others: std::collections::HashSet<Ipv4Addr> = heard
            .iter()
            .filter_map(|(who, (at, _))| match who {
                Who::Ip(ip) if ago(*at) < RECENT => Some(*ip),
                _ => None,
            })
            .collect();
        others.extend(connected);
        let others = others
            .iter()
            .filter(|ip| !registered_ips.contains(ip))
            .count();
        (known, others)
    }
}

/// A TFTP file source that notes every client asking for a file.
pub struct Noting<S> {
    pub inner: S,
    pub seen: Arc<Seen>,
}

impl<S: FileSource> FileSource for Noting<S> {
    fn open(&self, path: &TftpPath, client: IpAddr) -> Result<OpenFile, OpenError> {
        if let IpAddr::V4(ip) = client {
            self.seen.note(Who::Ip(ip), Via::Tftp);
        }
        self.inner.open(path, client)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    fn seen(connected: Vec<Ipv4Addr>) -> (Seen, Arc<AtomicU64>) {
        let millis = Arc::new(AtomicU64::new(1_000_000));
        let clock = Arc::clone(&millis);
        let seen = Seen::new(
            Arc::new(move || Instant::from_millis(clock.load(Ordering::Relaxed))),
            Arc::new(move || connected.clone()),
        );
        (seen, millis)
    }

    const A: (&str, [u8; 6], Ipv4Addr) = ("a", [2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 0, 1));
    const B: (&str, [u8; 6], Ipv4Addr) = ("b", [2, 0, 0, 0, 0, 2], Ipv4Addr::new(10, 0, 0, 2));
    const C: (&str, [u8; 6], Ipv4Addr) = ("c", [2, 0, 0, 0, 0, 3], Ipv4Addr::new(10, 0, 0, 3));

    #[test]
    fn the_latest_service_of_each_client_is_reported_most_recent_first() {
        let (seen, clock) = seen(vec![C.2, Ipv4Addr::new(10, 0, 9, 9)]);
        seen.note(Who::Mac(A.1), Via::Dhcp);
        clock.fetch_add(5_000, Ordering::Relaxed);
        seen.note(Who::Ip(A.2), Via::Tftp);
        seen.note(Who::Mac(B.1), Via::Dhcp);
        seen.note(Who::Ip(Ipv4Addr::new(10, 0, 9, 8)), Via::Tftp);
        clock.fetch_add(2_000, Ordering::Relaxed);
        let (recent, others) = seen.recent([A, B, C].into_iter());
        let got: Vec<_> = recent
            .iter()
            .map(|c| (c.name.as_str(), c.via, c.secs_ago))
            .collect();
        assert_eq!(
            got,
            vec![("c", Via::Nfs, 0), ("a", Via::Tftp, 2), ("b", Via::Dhcp, 2)]
        );
        // 10.0.9.8 by TFTP, 10.0.9.9 over NFS: not registered.
        assert_eq!(others, 2);
    }

    #[test]
    fn clients_heard_long_ago_are_not_recent() {
        let (seen, clock) = seen(Vec::new());
        seen.note(Who::Mac(A.1), Via::Dhcp);
        clock.fetch_add(RECENT.as_millis() as u64, Ordering::Relaxed);
        assert_eq!(seen.recent([A].into_iter()), (Vec::new(), 0));
    }

    #[test]
    fn a_full_record_makes_room_from_old_entries_only() {
        let (seen, clock) = seen(Vec::new());
        let ip = |n: usize| Ipv4Addr::from(0x0a00_0000 + n as u32);
        for n in 0..SEEN_MAX {
            seen.note(Who::Ip(ip(n)), Via::Tftp);
        }
        // Full of recent entries: a newcomer is not recorded, a known
        // address is refreshed.
        seen.note(Who::Ip(ip(SEEN_MAX)), Via::Tftp);
        assert_eq!(seen.recent(std::iter::empty()).1, SEEN_MAX);
        clock.fetch_add(RECENT.as_millis() as u64, Ordering::Relaxed);
        seen.note(Who::Ip(ip(0)), Via::Nfs);
        // Everything else is old now: the newcomer makes room.
        seen.note(Who::Ip(ip(SEEN_MAX)), Via::Tftp);
        assert_eq!(seen.recent(std::iter::empty()).1, 2);
    }
}
