"""Solver scale: solve time and proven gap of the fleet MILP on reproducible random instances.

1. Mélange-format instances (one workload): 4, 6 and 8 GPU types x 6x6 and 8x8 request-size
   buckets. Anchor: Mélange's own CBC model needs 15-17 s for 4 types x 6x6 at slice factor 16 and
   does not finish within 120 s for 6 or 8 types on these 2-core machines.
   Target: gap <= 1% in under 1 s.
2. Multi-workload instances with the real performance model: up to 50 workloads (models from the
   catalogue, random traffic and SLOs) x 10 GPU pools x TP {1,2,4,8}. Target: within 10 s.

    python bench/solver_scale.py [--seeds 3]

Prints one row per instance: build time (capacity model + MILP input), solve time (MILP, incl.
the LP-relaxation bound), the cost, the proven gap and the status.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from llmfleet.api.loader import FleetSpec
from llmfleet.api.models import FleetPolicy, GPUPool, LLMWorkload
from llmfleet.catalog.models import model_catalog
from llmfleet.solver.melange import problem_from_melange
from llmfleet.solver.milp import solve
from llmfleet.solver.problem import build_problem

# price per GPU-hour and relative speed, loosely ordered like the catalogue (A10G .. B200)
GPU_LADDER = [(0.8, 1.0), (1.0, 1.3), (1.9, 2.8), (3.7, 6.0), (5.1, 8.0), (6.9, 14.0), (5.4, 17.0), (9.0, 28.0)]


def melange_instance(n_types: int, n_buckets: int, seed: int) -> dict:
    """Random Mélange input: throughput falls with request size, rises with GPU speed (with noise),
    and small GPUs cannot serve the largest buckets (throughput 0), as in Mélange's profiles."""
    rng = np.random.default_rng(seed)
    sizes = np.add.outer(np.arange(n_buckets), np.arange(n_buckets)).astype(float)
    gpu_info = {}
    for g in range(n_types):
        price, speed = GPU_LADDER[g % len(GPU_LADDER)]
        price *= rng.uniform(0.9, 1.1)
        tput = speed * 40.0 / (1.0 + sizes) ** 1.3 * rng.uniform(0.7, 1.3, sizes.shape)
        if g < n_types - 1:  # the SLO is unreachable on the smaller GPUs for the biggest requests
            tput[sizes > n_buckets + g] = 0.0
        gpu_info[f"gpu{g}"] = {"cost": round(price, 3), "tputs": tput.round(3).tolist()}
    dist = rng.dirichlet(np.ones(n_buckets * n_buckets)).reshape(n_buckets, n_buckets)
    return {"gpu_info": gpu_info, "workload_distribution": dist.tolist(),
            "total_request_rate": float(rng.uniform(20, 200)), "slice_factor": 16}


POOLS = [("a10g", "A10G", 4, None), ("l4", "L4", 8, None), ("l40s", "L40S", 8, None), ("a100-40g", "A100-40G", 8, None),
         ("a100-80g", "A100-80G", 8, None), ("h100-sxm", "H100-SXM", 8, 6.9), ("h100-pcie", "H100-PCIe", 8, None),
         ("h200", "H200", 8, None), ("b200", "B200", 8, 9.0), ("mi300x", "MI300X", 8, 4.5)]


def fleet_instance(n_workloads: int, seed: int, max_gpus_per_pool: int = 256) -> FleetSpec:
    rng = np.random.default_rng(seed)
    models = [m for m in model_catalog() if "bloom" not in m]
    pools = [GPUPool.model_validate({"metadata": {"name": n}, "spec": {
        "gpuType": t, "gpusPerNode": per_node, "maxGPUs": max_gpus_per_pool, **({"costPerGPUHour": price} if price else {})}})
        for n, t, per_node, price in POOLS]
    workloads = []
    tiers = ["critical", "high", "standard", "low"]
    for i in range(n_workloads):
        p50_in = float(rng.choice([200, 600, 1500, 4000]))
        p50_out = float(rng.choice([60, 150, 400]))
        workloads.append(LLMWorkload.model_validate({"metadata": {"name": f"w{i}", "namespace": "bench"}, "spec": {
            "model": str(rng.choice(models)),
            "traffic": {"requestRatePerSecond": float(rng.uniform(0.5, 30)),
                        "inputTokens": {"p50": int(p50_in), "p90": int(p50_in * 2.7), "p99": int(p50_in * 4)},
                        "outputTokens": {"p50": int(p50_out), "p90": int(p50_out * 3), "p99": int(p50_out * 4.5)}},
            "slo": {"ttft": f"{rng.choice([500, 1000, 2000, 4000])}ms", "tpot": f"{rng.choice([60, 100, 150])}ms",
                    "percentile": float(rng.choice([90, 95, 99]))},
            "priority": tiers[i % len(tiers)],
            "serving": {"tensorParallelSizes": [1, 2, 4, 8]}}}))
    return FleetSpec(workloads=workloads, pools=pools, policy=FleetPolicy(metadata={"name": "default"}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="instances per size (median reported)")
    args = ap.parse_args()
    console = Console(width=150)

    t = Table(title="Mélange-format instances (one workload); target: gap <= 1% in < 1 s", title_justify="left")
    for c in ("GPU types", "buckets", "seeds", "solve s (median)", "solve s (max)", "gap (max)", "statuses"):
        t.add_column(c, justify="right")
    for n_types in (4, 6, 8):
        for n_buckets in (6, 8):
            times, gaps, statuses = [], [], set()
            for seed in range(args.seeds):
                fp = problem_from_melange(melange_instance(n_types, n_buckets, seed), time_limit_s=60, relative_gap=1e-4)
                t0 = time.perf_counter()
                plan = solve(fp)
                times.append(time.perf_counter() - t0)
                gaps.append(plan.gap)
                statuses.add(plan.status)
            t.add_row(str(n_types), f"{n_buckets}x{n_buckets}", str(args.seeds), f"{statistics.median(times):.3f}",
                      f"{max(times):.3f}", f"{max(gaps):.4%}", ",".join(sorted(statuses)))
    console.print(t)

    for label, max_gpus, limit in (("ample availability (256 GPUs per pool)", 256, 60.0),
                                   ("scarce availability (a cap per pool that binds), 10 s limit", None, 10.0)):
        t = Table(title=f"Multi-workload instances (real performance model), 10 pools x TP {{1,2,4,8}}, {label}; "
                        "target < 10 s", title_justify="left")
        for c in ("workloads", "seeds", "configs", "build s (median)", "solve s (median)", "solve s (max)",
                  "gap (max)", "statuses"):
            t.add_column(c, justify="right")
        for n_workloads in (10, 25, 50):
            builds, times, gaps, statuses, configs = [], [], [], set(), []
            for seed in range(args.seeds):
                # scarce: about 60% of what the unconstrained plan uses per pool, so pools bind
                cap = max_gpus if max_gpus is not None else max(8, n_workloads)
                t0 = time.perf_counter()
                fp = build_problem(fleet_instance(n_workloads, seed, cap))
                fp.time_limit_s, fp.relative_gap = limit, 1e-3
                builds.append(time.perf_counter() - t0)
                configs.append(sum(len(w.configs) for w in fp.workloads))
                t0 = time.perf_counter()
                plan = solve(fp)
                times.append(time.perf_counter() - t0)
                gaps.append(plan.gap if plan.gap is not None else float("nan"))
                statuses.add(plan.status)
            t.add_row(str(n_workloads), str(args.seeds), str(int(statistics.median(configs))),
                      f"{statistics.median(builds):.2f}", f"{statistics.median(times):.2f}", f"{max(times):.2f}",
                      f"{max(gaps):.4%}", ",".join(sorted(statuses)))
        console.print(t)


if __name__ == "__main__":
    main()
