//! Membership and votes: heartbeats in and out, the peer's liveness, the
//! peer's vote, the witness lease and fencing, and from those the quorum
//! proof (see the crate docs for the timing argument).

use std::time::Duration;

use ironroot_net::Instant;

use super::{
    ms, Destination, DropReason, EventKind, Fencing, Node, PeerView, Reason, SENT_HISTORY_MAX,
    WITNESS_PENDING_MAX,
};
use crate::config::QuorumMode;
use crate::wire::{
    Flags, Freshness, Heartbeat, Message, NodeId, Packet, RequestKind, Role, WitnessReply,
    WitnessRequest,
};

/// Far enough to mean "until something changes" without overflow.
const FOREVER: Duration = Duration::from_secs(1 << 40);

impl Node {
    /// A datagram arrived on heartbeat link `link`.
    pub fn handle_heartbeat(&mut self, now: Instant, link: usize, bytes: &[u8]) {
        if let Some(heartbeat) = self.authenticate(now, bytes, self.config.peer.id) {
            match heartbeat {
                Message::Heartbeat(h) => self.accept_heartbeat(now, link, h),
                _ => self.drop_packet(now, DropReason::Malformed),
            }
        }
        self.step(now);
        self.check_invariants(now);
    }

    /// A datagram arrived from the witness.
    pub fn handle_witness_reply(&mut self, now: Instant, bytes: &[u8]) {
        match self.authenticate(now, bytes, NodeId::WITNESS) {
            Some(Message::WitnessReply(reply)) => self.accept_reply(now, reply),
            Some(_) => self.drop_packet(now, DropReason::Malformed),
            None => {}
        }
        self.step(now);
        self.check_invariants(now);
    }

    /// The driver's fence command finished.
    pub fn handle_fence_result(&mut self, now: Instant, ok: bool) {
        if self.fencing == Fencing::InFlight {
            self.fencing = if ok { Fencing::Done } else { Fencing::Idle };
            self.event(now, EventKind::FenceResult { ok });
        }
        self.step(now);
        self.check_invariants(now);
    }

    fn authenticate(&mut self, now: Instant, bytes: &[u8], from: NodeId) -> Option<Message> {
        let packet = match Packet::decode(&self.config.key, bytes) {
            Ok(packet) => packet,
            Err(crate::wire::DecodeError::Forged) => {
                self.drop_packet(now, DropReason::Forged);
                return None;
            }
            Err(_) => {
                self.drop_packet(now, DropReason::Malformed);
                return None;
            }
        };
        if packet.cluster_id != self.config.cluster_id {
            self.drop_packet(now, DropReason::WrongCluster);
            return None;
        }
        if packet.sender != from {
            self.drop_packet(now, DropReason::WrongSender);
            return None;
        }
        Some(packet.message)
    }

    pub(super) fn drop_packet(&mut self, now: Instant, reason: DropReason) {
        let c = &mut self.counters;
        match reason {
            DropReason::Malformed => c.dropped_malformed += 1,
            DropReason::Forged => c.dropped_forged += 1,
            DropReason::WrongCluster => c.dropped_wrong_cluster += 1,
            DropReason::WrongSender => c.dropped_wrong_sender += 1,
            DropReason::Replayed => c.dropped_replayed += 1,
            DropReason::Stale => c.dropped_stale += 1,
            DropReason::UnknownLink => c.dropped_unknown_link += 1,
            DropReason::UnexpectedReply => c.dropped_unexpected_reply += 1,
        }
        self.event(now, EventKind::Dropped { reason });
    }

    fn accept_heartbeat(&mut self, now: Instant, link: usize, h: Heartbeat) {
        let Some(guard) = self.link_guards.get_mut(link) else {
            self.drop_packet(now, DropReason::UnknownLink);
            return;
        };
        let restarted = match guard.check(h.incarnation, h.seq) {
            Freshness::Replayed => return self.drop_packet(now, DropReason::Replayed),
            Freshness::Stale => return self.drop_packet(now, DropReason::Stale),
            Freshness::Fresh { restarted } => restarted,
        };
        self.note_link_heard(now, link);
        // The same sequence number arrives once per link: only the first
        // copy (or a newer one) updates the view.
        let previous = self.peer;
        if let Some(p) = previous {
            if h.incarnation < p.incarnation || (h.incarnation == p.incarnation && h.seq <= p.seq) {
                return;
            }
        }
        self.counters.heartbeats_accepted += 1;
        let was_alive = self.peer_alive(now);
        let new_life = previous.is_none_or(|p| p.incarnation != h.incarnation);
        let alive_since = match previous {
            Some(p) if was_alive && !new_life => p.alive_since,
            _ => now,
        };
        self.peer = Some(PeerView {
            incarnation: h.incarnation,
            seq: h.seq,
            role: h.role,
            flags: h.flags,
            heard_at: now,
            alive_since,
        });
        if !was_alive || new_life {
            let restarted = restarted || previous.is_some_and(|p| p.incarnation != h.incarnation);
            self.event(
                now,
                EventKind::PeerAlive {
                    incarnation: h.incarnation,
                    restarted,
                },
            );
            // A fenced peer that is back was power-cycled: the proof is spent.
            self.fencing = Fencing::Idle;
        }
        self.peer_dead_reported = false;
        self.peer_warned = false;
        self.note_vote(h);
        if h.role == Role::Active {
            self.handoff_until = None;
        }
        if h.flags.handoff {
            // The peer stepped down for us and stays ineligible for at least
            // the initial dead time (>= dead time): every vote of ours it
            // still holds lapses before it could use one to promote.
            self.vote_promised_until = None;
        }
    }

    fn note_vote(&mut self, h: Heartbeat) {
        if !h.flags.vote || h.echo_incarnation != self.incarnation {
            self.peer_vote_until = None;
            return;
        }
        // Dated by our own send time of the heartbeat the peer last saw: the
        // peer promised not to take over for one dead time after receiving
        // it, which is no earlier than we sent it.
        if let Some(sent) = self.sent_at.get(&h.echo_seq) {
            let until = *sent + self.config.timing.dead;
            self.peer_vote_until = Some(self.peer_vote_until.map_or(until, |u| u.max(until)));
        }
    }

    fn accept_reply(&mut self, now: Instant, reply: WitnessReply) {
        let Some(sent) = self.witness_pending.remove(&reply.request_id) else {
            return self.drop_packet(now, DropReason::UnexpectedReply);
        };
        if reply.to != self.config.local.id {
            return self.drop_packet(now, DropReason::WrongSender);
        }
        // Only old requests (dated earlier) are still pending: forget them so
        // replies can only move the lease forward.
        self.witness_pending.retain(|id, _| *id > reply.request_id);
        let QuorumMode::Witness { lease, .. } = self.config.quorum else {
            return;
        };
        let was_outdated = self.outdated;
        self.outdated = reply.outdated == Some(self.config.local.id);
        self.peer_marked_outdated = reply.outdated == Some(self.config.peer.id);
        if reply.granted {
            let granted = Duration::from_millis(u64::from(reply.lease_ms)).min(lease);
            let until = sent + granted;
            if self.lease_until.is_none_or(|u| u < until) {
                self.lease_until = Some(until);
                self.event(now, EventKind::LeaseGranted { until });
            }
        } else if reply.holder != Some(self.config.local.id) && self.lease_until.is_some() {
            self.lease_until = None;
            self.event(
                now,
                EventKind::LeaseRefused {
                    holder: reply.holder,
                },
            );
        }
        if self.outdated && self.role == Role::Standby {
            self.set_role(now, Role::Outdated, Reason::Outdated);
        } else if was_outdated && !self.outdated && self.role == Role::Outdated {
            self.set_role(now, Role::Standby, Reason::NoLongerOutdated);
        }
    }

    pub(super) fn send_heartbeats_if_due(&mut self, now: Instant) {
        if now < self.next_heartbeat_at {
            return;
        }
        let interval = self.config.timing.interval;
        self.next_heartbeat_at = (self.next_heartbeat_at + interval).max(now);
        if self.next_heartbeat_at == now {
            self.next_heartbeat_at = now + interval;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.sent_at.insert(seq, now);
        while self.sent_at.len() > SENT_HISTORY_MAX {
            self.sent_at.pop_first();
        }
        let (echo_incarnation, echo_seq) = self.peer.map_or((0, 0), |p| (p.incarnation, p.seq));
        let flags = self.flags(now);
        if let (true, Some(peer)) = (flags.vote, self.peer) {
            // The peer may count this vote until one dead time after it sent
            // the heartbeat we echo; we received that heartbeat later.
            let until = peer.heard_at + self.config.timing.dead;
            self.vote_promised_until =
                Some(self.vote_promised_until.map_or(until, |u| u.max(until)));
        }
        let heartbeat = Heartbeat {
            incarnation: self.incarnation,
            seq,
            role: self.role,
            flags,
            echo_incarnation,
            echo_seq,
        };
        let bytes = self.packet(Message::Heartbeat(heartbeat));
        for link in 0..self.config.local.links.len() {
            self.transmit(Destination::Peer { link }, bytes.clone());
        }
        self.counters.heartbeats_sent += 1;
    }

    fn packet(&self, message: Message) -> Vec<u8> {
        Packet {
            cluster_id: self.config.cluster_id,
            sender: self.config.local.id,
            message,
        }
        .encode(&self.config.key)
    }

    fn flags(&self, now: Instant) -> Flags {
        Flags {
            eligible: self.eligible(now),
            vote: self.votes_for_peer(now),
            handoff: self.handoff_pending(now),
            wants_active: self.wants_failback(now),
        }
    }

    pub(super) fn eligible(&self, now: Instant) -> bool {
        matches!(self.role, Role::InitialDead | Role::Standby)
            && !self.admin_standby
            && !self.outdated
            && !self.handoff_pending(now)
    }

    pub(super) fn handoff_pending(&self, now: Instant) -> bool {
        self.handoff_until.is_some_and(|until| now < until)
    }

    /// The vote rule. Giving the vote is a promise: no takeover until one
    /// dead time after the last heartbeat received from the peer.
    fn votes_for_peer(&self, now: Instant) -> bool {
        let Some(peer) = self.peer.filter(|_| self.peer_alive(now)) else {
            return false;
        };
        if matches!(self.role, Role::Active | Role::Promoting | Role::Stopping) {
            return false;
        }
        // Our previous life may have left the VIP in the kernel (daemon
        // crash, host alive): no vote until that address has expired.
        let leftover_gone =
            self.started_at + self.config.vip.lifetime + self.config.timing.clock_margin;
        if now < leftover_gone {
            return false;
        }
        if matches!(peer.role, Role::Active | Role::Promoting) {
            return true;
        }
        if peer.flags.handoff || !peer.flags.eligible || peer.role == Role::Stopping {
            return false;
        }
        if !self.eligible(now) {
            return true;
        }
        peer_wins_tie(self.config.local.id, self.config.peer.id)
    }

    fn wants_failback(&self, now: Instant) -> bool {
        self.config.auto_failback
            && self.eligible(now)
            && !peer_wins_tie(self.config.local.id, self.config.peer.id)
    }

    pub(super) fn peer_alive(&self, now: Instant) -> bool {
        self.peer
            .is_some_and(|p| now < p.heard_at + self.config.timing.dead)
    }

    fn note_link_heard(&mut self, now: Instant, link: usize) {
        if let Some(heard) = self.link_heard.get_mut(link) {
            *heard = Some(now);
        }
        if self.link_up.get(link) == Some(&false) {
            self.link_up[link] = true;
            self.event(now, EventKind::LinkUp { link });
        }
    }

    /// Report links silent for one dead time.
    fn age_links(&mut self, now: Instant) {
        let dead = self.config.timing.dead;
        for link in 0..self.link_up.len() {
            let silent = self.link_heard[link].is_none_or(|heard| now >= heard + dead);
            if self.link_up[link] && silent {
                self.link_up[link] = false;
                self.event(now, EventKind::LinkDown { link });
            }
        }
    }

    pub(super) fn age_peer(&mut self, now: Instant) {
        self.age_links(now);
        let Some(peer) = self.peer else { return };
        let silent = now.saturating_duration_since(peer.heard_at);
        if silent >= self.config.timing.dead && !self.peer_dead_reported {
            self.peer_dead_reported = true;
            self.peer_vote_until = None;
            self.event(now, EventKind::PeerDead);
        } else if silent >= self.config.timing.warn && !self.peer_warned {
            self.peer_warned = true;
            self.event(
                now,
                EventKind::PeerWarn {
                    silent_ms: ms(silent),
                },
            );
        }
    }

    /// When the peer may count as dead for takeover purposes: one dead time
    /// after its last heartbeat, or after our own initial dead time if it
    /// was never heard.
    pub(super) fn peer_dead_since(&self, now: Instant) -> Option<Instant> {
        match self.peer {
            Some(p) => {
                let at = p.heard_at + self.config.timing.dead;
                (now >= at).then_some(at)
            }
            None => {
                let at = self.started_at + self.config.timing.initial_dead;
                (now >= at).then_some(at)
            }
        }
    }

    /// Until when this node may act as active (before the clock margin).
    pub(super) fn proof_until(&self, now: Instant) -> Option<Instant> {
        let peer_dead = self.peer_dead_since(now).is_some();
        let incumbent = matches!(self.role, Role::Active | Role::Promoting | Role::Stopping);
        let mut best = self.peer_vote_until;
        let mut take = |until: Instant| best = Some(best.map_or(until, |b| b.max(until)));
        match &self.config.quorum {
            QuorumMode::Witness { .. } => {
                if let Some(until) = self.lease_until {
                    take(until);
                }
            }
            QuorumMode::Fencing(_) => {
                // The incumbent keeps running: the standby must fence it
                // (power it off) before taking over.
                if self.fencing == Fencing::Done && peer_dead || incumbent {
                    take(now + FOREVER);
                }
            }
            QuorumMode::Unsafe => {
                if peer_dead || incumbent {
                    take(now + FOREVER);
                }
            }
        }
        best
    }

    pub(super) fn has_quorum(&self, now: Instant) -> bool {
        let margin = self.config.timing.clock_margin;
        self.proof_until(now)
            .is_some_and(|until| now + margin < until)
    }

    /// Whether the VIP may be given a fresh lifetime now: it must run out
    /// (plus margin) before the proof does.
    pub(super) fn vip_renewable(&self, now: Instant) -> bool {
        if matches!(self.config.quorum, QuorumMode::Fencing(_)) {
            // The peer can take over only by powering this node off (or
            // after our handoff), which removes the address with the host:
            // a valid proof is enough, whatever the lifetime.
            return self.has_quorum(now);
        }
        let need = self.config.vip.lifetime + self.config.timing.clock_margin;
        self.proof_until(now)
            .is_some_and(|until| now + need <= until)
    }

    pub(super) fn quorum_lapse_at(&self) -> Option<Instant> {
        if !matches!(self.role, Role::Active | Role::Promoting) {
            return None;
        }
        let margin = self.config.timing.clock_margin;
        let mut at = None;
        for until in [self.peer_vote_until, self.lease_until]
            .into_iter()
            .flatten()
        {
            let lapse = Instant::from_origin(until.since_origin().saturating_sub(margin));
            at = Some(at.map_or(lapse, |a: Instant| a.max(lapse)));
        }
        at
    }

    pub(super) fn send_witness_if_due(&mut self, now: Instant) {
        let QuorumMode::Witness { lease, .. } = self.config.quorum else {
            return;
        };
        self.witness_pending.retain(|_, sent| now < *sent + lease);
        let interval = self.config.timing.interval;
        let kind = match self.role {
            Role::Active | Role::Promoting => RequestKind::Acquire,
            Role::Standby if self.peer_dead_since(now).is_some() && self.eligible(now) => {
                RequestKind::Acquire
            }
            Role::Stopping => return,
            _ => RequestKind::Query,
        };
        // A healthy standby's queries only keep its Outdated record fresh:
        // a slower cadence. An outdated node waits to be cleared.
        let gap = if kind == RequestKind::Query && self.role != Role::Outdated {
            interval * 5
        } else {
            interval
        };
        if self.last_witness_at.is_some_and(|last| now < last + gap) {
            return;
        }
        self.last_witness_at = Some(now);
        self.witness_request(now, kind);
    }

    pub(super) fn witness_request(&mut self, now: Instant, kind: RequestKind) {
        if self.witness_pending.len() >= WITNESS_PENDING_MAX {
            self.counters.witness_requests_dropped += 1;
            return;
        }
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        if kind != RequestKind::Release {
            self.witness_pending.insert(request_id, now);
        }
        let request = WitnessRequest {
            incarnation: self.incarnation,
            request_id,
            kind,
            // An alive peer keeps its Outdated mark until it is current (a
            // peer that was never marked is not marked for lagging: at a
            // cold start both stores may still be connecting).
            peer_alive: self.peer_alive(now) && (self.peer_current || !self.peer_marked_outdated),
        };
        let bytes = self.packet(Message::WitnessRequest(request));
        self.transmit(Destination::Witness, bytes);
    }

    /// Give the lease back once everything is stopped, so the peer need not
    /// wait for it to run out.
    pub(super) fn release_lease(&mut self, now: Instant) {
        if self.lease_until.take().is_some() {
            self.witness_request(now, RequestKind::Release);
        }
        self.witness_pending.clear();
    }

    pub(super) fn note_stopped(&mut self, now: Instant, reason: &Reason) {
        if matches!(
            reason,
            Reason::Switchover
                | Reason::AdminStandby
                | Reason::MonitorFailed { .. }
                | Reason::StartFailed { .. }
                | Reason::DualActive
        ) {
            // Stay out of the peer's way long enough for it to promote.
            self.handoff_until = Some(now + self.config.timing.initial_dead);
        }
    }
}

/// Deterministic cold-start tie-break: the lower node id goes first.
fn peer_wins_tie(me: NodeId, peer: NodeId) -> bool {
    peer < me
}
