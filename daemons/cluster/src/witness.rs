//! The witness: a third vote for a two-node cluster. It grants a
//! time-bounded vote lease to at most one node at a time (renewable by the
//! holder) and durably records which node is Outdated, so a node whose store
//! missed writes is never promoted silently.
//!
//! Pure request/reply: [`Witness::handle`] takes the request bytes and
//! returns the reply bytes.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironroot_net::Instant;

use crate::config::WitnessConfig;
use crate::wire::{
    DecodeError, Freshness, Message, NodeId, Packet, ReplayGuard, RequestKind, WitnessReply,
    WitnessRequest,
};

/// Durable record of the Outdated node.
pub trait OutdatedStore: Send {
    fn load(&mut self) -> io::Result<Option<NodeId>>;
    /// Must be durable when it returns.
    fn store(&mut self, outdated: Option<NodeId>) -> io::Result<()>;
}

/// In memory; clones share the value so a simulated witness keeps it across
/// restarts.
#[derive(Clone, Debug, Default)]
pub struct MemoryOutdatedStore {
    value: Arc<Mutex<Option<NodeId>>>,
}

impl MemoryOutdatedStore {
    pub fn get(&self) -> Option<NodeId> {
        *self.value.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl OutdatedStore for MemoryOutdatedStore {
    fn load(&mut self) -> io::Result<Option<NodeId>> {
        Ok(self.get())
    }

    fn store(&mut self, outdated: Option<NodeId>) -> io::Result<()> {
        *self.value.lock().unwrap_or_else(|p| p.into_inner()) = outdated;
        Ok(())
    }
}

/// A file holding the node id (0 = none), replaced atomically with fsync.
#[derive(Clone, Debug)]
pub struct FileOutdatedStore {
    path: PathBuf,
}

impl FileOutdatedStore {
    pub fn new(path: impl Into<PathBuf>) -> FileOutdatedStore {
        FileOutdatedStore { path: path.into() }
    }
}

impl OutdatedStore for FileOutdatedStore {
    fn load(&mut self) -> io::Result<Option<NodeId>> {
        match fs::read_to_string(&self.path) {
            Ok(text) => {
                let id: u16 = text
                    .trim()
                    .parse()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                Ok((id != 0).then_some(NodeId(id)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn store(&mut self, outdated: Option<NodeId>) -> io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        {
            let mut file = fs::File::create(&tmp)?;
            writeln!(file, "{}", outdated.map_or(0, |n| n.0))?;
            file.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WitnessCounters {
    pub granted: u64,
    pub refused: u64,
    pub dropped_malformed: u64,
    pub dropped_forged: u64,
    pub dropped_wrong_cluster: u64,
    pub dropped_unknown_node: u64,
    pub dropped_replayed: u64,
    pub store_failures: u64,
}

/// The witness state machine.
pub struct Witness<S: OutdatedStore> {
    config: WitnessConfig,
    started_at: Instant,
    holder: Option<(NodeId, Instant)>,
    outdated: Option<NodeId>,
    guards: BTreeMap<NodeId, ReplayGuard>,
    store: S,
    counters: WitnessCounters,
}

impl<S: OutdatedStore> Witness<S> {
    /// A witness starting at `now`. It grants nothing for one lease length:
    /// a lease granted by its previous life may still be running.
    pub fn new(config: WitnessConfig, mut store: S, now: Instant) -> io::Result<Witness<S>> {
        let outdated = store.load()?;
        let guards = config
            .nodes
            .iter()
            .map(|n| (n.id, ReplayGuard::default()))
            .collect();
        Ok(Witness {
            config,
            started_at: now,
            holder: None,
            outdated,
            guards,
            store,
            counters: WitnessCounters::default(),
        })
    }

    pub fn counters(&self) -> &WitnessCounters {
        &self.counters
    }

    /// The current holder, if its lease runs at `now`.
    pub fn holder(&self, now: Instant) -> Option<NodeId> {
        self.holder
            .filter(|(_, until)| now < *until)
            .map(|(n, _)| n)
    }

    pub fn outdated(&self) -> Option<NodeId> {
        self.outdated
    }

    /// One request in, at most one reply out (for the sender).
    pub fn handle(&mut self, now: Instant, bytes: &[u8]) -> Option<Vec<u8>> {
        let (sender, request) = self.authenticate(bytes)?;
        let granted = match request.kind {
            RequestKind::Acquire => self.acquire(now, sender, request.peer_alive),
            RequestKind::Release => {
                if self.holder.is_some_and(|(n, _)| n == sender) {
                    self.holder = None;
                }
                false
            }
            RequestKind::Query => self.holder(now) == Some(sender),
        };
        let remaining = self
            .holder
            .filter(|(n, _)| *n == sender)
            .map_or(Duration::ZERO, |(_, until)| {
                until.saturating_duration_since(now)
            });
        let reply = WitnessReply {
            to: sender,
            request_id: request.request_id,
            granted,
            holder: self.holder(now),
            lease_ms: u32::try_from(remaining.as_millis()).unwrap_or(u32::MAX),
            outdated: self.outdated,
        };
        let packet = Packet {
            cluster_id: self.config.cluster_id,
            sender: NodeId::WITNESS,
            message: Message::WitnessReply(reply),
        };
        Some(packet.encode(&self.config.key))
    }

    fn authenticate(&mut self, bytes: &[u8]) -> Option<(NodeId, WitnessRequest)> {
        let packet = match Packet::decode(&self.config.key, bytes) {
            Ok(packet) => packet,
            Err(DecodeError::Forged) => {
                self.counters.dropped_forged += 1;
                return None;
            }
            Err(_) => {
                self.counters.dropped_malformed += 1;
                return None;
            }
        };
        if packet.cluster_id != self.config.cluster_id {
            self.counters.dropped_wrong_cluster += 1;
            return None;
        }
        let Message::WitnessRequest(request) = packet.message else {
            self.counters.dropped_malformed += 1;
            return None;
        };
        let Some(guard) = self.guards.get_mut(&packet.sender) else {
            self.counters.dropped_unknown_node += 1;
            return None;
        };
        match guard.check(request.incarnation, request.request_id) {
            Freshness::Fresh { .. } => Some((packet.sender, request)),
            Freshness::Replayed | Freshness::Stale => {
                self.counters.dropped_replayed += 1;
                None
            }
        }
    }

    fn acquire(&mut self, now: Instant, node: NodeId, peer_alive: bool) -> bool {
        let other_holds = self.holder(now).is_some_and(|h| h != node);
        let in_grace = now < self.started_at + self.config.lease;
        if self.outdated == Some(node) || other_holds || in_grace {
            self.counters.refused += 1;
            return false;
        }
        let other = self
            .config
            .nodes
            .iter()
            .map(|n| n.id)
            .find(|id| *id != node);
        // A takeover without the peer makes the peer's store stale; a holder
        // that hears its peer again and reports its store current (resynced)
        // clears the mark. Durable before the grant.
        let outdated = match (peer_alive, self.outdated) {
            (false, _) => other,
            (true, Some(marked)) if Some(marked) != other => Some(marked),
            (true, _) => None,
        };
        if outdated != self.outdated {
            if self.store.store(outdated).is_err() {
                self.counters.store_failures += 1;
                self.counters.refused += 1;
                return false;
            }
            self.outdated = outdated;
        }
        assert!(!other_holds, "granting a lease another node holds");
        self.holder = Some((node, now + self.config.lease));
        self.counters.granted += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeSpec;
    use crate::wire::Key;

    fn config() -> WitnessConfig {
        let node = |id: u16| NodeSpec {
            name: format!("n{id}"),
            id: NodeId(id),
            links: vec![],
        };
        WitnessConfig {
            cluster_id: 9,
            key: Key::new(vec![7; 32]),
            addr: "127.0.0.1:7000".parse().expect("addr"),
            lease: Duration::from_millis(600),
            nodes: [node(1), node(2)],
        }
    }

    fn request(from: u16, id: u64, kind: RequestKind, peer_alive: bool) -> Vec<u8> {
        let packet = Packet {
            cluster_id: 9,
            sender: NodeId(from),
            message: Message::WitnessRequest(WitnessRequest {
                incarnation: 1,
                request_id: id,
                kind,
                peer_alive,
            }),
        };
        packet.encode(&Key::new(vec![7; 32]))
    }

    fn reply(bytes: Option<Vec<u8>>) -> WitnessReply {
        let packet =
            Packet::decode(&Key::new(vec![7; 32]), &bytes.expect("a reply")).expect("decode");
        match packet.message {
            Message::WitnessReply(reply) => reply,
            other => panic!("not a reply: {other:?}"),
        }
    }

    #[test]
    fn one_holder_at_a_time_and_grace_after_start() {
        let store = MemoryOutdatedStore::default();
        let mut w = Witness::new(config(), store.clone(), Instant::ZERO).expect("witness");
        let early = reply(w.handle(
            Instant::from_millis(100),
            &request(1, 1, RequestKind::Acquire, true),
        ));
        assert!(!early.granted, "no grant during the start-up grace");
        let t = Instant::from_millis(700);
        assert!(reply(w.handle(t, &request(1, 2, RequestKind::Acquire, true))).granted);
        let refused = reply(w.handle(t, &request(2, 1, RequestKind::Acquire, false)));
        assert!(!refused.granted);
        assert_eq!(refused.holder, Some(NodeId(1)));
        // Renewal by the holder, then expiry hands it to the other node.
        assert!(
            reply(w.handle(
                Instant::from_millis(1000),
                &request(1, 3, RequestKind::Acquire, true)
            ))
            .granted
        );
        assert!(
            !reply(w.handle(
                Instant::from_millis(1599),
                &request(2, 2, RequestKind::Acquire, false)
            ))
            .granted
        );
        let taken = reply(w.handle(
            Instant::from_millis(1600),
            &request(2, 3, RequestKind::Acquire, false),
        ));
        assert!(taken.granted);
        assert_eq!(
            taken.outdated,
            Some(NodeId(1)),
            "takeover without the peer outdates it"
        );
        assert_eq!(store.get(), Some(NodeId(1)), "recorded durably");
    }

    #[test]
    fn outdated_node_is_refused_until_the_holder_hears_it() {
        let store = MemoryOutdatedStore::default();
        store.clone().store(Some(NodeId(1))).expect("store");
        let mut w = Witness::new(config(), store.clone(), Instant::ZERO).expect("witness");
        let t = Instant::from_millis(700);
        assert!(!reply(w.handle(t, &request(1, 1, RequestKind::Acquire, false))).granted);
        let r = reply(w.handle(t, &request(2, 1, RequestKind::Acquire, true)));
        assert!(r.granted);
        assert_eq!(r.outdated, None);
        assert_eq!(store.get(), None);
    }

    #[test]
    fn replayed_and_forged_requests_are_dropped() {
        let mut w =
            Witness::new(config(), MemoryOutdatedStore::default(), Instant::ZERO).expect("witness");
        let t = Instant::from_millis(700);
        let bytes = request(1, 5, RequestKind::Acquire, true);
        assert!(w.handle(t, &bytes).is_some());
        assert!(w.handle(t, &bytes).is_none());
        assert_eq!(w.counters().dropped_replayed, 1);
        let mut forged = request(1, 6, RequestKind::Acquire, true);
        forged[20] ^= 1;
        assert!(w.handle(t, &forged).is_none());
        assert_eq!(w.counters().dropped_forged, 1);
        assert!(w
            .handle(t, &request(3, 1, RequestKind::Acquire, true))
            .is_none());
        assert_eq!(w.counters().dropped_unknown_node, 1);
    }

    #[test]
    fn release_frees_the_lease_at_once() {
        let mut w =
            Witness::new(config(), MemoryOutdatedStore::default(), Instant::ZERO).expect("witness");
        let t = Instant::from_millis(700);
        assert!(reply(w.handle(t, &request(1, 1, RequestKind::Acquire, true))).granted);
        w.handle(t, &request(1, 2, RequestKind::Release, true));
        assert!(reply(w.handle(t, &request(2, 1, RequestKind::Acquire, true))).granted);
    }

    #[test]
    fn file_store_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = FileOutdatedStore::new(dir.path().join("outdated"));
        assert_eq!(store.load().expect("load"), None);
        store.store(Some(NodeId(2))).expect("store");
        assert_eq!(
            FileOutdatedStore::new(dir.path().join("outdated"))
                .load()
                .expect("load"),
            Some(NodeId(2))
        );
    }
}
