"""Plan, verify by simulation, repair: ``llmfleet plan --verify``.

The capacity model is an approximation (M/D/1 tails, Little's law at a mean batch, Poisson
interference). So every plan is replayed against traffic (``sim.engine``); where a workload's
simulated SLO attainment falls below its SLO percentile, the capacity κ is lowered where it missed:
for each group that missed in the latency its role decides, for each request size that missed in
it, in proportion to the shortfall, and at least far enough that the plan must change
(``_forcing``); the workload's configurations the plan did not use get the mildest of those cuts,
so the next solve cannot escape to capacities nobody tested. The fleet is solved again, for a
bounded number of rounds. Groups that met the target keep their κ, so the loop is monotone; the
round to deploy is the best one (``best_round``), and the last round says why the loop stopped
(``Round.stop_reason``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from llmfleet import progress
from llmfleet.api.loader import FleetSpec, ManifestError, object_ref
from llmfleet.sim.engine import SimulationResult, simulate
from llmfleet.sim.scenario import from_plan
from llmfleet.solver.milp import solve
from llmfleet.solver.plan import Plan
from llmfleet.solver.problem import FleetProblem, trace_path, workload_base_dir
from llmfleet.workload.demand import INPUT_EDGES_TOKENS, synthetic_trace
from llmfleet.workload.traces import TraceError, detect_format, load_trace

MIN_CUT = 0.9
"""each repair lowers an offending configuration's κ by at least 10%"""
MAX_CUT = 0.5
"""and by at most half, so one bad round cannot make a configuration look useless"""


@dataclass
class Round:
    """One solve + simulation: the plan, its cost (USD/h) and each workload's simulated result."""

    plan: Plan
    results: dict[str, SimulationResult]
    cuts: dict[str, float] = field(default_factory=dict)
    """configuration (workload pool/tpN/role) -> strongest factor applied to its κ before the next round"""
    stop_reason: str = ""
    """set on the last round: why the loop stopped"""

    @property
    def meets_targets(self) -> bool:
        return all(r.meets_target for r in self.results.values())


def workload_traces(fp: FleetProblem, spec: FleetSpec, override: str | None = None,
                    duration_s: float = 3600.0, seed: int = 0) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The traffic to replay for each workload and a description of where it came from.

    A workload with ``spec.traffic.trace`` replays that trace (or ``override`` when given); one
    declared by rate and percentiles replays a synthetic Poisson trace of ``duration_s`` (or
    ``override`` when no workload has a trace of its own).

    Raises:
        ManifestError: a trace cannot be read (names the workload and file).
    """
    traces, sources = {}, {}
    any_trace = any(w.workload.spec.traffic.trace for w in fp.workloads if w.workload is not None)
    for w in fp.workloads:
        if w.workload is None:
            continue
        t = w.workload.spec.traffic
        use_override = override is not None and (t.trace is not None or not any_trace)
        try:
            if use_override:
                traces[w.key] = load_trace(override, detect_format(override))
                sources[w.key] = override
            elif t.trace is not None:
                path = trace_path(w.workload, workload_base_dir(spec, w.workload), object_ref(spec, w.workload))
                traces[w.key] = load_trace(path, t.trace.format)
                sources[w.key] = str(path)
            else:
                traces[w.key] = synthetic_trace(t, duration_s, seed)
                sources[w.key] = f"synthetic Poisson, {t.request_rate_per_second:g} req/s for {duration_s:.0f}s"
        except TraceError as err:
            where = "--verify TRACE" if use_override else object_ref(spec, w.workload)
            raise ManifestError(f"{where}: {err}", ("LLMWorkload", w.key)) from None
    return traces, sources


def plan_and_verify(fp: FleetProblem, traces: dict[str, pd.DataFrame], max_rounds: int = 4, seed: int = 0,
                    reject_unplanned: bool = False) -> list[Round]:
    """Solve, simulate every workload that has traffic in ``traces``, and repair up to
    ``max_rounds`` times. Mutates the κ of ``fp``'s configurations. ``reject_unplanned``: see
    ``sim.engine.Simulation``.

    Returns:
        Every round, in order; ``best_round`` picks the one to deploy. The loop stops at the first
        round that meets every target or when the rounds run out. A plan that sheds demand is
        repaired too: the traffic it serves still has to meet its SLO.
    """
    rounds: list[Round] = []
    for k in range(max_rounds + 1):
        progress.report(f"verify round {k}: solving the fleet MILP")
        plan = solve(fp)
        results = {}
        for w in from_plan(plan, fp):
            if w.key in traces and w.groups:
                progress.report(f"verify round {k}: simulating {w.key} ({len(traces[w.key])} requests)")
                results[w.key] = simulate(w, traces[w.key], seed=seed, reject_unplanned=reject_unplanned)
        rnd = Round(plan, results)
        rounds.append(rnd)
        if rnd.meets_targets:
            rnd.stop_reason = "every simulated workload meets its SLO target"
            break
        if k == max_rounds:
            rnd.stop_reason = f"out of repair rounds ({max_rounds}; --verify-rounds)"
            break
        _cut_capacities(fp, plan, rnd)
    return rounds


def best_round(rounds: list[Round]) -> Round:
    """The round whose plan to deploy: the first that meets every target (later rounds only add
    capacity); else the one closest to its targets (the largest worst ratio of simulated
    attainment to target over the workloads), the cheaper among equals. A repair round can come
    out worse than an earlier one (the next solve moves traffic to other configurations), so the
    last round is not necessarily the best."""
    for rnd in rounds:
        if rnd.meets_targets:
            return rnd

    def closeness(rnd: Round) -> tuple[float, float]:
        worst = min((r.attainment * 100.0 / r.target_percentile for r in rnd.results.values()), default=1.0)
        return worst, -(rnd.plan.cost_per_hour or 0.0)

    return max(rounds, key=closeness)


MIN_BUCKET_REQUESTS = 20
"""fewest requests of one size in one group from which its own attainment is trusted; below, the
group's overall attainment stands for it"""


def _cut_capacities(fp: FleetProblem, plan: Plan, rnd: Round) -> None:
    """Lower κ where the simulation missed, aimed at the cause: per group that missed its
    workload's target in the latency its role decides (``GroupResult.bucket_own_met``: a prefill
    group's TTFT, a decode group's TPOT, a colocated group's both), per size bucket that missed
    within it, in proportion to the shortfall (``MIN_CUT``..``MAX_CUT``); groups that met the
    target keep their κ. A cut too mild to change the plan (the group's load still within its
    replicas) would replay the same plan to the same miss, so it is deepened to the group's
    utilization (``_forcing``). The workload's configurations the plan did not use get, per bucket,
    the mildest cut in proportion to a tested group's miss, so the next solve cannot escape to
    capacities nobody tested (they carry the same model error as far as anything is known).
    """
    for key, res in rnd.results.items():
        if res.meets_target:
            continue
        target = res.target_percentile / 100.0
        mine = [a for a in plan.assignments if a.workload == key]
        workload = next(w for w in fp.workloads if w.key == key)
        mildest = np.ones(len(workload.share))  # per bucket: the mildest cut any tested group got
        cut_any = np.zeros(len(workload.share), dtype=bool)
        for a, g in zip(mine, res.groups):
            if not g.requests or _own_attainment(g) >= target:
                continue
            factors = np.broadcast_to(_bucket_factors(g, target), mildest.shape)
            forced = _forcing(a, factors, plan.pd_threshold_tokens.get(key), workload)
            _scale(a.config, forced)
            rnd.cuts[f"{key} {g.name}"] = float(forced.min())
            # the untested configurations share the model's error, not this group's load: they
            # get the cuts in proportion to the miss, not the forced ones
            hit = factors < 1.0
            mildest = np.where(hit & cut_any, np.maximum(mildest, factors), np.where(hit, factors, mildest))
            cut_any |= hit
        if not cut_any.any():
            # every group met the target in its own latency but the workload did not (TTFT and
            # TPOT missed on different requests): cut them all a little, and the one nearest its
            # own miss far enough that the plan changes
            served = [(a, g) for a, g in zip(mine, res.groups) if g.requests]
            worst = min(served, key=lambda ag: _own_attainment(ag[1]))[0] if served else None
            for a, g in zip(mine, res.groups):
                factors = np.full(len(mildest), MIN_CUT)
                if a is worst:
                    factors = _forcing(a, factors, plan.pd_threshold_tokens.get(key), workload)
                _scale(a.config, factors)
                rnd.cuts[f"{key} {g.name}"] = float(factors.min())
            mildest[:] = MIN_CUT
        used = {id(a.config) for a in mine}
        for c in workload.configs:
            if id(c) not in used:
                _scale(c, mildest)
        rnd.cuts[f"{key} untested configurations"] = float(mildest.max())


def _own_attainment(g) -> float:
    """Share of a group's requests that met the latency its role decides (``bucket_own_met``;
    the group's attainment where the simulation gives no buckets)."""
    if g.bucket_requests is None or g.bucket_own_met is None or not g.bucket_requests.sum():
        return g.attainment
    return float(g.bucket_own_met.sum() / g.bucket_requests.sum())


def _bucket_factors(g, target: float) -> np.ndarray:
    """κ factor per bucket for a group that missed ``target`` in its own latency: each bucket with
    enough requests by its own attainment, the others by the group's; 1 where a bucket met the
    target."""
    whole = min(max(_own_attainment(g) / target, MAX_CUT), MIN_CUT)
    if g.bucket_requests is None or g.bucket_own_met is None:
        return np.array(whole)
    n, met = g.bucket_requests.astype(float), g.bucket_own_met.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        att = np.where(n >= MIN_BUCKET_REQUESTS, met / n, _own_attainment(g))
    return np.where(att >= target, 1.0, np.clip(att / target, MAX_CUT, MIN_CUT))


FORCE_MARGIN = 0.02
"""a forced cut leaves a missed group's load this much above its replicas (``_forcing``): our
choice, just enough that the next plan needs one more replica, not more"""


def _forcing(a, factors: np.ndarray, pd_threshold: int | None, workload) -> np.ndarray:
    """``factors`` (S,) for the group of Assignment ``a`` (of ``workload``, whose P/D threshold is
    ``pd_threshold`` tokens or None), deepened where they would leave the plan as it is; a new
    array of shape (S,).

    The group missed its target carrying load ``a.utilization`` x replicas (in replicas' worth of
    κ). If its load over the cut κ still fits its replicas, the next solve may keep the group as it
    is and the replay repeat the same miss: a wasted round. The simulation showed that this group
    does not meet the target at this load, so its κ is cut, for every size it carries, to at most
    utilization / (1 + ``FORCE_MARGIN``): the next plan must give it another replica or move its
    traffic. Still at most ``MAX_CUT`` per round (a group far below its capacity that misses is
    cut again in the next rounds if it misses again).
    """
    rates = np.asarray(a.bucket_rate_rps, dtype=float)
    c = a.config
    cap = np.asarray(c.capacity_rps, dtype=float)
    if c.role == "decode" and c.whole_capacity_rps is not None:
        # a decode group serves whole the prompts below the P/D threshold (``solver.milp``)
        classes = np.array([i for i, _ in workload.demand.buckets()]) if workload.demand is not None else None
        if classes is not None and len(classes) == len(cap):
            edges = INPUT_EDGES_TOKENS[classes]
            whole = edges < pd_threshold if pd_threshold is not None else np.ones(len(cap), dtype=bool)
            cap = np.where(whole, c.whole_capacity_rps, cap)
    carried = (rates > 0) & (cap > 0)
    if not carried.any() or a.utilization <= 0:
        return np.array(factors)
    load = np.zeros(len(rates))
    load[carried] = rates[carried] / cap[carried]
    weights = load / load.sum()
    after = a.utilization * float((weights[carried] / np.maximum(factors[carried], 1e-9)).sum())
    if after > 1.0:
        return np.array(factors)  # the cut alone already makes the group's load exceed its replicas
    forced = max(a.utilization / (1.0 + FORCE_MARGIN), MAX_CUT)
    return np.where(carried, np.minimum(factors, forced), factors)  # never milder than asked


def _scale(c, factor) -> None:
    """Lower a configuration's κ by ``factor``: its own and, for a decode config, what it serves
    whole (short prompts the router gives it)."""
    c.capacity_rps = c.capacity_rps * factor
    if c.whole_capacity_rps is not None:
        c.whole_capacity_rps = c.whole_capacity_rps * factor
