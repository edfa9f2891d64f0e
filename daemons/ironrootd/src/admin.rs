//! The admin API: JSON requests and responses, one per line, over a Unix
//! socket that only root may open. `ironroot` (the CLI) is its client.
//!
//! Every write command is refused on a node that is not active, with the
//! name of the node that is — unless the command is for the standby itself
//! (`standby`, `split-brain resolve` on the losing side, `status`).

use std::io;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Longest request line accepted (the CLI sends paths, not file contents).
pub const REQUEST_BYTES_MAX: usize = 64 * 1024;
/// Longest response line the client reads.
pub const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Admin connections served at once.
pub const CONNECTIONS_MAX: usize = 16;
/// A client that sends no complete request in this time is dropped.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What an operator can ask a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    // Unit-like variants are written `{}` so that unknown fields are
    // rejected for them too (serde ignores extra keys of unit variants).
    Status {},
    ImageImport {
        name: String,
        from: String,
    },
    ImageLog {
        name: String,
    },
    ImageDiff {
        name: String,
        from: u64,
        to: u64,
    },
    ImageRollback {
        name: String,
        generation: u64,
    },
    ImageList {},
    /// `image shell`, first half: a working copy of NAME's active
    /// generation, in `workdir` or under the store directory.
    ImageShellBegin {
        name: String,
        workdir: Option<String>,
    },
    /// `image shell`, second half: commit the working copy (unless
    /// unchanged) or discard it.
    ImageShellEnd {
        workdir: String,
        commit: bool,
        message: String,
    },
    ClientAdd {
        name: String,
        mac: String,
        ip: String,
        image: String,
    },
    ClientList {},
    ClientRemove {
        name: String,
    },
    ClientException {
        name: String,
        path: String,
        from: String,
    },
    Switchover {},
    Standby {
        on: bool,
    },
    /// `keep_local`: this node's history wins (run on the active node);
    /// otherwise this node's divergent entries are discarded, their
    /// generations kept as branches (run on the standby).
    SplitBrainResolve {
        keep_local: bool,
    },
    BootImportKernel {
        image: String,
        deb: Option<String>,
        from_image: bool,
    },
}

impl Request {
    /// Whether the command changes replicated state (and so must run on the
    /// active node).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::ImageImport { .. }
                | Request::ImageRollback { .. }
                | Request::ClientAdd { .. }
                | Request::ClientRemove { .. }
                | Request::ClientException { .. }
                | Request::Switchover {}
                | Request::BootImportKernel { .. }
                | Request::ImageShellBegin { .. }
                | Request::ImageShellEnd { .. }
        )
    }
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Response {
        Response {
            ok: true,
            error: None,
            data,
        }
    }

    pub fn error(message: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(message.into()),
            data: serde_json::Value::Null,
        }
    }
}

/// The refusal a write command gets on a node that is not active.
pub fn standby_refusal(role: &str, active: Option<&str>) -> Response {
    let active = active.map_or("unknown (no active node)".to_owned(), str::to_owned);
    Response::error(format!("this node is {role}; the active node is {active}"))
}

/// Answers requests; implemented by the node daemon.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> impl std::future::Future<Output = Response> + Send;
}

/// Serve the admin socket at `path` until an accept error. The socket is
/// created with mode 0600 (root only) in a directory the caller owns.
pub async fn serve<H: Handler>(path: &Path, handler: std::sync::Arc<H>) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let (stream, _) = listener.accept().await?;
        // The mode is set just after the bind: check the caller too.
        if !caller_allowed(&stream) {
            tracing::warn!(peer = ?stream.peer_cred().ok(), "admin connection from another user refused");
            drop(stream);
            continue;
        }
        let Ok(permit) = std::sync::Arc::clone(&permits).try_acquire_owned() else {
            drop(stream); // over the limit: the client sees the close
            continue;
        };
        let handler = std::sync::Arc::clone(&handler);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(error) = serve_one(stream, handler.as_ref()).await {
                tracing::debug!(%error, "admin connection ended");
            }
        });
    }
}

/// Root, or the daemon's own user, by the socket's peer credentials.
fn caller_allowed(stream: &tokio::net::UnixStream) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let own = unsafe { libc::geteuid() };
    stream
        .peer_cred()
        .is_ok_and(|cred| cred.uid() == 0 || cred.uid() == own)
}

/// [`serve`] with owned arguments, for spawning.
pub async fn serve_path<H: Handler>(
    path: std::path::PathBuf,
    handler: std::sync::Arc<H>,
) -> io::Result<()> {
    serve(&path, handler).await
}

async fn serve_one<H: Handler>(stream: tokio::net::UnixStream, handler: &H) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(REQUEST_BYTES_MAX as u64 + 1);
    let mut line = String::new();
    let read = tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await;
    let response = match read {
        Err(_) => Response::error("no request within the timeout"),
        Ok(Err(error)) => return Err(error),
        Ok(Ok(_)) if line.len() > REQUEST_BYTES_MAX => Response::error("request too long"),
        Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim_end()) {
            Ok(request) => handler.handle(request).await,
            Err(error) => Response::error(format!("bad request: {error}")),
        },
    };
    let mut bytes = serde_json::to_vec(&response).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await
}

use tokio::io::AsyncReadExt as _;

/// Send one request to the admin socket at `path` and read the response.
pub async fn call(path: &Path, request: &Request, wait: Duration) -> io::Result<Response> {
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(path).await?;
        let (read, mut write) = stream.into_split();
        let mut bytes = serde_json::to_vec(request).map_err(io::Error::other)?;
        bytes.push(b'\n');
        write.write_all(&bytes).await?;
        let mut reader = BufReader::new(read).take(RESPONSE_BYTES_MAX as u64);
        let mut line = String::new();
        reader.read_line(&mut line).await?;
        serde_json::from_str::<Response>(line.trim_end()).map_err(|error| {
            io::Error::new(io::ErrorKind::InvalidData, format!("bad response: {error}"))
        })
    };
    tokio::time::timeout(wait, exchange).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer from {} within {wait:?}", path.display()),
        )
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;

    impl Handler for Echo {
        async fn handle(&self, request: Request) -> Response {
            if request.is_write() {
                return standby_refusal("standby", Some("node-a"));
            }
            Response::ok(serde_json::to_value(&request).unwrap_or_default())
        }
    }

    /// [`Echo`] served on `dir/admin.sock`, once the socket exists.
    async fn serve_echo(
        dir: &Path,
    ) -> (std::path::PathBuf, tokio::task::JoinHandle<io::Result<()>>) {
        let path = dir.join("admin.sock");
        let server = tokio::spawn({
            let path = path.clone();
            async move { serve(&path, std::sync::Arc::new(Echo)).await }
        });
        for _ in 0..100 {
            if path.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (path, server)
    }

    #[tokio::test]
    async fn requests_round_trip_and_writes_are_refused_on_standby() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, server) = serve_echo(dir.path()).await;
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("socket").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "root only");
        let status = call(&path, &Request::Status {}, Duration::from_secs(5))
            .await
            .expect("call");
        assert!(status.ok);
        assert_eq!(status.data["command"], "status");
        let add = Request::ClientAdd {
            name: "web1".into(),
            mac: "52:54:00:00:00:01".into(),
            ip: "10.0.0.21".into(),
            image: "debian".into(),
        };
        let refused = call(&path, &add, Duration::from_secs(5))
            .await
            .expect("call");
        assert!(!refused.ok);
        assert_eq!(
            refused.error.as_deref(),
            Some("this node is standby; the active node is node-a")
        );
        server.abort();
    }

    /// Another user who reaches the socket (say, in the moment between the
    /// bind and the chmod) is refused by its credentials.
    #[tokio::test]
    async fn another_users_connection_is_closed_unanswered() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to connect as another user");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, server) = serve_echo(dir.path()).await;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("dir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("socket");
        // Closed unanswered: the send may already fail, or the read gets 0.
        let script = "import socket, sys\n\
            s = socket.socket(socket.AF_UNIX)\n\
            s.connect(sys.argv[1])\n\
            try:\n    s.sendall(b'{\"command\": \"status\"}\\n')\n    n = len(s.recv(4096))\n\
            except OSError:\n    n = 0\n\
            print(n)\n";
        let output = tokio::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                script,
            ])
            .arg(&path)
            .output()
            .await
            .expect("setpriv python3");
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "0",
            "{output:?}"
        );
        // Root is still served.
        let status = call(&path, &Request::Status {}, Duration::from_secs(5))
            .await
            .expect("call");
        assert!(status.ok);
        server.abort();
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let error = serde_json::from_str::<Request>(r#"{"command":"status","extra":1}"#);
        assert!(error.is_err());
        let error =
            serde_json::from_str::<Request>(r#"{"command":"image-log","name":"x","nme":"y"}"#);
        assert!(error.is_err());
    }
}
