"""The fleet MILP (DESIGN §6), stated with PuLP and solved with HiGHS (``highs.HighsModel``).

A plan may route traffic only as the deployed router does (DESIGN §7a): a request's output length
is unknown when it arrives, and llm-d's endpoint picker balances by load. So, for every workload w
with a demand model (LLMWorkload input), with λ its rate, s_b the share of size bucket b, and c a
feasible replica config (pool, TP, role):

    n[w,c] ∈ Z≥0      replicas
    y[w,c] ∈ [0,1]    share of all the workload's requests that enter through colocated or decode
                      config c: the EPP's decode profile picks among colocated and decode pods by
                      load, so every such group sees the workload's whole length mix
    p[w,c] ∈ [0,1]    share of the P/D traffic prefilled by prefill config c (the prefill profile
                      picks by load among prefill pods: each sees the whole long-prompt mix)
    d[w,i] ∈ {0,1}    prompts of input class i go through a prefill pod (the P/D decider's one
                      prompt-length threshold; monotone in i; all 1 for disaggregation: always)
    xL[w,c,b] = y·d,  xP[w,c,b] = p·d   (linearised products: decode and prefill traffic of bucket b)
    u[w] ∈ [0,1]      share shed, only when capacity is short

    Σ_{c colocated or decode} y + u = 1                         every request enters somewhere
    Σ_{c prefill} xP[c,b] = Σ_{c decode} xL[c,b]                 long prompts prefilled and decoded
    colocated: y Σ_b λ s_b / κ_b ≤ n
    decode:    Σ_b λ s_b ((y - xL_b) / κwhole_b + xL_b / κdec_b) ≤ n    (short prompts served whole)
    prefill:   Σ_b λ s_b xP_b / κpre_b ≤ n
A group that cannot serve a bucket b within the SLO where the router would send it is not used
(colocated: κ_b = 0 for a servable b; decode: y ≤ d_i(b) where κwhole_b = 0, y ≤ 1 - d_i(b) where
κdec_b = 0; prefill: p ≤ 1 - d_i(b) where κpre_b = 0). Buckets no config serves (the SLO
percentile's allowance, ``problem.plan_configs``) still reach every group in proportion and load it
at its throughput; beyond the allowance they are shed. All P/D replicas of a workload share one P/D
group (KV domain and attention backend, ``solver.pd_rules``): binary e[w,g], n ≤ M e, Σ_g e ≤ 1.
Under ``service`` routing kube-proxy gives every pod an equal share, so a workload runs one
(pool, TP) group only (binary, same big-M form) and never P/D.

Mélange-format input (``--melange``) keeps Mélange's own assumption, a size-aware balancer: per
bucket shares x[w,c,b] with Σ_c x[w,c,b] + u[w,b] = 1 and Σ_b λ s_b x / κ_b ≤ n.

Shared constraints: Σ_{w, c in pool} TP n ≤ maxGPUs(pool); Σ TP n L_c ≤ f x power budget, with
L_c the power cap of config c (``solver.caps``; the default limit where uncapped) and f the
policy's oversubscription (1: the caps guarantee the budget), plus Σ TP n P_c ≤ power budget when
f > 1; Σ_{w in namespace, c} TP n ≤ GPU quota (FleetPolicy spec.tenancy); Σ_c n ≥ minReplicas(w)
over the replicas that serve a request whole. P_c is the predicted average draw of one GPU of
config c loaded to its capacity κ (``perf.power``, ``ReplicaConfig.watts_per_gpu``, at most its
cap; the TDP where a config has none).
Objective: Σ n TP (price + P_c x energy price), plus the churn against a running plan. Priorities
are lexicographic: minimise the shed req/s of the top tier, fix it, then its missing minimum
replicas, then the next tier, and finally minimise cost with every tier's service fixed; a phase
whose objective the start already meets at 0 is skipped (``solve_joint``: one HiGHS model, a
tier-respecting greedy start, ``solver.greedy``; a tier phase searches neighbourhoods of its start
first, ``solver.neighbourhood``, and gives the GPUs its plan leaves to its own tier, ``_top_up``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import itertools
import math
import statistics
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pulp
from scipy import optimize

from llmfleet.perf.capacity import (Burstiness, PrefillQueue, decode_first_token_delay_s, kv_transfer_s,
                                   latencies_at_rate, mix_rate_rps, prefill_queue, prefill_service_moments,
                                   prefill_ttft_quantiles_s, prefill_ttft_share_within, shared_batch)
from llmfleet.perf.steptime import PerfParams
from llmfleet.solver import neighbourhood
from llmfleet.solver.greedy import Option, count_rows, greedy_replicas
from llmfleet.solver.highs import HighsModel, RowProblem
from llmfleet.solver.churn import config_key, start_cost_usd, stop_cost_usd
from llmfleet.solver.placement import groups_from_plan, limits_from_placement, place, shape_cuts
from llmfleet.solver.plan import Assignment, Plan, WorkloadResult
from llmfleet.solver.problem import UNLIMITED_GPUS, FleetProblem, WorkloadProblem, servable_buckets
from llmfleet.workload.demand import INPUT_EDGES_TOKENS, RATE_LEVEL_WINDOW_S, load_levels

_SHED_TOL = 1e-6
_TIER_GAP = 0.01
SEARCH_SHARE = 0.8
"""share of a tier phase's time slice spent on the neighbourhood search before the whole-model
solve (``_phase``). With binding pools (bench/solver_scale.py, 50 workloads at 10 and 30 s, 300 at
60 s) the whole-model phases seldom improved on the greedy start and proved no bound, and the
search lowered the shed in most phases; 0.8 served more than 0.5 at 50 workloads (two fleets)"""


def _replica_cost_per_hour(fp: FleetProblem, c) -> float:
    """USD/h of one replica: its GPU-hours plus its energy at the predicted draw (kW x USD/kWh)."""
    return c.cost_per_replica_hour + c.tp * c.watts_per_gpu / 1000.0 * fp.energy_price_per_kwh


def _pool_gpus(plan: Plan, pool: str) -> int:
    return sum(a.gpus for a in plan.assignments if a.pool == pool)


def _quota_gpus(plan: Plan, keys: frozenset[str]) -> int:
    """GPUs the plan gives the workloads ``keys`` (one namespace's quota)."""
    return sum(a.gpus for a in plan.assignments if a.workload in keys)


@dataclass
class _Model:
    prob: pulp.LpProblem
    n: dict
    x: dict
    """(workload, config, bucket) -> share of the bucket's requests the config serves (variable or expression)"""
    u: dict
    unreachable: set
    cost: pulp.LpAffineExpression | None = None
    pd: dict = dataclasses.field(default_factory=dict)
    """(workload index, input class) -> binary: that class's prompts go through prefill pods"""
    load: dict = dataclasses.field(default_factory=dict)
    """(workload, config) -> replicas' worth of load the config carries (its capacity row)"""
    short: dict = dataclasses.field(default_factory=dict)
    """workload index -> replicas its minReplicas lack (soft minimum, only when shedding)"""
    scenario_of: dict = dataclasses.field(default_factory=dict)
    """index of a scenario copy of a workload (``FleetProblem.scenarios``) -> (scenario, its
    workload problem, the index of the same workload in ``fp.workloads``)"""
    greedy_inputs: tuple | None = None
    """(rows over replica counts alone, options per workload) for ``solver.greedy``, made once"""
    unit_load: dict = dataclasses.field(default_factory=dict)
    """(workload, config) -> replicas' worth of load per unit of entry (prefill: P/D) share, as a
    function of the P/D decision per bucket (shape (S,), 0/1): what ``_router_shares`` balances"""
    moves: list = dataclasses.field(default_factory=list)
    """(variable, GPUs per unit) of the replicas a re-plan starts or stops against the running plan
    (``_churn_terms``): what the tier phases keep few among plans that shed the same"""


def usable_buckets(w: WorkloadProblem, ci: int) -> np.ndarray:
    """Buckets config ``ci`` of ``w`` can serve under per-bucket (Mélange) routing: κ > 0 and, for
    a prefill (decode) config, some decode (prefill) config of its KV-transfer domain serving it."""
    c = w.configs[ci]
    ok = c.capacity_rps > 0
    if c.role != "colocated":
        other = "decode" if c.role == "prefill" else "prefill"
        partner = np.zeros_like(ok)
        for o in w.configs:
            if o.role == other and o.kv_domain == c.kv_domain:
                partner |= o.capacity_rps > 0
        ok &= partner
    return np.flatnonzero(ok)


def _max_replicas(fp: FleetProblem, c) -> int:
    """An upper bound on a config's replicas (big-M): its pool's GPUs over its TP."""
    return max(min(fp.pools[c.pool.name].max_gpus, UNLIMITED_GPUS) // c.tp, 1)


def _build(fp: FleetProblem, allow_shed: bool) -> _Model:
    m = _Model(RowProblem("llmfleet", pulp.LpMinimize), {}, {}, {}, set())
    prob = m.prob
    cost_terms = []
    pool_use: dict[str, list] = {name: [] for name in fp.pools}
    power_terms, draw_terms = [], []
    for wi, w in enumerate(fp.workloads):
        for ci, c in enumerate(w.configs):
            m.n[wi, ci] = prob.add_variable(f"n_{wi}_{ci}", lowBound=0, cat=pulp.LpInteger)
            cost_terms.append((m.n[wi, ci], _replica_cost_per_hour(fp, c)))
            pool_use[c.pool.name].append((m.n[wi, ci], c.tp))
            power_terms.append((m.n[wi, ci], c.tp * c.limit_watts))
            draw_terms.append((m.n[wi, ci], c.tp * c.watts_per_gpu))
        if w.demand is None or fp.pin_buckets:
            _pinned_rows(m, w, wi, allow_shed)
        else:
            _balanced_rows(m, fp, w, wi, allow_shed)
        for ci in range(len(w.configs)):
            if (wi, ci) in m.load:
                _row(prob, [*m.load[wi, ci].items(), (m.n[wi, ci], -1)], "<=", 0, f"load_{wi}_{ci}")
        # the minimum counts replicas that serve a request whole (colocated, or decode for short
        # prompts); for Mélange input, any replica
        serving = _serving_configs(w)
        if w.min_replicas and serving:
            # a minimum is part of the tier order (DESIGN §6): hard when everything fits; when
            # capacity is short, a shortfall the tier phases minimise after the tier's own demand
            terms = [m.n[wi, ci] for ci in serving]
            if allow_shed:
                m.short[wi] = prob.add_variable(f"short_{wi}", lowBound=0, upBound=w.min_replicas)
                terms.append(m.short[wi])
            prob += pulp.lpSum(terms) >= w.min_replicas, f"minrep_{wi}"
    _scenario_rows(m, fp, allow_shed)
    for name, terms in pool_use.items():
        if terms:
            prob += pulp.LpAffineExpression(terms) <= fp.pools[name].max_gpus, f"pool_{name}"
    _node_shape_rows(m, fp)
    if fp.power_budget_watts is not None and power_terms:
        # the caps bound the draw whatever the load: their sum is the guarantee; with a declared
        # oversubscription the caps may exceed the budget and the predicted draw must fit instead
        prob += (pulp.LpAffineExpression(power_terms) <= fp.power_budget_watts * fp.power_oversubscription,
                 "power_budget")
        if fp.power_oversubscription > 1.0:
            prob += pulp.LpAffineExpression(draw_terms) <= fp.power_budget_watts, "power_draw"
    for name, pool in fp.pools.items():  # a pool's own budget (GPUPool spec.powerBudgetWatts)
        terms = [(m.n[wi, ci], c.tp * c.limit_watts) for wi, w in enumerate(fp.workloads)
                 for ci, c in enumerate(w.configs) if c.pool.name == name]
        if pool.power_budget_watts is not None and terms:
            prob += pulp.LpAffineExpression(terms) <= pool.power_budget_watts, f"pool_power_{name}"
    for k, (name, (limit, keys)) in enumerate(sorted(fp.gpu_quotas.items())):
        terms = [(m.n[wi, ci], c.tp) for wi, w in enumerate(fp.workloads) if w.key in keys
                 for ci, c in enumerate(w.configs)]
        if terms:
            prob += pulp.LpAffineExpression(terms) <= limit, f"quota_{k}"
    cost_terms += _churn_terms(m, fp)
    m.cost = pulp.LpAffineExpression(cost_terms)
    prob.setObjective(m.cost)
    return m


SCENARIO_STRIDE = 1_000_000
"""index offset of scenario s's copies of the workloads in the model (s x stride + workload index)"""


def _scenario_rows(m: _Model, fp: FleetProblem, allow_shed: bool) -> None:
    """One fleet for several demands (``FleetProblem.scenarios``): each scenario's copy of a
    workload routes its own demand over the same replicas (the n of the config with the same
    pool, TP, role and cap; a config the main demand does not have is unavailable there), and
    must be served (or shed, in the tier phases) like the main one."""
    index = {w.key: wi for wi, w in enumerate(fp.workloads)}
    for s, workloads in enumerate(fp.scenarios, start=1):
        for ws in workloads:
            wi = index.get(ws.key)
            if wi is None:
                continue
            main = fp.workloads[wi]
            by_key = {config_key(main.key, c): ci for ci, c in enumerate(main.configs)}
            wsi = s * SCENARIO_STRIDE + wi
            m.scenario_of[wsi] = (s, ws, wi)
            for ci, c in enumerate(ws.configs):
                shared = by_key.get(config_key(ws.key, c))
                m.n[wsi, ci] = (m.n[wi, shared] if shared is not None else
                                m.prob.add_variable(f"n_{wsi}_{ci}", lowBound=0, upBound=0, cat=pulp.LpInteger))
            _balanced_rows(m, fp, ws, wsi, allow_shed)
            for ci in range(len(ws.configs)):
                if (wsi, ci) in m.load:
                    _row(m.prob, [*m.load[wsi, ci].items(), (m.n[wsi, ci], -1)], "<=", 0, f"load_{wsi}_{ci}")


def _members_with_scenarios(m: _Model, members: list[int]) -> list[int]:
    """``members`` (indices of ``fp.workloads``) with their scenario copies."""
    return list(members) + [wsi for wsi, (_, _, wi) in m.scenario_of.items() if wi in members]


def _workload(fp: FleetProblem, m: _Model, wi: int) -> WorkloadProblem:
    """The workload problem of model index ``wi`` (a scenario copy or one of ``fp.workloads``)."""
    return m.scenario_of[wi][1] if wi in m.scenario_of else fp.workloads[wi]


def _churn_terms(m: _Model, fp: FleetProblem) -> list:
    """Objective terms for the replicas a re-plan starts and stops against ``fp.current``
    (``solver.churn``), in USD/h: one-off GPU time spread over the re-plan interval."""
    if not fp.current:
        return []
    terms = []
    for wi, w in enumerate(fp.workloads):
        for ci, c in enumerate(w.configs):
            cur = fp.current.get(config_key(w.key, c), 0)
            start_per_hour, stop_per_hour = _churn_per_hour(fp, w, c)
            start = m.prob.add_variable(f"start_{wi}_{ci}", lowBound=0)
            _row(m.prob, [(start, 1), (m.n[wi, ci], -1)], ">=", -cur, f"start_{wi}_{ci}")
            terms.append((start, start_per_hour))
            m.moves.append((start, c.tp))
            if cur:
                stop = m.prob.add_variable(f"stop_{wi}_{ci}", lowBound=0)
                _row(m.prob, [(stop, 1), (m.n[wi, ci], 1)], ">=", cur, f"stop_{wi}_{ci}")
                terms.append((stop, stop_per_hour))
                m.moves.append((stop, c.tp))
    return terms


def _churn_per_hour(fp: FleetProblem, w: WorkloadProblem, c) -> tuple[float, float]:
    """USD/h of starting and of stopping one replica of config ``c`` of ``w``: its one-off GPU time
    (``churn.start_cost_usd``, ``churn.stop_cost_usd``) spread over ``fp.churn_horizon_s``."""
    per_hour = 3600.0 / fp.churn_horizon_s
    return start_cost_usd(w, c) * per_hour, stop_cost_usd(w, c) * per_hour


def _shape_cuts(fp: FleetProblem) -> list:
    """``placement.shape_cuts`` for the pools that have nodes, over the TP degrees their configs use
    (empty without nodes)."""
    if not fp.nodes:
        return []
    with_nodes = {n.pool for n in fp.nodes}
    tps: dict[str, set[int]] = {}
    for w in fp.workloads:
        for c in w.configs:
            if c.pool.name in with_nodes:
                tps.setdefault(c.pool.name, set()).add(c.tp)
    return shape_cuts(fp.nodes, tps)


def _node_shape_rows(m: _Model, fp: FleetProblem) -> None:
    """A TP group must fit one node: ``placement.shape_cuts`` over the pools' nodes (exact for TP
    degrees that divide one another, so such a plan always places)."""
    for k, cut in enumerate(_shape_cuts(fp)):
        terms = [(m.n[wi, ci], c.tp if cut.max_gpus is not None else 1)
                 for wi, w in enumerate(fp.workloads) for ci, c in enumerate(w.configs)
                 if c.pool.name == cut.pool and c.tp >= cut.min_tp]
        if terms:
            limit = cut.max_gpus if cut.max_gpus is not None else cut.max_groups
            m.prob += pulp.LpAffineExpression(terms) <= limit, f"shape_{k}"
    for k, lim in enumerate(fp.placement_limits):
        terms = [(m.n[wi, ci], 1) for wi, w in enumerate(fp.workloads) for ci, c in enumerate(w.configs)
                 if c.pool.name == lim.pool and c.tp == lim.tp]
        if terms:
            m.prob += pulp.LpAffineExpression(terms) <= lim.max_replicas, f"placed_{k}"


def _pinned_rows(m: _Model, w: WorkloadProblem, wi: int, allow_shed: bool) -> None:
    """Mélange's per-bucket routing (``--melange`` input only; see the module docstring)."""
    prob = m.prob
    served: list[list] = [[] for _ in range(len(w.share))]
    balance: dict[tuple[str, int], list] = {}  # (domain, bucket) -> [(x, +1 prefill | -1 decode)]
    for ci, c in enumerate(w.configs):
        load = []
        for b in usable_buckets(w, ci):
            var_x = prob.add_variable(f"x_{wi}_{ci}_{b}", lowBound=0, upBound=1)
            m.x[wi, ci, b] = var_x
            if c.role != "decode":
                served[b].append(var_x)
            if c.role != "colocated":
                balance.setdefault((c.kv_domain, int(b)), []).append((var_x, 1 if c.role == "prefill" else -1))
            load.append((var_x, w.rate_rps * w.share[b] / c.capacity_rps[b]))
        m.load[wi, ci] = pulp.LpAffineExpression(load)
    # rows in (domain, bucket) order: the order HiGHS sees them decides among equal-cost optima
    for k, (_, terms) in enumerate(sorted(balance.items(), key=lambda kv: kv[0])):
        prob += pulp.LpAffineExpression(terms) == 0, f"pd_{wi}_{k}"
    for b in range(len(w.share)):
        terms = list(served[b])
        if not terms:  # no config meets the SLO for this bucket: shed by necessity, not a choice
            m.unreachable.add((wi, b))
            continue
        if allow_shed:
            m.u[wi, b] = prob.add_variable(f"u_{wi}_{b}", lowBound=0, upBound=1)
            terms.append(m.u[wi, b])
        prob += pulp.lpSum(terms) == 1, f"serve_{wi}_{b}"


def routed_buckets(w: WorkloadProblem) -> tuple[np.ndarray, np.ndarray]:
    """(servable, planned misses), shape (S,) bool each, of a workload with a demand model: the
    buckets some config serves within the SLO, and the unservable ones within the SLO allowance
    (``WorkloadProblem.unservable``), which the router still sends to the groups. Any other bucket
    is shed."""
    servable = servable_buckets(w.configs, len(w.share))
    misses = w.unservable if w.unservable is not None else np.zeros(len(w.share), dtype=bool)
    return servable & ~misses, misses


def _balanced_rows(m: _Model, fp: FleetProblem, w: WorkloadProblem, wi: int, allow_shed: bool) -> None:
    """Load-balanced routing as the deployed router does it (module docstring)."""
    prob = m.prob
    lam = w.rate_rps * w.share
    ok, misses = routed_buckets(w)
    for b in np.flatnonzero(~ok & ~misses):
        m.unreachable.add((wi, int(b)))
    buckets = np.flatnonzero(ok)
    classes = [int(i) for i, _ in w.demand.buckets()]  # input class of each of the S buckets
    prefill = [ci for ci, c in enumerate(w.configs) if c.role == "prefill"]
    service = fp.routing_mode == "service"
    d = {}
    if prefill and not service:
        always = w.workload is not None and w.workload.spec.serving.disaggregation == "always"
        ordered = sorted({classes[b] for b in buckets})
        for i in ordered:
            d[i] = prob.add_variable(f"d_{wi}_{i}", lowBound=1 if always else 0, upBound=1, cat=pulp.LpInteger)
            m.pd[wi, i] = d[i]
        for lo, hi in zip(ordered, ordered[1:]):
            prob += d[lo] - d[hi] <= 0, f"thr_{wi}_{lo}"
    entry, xl_by_bucket, xp_by_bucket = [], {int(b): [] for b in buckets}, {int(b): [] for b in buckets}
    # what groups that miss a few sizes may spend of the SLO's allowance (``problem.plan_configs``)
    partial_budget = max(w.miss_budget - float(w.share[misses].sum()), 0.0)
    partial = []
    shares = {}  # (workload, config) -> its y or p
    for ci, c in enumerate(w.configs):
        fails = np.zeros(len(w.share), dtype=bool)
        fails[buckets] = c.capacity_rps[buckets] <= 0
        if c.role != "colocated" and not d or c.role == "colocated" and w.share[fails].sum() > partial_budget + 1e-12:
            # no P/D for this workload, or the router would send this colocated group more sizes
            # it cannot serve within the SLO than the allowance covers: the config is not used
            _row(prob, [(m.n[wi, ci], 1)], "<=", 0, f"unused_{wi}_{ci}")
            continue
        if c.role == "colocated":
            y = prob.add_variable(f"y_{wi}_{ci}", lowBound=0, upBound=1)
            shares[wi, ci] = y
            good = buckets[~fails[buckets]]
            load = float((lam[good] / c.capacity_rps[good]).sum())
            terms = [(y, load + _miss_load(c, lam, misses | fails))]
            m.unit_load[wi, ci] = lambda dv, v=terms[0][1]: v
            if fails.any():
                partial.append((y, float(w.share[fails].sum())))
            entry.append(y)
            for b in np.flatnonzero(ok | misses):
                m.x[wi, ci, b] = y
        elif c.role == "decode":
            y = prob.add_variable(f"y_{wi}_{ci}", lowBound=0, upBound=1)
            shares[wi, ci] = y
            # decode pods only where some prompts go P/D (the longest class does, d monotone):
            # otherwise they are colocated pods rendered with a sidecar and a P/D router for nothing
            _row(prob, [(y, 1), (d[max(d)], -1)], "<=", 0, f"dpd_{wi}_{ci}")
            terms = [(y, _miss_load(c, lam, misses))]
            entry.append(y)
            xl_of: dict[int, object] = {}  # y x d depends on the bucket's input class only
            for b in buckets:
                i = d[classes[b]]
                if c.whole_capacity_rps[b] <= 0:
                    _row(prob, [(y, 1), (i, -1)], "<=", 0, f"dlong_{wi}_{ci}_{b}")  # only if bucket b goes P/D
                if c.capacity_rps[b] <= 0:
                    _row(prob, [(y, 1), (i, 1)], "<=", 1, f"dshort_{wi}_{ci}_{b}")  # only if bucket b is served whole
                if classes[b] not in xl_of:
                    xl_of[classes[b]] = _product(prob, y, i, f"xl_{wi}_{ci}_{classes[b]}")
                xl = xl_of[classes[b]]
                xl_by_bucket[int(b)].append(xl)
                if c.whole_capacity_rps[b] > 0:
                    terms += [(y, lam[b] / c.whole_capacity_rps[b]), (xl, -lam[b] / c.whole_capacity_rps[b])]
                if c.capacity_rps[b] > 0:
                    terms.append((xl, lam[b] / c.capacity_rps[b]))
            for b in np.flatnonzero(ok | misses):
                m.x[wi, ci, b] = y
            whole = np.zeros(len(lam))
            dec = np.zeros(len(lam))
            good = c.whole_capacity_rps[buckets] > 0
            whole[buckets[good]] = lam[buckets[good]] / c.whole_capacity_rps[buckets[good]]
            good = c.capacity_rps[buckets] > 0
            dec[buckets[good]] = lam[buckets[good]] / c.capacity_rps[buckets[good]]
            m.unit_load[wi, ci] = lambda dv, a=whole, b=dec, k=terms[0][1]: float(((1 - dv) * a + dv * b).sum()) + k
        else:
            p = prob.add_variable(f"p_{wi}_{ci}", lowBound=0, upBound=1)
            shares[wi, ci] = p
            pre = np.zeros(len(lam))
            good = c.capacity_rps[buckets] > 0
            pre[buckets[good]] = lam[buckets[good]] / c.capacity_rps[buckets[good]]
            m.unit_load[wi, ci] = lambda dv, a=pre: float((dv * a).sum())
            terms = []
            rate = c.throughput_rps
            xp_of: dict[int, object] = {}  # p x d depends on the bucket's input class only
            for b in buckets:
                i = d[classes[b]]
                if c.capacity_rps[b] <= 0 and (rate is None or rate[b] <= 0 or w.share[b] > partial_budget):
                    _row(prob, [(p, 1), (i, 1)], "<=", 1, f"pshort_{wi}_{ci}_{b}")  # cannot take this size at all
                    continue
                if classes[b] not in xp_of:
                    xp_of[classes[b]] = _product(prob, p, i, f"xp_{wi}_{ci}_{classes[b]}")
                xp = xp_of[classes[b]]
                xp_by_bucket[int(b)].append(xp)
                m.x[wi, ci, b] = xp
                if c.capacity_rps[b] > 0:
                    terms.append((xp, lam[b] / c.capacity_rps[b]))
                else:  # a long prompt it cannot prefill within the TTFT: a miss, at its throughput
                    terms.append((xp, lam[b] / rate[b]))
                    partial.append((xp, float(w.share[b])))
        coef: dict = {}
        for var, a in terms:  # LpAffineExpression keeps the last of repeated variables: sum them first
            coef[var] = coef.get(var, 0.0) + a
        m.load[wi, ci] = pulp.LpAffineExpression(list(coef.items()))
    # a group with any share has at least one replica: y <= n (valid, n integer, y <= 1) closes
    # much of the LP gap where one replica is more than the load needs
    for (wj, ci), share in shares.items():
        _row(prob, [(share, 1), (m.n[wj, ci], -1)], "<=", 0, f"atleast_{wj}_{ci}")
        # and replicas only with a share: no idle group kept for a minimum (it would serve nothing);
        # big-M at least the group's whole-workload load in replicas (share x load <= n), so that it
        # never cuts a real plan, however large the demand
        big = max(1000.0 * _max_replicas(fp, w.configs[ci]), 2.0 * _load_bound(w.configs[ci], lam))
        _row(prob, [(m.n[wj, ci], 1), (share, -min(big, 1e9))], "<=", 0, f"useful_{wj}_{ci}")
    if d:
        # with P/D on (the longest prompts go through prefill pods), no colocated group: llm-d's
        # decode profile would send every request, long prompts too, to colocated pods as well, and
        # the prefill pods must carry exactly the decode pods' share. With P/D off, no P/D pods.
        on = d[max(d)]
        for ci, c in enumerate(w.configs):
            big = _max_replicas(fp, c)
            if c.role == "colocated":
                _row(prob, [(m.n[wi, ci], 1), (on, big)], "<=", big, f"nocolo_{wi}_{ci}")
            else:
                _row(prob, [(m.n[wi, ci], 1), (on, -big)], "<=", 0, f"pdon_{wi}_{ci}")
    balanced = set()  # buckets of one input class share their products: one row per distinct balance
    for k, b in enumerate(buckets):
        key = (frozenset(v.name for v in xp_by_bucket[int(b)]), frozenset(v.name for v in xl_by_bucket[int(b)]))
        if (xp_by_bucket[int(b)] or xl_by_bucket[int(b)]) and key not in balanced:
            balanced.add(key)
            prob += pulp.lpSum(xp_by_bucket[int(b)]) - pulp.lpSum(xl_by_bucket[int(b)]) == 0, f"pd_{wi}_{k}"
    if partial:
        coef = {}
        for var, a in partial:  # buckets of one input class share a product variable: sum their shares
            coef[var] = coef.get(var, 0.0) + a
        prob += pulp.LpAffineExpression(list(coef.items())) <= partial_budget, f"misses_{wi}"
    _one_group_rows(m, fp, w, wi, service)
    if not entry:
        for b in np.flatnonzero(ok | misses):
            m.unreachable.add((wi, int(b)))
        return
    terms = list(entry)
    if allow_shed:
        m.u[wi] = prob.add_variable(f"u_{wi}", lowBound=0, upBound=1)
        terms.append(m.u[wi])
        for b in np.flatnonzero(ok | misses):
            m.u[wi, int(b)] = m.u[wi]
    prob += pulp.lpSum(terms) == 1, f"serve_{wi}"


def _miss_load(c, lam: np.ndarray, misses: np.ndarray) -> float:
    """Replicas' worth of load per unit entry share of the requests of sizes ``misses`` (S,) bool,
    which the config receives but cannot serve within the SLO: at its throughput (no target)."""
    if c.throughput_rps is None or not misses.any():
        return 0.0
    rate = c.throughput_rps[misses]
    return float((lam[misses][rate > 0] / rate[rate > 0]).sum())


def _load_bound(c, lam: np.ndarray) -> float:
    """An upper bound on the replicas config ``c`` needs for the whole workload (rates ``lam`` (S,)):
    every request at the config's smallest positive capacity of any kind."""
    rates = [r[r > 0] for r in (c.capacity_rps, c.whole_capacity_rps, c.throughput_rps) if r is not None]
    low = min((float(r.min()) for r in rates if len(r)), default=1.0)
    return float(lam.sum()) / low


def _row(prob: RowProblem, terms: list, sense: str, rhs: float, name: str) -> None:
    """Add the row Σ coefficient x variable ``sense`` ``rhs`` (``sense`` "<=", ">=" or "==";
    ``terms`` [(variable, coefficient)], each variable once) to ``prob``, named ``name``, without
    a PuLP constraint object (``RowProblem.add_row``): the model's tens of thousands of small rows
    made those most of its build time."""
    if sense not in ("<=", ">=", "=="):
        raise ValueError(f"row {name}: sense must be '<=', '>=' or '==', got {sense!r}")
    rhs = float(rhs)
    prob.add_row(terms, None if sense == "<=" else rhs, None if sense == ">=" else rhs, name)


def _product(prob: RowProblem, share, binary, name: str):
    """A variable equal to ``share`` x ``binary`` (share in [0, 1], binary in {0, 1})."""
    z = prob.add_variable(name, lowBound=0, upBound=1)
    _row(prob, [(z, 1), (share, -1)], "<=", 0, f"{name}_a")
    _row(prob, [(z, 1), (binary, -1)], "<=", 0, f"{name}_b")
    _row(prob, [(z, 1), (share, -1), (binary, -1)], ">=", -1, f"{name}_c")
    return z


def _one_group_rows(m: _Model, fp: FleetProblem, w: WorkloadProblem, wi: int, service: bool) -> None:
    """Under ``service`` routing, one colocated (pool, TP) group per workload; otherwise all the
    workload's P/D replicas in one P/D group (``solver.pd_rules``)."""
    prob = m.prob
    if service:
        key_of = {ci: ci for ci, c in enumerate(w.configs) if c.role == "colocated"}
    else:
        key_of = {ci: c.pd_group for ci, c in enumerate(w.configs) if c.role != "colocated"}
    keys = sorted(set(key_of.values()), key=str)
    if len(keys) <= 1:
        return
    pick = {k: prob.add_variable(f"g_{wi}_{j}", lowBound=0, upBound=1, cat=pulp.LpInteger) for j, k in enumerate(keys)}
    for ci, k in key_of.items():
        _row(prob, [(m.n[wi, ci], 1), (pick[k], -_max_replicas(fp, w.configs[ci]))], "<=", 0, f"grp_{wi}_{ci}")
    prob += pulp.lpSum(pick.values()) <= 1, f"onegroup_{wi}"


def _shed_rps(fp: FleetProblem, m: _Model, wi: int) -> pulp.LpAffineExpression:
    w = _workload(fp, m, wi)
    coef: dict = {}  # one u per workload under load balancing: sum its buckets' rates
    for b in range(len(w.share)):
        if (wi, b) in m.u:
            coef[m.u[wi, b]] = coef.get(m.u[wi, b], 0.0) + w.rate_rps * w.share[b]
    return pulp.LpAffineExpression(list(coef.items()))


def prune_dominated(w: WorkloadProblem, running: dict | None = None) -> list:
    """Drop configs that another TP degree of the same pool and role dominates exactly, except the
    groups in ``running`` (``FleetProblem.current``), which a re-plan may keep.

    ``tp`` GPUs as one replica of TP ``tp`` are dominated by the same GPUs as ``tp/tp'`` replicas
    of TP ``tp'`` (same pool, same cost, same GPUs, at least as many replicas) when
    κ(tp) <= (tp/tp') κ(tp') in every bucket (and, for decode, what it serves whole) at no higher
    power cap or draw: any plan using the former can swap in the latter.
    """
    running = running or {}
    # only a config of the same pool and role can dominate: compare within those groups (all
    # pairs took 0.2 s of a 5-s re-plan at 100 workloads, bench/solver_scale.py (c))
    peers: dict[tuple[str, str], list] = {}
    for c in w.configs:
        peers.setdefault((c.pool.name, c.role), []).append(c)
    keep = []
    for c in w.configs:
        dominated = any(
            o.tp < c.tp and c.tp % o.tp == 0
            and o.limit_watts <= c.limit_watts and o.watts_per_gpu <= c.watts_per_gpu  # no more power
            and (c.capacity_rps <= (c.tp // o.tp) * o.capacity_rps + 1e-12).all()
            and (c.whole_capacity_rps is None
                 or (c.whole_capacity_rps <= (c.tp // o.tp) * o.whole_capacity_rps + 1e-12).all())
            for o in peers[c.pool.name, c.role]
        )
        if not dominated or running.get(config_key(w.key, c)):  # a running group stays an option
            keep.append(c)
    return keep


DECOMPOSITION_SHARE = 0.85
"""part of the time limit the workload-by-workload solves may take before the joint solve (only
tried when the greedy plan serves everything, where they usually succeed). Where they run out of
time, each workload they solved is optimal alone, which the joint MILP rarely matches in the time
left: 100 bench workloads, ample pools (bench/solver_scale.py's fleet), limit 8 s: $4,350/h with
0.6, $3,535/h with 0.85; 12 s: $3,415/h and $3,028/h; 20 s: both the optimum, $2,920/h"""

PLACEMENT_ROUNDS = 3
"""re-solves after a placement that left replicas out (only where the node-shape cuts are not exact)"""


MIN_SOLVE_SHARE = 0.25
"""part of the time limit ``time_left_s`` leaves the solve even when what ran before it (reading
the manifests or the cluster, the capacity model) spent more than the rest: a fleet whose capacity
model outgrew its limit then overruns it by at most this share, rather than getting a bare greedy
plan (a design choice; ``time_left_s`` gives the note that says so)"""


def time_left_s(limit_s: float, started: float, after_s: float = 0.0) -> tuple[float, str | None]:
    """The part of a wall-clock limit of ``limit_s`` s, counted from ``started``
    (``time.perf_counter()``, e.g. when the command began), left for ``solve`` when ``after_s`` s
    of it are kept for what follows the plan: (seconds, at least ``MIN_SOLVE_SHARE`` of the limit;
    a note for the user when that floor applies, so the plan overruns the limit, else None).
    ``llmfleet plan`` sets ``FleetProblem.time_limit_s`` to it, so the limit bounds the capacity
    model too."""
    spent = time.perf_counter() - started
    if limit_s - spent - after_s >= MIN_SOLVE_SHARE * limit_s:
        return limit_s - spent - after_s, None
    left = MIN_SOLVE_SHARE * limit_s
    return left, (f"reading the input and the capacity model took {spent:.1f}s of the {limit_s:g}s time limit; the "
                  f"MILP gets {left:.3g}s more ({MIN_SOLVE_SHARE:.0%} of the limit), so the plan overruns it: raise "
                  "FleetPolicy spec.solver.timeLimitSeconds (or --time-limit) for a fleet this size")


def solve(fp: FleetProblem) -> Plan:
    """Solve the fleet plan for all workloads together, then place its replicas on the pools'
    nodes (``placement.place``; ``Plan.placement``), all within ``fp.time_limit_s`` of wall clock
    (what ran before, such as the capacity model, is the caller's to count: ``time_left_s``). The
    MILP already respects the node shapes (``placement.shape_cuts``, exact for TP degrees 1, 2, 4,
    8); where a pool's TP degrees are not such a chain and the placement leaves replicas out, the
    plan is solved again with the placed counts as limits, at most ``PLACEMENT_ROUNDS`` times and
    only in what is left of the limit. Before that, the endpoint picker's check
    (``_hold_picker_split``); in a re-plan, the running groups are planned at the κ factors that
    check gave them (``FleetProblem.current_capacity_factors``; ``Assignment.picker_capacity_factor``
    gives each group's factor in the plan).
    """
    t0 = time.perf_counter()
    deadline = t0 + fp.time_limit_s
    placing = PLACEMENT_SHARE * fp.time_limit_s if fp.nodes else 0.0  # CP-SAT's part of the limit
    fp = dataclasses.replace(fp, alone_plans={})  # this call's own (the picker's re-solves share it)
    origins: dict[int, tuple] = {}
    if fp.current_capacity_factors:  # a re-plan: the running groups keep the κ the picker's check gave them
        fp = _with_capacity_factors(fp, {id(c): f for w in fp.workloads for c in w.configs
                                         if (f := fp.current_capacity_factors.get(config_key(w.key, c), 1.0)) < 1},
                                    origins)
    with _collection_paused():
        plan = _solve(fp, deadline - placing)
        plan, fp = _hold_picker_split(fp, plan, deadline - placing, origins)
        for rounds in range(PLACEMENT_ROUNDS + 1):
            if not fp.nodes or not plan.assignments:
                break
            tiers = {w.key: w.tier_value for w in fp.workloads}
            groups = groups_from_plan(plan, tiers)
            plan.placement = place(groups, fp.nodes, time_limit_s=min(max(deadline - time.perf_counter(), 0.5), 10.0))
            if plan.placement.all_placed:
                break
            if rounds == PLACEMENT_ROUNDS or deadline - time.perf_counter() < 2 * placing:
                late = "" if rounds == PLACEMENT_ROUNDS else " (no time left in the solver's limit to plan around them)"
                plan.messages.append("node placement: " + "; ".join(u.reason for u in plan.placement.unplaced) + late)
                break
            limits = limits_from_placement(groups, plan.placement)
            plan = _solve(dataclasses.replace(fp, placement_limits=list(fp.placement_limits) + limits), deadline - placing)
    _on_given_configs(plan, origins)
    plan.solve_time_s = time.perf_counter() - t0
    return plan


PICKER_ROUNDS = 2
"""re-solves at most for plans the endpoint picker's split would make miss (``_hold_picker_split``)"""

PICKER_MIN_SHARE = 0.25
"""a re-solve for the picker's split starts only with at least this share of the time limit left"""


def _hold_picker_split(fp: FleetProblem, plan: Plan, deadline: float, origins: dict) -> tuple[Plan, FleetProblem]:
    """A plan that holds under the router that will run it: (the plan, the problem it was solved
    on); ``origins`` gains the caller's configuration and κ factor behind each copy it makes, by
    the copy's ``id`` (``_with_capacity_factors``).

    The MILP splits a workload's traffic among its colocated or decode groups in proportion to
    their SLO capacity κ, but the endpoint picker sends each request to the pod with the fewest
    in flight (``router_split``), which gives a group whose SLO is tight for its GPU more than its
    κ share; likewise its prefill profile gives a slower prefill group about as many prompts as
    a faster one whenever both are idle (``prefill_router_split``), however few the plan gave
    it. Where that split makes a workload's predicted attainment (``predicted_attainment``)
    miss its SLO percentile, the κ of each of its groups loaded past 1 by the picker is lowered by
    that load (copies of the configurations; the caller's problem is untouched) and the fleet is
    solved again, at most ``PICKER_ROUNDS`` times and only with ``PICKER_MIN_SHARE`` of the limit
    left, and not in a re-plan against the running plan (``fp.current``: the operator's re-plans
    and ``plan --current``), which would move unchanged workloads each time (a re-plan plans the
    running groups at the factors they were given, ``FleetProblem.current_capacity_factors``). The
    plan's messages say what was lowered, and which workloads still miss."""
    if fp.routing_mode == "service" or plan.cost_per_hour is None:
        return plan, fp
    notes = []
    for _ in range(PICKER_ROUNDS + 1):
        overloaded, missing = _picker_overloads(fp, plan)
        if not overloaded:
            break
        # a re-plan against the running plan only says so: re-solving there would move workloads
        # that did not change at every re-plan (and take several solves' time)
        if (len(notes) == PICKER_ROUNDS or fp.current
                or deadline - time.perf_counter() < PICKER_MIN_SHARE * fp.time_limit_s):
            plan.messages += notes + [
                f"{key}: predicted SLO attainment {att:.1%} under the endpoint picker's split, below its target "
                f"(the picker gives its slower groups more than the plan does; --verify replays it)"
                for key, att in missing]
            return plan, fp
        notes.append("endpoint picker's split: " + "; ".join(
            f"{key} predicted at {att:.1%}" for key, att in missing) + "; lowered the capacity of "
            + ", ".join(f"{key} {c.pool.name}/tp{c.tp}/{c.role} by {1 / f:.2f}x" for key, c, f in overloaded)
            + " and planned again")
        lowered = _with_capacity_factors(fp, {id(c): f for _, c, f in overloaded}, origins)
        again = _solve(lowered, deadline)
        if again.cost_per_hour is None or _shed_rps_total(again) > _shed_rps_total(plan) + 1e-6:
            # the pools cannot give the lowered groups more: serving less is no remedy, keep the plan
            plan.messages += notes[:-1] + [notes[-1].replace(" and planned again", "") + ", but the plan that "
                                           "gives would serve less demand: kept the plan before it"]
            return plan, fp
        fp, plan = lowered, again
    plan.messages += notes
    return plan, fp


def _shed_rps_total(plan: Plan) -> float:
    """Demand a plan leaves unserved, req/s, all workloads together."""
    return sum(r.shed_rps for r in plan.workloads)


def _picker_overloads(fp: FleetProblem, plan: Plan) -> tuple[list, list]:
    """([(workload key, configuration, κ factor)], [(workload key, predicted attainment)]) for
    the workloads whose predicted attainment under the picker's split misses their SLO percentile
    and that have two or more colocated or decode groups, or two or more prefill groups: each of
    their groups the picker loads past 1 (``replica_load`` of its ``router_split`` or
    ``prefill_router_split`` traffic, at the planning rate), with the factor that brings that
    load to 1."""
    def several(w, prefill: bool) -> bool:
        return sum(1 for a in plan.assignments
                   if a.workload == w.key and (a.role == "prefill") == prefill and a.rate_rps > 0) >= 2

    candidates = [w for w in fp.workloads if w.workload is not None and w.model is not None
                  and (several(w, False) or several(w, True))]
    if not candidates:
        return [], []
    predicted = predicted_attainment(dataclasses.replace(fp, workloads=candidates), plan)
    overloaded, missing = [], []
    for w in candidates:
        att = predicted.get(w.key)
        if att is None or att >= w.workload.spec.slo.percentile / 100.0:
            continue
        groups = [a for a in plan.assignments if a.workload == w.key and a.rate_rps > 0]
        rates, local = _routed_rates(fp, w, groups), local_prefill_shares(groups, len(w.share))
        mine = []
        for a in groups:
            load = replica_load(a.config, rates[id(a)], a.replicas, local if a.role == "decode" else None)
            if load > 1.0 + 1e-6:
                mine.append((w.key, a.config, 1.0 / load))
        if mine:
            overloaded += mine
            missing.append((w.key, att))
    return overloaded, missing


def _with_capacity_factors(fp: FleetProblem, factors: dict[int, float], origins: dict) -> FleetProblem:
    """``fp`` with copies of the configurations in ``factors`` (by ``id``) whose κ (and
    whole-request κ) are scaled by their factor. ``origins`` gains each copy's original (the
    caller's) configuration and its factor from it, by the copy's ``id`` (``fp`` keeps the copies
    alive); ``_on_given_configs`` maps a plan back with it."""
    def scaled(c):
        f = factors.get(id(c))
        if f is None:
            return c
        copy = dataclasses.replace(c, capacity_rps=c.capacity_rps * f, whole_capacity_rps=None
                                   if c.whole_capacity_rps is None else c.whole_capacity_rps * f)
        original, before = origins.get(id(c), (c, 1.0))
        origins[id(copy)] = (original, before * f)
        return copy
    return dataclasses.replace(fp, workloads=[dataclasses.replace(w, configs=[scaled(c) for c in w.configs])
                                              if any(id(c) in factors for c in w.configs) else w
                                              for w in fp.workloads])


def _on_given_configs(plan: Plan, origins: dict) -> None:
    """Point the assignments of a plan solved on ``_with_capacity_factors``'s copies back at the
    caller's configurations, their utilisation against the caller's κ (the repair loop of
    ``--verify`` lowers κ on those objects, and the report reads them), and their κ factor in
    ``Assignment.picker_capacity_factor``."""
    for a in plan.assignments:
        origin = origins.get(id(a.config))
        if origin is not None:
            a.config, a.utilization, a.picker_capacity_factor = origin[0], a.utilization * origin[1], origin[1]


PLACEMENT_SHARE = 0.1
"""part of the time limit kept for the node placement (CP-SAT) when the pools have nodes"""


def _solve(fp: FleetProblem, deadline: float) -> Plan:
    """Solve the fleet MILP for all workloads together by ``deadline`` (``time.perf_counter``),
    the plan read out included (``solve`` without the placement).

    In order, each tried only where the one before did not give the plan:
    1. Given the running plan (``fp.current``), an incremental re-plan: the workloads it still
       serves exactly are held, the others planned around them (``solve_joint`` with ``hold``;
       where GPUs are short, only those no short workload outranks, ``_holdable_in_shortage``,
       after the whole replicas idle in what runs went to the short workloads, ``_trimmed_start``,
       and a short workload of a changed higher tier took lower tiers' GPUs, ``_repaired_start``;
       after each tier's phases, the lower-tier workloads they left as they run are held too,
       ``_held_below``; the result stands although it sheds). The workloads whose running plans are known
       optimal alone are modelled on their running configurations only (``_narrowed``), unless
       one of them is not held;
       where everything fits, the joint solve starts from the others' best plans alone
       (``_start_afresh_alone``) and the held ones' (``_improve_settled``).
    2. Workloads interact only through the shared limits (pool availability, power budget). So,
       when the greedy plan shows that everything fits, the workloads are solved one by one; when
       the union of those optimal plans respects the shared limits it is optimal for the joint
       problem too (the joint feasible set is contained in the product of the individual ones),
       with the sum of the individual bounds as its bound.
    3. The joint MILP's lexicographic phases (``solve_joint``).
    """
    t0 = time.perf_counter()
    prune = lambda ws: [dataclasses.replace(w, configs=prune_dominated(w, fp.current)) for w in ws]  # noqa: E731
    fp = dataclasses.replace(fp, workloads=prune(fp.workloads), scenarios=[prune(ws) for ws in fp.scenarios])
    # a re-plan models the workloads known to stay as they run on their running configurations
    # only (``_narrowed``); the whole fleet is modelled again where one of them may have to change
    whole, (fp, narrowed) = fp, _narrowed(fp)
    prepared = _prepare(fp, deadline)
    # reading the plan out (its latency predictions) comes after the solves: keep time for it
    deadline -= _readout_seconds(fp, prepared)
    kept = _kept(fp, prepared)
    if narrowed and (kept is None or not narrowed <= kept[1]):
        fp, narrowed = whole, frozenset()
        prepared = _prepare(fp, deadline)
        kept = _kept(fp, prepared)
    if kept is not None and not narrowed and not prepared.serves_all(fp):
        # GPUs short: the whole replicas idle in what runs go to the short workloads first, so that
        # one over-provisioned workload does not leave every short one of its tier and below free
        # for the phases, as if GPUs might be freed for them
        trimmed = _trimmed_start(fp, prepared, deadline)
        if trimmed is not None:
            prepared.start = trimmed
            kept = _kept(fp, prepared)
        # then the workloads a change left worse off take, in tier order, the
        # lower tiers' GPUs they can use, so that only the lower-tier workloads that give them up
        # are planned afresh, not every one
        repaired = _repaired_start(fp, prepared, kept[0], deadline)
        if repaired is not None:
            prepared.start = repaired
            kept = _kept(fp, prepared)
    if kept is not None:
        # an incremental re-plan: the workloads the running plan still serves exactly keep their
        # replicas; the others (changed, short, over-provisioned, new) are planned around them.
        # Where everything fits but that cannot serve everything, the kept ones are released; where
        # GPUs are short, those a higher tier that falls short might need (the churn cost in the
        # objective still keeps their changes few).
        fits = prepared.serves_all(fp)
        settled, as_before = kept[1], kept[2]
        released = len(kept[0] - as_before - settled)
        if settled:
            checked = None
            if fits:
                # everything fits. First the workloads planned afresh start from their best plans
                # alone: the joint solve of many new ones (an operator that planned while they were
                # being applied) otherwise stopped at its limit far above them
                if len(fp.workloads) - len(settled) >= AFRESH_ALONE_MIN:
                    now = time.perf_counter()
                    _start_afresh_alone(fp, prepared, settled, now + DECOMPOSITION_SHARE * (deadline - now), deadline)
                # then a kept workload whose running plan costs more than its best plan alone,
                # churn included, moves to that plan (a first plan its time limit stopped short is
                # otherwise kept for good)
                now = time.perf_counter()
                checked = _improve_settled(fp, prepared, settled, now + IMPROVE_SHARE * (deadline - now), deadline,
                                           known=narrowed)
            if not fits and len(settled) == len(fp.workloads):
                plan = _held_whole(fp, prepared, t0)
            else:
                plan = solve_joint(fp, deadline, prepared, hold=settled, holdable_below=not fits)
            # in a shortage, the held workloads are those no short one outranks, so a plan that
            # still sheds is the tier order's answer too; the whole fleet solved again after it
            # had no time left for its phases (bench/solver_scale.py, 100 workloads on 2 cores:
            # "not run: time limit" after 27 s of a 30-s limit, the plan its greedy start)
            if plan.status in ("optimal", "feasible") or (not fits and plan.status == "shortage"):
                moved = len(checked.moved) if checked is not None else 0
                short_held = len(settled & as_before)
                short_free = len(as_before - settled)
                plan.messages.append(
                    f"incremental re-plan: {len(fp.workloads) - len(settled)} workload(s) planned afresh; "
                    f"{len(settled) - short_held - moved} kept as they run (served in full, no idle replica)"
                    f"{f'; {short_held} kept short as the running plan left them (no more shed, no GPUs freed for them)' if short_held else ''}"
                    f"{f'; {moved} moved to their best plan alone' if moved else ''}"
                    f"{f'; {released} served in full left free for a higher tier that falls short' if released else ''}"
                    f"{f'; {short_free} short as before left free (a higher tier falls short, or GPUs may be freed)' if short_free else ''}"
                    "; the gap is that of this re-plan")
                if checked is not None:
                    plan.messages.append(checked.message(len(settled)))
                    plan.unchecked_kept = checked.unchecked(len(settled))
                plan.solve_time_s = time.perf_counter() - t0
                return _mark_shortage(plan, whole)  # a held group's higher caps are among all its configs
            if narrowed:  # the whole fleet, every configuration of every workload
                fp, prepared = whole, _prepare(whole, deadline)
            else:
                # the phases' rows (each tier's result with the kept workloads held) would bind the
                # whole-fleet phases: a fresh HiGHS model of the same problem, from this solution
                prepared.highs = HighsModel(prepared.model.prob)
    if len(fp.workloads) > 1 and prepared.serves_all(fp):
        # everything fits (the greedy plan shows it): the workloads may well not compete for the
        # shared limits, and one-by-one optimal plans that fit together are optimal jointly
        # (the joint feasible set lies within the product of the one-by-one ones), with the sum
        # of their bounds as the bound. HiGHS proves that far faster one workload at a time.
        greedy = _counts(prepared.model, prepared.highs, prepared.start)
        counts, bound = _decompose(fp, t0 + DECOMPOSITION_SHARE * (deadline - t0), greedy)
        values = _complete(fp, prepared.model, prepared.highs, counts, deadline)
        model = prepared.highs
        if values is not None and model.value(_unserved(fp, prepared.model), values) <= _SHED_TOL:
            if bound is None:
                # out of time before every workload was solved alone: those solved keep their
                # plans in the joint solve's start (it proves its own gap), the rest the greedy's
                if model.value(prepared.model.cost, values) < model.value(prepared.model.cost, prepared.start):
                    prepared.start = values
            else:
                phases = [{"phase": f"cost, $/h, {len(fp.workloads)} workloads one by one", "objective":
                           model.value(prepared.model.cost, values), "bound": bound, "gap": None,
                           "seconds": round(time.perf_counter() - t0, 3), "status": "Optimal, one by one"}]
                lp_bound = None
                if deadline - time.perf_counter() > 0.05:  # the LP relaxation of full service, as a report
                    idx, _, _ = model.coefficients(_unserved(fp, prepared.model))
                    model.set_bounds(idx, np.zeros(len(idx)), np.zeros(len(idx)))
                    model.set_objective(prepared.model.cost)
                    lp = model.solve(deadline - time.perf_counter(), fp.relative_gap, relax=True, label="LP bound")
                    lp_bound = lp.objective if lp.status == "Optimal" else None
                plan = _finish(fp, prepared, values, bound, lp_bound, phases, _unreachable_messages(fp), False, t0)
                phases[0]["gap"] = plan.gap
                return _mark_shortage(plan, fp)
    plan = solve_joint(fp, deadline, prepared)
    plan.solve_time_s = time.perf_counter() - t0
    return _mark_shortage(plan, fp)


def _held_whole(fp: FleetProblem, prepared: _Prepared, t0: float) -> Plan:
    """The re-plan of a fleet where GPUs are short and every workload is held as it runs (served
    in full, or short as the running plan left it, with nothing freed for it: ``_kept``): its
    start, the running replicas with the routing that serves the most with them, is the plan.
    With every replica count and P/D decision fixed, the lexicographic phases could only confirm
    it (bench/solver_scale.py (c), 100 workloads with binding pools: 9 s of phases that changed
    nothing). The plan's gap is that of this re-plan: 0, nothing was left to choose."""
    m, model = prepared.model, prepared.highs
    values = _tight_short(fp, m, model, prepared.start)
    objective = model.value(m.cost, values)
    phases = [{"phase": "every workload held as it runs", "objective": objective, "bound": objective, "gap": 0.0,
               "seconds": 0.0, "status": "held"}]
    shedding = model.value(_unserved(fp, m), values) > _SHED_TOL
    return _finish(fp, prepared, values, objective, None, phases, _unreachable_messages(fp), shedding, t0)


def _prefer_higher_caps(plan: Plan, fp: FleetProblem) -> None:
    """Among equal-cost plans the solver is indifferent to power caps: raise each capped group to
    the highest cap of the same (pool, TP, role) that the power budget still allows and that costs
    no more (its energy at the predicted draw), highest tier first. A higher cap never lowers κ, so
    the group still carries its load, with more latency headroom. Changes ``plan`` in place."""
    if not any(a.config.cap_watts is not None for a in plan.assignments):
        return
    allowed = math.inf if fp.power_budget_watts is None else fp.power_budget_watts * fp.power_oversubscription
    pool_limit = lambda name: sum(x.gpus * x.config.limit_watts for x in plan.assignments if x.pool == name)  # noqa: E731
    by_key = {w.key: w for w in fp.workloads}
    changed: set[str] = set()
    for a in sorted(plan.assignments, key=lambda a: (-by_key[a.workload].tier_value, a.workload, a.pool, a.tp)):
        c = a.config
        if c.cap_watts is None:
            continue
        w = by_key[a.workload]
        siblings = sorted((o for o in w.configs if o.pool.name == c.pool.name and o.tp == c.tp and o.role == c.role
                           and o.limit_watts > c.limit_watts), key=lambda o: -o.limit_watts)
        for o in siblings:
            extra = a.gpus * (o.limit_watts - c.limit_watts)
            cost = a.replicas * _replica_cost_per_hour(fp, o)
            draw_ok = fp.power_oversubscription <= 1.0 or fp.power_budget_watts is None or (
                plan.power_watts + a.gpus * (o.watts_per_gpu - c.watts_per_gpu) <= fp.power_budget_watts)
            pool_budget = fp.pools[a.pool].power_budget_watts
            pool_ok = pool_budget is None or pool_limit(a.pool) + extra <= pool_budget + 1e-9
            if plan.limit_watts + extra <= allowed + 1e-9 and cost <= a.cost_per_hour + 1e-9 and draw_ok and pool_ok:
                old = _unit_load(c, a.bucket_rate_rps)
                a.config, a.cost_per_hour = o, cost
                if old > 0:
                    a.utilization *= _unit_load(o, a.bucket_rate_rps) / old
                changed.add(a.workload)
                break
    merged: dict[tuple[str, int], Assignment] = {}
    for a in plan.assignments:  # two groups raised to the same cap are one group (one Deployment)
        key = (a.workload, id(a.config))
        if key not in merged:
            merged[key] = a
            continue
        m = merged[key]
        total = m.replicas + a.replicas
        m.utilization = (m.utilization * m.replicas + a.utilization * a.replicas) / total
        m.replicas, m.gpus, m.cost_per_hour = total, m.gpus + a.gpus, m.cost_per_hour + a.cost_per_hour
        m.rate_rps, m.bucket_rate_rps = m.rate_rps + a.rate_rps, m.bucket_rate_rps + a.bucket_rate_rps
    plan.assignments = list(merged.values())
    plan.cost_per_hour = sum(a.cost_per_hour for a in plan.assignments)
    for key in changed:  # the groups of a workload read out again at their new caps
        mine = [a for a in plan.assignments if a.workload == key]
        _read_out(by_key[key], mine, fp.params, local_prefill_shares(mine, len(by_key[key].share)))


def _unit_load(c, bucket_rps: np.ndarray) -> float:
    """Σ_b rate_b / κ_b over the buckets the config serves within the SLO: its load in replicas."""
    ok = c.capacity_rps > 0
    return float((bucket_rps[ok] / c.capacity_rps[ok]).sum())


def _mark_shortage(plan: Plan, fp: FleetProblem) -> Plan:
    """A plan that leaves any demand unserved (capacity short, or an SLO no config meets) is a
    ``shortage``, whatever the solver's own status; the messages say why, after the problem's
    own notes (what it left out)."""
    if plan.cost_per_hour is not None:
        _prefer_higher_caps(plan, fp)
    if plan.status in ("optimal", "feasible") and any(r.shed_rps > 0 for r in plan.workloads):
        plan.status = "shortage"
    plan.messages = list(fp.notes) + plan.messages
    return plan


def solve_joint(fp: FleetProblem, deadline: float | None = None, prepared: "_Prepared | None" = None,
                hold: frozenset[int] = frozenset(), holdable_below: bool = False) -> Plan:
    """Solve the fleet MILP over all workloads at once, by ``deadline`` (``time.perf_counter``;
    default ``fp.time_limit_s`` from now): a wall-clock bound.

    One model (``highs.HighsModel``) serves every phase. It starts from a tier-respecting greedy
    plan (``solver.greedy``), so every phase has an incumbent: the lexicographic phases (each
    tier's shed req/s, then its missing minimum replicas, highest tier first) each improve on the
    last phase's plan with the higher tiers' results fixed, and the cost phase last. A phase the
    time limit stops keeps its best plan, which serves no lower tier at a higher tier's expense.
    A phase whose objective the incumbent already meets at 0 (nothing shed) needs no solve; one
    that falls short searches neighbourhoods of its start first (``_phase``).

    Args:
        prepared: the model and its start (``_prepare``), when the caller built them; its
            ``start`` becomes this solve's solution.
        hold: workloads whose replicas and P/D decisions stay as the start has them (an
            incremental re-plan); the cost phase's gap is then asked of the rest of the objective.
        holdable_below: a re-plan where GPUs are short: after each tier's phases, the lower-tier
            workloads that plan leaves as they run are held too (``_held_below``).

    Returns:
        A Plan. ``status`` is ``optimal`` (proven within the relative gap), ``feasible`` (time limit
        hit with a solution), ``shortage`` (some demand shed or a minimum not met;
        ``workloads[*].shed_rps`` and the messages say which and why) or ``infeasible`` (no plan
        at all; messages explain). ``phases`` gives each phase's result, bound and gap. Never
        raises for an infeasible input.
    """
    t0 = time.perf_counter()
    deadline = t0 + fp.time_limit_s if deadline is None else deadline
    messages = _unreachable_messages(fp)
    if prepared is None:
        prepared = _prepare(fp, deadline)
    m, model = prepared.model, prepared.highs
    # every held column is given back its bounds afterwards, those ``_phases`` holds too
    everyone = _held_columns(m, model, frozenset(range(len(fp.workloads))))
    released = model.bounds(everyone)
    try:
        if hold:
            _hold(m, model, hold, prepared.start)
        return _phases(fp, deadline, prepared, messages, t0, hold, holdable_below)
    finally:
        model.set_bounds(everyone, *released)


def _held_columns(m: _Model, model: HighsModel, hold: frozenset[int]) -> np.ndarray:
    """HiGHS columns a re-plan fixes for the workloads ``hold``: their replica counts and P/D
    decisions (a held workload keeps its P/D threshold, else an equal-cost threshold could change
    its router's configuration for nothing)."""
    return np.concatenate([_count_columns(m, model, lambda wi: wi in hold),
                           np.array([model.index[d.name] for (wi, _), d in m.pd.items() if wi in hold], dtype=np.int32)])


def _hold(m: _Model, model: HighsModel, hold: frozenset[int], values: np.ndarray) -> None:
    """Fix the replica counts and P/D decisions of the workloads ``hold`` at their values in the
    solution ``values`` (``_held_columns``)."""
    cols = _held_columns(m, model, hold)
    kept = values[cols].round()
    model.set_bounds(cols, kept, kept)


def _held_cost_gap(fp: FleetProblem, m: _Model, model: HighsModel, hold: frozenset[int], values: np.ndarray) -> float:
    """The relative gap the cost phase asks of a re-plan that holds the workloads ``hold`` as in
    ``values``. The gap is on the whole objective, of which the held replicas' part is fixed: the
    gap asked of the rest is the same share of that part (else a re-plan of one workload could
    leave it up to 1% of the whole fleet's cost dearer than its best plan), and the plan is
    "optimal" only when that gap is proven. ``fp.relative_gap`` when nothing is held."""
    total = model.value(m.cost, values)
    if not hold or total <= 1e-9:
        return fp.relative_gap
    cols = _held_columns(m, model, hold)
    held_only = np.zeros_like(values)
    held_only[cols] = values[cols]
    free = total - model.value(m.cost, held_only)
    return max(fp.relative_gap * free / total, 1e-6)


def _phases(fp: FleetProblem, deadline: float, prepared: "_Prepared", messages: list[str], t0: float,
            hold: frozenset[int] = frozenset(), holdable_below: bool = False) -> Plan:
    """``solve_joint``'s lexicographic phases, cost phase (to ``_held_cost_gap``) and read-out.
    The greedy passes between phases add no replica to a ``hold`` workload (its counts are fixed:
    one short as before would otherwise take GPUs a phase left free). With ``holdable_below``,
    ``hold`` grows after each tier's phases (``_held_below``)."""
    m, model, start = prepared.model, prepared.highs, prepared.start
    first_hold = hold
    phases: list[dict] = []
    tiers = sorted({w.tier_value for w in fp.workloads}, reverse=True)
    names = {w.tier_value: w.tier for w in fp.workloads}
    incumbent = start
    # a start that sheds nothing and meets every minimum meets every tier's phases as it stands:
    # they are recorded as met without the tier-by-tier completions (5 solves of the whole model)
    start_serves_all = incumbent is not None and model.value(_unserved(fp, m), incumbent) <= _SHED_TOL
    skipped = []  # phases the time limit left no time for: the plan is the last incumbent
    for k, tier_value in enumerate(tiers):
        if incumbent is not None and time.perf_counter() >= deadline:
            # out of time (a model that took the limit to build): each phase would still cost a
            # completion and a greedy pass, seconds past the limit at 50 workloads, for nothing
            skipped = tiers[k:]
            break
        members = [wi for wi, w in enumerate(fp.workloads) if w.tier_value == tier_value]
        if hold and incumbent is not None and not fp.scenarios and all(wi in hold for wi in members):
            # every workload of the tier is held: its replica counts and P/D decisions are fixed,
            # and the start's routing serves the most with them; its phases could change nothing
            # but spent seconds each on the whole model (bench/solver_scale.py (c), 100 workloads)
            incumbent = _tight_short(fp, m, model, incumbent)
            _held_tier(fp, m, model, incumbent, members, f"tier {names[tier_value]} (value {tier_value})", phases)
            continue
        # a tier's phases decide nothing for lower tiers, which can only take GPUs from it: their
        # replicas are held at 0 meanwhile, which shrinks the model HiGHS presolves and searches
        # (at 50 workloads, 7 s to 1 s for the top tier), and given back afterwards. A held one
        # keeps its replicas: it is held because no workload of a tier that falls short outranks
        # it, so this tier needs none of its GPUs, and must get them all back afterwards
        lower = _count_columns(m, model, lambda wi: not start_serves_all and fp.workloads[wi].tier_value < tier_value
                               and wi not in hold)
        saved = model.bounds(lower)
        model.set_bounds(lower, np.zeros(len(lower)), np.zeros(len(lower)))
        # the phase's start: this tier's and the higher tiers' replicas, and the held workloads'
        # (their counts are fixed; a start without them broke those bounds, and HiGHS drops such a
        # start: bench/solver_scale.py (c), gold w084 +20%, 33 held counts at 0 in gold's start)
        now = _counts(m, model, incumbent) if incumbent is not None else {}
        mine = _at_or_above(fp, now, tier_value, hold)
        # a completion only where lower-tier replicas leave the start (the lowest tier's phases,
        # and any tier once the lower ones hold nothing, start from the incumbent as it is: a
        # feasible solution with those very replicas, which the phase then improves)
        start = incumbent if start_serves_all or (incumbent is not None and mine == now) \
            else _complete(fp, m, model, mine, deadline)
        # the tier phases share half the remaining time; the cost phase, which decides the plan's
        # cost, keeps the other half. A 1% gap on shed req/s is plenty to rank tiers.
        shed = pulp.lpSum(_shed_rps(fp, m, wi) for wi in _members_with_scenarios(m, members))
        start = _tight_short(fp, m, model, start)
        search = lambda values, t=tier_value: _search_space(fp, m, model, t, members, values, _shed_rps, hold)  # noqa: E731
        start = _phase(model, shed, start, deadline, 2 * (len(tiers) - k),
                       max(fp.relative_gap, _TIER_GAP), f"tier {names[tier_value]} (value {tier_value}): req/s shed",
                       phases, _tiebreak(fp, m, min(fp.workloads[wi].rate_rps for wi in members)), search,
                       lambda values, t=tier_value: _top_up(fp, m, model, values, t, deadline, hold))
        start = _tight_short(fp, m, model, start)
        if start is not None and any(wi in m.short for wi in members):
            # then the tier's minimum replicas, before any lower tier is served
            short = pulp.lpSum(_short_replicas(fp, m, wi) for wi in members)
            search = lambda values, t=tier_value: _search_space(fp, m, model, t, members, values,  # noqa: E731
                                                                _short_replicas, hold)
            start = _phase(model, short, start, deadline, 4 * (len(tiers) - k), max(fp.relative_gap, _TIER_GAP),
                           f"tier {names[tier_value]} (value {tier_value}): minimum replicas short", phases,
                           _tiebreak(fp, m, 1.0), search)
        model.set_bounds(lower, *saved)
        if start is None and incumbent is not None:
            # nothing found with the lower tiers held at 0 (out of time): the last plan stands,
            # with this tier's shed fixed at what it reaches there
            start = incumbent
            _fix_objective(model, shed, model.value(shed, start))
        if start is None:
            messages.append(f"no plan within the solver's time limit ({fp.time_limit_s:g} s, FleetPolicy "
                            "spec.solver.timeLimitSeconds or --time-limit)")
            return Plan(status="infeasible", cost_per_hour=None, lp_bound=None, dual_bound=None, gap=None,
                        solve_time_s=time.perf_counter() - t0, solver=BACKEND, assignments=[],
                        workloads=[WorkloadResult(w.key, w.rate_rps, 0.0, w.rate_rps, w.tier, w.min_replicas, w.tier_value)
                                   for w in fp.workloads],
                        messages=messages, phases=phases)
        # the lower tiers again get replicas: those they had in the last plan where they still fit
        # beside this tier's (a plan that serves everything, as a re-plan's start often does, is
        # then kept whole, and nothing of theirs moves for nothing), else what the greedy gives
        # them from what this tier left
        below = {t for t in tiers if t < tier_value}
        incumbent = start  # ``now`` keeps the replicas of the plan before this tier's phases
        if below and not start_serves_all:
            # this tier's and the higher tiers' replicas: a held lower-tier workload's are in
            # ``theirs`` (given back first, ``_lower_tiers_back``, not counted twice)
            mine_now = _at_or_above(fp, _counts(m, model, start), tier_value)
            above = _at_or_above(fp, now, tier_value)
            theirs = {key: r for key, r in now.items() if key not in above}
            incumbent = _complete(fp, m, model, {**mine_now, **theirs}, deadline) if theirs else None
            if incumbent is None and theirs and fp.current and not fp.scenarios:
                # the phases rank the tier's shed and only prefer, within their tie-break's
                # weight, plans that use fewer GPUs: the one they stopped at may take the lower
                # tiers' GPUs for nothing. Then a plan as good for this tier beside every
                # lower-tier replica as it ran, where one is found within a quarter of this tier's
                # share of the time left (where none exists, HiGHS may search until its limit
                # before it proves so; found, it took 0.12 s at 100 workloads)
                incumbent = _beside_lower_tiers(fp, m, model, tier_value, hold, theirs,
                                                time.perf_counter() + (deadline - time.perf_counter())
                                                / (8 * (len(tiers) - k)), deadline)
            if incumbent is None and theirs and fp.current:
                incumbent = _lower_tiers_back(fp, m, model, mine_now, theirs, hold, below, deadline)
            if incumbent is None:
                held = {key: r for key, r in now.items() if key[0] in hold}
                counts = _greedy(fp, m, fixed={**held, **mine_now}, tiers=below, served=hold)
                incumbent = _complete(fp, m, model, counts, deadline)
            if incumbent is None:
                incumbent = start
            if holdable_below:
                # what this tier's phases left free (e.g. a workload whose demand fell gave back
                # GPUs) goes to the lower tiers' short workloads first, as in the re-plan's start
                # (``_prepare``): only then does a lower-tier workload as it runs read as one
                # nothing was freed for
                incumbent = _grown_below(fp, m, model, incumbent, hold, below, deadline)
                more = _held_below(fp, m, model, incumbent, hold, tier_value)
                if more:
                    _hold(m, model, more, incumbent)
                    hold = hold | more
    if hold != first_hold:
        messages.append(f"re-plan: {len(hold - first_hold)} more workload(s) held as they run once the tiers above "
                        "them were planned: those tiers' phases took none of their replicas, and no workload still "
                        "to plan that outranks them falls short")
    cost_gap = _held_cost_gap(fp, m, model, hold, incumbent) if incumbent is not None else fp.relative_gap
    start = _tight_short(fp, m, model, incumbent)
    if skipped or time.perf_counter() >= deadline:
        values, bound = start, None
        not_run = {"bound": None, "gap": None, "seconds": 0.0, "status": "not run: time limit"}
        phases += [{"phase": f"tier {names[t]} (value {t}): req/s shed", "objective": None, **not_run} for t in skipped]
        phases.append({"phase": "cost, $/h", "objective": model.value(m.cost, values), **not_run})
        before = f"the phases of tier(s) {', '.join(names[t] for t in skipped)}" if skipped else "the cost phase"
        kept = "the tier-respecting greedy start" if len(skipped) == len(tiers) else "the last phase's plan"
        messages.append(f"the solver's part of the time limit ({fp.time_limit_s:.3g} s) ran out before {before}: the "
                        f"plan is {kept}, with no bound on its cost; a longer limit lets the phases improve it")
    else:
        model.set_objective(m.cost)
        res = model.solve(deadline - time.perf_counter(), cost_gap, start, label="fleet MILP", unit="$/h")
        values, bound = (res.values, res.dual_bound) if res.has_solution else (start, None)
        values = _tight_short(fp, m, model, values)
        phases.append(_phase_report("cost, $/h", res, model.value(m.cost, values)))
    # from the plan itself: a phase out of time may have left no objective of its own
    shedding = model.value(_unserved(fp, m), values) > _SHED_TOL
    lp_bound = None
    if deadline - time.perf_counter() > 0.05 and not (hold and bound is not None):
        # the LP relaxation with every phase's result fixed bounds the cost too (one more solve
        # of the same model, in what is left of the limit). Not in a re-plan that holds workloads
        # and has the cost phase's bound: with them fixed it bounds only this re-plan, as that
        # bound already does, and no better (HiGHS's bound starts from the root LP); it took
        # 5.5 s of a 9.5-s re-plan (bench/solver_scale.py (c), 100 workloads, binding pools)
        lp = model.solve(deadline - time.perf_counter(), fp.relative_gap, relax=True, label="LP bound")
        lp_bound = lp.objective if lp.status == "Optimal" else None
    return _finish(fp, prepared, values, bound, lp_bound, phases, messages, shedding, t0, cost_gap)


def _finish(fp: FleetProblem, prepared: "_Prepared", values: np.ndarray, bound: float | None,
            lp_bound: float | None, phases: list[dict], messages: list[str], shedding: bool, t0: float,
            target_gap: float | None = None) -> Plan:
    """The Plan of the solution ``values`` of the prepared model, with its bounds on the objective
    (cost and churn, USD/h): the gap is the objective's distance from the best bound; the plan is
    ``optimal`` when that is within ``target_gap`` (default ``fp.relative_gap``)."""
    m, model = prepared.model, prepared.highs
    objective = model.value(m.cost, values)
    model.write_back(values)
    prepared.start = values
    plan = _extract(fp, m)
    for wsi, (sc, ws, _) in sorted(m.scenario_of.items()):
        shed = sum(_shed_share(m, wsi, b) * ws.rate_rps * ws.share[b] for b in range(len(ws.share)))
        if shed > 1e-6 * ws.rate_rps:
            messages.append(f"scenario {sc}: {ws.key}: {shed:.2f} of {ws.rate_rps:.2f} req/s cannot be served by this fleet")
    plan.solver = BACKEND
    plan.solve_time_s = time.perf_counter() - t0
    plan.lp_bound = lp_bound
    plan.dual_bound = bound
    plan.phases = phases
    bounds = [b for b in (lp_bound, bound) if b is not None]
    if objective <= 1e-9:
        plan.gap = 0.0
    elif bounds:
        plan.gap = max((objective - max(bounds)) / objective, 0.0)
    else:
        plan.gap = None  # no bound proven within the limit: the plan's distance from optimal is unknown
    if shedding:
        plan.status = "shortage"
        messages += _shortage_messages(fp, plan)
    else:
        target = fp.relative_gap if target_gap is None else target_gap
        plan.status = "optimal" if plan.gap is not None and plan.gap <= target + 1e-9 else "feasible"
    plan.messages = messages
    return plan


BACKEND = "HiGHS"


@dataclass
class _Prepared:
    """The joint model, built once: PuLP's view (``_Model``, for reading the plan), HiGHS's
    (``HighsModel``, solved in every phase) and the greedy start (None: none in time)."""

    model: _Model
    highs: HighsModel
    start: np.ndarray | None

    def serves_all(self, fp: FleetProblem) -> bool:
        """True when the greedy start sheds nothing and meets every minimum."""
        return self.start is not None and self.highs.value(_unserved(fp, self.model), self.start) <= _SHED_TOL


_READOUT_SAMPLES = 3
"""groups of each role (colocated, prefill, decode) whose latency prediction ``_readout_seconds``
times, after one untimed prediction. A prediction's cost depends on the group's role (50 bench
workloads: about 20 ms colocated, 16 ms prefill, 6 ms decode), so a median over all roles follows
whichever role the few samples hit (an ample plan of 73 groups read out in 1.33 s against a
0.57 s reserve). The first call in a process also pays for warming caches (80 ms against a 20 ms
median; at 300 workloads 75 ms against 14 ms): timed, it reserved 1.0-2.4 s for read-outs of
0.55-0.84 s at 50 binding workloads, time the tier phases then lacked"""


READOUT_GROUPS_MARGIN = 1.5
"""``_readout_seconds``'s factor for a plan with more groups than its start (a design margin; 50
bench workloads on ample pools: a start of 62 groups, a plan of 73)"""


def _readout_seconds(fp: FleetProblem, prepared: _Prepared) -> float:
    """Seconds ``_extract`` will take for a plan like the start: ``READOUT_GROUPS_MARGIN`` x the
    sum over roles of the groups of that role whose prediction is not remembered
    (``_predicted_latency``: a re-plan reads the groups it keeps out of its cache; at least
    ``READOUT_NEW_SHARE`` of the groups, for those it moves) x the median time of one uncached
    latency prediction of that role, timed here on ``_READOUT_SAMPLES`` groups of each role after
    one untimed call that warms the caches; at most half the limit. 0 without a start or where no
    workload has a model (Mélange input: no read-out). Raises nothing."""
    if prepared.start is None:
        return 0.0
    counts = list(_counts(prepared.model, prepared.highs, prepared.start))
    remembered = {(key[0], key[1]) for key in _LATENCY_CACHE}
    # a prefill group is read out as the plan runs it (``as_planned``): a copy of its configuration
    copies: dict[int, set] = {}
    for original, planned in _AS_PLANNED.values():
        copies.setdefault(id(original), set()).add(id(planned))

    def known(wi: int, ci: int) -> bool:
        key, c = fp.workloads[wi].key, id(fp.workloads[wi].configs[ci])
        return any((key, i) in remembered for i in {c} | copies.get(c, set()))

    new = [(wi, ci) for wi, ci in counts if not known(wi, ci)]
    timed = [(wi, ci) for wi, ci in (new or counts) if fp.workloads[wi].model is not None]
    if not timed:
        return 0.0
    by_role: dict[str, list] = {}
    for wi, ci in timed:
        by_role.setdefault(fp.workloads[wi].configs[ci].role, []).append((wi, ci))

    def seconds(wi: int, ci: int) -> float:
        w = fp.workloads[wi]
        t = time.perf_counter()
        predicted_latency(w, w.configs[ci], w.rate_rps * w.share, 0.5, fp.params)  # not cached: not the plan's load
        return time.perf_counter() - t

    seconds(*timed[-1])  # warms the caches
    per_group = 0.0  # s per timed group: each role's median, weighted by its share of the groups
    for keys in by_role.values():
        sample = [keys[k * len(keys) // _READOUT_SAMPLES] for k in range(min(_READOUT_SAMPLES, len(keys)))]
        per_group += len(keys) / len(timed) * statistics.median(seconds(wi, ci) for wi, ci in sample)
    groups = max(len(new), READOUT_NEW_SHARE * len(counts))
    return min(READOUT_GROUPS_MARGIN * groups * per_group, 0.5 * fp.time_limit_s)


READOUT_NEW_SHARE = 0.1
"""least share of the start's groups ``_readout_seconds`` counts as read out afresh (a design choice:
a re-plan whose start is all remembered still moves some workloads, whose groups are new)"""


def _unserved(fp: FleetProblem, m: _Model) -> pulp.LpAffineExpression:
    """Shed req/s of every workload and scenario plus every missing minimum replica."""
    every = list(range(len(fp.workloads)))
    return (pulp.lpSum(_shed_rps(fp, m, wi) for wi in _members_with_scenarios(m, every))
            + pulp.lpSum(_short_replicas(fp, m, wi) for wi in every))


def _decompose(fp: FleetProblem, deadline: float, fallback: dict[tuple[int, int], int]
               ) -> tuple[dict[tuple[int, int], int], float | None]:
    """Each workload's cheapest plan on its own (its own small model: build, greedy start, cost
    phase), by ``deadline``. Returns ((workload, config) -> replicas, the sum of the one-by-one
    bounds on the objective). A workload not solved to the relative gap by the deadline, or not
    served in full alone, keeps its counts in ``fallback`` (the joint greedy start's) and the
    bound is None: the union is then only a start for the joint solve, not a proven plan, but
    the workloads solved in time are not thrown away with it."""
    counts: dict[tuple[int, int], int] = {}
    bound: float | None = 0.0
    for wi, w in enumerate(fp.workloads):
        # the workload's problem alone, with the placement's limits (an earlier solve of this call may have it)
        key = (alone_token(fp, wi, {}), repr(fp.placement_limits))
        part = None
        if key in fp.alone_plans:
            replicas, part_bound = fp.alone_plans[key]
            part = {(wi, ci): r for ci, r in replicas.items()}, part_bound
        elif time.perf_counter() < deadline:
            part = _decompose_one(fp, wi, w, deadline)
            if part is not None:
                fp.alone_plans[key] = ({ci: r for (_, ci), r in part[0].items()}, part[1])
        if part is None:
            bound = None
            counts.update({k: r for k, r in fallback.items() if k[0] == wi})
            continue
        mine, part_bound = part
        fp.alone_optima.add(alone_token(fp, wi, mine))
        counts.update(mine)
        if bound is not None:
            bound += part_bound
    return counts, bound


def _decompose_one(fp: FleetProblem, wi: int, w: WorkloadProblem, deadline: float
                   ) -> tuple[dict[tuple[int, int], int], float] | None:
    """Workload ``wi``'s cheapest plan on its own, solved to the relative gap by ``deadline``:
    ((wi, config) -> replicas, its bound on the objective), or None."""
    mine = [[x for x in ws if x.key == w.key] for ws in fp.scenarios]
    sub = dataclasses.replace(fp, workloads=[w], scenarios=mine)
    part = _prepare(sub, deadline)
    if part.start is None or not part.serves_all(sub):
        return None
    m, model = part.model, part.highs
    idx, _, _ = model.coefficients(_unserved(sub, m))
    model.set_bounds(idx, np.zeros(len(idx)), np.zeros(len(idx)))  # served in full, every minimum met
    model.set_objective(m.cost)
    res = model.solve(deadline - time.perf_counter(), fp.relative_gap, part.start, label=f"{w.key} alone")
    if not res.has_solution or res.dual_bound is None:
        return None
    value = model.value(m.cost, res.values)
    if value > 1e-9 and (value - res.dual_bound) / value > fp.relative_gap + 1e-9:
        return None
    return {(wi, ci): r for (_, ci), r in _counts(m, model, res.values).items()}, res.dual_bound


IMPROVE_SHARE = 0.5
"""part of what is left of a re-plan's time limit, once its model and start are built, that may go
to solving alone, one by one, the workloads it would keep as they run (``_improve_settled``),
before the joint solve of the rest (a design choice: the rest needs the joint solve; a workload
not checked in time is kept, and the next re-plan, with the operator's memo of those already
checked, goes on where this one stopped)"""


def alone_token(fp: FleetProblem, wi: int, replicas: dict[tuple[int, int], int]) -> str:
    """A digest (hex) of what workload ``wi``'s one-by-one model reads and of its replicas
    ((workload, config) -> count, this model's indices): its demand, minimum and tier, each
    configuration's group key, capacities, price, power and pool limits, its copies in
    ``fp.scenarios``, and the policy's gap, energy price, power budget, routing and churn horizon.
    Equal tokens: the same problem alone with the same plan (``FleetProblem.alone_optima``). A
    token that misses an input only makes a re-plan keep a workload as it runs, as re-plans did
    before the check."""
    w = fp.workloads[wi]
    h = hashlib.sha256()
    quotas = sorted((name, limit) for name, (limit, keys) in fp.gpu_quotas.items() if w.key in keys)
    h.update(repr((w.key, w.rate_rps, w.min_replicas, w.tier_value, w.miss_budget, fp.relative_gap,
                   fp.energy_price_per_kwh, fp.power_budget_watts, fp.power_oversubscription, fp.routing_mode,
                   fp.pin_buckets, fp.churn_horizon_s, quotas)).encode())
    copies = [x for ws in fp.scenarios for x in ws if x.key == w.key]  # --scenarios: its other demands
    for a in (w.share, w.input_tokens, w.output_tokens, w.unservable, *(x.share for x in copies)):
        h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
    h.update(repr([x.rate_rps for x in copies]).encode())
    for ci, c in enumerate(w.configs):
        h.update(repr((config_key(w.key, c), replicas.get((wi, ci), 0), c.cost_per_replica_hour, c.gpu_watts,
                       c.pool.max_gpus, c.pool.power_budget_watts, c.pool.kv_domain)).encode())
    for c in [c for x in [w, *copies] for c in x.configs]:
        for a in (c.capacity_rps, c.whole_capacity_rps, c.kv_transfer_s, c.throughput_rps):
            h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _workload_objective(fp: FleetProblem, wi: int, replicas: dict[tuple[int, int], int]) -> float:
    """Workload ``wi``'s part of the MILP objective with ``replicas`` ((workload, config) -> count):
    its replicas' USD/h (``_replica_cost_per_hour``) plus the churn against ``fp.current``
    (``_churn_terms``: what it starts and stops, spread over the churn horizon), USD/h."""
    w = fp.workloads[wi]
    total = 0.0
    for ci, c in enumerate(w.configs):
        r = replicas.get((wi, ci), 0)
        cur = fp.current.get(config_key(w.key, c), 0)
        start_per_hour, stop_per_hour = _churn_per_hour(fp, w, c)
        total += r * _replica_cost_per_hour(fp, c) + max(r - cur, 0) * start_per_hour + max(cur - r, 0) * stop_per_hour
    return total


@dataclass
class _Checked:
    """What ``_improve_settled`` did: workloads solved alone, those moved, the saving (USD/h)."""

    solved: int = 0
    known: int = 0
    recalled: int = 0
    """workloads whose cheaper plan alone an earlier check found (``FleetProblem.alone_moves``)"""
    moved: list[str] = dataclasses.field(default_factory=list)
    saving_per_hour: float = 0.0

    def unchecked(self, kept: int) -> int:
        """Of ``kept`` workloads the re-plan would keep, those it did not check in its time."""
        return max(kept - self.solved - self.known - self.recalled, 0)

    def message(self, kept: int) -> str:
        """The plan's line about it, for ``kept`` workloads the re-plan would keep."""
        left = self.unchecked(kept)
        text = (f"kept workloads checked against their best plan alone: {self.known} known optimal, "
                + (f"{self.recalled} with a cheaper plan found before, " if self.recalled else "")
                + f"{self.solved} solved now")
        if left > 0:
            text += f", {left} not checked in this re-plan's time (kept as they run; the next re-plan goes on)"
        if self.moved:
            text += (f"; {len(self.moved)} moved to a plan cheaper by ${self.saving_per_hour:.2f}/h, churn included "
                     f"({', '.join(self.moved[:5])}{', ...' if len(self.moved) > 5 else ''})")
        return text


def _improve_settled(fp: FleetProblem, prepared: _Prepared, settled: frozenset[int], until: float,
                     deadline: float, known: frozenset[int] = frozenset()) -> _Checked:
    """Move each workload in ``settled`` (kept as it runs) whose running replicas cost more than
    its best plan alone, churn included (``_workload_objective``), to that plan, in the prepared
    start, where the moves together still serve everything: the joint re-plan then holds them
    there. Solves alone (``_decompose_one``), costliest first, until ``until``; a workload whose
    running plan is in ``fp.alone_optima`` is not solved again, and each one shown optimal is
    added there; nor is one whose cheaper plan alone an earlier check found (``fp.alone_moves``,
    where each move found is kept until it is made), so that moves that keep failing to fit do not
    take, costliest first, the time of the workloads not yet checked. A move is kept only where the
    workload's objective falls (ties keep what runs). ``known``: workloads already found in
    ``fp.alone_optima`` (``_narrowed``: modelled on their running configurations, whose token
    differs)."""
    m, model = prepared.model, prepared.highs
    counts = _counts(m, model, prepared.start)
    mine = lambda wi, cs: {k: r for k, r in cs.items() if k[0] == wi}  # noqa: E731
    out = _Checked()
    todo = []
    moves: dict[int, dict] = {}
    saving: dict[int, float] = {}  # USD/h, churn included
    token = {wi: alone_token(fp, wi, mine(wi, counts)) for wi in settled}
    running = {wi: _workload_objective(fp, wi, mine(wi, counts)) for wi in settled}
    for wi in settled:
        if wi in known or token[wi] in fp.alone_optima:
            out.known += 1
        elif token[wi] in fp.alone_moves:  # a move found before that did not fit: no solve again
            best = {(wi, ci): r for ci, r in fp.alone_moves[token[wi]].items()}
            gain = running[wi] - _workload_objective(fp, wi, best)
            if gain > 1e-9 * max(1.0, running[wi]):
                moves[wi], saving[wi] = best, gain
                out.recalled += 1
            else:
                todo.append(wi)
        else:
            todo.append(wi)
    todo.sort(key=lambda wi: (-running[wi], wi))
    for wi in todo:
        if time.perf_counter() >= until:
            break
        part = _decompose_one(fp, wi, fp.workloads[wi], until)
        if part is None:
            continue
        out.solved += 1
        gain = running[wi] - _workload_objective(fp, wi, part[0])
        if gain > 1e-9 * max(1.0, running[wi]):
            moves[wi], saving[wi] = part[0], gain
            fp.alone_moves[token[wi]] = {ci: r for (_, ci), r in part[0].items()}
        else:
            fp.alone_optima.add(token[wi])
    if not moves:
        return out

    def union_of(chosen):
        union = {k: r for k, r in counts.items() if k[0] not in chosen}
        for wi in chosen:
            union.update(moves[wi])
        values = _complete(fp, m, model, union, deadline)
        return values if values is not None and model.value(_unserved(fp, m), values) <= _SHED_TOL else None

    values = union_of(moves)
    if values is None:
        # the moves together break a shared limit: most often a pool's size, as several move to the
        # same cheap pool. Keep the largest savings that fit the pools' sizes, then check once more
        fitting = _fitting_moves(fp, counts, moves, saving)
        values = union_of(fitting) if fitting and len(fitting) < len(moves) else None
        if values is None:
            return out  # everything stays as it runs; the next re-plan tries the moves again (alone_moves)
        moves = {wi: moves[wi] for wi in fitting}
    out.saving_per_hour = sum(saving[wi] for wi in moves)
    out.moved = sorted(fp.workloads[wi].key for wi in moves)
    for wi, best in moves.items():
        fp.alone_optima.add(alone_token(fp, wi, best))
        fp.alone_moves.pop(token[wi], None)
    prepared.start = values
    return out


AFRESH_ALONE_MIN = 10
"""workloads planned afresh from which a re-plan first solves them alone (``_start_afresh_alone``).
Measured on bench/solver_scale.py's 100 workloads, ample pools: with 1 changed workload the held
joint solve reaches the gap by itself and solving it alone first only added time (re-plan median
4.2 and 4.7 s in two runs without, 5.3 s in one with); with 50 new ones the joint solve stopped at its 30 s limit at $3,545/h, and from
their plans alone reached $2,929/h (the optimum from scratch: $2,920/h). 10 lies between the two,
not measured further."""


def _start_afresh_alone(fp: FleetProblem, prepared: _Prepared, settled: frozenset[int], until: float,
                        deadline: float) -> int:
    """Give the workloads a re-plan plans afresh (those not in ``settled``) their cheapest plans
    alone, churn included (``_decompose_one``, until ``until``), in the prepared start, where those
    plans together with the rest of the start still serve everything and cost less than the start.
    Each plan shown optimal alone is recorded (``fp.alone_optima``), so the next re-plan need not
    solve it again. Returns the number of workloads solved alone whose plans the start now holds
    (0: the start is as it was)."""
    m, model = prepared.model, prepared.highs
    counts = _counts(m, model, prepared.start)
    union = dict(counts)
    solved = []
    for wi in range(len(fp.workloads)):
        if wi in settled:
            continue
        if time.perf_counter() >= until:
            break
        part = _decompose_one(fp, wi, fp.workloads[wi], until)
        if part is None:
            continue
        union = {k: r for k, r in union.items() if k[0] != wi}
        union.update(part[0])
        solved.append((wi, part[0]))
    if not solved or union == counts:
        return 0
    values = _complete(fp, m, model, union, deadline)
    if (values is None or model.value(_unserved(fp, m), values) > _SHED_TOL
            or model.value(m.cost, values) >= model.value(m.cost, prepared.start) - 1e-9):
        return 0
    for wi, best in solved:
        fp.alone_optima.add(alone_token(fp, wi, best))
    prepared.start = values
    return len(solved)


def _fitting_moves(fp: FleetProblem, counts: dict[tuple[int, int], int], moves: dict[int, dict],
                   saving: dict[int, float]) -> list[int]:
    """The workloads of ``moves`` (workload -> its new (workload, config) -> replicas) whose moves,
    taken largest ``saving`` (USD/h) first, keep every pool within its ``max_gpus`` from the
    replicas ``counts``; a move that would overfill a pool is left out."""
    used: dict[str, int] = {}
    for (wi, ci), r in counts.items():
        c = fp.workloads[wi].configs[ci]
        used[c.pool.name] = used.get(c.pool.name, 0) + r * c.tp
    fitting = []
    for wi in sorted(moves, key=lambda wi: (-saving[wi], wi)):
        delta: dict[str, int] = {}
        now = {k: r for k, r in counts.items() if k[0] == wi}
        for replicas, sign in ((moves[wi], 1), (now, -1)):
            for (_, ci), r in replicas.items():
                c = fp.workloads[wi].configs[ci]
                delta[c.pool.name] = delta.get(c.pool.name, 0) + sign * r * c.tp
        if all(used.get(p, 0) + d <= fp.pools[p].max_gpus for p, d in delta.items() if d > 0):
            fitting.append(wi)
            for p, d in delta.items():
                used[p] = used.get(p, 0) + d
    return fitting


@contextlib.contextmanager
def _collection_paused():
    """Python's cyclic garbage collection paused for the block (restored as it was); ``solve``
    holds it over the whole solve. Building the fleet model allocates a few hundred thousand
    objects, all alive, and the phases, the greedy's options and the read-out allocate as much
    again: the allocations alone trigger full collections that walk every object in the process
    and free nothing (a solve leaves no cyclic garbage). At 100 workloads on 2 cores
    (bench/solver_scale.py (c)) that was a second of a re-plan while only the construction was
    paused, and 0.4-0.5 s of a 4.4-s solve after it. Reference counting still frees everything
    else meanwhile."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _prepare(fp: FleetProblem, deadline: float) -> _Prepared:
    """Build the joint model (shedding allowed, minimums soft) and its start: the running plan
    (``fp.current``) with the greedy's additions for what it leaves unserved, where it fits the
    limits; else the greedy plan."""
    m = _build(fp, allow_shed=True)  # within ``solve``'s ``_collection_paused``
    model = HighsModel(m.prob)
    start = None
    if fp.current:
        # the running P/D thresholds too: with the counts fixed, thresholds that serve the same are
        # tied, and a workload the re-plan holds keeps the start's (a different one rewrites its
        # router's configuration, and restarts its picker, for nothing)
        cols, values = _running_thresholds(fp, m, model)
        saved = model.bounds(cols)
        model.set_bounds(cols, values, values)
        try:
            # the running replicas alone first: what they serve in full the greedy leaves as it
            # runs (its own load estimate can read a running P/D group as short, and its extra
            # replicas then made workloads that need nothing new look changed)
            running = _current_counts(fp, m)
            alone = _complete(fp, m, model, running, deadline)
            if alone is not None and _pools_full(fp, m, running):
                # no pool has room for another replica: the greedy could add nothing (at 100
                # workloads with binding pools, its options and pass took 0.8 s of a re-plan)
                start = alone
            else:
                served = frozenset() if alone is None else frozenset(
                    wi for wi in range(len(fp.workloads)) if _serves(fp, m, model, wi, alone))
                start = _complete(fp, m, model, _greedy(fp, m, fixed=running, served=served), deadline)
        finally:
            model.set_bounds(cols, *saved)
    return _Prepared(m, model, start if start is not None else _greedy_start(fp, m, model, deadline))


def _pools_full(fp: FleetProblem, m: _Model, counts: dict[tuple[int, int], int]) -> bool:
    """Whether the replica counts ``counts`` ((workload, config) -> replicas) leave no pool room
    for one more replica of any configuration the model has on it: each pool's free GPUs
    (``maxGPUs`` less those counted) fewer than the smallest TP degree modelled there."""
    used: dict[str, int] = {}
    smallest: dict[str, int] = {}
    for (wi, ci) in m.n:
        if wi >= SCENARIO_STRIDE:
            continue
        c = _workload(fp, m, wi).configs[ci]
        smallest[c.pool.name] = min(smallest.get(c.pool.name, c.tp), c.tp)
        used[c.pool.name] = used.get(c.pool.name, 0) + counts.get((wi, ci), 0) * c.tp
    return all(fp.pools[name].max_gpus - used[name] < tp for name, tp in smallest.items())


def _running_thresholds(fp: FleetProblem, m: _Model, model: HighsModel) -> tuple[np.ndarray, np.ndarray]:
    """The P/D decisions of the running plan's thresholds (``FleetProblem.current_pd_thresholds``):
    HiGHS columns of ``d[w, i]`` and their values, 1 where input class ``i`` starts at or above the
    threshold. Workloads whose running threshold is not one of their routed class edges, or that
    must disaggregate every prompt, are left out (their decisions stay free)."""
    cols, values = [], []
    for wi, w in enumerate(fp.workloads):
        thr = fp.current_pd_thresholds.get(w.key)
        mine = sorted((i, d) for (wj, i), d in m.pd.items() if wj == wi)
        if thr is None or not mine or not any(int(INPUT_EDGES_TOKENS[i]) == thr for i, _ in mine) \
                or any((d.lowBound or 0) >= 1 for _, d in mine):
            continue
        for i, d in mine:
            cols.append(model.index[d.name])
            values.append(1.0 if INPUT_EDGES_TOKENS[i] >= thr else 0.0)
    return np.array(cols, dtype=np.int32), np.array(values, dtype=float)


def _current_counts(fp: FleetProblem, m: _Model) -> dict[tuple[int, int], int]:
    """The running plan (``fp.current``) as (workload, config) -> replicas of this model."""
    out = {}
    for (wi, ci), _ in m.n.items():
        if wi < SCENARIO_STRIDE:
            w = fp.workloads[wi]
            r = fp.current.get(config_key(w.key, w.configs[ci]), 0)
            if r > 0:
                out[wi, ci] = r
    return out


SHED_AS_BEFORE_TOL_RPS = 1e-3
"""req/s by which a workload's shed in a re-plan's start may exceed the running plan's
(``FleetProblem.current_shortfall``) and still count as short as before (``_short_as_before``):
plan documents give shedRps to 1e-4 req/s, and the start's routing LP solves to HiGHS's
feasibility tolerance (1e-7)"""


def _short_as_before(fp: FleetProblem, prepared: _Prepared, settled: frozenset[int]) -> frozenset[int]:
    """Of the workloads not ``settled``, those a re-plan in a shortage finds as the running plan
    left them: the start gives them exactly their running groups (none, for one shed in full), and
    they shed no more req/s (within ``SHED_AS_BEFORE_TOL_RPS``) and miss no more minimum replicas
    than the running plan says they did (``FleetProblem.current_shortfall``). Nothing since has
    made them worse off, and the greedy start found no free GPUs to add for them. Indices of
    ``fp.workloads``; empty without the running plan's shortfall or under ``fp.scenarios`` (whose
    copies share the main workloads' replicas)."""
    if not fp.current_shortfall or fp.scenarios:
        return frozenset()
    m, model, start = prepared.model, prepared.highs, prepared.start
    running = _per_workload(_current_counts(fp, m))
    now = _per_workload(_counts(m, model, start))
    out = set()
    for wi, w in enumerate(fp.workloads):
        before = fp.current_shortfall.get(w.key)
        if wi in settled or before is None:
            continue
        if now.get(wi, {}) != running.get(wi, {}):
            continue
        if (model.value(_shed_rps(fp, m, wi), start) <= before[0] + SHED_AS_BEFORE_TOL_RPS
                and model.value(_short_replicas(fp, m, wi), start) <= before[1] + _SHED_TOL):
            out.add(wi)
    return frozenset(out)


def _falls_short(fp: FleetProblem, m: _Model, model: HighsModel, values: np.ndarray, wi: int) -> bool:
    """Whether the solution ``values`` sheds demand of workload ``wi`` that some configuration
    could serve within the SLO (``servable_buckets``; demand none can serve does not count: no GPU
    helps it), or misses its minimum replicas."""
    w = fp.workloads[wi]
    unservable = w.rate_rps * float(w.share[~servable_buckets(w.configs, len(w.share))].sum())
    return (model.value(_shed_rps(fp, m, wi), values) - unservable > _SHED_TOL
            or model.value(_short_replicas(fp, m, wi), values) > _SHED_TOL)


def _idle_replica(fp: FleetProblem, m: _Model, model: HighsModel, values: np.ndarray,
                  mine: dict[tuple[int, int], int]) -> bool:
    """Whether one workload's replicas ``mine`` ((workload, config) -> replicas in ``values``)
    leave a whole replica idle (over-provisioned) that its minimum does not need: ``minReplicas``
    counts the replicas of its serving configurations (``_serving_configs``), so an idle one of
    those counts only where they number more than the minimum. (A minimum of 3 replicas at 1 req/s
    keeps two of them idle by design; read as over-provisioned, it kept every short workload of
    its tier and below from being held in a re-plan, as if it might give GPUs back.)"""
    if not mine:
        return False
    serving, spare = _above_minimum(fp, m, mine)
    return any(r - model.value(m.load[key], values) >= 1.0 - 1e-6 and (key[1] not in serving or spare >= 1)
               for key, r in mine.items() if key in m.load)


def _above_minimum(fp: FleetProblem, m: _Model, mine: dict[tuple[int, int], int]) -> tuple[set[int], int]:
    """For one workload's replicas ``mine`` ((workload, config) -> replicas, not empty): the
    indices of its configurations whose replicas count toward ``minReplicas``
    (``_serving_configs``), and how many replicas of those it has beyond the minimum (negative
    where it misses it)."""
    w = _workload(fp, m, next(iter(mine))[0])
    serving = set(_serving_configs(w))
    return serving, sum(r for (_, ci), r in mine.items() if ci in serving) - w.min_replicas


def _per_workload(counts: dict[tuple[int, int], int]) -> dict[int, dict[tuple[int, int], int]]:
    """Replica counts ((workload, config) -> replicas) split by workload: workload -> its counts
    (a workload without replicas is absent)."""
    out: dict[int, dict[tuple[int, int], int]] = {}
    for key, r in counts.items():
        out.setdefault(key[0], {})[key] = r
    return out


def _holdable_in_shortage(fp: FleetProblem, prepared: _Prepared, settled: frozenset[int],
                          as_before: frozenset[int] = frozenset(), decided: frozenset[int] = frozenset(),
                          fixed: frozenset[int] = frozenset()) -> frozenset[int]:
    """Of the ``settled`` workloads (``_settled``) and those short as before (``_short_as_before``),
    those a re-plan may hold while the start sheds demand it could serve or misses a minimum (GPUs
    short): the ones of a tier at or above every other workload that falls short
    (``_falls_short``). A lower-tier workload stays free, since a higher tier that falls short may
    take its GPUs; a held one is outranked by no workload that could use its GPUs, so holding it
    cannot break tier order. A workload short as before is held only above the tier of every
    workload planned afresh that runs as before with a whole replica idle (over-provisioned, after
    its demand fell): that one will give GPUs back, which the short one, if held, could not take.
    (One the start grew, e.g. by ``_repaired_start``, took its GPUs from lower tiers.)
    ``decided``: workloads of a tier whose phases are done (``_held_below``), whose shortfall no
    longer counts (they can take no more GPUs) but whose idle replicas do (the later phases may
    still shrink them); ``fixed``: workloads held already, which count for neither."""
    m, model, start = prepared.model, prepared.highs, prepared.start
    now = _per_workload(_counts(m, model, start))
    running = _per_workload(_current_counts(fp, m))
    top = freeing = None
    for wi, w in enumerate(fp.workloads):
        if wi in settled or wi in as_before or wi in fixed:
            continue
        if wi not in decided and _falls_short(fp, m, model, start, wi):
            top = w.tier_value if top is None else max(top, w.tier_value)
        elif now.get(wi, {}) == running.get(wi, {}) and _idle_replica(fp, m, model, start, now.get(wi, {})):
            freeing = w.tier_value if freeing is None else max(freeing, w.tier_value)
    held = {wi for wi in settled if top is None or fp.workloads[wi].tier_value >= top}
    return frozenset(held | {wi for wi in as_before if (top is None or fp.workloads[wi].tier_value >= top)
                             and (freeing is None or fp.workloads[wi].tier_value > freeing)})


def _beside_lower_tiers(fp: FleetProblem, m: _Model, model: HighsModel, tier_value: int, hold: frozenset[int],
                        theirs: dict[tuple[int, int], int], until: float, deadline: float) -> np.ndarray | None:
    """In a re-plan, after the phases of tier ``tier_value`` whose plan leaves no room for every
    lower-tier replica of the plan before them (``theirs``, (workload, config) -> replicas): a
    plan (column values, shape (columns,)) that keeps those replicas as they are and serves this
    tier and the higher ones as well as the phases did (their results stay fixed in the model),
    or None where none is found by ``until`` (``time.perf_counter`` seconds) or none exists; one
    found but stopped by ``until`` is routed again (``_complete``) within ``deadline``, the
    solve's.
    Raises nothing. The lower tiers' bounds are restored after; the objective stays set, as after
    ``_complete`` (every solve sets its own). The lower tiers' counts, ``hold``'s aside (fixed
    already), are fixed at ``theirs``; the objective is the whole plan's shed plus the phases'
    tie-break (``_tiebreak``: GPUs used and moved), so the lower tiers' routing serves the most
    with their replicas and this tier's takes no GPU it does not need.

    Why: a phase stops once its bound is within the tie-break's weight, so among plans that shed
    the same it may keep one that takes GPUs the lower tiers run on; those workloads are then
    planned afresh in their own tiers' phases (bench/solver_scale.py (c), 100 workloads with
    binding pools, gold w019 +20%: its phase moved it to 12 GPUs, two silver workloads lost
    replicas, and the silver phases took 1.1 s to give them back, where 6 GPUs served it as well)."""
    keys, cols = _count_index(m, model)
    pick = np.fromiter((fp.workloads[wi].tier_value < tier_value and wi not in hold for wi, _ in keys),
                       dtype=bool, count=len(keys))
    lower = cols[pick]
    fixed = np.array([theirs.get(key, 0) for key, chosen in zip(keys, pick) if chosen], dtype=float)
    saved = model.bounds(lower)
    model.set_bounds(lower, fixed, fixed)
    term, weight = _tiebreak(fp, m, 1.0)
    model.set_objective(_unserved(fp, m) + term)
    res = model.solve(max(until - time.perf_counter(), 0.05), 1e-6, label="beside the lower tiers",
                      unit="req/s shed", abs_gap=weight)
    model.set_bounds(lower, *saved)
    if not res.has_solution:
        return None
    if res.status != "Optimal":
        # stopped by ``until``: the lower tiers' routing may not serve the most with their replicas
        # yet (a workload that then reads as shedding more than before is planned afresh, not held).
        # Not within ``until``, which is spent: 0.05 s is less than the whole model's presolve
        completed = _complete(fp, m, model, _counts(m, model, res.values), deadline)
        return res.values if completed is None else completed
    return res.values


def _lower_tiers_back(fp: FleetProblem, m: _Model, model: HighsModel, mine_now: dict[tuple[int, int], int],
                      theirs: dict[tuple[int, int], int], hold: frozenset[int], below: set[int],
                      deadline: float) -> np.ndarray | None:
    """In a re-plan, after a tier's phases where the lower tiers' replicas ``theirs`` do not all fit
    beside that tier's result ``mine_now`` ((workload, config) -> replicas, both): each lower-tier
    workload keeps all its replicas where they still fit, the ``hold`` ones first and then the
    highest tier first (``_given_back``), and only those given none back get the greedy's
    (tiers ``below``), so the tier's phase took GPUs from the lowest tier, not from whichever
    workloads the greedy reached last (bench/solver_scale.py (c), 100 workloads with binding
    pools: a gold workload's phase cost four silver workloads their replicas and kept the silver
    tier's phases from holding any). Returns the solution (``_complete``), or None where a held
    workload's replicas no longer fit or no completion is found in time."""
    mine_before = _per_workload(theirs)
    held_first = {wi: r for wi, r in mine_before.items() if wi in hold}
    back, lost = _given_back(fp, m, mine_now, held_first, list(held_first))
    if lost:
        return None
    back, lost = _given_back(fp, m, back, mine_before, [wi for wi in mine_before if wi not in hold])
    counts = _greedy(fp, m, fixed=back, tiers=below, served=frozenset(mine_before) - lost) if lost else back
    return _complete(fp, m, model, counts, deadline)


def _grown_below(fp: FleetProblem, m: _Model, model: HighsModel, values: np.ndarray, hold: frozenset[int],
                 below: set[int], deadline: float) -> np.ndarray:
    """The solution ``values`` with the greedy's replicas (``solver.greedy``) added for the
    workloads of the tiers ``below`` that it does not serve in full, where the shared limits leave
    room (none to a ``hold`` workload), routed by ``_complete``; ``values`` itself where no pool
    has room, the greedy adds nothing or no completion is found in time."""
    counts = _counts(m, model, values)
    if _pools_full(fp, m, counts):
        return values
    served = hold | frozenset(wi for wi, w in enumerate(fp.workloads)
                              if w.tier_value in below and _serves(fp, m, model, wi, values))
    grown = _greedy(fp, m, fixed=counts, tiers=below, served=served)
    if grown == counts:
        return values
    completed = _complete(fp, m, model, grown, deadline)
    return values if completed is None else completed


def _held_below(fp: FleetProblem, m: _Model, model: HighsModel, values: np.ndarray, hold: frozenset[int],
                tier_value: int) -> frozenset[int]:
    """In a re-plan where GPUs are short (``solve_joint`` with ``holdable_below``), after the phases
    of tier ``tier_value``: the workloads of lower tiers, not yet in ``hold``, that the plan
    ``values`` (those phases' result, the lower tiers given back their replicas where they fit)
    leaves as they run, and that the rest of the re-plan may hold: the rules of ``_kept`` applied
    to the lower tiers alone. The tiers at and above are decided: their shed and missing minimums
    are fixed by their phases, so they can take no more of the lower tiers' GPUs, and a workload of
    theirs that still falls short (no GPU it can use is left, e.g. a changed workload already at
    its best) no longer keeps every lower tier free. Without this, one short workload of the top
    tier left every lower-tier workload to the phases (bench/solver_scale.py (c), 100 workloads
    with binding pools, a gold workload +20% that sheds even at its optimum: 84 workloads planned
    afresh, the phases stopped by the 30-s limit, 17 others changed)."""
    here = _Prepared(m, model, values)
    lower = lambda wi: fp.workloads[wi].tier_value < tier_value and wi not in hold  # noqa: E731
    settled = frozenset(wi for wi in _settled(fp, here) if lower(wi))
    as_before = frozenset(wi for wi in _short_as_before(fp, here, settled) if lower(wi))
    decided = frozenset(wi for wi, w in enumerate(fp.workloads) if w.tier_value >= tier_value)
    return _holdable_in_shortage(fp, here, settled, as_before, decided, hold)


def _trimmed_start(fp: FleetProblem, prepared: _Prepared, deadline: float) -> np.ndarray | None:
    """A re-plan's start in a shortage without the whole idle replicas of the workloads that run as
    before (a running plan its time limit stopped short, or a demand that fell, leaves a group
    with more replicas than its load): each such group keeps the replicas its load needs (at
    least one, and the workload at least its minimum), and the greedy (``solver.greedy``) gives
    what that frees to the workloads that fall short (``_falls_short``), highest tier first.
    Otherwise the idle replica counts as GPUs that may be freed (``_holdable_in_shortage``), and
    every workload short as before of its tier and below is planned afresh: bench's
    ``operator_replan.py --scarcity 0.3``, 100 workloads, a first plan stopped at 30 s with one
    silver workload a replica over: 70 workloads planned afresh, 14-21 s per one-workload
    change, 3 others moved. Returns the start (``_complete``), or None where nothing is idle, no
    completion is found in time or some workload would shed more or miss more of its minimum."""
    if fp.scenarios:
        return None
    m, model, start = prepared.model, prepared.highs, prepared.start
    counts = _counts(m, model, start)
    running = _per_workload(_current_counts(fp, m))
    trimmed, cut_back = dict(counts), set()
    for wi, mine in _per_workload(counts).items():
        if mine != running.get(wi, {}) or not _idle_replica(fp, m, model, start, mine):
            continue
        if _falls_short(fp, m, model, start, wi):
            continue
        # the minimum counts the serving configurations' replicas only (``_idle_replica``)
        serving, spare = _above_minimum(fp, m, mine)
        for key, r in sorted(mine.items()):
            if key not in m.load:
                continue
            cut = min(math.floor(r - model.value(m.load[key], start) + 1e-6), r - 1)
            if key[1] in serving:
                cut = min(cut, spare)
                spare -= max(cut, 0)
            if cut > 0:
                trimmed[key] = r - cut
                cut_back.add(wi)
    if not cut_back:
        return None
    served = frozenset(wi for wi in range(len(fp.workloads)) if not _falls_short(fp, m, model, start, wi))
    values = _complete(fp, m, model, _greedy(fp, m, fixed=trimmed, served=served), deadline)
    if values is None:
        return None
    values = _tight_short(fp, m, model, values)
    # no tier, and no workload cut back, sheds more or misses more of its minimums (the greedy only
    # adds replicas, but the routing is solved again)
    tiers = {w.tier_value for w in fp.workloads}
    groups = [[wi] for wi in cut_back] + [[wi for wi, w in enumerate(fp.workloads) if w.tier_value == t] for t in tiers]
    for members in groups:
        for f in (_shed_rps, _short_replicas):
            objective = pulp.lpSum(f(fp, m, wi) for wi in members)
            if model.value(objective, values) > model.value(objective, start) + _SHED_TOL:
                return None
    return values


def _repaired_start(fp: FleetProblem, prepared: _Prepared, kept: frozenset[int], deadline: float) -> np.ndarray | None:
    """A re-plan's start in a shortage where workloads not ``kept`` (neither settled nor short as
    before: ``_kept``) fall short, e.g. one whose demand grew: the highest tier T of those takes
    what it can use of the lower tiers' GPUs, from the lowest tier first, and the lower tiers keep
    their running replicas where they still fit. With the tiers at or below a cut left out, the
    greedy (``solver.greedy``) adds replicas for T's short workloads; then each workload of those
    tiers, highest tier first, gets back all its running replicas if they fit in what is left,
    else none, and the greedy gives the room left to the ones that lost theirs. The cut is the
    lowest tier that lets T shed as little as with every lower tier left out. Tier order holds: T
    takes only from lower tiers, as its phase would, and the phases still improve on the result.
    Returns the start (``_complete``), or None where T sheds no less with it or no completion was
    found in time."""
    m, model, start = prepared.model, prepared.highs, prepared.start
    tier_of = lambda wi: fp.workloads[wi].tier_value  # noqa: E731
    short = [wi for wi in range(len(fp.workloads)) if wi not in kept and _falls_short(fp, m, model, start, wi)]
    if not short or fp.scenarios:
        return None
    top = max(tier_of(wi) for wi in short)
    mine = [wi for wi in short if tier_of(wi) == top]
    cuts = sorted({tier_of(wi) for wi in range(len(fp.workloads)) if tier_of(wi) < top})
    if not cuts:
        return None
    counts = _counts(m, model, start)
    by_workload = _per_workload(counts)
    others_at_top = frozenset(wi for wi in range(len(fp.workloads)) if tier_of(wi) == top and wi not in short)
    shed, missing = (pulp.lpSum(f(fp, m, wi) for wi in mine) for f in (_shed_rps, _short_replicas))

    def attempt(cut: int) -> np.ndarray | None:
        """The start with the tiers at or below ``cut`` giving T what it can use."""
        fixed = {key: r for key, r in counts.items() if tier_of(key[0]) > cut}
        grown = _greedy(fp, m, fixed=fixed, tiers={top}, served=others_at_top)
        if grown == fixed:
            return None
        back, lost = _given_back(fp, m, grown, by_workload, [wi for wi in by_workload if tier_of(wi) <= cut])
        served = frozenset(wi for wi in range(len(fp.workloads)) if wi not in lost)
        filled = _greedy(fp, m, fixed=back, tiers=set(cuts), served=served) if lost else back
        values = _complete(fp, m, model, filled, deadline)
        return None if values is None else _tight_short(fp, m, model, values)

    def reached(values: np.ndarray) -> tuple[float, float]:
        return model.value(shed, values), model.value(missing, values)

    best = attempt(cuts[-1])
    if best is None:
        return None
    for cut in cuts[:-1]:  # the lowest tier that serves T as well
        values = attempt(cut)
        if values is not None and all(x <= y + _SHED_TOL for x, y in zip(reached(values), reached(best))):
            best = values
            break
    (shed_now, missing_now), (shed_then, missing_then) = reached(best), reached(start)
    if shed_now < shed_then - _SHED_TOL or (shed_now <= shed_then + _SHED_TOL and missing_now < missing_then - _SHED_TOL):
        return best
    return None


def _given_back(fp: FleetProblem, m: _Model, first: dict[tuple[int, int], int],
                by_workload: dict[int, dict[tuple[int, int], int]], which) -> tuple[dict[tuple[int, int], int], set[int]]:
    """Replica counts ((workload, config) -> replicas) that keep ``first`` and give each workload
    in ``which`` all its counts in ``by_workload`` (workload -> its counts) where they fit beside
    those given so far in the shared limits (the model's rows over replica counts alone,
    ``greedy.count_rows``), else none: in tier order, highest tier first (then by index), so that
    what does not fit costs the lowest tier. Returns (the counts, the workloads given none back)."""
    rows = _greedy_inputs(fp, m)[0]
    rows_of: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for r, (coef, _) in enumerate(rows):
        for key, a in coef.items():
            rows_of.setdefault(key, []).append((r, a))
    room = np.array([rhs for _, rhs in rows], dtype=float)

    def take(parts: dict) -> bool:
        need = np.zeros_like(room)
        for key, k in parts.items():
            for r, a in rows_of.get(key, []):
                need[r] += a * k
        if np.all(room + 1e-7 >= need):
            room[:] -= need
            return True
        return False

    take(first)
    back, lost = dict(first), set()
    for wi in sorted(which, key=lambda wi: (-fp.workloads[wi].tier_value, wi)):
        if take(by_workload[wi]):
            back.update(by_workload[wi])
        else:
            lost.add(wi)
    return back, lost


def _kept(fp: FleetProblem, prepared: _Prepared) -> tuple[frozenset[int], frozenset[int], frozenset[int]] | None:
    """For a re-plan (``fp.current``) from a start: (the workloads it could keep as they run,
    ``_settled`` and, where GPUs are short, ``_short_as_before``; those it holds; those of them
    short as before), indices of ``fp.workloads``. It holds every settled one, except that where the start does not serve
    everything (GPUs short) a workload may have to give GPUs to a short one of a higher tier: only
    those no short workload outranks are held (``_holdable_in_shortage``). None without a running
    plan or a start."""
    if not fp.current or prepared.start is None:
        return None
    settled = frozenset(_settled(fp, prepared))
    if not prepared.serves_all(fp):
        as_before = _short_as_before(fp, prepared, settled)
        if settled or as_before:
            return settled | as_before, _holdable_in_shortage(fp, prepared, settled, as_before), as_before
    return settled, settled, frozenset()


def _narrowed(fp: FleetProblem) -> tuple[FleetProblem, frozenset[int]]:
    """``fp`` with each workload whose running plan (``fp.current``) is known optimal alone
    (``alone_token`` in ``fp.alone_optima``) given only the configurations it runs on, and the
    indices of those workloads. A re-plan holds such a workload as it runs wherever it is kept
    (``_settled``; in a shortage, ``_holdable_in_shortage``), which fixes its other
    configurations at 0 replicas: leaving them out of the model is the same problem, and the
    model of a fleet where one workload changed is that workload's (bench/solver_scale.py (c), 100
    workloads with ample pools: 8,884 configurations built, nearly all of kept workloads). A
    workload is narrowed only where its running configurations serve within the SLO every size any
    of its configurations does (``servable_buckets``), so that its routing rows, planned misses and
    messages are those of the whole problem; and not under ``fp.scenarios``, whose copies route
    over the main workload's configurations, nor with per-bucket routing (Mélange input, whose
    rows ``routed_buckets`` does not describe). Where a narrowed workload turns out not to be
    held, the caller models the whole fleet (``_solve``)."""
    if not fp.current or not fp.alone_optima or fp.scenarios or fp.pin_buckets:
        return fp, frozenset()
    workloads, narrowed = list(fp.workloads), set()
    for wi, w in enumerate(fp.workloads):
        if w.demand is None:
            continue
        running = {ci: r for ci, c in enumerate(w.configs) if (r := fp.current.get(config_key(w.key, c), 0)) > 0}
        if not running or len(running) == len(w.configs):
            continue
        if alone_token(fp, wi, {(wi, ci): r for ci, r in running.items()}) not in fp.alone_optima:
            continue
        kept = [w.configs[ci] for ci in sorted(running)]
        if not np.array_equal(servable_buckets(kept, len(w.share)), servable_buckets(w.configs, len(w.share))):
            continue
        workloads[wi] = dataclasses.replace(w, configs=kept)
        narrowed.add(wi)
    if not narrowed:
        return fp, frozenset()
    return dataclasses.replace(fp, workloads=workloads), frozenset(narrowed)


def _settled(fp: FleetProblem, prepared: _Prepared) -> set[int]:
    """Workloads a re-plan can keep as they run: the start gives them exactly their running
    groups, serves them in full with every minimum met, and no group has a whole replica idle
    (over-provisioned after a drop in demand)."""
    m, model, start = prepared.model, prepared.highs, prepared.start
    running = _per_workload(_current_counts(fp, m))
    now = _per_workload(_counts(m, model, start))
    out = set()
    for wi in range(len(fp.workloads)):
        mine = now.get(wi, {})
        if not mine or mine != running.get(wi, {}):
            continue
        if not _serves(fp, m, model, wi, start) or _idle_replica(fp, m, model, start, mine):
            continue
        out.add(wi)
    return out


START_FLOOR_S = 2.0
"""seconds the greedy start's completion (``_greedy_start``) may take even past the deadline: it is
the plan of last resort, and without it a solve whose model took the whole limit to build returned
no plan at all (bench/solver_scale.py (a), 50 workloads at 10 s on 2 cores: the capacity model took
8.7 s and the model and greedy the rest; "infeasible", 0 GPUs). The completion is one LP with every
replica count fixed: 0.06 s at 50 workloads (4,303 configurations) in that run"""


def _greedy_start(fp: FleetProblem, m: _Model, model: HighsModel, deadline: float) -> np.ndarray | None:
    """A feasible start for the phases: the tier-respecting greedy replica counts
    (``solver.greedy``) completed by ``_complete``. Where that fails (a limit the greedy does not
    see), no replicas at all, which sheds everything and is always feasible. Each completion gets
    at least ``START_FLOOR_S`` even when ``deadline`` has passed (the plan then overruns its
    limit rather than being no plan). None only if neither solves within that."""
    for counts in (_greedy(fp, m), {}):
        start = _complete(fp, m, model, counts, max(deadline, time.perf_counter() + START_FLOOR_S))
        if start is not None:
            return start
    return None


def _serves(fp: FleetProblem, m: _Model, model: HighsModel, wi: int, values: np.ndarray) -> bool:
    """Whether the solution ``values`` serves workload ``wi`` in full with its minimum met."""
    return (model.value(_shed_rps(fp, m, wi), values) <= _SHED_TOL
            and model.value(_short_replicas(fp, m, wi), values) <= _SHED_TOL)


def _greedy(fp: FleetProblem, m: _Model, fixed: dict | None = None, tiers: set | None = None,
            served: frozenset = frozenset()) -> dict:
    """``greedy.greedy_replicas`` over the model's options (``_greedy_options``), keeping
    ``fixed``, allocating ``tiers`` (None: all) and nothing more to ``served``."""
    rows, options = _greedy_inputs(fp, m)
    return greedy_replicas(fp.workloads, rows, options, lambda wi: fp.workloads[wi].tier_value,
                           fp.routing_mode == "service", fixed=fixed, tiers=tiers, served=served)


def _greedy_inputs(fp: FleetProblem, m: _Model) -> tuple[list, dict[int, list[Option]]]:
    """The greedy's inputs for the model, built on first use: the rows over replica counts alone
    (``greedy.count_rows``) and each workload's options (``_greedy_options``)."""
    if m.greedy_inputs is None:  # the same for every call on one model
        m.greedy_inputs = (count_rows(m.prob, {k: v for k, v in m.n.items() if k[0] < SCENARIO_STRIDE}),
                           _greedy_options(fp, m))
    return m.greedy_inputs


def _greedy_options(fp: FleetProblem, m: _Model) -> dict[int, list[Option]]:
    """Per workload with load-balanced routing, its ways to serve for the greedy: each colocated
    configuration the model lets it use (none where it must disaggregate), and each (prefill,
    decode) pair of one P/D group whose configurations serve every routed size with all prompts
    through prefill pods; with their replicas per unit share (``_Model.unit_load``)."""
    out: dict[int, list[Option]] = {}
    # each workload's unit loads and P/D decisions, grouped in one pass over the model (in the
    # model's order) rather than one pass per workload: 100 workloads x 8,000 configurations took
    # 0.1 s of a 5-s re-plan (bench/solver_scale.py (c))
    loads: dict[int, dict] = {}
    for (wj, ci), f in m.unit_load.items():
        loads.setdefault(wj, {})[ci] = f
    decisions: dict[int, list] = {}
    for (wj, _), d in m.pd.items():
        decisions.setdefault(wj, []).append(d)
    for wi, w in enumerate(fp.workloads):
        if w.demand is None or fp.pin_buckets:
            continue  # Mélange's per-bucket routing: the phases start from no replicas
        mine = loads.get(wi, {})
        ds = decisions.get(wi, [])
        forced = any((d.lowBound or 0) >= 1 for d in ds)
        opts = []
        none, every = np.zeros(len(w.share)), np.ones(len(w.share))
        for ci, f in mine.items():
            c = w.configs[ci]
            if c.role == "colocated" and not forced and f(none) > 1e-9:
                opts.append(Option("colocated", ((ci, f(none)),), f(none) * c.tp, ci))
        if ds:
            routed = np.flatnonzero(routed_buckets(w)[0])
            whole = {ci for ci in mine if (w.configs[ci].capacity_rps[routed] > 0).all()}
            # each config's P/D group and load once, and each prefill config paired only with the
            # decode configs of its group, in the order of ``whole`` as before: all pairs of
            # configurations took 0.5-0.8 s of a 5-s re-plan (95,000 property calls; same bench)
            group = {ci: w.configs[ci].pd_group for ci in whole if w.configs[ci].role != "colocated"}
            load = {ci: mine[ci](every) for ci in group}
            decode: dict = {}
            for ci in whole:
                if w.configs[ci].role == "decode":
                    decode.setdefault(group[ci], []).append(ci)
            for cp in whole:
                p = w.configs[cp]
                if p.role != "prefill" or group[cp] not in decode:
                    continue
                for cd in decode[group[cp]]:
                    d = w.configs[cd]
                    lp, ld = load[cp], load[cd]
                    if lp > 1e-9 and ld > 1e-9:
                        opts.append(Option(("pd", group[cp]), ((cp, lp), (cd, ld)), lp * p.tp + ld * d.tp, cd))
        out[wi] = opts
    return out


def _count_columns(m: _Model, model: HighsModel, which=lambda wi: True) -> np.ndarray:
    """HiGHS columns of the replica counts of the workloads ``which`` (wi -> bool) selects (the
    scenario copies share them)."""
    keys, cols = _count_index(m, model)
    return cols[np.fromiter((which(wi) for wi, _ in keys), dtype=bool, count=len(keys))]


def _count_index(m: _Model, model: HighsModel) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The replica counts of ``m`` (scenario copies left out) as ((workload, config) keys, their
    HiGHS columns, shape (K,)), in ``m.n``'s order; worked out once per model and kept in
    ``model.memo``: a re-plan reads counts some twenty times (0.25 s of 5 s by name lookups,
    bench/solver_scale.py (c))."""
    hit = model.memo.get(("counts", id(m)))
    if hit is None or hit[0] is not m:  # the model kept as well, so its id is not reused meanwhile
        keys = [k for k in m.n if k[0] < SCENARIO_STRIDE]
        hit = model.memo[("counts", id(m))] = (m, keys, np.array([model.index[m.n[k].name] for k in keys], dtype=np.int32))
    return hit[1], hit[2]


def _counts(m: _Model, model: HighsModel, values: np.ndarray) -> dict[tuple[int, int], int]:
    """(workload, config) -> replicas in the solution ``values``, positive counts only."""
    keys, cols = _count_index(m, model)
    replicas = np.rint(np.asarray(values, dtype=float)[cols]).astype(np.int64)  # half to even, as round()
    return {keys[k]: int(replicas[k]) for k in np.flatnonzero(replicas > 0)}


def _breaks_count_rows(m: _Model, counts: dict[tuple[int, int], int]) -> bool:
    """Whether the replica counts ``counts`` ((workload, config) -> replicas; others 0) break one
    of the model's rows over replica counts alone (pool availability, node shapes, placement
    limits, power budgets, GPU quotas; ``greedy.count_rows``), by more than HiGHS's primal
    feasibility tolerance (1e-7, its default). Only where the greedy's inputs are built already
    (``_greedy_inputs``), else False: a check, not a reason to build them. Such counts have no
    completion, which HiGHS's presolve took 0.15 s to find on the whole model at 100 workloads
    (bench/solver_scale.py (c))."""
    if m.greedy_inputs is None:
        return False
    return any(sum(a * counts.get(key, 0) for key, a in coef.items()) > rhs + 1e-7 for coef, rhs in m.greedy_inputs[0])


def _complete(fp: FleetProblem, m: _Model, model: HighsModel, counts: dict, deadline: float) -> np.ndarray | None:
    """A whole solution with the replica counts ``counts`` ((workload, config) -> replicas; others
    0): the routing shares, P/D decisions and shed that serve the most with those replicas (a solve
    with the counts fixed, which HiGHS's presolve reduces to almost nothing). None when the counts
    break a limit or time ran out; at once, without a solve, where they break a row over replica
    counts alone that the greedy has read (``_breaks_count_rows``)."""
    if _breaks_count_rows(m, counts):
        return None
    keys, cols = _count_index(m, model)
    saved = model.bounds(cols)
    fixed = np.array([counts.get(key, 0) for key in keys], dtype=float)
    model.set_bounds(cols, fixed, fixed)
    model.set_objective(_unserved(fp, m))
    res = model.solve(max(deadline - time.perf_counter(), 0.05), 1e-6, label="greedy plan", unit="req/s shed")
    model.set_bounds(cols, *saved)
    return res.values


def _phase(model: HighsModel, objective, start: np.ndarray | None, deadline: float, share: int, gap: float,
           label: str, phases: list[dict], frugal: "tuple[pulp.LpAffineExpression, float] | None" = None,
           search=None, top_up=None) -> np.ndarray | None:
    """One lexicographic phase: minimise ``objective`` (non-negative) from ``start`` in 1/``share``
    of the time left, then fix it at the value reached (optimal, or the best found in time) for
    every later phase. ``frugal``: a term added to the objective, too small to change its ranking,
    that keeps the phase from spending GPUs it does not need (they are the lower tiers'), and the
    most it can weigh (``_tiebreak``). The phase stops once the bound is within that weight as
    well as within ``gap``: it ranks ``objective``, and proving the tie-break optimal too (a
    relative gap on a sum that is all tie-break once ``objective`` reaches 0) would spend the
    time slice on a preference. ``search``: start -> (replica-count columns, neighbourhoods of
    them; ``_search_space``), searched from ``start`` for ``SEARCH_SHARE`` of the slice before the
    whole model is solved (``neighbourhood.improve``); each neighbourhood is smaller than the whole
    model. ``top_up``: values -> a solution
    that may do better (or None), tried on the phase's result before it is fixed. Returns
    the phase's solution (``start`` when the solve found nothing better, None when there is
    neither)."""
    if start is not None and model.value(objective, start) <= _SHED_TOL:
        # the incumbent already meets it: 0 is optimal for a non-negative objective
        _fix_at_zero(model, objective)
        phases.append({"phase": label, "objective": 0.0, "bound": 0.0, "gap": 0.0, "seconds": 0.0,
                       "status": "met by the incumbent"})
        return start
    term, weight = frugal if frugal is not None else (None, 0.0)
    model.set_objective(objective if term is None else objective + term)
    now = time.perf_counter()
    until = now + (deadline - now) / share
    searched = None
    columns, hoods = search(start) if search is not None and start is not None else (None, [])
    if hoods:
        # first the neighbourhoods, from the start, for part of the slice; then the whole model
        # from what they found, which proves the bound (``solver.neighbourhood``)
        searched = neighbourhood.improve(model, objective, start, now + SEARCH_SHARE * (until - now), columns,
                                         hoods, label=f"{label} (neighbourhoods)", gap=gap, abs_gap=weight)
        start = searched.values
    res = model.solve(until - time.perf_counter(), gap, start, label=label, unit=label.rsplit(": ", 1)[-1],
                      abs_gap=weight)
    values = res.values if res.has_solution else start
    if res.has_solution and start is not None and model.value(objective, start) < model.value(objective, values):
        values = start  # stopped before it matched the start (HiGHS may not have taken it as incumbent)
    if values is None:
        phases.append(_phase_report(label, res, None))
        return None
    if top_up is not None:
        topped = top_up(values)
        if topped is not None and model.value(objective, topped) < model.value(objective, values) - _SHED_TOL:
            values = topped
    best = model.value(objective, values)
    phases.append(_phase_report(label, res, best, searched))
    _fix_objective(model, objective, best)
    return values


def _at_or_above(fp: FleetProblem, counts: dict[tuple[int, int], int], tier_value: int,
                 hold: frozenset[int] = frozenset()) -> dict[tuple[int, int], int]:
    """The replica counts ((workload, config) -> replicas) of ``counts`` whose workload is of tier
    ``tier_value`` or above (``WorkloadProblem.tier_value``), or in ``hold``."""
    return {key: r for key, r in counts.items() if fp.workloads[key[0]].tier_value >= tier_value or key[0] in hold}


def _top_up(fp: FleetProblem, m: _Model, model: HighsModel, values: np.ndarray, tier_value: int,
            deadline: float, hold: frozenset[int] = frozenset()) -> np.ndarray | None:
    """``values`` with the greedy's replicas added for tier ``tier_value`` where GPUs are left
    (``solver.greedy``, the replicas of that tier and above and of the ``hold`` workloads kept, the
    other lower-tier ones at 0 as in its phase, none added to a held one), routed by ``_complete``; None when the greedy adds
    nothing or time ran out. A phase
    its time limit stops can leave GPUs free that its own tier could use; the lower tiers' phases
    would then take them, an inversion of tier order that the time limit alone caused."""
    mine = _at_or_above(fp, _counts(m, model, values), tier_value, hold)  # held ones keep theirs
    if _pools_full(fp, m, mine):
        return None  # no room for a replica: the greedy (and its options, built on first use) would add none
    counts = _greedy(fp, m, fixed=mine, tiers={tier_value}, served=hold)
    return None if counts == mine else _complete(fp, m, model, counts, deadline)


def _search_space(fp: FleetProblem, m: _Model, model: HighsModel, tier_value: int, members: list[int],
                  start: np.ndarray, shortfall, hold: frozenset[int] = frozenset()) -> tuple[np.ndarray, list]:
    """What a phase of tier ``tier_value`` searches by neighbourhoods (``_phase``): the replica
    counts of that tier and of the tiers above (the lower tiers' are held at 0 meanwhile). First,
    each of the tier's ``members`` that falls short in ``start`` alone, most short first, all its
    pools free (a workload serves one kind of group, so serving more can take a whole other plan
    of it); then the pool pairs (``neighbourhood.pool_pairs``), first the pools where those
    members have configurations. ``shortfall``: ``_shed_rps`` or ``_short_replicas`` (fp, m, wi ->
    expression). ``hold``: workloads whose counts are fixed, left out of every neighbourhood."""
    keys = [(wi, ci) for (wi, ci) in m.n
            if wi < SCENARIO_STRIDE and fp.workloads[wi].tier_value >= tier_value and wi not in hold]
    columns = np.array([model.index[m.n[key].name] for key in keys], dtype=np.int32)
    if hold and len(keys) * len(fp.pools) <= 2 * sum(1 for wi, _ in m.n if wi < SCENARIO_STRIDE):
        # a re-plan that holds most workloads leaves no more columns free than a pool pair holds:
        # the whole model is then one neighbourhood, which the phase solves next (bench/
        # solver_scale.py (c), 2 of 100 workloads free: 42 sub-solves, 5.7 s, none improving)
        return columns, []
    pools = [fp.workloads[wi].configs[ci].pool.name for wi, ci in keys]
    weight: dict[str, float] = {}
    short: dict[int, float] = {}
    for wi in members:
        if wi in hold:
            continue
        value = model.value(shortfall(fp, m, wi), start)
        if value > _SHED_TOL:
            short[wi] = value
            for pool in {c.pool.name for c in fp.workloads[wi].configs}:
                weight[pool] = weight.get(pool, 0.0) + value
    alone = [columns[[k for k, key in enumerate(keys) if key[0] == wi]] for wi in sorted(short, key=lambda wi: -short[wi])]
    alone = [hood for hood in alone if len(hood)]
    # a pair that holds every pool is the whole model, which the phase solves after the search
    pairs = [hood for hood in neighbourhood.pool_pairs(columns, pools, weight) if len(hood) < len(columns)]
    # in turn, so that many short workloads do not use up a short search before any pool pair
    mixed = [hood for both in itertools.zip_longest(alone, pairs) for hood in both if hood is not None]
    return columns, mixed


def _held_tier(fp: FleetProblem, m: _Model, model: HighsModel, values: np.ndarray, members: list[int], label: str,
               phases: list[dict]) -> None:
    """A tier whose workloads a re-plan holds, all of them (``_phases``): its phases' objectives
    (req/s shed, minimum replicas short) fixed at what ``values`` reach, and reported as held."""
    for what, objective in (("req/s shed", pulp.lpSum(_shed_rps(fp, m, wi) for wi in members)),
                            ("minimum replicas short", pulp.lpSum(_short_replicas(fp, m, wi) for wi in members))):
        reached = model.value(objective, values)
        _fix_objective(model, objective, reached)
        phases.append({"phase": f"{label}: {what}", "objective": reached, "bound": reached, "gap": 0.0,
                       "seconds": 0.0, "status": "held"})


def _fix_objective(model: HighsModel, objective, reached: float) -> None:
    """Hold a phase's objective (non-negative variables, positive coefficients: shed shares,
    missing replicas) at the value ``reached`` for every later phase. At 0 (within HiGHS's
    tolerances) its variables are fixed at exactly 0: a row "≤ 0 + slack" would leave later phases
    a slack to spend, and the cost phase sheds that sliver to save cost, which makes the plan read
    as a shortage (an incremental re-plan was thrown away for it). Otherwise a row, with a relative
    slack for the solver's tolerances."""
    if reached <= _SHED_TOL:
        _fix_at_zero(model, objective)
    else:
        model.add_upper(objective, reached * (1.0 + _SHED_TOL) + 1e-9)


def _fix_at_zero(model: HighsModel, objective) -> None:
    """Fix every variable of ``objective`` (non-negative, positive coefficients) at 0."""
    idx, _, _ = model.coefficients(objective)
    model.set_bounds(idx, np.zeros(len(idx)), np.zeros(len(idx)))


_TIEBREAK_MAX = 3e-3
"""the tier phases' tie-break at most, as a share of its unit: the GPUs in use (at most all the
pools', 0.1%) plus those started and stopped (each side at most all the pools', 0.2%)"""


def _tiebreak(fp: FleetProblem, m: _Model, unit: float) -> tuple[pulp.LpAffineExpression, float]:
    """What a tier phase adds to its objective, too small to change its ranking: ε x the GPUs the
    plan uses (a tier must not hold GPUs it does not need: they are the lower tiers') plus, in a
    re-plan, ε x the GPUs of the replicas it starts and stops against the running plan (among plans
    that shed the same, the phase keeps what runs; the cost phase, with the churn at its price,
    decides the rest but can only choose among the plans the phases left it). ε is such that all
    the pools' GPUs together weigh 0.1% of ``unit`` (the smallest rate in a tier, req/s, or one
    replica), so both terms together stay within 0.3% of it: below any difference a tier phase
    ranks, whose gap is 1% anyway. Returns (the term, its largest value: ``_TIEBREAK_MAX`` x
    ``unit``)."""
    total = sum(min(p.max_gpus, UNLIMITED_GPUS) for p in fp.pools.values()) or 1
    eps = _TIEBREAK_MAX / 3.0 * unit / total
    term = pulp.LpAffineExpression([(v, eps * _workload(fp, m, wi).configs[ci].tp)
                                    for (wi, ci), v in m.n.items() if wi < SCENARIO_STRIDE]
                                   + [(v, eps * tp) for v, tp in m.moves])
    return term, _TIEBREAK_MAX * unit


def _phase_report(label: str, res, objective: float | None, searched: "neighbourhood.SearchResult | None" = None
                  ) -> dict:
    """What a phase reached: its objective, HiGHS's bound and gap (None: none proven), seconds and
    status; with ``searched``, what the neighbourhood search before it did ("neighbourhoods": from
    which objective to which, in how many sub-problems, how many improving)."""
    gap = res.gap if res.has_solution else None
    if objective is not None and res.dual_bound is not None and objective > 1e-9:
        gap = max((objective - res.dual_bound) / objective, 0.0)
    elif objective is not None and objective <= 1e-9:
        gap = 0.0
    out = {"phase": label, "objective": objective, "bound": res.dual_bound, "gap": gap,
           "seconds": round(res.seconds + (searched.seconds if searched is not None else 0.0), 3),
           "status": res.status}
    if searched is not None:
        out["neighbourhoods"] = {"from": searched.start_objective, "to": searched.objective,
                                 "solved": searched.solved, "improved": searched.improved}
    return out


def _serving_configs(w: WorkloadProblem) -> list[int]:
    """The configurations whose replicas count toward ``minReplicas``: those that serve a request
    whole (colocated, or decode for short prompts); for Mélange input, any."""
    return [ci for ci, c in enumerate(w.configs) if c.role != "prefill" or w.demand is None]


def _tight_short(fp: FleetProblem, m: _Model, model: HighsModel, values: np.ndarray | None) -> np.ndarray | None:
    """``values`` with each minimum's shortfall variable at the replicas really missing (the
    minimum less the serving replicas, at least 0). The variable is the slack of
    ``serving replicas + short >= minReplicas``, and only the minimum phases minimise it: a shed
    phase or the cost phase may return it above the real shortfall, which would read as a missed
    minimum (a plan that meets every minimum reported as a shortage). Lowering it to the shortfall
    keeps that row and every other (it appears nowhere else) and raises no objective."""
    if values is None or not m.short:
        return values
    out = values.copy()
    for wi, var in m.short.items():
        w = _workload(fp, m, wi)
        have = sum(round(float(out[model.index[m.n[wi, ci].name]])) for ci in _serving_configs(w) if (wi, ci) in m.n)
        out[model.index[var.name]] = max(0.0, float(w.min_replicas) - have)
    return out


def _short_replicas(fp: FleetProblem, m: _Model, wi: int) -> pulp.LpAffineExpression:
    """Replicas the workload's minimum lacks (0 when it has no soft minimum)."""
    return pulp.LpAffineExpression([(m.short[wi], 1.0)]) if wi in m.short else pulp.LpAffineExpression()


def _shed_share(m: _Model, wi: int, b: int) -> float:
    """Share of bucket b of workload wi left unserved in the solution."""
    if (wi, b) in m.unreachable:
        return 1.0
    return (m.u[wi, b].value() or 0.0) if (wi, b) in m.u else 0.0


def _pd_decisions(m: _Model, w: WorkloadProblem, wi: int) -> np.ndarray:
    """Shape (S,) 0/1: the solved P/D decision of each bucket (its input class's d)."""
    dv = np.zeros(len(w.share))
    if w.demand is not None:
        for b, (i, _) in enumerate(w.demand.buckets()):
            if (wi, int(i)) in m.pd:
                dv[b] = round(m.pd[wi, int(i)].value() or 0.0)
    return dv


def _router_shares(m: _Model, w: WorkloadProblem, wi: int, reps: dict[int, int]) -> dict[int, float]:
    """Share of the workload's requests each used group receives from a load-balancing router:
    in proportion to its capacity for the common mix (n / unit load), so that every group runs at
    the same utilisation. Entry groups (colocated, decode) share the served requests; prefill groups
    share the P/D part. Any share the MILP's y satisfies, this one does too: both exist exactly when
    Σ n / unit load ≥ 1 (capacities were already checked), so this is only what the plan reports."""
    dv = _pd_decisions(m, w, wi)
    served = 1.0 - ((m.u[wi].value() or 0.0) if wi in m.u else 0.0)
    out: dict[int, float] = {}
    entry = {ci: r / max(m.unit_load[wi, ci](dv), 1e-12) for ci, r in reps.items()
             if w.configs[ci].role != "prefill" and (wi, ci) in m.unit_load}
    total = sum(entry.values())
    for ci, v in entry.items():
        out[ci] = served * v / total if total > 0 else 0.0
    pd_share = sum(out[ci] for ci in entry if w.configs[ci].role == "decode")
    pre = {ci: r / max(m.unit_load[wi, ci](dv), 1e-12) for ci, r in reps.items()
           if w.configs[ci].role == "prefill" and (wi, ci) in m.unit_load}
    total = sum(pre.values())
    for ci, v in pre.items():
        out[ci] = pd_share * v / total if total > 0 else 0.0
    return out


def _extract(fp: FleetProblem, m: _Model) -> Plan:
    assignments, results = [], []
    total = 0.0
    for wi, w in enumerate(fp.workloads):
        shed = sum(_shed_share(m, wi, b) * w.rate_rps * w.share[b] for b in range(len(w.share)))
        if shed < 1e-6 * w.rate_rps:  # below the solver's feasibility tolerance: nothing is shed
            shed = 0.0
        reps_of = {ci: int(round(m.n[wi, ci].value() or 0)) for ci in range(len(w.configs))}
        reps_of = {ci: r for ci, r in reps_of.items() if r > 0}
        balanced = w.demand is not None and not fp.pin_buckets
        shares = _router_shares(m, w, wi, reps_of) if balanced else {}
        dv = _pd_decisions(m, w, wi)
        mine = []
        for ci, c in enumerate(w.configs):
            reps = reps_of.get(ci, 0)
            if reps == 0:
                continue
            bucket_rps = np.zeros(len(w.share))
            for b in range(len(w.share)):
                if (wi, ci, b) not in m.x:
                    continue
                if balanced:  # what the router gives the group (``_router_shares``)
                    bucket_rps[b] = shares.get(ci, 0.0) * (dv[b] if c.role == "prefill" else 1.0) * w.rate_rps * w.share[b]
                else:
                    bucket_rps[b] = max(m.x[wi, ci, b].value() or 0.0, 0.0) * w.rate_rps * w.share[b]
            if balanced:
                util = shares.get(ci, 0.0) * m.unit_load[wi, ci](dv) / reps if (wi, ci) in m.unit_load else 0.0
            else:
                util = float(m.load[wi, ci].value() or 0.0) / reps if (wi, ci) in m.load else 0.0
            cost = reps * _replica_cost_per_hour(fp, c)
            total += cost
            a = Assignment(
                workload=w.key, pool=c.pool.name, gpu_type=c.pool.gpu.name, tp=c.tp, replicas=reps,
                gpus=reps * c.tp, cost_per_hour=cost, rate_rps=float(bucket_rps.sum()),
                utilization=util, bucket_rate_rps=bucket_rps, config=c, role=c.role,
            )
            mine.append(a)
        # read out once every group is known: a prefill group's KV goes to the plan's decode groups
        _read_out(w, mine, fp.params, 1.0 - np.asarray(dv, dtype=float))
        assignments += mine
        serving = _serving_configs(w) if w.min_replicas else []
        short = max(w.min_replicas - sum(reps_of.get(ci, 0) for ci in serving), 0) if serving else 0
        results.append(WorkloadResult(w.key, w.rate_rps, w.rate_rps - shed, shed, w.tier, short, w.tier_value))
    thresholds = {}
    for wi, w in enumerate(fp.workloads):
        on = [i for (wj, i), d in m.pd.items() if wj == wi and (d.value() or 0) > 0.5]
        if on and any(a.workload == w.key and a.role == "prefill" for a in assignments):
            thresholds[w.key] = int(INPUT_EDGES_TOKENS[min(on)])  # bucket-pinned plans have none
    return Plan(status="", cost_per_hour=total, lp_bound=None, dual_bound=None, gap=None, solve_time_s=0.0,
                solver="", assignments=assignments, workloads=results, messages=[], pd_threshold_tokens=thresholds)


def _read_out(w: WorkloadProblem, groups: list[Assignment], params: PerfParams, local_prefill: np.ndarray) -> None:
    """Set ``ttft_s`` and ``tpot_s`` (s, at the SLO percentile, ``_predicted_latency``) of each of
    ``groups`` (one workload's ``Assignment``s in a plan) that carries traffic, as the plan runs it:
    a prefill group's KV transfer to the plan's decode groups (``as_planned``), a decode group with
    ``local_prefill`` (S,), the share of each bucket it prefills itself. Nothing without a model
    (Mélange input)."""
    if w.model is None:
        return
    for a in groups:
        if a.rate_rps > 0:
            pods, share = burst_dealing(a, groups)
            a.ttft_s, a.tpot_s = _predicted_latency(w, as_planned(w, a.config, groups, params), a.bucket_rate_rps,
                                                    min(a.utilization, 1.0), params, pods,
                                                    local_prefill if a.role == "decode" else None, share)


def _latencies_by_bucket(w: WorkloadProblem, c, bucket_rps: np.ndarray, util: float, params: PerfParams,
                         percentiles, window_s: float | None = None, replicas: int = 1,
                         queue: PrefillQueue | None = None,
                         local_prefill: np.ndarray | None = None,
                         pod_share: float | None = None,
                         local_ttft: bool = False) -> tuple[np.ndarray, list, list]:
    """(served (S,) bool, [TTFT or None per percentile], [TPOT or None per percentile], each over
    the served buckets, s) of a replica group at utilisation ``util``, at each of ``percentiles``
    (%), with the group's power cap. Each replica's arrivals are the group's mix
    (``bucket_rps``'s proportions) scaled so that its load is ``util`` (``_replica_arrivals``).
    A decode or colocated replica's requests share one batch (``capacity.shared_batch``), and a
    colocated replica's prompts of every size wait in one queue (``capacity.latencies_at_rate``).
    A prefill group predicts TTFT only (KV transfer and the first decode step included), a decode
    group TPOT only (None for the other); a colocated group's bursts, and those of a decode group
    that prefills short prompts itself (``local_prefill``: its prompt queue's backlog holds up
    every answer's first iterations, ``capacity._latencies_in_mix``), are dealt over ``replicas``
    pods of which one takes ``pod_share`` of the stream (``burst_dealing``; None: 1 / replicas,
    pods of one speed); a prefill group's queue spans its ``replicas``
    (``capacity.prefill_ttft_quantiles_s``), or is ``queue`` where given (the workload's prefill
    groups pooled, ``_prefill_queue``). ``window_s``: the load lasts that long (finite past
    saturation, ``capacity.mdl_wait_quantile_s``); None: held for ever. ``local_prefill`` (S,):
    the share of each bucket a decode group prefills itself (prompts under the P/D threshold,
    ``local_prefill_shares``), whose chunks its decodes wait for and whose load counts against its
    whole-request κ; None: none. ``local_ttft``: a decode group that prefills prompts itself also
    gives their TTFT (inf for the buckets it prefills none of: theirs is the prefill groups'),
    which ``predicted_attainment`` counts; otherwise None, as for any decode group."""
    served = (bucket_rps > 0) & (c.capacity_rps > 0)  # planned misses (unservable sizes) left out
    none = [None] * len(percentiles)
    if not served.any():
        return served, none, none
    params = _group_params(c, params)
    gmu = w.workload.spec.serving.gpu_memory_utilization
    seqs, budget = w.workload.spec.serving.max_num_seqs, w.workload.spec.serving.max_num_batched_tokens
    inp, out = w.input_tokens[served], w.output_tokens[served]
    burst = _served_burst(w, served)
    # a replica's actual arrivals per bucket: the group's mix, scaled so that Σ rate/κ is util
    mix = _replica_arrivals(c, bucket_rps, served, util, local_prefill if c.role == "decode" else None)
    if c.role == "prefill":
        return served, prefill_ttft_quantiles_s(w.model, c.pool.gpu, c.tp, inp, mix, percentiles,
                                                **_prefill_arguments(w, c, served, params, burst, window_s,
                                                                     replicas, queue)), none
    if c.role == "decode":
        local = None if local_prefill is None else np.asarray(local_prefill, dtype=float)[served]
        if local is None or not (local > 0).any():
            batches = shared_batch(w.model, c.pool.gpu, c.tp, inp, out, mix, percentiles, params, gmu, seqs, budget,
                                   burst, chunked_prefill=False, held=window_s is not None)
            return served, none, [np.full(len(inp), np.inf) if sb is None else sb.tpot_s for sb in batches]
        # the prompts it prefills itself queue for its token budget, and their backlog holds up
        # every request's first decode iterations, local or not (``capacity._latencies_in_mix``);
        # the picker deals a burst over the decode pods as over colocated ones
        dealt = burst.dealt(replicas, pod_share if pod_share else 1.0 / max(int(replicas), 1))
        pairs = latencies_at_rate(w.model, c.pool.gpu, c.tp, inp, out, mix, percentiles, params, gmu,
                                  max_num_seqs=seqs, max_num_batched_tokens=budget, burst=dealt,
                                  window_s=window_s, mix_rps=mix, prefill_share=local,
                                  **_prompt_length_arguments(w, served))
        return served, [t for t, _ in pairs] if local_ttft else none, [t for _, t in pairs]
    # the picker deals a burst over ``replicas`` pods (``Burstiness.dealt``; the plan's read-out
    # gives it every pod the picker chooses among and this pod's share, ``burst_dealing``)
    dealt = burst.dealt(replicas, pod_share if pod_share else 1.0 / max(int(replicas), 1))
    pairs = latencies_at_rate(w.model, c.pool.gpu, c.tp, inp, out, mix, percentiles, params, gmu,
                              max_num_seqs=seqs, max_num_batched_tokens=budget, burst=dealt,
                              window_s=window_s, mix_rps=mix, **_prompt_length_arguments(w, served))
    return served, [t for t, _ in pairs], [t for _, t in pairs]


def _replica_arrivals(c, bucket_rps: np.ndarray, served: np.ndarray, util: float,
                      local_prefill: np.ndarray | None = None) -> np.ndarray:
    """One replica's actual arrivals per served bucket, req/s, shape (n_served,): the group's
    traffic mix (``bucket_rps``'s proportions) scaled so that its load (``replica_load``) is
    ``util``."""
    per_request = _load_per_rps(c, local_prefill)[served]
    return util * bucket_rps[served] / float(np.sum(bucket_rps[served] * per_request))


def _load_per_rps(c, local_prefill: np.ndarray | None = None) -> np.ndarray:
    """The load one req/s of each bucket puts on a replica of ``c``, shape (S,): 1/κ (inf where
    κ is 0), where a decode replica's requests whose prompt it prefills itself (``local_prefill``,
    shape (S,), ``local_prefill_shares``) count against its whole-request κ
    (``ReplicaConfig.whole_capacity_rps``), as the MILP counts them."""
    with np.errstate(divide="ignore"):
        per_request = 1.0 / c.capacity_rps
        whole = getattr(c, "whole_capacity_rps", None)
        if local_prefill is not None and whole is not None:
            local = np.asarray(local_prefill, dtype=float)
            per_request = np.where(whole > 0, local / np.where(whole > 0, whole, 1.0) + (1.0 - local) * per_request,
                                   per_request)
    return per_request


def replica_load(c, bucket_rps: np.ndarray, replicas: int, local_prefill: np.ndarray | None = None) -> float:
    """The load of a group of ``replicas`` replicas of ``c`` carrying ``bucket_rps`` (req/s per
    bucket, shape (S,)) on each of them, as the MILP counts it: Σ rate/κ over the buckets it
    serves within the SLO (κ > 0), divided by the replicas (``_load_per_rps``); 1 is the SLO's
    capacity."""
    ok = c.capacity_rps > 0
    return float(np.sum(bucket_rps[ok] * _load_per_rps(c, local_prefill)[ok])) / max(replicas, 1)


def _prefill_arguments(w: WorkloadProblem, c, served: np.ndarray, params: PerfParams, burst, window_s,
                       replicas: int, queue: PrefillQueue | None) -> dict:
    """The arguments of ``capacity.prefill_ttft_quantiles_s`` and ``prefill_ttft_share_within``
    after the rates, for a prefill group of configuration ``c`` over its ``served`` buckets."""
    first = w.workload.spec.slo.tpot if getattr(c, "first_token_s", None) is None else c.first_token_s
    return {"transfer_s": c.kv_transfer_s[served], "first_token_s": first, "p": params,
            "burst": burst, "window_s": window_s, "servers": max(int(replicas), 1), "queue": queue,
            **_prompt_length_arguments(w, served)}


def _prefill_share_within(w: WorkloadProblem, c, bucket_rps: np.ndarray, util: float, params: PerfParams,
                          window_s: float | None, replicas: int,
                          queue: PrefillQueue | None) -> tuple[np.ndarray, np.ndarray]:
    """(served (S,) bool, share of each served bucket's requests within the TTFT target) of a
    prefill group, loaded as in ``_latencies_by_bucket``."""
    served = (bucket_rps > 0) & (c.capacity_rps > 0)
    if not served.any():
        return served, np.zeros(0)
    params = _group_params(c, params)
    burst = _served_burst(w, served)
    mix = _replica_arrivals(c, bucket_rps, served, util)
    return served, prefill_ttft_share_within(w.model, c.pool.gpu, c.tp, w.input_tokens[served], mix,
                                             w.workload.spec.slo.ttft,
                                             **_prefill_arguments(w, c, served, params, burst, window_s,
                                                                  replicas, queue))


def _served_burst(w: WorkloadProblem, served: np.ndarray) -> Burstiness:
    """``w``'s burstiness with the prompt-length SCVs of its ``served`` buckets (bool, shape (S,))
    alone, as the capacity functions take the served buckets' arrays."""
    scv = np.broadcast_to(np.asarray(w.burst.service_scv, dtype=float), served.shape)[served]
    return dataclasses.replace(w.burst, service_scv=scv)


def _group_params(c, params: PerfParams) -> PerfParams:
    """``params`` as a group of configuration ``c`` runs: at its power cap's clock
    (``compute_scale``) and with its step times calibrated from telemetry (``step_time_scale``)."""
    if getattr(c, "compute_scale", 1.0) < 1.0:  # a capped group computes at the capped clock
        params = dataclasses.replace(params, eff_compute=params.eff_compute * c.compute_scale)
    if getattr(c, "step_time_scale", 1.0) != 1.0:  # calibrated from telemetry (ReplicaConfig)
        params = dataclasses.replace(params, step_time_scale=params.step_time_scale * c.step_time_scale)
    return params


def _prefill_queue(w: WorkloadProblem, groups, params: PerfParams) -> PrefillQueue | None:
    """The queue ``w``'s prefill groups share behind the router's prefill profile (it picks the
    least-loaded of all their pods; ``capacity.prefill_queue``). ``groups``: (configuration,
    traffic per bucket (S,) req/s, utilisation, replicas) of each prefill group; each replica's
    rates are the group's mix scaled so that Σ rate/κ is its utilisation, as in
    ``_latencies_by_bucket``. None without prefill traffic."""
    parts = []
    for c, bucket_rps, util, replicas in groups:
        served = (bucket_rps > 0) & (c.capacity_rps > 0)
        if not served.any() or util <= 0:
            continue
        rate = np.zeros(len(w.share))
        rate[served] = _replica_arrivals(c, bucket_rps, served, util)
        _, service, mean_b, square_b = _prefill_moments(w, c, served, params)
        parts.append((replicas, rate[served], mean_b, square_b, service))
    return prefill_queue(parts)


def _prefill_moments(w: WorkloadProblem, c, served: np.ndarray, params: PerfParams):
    """``capacity.prefill_service_moments`` of ``w``'s ``served`` buckets (bool, shape (S,)) on one
    replica of configuration ``c``: their prompt lengths from the trace where it gave them, else
    from each bucket's mean, SCV and lower edge, at the group's own step times
    (``_group_params``)."""
    scv = np.broadcast_to(np.asarray(w.burst.service_scv, dtype=float), w.share.shape)
    return prefill_service_moments(w.model, c.pool.gpu, c.tp, w.input_tokens[served], scv[served],
                                   p=_group_params(c, params), **_prompt_length_arguments(w, served))


def _prompt_length_arguments(w: WorkloadProblem, served: np.ndarray) -> dict:
    """``min_tokens`` and ``lengths`` of ``w``'s ``served`` buckets (bool, shape (S,)), as
    ``capacity.bucket_prompt_lengths`` and the functions that call it take them: each bucket's
    lower edge (shape (n_served,), tokens) and its prompt lengths from the trace (shape
    (n_served, len(INPUT_LENGTH_PROBS)), tokens), each None where the demand does not have it."""
    floor, lengths = _prompt_floor_tokens(w), _prompt_lengths(w)
    return {"min_tokens": None if floor is None else floor[served],
            "lengths": None if lengths is None else lengths[served]}


def _prompt_lengths(w: WorkloadProblem) -> np.ndarray | None:
    """Shape (S, len(INPUT_LENGTH_PROBS)): the prompt lengths of each of ``w``'s buckets at those
    probabilities, from its trace (``Demand.input_quantiles``), tokens; None where the demand has
    only their mean and SCV."""
    d = w.demand
    q = None if d is None else getattr(d, "input_quantiles", None)
    if q is None:
        return None
    idx = np.argwhere(d.share > 0)
    return np.asarray(q, dtype=float)[idx[:, 0], idx[:, 1]]


def _prompt_floor_tokens(w: WorkloadProblem) -> np.ndarray | None:
    """Shape (S,): the shortest prompt of each of ``w``'s buckets (its demand's lower input edge),
    tokens; None without a demand (Mélange input: one length per bucket)."""
    d = w.demand
    if d is None or getattr(d, "input_edges", None) is None:
        return None
    return np.asarray(d.input_edges, dtype=float)[np.argwhere(d.share > 0)[:, 0]]


QUANTILE_GRID = np.array([1, 5, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 88, 90, 92, 94, 95, 96, 97, 98, 99,
                          99.5, 99.9])
"""percentiles at which each bucket's latency is modelled to build a group's latency distribution"""


def _quantile_grid(w: WorkloadProblem, c, bucket_rps: np.ndarray, util: float, params: PerfParams,
                   window_s: float | None = None, replicas: int = 1, queue: PrefillQueue | None = None,
                   local_prefill: np.ndarray | None = None, pod_share: float | None = None):
    """(served (S,) bool, TTFT columns, TPOT columns) of a group at every ``QUANTILE_GRID``
    percentile: one (n_served,) array per percentile, or None per percentile where the role has no
    such latency (``_latencies_by_bucket``); None when the group serves nothing within the SLO."""
    served, ttft, tpot = _latencies_by_bucket(w, c, bucket_rps, util, params, [float(q) for q in QUANTILE_GRID],
                                              window_s, replicas, queue, local_prefill, pod_share)
    return (served, ttft, tpot) if served.any() else None


def predicted_latency(w: WorkloadProblem, c, bucket_rps: np.ndarray, util: float, params: PerfParams,
                      percentile: float | None = None,
                      levels: tuple[tuple[float, float], ...] | None = None,
                      replicas: int = 1, queue: PrefillQueue | None = None,
                      local_prefill: np.ndarray | None = None,
                      pod_share: float | None = None) -> tuple[float | None, float | None]:
    """TTFT and TPOT at ``percentile`` (default the SLO's) over all the requests a replica group
    serves, s: the percentile of the mixture of its buckets' modelled latency distributions
    (each bucket's quantile function on ``QUANTILE_GRID``, weighted by its traffic), which is
    what a percentile over the group's requests measures. None where the role has no such latency
    (prefill: TPOT, decode: TTFT) or the group serves nothing within the SLO.

    ``levels``: (load multiplier, share of requests) pairs, e.g. ``group_levels``: the load
    swings over the period, and each level's requests see the latency at ``util`` x multiplier
    (``bucket_rps`` scaled alike) held for ``RATE_LEVEL_WINDOW_S``: above the SLO's capacity too,
    and finite past saturation, where the excess queues for a minute
    (``capacity.mdl_wait_quantile_s``). None: the load stays at ``util`` for ever. ``replicas``:
    the group's, which the router pools, or for a colocated group the pods a burst is dealt over,
    one of which takes ``pod_share`` of the stream (``burst_dealing``; ``_latencies_by_bucket``);
    ``queue``: a prefill group's
    queue shared with the workload's other prefill groups (``_prefill_queue``), at ``util``
    (scaled with each level). ``local_prefill``: a decode group's share of each bucket it
    prefills itself (``local_prefill_shares``)."""
    pct = w.workload.spec.slo.percentile if percentile is None else percentile
    window_s = None if levels is None else RATE_LEVEL_WINDOW_S
    cols_ttft, cols_tpot, weights = [], [], []
    for mult, share in levels or ((1.0, 1.0),):
        grid = _quantile_grid(w, c, bucket_rps * mult, util * mult, params, window_s, replicas,
                              None if queue is None else queue.scaled(mult), local_prefill, pod_share)
        if grid is None:
            return None, None
        served, ttft, tpot = grid
        cols_ttft.append(None if ttft[0] is None else np.array(ttft).T)
        cols_tpot.append(None if tpot[0] is None else np.array(tpot).T)
        weights.append(share * bucket_rps[served] / bucket_rps[served].sum())
    weights = np.concatenate(weights) / sum(share for _, share in levels or ((1.0, 1.0),))
    mix = lambda cols: None if cols[0] is None else _mixture_percentile(np.vstack(cols), weights, pct)  # noqa: E731
    return mix(cols_ttft), mix(cols_tpot)


def period_levels(w: WorkloadProblem, util: float) -> tuple[float, tuple[tuple[float, float], ...]]:
    """(the mean load, the load levels around it) of a group planned at ``util`` for ``w``'s
    planning rate (the peak quantile with headroom, ``WorkloadProblem.rate_rps``): the mean load is
    ``util`` x mean rate / planning rate, and ``Demand.rate_levels`` swing it minute by minute.
    Without a demand (Mélange input), the planned load as one level."""
    d = w.demand
    if d is None or w.rate_rps <= 0:
        return util, ((1.0, 1.0),)
    return util * d.rate_mean_rps / w.rate_rps, d.rate_levels


def group_levels(w: WorkloadProblem, c, bucket_rps: np.ndarray,
                 local_prefill: np.ndarray | None = None) -> tuple[tuple[float, float], ...]:
    """How one group's load swings minute by minute over the period ``w``'s demand was measured
    on: (load over its mean, share of the group's requests) pairs (``workload.demand.load_levels``),
    for a group of configuration ``c`` serving the buckets where ``bucket_rps`` (shape (S,),
    req/s) is above 0. A window's load is its requests of those buckets (``Demand.window_counts``)
    over their κ, as the MILP counts load (``replica_load``; ``local_prefill`` as there), so a
    group sees the shifts of the length mix as well as of the rate: a prefill group that takes the
    long prompts swings with them (the Azure conversation trace at rateScale 4: its prompts of
    2,048 tokens or more, the P/D share of a plan, ran at up to 2.3x their mean rate in a minute
    while all requests ran at up to 1.4x theirs), and a group of slow replicas swings with the
    sizes it is slow at. ``Demand.rate_levels`` where the demand has no window counts (a
    declared rate) or none of the windows' requests are of the sizes the group serves; ((1, 1),)
    without a demand (Mélange input). Raises nothing."""
    d = w.demand
    if d is None:
        return ((1.0, 1.0),)
    if d.window_counts is None:
        return d.rate_levels
    cells = np.argwhere(d.share > 0)
    counts = d.window_counts[:, cells[:, 0], cells[:, 1]]  # (windows, S), in w's bucket order
    per_request = _load_per_rps(c, local_prefill)
    mine = (np.asarray(bucket_rps) > 0) & np.isfinite(per_request)
    if not counts[:, mine].any():  # e.g. a live mix with sizes the declared trace never had
        return d.rate_levels
    return load_levels(counts[:, mine] @ per_request[mine], counts[:, mine].sum(axis=1))


def predicted_mean_latency(w: WorkloadProblem, c, bucket_rps: np.ndarray, util: float,
                           params: PerfParams) -> tuple[float | None, float | None]:
    """Mean TTFT and mean inter-token latency over the requests a replica group serves, s: what
    vLLM's histograms give exactly as Σ increase(_sum) / Σ increase(_count), with no bucket
    interpolation (``telemetry.promql.histogram_mean``).

    Each bucket's mean is the integral of its modelled quantile function over ``QUANTILE_GRID``
    (trapezoids; below the first and above the last grid point the end values), mixed by traffic
    for TTFT (one observation per request) and by traffic x (output tokens − 1) for ITL (one
    observation per token after the first, as vLLM records them). The model's TPOT is its ITL.

    Args:
        bucket_rps: shape (S,), the group's traffic per bucket, req/s (weights only).
        util: the group's load over its capacity; each bucket is evaluated at util x κ.

    Returns:
        (mean TTFT, mean ITL), s; None where the role has no such latency or nothing is served;
        inf past saturation.
    """
    grid = _quantile_grid(w, c, bucket_rps, util, params)
    if grid is None:
        return None, None
    served, ttft, tpot = grid
    probs = np.concatenate([[0.0], QUANTILE_GRID / 100.0, [1.0]])
    rate = bucket_rps[served]
    tokens = rate * np.maximum(w.output_tokens[served] - 1.0, 0.0)

    def mean(cols, weights):
        if cols[0] is None or weights.sum() <= 0:
            return None
        q = np.array(cols).T  # (S, grid)
        q = np.concatenate([q[:, :1], q, q[:, -1:]], axis=1)
        if not np.isfinite(q).all():
            return float("inf")
        per_bucket = ((q[:, 1:] + q[:, :-1]) / 2.0 * np.diff(probs)).sum(axis=1)
        return float(np.dot(per_bucket, weights / weights.sum()))

    return mean(ttft, rate), mean(tpot, tokens)


def _mixture_percentile(quantiles: np.ndarray, weights: np.ndarray, pct: float) -> float:
    """``pct`` percentile of a mixture whose components have quantile functions ``quantiles``
    (shape (S, len(QUANTILE_GRID))) and weights (S,). inf when the mixture never reaches it."""
    probs = QUANTILE_GRID / 100.0
    finite = quantiles[np.isfinite(quantiles)]
    if not len(finite):
        return float("inf")
    ts = np.unique(finite)
    cdf = np.zeros(len(ts))
    for b in range(len(weights)):
        q = np.maximum.accumulate(np.where(np.isfinite(quantiles[b]), quantiles[b], np.inf))
        ok = np.isfinite(q)
        if ok.any():
            cdf += weights[b] * np.interp(ts, q[ok], probs[ok], left=0.0, right=probs[ok][-1])
    hit = np.flatnonzero(cdf >= pct / 100.0 - 1e-12)
    return float(ts[hit[0]]) if len(hit) else float("inf")


def _predicted_latency(w: WorkloadProblem, c, bucket_rps: np.ndarray, util: float,
                       params: PerfParams, replicas: int = 1,
                       local_prefill: np.ndarray | None = None,
                       pod_share: float | None = None) -> tuple[float | None, float | None]:
    """``predicted_latency`` at the SLO percentile, remembered for the same group: a re-plan that
    keeps most groups as they run (the operator reuses each workload's configurations while its
    inputs are unchanged) reads those out at no cost."""
    key = (w.key, id(c), np.asarray(bucket_rps, dtype=float).tobytes(), float(util), params, int(replicas),
           None if local_prefill is None else np.asarray(local_prefill, dtype=float).tobytes(), pod_share)
    hit = _LATENCY_CACHE.get(key)
    if hit is not None and hit[0] is c:
        _LATENCY_CACHE.move_to_end(key)
        return hit[1]
    out = predicted_latency(w, c, bucket_rps, util, params, replicas=replicas, local_prefill=local_prefill,
                            pod_share=pod_share)
    _LATENCY_CACHE[key] = (c, out)  # the config is held, so its id is not reused while the entry lives
    if len(_LATENCY_CACHE) > _LATENCY_CACHE_SIZE:
        _LATENCY_CACHE.popitem(last=False)
    return out


_LATENCY_CACHE: OrderedDict = OrderedDict()
_LATENCY_CACHE_SIZE = 20_000
"""groups remembered (least recently used dropped first): a few thousand groups per fleet"""


ATTAINMENT_GRID = (10.0, 30.0, 50.0, 70.0, 80.0, 85.0, 90.0, 92.5, 95.0, 97.0, 98.0, 99.0, 99.5, 99.9)
"""percentiles at which ``predicted_attainment`` evaluates the capacity model: down to 10, because
a bucket whose long prompts alone miss the TTFT (the top bucket spans 32k tokens to the context)
meets it for only part of its requests; each point costs a colocated group its curves once more"""


def predicted_attainment(fp: FleetProblem, plan: Plan, over_period: bool = True) -> dict[str, float]:
    """SLO attainment the capacity model predicts for each planned workload, 0..1, without a
    simulation: per group and size bucket, the highest percentile of ``ATTAINMENT_GRID`` at which
    the predicted TTFT and TPOT both meet the targets (a prefill group: the share within the TTFT
    target, read off its distribution; 0 for planned misses), weighted by the
    traffic the router gives each group (``router_split``: the picker's least-loaded balancing,
    not the plan's split, where a workload has several entry groups behind an InferencePool or
    the standalone router; ``prefill_router_split`` where it has several prefill groups). A
    request prefilled remotely (P/D) meets the SLO where
    its bucket met the TPOT on its decode group and the TTFT on the prefill groups (their mean for
    that bucket); a prompt under the P/D threshold is prefilled by its decode replica itself,
    where it must meet the TTFT as well. A coarse, model-only figure: ``--verify`` replays the traffic.

    ``over_period`` (default): over the period the demand was measured on, as a replay counts
    it: each group at its mean load (``period_levels``) swinging minute by minute as its own load
    did in the trace, the rate and the length mix of the buckets it serves (``group_levels``),
    each minute's requests weighted by their share.
    False: every request at the planned load (the peak quantile with headroom), which
    under-states attainment wherever the load is below its peak most of the time
    (``bench/bursty_verify.py`` prints both against the replay)."""
    out = {}
    for w in fp.workloads:
        if w.workload is None or w.model is None:
            continue
        slo = w.workload.spec.slo
        groups = [a for a in plan.assignments if a.workload == w.key and a.rate_rps > 0]
        if not groups:
            continue
        met = {}
        # each group's traffic as the router splits it (``router_split``), and its load with it
        rates = _routed_rates(fp, w, groups)
        local = local_prefill_shares(groups, len(w.share))
        util = {}
        for a in groups:
            mine = local if a.role == "decode" else None
            before = replica_load(a.config, a.bucket_rate_rps, 1, mine)
            util[id(a)] = a.utilization * (replica_load(a.config, rates[id(a)], 1, mine) / before if before > 0 else 1.0)
        base = {id(a): period_levels(w, util[id(a)])[0] if over_period else min(util[id(a)], 1.0) for a in groups}
        # each group swings with its own load: the rate and the length mix of the buckets it serves
        levels_of = {id(a): group_levels(w, a.config, rates[id(a)], local if a.role == "decode" else None)
                     if over_period else ((1.0, 1.0),) for a in groups}
        window_s = RATE_LEVEL_WINDOW_S if over_period else None
        # the router's prefill profile picks among every prefill pod of the workload: one queue
        queue = _prefill_queue(w, [(a.config, rates[id(a)], base[id(a)], a.replicas)
                                   for a in groups if a.role == "prefill"], fp.params)
        for a in groups:
            total = 0.0
            # the pods the picker deals a burst over, and this pod's share at the picker's split
            pods, pod_share = burst_dealing(a, groups, lambda g: float(np.sum(rates[id(g)])))
            levels = levels_of[id(a)]
            as_run = as_planned(w, a.config, groups, fp.params)  # a prefill group as the plan runs it
            for mult, share in levels:
                reached = np.zeros(len(w.share))
                if a.role == "prefill":  # its TTFT distribution read at the target itself
                    served, within = _prefill_share_within(w, as_run, rates[id(a)],
                                                           base[id(a)] * mult,
                                                           fp.params, window_s, a.replicas,
                                                           None if queue is None else queue.scaled(mult))
                    reached[served] = within
                    total = total + share * reached
                    continue
                served, ttfts, tpots = _latencies_by_bucket(w, a.config, rates[id(a)], base[id(a)] * mult,
                                                            fp.params, list(ATTAINMENT_GRID), window_s, pods,
                                                            local_prefill=local if a.role == "decode" else None,
                                                            pod_share=pod_share, local_ttft=a.role == "decode")
                # a decode group's own prompts must meet the TTFT too (those prefilled apart meet
                # it on the prefill groups: ``pre_met`` below)
                reached_tpot = np.zeros(len(w.share))
                for q, ttft, tpot in zip(ATTAINMENT_GRID, ttfts, tpots):
                    ok = np.ones(int(served.sum()), dtype=bool) if tpot is None else tpot <= slo.tpot
                    reached_tpot[np.flatnonzero(served)[ok]] = q / 100.0
                    if ttft is not None:
                        ok = ok & (ttft <= slo.ttft)
                    reached[np.flatnonzero(served)[ok]] = q / 100.0
                if a.role == "decode" and ttfts[0] is not None:
                    reached = local * reached + (1.0 - local) * reached_tpot
                total = total + share * reached
            met[id(a)] = total / sum(sh for _, sh in levels)  # per bucket, shape (S,)
        entry = [a for a in groups if a.role != "prefill"]
        prefill = [a for a in groups if a.role == "prefill"]
        pre_rps = sum((rates[id(a)] for a in prefill), np.zeros(len(w.share)))
        with np.errstate(divide="ignore", invalid="ignore"):
            pre_met = np.where(pre_rps > 0, sum((met[id(a)] * rates[id(a)] for a in prefill),
                                                np.zeros(len(w.share))) / pre_rps, 1.0)
            decode_rps = sum((rates[id(a)] for a in entry if a.role == "decode"), np.zeros(len(w.share)))
            remote = np.where(decode_rps > 0, np.minimum(pre_rps / decode_rps, 1.0), 0.0)  # share prefilled apart
        total = sum(float(rates[id(a)].sum()) for a in entry)
        if total <= 0:
            continue
        att = sum(float((met[id(a)] * rates[id(a)]
                         * ((1.0 - remote + remote * pre_met) if a.role == "decode" else 1.0)).sum())
                  for a in entry) / total
        out[w.key] = att  # planned misses are in the groups' bucket rates, at 0
    return out


def _routed_rates(fp: FleetProblem, w: WorkloadProblem, groups) -> dict[int, np.ndarray]:
    """Per group (``id`` of the ``Assignment``), its traffic per bucket as the deployed router
    splits it, req/s, shape (S,): the entry groups by ``router_split`` (a Service has one group
    per workload, and with one entry group the plan's split stands), and the prefill groups
    scaled per bucket with the traffic the decode groups now take (the sidecar sends the prompts
    of a decode pod's requests over the P/D threshold to the prefill pods), then shared among
    themselves as the router's prefill profile does (``prefill_router_split``)."""
    rates = {id(a): a.bucket_rate_rps for a in groups}
    if fp.routing_mode == "service":
        return rates
    split = router_split(w, groups, fp.params)
    if split:
        rates.update(split)
        size = len(w.share)
        before = sum((a.bucket_rate_rps for a in groups if a.role == "decode"), np.zeros(size))
        after = sum((rates[id(a)] for a in groups if a.role == "decode"), np.zeros(size))
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(before > 0, after / np.where(before > 0, before, 1.0), 1.0)
        for a in groups:
            if a.role == "prefill":
                rates[id(a)] = a.bucket_rate_rps * scale
    rates.update(prefill_router_split(w, [(a, rates[id(a)]) for a in groups if a.role == "prefill"], fp.params))
    return rates


def prefill_router_split(w: WorkloadProblem, groups, params: PerfParams) -> dict[int, np.ndarray]:
    """The traffic the router's prefill profile gives each of a workload's prefill groups, req/s
    per bucket, keyed by ``id`` of the ``Assignment``: shape (S,) each.

    ``groups``: (``Assignment``, its prefill traffic per bucket (S,) req/s) of each prefill group.
    The profile sends each prompt over the P/D threshold to the prefill pod with the fewest
    requests in flight, whatever its length, ties at random: every group sees the same mix of
    lengths (the groups' traffic together), and a pod's share follows from how often it is idle,
    not from the plan's split. ``idle_first_split`` gives each pod's rate from the pods' service
    rates for that mix (1 / the mean prefill time, ``capacity.prefill_service_moments``), at the
    groups' rates as given. Against the simulator's router on Mooncake at TTFT 5 s, p99 (the
    repair rounds of ``plan --verify``, split at the planning rate, replayed at the trace's): an
    H100 TP-1 pod beside a TP-4 one served 39.6% of the prompts (the plan: 2.3%; this: 38%), a
    TP-2 pod 43.9% (the plan: 16.5%; this: 45%); ``tests/test_balanced_routing.py`` checks a
    bursty case. Fewer than two prefill groups: {} (one group's pods are alike and share its
    traffic evenly, as the plan has it)."""
    pre = [(a, r) for a, r in groups if a.rate_rps > 0 and a.config is not None and float(np.sum(r)) > 0]
    if len(pre) < 2 or w.model is None:
        return {}
    lam = sum((r for _, r in pre), np.zeros(len(w.share)))
    total = float(lam.sum())
    mix = lam / total
    served = mix > 0
    mu = []  # prompts per second one pod of each group prefills, for the mix
    for a, _ in pre:
        _, _, mean_b, _ = _prefill_moments(w, a.config, served, params)
        mu.append(1.0 / float(mix[served] @ mean_b))
    per_pod = idle_first_split(total, np.array(mu), np.array([a.replicas for a, _ in pre]))
    return {id(a): per_pod[k] * a.replicas / total * lam for k, (a, _) in enumerate(pre)}


def idle_first_split(rate_rps: float, service_rps: np.ndarray, pods: np.ndarray) -> np.ndarray:
    """Arrival rate, req/s, of one pod of each kind under a router that sends each request to
    the pod with the fewest in flight, ties at random: shape (G,) for ``service_rps`` (G,), the
    rate one pod of each kind serves when busy, and ``pods`` (G,), how many there are of each.

    An arrival that finds some pods idle goes to one of them at random (they tie at zero in
    flight); one that finds every pod busy goes, to first order, where work drains fastest (in
    proportion to the service rates). With pods idle independently, pod i idle with probability
    1 - ρ_i: λ_i = Λ [(1 - ρ_i) E[1 / (1 + K_i)] + Π_j ρ_j μ_i / Σ μ], K_i the other pods idle (a
    Poisson-binomial count), ρ_i = λ_i / μ_i, found by scipy's ``optimize.root`` (where it finds
    none, the map is read once at every pod loaded Λ / Σ μ). Light load gives every pod the same
    share whatever its speed; heavy load, shares in proportion to speed. At or past saturation
    (Λ ≥ Σ μ): in proportion to speed. Raises nothing; ``service_rps`` must be positive."""
    mu_kind = np.asarray(service_rps, dtype=float)
    count = np.asarray(pods, dtype=int)
    capacity = float(mu_kind @ count)
    if rate_rps >= capacity:
        return rate_rps * mu_kind / capacity

    def arrivals(rho: np.ndarray) -> np.ndarray:
        rho = np.clip(rho, 0.0, 0.999)
        share = np.empty(len(mu_kind))
        for g in range(len(mu_kind)):
            # the distribution of the other pods' idle count, one pod of kind g left out
            others = np.zeros(int(count.sum()))
            others[0] = 1.0
            for h in range(len(mu_kind)):
                for _ in range(count[h] - (1 if h == g else 0)):
                    p = 1.0 - rho[h]
                    others[1:] = others[1:] * (1.0 - p) + others[:-1] * p
                    others[0] *= 1.0 - p
            share[g] = (1.0 - rho[g]) * float(others @ (1.0 / np.arange(1, len(others) + 1)))
        lam = share + float(np.prod(rho ** count)) * mu_kind / capacity
        return lam * rate_rps / float(lam @ count)

    # the fixed point ρ = λ(ρ) / μ: the map overshoots (a pod given more is idle less and gets
    # less), so plain iteration cycles; Powell's hybrid method finds it
    start = np.full(len(mu_kind), rate_rps / capacity)
    found = optimize.root(lambda rho: arrivals(rho) / mu_kind - rho, start, method="hybr")
    rho = np.clip(found.x, 0.0, 0.999) if found.success else start
    return arrivals(rho)


def router_split(w: WorkloadProblem, groups, params: PerfParams) -> dict[int, np.ndarray]:
    """The traffic the endpoint picker gives each of a workload's entry groups (colocated and
    decode), req/s per bucket, keyed by ``id`` of the ``Assignment``: shape (S,) each.

    The picker's queue scorer sends each request to the pod with the fewest requests in flight, so
    in steady state every pod holds about as many: every replica runs at the same mean batch B,
    and a group of n replicas takes n rate_i(B), where rate_i is the rate that keeps B requests
    decoding on one of its replicas for the workload's mix (``capacity.mix_rate_rps``; a decode
    group with the prompts under the P/D threshold it prefills itself, ``local_prefill_shares``).
    B is where the groups together take the entry traffic (interpolated between whole batches;
    past every group's largest batch, in proportion to their largest rates). Unlike the plan's
    split in proportion to each group's SLO capacity κ (``_router_shares``), a group whose SLO is
    tight for its GPU (a slower one) takes more than its κ share; the groups keep the whole mix.
    Fewer than two entry groups: {} (the plan's split is the router's)."""
    entry = [a for a in groups if a.role != "prefill" and a.rate_rps > 0 and a.config is not None]
    if len(entry) < 2 or w.model is None:
        return {}
    lam = sum((a.bucket_rate_rps for a in entry), np.zeros(len(w.share)))
    mix = lam > 0
    if not mix.any():
        return {}
    local = local_prefill_shares(groups, len(w.share))
    serving = w.workload.spec.serving if w.workload is not None else None
    seqs = serving.max_num_seqs if serving is not None else None
    budget = serving.max_num_batched_tokens if serving is not None else None
    curves = []  # (batches, the group's rate at each), the batch 0 at rate 0 first
    for a in entry:
        c = a.config
        rate = mix_rate_rps(w.model, c.pool.gpu, c.tp, w.input_tokens[mix], w.output_tokens[mix], lam[mix],
                            _group_params(c, params), seqs, budget,
                            prefill_share=local[mix] if c.role == "decode" else None)
        rate = np.maximum.accumulate(rate) * a.replicas
        curves.append((np.arange(len(rate) + 1, dtype=float), np.concatenate([[0.0], rate])))
    total = float(lam.sum())
    top = max(float(b[-1]) for b, _ in curves)
    taken = lambda batch: sum(float(np.interp(batch, b, r)) for b, r in curves)  # noqa: E731
    if taken(top) <= total:  # past every group's largest batch
        rates = [float(r[-1]) for _, r in curves]
    else:
        lo, hi = 0.0, top
        for _ in range(50):
            mid = (lo + hi) / 2.0
            lo, hi = (mid, hi) if taken(mid) < total else (lo, mid)
        rates = [float(np.interp(hi, b, r)) for b, r in curves]
    share = np.array(rates) / sum(rates)
    return {id(a): share[k] * lam for k, a in enumerate(entry)}


def local_prefill_shares(groups, size: int) -> np.ndarray:
    """Per size bucket, the share of a workload's decode traffic whose prompt the decode replica
    prefills itself (the P/D threshold keeps short prompts local), shape (``size``,): 1 less the
    prefill groups' rate over the decode groups' rate, 1 where the workload decodes none of it.

    Args:
        groups: the workload's ``Assignment``s (any roles; their ``bucket_rate_rps``, req/s).
    """
    pre = sum((a.bucket_rate_rps for a in groups if a.role == "prefill"), np.zeros(size))
    dec = sum((a.bucket_rate_rps for a in groups if a.role == "decode"), np.zeros(size))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(dec > 0, 1.0 - np.minimum(pre / np.where(dec > 0, dec, 1.0), 1.0), 1.0)


def burst_dealing(a, groups, rate_of=None) -> tuple[int, float]:
    """(pods, share): the pods the endpoint picker deals a burst of ``a``'s workload over, and the
    share of the stream one pod of ``a`` takes, as the read-out deals it (``_latencies_by_bucket``'s
    ``replicas`` and ``pod_share``, ``Burstiness.dealt``). For a colocated group: every colocated
    and decode pod of the workload in ``groups`` (the plan's ``Assignment``s of that workload: the
    picker chooses among all of them, so a burst goes to several groups' pods), and ``a``'s rate
    per replica over theirs (``rate_of(group)``, req/s; default ``Assignment.rate_rps``, the plan's
    split; the picker's split or the replay's where known). For other roles, or where nothing is
    routed: ``a``'s own replicas, each 1/replicas of it (a prefill group's queue is pooled per
    group, ``_prefill_queue``). At least one pod.

    A one-pod colocated group beside others was read out as if it took whole bursts: against the
    replay of ``bench/bursty_verify.py``'s split Azure plans (g3.7 relaxed p90 H100, g7.3 A100
    TP-2 and the H100 TP-2 / TP-4 pair) the replay's TTFT was 0.59-0.74x the read-out's with the
    clump mates counted (``capacity.with_followers``; 0.65-0.83x before), and 1.06-1.22x with the
    bursts spread evenly over every pod. A slow pod takes 1/pods of a burst on its smaller share
    (``Burstiness.dealt``): its one-pod L40S TP-2 groups beside H100 pods went from 1.32-1.75x the
    read-out to 1.08-1.65x, and one pod's replayed arrival dispersion is close to the dealt one
    (``bench/pod_dispersion.py``)."""
    own = max(int(a.replicas), 1)
    if a.role != "colocated":
        return own, 1.0 / own
    rate_of = rate_of or (lambda g: float(g.rate_rps))
    pickable = [g for g in groups if g.role in ("colocated", "decode")]
    pods = max(sum(int(g.replicas) for g in pickable), own)
    total = sum(rate_of(g) for g in pickable)
    mine = rate_of(a) / own
    if total <= 0 or mine <= 0:
        return pods, 1.0 / pods
    return pods, min(mine / total, 1.0)


def as_planned(w: WorkloadProblem, c, groups, params: PerfParams | None = None):
    """Configuration ``c`` of ``w`` as a plan runs it, for reading out its latency: a prefill
    configuration's KV transfer (``ReplicaConfig.kv_transfer_s``) at the bandwidth of the decode
    groups the plan gives it. The capacity model takes the transfer at the slowest decode
    configuration of its P/D group (``solver.problem``), so that κ holds whichever the solver
    picks; the plan knows which it picked, and the transfer runs at min(the prefill replica's
    send, the decode replica's receive bandwidth), each TP GPUs x the pool's per-GPU bandwidth, as
    the simulator moves it (``sim.engine``). With decode groups of several speeds the slowest is
    taken. ``groups``: the plan's ``Assignment``s of ``w`` (any roles; those in ``c``'s P/D group
    count, or every decode group where none is). With ``params``, also the delay from the KV
    cache's arrival at those decode groups to the first token (``ReplicaConfig.first_token_s``,
    the slowest group's, ``_first_token_delay``) in place of the TPOT target. Returns ``c``
    itself for other roles, without a decode group, or where nothing changes; else a copy
    (remembered, so that the read-out cache, ``_predicted_latency``, keeps hitting). Raises
    nothing.

    Measured: Mooncake with Gamma arrivals (CV² 3.7), TTFT 5 s at p99, an H100 TP-4 prefill
    group beside a TP-2 decode group (``bench/bursty_verify.py``): the replay's time from the end
    of a prompt's prefill to its first token was 0.24 / 0.81 s at p50 / p99, where the transfer
    at the TP-1 decode configuration's bandwidth, plus the first step at the TPOT target, gave
    0.57 / 1.70 s; the group's p99 TTFT was predicted at 1.39x the replay's, now 1.09x."""
    if c is None or c.role != "prefill" or c.kv_transfer_s is None or w.model is None:
        return c
    decode = [a for a in groups if a.role == "decode" and a.config is not None and a.replicas > 0]
    partners = [a for a in decode if a.config.pd_group == c.pd_group] or decode
    if not partners:
        return c
    bandwidth = min(c.kv_bytes_per_s, min(a.config.kv_bytes_per_s for a in partners))
    local = None if params is None else local_prefill_shares(groups, len(w.share))
    key = (id(c), bandwidth, None if params is None else (params, local.tobytes(), tuple(
        (id(a.config), a.utilization, a.replicas, a.bucket_rate_rps.tobytes()) for a in partners)))
    hit = _AS_PLANNED.get(key)
    if hit is not None and hit[0] is c:
        return hit[1]
    transfer = kv_transfer_s(w.model, w.input_tokens, bandwidth)
    # the slowest partner's delay to the first token, as for the transfer's bandwidth
    delays = [] if params is None else [d for d in (_first_token_delay(w, a, local, params) for a in partners)
                                        if d is not None]
    first = np.max(delays, axis=0) if delays else None
    planned = c if np.allclose(transfer, c.kv_transfer_s, rtol=1e-9, atol=0.0) and first is None else \
        dataclasses.replace(c, kv_transfer_s=transfer, first_token_s=first)
    _AS_PLANNED[key] = (c, planned)  # the original is held, so its id is not reused while the entry lives
    if len(_AS_PLANNED) > _LATENCY_CACHE_SIZE:
        _AS_PLANNED.pop(next(iter(_AS_PLANNED)))
    return planned


_AS_PLANNED: dict = {}


def _first_token_delay(w: WorkloadProblem, a: Assignment, local: np.ndarray,
                       params: PerfParams) -> np.ndarray | None:
    """The delay from a prompt's KV cache reaching decode group ``a`` (an ``Assignment`` of
    ``w``) to its first token, its quantiles at ``capacity.WAIT_PROBS``, s
    (``capacity.decode_first_token_delay_s``), at the group's planned load (the read-out's load
    levels and the router's split leave it there) with the prompts it prefills itself (``local``,
    shape (S,), ``local_prefill_shares``), its bursts dealt evenly over its pods. None where it
    serves nothing."""
    c = a.config
    served = (a.bucket_rate_rps > 0) & (c.capacity_rps > 0)
    if not served.any() or a.utilization <= 0:
        return None
    params = _group_params(c, params)
    mix = _replica_arrivals(c, a.bucket_rate_rps, served, min(a.utilization, 1.0), local)
    spec = w.workload.spec.serving
    burst = _served_burst(w, served).dealt(a.replicas, 1.0 / max(int(a.replicas), 1))
    share = np.asarray(local, dtype=float)[served]
    return decode_first_token_delay_s(w.model, c.pool.gpu, c.tp, w.input_tokens[served], w.output_tokens[served], mix,
                                      params, spec.gpu_memory_utilization, spec.max_num_seqs,
                                      spec.max_num_batched_tokens, burst, share if (share > 0).any() else None,
                                      **_prompt_length_arguments(w, served))


def _describe_bucket(w: WorkloadProblem, b: int) -> str:
    return f"requests of ~{w.input_tokens[b]:.0f} input / ~{w.output_tokens[b]:.0f} output tokens ({w.share[b]:.1%} of traffic)"


def _unreachable_messages(fp: FleetProblem) -> list[str]:
    out = []
    for w in fp.workloads:
        if not w.configs:
            out.append(f"{w.key}: no GPU pool can serve it within its SLO (no (GPU type, TP) fits the model "
                       "and meets ttft/tpot; loosen spec.slo, allow more spec.serving.tensorParallelSizes, or add a pool)")
            continue
        if w.demand is None:
            reachable = set()
            for ci, c in enumerate(w.configs):
                if c.role != "decode":
                    reachable.update(int(b) for b in usable_buckets(w, ci))
            shed = [b for b in range(len(w.share)) if b not in reachable]
        else:
            ok, misses = routed_buckets(w)
            shed = np.flatnonzero(~ok & ~misses).tolist()
            pct = w.workload.spec.slo.percentile
            limit = getattr(w.model, "max_context_tokens", None)
            beyond = (w.input_tokens + w.output_tokens > limit) & (w.share > 0) if limit else np.zeros(0, bool)
            if beyond.any():
                # the cause is the trace, not the pools or the SLO: say so before the sizes
                out.append(f"{w.key}: {float(w.share[beyond].sum()):.1%} of requests are longer than "
                           f"{w.model.name}'s context window ({limit} input + output tokens): vLLM refuses them "
                           "on every GPU: SLO misses whatever the plan")
            if misses.any():
                sizes = "; ".join(_describe_bucket(w, b) for b in np.flatnonzero(misses))
                out.append(f"{w.key}: {w.slo_miss_share:.1%} of requests no pool serves within the SLO ({sizes}): planned "
                           f"as misses within the {100 - pct:g}% the p{pct:g} SLO allows; the other sizes are planned "
                           f"at p{w.planning_percentile:.4g} so that all requests together still attain p{pct:g}")
            if shed:
                out.append(f"{w.key}: {float(w.share[shed].sum()):.1%} of requests no pool serves within the SLO, more "
                           f"than the {100 - pct:g}% the p{pct:g} SLO allows; they are shed")
        for b in shed:
            out.append(f"{w.key}: SLO unreachable on every pool for {_describe_bucket(w, b)}; that traffic is shed")
    return out


def _infeasible_messages(fp: FleetProblem) -> list[str]:
    out = []
    need = sum(w.min_replicas * min((c.tp for c in w.configs), default=1) for w in fp.workloads)
    avail = sum(p.max_gpus for p in fp.pools.values())
    if need > avail:
        out.append(f"minReplicas of all workloads need at least {need} GPUs; the pools offer {avail} (spec.maxGPUs)")
    if fp.power_budget_watts is not None:
        out.append(f"check FleetPolicy spec.powerBudgetWatts ({fp.power_budget_watts:.0f} W) against the minimum replicas")
    return out or ["no plan satisfies spec.serving.minReplicas together with GPUPool spec.maxGPUs"]


def _no_node_holds(fp: FleetProblem, plan: Plan, cuts: list, pool: str, tp: int) -> bool:
    """Whether one more replica of ``tp`` GPUs in ``pool`` breaks a node-shape limit the MILP
    held the plan to (``placement.shape_cuts`` over the nodes' free GPUs, and the limits of an
    earlier placement): the pool has the GPUs in total, spread over nodes none of which has
    ``tp`` free, as beside another tenant's GPU pods."""
    mine = [a for a in plan.assignments if a.pool == pool]
    for cut in cuts:
        if cut.pool != pool or cut.min_tp > tp:
            continue
        if cut.max_gpus is not None:
            if sum(a.gpus for a in mine if a.tp >= cut.min_tp) + tp > cut.max_gpus:
                return True
        elif sum(a.replicas for a in mine if a.tp >= cut.min_tp) + 1 > cut.max_groups:
            return True
    return any(lim.pool == pool and lim.tp == tp and sum(a.replicas for a in mine if a.tp == tp) + 1 > lim.max_replicas
               for lim in fp.placement_limits)


def _shortage_messages(fp: FleetProblem, plan: Plan) -> list[str]:
    out = []
    cuts = _shape_cuts(fp)
    power = ""
    if fp.power_budget_watts is not None:
        watts, allowed = plan.limit_watts, fp.power_budget_watts * fp.power_oversubscription
        if watts >= 0.98 * allowed:
            power = f"; power budget binds (GPU power caps {watts:.0f} of {allowed:.0f} W, FleetPolicy spec.powerBudgetWatts)"
    for r in plan.workloads:
        if r.shed_rps > 1e-6:
            # the pools it could use that cannot take one more of its replicas: full, or with
            # fewer GPUs free than its smallest replica there needs (a TP-4 group beside 3 free)
            w = next((w for w in fp.workloads if w.key == r.workload), None)
            smallest: dict[str, int] = {}
            for c in (w.configs if w is not None else []):
                smallest[c.pool.name] = min(c.tp, smallest.get(c.pool.name, c.tp))
            binding = []
            for name, tp in sorted(smallest.items()):
                pool, used = fp.pools[name], _pool_gpus(plan, name)
                if pool.max_gpus and used >= pool.max_gpus:
                    binding.append(f"{name} ({used}/{pool.max_gpus} GPUs)")
                elif pool.max_gpus and pool.max_gpus - used < tp:
                    binding.append(f"{name} ({used}/{pool.max_gpus} GPUs; its smallest replica there needs {tp})")
                elif _no_node_holds(fp, plan, cuts, name, tp):
                    binding.append(f"{name} ({used}/{pool.max_gpus} GPUs; its smallest replica there needs {tp} "
                                   f"GPUs on one node, and no node has that many free)")
            why = [f"pools at capacity: {', '.join(binding)}"] if binding else []
            for name, (limit, keys) in fp.gpu_quotas.items():
                used = _quota_gpus(plan, keys)
                if r.workload in keys and used >= limit:
                    why.append(f"GPU quota of namespace {name} reached ({used}/{limit} GPUs)")
            if power:
                why.append(power.removeprefix("; "))
            if not why:
                why = ["no mix of its GPU configurations serves its traffic within the SLO when every group "
                       "receives every request size (load-balanced routing)"]
            out.append(f"{r.workload} (tier {r.tier}): {r.shed_rps:.2f} of {r.demand_rps:.2f} req/s cannot be served; "
                       + "; ".join(why))
    for w in fp.workloads:
        have = sum(a.replicas for a in plan.assignments if a.workload == w.key and a.role != "prefill")
        if w.min_replicas and have < w.min_replicas:
            out.append(f"{w.key} (tier {w.tier}): spec.serving.minReplicas {w.min_replicas} not met ({have} planned): "
                       f"minimums come after every higher tier's demand and minimums")
    return out
