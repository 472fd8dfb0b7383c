"""Solver scale: the fleet MILP at the sizes issue 15 names, with binding GPU availability.

Three measurements, each on reproducible synthetic fleets (fixed seed) that go through the same
path as ``llmfleet plan``: YAML manifests written to a temporary folder, ``api.loader.load_fleet``,
``solver.problem.build_problem`` (the capacity model, timed on its own) and ``solver.milp.solve``.
The time limit counts from reading the manifests, as in ``llmfleet plan``: the solve gets what the
capacity model left of it (``solver.milp.time_left_s``), so "build s" + "solve s" is what a
target is measured against.

(a) 50 workloads x 10 GPU pools x TP {1,2,4,8}, three priority tiers, pools too small for all
    demand, ``FleetPolicy spec.solver.timeLimitSeconds`` 10.
    Target: within 10 s, final gap <= 1%, tier order exact.
(b) 300 workloads, the same construction, time limit 60 s. Target: within 60 s. The process's peak
    resident memory (``resource.getrusage``) is reported after this size, the largest one run.
(c) 100 workloads: solve (the running plan, limit ``--first-limit``), raise one workload's
    request rate by 20%, re-plan at the default time limit (30 s) (capacity model and MILP; the
    capacity models are kept between the two as the operator keeps them, ``build_problem(cache=)``,
    so the re-plan models only the changed workload, and so is the memo of plans shown optimal
    alone, ``FleetProblem.alone_optima``), count the OTHER workloads whose groups
    (pool, TP, role, replicas) changed. Target: re-plan in under 5 s; ideally no other workload changes. A
    "(no change)" row first re-plans the same fleet unchanged: what it moves is the re-plan improving on
    a running plan its time limit stopped short (binding), not churn a change caused. Where the solver
    takes the running plan (``FleetProblem.current``), the re-plan is given the first plan.

How an instance is made (``fleet_documents``):
- models: a weighted mix of catalogue models (``llmfleet/catalog/models.py``), mostly 7-14B, some
  27-32B and MoE, about a quarter 70B-class and a few gpt-oss-120b;
- request lengths: the percentiles of three real traces in ``/work/shared/data/traces`` (Azure LLM
  inference 2023 conversations, CC-BY-4.0; arXiv summarization lengths from microsoft/vidur, MIT;
  Mooncake FAST'25 long-context, Apache-2.0), only where the model's context holds the p99;
- request rates: log-normal per size class (median 8 req/s for <= 14B, 4 for 20-35B, 2 above);
- SLOs: TTFT by length profile (chat 1-2 s, summarization 2-4 s, long context 10-20 s), TPOT
  50-150 ms, at p90 or p95; tiers gold / silver / bronze for about 20% / 30% / 50% of workloads;
- pools: ten catalogue GPU types at their catalogue list prices (``llmfleet/catalog/gpus.csv``).

Binding availability: the fleet is first planned with ample pools (1024 GPUs each) under a
generous time limit (``--sizing-limit``; that solve is reported as the "ample" row); then each pool
gets ``--scarcity`` (default 0.3) of the GPUs the ample plan used there, rounded down to whole
nodes, and at least one node. Whether that binds is checked, not assumed: the table shows the
share of demand shed per tier. (The full-service LP relaxation stays feasible even at a third of
the ample plan's GPUs, so it cannot tell whether demand fits.)

Tier order: a workload of a higher tier that sheds while a workload of a lower tier is served is a
candidate inversion. ``strict`` counts such (higher, lower) pairs as they stand; ``avoidable``
counts only those where the higher one's shed exceeds what no configuration could serve (SLO or
memory out of reach: ``problem.servable_buckets``) and the lower one runs on a pool the higher one
has a configuration on. A non-zero ``avoidable`` count is a strong sign that tier order broke (it
is not a proof: freeing a lower tier's GPUs might not form a group the higher tier can use).
``provable`` is a proof: the tiers whose shed the plan could lower by taking lower tiers' GPUs
(``provable_inversions``: the plan's replicas of the tier and above kept, the lower tiers' freed,
the greedy fills what is left for the tier, the model routes it and sheds less of the tier).
With ``--exact-tiers S``, each binding plan of (a) also gets an exact check, per tier that sheds
(``exact_tier_check``): the whole model solved for that tier's shed alone, with the higher tiers'
replicas held as planned, once with the lower tiers' replicas held too ("kept") and once with them
removed ("freed"), S seconds each. The tier's best shed with the lower tiers kept, against the
plan's, is what its own phase left on the table; the freed one against the kept one is what the
lower tiers' GPUs are worth to it: an inversion of at most (kept found - freed bound) req/s,
proven to exist only where the kept bound lies above the freed solution.
``shed beside free GPUs`` counts workloads with avoidable shed while a pool they have a
configuration on keeps at least that configuration's TP degree of GPUs unused (pool totals, not
node shapes): a plan that sheds there is not work-conserving, whatever the tiers.

    python bench/solver_scale.py            # full: (a) x3 seeds, (b) x1, (c) x3 changes
    python bench/solver_scale.py --quick    # (a) 10, (b) 30, (c) 20 workloads
    python bench/solver_scale.py --only a --seeds 1 --exact-tiers 60   # (a) and its exact tier check

Progress goes to stderr, the tables to stdout.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from llmfleet.api.loader import load_fleet
from llmfleet.catalog.models import resolve_model
from llmfleet.solver import milp
from llmfleet.solver.milp import solve, time_left_s
from llmfleet.solver.problem import FleetProblem, available_cpus, build_problem, servable_buckets

TRACES = Path("/work/shared/data/traces")
# the solver's source as imported, so that a run against uncommitted edits can be traced
SOLVER_SHA256 = hashlib.sha256(Path(milp.__file__).read_bytes()).hexdigest()[:12]

# (Hugging Face id, weight in the mix): popular open models of the catalogue
MODEL_MIX = [
    ("meta-llama/Llama-3.1-8B-Instruct", 0.22), ("Qwen/Qwen2.5-7B-Instruct", 0.07),
    ("mistralai/Mistral-7B-Instruct-v0.1", 0.05), ("Qwen/Qwen3-8B", 0.07), ("Qwen/Qwen3-14B", 0.05),
    ("google/gemma-3-27b-it", 0.05), ("Qwen/Qwen3-32B", 0.07), ("Qwen/Qwen3-30B-A3B", 0.05),
    ("openai/gpt-oss-20b", 0.05), ("mistralai/Mixtral-8x7B-v0.1", 0.03),
    ("meta-llama/Llama-3.1-70B-Instruct", 0.12), ("meta-llama/Llama-3.3-70B-Instruct", 0.05),
    ("Qwen/Qwen2.5-72B-Instruct", 0.04), ("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", 0.03),
    ("openai/gpt-oss-120b", 0.03),
]

# (pool name, catalogue GPU type, GPUs per node): AWS instance shapes (g5.12xlarge 4 A10G; g6,
# g6e, g7e, p4d, p4de, p5, p5en, p6-b200 .48xlarge/.24xlarge 8 GPUs); H100 PCIe servers of 4 cards
POOLS = [("a10g", "A10G", 4), ("l4", "L4", 8), ("l40s", "L40S", 8), ("rtx-pro-6000", "RTX-PRO-6000", 8),
         ("a100-40g", "A100-40G", 8), ("a100-80g", "A100-80G", 8), ("h100-pcie", "H100-PCIe", 4),
         ("h100-sxm", "H100-SXM", 8), ("h200", "H200", 8), ("b200", "B200", 8)]

TIERS = [("gold", 1_000_000, 0.2), ("silver", 100_000, 0.3), ("bronze", 1_000, 0.5)]
AMPLE_GPUS = 1024


def _pcts(values: np.ndarray) -> dict:
    p = np.percentile(values, [50, 90, 99])
    return {"p50": max(int(p[0]), 1), "p90": max(int(p[1]), 1), "p99": max(int(p[2]), 1)}


def length_profiles() -> dict[str, dict]:
    """Input and output token percentiles (p50/p90/p99) of three real traces, with the TTFT range
    (s) a user would ask of each: {profile: {"input": {...}, "output": {...}, "ttft_s": [...]}}."""
    out = {}
    rows = list(csv.DictReader(open(TRACES / "azure_llm_2023_conv.csv")))
    out["chat"] = {"input": _pcts(np.array([float(r["ContextTokens"]) for r in rows])),
                   "output": _pcts(np.array([float(r["GeneratedTokens"]) for r in rows])), "ttft_s": [1.0, 2.0]}
    a = np.loadtxt(TRACES / "arxiv_summarization_lengths_llama2tok.csv", delimiter=",", skiprows=1)
    out["summarize"] = {"input": _pcts(a[:, 0]), "output": _pcts(a[:, 1]), "ttft_s": [2.0, 4.0]}
    mc = [json.loads(line) for line in open(TRACES / "mooncake_fast25_synthetic.jsonl")]
    out["long"] = {"input": _pcts(np.array([r["input_length"] for r in mc])),
                   "output": _pcts(np.array([r["output_length"] for r in mc])), "ttft_s": [10.0, 20.0]}
    return out


def workload_specs(n: int, seed: int, profiles: dict) -> list[dict]:
    """``n`` LLMWorkload documents, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    ids = [m for m, _ in MODEL_MIX]
    weights = np.array([w for _, w in MODEL_MIX]) / sum(w for _, w in MODEL_MIX)
    tier_names = [t for t, _, _ in TIERS]
    tier_p = np.array([p for _, _, p in TIERS])
    docs = []
    for i in range(n):
        model_id = str(rng.choice(ids, p=weights))
        spec = resolve_model(model_id)
        kind = str(rng.choice(["chat", "summarize", "long"], p=[0.6, 0.3, 0.1]))
        prof = profiles[kind]
        if prof["input"]["p99"] + prof["output"]["p99"] > spec.max_context_tokens:
            kind, prof = "chat", profiles["chat"]
        size_b = spec.params_billion
        median = 8.0 if size_b <= 15 else 4.0 if size_b <= 35 else 2.0
        rate = float(np.clip(rng.lognormal(np.log(median), 0.8), 0.2, 60.0))
        docs.append({
            "apiVersion": "llmfleet.dev/v1alpha1", "kind": "LLMWorkload",
            "metadata": {"name": f"w{i:03d}", "namespace": "bench"},
            "spec": {
                "model": model_id,
                "traffic": {"requestRatePerSecond": round(rate, 3), "inputTokens": prof["input"],
                            "outputTokens": prof["output"]},
                "slo": {"ttft": f"{int(1000 * float(rng.choice(prof['ttft_s'])))}ms",
                        "tpot": f"{int(rng.choice([50, 100, 150]))}ms",
                        "percentile": float(rng.choice([90, 95]))},
                "priority": str(rng.choice(tier_names, p=tier_p)),
                "serving": {"tensorParallelSizes": [1, 2, 4, 8]},
            },
        })
    return docs


def fleet_documents(workloads: list[dict], max_gpus: dict[str, int], time_limit_s: float, gap: float) -> list[dict]:
    """Workloads plus the ten pools (``max_gpus`` per pool name) and the FleetPolicy."""
    pools = [{"apiVersion": "llmfleet.dev/v1alpha1", "kind": "GPUPool", "metadata": {"name": name},
              "spec": {"gpuType": gpu, "gpusPerNode": per_node, "maxGPUs": int(max_gpus[name])}}
             for name, gpu, per_node in POOLS]
    policy = {"apiVersion": "llmfleet.dev/v1alpha1", "kind": "FleetPolicy", "metadata": {"name": "default"},
              "spec": {"solver": {"timeLimitSeconds": time_limit_s, "relativeGap": gap},
                       "priorityTiers": [{"name": t, "value": v} for t, v, _ in TIERS]}}
    return [*workloads, *pools, policy]


def build(docs: list[dict], cache: dict | None = None, memo: tuple[set, dict] | None = None):
    """Load the manifests as the CLI does and build the MILP input; ``cache`` and ``memo``: kept
    between calls as the operator keeps them (each workload's capacity model reused while its
    inputs are unchanged; ``FleetProblem.alone_optima`` and ``alone_moves``, the plans shown
    optimal alone and the cheaper plans alone not yet made).
    As in ``llmfleet plan``, the time limit counts from reading the manifests: the problem's
    ``time_limit_s`` is what is left of it (``time_left_s``). Returns (problem, build seconds:
    reading the manifests and the capacity model)."""
    with tempfile.TemporaryDirectory(prefix="llmfleet-bench-") as d:
        path = Path(d) / "fleet.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        t0 = time.perf_counter()
        fp = build_problem(load_fleet([path]), cache=cache, workers=available_cpus())
        if memo is not None:
            fp.alone_optima, fp.alone_moves = memo
        fp.time_limit_s, overrun = time_left_s(fp.time_limit_s, t0)
        if overrun:
            log(f"note: {overrun}")
        return fp, time.perf_counter() - t0


def timed_solve(fp):
    t0 = time.perf_counter()
    plan = solve(fp)
    return plan, time.perf_counter() - t0


def pool_gpus(plan) -> Counter:
    c: Counter = Counter()
    for a in plan.assignments:
        c[a.pool] += a.gpus
    return c


def scarce_caps(plan, fraction: float) -> dict[str, int]:
    """Per pool: ``fraction`` of the GPUs ``plan`` used there, in whole nodes, at least one node."""
    used = pool_gpus(plan)
    return {name: max(per_node, int(used[name] * fraction) // per_node * per_node) for name, _, per_node in POOLS}


def tier_check(fp, plan, caps: dict[str, int] | None = None) -> dict:
    """Shed per tier, candidate tier-order inversions and shed beside free GPUs (module
    docstring); ``caps``: GPUs available per pool (None: ample, no free-GPU check)."""
    by_key = {w.key: w for w in fp.workloads}
    res = {r.workload: r for r in plan.workloads}
    tol = lambda r: 1e-3 * max(r.demand_rps, 1e-9) + 1e-6  # noqa: E731
    pools_of = {}
    for a in plan.assignments:
        pools_of.setdefault(a.workload, set()).add(a.pool)
    avoidable = {}
    for k, r in res.items():
        w = by_key[k]
        ok = servable_buckets(w.configs, len(w.share)) if w.configs else np.zeros(len(w.share), dtype=bool)
        avoidable[k] = max(r.shed_rps - w.rate_rps * float(w.share[~ok].sum()), 0.0)
    free = {p: caps[p] - n for p, n in pool_gpus(plan).items()} if caps else {}
    if caps:
        free.update({p: n for p, n in caps.items() if p not in free})
    idle = [k for k, r in res.items() if avoidable[k] > tol(r)
            and any(free.get(c.pool.name, 0) >= c.tp for c in by_key[k].configs)]
    strict, avoid, examples = 0, 0, []
    for hk, h in res.items():
        if h.shed_rps <= tol(h):
            continue
        hw = by_key[hk]
        usable = {c.pool.name for c in hw.configs}
        for lk, lo in res.items():
            if by_key[lk].tier_value >= hw.tier_value or lo.served_rps <= tol(lo):
                continue
            strict += 1
            if avoidable[hk] > tol(h) and pools_of.get(lk, set()) & usable:
                avoid += 1
                if len(examples) < 3:
                    examples.append(f"{hk}({h.tier}) sheds {avoidable[hk]:.2f}/{h.demand_rps:.2f} req/s while "
                                    f"{lk}({lo.tier}) is served on {sorted(pools_of[lk] & usable)}")
    provable = provable_inversions(fp, plan) if strict and caps else 0
    shed_pct = {}
    for t, _, _ in TIERS:
        rs = [r for r in res.values() if r.tier == t]
        demand = sum(r.demand_rps for r in rs)
        shed_pct[t] = 100.0 * sum(r.shed_rps for r in rs) / demand if demand > 0 else 0.0
    return {"strict": strict, "avoidable": avoid, "provable": provable, "examples": examples, "shed_pct": shed_pct,
            "idle": len(idle)}


def plan_counts(fp, plan) -> Counter | None:
    """The plan's replicas per (workload index, configuration index) of ``fp``; None where the
    plan has a configuration ``fp`` lacks (a pruned problem's), which no check can then hold."""
    from llmfleet.solver.churn import config_key

    index = {config_key(w.key, c): (wi, ci) for wi, w in enumerate(fp.workloads) for ci, c in enumerate(w.configs)}
    counts: Counter = Counter()
    for a in plan.assignments:
        key = index.get(config_key(a.workload, a.config))
        if key is None:
            return None
        counts[key] += a.replicas
    return counts


def provable_inversions(fp, plan) -> int:
    """Tiers whose shed a plan provably could lower by taking GPUs from lower tiers only: the
    plan's replicas of this tier and above kept, every lower tier's removed, the greedy
    (``solver.greedy``) adds replicas for this tier in what is left, and the model's best routing
    for those replicas (``milp._complete``) sheds less of this tier than the plan does. Sound
    (such a plan exists and serves every higher tier as before); not complete (the greedy may miss
    a better packing)."""
    from llmfleet.solver.highs import HighsModel

    fp = dataclasses.replace(fp, time_limit_s=60.0)
    m = milp._build(fp, allow_shed=True)
    model = HighsModel(m.prob)
    counts = plan_counts(fp, plan)
    if counts is None:
        return 0
    shed = {r.workload: r.shed_rps for r in plan.workloads}
    found = 0
    for value in sorted({w.tier_value for w in fp.workloads}, reverse=True):
        mine = [wi for wi, w in enumerate(fp.workloads) if w.tier_value == value]
        before = sum(shed[fp.workloads[wi].key] for wi in mine)
        if before <= 1e-6:
            continue
        kept = {k: r for k, r in counts.items() if fp.workloads[k[0]].tier_value >= value}
        trial = milp._greedy(fp, m, fixed=kept, tiers={value})
        if trial == kept:
            continue
        values = milp._complete(fp, m, model, trial, time.perf_counter() + 60.0)
        if values is None:
            continue
        after = sum(model.value(milp._shed_rps(fp, m, wi), values) for wi in mine)
        if after < before - 1e-3 * max(before, 1.0):
            found += 1
    return found


def exact_tier_check(fp, plan, limit_s: float) -> list[dict]:
    """Per tier whose workloads shed in ``plan`` (highest first): {"tier", "plan" (its shed,
    req/s), "kept", "freed"}, each of the last two (best shed found, HiGHS's proven bound, status)
    of one solve of the whole fleet model for that tier's shed alone within ``limit_s``, the higher
    tiers' replica counts held as planned and the lower tiers' held as planned ("kept") or at 0
    ("freed"), from the plan's counts (routed again, ``milp._complete``). Module docstring: what
    each comparison proves."""
    from llmfleet.solver.highs import HighsModel

    counts = plan_counts(fp, plan)
    if counts is None:
        return []
    m = milp._build(fp, allow_shed=True)
    model = HighsModel(m.prob)
    keys, cols = milp._count_index(m, model)
    shed = {r.workload: r.shed_rps for r in plan.workloads}
    lower0, upper0 = model.bounds(cols)
    out = []
    for value in sorted({w.tier_value for w in fp.workloads}, reverse=True):
        mine = [wi for wi, w in enumerate(fp.workloads) if w.tier_value == value]
        before = sum(shed[fp.workloads[wi].key] for wi in mine)
        if before <= 1e-6:
            continue
        row = {"tier": fp.workloads[mine[0]].tier, "plan": before}
        for lower in ("kept", "freed"):
            lo, hi = lower0.copy(), upper0.copy()
            start = {}
            for j, key in enumerate(keys):
                tier = fp.workloads[key[0]].tier_value
                if tier > value or (tier < value and lower == "kept"):
                    lo[j] = hi[j] = counts.get(key, 0)
                elif tier < value:
                    lo[j] = hi[j] = 0
                if counts.get(key) and (tier >= value or lower == "kept"):
                    start[key] = counts[key]
            values = milp._complete(fp, m, model, start, time.perf_counter() + limit_s)
            model.set_bounds(cols, lo, hi)
            model.set_objective(sum((milp._shed_rps(fp, m, wi) for wi in mine), 0))
            res = model.solve(limit_s, 1e-4, values, label=f"exact check, {row['tier']}, lower tiers {lower}",
                              unit="req/s shed")
            model.set_bounds(cols, lower0, upper0)
            row[lower] = (res.objective, res.dual_bound, res.status)
        out.append(row)
    return out


def _solved(v: tuple) -> str:
    """One ``exact_tier_check`` solve as "best (bound b, status)"."""
    best, bound, status = v
    return (f"{best:.2f}" if best is not None else "none") + (
        f" (bound {bound:.2f}, {status})" if bound is not None else f" ({status})")


def groups_by_workload(plan) -> dict[str, Counter]:
    """Per workload: replicas per (pool, TP, role, power cap), i.e. per Deployment."""
    out: dict[str, Counter] = {}
    for a in plan.assignments:
        key = (a.pool, a.tp, a.role, getattr(a.config, "cap_watts", None))
        out.setdefault(a.workload, Counter())[key] += a.replicas
    return out


def set_running(fp, plan) -> None:
    """Give ``fp`` the running ``plan`` as ``llmfleet plan --current`` reads it from the plan
    document: replicas per group (``FleetProblem.current``), the P/D thresholds, the κ factors
    for the endpoint picker and the shortfall per workload where the measured version of the solver
    takes them."""
    from llmfleet.solver import churn  # present only where the solver re-plans incrementally
    doc = plan.to_dict()
    fp.current = churn.current_from_document(doc)
    if hasattr(churn, "pd_thresholds_from_document"):
        fp.current_pd_thresholds = churn.pd_thresholds_from_document(doc)
    if hasattr(churn, "picker_factors_from_document"):
        fp.current_capacity_factors = churn.picker_factors_from_document(doc)
    if hasattr(churn, "shortfall_from_document"):
        fp.current_shortfall = churn.shortfall_from_document(doc)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fmt_gap(g) -> str:
    return "-" if g is None else f"{100 * g:.2f}%"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    sys.stdout.flush()


@dataclasses.dataclass
class Run:
    """One solve of one fleet: what the tables print."""

    avail: str
    n: int
    seed: int
    limit_s: float
    build_s: float
    solve_s: float
    plan: object
    fp: object
    caps: dict[str, int] | None

    @property
    def configs(self) -> int:
        return sum(len(w.configs) for w in self.fp.workloads)


def ample_caps() -> dict[str, int]:
    return {p: AMPLE_GPUS for p, _, _ in POOLS}


def solve_fleet(workloads: list[dict], caps: dict[str, int], limit_s: float, args, label: str,
                avail: str, n: int, seed: int, cache: dict | None = None,
                memo: tuple[set, dict] | None = None) -> Run:
    log(f"{label}: building ({avail}, {sum(caps.values())} GPUs)")
    fp, build_s = build(fleet_documents(workloads, caps, limit_s, args.gap), cache, memo)
    log(f"{label}: built in {build_s:.1f} s ({sum(len(w.configs) for w in fp.workloads)} configs); "
        f"solving ({avail}, limit {limit_s:g} s)")
    plan, solve_s = timed_solve(fp)
    log(f"{label}: {avail} {plan.status} in {solve_s:.1f} s, gap {fmt_gap(plan.gap)}, {plan.total_gpus} GPUs, "
        f"${plan.cost_per_hour or 0:.2f}/h ({plan.solver})")
    return Run(avail, n, seed, limit_s, build_s, solve_s, plan, fp, None if avail == "ample" else caps)


SCALE_HEADER = ["avail", "workloads", "seed", "configs", "GPUs avail", "GPUs used", "build s", "solve s",
                "build+solve s", "limit s", "status", "gap", "shed % gold/silver/bronze", "inversions strict/avoidable/provable",
                "shed beside free GPUs"]


def summarize(r: Run, exact_s: float | None = None) -> dict:
    """What the tables need of one run, so that its problem and plan can be released before the
    next build (the peak RSS then reflects one planner's problem, not two); ``exact_s``: the time
    limit of ``exact_tier_check``'s solves, for a binding run (None: not run)."""
    tc = tier_check(r.fp, r.plan, r.caps)
    if exact_s and r.caps:
        tc["exact"] = exact_tier_check(r.fp, r.plan, exact_s)
    shed = "/".join(f"{tc['shed_pct'][t]:.1f}" for t, _, _ in TIERS)
    row = [r.avail, str(r.n), str(r.seed), str(r.configs),
           str(sum(r.caps.values())) if r.caps else f"{AMPLE_GPUS}/pool", str(r.plan.total_gpus),
           f"{r.build_s:.2f}", f"{r.solve_s:.2f}", f"{r.build_s + r.solve_s:.2f}", f"{r.limit_s:g}", r.plan.status, fmt_gap(r.plan.gap), shed,
           f"{tc['strict']}/{tc['avoidable']}/{tc['provable']}", str(tc["idle"]) if r.caps else "-"]
    return {"row": row, "avail": r.avail, "seed": r.seed, "solve_s": r.solve_s, "build_s": r.build_s,
            "status": r.plan.status, "gap": r.plan.gap, "check": tc}


def scale_case(n: int, seed: int, limit_s: float, args, profiles) -> list[dict]:
    """One fleet of ``n`` workloads: the ample-availability solve (generous limit), then the
    binding one at ``limit_s``. Returns ``summarize`` of each."""
    workloads = workload_specs(n, seed, profiles)
    label = f"n={n} seed={seed}"
    ample = solve_fleet(workloads, ample_caps(), args.sizing_limit, args, label, "ample", n, seed)
    caps = scarce_caps(ample.plan, args.scarcity)
    out = [summarize(ample)]
    del ample
    out.append(summarize(solve_fleet(workloads, caps, limit_s, args, label, "binding", n, seed),
                         args.exact_tiers))
    return out


def run_scale(title: str, n: int, seeds: int, limit_s: float, args, profiles) -> None:
    rows, runs = [], []
    for seed in range(seeds):
        try:
            recs = scale_case(n, seed, limit_s, args, profiles)
        except Exception as err:  # report and go on: the table says which instance failed
            traceback.print_exc()
            rows.append(["-", str(n), str(seed), *["-"] * 7, f"ERROR {type(err).__name__}: {err}"[:200], "-", "-", "-", "-"])
            continue
        rows += [r["row"] for r in recs]
        runs += recs
    print_table(title, SCALE_HEADER, rows)
    binding = [r for r in runs if r["avail"] == "binding"]
    if binding:
        times = [r["solve_s"] for r in binding]
        totals = [r["build_s"] + r["solve_s"] for r in binding]
        gaps = [r["gap"] for r in binding if r["gap"] is not None]
        print(f"binding, {len(binding)} run(s): build + solve s median {statistics.median(totals):.2f}, max "
              f"{max(totals):.2f} (limit {limit_s:g}); solve s median {statistics.median(times):.2f}; "
              f"build s median {statistics.median(r['build_s'] for r in binding):.2f}; "
              f"gap max {fmt_gap(max(gaps)) if gaps else '-'}; statuses {dict(Counter(r['status'] for r in binding))}; "
              f"avoidable inversions {sum(r['check']['avoidable'] for r in binding)} "
              f"(provable: {sum(r['check']['provable'] for r in binding)} tier(s)); "
              f"workloads shed beside free GPUs {sum(r['check']['idle'] for r in binding)}")
        for r in binding:
            for e in r["check"]["examples"]:
                print(f"  seed {r['seed']}: {e}")
        for r in binding:
            for t in r["check"].get("exact", []):
                kept, freed = t["kept"], t["freed"]
                worth = (f"; the lower tiers' GPUs are worth at most {kept[0] - freed[1]:.2f} req/s of it"
                         if kept[0] is not None and freed[1] is not None else "")
                print(f"  seed {r['seed']} exact check, {t['tier']}: the plan sheds {t['plan']:.2f} req/s; best "
                      f"found with the lower tiers' replicas kept {_solved(kept)}, freed {_solved(freed)}{worth}")


def changed_rate(workloads: list[dict], i: int, factor: float) -> list[dict]:
    """A copy of ``workloads`` with workload ``i``'s request rate times ``factor``."""
    out = json.loads(json.dumps(workloads))
    traffic = out[i]["spec"]["traffic"]
    traffic["requestRatePerSecond"] = round(traffic["requestRatePerSecond"] * factor, 3)
    return out


def churn(plan0, plan1, changed_key: str) -> tuple[int, int, list[str]]:
    """Replicas started and stopped between two plans, and the OTHER workloads whose groups changed."""
    g0, g1 = groups_by_workload(plan0), groups_by_workload(plan1)
    started = stopped = 0
    others = []
    for w in sorted(set(g0) | set(g1)):
        a, b = g0.get(w, Counter()), g1.get(w, Counter())
        started += sum((b - a).values())
        stopped += sum((a - b).values())
        if w != changed_key and a != b:
            others.append(w)
    return started, stopped, others


def run_change(n: int, changes: int, limit_s: float, args, profiles) -> None:
    """(c): one workload's rate +20% among ``n``, against the ample and the binding fleet."""
    workloads = workload_specs(n, args.seed_change, profiles)
    picks = [int(i) for i in np.random.default_rng(1000 + args.seed_change).choice(n, size=min(changes, n), replace=False)]
    incremental = "current" in {f.name for f in dataclasses.fields(FleetProblem)}
    rows = []
    first = None
    for avail in ("ample", "binding"):
        try:
            caps = ample_caps() if avail == "ample" else scarce_caps(first.plan, args.scarcity)
            cache: dict = {}  # the operator's: a re-plan re-models only the changed workload
            memo: tuple[set, dict] = (set(), {})  # the operator's: a re-plan solves alone only what no check saw
            first = solve_fleet(workloads, caps, args.first_limit, args, f"(c) n={n} running plan", avail, n,
                                args.seed_change, cache, memo)
        except Exception as err:
            traceback.print_exc()
            rows.append([avail, str(n), "-", "-", "-", "-", f"ERROR {type(err).__name__}: {err}"[:200], *["-"] * 5])
            break
        rows.append([avail, str(n), "(running plan)", f"{first.build_s:.2f}", f"{first.solve_s:.2f}",
                     f"{first.build_s + first.solve_s:.2f}", first.plan.status, fmt_gap(first.plan.gap),
                     f"{first.plan.cost_per_hour or 0:.2f}", "-", "-", f"limit {args.first_limit:g} s"])
        # a control: the same fleet re-planned with nothing changed. Whatever it moves is the
        # re-plan improving on a running plan that stopped at its time limit, not churn that a
        # change caused (compare its "other workloads changed" with the rows below)
        for i in [None] + picks:
            key = "(no change)" if i is None else f"bench/{workloads[i]['metadata']['name']}"
            what = key if i is None else f"{key} rate +20%"
            try:
                log(f"(c) {avail}: {what}: building")
                docs = workloads if i is None else changed_rate(workloads, i, 1.2)
                fp1, build1 = build(fleet_documents(docs, caps, limit_s, args.gap), cache, memo)
                if incremental:
                    set_running(fp1, first.plan)
                plan1, solve1 = timed_solve(fp1)
            except Exception as err:
                traceback.print_exc()
                rows.append([avail, str(n), key, "-", "-", "-", f"ERROR {type(err).__name__}: {err}"[:200], *["-"] * 5])
                continue
            started, stopped, others = churn(first.plan, plan1, key)
            log(f"(c) {avail}: {what}: {plan1.status} in {solve1:.1f} s, {len(others)} other workloads changed")
            rows.append([avail, str(n), key, f"{build1:.2f}", f"{solve1:.2f}", f"{build1 + solve1:.2f}", plan1.status,
                         fmt_gap(plan1.gap), f"{first.plan.cost_per_hour or 0:.2f} -> {plan1.cost_per_hour or 0:.2f}",
                         f"{started}/{stopped}", str(len(others)), ", ".join(others[:4]) + (" ..." if len(others) > 4 else "")])
    print_table(f"(c) one workload's rate +20% among {n} workloads, re-plan at time limit {limit_s:g} s "
                f"({'given the running plan as FleetProblem.current' if incremental else 'from scratch: no FleetProblem.current'}); "
                "target: re-plan < 5 s, no other workload changed",
                ["avail", "workloads", "changed", "build s", "solve s", "total s", "status", "gap", "cost $/h",
                 "replicas started/stopped", "other workloads changed", "which"], rows)
    for avail in ("ample", "binding"):
        rs = [r for r in rows if r[0] == avail and r[2].startswith("bench/") and r[4] != "-"]
        control = [r for r in rows if r[0] == avail and r[2] == "(no change)" and r[4] != "-"]
        if rs:
            print(f"{avail}: re-solve s median {statistics.median(float(r[4]) for r in rs):.2f}, re-plan (build + "
                  f"solve) s median {statistics.median(float(r[5]) for r in rs):.2f}, other workloads changed median "
                  f"{statistics.median(int(r[10]) for r in rs):g} (max {max(int(r[10]) for r in rs)})"
                  + (f"; with no change at all {control[0][10]}" if control else ""))


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def code_version() -> str:
    """The commit measured, and whether the solver's files differ from it (read-only git)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "llmfleet"], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    changed = [line[3:] for line in dirty if line.strip()]
    return (f"{head or 'unknown'}" + (f", uncommitted changes in {', '.join(changed)}" if changed else ", clean")
            + f"; sha256 of solver/milp.py as imported {SOLVER_SHA256}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: (a) 10, (b) 30, (c) 20 workloads, one run each")
    ap.add_argument("--seeds", type=int, default=None, help="fleets per size for (a) (default 3; --quick 1)")
    ap.add_argument("--seeds-large", type=int, default=1, help="fleets for (b) (default 1)")
    ap.add_argument("--changes", type=int, default=None, help="workloads changed one at a time in (c) (default 3; --quick 1)")
    ap.add_argument("--seed-change", type=int, default=0, help="seed of the fleet in (c)")
    ap.add_argument("--scarcity", type=float, default=0.3, help="share of the ample plan's GPUs per pool made available")
    ap.add_argument("--gap", type=float, default=0.01, help="FleetPolicy spec.solver.relativeGap (target: 1%%)")
    ap.add_argument("--sizing-limit", type=float, default=600.0, help="time limit of the ample solves, s")
    ap.add_argument("--first-limit", type=float, default=120.0, help="time limit of the running plan in (c), s")
    ap.add_argument("--only", choices=["a", "b", "c"], action="append", help="run only these parts")
    ap.add_argument("--exact-tiers", type=float, default=None, metavar="S",
                    help="also check each binding plan of (a) tier by tier with S-second solves (module docstring)")
    args = ap.parse_args()
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    changes = args.changes if args.changes is not None else (1 if args.quick else 3)
    n_a, n_b, n_c = (10, 30, 20) if args.quick else (50, 300, 100)
    parts = set(args.only or ["a", "b", "c"])
    profiles = length_profiles()
    t_start = time.perf_counter()
    print(f"llmfleet measured: {code_version()}; "
          f"scarcity {args.scarcity:g}, relativeGap {args.gap:g}")
    print("length profiles (tokens, p50/p90/p99): " + "; ".join(
        f"{k} in {v['input']['p50']}/{v['input']['p90']}/{v['input']['p99']} out "
        f"{v['output']['p50']}/{v['output']['p90']}/{v['output']['p99']}" for k, v in profiles.items()))
    if "a" in parts:
        run_scale(f"(a) {n_a} workloads x 10 pools x TP {{1,2,4,8}}, 3 tiers; binding solve at time limit 10 s; "
                  "target: <= 10 s, gap <= 1%, no tier inversion", n_a, seeds, 10.0, args, profiles)
        print(f"peak RSS so far: {maxrss_mib():.0f} MiB")
    if "b" in parts:
        run_scale(f"(b) {n_b} workloads x 10 pools x TP {{1,2,4,8}}, 3 tiers; binding solve at time limit 60 s; "
                  "target: <= 60 s", n_b, args.seeds_large, 60.0, args, profiles)
        print(f"peak RSS after (b), {n_b} workloads: {maxrss_mib():.0f} MiB (resource.getrusage ru_maxrss)")
    if "c" in parts:
        run_change(n_c, changes, 30.0, args, profiles)
    print(f"\npeak RSS of the whole run: {maxrss_mib():.0f} MiB; wall time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
