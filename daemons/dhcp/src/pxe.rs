//! PXE and iPXE boot selection (RFC 4578, PXE spec 2.1, iPXE's options).
//!
//! A firmware PXE client gets a bootloader by architecture; iPXE gets a
//! per-client script instead, since handing iPXE an iPXE binary again makes
//! it chainload forever.

use std::net::Ipv4Addr;

use crate::config::BootConfig;
use crate::wire::{Mac, Request};

/// iPXE's encapsulated option space (iPXE `include/ipxe/dhcp.h`).
pub const OPTION_IPXE_ENCAP: u8 = 175;
/// 175.176: skip the wait for a proxyDHCP offer.
pub const IPXE_NO_PXEDHCP: u8 = 176;
/// PXE spec 2.1 §2.2.6, option 43 sub-option 6 PXE_DISCOVERY_CONTROL, bit 3:
/// boot the file named in this reply, no boot-server discovery.
const PXE_DISCOVERY_CONTROL: u8 = 6;
const PXE_USE_BOOT_FILE: u8 = 8;
const PXE_SUBOPTION_END: u8 = 255;

/// Values a boot-file or root-path template may use.
#[derive(Clone, Debug)]
pub struct TemplateVars<'a> {
    pub vip: Ipv4Addr,
    pub mac: Option<Mac>,
    pub ip: Ipv4Addr,
    pub name: &'a str,
    pub image: &'a str,
}

/// Boot-related parts of a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootOptions {
    /// BOOTP `file` and option 67.
    pub file: String,
    /// Option 17, if configured.
    pub root_path: Option<String>,
    /// The client announced itself as PXE: echo option 60 and send 43.
    pub pxe_client: bool,
    /// The client is iPXE: send 175.176 if configured.
    pub ipxe: bool,
}

/// Replace `{vip}`, `{mac}`, `{ip}`, `{name}`, `{image}` in `template`.
pub fn render(template: &str, vars: &TemplateVars<'_>) -> String {
    let mac = vars.mac.map(|mac| mac.hyphenated()).unwrap_or_default();
    template
        .replace("{vip}", &vars.vip.to_string())
        .replace("{mac}", &mac)
        .replace("{ip}", &vars.ip.to_string())
        .replace("{name}", vars.name)
        .replace("{image}", vars.image)
}

/// iPXE says who it is with user class "iPXE" (option 77) and by sending
/// its own option 175.
pub fn is_ipxe(request: &Request) -> bool {
    request.options.contains_key(&OPTION_IPXE_ENCAP)
        || request
            .options
            .get(&77)
            .is_some_and(|class| class.windows(4).any(|w| w == b"iPXE"))
}

/// Option 60 starts with "PXEClient" (PXE spec 2.1 §2.2.1).
pub fn is_pxe_client(request: &Request) -> bool {
    request
        .vendor_class()
        .is_some_and(|class| class.starts_with(b"PXEClient"))
}

/// Option 93, else the `Arch:NNNNN` field of a PXE vendor class
/// (`PXEClient:Arch:00007:UNDI:003010`).
pub fn client_arch(request: &Request) -> Option<u16> {
    request.client_arch().or_else(|| {
        let class = request.vendor_class()?;
        let digits = class.strip_prefix(b"PXEClient:Arch:")?.get(..5)?;
        std::str::from_utf8(digits).ok()?.parse().ok()
    })
}

/// Choose what this client boots.
pub fn boot_options(boot: &BootConfig, request: &Request, vars: &TemplateVars<'_>) -> BootOptions {
    let ipxe = is_ipxe(request);
    let file = if ipxe {
        render(&boot.ipxe_script, vars)
    } else {
        client_arch(request)
            .and_then(|arch| boot.arch_files.iter().find(|row| row.arch == arch))
            .map(|row| row.file.clone())
            .unwrap_or_else(|| boot.default_file.clone())
    };
    let root_path = (!boot.root_path.is_empty()).then(|| render(&boot.root_path, vars));
    BootOptions {
        file,
        root_path,
        pxe_client: is_pxe_client(request),
        ipxe,
    }
}

/// Option 43 for PXE clients: boot the offered file, skip discovery.
pub fn pxe_vendor_options() -> Vec<u8> {
    vec![
        PXE_DISCOVERY_CONTROL,
        1,
        PXE_USE_BOOT_FILE,
        PXE_SUBOPTION_END,
    ]
}

/// Option 175 carrying 176 = 1.
pub fn ipxe_no_pxedhcp() -> Vec<u8> {
    vec![IPXE_NO_PXEDHCP, 1, 1]
}
