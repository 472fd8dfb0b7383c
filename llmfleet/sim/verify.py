"""Plan, verify by simulation, repair: ``llmfleet plan --verify``.

The capacity model is an approximation (M/D/1 tails, Little's law at a mean batch, Poisson
interference). So every plan is replayed against traffic (``sim.engine``); where a workload's
simulated SLO attainment falls below its SLO percentile, the capacity κ of each configuration
whose group missed the target is lowered in proportion to its shortfall (and the workload's
configurations the plan did not use, by the mildest of those cuts, so the next solve cannot escape
to capacities nobody tested) and the fleet is solved again, for a bounded number of rounds. The loop only ever lowers capacities, so each round's plan
is at least as conservative as the last.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import pandas as pd

from llmfleet import progress
from llmfleet.api.loader import FleetSpec, ManifestError, object_ref
from llmfleet.sim.engine import SimulationResult, simulate
from llmfleet.sim.scenario import from_plan
from llmfleet.solver.milp import solve
from llmfleet.solver.plan import Plan
from llmfleet.solver.problem import FleetProblem, trace_path, workload_base_dir
from llmfleet.workload.demand import synthetic_trace
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
    """configuration (workload pool/tpN/role) -> factor applied to its κ before the next round"""

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
        if rnd.meets_targets or k == max_rounds:
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


def _cut_capacities(fp: FleetProblem, plan: Plan, rnd: Round) -> None:
    """Lower κ of every configuration whose group missed its workload's target, and of the
    workload's configurations the plan did not use.

    The untested configurations carry the same model error as the ones that missed, as far as
    anything is known; leaving them uncut lets the next solve move the traffic onto them, and
    attainment then rises and falls between rounds without converging. They get the mildest cut
    applied to the workload's tested groups. Groups that met the target are left alone.
    """
    for key, res in rnd.results.items():
        if res.meets_target:
            continue
        target = res.target_percentile / 100.0
        mine = [a for a in plan.assignments if a.workload == key]
        factors = []
        for a, g in zip(mine, res.groups):
            if g.attainment != g.attainment or g.attainment >= target:  # nan: nothing routed
                continue
            factor = min(max(g.attainment / target, MAX_CUT), MIN_CUT)
            _scale(a.config, factor)
            rnd.cuts[f"{key} {g.name}"] = factor
            factors.append(factor)
        if not factors:
            # every group met the target alone but the workload did not: cut them all a little
            for a, g in zip(mine, res.groups):
                _scale(a.config, MIN_CUT)
                rnd.cuts[f"{key} {g.name}"] = MIN_CUT
            factors.append(MIN_CUT)
        used = {id(a.config) for a in mine}
        workload = next(w for w in fp.workloads if w.key == key)
        for c in workload.configs:
            if id(c) not in used:
                _scale(c, max(factors))
        rnd.cuts[f"{key} untested configurations"] = max(factors)


def _scale(c, factor: float) -> None:
    """Lower a configuration's κ by ``factor``: its own and, for a decode config, what it serves
    whole (short prompts the router gives it)."""
    c.capacity_rps = c.capacity_rps * factor
    if c.whole_capacity_rps is not None:
        c.whole_capacity_rps = c.whole_capacity_rps * factor
