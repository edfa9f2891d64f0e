//! Thin async drivers moving the replication machines' bytes over TCP of
//! the network seam ([`ironroot_net::Runtime`]): connect with a timeout,
//! reconnect after a pause, a timeout on every write, and the machine's own
//! deadlines. Protocol logic stays in the machines.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironroot_net::{Runtime, TcpListener};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::{Event, Progress, ReplicationMetrics, ReplicationPrimary, ReplicationSecondary};
use crate::journal::Record;
use crate::store::{Store, StoreError};

/// A store shared between the replication driver and the readers.
pub type SharedStore = Arc<Mutex<Store>>;

/// Timing of a driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    pub connect_timeout_ms: u64,
    pub reconnect_delay_ms: u64,
    /// Longest a single write to the socket may block.
    pub write_timeout_ms: u64,
    /// Secondary: close a connection silent for this long. Long by default:
    /// an idle primary sends nothing, and a primary that lost its link
    /// reconnects, which supersedes the stalled connection anyway.
    pub idle_timeout_ms: u64,
    /// Commands queued to the primary driver.
    pub commands_max: usize,
    /// Events queued for the owner; more are dropped and counted.
    pub events_max: usize,
}

impl Default for DriverConfig {
    fn default() -> DriverConfig {
        DriverConfig {
            connect_timeout_ms: 2_000,
            reconnect_delay_ms: 500,
            write_timeout_ms: 10_000,
            idle_timeout_ms: 3_600_000,
            commands_max: 64,
            events_max: 1_024,
        }
    }
}

/// Why a replicated write was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("write {seq} is durable here but the peer never acknowledged it")]
    NotReplicated { seq: u64 },
    #[error("the replication driver is gone")]
    DriverGone,
}

type WriteFn = Box<dyn FnOnce(&mut Store) -> Result<Record, StoreError> + Send>;

enum Command {
    Write(WriteFn, oneshot::Sender<Result<u64, WriteError>>),
    PeerOutdated,
    KeepLocal,
}

/// What a primary driver reports of its machine, for status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrimaryReport {
    pub progress: Progress,
    /// An operator's `keep-local` resolution waits for the next connection.
    pub keep_local_pending: bool,
}

/// The owner's side of a running primary driver.
#[derive(Clone)]
pub struct PrimaryHandle {
    commands: mpsc::Sender<Command>,
    report: Arc<Mutex<PrimaryReport>>,
    metrics: Arc<Mutex<ReplicationMetrics>>,
}

impl PrimaryHandle {
    /// The machine's progress as of its last step.
    pub fn report(&self) -> PrimaryReport {
        *self.report.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolve the next divergence in this side's favour (see
    /// [`ReplicationPrimary::resolve_keep_local`]).
    pub async fn keep_local(&self) -> Result<(), WriteError> {
        self.commands
            .send(Command::KeepLocal)
            .await
            .map_err(|_| WriteError::DriverGone)
    }

    /// Run `write` on the store and wait until the peer holds the entry
    /// (or the peer was recorded Outdated and the policy accepts that).
    pub async fn write(
        &self,
        write: impl FnOnce(&mut Store) -> Result<Record, StoreError> + Send + 'static,
    ) -> Result<u64, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Write(Box::new(write), tx))
            .await
            .map_err(|_| WriteError::DriverGone)?;
        rx.await.map_err(|_| WriteError::DriverGone)?
    }

    /// The machine's counters (objects and entries shipped, peer
    /// misbehaviour), as of the driver's last step.
    pub fn metrics(&self) -> ReplicationMetrics {
        *self.metrics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The peer is recorded Outdated (witness or fencing succeeded).
    pub async fn peer_outdated(&self) -> Result<(), WriteError> {
        self.commands
            .send(Command::PeerOutdated)
            .await
            .map_err(|_| WriteError::DriverGone)
    }
}

/// Start the primary driver; it connects to `peer` and keeps reconnecting.
pub fn spawn_primary<R: Runtime>(
    rt: R,
    store: SharedStore,
    machine: ReplicationPrimary,
    peer: SocketAddr,
    config: DriverConfig,
) -> (PrimaryHandle, mpsc::Receiver<Event>) {
    let (commands_tx, commands) = mpsc::channel(config.commands_max);
    let (events_tx, events) = mpsc::channel(config.events_max);
    let report = Arc::new(Mutex::new(PrimaryReport::default()));
    let metrics = Arc::new(Mutex::new(machine.metrics()));
    let mut driver = PrimaryDriver {
        report: Arc::clone(&report),
        metrics: Arc::clone(&metrics),
        rt,
        store,
        machine,
        commands,
        events: events_tx,
        waiting: BTreeMap::new(),
        config,
        events_dropped: 0,
    };
    tokio::spawn(async move { driver.run(peer).await });
    (
        PrimaryHandle {
            commands: commands_tx,
            report,
            metrics,
        },
        events,
    )
}

struct PrimaryDriver<R: Runtime> {
    rt: R,
    store: SharedStore,
    machine: ReplicationPrimary,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    waiting: BTreeMap<u64, oneshot::Sender<Result<u64, WriteError>>>,
    config: DriverConfig,
    events_dropped: u64,
    report: Arc<Mutex<PrimaryReport>>,
    metrics: Arc<Mutex<ReplicationMetrics>>,
}

impl<R: Runtime> PrimaryDriver<R> {
    async fn run(&mut self, peer: SocketAddr) {
        loop {
            let timeout = Duration::from_millis(self.config.connect_timeout_ms);
            match self.rt.connect_tcp(peer, timeout).await {
                Ok(stream) => {
                    let (read, write) = ironroot_net::TcpStream::into_split(stream);
                    let now = self.rt.now();
                    self.machine
                        .handle_connected(now, &self.store.lock().expect("store lock"));
                    let alive = self.connected(read, write).await;
                    self.machine.handle_disconnected(self.rt.now());
                    self.drain_events();
                    if self.events.try_send(Event::Disconnected).is_err() {
                        self.events_dropped += 1;
                    }
                    if !alive {
                        return;
                    }
                }
                Err(_) => {
                    if !self.idle_while_down().await {
                        return;
                    }
                    continue;
                }
            }
            if !self.idle_while_down().await {
                return;
            }
        }
    }

    /// Serve commands for one reconnect delay; false once the owner is gone.
    async fn idle_while_down(&mut self) -> bool {
        let until = self.rt.now() + Duration::from_millis(self.config.reconnect_delay_ms);
        loop {
            let deadline = self.machine.poll_timeout().map_or(until, |d| d.min(until));
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => return false,
                },
                () = self.rt.sleep_until(deadline) => {
                    self.machine.handle_timeout(self.rt.now());
                    if self.rt.now() >= until {
                        self.drain_events();
                        return true;
                    }
                }
            }
            self.drain_events();
        }
    }

    fn command(&mut self, command: Command) {
        let now = self.rt.now();
        match command {
            Command::Write(write, reply) => {
                let mut store = self.store.lock().expect("store lock");
                match write(&mut store) {
                    Ok(record) => {
                        self.waiting.insert(record.seq, reply);
                        self.machine.handle_local_write(now, &store, record);
                    }
                    Err(err) => {
                        let _ = reply.send(Err(err.into()));
                    }
                }
            }
            Command::PeerOutdated => {
                // Durable before anything is acknowledged alone; if the disk
                // refuses, the writes stay waiting and time out again.
                let mut store = self.store.lock().expect("store lock");
                if store.record_peer_outdated().is_ok() {
                    self.machine.handle_peer_outdated(now);
                }
            }
            Command::KeepLocal => self.machine.resolve_keep_local(),
        }
    }

    fn drain_events(&mut self) {
        *self.report.lock().unwrap_or_else(|p| p.into_inner()) = PrimaryReport {
            progress: self.machine.progress(),
            keep_local_pending: self.machine.keep_local_pending(),
        };
        *self.metrics.lock().unwrap_or_else(|p| p.into_inner()) = self.machine.metrics();
        while let Some(event) = self.machine.poll_event() {
            match &event {
                Event::Acknowledged { seq } => {
                    if let Some(reply) = self.waiting.remove(seq) {
                        let _ = reply.send(Ok(*seq));
                    }
                }
                Event::WriteFailed { seq } => {
                    if let Some(reply) = self.waiting.remove(seq) {
                        let _ = reply.send(Err(WriteError::NotReplicated { seq: *seq }));
                    }
                }
                _ => {}
            }
            if self.events.try_send(event).is_err() {
                self.events_dropped += 1;
            }
        }
    }

    /// Run one connection; false once the owner is gone.
    async fn connected<Rd, Wr>(&mut self, mut read: Rd, mut write: Wr) -> bool
    where
        Rd: AsyncRead + Unpin,
        Wr: AsyncWrite + Unpin,
    {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if !self.flush(&mut write).await {
                return true;
            }
            self.drain_events();
            if self.machine.is_closed() {
                return true;
            }
            let deadline = self.machine.poll_timeout();
            let far = self.rt.now() + Duration::from_secs(3_600);
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(command) => self.command(command),
                    None => return false,
                },
                read = read.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => {
                        let store = self.store.lock().expect("store lock");
                        self.machine.handle_bytes(self.rt.now(), &store, &buf[..n]);
                    }
                },
                () = self.rt.sleep_until(deadline.unwrap_or(far)) => {
                    self.machine.handle_timeout(self.rt.now());
                    if self.machine.poll_timeout().is_none() && deadline.is_some() {
                        self.drain_events();
                        return true;
                    }
                }
            }
        }
    }

    /// Write everything the machine has to send; false if the link failed.
    async fn flush<Wr: AsyncWrite + Unpin>(&mut self, write: &mut Wr) -> bool {
        let timeout = Duration::from_millis(self.config.write_timeout_ms);
        loop {
            let bytes = {
                let store = self.store.lock().expect("store lock");
                self.machine.poll_transmit(self.rt.now(), &store)
            };
            let Some(bytes) = bytes else {
                return true;
            };
            match ironroot_net::timeout(&self.rt, timeout, write.write_all(&bytes)).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }
}

type Halves<R> = (
    <<R as Runtime>::Stream as ironroot_net::TcpStream>::ReadHalf,
    <<R as Runtime>::Stream as ironroot_net::TcpStream>::WriteHalf,
);

/// The owner's side of a running secondary driver.
#[derive(Clone, Default)]
pub struct SecondaryControl {
    inner: Arc<Mutex<SecondaryShared>>,
}

#[derive(Default)]
struct SecondaryShared {
    discard_requested: bool,
    discard_pending: bool,
}

impl SecondaryControl {
    /// Resolve the next divergence by discarding this side's entries (see
    /// [`ReplicationSecondary::resolve_discard_local`]).
    pub fn discard_local(&self) {
        let mut shared = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        shared.discard_requested = true;
        shared.discard_pending = true;
    }

    /// Whether a `discard-local` resolution waits for the next connection.
    pub fn discard_pending(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .discard_pending
    }

    fn sync(&self, machine: &mut ReplicationSecondary) {
        let mut shared = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if std::mem::take(&mut shared.discard_requested) {
            machine.resolve_discard_local();
        }
        shared.discard_pending = machine.discard_local_pending();
    }
}

/// Serve the secondary side on `listener`, forever. One primary at a time:
/// a new connection supersedes the current one (a primary that lost its
/// link reconnects while this side still waits on the stalled stream).
pub async fn run_secondary<R: Runtime>(
    rt: R,
    store: SharedStore,
    machine: ReplicationSecondary,
    listener: R::Listener,
    config: DriverConfig,
    events: mpsc::Sender<Event>,
) {
    let control = SecondaryControl::default();
    run_secondary_controlled(rt, store, machine, listener, config, events, control).await;
}

/// [`run_secondary`] with an operator's control over split-brain
/// resolution.
pub async fn run_secondary_controlled<R: Runtime>(
    rt: R,
    store: SharedStore,
    mut machine: ReplicationSecondary,
    listener: R::Listener,
    config: DriverConfig,
    events: mpsc::Sender<Event>,
    control: SecondaryControl,
) {
    let idle = Duration::from_millis(config.idle_timeout_ms);
    let mut buf = vec![0u8; 64 * 1024];
    let mut conn: Option<Halves<R>> = None;
    loop {
        let Some((read, write)) = conn.as_mut() else {
            match listener.accept().await {
                Ok((stream, _)) => {
                    conn = Some(ironroot_net::TcpStream::into_split(stream));
                    machine.handle_connected(rt.now(), &store.lock().expect("store lock"));
                }
                Err(_) => {
                    rt.sleep(Duration::from_millis(config.reconnect_delay_ms))
                        .await
                }
            }
            continue;
        };
        let mut alive = secondary_flush(&rt, &mut machine, write, &config).await;
        control.sync(&mut machine);
        while let Some(event) = machine.poll_event() {
            let _ = events.try_send(event);
        }
        if alive {
            tokio::select! {
                biased;
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        machine.handle_disconnected(rt.now());
                        conn = Some(ironroot_net::TcpStream::into_split(stream));
                        machine.handle_connected(rt.now(), &store.lock().expect("store lock"));
                        continue;
                    }
                }
                read = ironroot_net::timeout(&rt, idle, read.read(&mut buf)) => match read {
                    Ok(Ok(n)) if n > 0 => {
                        control.sync(&mut machine);
                        let mut store = store.lock().expect("store lock");
                        machine.handle_bytes(rt.now(), &mut store, &buf[..n]);
                    }
                    _ => alive = false,
                },
            }
        }
        if !alive {
            conn = None;
            machine.handle_disconnected(rt.now());
            let _ = events.try_send(Event::Disconnected);
        }
    }
}

async fn secondary_flush<R: Runtime, Wr: AsyncWrite + Unpin>(
    rt: &R,
    machine: &mut ReplicationSecondary,
    write: &mut Wr,
    config: &DriverConfig,
) -> bool {
    let timeout = Duration::from_millis(config.write_timeout_ms);
    while let Some(bytes) = machine.poll_transmit() {
        let written = ironroot_net::timeout(rt, timeout, write.write_all(&bytes)).await;
        if !matches!(written, Ok(Ok(()))) {
            return false;
        }
    }
    true
}
