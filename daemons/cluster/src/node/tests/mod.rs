//! Failover behaviour with virtual time: every test runs the two real node
//! machines (and the real witness) in a deterministic world.

mod world;

use std::time::Duration;

use ironroot_net::Instant;

use super::{Admin, EventKind, Node, Reason};
use crate::wire::{Flags, Heartbeat, Message, NodeId, Packet, Role};
use world::{Mode, World, RESOURCES};

const A: usize = 0;
const B: usize = 1;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Both nodes started together and settled: `a` (lower id) active.
fn settled(mode: Mode) -> World {
    let mut w = World::new(mode);
    w.start(A);
    w.start(B);
    w.run_for(ms(5000));
    assert_eq!(
        w.active_hosts(),
        vec![A],
        "cold start settles on the lower id"
    );
    assert_eq!(w.role(B), Some(Role::Standby));
    assert_eq!(w.vip_holders(), vec![A]);
    w
}

#[test]
fn cold_start_of_both_nodes_gives_exactly_one_active_whatever_the_offset() {
    for mode in [Mode::Witness, Mode::Fencing, Mode::Unsafe] {
        for offset_ms in [0, 1, 50, 499, 1199, 2499] {
            for first in [A, B] {
                let mut w = World::new(mode);
                w.start(first);
                w.run_for(ms(offset_ms));
                w.start(1 - first);
                w.run_for(ms(5000));
                let active = w.active_hosts();
                assert_eq!(
                    active.len(),
                    1,
                    "{mode:?} offset {offset_ms} first {first}: {active:?}"
                );
                assert!(
                    w.dual_vip_at.is_empty(),
                    "{mode:?} offset {offset_ms}: dual VIP"
                );
                assert_eq!(w.vip_holders(), active);
            }
        }
    }
}

#[test]
fn resources_start_in_order_then_vip_and_stop_in_reverse() {
    let mut w = settled(Mode::Witness);
    let starts: Vec<String> = w
        .events_of(A)
        .into_iter()
        .filter_map(|e| match e {
            EventKind::ResourceStarted { resource } => Some(resource.clone()),
            EventKind::VipClaimed => Some("vip".into()),
            _ => None,
        })
        .collect();
    assert_eq!(starts, ["store", "nfs", "tftp", "dhcp", "vip"]);
    w.admin(A, Admin::Standby(true));
    w.run_for(ms(2500));
    let stops: Vec<String> = w
        .events_of(A)
        .into_iter()
        .filter_map(|e| match e {
            EventKind::ResourceStopped { resource } => Some(resource.clone()),
            EventKind::VipReleased => Some("vip".into()),
            _ => None,
        })
        .collect();
    assert_eq!(stops, ["vip", "dhcp", "tftp", "nfs", "store"]);
    assert_eq!(w.role(A), Some(Role::Maintenance));
    assert_eq!(
        w.active_hosts(),
        vec![B],
        "the peer takes over from a node put in standby"
    );
}

#[test]
fn crash_of_active_daemon_standby_takes_over_after_dead_time_without_overlap() {
    let mut w = settled(Mode::Witness);
    let crash = w.now;
    // Only the daemon dies: the kernel keeps the VIP until its lifetime ends.
    w.kill_daemon(A);
    w.run_for(ms(5000));

    assert_eq!(w.active_hosts(), vec![B]);
    let took_over = w.became_active_at(B).expect("b active");
    let failover = took_over - crash;
    assert!(
        failover >= ms(1200),
        "not before the dead time: {failover:?}"
    );
    assert!(
        failover <= ms(1200 + 300),
        "within dead time + 300 ms: {failover:?}"
    );
    assert!(
        w.dual_vip_at.is_empty(),
        "VIP held twice at {:?}",
        w.dual_vip_at
    );
    assert_eq!(w.witness_store.get(), None, "store is outside this world");
    assert_eq!(
        w.witness.as_ref().and_then(|x| x.outdated()),
        Some(NodeId(1)),
        "a marked outdated"
    );
}

#[test]
fn partition_with_witness_gives_exactly_one_active() {
    let mut w = settled(Mode::Witness);
    w.peer_link_cut = true;
    for _ in 0..50 {
        w.run_for(ms(100));
        assert!(w.active_hosts().len() <= 1, "dual active at {}", w.now);
    }
    assert_eq!(
        w.active_hosts(),
        vec![A],
        "the lease holder stays, nothing moves"
    );
    assert!(w.dual_vip_at.is_empty());
    // The peer was marked outdated while a served alone: cutting a from
    // the witness too is a double failure, and nobody may serve.
    assert_eq!(w.role(B), Some(Role::Outdated));
    w.witness_cut[A] = true;
    for _ in 0..30 {
        w.run_for(ms(100));
        assert!(w.active_hosts().len() <= 1, "dual active at {}", w.now);
    }
    assert!(w.active_hosts().is_empty(), "a lost quorum, b is outdated");
    assert!(w.vip_holders().is_empty());
    // Healing: a takes the lease again, clears b's mark; nothing flaps.
    w.peer_link_cut = false;
    w.witness_cut[A] = false;
    w.run_for(ms(5000));
    assert_eq!(w.active_hosts(), vec![A]);
    assert_eq!(w.role(B), Some(Role::Standby));
    assert!(
        w.dual_vip_at.is_empty(),
        "VIP held twice at {:?}",
        w.dual_vip_at
    );
}

#[test]
fn partition_isolating_the_active_node_moves_services_once() {
    let mut w = settled(Mode::Witness);
    // a loses both the peer and the witness at once: b takes over, and
    // only after a's VIP expired.
    w.peer_link_cut = true;
    w.witness_cut[A] = true;
    for _ in 0..50 {
        w.run_for(ms(100));
        assert!(w.active_hosts().len() <= 1, "dual active at {}", w.now);
    }
    assert_eq!(w.active_hosts(), vec![B]);
    assert_eq!(w.role(A), Some(Role::Standby));
    assert!(
        w.dual_vip_at.is_empty(),
        "VIP held twice at {:?}",
        w.dual_vip_at
    );
    w.peer_link_cut = false;
    w.witness_cut[A] = false;
    w.run_for(ms(5000));
    assert_eq!(w.active_hosts(), vec![B], "no failback");
    assert_eq!(w.vip_owner_changes, 2);
}

#[test]
fn partition_without_witness_takes_over_only_after_fencing_succeeds() {
    let mut w = settled(Mode::Fencing);
    w.fence_ok = false;
    w.peer_link_cut = true;
    w.run_for(ms(5000));
    assert_eq!(w.active_hosts(), vec![A], "no takeover while fencing fails");
    assert_eq!(w.role(B), Some(Role::Standby));
    assert!(w
        .events_of(B)
        .iter()
        .any(|e| matches!(e, EventKind::FenceResult { ok: false })));
    w.fence_ok = true;
    w.run_for(ms(5000));
    assert_eq!(w.role(A), None, "a was powered off");
    assert_eq!(w.active_hosts(), vec![B]);
    let b = w.events_of(B);
    let fenced = b
        .iter()
        .position(|e| matches!(e, EventKind::FenceResult { ok: true }));
    let promoted = b.iter().position(|e| {
        matches!(
            e,
            EventKind::StateChanged {
                to: Role::Promoting,
                ..
            }
        )
    });
    assert!(
        fenced.is_some() && fenced < promoted,
        "promotion after fence success: {b:?}"
    );
    assert!(w.dual_vip_at.is_empty());
}

#[test]
fn unsafe_unfenced_partition_gives_dual_active() {
    let mut w = settled(Mode::Unsafe);
    w.peer_link_cut = true;
    w.run_for(ms(5000));
    assert_eq!(w.active_hosts(), vec![A, B], "that is what the flag allows");
    assert!(!w.dual_vip_at.is_empty());
    // After healing, the higher id steps down.
    w.peer_link_cut = false;
    w.run_for(ms(5000));
    assert_eq!(w.active_hosts(), vec![A]);
    assert!(w.events_of(B).iter().any(|e| matches!(
        e,
        EventKind::StateChanged {
            reason: Reason::DualActive,
            ..
        }
    )));
}

#[test]
fn witness_down_while_both_healthy_nothing_moves() {
    let mut w = settled(Mode::Witness);
    let before = w.events.len();
    w.witness_cut = [true, true];
    w.run_for(ms(10_000));
    assert_eq!(w.active_hosts(), vec![A]);
    let moves = w.events[before..]
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::StateChanged { .. } | EventKind::VipReleasing
            )
        })
        .count();
    assert_eq!(moves, 0, "no role change, no VIP release");
    assert_eq!(w.vip_owner_changes, 1);
}

#[test]
fn switchover_stops_everything_before_the_peer_starts() {
    let mut w = settled(Mode::Witness);
    let before = w.events.len();
    w.admin(A, Admin::Switchover);
    w.run_for(ms(4000));
    assert_eq!(w.active_hosts(), vec![B]);
    assert!(w.dual_vip_at.is_empty());
    let tail = &w.events[before..];
    let a_done = tail
        .iter()
        .position(|e| e.node == NodeId(1) && matches!(e.kind, EventKind::ResourceStopped { ref resource } if resource == "store"))
        .expect("a stopped its store");
    let b_first = tail
        .iter()
        .position(|e| e.node == NodeId(2) && matches!(e.kind, EventKind::ResourceStarting { .. }))
        .expect("b started");
    assert!(
        a_done < b_first,
        "no overlap: a finished stopping before b began"
    );
    // Failback is off: a stays standby.
    w.run_for(ms(5000));
    assert_eq!(w.active_hosts(), vec![B]);
    assert_eq!(w.role(A), Some(Role::Standby));
}

#[test]
fn switchover_without_a_ready_peer_is_rejected() {
    let mut w = settled(Mode::Witness);
    w.kill_daemon(B);
    w.run_for(ms(2500));
    w.admin(A, Admin::Switchover);
    w.run_for(ms(100));
    assert_eq!(w.active_hosts(), vec![A]);
    assert!(w
        .events_of(A)
        .iter()
        .any(|e| matches!(e, EventKind::AdminRejected { .. })));
}

#[test]
fn failed_monitor_on_active_fails_over() {
    let mut w = settled(Mode::Witness);
    w.failing_monitor = Some((A, "nfs"));
    w.run_for(ms(5000));
    assert_eq!(w.active_hosts(), vec![B]);
    assert!(w.events_of(A).iter().any(|e| matches!(
        e,
        EventKind::StateChanged { reason: Reason::MonitorFailed { resource }, .. } if resource == "nfs"
    )));
    assert!(w.dual_vip_at.is_empty());
}

#[test]
fn auto_failback_returns_to_the_preferred_node() {
    let mut w = World::new(Mode::Witness);
    for config in &mut w.configs {
        config.auto_failback = true;
    }
    w.start(B);
    w.run_for(ms(5000));
    assert_eq!(w.active_hosts(), vec![B]);
    w.start(A);
    w.run_for(ms(8000));
    assert_eq!(w.active_hosts(), vec![A]);
    assert!(w.dual_vip_at.is_empty());
}

#[test]
fn restart_with_bumped_incarnation_is_accepted_and_old_packets_are_not() {
    let mut w = settled(Mode::Witness);
    // Capture one of b's heartbeats as an attacker would.
    let old = heartbeat_from(&w, B, 1, 5);
    w.kill_daemon(B);
    w.run_for(ms(2500));
    w.start(B);
    w.run_for(ms(4000));

    assert_eq!(w.role(B), Some(Role::Standby));
    assert!(w.events_of(A).iter().any(|e| matches!(
        e,
        EventKind::PeerAlive {
            incarnation: 2,
            restarted: true
        }
    )));
    let before = *w.node(A).counters();
    let now = w.now;
    w.node(A).handle_heartbeat(now, 0, &old);
    assert_eq!(w.node(A).counters().dropped_stale, before.dropped_stale + 1);
    assert_eq!(w.active_hosts(), vec![A]);
}

fn heartbeat_from(w: &World, host: usize, incarnation: u64, seq: u64) -> Vec<u8> {
    let config = &w.configs[host];
    Packet {
        cluster_id: config.cluster_id,
        sender: config.local.id,
        message: Message::Heartbeat(Heartbeat {
            incarnation,
            seq,
            role: Role::Standby,
            flags: Flags {
                eligible: true,
                vote: false,
                handoff: false,
                wants_active: false,
            },
            echo_incarnation: 0,
            echo_seq: 0,
        }),
    }
    .encode(&config.key)
}

#[test]
fn forged_replayed_and_foreign_packets_are_dropped_and_counted() {
    let mut w = World::new(Mode::Witness);
    w.start(A);
    let now = Instant::from_millis(10);
    let good = heartbeat_from(&w, B, 4, 9);
    let node = w.node(A);
    node.handle_heartbeat(now, 0, &good);
    assert_eq!(node.counters().heartbeats_accepted, 1);
    node.handle_heartbeat(now, 0, &good);
    assert_eq!(node.counters().dropped_replayed, 1);
    let mut forged = heartbeat_from(&w, B, 4, 10);
    let last = forged.len() - 1;
    forged[last] ^= 0xff;
    let node = w.node(A);
    node.handle_heartbeat(now, 0, &forged);
    assert_eq!(node.counters().dropped_forged, 1);
    node.handle_heartbeat(now, 0, &[1, 2, 3]);
    assert_eq!(node.counters().dropped_malformed, 1);
    let late = heartbeat_from(&w, B, 4, 11);
    w.node(A).handle_heartbeat(now, 7, &late);
    assert_eq!(w.node(A).counters().dropped_unknown_link, 1);
    let own = heartbeat_from(&w, A, 1, 1);
    w.node(A).handle_heartbeat(now, 0, &own);
    assert_eq!(w.node(A).counters().dropped_wrong_sender, 1);
    let stale = heartbeat_from(&w, B, 3, 100);
    w.node(A).handle_heartbeat(now, 0, &stale);
    assert_eq!(w.node(A).counters().dropped_stale, 1);
    assert_eq!(w.node(A).counters().heartbeats_accepted, 1);
}

#[test]
fn restarted_outdated_node_is_not_promoted_alone() {
    // a active, crashes; b takes over (a outdated); b's host dies; a restarts.
    let mut w = settled(Mode::Witness);
    w.power_off(A);
    w.run_for(ms(5000));
    assert_eq!(w.active_hosts(), vec![B]);
    w.power_off(B);
    w.start(A);
    w.run_for(ms(5000));
    assert_eq!(w.role(A), Some(Role::Outdated));
    assert!(w.active_hosts().is_empty());
    // b comes back: it promotes, sees a, and clears the mark.
    w.start(B);
    w.run_for(ms(5000));
    assert_eq!(w.active_hosts(), vec![B]);
    assert_eq!(w.role(A), Some(Role::Standby));
}

#[test]
fn an_outdated_peer_stays_outdated_until_it_is_current() {
    // a dies, b takes over and outdates it; a restarts and is heard, but
    // its store is still resyncing: the mark stays, and if b dies now, a
    // is not promoted.
    let mut w = settled(Mode::Witness);
    w.power_off(A);
    w.run_for(ms(5000));
    assert_eq!(w.active_hosts(), vec![B]);
    w.node(B).set_peer_current(false);
    w.start(A);
    w.run_for(ms(5000));
    assert_eq!(w.role(A), Some(Role::Outdated));
    assert_eq!(
        w.witness.as_ref().and_then(|x| x.outdated()),
        Some(NodeId(1))
    );
    // The resync completes: the next lease renewal clears the mark.
    w.node(B).set_peer_current(true);
    w.run_for(ms(5000));
    assert_eq!(w.role(A), Some(Role::Standby));
    assert_eq!(w.witness.as_ref().and_then(|x| x.outdated()), None);
}

#[test]
fn a_lagging_peer_that_was_never_outdated_is_not_marked() {
    // Cold start: the stores are still connecting when a takes the lease.
    let mut w = World::new(Mode::Witness);
    w.start(A);
    w.start(B);
    w.node(A).set_peer_current(false);
    w.node(B).set_peer_current(false);
    w.run_for(ms(5000));
    assert_eq!(w.active_hosts(), vec![A]);
    assert_eq!(w.role(B), Some(Role::Standby));
    assert_eq!(w.witness.as_ref().and_then(|x| x.outdated()), None);
}

#[test]
fn a_peer_dying_mid_resync_leaves_no_stale_active() {
    let mut w = settled(Mode::Witness);
    w.power_off(A);
    w.run_for(ms(5000));
    w.node(B).set_peer_current(false);
    w.start(A);
    w.run_for(ms(3000));
    w.power_off(B);
    w.run_for(ms(5000));
    assert!(w.active_hosts().is_empty(), "a stale node was promoted");
    assert_eq!(w.role(A), Some(Role::Outdated));
}

#[test]
fn every_resource_in_the_world_is_known() {
    assert_eq!(RESOURCES.len(), 4);
}

/// Random faults over many seeds: never two VIP holders with quorum or
/// fencing configured, and once every fault heals, exactly one active.
/// `IRONROOT_CLUSTER_SEEDS=3000` sweeps more seeds; `IRONROOT_CLUSTER_SEED=N`
/// replays one seed and prints its trace.
#[test]
fn random_faults_never_give_two_vip_holders() {
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let only = env("IRONROOT_CLUSTER_SEED");
    let seeds = only.map_or(0..env("IRONROOT_CLUSTER_SEEDS").unwrap_or(40), |s| s..s + 1);
    for mode in [Mode::Witness, Mode::Fencing] {
        for seed in seeds.clone() {
            let mut w = World::new(mode);
            w.seed(seed);
            w.start(A);
            w.start(B);
            let mut rng = ironroot_net::derive_rng(seed, "faults");
            for _ in 0..30 {
                let mark = w.events.len();
                random_fault(&mut w, &mut rng);
                w.run_for(ms(rand::Rng::gen_range(&mut rng, 50..1500)));
                if only.is_some() {
                    print_trace(&w, mark);
                }
                let dual = &w.dual_vip_at;
                assert!(
                    dual.is_empty(),
                    "{mode:?} seed {seed}: two VIP holders at {dual:?}"
                );
            }
            w.peer_link_cut = false;
            w.witness_cut = [false, false];
            w.loss_percent = 0;
            for host in [A, B] {
                if w.nodes[host].is_none() {
                    w.start(host);
                }
            }
            let mark = w.events.len();
            w.run_for(ms(10_000));
            if only.is_some() {
                print_trace(&w, mark);
            }
            let dual = &w.dual_vip_at;
            assert!(
                dual.is_empty(),
                "{mode:?} seed {seed}: two VIP holders at {dual:?}"
            );
            let roles = [w.role(A), w.role(B)];
            assert_eq!(w.active_hosts().len(), 1, "{mode:?} seed {seed}: {roles:?}");
            assert_eq!(w.vip_holders(), w.active_hosts(), "{mode:?} seed {seed}");
        }
    }
}

fn random_fault(w: &mut World, rng: &mut rand_chacha::ChaCha8Rng) {
    use rand::Rng;
    let host = rng.gen_range(0..2);
    match rng.gen_range(0..9) {
        0 => w.peer_link_cut = !w.peer_link_cut,
        1 => w.witness_cut[host] = !w.witness_cut[host],
        2 if w.nodes[host].is_some() => w.kill_daemon(host),
        3 if w.nodes[host].is_some() => w.power_off(host),
        4 | 5 if w.nodes[host].is_none() => w.start(host),
        6 => w.loss_percent = rng.gen_range(0..40),
        7 if w.nodes[host].is_some() => w.admin(host, Admin::Switchover),
        _ => {}
    }
}

fn print_trace(w: &World, mark: usize) {
    let roles = [w.role(A), w.role(B)];
    let (cut, witness_cut, loss) = (w.peer_link_cut, w.witness_cut, w.loss_percent);
    let vip = w.vip_until;
    eprintln!("{} fault: peer cut {cut} witness cut {witness_cut:?} loss {loss}% roles {roles:?} vip {vip:?}", w.now);
    for e in &w.events[mark..] {
        if !matches!(
            e.kind,
            EventKind::Dropped { .. } | EventKind::LeaseGranted { .. }
        ) {
            eprintln!("{} {} {:?}", e.at, e.node, e.kind);
        }
    }
}

/// Host death of the active node at every phase of the heartbeat and lease
/// cycle: the standby is active within dead time + 300 ms (the sim budget).
#[test]
fn failover_after_host_death_stays_within_budget_at_every_phase() {
    for mode in [Mode::Witness, Mode::Fencing] {
        let mut worst = Duration::ZERO;
        for phase_ms in (0..100).step_by(7) {
            let mut w = settled(mode);
            w.run_for(ms(phase_ms));
            let died = w.now;
            w.power_off(A);
            w.run_for(ms(4000));
            assert_eq!(w.active_hosts(), vec![B], "{mode:?} phase {phase_ms}");
            let failover = w.became_active_at(B).expect("b active") - died;
            worst = worst.max(failover);
        }
        // Witness: until a's lease (600 ms) runs out; fencing: dead time +
        // standby delay + fence; plus four 10 ms resource starts.
        let budget = match mode {
            Mode::Fencing => ms(1200 + 300 + 200),
            _ => ms(1200 + 300),
        };
        assert!(worst <= budget, "{mode:?}: worst failover {worst:?}");
        eprintln!("{mode:?}: worst failover over 15 phases {worst:?}");
    }
}

#[test]
fn a_link_is_reported_up_with_its_heartbeats_and_down_one_dead_time_later() {
    let mut w = World::new(Mode::Witness);
    w.start(A);
    let dead = w.configs[A].timing.dead;
    let link_events = |node: &mut Node| -> Vec<EventKind> {
        std::iter::from_fn(|| node.poll_event())
            .map(|e| e.kind)
            .filter(|k| matches!(k, EventKind::LinkUp { .. } | EventKind::LinkDown { .. }))
            .collect()
    };
    let first = Instant::from_millis(10);
    let heartbeat = heartbeat_from(&w, B, 4, 1);
    let node = w.node(A);
    node.handle_heartbeat(first, 0, &heartbeat);
    assert_eq!(link_events(node), vec![EventKind::LinkUp { link: 0 }]);
    node.handle_timeout(first + (dead - ms(1)));
    assert_eq!(link_events(node), vec![]);
    node.handle_timeout(first + dead);
    assert_eq!(link_events(node), vec![EventKind::LinkDown { link: 0 }]);
    let again = heartbeat_from(&w, B, 4, 2);
    let node = w.node(A);
    node.handle_heartbeat(first + dead + ms(5), 0, &again);
    assert_eq!(link_events(node), vec![EventKind::LinkUp { link: 0 }]);
}

#[test]
fn the_peer_stays_alive_on_one_link_while_the_other_is_down() {
    let mut file = world::file(Mode::Witness);
    file.nodes[0]
        .links
        .push("10.2.0.1:7694".parse().expect("addr"));
    file.nodes[1]
        .links
        .push("10.2.0.2:7694".parse().expect("addr"));
    let mut w = World::new(Mode::Witness);
    w.configs = [
        file.validate("a").expect("a"),
        file.validate("b").expect("b"),
    ];
    w.start(A);
    let dead = w.configs[A].timing.dead;
    let interval = w.configs[A].timing.interval;
    let mut seq = 0;
    let mut kinds = Vec::new();
    // Heartbeats on both links, then on link 0 only for three dead times.
    let mut at = Instant::from_millis(10);
    let end = at + dead * 4;
    while at < end {
        let links: &[usize] = if at < Instant::from_millis(10) + dead {
            &[0, 1]
        } else {
            &[0]
        };
        for link in links {
            seq += 1;
            let heartbeat = heartbeat_from(&w, B, 4, seq);
            w.node(A).handle_heartbeat(at, *link, &heartbeat);
        }
        w.node(A).handle_timeout(at);
        kinds.extend(std::iter::from_fn(|| w.node(A).poll_event()).map(|e| e.kind));
        at += interval;
    }
    let links: Vec<_> = kinds
        .iter()
        .filter(|k| matches!(k, EventKind::LinkUp { .. } | EventKind::LinkDown { .. }))
        .collect();
    assert_eq!(
        links,
        vec![
            &EventKind::LinkUp { link: 0 },
            &EventKind::LinkUp { link: 1 },
            &EventKind::LinkDown { link: 1 },
        ]
    );
    assert!(
        !kinds.contains(&EventKind::PeerDead),
        "the peer was declared dead while link 0 carried its heartbeats"
    );
}
