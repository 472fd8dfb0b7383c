"""Placement scale: CP-SAT node placement (solver/placement.py) on reproducible random fleets.

Each instance: W workloads in 4 tiers, each with one or two replica groups (a random pool of 10,
TP from {1, 2, 4, 8}, 1-6 replicas); each pool has N nodes of 8 GPUs, a share of them partly held
by foreign pods (1-7 GPUs). Replicas are scaled so that the plan asks each pool for ``load`` times
its free GPUs (below 1: everything should fit; above 1: the lowest tiers go unplaced).

    python bench/placement_scale.py [--runs 5] [--time-limit 10]

Prints one row per instance: median wall time over the runs (with min and max), the status
(optimal: every lexicographic phase proven), replicas placed / wanted per tier (highest first),
stranded GPUs (free GPUs no group of a pool's largest TP can use), nodes touched and the number
of unplaced groups by reason. Runs are also checked to give the same placement (determinism).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter

from rich.console import Console
from rich.table import Table

from llmfleet.solver.placement import Node, ReplicaGroup, place

TIERS = (1_000_000, 100_000, 10_000, 1_000)
"""the FleetPolicy's default tier values (api.models._default_tiers)"""
TPS = (1, 2, 4, 8)


def instance(n_workloads: int, n_pools: int, nodes_per_pool: int, load: float, foreign_share: float,
             seed: int) -> tuple[list[ReplicaGroup], list[Node]]:
    rng = random.Random(seed)
    nodes = []
    for p in range(n_pools):
        for i in range(nodes_per_pool):
            held = rng.randint(1, 7) if rng.random() < foreign_share else 0
            nodes.append(Node(f"pool{p}-node{i:03d}", f"pool{p}", 8, held))
    raw = []
    for w in range(n_workloads):
        tier = TIERS[w % len(TIERS)]
        for _ in range(rng.randint(1, 2)):
            raw.append((f"ns/w{w:04d}", f"pool{rng.randrange(n_pools)}", rng.choice(TPS), rng.randint(1, 6), tier))
    free, wanted = Counter(), Counter()
    for n in nodes:
        free[n.pool] += n.free_gpus
    for _, pool, tp, r, _ in raw:
        wanted[pool] += tp * r
    # per pool, so that every pool is asked for ``load`` times its free GPUs
    groups = [ReplicaGroup(w, p, tp, max(1, round(r * load * free[p] / wanted[p])), tier) for w, p, tp, r, tier in raw]
    return groups, nodes


CASES = [  # (workloads, pools, nodes per pool, load, foreign share)
    (100, 10, 32, 0.7, 0.3),
    (100, 10, 32, 0.95, 0.3),
    (100, 10, 32, 1.3, 0.3),
    (300, 10, 64, 0.9, 0.3),
    (300, 10, 64, 1.3, 0.5),
    (1000, 10, 128, 1.1, 0.3),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--time-limit", type=float, default=10.0, help="place(time_limit_s=...), s")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    table = Table(title=f"CP-SAT placement, median of {args.runs} runs (time limit {args.time_limit:g} s)")
    for col in ("workloads x pools x nodes", "groups", "GPUs wanted / free", "time s (min-max)", "status",
                "placed / wanted by tier", "stranded GPUs", "nodes used", "unplaced groups", "same each run"):
        table.add_column(col)
    for n_w, n_p, n_n, load, foreign in CASES:
        groups, nodes = instance(n_w, n_p, n_n, load, foreign, args.seed)
        times, results = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            results.append(place(groups, nodes, time_limit_s=args.time_limit))
            times.append(time.perf_counter() - t0)
        r = results[0]
        same = all(x.bindings == r.bindings for x in results)
        tiers = " ".join(f"{r.placed_by_tier[t]}/{r.wanted_by_tier[t]}" for t in r.wanted_by_tier)
        reasons = Counter(u.reason_code for u in r.unplaced)
        table.add_row(f"{n_w} x {n_p} x {n_n}", str(len(groups)),
                      f"{sum(g.tp * g.replicas for g in groups)} / {sum(n.free_gpus for n in nodes)}",
                      f"{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f})", r.status, tiers,
                      str(sum(r.stranded_gpus.values())), str(sum(len(v) for v in r.nodes_used.values())),
                      ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "0", "yes" if same else "NO")
    Console(width=220).print(table)


if __name__ == "__main__":
    main()
