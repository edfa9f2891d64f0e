//! `ironroot image shell`: the daemon makes a working copy of the image on
//! this (the active) node, the shell runs here chrooted into it with the
//! operator's terminal, then the daemon commits or discards it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use ironrootd::admin::{call, Request, Response};

pub struct Options {
    pub socket: PathBuf,
    pub json: bool,
    pub wait: Duration,
    pub name: String,
    pub workdir: Option<String>,
    pub command: Option<String>,
    pub message: String,
    pub commit_on_failure: bool,
}

fn ask(options: &Options, request: &Request) -> Result<Response, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime
        .block_on(call(&options.socket, request, options.wait))
        .map_err(|error| {
            format!(
                "cannot reach ironrootd at {}: {error}",
                options.socket.display()
            )
        })
}

/// The chroot command: an interactive shell, or `sh -c COMMAND`.
pub fn chroot_args(workdir: &str, command: Option<&str>) -> Vec<String> {
    let mut args = vec![workdir.to_owned(), "/bin/sh".to_owned()];
    if let Some(command) = command {
        args.extend(["-c".to_owned(), command.to_owned()]);
    }
    args
}

pub fn run(options: &Options) -> ExitCode {
    match run_inner(options) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("ironroot: {message}");
            ExitCode::from(1)
        }
    }
}

fn run_inner(options: &Options) -> Result<ExitCode, String> {
    let begin = ask(
        options,
        &Request::ImageShellBegin {
            name: options.name.clone(),
            workdir: options.workdir.clone(),
        },
    )?;
    if let Some(error) = begin.error {
        return Err(error);
    }
    let workdir = begin.data["workdir"]
        .as_str()
        .ok_or("the daemon gave no working directory")?
        .to_owned();
    eprintln!(
        "ironroot: {} generation {} in {workdir}; exit the shell to commit (non-zero exit discards)",
        options.name, begin.data["generation"]
    );
    let status = std::process::Command::new("chroot")
        .args(chroot_args(&workdir, options.command.as_deref()))
        .env("PS1", format!("({}) # ", options.name))
        .status();
    let (succeeded, code) = match &status {
        Ok(status) => (status.success(), status.code().unwrap_or(1)),
        Err(error) => {
            eprintln!("ironroot: chroot {workdir}: {error}");
            (false, 1)
        }
    };
    let commit = succeeded || (options.commit_on_failure && status.is_ok());
    if !commit {
        eprintln!("ironroot: the shell exited with {code}: discarding the working copy");
    }
    let end = ask(
        options,
        &Request::ImageShellEnd {
            workdir,
            commit,
            message: options.message.clone(),
        },
    )?;
    if options.json {
        println!("{}", serde_json::to_string_pretty(&end).unwrap_or_default());
    } else if let Some(error) = &end.error {
        eprintln!("ironroot: {error}");
    } else {
        match (end.data["result"].as_str(), end.data["generation"].as_u64()) {
            (Some("committed"), Some(generation)) => {
                println!("committed {} generation {generation}", options.name)
            }
            (Some(result), _) => println!("{result}"),
            _ => println!("{}", end.data),
        }
    }
    Ok(match (end.ok, succeeded) {
        (false, _) => ExitCode::from(1),
        (true, true) => ExitCode::SUCCESS,
        (true, false) => ExitCode::from(u8::try_from(code).unwrap_or(1).max(1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chroot_runs_sh_interactively_or_with_a_command() {
        assert_eq!(chroot_args("/w", None), ["/w", "/bin/sh"]);
        assert_eq!(
            chroot_args("/w", Some("echo hi > /etc/motd")),
            ["/w", "/bin/sh", "-c", "echo hi > /etc/motd"]
        );
    }
}
