//! `ironroot`: the operator CLI. Every command is a request to the local
//! `ironrootd`'s admin socket; human output by default, `--json` for tools.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use ironrootd::admin::{call, Request, Response};

mod shell;

#[derive(Parser)]
#[command(
    name = "ironroot",
    version,
    about = "Operate an ironroot cluster (talks to the local ironrootd)"
)]
struct Cli {
    /// The admin socket of the local ironrootd.
    #[arg(long, global = true, default_value = "/run/ironroot/admin.sock")]
    socket: PathBuf,
    /// Print the daemon's answer as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// How long to wait for the daemon (imports of big trees take a while).
    #[arg(long, global = true, default_value_t = 600)]
    timeout_secs: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Who is active, the VIP, the peer, the store and its images.
    Status,
    /// Images: import, history, rollback.
    #[command(subcommand)]
    Image(ImageCommand),
    /// The client registry: MAC -> name, address, image, exception files.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Move the services to the peer with no window where both serve.
    Switchover,
    /// Maintenance: `on` hands the services over and never takes them back.
    Standby {
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Resolve a split brain: decide whose changes win; the loser's
    /// generations are kept as branches and it resyncs from the winner.
    SplitBrain {
        #[command(subcommand)]
        command: SplitBrainCommand,
    },
    /// Boot files of an image.
    #[command(subcommand)]
    Boot(BootCommand),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Import a directory or a tar archive as a new generation of NAME.
    Import {
        name: String,
        #[arg(long)]
        from: PathBuf,
    },
    /// The generations of NAME, newest last.
    Log { name: String },
    /// Every image and its active generation.
    List,
    /// What changed from generation FROM to generation TO of NAME.
    Diff { name: String, from: u64, to: u64 },
    /// Make generation GEN of NAME active again (as a new generation).
    Rollback { name: String, generation: u64 },
    /// Change NAME in a shell chrooted into a writable working copy of its
    /// active generation; when the shell exits 0 the change becomes a new
    /// generation (nothing is committed if nothing changed). Run it on the
    /// active node, as root.
    Shell {
        name: String,
        /// Where the working copy goes (absent or empty). Default:
        /// a new directory under the store directory's `work/`.
        #[arg(long)]
        workdir: Option<PathBuf>,
        /// Run this with `/bin/sh -c` in the chroot instead of an
        /// interactive shell.
        #[arg(long)]
        command: Option<String>,
        /// The new generation's message.
        #[arg(long, default_value = "image shell")]
        message: String,
        /// Commit even if the shell or command exits non-zero.
        #[arg(long)]
        commit_on_failure: bool,
    },
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register a client.
    Add {
        name: String,
        #[arg(long)]
        mac: String,
        #[arg(long)]
        ip: String,
        #[arg(long)]
        image: String,
    },
    /// Every registered client.
    List,
    /// Unregister a client.
    Remove { name: String },
    /// Give client NAME its own copy of PATH, with the contents of FILE.
    Exception {
        name: String,
        path: String,
        #[arg(long)]
        from: PathBuf,
    },
}

#[derive(Subcommand)]
enum SplitBrainCommand {
    /// Resolve a split brain from this node (`ironroot status` says which
    /// flag to use here).
    #[command(group(clap::ArgGroup::new("side").required(true)))]
    Resolve {
        /// On the standby: give up this node's changes (kept as branches)
        /// and resync from the active node.
        #[arg(long, group = "side")]
        discard_local: bool,
        /// On the active node: keep this node's changes; the peer gives
        /// up its own (kept as branches) and resyncs.
        #[arg(long, group = "side")]
        keep_local: bool,
    },
}

#[derive(Subcommand)]
enum BootCommand {
    /// Build the kernel and NFS-root initramfs of IMAGE (default: from the
    /// current Debian bookworm kernel package, downloaded and cached).
    ImportKernel {
        image: String,
        /// A linux-image-*.deb to use instead.
        #[arg(long, conflicts_with = "from_image")]
        deb: Option<PathBuf>,
        /// Use the kernel and modules inside the image.
        #[arg(long)]
        from_image: bool,
    },
}

fn absolute(path: &std::path::Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}

fn request(command: Command) -> Result<Request, String> {
    Ok(match command {
        Command::Status => Request::Status {},
        Command::Image(ImageCommand::Import { name, from }) => Request::ImageImport {
            name,
            from: absolute(&from),
        },
        Command::Image(ImageCommand::Log { name }) => Request::ImageLog { name },
        Command::Image(ImageCommand::List) => Request::ImageList {},
        Command::Image(ImageCommand::Diff { name, from, to }) => {
            Request::ImageDiff { name, from, to }
        }
        Command::Image(ImageCommand::Rollback { name, generation }) => {
            Request::ImageRollback { name, generation }
        }
        Command::Client(ClientCommand::Add {
            name,
            mac,
            ip,
            image,
        }) => Request::ClientAdd {
            name,
            mac,
            ip,
            image,
        },
        Command::Client(ClientCommand::List) => Request::ClientList {},
        Command::Client(ClientCommand::Remove { name }) => Request::ClientRemove { name },
        Command::Client(ClientCommand::Exception { name, path, from }) => {
            Request::ClientException {
                name,
                path,
                from: absolute(&from),
            }
        }
        Command::Switchover => Request::Switchover {},
        Command::Standby { state } => Request::Standby { on: state == "on" },
        Command::SplitBrain {
            command: SplitBrainCommand::Resolve { keep_local, .. },
        } => Request::SplitBrainResolve { keep_local },
        Command::Boot(BootCommand::ImportKernel {
            image,
            deb,
            from_image,
        }) => Request::BootImportKernel {
            image,
            deb: deb.as_deref().map(absolute),
            from_image,
        },
        Command::Completions { .. } | Command::Image(ImageCommand::Shell { .. }) => {
            return Err("this command runs locally".to_owned())
        }
    })
}

/// Human rendering: `key: value` lines for objects, one line per item for lists.
fn render_human(value: &serde_json::Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                if value.is_object() || value.is_array() {
                    out.push_str(&format!("{pad}{key}:\n"));
                    render_human(value, indent + 2, out);
                } else {
                    out.push_str(&format!("{pad}{key}: {}\n", scalar(value)));
                }
            }
        }
        serde_json::Value::Array(items) if items.is_empty() => {
            out.push_str(&format!("{pad}(none)\n"))
        }
        serde_json::Value::Array(items) => {
            for item in items {
                match item {
                    serde_json::Value::Object(map) => {
                        let fields: Vec<String> = map
                            .iter()
                            .map(|(k, v)| format!("{k}={}", scalar(v)))
                            .collect();
                        out.push_str(&format!("{pad}- {}\n", fields.join("  ")));
                    }
                    other => out.push_str(&format!("{pad}- {}\n", scalar(other))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

fn scalar(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "ironroot",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    if let Command::Image(ImageCommand::Shell {
        name,
        workdir,
        command,
        message,
        commit_on_failure,
    }) = cli.command
    {
        let options = shell::Options {
            socket: cli.socket,
            json: cli.json,
            wait: Duration::from_secs(cli.timeout_secs),
            name,
            workdir: workdir.as_deref().map(absolute),
            command,
            message,
            commit_on_failure,
        };
        return shell::run(&options);
    }
    let request = match request(cli.command) {
        Ok(request) => request,
        Err(message) => {
            eprintln!("ironroot: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ironroot: {error}");
            return ExitCode::from(1);
        }
    };
    let wait = Duration::from_secs(cli.timeout_secs);
    let response: Response = match runtime.block_on(call(&cli.socket, &request, wait)) {
        Ok(response) => response,
        Err(error) => {
            eprintln!(
                "ironroot: cannot reach ironrootd at {}: {error}",
                cli.socket.display()
            );
            return ExitCode::from(1);
        }
    };
    let mut out = String::new();
    if cli.json {
        out = serde_json::to_string_pretty(&response).unwrap_or_default() + "\n";
    } else if let Some(error) = &response.error {
        eprintln!("ironroot: {error}");
    } else {
        render_human(&response.data, 0, &mut out);
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    if response.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_help() {
        Cli::command().debug_assert();
        let mut command = Cli::command();
        for sub in command.get_subcommands_mut() {
            assert!(sub.get_about().is_some(), "{} has no help", sub.get_name());
        }
    }

    #[test]
    fn commands_map_to_requests() {
        let cli = Cli::parse_from([
            "ironroot",
            "client",
            "add",
            "web1",
            "--mac",
            "52:54:00:00:00:01",
            "--ip",
            "10.0.0.21",
            "--image",
            "debian",
        ]);
        assert_eq!(
            request(cli.command).expect("request"),
            Request::ClientAdd {
                name: "web1".into(),
                mac: "52:54:00:00:00:01".into(),
                ip: "10.0.0.21".into(),
                image: "debian".into()
            }
        );
        let cli = Cli::parse_from([
            "ironroot",
            "boot",
            "import-kernel",
            "debian",
            "--from-image",
        ]);
        assert_eq!(
            request(cli.command).expect("request"),
            Request::BootImportKernel {
                image: "debian".into(),
                deb: None,
                from_image: true
            }
        );
        let cli = Cli::parse_from(["ironroot", "split-brain", "resolve", "--discard-local"]);
        assert_eq!(
            request(cli.command).expect("request"),
            Request::SplitBrainResolve { keep_local: false }
        );
        let cli = Cli::parse_from(["ironroot", "split-brain", "resolve", "--keep-local"]);
        assert_eq!(
            request(cli.command).expect("request"),
            Request::SplitBrainResolve { keep_local: true }
        );
        for args in [
            &["ironroot", "split-brain", "resolve"][..],
            &[
                "ironroot",
                "split-brain",
                "resolve",
                "--keep-local",
                "--discard-local",
            ][..],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
        assert!(Cli::try_parse_from([
            "ironroot",
            "boot",
            "import-kernel",
            "debian",
            "--deb",
            "k.deb",
            "--from-image"
        ])
        .is_err());
    }

    #[test]
    fn human_output_lists_items_one_per_line() {
        let mut out = String::new();
        render_human(
            &serde_json::json!({"role": "active", "images": [{"image": "debian", "generation": 3}]}),
            0,
            &mut out,
        );
        assert_eq!(
            out,
            "images:\n  - generation=3  image=debian\nrole: active\n"
        );
    }
}
