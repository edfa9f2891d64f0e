//! Server configuration: serde structs (unknown keys rejected) and a pure
//! `validate()` whose errors name the key path.

use std::net::Ipv4Addr;

use serde::Deserialize;

/// Largest pool we accept: allocation scans the range, so its size bounds
/// the work one DISCOVER can cause.
pub const POOL_ADDRESSES_MAX: u32 = 65_536;
/// Longest rendered boot file that still fits BOOTP `file` with its NUL.
pub const BOOT_FILE_BYTES_MAX: usize = 127;
/// Entries in the architecture -> boot file table.
pub const ARCH_FILES_MAX: usize = 64;
/// Longest gather window: beyond this the window only adds latency (a
/// write per window is already rare) and eats into `ack_delay_ms_max`.
pub const LEASE_GATHER_MS_MAX: u64 = 1000;
/// Longest receive pause: clients retransmit after about a second.
pub const RECEIVE_COALESCE_MS_MAX: u64 = 100;
/// Largest receive buffer asked for (kernel memory per socket).
pub const RECEIVE_BUFFER_BYTES_MAX: usize = 64 << 20;

/// How the server answers.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Addresses and boot options (the normal case).
    #[default]
    Full,
    /// proxyDHCP (PXE spec §2.2.5): another server hands out addresses; we
    /// only add boot options, on port 67 (OFFER without yiaddr) and 4011.
    Proxy,
}

/// One row of the architecture table (RFC 4578 §2.1 option 93 values).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ArchFile {
    pub arch: u16,
    pub file: String,
}

/// What PXE and iPXE clients are told to load.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BootConfig {
    /// Boot file by client architecture (option 93).
    pub arch_files: Vec<ArchFile>,
    /// For clients that send no option 93 (plain DHCP clients, old ROMs).
    pub default_file: String,
    /// Handed to iPXE instead of iPXE itself, so it never chainloads in a
    /// loop. Placeholders: `{vip}`, `{mac}` (aa-bb-cc-dd-ee-ff), `{name}`,
    /// `{ip}`, `{image}`.
    pub ipxe_script: String,
    /// Option 17; same placeholders. Empty: not sent.
    pub root_path: String,
    /// Send option 175.176 (no-pxedhcp) = 1 to iPXE, which otherwise waits
    /// ~3 s for a proxyDHCP offer.
    pub ipxe_no_pxedhcp: bool,
}

impl Default for BootConfig {
    fn default() -> BootConfig {
        BootConfig {
            arch_files: vec![
                ArchFile {
                    arch: 0,
                    file: "undionly.kpxe".into(),
                },
                ArchFile {
                    arch: 7,
                    file: "snponly.efi".into(),
                },
                ArchFile {
                    arch: 9,
                    file: "snponly.efi".into(),
                },
            ],
            default_file: "undionly.kpxe".into(),
            ipxe_script: "tftp://{vip}/ipxe/clients/{mac}.ipxe".into(),
            root_path: "{vip}:/".into(),
            ipxe_no_pxedhcp: true,
        }
    }
}

/// The optional dynamic pool.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u32,
    /// How long an OFFER keeps its address from other clients.
    #[serde(default = "default_offer_hold_secs")]
    pub offer_hold_secs: u32,
    /// How long a DECLINEd address stays out of the pool (RFC 2131 §4.3.3).
    #[serde(default = "default_decline_quarantine_secs")]
    pub decline_quarantine_secs: u32,
}

fn default_lease_secs() -> u32 {
    3600
}
fn default_offer_hold_secs() -> u32 {
    60
}
fn default_decline_quarantine_secs() -> u32 {
    600
}

/// Every bound the server checks.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Entries in the lease table (offered, bound, released, quarantined).
    pub leases_max: usize,
    /// ACKs held until their lease write is durable.
    pub pending_acks_max: usize,
    /// Records in one group-committed lease write.
    pub lease_records_per_write_max: usize,
    /// Lease writes handed out and not yet durable.
    pub lease_writes_in_flight_max: usize,
    /// Longest a lease record waits for others to share its journal write
    /// (group commit). A write starts when `lease_gather_records` are
    /// waiting or the oldest has waited this long. Every journal write costs an fdatasync on both nodes and a
    /// replication round trip, whatever its size, so gathering trades a few
    /// milliseconds of ACK latency (clients wait seconds) for far fewer
    /// writes. 0: write as soon as no other write is in flight.
    pub lease_gather_ms: u64,
    /// After a datagram wakes the server, how long the driver leaves the
    /// socket alone before taking everything that arrived meanwhile in one
    /// go (until a pause finds nothing: then it waits for the next datagram
    /// as usual). Under load each wakeup (a context switch, the dominant
    /// cost per datagram) then serves many datagrams, for at most this much
    /// added reply latency. 0: one wakeup per datagram.
    pub receive_coalesce_ms: u64,
    /// Receive buffer asked for the DHCP socket (SO_RCVBUF; the kernel caps
    /// it at `net.core.rmem_max`): it holds what arrives during a receive
    /// pause or a burst of replies being sent. 0: the kernel's default.
    pub receive_buffer_bytes: usize,
    /// A batch this large is written without waiting out its gather window.
    /// It bounds the burst of ACKs one durable write releases (a relay or
    /// client with a default socket buffer drops a burst of hundreds)
    /// without bounding throughput: records that arrive while a write is in
    /// flight all join the next one, up to `lease_records_per_write_max`.
    pub lease_gather_records: usize,
    /// Replies queued for the driver.
    pub transmits_max: usize,
    /// Largest datagram decoded.
    pub datagram_bytes_max: usize,
    /// Longest a pool ACK may wait for its lease write. The lease is held
    /// this much longer than the client is told, so a late ACK can never
    /// make the client outlive the server's record; an ACK whose write took
    /// longer is dropped (the client asks again).
    pub ack_delay_ms_max: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            leases_max: 65_536,
            pending_acks_max: 4096,
            lease_records_per_write_max: 1024,
            lease_writes_in_flight_max: 1,
            lease_gather_ms: 10,
            receive_coalesce_ms: 2,
            receive_buffer_bytes: 1 << 20,
            lease_gather_records: 32,
            transmits_max: 4096,
            datagram_bytes_max: 1500,
            ack_delay_ms_max: 5000,
        }
    }
}

/// The DHCP service of one node.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Server identifier (option 54), next-server (siaddr) and TFTP server:
    /// the VIP, so renewals and boots follow a failover.
    pub vip: Ipv4Addr,
    pub subnet_mask: Ipv4Addr,
    #[serde(default)]
    pub routers: Vec<Ipv4Addr>,
    #[serde(default)]
    pub dns_servers: Vec<Ipv4Addr>,
    #[serde(default)]
    pub domain_name: Option<String>,
    /// Lease time given with reservations (no journal write, so renewals are
    /// cheap; long is fine).
    #[serde(default = "default_reservation_lease_secs")]
    pub reservation_lease_secs: u32,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub pool: Option<PoolConfig>,
    #[serde(default)]
    pub boot: BootConfig,
    #[serde(default)]
    pub limits: Limits,
}

fn default_reservation_lease_secs() -> u32 {
    86_400
}

/// A configuration value that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("dhcp.subnet_mask: {mask} is not a contiguous netmask")]
    BadMask { mask: Ipv4Addr },
    #[error("dhcp.pool.range: start {start} is after end {end}")]
    PoolReversed { start: Ipv4Addr, end: Ipv4Addr },
    #[error("dhcp.pool.range: {size} addresses exceed the maximum of {POOL_ADDRESSES_MAX}")]
    PoolTooLarge { size: u64 },
    #[error("dhcp.pool.range: {address} is outside the subnet of the VIP {vip}")]
    PoolOutsideSubnet { address: Ipv4Addr, vip: Ipv4Addr },
    #[error("dhcp.pool.lease_secs: must be at least 60, got {lease_secs}")]
    LeaseTooShort { lease_secs: u32 },
    #[error("dhcp.boot.{key}: {len} bytes exceed {BOOT_FILE_BYTES_MAX}")]
    BootFileTooLong { key: String, len: usize },
    #[error("dhcp.boot.arch_files: {count} entries exceed {ARCH_FILES_MAX}")]
    TooManyArchFiles { count: usize },
    #[error("dhcp.limits.{key}: must be at least 1")]
    ZeroLimit { key: &'static str },
    #[error(
        "dhcp.limits.lease_gather_ms: {lease_gather_ms} exceeds {LEASE_GATHER_MS_MAX}, \
         or is not below ack_delay_ms_max ({ack_delay_ms_max})"
    )]
    GatherTooLong {
        lease_gather_ms: u64,
        ack_delay_ms_max: u64,
    },
    #[error(
        "dhcp.limits.receive_coalesce_ms: {receive_coalesce_ms} exceeds {RECEIVE_COALESCE_MS_MAX}"
    )]
    CoalesceTooLong { receive_coalesce_ms: u64 },
    #[error("dhcp.limits.receive_buffer_bytes: {receive_buffer_bytes} exceeds {RECEIVE_BUFFER_BYTES_MAX}")]
    ReceiveBufferTooLarge { receive_buffer_bytes: usize },
}

impl Config {
    /// A config with defaults for everything but the addresses.
    pub fn new(vip: Ipv4Addr, subnet_mask: Ipv4Addr) -> Config {
        Config {
            vip,
            subnet_mask,
            routers: Vec::new(),
            dns_servers: Vec::new(),
            domain_name: None,
            reservation_lease_secs: default_reservation_lease_secs(),
            mode: Mode::Full,
            pool: None,
            boot: BootConfig::default(),
            limits: Limits::default(),
        }
    }

    /// Check everything that can be checked without traffic.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mask = u32::from(self.subnet_mask);
        if mask.leading_ones() + mask.trailing_zeros() != 32 {
            return Err(ConfigError::BadMask {
                mask: self.subnet_mask,
            });
        }
        if let Some(pool) = &self.pool {
            self.validate_pool(pool)?;
        }
        self.validate_boot()?;
        let limits = &self.limits;
        for (key, value) in [
            ("leases_max", limits.leases_max),
            ("pending_acks_max", limits.pending_acks_max),
            (
                "lease_records_per_write_max",
                limits.lease_records_per_write_max,
            ),
            (
                "lease_writes_in_flight_max",
                limits.lease_writes_in_flight_max,
            ),
            ("transmits_max", limits.transmits_max),
            ("lease_gather_records", limits.lease_gather_records),
            ("datagram_bytes_max", limits.datagram_bytes_max),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit { key });
            }
        }
        if limits.lease_gather_ms > LEASE_GATHER_MS_MAX
            || limits.lease_gather_ms >= limits.ack_delay_ms_max
        {
            return Err(ConfigError::GatherTooLong {
                lease_gather_ms: limits.lease_gather_ms,
                ack_delay_ms_max: limits.ack_delay_ms_max,
            });
        }
        if limits.receive_buffer_bytes > RECEIVE_BUFFER_BYTES_MAX {
            return Err(ConfigError::ReceiveBufferTooLarge {
                receive_buffer_bytes: limits.receive_buffer_bytes,
            });
        }
        if limits.receive_coalesce_ms > RECEIVE_COALESCE_MS_MAX {
            return Err(ConfigError::CoalesceTooLong {
                receive_coalesce_ms: limits.receive_coalesce_ms,
            });
        }
        Ok(())
    }

    fn validate_pool(&self, pool: &PoolConfig) -> Result<(), ConfigError> {
        let (start, end) = (u32::from(pool.start), u32::from(pool.end));
        if start > end {
            return Err(ConfigError::PoolReversed {
                start: pool.start,
                end: pool.end,
            });
        }
        let size = u64::from(end - start) + 1;
        if size > u64::from(POOL_ADDRESSES_MAX) {
            return Err(ConfigError::PoolTooLarge { size });
        }
        let mask = u32::from(self.subnet_mask);
        for address in [pool.start, pool.end] {
            if u32::from(address) & mask != u32::from(self.vip) & mask {
                return Err(ConfigError::PoolOutsideSubnet {
                    address,
                    vip: self.vip,
                });
            }
        }
        if pool.lease_secs < 60 {
            return Err(ConfigError::LeaseTooShort {
                lease_secs: pool.lease_secs,
            });
        }
        Ok(())
    }

    fn validate_boot(&self) -> Result<(), ConfigError> {
        let boot = &self.boot;
        if boot.arch_files.len() > ARCH_FILES_MAX {
            return Err(ConfigError::TooManyArchFiles {
                count: boot.arch_files.len(),
            });
        }
        let mut named: Vec<(String, usize)> = boot
            .arch_files
            .iter()
            .enumerate()
            .map(|(i, row)| (format!("arch_files[{i}].file"), row.file.len()))
            .collect();
        named.push(("default_file".into(), boot.default_file.len()));
        for (key, len) in named {
            if len > BOOT_FILE_BYTES_MAX {
                return Err(ConfigError::BootFileTooLong { key, len });
            }
        }
        Ok(())
    }

    /// The network address of the VIP's subnet.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.vip) & u32::from(self.subnet_mask))
    }

    /// The subnet broadcast address (option 28).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.vip) | !u32::from(self.subnet_mask))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
vip = "10.0.0.10"
subnet_mask = "255.255.255.0"
routers = ["10.0.0.1"]
mode = "full"

[pool]
start = "10.0.0.100"
end = "10.0.0.199"
lease_secs = 600

[boot]
ipxe_script = "http://{vip}/boot/{mac}.ipxe"
arch_files = [{ arch = 0, file = "undionly.kpxe" }, { arch = 7, file = "ipxe.efi" }]

[limits]
leases_max = 1000
"#;

    #[test]
    fn example_parses_and_validates() {
        let config: Config = toml::from_str(EXAMPLE).expect("parses");
        config.validate().expect("valid");
        assert_eq!(config.limits.leases_max, 1000);
        assert_eq!(config.limits.pending_acks_max, 4096);
        assert_eq!(config.boot.arch_files[1].file, "ipxe.efi");
        assert!(config.boot.ipxe_no_pxedhcp);
    }

    #[test]
    fn unknown_key_is_rejected() {
        let text = format!("{EXAMPLE}\nlease_magic = 3\n");
        let error = toml::from_str::<Config>(&text).expect_err("unknown key");
        assert!(error.to_string().contains("lease_magic"), "{error}");
    }

    #[test]
    fn reversed_pool_names_the_key() {
        let mut config: Config = toml::from_str(EXAMPLE).expect("parses");
        if let Some(pool) = config.pool.as_mut() {
            pool.start = Ipv4Addr::new(10, 0, 0, 200);
        }
        let error = config.validate().expect_err("reversed");
        assert_eq!(
            error.to_string(),
            "dhcp.pool.range: start 10.0.0.200 is after end 10.0.0.199"
        );
    }

    #[test]
    fn bad_mask_and_zero_limit_are_rejected() {
        let mut config = Config::new(Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(255, 0, 255, 0));
        assert!(matches!(
            config.validate(),
            Err(ConfigError::BadMask { .. })
        ));
        config.subnet_mask = Ipv4Addr::new(255, 255, 255, 0);
        config.limits.pending_acks_max = 0;
        assert_eq!(
            config.validate(),
            Err(ConfigError::ZeroLimit {
                key: "pending_acks_max"
            })
        );
    }

    #[test]
    fn gather_window_is_bounded_and_named() {
        let mut config: Config = toml::from_str(EXAMPLE).expect("parses");
        assert_eq!(config.limits.lease_gather_ms, 10, "default");
        config.limits.lease_gather_ms = 0;
        config.validate().expect("no window is valid");
        config.limits.lease_gather_ms = LEASE_GATHER_MS_MAX + 1;
        let error = config.validate().expect_err("too long");
        assert!(
            error
                .to_string()
                .starts_with("dhcp.limits.lease_gather_ms: 1001 exceeds 1000"),
            "{error}"
        );
        config.limits.lease_gather_ms = 500;
        config.limits.ack_delay_ms_max = 500;
        let error = config.validate().expect_err("as long as the ACK bound");
        assert!(
            error.to_string().contains("ack_delay_ms_max (500)"),
            "{error}"
        );
        let text = format!("{EXAMPLE}lease_gather_ms = 4\n");
        let config: Config = toml::from_str(&text).expect("parses");
        assert_eq!(config.limits.lease_gather_ms, 4);
    }

    #[test]
    fn receive_pause_is_bounded_and_named() {
        let mut config: Config = toml::from_str(EXAMPLE).expect("parses");
        assert_eq!(config.limits.receive_coalesce_ms, 2, "default");
        config.limits.receive_coalesce_ms = RECEIVE_COALESCE_MS_MAX;
        config.validate().expect("at the bound");
        config.limits.receive_coalesce_ms = RECEIVE_COALESCE_MS_MAX + 1;
        assert_eq!(
            config.validate().map_err(|e| e.to_string()),
            Err("dhcp.limits.receive_coalesce_ms: 101 exceeds 100".to_owned())
        );
        config.limits.receive_coalesce_ms = 2;
        config.limits.receive_buffer_bytes = RECEIVE_BUFFER_BYTES_MAX + 1;
        assert!(config.validate().is_err_and(|e| e
            .to_string()
            .starts_with("dhcp.limits.receive_buffer_bytes: ")));
        config.limits.receive_buffer_bytes = 0;
        config.validate().expect("0 keeps the kernel's default");
        config.limits.lease_gather_records = 0;
        assert_eq!(
            config.validate(),
            Err(ConfigError::ZeroLimit {
                key: "lease_gather_records"
            })
        );
    }
}
