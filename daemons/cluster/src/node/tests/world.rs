//! A tiny deterministic world for the node machine: two hosts, a witness,
//! links that can be cut, resources that take a fixed time, and the VIP as
//! the kernel would hold it (with its lifetime), measured per host.

use std::collections::BTreeMap;
use std::time::Duration;

use ironroot_net::Instant;

use crate::config::{ClusterConfig, ClusterFile};
use crate::node::{Action, ClusterEvent, Destination, EventKind, Node, ResourceOp, VipOp};
use crate::wire::Role;
use crate::witness::{MemoryOutdatedStore, Witness};

pub const RESOURCES: [&str; 4] = ["store", "nfs", "tftp", "dhcp"];
pub const LATENCY: Duration = Duration::from_millis(1);
pub const OP_TIME: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Witness,
    Fencing,
    Unsafe,
}

pub fn file(mode: Mode) -> ClusterFile {
    let mut text = String::from(if mode == Mode::Unsafe {
        "unsafe_unfenced = true\n"
    } else {
        ""
    });
    text.push_str(
        r#"
cluster_id = 7
key_hex = "00112233445566778899aabbccddeeff"
[[nodes]]
name = "a"
id = 1
links = ["10.1.0.1:7694"]
[[nodes]]
name = "b"
id = 2
links = ["10.1.0.2:7694"]
[vip]
addr = "10.0.0.10"
prefix_len = 24
interface = "eth0"
"#,
    );
    match mode {
        Mode::Witness => text.push_str("[witness]\naddr = \"10.1.0.3:7695\"\n"),
        Mode::Fencing => {
            text.push_str("[fencing]\ncommand = [\"power-off\", \"{node}\"]\ntimeout_ms = 1000\n")
        }
        Mode::Unsafe => {}
    }
    toml::from_str(&text).expect("test config parses")
}

#[derive(Debug)]
enum Delivery {
    ToNode {
        host: usize,
        bytes: Vec<u8>,
        from_witness: bool,
    },
    ToWitness {
        from: usize,
        bytes: Vec<u8>,
    },
    Resource {
        host: usize,
        incarnation: u64,
        name: String,
        op: ResourceOp,
        ok: bool,
    },
    Vip {
        host: usize,
        incarnation: u64,
        op: VipOp,
        ok: bool,
    },
    Fence {
        host: usize,
        incarnation: u64,
        ok: bool,
    },
}

pub struct World {
    pub now: Instant,
    pub configs: [ClusterConfig; 2],
    pub nodes: [Option<Node>; 2],
    incarnations: [u64; 2],
    pub witness: Option<Witness<MemoryOutdatedStore>>,
    pub witness_store: MemoryOutdatedStore,
    queue: BTreeMap<(Instant, u64), Delivery>,
    order: u64,
    pub peer_link_cut: bool,
    pub witness_cut: [bool; 2],
    /// The kernel's expiry of the VIP on each host.
    pub vip_until: [Option<Instant>; 2],
    pub fence_ok: bool,
    pub failing_monitor: Option<(usize, &'static str)>,
    pub events: Vec<ClusterEvent>,
    /// Instants at which two hosts held the VIP.
    pub dual_vip_at: Vec<Instant>,
    pub vip_owner_changes: usize,
    last_owner: Option<usize>,
    /// Share of peer and witness datagrams lost, in percent.
    pub loss_percent: u32,
    rng: rand_chacha::ChaCha8Rng,
}

impl World {
    pub fn new(mode: Mode) -> World {
        let file = file(mode);
        let configs = [
            file.validate("a").expect("a"),
            file.validate("b").expect("b"),
        ];
        let witness = (mode == Mode::Witness).then(|| {
            let config = file.validate_witness().expect("witness");
            Witness::new(config, MemoryOutdatedStore::default(), Instant::ZERO).expect("witness")
        });
        World {
            now: Instant::ZERO,
            configs,
            nodes: [None, None],
            incarnations: [0, 0],
            witness,
            witness_store: MemoryOutdatedStore::default(),
            queue: BTreeMap::new(),
            order: 0,
            peer_link_cut: false,
            witness_cut: [false, false],
            vip_until: [None, None],
            fence_ok: true,
            failing_monitor: None,
            events: Vec::new(),
            dual_vip_at: Vec::new(),
            vip_owner_changes: 0,
            last_owner: None,
            loss_percent: 0,
            rng: ironroot_net::derive_rng(0, "world"),
        }
    }

    pub fn seed(&mut self, seed: u64) {
        self.rng = ironroot_net::derive_rng(seed, "world");
    }

    pub fn chance(&mut self, percent: u32) -> bool {
        use rand::Rng;
        self.rng.gen_range(0..100) < percent
    }

    /// Start (or restart) the daemon on `host` with a bumped incarnation.
    pub fn start(&mut self, host: usize) {
        self.incarnations[host] += 1;
        let names = RESOURCES.iter().map(|s| s.to_string()).collect();
        let node = Node::new(
            self.configs[host].clone(),
            self.incarnations[host],
            names,
            self.now,
        )
        .expect("node");
        self.nodes[host] = Some(node);
        self.drain(host);
    }

    /// The daemon dies; the host (and the VIP's remaining lifetime) stays.
    pub fn kill_daemon(&mut self, host: usize) {
        self.nodes[host] = None;
    }

    /// Host death: daemon and VIP gone at once.
    pub fn power_off(&mut self, host: usize) {
        self.nodes[host] = None;
        self.vip_until[host] = None;
    }

    pub fn role(&self, host: usize) -> Option<Role> {
        self.nodes[host].as_ref().map(|n| n.role())
    }

    pub fn node(&mut self, host: usize) -> &mut Node {
        self.nodes[host].as_mut().expect("node running")
    }

    pub fn admin(&mut self, host: usize, command: crate::node::Admin) {
        let now = self.now;
        self.node(host).handle_admin(now, command);
        self.drain(host);
    }

    pub fn vip_holders(&self) -> Vec<usize> {
        (0..2)
            .filter(|h| self.vip_until[*h].is_some_and(|u| self.now < u))
            .collect()
    }

    pub fn active_hosts(&self) -> Vec<usize> {
        (0..2)
            .filter(|h| self.role(*h) == Some(Role::Active))
            .collect()
    }

    fn push(&mut self, at: Instant, delivery: Delivery) {
        self.order += 1;
        self.queue.insert((at, self.order), delivery);
    }

    /// Run every input due up to `until`, in time order.
    pub fn run_until(&mut self, until: Instant) {
        loop {
            let mut next = until;
            for node in self.nodes.iter().flatten() {
                next = next.min(node.poll_timeout());
            }
            if let Some(((at, _), _)) = self.queue.first_key_value() {
                next = next.min(*at);
            }
            // Expiries of the VIP matter to the overlap check too.
            for until_vip in self.vip_until.iter().flatten() {
                if *until_vip > self.now {
                    next = next.min(*until_vip);
                }
            }
            let next = next.max(self.now);
            self.now = next;
            self.check_vip();
            let mut progressed = false;
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let delivery = entry.remove();
                self.deliver(delivery);
                progressed = true;
            }
            for host in 0..2 {
                if let Some(node) = self.nodes[host].as_mut() {
                    if node.poll_timeout() <= self.now {
                        node.handle_timeout(self.now);
                        progressed = true;
                    }
                }
                self.drain(host);
            }
            self.check_vip();
            if self.now >= until && !progressed {
                return;
            }
        }
    }

    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        self.run_until(until);
    }

    fn check_vip(&mut self) {
        let holders = self.vip_holders();
        if holders.len() > 1 && self.dual_vip_at.last() != Some(&self.now) {
            self.dual_vip_at.push(self.now);
        }
        if let [owner] = holders[..] {
            if self.last_owner != Some(owner) {
                self.vip_owner_changes += 1;
                self.last_owner = Some(owner);
            }
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        let now = self.now;
        match delivery {
            Delivery::ToNode {
                host,
                bytes,
                from_witness,
            } => {
                if let Some(node) = self.nodes[host].as_mut() {
                    if from_witness {
                        node.handle_witness_reply(now, &bytes);
                    } else {
                        node.handle_heartbeat(now, 0, &bytes);
                    }
                }
            }
            Delivery::ToWitness { from, bytes } => {
                if let Some(reply) = self.witness.as_mut().and_then(|w| w.handle(now, &bytes)) {
                    if !self.witness_cut[from] {
                        let delivery = Delivery::ToNode {
                            host: from,
                            bytes: reply,
                            from_witness: true,
                        };
                        self.push(now + LATENCY, delivery);
                    }
                }
            }
            Delivery::Resource {
                host,
                incarnation,
                name,
                op,
                ok,
            } => {
                if let Some(node) = self.live(host, incarnation) {
                    node.handle_resource_result(now, &name, op, ok);
                }
            }
            Delivery::Vip {
                host,
                incarnation,
                op,
                ok,
            } => {
                if let Some(node) = self.live(host, incarnation) {
                    node.handle_vip_result(now, op, ok);
                }
            }
            Delivery::Fence {
                host,
                incarnation,
                ok,
            } => {
                if let Some(node) = self.live(host, incarnation) {
                    node.handle_fence_result(now, ok);
                }
            }
        }
    }

    fn live(&mut self, host: usize, incarnation: u64) -> Option<&mut Node> {
        self.nodes[host]
            .as_mut()
            .filter(|n| n.incarnation() == incarnation)
    }

    fn drain(&mut self, host: usize) {
        let now = self.now;
        let Some(node) = self.nodes[host].as_mut() else {
            return;
        };
        let incarnation = node.incarnation();
        let mut transmits = Vec::new();
        while let Some(t) = node.poll_transmit() {
            transmits.push(t);
        }
        let mut actions = Vec::new();
        while let Some(a) = node.poll_action() {
            actions.push(a);
        }
        while let Some(e) = node.poll_event() {
            self.events.push(e);
        }
        for t in transmits {
            let loss = self.loss_percent;
            if self.chance(loss) {
                continue;
            }
            match t.destination {
                Destination::Peer { .. } if !self.peer_link_cut => {
                    let delivery = Delivery::ToNode {
                        host: 1 - host,
                        bytes: t.bytes,
                        from_witness: false,
                    };
                    self.push(now + LATENCY, delivery);
                }
                Destination::Witness if !self.witness_cut[host] => {
                    self.push(
                        now + LATENCY,
                        Delivery::ToWitness {
                            from: host,
                            bytes: t.bytes,
                        },
                    );
                }
                _ => {}
            }
        }
        for action in actions {
            self.execute(host, incarnation, action);
        }
    }

    fn execute(&mut self, host: usize, incarnation: u64, action: Action) {
        let now = self.now;
        let lifetime = self.configs[host].vip.lifetime;
        let (at, delivery) = match action {
            Action::Start { resource } => (
                now + OP_TIME,
                self.resource(host, incarnation, resource, ResourceOp::Start),
            ),
            Action::Stop { resource } => (
                now + OP_TIME,
                self.resource(host, incarnation, resource, ResourceOp::Stop),
            ),
            Action::Monitor { resource } => (
                now + OP_TIME,
                self.resource(host, incarnation, resource, ResourceOp::Monitor),
            ),
            Action::ClaimVip { .. } => {
                self.vip_until[host] = Some(now + lifetime);
                (
                    now + LATENCY,
                    Delivery::Vip {
                        host,
                        incarnation,
                        op: VipOp::Claim,
                        ok: true,
                    },
                )
            }
            Action::RenewVip { not_after } => {
                assert!(now <= not_after);
                let ok = self.vip_until[host].is_some_and(|u| now < u);
                if ok {
                    self.vip_until[host] = Some(now + lifetime);
                }
                (
                    now + LATENCY,
                    Delivery::Vip {
                        host,
                        incarnation,
                        op: VipOp::Renew,
                        ok,
                    },
                )
            }
            Action::ReleaseVip => {
                self.vip_until[host] = None;
                (
                    now + LATENCY,
                    Delivery::Vip {
                        host,
                        incarnation,
                        op: VipOp::Release,
                        ok: true,
                    },
                )
            }
            Action::Fence { node } => {
                let target = self
                    .configs
                    .iter()
                    .position(|c| c.local.name == node)
                    .expect("known node");
                if self.fence_ok {
                    self.power_off(target);
                }
                (
                    now + OP_TIME,
                    Delivery::Fence {
                        host,
                        incarnation,
                        ok: self.fence_ok,
                    },
                )
            }
        };
        self.push(at, delivery);
    }

    fn resource(&self, host: usize, incarnation: u64, name: String, op: ResourceOp) -> Delivery {
        let ok = !(op == ResourceOp::Monitor && self.failing_monitor == Some((host, leak(&name))));
        Delivery::Resource {
            host,
            incarnation,
            name,
            op,
            ok,
        }
    }

    /// Events of one host, in order.
    pub fn events_of(&self, host: usize) -> Vec<&EventKind> {
        let id = self.configs[host].local.id;
        self.events
            .iter()
            .filter(|e| e.node == id)
            .map(|e| &e.kind)
            .collect()
    }

    /// When `host` last became Active.
    pub fn became_active_at(&self, host: usize) -> Option<Instant> {
        let id = self.configs[host].local.id;
        self.events
            .iter()
            .filter(|e| {
                e.node == id
                    && matches!(
                        e.kind,
                        EventKind::StateChanged {
                            to: Role::Active,
                            ..
                        }
                    )
            })
            .map(|e| e.at)
            .next_back()
    }
}

fn leak(name: &str) -> &'static str {
    RESOURCES
        .iter()
        .find(|r| **r == name)
        .copied()
        .unwrap_or("")
}
