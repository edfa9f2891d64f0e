//! `ironroot split-brain resolve` and the replication part of `ironroot
//! status`.
//!
//! After a split brain the default policy (`disconnect`) leaves the nodes
//! disconnected until an operator decides whose changes win. The decision is
//! armed on one node and applied at the next replication connection (the
//! primary reconnects within its reconnect delay):
//! - `--keep-local` on the active node (the primary): the peer's divergent
//!   entries are dropped there, their generations kept as branches;
//! - `--discard-local` on the standby (the secondary): the same, done by
//!   the standby itself.
//!
//! Either way the loser resyncs from the winner and replication carries
//! on. The loser publishes the kept generations as `branch/<image>/<seq>`
//! refs the next time it is active, so both replicas then hold them.
//! Nothing is destroyed.

use std::time::Duration;

use serde_json::json;

use crate::admin::Response;
use crate::node::NodeState;
use crate::replstatus::ReplicationState;

/// How long `resolve` waits for the resolution to apply before answering
/// that it stays armed (the peer may be unreachable).
pub const RESOLVE_WAIT: Duration = Duration::from_secs(15);
const RESOLVE_POLL: Duration = Duration::from_millis(50);

/// What the operator should run, by the role of this node.
pub fn advice(role: &str) -> &'static str {
    if role == "active" {
        "to keep this node's changes run `ironroot split-brain resolve --keep-local` here; \
         to keep the peer's instead run `ironroot switchover`, then \
         `ironroot split-brain resolve --discard-local` here"
    } else {
        "to discard this node's changes (kept as branches) run \
         `ironroot split-brain resolve --discard-local` here; to keep them instead run \
         `ironroot switchover` on the active node, then \
         `ironroot split-brain resolve --keep-local` here"
    }
}

/// The replication section of `ironroot status`.
pub fn replication_status(node: &NodeState, role: &str) -> serde_json::Value {
    let state = node.replication.state();
    let last_seq = node
        .store
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .state()
        .last_seq();
    let mut out = json!({ "link": state.link.name() });
    if let Some(primary) = node.replication.primary() {
        let report = primary.report();
        let progress = report.progress;
        out["role"] = json!("primary");
        out["peer_acked_seq"] = json!(progress.peer_acked);
        out["lag_entries"] = json!(last_seq.saturating_sub(progress.peer_acked));
        out["lag_bytes"] = json!(progress.bytes_remaining);
        if let (true, Some((from_seq, to_seq))) = (progress.resyncing, state.resync) {
            out["resync"] = json!({
                "from_seq": from_seq,
                "to_seq": to_seq,
                "entries_remaining": last_seq.saturating_sub(progress.peer_acked),
                "objects_remaining": progress.objects_remaining,
            });
        }
        if report.keep_local_pending {
            out["resolution_pending"] = json!("keep-local");
        }
    } else if let Some(control) = node.replication.secondary() {
        out["role"] = json!("secondary");
        if control.discard_pending() {
            out["resolution_pending"] = json!("discard-local");
        }
    } else {
        out["role"] = json!("stopped");
    }
    if state.needs_resolution() {
        let d = state.divergence;
        out["split_brain"] = json!({
            "common_seq": d.map(|d| d.common_seq),
            "local_entries": d.map(|d| d.local_entries),
            "peer_entries": d.map(|d| d.peer_entries),
            "resolve": advice(role),
        });
    }
    if let Some(discard) = &state.last_discard {
        out["last_discard"] = json!({
            "common_seq": discard.common_seq,
            "branches_kept": discard.branches,
        });
    }
    out
}

/// Arm the operator's resolution on this node and wait (bounded) for it to
/// apply.
pub async fn resolve(node: &NodeState, keep_local: bool) -> Response {
    let role = node.status().role;
    let before = node.replication.state();
    if !before.needs_resolution() {
        return Response::error(format!(
            "no split brain to resolve: replication is {}",
            before.link.name()
        ));
    }
    let active = role == "active";
    if keep_local && !active {
        return Response::error(format!(
            "this node is {role}: its changes can only win from the active node; \
             run `ironroot switchover` on the active node, then \
             `ironroot split-brain resolve --keep-local` here"
        ));
    }
    if !keep_local && active {
        return Response::error(
            "this node is active and clients read its data: to discard its changes, \
             run `ironroot switchover` (the peer becomes active with its changes), then \
             `ironroot split-brain resolve --discard-local` here",
        );
    }
    if keep_local {
        let Some(primary) = node.replication.primary() else {
            return Response::error("this node's store is not primary yet; try again");
        };
        if primary.keep_local().await.is_err() {
            return Response::error("the replication driver is gone");
        }
    } else {
        let Some(control) = node.replication.secondary() else {
            return Response::error("this node's store is not serving as secondary; try again");
        };
        control.discard_local();
    }
    tracing::warn!(
        keep_local,
        divergence = ?before.divergence,
        "split brain: operator resolution armed"
    );
    wait_applied(node, keep_local, &before).await
}

async fn wait_applied(node: &NodeState, keep_local: bool, before: &ReplicationState) -> Response {
    let polls = RESOLVE_WAIT.as_millis() / RESOLVE_POLL.as_millis();
    for _ in 0..polls {
        tokio::time::sleep(RESOLVE_POLL).await;
        let now = node.replication.state();
        let applied = if keep_local {
            now.in_sync_total > before.in_sync_total && !now.needs_resolution()
        } else {
            now.discards_total > before.discards_total
        };
        if !applied {
            continue;
        }
        let message = if keep_local {
            "resolved: this node's changes were kept; the peer resynced and kept its \
             divergent generations as branches"
                .to_owned()
        } else {
            "resolved: this node's divergent generations are kept as branches (published \
             the next time it is active) and it resyncs from the peer"
                .to_owned()
        };
        let branches = if keep_local {
            json!(null)
        } else {
            json!(now.last_discard.as_ref().map(|d| d.branches.clone()))
        };
        return Response::ok(json!({
            "message": message,
            "branches_kept": branches,
            "link": now.link.name(),
        }));
    }
    Response::ok(json!({
        "message": "resolution armed: it applies at the next connection with the peer \
                    (`ironroot status` shows it pending)",
        "link": node.replication.state().link.name(),
    }))
}
