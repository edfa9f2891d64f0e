#!/bin/sh
# perfdhcp (Debian kea-admin) full DORA against dhcp-bench serve, over a
# veth pair between two network namespaces this script creates and removes.
# perfdhcp plays a relay agent (giaddr = its address), the path the project
# compares servers on. Prints perfdhcp's report and the server's CPU time
# per 10,000 exchanges (from /proc/PID/stat).
#
#   daemons/dhcp/bench/perfdhcp.sh [RATE] [SECONDS] [CLIENTS]
#
# SERVER=kea runs kea-dhcp4 (memfile, same pool) instead, for comparison.
# Needs root, iproute2, kea-admin (and kea-dhcp4-server); build first:
#   cargo build --release -p ironroot-dhcp --bin dhcp-bench
set -eu
RATE=${1:-2000}
SECONDS_RUN=${2:-10}
CLIENTS=${3:-20000}
BIN=${DHCP_BENCH:-${CARGO_TARGET_DIR:-target}/release/dhcp-bench}
TAG=$$
SNS=irdb-s-$TAG
CNS=irdb-c-$TAG
SIF=irdbs$TAG
CIF=irdbc$TAG
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        # SIGINT: dhcp-bench prints its counters on the way out.
        kill -INT "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    ip link del "$SIF" 2>/dev/null || true
    ip netns del "$SNS" 2>/dev/null || true
    ip netns del "$CNS" 2>/dev/null || true
    [ -n "${WORK:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
ip netns add "$SNS"
ip netns add "$CNS"
ip link add "$SIF" type veth peer name "$CIF"
ip link set "$SIF" netns "$SNS"
ip link set "$CIF" netns "$CNS"
ip -n "$SNS" addr add 10.0.0.10/16 dev "$SIF"
ip -n "$CNS" addr add 10.0.0.2/16 dev "$CIF"
for ns in "$SNS" "$CNS"; do ip -n "$ns" link set lo up; done
ip -n "$SNS" link set "$SIF" up
ip -n "$CNS" link set "$CIF" up

WORK=$(mktemp -d)
if [ "${SERVER:-ironroot}" = kea ]; then
    cat > "$WORK/kea.json" <<KEA
{ "Dhcp4": {
    "interfaces-config": { "interfaces": [ "$SIF/10.0.0.10" ], "dhcp-socket-type": "udp" },
    "lease-database": { "type": "memfile", "name": "$WORK/leases.csv", "lfc-interval": 0 },
    "valid-lifetime": 3600,
    "subnet4": [ { "id": 1, "subnet": "10.0.0.0/16",
                   "pools": [ { "pool": "10.0.1.0 - 10.0.255.254" } ] } ],
    "loggers": [ { "name": "kea-dhcp4", "severity": "ERROR",
                   "output_options": [ { "output": "$WORK/kea.log" } ] } ]
} }
KEA
    KEA_PIDFILE_DIR=$WORK ip netns exec "$SNS" kea-dhcp4 -c "$WORK/kea.json" &
else
    ip netns exec "$SNS" "$BIN" serve 10.0.0.10 16 10.0.1.0 10.0.255.254 "$SIF" &
fi
SERVER_PID=$!
sleep 0.5
ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
BEFORE=$(ticks)
OUT=$(ip netns exec "$CNS" perfdhcp -4 -r "$RATE" -R "$CLIENTS" -p "$SECONDS_RUN" -l 10.0.0.2 10.0.0.10 2>&1 || true)
AFTER=$(ticks)
echo "$OUT"
HZ=$(getconf CLK_TCK)
EXCHANGES=$(echo "$OUT" | awk '/DISCOVER-OFFER/{f=1} f && /received packets:/{print $3; exit}')
echo "$OUT" | awk '/REQUEST-ACK/{f=1} f && /received packets:/{print "ACKs received: " $3; exit}'
awk -v t=$((AFTER - BEFORE)) -v hz="$HZ" -v n="${EXCHANGES:-0}" 'BEGIN {
    cpu = t / hz;
    printf "server CPU: %.2f s for %d DORA", cpu, n;
    if (n > 0) printf " = %.3f s per 10,000 exchanges", cpu * 10000 / n;
    printf "\n";
}'
