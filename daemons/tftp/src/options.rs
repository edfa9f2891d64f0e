//! Option negotiation for read requests: RFC 2347 (the OACK carries only
//! options the client asked for and the server accepts), RFC 2348 blksize,
//! RFC 2349 timeout and tsize, RFC 7440 windowsize.
//!
//! Unknown options, malformed values and values outside an RFC's range are
//! left out of the OACK, which RFC 2347 §3 lets a server do: the client then
//! uses the default for that option.

use std::time::Duration;

use crate::wire::{Mode, RawOption, BLKSIZE_DEFAULT, BLKSIZE_MAX, BLKSIZE_MIN};

/// RFC 2349 §1: the timeout option is 1..=255 seconds.
pub const TIMEOUT_SECS_MIN: u64 = 1;
pub const TIMEOUT_SECS_MAX: u64 = 255;
/// RFC 7440 §2: windowsize is 1..=65535 blocks.
pub const WINDOWSIZE_MAX: u16 = u16::MAX;
/// IPv4 (20) + UDP (8) + TFTP DATA (4) header bytes of one DATA datagram.
const DATA_HEADERS_LEN: usize = 32;
/// What Linux charges a socket's receive buffer beyond the buffer holding
/// a datagram (struct sk_buff and skb_shared_info, rounded up).
const SKB_OVERHEAD: usize = 768;

/// Receive-buffer bytes one DATA datagram of `blksize` costs a Linux
/// client: the kernel charges its "truesize", the power-of-two allocation
/// holding the packet plus the skb bookkeeping, not the payload. Measured
/// on loopback with atftp: blksize 8192 costs ~16.6 KiB, so the default
/// 212992-byte buffer holds 12 such blocks and a 13th is dropped.
pub fn block_truesize(blksize: usize) -> usize {
    (blksize + DATA_HEADERS_LEN).next_power_of_two() + SKB_OVERHEAD
}

/// Server-side ceilings that a client request is capped to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest blksize granted (MTU minus IP, UDP and TFTP headers).
    pub blksize_max: usize,
    /// Largest windowsize granted.
    pub windowsize_max: u16,
    /// Largest window in receive-buffer bytes (see [`block_truesize`]): a
    /// windowsize whose blocks would overflow the client's socket buffer
    /// is lowered in the OACK (RFC 7440 §4 lets the server answer with a
    /// smaller value), since a window that overruns the buffer loses its
    /// tail on every round and ends in timeouts.
    pub window_bytes_max: usize,
    /// Retransmission timeout when the client does not ask for one, and
    /// the ceiling of the adaptive timeout.
    pub timeout_default: Duration,
    /// Floor of the adaptive retransmission timeout.
    pub rto_min: Duration,
}

/// What one transfer runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: usize,
    pub windowsize: u16,
    pub timeout: Duration,
    /// The client asked for `timeout` (RFC 2349): retransmit at exactly
    /// that interval instead of adapting to the round trip.
    pub timeout_fixed: bool,
    pub rto_min: Duration,
}

/// The negotiated parameters and the OACK to send, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiation {
    pub params: Negotiated,
    /// (name as the client spelled it, value); empty means no OACK and the
    /// transfer starts with DATA 1 (RFC 2347 §3).
    pub oack: Vec<(String, u64)>,
}

/// Negotiate the options of a read request for a file of `size` bytes.
pub fn negotiate(options: &[RawOption<'_>], mode: Mode, size: u64, limits: &Limits) -> Negotiation {
    let mut params = Negotiated {
        blksize: BLKSIZE_DEFAULT,
        windowsize: 1,
        timeout: limits.timeout_default,
        timeout_fixed: false,
        rto_min: limits.rto_min,
    };
    let mut oack: Vec<(String, u64)> = Vec::new();
    for option in options {
        let already = oack
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case(option.name));
        if already {
            continue;
        }
        let value = match option.value.trim().parse::<u64>() {
            Ok(value) => value,
            Err(_) => continue,
        };
        let granted = grant(option.name, value, mode, size, limits, &mut params);
        if let Some(granted) = granted {
            oack.push((option.name.to_string(), granted));
        }
    }
    // blksize may come after windowsize in the request: cap once both are
    // known.
    let fits = (limits.window_bytes_max / block_truesize(params.blksize)).max(1);
    let fits = u16::try_from(fits).unwrap_or(u16::MAX);
    if params.windowsize > fits {
        params.windowsize = fits;
        for (name, value) in &mut oack {
            if name.eq_ignore_ascii_case("windowsize") {
                *value = u64::from(fits);
            }
        }
    }
    Negotiation { params, oack }
}

fn grant(
    name: &str,
    value: u64,
    mode: Mode,
    size: u64,
    limits: &Limits,
    params: &mut Negotiated,
) -> Option<u64> {
    if name.eq_ignore_ascii_case("blksize") {
        if value < BLKSIZE_MIN as u64 {
            return None;
        }
        let cap = limits.blksize_max.clamp(BLKSIZE_MIN, BLKSIZE_MAX) as u64;
        let granted = value.min(cap);
        params.blksize = usize::try_from(granted).ok()?;
        Some(granted)
    } else if name.eq_ignore_ascii_case("windowsize") {
        if value == 0 {
            return None;
        }
        let granted = value.min(u64::from(limits.windowsize_max.max(1)));
        params.windowsize = u16::try_from(granted).ok()?;
        Some(granted)
    } else if name.eq_ignore_ascii_case("timeout") {
        if !(TIMEOUT_SECS_MIN..=TIMEOUT_SECS_MAX).contains(&value) {
            return None;
        }
        params.timeout = Duration::from_secs(value);
        params.timeout_fixed = true;
        Some(value)
    } else if name.eq_ignore_ascii_case("tsize") {
        // The netascii size is only known after translating the whole file;
        // like tftpd-hpa, answer tsize in octet mode only.
        (mode == Mode::Octet).then_some(size)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        blksize_max: 1468,
        windowsize_max: 64,
        window_bytes_max: 192 * 1024,
        timeout_default: Duration::from_secs(1),
        rto_min: Duration::from_millis(20),
    };

    fn opts<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<RawOption<'a>> {
        pairs
            .iter()
            .map(|(name, value)| RawOption { name, value })
            .collect()
    }

    #[test]
    fn no_options_means_defaults_and_no_oack() {
        let n = negotiate(&[], Mode::Octet, 10, &LIMITS);
        assert!(n.oack.is_empty());
        assert_eq!(n.params.blksize, 512);
        assert_eq!(n.params.windowsize, 1);
        assert_eq!(n.params.timeout, Duration::from_secs(1));
    }

    #[test]
    fn unknown_and_bad_options_are_left_out() {
        let n = negotiate(
            &opts(&[
                ("multicast", ""),
                ("blksize", "abc"),
                ("timeout", "0"),
                ("windowsize", "0"),
            ]),
            Mode::Octet,
            10,
            &LIMITS,
        );
        assert!(n.oack.is_empty());
        assert_eq!(n.params.blksize, 512);
    }

    #[test]
    fn caps_apply_and_names_keep_the_client_spelling() {
        let n = negotiate(
            &opts(&[
                ("BLKSIZE", "65464"),
                ("WindowSize", "200"),
                ("tsize", "0"),
                ("timeout", "3"),
            ]),
            Mode::Octet,
            4096,
            &LIMITS,
        );
        assert_eq!(
            n.oack,
            vec![
                ("BLKSIZE".to_string(), 1468),
                ("WindowSize".to_string(), 64),
                ("tsize".to_string(), 4096),
                ("timeout".to_string(), 3),
            ]
        );
        assert_eq!(n.params.blksize, 1468);
        assert_eq!(n.params.windowsize, 64);
        assert_eq!(n.params.timeout, Duration::from_secs(3));
    }

    #[test]
    fn a_window_is_capped_to_what_a_default_socket_buffer_holds() {
        let limits = Limits {
            blksize_max: 65464,
            ..LIMITS
        };
        // 1468-byte blocks: 64 x 2816 bytes fit in 192 KiB.
        let n = negotiate(
            &opts(&[("windowsize", "64"), ("blksize", "1468")]),
            Mode::Octet,
            1,
            &limits,
        );
        assert_eq!(n.params.windowsize, 64);
        // 8192-byte blocks cost 17152 bytes each: 11 fit, whichever option
        // comes first, and the OACK says so.
        for options in [
            [("windowsize", "16"), ("blksize", "8192")],
            [("blksize", "8192"), ("windowsize", "16")],
        ] {
            let n = negotiate(&opts(&options), Mode::Octet, 1, &limits);
            assert_eq!(n.params.windowsize, 11);
            assert!(n.oack.contains(&("windowsize".to_string(), 11)));
            assert!(n.oack.contains(&("blksize".to_string(), 8192)));
        }
        // A block bigger than the budget still gets a window of one.
        let tight = Limits {
            window_bytes_max: 16 * 1024,
            ..limits
        };
        let n = negotiate(
            &opts(&[("blksize", "65464"), ("windowsize", "4")]),
            Mode::Octet,
            1,
            &tight,
        );
        assert_eq!(n.params.windowsize, 1);
        assert!(n.oack.contains(&("windowsize".to_string(), 1)));
    }

    #[test]
    fn first_of_duplicate_options_wins() {
        let n = negotiate(
            &opts(&[("blksize", "1024"), ("blksize", "8")]),
            Mode::Octet,
            1,
            &LIMITS,
        );
        assert_eq!(n.oack, vec![("blksize".to_string(), 1024)]);
    }

    #[test]
    fn tsize_is_not_offered_in_netascii() {
        let n = negotiate(&opts(&[("tsize", "0")]), Mode::Netascii, 10, &LIMITS);
        assert!(n.oack.is_empty());
    }
}
