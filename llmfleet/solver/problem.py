"""Turn LLMWorkloads, GPUPools and the FleetPolicy into the numbers the MILP needs.

For each workload: its demand (rate to plan for, with the policy's headroom, and the share of
each request-size bucket) and every feasible replica configuration c = (pool, TP, role) with the
capacity κ[c, b] of one replica for each bucket b under the workload's SLO (``perf.capacity``).
A configuration is feasible when TP is allowed by the workload, fits one node of the pool, and
the weights leave room for a KV cache.

Roles (``spec.serving.disaggregation``): ``colocated`` replicas run both phases; ``prefill`` and
``decode`` replicas run one each, and the KV cache of every prompt moves from a prefill to a
decode replica of the same KV-transfer domain (``GPUPool.spec.interconnect.domain``; a pool
without one is a domain of its own). The transfer time is counted inside the prefill replica's
TTFT budget, at the bandwidth of the slowest decode configuration of the domain, so that any
pairing the MILP's per-domain flow balance allows meets the TTFT target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmfleet.api.loader import FleetSpec, ManifestError, source_key
from llmfleet.api.models import DEFAULT_KV_GBIT_PER_S_PER_GPU, GPUPool, LLMWorkload
from llmfleet.catalog.gpus import GPUType, get_gpu
from llmfleet.catalog.models import ModelSpec, resolve_model
from llmfleet.perf.capacity import (capacity_rps, decode_capacity_rps, kv_transfer_s, prefill_capacity_rps,
                                    weights_fit)
from llmfleet.perf.steptime import PerfParams, default_params
from llmfleet.workload.demand import Demand, demand_from_spec, demand_from_trace
from llmfleet.workload.traces import TraceError, load_trace


UNLIMITED_GPUS = 10**6
"""availability used where a pool has no limit (Mélange input, single-type baselines)"""


@dataclass(frozen=True)
class PoolInfo:
    """A GPUPool resolved against the catalogue."""

    name: str
    gpu: GPUType
    max_gpus: int
    gpus_per_node: int
    cost_per_gpu_hour: float
    """USD per GPU-hour (pool override or catalogue list price)"""
    interconnect_domain: str | None = None
    """``spec.interconnect.domain``: pools that share it can exchange KV caches"""
    kv_bytes_per_s_per_gpu: float = DEFAULT_KV_GBIT_PER_S_PER_GPU * 1e9 / 8
    """network bandwidth per GPU for KV transfer, bytes/s"""

    @property
    def kv_domain(self) -> str:
        """KV-transfer domain: the declared interconnect, else the pool alone."""
        return f"net/{self.interconnect_domain}" if self.interconnect_domain else f"pool/{self.name}"


@dataclass
class ReplicaConfig:
    """One way to run a replica of a workload: ``tp`` GPUs of ``pool`` in ``role``.

    ``capacity_rps`` has shape (S,) over the workload's non-empty buckets: κ, req/s per replica
    (for a prefill or decode replica, the requests whose prompt or whose tokens it serves).
    ``kv_transfer_s`` (S,) is the KV transfer time counted in a prefill replica's TTFT, s.
    """

    pool: PoolInfo
    tp: int
    capacity_rps: np.ndarray
    cost_per_replica_hour: float
    role: str = "colocated"
    kv_transfer_s: np.ndarray | None = None

    @property
    def kv_domain(self) -> str:
        return self.pool.kv_domain


@dataclass
class WorkloadProblem:
    """A workload as the MILP sees it.

    Attributes:
        rate_rps: the rate to plan for (peak quantile x (1 + headroom)), req/s.
        share: shape (S,), fraction of requests in each non-empty bucket.
        input_tokens, output_tokens: shape (S,), bucket request sizes.
        tier_value: PriorityClass value of the workload's tier (higher is served first).
        workload, model, demand: the objects it came from (None for Mélange-format input).
    """

    key: str
    workload: LLMWorkload | None
    model: ModelSpec | None
    demand: Demand | None
    rate_rps: float
    share: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    tier: str
    tier_value: int
    min_replicas: int
    configs: list[ReplicaConfig] = field(default_factory=list)


@dataclass
class FleetProblem:
    """The whole MILP input: workloads with their configs, the pools (by name) and the policy's
    power budget (W), energy price (USD/kWh), solver time limit (s) and relative gap."""

    workloads: list[WorkloadProblem]
    pools: dict[str, PoolInfo]
    power_budget_watts: float | None = None
    energy_price_per_kwh: float = 0.0
    time_limit_s: float = 30.0
    relative_gap: float = 1e-3


def resolve_pool(pool: GPUPool) -> PoolInfo:
    """Resolve a GPUPool's GPU type and price.

    Raises:
        ManifestError: unknown GPU type without ``spec.gpu``, or no price anywhere.
    """
    s = pool.spec
    if s.gpu is not None:
        gpu = GPUType(name=s.gpu_type, memory_gb=s.gpu.memory_gb, mem_bandwidth_gbps=s.gpu.mem_bandwidth_gbps,
                      peak_bf16_tflops=s.gpu.peak_bf16_tflops, tdp_watts=s.gpu.tdp_watts,
                      interconnect_gbps=s.gpu.interconnect_gbps, spec_source="GPUPool.spec.gpu")
    else:
        try:
            gpu = get_gpu(s.gpu_type)
        except KeyError as err:
            raise ManifestError(f"GPUPool {pool.metadata.name}: spec.gpuType: {err.args[0]}",
                                ("GPUPool", pool.metadata.name)) from None
    cost = s.cost_per_gpu_hour if s.cost_per_gpu_hour is not None else gpu.default_cost_per_gpu_hour
    if cost is None:
        raise ManifestError(
            f"GPUPool {pool.metadata.name}: spec.costPerGPUHour is required: the catalogue has no list price for {gpu.name}",
            ("GPUPool", pool.metadata.name),
        )
    net = s.interconnect
    kv_gbit = net.bandwidth_gbit_per_second_per_gpu if net else DEFAULT_KV_GBIT_PER_S_PER_GPU
    return PoolInfo(pool.metadata.name, gpu, s.max_gpus, s.gpus_per_node, cost,
                    net.domain if net else None, kv_gbit * 1e9 / 8)


def workload_base_dir(spec: FleetSpec, w: LLMWorkload) -> Path | None:
    """Folder a relative ``spec.traffic.trace.path`` is read from: the manifest's own folder."""
    source = spec.sources.get(source_key(w))
    return source.parent if source else spec.base_dir


def trace_path(w: LLMWorkload, base_dir: Path | None) -> Path:
    """The workload's trace file, a relative path taken from ``base_dir``."""
    path = Path(w.spec.traffic.trace.path)
    return base_dir / path if not path.is_absolute() and base_dir is not None else path


def workload_demand(w: LLMWorkload, base_dir: Path | None) -> Demand:
    """The workload's demand from its trace (a relative path is taken from ``base_dir``) or its
    declared traffic.

    Raises:
        ManifestError: the trace cannot be read (the message names the field and file).
    """
    t = w.spec.traffic
    if t.trace is None:
        return demand_from_spec(t)
    try:
        trace = load_trace(trace_path(w, base_dir), t.trace.format)
        return demand_from_trace(trace, t.peak_quantile, t.rate_window_seconds, t.trace.rate_scale)
    except (TraceError, ValueError) as err:
        raise ManifestError(f"LLMWorkload {w.key}: spec.traffic.trace: {err}", ("LLMWorkload", w.key)) from None


def build_problem(spec: FleetSpec, params: PerfParams | None = None,
                  demands: dict[str, Demand] | None = None) -> FleetProblem:
    """Assemble the MILP inputs for a whole fleet.

    Args:
        demands: optional demand per workload key, overriding the spec (e.g. from telemetry).

    Raises:
        ManifestError: unknown model or GPU type, missing price, unreadable trace.
    """
    params = params or default_params()
    policy = spec.policy.spec
    tiers = {t.name: t.value for t in policy.priority_tiers}
    pools = {p.metadata.name: resolve_pool(p) for p in spec.pools}
    problems = []
    for w in spec.workloads:
        try:
            model = resolve_model(w.spec.model, w.spec.architecture)
        except KeyError as err:
            raise ManifestError(f"LLMWorkload {w.key}: spec.model: {err.args[0]}", ("LLMWorkload", w.key)) from None
        demand = (demands or {}).get(w.key) or workload_demand(w, workload_base_dir(spec, w))
        idx = np.argwhere(demand.share > 0)
        share = demand.share[idx[:, 0], idx[:, 1]]
        inp = demand.input_tokens[idx[:, 0], idx[:, 1]]
        out = demand.output_tokens[idx[:, 0], idx[:, 1]]
        wp = WorkloadProblem(
            key=w.key, workload=w, model=model, demand=demand,
            rate_rps=demand.rate_plan_rps * (1.0 + policy.headroom),
            share=share, input_tokens=inp, output_tokens=out,
            tier=w.spec.priority, tier_value=tiers[w.spec.priority], min_replicas=w.spec.serving.min_replicas,
        )
        wp.configs = replica_configs(w, model, list(pools.values()), inp, out, params)
        problems.append(wp)
    return FleetProblem(problems, pools, policy.power_budget_watts, policy.energy_price_per_kwh,
                        policy.solver.time_limit_seconds, policy.solver.relative_gap)


def replica_configs(w: LLMWorkload, model: ModelSpec, pools: list[PoolInfo], inp: np.ndarray, out: np.ndarray,
                    params: PerfParams) -> list[ReplicaConfig]:
    """Every feasible (pool, TP, role) of a workload with its capacity per bucket.

    Args:
        inp, out: shape (S,), bucket request sizes, tokens.
    """
    slo, serving = w.spec.slo, w.spec.serving
    gmu = serving.gpu_memory_utilization
    shapes = [(pool, tp) for pool in pools for tp in serving.tensor_parallel_sizes
              if tp <= pool.gpus_per_node and tp <= pool.max_gpus and weights_fit(model, pool.gpu, tp, gmu)]
    configs: list[ReplicaConfig] = []
    if serving.disaggregation != "always":
        for pool, tp in shapes:
            kappa = capacity_rps(model, pool.gpu, tp, inp, out, slo.ttft, slo.tpot, slo.percentile, params, gmu)
            if (kappa > 0).any():
                configs.append(ReplicaConfig(pool, tp, kappa, tp * pool.cost_per_gpu_hour))
    if serving.disaggregation == "never":
        return configs
    decode = []
    for pool, tp in shapes:
        kappa = decode_capacity_rps(model, pool.gpu, tp, inp, out, slo.tpot, slo.percentile, params, gmu)
        if (kappa > 0).any():
            decode.append(ReplicaConfig(pool, tp, kappa, tp * pool.cost_per_gpu_hour, role="decode"))
    # receive bandwidth of the slowest decode configuration of each domain (each GPU of a TP group
    # receives its own shard of the KV cache over its own NIC)
    receive: dict[str, float] = {}
    for d in decode:
        bw = d.tp * d.pool.kv_bytes_per_s_per_gpu
        receive[d.kv_domain] = min(receive.get(d.kv_domain, bw), bw)
    for pool, tp in shapes:
        if pool.kv_domain not in receive:
            continue  # no decode replica could take this pool's KV caches
        transfer = kv_transfer_s(model, inp, min(tp * pool.kv_bytes_per_s_per_gpu, receive[pool.kv_domain]))
        kappa = prefill_capacity_rps(model, pool.gpu, tp, inp, slo.ttft, slo.percentile, transfer, slo.tpot,
                                     params, gmu)
        if (kappa > 0).any():
            configs.append(ReplicaConfig(pool, tp, kappa, tp * pool.cost_per_gpu_hour, role="prefill",
                                         kv_transfer_s=transfer))
    prefill_domains = {c.kv_domain for c in configs if c.role == "prefill"}
    return configs + [d for d in decode if d.kv_domain in prefill_domains]
