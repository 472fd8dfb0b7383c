"""Colocated replicas under bursty arrivals, by load and replica count: the model against the
replay, and the GPUs a plan takes against the fewest its own replay needs (issue 14).

``bench/bursty_verify.py`` plans on the example pools, where the solver mixes GPU types and P/D,
so each arrival process meets a handful of group shapes. Here the shape is held fixed and the
load and burstiness are swept: one pool of H100-SXM, Llama-3.1-8B-Instruct at TP 1, colocated
only (``disaggregation: never``), the example FleetPolicy. Requests: the first 30 minutes of the
Azure LLM inference trace 2023, conversation service (``examples/traces/azure_llm_2023_conv.csv``,
CC-BY-4.0), in order with their lengths, their inter-arrival times redrawn (the same mean rate)
from a Gamma distribution (``bursty_verify.gamma_arrivals``) of CV² 1 (exponential: Poisson
arrivals) or of the two ServeGen CVs of ``bursty_verify.py`` (client 148's request-weighted
median CV, all clients' request-weighted p80; ``servegen_cvs``). Each trace is
replayed at rateScale 1, 2 and 4 (about 5.6, 11 and 22 req/s) for the relaxed p90 and the tight
p99 SLO set of ``bursty_verify.SLOS``.

For each case the round-0 plan (``bursty_verify.run_case``, the library's public path) is
replayed, and the table gives its replicas, its simulated attainment, what ``--verify`` returns
(attainment and GPUs after its default repair rounds), the fewest replicas of the
same group whose replay (same requests, same seed) meets the SLO target (binary search; replicas
only: the plan's routing and engine arguments as they are), and per group the predicted TTFT and
TPOT at the SLO percentile at the replay's load ("@sim", as ``bursty_verify``) against the replay
and their ratio (sim / model).

    python bench/colocated_sweep.py          # 18 cases, a few minutes on 2 cores
    python bench/colocated_sweep.py --quick  # CV² 1 and the burstiest, rateScale 1 and 4

Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import bursty_verify as bv
import numpy as np

from llmfleet import progress
from llmfleet.sim.engine import Simulation
from llmfleet.sim.scenario import from_plan
from llmfleet.workload.traces import load_trace

MINUTES = 30.0
"""minutes of the Azure trace replayed per case (about 10k requests)"""

RATE_SCALES = (1.0, 2.0, 4.0)
SLO_SETS = (bv.SLOS[0], bv.SLOS[3])
"""relaxed p90 (TTFT 2 s / TPOT 100 ms) and tight p99 (500 ms / 40 ms)"""

POOL = """apiVersion: llmfleet.dev/v1alpha1
kind: GPUPool
metadata:
  name: h100
spec:
  gpuType: H100-SXM
  gpusPerNode: 8
  maxGPUs: 64
"""


def fewest_replicas(case: bv.Case) -> tuple[int | None, float | None]:
    """(fewest replicas of the plan's one group whose replay meets the SLO target, the planned
    replicas' replayed attainment); (None, None) unless the plan is one group."""
    sims = [sw for sw in from_plan(case.plan, case.problem) if sw.groups]
    if len(sims) != 1 or len(sims[0].groups) != 1:
        return None, None
    sw = sims[0]

    def attainment(replicas: int) -> float:
        group = dataclasses.replace(sw.groups[0], replicas=replicas)
        return Simulation(dataclasses.replace(sw, groups=[group]), case.requests, seed=0).run().attainment

    planned = sw.groups[0].replicas
    at_plan = attainment(planned)
    target = sw.percentile / 100.0
    if at_plan < target:
        return None, at_plan
    lo, hi = 0, planned  # attainment(lo) misses (0 replicas serves nothing), attainment(hi) meets
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if attainment(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi, at_plan


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CV² 1 and the burstiest variant at rateScale 1 and 4")
    args = ap.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    t_start = time.perf_counter()
    cv_client, cv_upper = bv.servegen_cvs()
    azure = load_trace(bv.AZURE, "azure")
    base = azure[azure["arrival_s"] < MINUTES * 60].reset_index(drop=True)
    cvs = [1.0, cv_upper] if args.quick else [1.0, cv_client, cv_upper]
    scales = (RATE_SCALES[0], RATE_SCALES[-1]) if args.quick else RATE_SCALES
    rows = []
    with tempfile.TemporaryDirectory(prefix="colocated-sweep-") as tmp:
        folder = Path(tmp)
        pools = folder / "gpupools.yaml"
        pools.write_text(POOL)
        for k, cv in enumerate(cvs):
            trace = bv.gamma_arrivals(base, cv, seed=k + 1)  # CV 1: exponential, Poisson arrivals
            name = f"cv2-{cv * cv:.1f}"
            bv.write_csv(trace, folder / "traces" / f"{name}.csv")
            log(f"trace {name}: {len(trace)} requests, inter-arrival CV² {bv.gap_scv(trace):.2f}")
            for scale in scales:
                for slo in SLO_SETS:
                    label = f"{name} x{scale:g} {slo[0]}"
                    manifest = bv.write_workload(folder, f"{name}-{slo[0]}-x{scale:g}".replace(" ", "-").replace(".", "-"),
                                                 f"{name}.csv", scale, slo, tensor_parallel_sizes=(1,),
                                                 disaggregation="never")
                    with progress.reporting(lambda msg, label=label: log(f"{label}: {msg}")):
                        case = bv.run_case(folder, manifest, name, slo, pools=pools)
                    fewest, attained = fewest_replicas(case)
                    rows.append((f"{cv * cv:.1f}", scale, slo[0], case, fewest, attained))
                    log(f"{label}: {case.row['gpus0']} GPUs planned, fewest meeting the target in replay: {fewest}")
    print(f"llmfleet bench/colocated_sweep.py{' --quick' if args.quick else ''}: one H100-SXM pool, {bv.MODEL} TP 1 "
          f"colocated; Azure conv. first {MINUTES:g} min, arrivals Poisson or Gamma (ServeGen CVs "
          f"{cv_client:.2f}, {cv_upper:.2f}); SLO sets: "
          + "; ".join(f"{n} = TTFT {a} / TPOT {b} at p{p}" for n, a, b, p in SLO_SETS))
    print(f"{'CV²':>4} {'scale':>5}  {'SLO':<12}{'c_a^2':>6}{'rps':>6}{'util':>6}{'GPUs':>5}{'att':>7}{'fewest':>7}"
          f"{'ver':>7}{'GPUs':>5}{'TTFT @sim':>10}{'sim':>7}{'ratio':>6}{'TPOT @sim':>10}{'sim':>7}{'ratio':>6}")
    ratios = {"ttft": [], "tpot": []}
    for cv2, scale, slo, case, fewest, attained in rows:
        g = case.groups[0] if len(case.groups) == 1 else None
        cells = []
        for metric in ("ttft", "tpot"):
            pred, sim = (g[f"{metric}_at_sim"], g[f"{metric}_sim"]) if g else (None, None)
            ratio = bv._ratio(sim, pred)
            if ratio is not None:
                ratios[metric].append(ratio)
            cells.append(f"{bv._f(None if pred is None else pred * 1e3, '.1f', 10)}"
                         f"{bv._f(None if sim is None else sim * 1e3, '.1f', 7)}{bv._f(ratio, '.2f', 6)}")
        print(f"{cv2:>4} {scale:>5g}  {slo:<12}{case.arrival_scv:>6.2f}{(g['rps_sim'] if g else float('nan')):>6.2f}"
              f"{(g['util'] if g else float('nan')):>6.2f}{case.row['gpus0']:>5}"
              f"{bv._f(None if attained is None else attained * 100, '.1f', 7)}{bv._f(fewest, 'd', 7)}"
              f"{bv._f(case.row['attv'] * 100, '.1f', 7)}{case.row['gpusv']:>5}"
              + "".join(cells))
    for metric, rs in ratios.items():
        if rs:
            within = sum(abs(r - 1) <= 0.25 for r in rs)
            print(f"{metric.upper()}: {within} of {len(rs)} within 25% of the replay; sim/model min {min(rs):.2f}, "
                  f"median {float(np.median(rs)):.2f}, max {max(rs):.2f}")
    over = [(c.row["gpus0"], f) for _, _, _, c, f, _ in rows if f]
    if over:
        print(f"GPUs planned / fewest whose replay meets the target: total {sum(a for a, _ in over)} / "
              f"{sum(b for _, b in over)} over {len(over)} cases; worst case {max(a / b for a, b in over):.1f}x")
    print("(ms; c_a^2: the burstiness the planner estimated; rps: the group's mean rate in the replay; util: the plan's "
          "Assignment.utilization at its planning rate; att: the plan's replayed attainment, %; fewest: the fewest "
          "replicas whose replay meets the target, '-' where the plan's own replay misses it; ver, GPUs: the attainment "
          "(%) and GPUs of the plan `--verify` returns (its default repair rounds); ratio: sim / model @sim)")
    print(f"\nwall time {time.perf_counter() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
