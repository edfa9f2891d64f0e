//! Boot phases as typed events with timestamps, recognised from the serial
//! console: firmware, DHCP (iPXE prints its address), TFTP done (the
//! initramfs loaded), kernel banner, root mounted (the boot crate's
//! initramfs says so, as it says when its modules are loaded and it has an
//! address), shell ready (the image's init says so).

use serde::Serialize;

use crate::image::SHELL_READY_MARKER;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// SeaBIOS (or OVMF) printed its first line.
    Firmware,
    /// iPXE is running (its NIC ROM initialised).
    Ipxe,
    /// iPXE finished DHCP.
    Dhcp,
    /// iPXE fetched kernel and initramfs over TFTP.
    TftpDone,
    /// "Linux version": the kernel is decompressed and running.
    Kernel,
    /// The initramfs loaded the NIC and NFS modules.
    Modules,
    /// The initramfs got its DHCP lease.
    Address,
    /// The initramfs mounted the NFS root.
    RootMounted,
    /// The image's init started a shell on the console.
    Shell,
}

pub const PHASES: [Phase; 9] = [
    Phase::Firmware,
    Phase::Ipxe,
    Phase::Dhcp,
    Phase::TftpDone,
    Phase::Kernel,
    Phase::Modules,
    Phase::Address,
    Phase::RootMounted,
    Phase::Shell,
];

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Firmware => "firmware",
            Phase::Ipxe => "ipxe",
            Phase::Dhcp => "dhcp",
            Phase::TftpDone => "tftp-done",
            Phase::Kernel => "kernel",
            Phase::Modules => "modules",
            Phase::Address => "address",
            Phase::RootMounted => "root-mounted",
            Phase::Shell => "shell",
        }
    }

    /// The phase a complete console line announces, if any.
    pub fn recognise(line: &str) -> Option<Phase> {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.contains("SeaBIOS (version") || line.contains("BdsDxe:") {
            Some(Phase::Firmware)
        } else if line.contains("iPXE initialising devices") {
            Some(Phase::Ipxe)
        } else if line.contains("Configuring (net") && line.trim_end().ends_with("ok") {
            Some(Phase::Dhcp)
        } else if line.contains("/initrd.img") && line.trim_end().ends_with("ok") {
            Some(Phase::TftpDone)
        } else if line.contains("Linux version ") {
            Some(Phase::Kernel)
        } else if line.contains("ironroot: modules loaded") {
            Some(Phase::Modules)
        } else if line.contains("ironroot: address: ") && !line.contains("no lease") {
            Some(Phase::Address)
        } else if line.contains("ironroot: mount: root mounted") {
            Some(Phase::RootMounted)
        } else if line.contains(SHELL_READY_MARKER) {
            Some(Phase::Shell)
        } else {
            None
        }
    }
}

/// A phase reached, `at_ms` after QEMU started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PhaseEvent {
    pub phase: Phase,
    pub at_ms: u64,
}

/// First time each phase was seen, in order of arrival.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PhaseLog {
    pub events: Vec<PhaseEvent>,
}

impl PhaseLog {
    pub fn record(&mut self, phase: Phase, at_ms: u64) -> bool {
        if self.at(phase).is_some() {
            return false;
        }
        self.events.push(PhaseEvent { phase, at_ms });
        true
    }

    pub fn at(&self, phase: Phase) -> Option<u64> {
        self.events
            .iter()
            .find(|e| e.phase == phase)
            .map(|e| e.at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_map_to_phases() {
        let lines = [
            (
                "SeaBIOS (version 1.16.2-debian-1.16.2-1)",
                Some(Phase::Firmware),
            ),
            ("iPXE initialising devices...ok", Some(Phase::Ipxe)),
            (
                "Configuring (net0 52:54:00:99:00:00)...... ok",
                Some(Phase::Dhcp),
            ),
            ("Configuring (net0 52:54:00:99:00:00)......", None),
            (
                "tftp://10.99.0.1/images/lab-busybox/initrd.img... ok",
                Some(Phase::TftpDone),
            ),
            (
                "[    0.000000] Linux version 6.1.0-56-amd64 (debian-kernel@",
                Some(Phase::Kernel),
            ),
            (
                "ironroot: modules loaded: virtio_ring virtio",
                Some(Phase::Modules),
            ),
            (
                "ironroot: address: 10.99.0.100/24 on eth0 via none",
                Some(Phase::Address),
            ),
            ("ironroot: address: no lease yet (try 1/10)", None),
            (
                "ironroot: mount: root mounted read-only from 10.99.0.1",
                Some(Phase::RootMounted),
            ),
            ("ironroot-lab: shell ready\r", Some(Phase::Shell)),
            ("ironroot: mount: 10.99.0.1:/ on /newroot, try 1/30", None),
        ];
        for (line, phase) in lines {
            assert_eq!(Phase::recognise(line), phase, "{line}");
        }
    }

    #[test]
    fn first_sighting_wins() {
        let mut log = PhaseLog::default();
        assert!(log.record(Phase::Kernel, 7));
        assert!(!log.record(Phase::Kernel, 9));
        assert_eq!(log.at(Phase::Kernel), Some(7));
    }
}
