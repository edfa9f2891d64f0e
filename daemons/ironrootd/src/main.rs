//! `ironrootd --config /etc/ironroot/ironroot.toml [--node NAME] [--role node|witness]`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use ironrootd::config::IronrootFile;

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

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IRONROOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.without_time().init();
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let display = args.config.display().to_string();
    let file = match IronrootFile::load(&args.config) {
        Ok(file) => file,
        Err(error) => {
            eprintln!("ironrootd: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ironrootd: cannot start the runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let result = match args.role {
        Role::Witness => match file.witness(&display) {
            Err(error) => Err(anyhow::Error::new(error)),
            Ok(_) if args.check => Ok(()),
            Ok(settings) => {
                init_logging(settings.log.json);
                runtime.block_on(ironrootd::witness::run(settings))
            }
        },
        Role::Node => {
            let name = args.node.unwrap_or_else(host_name);
            match file.node(&name, &display) {
                Err(error) => Err(anyhow::Error::new(error)),
                Ok(_) if args.check => Ok(()),
                Ok(settings) => {
                    init_logging(settings.log.json);
                    runtime.block_on(ironrootd::node::run(settings))
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
