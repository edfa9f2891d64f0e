//! The admin API's answers on a node, the fencing choice and the metrics
//! samples.

use std::sync::Arc;

use ironroot_cluster::{Admin, ClusterConfig, QuorumMode};
use ironroot_net::resource::BoxFuture;
use ironroot_store::model::Timestamp;
use ironroot_store::store::{Store, StoreError};
use serde_json::json;

use crate::admin::{standby_refusal, Request, Response};
use crate::metrics::Sample;
use crate::node::NodeState;

/// The node's admin handler.
pub struct Handler {
    state: NodeState,
    checkouts: crate::shell::Checkouts,
}

impl Handler {
    pub fn new(state: NodeState) -> Arc<Handler> {
        Arc::new(Handler {
            state,
            checkouts: crate::shell::Checkouts::default(),
        })
    }
}

fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!(
            "{text}: a MAC address has six parts (52:54:00:12:34:56)"
        ));
    }
    for (byte, part) in mac.iter_mut().zip(parts) {
        *byte = u8::from_str_radix(part, 16).map_err(|_| format!("{text}: {part} is not hex"))?;
    }
    Ok(mac)
}

pub(crate) fn now_timestamp() -> Timestamp {
    // The admin API runs only in production, on the node's real clock.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now();
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        secs: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: since.subsec_nanos(),
    }
}

impl crate::admin::Handler for Handler {
    async fn handle(&self, request: Request) -> Response {
        let status = self.state.status();
        if request.is_write() && status.role != "active" {
            let peer_active = (status.peer == "alive").then(|| self.peer_name());
            return standby_refusal(&status.role, peer_active.as_deref());
        }
        match request {
            Request::Status {} => self.status(),
            Request::Switchover {} => self.switchover().await,
            Request::Standby { on } => self.admin(
                Admin::Standby(on),
                if on { "standby on" } else { "standby off" },
            ),
            Request::ImageShellBegin { name, workdir } => {
                crate::shell::begin(&self.state, &self.checkouts, name, workdir).await
            }
            Request::ImageShellEnd {
                workdir,
                commit,
                message,
            } => crate::shell::end(&self.state, &self.checkouts, workdir, commit, message).await,
            Request::SplitBrainResolve { keep_local } => {
                crate::resolve::resolve(&self.state, keep_local).await
            }
            other => self.store_request(other).await,
        }
    }
}

impl Handler {
    fn peer_name(&self) -> String {
        self.state.settings.cluster.peer.name.clone()
    }

    /// A switchover, answered once the cluster manager began it or refused
    /// it (no peer alive and eligible to take over).
    async fn switchover(&self) -> Response {
        let rejected_before = self.state.status().admin_rejections;
        if self.state.admin.try_send(Admin::Switchover).is_err() {
            return Response::error("the cluster manager is busy; try again");
        }
        for _ in 0..SWITCHOVER_ANSWER_POLLS {
            let status = self.state.status();
            if status.admin_rejections > rejected_before {
                return Response::error(format!(
                    "switchover refused: this node is {} and the peer ({}) is {}; \
                     a switchover needs this node active and the peer alive and not outdated",
                    status.role,
                    self.peer_name(),
                    status.peer
                ));
            }
            if status.role != "active" {
                return Response::ok(json!({ "message": "switchover started" }));
            }
            tokio::time::sleep(SWITCHOVER_ANSWER_POLL).await;
        }
        Response::ok(json!({ "message": "switchover requested" }))
    }

    fn admin(&self, command: Admin, done: &str) -> Response {
        match self.state.admin.try_send(command) {
            Ok(()) => Response::ok(json!({ "message": done })),
            Err(_) => Response::error("the cluster manager is busy; try again"),
        }
    }

    fn status(&self) -> Response {
        let status = self.state.status();
        let replication = crate::resolve::replication_status(&self.state, &status.role);
        let store = self.state.store.lock().unwrap_or_else(|p| p.into_inner());
        let state = store.state();
        let images: Vec<_> = state
            .refs
            .iter()
            .filter_map(|(name, generation)| {
                name.strip_prefix("image/")
                    .map(|image| json!({ "image": image, "generation": generation }))
            })
            .collect();
        let branches: Vec<_> = state
            .refs
            .iter()
            .filter(|(name, _)| name.starts_with("branch/"))
            .map(|(name, generation)| json!({ "branch": name, "generation": generation }))
            .collect();
        Response::ok(json!({
            "node": status.node,
            "role": status.role,
            "peer": {
                "name": self.peer_name(),
                "state": status.peer,
                "links": status
                    .links_up
                    .iter()
                    .map(|up| if *up { "up" } else { "down" })
                    .collect::<Vec<_>>(),
            },
            "vip": status.vip,
            "failovers": status.failovers,
            "store": {
                "last_seq": state.last_seq(),
                "pool_leases": state.leases.len(),
                "epoch": format!("{:?}", store.epoch()),
                "content_hash": hex(&state.content_hash()),
                "branches_unpublished": store.branches().len(),
            },
            "replication": replication,
            "images": images,
            "branches": branches,
            "clients": state.clients.len(),
            "clients_seen": clients_seen(&self.state.seen, &state.clients),
            "quorum": quorum(&status, &self.state.settings.cluster.quorum, self.state.seen.now()),
        }))
    }

    fn read_request(&self, request: &Request) -> Option<Response> {
        let store = self.state.store.lock().unwrap_or_else(|p| p.into_inner());
        let state = store.state();
        let data = match request {
            Request::ImageList {} => json!(state.refs),
            Request::ImageLog { name } => json!(state
                .generations
                .values()
                .filter(|g| &g.image == name)
                .map(|g| json!({ "generation": g.id, "parent": g.parent, "time": g.time.secs, "message": g.message }))
                .collect::<Vec<_>>()),
            Request::ImageDiff { name, from, to } => match crate::diff::diff(&store, name, *from, *to) {
                Ok((changes, left_out)) => json!({ "changes": changes, "left_out": left_out }),
                Err(error) => return Some(Response::error(error.to_string())),
            },
            Request::ClientList {} => json!(state
                .clients
                .iter()
                .map(|(mac, c)| json!({ "name": c.name, "mac": ironroot_net::mac_text(mac), "ip": std::net::Ipv4Addr::from(c.ipv4).to_string(), "image": c.image, "exceptions": c.exceptions.is_some() }))
                .collect::<Vec<_>>()),
            _ => return None,
        };
        Some(Response::ok(data))
    }

    /// The change a write request makes, checked against the current state.
    fn write_fn(&self, request: Request) -> Result<WriteFn, String> {
        let store = self.state.store.lock().unwrap_or_else(|p| p.into_inner());
        let state = store.state();
        Ok(match request {
            Request::ImageImport { name, from } => {
                let path = std::path::PathBuf::from(&from);
                if !path.exists() {
                    return Err(format!("{from}: no such file or directory"));
                }
                let message = format!("import from {from}");
                if path.is_dir() {
                    Box::new(move |store: &mut Store| {
                        store.import_dir(&name, &path, now_timestamp(), &message)
                    })
                } else {
                    let file = std::fs::File::open(&path).map_err(|e| format!("{from}: {e}"))?;
                    Box::new(move |store: &mut Store| {
                        store.import_tar(&name, file, now_timestamp(), &message)
                    })
                }
            }
            Request::ImageRollback { name, generation } => Box::new(move |store: &mut Store| {
                store.rollback(
                    &name,
                    generation,
                    now_timestamp(),
                    &format!("rollback to {generation}"),
                )
            }),
            Request::ClientAdd {
                name,
                mac,
                ip,
                image,
            } => {
                let mac = parse_mac(&mac)?;
                let ip: std::net::Ipv4Addr = ip
                    .parse()
                    .map_err(|_| format!("{ip}: not an IPv4 address"))?;
                if state.current(&image).is_none() {
                    return Err(format!("no image named {image}; import it first"));
                }
                if let Some((other, _)) = state
                    .client_by_ipv4(ip.octets())
                    .filter(|(other, _)| *other != mac)
                {
                    return Err(format!(
                        "{ip} is already the address of {}",
                        ironroot_net::mac_text(&other)
                    ));
                }
                Box::new(move |store: &mut Store| {
                    store.upsert_client(mac, &name, ip.octets(), &image, None)
                })
            }
            Request::ClientException { name, path, from } => {
                let (mac, client) = state
                    .clients
                    .iter()
                    .find(|(_, c)| c.name == name)
                    .map(|(mac, c)| (*mac, c.clone()))
                    .ok_or_else(|| format!("no client named {name}"))?;
                let relative = path.trim_start_matches('/').to_owned();
                if relative.is_empty()
                    || relative
                        .split('/')
                        .any(|c| c.is_empty() || c == "." || c == "..")
                {
                    return Err(format!(
                        "{path}: give a path inside the image, like /etc/hostname"
                    ));
                }
                let content = std::fs::read(&from).map_err(|e| format!("{from}: {e}"))?;
                // The client's exception tree as it is, plus this file.
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                if let Some(exceptions) = &client.exceptions {
                    ironroot_store::export::export_tree(store.objects(), exceptions, dir.path())
                        .map_err(|e| e.to_string())?;
                }
                let target = dir.path().join(&relative);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                std::fs::write(&target, content).map_err(|e| e.to_string())?;
                Box::new(move |store: &mut Store| {
                    let staged =
                        ironroot_store::stage::import_dir(store.objects_mut(), dir.path())?;
                    store.upsert_client(
                        mac,
                        &client.name,
                        client.ipv4,
                        &client.image,
                        Some(&staged),
                    )
                })
            }
            Request::ClientRemove { name } => {
                let mac = state
                    .clients
                    .iter()
                    .find(|(_, c)| c.name == name)
                    .map(|(mac, _)| *mac);
                let mac = mac.ok_or_else(|| format!("no client named {name}"))?;
                Box::new(move |store: &mut Store| store.remove_client(mac))
            }
            other => return Err(format!("{other:?} is not supported by this node yet")),
        })
    }

    /// `boot import-kernel`: build the boot files off the async workers,
    /// then import the new boot tree as one replicated write.
    async fn import_kernel(
        &self,
        image: String,
        deb: Option<String>,
        from_image: bool,
    ) -> Result<WriteFn, String> {
        let store = std::sync::Arc::clone(&self.state.store);
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let staging = dir.path().to_owned();
        let built = tokio::task::spawn_blocking(move || {
            crate::boottree::stage_kernel(
                &store,
                &image,
                deb.map(std::path::PathBuf::from),
                from_image,
                &staging,
            )
            .map(|files| (files, image))
        })
        .await
        .map_err(|e| e.to_string())?;
        let (files, image) = built.map_err(|e| e.to_string())?;
        tracing::info!(?files, image, "boot files built");
        let message = format!("boot import-kernel {image}");
        Ok(Box::new(move |store: &mut Store| {
            let tree = dir.path().join("tree");
            store.import_dir(
                crate::boottree::BOOT_IMAGE,
                &tree,
                now_timestamp(),
                &message,
            )
        }))
    }

    async fn store_request(&self, request: Request) -> Response {
        if let Some(response) = self.read_request(&request) {
            return response;
        }
        let write = match request {
            Request::BootImportKernel {
                image,
                deb,
                from_image,
            } => self.import_kernel(image, deb, from_image).await,
            other => self.write_fn(other),
        };
        let write = match write {
            Ok(write) => write,
            Err(message) => return Response::error(message),
        };
        let Some(primary) = self.state.replication.primary() else {
            return Response::error("this node's store is not primary");
        };
        // Acknowledged only once the peer holds the entry durably (or the
        // peer is recorded Outdated).
        match primary.write(write).await {
            Ok(seq) => Response::ok(json!({ "seq": seq })),
            Err(error) => Response::error(error.to_string()),
        }
    }
}

type WriteFn =
    Box<dyn FnOnce(&mut Store) -> Result<ironroot_store::journal::Record, StoreError> + Send>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The fence this node uses: the configured command, or none (witness and
/// unsafe modes never fence).
pub fn fence_for(config: &ClusterConfig) -> NodeFence {
    match &config.quorum {
        QuorumMode::Fencing(fencing) => NodeFence(Some(ironroot_cluster::CommandFence::new(
            fencing.command.clone(),
        ))),
        QuorumMode::Witness { .. } | QuorumMode::Unsafe => NodeFence(None),
    }
}

/// The configured fencing command; without one every request is refused
/// (witness and unsafe modes never fence).
pub struct NodeFence(Option<ironroot_cluster::CommandFence>);

impl ironroot_cluster::Fence for NodeFence {
    fn fence(&self, node: &str) -> BoxFuture<'_, Result<(), ironroot_cluster::driver::FenceError>> {
        match &self.0 {
            Some(command) => command.fence(node),
            None => {
                let node = node.to_owned();
                Box::pin(async move { Err(ironroot_cluster::driver::FenceError::Refused(node)) })
            }
        }
    }
}

/// Metrics of the node.
pub fn samples(state: &NodeState) -> Vec<Sample> {
    let status = state.status();
    let mut samples: Vec<Sample> = [
        "starting",
        "standby",
        "promoting",
        "active",
        "stopping",
        "outdated",
        "maintenance",
    ]
    .iter()
    .map(|role| {
        Sample::gauge(
            "ironroot_role",
            "Cluster role of this node (1 = current).",
            f64::from(u8::from(status.role == *role)),
        )
        .label("role", *role)
    })
    .collect();
    samples.push(Sample::gauge(
        "ironroot_peer_alive",
        "Whether heartbeats from the peer arrive.",
        f64::from(u8::from(status.peer == "alive")),
    ));
    for (link, up) in status.links_up.iter().enumerate() {
        samples.push(
            Sample::gauge(
                "ironroot_peer_link_up",
                "Whether heartbeats from the peer arrive on this link (config order).",
                f64::from(u8::from(*up)),
            )
            .label("link", link.to_string()),
        );
    }
    let quorum = quorum(&status, &state.settings.cluster.quorum, state.seen.now());
    samples.push(Sample::gauge(
        "ironroot_quorum",
        "Whether this node has quorum (two of three votes, or the peer alive or fenced).",
        f64::from(u8::from(quorum["has_quorum"] == true)),
    ));
    if let Some(votes) = quorum["votes"].as_str().and_then(|v| v.split(' ').next()) {
        samples.push(Sample::gauge(
            "ironroot_quorum_votes",
            "Votes this node counts: its own, the peer's, the witness's lease.",
            votes.parse().unwrap_or(0.0),
        ));
    }
    samples.push(Sample::counter(
        "ironroot_failovers_total",
        "Times this node became active.",
        status.failovers,
    ));
    for reason in crate::node::DROP_REASONS {
        samples.push(
            Sample::counter(
                "ironroot_heartbeats_dropped_total",
                "Heartbeat packets dropped, by reason (forged = failed its HMAC).",
                status.heartbeats_dropped.get(reason).copied().unwrap_or(0),
            )
            .label("reason", reason),
        );
    }
    let store = state.store.lock().unwrap_or_else(|p| p.into_inner());
    samples.push(Sample::gauge(
        "ironroot_store_last_seq",
        "Last journal entry applied.",
        store.state().last_seq() as f64,
    ));
    samples.extend((state.counters)());
    // Replication: link, lag, resync progress, split brains.
    samples.extend(crate::replstatus::samples(
        &state.replication.state(),
        state.replication.primary().map(|p| p.report()),
        store.state().last_seq(),
    ));
    samples.push(Sample::gauge(
        "ironroot_store_branches_unpublished",
        "Generations kept from a lost split brain, published when this node is next active.",
        store.branches().len() as f64,
    ));
    samples.push(Sample::gauge(
        "ironroot_clients",
        "Clients in the registry.",
        store.state().clients.len() as f64,
    ));
    let seen = clients_seen(&state.seen, &store.state().clients);
    samples.push(Sample::gauge(
        "ironroot_clients_seen",
        "Registered clients a service heard from in the last 10 minutes.",
        seen["registered"].as_f64().unwrap_or(0.0),
    ));
    samples
}

/// How long a switchover request waits to learn whether the cluster
/// manager began or refused it.
const SWITCHOVER_ANSWER_POLL: std::time::Duration = std::time::Duration::from_millis(10);
const SWITCHOVER_ANSWER_POLLS: u32 = 100;

/// Registered clients listed by `status` at most (the most recent first).
pub const CLIENTS_SEEN_LISTED: usize = 20;

/// Which registered clients the services heard from lately (see
/// [`crate::seen`]).
fn clients_seen(
    seen: &crate::seen::Seen,
    clients: &std::collections::BTreeMap<[u8; 6], ironroot_store::journal::Client>,
) -> serde_json::Value {
    let registered = clients
        .iter()
        .map(|(mac, c)| (c.name.as_str(), *mac, std::net::Ipv4Addr::from(c.ipv4)));
    let (recent, others) = seen.recent(registered);
    json!({
        "within_secs": crate::seen::RECENT.as_secs(),
        "registered": recent.len(),
        "unregistered_addresses": others,
        "latest": recent.iter().take(CLIENTS_SEEN_LISTED).collect::<Vec<_>>(),
    })
}

/// The quorum as `status` shows it: with a witness, a node may be active
/// with two of three votes (its own, the peer's while it is alive, the
/// witness's while its lease runs); in fencing mode once the peer is alive
/// or fenced.
pub fn quorum(
    status: &crate::node::NodeStatus,
    mode: &ironroot_cluster::QuorumMode,
    now: ironroot_net::Instant,
) -> serde_json::Value {
    use ironroot_cluster::QuorumMode;
    let peer = status.peer == "alive";
    match mode {
        QuorumMode::Witness { addr, .. } => {
            let lease_ms = status
                .witness_lease_until
                .map(|until| until.saturating_duration_since(now).as_millis())
                .filter(|ms| *ms > 0);
            let vote = match (lease_ms, &status.witness_refused) {
                (Some(ms), _) => format!("held, {ms} ms left"),
                (None, Some(holder)) => format!("refused: held by {holder}"),
                (None, None) => "not held".to_owned(),
            };
            let votes = 1 + u8::from(peer) + u8::from(lease_ms.is_some());
            json!({
                "mode": "witness",
                "witness": addr.to_string(),
                "witness_vote": vote,
                "votes": format!("{votes} of 3"),
                "has_quorum": votes >= 2,
            })
        }
        QuorumMode::Fencing(_) => {
            let fence = match status.fence_succeeded {
                Some(true) => "peer fenced",
                Some(false) => "fence failed",
                None => "none run",
            };
            json!({
                "mode": "fencing",
                "fence": fence,
                "has_quorum": peer || status.fence_succeeded == Some(true),
            })
        }
        QuorumMode::Unsafe => json!({
            "mode": "unsafe-unfenced",
            "has_quorum": true,
            "warning": "nothing prevents two active nodes",
        }),
    }
}

#[cfg(test)]
mod quorum_tests {
    use std::time::Duration;

    use ironroot_cluster::config::FencingConfig;
    use ironroot_cluster::QuorumMode;
    use ironroot_net::Instant;

    use super::quorum;
    use crate::node::NodeStatus;

    fn witness() -> QuorumMode {
        QuorumMode::Witness {
            addr: "192.0.2.3:695".parse().expect("addr"),
            lease: Duration::from_millis(1200),
        }
    }

    #[test]
    fn witness_votes_count_the_peer_and_a_running_lease() {
        let now = Instant::from_millis(10_000);
        let mut status = NodeStatus {
            peer: "alive".to_owned(),
            ..NodeStatus::default()
        };
        let q = quorum(&status, &witness(), now);
        assert_eq!(
            (q["votes"].as_str(), q["has_quorum"].as_bool()),
            (Some("2 of 3"), Some(true))
        );
        status.peer = "dead".to_owned();
        status.witness_lease_until = Some(Instant::from_millis(10_800));
        let q = quorum(&status, &witness(), now);
        assert_eq!(q["votes"], "2 of 3");
        assert_eq!(q["witness_vote"], "held, 800 ms left");
        // The lease ran out and the witness refused: alone.
        status.witness_refused = Some("node 1".to_owned());
        let q = quorum(&status, &witness(), Instant::from_millis(10_800));
        assert_eq!(q["votes"], "1 of 3");
        assert_eq!(q["has_quorum"], false);
        assert_eq!(q["witness_vote"], "refused: held by node 1");
    }

    #[test]
    fn fencing_quorum_needs_the_peer_alive_or_fenced() {
        let mode = QuorumMode::Fencing(FencingConfig {
            command: vec!["true".to_owned()],
            timeout: Duration::from_secs(1),
            standby_delay: Duration::ZERO,
        });
        let now = Instant::from_millis(1);
        let mut status = NodeStatus {
            peer: "dead".to_owned(),
            ..NodeStatus::default()
        };
        assert_eq!(quorum(&status, &mode, now)["has_quorum"], false);
        status.fence_succeeded = Some(false);
        assert_eq!(quorum(&status, &mode, now)["fence"], "fence failed");
        status.fence_succeeded = Some(true);
        assert_eq!(quorum(&status, &mode, now)["has_quorum"], true);
        assert_eq!(
            quorum(&NodeStatus::default(), &QuorumMode::Unsafe, now)["mode"],
            "unsafe-unfenced"
        );
    }
}
