//! `ironrootd --config /etc/ironroot/ironroot.toml [--node NAME] [--role node|witness]`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use ironrootd::config::{ConfigError, IronrootFile, LogSection};
use ironrootd::reload::{LogControl, Reloader};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Role {
    /// A control node: store, NFS, TFTP, DHCP, VIP.
    Node,
    /// The third vote: grants time-bounded leases, records the Outdated node.
    Witness,
}

#[derive(Parser)]
#[command(
    name = "ironrootd",
    version,
    about = "The ironroot control-node daemon"
)]
struct Args {
    /// The configuration file (the same on both nodes and the witness).
    #[arg(long, default_value = "/etc/ironroot/ironroot.toml")]
    config: PathBuf,
    /// This node's name in cluster.nodes (default: the host name).
    #[arg(long)]
    node: Option<String>,
    #[arg(long, value_enum, default_value = "node")]
    role: Role,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Install the subscriber; the returned control swaps its filter (SIGHUP).
/// `IRONROOT_LOG` wins over the file's `log.level`: the flag says so.
fn init_logging(log: &LogSection) -> (LogControl, bool) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, reload, EnvFilter, Layer};
    let from_env = EnvFilter::try_from_env("IRONROOT_LOG").ok();
    let env_filter = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| {
        EnvFilter::try_new(log.filter()).unwrap_or_else(|_| EnvFilter::new("info"))
    });
    let (filter, handle) = reload::Layer::new(filter);
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let output = if log.json {
        fmt::layer().with_writer(std::io::stderr).json().boxed()
    } else {
        fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .without_time()
            .boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .init();
    let control: LogControl = Box::new(move |directive: &str| {
        let filter = EnvFilter::try_new(directive).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    });
    (control, env_filter)
}

/// Filesystem calls of the NFS server run on the workers and may wait for
/// the store lock. Without the LIFO slot a spawned task goes to the run
/// queue and wakes an idle worker, which then keeps polling the sockets;
/// with it, a task that blocks straight after being spawned can leave
/// nobody polling I/O.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .disable_lifo_slot()
        .enable_all()
        .build()
        .map_err(|error| anyhow::anyhow!("cannot start the runtime: {error}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let display = args.config.display().to_string();
    let text = match std::fs::read_to_string(&args.config) {
        Ok(text) => text,
        Err(source) => {
            let error = ConfigError::Read {
                file: display.clone(),
                source,
            };
            eprintln!("ironrootd: {error}");
            return ExitCode::from(2);
        }
    };
    let file = match IronrootFile::parse(&text, &display) {
        Ok(file) => file,
        Err(error) => {
            eprintln!("ironrootd: {error}");
            return ExitCode::from(2);
        }
    };
    let reloader = |node: Option<String>, log: &LogSection| {
        let (control, env_filter) = init_logging(log);
        Reloader::new(&args.config, node, &text, control, env_filter)
            .map_err(|e| anyhow::anyhow!(e))
    };
    let result = match args.role {
        Role::Witness => match file.witness(&display) {
            Err(error) => Err(anyhow::Error::new(error)),
            Ok(_) if args.check => Ok(()),
            Ok(settings) => reloader(None, &settings.log).and_then(|reloader| {
                runtime()?.block_on(ironrootd::witness::run(settings, reloader))
            }),
        },
        Role::Node => {
            let name = args.node.unwrap_or_else(host_name);
            match file.node(&name, &display) {
                Err(error) => Err(anyhow::Error::new(error)),
                Ok(_) if args.check => Ok(()),
                Ok(settings) => {
                    // Before any thread exists: see `guardian`.
                    if let Err(error) = ironrootd::guardian::spawn(settings.cluster.vip.clone()) {
                        eprintln!("ironrootd: no guardian for the VIP: {error}");
                    }
                    reloader(Some(name.clone()), &settings.log).and_then(|reloader| {
                        runtime()?.block_on(ironrootd::node::run(settings, reloader))
                    })
                }
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ironrootd: {error:#}");
            ExitCode::from(2)
        }
    }
}
