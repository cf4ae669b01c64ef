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
    ("Cache Set vs redis-benchmark SET -P 1", "CacheSet", "redis-benchmark SET P1", "ops/s"),
    ("Cache Set vs direct store SET", "CacheSet", "DirectSet", "ops/s"),
    ("GetMany keys vs redis-benchmark GET -P 16 (target >= 0.5)", "CacheGetMany", "redis-benchmark GET P16", "keys/s"),
    ("GetMany keys vs direct store MGET (design limit)", "CacheGetMany", "DirectGetMany", "keys/s"),
    ("Cache Get vs gRPC floor (Health/Check, no Redis)", "CacheGet", "GrpcFloor", "ops/s"),
    ("Stream AppendStream vs redis-benchmark XADD -P 1 (target >= 0.5)", "StreamAppendStream", "redis-benchmark XADD P1", "ops/s"),
    ("Stream AppendStream vs direct store XADD (target >= 0.5)", "StreamAppendStream", "DirectXadd", "ops/s"),
    ("Producer-stream floor (AppendStream refused before Redis) vs redis-benchmark XADD -P 1", "ProducerStreamFloor", "redis-benchmark XADD P1", "ops/s"),
    ("Stream AppendStream vs producer-stream floor (no Redis)", "StreamAppendStream", "ProducerStreamFloor", "ops/s"),
    ("Stream unary Append vs redis-benchmark XADD -P 1", "StreamAppend", "redis-benchmark XADD P1", "ops/s"),
    ("Stream unary Append vs direct store XADD", "StreamAppend", "DirectXadd", "ops/s"),
    ("Stream group consume + ack vs direct XREADGROUP/XACK loop (target >= 0.5)", "StreamGroup", "DirectStreamGroup", "entries/s"),
    ("PubSub deliveries (target >= 200,000/s at 1,000 subscribers)", "Pubsub S=1000", None, "deliveries/s"),
]


# Queue end-to-end workloads, ours and the peers', which the bench also runs at other
# concurrencies (QUEUE_C): those runs are rows of their own, "QueueE2eStream C=64".
QUEUE_E2E = ["QueueE2eStream", "QueueE2e", "BullmqE2e", "BeeQueueE2e"]


def load(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    # The run's own concurrency is Cache Get's (scripts/bench's C).
    base = next((r.get("concurrency") for r in rows if r["workload"] == "CacheGet"), None)
    runs = {}
    for row in rows:
        name = row["workload"]
        if name in QUEUE_E2E and base is not None and row.get("concurrency") not in (None, base):
            name = f"{name} C={row['concurrency']}"
        # PubSub runs at several subscriber counts (PUBSUB_S), closed loop and at a
        # fixed publish rate: a row for each ("Pubsub S=100", "Pubsub S=100 at 100/s").
        if name.startswith("Pubsub"):
            name = f"Pubsub S={row['extra']['subscribers']}" + (f" at {row['rate']}/s" if row.get("rate") else "")
        runs.setdefault(name, []).append(row)
    return runs


def queue_pairs(runs):
    """The queue end-to-end comparisons at each extra concurrency in the run."""
    suffixes = sorted({n.split(" ", 1)[1] for n in runs if n.split(" ", 1)[0] in QUEUE_E2E and " C=" in n},
                      key=lambda s: int(s.removeprefix("C=")))
    pairs = []
    for suffix in suffixes:
        for peer, label, target in (("BullmqE2e", "BullMQ", 2.0), ("BeeQueueE2e", "bee-queue", 1.3)):
            pairs.append((f"Queue end-to-end at {suffix}, EnqueueStream producers, vs {label} (target >= {target})",
                          f"QueueE2eStream {suffix}", f"{peer} {suffix}", "jobs/s"))
    return pairs


# The processes doing a queue run's work: ours (Redwire, Redis, the load generator)
# and a peer's (its Node process, Redis).
OURS_CPU = ("redwire_cpu_s_per_1k", "redis_cpu_s_per_1k", "bench_cpu_s_per_1k")
PEER_CPU = ("peer_cpu_s_per_1k", "redis_cpu_s_per_1k")


def cpu_per_job(rows, keys):
    """Median over runs of the CPU seconds per 1,000 jobs of the processes `keys`."""
    totals = [sum(r[k] for k in keys) for r in rows if all(r.get(k) is not None for k in keys)]
    return statistics.median(totals) if totals else None


def cpu_comparisons(runs):
    """Whole-system CPU per job, ours against each peer at each concurrency: on a
    shared, noisy machine this moves much less between rounds than jobs/s."""
    print()
    print("| CPU per job, every process of the run | Redwire (Redwire + Redis + load generator) µs | peer (Node + Redis) µs | peer / Redwire |")
    print("|---|---|---|---|")
    for name in sorted(runs):
        if not name.startswith("QueueE2eStream"):
            continue
        suffix = name.removeprefix("QueueE2eStream")
        ours = cpu_per_job(runs[name], OURS_CPU)
        for peer, label in (("BullmqE2e", "BullMQ"), ("BeeQueueE2e", "bee-queue")):
            theirs = cpu_per_job(runs.get(peer + suffix, []), PEER_CPU)
            if ours and theirs:
                at = suffix.strip() or "run's C"
                print(f"| Queue end-to-end ({at}) vs {label} | {ours * 1000:,.1f} | {theirs * 1000:,.1f} | {theirs / ours:.2f} |")


def pubsub_fanout(runs):
    """Each subscriber count's PubSub fan-out: deliveries/s and latency (closed loop),
    Redwire's CPU per delivery, and Redis's CPU per published message (from its own
    `INFO cpu`), closed loop and at one fixed publish rate for every count. Redis's
    must not grow with the subscribers: Redwire holds one Redis subscription per
    channel, however many streams listen. The fixed rate compares equals: a slower
    closed-loop run carries more of Redis's idle background per message."""
    counts = sorted({int(n.split()[1].removeprefix("S=")) for n in runs if n.startswith("Pubsub S=")})
    if not counts:
        return
    paced = {n.split(" at ", 1)[1] for n in runs if n.startswith("Pubsub S=") and " at " in n}
    rate = next(iter(paced), None)
    print()
    print("| PubSub fan-out: subscribers, one publisher | deliveries/s | p50 / p99 µs | Redwire CPU µs per delivery "
          f"| Redis CPU µs per published message | same at {rate or '(no fixed-rate run)'} |")
    print("|---|---|---|---|---|---|")
    for count in counts:
        rows = runs.get(f"Pubsub S={count}", [])
        paced_rows = runs.get(f"Pubsub S={count} at {rate}", [])
        cells = [median(rows, k) for k in ("ops_per_sec", "p50_us", "p99_us", "redwire_cpu_s_per_1k")]
        per_publish = [median([r["extra"] for r in group], "redis_cpu_us_per_publish") for group in (rows, paced_rows)]
        rate_text = "-" if cells[0] is None else f"{cells[0]:,.0f}"
        latency = "-" if None in cells[1:3] else f"{cells[1]:,.0f} / {cells[2]:,.0f}"
        redwire = "-" if cells[3] is None else f"{cells[3] * 1000:.1f}"
        redis = ["-" if v is None else f"{v:.1f}" for v in per_publish]
        print(f"| {count:,} | {rate_text} | {latency} | {redwire} | {redis[0]} | {redis[1]} |")


def idle_streams(runs):
    """Redwire's memory per idle stream and the Redis connections in use while they
    are open (target: <= 16 KiB each, <= 4 connections)."""
    kinds = (("Idle", "subscriptions (PubSub Subscribe)"), ("IdleConsumers", "consumers (Queue Consume)"))
    present = [(name, label) for name, label in kinds if runs.get(name)]
    if not present:
        return
    print()
    print("| idle streams (target <= 16 KiB each, <= 4 Redis connections) | streams | Redwire RSS per stream | Redis connections |")
    print("|---|---|---|---|")
    for name, label in present:
        rows = runs[name]
        extras = [r["extra"] for r in rows]
        per_stream = median(extras, "rss_bytes_per_stream")
        connections = median(extras, "redis_connections")
        rss = "-" if per_stream is None else f"{per_stream / 1024:.1f} KiB"
        conns = "-" if connections is None else f"{connections:.0f}"
        print(f"| {label} | {median(rows, 'ops'):,.0f} | {rss} | {conns} |")


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


def operator_reads(rows):
    """The operator workload's per-call latencies (one run: it seeds first)."""
    if not rows:
        return
    extra = rows[-1]["extra"]
    print()
    print(f"Operator reads with {extra['jobs']:,} jobs in one queue and {extra['queues']:,} more queues (sequential calls):")
    print()
    print("| call | p50 ms | p99 ms |")
    print("|---|---|---|")
    for call, t in extra["calls"].items():
        print(f"| {call} | {t['p50_ms']:.2f} | {t['p99_ms']:.2f} |")


def main():
    runs = load(sys.argv[1])
    operator = runs.pop("Operator", [])
    if "--half-rate" in sys.argv:
        workload = sys.argv[sys.argv.index("--half-rate") + 1]
        print(max(1, int(median(runs.get(workload, []), "ops_per_sec") or 2) // 2))
        return
    print("| workload | runs | median ops/s | p50 µs | p99 µs | p99.9 µs | Redwire CPU s/1k | Redis CPU s/1k | load generator CPU s/1k | peer process CPU s/1k |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, rows in sorted(runs.items()):
        cells = [median(rows, k) for k in ("ops_per_sec", "p50_us", "p99_us", "p999_us", "redwire_cpu_s_per_1k", "redis_cpu_s_per_1k", "bench_cpu_s_per_1k", "peer_cpu_s_per_1k")]
        shown = ["-" if c is None else (f"{c:,.0f}" if i < 4 else f"{c:.4f}") for i, c in enumerate(cells)]
        print(f"| {name} | {len(rows)} | " + " | ".join(shown) + " |")
    print()
    print("| comparison | Redwire | peer | ratio | per-round ratios |")
    print("|---|---|---|---|---|")
    for label, ours, peer, unit in PAIRS + queue_pairs(runs):
        a = median(runs.get(ours, []), "ops_per_sec")
        b = median(runs.get(peer, []), "ops_per_sec") if peer else None
        ratio = f"{a / b:.2f}" if a and b else "-"
        a_text = f"{a:,.0f} {unit}" if a else "-"
        b_text = f"{b:,.0f} {unit}" if b else "-"
        print(f"| {label} | {a_text} | {b_text} | {ratio} | {round_ratios(runs, ours, peer)} |")
    cpu_comparisons(runs)
    pubsub_fanout(runs)
    idle_streams(runs)
    added_latency(runs)
    operator_reads(operator)


if __name__ == "__main__":
    main()
