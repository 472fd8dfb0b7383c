"""Analytic colocated capacity (chunked prefill) against what the simulator sustains at the SLO.

For one replica and requests of one size arriving as a Poisson stream, ``capacity_rps`` predicts
the largest rate that meets the TTFT and TPOT percentile targets. The simulator schedules each
iteration as vLLM V1 does (decodes first, then prompt chunks in the token budget) with the same
step-time model, so the two differ only by the capacity model's queueing and batching
approximations. This script finds the simulator's largest passing rate by bisection and prints
both, for several models, GPUs, sizes and SLOs.

    python bench/capacity_accuracy.py
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from llmfleet.catalog.gpus import get_gpu
from llmfleet.catalog.models import resolve_model
from llmfleet.perf.capacity import capacity_rps
from llmfleet.sim.engine import Simulation
from llmfleet.sim.scenario import SimGroup, SimWorkload
from llmfleet.workload.demand import bucket_index

CASES = [
    # model, GPU, TP, input, output, TTFT s, TPOT s
    ("meta-llama/Llama-3.1-8B", "H100-SXM", 1, 1000, 250, 1.0, 0.05),
    ("meta-llama/Llama-3.1-8B", "L40S", 1, 1000, 250, 1.0, 0.1),
    ("meta-llama/Llama-3.1-8B", "A100-80G", 1, 3000, 150, 2.0, 0.1),
    ("meta-llama/Llama-3.1-70B", "H100-SXM", 4, 1000, 250, 2.0, 0.1),
    ("meta-llama/Llama-3.1-8B", "L4", 1, 300, 100, 2.0, 0.15),
]


def poisson_requests(rate_rps: float, n: int, input_tokens: int, output_tokens: int, seed: int = 0) -> pd.DataFrame:
    """``n`` requests of one size arriving as a Poisson stream of ``rate_rps`` req/s."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"arrival_s": np.cumsum(rng.exponential(1.0 / rate_rps, n)),
                         "input_tokens": np.full(n, input_tokens), "output_tokens": np.full(n, output_tokens)})


def simulated_capacity_rps(model_id: str, gpu_name: str, tp: int, inp: int, out: int, ttft_s: float, tpot_s: float,
                           percentile: float = 90.0, requests: int = 3000, iterations: int = 8) -> float:
    """Largest Poisson rate, req/s, at which one simulated colocated replica meets both SLO
    percentiles on ``requests`` requests (bisection between 0 and twice the analytic capacity)."""
    model, gpu = resolve_model(model_id), get_gpu(gpu_name)
    i, j = bucket_index(np.array([inp]), np.array([out]))
    bucket = [(int(i[0]), int(j[0]))]

    def passes(rate: float) -> bool:
        w = SimWorkload("bench/capacity", model, ttft_s=ttft_s, tpot_s=tpot_s, percentile=percentile,
                        gpu_memory_utilization=0.9, buckets=bucket,
                        groups=[SimGroup("colocated", "pool", gpu, tp, 1, np.array([rate]), "net", 1e12)])
        return Simulation(w, poisson_requests(rate, requests, inp, out)).run().meets_target

    hi = 2.0 * predicted_capacity_rps(model_id, gpu_name, tp, inp, out, ttft_s, tpot_s, percentile)
    lo = 0.0
    for _ in range(iterations):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if passes(mid) else (lo, mid)
    return lo


def predicted_capacity_rps(model_id: str, gpu_name: str, tp: int, inp: int, out: int, ttft_s: float, tpot_s: float,
                           percentile: float = 90.0) -> float:
    """``capacity_rps`` for one request size, req/s."""
    return float(capacity_rps(resolve_model(model_id), get_gpu(gpu_name), tp, np.array([float(inp)]),
                              np.array([float(out)]), ttft_s, tpot_s, percentile)[0])


def main() -> None:
    print(f"{'model':<26}{'GPU':<10}{'TP':>3}{'in':>6}{'out':>5}{'TTFT s':>8}{'TPOT s':>8}"
          f"{'model req/s':>13}{'sim req/s':>11}{'error':>8}")
    errors = []
    for case in CASES:
        pred = predicted_capacity_rps(*case)
        sim = simulated_capacity_rps(*case)
        err = pred / sim - 1 if sim > 0 else float("nan")
        errors.append(abs(err))
        m, g, tp, i, o, ttft, tpot = case
        print(f"{m.split('/')[-1]:<26}{g:<10}{tp:>3}{i:>6}{o:>5}{ttft:>8.2f}{tpot:>8.3f}{pred:>13.2f}{sim:>11.2f}{err:>+8.0%}")
    print(f"median absolute error {np.nanmedian(errors):.1%}, max {np.nanmax(errors):.1%}")


if __name__ == "__main__":
    main()
