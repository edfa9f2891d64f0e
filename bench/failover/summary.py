#!/usr/bin/env python3
"""Table of bench/failover/run.sh results: min/median/max per
(daemon, profile, fault), the ironroot/keepalived ratio of medians, and
whether the old active still held the VIP after the fault."""
import statistics
import sys

PAIRS = [("ir-default", "ka-100"), ("ir-fence-100", "ka-100"), ("ir-fast-fence", "ka-10"), ("ir-fast-witness", "ka-10")]
LABEL = {
    "ir-default": "ironrootd witness, interval 100 / dead 1200 / lease 1200, VIP lifetime 1 s",
    "ir-fast-witness": "ironrootd witness, interval 10 / dead 1060 / lease 1060, VIP lifetime 1 s",
    "ir-fence-100": "ironrootd fencing, interval 100 / dead 340 (keepalived advert 0.1 s: 3 adverts + skew), VIP lifetime 1 s",
    "ir-fence-200": "ironrootd fencing, interval 200 / dead 1000 (Heartbeat's keepalive 200 ms / deadtime 1 s), VIP lifetime 1 s",
    "ir-fast-fence": "ironrootd fencing, interval 10 / dead 50 / margin 10, standby_delay 0, VIP lifetime 1 s",
    "ka-100": "keepalived VRRPv3 advert_int 0.1",
    "ka-10": "keepalived VRRPv3 advert_int 0.01",
}

def fmt_overlap(ms):
    return "never left" if ms == float("inf") else f"{ms:.0f}"


rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) < 4:
        continue
    key = (f[0], f[1])
    r = rows.setdefault(key, {"ms": [], "fail": 0, "vip_at": 0, "vip_later": 0, "n": 0})
    r["n"] += 1
    if f[3] == "FAIL":
        r["fail"] += 1
    else:
        r["ms"].append(int(f[3].rstrip("us")) / 1000.0)
    if len(f) >= 6:
        r["vip_at"] += f[4] == "1"
        r["vip_later"] += f[5] == "1"
    # Overlap: the VIP left the old active this long after the standby's
    # first answer (only counted when it was still there at that moment).
    if len(f) >= 7 and f[4] == "1" and f[3] != "FAIL" and f[6].endswith("us"):
        over = int(f[6][:-2]) / 1000.0 - int(f[3][:-2]) / 1000.0
        r["overlap"] = max(r.get("overlap", 0.0), over)
    elif len(f) >= 7 and f[4] == "1" and f[6] == "-":
        r["overlap"] = float("inf")

print(f"{'profile':<16}{'fault':<7}{'ok/n':>6}{'min':>7}{'median':>8}{'max':>7}  old active holds VIP: at takeover / +2.5 s / max overlap ms")
for (profile, fault), r in rows.items():
    ms = r["ms"]
    ok = f"{len(ms)}/{r['n']}"
    if ms:
        stats = f"{min(ms):>7.0f}{statistics.median(ms):>8.0f}{max(ms):>7.0f}"
    else:
        stats = f"{'-':>7}{'-':>8}{'-':>7}"
    print(f"{profile:<16}{fault:<7}{ok:>6}{stats}  {r['vip_at']}/{r['n']} / {r['vip_later']}/{r['n']} / {fmt_overlap(r.get('overlap', 0.0))}")
print("(times in ms from the fault to the first answer from the standby through the VIP; probe every 10 ms)")
print()
for ir, ka in PAIRS:
    for fault in ("host", "kill9"):
        a, b = rows.get((ir, fault)), rows.get((ka, fault))
        if a and b and a["ms"] and b["ms"]:
            ratio = statistics.median(a["ms"]) / statistics.median(b["ms"])
            print(f"ratio {ir}/{ka} {fault}: {ratio:.2f}")
print()
for key in sorted({p for p, _ in rows}):
    print(f"{key}: {LABEL.get(key, key)}")
print("note: after kill9, keepalived's dead master keeps the VIP on its interface (column '+2.5 s'):")
print("      no split-brain protection; ironrootd's VIP has a 1 s valid_lft and leaves on its own.")
