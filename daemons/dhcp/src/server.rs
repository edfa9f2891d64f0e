//! The sans-IO DHCP server: datagrams and journal acknowledgements in,
//! replies and lease writes out. No sockets, no clock, no randomness.
//!
//! Pool ACKs wait for their lease to be durable: `handle` records the lease
//! and holds the ACK; `poll_lease_write` hands every record gathered since
//! the last write to the driver as one batch (group commit) once
//! `limits.lease_gather_records` are waiting or the oldest has waited
//! `limits.lease_gather_ms`
//! (`poll_timeout` says when); the driver calls `handle_lease_durable` when
//! the journal has it, and the ACKs of that batch become transmits.
//! Reservations need no write and are answered at once.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use dhcproto::v4::MessageType;
use ironroot_net::Instant;

use crate::config::{Config, ConfigError, Mode};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::counters::{add, bump, Counters, SharedCounters};
use crate::leases::{
    after_secs, LeaseRecord, LeaseRecordKind, LeaseState, LeaseWrite, LeaseWriteId, Pool, PoolError,
};
use crate::pxe::{self, TemplateVars};
use crate::registry::{Registry, Reservation};
use crate::reply::{self, Outgoing, ReplySpec, PXE_PORT};
use crate::wire::{decode_request, ClientKey, Request};

/// One received datagram.
#[derive(Clone, Copy, Debug)]
pub struct Incoming<'a> {
    pub bytes: &'a [u8],
    pub peer: SocketAddr,
    /// Destination address (IP_PKTINFO): the VIP, a host address or
    /// 255.255.255.255.
    pub local_ip: IpAddr,
    /// 67, or 4011 for proxyDHCP requests.
    pub local_port: u16,
}

/// Who a client is to us.
enum Binding {
    Reserved(Reservation),
    Pool,
}

/// A lease record waiting to be written, with the ACK it unblocks.
struct Unwritten {
    record: LeaseRecord,
    ack: Option<HeldAck>,
    /// When it was queued: the batch goes out `lease_gather_ms` after its
    /// oldest record at the latest.
    queued_at: Instant,
}

/// An ACK, and the lease it announces.
struct HeldAck {
    bound_at: Instant,
    ip: Ipv4Addr,
    client: ClientKey,
    outgoing: Outgoing,
}

/// The DHCP server state machine of one node.
pub struct DhcpServer<G: Registry> {
    config: Config,
    registry: G,
    pool: Option<Pool>,
    counters: Arc<SharedCounters>,
    transmits: VecDeque<Outgoing>,
    unwritten: VecDeque<Unwritten>,
    in_flight: BTreeMap<LeaseWriteId, Vec<HeldAck>>,
    pending_acks: usize,
    next_write_id: u64,
    /// A monotonic instant and the wall-clock seconds at that instant, to
    /// turn lease deadlines into journal times and back.
    wall_base: (Instant, u64),
    next_purge: Instant,
}

/// How often the lease table is tidied (see [`DhcpServer::poll_timeout`]).
pub const PURGE_INTERVAL: Duration = Duration::from_secs(10);

impl<G: Registry> DhcpServer<G> {
    /// A server with an empty lease table.
    pub fn new(config: Config, registry: G) -> Result<DhcpServer<G>, ConfigError> {
        config.validate()?;
        let pool = match (&config.pool, config.mode) {
            (Some(pool), Mode::Full) => {
                Some(Pool::new(pool.start, pool.end, config.limits.leases_max))
            }
            _ => None,
        };
        let counters: Arc<SharedCounters> = Arc::default();
        let size = pool.as_ref().map_or(0, Pool::size);
        counters.pool_addresses.store(size, Ordering::Relaxed);
        Ok(DhcpServer {
            config,
            registry,
            pool,
            counters,
            transmits: VecDeque::new(),
            unwritten: VecDeque::new(),
            in_flight: BTreeMap::new(),
            pending_acks: 0,
            next_write_id: 1,
            wall_base: (Instant::ZERO, 0),
            next_purge: Instant::ZERO + PURGE_INTERVAL,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        self.counters.snapshot()
    }

    /// The live counters, to read while the driver owns the server.
    pub fn shared_counters(&self) -> Arc<SharedCounters> {
        Arc::clone(&self.counters)
    }

    /// Count into `counters` (kept across restarts of the service) instead
    /// of this server's own.
    pub fn with_counters(mut self, counters: Arc<SharedCounters>) -> DhcpServer<G> {
        let size = self.counters.pool_addresses.load(Ordering::Relaxed);
        counters.pool_addresses.store(size, Ordering::Relaxed);
        self.counters = counters;
        self
    }

    /// The driver handed a reply to the socket.
    pub fn note_sent(&mut self) {
        bump(&self.counters.replies_sent);
    }

    fn refresh_pool_gauge(&self, now: Instant) {
        let in_use = self.pool.as_ref().map_or(0, |pool| pool.in_use(now));
        self.counters
            .pool_addresses_in_use
            .store(in_use as u64, Ordering::Relaxed);
    }

    pub fn pool(&self) -> Option<&Pool> {
        self.pool.as_ref()
    }

    pub fn registry_mut(&mut self) -> &mut G {
        &mut self.registry
    }

    /// The driver could not send a reply.
    pub fn note_send_failed(&mut self) {
        bump(&self.counters.send_failures);
    }

    /// ACKs waiting for their lease write.
    pub fn pending_acks(&self) -> usize {
        self.pending_acks
    }

    /// Tell the server the wall-clock time at `now` (at start, then now and
    /// then), so journal records carry times the standby can use.
    pub fn set_wall_clock(&mut self, now: Instant, unix_secs: u64) {
        self.wall_base = (now, unix_secs);
    }

    fn unix_secs_at(&self, instant: Instant) -> u64 {
        let (base, base_unix) = self.wall_base;
        if instant >= base {
            base_unix.saturating_add((instant - base).as_secs())
        } else {
            base_unix.saturating_sub((base - instant).as_secs())
        }
    }

    /// Rebuild the lease table from the journal (oldest record first).
    pub fn restore(&mut self, now: Instant, records: &[LeaseRecord]) {
        let now_unix = self.unix_secs_at(now);
        let Some(pool) = self.pool.as_mut() else {
            return;
        };
        for record in records {
            let remaining = Duration::from_secs(record.until_unix_secs.saturating_sub(now_unix));
            let state = match record.kind {
                LeaseRecordKind::Bound => LeaseState::Bound {
                    expires: now + remaining,
                },
                LeaseRecordKind::Declined => LeaseState::Declined {
                    until: now + remaining,
                },
                LeaseRecordKind::Released => LeaseState::Released,
            };
            pool.restore(now, record.ip, &record.client, state);
        }
        self.refresh_pool_gauge(now);
    }

    /// Process one datagram and return every reply ready to send (including
    /// ACKs released by earlier durable writes).
    pub fn handle(&mut self, now: Instant, incoming: Incoming<'_>) -> Vec<Outgoing> {
        self.handle_datagram(now, incoming);
        self.transmits.drain(..).collect()
    }

    /// Process one datagram; replies go to [`DhcpServer::poll_transmit`].
    pub fn handle_datagram(&mut self, now: Instant, incoming: Incoming<'_>) {
        bump(&self.counters.received);
        let request = match decode_request(incoming.bytes, self.config.limits.datagram_bytes_max) {
            Ok(request) => request,
            Err(error) => {
                tracing::debug!(peer = %incoming.peer, %error, "dropped undecodable datagram");
                self.counters.count_decode_error(&error);
                return;
            }
        };
        if !self.on_our_subnet(request.giaddr) {
            bump(&self.counters.ignored_foreign_subnet);
            return;
        }
        self.registry.refresh();
        match self.config.mode {
            Mode::Proxy => self.handle_proxy(&request, &incoming),
            Mode::Full => match request.message_type {
                MessageType::Discover => self.handle_discover(now, &request),
                MessageType::Request => self.handle_request(now, &request),
                MessageType::Decline => self.handle_decline(now, &request),
                MessageType::Release => self.handle_release(now, &request),
                MessageType::Inform => self.handle_inform(&request),
                // The decoder admits only the five types above.
                _ => bump(&self.counters.dropped_malformed),
            },
        }
    }

    /// One subnet per server: the VIP's. A relay on another subnet would get
    /// addresses and a mask that do not work there.
    fn on_our_subnet(&self, giaddr: Ipv4Addr) -> bool {
        let mask = u32::from(self.config.subnet_mask);
        giaddr.is_unspecified() || u32::from(giaddr) & mask == u32::from(self.config.network())
    }

    fn binding(&self, request: &Request) -> Option<Binding> {
        if let Some(reservation) = request.mac.and_then(|mac| self.registry.lookup(&mac)) {
            return Some(Binding::Reserved(reservation));
        }
        self.pool.as_ref().map(|_| Binding::Pool)
    }

    fn handle_discover(&mut self, now: Instant, request: &Request) {
        bump(&self.counters.discovers);
        let (yiaddr, lease_secs, reservation) = match self.binding(request) {
            None => {
                bump(&self.counters.ignored_unknown_client);
                return;
            }
            Some(Binding::Reserved(reservation)) => (
                reservation.ip,
                self.config.reservation_lease_secs,
                Some(reservation),
            ),
            Some(Binding::Pool) => match self.offer_from_pool(now, request) {
                Some(ip) => (ip, self.pool_lease_secs(), None),
                None => return,
            },
        };
        bump(&self.counters.offers);
        self.reply(
            request,
            MessageType::Offer,
            yiaddr,
            lease_secs,
            reservation.as_ref(),
        );
    }

    fn offer_from_pool(&mut self, now: Instant, request: &Request) -> Option<Ipv4Addr> {
        let hold_secs = self
            .config
            .pool
            .as_ref()
            .map_or(0, |pool| pool.offer_hold_secs);
        let hold_until = after_secs(now, hold_secs);
        let excluded = excluded(&self.config, &self.registry);
        let pool = self.pool.as_mut()?;
        let result = pool.offer(
            now,
            &request.client_key,
            request.requested_ip(),
            hold_until,
            &excluded,
        );
        match result {
            Ok(ip) => Some(ip),
            Err(PoolError::TableFull { .. }) => {
                bump(&self.counters.lease_table_full);
                None
            }
            Err(_) => {
                bump(&self.counters.pool_exhausted);
                None
            }
        }
    }

    fn pool_lease_secs(&self) -> u32 {
        self.config.pool.as_ref().map_or(0, |pool| pool.lease_secs)
    }

    /// RFC 2131 §4.3.2: SELECTING (option 54 + 50), INIT-REBOOT (50, no 54),
    /// RENEWING/REBINDING (ciaddr).
    fn handle_request(&mut self, now: Instant, request: &Request) {
        bump(&self.counters.requests);
        if let Some(server_id) = request.server_id() {
            if server_id != self.config.vip {
                if let Some(pool) = self.pool.as_mut() {
                    pool.withdraw_offer(&request.client_key);
                }
                bump(&self.counters.ignored_other_server);
                return;
            }
        }
        let wanted = request
            .requested_ip()
            .or_else(|| (!request.ciaddr.is_unspecified()).then_some(request.ciaddr));
        let Some(wanted) = wanted else {
            bump(&self.counters.ignored_incomplete);
            return;
        };
        match self.binding(request) {
            None => bump(&self.counters.ignored_unknown_client),
            Some(Binding::Reserved(reservation)) => {
                if wanted == reservation.ip {
                    bump(&self.counters.acks);
                    let lease_secs = self.config.reservation_lease_secs;
                    self.reply(
                        request,
                        MessageType::Ack,
                        wanted,
                        lease_secs,
                        Some(&reservation),
                    );
                } else {
                    self.nak(request, "requested address is not this client's");
                }
            }
            Some(Binding::Pool) => self.request_from_pool(now, request, wanted),
        }
    }

    /// Authoritative: this is the only server on the boot segment, so a free
    /// address the client asks for (INIT-REBOOT after a failover lost our
    /// offer) is granted, and one held by another client is NAKed so the
    /// client starts over at once instead of waiting out its timers.
    fn request_from_pool(&mut self, now: Instant, request: &Request, wanted: Ipv4Addr) {
        if excluded(&self.config, &self.registry)(wanted) {
            self.nak(request, "requested address is not available");
            return;
        }
        if self.pending_acks >= self.config.limits.pending_acks_max {
            // The client retransmits; better than an unbounded queue.
            bump(&self.counters.pending_acks_full);
            return;
        }
        let lease_secs = self.pool_lease_secs();
        let ack_delay_max = Duration::from_millis(self.config.limits.ack_delay_ms_max);
        let expires = after_secs(now, lease_secs) + ack_delay_max;
        let Some(pool) = self.pool.as_mut() else {
            return;
        };
        match pool.bind(now, &request.client_key, wanted, expires) {
            Ok(()) => {}
            Err(PoolError::TableFull { .. }) => {
                bump(&self.counters.lease_table_full);
                return;
            }
            Err(_) => {
                self.nak(request, "requested address is not available");
                return;
            }
        }
        let spec = self.spec(request, MessageType::Ack, wanted, lease_secs, None);
        let ack = match reply::build(&self.config, request, &spec) {
            Ok(ack) => ack,
            Err(_) => {
                bump(&self.counters.reply_too_long);
                return;
            }
        };
        bump(&self.counters.acks);
        self.pending_acks += 1;
        let record = LeaseRecord {
            ip: wanted,
            client: request.client_key.clone(),
            kind: LeaseRecordKind::Bound,
            until_unix_secs: self.unix_secs_at(expires),
        };
        self.unwritten.push_back(Unwritten {
            record,
            ack: Some(HeldAck {
                bound_at: now,
                ip: wanted,
                client: request.client_key.clone(),
                outgoing: ack,
            }),
            queued_at: now,
        });
    }

    fn handle_decline(&mut self, now: Instant, request: &Request) {
        bump(&self.counters.declines);
        if request.server_id().is_some_and(|id| id != self.config.vip) {
            bump(&self.counters.ignored_other_server);
            return;
        }
        let Some(ip) = request.requested_ip() else {
            bump(&self.counters.ignored_incomplete);
            return;
        };
        if let Some(Binding::Reserved(reservation)) = self.binding(request) {
            tracing::warn!(ip = %ip, name = %reservation.name, "client declined its reserved address");
            bump(&self.counters.declines_of_reserved);
            return;
        }
        let quarantine_secs = self
            .config
            .pool
            .as_ref()
            .map_or(0, |pool| pool.decline_quarantine_secs);
        let until = after_secs(now, quarantine_secs);
        let declined = self
            .pool
            .as_mut()
            .is_some_and(|pool| pool.decline(&request.client_key, ip, until));
        if declined {
            self.record(
                now,
                ip,
                &request.client_key,
                LeaseRecordKind::Declined,
                self.unix_secs_at(until),
            );
        }
    }

    fn handle_release(&mut self, now: Instant, request: &Request) {
        bump(&self.counters.releases);
        if request.server_id().is_some_and(|id| id != self.config.vip) {
            bump(&self.counters.ignored_other_server);
            return;
        }
        let ip = request.ciaddr;
        let released = self
            .pool
            .as_mut()
            .is_some_and(|pool| pool.release(&request.client_key, ip));
        if released {
            self.record(now, ip, &request.client_key, LeaseRecordKind::Released, 0);
        }
    }

    /// Queue a record that holds no ACK (RELEASE, DECLINE).
    fn record(
        &mut self,
        now: Instant,
        ip: Ipv4Addr,
        client: &ClientKey,
        kind: LeaseRecordKind,
        until_unix_secs: u64,
    ) {
        if self.unwritten.len() >= self.config.limits.pending_acks_max {
            // Losing a release or decline record is safe: the standby then
            // thinks the address is still held, never that it is free.
            bump(&self.counters.pending_acks_full);
            return;
        }
        self.unwritten.push_back(Unwritten {
            record: LeaseRecord {
                ip,
                client: client.clone(),
                kind,
                until_unix_secs,
            },
            ack: None,
            queued_at: now,
        });
    }

    /// RFC 2131 §4.3.5: configuration only, no address, no lease time.
    fn handle_inform(&mut self, request: &Request) {
        bump(&self.counters.informs);
        let reservation = match self.binding(request) {
            None => {
                bump(&self.counters.ignored_unknown_client);
                return;
            }
            Some(Binding::Reserved(reservation)) => Some(reservation),
            Some(Binding::Pool) => None,
        };
        bump(&self.counters.acks);
        let mut spec = self.spec(
            request,
            MessageType::Ack,
            Ipv4Addr::UNSPECIFIED,
            0,
            reservation.as_ref(),
        );
        spec.lease_secs = None;
        self.send(request, &spec);
    }

    /// proxyDHCP (PXE spec 2.1 §2.2.5): boot options only, to PXE clients
    /// we know; DISCOVER on 67 gets an OFFER, REQUEST on 4011 an ACK sent
    /// back to the sender.
    fn handle_proxy(&mut self, request: &Request, incoming: &Incoming<'_>) {
        let on_pxe_port = incoming.local_port == PXE_PORT;
        let answer = match (request.message_type, on_pxe_port) {
            (MessageType::Discover, false) => MessageType::Offer,
            (MessageType::Request | MessageType::Inform, true) => MessageType::Ack,
            _ => {
                bump(&self.counters.ignored_by_proxy);
                return;
            }
        };
        if !pxe::is_pxe_client(request) && !pxe::is_ipxe(request) {
            bump(&self.counters.ignored_by_proxy);
            return;
        }
        let Some(Binding::Reserved(reservation)) = self.binding(request) else {
            bump(&self.counters.ignored_unknown_client);
            return;
        };
        let mut spec = self.spec(
            request,
            answer,
            Ipv4Addr::UNSPECIFIED,
            0,
            Some(&reservation),
        );
        spec.lease_secs = None;
        spec.network = false;
        if on_pxe_port {
            spec.reply_to_sender = Some(incoming.peer);
        }
        match answer {
            MessageType::Offer => bump(&self.counters.offers),
            _ => bump(&self.counters.acks),
        }
        self.send(request, &spec);
    }

    fn spec<'a>(
        &self,
        request: &Request,
        message_type: MessageType,
        yiaddr: Ipv4Addr,
        lease_secs: u32,
        reservation: Option<&'a Reservation>,
    ) -> ReplySpec<'a> {
        let client_ip = if yiaddr.is_unspecified() {
            reservation.map_or(request.ciaddr, |r| r.ip)
        } else {
            yiaddr
        };
        let vars = TemplateVars {
            vip: self.config.vip,
            mac: request.mac,
            ip: client_ip,
            name: reservation.map_or("", |r| r.name.as_str()),
            image: reservation.map_or("", |r| r.image.as_str()),
        };
        ReplySpec {
            message_type,
            yiaddr,
            lease_secs: Some(lease_secs),
            hostname: reservation.map_or("", |r| r.name.as_str()),
            boot: Some(pxe::boot_options(&self.config.boot, request, &vars)),
            network: true,
            message: "",
            reply_to_sender: None,
        }
    }

    fn reply(
        &mut self,
        request: &Request,
        message_type: MessageType,
        yiaddr: Ipv4Addr,
        lease_secs: u32,
        reservation: Option<&Reservation>,
    ) {
        let spec = self.spec(request, message_type, yiaddr, lease_secs, reservation);
        self.send(request, &spec);
    }

    fn nak(&mut self, request: &Request, message: &str) {
        bump(&self.counters.naks);
        let spec = ReplySpec {
            message_type: MessageType::Nak,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            lease_secs: None,
            hostname: "",
            boot: None,
            network: false,
            message,
            reply_to_sender: None,
        };
        self.send(request, &spec);
    }

    fn send(&mut self, request: &Request, spec: &ReplySpec<'_>) {
        match reply::build(&self.config, request, spec) {
            Ok(outgoing) => self.push_transmit(outgoing),
            Err(error) => {
                tracing::debug!(%error, "reply not sent");
                bump(&self.counters.reply_too_long);
            }
        }
    }

    fn push_transmit(&mut self, outgoing: Outgoing) {
        if self.transmits.len() >= self.config.limits.transmits_max {
            bump(&self.counters.transmits_full);
            return;
        }
        self.transmits.push_back(outgoing);
    }

    /// The next reply to send.
    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        self.transmits.pop_front()
    }

    /// Every record gathered since the last write, as one batch (up to
    /// `lease_records_per_write_max`), once `lease_gather_records` are
    /// waiting or the oldest has waited `lease_gather_ms`, unless too many
    /// writes are in flight.
    pub fn poll_lease_write(&mut self, now: Instant) -> Option<LeaseWrite> {
        if self.lease_write_due().is_none_or(|due| now < due) {
            return None;
        }
        let take = self
            .unwritten
            .len()
            .min(self.config.limits.lease_records_per_write_max);
        let id = LeaseWriteId(self.next_write_id);
        self.next_write_id += 1;
        let mut records = Vec::with_capacity(take);
        let mut acks = Vec::new();
        for unwritten in self.unwritten.drain(..take) {
            records.push(unwritten.record);
            acks.extend(unwritten.ack);
        }
        self.in_flight.insert(id, acks);
        bump(&self.counters.lease_writes);
        add(&self.counters.lease_records, records.len() as u64);
        Some(LeaseWrite { id, records })
    }

    /// The journal has write `id` durably: its ACKs may go out, unless
    /// they waited longer than `ack_delay_ms_max`.
    pub fn handle_lease_durable(&mut self, now: Instant, id: LeaseWriteId) {
        let Some(acks) = self.in_flight.remove(&id) else {
            return;
        };
        self.pending_acks -= acks.len();
        let ack_delay_max = Duration::from_millis(self.config.limits.ack_delay_ms_max);
        for ack in acks {
            if now - ack.bound_at > ack_delay_max {
                bump(&self.counters.acks_dropped_late);
                continue;
            }
            // A RELEASE or DECLINE may have overtaken the write.
            let still_bound = self.pool.as_ref().is_some_and(|pool| {
                pool.lease(ack.ip).is_some_and(|lease| {
                    lease.client.as_ref() == Some(&ack.client)
                        && matches!(lease.state, LeaseState::Bound { .. })
                        && lease.is_active(now)
                })
            });
            if !still_bound {
                bump(&self.counters.acks_dropped_stale);
                continue;
            }
            self.push_transmit(ack.outgoing);
        }
    }

    /// Write `id` failed: its ACKs are dropped (clients retransmit their
    /// REQUEST). The addresses stay held in memory, which is the safe side.
    pub fn handle_lease_failed(&mut self, id: LeaseWriteId) {
        let Some(acks) = self.in_flight.remove(&id) else {
            return;
        };
        self.pending_acks -= acks.len();
        bump(&self.counters.lease_write_failures);
        add(&self.counters.acks_dropped_unwritten, acks.len() as u64);
    }

    /// When the gathered records may be written: at once if
    /// `lease_gather_records` are waiting, else `lease_gather_ms` after the
    /// oldest. None while nothing
    /// waits or no write may start (a durable write is the next event).
    fn lease_write_due(&self) -> Option<Instant> {
        let limits = &self.config.limits;
        if self.in_flight.len() >= limits.lease_writes_in_flight_max {
            return None;
        }
        let oldest = self.unwritten.front()?.queued_at;
        if self.unwritten.len() >= limits.lease_gather_records {
            return Some(oldest);
        }
        Some(oldest + Duration::from_millis(limits.lease_gather_ms))
    }

    /// When the driver must next call [`DhcpServer::handle_timeout`] and
    /// [`DhcpServer::poll_lease_write`]: the end of a gather window, or the
    /// periodic purge. Expiry itself is lazy (an expired entry is free
    /// whatever its state); the purge only tidies the table, so a fixed
    /// interval does, and costs nothing per datagram.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let purge = self.pool.as_ref().map(|_| self.next_purge);
        match (purge, self.lease_write_due()) {
            (Some(purge), Some(due)) => Some(purge.min(due)),
            (purge, due) => purge.or(due),
        }
    }

    /// Forget expired offers, leases and quarantines.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_purge {
            return;
        }
        self.next_purge = now + PURGE_INTERVAL;
        if let Some(pool) = self.pool.as_mut() {
            pool.purge_expired(now);
        }
        self.refresh_pool_gauge(now);
    }
}

/// Addresses the pool must never hand out.
fn excluded<'a, G: Registry>(config: &Config, registry: &'a G) -> impl Fn(Ipv4Addr) -> bool + 'a {
    let (vip, network, broadcast) = (config.vip, config.network(), config.broadcast());
    move |ip| ip == vip || ip == network || ip == broadcast || registry.is_reserved(ip)
}
