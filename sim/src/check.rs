//! Invariant checkers: what must hold after a run, judged from the trace
//! (the segment's view of VIP ownership and the client's probes), never
//! from what the nodes believe.

use std::time::Duration;

use ironroot_net::Instant;

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
