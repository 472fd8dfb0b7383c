"""The fleet MILP (DESIGN §6), built with PuLP and solved with HiGHS (CBC as fallback).

Variables, for every workload w, feasible replica config c = (pool, TP, role) and request-size
bucket b:
    n[w,c] ∈ Z≥0   replicas
    x[w,c,b] ∈ [0,1]   share of bucket b's traffic served by config c (continuous: Mélange uses
                       binary slices; the continuous share is the limit of infinitely fine slices)
    u[w,b] ∈ [0,1]     share shed, only when capacity is short
Constraints:
    Σ_{c colocated or prefill} x[w,c,b] + u[w,b] = 1    every bucket's prompts served or shed
    Σ_{c prefill in D} x[w,c,b] = Σ_{c decode in D} x[w,c,b]   for each KV-transfer domain D: the
                                                        disaggregated traffic is decoded where its
                                                        KV cache can go (the P/D ratio follows)
    Σ_b λ_w s_wb x[w,c,b] / κ[w,c,b] ≤ n[w,c]           replicas carry their load (κ from perf)
    Σ_{w, c in pool} TP_c n[w,c] ≤ maxGPUs(pool)         availability
    Σ TP_c n[w,c] P_c ≤ power budget                     (when the FleetPolicy sets one)
    Σ_{w in namespace, c} TP_c n[w,c] ≤ GPU quota        (per namespace, FleetPolicy spec.tenancy)
    Σ_c n[w,c] ≥ minReplicas(w)
    x[w,c,b] ≤ d[w,i(b)] (c prefill),  x[w,c,b] ≤ 1 - d[w,i(b)] (c colocated),  d[w,i] ≤ d[w,i+1]
                                                        one prompt-length threshold per workload:
                                                        the router (llm-d's P/D decider) sends a
                                                        prompt through a prefill pod exactly when it
                                                        is longer than the threshold, so the prompts
                                                        of input class i go P/D (d = 1) or not at
                                                        all; d binary, monotone in the input class
P_c is the predicted average draw of one GPU of config c loaded to its capacity κ (``perf.power``,
carried as ``ReplicaConfig.gpu_watts``; the TDP where a config has none, e.g. Mélange input).
Objective: Σ n TP (price + P_c x energy price). When all demand fits, one solve with u = 0.
Otherwise priorities are lexicographic: minimise the shed req/s of the top tier, fix it, then the
next tier, and finally minimise cost with every tier's service fixed.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import pulp

from llmfleet.perf.capacity import decode_tpot_at_rate, latency_at_rate, prefill_ttft_at_rate
from llmfleet.perf.steptime import PerfParams
from llmfleet.solver.highs import QuietHiGHS
from llmfleet.solver.plan import Assignment, Plan, WorkloadResult
from llmfleet.solver.problem import FleetProblem, WorkloadProblem
from llmfleet.workload.demand import INPUT_EDGES_TOKENS

_SHED_TOL = 1e-6
_TIER_GAP = 0.01


def _use_highs() -> bool:
    return pulp.HiGHS().available()


def _solver(time_limit_s: float, gap: float, mip: bool = True, label: str = "fleet MILP", unit: str = "$/h"):
    """HiGHS (through highspy, banner kept off stdout, incumbents reported as progress) where
    installed, else PuLP's bundled CBC."""
    if _use_highs():
        return QuietHiGHS(msg=False, mip=mip, timeLimit=time_limit_s, gapRel=gap, threads=1, label=label, unit=unit)
    return pulp.PULP_CBC_CMD(msg=False, mip=mip, timeLimit=time_limit_s, gapRel=gap)


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
    u: dict
    unreachable: set
    cost: pulp.LpAffineExpression
    pd: dict = dataclasses.field(default_factory=dict)
    """(workload index, input class) -> binary: that class's prompts go through prefill pods"""


def usable_buckets(w: WorkloadProblem, ci: int) -> np.ndarray:
    """Buckets config ``ci`` of ``w`` can serve: κ > 0 and, for a prefill (decode) config, some
    decode (prefill) config of its KV-transfer domain that serves the bucket too."""
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


def _build(fp: FleetProblem, allow_shed: bool) -> _Model:
    prob = pulp.LpProblem("llmfleet", pulp.LpMinimize)
    n, x, u, pd = {}, {}, {}, {}
    unreachable: set[tuple[int, int]] = set()
    cost_terms = []
    pool_use: dict[str, list] = {name: [] for name in fp.pools}
    power_terms = []
    for wi, w in enumerate(fp.workloads):
        served: list[list] = [[] for _ in range(len(w.share))]
        # (domain, bucket) -> [(x, +1 prefill | -1 decode)]
        balance: dict[tuple[str, int], list] = {}
        for ci, c in enumerate(w.configs):
            var_n = prob.add_variable(f"n_{wi}_{ci}", lowBound=0, cat=pulp.LpInteger)
            n[wi, ci] = var_n
            load = []
            for b in usable_buckets(w, ci):
                var_x = prob.add_variable(f"x_{wi}_{ci}_{b}", lowBound=0, upBound=1)
                x[wi, ci, b] = var_x
                if c.role != "decode":
                    served[b].append(var_x)
                if c.role != "colocated":
                    balance.setdefault((c.kv_domain, int(b)), []).append((var_x, 1 if c.role == "prefill" else -1))
                load.append((var_x, w.rate_rps * w.share[b] / c.capacity_rps[b]))
            prob += pulp.LpAffineExpression(load) - var_n <= 0, f"load_{wi}_{ci}"
            cost_terms.append((var_n, _replica_cost_per_hour(fp, c)))
            pool_use[c.pool.name].append((var_n, c.tp))
            power_terms.append((var_n, c.tp * c.watts_per_gpu))
        # rows in (domain, bucket) order: the order HiGHS sees them decides among equal-cost optima
        for k, (_, terms) in enumerate(sorted(balance.items(), key=lambda kv: kv[0])):
            prob += pulp.LpAffineExpression(terms) == 0, f"pd_{wi}_{k}"
        _threshold_rows(prob, w, wi, x, pd)
        for b in range(len(w.share)):
            terms = list(served[b])
            if not terms:  # no config meets the SLO for this bucket: shed by necessity, not a choice
                unreachable.add((wi, b))
                continue
            if allow_shed:
                u[wi, b] = prob.add_variable(f"u_{wi}_{b}", lowBound=0, upBound=1)
                terms.append(u[wi, b])
            prob += pulp.lpSum(terms) == 1, f"serve_{wi}_{b}"
        if w.min_replicas and w.configs:
            prob += pulp.lpSum(n[wi, ci] for ci in range(len(w.configs))) >= w.min_replicas, f"minrep_{wi}"
    for name, terms in pool_use.items():
        if terms:
            prob += pulp.LpAffineExpression(terms) <= fp.pools[name].max_gpus, f"pool_{name}"
    if fp.power_budget_watts is not None and power_terms:
        prob += pulp.LpAffineExpression(power_terms) <= fp.power_budget_watts, "power_budget"
    for k, (name, (limit, keys)) in enumerate(sorted(fp.gpu_quotas.items())):
        terms = [(n[wi, ci], c.tp) for wi, w in enumerate(fp.workloads) if w.key in keys
                 for ci, c in enumerate(w.configs)]
        if terms:
            prob += pulp.LpAffineExpression(terms) <= limit, f"quota_{k}"
    cost = pulp.LpAffineExpression(cost_terms)
    prob.setObjective(cost)
    return _Model(prob, n, x, u, unreachable, cost, pd)


def _threshold_rows(prob: pulp.LpProblem, w: WorkloadProblem, wi: int, x: dict, pd: dict) -> None:
    """One prompt-length threshold for the workload's P/D split (see the module docstring); only
    for workloads with prefill configurations and a known bucket grid (not Mélange input)."""
    if w.demand is None or not any(c.role == "prefill" for c in w.configs):
        return
    classes = [int(i) for i, _ in w.demand.buckets()]  # input class of each of the S buckets
    for i in sorted(set(classes)):
        pd[wi, i] = prob.add_variable(f"d_{wi}_{i}", lowBound=0, upBound=1, cat=pulp.LpInteger)
    ordered = sorted(set(classes))
    for lo, hi in zip(ordered, ordered[1:]):
        prob += pd[wi, lo] - pd[wi, hi] <= 0, f"thr_{wi}_{lo}"
    for (wj, ci, b), var in x.items():
        if wj != wi:
            continue
        role = w.configs[ci].role
        if role == "prefill":
            prob += var - pd[wi, classes[b]] <= 0, f"thrp_{wi}_{ci}_{b}"
        elif role == "colocated":
            prob += var + pd[wi, classes[b]] <= 1, f"thrc_{wi}_{ci}_{b}"


def _shed_rps(fp: FleetProblem, m: _Model, wi: int) -> pulp.LpAffineExpression:
    w = fp.workloads[wi]
    return pulp.LpAffineExpression([(m.u[wi, b], w.rate_rps * w.share[b]) for b in range(len(w.share)) if (wi, b) in m.u])


def _run(m: _Model, fp: FleetProblem, deadline: float, gap: float | None = None,
         label: str = "fleet MILP", unit: str = "$/h") -> tuple[str, float | None]:
    """Solve within ``deadline`` to relative ``gap`` (default: the policy's); return (status, MIP dual bound or None)."""
    solver = _solver(max(deadline - time.perf_counter(), 0.1), fp.relative_gap if gap is None else gap, label=label, unit=unit)
    m.prob.solve(solver)
    status = pulp.LpStatus[m.prob.status]
    bound = None
    model = getattr(m.prob, "solverModel", None)
    if model is not None and hasattr(model, "getInfo"):
        info = model.getInfo()
        bound = getattr(info, "mip_dual_bound", None)
    return status, bound


def _has_solution(m: _Model) -> bool:
    """True when the last solve left an integer-feasible solution in the variables."""
    return m.prob.status == pulp.LpStatusOptimal or m.prob.sol_status in (
        pulp.LpSolutionIntegerFeasible, pulp.LpSolutionOptimal)


def _lp_bound(fp: FleetProblem, allow_shed: bool, extra=None) -> float | None:
    """Objective of the LP relaxation (all integrality dropped): a lower bound on the cost."""
    m = _build(fp, allow_shed)
    if extra:
        extra(m)
    solver = _solver(fp.time_limit_s, fp.relative_gap, mip=False)
    m.prob.solve(solver)
    return pulp.value(m.prob.objective) if m.prob.status == pulp.LpStatusOptimal else None


def prune_dominated(w: WorkloadProblem) -> list:
    """Drop configs that another TP degree of the same pool and role dominates exactly.

    ``tp`` GPUs as one replica of TP ``tp`` are dominated by the same GPUs as ``tp/tp'`` replicas
    of TP ``tp'`` (same pool, same cost, same GPUs, at least as many replicas) when
    κ(tp) <= (tp/tp') κ(tp') in every bucket: any plan using the former can swap in the latter.
    """
    keep = []
    for c in w.configs:
        dominated = any(
            o.pool.name == c.pool.name and o.role == c.role and o.tp < c.tp and c.tp % o.tp == 0
            and (c.capacity_rps <= (c.tp // o.tp) * o.capacity_rps + 1e-12).all()
            for o in w.configs
        )
        if not dominated:
            keep.append(c)
    return keep


def _coupling_ok(fp: FleetProblem, plan: Plan) -> bool:
    """Do independently solved workloads fit the shared pool availability, GPU quotas and power budget?"""
    if any(_pool_gpus(plan, name) > pool.max_gpus for name, pool in fp.pools.items()):
        return False
    for limit, keys in fp.gpu_quotas.values():
        if _quota_gpus(plan, keys) > limit:
            return False
    return fp.power_budget_watts is None or plan.power_watts <= fp.power_budget_watts


def solve(fp: FleetProblem) -> Plan:
    """Solve the fleet plan for all workloads together.

    Workloads interact only through the shared limits (pool availability, power budget). So the
    workloads are first solved one by one; when the union of those optimal plans respects the
    shared limits it is optimal for the joint problem too (the joint feasible set is contained in
    the product of the individual ones), with the sum of the individual bounds as its bound.
    Otherwise the joint MILP is solved (``solve_joint``).
    """
    t0 = time.perf_counter()
    fp = dataclasses.replace(fp, workloads=[dataclasses.replace(w, configs=prune_dominated(w)) for w in fp.workloads])
    if len(fp.workloads) > 1:
        parts = []
        for w in fp.workloads:
            remaining = fp.time_limit_s - (time.perf_counter() - t0)
            if remaining <= 0:
                break
            part = solve_joint(dataclasses.replace(fp, workloads=[w], time_limit_s=remaining))
            if part.status != "optimal":
                break
            parts.append(part)
        if len(parts) == len(fp.workloads):
            merged = _merge(parts)
            if _coupling_ok(fp, merged):
                merged.solve_time_s = time.perf_counter() - t0
                merged.status = "optimal" if merged.gap <= fp.relative_gap + 1e-9 else "feasible"
                return _mark_shortage(merged, fp)
    remaining = max(fp.time_limit_s - (time.perf_counter() - t0), 1.0)
    plan = solve_joint(dataclasses.replace(fp, time_limit_s=remaining))
    plan.solve_time_s = time.perf_counter() - t0
    return _mark_shortage(plan, fp)


def _mark_shortage(plan: Plan, fp: FleetProblem) -> Plan:
    """A plan that leaves any demand unserved (capacity short, or an SLO no config meets) is a
    ``shortage``, whatever the solver's own status; the messages say why, after the problem's
    own notes (what it left out)."""
    if plan.status in ("optimal", "feasible") and any(r.shed_rps > 0 for r in plan.workloads):
        plan.status = "shortage"
    plan.messages = list(fp.notes) + plan.messages
    return plan


def _merge(parts: list[Plan]) -> Plan:
    def total(attr):
        vals = [getattr(p, attr) for p in parts]
        return None if any(v is None for v in vals) else sum(vals)

    cost = sum(p.cost_per_hour for p in parts)
    bound = max(v for v in (total("lp_bound"), total("dual_bound"), 0.0) if v is not None)
    return Plan(status="", cost_per_hour=cost, lp_bound=total("lp_bound"), dual_bound=total("dual_bound"),
                gap=max((cost - bound) / cost, 0.0) if cost > 1e-9 else 0.0, solve_time_s=0.0, solver=parts[0].solver,
                assignments=[a for p in parts for a in p.assignments], workloads=[r for p in parts for r in p.workloads],
                messages=[m for p in parts for m in p.messages],
                pd_threshold_tokens={k: v for p in parts for k, v in p.pd_threshold_tokens.items()})


def solve_joint(fp: FleetProblem) -> Plan:
    """Solve the fleet MILP over all workloads at once.

    Returns:
        A Plan. ``status`` is ``optimal`` (proven within the relative gap), ``feasible`` (time limit
        hit with a solution), ``shortage`` (some demand shed; ``workloads[*].shed_rps`` and the
        messages say which and why) or ``infeasible`` (no plan at all; messages explain). Never
        raises for an infeasible input.
    """
    t0 = time.perf_counter()
    deadline = t0 + fp.time_limit_s
    backend = "HiGHS" if _use_highs() else "CBC"
    messages = _unreachable_messages(fp)

    # If even the LP relaxation cannot serve everything, capacity is short: skip the full-service
    # MILP, whose proof of infeasibility can take the whole time limit on a large fleet.
    full_service_lp = _lp_bound(fp, allow_shed=False)
    m = _build(fp, allow_shed=False)
    if full_service_lp is not None:
        now = time.perf_counter()
        status, bound = _run(m, fp, now + (deadline - now) / 2)
    shedding = full_service_lp is None or not _has_solution(m)  # capacity is short
    fixes = []
    if shedding:
        m = _build(fp, allow_shed=True)
        tiers = sorted({w.tier_value for w in fp.workloads}, reverse=True)
        for k, tier_value in enumerate(tiers):
            members = [wi for wi, w in enumerate(fp.workloads) if w.tier_value == tier_value]
            shed = pulp.lpSum(_shed_rps(fp, m, wi) for wi in members)
            m.prob.setObjective(shed)
            # the tier phases share half the remaining time; the cost phase, which decides the
            # plan's cost, keeps the other half. A 1% gap on shed req/s is plenty to rank tiers.
            now = time.perf_counter()
            _run(m, fp, now + (deadline - now) / 2 / (len(tiers) - k), gap=max(fp.relative_gap, _TIER_GAP),
                 label=f"shortage, tier value {tier_value}", unit="req/s shed")
            if not _has_solution(m):
                break
            # the shed this tier reached (optimal, or the best found in its share of the time)
            best = pulp.value(shed) or 0.0
            m.prob += shed <= best + _SHED_TOL * max(1.0, best), f"tier_{tier_value}_shed"
            fixes.append((members, best))
            incumbent = {v.name: v.varValue for v in m.prob.variables()}
        m.prob.setObjective(m.cost)
        status, bound = _run(m, fp, deadline)
        if not _has_solution(m) and fixes:
            # out of time before the cost phase found a plan: keep the last tier phase's plan,
            # which serves every tier as well as the phases could, at a cost that is not minimised
            for v in m.prob.variables():
                v.varValue = incumbent[v.name]
            m.prob.status, m.prob.sol_status = pulp.LpStatusOptimal, pulp.LpSolutionIntegerFeasible
            bound = None
    if not _has_solution(m):
        messages += _infeasible_messages(fp)
        return Plan(status="infeasible", cost_per_hour=None, lp_bound=None, dual_bound=None, gap=None,
                    solve_time_s=time.perf_counter() - t0, solver=backend, assignments=[],
                    workloads=[WorkloadResult(w.key, w.rate_rps, 0.0, w.rate_rps, w.tier) for w in fp.workloads],
                    messages=messages)

    def fix_tiers(mm: _Model) -> None:
        for members, best in fixes:
            mm.prob += pulp.lpSum(_shed_rps(fp, mm, wi) for wi in members) <= best + _SHED_TOL * max(1.0, best)

    lp_bound = _lp_bound(fp, True, fix_tiers) if shedding else full_service_lp
    plan = _extract(fp, m)
    plan.solver = backend
    plan.solve_time_s = time.perf_counter() - t0
    plan.lp_bound = lp_bound
    plan.dual_bound = bound
    best_bound = max(b for b in (lp_bound, bound, 0.0) if b is not None)
    plan.gap = (plan.cost_per_hour - best_bound) / plan.cost_per_hour if plan.cost_per_hour > 1e-9 else 0.0
    plan.gap = max(plan.gap, 0.0)
    if shedding:
        plan.status = "shortage"
        messages += _shortage_messages(fp, plan)
    else:
        plan.status = "optimal" if plan.gap <= fp.relative_gap + 1e-9 else "feasible"
    plan.messages = messages
    return plan


def _shed_share(m: _Model, wi: int, b: int) -> float:
    """Share of bucket b of workload wi left unserved in the solution."""
    if (wi, b) in m.unreachable:
        return 1.0
    return (m.u[wi, b].value() or 0.0) if (wi, b) in m.u else 0.0


def _extract(fp: FleetProblem, m: _Model) -> Plan:
    assignments, results = [], []
    total = 0.0
    for wi, w in enumerate(fp.workloads):
        shed = sum(_shed_share(m, wi, b) * w.rate_rps * w.share[b] for b in range(len(w.share)))
        if shed < 1e-6 * w.rate_rps:  # below the solver's feasibility tolerance: nothing is shed
            shed = 0.0
        for ci, c in enumerate(w.configs):
            reps = int(round(m.n[wi, ci].value() or 0))
            if reps == 0:
                continue
            bucket_rps = np.zeros(len(w.share))
            for b in usable_buckets(w, ci):
                bucket_rps[b] = (m.x[wi, ci, b].value() or 0.0) * w.rate_rps * w.share[b]
            util = float((bucket_rps[c.capacity_rps > 0] / c.capacity_rps[c.capacity_rps > 0]).sum() / reps)
            cost = reps * _replica_cost_per_hour(fp, c)
            total += cost
            a = Assignment(
                workload=w.key, pool=c.pool.name, gpu_type=c.pool.gpu.name, tp=c.tp, replicas=reps,
                gpus=reps * c.tp, cost_per_hour=cost, rate_rps=float(bucket_rps.sum()),
                utilization=util, bucket_rate_rps=bucket_rps, config=c, role=c.role,
            )
            if w.model is not None and a.rate_rps > 0:
                a.ttft_s, a.tpot_s = _predicted_latency(w, c, bucket_rps, min(util, 1.0), fp.params)
            assignments.append(a)
        results.append(WorkloadResult(w.key, w.rate_rps, w.rate_rps - shed, shed, w.tier))
    thresholds = {}
    for wi, w in enumerate(fp.workloads):
        if any(a.workload == w.key and a.role == "prefill" for a in assignments):
            first = min(i for (wj, i), d in m.pd.items() if wj == wi and (d.value() or 0) > 0.5)
            thresholds[w.key] = int(INPUT_EDGES_TOKENS[first])
    return Plan(status="", cost_per_hour=total, lp_bound=None, dual_bound=None, gap=None, solve_time_s=0.0,
                solver="", assignments=assignments, workloads=results, messages=[], pd_threshold_tokens=thresholds)


def _predicted_latency(w: WorkloadProblem, c, bucket_rps: np.ndarray, util: float,
                       params: PerfParams) -> tuple[float | None, float | None]:
    """Traffic-weighted TTFT and TPOT at the SLO percentile of a replica group at utilization
    ``util``: each bucket is evaluated at util x κ, the rate at which it alone would load a
    replica as much as the actual mix does. A prefill group predicts TTFT only (KV transfer and
    the first decode step included), a decode group TPOT only."""
    served = bucket_rps > 0
    slo = w.workload.spec.slo
    gmu = w.workload.spec.serving.gpu_memory_utilization
    seqs, budget = w.workload.spec.serving.max_num_seqs, w.workload.spec.serving.max_num_batched_tokens
    inp, out, rate = w.input_tokens[served], w.output_tokens[served], util * c.capacity_rps[served]
    weights = bucket_rps[served] / bucket_rps[served].sum()
    scv = np.broadcast_to(np.asarray(w.burst.service_scv, dtype=float), served.shape)[served]
    burst = dataclasses.replace(w.burst, service_scv=scv)
    if c.role == "prefill":
        ttft = prefill_ttft_at_rate(w.model, c.pool.gpu, c.tp, inp, rate, slo.percentile,
                                    c.kv_transfer_s[served], slo.tpot, params, burst)
        return float((weights * ttft).sum()), None
    if c.role == "decode":
        tpot = decode_tpot_at_rate(w.model, c.pool.gpu, c.tp, inp, out, rate, slo.percentile, params, gmu,
                                   max_num_seqs=seqs, burst=burst)
        return None, float((weights * tpot).sum())
    ttft, tpot = latency_at_rate(w.model, c.pool.gpu, c.tp, inp, out, rate, slo.percentile, params, gmu,
                                 max_num_seqs=seqs, max_num_batched_tokens=budget, burst=burst)
    return float((weights * ttft).sum()), float((weights * tpot).sum())


def _describe_bucket(w: WorkloadProblem, b: int) -> str:
    return f"requests of ~{w.input_tokens[b]:.0f} input / ~{w.output_tokens[b]:.0f} output tokens ({w.share[b]:.1%} of traffic)"


def _unreachable_messages(fp: FleetProblem) -> list[str]:
    out = []
    for w in fp.workloads:
        if not w.configs:
            out.append(f"{w.key}: no GPU pool can serve it within its SLO (no (GPU type, TP) fits the model "
                       "and meets ttft/tpot; loosen spec.slo, allow more spec.serving.tensorParallelSizes, or add a pool)")
            continue
        reachable = set()
        for ci, c in enumerate(w.configs):
            if c.role != "decode":
                reachable.update(int(b) for b in usable_buckets(w, ci))
        for b in range(len(w.share)):
            if b not in reachable:
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


def _shortage_messages(fp: FleetProblem, plan: Plan) -> list[str]:
    out = []
    full = []
    for name, pool in fp.pools.items():
        used = _pool_gpus(plan, name)
        if pool.max_gpus and used >= pool.max_gpus:
            full.append(f"{name} ({used}/{pool.max_gpus} GPUs)")
    power = ""
    if fp.power_budget_watts is not None:
        watts = plan.power_watts
        if watts >= 0.98 * fp.power_budget_watts:
            power = f"; power budget binds ({watts:.0f}/{fp.power_budget_watts:.0f} W)"
    for r in plan.workloads:
        if r.shed_rps > 1e-6:
            why = f"pools at capacity: {', '.join(full)}" if full else "SLO unreachable for part of its traffic"
            for name, (limit, keys) in fp.gpu_quotas.items():
                used = _quota_gpus(plan, keys)
                if r.workload in keys and used >= limit:
                    why = f"GPU quota of namespace {name} reached ({used}/{limit} GPUs)"
            out.append(f"{r.workload} (tier {r.tier}): {r.shed_rps:.2f} of {r.demand_rps:.2f} req/s cannot be served; {why}{power}")
    return out
