"""Analytic colocated capacity (chunked prefill) against what the simulator sustains at the SLO.

For one replica and requests of one size arriving as a Poisson stream, ``capacity_rps`` predicts
the largest rate that meets the TTFT and TPOT percentile targets. The simulator schedules each
iteration as vLLM V1 does (decodes first, then prompt chunks in the token budget) with the same
step-time model, so the two differ only by the capacity model's queueing and batching
approximations. This script finds the simulator's largest passing rate by bisection and prints
both, for several models, GPUs, sizes and SLOs, with Poisson arrivals of one size and with bursty
arrivals (gamma inter-arrival times of squared coefficient of variation 4) of log-normally spread
prompt lengths, where the capacity model uses Kingman's G/G/1 correction (``Burstiness``); the
M/D/1 figure it replaces is printed beside it.

    python bench/capacity_accuracy.py
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from llmfleet.catalog.gpus import get_gpu
from llmfleet.catalog.models import resolve_model
from llmfleet.perf.capacity import POISSON, Burstiness, capacity_rps
from llmfleet.sim.engine import Simulation
from llmfleet.sim.scenario import SimGroup, SimWorkload
from llmfleet.workload.demand import INPUT_EDGES_TOKENS, arrival_dispersion, bucket_index

ARRIVAL_SCV = 4.0
"""burstiness of the bursty cases: gamma inter-arrival times with CV² 4 (ServeGen's language
clients fit Gamma/Weibull inter-arrivals with CVs of 1-3; shared/data/traces/servegen_language_m_large)"""
PROMPT_SIGMA = 0.5
"""log-normal spread of the prompt lengths around the case's mean in the bursty cases"""

CASES = [
    # model, GPU, TP, input, output, TTFT s, TPOT s
    ("meta-llama/Llama-3.1-8B", "H100-SXM", 1, 1000, 250, 1.0, 0.05),
    ("meta-llama/Llama-3.1-8B", "L40S", 1, 1000, 250, 1.0, 0.1),
    ("meta-llama/Llama-3.1-8B", "A100-80G", 1, 3000, 150, 2.0, 0.1),
    ("meta-llama/Llama-3.1-70B", "H100-SXM", 4, 1000, 250, 2.0, 0.1),
    ("meta-llama/Llama-3.1-8B", "L4", 1, 300, 100, 2.0, 0.15),
]


def poisson_requests(rate_rps: float, n: int, input_tokens: int, output_tokens: int, seed: int = 0,
                     bursty: bool = False) -> pd.DataFrame:
    """``n`` requests arriving at ``rate_rps`` req/s: a Poisson stream of one size, or (``bursty``)
    gamma inter-arrivals of CV² ``ARRIVAL_SCV`` with log-normal prompts of mean ``input_tokens``
    kept within the bucket of that mean."""
    rng = np.random.default_rng(seed)
    if not bursty:
        return pd.DataFrame({"arrival_s": np.cumsum(rng.exponential(1.0 / rate_rps, n)),
                             "input_tokens": np.full(n, input_tokens), "output_tokens": np.full(n, output_tokens)})
    gaps = rng.gamma(1.0 / ARRIVAL_SCV, ARRIVAL_SCV / rate_rps, n)
    edges = INPUT_EDGES_TOKENS[np.searchsorted(INPUT_EDGES_TOKENS, input_tokens, side="right") - 1:][:2]
    prompts = input_tokens * np.exp(PROMPT_SIGMA * rng.standard_normal(n) - PROMPT_SIGMA**2 / 2)
    prompts = np.clip(np.round(prompts), edges[0], edges[1] - 1)
    return pd.DataFrame({"arrival_s": np.cumsum(gaps), "input_tokens": prompts.astype(int),
                         "output_tokens": np.full(n, output_tokens)})


def burstiness_of(trace: pd.DataFrame) -> Burstiness:
    """What the planner measures of a trace: arrival dispersion and the prompts' SCV."""
    inp = trace["input_tokens"].to_numpy(float)
    return Burstiness(max(arrival_dispersion(trace["arrival_s"].to_numpy()), 1.0), float(inp.var() / inp.mean() ** 2))


def simulated_capacity_rps(model_id: str, gpu_name: str, tp: int, inp: int, out: int, ttft_s: float, tpot_s: float,
                           percentile: float = 90.0, requests: int = 3000, iterations: int = 8,
                           bursty: bool = False) -> float:
    """Largest rate, req/s, at which one simulated colocated replica meets both SLO percentiles on
    ``requests`` requests (bisection between 0 and twice the analytic capacity)."""
    model, gpu = resolve_model(model_id), get_gpu(gpu_name)
    i, j = bucket_index(np.array([inp]), np.array([out]))
    bucket = [(int(i[0]), int(j[0]))]

    def passes(rate: float) -> bool:
        w = SimWorkload("bench/capacity", model, ttft_s=ttft_s, tpot_s=tpot_s, percentile=percentile,
                        gpu_memory_utilization=0.9, buckets=bucket,
                        groups=[SimGroup("colocated", "pool", gpu, tp, 1, np.array([rate]), "net", 1e12)])
        return Simulation(w, poisson_requests(rate, requests, inp, out, bursty=bursty)).run().meets_target

    hi = 2.0 * predicted_capacity_rps(model_id, gpu_name, tp, inp, out, ttft_s, tpot_s, percentile)
    lo = 0.0
    for _ in range(iterations):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if passes(mid) else (lo, mid)
    return lo


def predicted_capacity_rps(model_id: str, gpu_name: str, tp: int, inp: int, out: int, ttft_s: float, tpot_s: float,
                           percentile: float = 90.0, burst: Burstiness = POISSON) -> float:
    """``capacity_rps`` for one bucket of mean size (inp, out), req/s."""
    return float(capacity_rps(resolve_model(model_id), get_gpu(gpu_name), tp, np.array([float(inp)]),
                              np.array([float(out)]), ttft_s, tpot_s, percentile, burst=burst)[0])


def main() -> None:
    print(f"{'model':<26}{'GPU':<10}{'TP':>3}{'in':>6}{'out':>5}{'TTFT s':>8}{'TPOT s':>8}{'traffic':>9}"
          f"{'model req/s':>13}{'sim req/s':>11}{'error':>8}{'M/D/1 error':>13}")
    errors = {False: [], True: []}
    for bursty in (False, True):
        for case in CASES:
            burst = burstiness_of(poisson_requests(10.0, 20_000, case[3], case[4], bursty=bursty))
            pred = predicted_capacity_rps(*case, burst=burst)
            mdl = predicted_capacity_rps(*case)
            sim = simulated_capacity_rps(*case, bursty=bursty)
            err = pred / sim - 1 if sim > 0 else float("nan")
            errors[bursty].append(abs(err))
            m, g, tp, i, o, ttft, tpot = case
            print(f"{m.split('/')[-1]:<26}{g:<10}{tp:>3}{i:>6}{o:>5}{ttft:>8.2f}{tpot:>8.3f}"
                  f"{'bursty' if bursty else 'Poisson':>9}{pred:>13.2f}{sim:>11.2f}{err:>+8.0%}{mdl / sim - 1:>+13.0%}")
    for bursty, errs in errors.items():
        print(f"{'bursty' if bursty else 'Poisson'}: median absolute error {np.nanmedian(errs):.1%}, max {np.nanmax(errs):.1%}")


if __name__ == "__main__":
    main()
