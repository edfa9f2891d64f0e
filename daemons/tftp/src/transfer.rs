//! One read transfer as a sans-IO state machine: fed the client's datagrams
//! and timeouts, drained of datagrams to send. RFC 1350 lock-step is the
//! windowsize-1 case of RFC 7440: send a window, wait for the ACK of its
//! last block; an ACK of an earlier block restarts the window after it.
//!
//! Sorcerer's apprentice (RFC 1123 §4.2.3.1): an ACK that acknowledges
//! nothing new never triggers a send; only a timeout resends.

use std::io;
use std::time::Duration;

use ironroot_net::Instant;

use crate::blocks::BlockReader;
use crate::options::Negotiated;
use crate::rto::Rto;
use crate::source::OpenFile;
use crate::wire::{self, ErrorCode, Mode, Packet};

/// Longest client error message kept in an [`Outcome`].
pub const CLIENT_MESSAGE_LEN_MAX: usize = 128;

/// How a transfer ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The client acknowledged the last block.
    Completed { bytes: u64, blocks: u64 },
    /// The client sent an ERROR (after an OACK, code 8 is how UEFI firmware
    /// learns tsize and declines the transfer: a clean end, not a failure).
    ClientError { code: ErrorCode, message: String },
    /// No progress after `retries_max` retransmissions.
    TimedOut { retries: u32 },
    /// The file could not be read; the client was sent ERROR 0.
    ReadFailed { kind: io::ErrorKind },
    /// The server ended it (shutdown); the client was sent an ERROR.
    Aborted,
}

/// Counters of one transfer, for the server's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferStats {
    pub data_sent: u64,
    /// Payload bytes of every DATA sent, retransmissions included.
    pub data_bytes_sent: u64,
    pub data_resent: u64,
    pub timeouts: u64,
    pub duplicate_acks: u64,
    pub rewinds: u64,
    pub ignored_datagrams: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// OACK sent, waiting for ACK 0 (RFC 2347 §2).
    Negotiating,
    Sending,
    Done,
}

/// A read transfer (see the module docs).
pub struct Transfer {
    params: Negotiated,
    retries_max: u32,
    blocks: BlockReader,
    phase: Phase,
    /// OACK bytes, kept for retransmission while negotiating.
    oack: Vec<u8>,
    send_oack: bool,
    /// Oldest unacknowledged block (absolute, 1-based, never wraps).
    base: u64,
    /// Next block to put on the wire.
    next: u64,
    /// The short block that ends the file and its length, once read.
    last: Option<(u64, usize)>,
    deadline: Option<Instant>,
    /// When the current window (or OACK) went out, for round-trip samples.
    window_started: Instant,
    rto: Rto,
    retries: u32,
    /// A duplicate ACK has already caused a resend since the last timeout.
    resent_on_duplicate: bool,
    error_to_send: Option<(ErrorCode, &'static str)>,
    outcome: Option<Outcome>,
    stats: TransferStats,
}

impl Transfer {
    /// Start serving `file`. `oack` lists the granted options; empty means
    /// DATA 1 goes out at once.
    pub fn new(
        now: Instant,
        file: OpenFile,
        mode: Mode,
        params: Negotiated,
        oack: &[(String, u64)],
        retries_max: u32,
    ) -> Transfer {
        assert!(params.windowsize >= 1);
        let mut oack_bytes = Vec::new();
        if !oack.is_empty() {
            wire::encode_oack(&mut oack_bytes, oack);
        }
        let negotiating = !oack.is_empty();
        let rto = if params.timeout_fixed {
            Rto::fixed(params.timeout)
        } else {
            Rto::adaptive(params.rto_min, params.timeout)
        };
        Transfer {
            params,
            retries_max,
            blocks: BlockReader::new(file.reader, mode, params.blksize),
            phase: if negotiating {
                Phase::Negotiating
            } else {
                Phase::Sending
            },
            oack: oack_bytes,
            send_oack: negotiating,
            base: 1,
            next: 1,
            last: None,
            deadline: Some(now + rto.current()),
            window_started: now,
            rto,
            retries: 0,
            resent_on_duplicate: false,
            error_to_send: None,
            outcome: None,
            stats: TransferStats::default(),
        }
    }

    /// A datagram from the client's transfer ID.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        if self.phase == Phase::Done {
            self.stats.ignored_datagrams += 1;
            return;
        }
        match wire::decode(datagram) {
            Ok(Packet::Ack { block }) => self.handle_ack(now, block),
            Ok(Packet::Error { code, message }) => {
                self.finish(Outcome::ClientError {
                    code,
                    message: message.chars().take(CLIENT_MESSAGE_LEN_MAX).collect(),
                });
            }
            // RFC 1350 §7: anything else on a read transfer is dropped; the
            // client's retransmission or our timeout recovers.
            _ => self.stats.ignored_datagrams += 1,
        }
    }

    fn handle_ack(&mut self, now: Instant, block: u16) {
        if self.phase == Phase::Negotiating {
            if block == 0 {
                self.phase = Phase::Sending;
                self.send_oack = false;
                self.progress(now);
            } else {
                self.stats.ignored_datagrams += 1;
            }
            return;
        }
        let Some(acked) = self.resolve_ack(block) else {
            self.stats.ignored_datagrams += 1;
            return;
        };
        if acked + 1 == self.base {
            self.stats.duplicate_acks += 1;
            self.resend_on_duplicate();
            return;
        }
        if let Some((last, last_len)) = self.last.filter(|(last, _)| *last == acked) {
            // Every block before the last one is full.
            let bytes = (last - 1) * self.params.blksize as u64 + last_len as u64;
            self.finish(Outcome::Completed {
                bytes,
                blocks: last,
            });
            return;
        }
        if acked + 1 < self.next {
            // RFC 7440 §4: the client saw a gap; resend from after its ACK.
            self.stats.rewinds += 1;
            self.stats.data_resent += self.next - acked - 1;
        }
        self.base = acked + 1;
        self.next = self.base;
        self.blocks.forget_before(self.base);
        self.progress(now);
    }

    /// The absolute block an ACK's 16-bit number names, if it lies between
    /// the last acknowledged block and the last block sent.
    fn resolve_ack(&self, block: u16) -> Option<u64> {
        let low = self.base - 1;
        let distance = u64::from(block.wrapping_sub(low as u16));
        let acked = low + distance;
        (acked < self.next).then_some(acked)
    }

    /// A duplicate ACK never causes a send by itself (RFC 1123 §4.2.3.1:
    /// the sorcerer's apprentice needs a resend per duplicate). But once
    /// our timer has fired for this window, a duplicate says the client is
    /// still waiting for it (our resend was lost too, or its ACK was):
    /// resend at once rather than after the backed-off timeout, at most
    /// once per timeout, so duplicates can never multiply sends.
    fn resend_on_duplicate(&mut self) {
        if self.retries == 0 || self.resent_on_duplicate || self.phase != Phase::Sending {
            return;
        }
        self.resent_on_duplicate = true;
        self.stats.data_resent += self.next - self.base;
        self.next = self.base;
    }

    fn progress(&mut self, now: Instant) {
        // Karn's rule: a window that was resent gives no clean sample.
        if self.retries == 0 {
            self.rto.on_sample(now - self.window_started);
        }
        self.retries = 0;
        self.resent_on_duplicate = false;
        self.window_started = now;
        self.deadline = Some(now + self.rto.current());
    }

    /// The deadline from [`Transfer::poll_timeout`] has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline || self.phase == Phase::Done {
            return;
        }
        self.stats.timeouts += 1;
        if self.retries >= self.retries_max {
            let retries = self.retries;
            self.finish(Outcome::TimedOut { retries });
            return;
        }
        self.retries += 1;
        self.resent_on_duplicate = false;
        match self.phase {
            Phase::Negotiating => self.send_oack = true,
            Phase::Sending => {
                self.stats.data_resent += self.next - self.base;
                self.next = self.base;
            }
            Phase::Done => {}
        }
        self.rto.on_timeout();
        self.window_started = now;
        self.deadline = Some(now + self.rto.current());
    }

    /// Write the next datagram to send into `out`; `false` when there is
    /// nothing to send until the next input.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        if let Some((code, message)) = self.error_to_send.take() {
            wire::encode_error(out, code, message);
            return true;
        }
        match self.phase {
            Phase::Done => false,
            Phase::Negotiating => {
                if !self.send_oack {
                    return false;
                }
                self.send_oack = false;
                out.clear();
                out.extend_from_slice(&self.oack);
                true
            }
            Phase::Sending => self.transmit_data(out),
        }
    }

    fn transmit_data(&mut self, out: &mut Vec<u8>) -> bool {
        let window_end = self.base + u64::from(self.params.windowsize);
        let past_last = self.last.is_some_and(|(last, _)| self.next > last);
        if self.next >= window_end || past_last {
            return false;
        }
        let block = self.next;
        wire::encode_data_header(out, block as u16);
        match self.blocks.read_block(block, out) {
            Ok(len) => {
                if len < self.params.blksize {
                    self.last = Some((block, len));
                }
                self.next += 1;
                self.stats.data_sent += 1;
                self.stats.data_bytes_sent += len as u64;
                true
            }
            Err(err) => {
                let kind = err.kind();
                self.finish(Outcome::ReadFailed { kind });
                wire::encode_error(out, ErrorCode::NotDefined, "read error");
                true
            }
        }
    }

    /// Use a round-trip estimate from an earlier transfer with this client
    /// (before the first packet's timeout, which otherwise is the
    /// configured maximum).
    pub fn seed_rtt(&mut self, now: Instant, (srtt, rttvar): (Duration, Duration)) {
        self.rto.seed(srtt, rttvar);
        if self.retries == 0 {
            self.deadline = Some(now + self.rto.current());
        }
    }

    /// The round-trip estimate this transfer measured, if any.
    pub fn rtt_estimate(&self) -> Option<(Duration, Duration)> {
        self.rto.smoothed()
    }

    /// When [`Transfer::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// How the transfer ended, once it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Ended, and nothing left to send.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Done && self.error_to_send.is_none()
    }

    pub fn stats(&self) -> TransferStats {
        self.stats
    }

    pub fn params(&self) -> Negotiated {
        self.params
    }

    /// Abort with an error to the client (server shutdown).
    pub fn abort(&mut self, code: ErrorCode, message: &'static str) {
        if self.phase != Phase::Done {
            self.error_to_send = Some((code, message));
            self.finish(Outcome::Aborted);
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        assert!(self.outcome.is_none(), "a transfer ends once");
        self.phase = Phase::Done;
        self.deadline = None;
        self.outcome = Some(outcome);
    }
}
