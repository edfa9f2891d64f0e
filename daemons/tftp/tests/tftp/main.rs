//! ironroot-tftp's integration tests: RFC conformance on the sans-IO
//! machines (one module per RFC section), the driver on loopback, and real
//! peers (atftp, curl) fetching from our server.

mod harness;

mod admission_limits;
mod generated_configs;
mod loopback;
mod peers;
mod rfc1350_2_read;
mod rfc1350_4_lockstep;
mod rfc2347_2_oack;
mod rfc2348_blksize;
mod rfc2349_timeout_tsize;
mod rfc7440_windowsize;
mod rto_cached_estimate;
