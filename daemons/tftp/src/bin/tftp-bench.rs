//! Throughput benchmark on loopback: atftp fetches a file from our server
//! and, when installed, from tftpd-hpa and atftpd started side by side on
//! other loopback ports, at blksize 512/1468/8192 x windowsize 1/16/64;
//! then N concurrent clients fetch a smaller file from each server.
//!
//! Every server process is started by this program and stopped by its PID.
//! Pinned (the default), every server runs on CPU 0 and every client on
//! CPU 1, or with `--same-cpu` on CPU 0 as well, since CPU placement
//! dominates lock-step TFTP. Beside each row come the busy seconds of CPU 0
//! per fetch while each server was measured (see `server_cpu_busy_secs`).
//!
//! Results: daemons/tftp/bench/README.md.
//!
//! Usage: tftp-bench [--size-mib 64] [--runs 3] [--clients 50]
//!                   [--clients-mib 16] [--no-pin] [--same-cpu]
//!                   [--busy-poll-tries N] [--ours-only] [--verbose]
//!                   [--only-blksize B] [--only-window W] [--run-max-secs S]

use std::net::{Ipv4Addr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ironroot_net::tokio_backend::TokioRuntime;
use ironroot_net::Clock;
use ironroot_tftp::{DirSource, Server, TftpConfig};

const BLKSIZES: [u32; 3] = [512, 1468, 8192];
const WINDOWSIZES: [u32; 3] = [1, 16, 64];
/// Bounded wait for one client run unless `--run-max-secs` says otherwise.
const CLIENT_RUN_MAX_DEFAULT_SECS: u64 = 60;
const SERVER_CPU: &str = "0";
const CLIENT_CPU_OTHER: &str = "1";

struct Args {
    size_mib: u64,
    runs: usize,
    clients: usize,
    clients_mib: u64,
    pin: bool,
    client_cpu: &'static str,
    busy_poll_tries: Option<u32>,
    ours_only: bool,
    verbose: bool,
    run_max: Duration,
    only: Option<(u32, u32)>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        size_mib: 64,
        runs: 3,
        clients: 50,
        clients_mib: 16,
        pin: true,
        client_cpu: CLIENT_CPU_OTHER,
        busy_poll_tries: None,
        ours_only: false,
        verbose: false,
        run_max: Duration::from_secs(CLIENT_RUN_MAX_DEFAULT_SECS),
        only: None,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut value = || -> Result<u64> {
            let text = iter
                .next()
                .with_context(|| format!("{arg} needs a value"))?;
            text.parse().with_context(|| format!("{arg} {text}"))
        };
        match arg.as_str() {
            "--size-mib" => args.size_mib = value()?,
            "--runs" => args.runs = usize::try_from(value()?)?.max(1),
            "--clients" => args.clients = usize::try_from(value()?)?,
            "--clients-mib" => args.clients_mib = value()?,
            "--no-pin" => args.pin = false,
            "--same-cpu" => args.client_cpu = SERVER_CPU,
            "--busy-poll-tries" => args.busy_poll_tries = Some(u32::try_from(value()?)?),
            "--ours-only" => args.ours_only = true,
            "--verbose" => args.verbose = true,
            "--run-max-secs" => args.run_max = Duration::from_secs(value()?),
            "--only-blksize" => {
                let blksize = u32::try_from(value()?)?;
                args.only = Some((blksize, args.only.map_or(1, |(_, window)| window)));
            }
            "--only-window" => {
                let window = u32::try_from(value()?)?;
                args.only = Some((args.only.map_or(512, |(blksize, _)| blksize), window));
            }
            other => bail!("unknown argument {other} (see the source's header)"),
        }
    }
    Ok(args)
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server process we started; killed by PID on drop.
struct PeerServer {
    name: &'static str,
    port: u16,
    child: Child,
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(socket.local_addr()?.port())
}

fn find(program: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .chain(extra.iter().map(PathBuf::from))
        .find(|candidate| candidate.is_file())
}

/// tftpd-hpa's `in.tftpd`: atftpd's package installs an `in.tftpd` of its
/// own, so the candidate must say it is tftp-hpa. The two packages
/// conflict; `dpkg -x` of tftpd-hpa into /opt/tftpd-hpa works beside atftpd.
fn tftpd_hpa() -> Option<PathBuf> {
    let candidates = [
        PathBuf::from("/opt/tftpd-hpa/usr/sbin/in.tftpd"),
        PathBuf::from("/usr/sbin/in.tftpd"),
    ];
    candidates.into_iter().find(|candidate| {
        Command::new(candidate)
            .arg("-V")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|output| {
                let text = [output.stdout, output.stderr].concat();
                String::from_utf8_lossy(&text).contains("tftp-hpa")
            })
    })
}

fn pinned(program: &Path, cpu: &str, pin: bool) -> Command {
    if pin {
        let mut command = Command::new("taskset");
        command.args(["-c", cpu]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn start_peers(args: &Args, dir: &Path) -> Result<Vec<PeerServer>> {
    let mut peers = Vec::new();
    if args.ours_only {
        return Ok(peers);
    }
    let hpa = tftpd_hpa();
    if let Some(hpa) = hpa {
        let port = free_port()?;
        let child = pinned(&hpa, SERVER_CPU, args.pin)
            .args(["-L", "-u", "nobody", "-a"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-s")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting tftpd-hpa")?;
        peers.push(PeerServer {
            name: "tftpd-hpa",
            port,
            child,
        });
    } else {
        println!("tftpd-hpa not found (in.tftpd): column skipped");
    }
    if let Some(atftpd) = find("atftpd", &[]) {
        let port = free_port()?;
        let child = pinned(&atftpd, SERVER_CPU, args.pin)
            .args([
                "--daemon",
                "--no-fork",
                "--user",
                "nobody.nogroup",
                "--logfile",
                "/dev/null",
            ])
            .args(["--bind-address", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting atftpd")?;
        peers.push(PeerServer {
            name: "atftpd",
            port,
            child,
        });
    } else {
        println!("atftpd not found: column skipped");
    }
    std::thread::sleep(Duration::from_millis(300));
    Ok(peers)
}

/// Our server in this process, on its own tokio runtime.
type Ours = (tokio::runtime::Runtime, u16, Arc<Server<DirSource>>);

fn start_ours(dir: &Path, args: &Args) -> Result<Ours> {
    let clients = args.clients;
    let defaults = TftpConfig::default();
    let config = TftpConfig {
        bind: Ipv4Addr::LOCALHOST,
        port: 0,
        // Loopback's MTU is 65536: let blksize go as high as the RFC allows,
        // as the other servers do.
        blksize_max: Some(65_464),
        transfers_max: clients.max(16) * 2,
        // Every bench client comes from 127.0.0.1.
        transfers_per_client_max: clients.max(16) * 2,
        busy_poll_tries: args.busy_poll_tries.unwrap_or(defaults.busy_poll_tries),
        ..defaults
    };
    let server = Server::new(config.validate()?, DirSource::new(dir)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let port = runtime.block_on(async {
        let rt = TokioRuntime::with_seed(0);
        let listener = ironroot_tftp::driver::bind(&rt, &server).await?;
        let port = ironroot_net::UdpSocket::local_addr(&listener)?.port();
        tokio::spawn(ironroot_tftp::driver::run(rt, server.clone(), listener));
        anyhow::Ok(port)
    })?;
    Ok((runtime, port, server))
}

fn atftp_command(
    args: &Args,
    port: u16,
    remote: &str,
    out: &Path,
    options: &[String],
) -> Result<Command> {
    let atftp = find("atftp", &[]).context("atftp not found: apt-get install atftp")?;
    let mut command = pinned(&atftp, args.client_cpu, args.pin);
    for option in options {
        command.arg("--option").arg(option);
    }
    command
        .args(["-g", "-r", remote, "-l"])
        .arg(out)
        .arg("127.0.0.1")
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(command)
}

/// Wait for every child, bounded; `false` if one failed or overstayed.
fn wait_all(children: &mut [Child], run_max: Duration) -> Result<bool> {
    let poll = Duration::from_millis(2);
    let mut ok = true;
    let mut pending: Vec<usize> = (0..children.len()).collect();
    for _ in 0..run_max.as_millis() / poll.as_millis() {
        let mut still = Vec::new();
        for index in pending {
            match children[index].try_wait()? {
                Some(status) => ok &= status.success(),
                None => still.push(index),
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(ok);
        }
        std::thread::sleep(poll);
    }
    for child in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok(false)
}

/// Seconds for `clients` parallel fetches of `remote`, or `None` on failure.
fn timed_fetch(
    clock: &TokioRuntime,
    mut commands: Vec<Command>,
    run_max: Duration,
) -> Result<Option<f64>> {
    let started = clock.now();
    let mut children = commands
        .iter_mut()
        .map(|command| command.spawn().context("spawning atftp"))
        .collect::<Result<Vec<_>>>()?;
    let ok = wait_all(&mut children, run_max)?;
    let elapsed = clock.now() - started;
    Ok(ok.then_some(elapsed.as_secs_f64()))
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

fn write_pattern(path: &Path, len: u64) -> Result<()> {
    let chunk: Vec<u8> = (0..1_048_576u32).map(|index| (index % 251) as u8).collect();
    let mut file = std::fs::File::create(path)?;
    let mut left = len;
    while left > 0 {
        let take = left.min(chunk.len() as u64) as usize;
        std::io::Write::write_all(&mut file, &chunk[..take])?;
        left -= take as u64;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    Ok(())
}

fn fmt_rate(rate: Option<f64>) -> String {
    rate.map_or_else(|| "fail".to_string(), |rate| format!("{rate:.1}"))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let dir =
        Scratch(std::env::temp_dir().join(format!("ironroot-tftp-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0)?;
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755))?;
    let size = args.size_mib * 1_048_576;
    write_pattern(&dir.0.join("big.bin"), size)?;
    write_pattern(&dir.0.join("mid.bin"), args.clients_mib * 1_048_576)?;
    if args.pin {
        // Threads started from here on (our server's) inherit CPU 0.
        let status = Command::new("taskset")
            .args(["-c", "-p", SERVER_CPU])
            .arg(std::process::id().to_string())
            .stdout(Stdio::null())
            .status()
            .context("taskset (util-linux) is needed for --pin")?;
        if !status.success() {
            bail!("taskset -p failed: {status}");
        }
    }
    let (_runtime, our_port, ours) = start_ours(&dir.0, &args)?;
    let peers = start_peers(&args, &dir.0)?;
    let mut servers = vec![("ours", our_port)];
    servers.extend(peers.iter().map(|peer| (peer.name, peer.port)));
    let clock = TokioRuntime::with_seed(0);
    verify(&args, &dir.0, &servers, size)?;

    println!(
        "\n{} MiB fetch with atftp on 127.0.0.1, median MB/s of {} runs{}",
        args.size_mib,
        args.runs,
        if args.pin {
            if args.client_cpu == SERVER_CPU {
                " (servers and client on CPU 0)"
            } else {
                " (servers on CPU 0, client on CPU 1)"
            }
        } else {
            ""
        }
    );
    let header: Vec<String> = servers
        .iter()
        .map(|(name, _)| format!("{name:>10}"))
        .collect();
    println!(
        "blksize window {}  ours/best-peer   CPU 0 busy s per fetch",
        header.join("")
    );
    let grid: Vec<(u32, u32)> = match args.only {
        Some(only) => vec![only],
        None => BLKSIZES
            .iter()
            .flat_map(|blksize| WINDOWSIZES.iter().map(|window| (*blksize, *window)))
            .collect(),
    };
    for (blksize, window) in grid {
        let mut options = vec![format!("blksize {blksize}")];
        if window > 1 {
            options.push(format!("windowsize {window}"));
        }
        let mut rates = Vec::new();
        let mut cpus = Vec::new();
        for (_, port) in &servers {
            let before = server_cpu_busy_secs();
            rates.push(measure(&args, &clock, *port, &options, size)?);
            cpus.push((server_cpu_busy_secs() - before) / args.runs as f64);
        }
        print_row(&format!("{blksize:>7} {window:>6}"), &rates, &cpus);
        if args.verbose {
            println!("    ours: {:?}", ours.counters().snapshot());
        }
    }
    concurrent(&args, &clock, &servers)?;
    drop(peers);
    Ok(())
}

/// Median MB/s over `--runs` fetches; `None` at the first failed or
/// overlong run (the remaining runs would only repeat it).
fn measure(
    args: &Args,
    clock: &TokioRuntime,
    port: u16,
    options: &[String],
    size: u64,
) -> Result<Option<f64>> {
    let mut samples = Vec::new();
    for _ in 0..args.runs {
        let mut command = atftp_command(args, port, "big.bin", Path::new("/dev/null"), options)?;
        if args.verbose {
            command.stderr(Stdio::inherit());
        }
        match timed_fetch(clock, vec![command], args.run_max)? {
            Some(secs) => samples.push(size as f64 / secs / 1e6),
            None => return Ok(None),
        }
    }
    Ok(median(samples))
}

/// Busy seconds (everything but idle and iowait) of the servers' CPU
/// from /proc/stat: it counts tftpd-hpa's per-transfer children, which
/// leave no trace in its own stat, and whatever else runs on that CPU
/// (with `--same-cpu`, the client too), alike for every server.
fn server_cpu_busy_secs() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let label = format!("cpu{SERVER_CPU} ");
    let Some(line) = text.lines().find(|line| line.starts_with(&label)) else {
        return 0.0;
    };
    // user nice system idle iowait irq softirq steal ...
    let ticks: u64 = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(index, _)| *index != 3 && *index != 4)
        .map(|(_, field)| field.parse::<u64>().unwrap_or(0))
        .sum();
    // SAFETY: sysconf only reads a constant of the running system.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / per_sec as f64
}

fn print_row(label: &str, rates: &[Option<f64>], cpus: &[f64]) {
    let cells: Vec<String> = rates
        .iter()
        .map(|rate| format!("{:>10}", fmt_rate(*rate)))
        .collect();
    let best_peer = rates
        .iter()
        .skip(1)
        .flatten()
        .copied()
        .fold(None, |best: Option<f64>, rate| {
            Some(best.map_or(rate, |best| best.max(rate)))
        });
    let ratio = match (rates.first().copied().flatten(), best_peer) {
        (Some(ours), Some(peer)) if peer > 0.0 => format!("{:.2}x", ours / peer),
        _ => "-".to_string(),
    };
    let cpu: Vec<String> = cpus.iter().map(|secs| format!("{secs:>6.2}")).collect();
    println!("{label} {}  {ratio:>8}   {}", cells.join(""), cpu.join(""));
}

/// One fetch per server, compared byte for byte, so a broken transfer
/// cannot pass for a fast one.
fn verify(args: &Args, dir: &Path, servers: &[(&str, u16)], size: u64) -> Result<()> {
    for (name, port) in servers {
        let out = dir.join(format!("check-{name}"));
        let options = ["blksize 1468".to_string(), "windowsize 16".to_string()];
        let output = atftp_command(args, *port, "big.bin", &out, &options)?
            .stderr(Stdio::piped())
            .output()?;
        let same = output.status.success() && files_equal(&dir.join("big.bin"), &out)?;
        std::fs::remove_file(&out).ok();
        if !same {
            let stderr = String::from_utf8_lossy(&output.stderr);
            bail!(
                "{name}: verification fetch of {size} bytes failed or differs ({}): {stderr}",
                output.status
            );
        }
    }
    Ok(())
}

fn files_equal(a: &Path, b: &Path) -> Result<bool> {
    Ok(std::fs::read(a)? == std::fs::read(b)?)
}

fn concurrent(args: &Args, clock: &TokioRuntime, servers: &[(&str, u16)]) -> Result<()> {
    if args.clients == 0 {
        return Ok(());
    }
    println!(
        "\n{} concurrent atftp clients x {} MiB, blksize 1468, unpinned: median wall seconds of {} runs",
        args.clients, args.clients_mib, args.runs
    );
    let unpinned = Args {
        pin: false,
        ..*args
    };
    for (name, port) in servers {
        let mut samples = Vec::new();
        for _ in 0..args.runs {
            let commands = (0..args.clients)
                .map(|_| {
                    let options = ["blksize 1468".to_string()];
                    atftp_command(
                        &unpinned,
                        *port,
                        "mid.bin",
                        Path::new("/dev/null"),
                        &options,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            if let Some(secs) = timed_fetch(clock, commands, args.run_max)? {
                samples.push(secs);
            }
        }
        let cell = (samples.len() == args.runs)
            .then(|| median(samples))
            .flatten()
            .map_or_else(|| "fail".to_string(), |secs| format!("{secs:.2} s"));
        println!("{name:>10} {cell}");
    }
    Ok(())
}
