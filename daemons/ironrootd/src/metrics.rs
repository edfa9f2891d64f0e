//! Prometheus metrics: a text rendering of samples (exposition format
//! 0.0.4) and a minimal HTTP endpoint that serves it on `GET /metrics`.

use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use ironroot_net::{Runtime, TcpListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes of an HTTP request head read at most.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
/// Scrapes served at once.
pub const CONNECTIONS_MAX: usize = 8;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Counter or gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Sample {
    pub fn counter(name: &'static str, help: &'static str, value: u64) -> Sample {
        Sample {
            name,
            help,
            kind: Kind::Counter,
            labels: Vec::new(),
            value: value as f64,
        }
    }

    pub fn gauge(name: &'static str, help: &'static str, value: f64) -> Sample {
        Sample {
            name,
            help,
            kind: Kind::Gauge,
            labels: Vec::new(),
            value,
        }
    }

    pub fn label(mut self, key: &'static str, value: impl Into<String>) -> Sample {
        self.labels.push((key, value.into()));
        self
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Render samples; samples of one name are grouped under one HELP/TYPE.
pub fn render(samples: &[Sample]) -> String {
    let mut out = String::new();
    let mut names: Vec<&str> = Vec::new();
    for sample in samples {
        if !names.contains(&sample.name) {
            names.push(sample.name);
        }
    }
    for name in names {
        let mut family = samples.iter().filter(|s| s.name == name).peekable();
        if let Some(first) = family.peek() {
            let kind = match first.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", first.help);
        }
        for sample in family {
            let labels: Vec<String> = sample
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            let labels = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", labels.join(","))
            };
            let _ = writeln!(out, "{name}{labels} {}", sample.value);
        }
    }
    out
}

/// Serve `GET /metrics` on `listener`; `collect` is called per scrape.
pub async fn serve<R, F>(rt: R, listener: R::Listener, collect: F) -> io::Result<()>
where
    R: Runtime,
    F: Fn() -> Vec<Sample> + Send + Sync + 'static,
{
    let collect = std::sync::Arc::new(collect);
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let (stream, _) = listener.accept().await?;
        let Ok(permit) = std::sync::Arc::clone(&permits).try_acquire_owned() else {
            continue;
        };
        let (rt, collect) = (rt.clone(), std::sync::Arc::clone(&collect));
        tokio::spawn(async move {
            let _permit = permit;
            let _ =
                ironroot_net::timeout(&rt, REQUEST_TIMEOUT, answer(stream, collect.as_ref())).await;
        });
    }
}

async fn answer<S, F>(mut stream: S, collect: &F) -> io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    F: Fn() -> Vec<Sample>,
{
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = stream.read(&mut buf).await?;
        if read == 0 || head.len() + read > REQUEST_HEAD_BYTES_MAX {
            return Ok(());
        }
        head.extend_from_slice(&buf[..read]);
    }
    let (status, body) = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?")
    {
        ("200 OK", render(&collect()))
    } else {
        ("404 Not Found", "try GET /metrics\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_once_with_labels() {
        let samples = vec![
            Sample::gauge("ironroot_role", "Role of this node (1 = current).", 1.0)
                .label("role", "active"),
            Sample::counter("ironroot_nfs_calls_total", "NFS calls answered.", 7),
            Sample::gauge("ironroot_role", "Role of this node (1 = current).", 0.0)
                .label("role", "stand\"by"),
        ];
        let text = render(&samples);
        assert_eq!(text.matches("# TYPE ironroot_role gauge").count(), 1);
        assert!(
            text.contains("ironroot_role{role=\"active\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ironroot_role{role=\"stand\\\"by\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("ironroot_nfs_calls_total 7\n"), "{text}");
    }

    #[tokio::test]
    async fn serves_get_metrics_over_tcp() {
        let rt = ironroot_net::tokio_backend::TokioRuntime::with_seed(1);
        let listener = rt
            .listen_tcp("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("listen");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(rt.clone(), listener, || {
            vec![Sample::counter("x_total", "X.", 3)]
        }));
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.expect("read");
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        assert!(reply.ends_with("x_total 3\n"), "{reply}");
        server.abort();
    }
}
