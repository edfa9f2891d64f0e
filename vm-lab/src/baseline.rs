//! The baseline server side, made of peers: dnsmasq (DHCP with iPXE
//! detection, TFTP) and nfs-ganesha (userspace NFSv3 server exporting the
//! client root read-only through its VFS back end), with rpcbind because
//! the client's mount options (the boot crate's) name no ports, so the
//! kernel asks portmap for MOUNT and NFS as it would ask ironroot's.
//! Everything runs in the server namespace; rpcbind and ganesha share a
//! private /run there so nothing collides with the host's.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::LabError;
use crate::host::{check_interrupted, kill_pid, run_bounded, ChildGuard, COMMAND_SECS_MAX};

/// Longest wait for dnsmasq, rpcbind and ganesha to listen.
pub const SERVER_START_SECS_MAX: u64 = 60;
pub const NFS_PORT: u16 = 2049;
pub const MOUNT_PORT: u16 = 20048;
const READY_POLL_MS: u64 = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineClient {
    pub mac: String,
    pub addr: Ipv4Addr,
    pub name: String,
    /// TFTP path of its iPXE script.
    pub ipxe_script: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineSpec {
    pub netns: String,
    pub iface: String,
    pub server_addr: Ipv4Addr,
    pub pool: (Ipv4Addr, Ipv4Addr),
    pub tftp_root: PathBuf,
    pub export_root: PathBuf,
    pub run_dir: PathBuf,
    pub clients: Vec<BaselineClient>,
    /// Boot file for PXE ROMs that are not iPXE yet.
    pub chainload: String,
}

/// dnsmasq's command line: no DNS, DHCP only on the lab interface, no ping
/// before an offer (~3 s saved), iPXE told not to wait for ProxyDHCP
/// (option 175.176), iPXE clients get their script, others iPXE itself.
pub fn dnsmasq_args(spec: &BaselineSpec) -> Vec<String> {
    let mut args: Vec<String> = [
        "--conf-file=/dev/null",
        "--keep-in-foreground",
        "--log-facility=-",
        "--log-dhcp",
        "--port=0",
        "--bind-interfaces",
        "--no-ping",
        "--dhcp-authoritative",
        "--user=root",
        "--pid-file=",
        "--enable-tftp",
        "--dhcp-userclass=set:ipxe,iPXE",
        "--dhcp-option=tag:ipxe,encap:175,176,1b",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--interface={}", spec.iface));
    args.push(format!(
        "--dhcp-range={},{},255.255.255.0,1h",
        spec.pool.0, spec.pool.1
    ));
    args.push(format!("--tftp-root={}", spec.tftp_root.display()));
    args.push(format!(
        "--dhcp-leasefile={}",
        spec.run_dir.join("dnsmasq.leases").display()
    ));
    for (index, client) in spec.clients.iter().enumerate() {
        args.push(format!(
            "--dhcp-host={},set:client{index},{},{}",
            client.mac, client.addr, client.name
        ));
        args.push(format!(
            "--dhcp-boot=tag:ipxe,tag:client{index},{}",
            client.ipxe_script
        ));
    }
    args.push(format!("--dhcp-boot=tag:!ipxe,{}", spec.chainload));
    args
}

/// ganesha's configuration: NFSv3 over TCP only, fixed ports, one
/// read-only export of the client root answering MOUNT for "/", no NLM,
/// no rquota, no grace period (nothing to reclaim).
pub fn ganesha_config(spec: &BaselineSpec) -> String {
    format!(
        r#"NFS_CORE_PARAM {{
    Protocols = 3;
    NFS_Port = {NFS_PORT};
    MNT_Port = {MOUNT_PORT};
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Mount_Path_Pseudo = true;
}}
NFSV4 {{ Graceless = true; }}
EXPORT {{
    Export_Id = 1;
    Path = "{path}";
    Pseudo = "/";
    Protocols = 3;
    Transports = TCP;
    Access_Type = RO;
    Squash = No_Root_Squash;
    SecType = sys;
    FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = EVENT; }}
"#,
        path = spec.export_root.display()
    )
}

/// The shell that runs in the server namespace: a private /run, rpcbind
/// (its PID in a file for cleanup), then exec ganesha in the foreground.
fn nfs_launcher(run_dir: &Path) -> String {
    let run = run_dir.display();
    format!(
        "set -e\n\
         mount -t tmpfs -o mode=0755 tmpfs /run\n\
         mkdir -p /run/rpcbind\n\
         rpcbind -f >{run}/rpcbind.log 2>&1 &\n\
         echo $! >{run}/rpcbind.pid\n\
         i=0\n\
         while [ ! -S /run/rpcbind.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done\n\
         exec ganesha.nfsd -F -L /dev/stderr -f {run}/ganesha.conf -p {run}/ganesha.pid\n"
    )
}

pub struct BaselineServer {
    pub spec: BaselineSpec,
    /// Set-up steps and their durations (none measured: it starts at once).
    pub setup_ms: Vec<(&'static str, u64)>,
    dnsmasq: ChildGuard,
    ganesha: ChildGuard,
}

impl BaselineServer {
    pub fn start(spec: BaselineSpec) -> Result<BaselineServer, LabError> {
        fs::create_dir_all(&spec.run_dir).map_err(LabError::io(&spec.run_dir))?;
        let conf = spec.run_dir.join("ganesha.conf");
        fs::write(&conf, ganesha_config(&spec)).map_err(LabError::io(&conf))?;
        let ganesha = spawn_in(&spec.netns, "ganesha.nfsd", |c| {
            c.args(["sh", "-c", &nfs_launcher(&spec.run_dir)]);
        })?;
        let dnsmasq = spawn_in(&spec.netns, "dnsmasq", |c| {
            c.arg("dnsmasq").args(dnsmasq_args(&spec));
        })?;
        let mut server = BaselineServer {
            spec,
            setup_ms: Vec::new(),
            dnsmasq,
            ganesha,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// What a supervisor restarting a crashed single server gives: rpcbind
    /// and ganesha killed (`kill -9`, by PID) and started again at once,
    /// back when they listen. The baseline's nearest thing to a failover.
    pub fn restart_nfs(&mut self) -> Result<(), LabError> {
        kill_pid(self.ganesha.pid());
        self.ganesha.stop(0);
        self.kill_rpcbind();
        let launcher = nfs_launcher(&self.spec.run_dir);
        self.ganesha = spawn_in(&self.spec.netns, "ganesha.nfsd", |c| {
            c.args(["sh", "-c", &launcher]);
        })?;
        self.wait_ready()
    }

    fn kill_rpcbind(&self) {
        let pid_file = self.spec.run_dir.join("rpcbind.pid");
        if let Some(pid) = fs::read_to_string(pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
        {
            kill_pid(pid);
        }
    }

    fn wait_ready(&mut self) -> Result<(), LabError> {
        let tcp = [111, NFS_PORT, MOUNT_PORT];
        let udp = [67, 69];
        let polls_max = SERVER_START_SECS_MAX * 1000 / READY_POLL_MS;
        for _ in 0..polls_max {
            self.check_alive()?;
            check_interrupted()?;
            let listening_tcp = listening(&self.spec.netns, "-ltn")?;
            let listening_udp = listening(&self.spec.netns, "-lun")?;
            let ready = tcp.iter().all(|p| listening_tcp.contains(p))
                && udp.iter().all(|p| listening_udp.contains(p));
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(READY_POLL_MS));
        }
        Err(LabError::ServerTimeout {
            name: "SERVER_START_SECS_MAX",
            secs: SERVER_START_SECS_MAX,
            what: "dnsmasq (67/udp, 69/udp), rpcbind (111/tcp) and ganesha (2049, 20048/tcp) to listen"
                .into(),
        })
    }

    /// An error naming the daemon that died, with its stderr.
    pub fn check_alive(&mut self) -> Result<(), LabError> {
        for (server, guard) in [
            ("dnsmasq", &mut self.dnsmasq),
            ("ganesha.nfsd", &mut self.ganesha),
        ] {
            if let Some(status) = guard.try_exited() {
                return Err(LabError::ServerDied {
                    server,
                    status: status.to_string(),
                    stderr: guard.stderr_text(),
                });
            }
        }
        Ok(())
    }

    pub fn logs(&self) -> String {
        format!(
            "--- dnsmasq ---\n{}\n--- ganesha ---\n{}",
            self.dnsmasq.stderr_text(),
            self.ganesha.stderr_text()
        )
    }
}

impl Drop for BaselineServer {
    fn drop(&mut self) {
        self.dnsmasq.stop(1_000);
        self.ganesha.stop(2_000);
        self.kill_rpcbind();
    }
}

fn spawn_in(
    netns: &str,
    name: &str,
    build: impl FnOnce(&mut Command),
) -> Result<ChildGuard, LabError> {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns]);
    build(&mut command);
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            program: name.to_string(),
            source,
        })?;
    Ok(ChildGuard::new(name.to_string(), child))
}

/// Local ports listening in `netns` (`ss -ltn` / `-lun`).
fn listening(netns: &str, flags: &str) -> Result<Vec<u16>, LabError> {
    let out = run_bounded(
        Command::new("ip").args(["netns", "exec", netns, "ss", "-H", flags]),
        "ss",
        COMMAND_SECS_MAX,
    )?;
    Ok(parse_ss_ports(&out))
}

pub fn parse_ss_ports(out: &str) -> Vec<u16> {
    out.lines()
        .filter_map(|line| {
            let local = line.split_whitespace().nth(3)?;
            local.rsplit_once(':')?.1.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BaselineSpec {
        BaselineSpec {
            netns: "irl-1-srv".into(),
            iface: "lab0".into(),
            server_addr: Ipv4Addr::new(10, 99, 0, 1),
            pool: (Ipv4Addr::new(10, 99, 0, 100), Ipv4Addr::new(10, 99, 0, 199)),
            tftp_root: "/run/lab/tftp".into(),
            export_root: "/var/cache/ironroot/lab/root-x".into(),
            run_dir: "/run/lab".into(),
            clients: vec![BaselineClient {
                mac: "52:54:00:99:00:00".into(),
                addr: Ipv4Addr::new(10, 99, 0, 100),
                name: "lab-vm0".into(),
                ipxe_script: "ipxe/clients/52-54-00-99-00-00.ipxe".into(),
            }],
            chainload: "ipxe/undionly.kpxe".into(),
        }
    }

    #[test]
    fn dnsmasq_serves_ipxe_its_script_without_waits() {
        let args = dnsmasq_args(&spec());
        for wanted in [
            "--no-ping",
            "--port=0",
            "--dhcp-userclass=set:ipxe,iPXE",
            "--dhcp-option=tag:ipxe,encap:175,176,1b",
            "--interface=lab0",
            "--dhcp-host=52:54:00:99:00:00,set:client0,10.99.0.100,lab-vm0",
            "--dhcp-boot=tag:ipxe,tag:client0,ipxe/clients/52-54-00-99-00-00.ipxe",
            "--dhcp-boot=tag:!ipxe,ipxe/undionly.kpxe",
            "--tftp-root=/run/lab/tftp",
        ] {
            assert!(
                args.iter().any(|a| a == wanted),
                "missing {wanted}: {args:?}"
            );
        }
    }

    #[test]
    fn ganesha_exports_read_only_v3_tcp() {
        let conf = ganesha_config(&spec());
        for wanted in [
            "Protocols = 3;",
            "Access_Type = RO;",
            "Transports = TCP;",
            "Path = \"/var/cache/ironroot/lab/root-x\";",
            "MNT_Port = 20048;",
        ] {
            assert!(conf.contains(wanted), "missing {wanted}");
        }
    }

    #[test]
    fn ss_ports_are_parsed() {
        let out = "LISTEN 0 4096 0.0.0.0:111 0.0.0.0:*\nLISTEN 0 4096 *:2049 *:*\n\
                   UNCONN 0 0 10.99.0.1%lab0:67 0.0.0.0:*\n";
        assert_eq!(parse_ss_ports(out), vec![111, 2049, 67]);
    }
}
