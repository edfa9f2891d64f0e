//! Per-client boot configs, generated on request from the client registry:
//! an iPXE script and a pxelinux config, each pointing at the client's
//! image's kernel and initramfs on the VIP's TFTP server, with the kernel
//! command line from [`crate::mount::kernel_cmdline`].

use std::fmt;
use std::str::FromStr;

use crate::error::BootError;
use crate::layout;
use crate::mount::{kernel_cmdline, ClientBoot};

/// Tries of the iPXE retry loop: a TFTP transfer does not survive a
/// failover, the next try after the VIP moved must succeed. 10 tries, 2 s
/// apart plus TFTP's own timeouts, cover several failovers.
pub const IPXE_TRIES_MAX: u32 = 10;
pub const IPXE_RETRY_DELAY_SECS: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = BootError;

    /// `52:54:00:12:34:56` or `52-54-00-12-34-56`, any case.
    fn from_str(text: &str) -> Result<Mac, BootError> {
        let bad = || BootError::InvalidInput {
            what: "MAC address",
            value: text.to_string(),
            reason: "expected six hex octets separated by ':' or '-'",
        };
        let mut octets = [0u8; 6];
        let mut parts = text.split([':', '-']);
        for octet in &mut octets {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(octets))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Mac {
    /// `52-54-00-12-34-56`, as pxelinux spells it in file names.
    pub fn dashed(&self) -> String {
        self.to_string().replace(':', "-")
    }
}

/// TFTP path of a client's pxelinux config: ARP hardware type 1 (Ethernet)
/// then the MAC with dashes, lower case — what pxelinux asks for first.
pub fn pxelinux_config_path(mac: Mac) -> String {
    format!("pxelinux.cfg/01-{}", mac.dashed())
}

/// TFTP path of a client's iPXE script (the boot file DHCP hands to iPXE).
pub fn ipxe_script_path(mac: Mac) -> String {
    format!("ipxe/clients/{}.ipxe", mac.dashed())
}

pub fn ipxe_script(mac: Mac, boot: &ClientBoot) -> Result<String, BootError> {
    // EFI kernels find the initrd by this name in iPXE's virtual file system.
    let mut with_initrd = boot.clone();
    with_initrd.extra.insert(0, "initrd=initrd.img".into());
    let cmdline = kernel_cmdline(&with_initrd)?;
    let server = boot.server;
    let kernel = layout::kernel_path(&boot.image);
    let initrd = layout::initramfs_path(&boot.image);
    let header = header_comment(mac, boot);
    Ok(format!(
        "#!ipxe\n\
         {header}\
         set tries:int32 0\n\
         :retry\n\
         inc tries\n\
         iseq ${{tries}} {attempts_end} && goto give_up ||\n\
         imgfree\n\
         echo ironroot: loading {kernel} from {server} (try ${{tries}}/{IPXE_TRIES_MAX})\n\
         kernel tftp://{server}/{kernel} {cmdline} || goto wait\n\
         initrd --name initrd.img tftp://{server}/{initrd} || goto wait\n\
         boot || goto wait\n\
         :wait\n\
         echo ironroot: boot files not loaded, retrying in {IPXE_RETRY_DELAY_SECS} s\n\
         sleep {IPXE_RETRY_DELAY_SECS} || echo ironroot: no sleep command, retrying now\n\
         goto retry\n\
         :give_up\n\
         echo ironroot: no kernel after {IPXE_TRIES_MAX} tries, rebooting\n\
         reboot\n",
        attempts_end = IPXE_TRIES_MAX + 1,
    ))
}

pub fn pxelinux_config(mac: Mac, boot: &ClientBoot) -> Result<String, BootError> {
    let cmdline = kernel_cmdline(boot)?;
    let kernel = layout::kernel_path(&boot.image);
    let initrd = layout::initramfs_path(&boot.image);
    let header = header_comment(mac, boot);
    // Paths are relative to pxelinux.0's directory (the tree root) and are
    // fetched from the server pxelinux itself came from: the VIP.
    Ok(format!(
        "{header}\
         DEFAULT ironroot\n\
         PROMPT 0\n\
         TIMEOUT 0\n\
         LABEL ironroot\n  \
         KERNEL {kernel}\n  \
         INITRD {initrd}\n  \
         APPEND {cmdline}\n"
    ))
}

fn header_comment(mac: Mac, boot: &ClientBoot) -> String {
    format!(
        "# ironroot boot config for client {} ({mac}), image {}, server {}\n",
        boot.client, boot.image, boot.server
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount::tests::sample_boot;

    fn mac() -> Mac {
        "52:54:00:AB:cd:01".parse().unwrap()
    }

    #[test]
    fn mac_parsing_and_paths() {
        assert_eq!(mac().to_string(), "52:54:00:ab:cd:01");
        assert_eq!(
            pxelinux_config_path(mac()),
            "pxelinux.cfg/01-52-54-00-ab-cd-01"
        );
        assert_eq!("52-54-00-ab-cd-01".parse::<Mac>().unwrap(), mac());
        for bad in [
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:01:02",
            "5:54:00:ab:cd:01",
            "zz:54:00:ab:cd:01",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ipxe_script_snapshot() {
        insta::assert_snapshot!(ipxe_script(mac(), &sample_boot()).unwrap());
    }

    #[test]
    fn pxelinux_config_snapshot() {
        insta::assert_snapshot!(pxelinux_config(mac(), &sample_boot()).unwrap());
    }

    #[test]
    fn bad_identity_is_refused() {
        let mut boot = sample_boot();
        boot.image = "../../etc".into();
        // Allowed characters, but the layout refuses path climbing.
        assert!(ipxe_script(mac(), &boot).is_err());
    }
}
