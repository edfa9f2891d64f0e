//! Retransmission timeout of one transfer. A client that negotiated the
//! RFC 2349 timeout option gets exactly that; otherwise the timeout adapts
//! to the measured round trip as TCP's does (RFC 6298: smoothed RTT plus
//! four deviations, Karn's rule, doubling back-off), between a floor and the
//! configured default. A window whose tail a client's small receive buffer
//! dropped then costs a few round trips instead of a whole second; a
//! retransmission that proves spurious only produces duplicate ACKs, which
//! never trigger a send.

use std::time::Duration;

/// The estimator (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rto {
    current: Duration,
    min: Duration,
    max: Duration,
    fixed: bool,
    smoothed: Option<(Duration, Duration)>,
}

impl Rto {
    /// A timeout fixed at `timeout` (negotiated by the client).
    pub fn fixed(timeout: Duration) -> Rto {
        Rto {
            current: timeout,
            min: timeout,
            max: timeout,
            fixed: true,
            smoothed: None,
        }
    }

    /// An adaptive timeout starting at `max` until a round trip is measured.
    pub fn adaptive(min: Duration, max: Duration) -> Rto {
        let min = min.min(max);
        Rto {
            current: max,
            min,
            max,
            fixed: false,
            smoothed: None,
        }
    }

    pub fn current(&self) -> Duration {
        self.current
    }

    /// A round trip measured on a window that was sent once (Karn's rule is
    /// the caller's: no sample from a retransmitted window).
    pub fn on_sample(&mut self, rtt: Duration) {
        if self.fixed {
            return;
        }
        let (srtt, rttvar) = match self.smoothed {
            None => (rtt, rtt / 2),
            Some((srtt, rttvar)) => {
                let deviation = srtt.abs_diff(rtt);
                (srtt * 7 / 8 + rtt / 8, rttvar * 3 / 4 + deviation / 4)
            }
        };
        self.smoothed = Some((srtt, rttvar));
        self.current = (srtt + rttvar * 4).clamp(self.min, self.max);
    }

    /// The smoothed round trip and its variation, once measured.
    pub fn smoothed(&self) -> Option<(Duration, Duration)> {
        self.smoothed
    }

    /// Start from an estimate measured earlier (a previous transfer with the
    /// same client) instead of the configured maximum; RFC 6298 §2.1 allows
    /// a cached estimate. A fixed timeout ignores it.
    pub fn seed(&mut self, srtt: Duration, rttvar: Duration) {
        if self.fixed {
            return;
        }
        self.smoothed = Some((srtt, rttvar));
        self.current = (srtt + rttvar * 4).clamp(self.min, self.max);
    }

    /// A timeout fired: back off.
    pub fn on_timeout(&mut self) {
        self.current = (self.current * 2).clamp(self.min, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn adaptive_timeout_follows_the_round_trip_within_bounds() {
        let mut rto = Rto::adaptive(20 * MS, 1000 * MS);
        assert_eq!(rto.current(), 1000 * MS);
        rto.on_sample(2 * MS);
        assert_eq!(rto.current(), 20 * MS);
        for _ in 0..20 {
            rto.on_sample(100 * MS);
        }
        assert!(
            rto.current() > 100 * MS && rto.current() < 400 * MS,
            "{:?}",
            rto.current()
        );
        rto.on_timeout();
        rto.on_timeout();
        rto.on_timeout();
        assert_eq!(rto.current(), 1000 * MS);
    }

    #[test]
    fn a_seeded_estimate_replaces_the_initial_maximum() {
        let mut rto = Rto::adaptive(20 * MS, 1000 * MS);
        rto.seed(30 * MS, 10 * MS);
        assert_eq!(rto.current(), 70 * MS);
        assert_eq!(rto.smoothed(), Some((30 * MS, 10 * MS)));
        let mut fixed = Rto::fixed(3000 * MS);
        fixed.seed(MS, MS);
        assert_eq!((fixed.current(), fixed.smoothed()), (3000 * MS, None));
    }

    #[test]
    fn negotiated_timeout_never_moves() {
        let mut rto = Rto::fixed(3000 * MS);
        rto.on_sample(MS);
        rto.on_timeout();
        assert_eq!(rto.current(), 3000 * MS);
    }
}
