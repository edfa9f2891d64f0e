//! Configuration: the serde form an operator writes (`[tftp]`), checked by
//! a pure [`TftpConfig::validate`] into the [`Config`] the server runs with.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use crate::options::Limits;
use crate::wire::{BLKSIZE_MAX, BLKSIZE_MIN};

/// IPv4 (20) + UDP (8) + TFTP DATA (4) header bytes inside one MTU.
pub const HEADERS_LEN: u32 = 32;
/// Upper bound of `busy_poll_tries`: a few milliseconds of polling at most.
pub const BUSY_POLL_TRIES_MAX: u32 = 10_000;

/// The operator's form; every field has a default.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TftpConfig {
    /// Address the request listener binds (replies leave from the address
    /// each request was sent to, whatever this is).
    pub bind: Ipv4Addr,
    pub port: u16,
    /// MTU of the boot network; blksize is capped so DATA is not fragmented.
    pub mtu: u32,
    /// Overrides the MTU-derived blksize cap.
    pub blksize_max: Option<u32>,
    pub windowsize_max: u16,
    /// Receive-buffer bytes a window may cost the client (Linux accounting,
    /// see `options::block_truesize`); larger windowsizes are lowered in
    /// the OACK. The default stays under Linux's default 208 KiB socket
    /// buffer; lower it for firmware with smaller buffers.
    pub window_bytes_max: u32,
    /// Retransmission timeout when a client does not ask for one.
    pub timeout_ms: u64,
    /// Floor of the retransmission timeout adapted to the measured round
    /// trip (clients that negotiate `timeout` get exactly theirs).
    pub rto_min_ms: u64,
    pub retries_max: u32,
    pub transfers_max: usize,
    pub transfers_per_client_max: usize,
    /// Non-blocking receives (with a sched_yield between them) a transfer
    /// makes for the ACK it expects before it sleeps on the socket; 0
    /// turns busy-polling off. Lock-step TFTP pays a sleep and a wake-up
    /// per block otherwise; a transfer whose ACKs keep missing the poll
    /// stops polling for a while, so a slow client costs little CPU, and
    /// only a lone transfer polls (with more, the runtime has other work).
    pub busy_poll_tries: u32,
}

impl Default for TftpConfig {
    fn default() -> TftpConfig {
        TftpConfig {
            bind: Ipv4Addr::UNSPECIFIED,
            port: 69,
            mtu: 1500,
            blksize_max: None,
            windowsize_max: 64,
            window_bytes_max: 192 * 1024,
            timeout_ms: 1000,
            rto_min_ms: 50,
            retries_max: 5,
            transfers_max: 256,
            transfers_per_client_max: 4,
            busy_poll_tries: 200,
        }
    }
}

/// What the server runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub limits: Limits,
    pub retries_max: u32,
    pub transfers_max: usize,
    pub transfers_per_client_max: usize,
    pub busy_poll_tries: u32,
}

/// A configuration value out of range; `key` is the path in the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {value} is outside {min}..={max}")]
pub struct ConfigError {
    pub key: &'static str,
    pub value: u64,
    pub min: u64,
    pub max: u64,
}

fn check(key: &'static str, value: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError {
            key,
            value,
            min,
            max,
        })
    }
}

impl TftpConfig {
    pub fn validate(&self) -> Result<Config, ConfigError> {
        // 576 is the smallest MTU every IPv4 host must accept (RFC 791).
        let mtu = check("tftp.mtu", u64::from(self.mtu), 576, 65_535)?;
        let from_mtu = (mtu - u64::from(HEADERS_LEN)).min(BLKSIZE_MAX as u64);
        let blksize_max = match self.blksize_max {
            Some(value) => check(
                "tftp.blksize_max",
                u64::from(value),
                BLKSIZE_MIN as u64,
                BLKSIZE_MAX as u64,
            )?,
            None => from_mtu,
        };
        let windowsize_max = check(
            "tftp.windowsize_max",
            u64::from(self.windowsize_max),
            1,
            1024,
        )?;
        let window_bytes_max = check(
            "tftp.window_bytes_max",
            u64::from(self.window_bytes_max),
            4096,
            64 * 1024 * 1024,
        )?;
        let timeout_ms = check("tftp.timeout_ms", self.timeout_ms, 10, 255_000)?;
        let rto_min_ms = check("tftp.rto_min_ms", self.rto_min_ms, 1, timeout_ms)?;
        let retries_max = check("tftp.retries_max", u64::from(self.retries_max), 0, 100)?;
        let transfers_max = check("tftp.transfers_max", self.transfers_max as u64, 1, 65_536)?;
        let per_client = check(
            "tftp.transfers_per_client_max",
            self.transfers_per_client_max as u64,
            1,
            transfers_max,
        )?;
        let busy_poll_tries = check(
            "tftp.busy_poll_tries",
            u64::from(self.busy_poll_tries),
            0,
            u64::from(BUSY_POLL_TRIES_MAX),
        )?;
        Ok(Config {
            listen: SocketAddr::from((self.bind, self.port)),
            limits: Limits {
                blksize_max: blksize_max as usize,
                windowsize_max: windowsize_max as u16,
                window_bytes_max: window_bytes_max as usize,
                timeout_default: Duration::from_millis(timeout_ms),
                rto_min: Duration::from_millis(rto_min_ms),
            },
            retries_max: retries_max as u32,
            transfers_max: transfers_max as usize,
            transfers_per_client_max: per_client as usize,
            busy_poll_tries: busy_poll_tries as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_1468_for_a_1500_mtu() {
        let config = TftpConfig::default().validate().expect("valid");
        assert_eq!(config.limits.blksize_max, 1468);
        assert_eq!(config.listen, SocketAddr::from(([0, 0, 0, 0], 69)));
        let jumbo = TftpConfig {
            mtu: 9000,
            ..TftpConfig::default()
        };
        assert_eq!(jumbo.validate().expect("valid").limits.blksize_max, 8968);
    }

    #[test]
    fn parses_toml_and_rejects_unknown_keys() {
        let parsed: TftpConfig =
            toml::from_str("port = 6969\nmtu = 9000\nblksize_max = 8192\n").expect("parses");
        let config = parsed.validate().expect("valid");
        assert_eq!(config.listen.port(), 6969);
        assert_eq!(config.limits.blksize_max, 8192);
        let unknown = toml::from_str::<TftpConfig>("prot = 69\n");
        assert!(unknown.is_err_and(|err| err.to_string().contains("prot")));
    }

    #[test]
    fn errors_name_the_key() {
        let bad = TftpConfig {
            blksize_max: Some(4),
            ..TftpConfig::default()
        };
        assert_eq!(
            bad.validate().map_err(|err| err.to_string()),
            Err("tftp.blksize_max: 4 is outside 8..=65464".to_string())
        );
        let per_client = TftpConfig {
            transfers_max: 2,
            transfers_per_client_max: 3,
            ..TftpConfig::default()
        };
        assert_eq!(
            per_client.validate().map_err(|err| err.key),
            Err("tftp.transfers_per_client_max")
        );
    }
}
