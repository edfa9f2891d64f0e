//! Per-client boot configs served by TFTP, generated on request from the
//! client registry by the boot module: `ipxe/clients/<mac>.ipxe` and
//! `pxelinux.cfg/01-<mac>`. Everything else comes from the boot tree.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ironroot_boot::bootcfg::{ipxe_script, pxelinux_config, Mac};
use ironroot_boot::ClientBoot;
use ironroot_tftp::source::Generated;
use ironroot_tftp::TftpPath;

use crate::storefs::SharedStore;

/// Serial console the generated command lines use.
pub const CONSOLE: &str = "ttyS0,115200";

/// The [`Generated`] hook of the node's TFTP server.
pub struct ClientConfigs {
    pub store: SharedStore,
    pub vip: Ipv4Addr,
    /// Extra kernel arguments for every client (validated by the boot module).
    pub extra: Vec<String>,
}

enum Wanted {
    Ipxe(Mac),
    Pxelinux(Mac),
}

fn parse(path: &str) -> Option<Wanted> {
    if let Some(name) = path
        .strip_prefix("ipxe/clients/")
        .and_then(|p| p.strip_suffix(".ipxe"))
    {
        return name.parse().ok().map(Wanted::Ipxe);
    }
    let name = path.strip_prefix("pxelinux.cfg/01-")?;
    name.parse().ok().map(Wanted::Pxelinux)
}

impl Generated for ClientConfigs {
    fn generate(&self, path: &TftpPath, _client: IpAddr) -> Option<Arc<[u8]>> {
        let wanted = parse(&path.to_string())?;
        let mac = match &wanted {
            Wanted::Ipxe(mac) | Wanted::Pxelinux(mac) => *mac,
        };
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let client = store.client_by_mac(&mac.0)?;
        let boot = ClientBoot {
            server: self.vip,
            client: client.name.clone(),
            image: client.image.clone(),
            console: CONSOLE.to_owned(),
            extra: self.extra.clone(),
        };
        let text = match wanted {
            Wanted::Ipxe(mac) => ipxe_script(mac, &boot),
            Wanted::Pxelinux(mac) => pxelinux_config(mac, &boot),
        };
        match text {
            Ok(text) => Some(Arc::from(text.into_bytes())),
            Err(error) => {
                tracing::warn!(%error, path = %path, "boot config not generated");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_client_config_paths() {
        assert!(matches!(
            parse("ipxe/clients/52-54-00-00-00-01.ipxe"),
            Some(Wanted::Ipxe(_))
        ));
        assert!(matches!(
            parse("pxelinux.cfg/01-52-54-00-00-00-01"),
            Some(Wanted::Pxelinux(_))
        ));
        assert!(parse("images/debian/vmlinuz").is_none());
        assert!(parse("ipxe/clients/not-a-mac.ipxe").is_none());
    }
}
