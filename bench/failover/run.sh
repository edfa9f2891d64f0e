#!/usr/bin/env bash
# Failover benchmark: ironrootd against keepalived (VRRPv3) in the same
# network-namespace topology and under the same faults.
#
# Topology (all namespaces created here, named with this script's PID, and
# removed on exit): a bridge namespace, nodes a (10.78.0.1) and b (10.78.0.2),
# a witness w (10.78.0.3) and a client c (10.78.0.50); VIP 10.78.0.10/24.
# Nothing is routed out: no namespace has a default route.
#
# Each node runs a UDP responder bound to the VIP (probe.py) that answers with
# the node's name; the client probes the VIP every 10 ms. Failover time =
# fault -> first answer from the standby.
#
# Faults: host  = kill every process of the active node's namespace and cut
#                 its bridge port (host death);
#         kill9 = SIGKILL of the daemon's processes only (link stays up).
#
# Usage (root): bench/failover/run.sh
#   RUNS=5                 runs per (daemon, profile, fault)
#   PROFILES="..."         subset of: ir-default ir-fence-100 ir-fence-200 ir-fast-fence ir-fast-witness ka-100 ka-10
#   IRONROOTD, IRONROOT    binaries (default $CARGO_TARGET_DIR/release/..., else target/release/...)
#   KEEP=1                 keep the work dir (configs, logs, raw results)
set -u
RUNS=${RUNS:-5}
PROFILES=${PROFILES:-"ir-default ir-fence-100 ka-100 ir-fast-fence ir-fast-witness ka-10"}
FAULTS=${FAULTS:-"host kill9"}
HERE=$(cd "$(dirname "$0")" && pwd)
IRONROOTD=${IRONROOTD:-${CARGO_TARGET_DIR:-target}/release/ironrootd}
IRONROOT=${IRONROOT:-${CARGO_TARGET_DIR:-target}/release/ironroot}
KEEPALIVED=${KEEPALIVED:-$(command -v keepalived || echo /usr/sbin/keepalived)}
PY=$(command -v python3)
PROBE="$HERE/probe.py"
TAG="irfo$$"
BR=$TAG-br
declare -A NS=([a]=$TAG-a [b]=$TAG-b [w]=$TAG-w [c]=$TAG-c)
declare -A ADDR=([a]=10.78.0.1 [b]=10.78.0.2 [w]=10.78.0.3 [c]=10.78.0.50)
VIP=10.78.0.10
PORT=7777
KEY=8d3c0b7e1f2a4d5c6b7a8998a7b6c5d4e3f201f2e3d4c5b6a79881726354a5b6
WORK=$(mktemp -d /tmp/irfo-bench.XXXXXX)
RESULTS=$WORK/results.txt
: >"$RESULTS"

die() { echo "error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
[ -x "$KEEPALIVED" ] || die "keepalived missing: apt-get install -y keepalived"
[ -x "$IRONROOTD" ] || die "$IRONROOTD missing: CARGO_TARGET_DIR=/work/target-bench cargo build --release -p ironrootd -p ironroot"
[ -n "$PY" ] || die "python3 missing"

kill_ns() { # every process of a namespace, by PID; frozen first, like a power-off
    local pids
    pids=$(ip netns pids "$1" 2>/dev/null)
    [ -n "$pids" ] || return 0
    kill -STOP $pids 2>/dev/null
    kill -9 $pids 2>/dev/null
}
kill_comm() { # processes of namespace $1 whose command name is $2, by PID
    # SIGSTOP all of them first: keepalived's VRRP child gets SIGTERM when
    # its parent dies (PR_SET_PDEATHSIG) and would otherwise shut down
    # cleanly (priority-0 advert, VIPs removed) instead of crashing.
    local p pids=""
    for p in $(ip netns pids "$1" 2>/dev/null); do
        [ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$2" ] && pids="$pids $p"
    done
    [ -n "$pids" ] || return 0
    kill -STOP $pids 2>/dev/null
    kill -9 $pids 2>/dev/null
}
cleanup() {
    local n
    for n in a b w c; do kill_ns "${NS[$n]}"; done
    sleep 0.1
    for n in a b w c; do ip netns del "${NS[$n]}" 2>/dev/null; done
    ip netns del "$BR" 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

setup() {
    ip netns add "$BR" && ip -n "$BR" link set lo up
    ip -n "$BR" link add br0 type bridge && ip -n "$BR" link set br0 up
    local n
    for n in a b w c; do
        ip netns add "${NS[$n]}"
        ip -n "${NS[$n]}" link set lo up
        ip link add "p$n" netns "$BR" type veth peer name eth0 netns "${NS[$n]}"
        ip -n "$BR" link set "p$n" master br0
        ip -n "$BR" link set "p$n" up
        ip -n "${NS[$n]}" addr add "${ADDR[$n]}/24" dev eth0
        ip -n "${NS[$n]}" link set eth0 up
    done
}

# A fence command for ironroot's fencing mode: the power switch of a
# namespace host (kill all its processes, cut its port).
write_fence() {
    cat >"$WORK/fence.sh" <<FENCE
#!/bin/sh
case "\$1" in a) ns=${NS[a]} ;; b) ns=${NS[b]} ;; *) exit 2 ;; esac
for p in \$(ip netns pids \$ns); do kill -9 \$p 2>/dev/null; done
ip -n $BR link set p\$1 down
FENCE
    chmod +x "$WORK/fence.sh"
}

ironroot_config() { # $1 dir, $2 profile, $3 node
    local quorum timing
    case $2 in
    ir-default)
        quorum=$'[cluster.witness]\naddr = "10.78.0.3:695"\nlease_ms = 1200'
        timing=$'interval_ms = 100\ndead_ms = 1200\ninitial_dead_ms = 1200' ;;
    ir-fast-witness)
        quorum=$'[cluster.witness]\naddr = "10.78.0.3:695"\nlease_ms = 1060'
        timing=$'interval_ms = 10\nwarn_ms = 500\ndead_ms = 1060\ninitial_dead_ms = 1060' ;;
    ir-fence-100)
        quorum=$(printf '[cluster.fencing]\ncommand = ["%s/fence.sh", "{node}"]\ntimeout_ms = 2000\nstandby_delay_ms = 0' "$WORK")
        timing=$'interval_ms = 100\nwarn_ms = 200\ndead_ms = 340\ninitial_dead_ms = 1200' ;;
    ir-fence-200)
        quorum=$(printf '[cluster.fencing]\ncommand = ["%s/fence.sh", "{node}"]\ntimeout_ms = 2000\nstandby_delay_ms = 0' "$WORK")
        timing=$'interval_ms = 200\nwarn_ms = 400\ndead_ms = 1000\ninitial_dead_ms = 1200' ;;
    ir-fast-fence)
        quorum=$(printf '[cluster.fencing]\ncommand = ["%s/fence.sh", "{node}"]\ntimeout_ms = 2000\nstandby_delay_ms = 0' "$WORK")
        timing=$'interval_ms = 10\nwarn_ms = 30\ndead_ms = 50\ninitial_dead_ms = 1060\nclock_margin_ms = 10' ;;
    esac
    mkdir -p "$1/$3"
    cat >"$1/$3.toml" <<CFG
[cluster]
cluster_id = 7
key_hex = "$KEY"
[[cluster.nodes]]
name = "a"
id = 1
links = ["10.78.0.1:694"]
[[cluster.nodes]]
name = "b"
id = 2
links = ["10.78.0.2:694"]
$quorum
[cluster.timing]
$timing
[cluster.vip]
addr = "$VIP"
prefix_len = 24
interface = "eth0"
lifetime_ms = 1000
[store]
dir = "$1/$3/store"
[nfs]
handle_key_file = "$WORK/handle.key"
[dhcp]
vip = "$VIP"
subnet_mask = "255.255.255.0"
[dhcp.boot]
[admin]
socket = "$1/$3/admin.sock"
[metrics]
listen = "127.0.0.1:9450"
CFG
}

keepalived_config() { # $1 dir, $2 profile, $3 node
    local advert prio
    case $2 in ka-100) advert=0.1 ;; ka-10) advert=0.01 ;; esac
    if [ "$3" = a ]; then prio=150; else prio=100; fi
    cat >"$1/$3.conf" <<CFG
global_defs {
    router_id bench_$3
    vrrp_version 3
}
vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority $prio
    advert_int $advert
    virtual_ipaddress {
        $VIP/24 dev eth0
    }
}
CFG
}

start_in() { # $1 node, $2 log, rest: command; detached (killed later by PID via `ip netns pids`)
    local n=$1 log=$2
    shift 2
    (ip netns exec "${NS[$n]}" "$@" </dev/null >"$log" 2>&1 &)
}

reset_hosts() {
    local n
    for n in a b w c; do kill_ns "${NS[$n]}"; done
    sleep 0.2
    for n in a b w; do
        ip -n "$BR" link set "p$n" up
        ip -n "${NS[$n]}" addr del "$VIP/24" dev eth0 2>/dev/null
    done
    ip -n "${NS[c]}" neigh flush all
}

now_ns() { date +%s%N; }

# Last answering node in the probe log, or empty.
last_answer() { tail -n 1 "$1" 2>/dev/null | awk '{print $2}'; }

holds_vip() { # 1 if node $1 has the VIP on eth0
    ip -n "${NS[$1]}" -4 -o addr show dev eth0 | grep -q " $VIP/" && echo 1 || echo 0
}

role_of() { # ironroot role of node $2 in run dir $1
    "$IRONROOT" --socket "$1/$2/admin.sock" --json status 2>/dev/null |
        "$PY" -c 'import json,sys; print(json.load(sys.stdin)["data"]["role"])' 2>/dev/null
}

one_run() { # $1 profile, $2 fault, $3 index
    local profile=$1 fault=$2 dir="$WORK/$1-$2-$3" n i master standby
    mkdir -p "$dir"
    reset_hosts
    for n in a b; do
        start_in "$n" "$dir/responder-$n.log" "$PY" "$PROBE" respond "$VIP" "$PORT" "$n"
    done
    start_in c "$dir/probe.log" "$PY" -u "$PROBE" probe "$VIP" "$PORT" 10
    case $profile in
    ir-*)
        for n in a b; do ironroot_config "$dir" "$profile" "$n"; done
        [ "$profile" = ir-fast-fence ] || [ "$profile" = ir-fence-100 ] || [ "$profile" = ir-fence-200 ] ||
            start_in w "$dir/witness.log" "$IRONROOTD" --config "$dir/a.toml" --role witness
        for n in a b; do
            start_in "$n" "$dir/$n.log" "$IRONROOTD" --config "$dir/$n.toml" --node "$n"
        done ;;
    ka-*)
        for n in a b; do
            keepalived_config "$dir" "$profile" "$n"
            start_in "$n" "$dir/$n.log" "$KEEPALIVED" -n -l -D -P -f "$dir/$n.conf" \
                -p "$dir/$n.pid" -r "$dir/$n.vrrp.pid"
        done ;;
    esac
    # Wait for a master to answer through the VIP, and for the other side to settle.
    for i in $(seq 300); do [ -s "$dir/probe.log" ] && break; sleep 0.05; done
    master=$(last_answer "$dir/probe.log")
    [ -n "$master" ] || { echo "$profile $fault $3 FAIL no-master" >>"$RESULTS"; return; }
    if [ "$master" = a ]; then standby=b; else standby=a; fi
    case $profile in
    ir-*)
        for i in $(seq 150); do [ "$(role_of "$dir" "$standby")" = standby ] && break; sleep 0.1; done
        sleep 1 ;;
    ka-*) sleep 1.5 ;;
    esac
    master=$(last_answer "$dir/probe.log")
    if [ "$master" = a ]; then standby=b; else standby=a; fi
    # The fault.
    local t0
    t0=$(now_ns)
    case $profile/$fault in
    ir-*/kill9) kill_comm "${NS[$master]}" ironrootd ;;
    ka-*/kill9) kill_comm "${NS[$master]}" keepalived ;;
    */host) kill_ns "${NS[$master]}"; ip -n "$BR" link set "p$master" down ;;
    esac
    local first="" vip_at vip_later
    for i in $(seq 750); do
        first=$(awk -v t0="$t0" -v s="$standby" '$1 > t0 && $2 == s {print $1; exit}' "$dir/probe.log")
        [ -n "$first" ] && break
        sleep 0.02
    done
    # Does the old active still hold the VIP when the standby answers, and
    # when does the address leave it (polled every ~10 ms for 2.5 s)?
    local gone=- t
    vip_at=$(holds_vip "$master")
    if [ "$vip_at" = 0 ]; then gone=0; fi
    for i in $(seq 250); do
        [ "$gone" = - ] || break
        t=$(now_ns)
        [ "$(holds_vip "$master")" = 0 ] && gone=$(((t - t0) / 1000))us
        sleep 0.01
    done
    vip_later=$(holds_vip "$master")
    if [ -n "$first" ]; then
        echo "$profile $fault $3 $(((first - t0) / 1000))us $vip_at $vip_later $gone" >>"$RESULTS"
    else
        echo "$profile $fault $3 FAIL $vip_at $vip_later $gone" >>"$RESULTS"
    fi
    tail -n 1 "$RESULTS" >&2
}

setup
write_fence
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/handle.key"
echo "keepalived: $("$KEEPALIVED" --version 2>&1 | head -n 1)  ironrootd: $IRONROOTD" >&2
for profile in $PROFILES; do
    for fault in $FAULTS; do
        for r in $(seq "$RUNS"); do one_run "$profile" "$fault" "$r"; done
    done
done
reset_hosts
"$PY" "$HERE/summary.py" "$RESULTS"
