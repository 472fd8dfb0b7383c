"""Plan, verify by simulation, repair: ``llmfleet plan --verify``.

The capacity model is an approximation (M/D/1 tails, Little's law at a mean batch, Poisson
interference). So every plan is replayed against traffic (``sim.engine``); where a workload's
simulated SLO attainment falls below its SLO percentile, the capacity κ is lowered where it missed:
for each group that missed in the latency its role decides, for each request size that missed in
it, in proportion to the shortfall, and at least far enough that the plan must change
(``_forcing``); the workload's configurations the plan did not use get the mildest of those cuts,
so the next solve cannot escape to capacities nobody tested. A prefill group that missed the
sizes the router's pooled prefill profile gave it beyond its planned share loses those sizes,
with every prefill configuration no faster (``_pooled_prefill_misses``): more such pods would get
the same prompts. The fleet is solved again, for a bounded number of rounds. Groups that met the
target keep their κ, so the loop is monotone; the round to deploy is the best one
(``best_round``), and the last round says why the loop stopped (``Round.stop_reason``).

A plan that meets every target in the replay but sheds demand (the model sized for bursts the
trace did not bring) is the opposite case: the κ of the groups that met their latency with room
to spare is raised (``_raise_capacities``) and the fleet solved again, for as long as that
serves more of the demand and the replay still meets every target; a raise that misses is undone
and tried again at half its size (in log terms), at most twice.
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
from llmfleet.workload.traces import TraceError, detect_format, load_trace, spread_note

MIN_CUT = 0.9
"""each repair lowers an offending configuration's κ by at least 10%"""
MAX_CUT = 0.5
"""and by at most half, so one bad round cannot make a configuration look useless"""


@dataclass
class Round:
    """One solve + simulation: the plan, its cost (USD/h) and each workload's simulated result."""

    plan: Plan
    results: dict[str, SimulationResult]
    factors: dict[str, float] = field(default_factory=dict)
    """configuration (workload pool/tpN/role) -> factor applied to its κ before the next round
    (below 1: the strongest cut of a missed group; above 1: a raise, ``_raise_capacities``)"""
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
    for key, trace in traces.items():
        if spread := spread_note(trace):
            sources[key] += f" ({spread})"
    return traces, sources


def plan_and_verify(fp: FleetProblem, traces: dict[str, pd.DataFrame], max_rounds: int = 4, seed: int = 0,
                    reject_unplanned: bool = False) -> list[Round]:
    """Solve, simulate every workload that has traffic in ``traces``, and repair up to
    ``max_rounds`` times. Mutates the κ of ``fp``'s configurations. ``reject_unplanned``: see
    ``sim.engine.Simulation``.

    Returns:
        Every round, in order; ``best_round`` picks the one to deploy. The loop stops at the first
        round that meets every target and sheds nothing, or when the rounds run out. A plan that
        sheds demand is repaired too: the traffic it serves still has to meet its SLO; one that
        meets every target while shedding is raised (``_raise_capacities``) unless
        ``reject_unplanned`` kept the shed sizes out of the replay.
    """
    rounds: list[Round] = []
    base: Round | None = None  # the round a raise departs from (meets every target, sheds)
    raised: list[tuple] = []  # κ before the raise in flight
    power = 1.0  # the share (in log terms) of the full raise taken; halved after a raise that missed
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
        if base is not None and not rnd.meets_targets:
            # the raise went too far: undo it and try half of it from the same round
            _restore(raised)
            power /= 2.0
            back = f"capacities restored to round {rounds.index(base)}'s"
            if k == max_rounds:
                rnd.stop_reason = f"a raise to serve shed demand missed an SLO target; {back}; out of repair rounds"
                break
            if power < MIN_RAISE_POWER:
                rnd.stop_reason = f"raises to serve shed demand missed an SLO target, down to the smallest; {back}"
                break
            raised = _raise_capacities(fp, base, power, rnd.factors)
            continue
        if rnd.meets_targets:
            shed = shed_rps(plan)
            if shed <= 0:
                rnd.stop_reason = "every simulated workload meets its SLO target"
            elif k == max_rounds:
                rnd.stop_reason = (f"meets its SLO targets, still shedding {shed:.3g} req/s; out of repair rounds "
                                   f"({max_rounds}; --verify-rounds)")
            elif reject_unplanned:
                rnd.stop_reason = (f"meets its SLO targets, still shedding {shed:.3g} req/s; the replay rejected "
                                   "the sizes the plan routes nowhere, so it shows no room for them")
            elif base is not None and shed >= shed_rps(base.plan) * (1.0 - 1e-6):
                rnd.stop_reason = (f"meets its SLO targets, still shedding {shed:.3g} req/s: raising the capacities "
                                   "of the groups with room to spare serves no more of it")
            else:
                base = rnd
                raised = _raise_capacities(fp, base, power, rnd.factors)
                if raised:
                    continue
                rnd.stop_reason = (f"meets its SLO targets, still shedding {shed:.3g} req/s; no group that serves "
                                   "it meets its latency with room to spare")
            break
        if k == max_rounds:
            rnd.stop_reason = f"out of repair rounds ({max_rounds}; --verify-rounds)"
            break
        _cut_capacities(fp, plan, rnd)
    return rounds


def shed_rps(plan: Plan) -> float:
    """The demand a plan sheds, summed over its workloads, req/s (at their planning rates)."""
    return float(sum(w.shed_rps for w in plan.workloads))


def best_round(rounds: list[Round]) -> Round:
    """The round whose plan to deploy: of those that meet every target, the one that sheds the
    least demand, then the cheapest, then the earliest (the rounds that cut capacity stop at the
    first that meets; only raising rounds follow it); else the one closest to its targets (the
    largest worst ratio of simulated attainment to target over the workloads), the cheaper among
    equals. A repair round can come out worse than an earlier one (the next solve moves traffic to
    other configurations), so the last round is not necessarily the best."""
    meeting = [r for r in rounds if r.meets_targets]
    if meeting:
        return min(meeting, key=lambda r: (round(shed_rps(r.plan), 9), r.plan.cost_per_hour or 0.0))

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
        pooled = _pooled_prefill_misses(mine, res.groups, target)
        for gi, (a, g) in enumerate(zip(mine, res.groups)):
            if not g.requests or _own_attainment(g) >= target:
                continue
            factors = np.broadcast_to(_bucket_factors(g, target), mildest.shape)
            forced = _forcing(a, factors, plan.pd_threshold_tokens.get(key), workload)
            if gi in pooled:
                # the router's pooling, not the plan, gave this group those sizes: it cannot take
                # them beside the prefill pool's other pods, nor can any config no faster
                excluded = pooled[gi]
                forced = np.where(excluded, 0.0, forced)
                for c in workload.configs:
                    if c.role == "prefill" and c is not a.config:
                        _scale(c, np.where(excluded & (c.capacity_rps <= a.config.capacity_rps), 0.0, 1.0))
                rnd.factors[f"{key} {g.name}: sizes the pooled prefill router sent it"] = 0.0
            _scale(a.config, forced)
            rnd.factors[f"{key} {g.name}"] = float(forced.min())
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
                rnd.factors[f"{key} {g.name}"] = float(factors.min())
            mildest[:] = MIN_CUT
        used = {id(a.config) for a in mine}
        for c in workload.configs:
            if id(c) not in used:
                _scale(c, mildest)
        rnd.factors[f"{key} untested configurations"] = float(mildest.max())


POOLED_EXCESS = 2.0
"""a prefill group that served a size at least this many times the share of it the plan gave
the group got it from the router's pooling (``_pooled_prefill_misses``): our choice, well above
the replay's noise in a size's split over a few hundred requests"""


def _pooled_prefill_misses(mine: list, groups: list, target: float) -> dict[int, np.ndarray]:
    """The sizes each prefill group missed because the router pooled it with faster pods.

    The router's prefill profile sends each long prompt to the least-loaded prefill pod of the
    workload, whatever its size; at moderate load most arrivals find several pods idle and pick
    among them at random, so a slow pod gets about as many long prompts as a fast one, however
    little of them the plan gave it. Cutting such a group's κ in proportion only makes the next
    plan add more of the same pods, which the router again gives the long prompts (the replay
    gets worse each round). For each prefill group (index into ``mine``/``groups``, the plan's
    ``Assignment``s and the replay's ``GroupResult``s of one workload): shape (S,) bool, the sizes
    it served at least ``POOLED_EXCESS`` times the share the plan gave it, with at least
    ``MIN_BUCKET_REQUESTS`` requests, and met in its TTFT below ``target``. Empty where the
    workload has fewer than two prefill groups."""
    idx = [i for i, (a, g) in enumerate(zip(mine, groups))
           if a.role == "prefill" and g.bucket_requests is not None and g.bucket_own_met is not None]
    if len(idx) < 2:
        return {}
    planned = sum(np.asarray(mine[i].bucket_rate_rps, dtype=float) for i in idx)
    served = sum(groups[i].bucket_requests.astype(float) for i in idx)
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in idx:
            g = groups[i]
            n = g.bucket_requests.astype(float)
            plan_share = np.where(planned > 0, np.asarray(mine[i].bucket_rate_rps, dtype=float) / planned, 0.0)
            replay_share = np.where(served > 0, n / served, 0.0)
            missed = (n >= MIN_BUCKET_REQUESTS) & (g.bucket_own_met < target * n)
            excess = replay_share >= POOLED_EXCESS * plan_share
            if (missed & excess).any():
                out[i] = missed & excess
    return out


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


MAX_RAISE = 2.0
"""a raise lifts a group's κ by at most this factor per round (``_raise_capacities``): our
choice; the replay of the next round is the check, and a raise that misses is halved"""

RAISE_MARGIN = 0.1
"""a raise aims 10% past the demand the workload shed (``_raise_capacities``): our choice; the
groups without room to spare are not raised, so an exact aim leaves a remainder that shrinks
geometrically instead of closing"""

MIN_RAISE_POWER = 0.25
"""raises are halved (in log terms) at most twice after misses before the loop gives up"""


def _raise_capacities(fp: FleetProblem, base: Round, power: float, record: dict[str, float]) -> list[tuple]:
    """For round ``base``, which meets every target in the replay of all its traffic yet sheds
    demand: the capacity model was more cautious than the replay (it sizes for bursts and tails
    the traffic did not reach), since the very groups it could not fill with the shed demand
    served all of it within the SLO. Raise the κ of each group of a shedding workload that met the
    target in its own latency (a prefill group's TTFT, a decode group's TPOT, a colocated group's
    both at the SLO percentile, below the SLO) by the factor that would let it carry the
    workload's whole demand (demand / served, ``RAISE_MARGIN`` more, at most ``MAX_RAISE``), to
    the power ``power``.
    Configurations the plan did not use, groups that met their latency without room to spare and
    workloads that shed nothing keep their κ. Writes each factor into ``record``; returns each
    raised configuration with its κ before the raise, for ``_restore`` (empty: nothing raised)."""
    before = []
    raised: set[int] = set()  # configurations raised once already (two groups can share one)
    plan = base.plan
    for wr in plan.workloads:
        res = base.results.get(wr.workload)
        if res is None or wr.shed_rps <= 0 or wr.served_rps <= 0:
            continue
        workload = next(w for w in fp.workloads if w.key == wr.workload)
        if workload.workload is None:
            continue
        slo = workload.workload.spec.slo
        target = res.target_percentile / 100.0
        factor = min(MAX_RAISE, wr.demand_rps / wr.served_rps * (1.0 + RAISE_MARGIN)) ** power
        mine = [a for a in plan.assignments if a.workload == wr.workload]
        for a, g in zip(mine, res.groups):
            if g.requests < MIN_BUCKET_REQUESTS or _own_attainment(g) < target:
                continue
            latencies = {"prefill": [(slo.ttft, g.ttft_s)], "decode": [(slo.tpot, g.tpot_s)]}.get(
                a.role, [(slo.ttft, g.ttft_s), (slo.tpot, g.tpot_s)])
            if id(a.config) in raised or not all(np.isfinite(sim) and sim < limit for limit, sim in latencies):
                continue
            raised.add(id(a.config))
            before.append((a.config, a.config.capacity_rps, a.config.whole_capacity_rps))
            _scale(a.config, factor)
            record[f"{wr.workload} {g.name}"] = float(factor)
    return before


def _restore(before: list[tuple]) -> None:
    """Put back the κ ``_raise_capacities`` recorded."""
    for c, capacity, whole in before:
        c.capacity_rps, c.whole_capacity_rps = capacity, whole


def _scale(c, factor) -> None:
    """Multiply a configuration's κ by ``factor``: its own and, for a decode config, what it serves
    whole (short prompts the router gives it)."""
    c.capacity_rps = c.capacity_rps * factor
    if c.whole_capacity_rps is not None:
        c.whole_capacity_rps = c.whole_capacity_rps * factor
