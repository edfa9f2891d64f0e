//! The cases that need ironroot's cluster and store while clients run:
//! per-client exception files, failover under load (host death, then
//! `kill -9` of the daemon alone), and a new image generation published
//! under a running client.

use std::path::{Path, PathBuf};
use std::process::Command;

use ironroot_net::Clock;

use crate::bootsrc::LAB_IMAGE;
use crate::cases::output;
use crate::error::LabError;
use crate::host::{run_bounded, COMMAND_SECS_MAX};
use crate::lab::Lab;
use crate::qemu::Vm;
use crate::report::{RunRecord, VmRecord};
use crate::server::{client_name, ServerSide};

/// Iterations of the load loop to see before and after each failure.
pub const LOOP_ITERATIONS_BEFORE: u64 = 5;
pub const LOOP_ITERATIONS_AFTER: u64 = 10;
/// Longest wait for the loop to make progress (covers the failover).
pub const LOOP_PROGRESS_SECS_MAX: u64 = 180;
/// The client's attribute cache (`actimeo=` of the boot crate's mount
/// options) and the margin allowed on top for a new file to appear.
pub const ATTRIBUTE_CACHE_MS: u64 = 3_000;
pub const UPDATE_MARGIN_MS: u64 = 3_000;
/// Ticks a program started before the update must print after it.
pub const TICKS_AFTER_UPDATE: u64 = 5;

/// Executes binaries from the root (GNU rm through the dynamic loader,
/// busybox) and checksums files read from it, forever until
/// /tmp/loop.run goes; each iteration prints a tagged line, each failure a
/// tagged ERR line. The hard mount turns a server outage into a stall.
const LOAD_LOOP: &str = "touch /tmp/loop.run; ( \
exp=$(cat /bin/busybox /usr/bin/rm /etc/passwd | sha256sum); i=0; \
while [ -e /tmp/loop.run ]; do i=$((i+1)); \
/usr/bin/rm --version >/dev/null 2>&1 || printf '@@%s ERR %d exec rm\\n' T $i; \
/bin/busybox true || printf '@@%s ERR %d exec busybox\\n' T $i; \
s=$(cat /bin/busybox /usr/bin/rm /etc/passwd 2>&1 | sha256sum); \
[ \"$s\" = \"$exp\" ] || printf '@@%s ERR %d checksum\\n' T $i; \
printf '@@%s LOOP %d\\n' T $i; done; printf '@@%s END %d\\n' T $i ) &";

fn loop_count(text: &str) -> Option<u64> {
    text.strip_prefix("LOOP ")?.trim().parse().ok()
}

/// The longest gap between consecutive loop iterations that ends after
/// `from_ms` (the failure), and the typical gap before it.
pub fn stall_ms(tagged: &[(u64, String)], from_ms: u64) -> (u64, u64) {
    let times: Vec<u64> = tagged
        .iter()
        .filter(|(_, t)| loop_count(t).is_some())
        .map(|(at, _)| *at)
        .collect();
    let gaps: Vec<(u64, u64)> = times.windows(2).map(|w| (w[1], w[1] - w[0])).collect();
    let stall = gaps
        .iter()
        .filter(|(end, _)| *end > from_ms)
        .map(|(_, gap)| *gap)
        .max()
        .unwrap_or(0);
    let before: Vec<u64> = gaps
        .iter()
        .filter(|(end, _)| *end <= from_ms)
        .map(|(_, gap)| *gap)
        .collect();
    (stall, crate::report::median(before).unwrap_or(0))
}

fn errors(tagged: &[(u64, String)]) -> Vec<String> {
    tagged
        .iter()
        .filter(|(_, t)| t.starts_with("ERR "))
        .map(|(at, t)| format!("{t} at {at} ms"))
        .collect()
}

/// Waits for `more` loop iterations after the latest one seen.
fn loop_progress<C: Clock>(vm: &mut Vm<C>, more: u64) -> Result<(), LabError> {
    let last = vm
        .tagged()
        .iter()
        .filter_map(|(_, t)| loop_count(t))
        .max()
        .unwrap_or(0);
    let from = vm.tagged().len();
    vm.wait_tagged(
        from,
        |t| loop_count(t).is_some_and(|n| n >= last + more),
        "LOOP_PROGRESS_SECS_MAX",
        LOOP_PROGRESS_SECS_MAX,
    )?;
    Ok(())
}

pub fn failover_under_load<C: Clock>(
    lab: &mut Lab<C>,
    vm: &mut Vm<C>,
    record: &mut RunRecord,
) -> Result<(), LabError> {
    lab.server.ironroot("failover-under-load")?;
    vm.send(&format!("{LOAD_LOOP}\n"))?;
    loop_progress(vm, LOOP_ITERATIONS_BEFORE)?;
    let clock = lab.clock().clone();

    // Host death of the active node.
    let (first, dead_at) = {
        let server = lab.server.ironroot("failover-under-load")?;
        let first = server
            .active()
            .ok_or_else(|| no_active("before the host death"))?;
        let at = vm.elapsed_ms();
        server.host_death(first, &lab.net)?;
        (first, at)
    };
    let survivor = 1 - first;
    let t = clock.now();
    lab.server.ironroot("failover-under-load")?.wait_active(
        &[survivor],
        crate::ironroot::ACTIVE_SECS_MAX,
        &clock,
    )?;
    let took = clock.now().saturating_duration_since(t).as_millis() as u64;
    record
        .timings_ms
        .insert("host-death-to-active".into(), took);
    loop_progress(vm, LOOP_ITERATIONS_AFTER)?;
    let (stall, period) = stall_ms(vm.tagged(), dead_at);
    record
        .timings_ms
        .insert("loop-period-before".into(), period);
    record.timings_ms.insert("stall-host-death".into(), stall);
    let seen = errors(vm.tagged());
    record.check(
        "no loop error across the host death of the active node",
        seen.is_empty(),
        format!("stall {stall} ms (loop period {period} ms); errors {seen:?}"),
    );

    // The dead node comes back and resyncs, then the daemon of the new
    // active node is killed alone.
    {
        let server = lab.server.ironroot("failover-under-load")?;
        server.revive(first, &lab.net)?;
        let t = clock.now();
        server.wait_resynced(first, &clock)?;
        let took = clock.now().saturating_duration_since(t).as_millis() as u64;
        record
            .timings_ms
            .insert("revived-node-resynced".into(), took);
    }
    loop_progress(vm, LOOP_ITERATIONS_BEFORE)?;
    let killed_at = vm.elapsed_ms();
    let t = clock.now();
    {
        let server = lab.server.ironroot("failover-under-load")?;
        server.kill_daemon(survivor);
        server.wait_active(&[first], crate::ironroot::ACTIVE_SECS_MAX, &clock)?;
    }
    let took = clock.now().saturating_duration_since(t).as_millis() as u64;
    record.timings_ms.insert("kill9-to-active".into(), took);
    loop_progress(vm, LOOP_ITERATIONS_AFTER)?;
    let (stall, _) = stall_ms(vm.tagged(), killed_at);
    record.timings_ms.insert("stall-kill9".into(), stall);
    let seen = errors(vm.tagged());
    record.check(
        "no loop error across kill -9 of ironrootd on the active node",
        seen.is_empty(),
        format!("stall {stall} ms; errors {seen:?}"),
    );

    // The killed daemon restarts and resyncs; a planned switchover then
    // moves the services back under the same load.
    {
        let server = lab.server.ironroot("failover-under-load")?;
        server.start_node(survivor)?;
        server.wait_resynced(survivor, &clock)?;
    }
    loop_progress(vm, LOOP_ITERATIONS_BEFORE)?;
    let switched_at = vm.elapsed_ms();
    let t = clock.now();
    {
        let server = lab.server.ironroot("failover-under-load")?;
        let answer = server.cli(first, &["switchover"])?;
        record.check(
            "the active node accepts a switchover",
            answer["ok"] == true,
            answer.to_string(),
        );
        server.wait_active(&[survivor], crate::ironroot::ACTIVE_SECS_MAX, &clock)?;
    }
    let took = clock.now().saturating_duration_since(t).as_millis() as u64;
    record
        .timings_ms
        .insert("switchover-to-active".into(), took);
    loop_progress(vm, LOOP_ITERATIONS_AFTER)?;
    let (stall, _) = stall_ms(vm.tagged(), switched_at);
    record.timings_ms.insert("stall-switchover".into(), stall);
    let seen = errors(vm.tagged());
    record.check(
        "no loop error across a switchover",
        seen.is_empty(),
        format!("stall {stall} ms; errors {seen:?}"),
    );
    stop_loop(vm, record, 3)
}

/// Ends the load loop and checks it ran through `failures` failures.
fn stop_loop<C: Clock>(
    vm: &mut Vm<C>,
    record: &mut RunRecord,
    failures: u64,
) -> Result<(), LabError> {
    let iterations = vm
        .tagged()
        .iter()
        .filter_map(|(_, t)| loop_count(t))
        .max()
        .unwrap_or(0);
    vm.run("rm /tmp/loop.run", "SHELL_COMMAND_SECS_MAX", 60)?;
    let from = vm.tagged().len();
    let ended = vm
        .wait_tagged(
            from,
            |t| t.starts_with("END "),
            "LOOP_PROGRESS_SECS_MAX",
            60,
        )
        .is_ok();
    record.check(
        "the load loop ran through the failures and ended cleanly",
        ended && iterations >= failures * (LOOP_ITERATIONS_BEFORE + LOOP_ITERATIONS_AFTER),
        format!("{iterations} iterations"),
    );
    Ok(())
}

/// The baseline's nearest thing to a failover, for the benchmark: the
/// single NFS server (ganesha and rpcbind) killed and restarted at once
/// under the same load loop.
pub fn server_restart<C: Clock>(
    lab: &mut Lab<C>,
    vm: &mut Vm<C>,
    record: &mut RunRecord,
) -> Result<(), LabError> {
    let clock = lab.clock().clone();
    let ServerSide::Baseline(server) = &mut lab.server else {
        return Err(LabError::CaseRefused {
            case: "server-restart",
            server: "ironroot",
            reason: "failover-under-load kills ironrootd with -9 under load",
        });
    };
    vm.send(&format!("{LOAD_LOOP}\n"))?;
    loop_progress(vm, LOOP_ITERATIONS_BEFORE)?;
    let killed_at = vm.elapsed_ms();
    let t = clock.now();
    server.restart_nfs()?;
    let took = clock.now().saturating_duration_since(t).as_millis() as u64;
    record
        .timings_ms
        .insert("restart-to-listening".into(), took);
    loop_progress(vm, LOOP_ITERATIONS_AFTER)?;
    let (stall, period) = stall_ms(vm.tagged(), killed_at);
    record
        .timings_ms
        .insert("loop-period-before".into(), period);
    record.timings_ms.insert("stall-restart".into(), stall);
    let seen = errors(vm.tagged());
    record.check(
        "no loop error across kill -9 and restart of the NFS server",
        seen.is_empty(),
        format!("stall {stall} ms (loop period {period} ms); errors {seen:?}"),
    );
    stop_loop(vm, record, 1)
}

fn no_active(when: &str) -> LabError {
    LabError::Admin {
        command: "status".into(),
        detail: format!("no node is active {when}"),
    }
}

/// Powers on VMs 0..n and waits for each shell; their phases are recorded.
fn boot_all<C: Clock>(
    lab: &mut Lab<C>,
    record: &mut RunRecord,
    n: usize,
) -> Result<Vec<Vm<C>>, LabError> {
    let mut vms = Vec::new();
    for index in 0..n {
        vms.push(lab.power_on(index)?);
    }
    let mut first_error = None;
    for vm in &mut vms {
        if let Err(e) = lab.wait_shell(vm) {
            first_error.get_or_insert(e);
        }
        record.vms.push(VmRecord {
            vm: vm.name.clone(),
            phases: vm.phases.events.clone(),
        });
    }
    first_error.map_or(Ok(vms), Err)
}

pub fn exceptions<C: Clock>(lab: &mut Lab<C>, record: &mut RunRecord) -> Result<(), LabError> {
    let dir = lab.run_dir.path().to_path_buf();
    let wanted: Vec<String> = (0..2)
        .map(|i| format!("{}-own-hostname", client_name(i)))
        .collect();
    for (i, text) in wanted.iter().enumerate() {
        let file = dir.join(format!("hostname-{i}"));
        std::fs::write(&file, format!("{text}\n")).map_err(LabError::io(&file))?;
        let file = file.display().to_string();
        lab.server.ironroot("exceptions")?.write(&[
            "client",
            "exception",
            &client_name(i),
            "/etc/hostname",
            "--from",
            &file,
        ])?;
    }
    let mut vms = boot_all(lab, record, 2)?;
    for (i, vm) in vms.iter_mut().enumerate() {
        output(vm, "printf '@@%s HOST %s\\n' T \"$(cat /etc/hostname)\"")?;
        let seen = vm
            .tagged()
            .iter()
            .rev()
            .find_map(|(_, t)| t.strip_prefix("HOST "))
            .unwrap_or_default()
            .to_string();
        let other = &wanted[1 - i];
        record.check(
            "each client sees its own /etc/hostname only",
            seen.trim() == wanted[i] && !seen.contains(other.as_str()),
            format!("{} sees {seen:?}, wants {:?}", vm.name, wanted[i]),
        );
        let passwd = output(vm, "sha256sum /etc/passwd")?;
        record.check(
            "files without an exception are the image's",
            passwd.contains(&file_sha256(&lab.server.served_root().join("etc/passwd"))?),
            format!("{}: {passwd}", vm.name),
        );
    }
    Ok(())
}

fn file_sha256(path: &Path) -> Result<String, LabError> {
    use sha2::Digest;
    let bytes = std::fs::read(path).map_err(LabError::io(path))?;
    Ok(sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A program that runs until killed, printing a tick a second; a later
/// generation replaces it with a different one.
const TICKER_V1: &str =
    "#!/bin/sh\ni=0\nwhile :; do i=$((i+1)); printf '@@%s TICK %d\\n' T $i; sleep 1; done\n";
const TICKER_V2: &str = "#!/bin/sh\necho replaced; printf '@@%s NEWTICKER\\n' T; exit 3\n";

/// A copy of `root` with `files` written into it (for a new generation).
fn derived_root(root: &Path, dest: &Path, files: &[(&str, &str)]) -> Result<PathBuf, LabError> {
    run_bounded(
        Command::new("cp").arg("-a").arg(root).arg(dest),
        "cp",
        COMMAND_SECS_MAX,
    )?;
    for (path, text) in files {
        let target = dest.join(path);
        std::fs::write(&target, text).map_err(LabError::io(&target))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
            .map_err(LabError::io(&target))?;
    }
    Ok(dest.to_path_buf())
}

pub fn live_update<C: Clock>(lab: &mut Lab<C>, record: &mut RunRecord) -> Result<(), LabError> {
    let base = lab.server.served_root();
    let run = lab.run_dir.path().to_path_buf();
    let v1 = derived_root(
        &base,
        &run.join("gen-ticker"),
        &[("usr/bin/lab-ticker", TICKER_V1)],
    )?;
    let v1 = v1.display().to_string();
    lab.server
        .ironroot("live-update")?
        .write(&["image", "import", LAB_IMAGE, "--from", &v1])?;
    let mut vm = lab.power_on(0)?;
    let booted = lab.wait_shell(&mut vm);
    record.vms.push(VmRecord {
        vm: vm.name.clone(),
        phases: vm.phases.events.clone(),
    });
    booted?;
    vm.send("/usr/bin/lab-ticker &\n")?;
    vm.wait_tagged(0, |t| t == "TICK 2", "LOOP_PROGRESS_SECS_MAX", 60)?;
    // The guest watches for the new file in the foreground (bounded) and
    // says when it sees it.
    vm.send(
        "i=0; while [ ! -e /etc/lab-update ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; \
         printf '@@%s FOUND %s\\n' T \"$(cat /etc/lab-update 2>&1)\"\n",
    )?;
    vm.idle(500)?;
    let v2 = derived_root(
        Path::new(&v1),
        &run.join("gen-update"),
        &[
            ("etc/lab-update", "generation-2\n"),
            ("usr/bin/lab-ticker", TICKER_V2),
        ],
    )?;
    let v2 = v2.display().to_string();
    let server = lab.server.ironroot("live-update")?;
    server.write(&["image", "import", LAB_IMAGE, "--from", &v2])?;
    let published_at = vm.elapsed_ms();
    // Ticks that arrived while the new generation was being imported.
    vm.idle(100)?;
    let ticks_before = ticks(vm.tagged());
    let from = vm.tagged().len();
    let found = vm.wait_tagged(
        from,
        |t| t.starts_with("FOUND "),
        "UPDATE_MARGIN_MS",
        (ATTRIBUTE_CACHE_MS + UPDATE_MARGIN_MS) / 1000 + 30,
    );
    let (appeared_ms, found_text) = match found {
        Ok(i) => {
            let (at, text) = &vm.tagged()[i];
            (Some(at.saturating_sub(published_at)), text.clone())
        }
        Err(e) => (None, e.to_string()),
    };
    if let Some(ms) = appeared_ms {
        record.timings_ms.insert("new-file-visible".into(), ms);
    }
    record.check(
        "a file of the new generation appears without reboot within actimeo + margin",
        appeared_ms.is_some_and(|ms| ms <= ATTRIBUTE_CACHE_MS + UPDATE_MARGIN_MS)
            && found_text.contains("generation-2"),
        format!("after {appeared_ms:?} ms: {found_text:?}"),
    );
    let from = vm.tagged().len();
    let target = ticks_before + TICKS_AFTER_UPDATE;
    let ticking = vm.wait_tagged(
        from,
        |t| t.strip_prefix("TICK ").and_then(|n| n.parse::<u64>().ok()) >= Some(target),
        "LOOP_PROGRESS_SECS_MAX",
        60,
    );
    let now = output(&mut vm, "cat /usr/bin/lab-ticker | head -2 | tail -1")?;
    let kept = ticking.is_ok() && !vm.tagged().iter().any(|(_, t)| t == "NEWTICKER");
    // When it stopped, what the guest says about it explains why.
    let diagnosis = if kept {
        String::new()
    } else {
        let guest = output(&mut vm, LIVE_DIAGNOSIS)?;
        let console = vm.console();
        let from = console.len().saturating_sub(3_000);
        let from = (from..console.len())
            .find(|i| console.is_char_boundary(*i))
            .unwrap_or(console.len());
        format!("{guest}\n--- console ---\n{}", &console[from..])
    };
    record.check(
        "a program started before the update keeps running",
        kept,
        format!(
            "ticks {ticks_before} at the update ({published_at} ms), {} now (last at {:?} ms); \
             the image's copy now reads {now:?}{diagnosis}",
            ticks(vm.tagged()),
            vm.tagged()
                .iter()
                .rev()
                .find(|(_, t)| t.starts_with("TICK "))
                .map(|(at, _)| *at)
        ),
    );
    Ok(())
}

const LIVE_DIAGNOSIS: &str = "for p in /proc/[0-9]*; do \
case $(cat $p/comm) in sleep|lab-ticker|sh|init) echo \"; $p $(cat $p/comm) $(cut -d' ' -f3,4,5,6 $p/stat) \
$(cat $p/wchan) $(tr '\\n' ' ' <$p/stack)\";; esac; done; \
dmesg | grep -i -e nfs -e rpc | tail -5 | sed 's/^/; dmesg: /'";

fn ticks(tagged: &[(u64, String)]) -> u64 {
    tagged
        .iter()
        .filter_map(|(_, t)| t.strip_prefix("TICK ")?.parse().ok())
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_is_the_longest_gap_ending_after_the_failure() {
        let lines: Vec<(u64, String)> = [(100, "LOOP 1"), (200, "LOOP 2"), (300, "LOOP 3")]
            .into_iter()
            .chain([(350, "ERR 4 exec rm"), (2_300, "LOOP 4"), (2_400, "LOOP 5")])
            .map(|(at, t)| (at, t.to_string()))
            .collect();
        assert_eq!(stall_ms(&lines, 250), (2_000, 100));
        assert_eq!(errors(&lines), vec!["ERR 4 exec rm at 350 ms".to_string()]);
        assert_eq!(ticks(&[(1, "TICK 7".into()), (2, "TICK 9".into())]), 9);
    }

    #[test]
    fn the_load_loop_never_prints_its_tags_in_its_own_echo() {
        assert!(!LOAD_LOOP.contains(crate::qemu::TAG));
        assert!(!TICKER_V1.contains(crate::qemu::TAG));
    }
}
