"""Plans on bursty, heavy-tailed traffic before and after verification (issue 14 item 7).

For each trace and SLO set, the fleet is planned with the library's public path (``build_problem``
on LLMWorkload manifests that point at the trace, then ``plan_and_verify`` with its default
number of repair rounds and ``best_round``, as ``llmfleet plan --verify`` does), and two tables
are printed:

1. per (trace, SLO set): the round-0 plan's predicted SLO attainment (``predicted_attainment``:
   over the trace's minute-by-minute load, as ``llmfleet plan`` prints it, and at the planned peak
   load), round-0 simulated SLO attainment, verified attainment (the round
   ``best_round`` picks), repair rounds run, round-0 and verified cost, the verified plan's status
   and the exit status ``llmfleet plan --verify`` would give (0 ok, 3 demand shed, 4 SLO missed in
   simulation, 5 both);
2. per group of each round-0 plan: the predicted TTFT / TPOT at the SLO percentile
   (``Assignment.ttft_s`` / ``tpot_s``, at the planning rate) and the model at the load the group
   saw in the replay ("@sim": each size bucket's replayed rate, swinging minute by minute as the
   trace does, the group's own load by the rate and length mix of the buckets it serves,
   ``group_levels``) against the same percentile over the simulated requests
   that group served (entry group for colocated and prefill groups, decode group for decode
   groups, as ``SimulationResult.groups`` counts them), and their ratio. The prefill groups of a
   plan share one queue at their replayed loads, as the replay's router pools their pods
   (``_prefill_queue``). The footer counts the ratios within 25%, for "@sim" and for the model
   held at the replay's mean load.

Traces (the developers' traces; every one is replayed at its manifest's ``rateScale``):

- ``azure``: the Azure LLM inference trace 2023, conversation service, its whole hour (58 min,
  19,366 requests; ``examples/traces/azure_llm_2023_conv.csv``, CC-BY-4.0), at rateScale 4;
- ``mooncake``: the Mooncake FAST'25 synthetic trace, all of its 17 minutes
  (``../shared/data/traces/mooncake_fast25_synthetic.jsonl``, Apache-2.0; Poisson arrivals,
  prompts of 15k tokens on average, up to 191k), at rateScale 0.25;
- ``<trace>-g<CV²>``: the same requests in the same order with the same lengths, their
  inter-arrival times redrawn from a Gamma distribution of squared coefficient of variation CV²
  at the same mean rate (the draw is rescaled to the original span). Two CVs, both from ServeGen's
  per-10-minute-window arrival fits (``../shared/data/traces/servegen_language_m_large``,
  Alibaba Bailian, Apache-2.0; columns ``window_start_s, rate_req_per_s, cv, arrival_family,
  param1, param2``; for a Gamma window param1 is the shape k and cv = 1/sqrt(k)):
  ``FIT_CLIENT``'s request-weighted median CV over its windows (1.93, CV² 3.7), and the
  request-weighted 80th percentile of the CV over the windows of all 162 clients (2.70, CV² 7.3)
  (``servegen_cvs`` computes both; the run prints them).

With ``--more-arrivals``, two more Azure variants, arrival processes the Gamma ones do not cover
(generalisation checks, not in the default run):

- ``azure-w<CV²>``: Weibull inter-arrival times at ``FIT_CLIENT``'s median CV (the other family
  ServeGen fits; ``weibull_arrivals``);
- ``azure-onoff``: a Markov-modulated on/off Poisson process (``ON_OFF``: 20 s on at 4x the off
  rate, 40 s off, on the trace's timeline; ``on_off_arrivals``), a load that swings within the
  planning rate's minute.

With ``--code-like``, the Azure timeline with the lengths of a code-completion service
(``code_like``): the same arrivals, prompts x ``CODE_PROMPT_SCALE`` and answers / ``CODE_ANSWER_DIVISOR``
(at least one token), alone and with the Gamma CV² 7.3 and on/off arrivals. Few-token answers are
a regime the conversation traces barely reach (generalisation check, not in the default run).

SLO sets (``SLOS``, ``LONG_SLOS``): on Azure, relaxed (TTFT 2 s, TPOT 100 ms) and tight (TTFT
500 ms, TPOT 40 ms), each at p90 and p99; on Mooncake, relaxed 5 s / 100 ms and tight 3 s / 40 ms
(shorter TTFTs are out of reach for its long prompts), plus 2 s / 100 ms at p90. Model
Llama-3.1-8B-Instruct (TP 1, 2 or 4), the example GPU pools and FleetPolicy.

    python bench/bursty_verify.py            # full run: 27 cases, a few minutes on 2 cores
    python bench/bursty_verify.py --quick    # under 2 minutes: 10 minutes of Azure, 4 cases
    python bench/bursty_verify.py --more-arrivals   # also the Weibull and on/off variants: 35 cases
    python bench/bursty_verify.py --code-like       # also code-completion lengths: 39 cases

Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from llmfleet import progress
from llmfleet.api.loader import load_fleet
from llmfleet.sim.engine import Simulation
from llmfleet.sim.scenario import from_plan
from llmfleet.sim.verify import best_round, plan_and_verify, workload_traces
from llmfleet.solver.milp import (_prefill_queue, as_planned, burst_dealing, group_levels, local_prefill_shares,
                                  predicted_attainment, predicted_latency, replica_load)
from llmfleet.solver.problem import build_problem, servable_buckets
from llmfleet.workload.demand import bucket_index
from llmfleet.workload.traces import load_trace

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
AZURE = EXAMPLES / "traces" / "azure_llm_2023_conv.csv"
DATA = ROOT.parent / "shared" / "data" / "traces"
MOONCAKE = DATA / "mooncake_fast25_synthetic.jsonl"
SERVEGEN = DATA / "servegen_language_m_large"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
AZURE_SCALE = 4.0
"""Azure's rateScale, as in examples/workloads.yaml: about 22 req/s, a fleet of a few GPUs"""
MOONCAKE_SCALE = 0.25
"""Mooncake's rateScale: its 3.9 req/s of 15k-token prompts is about 60k prompt tokens/s; a
quarter of it keeps the fleet to a few GPUs"""

FIT_CLIENT = 148
"""ServeGen client whose fits give the first bursty variant: the third-largest client by requests
over the 14 days (15.7M), and the largest whose typical window is clearly burstier than Poisson
(the two larger ones, 61 and 142, have a request-weighted median CV of about 1.06)"""

UPPER_QUANTILE = 0.8
"""the second variant's CV: this request-weighted quantile over every client's windows; one
request in five arrives in a 10-minute window at least this bursty"""

SLOS = (("relaxed p90", "2s", "100ms", 90), ("relaxed p99", "2s", "100ms", 99),
        ("tight p90", "500ms", "40ms", 90), ("tight p99", "500ms", "40ms", 99))
"""(name, TTFT, TPOT, percentile): the SLO sets of issue 14's measurements, for the Azure traces"""

LONG_SLOS = (("relaxed p90", "5s", "100ms", 90), ("relaxed p99", "5s", "100ms", 99),
             ("tight p90", "3s", "40ms", 90), ("tight p99", "3s", "40ms", 99),
             ("2s/100ms p90", "2s", "100ms", 90))
"""SLO sets for the Mooncake traces (prompts of 15k tokens on average, 16% above 32k): a TTFT of
500 ms is out of reach for 31% of its requests on every GPU here and 1 s for 15%, more than a p90
SLO allows, so relaxed is 5 s and tight 3 s, which some configuration meets for every size. The
last set (the issue's relaxed SLO at p90) is kept because it shows the 2 s case the planner
cannot plan although every size is servable (see the bench's report)."""

EXIT_SHED, EXIT_MISSED, EXIT_BOTH = 3, 4, 5
"""``llmfleet plan --verify`` exit statuses (README: demand shed, SLO missed in simulation, both)"""


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order]) / weights.sum()
    return float(values[order][np.searchsorted(cum, q)])


def servegen_cvs(folder: Path = SERVEGEN, client: int = FIT_CLIENT,
                 upper: float = UPPER_QUANTILE) -> tuple[float, float]:
    """(``client``'s request-weighted median CV, all clients' request-weighted ``upper`` quantile
    CV) of the inter-arrival times over ServeGen's fitted 10-minute windows with traffic (Gamma
    and Weibull fits alike; the file gives each window's CV). A window weighs its request count
    (rate x 600 s)."""
    frames = []
    for f in sorted(folder.glob("chunk-*-trace.csv")):
        d = pd.read_csv(f, header=None, names=["start_s", "rate", "cv", "family", "p1", "p2"])
        d["client"] = int(f.name.split("-")[1])
        frames.append(d)
    d = pd.concat(frames)
    d = d[d["rate"] > 0]
    cv, n = d["cv"].to_numpy(), d["rate"].to_numpy() * 600.0
    mine = (d["client"] == client).to_numpy()
    return _weighted_quantile(cv[mine], n[mine], 0.5), _weighted_quantile(cv, n, upper)


def with_gaps(trace: pd.DataFrame, gaps: np.ndarray) -> pd.DataFrame:
    """``trace``'s requests (order and lengths kept) at the arrivals of the inter-arrival times
    ``gaps`` (shape (n - 1,), any scale), rescaled so that the span, hence the mean rate, is the
    original's."""
    span = float(trace["arrival_s"].iloc[-1] - trace["arrival_s"].iloc[0])
    arrival = np.concatenate([[0.0], np.cumsum(gaps)])
    out = trace.copy()
    out["arrival_s"] = arrival * span / arrival[-1]
    return out


def gamma_arrivals(trace: pd.DataFrame, cv: float, seed: int) -> pd.DataFrame:
    """``trace`` with its inter-arrival times redrawn from Gamma(k = 1/CV², mean = span/(n-1)),
    then rescaled so the span (hence the mean rate) is the original's (``with_gaps``). Order and
    lengths kept."""
    rng = np.random.default_rng(seed)
    n = len(trace)
    span = float(trace["arrival_s"].iloc[-1] - trace["arrival_s"].iloc[0])
    scv = cv * cv
    return with_gaps(trace, rng.gamma(1.0 / scv, span / (n - 1) * scv, n - 1))


def weibull_arrivals(trace: pd.DataFrame, cv: float, seed: int) -> pd.DataFrame:
    """``trace`` with its inter-arrival times redrawn from a Weibull distribution of coefficient of
    variation ``cv`` (ServeGen fits a Weibull to 41% of its windows: a heavier tail of long gaps
    than a Gamma of the same CV), rescaled to the trace's span (``with_gaps``). The shape k solves
    Γ(1 + 2/k) / Γ(1 + 1/k)² - 1 = cv²."""
    from scipy import optimize, special
    scv = cv * cv
    k = optimize.brentq(lambda k: special.gamma(1 + 2 / k) / special.gamma(1 + 1 / k) ** 2 - 1 - scv, 0.05, 50.0)
    return with_gaps(trace, np.random.default_rng(seed).weibull(k, len(trace) - 1))


ON_OFF = (20.0, 40.0, 4.0)
"""(mean on period s, mean off period s, on rate over off rate) of ``on_off_arrivals``, on the
trace's own timeline (at Azure's rateScale 4: 5 s on, 10 s off): a load that swings within the
minute the planning rate is measured over, unlike any renewal process"""


def on_off_arrivals(trace: pd.DataFrame, seed: int, on_off: tuple[float, float, float] = ON_OFF) -> pd.DataFrame:
    """``trace``'s requests (order and lengths kept) at the arrival times of a Markov-modulated
    Poisson process with two states (exponential on and off periods, ``ON_OFF``), scaled to the
    trace's span (so its mean rate): the n arrivals of a Poisson process whose intensity is the
    on/off path, drawn as sorted uniforms over the intensity's integral."""
    on_s, off_s, ratio = on_off
    rng = np.random.default_rng(seed)
    n, span = len(trace), float(trace["arrival_s"].iloc[-1] - trace["arrival_s"].iloc[0])
    periods = int(2 * span / (on_s + off_s)) + 10
    edges = np.cumsum(np.concatenate([[0.0], rng.exponential(np.tile([on_s, off_s], periods))]))
    rates = np.tile([ratio, 1.0], periods)
    work = np.concatenate([[0.0], np.cumsum(rates * np.diff(edges))])
    u = np.sort(rng.uniform(0.0, work[-1] * span / edges[-1], n))
    k = np.searchsorted(work, u, side="right") - 1
    arrival = edges[k] + (u - work[k]) / rates[k]
    out = trace.copy()
    out["arrival_s"] = (arrival - arrival[0]) * span / (arrival[-1] - arrival[0])
    return out


CODE_PROMPT_SCALE = 1.5
CODE_ANSWER_DIVISOR = 10.0
"""``code_like``'s length transform: the Azure LLM inference trace 2023's code service has a
median prompt of about 1,500 tokens and a median answer of 13, against 1,020 and 129 for its
conversation service (Patel et al., "Splitwise", ISCA 2024, the traces' characterisation)"""


def code_like(trace: pd.DataFrame) -> pd.DataFrame:
    """``trace``'s arrivals with code-completion lengths: prompts x ``CODE_PROMPT_SCALE``, answers
    / ``CODE_ANSWER_DIVISOR`` rounded, at least one token."""
    out = trace.copy()
    out["input_tokens"] = (out["input_tokens"] * CODE_PROMPT_SCALE).round().astype(int)
    out["output_tokens"] = np.maximum((out["output_tokens"] / CODE_ANSWER_DIVISOR).round(), 1).astype(int)
    return out


def gap_scv(trace: pd.DataFrame) -> float:
    """Measured squared CV of a trace's inter-arrival times."""
    g = np.diff(trace["arrival_s"].to_numpy())
    return float(g.var() / g.mean() ** 2)


def write_csv(trace: pd.DataFrame, path: Path) -> None:
    """In ``load_trace``'s ``csv`` format: ``timestamp`` (s), ``input_tokens``, ``output_tokens``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"timestamp": trace["arrival_s"].round(6), "input_tokens": trace["input_tokens"],
                  "output_tokens": trace["output_tokens"]}).to_csv(path, index=False)


def write_workload(folder: Path, name: str, trace_file: str, rate_scale: float, slo: tuple,
                   tensor_parallel_sizes: tuple[int, ...] = (1, 2, 4), disaggregation: str = "auto") -> Path:
    """An LLMWorkload manifest in ``folder`` replaying ``traces/<trace_file>`` at ``rate_scale``
    with the SLO set ``slo`` (``SLOS``); ``disaggregation``: ``spec.serving.disaggregation``."""
    _, ttft, tpot, pct = slo
    path = folder / f"{name}.yaml"
    path.write_text(f"""apiVersion: llmfleet.dev/v1alpha1
kind: LLMWorkload
metadata:
  name: {name}
  namespace: default
spec:
  model: {MODEL}
  traffic:
    trace:
      path: traces/{trace_file}
      format: csv
      rateScale: {rate_scale:g}
    peakQuantile: 0.9
    rateWindowSeconds: 60
  slo:
    ttft: {ttft}
    tpot: {tpot}
    percentile: {pct}
  priority: standard
  serving:
    tensorParallelSizes: [{", ".join(str(t) for t in tensor_parallel_sizes)}]
    disaggregation: {disaggregation}
    minReplicas: 1
""")
    return path


@dataclass
class Case:
    trace: str
    slo: str
    servable: float
    arrival_scv: float
    row: dict
    groups: list[dict]
    plan: object = None
    """the round-0 plan (``Plan``)"""
    problem: object = None
    """the ``FleetProblem`` it was planned from"""
    requests: object = None
    """the workload's requests as replayed (``workload_traces``)"""
    replay: object = None
    """the round-0 plan's replay (``Simulation``, run; None when the plan gives the workload no
    group): its ``rq`` holds each request's latencies, groups and entry pod"""
    loads: list = dataclasses.field(default_factory=list)
    """per group of the replay: (configuration as planned, κ-masked replayed rate per bucket
    (req/s, shape (S,)), load as the MILP counts it), what the "@sim" read-out was given"""


def _pct_at(values: np.ndarray, pct: float) -> float:
    """Percentile of ``values``; an unfinished request (nan) counts as infinitely late."""
    if len(values) == 0:
        return float("nan")
    return float(np.percentile(np.where(np.isnan(values), np.inf, values), pct))


def group_latencies(sim: Simulation, pct: float) -> list[tuple[float, float, int, float]]:
    """Per group of ``sim``'s workload: (TTFT s, TPOT s) at ``pct`` over the requests it served,
    their count and their rate over the replay (req/s). Membership as ``SimulationResult.groups``:
    the decode group for decode groups, the entry group otherwise. TPOT over requests of more than one output token."""
    rq = sim.rq
    span_s = float(rq.arrival[-1] - rq.arrival[0]) or 1.0
    ttft = rq.first - rq.arrival
    tpot = (rq.finish - rq.first) / np.maximum(rq.out - 1, 1)
    out = []
    for gi, g in enumerate(sim.w.groups):
        mine = (rq.decode_group == gi) if g.role == "decode" else (rq.entry_group == gi)
        out.append((_pct_at(ttft[mine], pct), _pct_at(tpot[mine & (rq.out > 1)], pct), int(mine.sum()),
                    float(mine.sum()) / span_s))
    return out


def replayed_bucket_rps(sim: Simulation, w) -> list[np.ndarray]:
    """Per group of ``sim``'s workload, the rate of each of ``w``'s size buckets it served over
    the replay, req/s, shape (S,): membership as ``group_latencies``."""
    rq = sim.rq
    span_s = float(rq.arrival[-1] - rq.arrival[0]) or 1.0
    i, j = bucket_index(rq.inp, rq.out)
    cells = {tuple(ix): b for b, ix in enumerate(np.argwhere(w.demand.share > 0))}
    bucket = np.array([cells.get((a, b), -1) for a, b in zip(i.tolist(), j.tolist())])
    out = []
    for gi, g in enumerate(sim.w.groups):
        mine = ((rq.decode_group == gi) if g.role == "decode" else (rq.entry_group == gi)) & (bucket >= 0)
        out.append(np.bincount(bucket[mine], minlength=len(w.share)).astype(float) / span_s)
    return out


def exit_status(plan, meets: bool) -> int:
    shed = plan.status in ("shortage", "infeasible")
    return EXIT_BOTH if shed and not meets else EXIT_SHED if shed else EXIT_MISSED if not meets else 0


def run_case(folder: Path, workload_file: Path, trace_name: str, slo: tuple,
             pools: Path = EXAMPLES / "gpupools.yaml") -> Case:
    """Plan, verify and read out one workload manifest (module docstring); ``pools``: the
    GPUPool manifests (default: the example pools)."""
    fleet = load_fleet([pools, EXAMPLES / "fleetpolicy.yaml", workload_file])
    fp = build_problem(fleet)
    w = fp.workloads[0]
    servable = float(w.share[servable_buckets(w.configs, len(w.share))].sum())
    traces, _ = workload_traces(fp, fleet)
    # the repair rounds lower the configurations' κ in place: the round-0 plan's groups are
    # predicted below with the κ they were planned with
    planned = {id(c): (c.capacity_rps.copy(), None if c.whole_capacity_rps is None else c.whole_capacity_rps.copy())
               for c in w.configs}
    t0 = time.perf_counter()
    rounds = plan_and_verify(fp, traces)  # the library's default number of repair rounds
    wall = time.perf_counter() - t0
    first, best = rounds[0], best_round(rounds)
    res0, resb = first.results.get(w.key), best.results.get(w.key)
    # the round-0 plan's prediction with the κ it was planned with (the repair rounds cut them in place)
    cut = {id(c): (c.capacity_rps, c.whole_capacity_rps) for c in w.configs}
    for c in w.configs:
        c.capacity_rps, c.whole_capacity_rps = planned[id(c)]
    attp_peak = predicted_attainment(fp, first.plan, over_period=False).get(w.key, float("nan"))
    attp = predicted_attainment(fp, first.plan).get(w.key, float("nan"))
    for c in w.configs:
        c.capacity_rps, c.whole_capacity_rps = cut[id(c)]
    row = {
        "att0": res0.attainment if res0 else float("nan"), "attv": resb.attainment if resb else float("nan"),
        "attp_peak": attp_peak, "attp": attp,
        "rounds": len(rounds) - 1, "chosen": rounds.index(best),
        "cost0": first.plan.cost_per_hour, "gpus0": first.plan.total_gpus,
        "costv": best.plan.cost_per_hour, "gpusv": best.plan.total_gpus,
        "status": best.plan.status, "exit": exit_status(best.plan, best.meets_targets), "wall": wall,
    }
    groups, sim = [], None
    sims = [sw for sw in from_plan(first.plan, fp) if sw.key == w.key and sw.groups]
    if sims:
        # the same replay as round 0 (same trace, seed 0), kept to read each request's latency
        sim = Simulation(sims[0], traces[w.key], seed=0)
        sim.run()
        pct = fleet.workloads[0].spec.slo.percentile
        mine = [a for a in first.plan.assignments if a.workload == w.key]
        replayed = replayed_bucket_rps(sim, w)
        index = {id(a): gi for gi, a in enumerate(mine)}  # each group's place in the replay's groups
        local = local_prefill_shares(mine, len(w.share))  # prompts a decode group prefills itself
        loads = []  # (planned configuration, κ-masked replayed rates, util) per group
        for gi, (a, g) in enumerate(zip(mine, sims[0].groups)):
            kappa, whole = planned[id(a.config)]
            # as the plan runs it (a prefill group's KV transfer to the plan's decode groups, ``as_planned``)
            config = dataclasses.replace(as_planned(w, a.config, mine, fp.params), capacity_rps=kappa,
                                         whole_capacity_rps=whole)
            bucket_rps = np.where(kappa > 0, replayed[gi], 0.0)
            # the load as the MILP counts it (a decode group's own prefills against its whole-request κ)
            loads.append((config, bucket_rps, replica_load(config, bucket_rps, g.replicas,
                                                           local if g.role == "decode" else None)))
        # the replay's router pools every prefill pod: the prefill groups share one queue
        queue = _prefill_queue(w, [(c, r, u, g.replicas) for (c, r, u), g in zip(loads, sims[0].groups)
                                   if g.role == "prefill"], fp.params)
        for gi, (a, g, (ttft, tpot, n, rps)) in enumerate(zip(mine, sims[0].groups, group_latencies(sim, pct))):
            # the model at the load the group saw in the replay (the plan's figure is at its
            # planning rate, the peak with headroom, and the router need not split the traffic
            # as planned): each bucket's replayed rate over its κ, so the ratio is the model's
            # error. Two loads: swinging minute by minute as the trace does (the group's own load,
            # ``group_levels``: the "@sim" column), and held at the replay's mean (the footer's second count)
            config, bucket_rps, util = loads[gi]
            served = bucket_rps.sum() > 0
            pooled = queue if g.role == "prefill" else None
            mine_local = local if g.role == "decode" else None
            # the pods a burst is dealt over and this pod's share of the stream, as the plan's
            # read-out deals it, at the replay's split
            pods, share = burst_dealing(a, mine, lambda h: float(np.sum(replayed[index[id(h)]])))
            at_sim = (predicted_latency(w, config, bucket_rps, util, fp.params,
                                        levels=group_levels(w, config, bucket_rps, mine_local),
                                        replicas=pods, queue=pooled, local_prefill=mine_local, pod_share=share)
                      if served else (None, None))
            at_mean = (predicted_latency(w, config, bucket_rps, min(util, 0.999), fp.params, replicas=pods,
                                         queue=pooled, local_prefill=mine_local, pod_share=share)
                       if served else (None, None))
            groups.append({"group": f"{g.replicas}x {g.name}", "requests": n, "util": a.utilization,
                           "rps_plan": a.rate_rps, "rps_sim": rps,
                           "ttft_pred": a.ttft_s, "ttft_sim": ttft, "tpot_pred": a.tpot_s, "tpot_sim": tpot,
                           "ttft_at_sim": at_sim[0], "tpot_at_sim": at_sim[1],
                           "ttft_at_mean": at_mean[0], "tpot_at_mean": at_mean[1]})
    burst = getattr(w, "burst", None)  # the planner's arrival burstiness estimate, where it makes one
    return Case(trace_name, slo[0], servable, getattr(burst, "arrival_scv", float("nan")), row, groups,
                first.plan, fp, traces[w.key], sim, loads if sims else [])


def _f(v, fmt: str, width: int) -> str:
    if v is None or (isinstance(v, float) and (math.isnan(v))):
        return f"{'-':>{width}}"
    if isinstance(v, float) and math.isinf(v):
        return f"{'inf':>{width}}"
    return f"{v:{fmt}}".rjust(width)


def _ratio(sim, pred) -> float | None:
    if pred is None or sim is None or pred <= 0 or sim != sim:
        return None
    return sim / pred


def print_tables(cases: list[Case]) -> None:
    print(f"{'trace':<14}{'SLO':<13}{'servable':>9}{'c_a^2':>7}{'pred pk':>8}{'pred':>8}{'att r0':>8}{'att ver':>8}"
          f"{'rounds':>7}{'pick':>5}"
          f"{'$/h r0':>9}{'GPU':>5}{'$/h ver':>9}{'GPU':>5}  {'status':<9}{'exit':>4}{'time s':>8}")
    for c in cases:
        r = c.row
        print(f"{c.trace:<14}{c.slo:<13}{c.servable:>9.1%}{c.arrival_scv:>7.2f}{_f(r['attp_peak'] * 100, '.1f', 8)}"
              f"{_f(r['attp'] * 100, '.1f', 8)}{_f(r['att0'] * 100, '.1f', 8)}"
              f"{_f(r['attv'] * 100, '.1f', 8)}{r['rounds']:>7}{r['chosen']:>5}{_f(r['cost0'], '.2f', 9)}"
              f"{r['gpus0']:>5}"
              f"{_f(r['costv'], '.2f', 9)}{r['gpusv']:>5}  {r['status']:<9}{r['exit']:>4}{r['wall']:>8.0f}")
    print()
    print("round-0 plan, per group: predicted (plan, at the planning rate; @sim: the model at the replay's rate) vs "
          "simulated latency at the SLO percentile; ratio = sim / pred@sim")
    print(f"{'trace':<14}{'SLO':<13}{'group':<28}{'reqs':>6}{'rps pl':>7}{'rps sim':>8}{'util':>6}"
          f"{'TTFT pred':>10}{'@sim':>8}{'TTFT sim':>10}{'ratio':>7}"
          f"{'TPOT pred':>10}{'@sim':>8}{'TPOT sim':>10}{'ratio':>7}")
    for c in cases:
        for g in c.groups:
            ms = lambda v: None if v is None else v * 1e3  # noqa: E731
            print(f"{c.trace:<14}{c.slo:<13}{g['group']:<28}{g['requests']:>6}{g['rps_plan']:>7.2f}{g['rps_sim']:>8.2f}"
                  f"{g['util']:>6.2f}"
                  f"{_f(ms(g['ttft_pred']), '.0f', 10)}{_f(ms(g['ttft_at_sim']), '.0f', 8)}{_f(ms(g['ttft_sim']), '.0f', 10)}"
                  f"{_f(_ratio(g['ttft_sim'], g['ttft_at_sim']), '.2f', 7)}"
                  f"{_f(ms(g['tpot_pred']), '.1f', 10)}{_f(ms(g['tpot_at_sim']), '.1f', 8)}{_f(ms(g['tpot_sim']), '.1f', 10)}"
                  f"{_f(_ratio(g['tpot_sim'], g['tpot_at_sim']), '.2f', 7)}")
    for label, at in (("the model at the replay's load, minute by minute (@sim)", "at_sim"),
                      ("the model at the replay's mean load", "at_mean")):
        counts = []
        for metric in ("ttft", "tpot"):
            within = [abs(r - 1) <= 0.25 for c in cases for g in c.groups
                      for r in [_ratio(g[f"{metric}_sim"], g[f"{metric}_{at}"])] if r is not None]
            counts.append((metric.upper(), sum(within), len(within)))
        print(f"within 25% of the replay, {label}: "
              + ", ".join(f"{m} {k} of {n}" for m, k, n in counts)
              + f"; together {sum(k for _, k, _ in counts)} of {sum(n for _, _, n in counts)}")
    print("(ms; rps pl: the rate the plan routes to the group (its planning rate, peak x headroom), rps sim: the "
          "group's mean rate in the replay; util: Assignment.utilization; '-': the plan predicts no such latency for "
          "the role, or the group served nothing)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="10 minutes of Azure and its burstiest variant, p90 SLOs, no Mooncake (under 2 min)")
    ap.add_argument("--minutes", type=float, default=60.0, help="minutes of the Azure trace to replay (default: all)")
    ap.add_argument("--more-arrivals", action="store_true",
                    help="also Azure with Weibull inter-arrivals at the client's CV and with on/off modulated "
                         "arrivals (module docstring)")
    ap.add_argument("--code-like", action="store_true",
                    help="also the Azure arrivals with code-completion lengths, alone, with Gamma CV² 7.3 gaps and "
                         "on/off modulated (module docstring)")
    args = ap.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    t_start = time.perf_counter()

    cv_client, cv_upper = servegen_cvs()
    log(f"ServeGen fits: client {FIT_CLIENT} request-weighted median CV {cv_client:.2f} (CV² {cv_client**2:.1f}); "
        f"all clients' request-weighted p{UPPER_QUANTILE * 100:g} CV {cv_upper:.2f} (CV² {cv_upper**2:.1f})")
    azure = load_trace(AZURE, "azure")
    minutes = 10.0 if args.quick else args.minutes
    bases = {"azure": (azure[azure["arrival_s"] < minutes * 60].reset_index(drop=True), AZURE_SCALE)}
    if not args.quick and MOONCAKE.is_file():
        bases["mooncake"] = (load_trace(MOONCAKE, "mooncake"), MOONCAKE_SCALE)
    traces = {}  # name -> (trace, rateScale, SLO sets)
    for name, (t, scale) in bases.items():
        slos = SLOS if name == "azure" else LONG_SLOS
        slos = slos[::2] if args.quick else slos
        traces[name] = (t, scale, slos)
        cvs = [cv_upper] if args.quick else [cv_client, cv_upper]
        for k, cv in enumerate(cvs):
            traces[f"{name}-g{cv * cv:.1f}"] = (gamma_arrivals(t, cv, seed=k + 1), scale, slos)
        if args.more_arrivals and name == "azure":
            traces[f"{name}-w{cv_client ** 2:.1f}"] = (weibull_arrivals(t, cv_client, seed=7), scale, slos)
            traces[f"{name}-onoff"] = (on_off_arrivals(t, seed=3), scale, slos)
        if args.code_like and name == "azure":
            code = code_like(t)
            traces["code"] = (code, scale, slos)
            traces[f"code-g{cv_upper ** 2:.1f}"] = (gamma_arrivals(code, cv_upper, seed=2), scale, slos)
            traces["code-onoff"] = (on_off_arrivals(code, seed=3), scale, slos)

    cases = []
    with tempfile.TemporaryDirectory(prefix="bursty-verify-") as tmp:
        folder = Path(tmp)
        for name, (t, scale, _) in traces.items():
            write_csv(t, folder / "traces" / f"{name}.csv")
            log(f"trace {name}: {len(t)} requests over {t['arrival_s'].iloc[-1] / 60:.1f} min at rateScale {scale:g}, "
                f"inter-arrival CV² {gap_scv(t):.2f}")
        total = sum(len(slos) for _, _, slos in traces.values())
        for name, (t, scale, slos) in traces.items():
            for slo in slos:
                label = f"[{len(cases) + 1}/{total}] {name} {slo[0]}"
                object_name = f"{name}-{slo[0]}".replace(" ", "-").replace(".", "-").replace("/", "-")
                wl = write_workload(folder, object_name, f"{name}.csv", scale, slo)
                with progress.reporting(lambda msg, label=label: log(f"{label}: {msg}")):
                    cases.append(run_case(folder, wl, name, slo))
                r = cases[-1].row
                log(f"{label}: attainment {r['att0']:.1%} -> {r['attv']:.1%} in {r['rounds']} repair rounds, "
                    f"exit {r['exit']} ({r['wall']:.0f}s)")
    flags = (" --quick" if args.quick else "") + (" --more-arrivals" if args.more_arrivals else "") + (
        " --code-like" if args.code_like else "")
    print(f"llmfleet bench/bursty_verify.py{flags}: Azure conv. first {minutes:g} min at "
          f"rateScale {AZURE_SCALE:g}"
          + (f"; Mooncake FAST'25 synthetic (17 min) at rateScale {MOONCAKE_SCALE:g}" if "mooncake" in bases else "")
          + f"; gN.N = Gamma inter-arrivals with CV² N.N (ServeGen: client {FIT_CLIENT} median CV {cv_client:.2f}, "
          f"all-client p{UPPER_QUANTILE * 100:g} CV {cv_upper:.2f})"
          + ("; wN.N = Weibull inter-arrivals at the client's CV; onoff = on/off modulated Poisson "
             f"({ON_OFF[0]:g} s on at {ON_OFF[2]:g}x, {ON_OFF[1]:g} s off, before rateScale)" if args.more_arrivals else "")
          + (f"; code = Azure's arrivals with prompts x {CODE_PROMPT_SCALE:g} and answers / {CODE_ANSWER_DIVISOR:g}"
             if args.code_like else "")
          + f"; model {MODEL}; example GPU pools")
    for label, sets in (("Azure", SLOS), ("Mooncake", LONG_SLOS)):
        print(f"SLO sets on {label}: " + "; ".join(f"{n} = TTFT {a} / TPOT {b} at p{p}" for n, a, b, p in sets))
    print("servable: share of requests some configuration serves within the SLO; c_a^2: the arrival burstiness the "
          "planner estimated; pred: the round-0 plan's predicted attainment as `llmfleet plan` prints it (over the "
          "trace's minute-by-minute load, ``predicted_attainment``), pred pk: the same with every request at the "
          "planned peak load (before); att: simulated SLO attainment (%); pick: round best_round chose")
    print()
    print_tables(cases)
    print(f"\nwall time {time.perf_counter() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
