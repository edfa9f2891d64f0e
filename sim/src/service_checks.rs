//! The checkers of DHCP/TFTP scenarios (see [`crate::services`]): judged
//! from what the simulated PXE clients saw and what the store of the final
//! VIP owner holds, never from what the servers believe.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ironroot_net::Instant;

use crate::scenario::Scenario;
#[cfg(test)]
use crate::services::ServicesFile;
use crate::services::{client_key, ClientEvent, Services, ServicesTrace};

/// Judge the services part of a run.
pub fn check(
    scenario: &Scenario,
    trace: &ServicesTrace,
    first_fault: Option<Instant>,
) -> Vec<String> {
    let Some(services) = &scenario.services else {
        return Vec::new();
    };
    let mut violations = unique_addresses(trace);
    violations.extend(addresses_kept(services, trace, first_fault));
    violations.extend(leases_in_the_store(trace));
    violations.extend(tftp_complete(services, trace));
    violations
}

/// Never one address held by two clients at once. A client holds an
/// address from its ACK until a NAK for it or an ACK for another address
/// (leases outlast the scenario).
fn unique_addresses(trace: &ServicesTrace) -> Vec<String> {
    let mut holder: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    let mut held: BTreeMap<String, Ipv4Addr> = BTreeMap::new();
    let mut violations = Vec::new();
    for (at, client, event) in &trace.events {
        match event {
            ClientEvent::Ack { ip, .. } => {
                if let Some(other) = holder.get(ip).filter(|other| *other != client) {
                    violations.push(format!(
                        "{ip} ACKed to {client} at {at} while {other} holds it"
                    ));
                }
                if let Some(old) = held.insert(client.clone(), *ip) {
                    if old != *ip {
                        holder.remove(&old);
                    }
                }
                holder.insert(*ip, client.clone());
            }
            ClientEvent::Nak { ip } if holder.get(ip) == Some(client) => {
                holder.remove(ip);
                held.remove(client);
            }
            _ => {}
        }
    }
    violations
}

/// Every client bound before the first fault is answered by the new active
/// node after it, with the same address, and is never NAKed.
fn addresses_kept(
    services: &Services,
    trace: &ServicesTrace,
    first_fault: Option<Instant>,
) -> Vec<String> {
    let mut violations = Vec::new();
    let acked = trace
        .events
        .iter()
        .filter(|(_, _, e)| matches!(e, ClientEvent::Ack { .. }))
        .map(|(_, c, _)| c.as_str())
        .collect::<BTreeSet<_>>();
    if (acked.len() as u32) < services.dhcp_clients {
        violations.push(format!(
            "only {} of {} DHCP clients got an address",
            acked.len(),
            services.dhcp_clients
        ));
    }
    // A NAK in SELECTING is fine (an offer the dead node made may since
    // have gone to another client); a NAK for an ACKed address is not.
    let mut held: BTreeMap<&str, Ipv4Addr> = BTreeMap::new();
    for (at, client, event) in &trace.events {
        match event {
            ClientEvent::Ack { ip, .. } => {
                held.insert(client, *ip);
            }
            ClientEvent::Nak { ip } if held.get(client.as_str()) == Some(ip) => {
                violations.push(format!("{client} was NAKed for its address {ip} at {at}"));
                held.remove(client.as_str());
            }
            _ => {}
        }
    }
    let Some(fault) = first_fault else {
        return violations;
    };
    for client in acked {
        let events = || trace.events.iter().filter(move |(_, c, _)| c == client);
        let before = events()
            .filter(|(at, _, _)| *at < fault)
            .filter_map(|(_, _, e)| match e {
                ClientEvent::Ack { ip, .. } => Some(*ip),
                _ => None,
            })
            .next_back();
        let Some(ip) = before else { continue };
        let mut renewed_after = false;
        for (at, _, event) in events().filter(|(at, _, _)| *at >= fault) {
            if let ClientEvent::Ack { ip: got, renewal } = event {
                if *got != ip {
                    violations.push(format!(
                        "{client} held {ip} before the fault but was given {got} at {at}"
                    ));
                }
                renewed_after |= *renewal && *got == ip;
            }
        }
        if !renewed_after {
            violations.push(format!(
                "{client} held {ip} before the fault and no renewal was answered after it"
            ));
        }
    }
    violations
}

/// The address every client holds at the end is recorded, bound to that
/// client, in the journal of the node that is primary at the end.
fn leases_in_the_store(trace: &ServicesTrace) -> Vec<String> {
    let Some((node, leases)) = &trace.primary_leases else {
        return vec!["the VIP's owner at the end has no primary store".to_owned()];
    };
    let mut held: BTreeMap<&str, Ipv4Addr> = BTreeMap::new();
    for (_, client, event) in &trace.events {
        match event {
            ClientEvent::Ack { ip, .. } => {
                held.insert(client, *ip);
            }
            ClientEvent::Nak { .. } => {
                held.remove(client.as_str());
            }
            _ => {}
        }
    }
    let by_ip: BTreeMap<Ipv4Addr, &Vec<u8>> = leases
        .iter()
        .map(|lease| (lease.ip, &lease.client))
        .collect();
    let mut violations = Vec::new();
    for (client, ip) in held {
        let expected = crate::pxe::mac_of(client).map(client_key);
        if by_ip.get(&ip).copied() != expected.as_ref() {
            violations.push(format!(
                "{client} holds {ip} but {node}'s journal records {:?} for it",
                by_ip.get(&ip)
            ));
        }
    }
    violations
}

/// Every TFTP client completed its fetches, and every file it completed
/// has the boot file's bytes.
fn tftp_complete(services: &Services, trace: &ServicesTrace) -> Vec<String> {
    let mut completed: BTreeMap<&str, u32> = BTreeMap::new();
    let mut violations = Vec::new();
    for (at, client, event) in &trace.events {
        if let ClientEvent::TftpCompleted { correct, bytes } = event {
            if !correct {
                violations.push(format!(
                    "{client} completed a TFTP transfer at {at} with wrong bytes ({bytes} bytes)"
                ));
            }
            *completed.entry(client).or_default() += 1;
        }
    }
    for i in 0..services.tftp_clients {
        let name = crate::pxe::tftp_client_name(i);
        let done = completed.get(name.as_str()).copied().unwrap_or(0);
        if done < services.tftp_fetches {
            violations.push(format!(
                "{name} completed {done} of {} TFTP fetches",
                services.tftp_fetches
            ));
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn ack(ms: u64, client: &str, last: u8, renewal: bool) -> (Instant, String, ClientEvent) {
        let ip = Ipv4Addr::new(10, 0, 0, last);
        (at(ms), client.to_owned(), ClientEvent::Ack { ip, renewal })
    }

    #[test]
    fn an_address_acked_to_two_clients_is_a_violation() {
        let mut trace = ServicesTrace {
            events: vec![ack(1, "dhcp-0", 100, false), ack(2, "dhcp-1", 100, false)],
            ..ServicesTrace::default()
        };
        assert_eq!(unique_addresses(&trace).len(), 1);
        // Once the first holder moved to another address, it is free.
        trace.events = vec![
            ack(1, "dhcp-0", 100, false),
            ack(2, "dhcp-0", 101, false),
            ack(3, "dhcp-1", 100, false),
        ];
        assert!(unique_addresses(&trace).is_empty());
    }

    #[test]
    fn a_client_must_renew_its_address_after_the_fault() {
        let services = ServicesFile {
            dhcp_clients: 1,
            pool_size: 4,
            lease_secs: 120,
            renew_ms: 1000,
            late_dhcp_clients: 0,
            late_start_ms: 0,
            tftp_clients: 0,
            tftp_fetches: 1,
            tftp_file_bytes: 10,
            tftp_blksize: None,
            loss_rate: 0.0,
        }
        .validate(10_000)
        .expect("valid");
        let mut trace = ServicesTrace {
            events: vec![ack(1, "dhcp-0", 100, false)],
            ..ServicesTrace::default()
        };
        let fault = Some(at(5));
        assert_eq!(addresses_kept(&services, &trace, fault).len(), 1);
        trace.events.push(ack(9, "dhcp-0", 100, true));
        assert!(addresses_kept(&services, &trace, fault).is_empty());
        trace.events.push((
            at(10),
            "dhcp-0".to_owned(),
            ClientEvent::Nak {
                ip: Ipv4Addr::new(10, 0, 0, 100),
            },
        ));
        assert_eq!(addresses_kept(&services, &trace, fault).len(), 1);
    }

    #[test]
    fn wrong_bytes_and_missing_fetches_are_violations() {
        let services = ServicesFile {
            dhcp_clients: 1,
            pool_size: 4,
            lease_secs: 120,
            renew_ms: 1000,
            late_dhcp_clients: 0,
            late_start_ms: 0,
            tftp_clients: 1,
            tftp_fetches: 2,
            tftp_file_bytes: 10,
            tftp_blksize: None,
            loss_rate: 0.0,
        }
        .validate(10_000)
        .expect("valid");
        let done = |correct| {
            (
                at(1),
                "tftp-0".to_owned(),
                ClientEvent::TftpCompleted { correct, bytes: 10 },
            )
        };
        let mut trace = ServicesTrace {
            events: vec![done(true)],
            ..ServicesTrace::default()
        };
        assert_eq!(tftp_complete(&services, &trace).len(), 1, "one of two");
        trace.events.push(done(false));
        assert_eq!(tftp_complete(&services, &trace).len(), 1, "wrong bytes");
        trace.events.push(done(true));
        assert_eq!(tftp_complete(&services, &trace).len(), 1);
        trace.events.retain(|(_, _, e)| {
            *e != ClientEvent::TftpCompleted {
                correct: false,
                bytes: 10,
            }
        });
        assert!(tftp_complete(&services, &trace).is_empty());
    }
}
