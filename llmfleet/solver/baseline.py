"""Single-GPU-type baselines: what the same SLOs cost on a fleet of one GPU type.

This is the comparison a user makes by hand ("just rent H100s"), and the one Mélange reports.
Each baseline keeps every workload's SLO, TP choices and minimum replicas, uses only the pools of
one GPU type, and ignores pool availability (``maxGPUs``): it answers "what would renting only
this type cost", not "what fits in this cluster". A saving is only claimed against a baseline
that fits the pools of its type (``fits_pools``) and only for a plan that serves all demand:
a comparison between fleets that do not serve the same demand within the same GPUs is no saving.
"""

from __future__ import annotations

import dataclasses

from llmfleet.solver.milp import solve
from llmfleet.solver.plan import Plan
from llmfleet.solver.problem import UNLIMITED_GPUS, FleetProblem


def single_type_problem(fp: FleetProblem, gpu_type: str) -> FleetProblem:
    """The same problem restricted to configs on ``gpu_type``, with unlimited availability."""
    pools = {name: dataclasses.replace(p, max_gpus=UNLIMITED_GPUS)
             for name, p in fp.pools.items() if p.gpu.name == gpu_type}
    workloads = []
    for w in fp.workloads:
        configs = [dataclasses.replace(c, pool=pools[c.pool.name]) for c in w.configs if c.pool.name in pools]
        workloads.append(dataclasses.replace(w, configs=configs))
    return dataclasses.replace(fp, workloads=workloads, pools=pools)


def single_type_baselines(fp: FleetProblem) -> dict[str, Plan]:
    """Plan per GPU type; a type that cannot serve every workload's full demand within its SLO
    gets a plan whose status is ``shortage`` or ``infeasible``."""
    types = sorted({p.gpu.name for p in fp.pools.values()})
    return {t: solve(single_type_problem(fp, t)) for t in types}


def available_gpus(fp: FleetProblem, gpu_type: str) -> int:
    """GPUs of ``gpu_type`` the problem's pools offer (``maxGPUs`` summed)."""
    return sum(p.max_gpus for p in fp.pools.values() if p.gpu.name == gpu_type)


def fits_pools(fp: FleetProblem, gpu_type: str, baseline: Plan) -> bool:
    """Whether a single-type baseline fits the pools of its type."""
    return baseline.total_gpus <= available_gpus(fp, gpu_type)


def cheapest_full_service(baselines: dict[str, Plan], fp: FleetProblem | None = None) -> tuple[str, Plan] | None:
    """The cheapest single-type plan that serves all demand (status optimal or feasible) and, when
    ``fp`` is given, fits the pools of its type."""
    ok = [(t, p) for t, p in baselines.items() if p.serves_all_demand and (fp is None or fits_pools(fp, t, p))]
    return min(ok, key=lambda tp: tp[1].cost_per_hour) if ok else None
