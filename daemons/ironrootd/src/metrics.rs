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

// ---- DHCP and TFTP ----

/// The DHCP server's counters as samples.
pub fn dhcp_samples(c: &ironroot_dhcp::Counters) -> Vec<Sample> {
    const REQUESTS: &str = "ironroot_dhcp_requests_total";
    const REQUESTS_HELP: &str = "DHCP messages received, by message type.";
    const REPLIES: &str = "ironroot_dhcp_replies_total";
    const REPLIES_HELP: &str =
        "DHCP replies built, by message type (pool ACKs wait for their lease write).";
    const DROPS: &str = "ironroot_dhcp_dropped_total";
    const DROPS_HELP: &str = "DHCP messages dropped or ignored without a reply, by reason.";
    const LEASES: &str = "ironroot_dhcp_lease_acks_dropped_total";
    const LEASES_HELP: &str = "Pool ACKs not sent, by why their lease write did not release them.";
    let mut samples = vec![
        Sample::counter(
            "ironroot_dhcp_datagrams_total",
            "DHCP datagrams received.",
            c.received,
        ),
        Sample::counter(
            "ironroot_dhcp_replies_sent_total",
            "DHCP replies handed to the socket.",
            c.replies_sent,
        ),
        Sample::counter(
            "ironroot_dhcp_lease_writes_total",
            "Journal writes of pool leases (each one group commit).",
            c.lease_writes,
        ),
        Sample::counter(
            "ironroot_dhcp_lease_records_total",
            "Pool lease records written to the journal.",
            c.lease_records,
        ),
        Sample::counter(
            "ironroot_dhcp_lease_write_failures_total",
            "Journal writes of pool leases that failed.",
            c.lease_write_failures,
        ),
        Sample::gauge(
            "ironroot_dhcp_pool_addresses",
            "Addresses in the dynamic pool.",
            c.pool_addresses as f64,
        ),
        Sample::gauge(
            "ironroot_dhcp_pool_addresses_in_use",
            "Pool addresses offered, bound or quarantined (as of the last lease table tidy).",
            c.pool_addresses_in_use as f64,
        ),
    ];
    for (kind, value) in [
        ("discover", c.discovers),
        ("request", c.requests),
        ("decline", c.declines),
        ("release", c.releases),
        ("inform", c.informs),
    ] {
        samples.push(Sample::counter(REQUESTS, REQUESTS_HELP, value).label("type", kind));
    }
    for (kind, value) in [("offer", c.offers), ("ack", c.acks), ("nak", c.naks)] {
        samples.push(Sample::counter(REPLIES, REPLIES_HELP, value).label("type", kind));
    }
    for (reason, value) in [
        ("truncated", c.dropped_truncated),
        ("malformed", c.dropped_malformed),
        ("too_long", c.dropped_too_long),
        ("foreign_subnet", c.ignored_foreign_subnet),
        ("unknown_client", c.ignored_unknown_client),
        ("other_server", c.ignored_other_server),
        ("incomplete", c.ignored_incomplete),
        ("not_for_proxy", c.ignored_by_proxy),
        ("pool_exhausted", c.pool_exhausted),
        ("lease_table_full", c.lease_table_full),
        ("pending_acks_full", c.pending_acks_full),
        ("transmits_full", c.transmits_full),
        ("reply_too_long", c.reply_too_long),
        ("send_failed", c.send_failures),
        ("declined_reserved", c.declines_of_reserved),
    ] {
        samples.push(Sample::counter(DROPS, DROPS_HELP, value).label("reason", reason));
    }
    for (reason, value) in [
        ("write_failed", c.acks_dropped_unwritten),
        ("late", c.acks_dropped_late),
        ("released_meanwhile", c.acks_dropped_stale),
    ] {
        samples.push(Sample::counter(LEASES, LEASES_HELP, value).label("reason", reason));
    }
    samples
}

/// The TFTP server's counters as samples; `active` transfers run now.
pub fn tftp_samples(t: &ironroot_tftp::CountersSnapshot, active: usize) -> Vec<Sample> {
    const ENDED: &str = "ironroot_tftp_transfers_ended_total";
    const ENDED_HELP: &str = "TFTP transfers ended, by outcome.";
    const ERRORS: &str = "ironroot_tftp_errors_total";
    const ERRORS_HELP: &str = "TFTP requests refused or dropped, by reason.";
    let failed = t.transfers_client_error
        + t.transfers_timed_out
        + t.transfers_read_failed
        + t.transfers_aborted;
    let mut samples = vec![
        Sample::counter("ironroot_tftp_requests_total", "TFTP requests received.", t.requests),
        Sample::counter(
            "ironroot_tftp_transfers_started_total",
            "TFTP read transfers admitted.",
            t.transfers_started,
        ),
        Sample::counter(
            "ironroot_tftp_transfers_completed_total",
            "TFTP transfers completed.",
            t.transfers_completed,
        ),
        Sample::counter(
            "ironroot_tftp_transfers_failed_total",
            "TFTP transfers that ended without the whole file acknowledged (client error, timeout, read error, shutdown).",
            failed,
        ),
        Sample::gauge(
            "ironroot_tftp_transfers_active",
            "TFTP transfers running now.",
            active as f64,
        ),
        Sample::counter(
            "ironroot_tftp_data_bytes_sent_total",
            "TFTP DATA payload bytes sent, retransmissions included.",
            t.data_bytes_sent,
        ),
        Sample::counter(
            "ironroot_tftp_file_bytes_completed_total",
            "Bytes of the files of completed TFTP transfers.",
            t.file_bytes_completed,
        ),
        Sample::counter(
            "ironroot_tftp_data_blocks_sent_total",
            "TFTP DATA blocks sent for the first time.",
            t.data_sent,
        ),
        Sample::counter(
            "ironroot_tftp_retransmits_total",
            "TFTP DATA blocks sent again (timeouts and rewinds).",
            t.data_resent,
        ),
        Sample::counter(
            "ironroot_tftp_timeouts_total",
            "TFTP retransmission timeouts.",
            t.timeouts,
        ),
    ];
    for (outcome, value) in [
        ("completed", t.transfers_completed),
        ("declined_after_oack", t.transfers_declined),
        ("client_error", t.transfers_client_error),
        ("timed_out", t.transfers_timed_out),
        ("read_failed", t.transfers_read_failed),
        ("aborted", t.transfers_aborted),
    ] {
        samples.push(Sample::counter(ENDED, ENDED_HELP, value).label("outcome", outcome));
    }
    for (reason, value) in [
        ("malformed", t.malformed_dropped + t.malformed_refused),
        ("write_refused", t.write_refused),
        ("mode_refused", t.mode_refused),
        ("path_refused", t.path_refused),
        ("not_found", t.not_found),
        ("read_refused", t.read_refused),
        ("busy", t.busy_dropped),
        ("duplicate_request", t.duplicate_requests),
        ("unknown_tid", t.unknown_tid),
        ("timed_out", t.transfers_timed_out),
        ("send_failed", t.send_errors),
    ] {
        samples.push(Sample::counter(ERRORS, ERRORS_HELP, value).label("reason", reason));
    }
    samples
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
