//! The client's NFS mount options and kernel command line. Both are owned
//! here so the initramfs, the iPXE script and the pxelinux config can never
//! disagree.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::error::BootError;

/// How long a client keeps cached attributes, in seconds. An image update
/// (new generation) is visible to a running client at most this long after
/// the server switches to it, plus one GETATTR round trip: the server gives
/// a changed file a new file id and its directory a newer mtime, so once the
/// directory's cached attributes expire the client looks the name up again.
/// 3 s is far below anything an operator waits for, and costs one GETATTR
/// per hot directory per client every 3 s, which a read-only server answers
/// from memory.
pub const ATTRIBUTE_CACHE_SECS: u32 = 3;

/// RPC timeout in deciseconds (`timeo=`). Over TCP the Linux RPC client sets
/// `TCP_USER_TIMEOUT` = timeo x (retrans + 1) and TCP keepalive idle and
/// interval = timeo (net/sunrpc/xprtsock.c, xs_tcp_set_socket_timeouts),
/// so these two numbers bound how long a request sits on a connection to a
/// node that died. What normally ends a failover stall is faster: the first
/// TCP retransmission that reaches the new VIP holder (after its gratuitous
/// ARP) is answered with a RST, the socket is released and the reconnect
/// starts at once. Reconnecting while no node holds the VIP fails and arms
/// the transport's back-off (XS_TCP_INIT_REEST_TO = 3 s, doubling).
///
/// Measured (tests/peers/failover.rs, bookworm 6.1 client under QEMU TCG,
/// ironroot's NFS server, host death of the VIP holder, one run each):
///
/// | VIP absent | these options | kernel defaults (timeo=600,retrans=2) |
/// |------------|---------------|---------------------------------------|
/// | 0.05 s     | 0.43 s stall  | 0.33 s                                |
/// | 1.0 s      | 1.96 s        | 1.84 s                                |
/// | 3.0 s      | 3.48 s        | 3.53 s                                |
/// | 7.0 s      | 14.0 s        | 13.5 s                                |
///
/// So the client is back within ~1 s of the VIP returning as long as the
/// VIP is gone for at most ~3 s, whatever timeo is; past that TCP's and
/// the RPC transport's back-off roughly double the stall: the cluster's
/// dead time, not timeo, is what keeps a failover short. timeo=5,retrans=3
/// (user timeout 2 s) is kept because it bounds the time a request can sit
/// on a half-dead connection (a peer that stops answering without a RST)
/// to 2 s instead of 180 s, and costs nothing measurable in the cases above.
pub const RPC_TIMEOUT_DECISECONDS: u32 = 5;
/// Minor timeouts before the client logs "server not responding" (and, over
/// TCP, the multiplier of the user timeout above).
pub const RPC_RETRANSMISSIONS: u32 = 3;

/// Options for `mount -t nfs` of `VIP:/` as the root, without `addr=`
/// (the initramfs appends the server it was given).
pub fn nfs_root_mount_options() -> String {
    let options = [
        // The root is shared by every client; the server refuses writes
        // (NFS3ERR_ROFS) anyway, ro makes the kernel not even try.
        "ro".to_string(),
        // Our server speaks NFSv3 only; v4 would fail and cost a round trip.
        "vers=3".into(),
        // Debian kernels have no NFS over UDP (NFS_DISABLE_UDP_SUPPORT=y),
        // and TCP is what notices a VIP move (RST from the new holder).
        "proto=tcp".into(),
        // Applications never see an I/O error from a failover: requests are
        // retried until the VIP answers again.
        "hard".into(),
        // No rpc.statd in the initramfs and nothing to lock on a
        // read-only root.
        "nolock".into(),
        format!("timeo={RPC_TIMEOUT_DECISECONDS}"),
        format!("retrans={RPC_RETRANSMISSIONS}"),
        // Sets acregmin/acregmax/acdirmin/acdirmax alike: the update bound.
        format!("actimeo={ATTRIBUTE_CACHE_SECS}"),
    ];
    options.join(",")
}

/// Who boots, from where: everything the command line carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientBoot {
    /// The VIP: TFTP server for the kernel and NFS server for the root.
    pub server: Ipv4Addr,
    /// Client name from the registry.
    pub client: String,
    /// Image name the client boots.
    pub image: String,
    /// Serial console device and speed, e.g. `ttyS0,115200`.
    pub console: String,
    /// Extra arguments appended verbatim (validated like the rest).
    pub extra: Vec<String>,
}

/// Command line length the x86 boot protocol guarantees (COMMAND_LINE_SIZE
/// is 2048 on x86_64).
pub const CMDLINE_BYTES_MAX: usize = 2047;

fn check_token(what: &'static str, value: &str) -> Result<(), BootError> {
    let bad = |reason| BootError::InvalidInput {
        what,
        value: value.to_string(),
        reason,
    };
    if value.is_empty() {
        return Err(bad("empty"));
    }
    // The command line is split on spaces and read by a shell script: keep
    // to characters that need no quoting anywhere.
    let allowed = |c: char| c.is_ascii_alphanumeric() || "._-,:=/+@".contains(c);
    if !value.chars().all(allowed) {
        return Err(bad("only ASCII letters, digits and ._-,:=/+@ are allowed"));
    }
    Ok(())
}

/// The kernel command line for one client, in a fixed order.
pub fn kernel_cmdline(boot: &ClientBoot) -> Result<String, BootError> {
    check_token("client name", &boot.client)?;
    crate::layout::check_image_name(&boot.image)?;
    check_token("console", &boot.console)?;
    for extra in &boot.extra {
        check_token("extra kernel argument", extra)?;
    }
    let mut line = String::new();
    // Kernel messages on the serial line first (tty0 too, for a screen).
    let _ = write!(line, "console=tty0 console={}", boot.console);
    let _ = write!(
        line,
        " ironroot.server={} ironroot.client={} ironroot.image={}",
        boot.server, boot.client, boot.image
    );
    let _ = write!(line, " ironroot.nfsopts={}", nfs_root_mount_options());
    // If /init dies the kernel panics: reboot after 30 s and try again
    // rather than hang forever.
    line.push_str(" panic=30");
    for extra in &boot.extra {
        line.push(' ');
        line.push_str(extra);
    }
    if line.len() > CMDLINE_BYTES_MAX {
        return Err(BootError::InvalidInput {
            what: "kernel command line",
            value: line,
            reason: "longer than 2047 bytes",
        });
    }
    Ok(line)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_boot() -> ClientBoot {
        ClientBoot {
            server: Ipv4Addr::new(10, 0, 0, 10),
            client: "web-01".into(),
            image: "bookworm-web".into(),
            console: "ttyS0,115200".into(),
            extra: vec![],
        }
    }

    #[test]
    fn mount_options_are_the_documented_ones() {
        assert_eq!(
            nfs_root_mount_options(),
            "ro,vers=3,proto=tcp,hard,nolock,timeo=5,retrans=3,actimeo=3"
        );
        // The TCP user timeout the kernel derives must fit the stall budget.
        let user_timeout_ms = RPC_TIMEOUT_DECISECONDS * 100 * (RPC_RETRANSMISSIONS + 1);
        assert!(user_timeout_ms <= 2_000);
    }

    #[test]
    fn cmdline_carries_identity_and_options() {
        let line = kernel_cmdline(&sample_boot()).unwrap();
        insta::assert_snapshot!(line);
    }

    #[test]
    fn cmdline_rejects_shell_metacharacters() {
        let mut boot = sample_boot();
        boot.client = "web;reboot".into();
        let err = kernel_cmdline(&boot).unwrap_err();
        assert!(err.to_string().starts_with("invalid client name"), "{err}");
        boot.client = "x".into();
        boot.extra = vec!["a b".into()];
        assert!(kernel_cmdline(&boot).is_err());
    }
}
