"""One colocated replica's TTFT per size bucket on Poisson arrivals, and over all its requests on
Gamma-renewal (bursty) arrivals: the model against the replay.

``bench/pod_dispersion.py`` found the one-replica TTFT read-out short of the replay on bursty
streams; this bench asks how much of that is there without bursts, and in which sizes. A
colocated replica's TTFT in the model (``capacity.latencies_at_rate`` with the replica's mix) is
its prompts' queue wait, at least the rest of the prompt in service, plus the request's own
prompt service at its own length (``capacity._latencies_in_mix``), as a prefill replica's is
(``capacity.prefill_ttft_quantiles_s``). The replay serves every prompt at its own length.

Setup: Llama-3.1-8B-Instruct, the Azure LLM inference trace 2023 conversation hour
(``examples/traces/azure_llm_2023_conv.csv``, CC-BY-4.0) as the size mix, the example GPU pools
and FleetPolicy; the workload's capacity model is built by the library's public path
(``build_problem`` on an LLMWorkload manifest, relaxed p99 SLO: TTFT 2 s, TPOT 100 ms). For
one replica of H100-SXM TP-1 and of L40S TP-2 (colocated), at loads ``LOADS`` (the model's load,
Σ rate / κ, of the trace's size mix): ``DURATION_S`` of Poisson arrivals whose sizes are drawn
from the trace's requests, replayed on that one replica (``sim.engine.Simulation``, seed 0), and
the read-out (``milp.predicted_latency`` for the replica, per bucket ``milp._latencies_by_bucket``)
at the same mix. Printed: per bucket with at least ``MIN_REQUESTS`` replayed requests, TTFT p50,
p90 and p99 replayed / modelled; and the replica's over all its requests.

What it showed when written. Before the colocated read-out took the rest of the prompt in
service and each prompt's own length (it served a bucket's prompts at its mean length, and only
the queue's exponential tail spread the wait), the replay's p50 over all requests was 0.85-0.92x
the model's, its p90 1.03-1.20x and its p99 1.01-1.20x. Per bucket, two gaps:
- short prompts' tail: at 20% load on H100 the 300-500-token bucket's p99 was 0.181 s replayed
  against 0.142 s (0.285 against 0.238 at 50%), where the read-out's wait had only the queue's
  exponential tail;
- long prompts at their own length: the 2k-8k bucket (median prompt 4.1k, p99 5.8-6.4k) at 20%
  load on H100 had its p90 at 0.185 s replayed against 0.156 s.
With both: p50 0.83-0.89x, p90 0.97-1.12x, p99 1.01-1.17x (the 2k-8k bucket's p90 at 20% load
0.185 against 0.183 s). What is left is at 50-80% load on H100 (p99 1.16-1.17x, in every bucket
alike: the queue's wait, not the sizes), and the short prompts' p99 at 20% load (0.181 against
0.143 s; the rest of the prompt in service hardly moved it). Looked at by hand: each of the 1%
slowest 128-511-token prompts there (0.18-0.40 s) had a 2-7k-token prompt just ahead or in its own
iteration. Its first token comes at the end of the iteration that finishes its prefill, and the
token budget (8,192 on H100) lets a long prompt's chunk share that iteration: the model's
``prompts_per_mixed_iteration`` carries that sharing on average, not in the tail.
``bench/bursty_verify.py`` did not move (66 of 71 groups within 25%, the same plans): under
bursts the queue's wait is most of a TTFT.

Bursty table (``bursty_table``): the same replicas and loads, Gamma-renewal gaps of CV² 3.7 and
7.3, the model given the burstiness measured on the replayed arrivals (``demand_from_trace``).
Without the clump mates that share a prompt's prefill iteration (vLLM's scheduler takes every
waiting prompt into the next iteration's budget, and a prompt's first token comes when that
iteration ends), the replay's TTFT was 1.01-1.53x the model's at p50, 1.01-1.40x at p90 and
0.90-1.36x at p99, the worst at 20% load and CV² 7.3, where most arrivals come in clumps. With
them (``capacity.with_followers``, ``Demand.arrival_followers``): p50 0.86-1.04, p90 0.92-1.24,
p99 0.88-1.31; what is left is at 20% load (L40S TP-2 at CV² 7.3: p90 1.24, p99 1.31). On
Poisson arrivals nothing changes (no clump mates).

    python bench/ttft_by_bucket.py     # about 25 s

Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import bursty_verify as bv
import numpy as np
import pandas as pd

from llmfleet.api.loader import load_fleet
from llmfleet.sim.engine import Simulation
from llmfleet.sim.scenario import SimGroup, SimWorkload
from llmfleet.solver.milp import _latencies_by_bucket, group_levels, predicted_latency, replica_load
from llmfleet.solver.problem import build_problem
from llmfleet.workload.demand import demand_from_trace
from llmfleet.workload.traces import load_trace

REPLICAS = (("h100-sxm", 1), ("l40s", 2))
"""(pool, TP) of the colocated replicas measured: the fast and the slow group of the Azure plans
that split a workload (``bench/pod_dispersion.py``)"""

LOADS = (0.2, 0.5, 0.8)
"""the replica's load as the model counts it (Σ rate / κ over the buckets)"""

DURATION_S = 3600.0
"""length of each Poisson replay, s"""

MIN_REQUESTS = 100
"""buckets with fewer replayed requests are left out of the per-bucket rows (a p99 of fewer is noise)"""

PERCENTILES = (50.0, 90.0, 99.0)

GAMMA_SCVS = (3.7, 7.3)
"""squared CVs of the Gamma-renewal gaps of the bursty table: ``bench/bursty_verify.py``'s variants
(ServeGen's client 148 median and all-client p80, ``bursty_verify.servegen_cvs``)"""

THINNED_LOADS = (0.4, 0.6, 0.8)
"""mean loads of the thinned Azure table (Σ rate / κ; its busiest minutes run above them)"""

THINNINGS = 3
"""random thinnings per load in the thinned Azure table: which of the trace's surges one thinning
keeps moves a replica's p99 by 2x at 80% load"""

QUEUE_WINDOW_S = 2.0
"""window of the TTFT queue's arrival dispersion in the bursty table, s: the relaxed SLO's TTFT
target, as ``solver.problem`` takes it"""


def main() -> int:
    t0 = time.perf_counter()
    trace = load_trace(bv.AZURE, "azure")
    with tempfile.TemporaryDirectory(prefix="ttft-by-bucket-") as tmp:
        folder = Path(tmp)
        bv.write_csv(trace, folder / "traces" / "azure.csv")
        manifest = bv.write_workload(folder, "azure", "azure.csv", bv.AZURE_SCALE, bv.SLOS[1], (1, 2), "never")
        fleet = load_fleet([bv.EXAMPLES / "gpupools.yaml", bv.EXAMPLES / "fleetpolicy.yaml", manifest])
        fp = build_problem(fleet)
    w = fp.workloads[0]
    # the replay's arrivals are Poisson: the model is given Poisson arrivals too, with the trace's
    # prompt-length spread within each bucket (``Burstiness.service_scv``) as it is
    w = dataclasses.replace(w, burst=dataclasses.replace(w.burst, arrival_scv=1.0, queue_arrival_scv=None,
                                                         arrival_idc=(), followers=()))
    inp_all, out_all = trace["input_tokens"].to_numpy(), trace["output_tokens"].to_numpy()
    grid = [(int(i), int(j)) for i, j in w.demand.buckets()]
    rng = np.random.default_rng(0)
    print("llmfleet bench/ttft_by_bucket.py: one colocated replica, Poisson arrivals of the Azure conversation sizes; "
          "TTFT replayed / modelled at p50, p90, p99 (s)")
    for pool, tp, config, mix in measured_replicas(w):
        for load in LOADS:
            bucket_rps = mix * load / replica_load(config, mix, 1)
            rate = float(bucket_rps.sum())
            n = int(rate * DURATION_S)
            pick = rng.integers(0, len(inp_all), n)
            requests = pd.DataFrame({"arrival_s": np.cumsum(rng.exponential(1.0 / rate, n)),
                                     "input_tokens": inp_all[pick], "output_tokens": out_all[pick]})
            sim = replay_alone(w, fp, config, grid, bucket_rps, requests)
            ttft = sim.rq.first - sim.rq.arrival
            served, model_ttft, _ = _latencies_by_bucket(w, config, bucket_rps, load, fp.params, list(PERCENTILES))
            whole = [predicted_latency(w, config, bucket_rps, load, fp.params, percentile=p)[0] for p in PERCENTILES]
            cells = "  ".join(f"p{p:g} {bv._pct_at(ttft, p):.3f}/{m:.3f} = {bv._pct_at(ttft, p) / m:.2f}"
                              for p, m in zip(PERCENTILES, whole))
            print(f"\n{pool} TP-{tp} at load {load:g} ({rate:.2f} req/s, {n} requests): all requests  {cells}")
            print(f"  {'bucket (in/out tokens, mean)':<30} {'requests':>8}  {'prompt p50/p99':>14}  "
                  + "  ".join(f"{'p' + format(p, 'g') + ' replay/model':>20}" for p in PERCENTILES))
            bucket = sim.bucket
            for j, b in enumerate(np.flatnonzero(served)):
                mine = bucket == b
                if mine.sum() < MIN_REQUESTS:
                    continue
                lengths = sim.rq.inp[mine]
                print(f"  {f'{w.input_tokens[b]:.0f}/{w.output_tokens[b]:.0f}':<30} {int(mine.sum()):>8}  "
                      f"{f'{np.percentile(lengths, 50):.0f}/{np.percentile(lengths, 99):.0f}':>14}  "
                      + "  ".join(f"{f'{bv._pct_at(ttft[mine], p):.3f}/{m[j]:.3f}':>20}"
                                  for p, m in zip(PERCENTILES, model_ttft)))
            sys.stdout.flush()
    bursty_table(w, fp, grid, inp_all, out_all)
    thinned_table(fp, trace, grid)
    print(f"\nwall time {time.perf_counter() - t0:.0f}s")
    return 0


def measured_replicas(w):
    """(pool, TP, colocated configuration, mix) of each of ``REPLICAS`` that ``w``'s capacity model
    has (a line for one it has not); mix: ``w``'s bucket shares, shape (S,), where the
    configuration serves the bucket within the SLO, in the trace's proportions."""
    for pool, tp in REPLICAS:
        config = next((c for c in w.configs if c.pool.name == pool and c.tp == tp and c.role == "colocated"), None)
        if config is None:
            print(f"\n{pool} TP-{tp}: no colocated configuration in the capacity model")
            continue
        yield pool, tp, config, w.share * (config.capacity_rps > 0)


def replay_alone(w, fp, config, grid: list, bucket_rps: np.ndarray, requests: pd.DataFrame) -> Simulation:
    """``requests`` replayed on one colocated replica of ``config`` (``w``'s SLO and serving
    settings, ``fp``'s performance profile; ``bucket_rps``: its planned arrivals per bucket, req/s),
    seed 0; the finished simulation."""
    spec = w.workload.spec
    group = SimGroup("colocated", config.pool.name, config.pool.gpu, config.tp, 1, bucket_rps, config.pool.kv_domain,
                     config.pool.kv_bytes_per_s_per_gpu)
    scenario = SimWorkload(w.key, w.model, spec.slo.ttft, spec.slo.tpot, spec.slo.percentile,
                           spec.serving.gpu_memory_utilization, grid, [group], performance_profile=fp.params.name)
    sim = Simulation(scenario, requests, seed=0)
    sim.run()
    return sim


def bursty_table(w, fp, grid: list, inp_all: np.ndarray, out_all: np.ndarray) -> None:
    """The same replicas and loads on Gamma-renewal arrivals of CV² ``GAMMA_SCVS``: over all
    requests, TTFT replayed / modelled at ``PERCENTILES``, the model given the burstiness measured
    on the replayed arrivals as a trace's is (``demand_from_trace``: dispersion per window, the TTFT
    queue's at ``QUEUE_WINDOW_S``, and the clump mates, ``Demand.arrival_followers``), with and
    without the clump mates (``capacity.with_followers``)."""
    scvs = ", ".join(format(c, "g") for c in GAMMA_SCVS)
    print(f"\nGamma-renewal arrivals (CV² {scvs}), all requests: TTFT replayed / modelled with the clump mates "
          "sharing a prompt's iteration, and (in brackets) without them")
    for pool, tp, config, mix in measured_replicas(w):
        for scv in GAMMA_SCVS:
            for load in LOADS:
                bucket_rps = mix * load / replica_load(config, mix, 1)
                rate = float(bucket_rps.sum())
                n = int(rate * DURATION_S)
                rng = np.random.default_rng([int(scv * 10), int(load * 10), tp])
                arrival = np.cumsum(rng.gamma(1.0 / scv, scv / rate, n))
                pick = rng.integers(0, len(inp_all), n)
                requests = pd.DataFrame({"arrival_s": arrival, "input_tokens": inp_all[pick],
                                         "output_tokens": out_all[pick]})
                d = demand_from_trace(requests)
                burst = dataclasses.replace(w.burst, arrival_scv=d.arrival_scv,
                                            queue_arrival_scv=d.arrival_scv_at(QUEUE_WINDOW_S),
                                            arrival_idc=d.arrival_idc, followers=d.arrival_followers)
                sim = replay_alone(w, fp, config, grid, bucket_rps, requests)
                ttft = sim.rq.first - sim.rq.arrival
                cells = []
                for p in PERCENTILES:
                    with_mates, without = (
                        predicted_latency(dataclasses.replace(w, burst=b), config, bucket_rps, load, fp.params,
                                          percentile=p)[0]
                        for b in (burst, dataclasses.replace(burst, followers=())))
                    r = bv._pct_at(ttft, p)
                    cells.append(f"p{p:g} {r:.3f}/{with_mates:.3f} = {r / with_mates:.2f} ({r / without:.2f})")
                print(f"{pool} TP-{tp} CV² {scv:g} at load {load:g} ({rate:.2f} req/s; clump mates within 30 ms "
                      f"{dict(d.arrival_followers)[0.03]:.2f}):  " + "  ".join(cells))
                sys.stdout.flush()


def thinned_table(fp, trace: pd.DataFrame, grid: list) -> None:
    """The Azure conversation hour at rateScale 4 itself (its own bursts, which grow with the
    window: dispersion 1.25 over 0.5 s, 5.6 over 20 s), thinned at random to the loads ``THINNED_LOADS``
    of each replica, replayed on that replica alone, against the read-out with the workload's
    burstiness thinned at that share (``Burstiness.thinned``) over the trace's minute-by-minute load
    (``group_levels``), as ``bench/bursty_verify.py``'s "@sim" column: a one-pod group's TTFT
    in a plan that splits the workload (``bench/pod_dispersion.py``)."""
    w = fp.workloads[0]  # the planner's model of the trace at rateScale 4: its burstiness as it is
    arrival = (trace["arrival_s"].to_numpy() - trace["arrival_s"].min()) / bv.AZURE_SCALE
    span = float(arrival.max())
    print(f"\nthe Azure conversation hour at rateScale 4, thinned at random to each load, on one replica: TTFT "
          f"replayed / modelled over all requests, median (range) over {THINNINGS} thinnings")
    for pool, tp, config, mix in measured_replicas(w):
        for load in THINNED_LOADS:
            share = load / replica_load(config, mix / mix.sum(), 1) / (len(arrival) / span)
            if share >= 1.0:
                continue
            thinned = dataclasses.replace(w, burst=w.burst.thinned(share))
            ratios, rates = [], []
            for seed in range(THINNINGS):
                keep = np.random.default_rng([seed, int(load * 10), tp]).random(len(arrival)) < share
                requests = pd.DataFrame({"arrival_s": arrival[keep] - arrival[keep].min(),
                                         "input_tokens": trace["input_tokens"].to_numpy()[keep],
                                         "output_tokens": trace["output_tokens"].to_numpy()[keep]})
                bucket_rps = mix / mix.sum() * len(requests) / span
                util = replica_load(config, bucket_rps, 1)
                sim = replay_alone(w, fp, config, grid, bucket_rps, requests)
                ttft = sim.rq.first - sim.rq.arrival
                ratios.append([bv._pct_at(ttft, p) / predicted_latency(thinned, config, bucket_rps, util, fp.params,
                                                                       percentile=p,
                                                                       levels=group_levels(w, config, bucket_rps))[0]
                               for p in PERCENTILES])
                rates.append(len(requests) / span)
            ratios = np.array(ratios)  # (thinnings, percentiles)
            cells = "  ".join(f"p{p:g} {np.median(r):.2f} ({r.min():.2f}-{r.max():.2f})"
                              for p, r in zip(PERCENTILES, ratios.T))
            print(f"{pool} TP-{tp} share {share:.2f}, load {load:g} ({np.mean(rates):.2f} req/s; dispersion over 2 s "
                  f"{thinned.burst.scv_over(2.0):.2f}, over 20 s {thinned.burst.scv_over(20.0):.2f}):  {cells}")
            sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
