//! Role transitions and the ordered promote/stop sequences: resources start
//! in order, then the VIP is claimed; stopping releases the VIP first and
//! stops resources in reverse. One step is in flight at a time.

use ironroot_net::Instant;

use super::{Action, EventKind, Fencing, Node, Pending, Reason, ResourceOp, Vip, VipOp};
use crate::config::QuorumMode;
use crate::wire::Role;

impl Node {
    /// The driver finished a resource operation.
    pub fn handle_resource_result(
        &mut self,
        now: Instant,
        resource: &str,
        op: ResourceOp,
        ok: bool,
    ) {
        let index = self.resources.iter().position(|r| r == resource);
        match (op, index) {
            (ResourceOp::Monitor, Some(_)) => {
                self.monitors_in_flight.remove(resource);
                if !ok && self.role == Role::Active {
                    let resource = resource.to_string();
                    self.event(
                        now,
                        EventKind::ResourceFailed {
                            resource: resource.clone(),
                            op,
                        },
                    );
                    self.begin_stopping(now, Reason::MonitorFailed { resource });
                }
            }
            (ResourceOp::Start, Some(i)) if self.pending == Some(Pending::Start(i)) => {
                self.pending = None;
                let resource = resource.to_string();
                if ok {
                    self.started = i + 1;
                    self.event(now, EventKind::ResourceStarted { resource });
                } else {
                    self.event(
                        now,
                        EventKind::ResourceFailed {
                            resource: resource.clone(),
                            op,
                        },
                    );
                    if self.role == Role::Promoting {
                        self.begin_stopping(now, Reason::StartFailed { resource });
                    }
                }
            }
            (ResourceOp::Stop, Some(i)) if self.pending == Some(Pending::Stop(i)) => {
                self.pending = None;
                self.started = i;
                let resource = resource.to_string();
                if ok {
                    self.event(now, EventKind::ResourceStopped { resource });
                } else {
                    // Nothing better to do than go on: the VIP is already
                    // gone, so a half-stopped service no longer reaches clients.
                    self.counters.stop_failures += 1;
                    self.event(now, EventKind::ResourceFailed { resource, op });
                }
            }
            _ => {}
        }
        self.step(now);
        self.check_invariants(now);
    }

    /// The driver finished a VIP operation.
    pub fn handle_vip_result(&mut self, now: Instant, op: VipOp, ok: bool) {
        if !ok {
            self.event(now, EventKind::VipFailed { op });
        }
        match op {
            VipOp::Claim if self.pending == Some(Pending::Claim) => {
                self.pending = None;
                // A failed claim may have left the address half-configured:
                // count it as held so the stop sequence removes it.
                self.vip = Vip::Held;
                if ok {
                    self.next_vip_renew_at = now + self.config.timing.interval;
                    self.event(now, EventKind::VipClaimed);
                } else if matches!(self.role, Role::Promoting | Role::Active) {
                    let resource = "vip".to_string();
                    self.begin_stopping(now, Reason::StartFailed { resource });
                }
            }
            VipOp::Renew if !ok && self.role == Role::Active && self.pending.is_none() => {
                // The address expired under us; claim it again if allowed.
                self.vip = Vip::Released;
            }
            VipOp::Release if self.pending == Some(Pending::Release) => {
                self.pending = None;
                self.vip = Vip::Released;
                self.event(now, EventKind::VipReleased);
            }
            _ => {}
        }
        self.step(now);
        self.check_invariants(now);
    }

    pub(super) fn step(&mut self, now: Instant) {
        if self.role == Role::InitialDead
            && now >= self.started_at + self.config.timing.initial_dead
        {
            let to = if self.admin_standby {
                Role::Maintenance
            } else if self.outdated {
                Role::Outdated
            } else {
                Role::Standby
            };
            self.set_role(now, to, Reason::InitialDeadOver);
        }
        match self.role {
            Role::Standby => self.step_standby(now),
            Role::Promoting => self.step_promoting(now),
            Role::Active => self.step_active(now),
            Role::Stopping => self.step_stopping(now),
            Role::InitialDead | Role::Outdated | Role::Maintenance => {}
        }
    }

    fn peer_busy(&self, now: Instant) -> bool {
        self.peer_alive(now)
            && self
                .peer
                .is_some_and(|p| matches!(p.role, Role::Active | Role::Promoting | Role::Stopping))
    }

    fn step_standby(&mut self, now: Instant) {
        if !self.eligible(now) || self.peer_busy(now) {
            return;
        }
        if self.vote_promised_until.is_some_and(|until| now < until) {
            // Both nodes holding each other's votes would both promote.
            return;
        }
        if self.vip_renewable(now) {
            self.set_role(now, Role::Promoting, Reason::Quorum);
            self.counters.failovers += 1;
            self.step_promoting(now);
            return;
        }
        let QuorumMode::Fencing(fencing) = &self.config.quorum else {
            return;
        };
        let Some(dead_since) = self.peer_dead_since(now) else {
            return;
        };
        let due = dead_since + fencing.standby_delay;
        if self.fencing == Fencing::Idle && now >= due && now >= self.next_fence_at {
            // A failed attempt is retried after the command's own timeout.
            self.next_fence_at = now + fencing.timeout;
            self.fencing = Fencing::InFlight;
            let node = self.config.peer.name.clone();
            self.event(now, EventKind::FenceRequested { node: node.clone() });
            self.action(Action::Fence { node });
        }
    }

    fn step_promoting(&mut self, now: Instant) {
        if self.pending.is_some() {
            return;
        }
        if !self.has_quorum(now) {
            return self.begin_stopping(now, Reason::QuorumLost);
        }
        if self.started < self.resources.len() {
            let resource = self.resources[self.started].clone();
            self.pending = Some(Pending::Start(self.started));
            self.event(
                now,
                EventKind::ResourceStarting {
                    resource: resource.clone(),
                },
            );
            self.action(Action::Start { resource });
        } else if self.vip == Vip::Released {
            if self.vip_renewable(now) {
                self.claim_vip(now);
            }
        } else {
            self.set_role(now, Role::Active, Reason::SequenceDone);
            self.next_monitor_at = now + self.config.timing.monitor_interval;
        }
    }

    fn claim_vip(&mut self, now: Instant) {
        self.pending = Some(Pending::Claim);
        self.event(now, EventKind::VipClaiming);
        let probe = self.fencing != Fencing::Done;
        self.action(Action::ClaimVip { probe });
    }

    fn step_active(&mut self, now: Instant) {
        if !self.has_quorum(now) {
            return self.begin_stopping(now, Reason::QuorumLost);
        }
        if let Some(peer) = self.peer.filter(|_| self.peer_alive(now)) {
            if peer.role == Role::Active && self.config.peer.id < self.config.local.id {
                return self.begin_stopping(now, Reason::DualActive);
            }
            let settled = now >= peer.alive_since + self.config.timing.initial_dead;
            if peer.flags.wants_active
                && peer.flags.eligible
                && peer.role == Role::Standby
                && settled
            {
                return self.begin_stopping(now, Reason::Switchover);
            }
        }
        if self.pending.is_none() {
            match self.vip {
                Vip::Released if self.vip_renewable(now) => self.claim_vip(now),
                Vip::Held if now >= self.next_vip_renew_at && self.vip_renewable(now) => {
                    self.next_vip_renew_at = now + self.config.timing.interval;
                    let not_after = now + self.config.timing.clock_margin;
                    self.action(Action::RenewVip { not_after });
                }
                _ => {}
            }
        }
        if now >= self.next_monitor_at {
            self.next_monitor_at = now + self.config.timing.monitor_interval;
            for resource in self.resources.clone() {
                if self.monitors_in_flight.insert(resource.clone()) {
                    self.action(Action::Monitor { resource });
                }
            }
        }
    }

    pub(super) fn begin_stopping(&mut self, now: Instant, reason: Reason) {
        if self.role == Role::Stopping {
            return;
        }
        self.stop_reason = Some(reason.clone());
        self.set_role(now, Role::Stopping, reason);
        self.step_stopping(now);
    }

    fn step_stopping(&mut self, now: Instant) {
        if self.pending.is_some() {
            return;
        }
        if self.vip == Vip::Held {
            self.pending = Some(Pending::Release);
            self.event(now, EventKind::VipReleasing);
            self.action(Action::ReleaseVip);
        } else if self.started > 0 {
            let index = self.started - 1;
            let resource = self.resources[index].clone();
            self.pending = Some(Pending::Stop(index));
            self.event(
                now,
                EventKind::ResourceStopping {
                    resource: resource.clone(),
                },
            );
            self.action(Action::Stop { resource });
        } else {
            let reason = self.stop_reason.take().unwrap_or(Reason::SequenceDone);
            self.monitors_in_flight.clear();
            self.release_lease(now);
            self.note_stopped(now, &reason);
            let to = if self.admin_standby {
                Role::Maintenance
            } else if self.outdated {
                Role::Outdated
            } else {
                Role::Standby
            };
            self.set_role(now, to, Reason::SequenceDone);
        }
    }
}
