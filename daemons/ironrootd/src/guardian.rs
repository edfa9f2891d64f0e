//! The guardian: a small process that shares the daemon's file-descriptor
//! table and, when the daemon dies however it dies (`kill -9`, a crash, the
//! OOM killer), removes the VIP before any of the daemon's sockets close.
//!
//! Why: when a process dies, the kernel closes its sockets and sends each
//! NFS client a FIN. A Linux client answers a server's FIN by reconnecting
//! at once; while the dead daemon's host still holds the VIP that reconnect
//! is refused, and the client's RPC transport then waits 3 s
//! (`XS_TCP_INIT_REEST_TO`) before it tries again, long after the peer has
//! taken over. With the guardian the sockets outlive the daemon (the table
//! is shared, so the last reference to them is the guardian's); it deletes
//! the VIP first, and only then exits, closing them. A socket whose local
//! address is gone sends nothing, so the clients see no FIN and no refusal:
//! their connections simply go quiet until the new active's tickle ACKs
//! (`crate::takeover`) reset them.
//!
//! The guardian is made with `clone(CLONE_FILES)` before the daemon starts
//! any thread, so the child is an ordinary copy of a single-threaded
//! process. It watches the daemon through a pidfd, ignores the signals that
//! stop the daemon (so it outlives it), and exits right after the VIP is
//! gone: nothing lingers, and a restarted daemon can bind its ports again.

use std::io;
use std::time::Duration;

use ironroot_net::tokio_backend::TokioVip;
use ironroot_net::{VipControl, VipError, VipSpec};

/// How long the guardian keeps trying to remove the VIP.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

/// Start the guardian for `vip`. Must be called while this process has a
/// single thread (before any runtime or thread is started).
pub fn spawn(vip: VipSpec) -> io::Result<libc::pid_t> {
    let daemon = std::process::id() as libc::pid_t;
    // SAFETY: clone(2) without CLONE_VM and without a new stack behaves like
    // fork(2) (copy-on-write memory), except that the file table is shared.
    // The caller guarantees a single thread, so no lock is held by a thread
    // that does not exist in the child.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_FILES | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            guard(daemon, &vip);
            // SAFETY: ends the child without running the daemon's exit
            // handlers or flushing buffers it copied from the daemon.
            unsafe { libc::_exit(0) }
        }
        child => Ok(child as libc::pid_t),
    }
}

/// The child: wait for the daemon's death, remove the VIP, return.
fn guard(daemon: libc::pid_t, vip: &VipSpec) {
    // SAFETY: plain syscalls on values we own.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"ironrootd-guard".as_ptr());
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
    wait_for_death(daemon);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!(
                "ironrootd-guard: no runtime to remove VIP {}: {error}",
                vip.addr
            );
            return;
        }
    };
    let vips = TokioVip::new();
    let removed = runtime.block_on(async {
        // Quiet when there is nothing to do: a clean shutdown released the
        // VIP, a standby never held it, a failed start never claimed it.
        match tokio::time::timeout(RELEASE_TIMEOUT, vips.holds(vip)).await {
            Ok(Ok(false)) | Ok(Err(VipError::Invalid(_))) => return None,
            _ => {}
        }
        let released = tokio::time::timeout(RELEASE_TIMEOUT, vips.release(vip)).await;
        Some(match released {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {RELEASE_TIMEOUT:?}")),
        })
    });
    match removed {
        None => {}
        Some(Ok(())) => eprintln!(
            "ironrootd-guard: ironrootd (pid {daemon}) ended; VIP {} removed before its sockets closed",
            vip.addr
        ),
        Some(Err(error)) => eprintln!(
            "ironrootd-guard: ironrootd (pid {daemon}) ended; removing VIP {} failed: {error} (its lifetime ends it)",
            vip.addr
        ),
    }
}

/// Block until `daemon` has exited.
fn wait_for_death(daemon: libc::pid_t) {
    // SAFETY: pidfd_open on a pid; the fd is ours and polled only.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, daemon, 0) } as libc::c_int;
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    if pidfd < 0 || parent != daemon {
        // No pidfd (kernel < 5.3) or the daemon is gone already: fall back
        // to watching our parent change (re-parenting means it died).
        // SAFETY: as above.
        while unsafe { libc::getppid() } == daemon {
            std::thread::sleep(Duration::from_millis(20));
        }
        return;
    }
    let mut poll = libc::pollfd {
        fd: pidfd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, -1) };
        if ready > 0 {
            return;
        }
        if ready < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            // Never conclude the daemon died from a failed wait: removing
            // the VIP of a live active node would be an outage.
            // SAFETY: as above.
            while unsafe { libc::getppid() } == daemon {
                std::thread::sleep(Duration::from_millis(20));
            }
            return;
        }
    }
}
