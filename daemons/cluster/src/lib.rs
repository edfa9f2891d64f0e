//! ironroot's cluster manager: membership by HMAC-authenticated heartbeats,
//! quorum (two votes of three: self, peer, witness lease) or fencing in
//! two-node mode, ordered start/stop of the services, and the VIP.
//!
//! - [`config`]: the file format and its pure validation.
//! - [`wire`]: heartbeat and witness packets, HMAC-SHA256, replay guard.
//! - [`hints`]: the active's TCP connections, for the standby to reset after
//!   a takeover.
//! - [`node`]: the sans-IO failover state machine of a control node.
//! - [`witness`]: the sans-IO witness (vote lease + durable Outdated record).
//! - [`driver`]: async drivers generic over [`ironroot_net::Runtime`].
//!
//! This crate must never read a clock, draw a random number or open a socket
//! outside the driver's use of the runtime seam, and never let peer bytes
//! reach an assertion: a forged, replayed or malformed packet is dropped and
//! counted.
//!
//! # Timing argument: the old owner's VIP is gone before the new one claims it
//!
//! Notation: lease `L` (witness), dead time `D`, heartbeat interval `I`, VIP
//! lifetime `V` (IPv4 `valid_lft`), clock margin `M` (clock-rate skew over
//! one lease plus the delay between deciding an action and the kernel
//! applying it). Config validation enforces `V + M + I <= D` and, with a
//! witness, `V + M + I <= L`. With fencing it does not: the standby powers
//! the old node off before claiming, so the old address dies with its host
//! and `D` may be far below `V` (10 ms heartbeats, 50 ms dead time).
//!
//! 1. A node is active only while it holds a *quorum proof* with an expiry
//!    `P`, dated by its **own** clock and always from an event on its own
//!    side that happened *before* the grantor's promise started:
//!    - witness lease: `P = t_send(request) + L`; the witness counts `L` from
//!      when it received the request, which is later, so the witness's view
//!      of the lease outlives the node's (up to rate skew, inside `M`);
//!    - peer vote: the peer's heartbeat echoes the highest sequence of ours
//!      it received; `P = t_send(that heartbeat) + D`. The peer promised not
//!      to seek takeover until `D` after it *received* that heartbeat, again
//!      no earlier than our send time.
//! 2. The VIP gets a fresh lifetime only when `now + V + M <= P`, and the
//!    driver skips a renewal it executes more than `M` after the decision
//!    (`Action::RenewVip::not_after`). So at every moment the kernel's
//!    expiry of our address is before `P`, **whether or not our daemon is
//!    still alive**: if it dies, renewals stop and the kernel removes the
//!    address by itself.
//! 3. The peer can take over only after (a) the witness grants it the lease,
//!    which the witness does only after our lease ran out at the witness
//!    (`>= P`), or (b) our vote promise ran out, `>= P` as well. Its VIP
//!    claim comes after the whole start sequence, later still.
//! 4. A node whose proof drops below `now + M` stops: it releases the VIP
//!    first (already expired by then, see 2), then stops the services in
//!    reverse order; they are unreachable through the VIP meanwhile.
//! 5. A restarted daemon gives no vote for `V + M` after its start: its
//!    previous life may have left the VIP in the kernel (daemon crash, host
//!    alive), and a vote would let the peer claim it before it expired.
//! 6. A node that gave its vote to the peer does not promote until `D`
//!    after the peer heartbeat it echoed (unless the peer announced a
//!    handoff, which keeps the peer ineligible for longer than any vote it
//!    holds), so the two nodes never both hold usable votes for each other.
//!
//! 7. Defence in depth for the daemon-only death: Linux checks address
//!    lifetimes on a timer that it rounds up to the next whole second when
//!    that is under 250 ms away, so a dead daemon's address can outlive its
//!    nominal expiry by up to 250 ms — more than the default `M`. Every
//!    claim therefore probes first (RFC 5227 ARP probe, sender IP 0.0.0.0)
//!    and waits, up to `vip.probe_wait_ms` (default 500), while another host
//!    still answers for the address. A probe is evidence, not proof (a lost
//!    reply hides a holder), which is why the argument above still budgets
//!    for the expiry; the simulator models the kernel's late timer
//!    (`turmoil_backend::kernel_expiry`) and the `crash-active-daemon`
//!    scenario sweeps the crash's phase against it.
//!
//! `V` is a whole number of seconds (IPv4 `valid_lft` granularity; the seam
//! would round anything else up behind this argument's back). With the
//! defaults (`I` = 100 ms, `D` = 1200 ms, `L` = 1200 ms, `V` = 1 s, `M` =
//! 50 ms) the standby takes over at most about `max(D, L)` after the active
//! host dies, plus its own start sequence. `M` is also the slack for one
//! heartbeat's latency in the peer-vote renewal (`V + M + I <= D`); a
//! deployment that must bound the daemon-only-death case tightly should
//! raise `M` to cover how late the kernel's address-lifetime check may run.
//!
//! A witness that restarts grants nothing for one `L`, since a lease from
//! its previous life may still run. In two-node mode with fencing the
//! incumbent keeps running while the peer is silent; the standby must fence
//! it (power it off) before promoting, waiting `standby_delay_ms` longer so
//! that the incumbent wins a fencing race. With `unsafe_unfenced` nothing of
//! the above holds during a partition: both nodes become active.

pub mod config;
pub mod driver;
pub mod hints;
pub mod incarnation;
pub mod node;
pub mod wire;
pub mod witness;

pub use config::{ClusterConfig, ClusterFile, ConfigError, QuorumMode, WitnessConfig};
pub use driver::{run_node, run_witness, ClusterEvent, CommandFence, DriverError, Fence, SimFence};
pub use incarnation::{FileIncarnationStore, IncarnationStore, MemoryIncarnationStore};
pub use node::{Action, Admin, EventKind, Node, Reason};
pub use wire::{NodeId, Role};
pub use witness::{FileOutdatedStore, MemoryOutdatedStore, OutdatedStore, Witness};
