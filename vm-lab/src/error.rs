//! Errors of the lab. Each names the step, the program or the wait that
//! failed, because the reader is looking at a failed CI run.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab needs root (network namespaces, taps, NFS server); running as uid {uid}")]
    NotRoot { uid: u32 },
    #[error("program {program} is missing and package {package} could not be installed: {detail}")]
    PackageUnavailable {
        program: String,
        package: String,
        detail: String,
    },
    #[error("{command} failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("boot tree: {0}")]
    Boot(#[from] ironroot_boot::BootError),
    #[error("timeout {name} ({secs} s) expired in {vm} waiting for {waiting_for:?}; console tail:\n{console_tail}")]
    Timeout {
        name: &'static str,
        secs: u64,
        vm: String,
        waiting_for: String,
        console_tail: String,
    },
    #[error("QEMU of {vm} exited ({status}) while waiting for {waiting_for:?}; stderr:\n{stderr}\nconsole tail:\n{console_tail}")]
    QemuDied {
        vm: String,
        status: String,
        waiting_for: String,
        stderr: String,
        console_tail: String,
    },
    #[error(
        "{vm} failed ({line:?}) while waiting for {waiting_for:?}; console tail:\n{console_tail}"
    )]
    GuestFailed {
        vm: String,
        line: String,
        waiting_for: String,
        console_tail: String,
    },
    #[error("{server} exited ({status}) during start-up; stderr:\n{stderr}")]
    ServerDied {
        server: &'static str,
        status: String,
        stderr: String,
    },
    #[error("timeout {name} ({secs} s) expired waiting for {what}")]
    ServerTimeout {
        name: &'static str,
        secs: u64,
        what: String,
    },
    #[error("server side {server} is not available: {reason}")]
    ServerUnavailable {
        server: &'static str,
        reason: String,
    },
    #[error("ironroot {command}: {detail}")]
    Admin { command: String, detail: String },
    #[error("case {case} cannot run with the {server} server side: {reason}")]
    CaseRefused {
        case: &'static str,
        server: &'static str,
        reason: &'static str,
    },
    #[error("interrupted by a signal")]
    Interrupted,
    #[error("unexpected console output from {vm} for {command:?}: {detail}")]
    Console {
        vm: String,
        command: String,
        detail: String,
    },
    #[error("{limit} exceeded: {value} > {max}")]
    LimitExceeded {
        limit: &'static str,
        value: usize,
        max: usize,
    },
}

impl LabError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LabError {
        let path = path.into();
        move |source| LabError::Io { path, source }
    }
}
