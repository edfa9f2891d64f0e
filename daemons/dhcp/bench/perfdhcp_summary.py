#!/usr/bin/env python3
"""perfdhcp-replicated.sh's bookkeeping.

  perfdhcp_summary.py line LABEL RATE RUN ACTIVE_TICKS OTHER_TICKS HZ WRITES RECORDS < perfdhcp output
      one result line (key=value words)
  perfdhcp_summary.py table RESULTS
      medians per (server, offered rate), the highest rate with <1% drops,
      and the ratios ironroot / Kea (and / dnsmasq for the rate)
"""
import re
import statistics
import sys


def section(text, name):
    start = text.find("Statistics for: " + name)
    if start < 0:
        return {}
    body = text[start:]
    end = body.find("***", len("Statistics for: " + name) + 3)
    body = body if end < 0 else body[:end]
    out = {}
    for key, pattern in [
        ("sent", r"sent packets: (\d+)"),
        ("received", r"received packets: (\d+)"),
        ("avg", r"avg delay: ([\d.]+) ms"),
        ("max", r"max delay: ([\d.]+) ms"),
    ]:
        m = re.search(pattern, body)
        if m:
            out[key] = float(m.group(1))
    return out


def line(args, text):
    label, rate, run, active, other, hz, writes, records = args
    hz = float(hz)
    do = section(text, "DISCOVER-OFFER")
    ra = section(text, "REQUEST-ACK")
    m = re.search(r"Rate: ([\d.]+) 4-way", text)
    achieved = float(m.group(1)) if m else 0.0
    sent = do.get("sent", 0)
    done = ra.get("received", 0)
    drops = 100.0 * (1 - done / sent) if sent else 100.0
    cpu_active = int(active) / hz
    cpu_all = (int(active) + int(other)) / hz
    per = lambda cpu: cpu * 10000 / done if done else float("nan")
    words = {
        "server": label,
        "offered": rate,
        "run": run,
        "rate": f"{achieved:.0f}",
        "discovers": f"{sent:.0f}",
        "dora": f"{done:.0f}",
        "drops": f"{drops:.2f}",
        "do_avg_ms": f"{do.get('avg', float('nan')):.3f}",
        "ra_avg_ms": f"{ra.get('avg', float('nan')):.3f}",
        "do_max_ms": f"{do.get('max', float('nan')):.1f}",
        "ra_max_ms": f"{ra.get('max', float('nan')):.1f}",
        "cpu_active_10k": f"{per(cpu_active):.3f}",
        "cpu_all_10k": f"{per(cpu_all):.3f}",
        "lease_writes": writes,
        "lease_records": records,
    }
    print(" ".join(f"{k}={v}" for k, v in words.items()))


def table(path):
    rows = []
    with open(path) as f:
        for raw in f:
            rows.append(dict(w.split("=", 1) for w in raw.split()))
    groups = {}
    for r in rows:
        groups.setdefault((r["server"], int(r["offered"])), []).append(r)

    def med(rs, key):
        return statistics.median(float(r[key]) for r in rs)

    print()
    print("| server | offered/s | rate/s | drops % | D-O avg ms | R-A avg ms | D-O / R-A max ms"
          " | CPU s per 10k DORA (active) | CPU s per 10k DORA (all nodes) | leases per journal write | runs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for (server, offered), rs in sorted(groups.items()):
        writes = sum(int(r["lease_writes"]) for r in rs)
        records = sum(int(r["lease_records"]) for r in rs)
        per_write = f"{records / writes:.1f}" if writes else "-"
        all_nodes = f"{med(rs, 'cpu_all_10k'):.3f}" if server == "ironroot" else "-"
        print(f"| {server} | {offered} | {med(rs, 'rate'):.0f} | {med(rs, 'drops'):.2f}"
              f" | {med(rs, 'do_avg_ms'):.3f} | {med(rs, 'ra_avg_ms'):.3f}"
              f" | {med(rs, 'do_max_ms'):.1f} / {med(rs, 'ra_max_ms'):.1f}"
              f" | {med(rs, 'cpu_active_10k'):.3f} | {all_nodes} | {per_write} | {len(rs)} |")
        summary[(server, offered)] = rs
    print()
    best = {}
    for server in sorted({s for s, _ in groups}):
        ok = [o for (s, o), rs in summary.items() if s == server and med(rs, "drops") < 1.0]
        best[server] = max(ok) if ok else None
        if best[server]:
            rate = med(summary[(server, best[server])], "rate")
            print(f"{server}: highest offered rate with <1% drops (median): {best[server]}/s"
                  f" (achieved {rate:.0f}/s)")
        else:
            print(f"{server}: no offered rate with <1% drops")
    for peer in ("kea", "dnsmasq"):
        if best.get(peer) and best.get("ironroot"):
            p = med(summary[(peer, best[peer])], "rate")
            i = med(summary[("ironroot", best["ironroot"])], "rate")
            print(f"rate ironroot / {peer} (highest <1% drops): {i / p:.2f} (target >= 1)")
    for offered in sorted({o for _, o in groups}):
        if ("kea", offered) in summary and ("ironroot", offered) in summary:
            k = med(summary[("kea", offered)], "cpu_active_10k")
            a = med(summary[("ironroot", offered)], "cpu_active_10k")
            both = med(summary[("ironroot", offered)], "cpu_all_10k")
            print(f"CPU per exchange at {offered}/s, ironroot / kea: active {a / k:.2f},"
                  f" both nodes {both / k:.2f} (target <= 0.5)")


if __name__ == "__main__":
    if sys.argv[1] == "line":
        line(sys.argv[2:], sys.stdin.read())
    elif sys.argv[1] == "table":
        table(sys.argv[2])
    else:
        sys.exit(__doc__)
