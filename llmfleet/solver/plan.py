"""The Plan the solver returns: replicas per (workload, pool, TP), cost, bound, gap, explanations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Assignment:
    """Replicas of one workload on one (pool, TP) configuration.

    Attributes:
        rate_rps: traffic routed to this group, req/s; ``bucket_rate_rps`` per bucket, shape (S,).
        utilization: load / capacity of the group under the SLO (<= 1).
        ttft_s, tpot_s: predicted latency at the SLO percentile, traffic-weighted over buckets, s.
        picker_capacity_factor: the factor (<= 1) the group's SLO capacity κ was planned at so that
            the endpoint picker's split holds (``milp._hold_picker_split``); 1: κ as modelled. A
            re-plan against this plan keeps it for the group (``FleetProblem.current_capacity_factors``).
    """

    workload: str
    pool: str
    gpu_type: str
    tp: int
    replicas: int
    gpus: int
    cost_per_hour: float
    rate_rps: float
    utilization: float
    bucket_rate_rps: np.ndarray
    config: Any = field(repr=False, default=None)
    ttft_s: float | None = None
    tpot_s: float | None = None
    role: str = "colocated"
    picker_capacity_factor: float = 1.0

    def to_dict(self) -> dict:
        return {
            "workload": self.workload, "pool": self.pool, "gpuType": self.gpu_type, "tensorParallelSize": self.tp,
            "role": self.role, "replicas": self.replicas, "gpus": self.gpus,
            "costPerHour": round(self.cost_per_hour, 4), "rateRps": round(self.rate_rps, 4),
            "utilization": round(self.utilization, 4),
            "predictedTTFTSeconds": None if self.ttft_s is None else round(self.ttft_s, 4),
            "predictedTPOTSeconds": None if self.tpot_s is None else round(self.tpot_s, 5),
            "predictedWattsPerGPU": round(self.gpu_watts, 1),
            "powerCapWatts": None if getattr(self.config, "cap_watts", None) is None else round(self.config.cap_watts, 1),
            "capCapacityFactor": round(getattr(self.config, "cap_capacity_factor", 1.0), 4),
            "pickerCapacityFactor": round(self.picker_capacity_factor, 4),
        }

    @property
    def gpu_watts(self) -> float:
        """Predicted average draw of one of its GPUs at the configuration's capacity-defining load,
        W (``perf.power``); the GPU's TDP where the configuration carries no prediction (Mélange)."""
        return self.config.watts_per_gpu


@dataclass
class WorkloadResult:
    """One workload's demand and what the plan does with it: req/s served and shed, and the
    replicas its minimum (``LLMWorkload.spec.minReplicas``) lacks where GPUs are short."""

    workload: str
    demand_rps: float
    served_rps: float
    shed_rps: float
    tier: str
    replicas_short: int = 0
    tier_value: int = 0
    """the tier's ``FleetPolicy`` priority value (higher is served first)"""

    def to_dict(self) -> dict:
        return {"workload": self.workload, "tier": self.tier, "demandRps": round(self.demand_rps, 4),
                "servedRps": round(self.served_rps, 4), "shedRps": round(self.shed_rps, 4),
                "minReplicasShort": self.replicas_short}


@dataclass
class Plan:
    """A fleet plan.

    Attributes:
        status: ``optimal`` | ``feasible`` (time limit) | ``shortage`` (demand shed) | ``infeasible``.
        cost_per_hour: USD per hour of the chosen fleet (GPU-hours + energy), None if infeasible.
        lp_bound: objective of the LP relaxation, USD/h (a lower bound on any plan's cost).
        dual_bound: HiGHS's proven lower bound on the cost phase's objective, USD/h (None: none proven in
            time; one-by-one solves: the sum of their bounds).
        gap: (objective - best bound) / objective, the objective being the cost plus the churn
            against a running plan (None: no bound proven in time).
        messages: human-readable explanations (unreachable SLOs, shed demand, binding limits).
        pd_threshold_tokens: per P/D workload, the prompt length from which the router sends a
            prompt through a prefill pod (prompts of at least this many tokens; shorter ones are
            served colocated), tokens. Workloads without P/D are absent.
    """

    status: str
    cost_per_hour: float | None
    lp_bound: float | None
    dual_bound: float | None
    gap: float | None
    solve_time_s: float
    solver: str
    assignments: list[Assignment]
    workloads: list[WorkloadResult]
    messages: list[str]
    pd_threshold_tokens: dict[str, int] = field(default_factory=dict)
    placement: Any = None
    """``solver.placement.PlacementResult``: the replicas on the pools' nodes (None: not placed)"""
    phases: list[dict] = field(default_factory=list)
    """the solver's phases in order (``milp.solve_joint``): each tier's shed req/s and missing
    minimum replicas, then the cost; each with its objective, HiGHS's bound and gap (None where
    none was proven in time), seconds and HiGHS's status"""
    unchecked_kept: int = 0
    """in an incremental re-plan, the kept workloads (held as they run) that it had no time to
    check against their best plan alone (``milp._improve_settled``): its gap covers only what it
    planned, so a re-plan from this plan may still save (the operator's ``FollowUps``)"""

    @property
    def serves_all_demand(self) -> bool:
        """True for a plan (optimal or time-limited) that sheds no request."""
        return self.status in ("optimal", "feasible")

    @property
    def total_gpus(self) -> int:
        return sum(a.gpus for a in self.assignments)

    @property
    def power_watts(self) -> float:
        """Predicted average GPU draw of the whole plan, W."""
        return sum(a.gpus * a.gpu_watts for a in self.assignments)

    @property
    def limit_watts(self) -> float:
        """The plan's GPUs at their power caps (the default limit where uncapped), W: what the power
        budget bounds."""
        return sum(a.gpus * a.config.limit_watts for a in self.assignments)

    @property
    def tdp_watts(self) -> float:
        """The plan's GPUs at their TDP, W (what counting by datasheet would reserve)."""
        return sum(a.gpus * a.config.pool.gpu.tdp_watts for a in self.assignments)

    def to_dict(self) -> dict:
        r = lambda v, d=4: None if v is None else round(v, d)  # noqa: E731
        return {
            "status": self.status, "costPerHour": r(self.cost_per_hour), "lpBound": r(self.lp_bound),
            "dualBound": r(self.dual_bound), "gap": r(self.gap, 6), "solveTimeSeconds": r(self.solve_time_s, 3),
            "solver": self.solver, "totalGPUs": self.total_gpus,
            "predictedGPUWatts": round(self.power_watts, 1), "tdpWatts": round(self.tdp_watts, 1),
            "powerCapWatts": round(self.limit_watts, 1),
            "assignments": [a.to_dict() for a in self.assignments],
            "workloads": [w.to_dict() for w in self.workloads],
            "messages": list(self.messages),
            "pdThresholdTokens": dict(sorted(self.pd_threshold_tokens.items())),
            "placement": self.placement.to_dict() if self.placement is not None else None,
            "phases": [_rounded(p, r) for p in self.phases],
            "uncheckedKeptWorkloads": self.unchecked_kept,
        }


def _rounded(d: dict, r) -> dict:
    """``d`` with its float values (and those of the dicts in it) rounded to 6 places by ``r``."""
    return {k: r(v, 6) if isinstance(v, float) else _rounded(v, r) if isinstance(v, dict) else v for k, v in d.items()}
