//! Property: whatever many clients do (DISCOVER, REQUEST of any address,
//! RELEASE, DECLINE, time passing, lease writes completing or failing), no
//! address is ever held by two clients, as the clients see it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use dhcproto::v4::MessageType;
use ironroot_dhcp::{DhcpServer, MemoryRegistry, Outgoing};
use ironroot_net::Instant;
use proptest::prelude::*;

use crate::support::*;

const CLIENTS: u8 = 8;
const POOL_FIRST: u8 = 100;
const POOL_LAST: u8 = 105;

#[derive(Clone, Debug)]
enum Op {
    Discover(u8),
    /// Request the last offer (`None`) or pool address index `Some(i)`.
    Request(u8, Option<u8>, bool),
    Renew(u8),
    Release(u8),
    Decline(u8),
    Advance(u64),
    Commit,
    FailWrite,
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0..CLIENTS;
    let address = proptest::option::of(0..(POOL_LAST - POOL_FIRST + 3));
    prop_oneof![
        4 => client.clone().prop_map(Op::Discover),
        4 => (client.clone(), address, any::<bool>()).prop_map(|(c, a, s)| Op::Request(c, a, s)),
        2 => client.clone().prop_map(Op::Renew),
        1 => client.clone().prop_map(Op::Release),
        1 => client.prop_map(Op::Decline),
        2 => (0u64..700).prop_map(Op::Advance),
        3 => Just(Op::Commit),
        1 => Just(Op::FailWrite),
    ]
}

/// What the clients believe.
#[derive(Default)]
struct Model {
    /// ip -> (client, lease end as the client computes it, in ms)
    held: BTreeMap<Ipv4Addr, (u8, u64)>,
    offered: BTreeMap<u8, Ipv4Addr>,
    /// ip -> quarantine end (ms) after a DECLINE of a held address.
    declined: BTreeMap<Ipv4Addr, u64>,
}

impl Model {
    fn address_of(&self, client: u8, now_ms: u64) -> Option<Ipv4Addr> {
        self.held
            .iter()
            .find(|(_, (c, end))| *c == client && *end > now_ms)
            .map(|(ip, _)| *ip)
    }

    fn observe(&mut self, client: u8, reply: &Reply, now_ms: u64) {
        let ip = reply.message.yiaddr();
        if let Some((holder, end)) = self.held.get(&ip) {
            assert!(
                *holder == client || *end <= now_ms,
                "{ip} given to client {client} while client {holder} holds it until {end} (now {now_ms})"
            );
        }
        if let Some(end) = self.declined.get(&ip) {
            assert!(*end <= now_ms, "{ip} handed out during its quarantine");
        }
        match reply.kind() {
            OFFER => {
                self.offered.insert(client, ip);
            }
            ACK => {
                let lease_secs =
                    u32::from_be_bytes(reply.opt(51).expect("lease").try_into().expect("4 bytes"));
                self.held.retain(|_, (c, _)| *c != client);
                self.held
                    .insert(ip, (client, now_ms + u64::from(lease_secs) * 1000));
            }
            _ => {}
        }
    }
}

fn client_of(out: &Outgoing) -> u8 {
    parse(out).message.chaddr()[5]
}

fn run(ops: Vec<Op>) {
    let mut server = server(pool_config(POOL_FIRST, POOL_LAST), &[]);
    let mut model = Model::default();
    let mut now_ms = 0u64;
    for op in ops {
        let discover = match op {
            Op::Discover(c) => Some(c),
            _ => None,
        };
        let out = step(&mut server, &mut model, &mut now_ms, op);
        if let (Some(c), true) = (discover, out.is_empty()) {
            assert_exhausted(&server, c, Instant::from_millis(now_ms));
        }
        for reply in &out {
            model.observe(client_of(reply), &parse(reply), now_ms);
        }
        if let Some(pool) = server.pool() {
            pool.check_invariants();
        }
    }
}

/// Liveness: a DISCOVER goes unanswered only if every pool address is held
/// by someone else.
fn assert_exhausted(server: &DhcpServer<MemoryRegistry>, client: u8, now: Instant) {
    let pool = server.pool().expect("pool");
    let mut key = vec![1];
    key.extend_from_slice(&mac(client).0);
    let me = ironroot_dhcp::ClientKey(key);
    for last in POOL_FIRST..=POOL_LAST {
        let lease = pool.lease(Ipv4Addr::new(10, 0, 0, last));
        assert!(
            lease.is_some_and(|lease| lease.is_active(now) && lease.client.as_ref() != Some(&me)),
            "DISCOVER of client {client} unanswered while 10.0.0.{last} is free: {lease:?}"
        );
    }
}

/// Apply one operation; returns what the server sent.
fn step(
    server: &mut DhcpServer<MemoryRegistry>,
    model: &mut Model,
    now_ms: &mut u64,
    op: Op,
) -> Vec<Outgoing> {
    let now = Instant::from_millis(*now_ms);
    let held = |model: &Model, c: u8| model.address_of(c, *now_ms);
    match op {
        Op::Discover(c) => exchange(server, now, &Req::new(MessageType::Discover, mac(c))),
        Op::Request(c, address, selecting) => {
            let ip = match address {
                Some(i) => Some(Ipv4Addr::new(10, 0, 0, POOL_FIRST + i)),
                None => model.offered.get(&c).copied(),
            };
            let Some(ip) = ip else {
                return Vec::new();
            };
            // A client asking for another address has left its lease.
            if held(model, c).is_some_and(|current| current != ip) {
                model.held.retain(|_, (holder, _)| *holder != c);
            }
            let mut req = Req::new(MessageType::Request, mac(c)).requested(ip);
            if selecting {
                req = req.server_id(VIP);
            }
            exchange(server, now, &req)
        }
        Op::Renew(c) => match held(model, c) {
            Some(ip) => exchange(
                server,
                now,
                &Req::new(MessageType::Request, mac(c)).ciaddr(ip),
            ),
            None => Vec::new(),
        },
        Op::Release(c) => {
            if let Some(ip) = held(model, c) {
                model.held.remove(&ip);
                exchange(
                    server,
                    now,
                    &Req::new(MessageType::Release, mac(c)).ciaddr(ip),
                );
            }
            Vec::new()
        }
        Op::Decline(c) => {
            if let Some(ip) = held(model, c) {
                model.held.remove(&ip);
                model.declined.insert(ip, *now_ms + 300_000);
                exchange(
                    server,
                    now,
                    &Req::new(MessageType::Decline, mac(c)).requested(ip),
                );
            }
            Vec::new()
        }
        Op::Advance(secs) => {
            *now_ms += secs * 1000 + 1;
            server.handle_timeout(Instant::from_millis(*now_ms));
            Vec::new()
        }
        Op::Commit => {
            // The gather window passes before the batch is written.
            let end = window_end(server, now);
            *now_ms = u64::try_from(end.since_origin().as_millis()).unwrap_or(u64::MAX);
            commit_at(server, end)
        }
        Op::FailWrite => {
            let end = window_end(server, now);
            *now_ms = u64::try_from(end.since_origin().as_millis()).unwrap_or(u64::MAX);
            if let Some(write) = server.poll_lease_write(end) {
                server.handle_lease_failed(write.id);
            }
            Vec::new()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_address_is_held_by_two_clients(ops in proptest::collection::vec(op(), 1..200)) {
        run(ops);
    }
}
