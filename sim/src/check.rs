//! Invariant checkers: what must hold after a run, judged from the trace
//! (the segment's view of VIP ownership and the client's probes), never
//! from what the nodes believe.

use std::time::Duration;

use ironroot_net::Instant;

use std::collections::BTreeMap;

use crate::cluster::{ResourceEvent, RESOURCES};
use crate::scenario::Scenario;
use crate::world::RunTrace;

/// The verdict on one run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Verdict {
    pub passed: bool,
    pub violations: Vec<String>,
    /// From the first fault to the first answer from the final responder.
    pub migration: Option<Duration>,
}

/// Judge `trace` against `scenario`'s expectations.
pub fn check(scenario: &Scenario, trace: &RunTrace) -> Verdict {
    let expect = &scenario.expect;
    let mut violations = Vec::new();
    if let Some(error) = &trace.host_error {
        violations.push(format!("a host failed: {error}"));
    }
    if expect.dual_owner_expected && trace.dual_owner.is_empty() {
        violations.push(
            "the scenario expects a split brain, but the VIP never had two holders".to_owned(),
        );
    }
    if let Some(max) = expect.owner_changes_max {
        if trace.owner_changes > max {
            violations.push(format!(
                "the VIP holder set changed {} times, at most {max} allowed (flapping)",
                trace.owner_changes
            ));
        }
    }
    violations.extend(resource_order(&trace.resource_events));
    violations.extend(crate::service_checks::check(
        scenario,
        &trace.services,
        trace.first_fault,
    ));
    match (&scenario.store, &trace.store) {
        (Some(config), Some(store)) => violations.extend(crate::store::check::check(config, store)),
        (Some(_), None) => violations.push("the store scenario produced no store trace".to_owned()),
        _ => {}
    }
    if expect.single_owner {
        for (start, end, holders) in &trace.dual_owner {
            violations.push(format!(
                "VIP {} held by more than one host from {start} to {end}: {}",
                scenario.vip,
                holders.join(", ")
            ));
        }
    }
    let last = trace
        .transitions
        .last()
        .and_then(|(_, responder)| responder.clone());
    if let Some(expected) = &expect.final_responder {
        if last.as_ref() != Some(expected) {
            violations.push(format!(
                "the last probe was answered by {}, expected {expected}",
                last.as_deref().unwrap_or("nobody")
            ));
        }
    }
    for never in &expect.never_responders {
        if let Some((at, _)) = trace
            .transitions
            .iter()
            .find(|(_, r)| r.as_ref() == Some(never))
        {
            violations.push(format!(
                "{never} answered a probe at {at}, which it must never do"
            ));
        }
    }
    let migration = migration(trace, expect.final_responder.as_deref());
    if let Some(budget) = expect.migration_max {
        match migration {
            Some(took) if took <= budget => {}
            Some(took) => {
                violations.push(format!("VIP migration took {took:?}, budget {budget:?}"))
            }
            None => violations.push("the VIP never migrated to the expected responder".to_owned()),
        }
    }
    Verdict {
        passed: violations.is_empty(),
        violations,
        migration,
    }
}

fn migration(trace: &RunTrace, responder: Option<&str>) -> Option<Duration> {
    let fault: Instant = trace.first_fault?;
    let responder = responder?;
    trace
        .transitions
        .iter()
        .find(|(at, r)| *at >= fault && r.as_deref() == Some(responder))
        .map(|(at, _)| *at - fault)
}

/// Resources start in [`RESOURCES`] order, stop in reverse, and the VIP is
/// claimed only with every resource running — per host, from the cluster
/// manager's own events.
pub fn resource_order(events: &[(Instant, String, ResourceEvent)]) -> Vec<String> {
    let mut running: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut violations = Vec::new();
    for (at, host, event) in events {
        let stack = running.entry(host.as_str()).or_default();
        match event {
            ResourceEvent::Started(name) => {
                let expected = RESOURCES.get(stack.len()).copied();
                if expected != Some(name.as_str()) {
                    violations.push(format!(
                        "{host} started {name} at {at} out of order (running: {stack:?})"
                    ));
                }
                stack.push(name);
            }
            ResourceEvent::Stopped(name) => {
                if let Some(position) = stack.iter().position(|r| *r == name) {
                    if position + 1 != stack.len() {
                        violations.push(format!(
                            "{host} stopped {name} at {at} before {:?}",
                            &stack[position + 1..]
                        ));
                    }
                    stack.remove(position);
                }
            }
            ResourceEvent::VipClaimed if stack.len() != RESOURCES.len() => {
                violations.push(format!(
                    "{host} claimed the VIP at {at} with only {stack:?} running"
                ));
            }
            ResourceEvent::VipClaimed | ResourceEvent::VipReleased => {}
            ResourceEvent::Crashed => stack.clear(),
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(host: &str, name: &str) -> (Instant, String, ResourceEvent) {
        (
            Instant::ZERO,
            host.to_owned(),
            ResourceEvent::Started(name.to_owned()),
        )
    }

    #[test]
    fn resources_out_of_order_are_reported() {
        let good: Vec<_> = RESOURCES.iter().map(|r| started("a", r)).collect();
        assert!(resource_order(&good).is_empty());
        let bad = vec![started("a", "nfs")];
        assert_eq!(resource_order(&bad).len(), 1);
        let early_vip = vec![
            started("a", "store"),
            (Instant::ZERO, "a".to_owned(), ResourceEvent::VipClaimed),
        ];
        assert!(resource_order(&early_vip)[0].contains("claimed the VIP"));
    }
}
