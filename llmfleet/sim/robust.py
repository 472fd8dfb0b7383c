"""One fleet for several traffic scenarios: ``llmfleet plan --scenarios TRACE [TRACE ...]`` (issue 14).

A plan sized on one trace can fail when the load or the length mix shifts (another hour of the
day, another service's traffic). Here each scenario trace replaces the trace of every trace-driven
workload; the planner then chooses ONE fleet that serves the main demand and every scenario's
demand, each routed by load over the same replicas (``milp._scenario_rows``), and each scenario is
replayed against the chosen fleet in the simulator, so the report shows per-scenario attainment.
Workloads declared by rate and length percentiles have one demand and no scenario copies.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from llmfleet import progress
from llmfleet.api.loader import FleetSpec, ManifestError
from llmfleet.sim.engine import SimulationResult, simulate
from llmfleet.sim.scenario import from_plan
from llmfleet.solver.plan import Plan
from llmfleet.solver.problem import FleetProblem, build_problem
from llmfleet.workload.demand import demand_from_trace
from llmfleet.workload.traces import TraceError, detect_format, load_trace


@dataclass
class Scenario:
    """One scenario: where its traffic came from and the trace each trace-driven workload replays."""

    source: str
    traces: dict[str, pd.DataFrame]


def load_scenarios(spec: FleetSpec, fp: FleetProblem, paths: list[str]) -> list[Scenario]:
    """Read each scenario trace (format detected from the file) for the trace-driven workloads.

    Raises:
        ManifestError: a trace cannot be read, or no workload is trace-driven (names the argument).
    """
    keys = [w.key for w in fp.workloads if w.workload is not None and w.workload.spec.traffic.trace is not None]
    if not keys:
        raise ManifestError("--scenarios: no LLMWorkload has spec.traffic.trace; scenarios replace those traces", None)
    out = []
    for path in paths:
        try:
            trace = load_trace(path, detect_format(path))
        except TraceError as err:
            raise ManifestError(f"--scenarios {path}: {err}", None) from None
        out.append(Scenario(path, {k: trace for k in keys}))
    return out


def add_scenarios(spec: FleetSpec, fp: FleetProblem, scenarios: list[Scenario]) -> None:
    """Model each scenario's demand (its capacity model per workload) into ``fp.scenarios``.

    Raises:
        ManifestError: a scenario trace with no rate (every request at one instant; names the file).
    """
    by_key = {w.key: w for w in spec.workloads}
    for k, sc in enumerate(scenarios, start=1):
        progress.report(f"scenario {k}/{len(scenarios)}: capacity model of {len(sc.traces)} workload(s)")
        demands = {}
        for key, trace in sc.traces.items():
            t = by_key[key].spec.traffic
            try:
                demands[key] = demand_from_trace(trace, t.peak_quantile, t.rate_window_seconds, t.trace.rate_scale)
            except ValueError as err:  # a readable trace with no rate (every request at one instant)
                raise ManifestError(f"--scenarios {sc.source}: {err}", None) from None
        modelled = build_problem(spec, fp.params, demands=demands, inference_pool_crd=fp.routing_mode != "service")
        fp.scenarios.append([w for w in modelled.workloads if w.key in sc.traces])


def replay(plan: Plan, fp: FleetProblem, scenarios: list[Scenario], seed: int = 0) -> list[dict[str, SimulationResult]]:
    """Each scenario's traces replayed against the plan, routed as deployed: per scenario, workload
    key -> simulated result."""
    sims = {w.key: w for w in from_plan(plan, fp)}
    out = []
    for k, sc in enumerate(scenarios, start=1):
        results = {}
        for key, trace in sc.traces.items():
            if key in sims and sims[key].groups:
                progress.report(f"scenario {k}: simulating {key} ({len(trace)} requests)")
                results[key] = simulate(sims[key], trace, seed=seed)
        out.append(results)
    return out
