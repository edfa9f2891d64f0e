//! Benchmark (not a test): import a real tree into a primary store that
//! replicates to a secondary over loopback TCP, next to the physical
//! reference of the same data: `cp -a` and `rsync -a` (when installed) as
//! they are, then each followed by `sync -f` (the store fsyncs before it
//! acknowledges), and the sum of the synced two (a local copy plus one to
//! a second directory: what import and replication write without a store);
//! then change 1% of the files and time the secondary's resync.
//!
//! `store-bench [SOURCE_DIR] [WORK_DIR]` (defaults: /usr/share/doc, a
//! directory under /tmp).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ironroot_net::tokio_backend::TokioRuntime;
use ironroot_net::{Clock, Runtime, TcpListener};
use ironroot_store::model::Timestamp;
use ironroot_store::replication::driver::{
    run_secondary, spawn_primary, DriverConfig, SharedStore,
};
use ironroot_store::replication::{
    Event, ReplicationConfig, ReplicationPrimary, ReplicationSecondary,
};
use ironroot_store::storage::FsStorage;
use ironroot_store::store::Store;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn tree_size(dir: &Path) -> (u64, u64) {
    let (mut bytes, mut files) = (0, 0);
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if md.is_dir() {
            for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                stack.push(entry.path());
            }
        } else {
            files += 1;
            if md.is_file() {
                bytes += md.len();
            }
        }
    }
    (bytes, files)
}

/// Append a line to every 100th regular file; returns (changed, files).
fn change_one_percent(tree: &Path) -> BenchResult<(u64, u64)> {
    let mut changed = 0u64;
    let mut stack = vec![tree.to_owned()];
    let mut index = 0u64;
    while let Some(path) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if md.is_dir() {
            for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                stack.push(entry.path());
            }
        } else if md.is_file() {
            index += 1;
            if index % 100 == 0 {
                let mut content = std::fs::read(&path)?;
                content.extend_from_slice(b"\nchanged\n");
                std::fs::write(&path, content)?;
                changed += 1;
            }
        }
    }
    Ok((changed, index))
}

/// `program -a source dest`, then `sync -f dest` when `durable`: the
/// store fsyncs what it acknowledges, so the fair reference syncs too.
fn timed_copy(
    rt: &TokioRuntime,
    program: &str,
    source: &Path,
    dest: &Path,
    durable: bool,
) -> Option<f64> {
    let start = rt.now();
    let copied = Command::new(program)
        .arg("-a")
        .arg(source)
        .arg(dest)
        .status()
        .ok()?
        .success();
    let synced = !durable
        || Command::new("sync")
            .arg("-f")
            .arg(dest)
            .status()
            .ok()?
            .success();
    (copied && synced).then(|| (rt.now() - start).as_secs_f64())
}

/// The physical reference, returning the time of `cp -a` plus `rsync -a`
/// to a second directory, both synced: what a local write and a copy to a
/// replica cost the file system without a store.
fn physical_reference(
    rt: &TokioRuntime,
    source: &Path,
    work: &Path,
    mib: f64,
    files: u64,
) -> Option<f64> {
    let row = |name: &str, secs: Option<f64>| match secs {
        Some(s) => println!(
            "{name:>22}: {s:7.2} s  {:8.1} MiB/s  {:8.0} files/s",
            mib / s,
            files as f64 / s
        ),
        None => println!("{name:>22}: not available"),
    };
    row(
        "cp -a",
        timed_copy(rt, "cp", source, &work.join("cp"), false),
    );
    row(
        "rsync -a",
        timed_copy(rt, "rsync", source, &work.join("rsync"), false),
    );
    let cp = timed_copy(rt, "cp", source, &work.join("cp-synced"), true);
    let rsync = timed_copy(rt, "rsync", source, &work.join("rsync-synced"), true);
    row("cp -a + sync", cp);
    row("rsync -a + sync", rsync);
    let both = cp.zip(rsync).map(|(a, b)| a + b);
    row("cp + rsync, synced", both);
    both
}

fn spawn_secondary(
    rt: &TokioRuntime,
    store: &SharedStore,
    listener: <TokioRuntime as Runtime>::Listener,
    config: &DriverConfig,
    events: &tokio::sync::mpsc::Sender<Event>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run_secondary(
        rt.clone(),
        store.clone(),
        ReplicationSecondary::new(ReplicationConfig::new(2)),
        listener,
        config.clone(),
        events.clone(),
    ))
}

async fn wait_in_sync(
    rt: &TokioRuntime,
    events: &mut tokio::sync::mpsc::Receiver<Event>,
    target: u64,
) -> BenchResult<()> {
    loop {
        match ironroot_net::timeout(rt, Duration::from_secs(600), events.recv()).await? {
            Some(Event::InSync { seq }) if seq == target => return Ok(()),
            Some(_) => continue,
            None => return Err("driver ended".into()),
        }
    }
}

fn open_store(dir: &Path) -> BenchResult<Store> {
    Ok(Store::open(Arc::new(FsStorage::open(dir)?))?.0)
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let source = PathBuf::from(args.get(1).map_or("/usr/share/doc", String::as_str));
    let work = PathBuf::from(
        args.get(2)
            .map_or("/tmp/ironroot-store-bench", String::as_str),
    );
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let rt = TokioRuntime::with_seed(1);
    let (bytes, files) = tree_size(&source);
    let mib = bytes as f64 / (1024.0 * 1024.0);
    println!("source {}: {mib:.1} MiB in {files} files", source.display());

    let reference = physical_reference(&rt, &source, &work, mib, files);

    let listener = rt.listen_tcp("127.0.0.1:0".parse()?).await?;
    let addr = listener.local_addr()?;
    let secondary_store = Arc::new(Mutex::new(open_store(&work.join("b"))?));
    let (events_tx, _events_rx) = tokio::sync::mpsc::channel(1024);
    let config = DriverConfig {
        reconnect_delay_ms: 20,
        ..DriverConfig::default()
    };
    let secondary = spawn_secondary(&rt, &secondary_store, listener, &config, &events_tx);
    let mut primary_store = open_store(&work.join("a"))?;
    primary_store.promote(1, 0);
    let primary_store = Arc::new(Mutex::new(primary_store));
    let mut repl = ReplicationConfig::new(1);
    repl.response_timeout_ms = 60_000;
    let (handle, mut events) = spawn_primary(
        rt.clone(),
        primary_store.clone(),
        ReplicationPrimary::new(repl),
        addr,
        config.clone(),
    );

    let start = rt.now();
    let src = source.clone();
    handle
        .write(move |s| s.import_dir("bench", &src, Timestamp::default(), "import"))
        .await?;
    let secs = (rt.now() - start).as_secs_f64();
    println!(
        "{:>22}: {secs:7.2} s  {:8.1} MiB/s  {:8.0} files/s",
        "import + replicate",
        mib / secs,
        files as f64 / secs
    );
    if let Some(reference) = reference {
        println!(
            "{:>22}: {:.2}x the time of cp + rsync, synced",
            "ratio",
            secs / reference
        );
    }

    // Change 1% of the files while the secondary is away, then resync.
    let tree = work.join("cp");
    let (changed, index) = change_one_percent(&tree)?;
    secondary.abort();
    let _ = secondary.await;
    handle.peer_outdated().await?;
    let t = tree.clone();
    let target = handle
        .write(move |s| s.import_dir("bench", &t, Timestamp { secs: 1, nanos: 0 }, "1%"))
        .await?;
    let listener = rt.listen_tcp(addr).await?;
    let start = rt.now();
    spawn_secondary(&rt, &secondary_store, listener, &config, &events_tx);
    wait_in_sync(&rt, &mut events, target).await?;
    let secs = (rt.now() - start).as_secs_f64();
    println!(
        "{:>22}: {secs:7.2} s  ({changed} of {index} files changed)",
        "resync after 1%"
    );
    let hash = |store: &SharedStore| store.lock().map(|s| s.state().content_hash()).ok();
    let same = hash(&primary_store) == hash(&secondary_store);
    println!("{:>22}: {}", "replicas identical", same);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
