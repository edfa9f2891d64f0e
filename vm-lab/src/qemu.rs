//! QEMU: pure argument builders, and a running VM whose serial console is
//! read through bounded, named-timeout waits that notice a dead QEMU.
//! QEMU is started in the switch namespace (where its tap lives) and killed
//! by PID when the [`Vm`] drops.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use ironroot_net::{Clock, Instant};
use serde::Serialize;

use crate::error::LabError;
use crate::host::{check_interrupted, ChildGuard};
use crate::phases::{Phase, PhaseLog};

pub const QEMU: &str = "qemu-system-x86_64";
/// The NIC boot ROM (iPXE) from Debian's ipxe-qemu.
pub const VIRTIO_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
pub const MEMORY_MIB: u32 = 512;
/// Console bytes kept in memory (the transcript file has everything).
pub const CONSOLE_BYTES_MAX: usize = 4 << 20;
/// Console bytes quoted in an error.
pub const CONSOLE_TAIL_BYTES: usize = 3_000;
const PUMP_INTERVAL_MS: u64 = 100;
/// Console reads queued between the reader thread and the waits (each at
/// most 8 KiB). A VM nobody reads for long enough stalls on its serial
/// port rather than growing this queue.
pub const CONSOLE_CHUNKS_MAX: usize = 4_096;
/// Marks a console line the host records with its arrival time. Guest
/// scripts print it with `printf '@@%s ...' T` so that the echo of the
/// command itself never carries it.
pub const TAG: &str = "@@T ";
/// Tagged lines kept per VM.
pub const TAGGED_LINES_MAX: usize = 200_000;
/// Console lines after which waiting longer is pointless.
pub const FATAL_MARKERS: [&str; 4] = [
    "No bootable device",
    "Kernel panic",
    "ironroot: FAILED",
    "ironroot: no kernel after",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Tcg,
    Kvm,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// SeaBIOS, QEMU's default.
    Bios,
    /// OVMF from Debian's ovmf package.
    Uefi,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmBoot {
    /// `-boot n` through the NIC's iPXE ROM, on a tap.
    Network {
        tap: String,
        mac: String,
        /// None: QEMU's default ROM for the NIC, which Debian links to
        /// ipxe-qemu's efi-virtio.rom. (QEMU 7.2's SeaBIOS did not run the
        /// same ROM given by absolute path here.)
        romfile: Option<PathBuf>,
    },
    /// `-kernel/-initrd`, no NIC at all (the accelerator probe).
    Direct {
        kernel: PathBuf,
        initrd: PathBuf,
        append: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    pub name: String,
    pub accel: Accel,
    pub firmware: Firmware,
    pub memory_mib: u32,
    pub boot: VmBoot,
}

/// QEMU's arguments (without the program name).
pub fn qemu_args(spec: &VmSpec) -> Vec<String> {
    let mut args: Vec<String> = vec!["-name".into(), spec.name.clone()];
    match spec.accel {
        Accel::Tcg => args.extend(["-accel".into(), "tcg".into()]),
        Accel::Kvm => args.extend(["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()]),
    }
    args.extend([
        "-m".into(),
        spec.memory_mib.to_string(),
        "-smp".into(),
        "1".into(),
    ]);
    // Serial on stdio (a pipe we keep open), no monitor, and no reboot: a
    // guest that panics or reboots ends QEMU, which the waits notice.
    for arg in [
        "-nographic",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
    ] {
        args.push(arg.into());
    }
    if spec.firmware == Firmware::Uefi {
        args.extend(["-bios".into(), OVMF.into()]);
    }
    match &spec.boot {
        VmBoot::Network { tap, mac, romfile } => {
            args.extend(["-boot".into(), "n".into()]);
            // An explicit tap with no scripts: without a -netdev QEMU
            // would add a user-mode NIC that reaches outside the lab.
            let mut device = format!("virtio-net-pci,netdev=lab0,mac={mac}");
            if let Some(rom) = romfile {
                device.push_str(&format!(",romfile={}", rom.display()));
            }
            args.extend([
                "-netdev".into(),
                format!("tap,id=lab0,ifname={tap},script=no,downscript=no"),
                "-device".into(),
                device,
            ]);
        }
        VmBoot::Direct {
            kernel,
            initrd,
            append,
        } => {
            args.extend(["-nic".into(), "none".into()]);
            args.extend(["-kernel".into(), kernel.display().to_string()]);
            args.extend(["-initrd".into(), initrd.display().to_string()]);
            args.extend(["-append".into(), append.clone()]);
        }
    }
    args
}

/// A running QEMU with its console.
pub struct Vm<C: Clock> {
    pub name: String,
    clock: C,
    started: Instant,
    guard: ChildGuard,
    stdin: Option<ChildStdin>,
    /// Console output with the time it arrived (ms since power-on),
    /// stamped by the reader thread so that a VM nobody is waiting on
    /// still gets true phase times.
    chunks: Receiver<(u64, Vec<u8>)>,
    console: String,
    /// Where the next `expect` starts searching.
    cursor: usize,
    /// Start of the line not yet scanned for phases.
    line_start: usize,
    pub phases: PhaseLog,
    transcript: Option<File>,
    commands_sent: u64,
    /// Lines the guest tagged with [`TAG`] (tag removed), with their
    /// arrival time in ms since power-on.
    tagged: Vec<(u64, String)>,
    /// The first fatal line seen.
    fatal: Option<String>,
}

impl<C: Clock> Vm<C> {
    /// Starts QEMU (in `netns` when given); the console transcript goes to
    /// `transcript`.
    pub fn start(
        spec: &VmSpec,
        netns: Option<&str>,
        clock: C,
        transcript: &Path,
    ) -> Result<Vm<C>, LabError> {
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, QEMU]);
                c
            }
            None => Command::new(QEMU),
        };
        command
            .args(qemu_args(spec))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = clock.now();
        let child = command.spawn().map_err(|source| LabError::Spawn {
            program: QEMU.into(),
            source,
        })?;
        let mut guard = ChildGuard::new(spec.name.clone(), child);
        let stdin = guard.child_mut().stdin.take();
        let mut stdout = guard.child_mut().stdout.take();
        let (sender, chunks) = std::sync::mpsc::sync_channel(CONSOLE_CHUNKS_MAX);
        let reader_clock = clock.clone();
        std::thread::spawn(move || {
            let Some(out) = stdout.as_mut() else { return };
            let mut buf = [0u8; 8192];
            while let Ok(n) = out.read(&mut buf) {
                let at_ms = reader_clock
                    .now()
                    .saturating_duration_since(started)
                    .as_millis();
                if n == 0 || sender.send((at_ms as u64, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        });
        Ok(Vm {
            name: spec.name.clone(),
            clock,
            started,
            guard,
            stdin,
            chunks,
            console: String::new(),
            cursor: 0,
            line_start: 0,
            phases: PhaseLog::default(),
            transcript: File::create(transcript).ok(),
            commands_sent: 0,
            fatal: None,
            tagged: Vec::new(),
        })
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.clock
            .now()
            .saturating_duration_since(self.started)
            .as_millis() as u64
    }

    fn tail(&self) -> String {
        let from = self.console.len().saturating_sub(CONSOLE_TAIL_BYTES);
        let from = (from..=self.console.len())
            .find(|i| self.console.is_char_boundary(*i))
            .unwrap_or(self.console.len());
        self.console[from..].to_string()
    }

    /// Takes console output for up to `wait`; an error if QEMU is gone.
    fn pump(&mut self, wait: Duration, waiting_for: &str) -> Result<(), LabError> {
        check_interrupted()?;
        match self.chunks.recv_timeout(wait) {
            Ok((at_ms, chunk)) => {
                self.append(at_ms, &chunk);
                while let Ok((at_ms, more)) = self.chunks.try_recv() {
                    self.append(at_ms, &more);
                }
                Ok(())
            }
            Err(RecvTimeoutError::Timeout) => match self.guard.try_exited() {
                Some(status) => Err(self.died(status.to_string(), waiting_for)),
                None => Ok(()),
            },
            Err(RecvTimeoutError::Disconnected) => {
                let status = self
                    .guard
                    .wait_bounded("qemu_exit_after_eof", 5)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|_| "closed its console".into());
                Err(self.died(status, waiting_for))
            }
        }
    }

    fn check_fatal(&self, waiting_for: &str) -> Result<(), LabError> {
        match &self.fatal {
            Some(line) => Err(LabError::GuestFailed {
                vm: self.name.clone(),
                line: line.clone(),
                waiting_for: waiting_for.to_string(),
                console_tail: self.tail(),
            }),
            None => Ok(()),
        }
    }

    fn died(&self, status: String, waiting_for: &str) -> LabError {
        LabError::QemuDied {
            vm: self.name.clone(),
            status,
            waiting_for: waiting_for.to_string(),
            stderr: self.guard.stderr_text(),
            console_tail: self.tail(),
        }
    }

    fn append(&mut self, at_ms: u64, chunk: &[u8]) {
        if let Some(file) = self.transcript.as_mut() {
            let _ = file.write_all(chunk);
        }
        self.console.push_str(&String::from_utf8_lossy(chunk));
        while let Some(end) = self.console[self.line_start..].find('\n') {
            let line_end = self.line_start + end;
            let line = &self.console[self.line_start..line_end];
            if let Some(phase) = Phase::recognise(line) {
                self.phases.record(phase, at_ms);
            }
            if self.fatal.is_none() && FATAL_MARKERS.iter().any(|m| line.contains(m)) {
                self.fatal = Some(line.trim_end().to_string());
            }
            if let Some(at) = line.find(TAG) {
                if self.tagged.len() < TAGGED_LINES_MAX {
                    let text = line[at + TAG.len()..].trim_end().to_string();
                    self.tagged.push((at_ms, text));
                }
            }
            self.line_start = line_end + 1;
        }
        if self.console.len() > CONSOLE_BYTES_MAX {
            let mut cut = self.console.len() - CONSOLE_BYTES_MAX / 2;
            while !self.console.is_char_boundary(cut) {
                cut += 1;
            }
            self.console.drain(..cut);
            self.cursor = self.cursor.saturating_sub(cut);
            self.line_start = self.line_start.saturating_sub(cut);
        }
    }

    /// Waits for `needle` after the cursor; returns the text up to and
    /// including it and moves the cursor past it.
    pub fn expect(
        &mut self,
        needle: &str,
        timeout_name: &'static str,
        secs: u64,
    ) -> Result<String, LabError> {
        let deadline = self.clock.now() + Duration::from_secs(secs);
        loop {
            if let Some(at) = self.console[self.cursor..].find(needle) {
                let end = self.cursor + at + needle.len();
                let text = self.console[self.cursor..end].to_string();
                self.cursor = end;
                return Ok(text);
            }
            if self.clock.now() >= deadline {
                return Err(LabError::Timeout {
                    name: timeout_name,
                    secs,
                    vm: self.name.clone(),
                    waiting_for: needle.to_string(),
                    console_tail: self.tail(),
                });
            }
            self.check_fatal(needle)?;
            self.pump(Duration::from_millis(PUMP_INTERVAL_MS), needle)?;
        }
    }

    /// Waits until `phase` has been seen on the console.
    pub fn wait_phase(
        &mut self,
        phase: Phase,
        timeout_name: &'static str,
        secs: u64,
    ) -> Result<u64, LabError> {
        let deadline = self.clock.now() + Duration::from_secs(secs);
        loop {
            if let Some(at) = self.phases.at(phase) {
                return Ok(at);
            }
            if self.clock.now() >= deadline {
                return Err(LabError::Timeout {
                    name: timeout_name,
                    secs,
                    vm: self.name.clone(),
                    waiting_for: format!("phase {}", phase.name()),
                    console_tail: self.tail(),
                });
            }
            self.check_fatal(phase.name())?;
            self.pump(Duration::from_millis(PUMP_INTERVAL_MS), phase.name())?;
        }
    }

    pub fn send(&mut self, text: &str) -> Result<(), LabError> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(self.died("stdin closed".into(), text));
        };
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|source| LabError::Sys {
                what: "writing to the VM's serial console",
                source,
            })
    }

    /// Runs a shell command on the console; its exit status and output.
    /// The end marker is printed by `printf` from pieces, so the echo of
    /// the command line itself can never match it.
    pub fn run(
        &mut self,
        command: &str,
        timeout_name: &'static str,
        secs: u64,
    ) -> Result<(i32, String), LabError> {
        self.commands_sent += 1;
        let n = self.commands_sent;
        self.cursor = self.console.len();
        self.send(&format!("{command}; printf '@@%s%d:%d@@\\n' RC {n} $?\n"))?;
        let marker = format!("@@RC{n}:");
        let text = self.expect(&marker, timeout_name, secs)?;
        let status_text = self.expect("@@", timeout_name, secs)?;
        let status = status_text
            .trim_end_matches("@@")
            .trim()
            .parse()
            .unwrap_or(-1);
        let output = text.trim_end_matches(marker.as_str());
        Ok((status, clean_output(output, command)))
    }

    /// Tagged lines so far: (ms since power-on, text after the tag).
    pub fn tagged(&self) -> &[(u64, String)] {
        &self.tagged
    }

    /// Reads the console until a tagged line from index `from` on
    /// satisfies `wanted`; returns its index.
    pub fn wait_tagged(
        &mut self,
        from: usize,
        wanted: impl Fn(&str) -> bool,
        timeout_name: &'static str,
        secs: u64,
    ) -> Result<usize, LabError> {
        let deadline = self.clock.now() + Duration::from_secs(secs);
        let mut scanned = from;
        loop {
            if let Some(offset) = self
                .tagged
                .get(scanned..)
                .and_then(|new| new.iter().position(|(_, text)| wanted(text)))
            {
                return Ok(scanned + offset);
            }
            scanned = scanned.max(self.tagged.len());
            if self.clock.now() >= deadline {
                return Err(LabError::Timeout {
                    name: timeout_name,
                    secs,
                    vm: self.name.clone(),
                    waiting_for: "a tagged console line".into(),
                    console_tail: self.tail(),
                });
            }
            self.check_fatal("a tagged console line")?;
            self.pump(
                Duration::from_millis(PUMP_INTERVAL_MS),
                "a tagged console line",
            )?;
        }
    }

    /// Reads the console for `ms` (tagged lines keep arriving).
    pub fn idle(&mut self, ms: u64) -> Result<(), LabError> {
        let deadline = self.clock.now() + Duration::from_millis(ms);
        while self.clock.now() < deadline {
            self.pump(Duration::from_millis(PUMP_INTERVAL_MS), "console output")?;
        }
        Ok(())
    }

    pub fn console(&self) -> &str {
        &self.console
    }
}

/// Command output without the echoed command line and prompts.
pub fn clean_output(raw: &str, command: &str) -> String {
    raw.replace('\r', "")
        .lines()
        .filter(|line| !line.contains(command) && !line.starts_with("@@"))
        .map(|line| line.trim_start_matches("lab# "))
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network_spec() -> VmSpec {
        VmSpec {
            name: "lab-vm0".into(),
            accel: Accel::Tcg,
            firmware: Firmware::Bios,
            memory_mib: MEMORY_MIB,
            boot: VmBoot::Network {
                tap: "it7v0".into(),
                mac: "52:54:00:99:00:00".into(),
                romfile: None,
            },
        }
    }

    #[test]
    fn network_boot_uses_tap_and_ipxe_rom() {
        let args = qemu_args(&network_spec()).join(" ");
        assert_eq!(
            args,
            "-name lab-vm0 -accel tcg -m 512 -smp 1 -nographic -serial stdio -monitor none \
             -no-reboot -boot n -netdev tap,id=lab0,ifname=it7v0,script=no,downscript=no \
             -device virtio-net-pci,netdev=lab0,mac=52:54:00:99:00:00"
        );
        let mut spec = network_spec();
        if let VmBoot::Network { romfile, .. } = &mut spec.boot {
            *romfile = Some(VIRTIO_ROM.into());
        }
        let args = qemu_args(&spec).join(" ");
        assert!(
            args.ends_with(",romfile=/usr/lib/ipxe/qemu/efi-virtio.rom"),
            "{args}"
        );
    }

    #[test]
    fn kvm_and_uefi_are_options() {
        let mut spec = network_spec();
        spec.accel = Accel::Kvm;
        spec.firmware = Firmware::Uefi;
        let args = qemu_args(&spec).join(" ");
        assert!(args.contains("-accel kvm -cpu host"), "{args}");
        assert!(args.contains("-bios /usr/share/ovmf/OVMF.fd"), "{args}");
    }

    #[test]
    fn direct_boot_has_no_nic() {
        let mut spec = network_spec();
        spec.boot = VmBoot::Direct {
            kernel: "/k".into(),
            initrd: "/i".into(),
            append: "console=ttyS0".into(),
        };
        let args = qemu_args(&spec);
        let joined = args.join(" ");
        assert!(
            joined.contains("-nic none -kernel /k -initrd /i"),
            "{joined}"
        );
        assert!(!joined.contains("-boot n"));
        assert_eq!(args.last().map(String::as_str), Some("console=ttyS0"));
    }

    #[test]
    fn output_loses_echo_and_prompts() {
        let raw = "lab# mount | grep ' / '\r\n10.99.0.1:/ on / type nfs (ro)\r\nlab# ";
        assert_eq!(
            clean_output(raw, "mount | grep ' / '"),
            "10.99.0.1:/ on / type nfs (ro)"
        );
    }
}
