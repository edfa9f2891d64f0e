//! Benchmark (not a test): serves a tree and a large file from memory with
//! the ironroot NFS server on loopback and measures, with the libnfs tools
//! as the client, sequential read MB/s (`nfs-cat` of the large file) and
//! metadata walk entries/s (`nfs-ls -R`: READDIRPLUS plus a stat per entry).
//! Prints the median over `--runs`.
//!
//! With `--ganesha` it first re-runs itself inside a private network
//! namespace (`unshare -n`, needs root), where it also starts rpcbind and
//! nfs-ganesha (Debian `nfs-ganesha`, `nfs-ganesha-vfs`) with a read-only
//! VFS export of the same tree and of the large file written to disk, then
//! measures both servers with the same commands and prints the ratios.
//! Nothing outside the namespace is touched; it ends with its processes.
//!
//! Usage: nfs-bench [TREE_DIR] [--runs N] [--file-mib N] [--read-kib N] [--ganesha]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ironroot_net::tokio_backend::TokioRuntime;
use ironroot_net::Clock;
use ironroot_nfs::{driver, Config, LoadLimits, MemFs, Server, Tree};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const IN_NETNS_ENV: &str = "IRONROOT_NFS_BENCH_IN_NETNS";
const BIG_NAME: &str = "nfs-bench-big";
/// How long ganesha may take to answer after it starts.
const GANESHA_START_TIMEOUT: Duration = Duration::from_secs(20);

struct Args {
    tree: PathBuf,
    runs: usize,
    file_mib: usize,
    read_kib: u32,
    ganesha: bool,
}

fn parse_args() -> BenchResult<Args> {
    let mut args = Args {
        tree: PathBuf::from("/usr/share/doc"),
        runs: 3,
        file_mib: 256,
        read_kib: 1024,
        ganesha: false,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut value = || iter.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => args.runs = value()?.parse()?,
            "--read-kib" => args.read_kib = value()?.parse()?,
            "--file-mib" => args.file_mib = value()?.parse()?,
            "--ganesha" => args.ganesha = true,
            other if !other.starts_with('-') => args.tree = PathBuf::from(other),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(args)
}

/// Run a libnfs tool to completion; returns its duration and the number of
/// lines it printed (data goes to /dev/null).
fn timed(clock: &TokioRuntime, program: &str, args: &[&str]) -> BenchResult<(Duration, usize)> {
    let counting = program == "nfs-ls";
    let stdout = if counting {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let start = clock.now();
    let output = Command::new(program)
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .output()?;
    let elapsed = clock.now().saturating_duration_since(start);
    if !output.status.success() {
        return Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok((
        elapsed,
        output.stdout.iter().filter(|b| **b == b'\n').count(),
    ))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// One sample of both measurements against one server.
fn sample(clock: &TokioRuntime, big_bytes: usize, urls: &Urls) -> BenchResult<(f64, f64, usize)> {
    let (elapsed, _) = timed(clock, "nfs-cat", &[&urls.big])?;
    let read_mb_per_s = big_bytes as f64 / 1e6 / elapsed.as_secs_f64();
    let (elapsed, lines) = timed(clock, "nfs-ls", &["-R", &urls.tree])?;
    Ok((read_mb_per_s, lines as f64 / elapsed.as_secs_f64(), lines))
}

/// Where one server serves the large file and the tree.
struct Urls {
    big: String,
    tree: String,
}

/// Start the ironroot server; it runs until the returned runtime drops.
fn start_ironroot(
    args: &Args,
    clock: &TokioRuntime,
    big: &[u8],
) -> BenchResult<(tokio::runtime::Runtime, Urls)> {
    let mut tree = Tree::from_dir(&args.tree, LoadLimits::default())?;
    tree.add_file(BIG_NAME, 0o644, 0, 0, big);
    let mut fs = MemFs::new();
    fs.add_client(Ipv4Addr::LOCALHOST, 1, Arc::new(tree));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let endpoint = runtime.block_on(driver::bind(clock, Ipv4Addr::LOCALHOST, 0))?;
    let port = endpoint.port()?;
    let config = Config {
        portmap_port: port,
        mount_port: port,
        nfs_port: port,
        read_bytes_max: args.read_kib << 10,
        ..Config::default()
    };
    config.validate()?;
    runtime.spawn(driver::serve(
        clock.clone(),
        Arc::new(Server::new(config, fs)),
        vec![endpoint],
    ));
    let url =
        |path: &str| format!("nfs://127.0.0.1{path}?version=3&nfsport={port}&mountport={port}");
    let urls = Urls {
        big: url(&format!("//{BIG_NAME}")),
        tree: url("/"),
    };
    Ok((runtime, urls))
}

/// Child processes we started, killed by handle when the benchmark ends.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn ganesha_config(tree: &Path, big_dir: &Path) -> String {
    format!(
        "NFS_CORE_PARAM {{ Protocols = 3; Enable_NLM = false; Enable_RQUOTA = false; Mount_Path_Pseudo = true; }}\n\
         NFSV4 {{ Graceless = true; }}\n\
         EXPORT {{ Export_Id = 1; Path = \"{}\"; Pseudo = \"/tree\"; Access_Type = RO; Squash = No_Root_Squash; \
         Protocols = 3; Transports = TCP; SecType = sys; FSAL {{ Name = VFS; }} }}\n\
         EXPORT {{ Export_Id = 2; Path = \"{}\"; Pseudo = \"/big\"; Access_Type = RO; Squash = No_Root_Squash; \
         Protocols = 3; Transports = TCP; SecType = sys; FSAL {{ Name = VFS; }} }}\n",
        tree.display(),
        big_dir.display()
    )
}

/// A running nfs-ganesha and its rpcbind, removed on drop.
struct Ganesha {
    children: Children,
    dir: PathBuf,
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        self.children.0.iter_mut().for_each(|child| {
            let _ = child.kill();
            let _ = child.wait();
        });
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_ganesha(args: &Args, clock: &TokioRuntime, big: &[u8]) -> BenchResult<(Ganesha, Urls)> {
    let dir = std::env::temp_dir().join(format!("nfs-bench-{}", std::process::id()));
    let big_dir = dir.join("big");
    std::fs::create_dir_all(&big_dir)?;
    let mut ganesha = Ganesha {
        children: Children(Vec::new()),
        dir: dir.clone(),
    };
    std::fs::write(big_dir.join(BIG_NAME), big)?;
    std::fs::write(
        dir.join("ganesha.conf"),
        ganesha_config(&args.tree, &big_dir),
    )?;
    ganesha
        .children
        .0
        .push(Command::new("rpcbind").args(["-w", "-f"]).spawn()?);
    std::thread::sleep(Duration::from_millis(500));
    let conf = dir.join("ganesha.conf");
    let (log, pid) = (dir.join("ganesha.log"), dir.join("ganesha.pid"));
    let ganesha_args = [
        "-F",
        "-N",
        "NIV_EVENT",
        "-f",
        path_str(&conf)?,
        "-L",
        path_str(&log)?,
        "-p",
        path_str(&pid)?,
    ];
    ganesha
        .children
        .0
        .push(Command::new("ganesha.nfsd").args(ganesha_args).spawn()?);
    let deadline = clock
        .now()
        .checked_add(GANESHA_START_TIMEOUT)
        .ok_or("deadline overflow")?;
    while timed(clock, "nfs-ls", &["nfs://127.0.0.1/big?version=3"]).is_err() {
        if clock.now() >= deadline {
            return Err(format!("ganesha did not answer; see {}", log.display()).into());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let urls = Urls {
        big: format!("nfs://127.0.0.1/big/{BIG_NAME}?version=3"),
        tree: "nfs://127.0.0.1/tree?version=3".to_owned(),
    };
    Ok((ganesha, urls))
}

fn path_str(path: &Path) -> BenchResult<&str> {
    path.to_str()
        .ok_or_else(|| format!("non-UTF-8 path {}", path.display()).into())
}

/// Re-run this program in a private network namespace; returns its status.
fn run_in_netns() -> BenchResult<()> {
    let status = Command::new("unshare")
        .arg("-n")
        .arg(std::env::current_exe()?)
        .args(std::env::args().skip(1))
        .env(IN_NETNS_ENV, "1")
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("benchmark in the network namespace failed: {status}").into())
    }
}

fn main() -> BenchResult<()> {
    let args = parse_args()?;
    if args.ganesha && std::env::var_os(IN_NETNS_ENV).is_none() {
        return run_in_netns();
    }
    if std::env::var_os(IN_NETNS_ENV).is_some() {
        Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()?;
    }
    let clock = TokioRuntime::new()?;
    let big: Vec<u8> = (0..args.file_mib << 20).map(|i| (i % 251) as u8).collect();
    // Both servers stay up for the whole run: the runtime and the
    // ganesha processes end when these values drop.
    let (_ironroot_runtime, ironroot_urls) = start_ironroot(&args, &clock, &big)?;
    let mut servers = vec![("ironroot", ironroot_urls)];
    let mut ganesha = None;
    if args.ganesha {
        let (running, urls) = start_ganesha(&args, &clock, &big)?;
        ganesha = Some(running);
        servers.push(("ganesha", urls));
    }
    // Interleave servers run by run, so load that drifts during the
    // benchmark hits both alike.
    let mut samples: Vec<(Vec<f64>, Vec<f64>, usize)> = servers
        .iter()
        .map(|_| (Vec::new(), Vec::new(), 0))
        .collect();
    for _ in 0..args.runs {
        for ((_, urls), (reads, walks, entries)) in servers.iter().zip(samples.iter_mut()) {
            let (read, walk, lines) = sample(&clock, big.len(), urls)?;
            reads.push(read);
            walks.push(walk);
            *entries = lines;
        }
    }
    println!(
        "tree: {}, {} runs interleaved, median of each",
        args.tree.display(),
        args.runs
    );
    let mut medians = Vec::new();
    for ((name, _), (reads, walks, entries)) in servers.iter().zip(samples) {
        let (read, walk) = (median(reads), median(walks));
        println!("{name:>8}: sequential read {} MiB (nfs-cat) {read:.0} MB/s; walk {entries} entries (nfs-ls -R) {walk:.0} entries/s", args.file_mib);
        medians.push((read, walk));
    }
    if let [(our_read, our_walk), (their_read, their_walk)] = medians[..] {
        println!(
            "ratio ironroot/ganesha: read {:.2}x, walk {:.2}x",
            our_read / their_read,
            our_walk / their_walk
        );
    }
    drop(ganesha);
    Ok(())
}
