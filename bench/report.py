"""Summarises benchmark runs: reads JSON lines (one per run, any order, several
repeats), takes the median of each workload, and prints the ratio table that
docs/BENCHMARKS.md records.

Usage: python3 bench/report.py results.jsonl
       python3 bench/report.py results.jsonl --half-rate WORKLOAD
           prints half of WORKLOAD's median ops/s (the rate of the half-load phase)
"""

import json
import statistics
import sys

# (label, ours, peer, unit) -- ratio = ours / peer; higher is better for Redwire.
PAIRS = [
    ("Queue end-to-end, EnqueueStream producers, vs BullMQ (target >= 2.0)", "QueueE2eStream", "BullmqE2e", "jobs/s"),
    ("Queue end-to-end, EnqueueStream producers, vs bee-queue (target >= 1.3)", "QueueE2eStream", "BeeQueueE2e", "jobs/s"),
    ("Queue end-to-end, unary Enqueue producers, vs BullMQ", "QueueE2e", "BullmqE2e", "jobs/s"),
    ("Queue end-to-end, unary Enqueue producers, vs bee-queue", "QueueE2e", "BeeQueueE2e", "jobs/s"),
    ("Queue end-to-end (EnqueueStream) vs direct store loop (design limit)", "QueueE2eStream", "DirectQueue", "jobs/s"),
    ("Queue enqueue: EnqueueStream vs unary Enqueue", "QueueEnqueueStream", "QueueEnqueue", "jobs/s"),
    ("Cache Get vs redis-benchmark GET -P 1 (target >= 0.5)", "CacheGet", "redis-benchmark GET P1", "ops/s"),
    ("Cache Get vs direct store GET", "CacheGet", "DirectGet", "ops/s"),
    ("GetMany keys vs redis-benchmark GET -P 16 (target >= 0.5)", "CacheGetMany", "redis-benchmark GET P16", "keys/s"),
    ("Cache Get vs gRPC floor (Health/Check, no Redis)", "CacheGet", "GrpcFloor", "ops/s"),
    ("Stream AppendStream vs redis-benchmark XADD -P 1 (target >= 0.5)", "StreamAppendStream", "redis-benchmark XADD P1", "ops/s"),
    ("Stream AppendStream vs direct store XADD (target >= 0.5)", "StreamAppendStream", "DirectXadd", "ops/s"),
    ("Stream unary Append vs redis-benchmark XADD -P 1", "StreamAppend", "redis-benchmark XADD P1", "ops/s"),
    ("Stream unary Append vs direct store XADD", "StreamAppend", "DirectXadd", "ops/s"),
    ("Stream group consume + ack vs direct XREADGROUP/XACK loop (target >= 0.5)", "StreamGroup", "DirectStreamGroup", "entries/s"),
    ("PubSub deliveries (target >= 200,000/s at 1,000 subscribers)", "Pubsub", None, "deliveries/s"),
]


def load(path):
    runs = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            row = json.loads(line)
            runs.setdefault(row["workload"], []).append(row)
    return runs


def median(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def round_ratios(runs, ours, peer):
    """Ratios of the runs of one round (the n-th run of each side), lowest to highest:
    how far the noise between rounds moves the ratio."""
    if not peer:
        return "-"
    pairs = zip(runs.get(ours, []), runs.get(peer, []))
    ratios = sorted(a["ops_per_sec"] / b["ops_per_sec"] for a, b in pairs if a.get("ops_per_sec") and b.get("ops_per_sec"))
    return " ".join(f"{r:.2f}" for r in ratios) or "-"


def added_latency(runs):
    """Paced rows ("CacheGet at 9000/s") next to the direct GET at the same rate."""
    print()
    print("| added latency at a fixed rate | Redwire p50 / p99 µs | direct p50 / p99 µs | added p50 / p99 µs |")
    print("|---|---|---|---|")
    for name, rows in sorted(runs.items()):
        if not name.startswith("CacheGet at "):
            continue
        rate = name.removeprefix("CacheGet at ")
        direct = runs.get(f"DirectGet at {rate}", [])
        ours = [median(rows, k) for k in ("p50_us", "p99_us")]
        base = [median(direct, k) for k in ("p50_us", "p99_us")]
        if None in ours or None in base:
            continue
        print(f"| Cache Get vs direct GET at {rate} (target +100 / +1,000) | {ours[0]:,.0f} / {ours[1]:,.0f} "
              f"| {base[0]:,.0f} / {base[1]:,.0f} | {ours[0] - base[0]:+,.0f} / {ours[1] - base[1]:+,.0f} |")


def main():
    runs = load(sys.argv[1])
    if "--half-rate" in sys.argv:
        workload = sys.argv[sys.argv.index("--half-rate") + 1]
        print(max(1, int(median(runs.get(workload, []), "ops_per_sec") or 2) // 2))
        return
    print("| workload | runs | median ops/s | p50 µs | p99 µs | p99.9 µs | Redwire CPU s/1k | Redis CPU s/1k | load generator CPU s/1k |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rows in sorted(runs.items()):
        cells = [median(rows, k) for k in ("ops_per_sec", "p50_us", "p99_us", "p999_us", "redwire_cpu_s_per_1k", "redis_cpu_s_per_1k", "bench_cpu_s_per_1k")]
        shown = ["-" if c is None else (f"{c:,.0f}" if i < 4 else f"{c:.4f}") for i, c in enumerate(cells)]
        print(f"| {name} | {len(rows)} | " + " | ".join(shown) + " |")
    print()
    print("| comparison | Redwire | peer | ratio | per-round ratios |")
    print("|---|---|---|---|---|")
    for label, ours, peer, unit in PAIRS:
        a = median(runs.get(ours, []), "ops_per_sec")
        b = median(runs.get(peer, []), "ops_per_sec") if peer else None
        ratio = f"{a / b:.2f}" if a and b else "-"
        a_text = f"{a:,.0f} {unit}" if a else "-"
        b_text = f"{b:,.0f} {unit}" if b else "-"
        print(f"| {label} | {a_text} | {b_text} | {ratio} | {round_ratios(runs, ours, peer)} |")
    added_latency(runs)


if __name__ == "__main__":
    main()
