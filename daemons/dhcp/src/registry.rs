//! The client registry as DHCP sees it: MAC -> name, address, image. The
//! store's replicated registry implements [`Registry`]; [`MemoryRegistry`]
//! serves tests and static configs.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::wire::Mac;

/// One reserved client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub mac: Mac,
    /// Host name (option 12).
    pub name: String,
    pub ip: Ipv4Addr,
    /// Image the client boots; available to boot-file templates as `{image}`.
    pub image: String,
}

/// Read access to reservations. Lookups must be cheap: they run for every
/// datagram, and the pool asks [`Registry::is_reserved`] for every address
/// it considers.
pub trait Registry {
    /// Called once per datagram before any lookup: a registry that answers
    /// from a copy brings it up to date here (cheaply when nothing changed).
    fn refresh(&mut self) {}
    /// The reservation of `mac`, if any.
    fn lookup(&self, mac: &Mac) -> Option<Reservation>;
    /// Whether `ip` is reserved for some client: the pool never hands it out.
    fn is_reserved(&self, ip: Ipv4Addr) -> bool;
}

impl<T: Registry + ?Sized> Registry for Arc<T> {
    fn lookup(&self, mac: &Mac) -> Option<Reservation> {
        (**self).lookup(mac)
    }
    fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        (**self).is_reserved(ip)
    }
}

/// Why a reservation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("address {ip} is already reserved for {owner}")]
    AddressTaken { ip: Ipv4Addr, owner: Mac },
    #[error("registry is full ({reservations_max} reservations)")]
    Full { reservations_max: usize },
}

/// Reservations held in memory.
#[derive(Clone, Debug)]
pub struct MemoryRegistry {
    by_mac: BTreeMap<Mac, Reservation>,
    by_ip: BTreeMap<Ipv4Addr, Mac>,
    reservations_max: usize,
}

impl MemoryRegistry {
    pub fn new(reservations_max: usize) -> MemoryRegistry {
        MemoryRegistry {
            by_mac: BTreeMap::new(),
            by_ip: BTreeMap::new(),
            reservations_max,
        }
    }

    /// Add or replace the reservation of `reservation.mac`.
    pub fn insert(&mut self, reservation: Reservation) -> Result<(), RegistryError> {
        if let Some(owner) = self.by_ip.get(&reservation.ip) {
            if *owner != reservation.mac {
                return Err(RegistryError::AddressTaken {
                    ip: reservation.ip,
                    owner: *owner,
                });
            }
        }
        if !self.by_mac.contains_key(&reservation.mac) && self.by_mac.len() >= self.reservations_max
        {
            return Err(RegistryError::Full {
                reservations_max: self.reservations_max,
            });
        }
        if let Some(old) = self.by_mac.insert(reservation.mac, reservation.clone()) {
            self.by_ip.remove(&old.ip);
        }
        self.by_ip.insert(reservation.ip, reservation.mac);
        Ok(())
    }

    /// Remove the reservation of `mac`.
    pub fn remove(&mut self, mac: &Mac) -> Option<Reservation> {
        let old = self.by_mac.remove(mac)?;
        self.by_ip.remove(&old.ip);
        Some(old)
    }

    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }
}

impl Registry for MemoryRegistry {
    fn lookup(&self, mac: &Mac) -> Option<Reservation> {
        self.by_mac.get(mac).cloned()
    }
    fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        self.by_ip.contains_key(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reservation(last: u8, ip_last: u8) -> Reservation {
        Reservation {
            mac: Mac([2, 0, 0, 0, 0, last]),
            name: format!("node{last}"),
            ip: Ipv4Addr::new(10, 0, 0, ip_last),
            image: "debian".into(),
        }
    }

    #[test]
    fn one_address_per_reservation_and_bounded() {
        let mut registry = MemoryRegistry::new(2);
        registry.insert(reservation(1, 21)).expect("first");
        assert!(matches!(
            registry.insert(reservation(2, 21)),
            Err(RegistryError::AddressTaken { .. })
        ));
        registry.insert(reservation(2, 22)).expect("second");
        assert!(matches!(
            registry.insert(reservation(3, 23)),
            Err(RegistryError::Full { .. })
        ));
        // Moving a client frees its old address.
        registry.insert(reservation(1, 31)).expect("move");
        assert!(!registry.is_reserved(Ipv4Addr::new(10, 0, 0, 21)));
        assert!(registry.is_reserved(Ipv4Addr::new(10, 0, 0, 31)));
        assert_eq!(registry.len(), 2);
    }
}
