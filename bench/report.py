"""Turns oha's JSON results from bench/run into a markdown table."""
import json
import pathlib
import platform
import statistics
import subprocess
import sys

results = pathlib.Path(sys.argv[1])
duration = sys.argv[2]
# keyforge: a key with budgets, rate limits and anomaly detection;
# keyforge-open: a key with none (JSON loads only), for their cost.
# keyforge-baseline: an earlier revision (BASELINE_REV), JSON loads only.
targets = ["direct", "nginx", "keyforge", "keyforge-open", "keyforge-baseline"]
runs = ["json-c1", "json-c16", "json-c64", "json-r1000", "json-r5000", "stream-c16", "stream-c64", "paced-stream-c64"]


def load(name, target):
    data = json.loads((results / f"{name}.{target}.raw").read_text())
    summary = data["summary"]
    pct = data["latencyPercentiles"]
    codes = data.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    total = sum(codes.values())
    cpu_ms = None
    cpu_file = results / f"{name}.{target}.cpu"
    if cpu_file.exists() and total:
        ticks, hz = (int(x) for x in cpu_file.read_text().split())
        cpu_ms = ticks * 1000 / hz / total
    return {
        "cpu_ms": cpu_ms,
        "rps": summary["requestsPerSec"],
        "p50": pct["p50"] * 1000,
        "p99": pct["p99"] * 1000,
        "ok": ok,
        "total": total,
    }


def cpu_cell(cpu_ms):
    return "" if cpu_ms is None else f"{cpu_ms:.4f}"


cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
print(f"Measured {duration} per cell on {platform.machine()}, {cpu} cores; load generator, upstream (nginx with canned bodies; the Rust fake for the paced stream) and proxy share them.\n")
print("| load | target | requests/s | p50 ms | p99 ms | non-2xx | vs nginx rps | added p99 vs direct (ms) | proxy CPU ms/request |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for name in runs:
    if not (results / f"{name}.direct.raw").exists():
        continue
    cells = {t: load(name, t) for t in targets if (results / f"{name}.{t}.raw").exists()}
    for target in cells:
        c = cells[target]
        ratio = c["rps"] / cells["nginx"]["rps"] * 100 if target != "direct" and "nginx" in cells else None
        added = c["p99"] - cells["direct"]["p99"] if target != "direct" else None
        print(f"| {name} | {target} | {c['rps']:.0f} | {c['p50']:.3f} | {c['p99']:.3f} | {c['total'] - c['ok']} | "
              f"{'' if ratio is None else f'{ratio:.0f} %'} | {'' if added is None else f'{added:+.3f}'} | "
              f"{cpu_cell(c['cpu_ms'])} |")
overhead = [int(x) for x in (results / "overhead-us.raw").read_text().split()]
if overhead:
    overhead.sort()
    p99 = overhead[min(len(overhead) - 1, int(len(overhead) * 0.99))]
    print(f"\nGateway-reported overhead (`x-keyforge-overhead-us`, {len(overhead)} sequential requests): "
          f"median {statistics.median(overhead):.0f} µs, p99 {p99} µs.")

for name, label in [("log-lines", "lines the gateway logged in the whole run"), ("data-kib", "data directory size (KiB) at the end")]:
    f = results / f"{name}.raw"
    if f.exists():
        print(f"\n{label[0].upper() + label[1:]}: {f.read_text().strip()}.")
top = results / "log-top.raw"
if top.exists() and top.read_text().strip():
    print("\nMost frequent warnings:\n\n```\n" + top.read_text().rstrip() + "\n```")
