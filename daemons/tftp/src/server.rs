//! What the listener does with one datagram sent to port 69: refuse it with
//! a TFTP error, drop it, or admit a read [`Transfer`]. Admission enforces
//! the concurrency limits; the [`Ticket`] of an admitted transfer gives its
//! slot back when dropped, however the transfer ends.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironroot_net::Instant;

use crate::config::Config;
use crate::options::negotiate;
use crate::source::{FileSource, OpenError, PathError, TftpPath};
use crate::transfer::{Outcome, Transfer, TransferStats};
use crate::wire::{self, ErrorCode, Mode, Packet};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Server-wide counters; every dropped or refused datagram lands in one.
        #[derive(Debug, Default)]
        pub struct Counters { $($(#[$doc])* pub $name: AtomicU64,)* }
        /// A copy of [`Counters`] at one moment.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct CountersSnapshot { $($(#[$doc])* pub $name: u64,)* }
        impl Counters {
            pub fn snapshot(&self) -> CountersSnapshot {
                CountersSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters!(
    requests,
    malformed_dropped,
    malformed_refused,
    write_refused,
    mode_refused,
    path_refused,
    not_found,
    read_refused,
    busy_dropped,
    duplicate_requests,
    transfers_started,
    transfers_completed,
    transfers_declined,
    transfers_client_error,
    transfers_timed_out,
    transfers_read_failed,
    transfers_aborted,
    unknown_tid,
    data_sent,
    data_bytes_sent,
    /// Payload bytes of the files of completed transfers.
    file_bytes_completed,
    data_resent,
    duplicate_acks,
    rewinds,
    timeouts,
    ignored_datagrams,
    send_errors,
);

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What to do with a datagram that reached the listener.
pub enum Decision {
    /// Serve it: run `transfer` on a new socket and keep `ticket` until it
    /// ends.
    Start {
        transfer: Box<Transfer>,
        ticket: Ticket,
    },
    /// Answer with this ERROR packet and forget the request.
    Refuse { reply: Vec<u8> },
    /// Nothing to send (not a request, a retransmitted request, or a limit
    /// reached: firmware retries an unanswered request, whereas an ERROR
    /// would abort its boot).
    Drop,
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Start { ticket, .. } => write!(f, "Start({})", ticket.client),
            Decision::Refuse { reply } => write!(f, "Refuse({:?})", wire::decode(reply)),
            Decision::Drop => f.write_str("Drop"),
        }
    }
}

#[derive(Default)]
struct Admission {
    /// Request bytes of every running transfer, by client TID: an identical
    /// request from the same TID is a retransmission, not a new transfer.
    active: BTreeMap<SocketAddr, Vec<u8>>,
    per_client: BTreeMap<IpAddr, usize>,
}

/// Clients whose round-trip estimate is remembered (the oldest address is
/// forgotten past this).
pub const RTT_HINTS_MAX: usize = 4096;

/// The request side of the server (see the module docs).
pub struct Server<S> {
    config: Config,
    source: S,
    admission: Mutex<Admission>,
    counters: Counters,
    /// The last round-trip estimate (smoothed, variation) per client
    /// address, to start its next transfer's timeout from.
    rtt_hints: Mutex<BTreeMap<IpAddr, (Duration, Duration)>>,
}

/// An admitted transfer's slot; dropping it frees the slot.
pub struct Ticket {
    admission: Arc<dyn Release>,
    client: SocketAddr,
}

trait Release: Send + Sync {
    fn release(&self, client: SocketAddr);
}

impl<S: FileSource> Release for Server<S> {
    fn release(&self, client: SocketAddr) {
        let mut admission = self.lock();
        if admission.active.remove(&client).is_some() {
            let ip = client.ip();
            if let Some(count) = admission.per_client.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    admission.per_client.remove(&ip);
                }
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.release(self.client);
    }
}

impl Ticket {
    pub fn client(&self) -> SocketAddr {
        self.client
    }
}

impl<S: FileSource> Server<S> {
    pub fn new(config: Config, source: S) -> Arc<Server<S>> {
        Arc::new(Server {
            config,
            source,
            admission: Mutex::new(Admission::default()),
            counters: Counters::default(),
            rtt_hints: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Transfers running now.
    pub fn active(&self) -> usize {
        self.lock().active.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Admission> {
        // A panic while holding this lock leaves the table consistent (each
        // update is a single insert or remove), so poisoning is ignored.
        self.admission
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decide what to do with `datagram` from `client`.
    pub fn handle_request(
        self: &Arc<Self>,
        now: Instant,
        client: SocketAddr,
        datagram: &[u8],
    ) -> Decision {
        bump(&self.counters.requests);
        let request = match wire::decode(datagram) {
            Ok(Packet::Rrq(request)) => request,
            Ok(Packet::Wrq(_)) => {
                bump(&self.counters.write_refused);
                return refuse(ErrorCode::AccessViolation, "read-only server");
            }
            Ok(_)
            | Err(wire::DecodeError::UnknownOpcode(_) | wire::DecodeError::Truncated { .. }) => {
                bump(&self.counters.malformed_dropped);
                return Decision::Drop;
            }
            Err(err) => {
                bump(&self.counters.malformed_refused);
                return refuse(ErrorCode::IllegalOperation, &err.to_string());
            }
        };
        if request.mode == Mode::Mail {
            bump(&self.counters.mode_refused);
            return refuse(ErrorCode::IllegalOperation, "mail mode is for writes");
        }
        let path = match TftpPath::parse(request.filename) {
            Ok(path) => path,
            Err(err) => {
                bump(&self.counters.path_refused);
                let code = match err {
                    PathError::Empty => ErrorCode::FileNotFound,
                    _ => ErrorCode::AccessViolation,
                };
                return refuse(code, &err.to_string());
            }
        };
        let ticket = match self.admit(client, datagram) {
            Ok(ticket) => ticket,
            Err(decision) => return decision,
        };
        let file = match self.source.open(&path, client.ip()) {
            Ok(file) => file,
            Err(err) => return self.refuse_open(err),
        };
        let negotiation = negotiate(
            &request.options,
            request.mode,
            file.size,
            &self.config.limits,
        );
        let mut transfer = Transfer::new(
            now,
            file,
            request.mode,
            negotiation.params,
            &negotiation.oack,
            self.config.retries_max,
        );
        if let Some(hint) = self.rtt_hint(client.ip()) {
            transfer.seed_rtt(now, hint);
        }
        bump(&self.counters.transfers_started);
        Decision::Start {
            transfer: Box::new(transfer),
            ticket,
        }
    }

    fn admit(self: &Arc<Self>, client: SocketAddr, datagram: &[u8]) -> Result<Ticket, Decision> {
        let mut admission = self.lock();
        if let Some(running) = admission.active.get(&client) {
            let counter = if running.as_slice() == datagram {
                &self.counters.duplicate_requests
            } else {
                // A new request from a TID whose transfer is still ending (a
                // UEFI tsize probe, then the real read on the same port):
                // the client retransmits once the old transfer has gone.
                &self.counters.busy_dropped
            };
            bump(counter);
            return Err(Decision::Drop);
        }
        let for_client = admission.per_client.get(&client.ip()).copied().unwrap_or(0);
        if admission.active.len() >= self.config.transfers_max
            || for_client >= self.config.transfers_per_client_max
        {
            bump(&self.counters.busy_dropped);
            return Err(Decision::Drop);
        }
        admission.active.insert(client, datagram.to_vec());
        *admission.per_client.entry(client.ip()).or_insert(0) += 1;
        let admission_ref: Arc<dyn Release> = self.clone();
        Ok(Ticket {
            admission: admission_ref,
            client,
        })
    }

    fn refuse_open(&self, err: OpenError) -> Decision {
        let (counter, code, message) = match &err {
            OpenError::NotFound { .. } | OpenError::NotRegular { .. } => (
                &self.counters.not_found,
                ErrorCode::FileNotFound,
                "file not found",
            ),
            OpenError::Escapes { .. } => (
                &self.counters.path_refused,
                ErrorCode::AccessViolation,
                "access violation",
            ),
            OpenError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                (
                    &self.counters.read_refused,
                    ErrorCode::AccessViolation,
                    "access violation",
                )
            }
            OpenError::Io { .. } => (
                &self.counters.read_refused,
                ErrorCode::NotDefined,
                "read error",
            ),
        };
        bump(counter);
        tracing::debug!(error = %err, "request refused");
        refuse(code, message)
    }

    fn rtt_hint(&self, client: IpAddr) -> Option<(Duration, Duration)> {
        let hints = self.rtt_hints.lock().unwrap_or_else(|p| p.into_inner());
        hints.get(&client).copied()
    }

    /// Remember the round trip `transfer` measured to `client`, so the
    /// client's next transfer does not start at the configured maximum
    /// timeout (firmware fetches several files in a row).
    pub fn note_rtt(&self, client: IpAddr, transfer: &Transfer) {
        let Some(estimate) = transfer.rtt_estimate() else {
            return;
        };
        let mut hints = self.rtt_hints.lock().unwrap_or_else(|p| p.into_inner());
        if !hints.contains_key(&client) && hints.len() >= RTT_HINTS_MAX {
            hints.pop_first();
        }
        hints.insert(client, estimate);
    }

    /// Record how a transfer ended (its [`Ticket`] is dropped separately).
    pub fn record_outcome(&self, outcome: Option<&Outcome>, stats: TransferStats) {
        let counters = &self.counters;
        let counter = match outcome {
            Some(Outcome::Completed { .. }) => &counters.transfers_completed,
            Some(Outcome::ClientError {
                code: ErrorCode::OptionRefused,
                ..
            }) => &counters.transfers_declined,
            Some(Outcome::ClientError { .. }) => &counters.transfers_client_error,
            Some(Outcome::TimedOut { .. }) => &counters.transfers_timed_out,
            Some(Outcome::ReadFailed { .. }) => &counters.transfers_read_failed,
            Some(Outcome::Aborted) | None => &counters.transfers_aborted,
        };
        bump(counter);
        let add = |counter: &AtomicU64, value: u64| counter.fetch_add(value, Ordering::Relaxed);
        if let Some(Outcome::Completed { bytes, .. }) = outcome {
            add(&counters.file_bytes_completed, *bytes);
        }
        add(&counters.data_sent, stats.data_sent);
        add(&counters.data_bytes_sent, stats.data_bytes_sent);
        add(&counters.data_resent, stats.data_resent);
        add(&counters.duplicate_acks, stats.duplicate_acks);
        add(&counters.rewinds, stats.rewinds);
        add(&counters.timeouts, stats.timeouts);
        add(&counters.ignored_datagrams, stats.ignored_datagrams);
    }
}

fn refuse(code: ErrorCode, message: &str) -> Decision {
    let mut reply = Vec::new();
    wire::encode_error(&mut reply, code, message);
    Decision::Refuse { reply }
}

/// The ERROR 5 for a datagram that reached a transfer's socket from another
/// TID (RFC 1350 §4): the transfer itself is not disturbed.
pub fn unknown_tid_reply(out: &mut Vec<u8>) {
    wire::encode_error(out, ErrorCode::UnknownTransferId, "unknown transfer ID");
}
