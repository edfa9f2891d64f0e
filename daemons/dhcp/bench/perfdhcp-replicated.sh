#!/usr/bin/env bash
# perfdhcp (Debian kea-admin) full DORA against ironrootd with its pool
# leases replicated, against kea-dhcp4 (memfile, same pool) and against
# dnsmasq (its lease file, same pool), in one run and one namespace topology.
#
# Topology (namespaces named with this script's PID, removed on exit, also
# on Ctrl-C): a bridge namespace; ironroot nodes a (10.78.0.1) and b
# (10.78.0.2), a witness w (10.78.0.3), a Kea server k (10.78.0.20), a
# dnsmasq server d (10.78.0.21) and the client c (10.78.0.50), all on
# 10.78.0.0/16; ironroot's VIP 10.78.0.10.
# Nothing is routed out: no namespace has a default route.
#
# perfdhcp plays a relay agent (giaddr = 10.78.0.50) and sends to the VIP
# (ironroot), 10.78.0.20 (Kea) or 10.78.0.21 (dnsmasq). Pool 10.78.1.0 -
# 10.78.255.254, lease time 3600 s, for every server. Kea and dnsmasq run
# first, one at a time (ironrootd not started yet), then the two ironrootd
# nodes: every pool ACK of the active node waits until the standby's journal
# holds the lease. dnsmasq runs with --no-ping (by default it pings every
# address before offering it, up to 3 s, and perfdhcp gives up first) and
# at DNSMASQ_RATES, since it rewrites its whole lease file on every change
# and saturates far below the others.
#
# For each server and offered rate: perfdhcp's rate, drops and latency, and
# the server's CPU time per 10,000 DORA exchanges from /proc/PID/stat
# (ironroot: both nodes' ironrootd summed, and the active alone). At the
# end the standby's store must hold the leases the active's does.
#
# Usage (root): daemons/dhcp/bench/perfdhcp-replicated.sh
#   RATES="1000 2000 4000 8000"  offered rates (DORA/s)
#   DNSMASQ_RATES="250 500 1000" offered rates for dnsmasq
#   SECONDS_RUN=10               perfdhcp -p
#   CLIENTS=20000                perfdhcp -R (distinct MACs)
#   RUNS=3                       runs per (server, rate); the table is medians
#   SERVERS="kea dnsmasq ironroot" which servers, in this order
#   IRONROOTD, IRONROOT          binaries (default $CARGO_TARGET_DIR/release/...)
#   KEEP=1                       keep the work dir (configs, logs, raw output)
#   PERF=1                       perf record -g the active ironrootd during each
#                                run (perf-<rate>-<run>.data in the work dir;
#                                implies KEEP=1); its CPU is not counted
# Build first: cargo build --release -p ironrootd -p ironroot
set -u
RATES=${RATES:-"1000 2000 4000 8000"}
DNSMASQ_RATES=${DNSMASQ_RATES:-"250 500 1000"}
SECONDS_RUN=${SECONDS_RUN:-10}
CLIENTS=${CLIENTS:-20000}
RUNS=${RUNS:-3}
SERVERS=${SERVERS:-"kea dnsmasq ironroot"}
TARGET=${CARGO_TARGET_DIR:-target}
IRONROOTD=${IRONROOTD:-$TARGET/release/ironrootd}
IRONROOT=${IRONROOT:-$TARGET/release/ironroot}
PY=$(command -v python3)
TAG="irdr$$"
BR=$TAG-br
declare -A NS=([a]=$TAG-a [b]=$TAG-b [w]=$TAG-w [k]=$TAG-k [d]=$TAG-d [c]=$TAG-c)
declare -A ADDR=([a]=10.78.0.1 [b]=10.78.0.2 [w]=10.78.0.3 [k]=10.78.0.20 [d]=10.78.0.21 [c]=10.78.0.50)
HOSTS="a b w k d c"
VIP=10.78.0.10
POOL_START=10.78.1.0
POOL_END=10.78.255.254
KEY=8d3c0b7e1f2a4d5c6b7a8998a7b6c5d4e3f201f2e3d4c5b6a79881726354a5b6
HZ=$(getconf CLK_TCK)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/irdr-bench.XXXXXX")
RESULTS=$WORK/results.txt
: >"$RESULTS"

die() { echo "error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
command -v perfdhcp >/dev/null || die "perfdhcp missing: apt-get install -y kea-admin"
command -v kea-dhcp4 >/dev/null || die "kea-dhcp4 missing: apt-get install -y kea-dhcp4-server"
case " $SERVERS " in *" dnsmasq "*)
    command -v dnsmasq >/dev/null || die "dnsmasq missing: apt-get install -y dnsmasq-base" ;;
esac
[ -x "$IRONROOTD" ] || die "$IRONROOTD missing: cargo build --release -p ironrootd -p ironroot"
[ -x "$IRONROOT" ] || die "$IRONROOT missing: cargo build --release -p ironrootd -p ironroot"
[ -n "$PY" ] || die "python3 missing"

# Every process this script started, by PID.
PIDS=""
stop_pid() { # SIGTERM, then SIGKILL after 2 s
    local p=$1 i
    kill "$p" 2>/dev/null || return 0
    for i in $(seq 20); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
    wait "$p" 2>/dev/null
}
cleanup() {
    local p n
    for p in $PIDS; do stop_pid "$p"; done
    for n in $HOSTS; do ip netns del "${NS[$n]}" 2>/dev/null; done
    ip netns del "$BR" 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
[ "${PERF:-0}" = 1 ] && KEEP=1
trap cleanup EXIT
trap 'exit 130' INT TERM

setup() {
    ip netns add "$BR" && ip -n "$BR" link set lo up
    ip -n "$BR" link add br0 type bridge && ip -n "$BR" link set br0 up
    local n
    for n in $HOSTS; do
        ip netns add "${NS[$n]}"
        ip -n "${NS[$n]}" link set lo up
        ip link add "p$n" netns "$BR" type veth peer name eth0 netns "${NS[$n]}"
        ip -n "$BR" link set "p$n" master br0
        ip -n "$BR" link set "p$n" up
        ip -n "${NS[$n]}" addr add "${ADDR[$n]}/16" dev eth0
        ip -n "${NS[$n]}" link set eth0 up
    done
}

LAST_PID=
start_in() { # $1 host, $2 log, rest: command; its PID in LAST_PID
    local n=$1 log=$2
    shift 2
    # `ip netns exec` execs the command: $! is the command's own PID.
    ip netns exec "${NS[$n]}" "$@" </dev/null >"$log" 2>&1 &
    LAST_PID=$!
    PIDS="$PIDS $LAST_PID"
}

ironroot_config() { # $1 node
    mkdir -p "$WORK/$1"
    cat >"$WORK/$1.toml" <<CFG
[cluster]
cluster_id = 7
key_hex = "$KEY"
[[cluster.nodes]]
name = "a"
id = 1
links = ["${ADDR[a]}:694"]
[[cluster.nodes]]
name = "b"
id = 2
links = ["${ADDR[b]}:694"]
[cluster.witness]
addr = "${ADDR[w]}:695"
lease_ms = 1200
[cluster.timing]
interval_ms = 100
dead_ms = 1200
initial_dead_ms = 1200
[cluster.vip]
addr = "$VIP"
prefix_len = 16
interface = "eth0"
lifetime_ms = 1000
[store]
dir = "$WORK/$1/store"
[nfs]
handle_key_file = "$WORK/handle.key"
[dhcp]
vip = "$VIP"
subnet_mask = "255.255.0.0"
[dhcp.pool]
start = "$POOL_START"
end = "$POOL_END"
lease_secs = 3600
[dhcp.boot]
[admin]
socket = "$WORK/$1/admin.sock"
[metrics]
listen = "127.0.0.1:9450"
[log]
level = "warn"
CFG
}

kea_config() {
    cat >"$WORK/kea.json" <<KEA
{ "Dhcp4": {
    "interfaces-config": { "interfaces": [ "eth0/${ADDR[k]}" ], "dhcp-socket-type": "udp" },
    "lease-database": { "type": "memfile", "name": "$WORK/kea-leases.csv", "lfc-interval": 0 },
    "valid-lifetime": 3600,
    "subnet4": [ { "id": 1, "subnet": "10.78.0.0/16",
                   "pools": [ { "pool": "$POOL_START - $POOL_END" } ] } ],
    "loggers": [ { "name": "kea-dhcp4", "severity": "ERROR",
                   "output_options": [ { "output": "$WORK/kea.log" } ] } ]
} }
KEA
}

status_json() { # ironroot status of node $1
    "$IRONROOT" --socket "$WORK/$1/admin.sock" --json status 2>/dev/null
}
status_field() { # node $1, python expression on d = status data
    status_json "$1" | "$PY" -c "import json,sys; d=json.load(sys.stdin)['data']; print($2)" 2>/dev/null
}
metric() { # node $1, metric line prefix $2: its value (summed over labels)
    ip netns exec "${NS[$1]}" curl -s --max-time 2 http://127.0.0.1:9450/metrics |
        awk -v m="$2" '$1 == m || index($1, m "{") == 1 {s += $2} END {print s + 0}'
}
rcvbuf_errors() { # UDP datagrams dropped for a full receive buffer in host $1's namespace
    ip netns exec "${NS[$1]}" awk '/^Udp:/ {n++; if (n == 2) print $6}' /proc/net/snmp
}
ticks() { # utime + stime of PIDs $@
    local p t=0
    for p in "$@"; do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}

# One perfdhcp run; appends "server rate run offered achieved drops% ... cpu" to RESULTS.
one_run() { # $1 server label, $2 target address, $3 rate, $4 run, $5 active PID, rest: other server PIDs
    local label=$1 target=$2 rate=$3 run=$4 active=$5
    shift 5
    local others="$*" out a0 o0 a1 o1 w0=0 w1=0 r0=0 r1=0
    local server_host=k
    [ "$label" = dnsmasq ] && server_host=d
    [ "$label" = ironroot ] && server_host=$ACTIVE
    local c0 s0
    c0=$(rcvbuf_errors c)
    s0=$(rcvbuf_errors "$server_host")
    a0=$(ticks "$active")
    o0=$(ticks $others)
    if [ "$label" = ironroot ]; then
        w0=$(metric "$ACTIVE" ironroot_dhcp_lease_writes_total)
        r0=$(metric "$ACTIVE" ironroot_dhcp_lease_records_total)
    fi
    local perf=
    if [ "${PERF:-0}" = 1 ] && [ "$label" = ironroot ]; then
        perf record -q -F 499 -g -p "$active" -o "$WORK/perf-$rate-$run.data" >/dev/null 2>&1 &
        perf=$!
        PIDS="$PIDS $perf"
    fi
    ip netns exec "${NS[c]}" perfdhcp -4 -r "$rate" -R "$CLIENTS" -p "$SECONDS_RUN" \
        -l "${ADDR[c]}" "$target" >"$WORK/perfdhcp.out" 2>&1 &
    local client=$!
    PIDS="$PIDS $client"
    wait "$client"
    PIDS=${PIDS% "$client"}
    out=$(cat "$WORK/perfdhcp.out")
    a1=$(ticks "$active")
    if [ -n "$perf" ]; then
        kill -INT "$perf" 2>/dev/null
        wait "$perf" 2>/dev/null
        PIDS=${PIDS% "$perf"}
    fi
    o1=$(ticks $others)
    if [ "$label" = ironroot ]; then
        w1=$(metric "$ACTIVE" ironroot_dhcp_lease_writes_total)
        r1=$(metric "$ACTIVE" ironroot_dhcp_lease_records_total)
    fi
    echo "$out" >"$WORK/perfdhcp-$label-$rate-$run.txt"
    echo "$out" | "$PY" "$HERE/perfdhcp_summary.py" line "$label" "$rate" "$run" \
        "$((a1 - a0))" "$((o1 - o0))" "$HZ" "$((w1 - w0))" "$((r1 - r0))" >>"$RESULTS"
    tail -n 1 "$RESULTS" >&2
    echo "  UDP receive buffer overflows: client $(($(rcvbuf_errors c) - c0)), server $(($(rcvbuf_errors "$server_host") - s0))" >&2
}

HERE=$(cd "$(dirname "$0")" && pwd)
setup
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/handle.key"
echo "perfdhcp: $(perfdhcp -v 2>&1 | head -n 1)  kea-dhcp4: $(kea-dhcp4 -v 2>&1 | head -n 1)  ironrootd: $IRONROOTD" >&2
echo "cores: $(nproc)  rates: $RATES  ${SECONDS_RUN}s runs  $CLIENTS clients  $RUNS runs each" >&2

ACTIVE=
for server in $SERVERS; do
    case $server in
    kea)
        kea_config
        start_in k "$WORK/kea.out" env KEA_PIDFILE_DIR="$WORK" kea-dhcp4 -c "$WORK/kea.json"
        KEA_PID=$LAST_PID
        sleep 1
        kill -0 "$KEA_PID" 2>/dev/null || die "kea-dhcp4 did not start: $(cat "$WORK/kea.out" "$WORK/kea.log" 2>/dev/null)"
        for rate in $RATES; do
            for r in $(seq "$RUNS"); do one_run kea "${ADDR[k]}" "$rate" "$r" "$KEA_PID"; done
        done
        stop_pid "$KEA_PID"
        ;;
    dnsmasq)
        # DHCP only (--port=0), in the foreground, its lease file in the
        # work dir, room for every client's lease.
        start_in d "$WORK/dnsmasq.out" dnsmasq --keep-in-foreground --port=0 \
            --conf-file=/dev/null --interface=eth0 --bind-interfaces \
            --dhcp-range="$POOL_START,$POOL_END,255.255.0.0,1h" \
            --dhcp-leasefile="$WORK/dnsmasq.leases" --dhcp-lease-max=$((CLIENTS * 2)) \
            --no-ping --pid-file="$WORK/dnsmasq.pid" --log-facility="$WORK/dnsmasq.log"
        DNSMASQ_PID=$LAST_PID
        sleep 1
        kill -0 "$DNSMASQ_PID" 2>/dev/null || die "dnsmasq did not start: $(cat "$WORK/dnsmasq.out" "$WORK/dnsmasq.log" 2>/dev/null)"
        for rate in $DNSMASQ_RATES; do
            for r in $(seq "$RUNS"); do one_run dnsmasq "${ADDR[d]}" "$rate" "$r" "$DNSMASQ_PID"; done
        done
        stop_pid "$DNSMASQ_PID"
        ;;
    ironroot)
        for n in a b; do ironroot_config "$n"; done
        start_in w "$WORK/witness.log" "$IRONROOTD" --config "$WORK/a.toml" --role witness
        for n in a b; do
            start_in "$n" "$WORK/$n.log" "$IRONROOTD" --config "$WORK/$n.toml" --node "$n"
            declare "PID_$n=$LAST_PID"
        done
        # Wait for an active node, a standby, and the standby caught up.
        for i in $(seq 300); do
            ra=$(status_field a "d['role']")
            rb=$(status_field b "d['role']")
            if [ "$ra" = active ] && [ "$rb" = standby ]; then ACTIVE=a; STANDBY=b; break; fi
            if [ "$rb" = active ] && [ "$ra" = standby ]; then ACTIVE=b; STANDBY=a; break; fi
            sleep 0.1
        done
        [ -n "$ACTIVE" ] || die "no active/standby pair: a=$ra b=$rb; logs in $WORK (KEEP=1)"
        sleep 2
        echo "active: $ACTIVE  standby: $STANDBY  replication: $(status_json "$ACTIVE" |
            "$PY" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["data"]["replication"]))')" >&2
        pa=$(eval echo "\$PID_$ACTIVE")
        ps=$(eval echo "\$PID_$STANDBY")
        t0=$(ticks "$pa")
        sleep 5
        echo "active ironrootd idle: $(( ($(ticks "$pa") - t0) * 1000 / HZ / 5 )) ms CPU per s" >&2
        for rate in $RATES; do
            for r in $(seq "$RUNS"); do one_run ironroot "$VIP" "$rate" "$r" "$pa" "$ps"; done
        done
        # With leases replicated: the standby's store holds what the active's does.
        sleep 1
        la=$(status_field "$ACTIVE" "d['store']['pool_leases'], d['store']['last_seq'], d['store']['content_hash']")
        lb=$(status_field "$STANDBY" "d['store']['pool_leases'], d['store']['last_seq'], d['store']['content_hash']")
        echo "store (pool_leases, last_seq, content_hash): active $ACTIVE: $la" >&2
        echo "store (pool_leases, last_seq, content_hash): standby $STANDBY: $lb" >&2
        dropped=$(metric "$ACTIVE" ironroot_dhcp_lease_acks_dropped_total)
        failed=$(metric "$ACTIVE" ironroot_dhcp_lease_write_failures_total)
        if [ -n "$la" ] && [ "$la" = "$lb" ]; then
            echo "replicated: yes (standby holds the same $(echo "$la" | cut -d' ' -f1) pool leases; lease write failures $failed, ACKs dropped $dropped)" >>"$RESULTS.verify"
        else
            echo "replicated: NO (active: $la; standby: $lb)" >>"$RESULTS.verify"
        fi
        cat "$RESULTS.verify" >&2
        ;;
    esac
done
"$PY" "$HERE/perfdhcp_summary.py" table "$RESULTS"
cat "$RESULTS.verify" 2>/dev/null
if [ "${KEEP:-0}" = 1 ]; then cp "$RESULTS" "$WORK/results.kept"; fi
