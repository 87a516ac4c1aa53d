"""Figures of bench-tls.sh from its results (one TSV line per run:
round, figure, setup, before, after, the generator's JSON report).

  bench-tls-report.py line HZ  < one line   -> that run, in words
  bench-tls-report.py table HZ < all lines  -> medians over rounds, with ratios
"""
import json
import statistics
import sys

UNITS = {
    "full": "CPU µs per full TLS upgrade",
    "resumed": "CPU µs per resumed upgrade",
    "echo": "echo CPU µs per message",
    "idle": "RSS bytes per idle TLS socket",
}


def parse(line, hz):
    rnd, figure, setup, before, after, report = line.rstrip("\n").split("\t")
    r = json.loads(report)
    if figure == "idle":
        parts = [(int(a) - int(b)) * 1024 for b, a in zip(before.split(), after.split())]
        n = max(r["opened"], 1)
        value = sum(parts) / n
        split = " + ".join(f"{p / n:.0f}" for p in parts)
        detail = f"{r['opened']} sockets open; bytes per process, in start order: {split}"
    else:
        ticks = [
            tuple(int(a) - int(b) for a, b in zip(x.split("/"), y.split("/")))
            for y, x in zip(before.split(), after.split())
        ]
        n = max(r["messages"] if figure == "echo" else r["attempts"], 1)
        us = lambda t: t / hz / n * 1e6
        value = us(sum(u + s for u, s in ticks))
        split = ", ".join(f"{us(u):.1f}+{us(s):.1f}" for u, s in ticks)
        if figure == "echo":
            detail = f"{r['messages_per_s']:.0f} msg/s, rtt p50 {r['rtt_us']['p50_us']} µs, errors {r['errors_total']}"
        else:
            tls = r.get("tls") or {}
            detail = (f"{r['rate_per_s']:.0f}/s, p50 {r['latency_us']['p50_us']} µs, "
                      f"{tls.get('resumed', 0)} of {r['accepted']} resumed")
        detail += f"; user+kernel µs per process, in start order: {split}"
    return int(rnd), figure, setup, value, detail


def main():
    mode, hz = sys.argv[1], int(sys.argv[2])
    rows = [parse(l, hz) for l in sys.stdin if l.strip()]
    if mode == "line":
        for rnd, figure, setup, value, detail in rows:
            print(f"round {rnd}  {figure:<8} {setup:<8} {value:9.1f}  ({detail})", flush=True)
        return
    med = {}
    for _, figure, setup, value, _ in rows:
        med.setdefault((figure, setup), []).append(value)
    med = {k: statistics.median(v) for k, v in med.items()}
    print("| figure | TLS ceiling (rustls echo, no auth) | HAProxy + `jwt_verify` | wsgate | wsgate / ceiling | HAProxy / ceiling |")
    print("|---|---:|---:|---:|---:|---:|")
    for figure, unit in UNITS.items():
        c, h, w = (med.get((figure, s)) for s in ("ceiling", "haproxy", "wsgate"))
        if c is None and w is None:
            continue
        cell = lambda v: "–" if v is None else (f"{v:,.0f}" if figure == "idle" else f"{v:.1f}")
        ratio = lambda v: "–" if v is None or not c else f"{v / c:.2f}×"
        print(f"| {unit} | {cell(c)} | {cell(h)} | **{cell(w)}** | {ratio(w)} | {ratio(h)} |")
    print()
    print("Medians over rounds, one run. CPU: utime+stime of the setup's processes "
          "(HAProxy + its echo server) per attempt or message; RSS: VmRSS growth of them, per socket opened.")


main()
