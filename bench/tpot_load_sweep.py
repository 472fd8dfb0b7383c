"""Predicted TPOT percentiles of one colocated replica against the simulator, by load.

For each case of ``bench/capacity_accuracy.py`` (model, GPU, TP, one request size), one replica
serves a Poisson stream at 50%, 80% and 90% of the most it sustains (the peak of its rate curve
within the KV cache, ``capacity.mix_rate_rps``). The simulator replays 6,000 requests (the first
tenth left out: the replica starts empty) and its p90 and p99 TPOT are printed beside the
model's (``capacity.latencies_at_rate`` with the replica's arrivals as its mix, which is how a
plan's groups are predicted: ``capacity.shared_batch``), with their ratio (replay over model).

This isolates the decode side of the model: one size, no bursts beyond Poisson, no routing.
Near a replica's throughput the arrivals' swing over a request's life holds more decodes and
prompt chunks in it (the busy periods of ``shared_batch``); the figures show where that holds
and where it does not (the A100's 3,000-token prompts at 80%, the L4 at 90%).

    python bench/tpot_load_sweep.py      # about a minute on 2 cores

Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from capacity_accuracy import CASES, poisson_requests
from llmfleet.catalog.gpus import get_gpu
from llmfleet.catalog.models import resolve_model
from llmfleet.perf.capacity import POISSON, kv_capacity_tokens, latencies_at_rate, mix_rate_rps
from llmfleet.sim.engine import Simulation
from llmfleet.sim.scenario import SimGroup, SimWorkload
from llmfleet.workload.demand import bucket_index

LOADS = (0.5, 0.8, 0.9)
"""shares of the replica's most sustained rate"""

REQUESTS = 6000
"""requests replayed per case and load"""


def sustained_rps(model, gpu, tp: int, inp: float, out: float) -> float:
    """The most one colocated replica sustains with requests of one size, req/s: the peak of its
    steady-state rate curve over the batches its KV cache holds."""
    curve = mix_rate_rps(model, gpu, tp, np.array([inp]), np.array([out]), np.array([1.0]))
    fits = max(int(kv_capacity_tokens(model, gpu, tp) // (inp + out)), 1)
    return float(curve[:fits].max())


def replayed_tpot_s(model, gpu, tp: int, inp: int, out: int, rate: float, seed: int = 1) -> np.ndarray:
    """Per-request TPOT, s, of the simulated replica at ``rate`` req/s (after the first tenth)."""
    i, j = bucket_index(np.array([inp]), np.array([out]))
    w = SimWorkload("bench/tpot", model, ttft_s=10.0, tpot_s=1.0, percentile=99.0, gpu_memory_utilization=0.9,
                    buckets=[(int(i[0]), int(j[0]))],
                    groups=[SimGroup("colocated", "pool", gpu, tp, 1, np.array([rate]), "net", 1e12)])
    sim = Simulation(w, poisson_requests(rate, REQUESTS, inp, out, seed=seed))
    sim.run()
    rq = sim.rq
    return ((rq.finish - rq.first) / np.maximum(rq.out - 1, 1))[len(rq.out) // 10:]


def main() -> int:
    t0 = time.perf_counter()
    print(f"{'model':<16}{'GPU':<10}{'TP':>3}{'in':>6}{'out':>5}{'load':>6}{'req/s':>8}"
          f"{'p90 sim':>9}{'model':>8}{'ratio':>7}{'p99 sim':>9}{'model':>8}{'ratio':>7}")
    ratios = {load: [] for load in LOADS}
    for model_id, gpu_name, tp, inp, out, _, _ in CASES:
        model, gpu = resolve_model(model_id), get_gpu(gpu_name)
        top = sustained_rps(model, gpu, tp, float(inp), float(out))
        for load in LOADS:
            rate = load * top
            print(f"{model_id} on {gpu_name} at {load:.0%}", file=sys.stderr, flush=True)
            tpot = replayed_tpot_s(model, gpu, tp, inp, out, rate)
            predicted = latencies_at_rate(model, gpu, tp, np.array([float(inp)]), np.array([float(out)]),
                                          np.array([rate]), [90.0, 99.0], burst=POISSON, mix_rps=np.array([rate]))
            cells = []
            for pct, (_, pred) in zip((90.0, 99.0), predicted):
                sim = float(np.percentile(tpot, pct))
                ratio = sim / float(pred[0]) if np.isfinite(pred[0]) else float("nan")
                ratios[load].append(ratio)
                cells.append(f"{sim * 1e3:>9.1f}{pred[0] * 1e3:>8.1f}{ratio:>7.2f}")
            print(f"{model_id.split('/')[-1]:<16}{gpu_name:<10}{tp:>3}{inp:>6}{out:>5}{load:>6.0%}{rate:>8.2f}"
                  + "".join(cells))
    for load, rs in ratios.items():
        rs = np.array(rs)
        ok = rs[np.isfinite(rs)]
        print(f"load {load:.0%}: {int(np.sum(np.abs(ok - 1.0) <= 0.25))} of {len(rs)} percentiles within 25%; "
              f"replay over model min {ok.min():.2f}, median {np.median(ok):.2f}, max {ok.max():.2f}"
              + (f"; {len(rs) - len(ok)} where the model finds no steady state" if len(ok) < len(rs) else ""))
    print("(ms; ratio = replay / model; a replica serves one request size from a Poisson stream)")
    print(f"\nwall time {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
