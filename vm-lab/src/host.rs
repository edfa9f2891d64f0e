//! The host side of the lab: root check, the programs it needs (installed
//! with apt-get when missing), bounded commands, child processes killed by
//! PID when their guard drops, and the Ctrl-C flag every wait checks.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::LabError;

/// Program -> Debian package providing it (scripts/packages/vm-lab.txt).
pub const REQUIRED_PROGRAMS: [(&str, &str); 6] = [
    ("ip", "iproute2"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("dnsmasq", "dnsmasq-base"),
    ("ganesha.nfsd", "nfs-ganesha"),
    ("rpcbind", "rpcbind"),
    ("ldd", "libc-bin"),
];
/// Files that come from packages but are not programs.
pub const REQUIRED_FILES: [(&str, &str); 2] = [
    ("/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu"),
    (
        "/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so",
        "nfs-ganesha-vfs",
    ),
];
/// Longest wait for `apt-get install` of the lab's packages.
pub const APT_INSTALL_SECS_MAX: u64 = 900;
/// Longest wait for a short administrative command (`ip ...`).
pub const COMMAND_SECS_MAX: u64 = 30;
const POLL_INTERVAL_MS: u64 = 50;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM set a flag that every bounded wait checks, so the
/// lab unwinds through its Drop guards (processes, namespaces) instead of
/// dying with them in place.
pub fn install_signal_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; the sigaction struct is fully initialised.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn check_interrupted() -> Result<(), LabError> {
    if interrupted() {
        Err(LabError::Interrupted)
    } else {
        Ok(())
    }
}

pub fn require_root() -> Result<(), LabError> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        Ok(())
    } else {
        Err(LabError::NotRoot { uid })
    }
}

pub fn program_exists(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|dir| dir.join(program).is_file())
}

/// Every program and file the lab runs, installing missing packages with
/// apt-get (once, all together); refuses naming the first that is still
/// missing.
pub fn ensure_packages() -> Result<(), LabError> {
    let missing = || {
        let programs = REQUIRED_PROGRAMS
            .iter()
            .filter(|(program, _)| !program_exists(program));
        let files = REQUIRED_FILES
            .iter()
            .filter(|(file, _)| !Path::new(file).exists());
        programs
            .chain(files)
            .map(|(what, package)| (what.to_string(), package.to_string()))
            .collect::<Vec<_>>()
    };
    let first = missing();
    if first.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = first.iter().map(|(_, p)| p.as_str()).collect();
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    let detail = match run_bounded(&mut install, "apt_install", APT_INSTALL_SECS_MAX) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    };
    match missing().into_iter().next() {
        None => Ok(()),
        Some((program, package)) => Err(LabError::PackageUnavailable {
            program,
            package,
            detail: if detail.is_empty() {
                "apt-get succeeded but it is still missing".into()
            } else {
                detail
            },
        }),
    }
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs a command to completion within `secs_max` (named by
/// `timeout_name`); its stdout on success, its stderr in the error.
pub fn run_bounded(
    command: &mut Command,
    timeout_name: &'static str,
    secs_max: u64,
) -> Result<String, LabError> {
    run_bounded_inner(command, timeout_name, secs_max, Interruptible::Yes)
}

/// Runs a command to completion within `secs_max`; its exit status,
/// stdout and stderr whatever the status (for programs that answer in JSON
/// on stdout also when they fail).
pub fn run_capture(
    command: &mut Command,
    timeout_name: &'static str,
    secs_max: u64,
) -> Result<(ExitStatus, String, String), LabError> {
    let (status, stdout, stderr, _) = capture(command, timeout_name, secs_max, Interruptible::Yes)?;
    Ok((status, stdout, stderr))
}

/// Spawn, drain stdout in a thread (a large answer must not block the
/// child) and wait within `secs_max`: (status, stdout, stderr, command text).
fn capture(
    command: &mut Command,
    timeout_name: &'static str,
    secs_max: u64,
    interruptible: Interruptible,
) -> Result<(ExitStatus, String, String, String), LabError> {
    let text = describe(command);
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            program: text.clone(),
            source,
        })?;
    let mut guard = ChildGuard::new(text.clone(), child);
    let stdout = guard.child_mut().stdout.take();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        if let Some(mut pipe) = stdout {
            let _ = pipe.read_to_string(&mut out);
        }
        out
    });
    let status = guard.wait_bounded_inner(timeout_name, secs_max, interruptible)?;
    let stdout = reader.join().unwrap_or_default();
    Ok((status, stdout, guard.stderr_text(), text))
}

/// Whether Ctrl-C ends a wait: not for cleanup, which must run to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruptible {
    Yes,
    No,
}

fn run_bounded_inner(
    command: &mut Command,
    timeout_name: &'static str,
    secs_max: u64,
    interruptible: Interruptible,
) -> Result<String, LabError> {
    let (status, stdout, stderr, text) = capture(command, timeout_name, secs_max, interruptible)?;
    if status.success() {
        Ok(stdout)
    } else {
        Err(LabError::CommandFailed {
            command: text,
            status: status.to_string(),
            stderr,
        })
    }
}

/// `ip <args>` within [`COMMAND_SECS_MAX`].
pub fn ip(args: &[&str]) -> Result<String, LabError> {
    run_bounded(
        Command::new("ip").args(args),
        "ip_command",
        COMMAND_SECS_MAX,
    )
}

/// `ip <args>` for cleanup: runs to the end even after Ctrl-C.
pub fn ip_cleanup(args: &[&str]) -> Result<String, LabError> {
    run_bounded_inner(
        Command::new("ip").args(args),
        "ip_command",
        COMMAND_SECS_MAX,
        Interruptible::No,
    )
}

/// Bytes of a child's stderr kept for error messages.
pub const STDERR_BYTES_MAX: usize = 64 * 1024;

/// A child process we started: killed (SIGKILL, by its PID) and reaped
/// when dropped, stderr collected by a thread so it never blocks.
pub struct ChildGuard {
    name: String,
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<JoinHandle<()>>,
    exited: Option<ExitStatus>,
}

impl ChildGuard {
    pub fn new(name: String, mut child: Child) -> ChildGuard {
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_thread = child.stderr.take().map(|mut pipe| {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    let mut kept = sink.lock().unwrap_or_else(|p| p.into_inner());
                    // Keep the tail: the end says why a program died.
                    kept.extend_from_slice(&chunk[..n]);
                    if kept.len() > STDERR_BYTES_MAX {
                        let excess = kept.len() - STDERR_BYTES_MAX;
                        kept.drain(..excess);
                    }
                }
            })
        });
        ChildGuard {
            name,
            child,
            stderr,
            stderr_thread,
            exited: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Exit status if the child has exited.
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    pub fn wait_bounded(
        &mut self,
        timeout_name: &'static str,
        secs_max: u64,
    ) -> Result<ExitStatus, LabError> {
        self.wait_bounded_inner(timeout_name, secs_max, Interruptible::Yes)
    }

    fn wait_bounded_inner(
        &mut self,
        timeout_name: &'static str,
        secs_max: u64,
        interruptible: Interruptible,
    ) -> Result<ExitStatus, LabError> {
        let polls_max = secs_max * 1000 / POLL_INTERVAL_MS;
        for _ in 0..polls_max {
            if let Some(status) = self.try_exited() {
                if let Some(thread) = self.stderr_thread.take() {
                    let _ = thread.join();
                }
                return Ok(status);
            }
            if interruptible == Interruptible::Yes {
                check_interrupted()?;
            }
            std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
        }
        Err(LabError::ServerTimeout {
            name: timeout_name,
            secs: secs_max,
            what: format!("{} to exit", self.name),
        })
    }

    pub fn stderr_text(&self) -> String {
        let kept = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&kept).trim_end().to_string()
    }

    /// Sends SIGTERM, waits up to `grace_ms`, then SIGKILL.
    pub fn stop(&mut self, grace_ms: u64) {
        if self.try_exited().is_some() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory preconditions; the PID is our child's,
        // not yet reaped (try_wait above saw it running), so it is not reused.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        for _ in 0..grace_ms / POLL_INTERVAL_MS {
            if self.try_exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
        }
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(500);
        // The stderr thread is not joined: a grandchild may still hold the
        // pipe; the thread ends by itself when the last holder exits.
    }
}

/// Kills a process we started but do not hold a `Child` for (a daemon's
/// helper that reported its PID through a file), by that PID.
pub fn kill_pid(pid: u32) {
    if pid <= 1 {
        return;
    }
    // SAFETY: see ChildGuard::stop; the PID came from a file our own
    // launcher wrote for a process it started.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}
