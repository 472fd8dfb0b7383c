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

import dataclasses
import hashlib
import json
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import numpy as np

from llmfleet import progress
from llmfleet.api.loader import FleetSpec, ManifestError, object_ref, source_key
from llmfleet.api.tenancy import gpu_quotas
from llmfleet.api.models import DEFAULT_KV_GBIT_PER_S_PER_GPU, GPUPool, LLMWorkload
from llmfleet.catalog.gpus import GPUType, get_gpu
from llmfleet.catalog.models import ModelSpec, resolve_model
from llmfleet.perf.capacity import (POISSON, Burstiness, capacity_rps, decode_capacity_rps, kv_transfer_s,
                                    prefill_capacity_rps, shared_steady_states, spread_capacity, weights_fit)
from llmfleet.perf.power import attach_power
from llmfleet.perf.precision import unsupported, with_precision
from llmfleet.perf.steptime import PerfParams, default_params, load_profile
from llmfleet.solver.caps import capped_configs
from llmfleet.solver.pd_rules import pd_group
from llmfleet.solver.placement import offline_nodes
from llmfleet.workload.demand import (ARRIVAL_IDC_WINDOWS_S, BURST_WINDOW_S, Demand, demand_from_spec,
                                     demand_from_trace)
from llmfleet.workload.traces import TraceError, load_trace, spread_note


MAX_OFFLINE_NODES = 4096
"""pools of more nodes than this (``maxGPUs`` / ``gpusPerNode``) get no node model: their cuts and
placement would cost more than they tell"""

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
    power_budget_watts: float | None = None
    """``GPUPool.spec.powerBudgetWatts``: the most its GPUs' power caps may add up to, W"""

    @property
    def kv_domain(self) -> str:
        """KV-transfer domain: the declared interconnect, else the pool alone."""
        return f"net/{self.interconnect_domain}" if self.interconnect_domain else f"pool/{self.name}"


MIN_CAPACITY_RPS = 1.0 / 86_400
"""the smallest κ a configuration is offered at, req/s (one request a day): below it a replica
serves nothing within the SLO. The queueing model's κ tends to 0 without reaching it where
bursts alone break the SLO (``perf.capacity.mdl_max_rate``: on the Azure trace with on/off
modulated arrivals, an index of dispersion of 34 over 5 s, rate over κ reached 1.3e16), and the
MILP's load rows divide the rate by κ: HiGHS refuses coefficients of 1e15 and above as infinite
(its ``large_matrix_value``)"""


@dataclass
class ReplicaConfig:
    """One way to run a replica of a workload: ``tp`` GPUs of ``pool`` in ``role``.

    ``capacity_rps`` has shape (S,) over the workload's non-empty buckets: κ, req/s per replica
    (for a prefill or decode replica, the requests whose prompt or whose tokens it serves).
    ``kv_transfer_s`` (S,) is the KV transfer time counted in a prefill replica's TTFT, s.
    ``gpu_watts`` is the predicted average draw of each of its GPUs loaded to κ, W
    (``perf.power.replica_gpu_watts``); None where unknown (the MILP then takes the TDP).
    ``whole_capacity_rps`` (S,), decode configs only: κ of the same GPUs serving a request whole,
    req/s. llm-d's router also sends prompts shorter than the P/D threshold to decode pods, whose
    sidecar then passes them to the local vLLM (prefill and decode on the pod).
    ``throughput_rps`` (S,): req/s one replica sustains with no latency target, for the buckets no
    config serves within the SLO (0 elsewhere): what such requests cost the replicas they land on.
    """

    pool: PoolInfo
    tp: int
    capacity_rps: np.ndarray
    cost_per_replica_hour: float
    role: str = "colocated"
    kv_transfer_s: np.ndarray | None = None
    gpu_watts: float | None = None
    whole_capacity_rps: np.ndarray | None = None
    throughput_rps: np.ndarray | None = None
    cap_watts: float | None = None
    """power cap of each GPU, W (``solver.caps``); None: the GPU's default limit"""
    compute_scale: float = 1.0
    """the compute rate of its steps under the cap over the default (``perf.powercap``), for the
    simulator"""
    cap_capacity_factor: float = 1.0
    """κ under the cap over κ at the default limit, median over the buckets both serve: what the
    cap's slowdown costs the replica"""
    step_time_scale: float = 1.0
    """the calibration its capacities were modelled with (``StepScales``; 1: the profile as is):
    its steps take this many times the profile's step time"""
    burst_replicas: int = 1
    """the replicas over which its κ takes a burst to be spread (``capacity.spread_capacity``; 1:
    each replica meets the whole stream's bursts, as with Poisson arrivals or for P/D roles)"""
    first_token_s: np.ndarray | None = None
    """prefill configs as a plan runs them (``milp.as_planned``): the delay from a prompt's KV
    cache reaching the plan's decode replicas to its first token, its quantiles at
    ``capacity.WAIT_PROBS``, s; None: the TPOT target stands for it (a decode replica that meets
    it never takes longer per step), as in κ"""

    def __post_init__(self):
        # a rate below MIN_CAPACITY_RPS serves nothing: 0, so that the MILP's coefficients (rate
        # over κ) stay finite (``MIN_CAPACITY_RPS``)
        for name in ("capacity_rps", "whole_capacity_rps", "throughput_rps"):
            v = getattr(self, name)
            if v is not None:
                v = np.asarray(v, dtype=float)
                setattr(self, name, np.where(v >= MIN_CAPACITY_RPS, v, 0.0))

    @property
    def kv_domain(self) -> str:
        return self.pool.kv_domain

    @property
    def pd_group(self) -> tuple[str, str, int | None]:
        """The key prefill and decode replicas of one workload must share (``solver.pd_rules``)."""
        return pd_group(self.kv_domain, self.pool.gpu, self.tp)

    @property
    def kv_bytes_per_s(self) -> float:
        """KV-transfer bandwidth of one replica, bytes/s: each of its ``tp`` GPUs sends or receives
        its own shard of the KV cache over its own NIC (``PoolInfo.kv_bytes_per_s_per_gpu``)."""
        return self.tp * self.pool.kv_bytes_per_s_per_gpu

    @property
    def watts_per_gpu(self) -> float:
        """Predicted average draw per GPU of this config, W: ``gpu_watts`` where predicted, else the
        GPU's TDP (datasheet, ``catalog/gpus.csv``); never above its cap."""
        draw = self.gpu_watts if self.gpu_watts is not None else self.pool.gpu.tdp_watts
        return min(draw, self.cap_watts) if self.cap_watts is not None else draw

    @property
    def limit_watts(self) -> float:
        """The power limit each GPU runs under, W: its cap, else the default limit (the TDP)."""
        return self.cap_watts if self.cap_watts is not None else self.pool.gpu.tdp_watts


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
    burst: Burstiness = POISSON
    """arrival burstiness and per-bucket prompt-length variability (shape (S,)) of its demand"""
    unservable: np.ndarray | None = None
    """shape (S,) bool: buckets no configuration serves within the SLO. Their requests count
    against the SLO's allowance of (100 - percentile)% misses (``slo_miss_share``) instead of being
    shed, as long as they fit in it; None: none (or Mélange input)"""
    miss_budget: float = 0.0
    """share of requests the plan may leave as SLO misses (``plan_configs``), 0..1"""
    planning_percentile: float | None = None
    """the percentile the capacities were modelled at, %: the SLO's, raised to p / (1 - m) when a
    share m of requests is unservable, so that the rest attains enough for the whole to meet p"""

    @property
    def slo_miss_share(self) -> float:
        """Share of requests planned as SLO misses (unservable sizes within the allowance)."""
        return float(self.share[self.unservable].sum()) if self.unservable is not None else 0.0


@dataclass
class FleetProblem:
    """The whole MILP input: workloads with their configs, the pools (by name) and the policy's
    power budget (W), energy price (USD/kWh), solver time limit (s) and relative gap.

    ``gpu_quotas``: name (a namespace) -> (most GPUs, keys of the workloads that share them), from
    ``FleetPolicy.spec.tenancy`` (``api.tenancy.gpu_quotas``, called by ``build_problem``)."""

    workloads: list[WorkloadProblem]
    pools: dict[str, PoolInfo]
    power_budget_watts: float | None = None
    energy_price_per_kwh: float = 0.0
    time_limit_s: float = 30.0
    relative_gap: float = 1e-3
    gpu_quotas: dict[str, tuple[int, frozenset[str]]] = field(default_factory=dict)
    params: PerfParams = field(default_factory=default_params)
    """the calibration profile the capacities were modelled with (``spec.performanceProfile``)"""
    routing_mode: str = "inferencePool"
    """``FleetPolicy.spec.routing`` mode in force (``RoutingPolicy.effective_mode``)"""
    notes: list[str] = field(default_factory=list)
    """what the plan leaves out and why (printed with it), e.g. P/D under ``service`` routing"""
    nodes: list | None = None
    """the nodes of every pool (``solver.placement.Node``): offline from ``GPUPool.spec.gpusPerNode``
    and ``maxGPUs``; None: no node-shape cuts and no placement (Mélange input, baselines)"""
    scenarios: list = field(default_factory=list)
    """further demands the same fleet must serve (``llmfleet plan --scenarios``): per scenario, the
    workloads (``WorkloadProblem``, same keys as ``workloads``) built from that scenario's traffic"""
    current: dict = field(default_factory=dict)
    """running replicas per group (``churn.GroupKey`` -> replicas): a re-plan pays for what it
    starts and stops (``solver.churn``); empty: planning from scratch"""
    current_pd_thresholds: dict = field(default_factory=dict)
    """the running plan's P/D thresholds (workload key -> prompt tokens, ``Plan.pd_threshold_tokens``):
    a workload whose groups a re-plan keeps keeps its threshold where it still serves its demand"""
    current_shortfall: dict = field(default_factory=dict)
    """how the running plan left the workloads that fell short (workload key -> (req/s shed,
    minimum replicas not met), ``Plan.workloads[*]``): a re-plan in a shortage keeps a workload
    that still runs its running groups and falls no further short than this as it runs, unless a
    change elsewhere may have freed GPUs for it (``milp._kept``); empty: every workload that falls
    short is planned afresh"""
    current_capacity_factors: dict = field(default_factory=dict)
    """the running plan's κ factors for the endpoint picker's split (``churn.GroupKey`` -> factor
    < 1, ``Assignment.picker_capacity_factor``): a re-plan plans those groups at the same factor, so
    it neither undoes what the picker's check added nor checks again for what it already holds"""
    alone_optima: set = field(default_factory=set)
    """replica plans shown optimal for their workload alone (``milp.alone_token``: the workload's
    one-by-one model inputs and its replicas), added to by the solves: a re-plan keeps such a
    workload as it runs without solving it alone again. A memo the caller may keep across re-plans
    (the operator does); empty: a re-plan checks every workload it would keep"""
    alone_moves: dict = field(default_factory=dict)
    """the cheaper plan alone found for a workload's running replicas (``milp.alone_token`` of the
    running plan -> config index -> replicas), where the check could not move it (the moves together
    overfilled a pool): the next re-plan tries the move again without solving the workload alone
    again, so the check's time goes to workloads not yet checked. A memo kept like ``alone_optima``"""
    alone_plans: dict = field(default_factory=dict)
    """each workload's cheapest plan alone found in this solve, by the digest of its problem alone
    (``milp.alone_token`` with no replicas, and the placement's limits) -> (config index -> replicas,
    bound on its cost, USD/h):
    the endpoint picker's re-solve, which lowers the capacity of a few workloads' groups, solves
    only those alone again. ``milp.solve`` starts every call with an empty one (the churn against
    ``current`` is not in the digest)"""
    churn_horizon_s: float = 300.0
    """the time the churn cost is spread over, s: the re-plan interval
    (``FleetPolicy.spec.replanIntervalSeconds``), at least ``MIN_CHURN_HORIZON_S``"""
    placement_limits: list = field(default_factory=list)
    """per (pool, TP) replica limits from an earlier placement that left replicas out
    (``placement.limits_from_placement``; only for pools whose TP degrees are not a divisible chain)"""
    power_oversubscription: float = 1.0
    """``FleetPolicy.spec.powerOversubscription``: Σ GPUs x cap ≤ this x the power budget"""
    pin_buckets: bool = False
    """plan with Mélange's per-bucket routing (a size-aware balancer that no deployed router is)
    for every workload, as plans were made before routing was modelled: for comparisons only
    (``bench/routing_shift.py``); ``--melange`` input always uses it"""


def resolve_pool(pool: GPUPool, ref: str | None = None) -> PoolInfo:
    """Resolve a GPUPool's GPU type and price.

    Args:
        ref: how messages name the pool (``<file>: GPUPool/<name>``); default ``GPUPool <name>``.

    Raises:
        ManifestError: unknown GPU type without ``spec.gpu``, or no price anywhere.
    """
    ref = ref or f"GPUPool {pool.metadata.name}"
    s = pool.spec
    if s.gpu is not None:
        gpu = GPUType(name=s.gpu_type, memory_gb=s.gpu.memory_gb, mem_bandwidth_gbps=s.gpu.mem_bandwidth_gbps,
                      peak_bf16_tflops=s.gpu.peak_bf16_tflops, tdp_watts=s.gpu.tdp_watts,
                      interconnect_gbps=s.gpu.interconnect_gbps, spec_source="GPUPool.spec.gpu",
                      peak_fp8_tflops=s.gpu.peak_fp8_tflops, architecture=s.gpu.architecture)
    else:
        try:
            gpu = get_gpu(s.gpu_type)
        except KeyError as err:
            raise ManifestError(f"{ref}: spec.gpuType: {err.args[0]}",
                                ("GPUPool", pool.metadata.name)) from None
    cost = s.cost_per_gpu_hour if s.cost_per_gpu_hour is not None else gpu.default_cost_per_gpu_hour
    if cost is None:
        raise ManifestError(
            f"{ref}: spec.costPerGPUHour is required: the catalogue has no list price for {gpu.name}",
            ("GPUPool", pool.metadata.name),
        )
    net = s.interconnect
    kv_gbit = net.bandwidth_gbit_per_second_per_gpu if net else DEFAULT_KV_GBIT_PER_S_PER_GPU
    return PoolInfo(pool.metadata.name, gpu, s.max_gpus, s.gpus_per_node, cost,
                    net.domain if net else None, kv_gbit * 1e9 / 8, s.power_budget_watts)


def workload_base_dir(spec: FleetSpec, w: LLMWorkload) -> Path:
    """Folder a relative ``spec.traffic.trace.path`` is read from and confined to: the manifest's
    own folder (CLI), else ``spec.base_dir`` (the operator's ``--trace-dir``), else the cwd."""
    source = spec.sources.get(source_key(w))
    if source is not None:
        return source.parent
    return spec.base_dir if spec.base_dir is not None else Path.cwd()


def trace_path(w: LLMWorkload, base_dir: Path, ref: str | None = None) -> Path:
    """The workload's trace file: ``spec.traffic.trace.path`` taken from ``base_dir`` and confined to it.

    The path must be relative and, once every symbolic link is resolved, lie inside ``base_dir``
    (also resolved). A workload can therefore never make the planner open a file outside the folder
    its manifests (or the operator's ``--trace-dir``) live in, such as a ServiceAccount token.

    Raises:
        ManifestError: an absolute path, or one that escapes ``base_dir`` (through ``..`` or a link).
            The message names the field and the base folder, never anything read from a file.
    """
    ref = ref or f"LLMWorkload {w.key}"
    raw = w.spec.traffic.trace.path
    if any(ord(ch) < 32 for ch in raw):
        raise ManifestError(f"{ref}: spec.traffic.trace.path: control characters are not allowed in a path",
                            ("LLMWorkload", w.key))
    path = Path(raw)
    if path.is_absolute() or raw.startswith("~"):
        raise ManifestError(f"{ref}: spec.traffic.trace.path: {raw[:200]!r}: must be a path relative to {base_dir} "
                            "(absolute paths are not allowed)", ("LLMWorkload", w.key))
    base = Path(base_dir).resolve()
    resolved = (base / path).resolve()
    if not resolved.is_relative_to(base):
        raise ManifestError(f"{ref}: spec.traffic.trace.path: {raw[:200]!r} leads outside {base} "
                            "(after following '..' and symbolic links); traces must lie inside that folder",
                            ("LLMWorkload", w.key))
    return resolved


def workload_demand(w: LLMWorkload, base_dir: Path, ref: str | None = None, notes: list[str] | None = None) -> Demand:
    """The workload's demand from its trace (a relative path inside ``base_dir``) or its declared traffic.
    ``notes`` (when given) gets a line where the trace's timestamps were spread within their tick
    (``traces.spread_ticks``).

    Raises:
        ManifestError: the trace path is not allowed or the trace cannot be read (the message names
            the object, the field and the file, and quotes nothing of the file's content).
    """
    ref = ref or f"LLMWorkload {w.key}"
    t = w.spec.traffic
    if t.trace is None:
        return demand_from_spec(t)
    path = trace_path(w, base_dir, ref)
    args = (t.trace.format, t.peak_quantile, t.rate_window_seconds, t.trace.rate_scale)
    try:
        try:
            stat = path.stat()
        except OSError:  # gone or unreadable: load_trace names the file and the reason
            demand, spread = _read_trace_demand(str(path), *args)
        else:
            demand, spread = _kept_trace_demand(str(path), stat.st_mtime_ns, stat.st_size, *args)
    except TraceError as err:
        raise ManifestError(f"{ref}: spec.traffic.trace: {err}", ("LLMWorkload", w.key)) from None
    except ValueError as err:  # a readable trace with no rate (every request at one instant)
        raise ManifestError(f"{ref}: spec.traffic.trace: {path}: {err}", ("LLMWorkload", w.key)) from None
    if notes is not None and spread:
        notes.append(f"{w.key}: {spread}")
    return demand


def _read_trace_demand(path: str, fmt: str, peak_quantile: float, window_s: float,
                       rate_scale: float) -> tuple[Demand, str | None]:
    """(demand, spread note) of the trace file ``path`` (``load_trace``, ``demand_from_trace``,
    ``spread_note``).

    Raises:
        TraceError: the file cannot be read as a ``fmt`` trace.
        ValueError: the trace has no rate (``demand_from_trace``).
    """
    trace = load_trace(path, fmt)
    return demand_from_trace(trace, peak_quantile, window_s, rate_scale), spread_note(trace)


@lru_cache(maxsize=64)
def _kept_trace_demand(path: str, mtime_ns: int, size_bytes: int, *args) -> tuple[Demand, str | None]:
    """``_read_trace_demand``, kept while the file's modification time and size stay as they
    were: the operator asks for a trace-declared workload's demand on every telemetry tick and
    every re-plan, and a trace of a million requests takes seconds to read. ``lru_cache`` keeps
    results only, so a file that failed is read again once fixed."""
    return _read_trace_demand(path, *args)


def check_context_length(w: LLMWorkload, model: ModelSpec, ref: str) -> None:
    """Declared token percentiles must fit the model's context window (vLLM refuses longer requests).

    Raises:
        ManifestError: naming the percentile field, its value and the model's ``max_context_tokens``.
    """
    t = w.spec.traffic
    for field_name, lengths in (("inputTokens", t.input_tokens), ("outputTokens", t.output_tokens)):
        if lengths is None:
            continue
        for pct in ("p50", "p90", "p99"):
            v = getattr(lengths, pct)
            if v > model.max_context_tokens:
                raise ManifestError(f"{ref}: spec.traffic.{field_name}.{pct}: {v} tokens exceeds the context window of "
                                    f"{model.name} ({model.max_context_tokens} tokens)", ("LLMWorkload", w.key))
    if t.input_tokens and t.output_tokens and t.input_tokens.p50 + t.output_tokens.p50 > model.max_context_tokens:
        raise ManifestError(f"{ref}: spec.traffic: median request ({t.input_tokens.p50} input + {t.output_tokens.p50} "
                            f"output tokens) exceeds the context window of {model.name} ({model.max_context_tokens} tokens)",
                            ("LLMWorkload", w.key))


def minimum_gpus(w: LLMWorkload) -> int:
    """GPUs ``spec.serving.minReplicas`` alone need: each replica at least its smallest allowed TP."""
    return w.spec.serving.min_replicas * min(w.spec.serving.tensor_parallel_sizes)


def minimum_gpus_shortfall(spec: FleetSpec) -> str | None:
    """Why no plan can exist when the workloads' ``minReplicas`` alone need more GPUs than all pools
    offer (None when they fit), so the CLI can fail fast instead of modelling capacity first.

    Each replica needs at least its smallest allowed TP degree in GPUs. This costs microseconds per
    workload, so it runs before any capacity is modelled or any trace read.

    Returns:
        A message naming the GPUs needed, the GPUs offered, the fields involved and the largest
        minimums, or None.
    """
    need = sum(minimum_gpus(w) for w in spec.workloads)
    offered = sum(p.spec.max_gpus for p in spec.pools)
    if need > offered:
        top = sorted(spec.workloads, key=lambda w: -minimum_gpus(w))[:3]
        names = ", ".join(f"{w.key} ({w.spec.serving.min_replicas})" for w in top)
        return (f"spec.serving.minReplicas of the {len(spec.workloads)} workloads need at least {need} GPUs; "
                f"the GPUPools offer {offered} (spec.maxGPUs); largest minimums: {names}")
    return None


StepScales = Mapping[tuple[str, str, int, str], float]
"""(``LLMWorkload.spec.model``, GPU type name, TP, role) -> observed over modelled step time of
that deployment (``telemetry.correction``, through ``operator.live.LiveDemand.step_scales``);
absent keys: 1, the profile as is"""


def scaled_params(params: PerfParams, scales: StepScales | None, model: str, gpu: str, tp: int,
                  role: str) -> PerfParams:
    """``params`` with the step-time scale of (model, GPU type, TP, role) from ``scales``."""
    s = (scales or {}).get((model, gpu, tp, role), 1.0)
    if s == 1.0:
        return params
    return dataclasses.replace(params, step_time_scale=params.step_time_scale * s,
                               name=f"{params.name}x{s:.3g}", source=f"{params.source}; step times x {s:.4g} "
                               f"observed for {model} on {gpu} TP{tp} {role} (telemetry.correction)")


def build_problem(spec: FleetSpec, params: PerfParams | None = None,
                  demands: dict[str, Demand] | None = None, inference_pool_crd: bool = True,
                  power_caps: bool = True, cache: dict | None = None,
                  step_scales: StepScales | None = None, workers: int = 1) -> FleetProblem:
    """Assemble the MILP inputs for a whole fleet.

    Args:
        demands: optional demand per workload key, overriding the spec (e.g. from telemetry).
        inference_pool_crd: whether the cluster has the InferencePool CRD (decides the routing
            mode when ``FleetPolicy.spec.routing.mode`` is unset; offline planning assumes it).
        power_caps: under a power budget, offer each configuration at lower cap levels too
            (``solver.caps``); False plans at the default limits only (TDP accounting).
        cache: a dict kept between calls (the operator's): each workload's capacity model is
            reused while its inputs (``_capacity_inputs``) are unchanged, so a re-plan after one
            workload changed models only that one. Left holding this call's workloads only.
        step_scales: calibration from live telemetry (``StepScales``); each configuration's
            capacities are modelled with its own scale (``ReplicaConfig.step_time_scale``).
        workers: processes to model the workloads in (``available_cpus()`` for all the machine
            gives), used from ``PARALLEL_MIN_WORKLOADS`` workloads to model on; 1: this process
            only. The problem is the same either way; where the processes fail (no POSIX
            semaphores, a worker killed), this process models them and a note says so.

    Raises:
        ManifestError: unknown model or GPU type, missing price, token percentiles beyond the
            model's context, a trace path outside its base folder, an unreadable trace.
    """
    policy = spec.policy.spec
    params = params or load_profile(policy.performance_profile)
    routing = policy.routing.effective_mode(inference_pool_crd)
    notes = []
    tiers = {t.name: t.value for t in policy.priority_tiers}
    # canonical order (workloads by namespace/name, pools by name): the MILP's tie-breaking among
    # equal-cost plans follows the order of its variables, so the CLI (file order) and the operator
    # (API list order) must build the same problem to choose the same plan
    workloads = sorted(spec.workloads, key=lambda w: w.key)
    pools = {p.metadata.name: resolve_pool(p, object_ref(spec, p)) for p in sorted(spec.pools, key=lambda p: p.metadata.name)}
    # cheap checks first: every model known and every request within its context, before any
    # trace is read or capacity modelled
    models = {}
    for w in workloads:
        ref = object_ref(spec, w)
        try:
            base = resolve_model(w.spec.model, w.spec.architecture)
        except KeyError as err:
            raise ManifestError(f"{ref}: spec.model: {err.args[0]}", ("LLMWorkload", w.key)) from None
        check_context_length(w, base, ref)
        s = w.spec.serving
        if routing == "service" and s.disaggregation == "always":
            raise ManifestError(f"{ref}: spec.serving.disaggregation: always needs a router that sends prompts to "
                                f"prefill pods (FleetPolicy spec.routing.mode inferencePool or standalone); "
                                f"with routing mode service, use auto or never", ("LLMWorkload", w.key))
        if routing == "service" and s.disaggregation == "auto":
            notes.append(f"{w.key}: P/D disaggregation not considered: FleetPolicy spec.routing.mode is service, "
                         f"and a Service cannot send prompts to prefill pods and their decode to decode pods")
        models[w.key] = with_precision(base, s.quantization, s.kv_cache_dtype)
        why = [unsupported(p.gpu, s.quantization, s.kv_cache_dtype) for p in pools.values()]
        if pools and all(why):
            raise ManifestError(f"{ref}: no GPUPool can serve this precision: {'; '.join(dict.fromkeys(why))}",
                                ("LLMWorkload", w.key))
    budgeted = policy.power_budget_watts is not None or any(p.power_budget_watts for p in pools.values())
    problems: list[WorkloadProblem | None] = []
    fresh: dict = {}
    todo = []  # (index in problems, workload, demand, cache key) of the workloads to model
    for k, w in enumerate(workloads):
        demand = (demands or {}).get(w.key) or workload_demand(w, workload_base_dir(spec, w), object_ref(spec, w), notes)
        key = None
        if cache is not None:
            scales = sorted((k, v) for k, v in (step_scales or {}).items() if k[0] == w.spec.model)
            key = _capacity_inputs(w, demand, pools, [policy.headroom, tiers[w.spec.priority], budgeted], params,
                                   routing, power_caps, scales)
            if key in cache:
                fresh[key] = cache[key]
                problems.append(dataclasses.replace(cache[key], workload=w))
                continue
        problems.append(None)
        todo.append((k, w, demand, key))
    # workloads of one model, scheduler limits and request sizes read the same replica curves:
    # modelled one after another in one memo block (``shared_steady_states``), each group's curves
    # are computed once and dropped before the next group's
    groups: dict = {}
    for item in todo:
        groups.setdefault(_curve_inputs(item[1], models[item[1].key], item[2]), []).append(item)
    common = (pools, policy, tiers, params, routing, budgeted, power_caps, step_scales)
    jobs = sorted(([(k, w, models[w.key], demand) for k, w, demand, _ in group] for group in groups.values()),
                  key=len, reverse=True)  # the largest first: the processes end together
    keys = {k: key for k, _, _, key in todo}
    modelled = None
    if workers > 1 and len(todo) >= PARALLEL_MIN_WORKLOADS and len(jobs) > 1:
        try:
            modelled = list(_model_in_processes(jobs, common, min(workers, len(jobs)), len(todo)))
        except (OSError, ImportError, BrokenProcessPool) as err:
            # a sandbox without POSIX semaphores or /dev/shm, or a worker killed (out of memory):
            # the same problem from this process, slower
            notes.append(f"the capacity model ran in one process: worker processes failed ({type(err).__name__})")
    if modelled is None:
        count = iter(range(1, len(todo) + 1))
        modelled = (item for job in jobs for item in _model_groups(
            job, common, lambda w: progress.report(f"capacity model: workload {next(count)}/{len(todo)} ({w.key})")))
    for k, wp in modelled:
        problems[k] = wp
        if cache is not None:
            fresh[keys[k]] = wp
    if cache is not None:
        cache.clear()
        cache.update(fresh)
    return FleetProblem(problems, pools, policy.power_budget_watts, policy.energy_price_per_kwh,
                        policy.solver.time_limit_seconds, policy.solver.relative_gap,
                        gpu_quotas=gpu_quotas(spec.policy, workloads, spec.namespace_labels), params=params,
                        routing_mode=routing, notes=notes,
                        power_oversubscription=policy.power_oversubscription,
                        churn_horizon_s=max(policy.replan_interval_seconds, MIN_CHURN_HORIZON_S),
                        nodes=[n for p in pools.values() if p.max_gpus <= MAX_OFFLINE_NODES * p.gpus_per_node
                               for n in offline_nodes(p.name, p.max_gpus, p.gpus_per_node)])


PARALLEL_MIN_WORKLOADS = 8
"""fewest workloads to model before ``build_problem`` spreads them over ``workers`` processes:
below it the capacity model takes about a second (160 ms a workload at 50 workloads), of which
starting processes and copying their results back would take much. bench/solver_scale.py's
50-workload fleet on 2 cores: the capacity model took 9.1 s in one process and 5.0 s in two
(forked workers, the same κ to the bit)"""


def available_cpus() -> int:
    """CPUs this process may use: the fewest of the machine's, its affinity mask (a container's
    cpuset) and its cgroup's CPU quota rounded up (a pod's CPU limit, ``docker --cpus``), as
    ``loky.cpu_count`` reads them (``LOKY_MAX_CPU_COUNT`` caps it too). What ``llmfleet plan``
    gives ``build_problem(workers=)``: a CI job or GitOps pipeline limited to 2 CPUs on a
    64-core node starts 2 processes, not 64."""
    from loky import cpu_count  # imported on first use (about 0.08 s); the operator asks only for workers > 1

    return max(int(cpu_count()), 1)


def _model_groups(job: list, common: tuple, starting=None) -> list[tuple[int, "WorkloadProblem"]]:
    """Model the workloads of one curve group (``_curve_inputs``) in one memo block:
    [(index in the fleet's workloads, WorkloadProblem)]. ``job``: [(index, LLMWorkload, model,
    demand)]; ``common``: ``_workload_problem``'s other arguments; ``starting``: called with each
    LLMWorkload before it is modelled (progress). Runs in ``build_problem``'s process or in a
    worker of ``_model_in_processes``."""
    pools, policy, tiers, params, routing, budgeted, power_caps, step_scales = common
    out = []
    with shared_steady_states():
        for k, w, model, demand in job:
            if starting is not None:
                starting(w)
            out.append((k, _workload_problem(w, model, demand, pools, policy, tiers, params, routing, budgeted,
                                             power_caps, step_scales)))
    return out


def _model_in_processes(jobs: list, common: tuple, workers: int, total: int):
    """``_model_groups`` of each job in a pool of ``workers`` processes, yielding (index,
    WorkloadProblem) as the jobs end (with progress). A worker returns copies: each problem is
    pointed back at the caller's own objects (workload, model, demand, pools), as a problem
    modelled here would be. Workers fork from this process where it runs one thread (the CLI);
    else from a fork server, as a fork would copy the other threads' locks held (a fork server
    starts the way ``spawn`` does: the main module must guard its entry point)."""
    if threading.active_count() == 1:
        ctx = multiprocessing.get_context("fork")
    else:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
    pools = common[0]
    done = 0
    with ProcessPoolExecutor(workers, mp_context=ctx) as ex:
        futures = {ex.submit(_model_groups, job, common): job for job in jobs}
        for future in as_completed(futures):
            originals = {k: (w, model, demand) for k, w, model, demand in futures[future]}
            for k, wp in future.result():
                wp.workload, wp.model, wp.demand = originals[k]
                for c in wp.configs:
                    c.pool = pools[c.pool.name]
                done += 1
                progress.report(f"capacity model: {done}/{total} workloads modelled ({wp.key}; {workers} processes)")
                yield k, wp


def _curve_inputs(w: LLMWorkload, model, demand: Demand) -> tuple:
    """What the replica curves of a workload's capacity model depend on besides the pool: the
    model (with its precision), the scheduler limits and memory share, and the request sizes of
    its buckets."""
    idx = np.argwhere(demand.share > 0)
    s = w.spec.serving
    return (model, s.max_num_seqs, s.max_num_batched_tokens, s.gpu_memory_utilization,
            demand.input_tokens[idx[:, 0], idx[:, 1]].tobytes(), demand.output_tokens[idx[:, 0], idx[:, 1]].tobytes())


def _workload_problem(w: LLMWorkload, model, demand: Demand, pools: dict, policy, tiers: dict, params: PerfParams,
                      routing: str, budgeted: bool, power_caps: bool, step_scales) -> WorkloadProblem:
    """One workload's capacity model (its configurations, κ, power) for ``build_problem``."""
    idx = np.argwhere(demand.share > 0)
    share = demand.share[idx[:, 0], idx[:, 1]]
    inp = demand.input_tokens[idx[:, 0], idx[:, 1]]
    out = demand.output_tokens[idx[:, 0], idx[:, 1]]
    scv = demand.input_scv[idx[:, 0], idx[:, 1]] if demand.input_scv is not None else 0.0
    # the queues that decide a TTFT form over about the TTFT itself: the arrivals' burstiness at
    # that timescale (bursts much longer than it are the load levels, ``Demand.rate_levels``)
    queue_window_s = min(max(w.spec.slo.ttft, ARRIVAL_IDC_WINDOWS_S[0]), BURST_WINDOW_S)
    burst = Burstiness(demand.arrival_scv, scv, queue_arrival_scv=demand.arrival_scv_at(queue_window_s),
                       arrival_idc=demand.arrival_idc, followers=demand.arrival_followers)
    wp = WorkloadProblem(
        key=w.key, workload=w, model=model, demand=demand,
        rate_rps=demand.rate_plan_rps * (1.0 + policy.headroom),
        share=share, input_tokens=inp, output_tokens=out,
        tier=w.spec.priority, tier_value=tiers[w.spec.priority], min_replicas=w.spec.serving.min_replicas,
        burst=burst,
    )
    configs, wp.unservable, wp.planning_percentile, wp.miss_budget = plan_configs(
        w, model, list(pools.values()), share, inp, out, params, routing != "service", burst, step_scales,
        wp.rate_rps)
    wp.configs = attach_power(configs, model, inp, out, share, wp.planning_percentile, params,
                              w.spec.serving.gpu_memory_utilization, w.spec.serving.max_num_seqs,
                              w.spec.serving.max_num_batched_tokens)
    if budgeted and power_caps:
        wp.configs += capped_configs(w, model, wp.configs, inp, out, share, params, wp.planning_percentile, burst)
    return wp


MIN_CHURN_HORIZON_S = 300.0
"""the shortest time a re-plan's change stands, s: a scale-down waits out the scale-down
stabilisation (``telemetry.stability``: 300 s, Kubernetes HPA's default downscale stabilisation),
so a replica started now runs at least that long. Spreading a start or a drain over a re-plan
interval of a few seconds instead would make any drain dearer than the idle GPU it frees."""


def _capacity_inputs(w: LLMWorkload, demand: Demand, pools: dict, policy_read: list, params: PerfParams,
                     routing: str, power_caps: bool, scales: list | None = None) -> str:
    """A digest of everything a workload's capacity model reads: its key and spec, its demand (the
    arrays themselves, so a trace whose content changed misses), every pool, what it reads of the
    FleetPolicy (``policy_read``: headroom, the value of its tier, whether power is budgeted; not
    the whole policy, so a changed time limit or re-plan interval re-models nothing), the
    performance parameters, the step-time scales of its model and the routing mode."""
    h = hashlib.sha256()
    h.update(json.dumps([w.key, w.spec.model_dump(mode="json"), policy_read, repr(params),
                         scales or [], routing, power_caps, [repr(p) for p in pools.values()],
                         demand.rate_mean_rps, demand.rate_plan_rps, demand.arrival_scv, demand.rate_levels,
                         demand.arrival_idc, demand.arrival_followers],
                        sort_keys=True, default=str).encode())
    for a in (demand.share, demand.input_tokens, demand.output_tokens, demand.input_edges, demand.output_edges,
              demand.input_scv, demand.input_quantiles):
        h.update(b"-" if a is None else np.ascontiguousarray(a, dtype=float).tobytes())
    return h.hexdigest()


def replica_configs(w: LLMWorkload, model: ModelSpec, pools: list[PoolInfo], inp: np.ndarray, out: np.ndarray,
                    params: PerfParams, pd_allowed: bool = True, burst: Burstiness = POISSON,
                    percentile: float | None = None, step_scales: StepScales | None = None,
                    bucket_rps: np.ndarray | None = None) -> list[ReplicaConfig]:
    """Every feasible (pool, TP, role) of a workload with its capacity per bucket.

    Prefill and decode configs are kept only where a partner of the other role shares their P/D
    group (``solver.pd_rules``: KV-transfer domain and attention backend); decode configs carry
    ``whole_capacity_rps``, what they serve when the router gives them a short prompt whole.

    Args:
        inp, out: shape (S,), bucket request sizes, tokens.
        pd_allowed: whether the deployed routing can disaggregate (not under ``service`` routing).
        burst: the demand's arrival and prompt-length variability (``perf.capacity.Burstiness``).
        percentile: the latency percentile to plan at, % (default: the SLO's).
        step_scales: observed step-time scales (``StepScales``); each (pool, TP, role) is modelled
            with its own and records it (``ReplicaConfig.step_time_scale``).
        bucket_rps: shape (S,), the rate to plan for per bucket, req/s: with bursty arrivals a
            colocated configuration's κ is that of one of the replicas it needs to carry them
            (``spread_capacity``); None: of one replica alone.
    """
    slo, serving = w.spec.slo, w.spec.serving

    def pp(pool: PoolInfo, tp: int, role: str) -> PerfParams:
        return scaled_params(params, step_scales, w.spec.model, pool.gpu.name, tp, role)

    def scale(pool: PoolInfo, tp: int, role: str) -> float:
        return (step_scales or {}).get((w.spec.model, pool.gpu.name, tp, role), 1.0)

    pct = slo.percentile if percentile is None else percentile
    gmu = serving.gpu_memory_utilization
    seqs = w.spec.serving.max_num_seqs
    budget = w.spec.serving.max_num_batched_tokens
    shapes = [(pool, tp) for pool in pools for tp in serving.tensor_parallel_sizes
              if tp <= pool.gpus_per_node and tp <= pool.max_gpus and weights_fit(model, pool.gpu, tp, gmu)
              and unsupported(pool.gpu, serving.quantization, serving.kv_cache_dtype) is None]
    whole = {(pool.name, tp): capacity_rps(model, pool.gpu, tp, inp, out, slo.ttft, slo.tpot, pct,
                                           pp(pool, tp, "colocated"), gmu, seqs, budget, burst)
             for pool, tp in shapes}
    configs: list[ReplicaConfig] = []
    if serving.disaggregation != "always":
        for pool, tp in shapes:
            kappa, spread = whole[pool.name, tp], 1
            if bucket_rps is not None and burst.bursty and (kappa > 0).any():
                kappa, spread = spread_capacity(
                    lambda b, pool=pool, tp=tp: capacity_rps(model, pool.gpu, tp, inp, out, slo.ttft, slo.tpot, pct,
                                                             pp(pool, tp, "colocated"), gmu, seqs, budget, b),
                    burst, kappa, bucket_rps, pool.max_gpus // tp)
            if (kappa > 0).any():
                configs.append(ReplicaConfig(pool, tp, kappa, tp * pool.cost_per_gpu_hour,
                                             step_time_scale=scale(pool, tp, "colocated"), burst_replicas=spread))
    if serving.disaggregation == "never" or not pd_allowed:
        return configs
    decode = []
    for pool, tp in shapes:
        p_decode = pp(pool, tp, "decode")
        kappa = decode_capacity_rps(model, pool.gpu, tp, inp, out, slo.tpot, pct, p_decode, gmu, seqs, burst)
        if (kappa > 0).any():
            # a short prompt served whole on a decode pod runs on the decode pods' engine
            served_whole = whole[pool.name, tp] if p_decode is params else capacity_rps(
                model, pool.gpu, tp, inp, out, slo.ttft, slo.tpot, pct, p_decode, gmu, seqs, budget, burst)
            decode.append(ReplicaConfig(pool, tp, kappa, tp * pool.cost_per_gpu_hour, role="decode",
                                        whole_capacity_rps=served_whole, step_time_scale=scale(pool, tp, "decode")))
    # receive bandwidth of the slowest decode configuration of each P/D group (each GPU of a TP
    # group receives its own shard of the KV cache over its own NIC)
    receive: dict[tuple, float] = {}
    for d in decode:
        receive[d.pd_group] = min(receive.get(d.pd_group, d.kv_bytes_per_s), d.kv_bytes_per_s)
    for pool, tp in shapes:
        group = pd_group(pool.kv_domain, pool.gpu, tp)
        if group not in receive:
            continue  # no decode replica could take this pool's KV caches
        transfer = kv_transfer_s(model, inp, min(tp * pool.kv_bytes_per_s_per_gpu, receive[group]))
        kappa = prefill_capacity_rps(model, pool.gpu, tp, inp, slo.ttft, pct, transfer, slo.tpot,
                                     pp(pool, tp, "prefill"), gmu, burst)
        if (kappa > 0).any():
            configs.append(ReplicaConfig(pool, tp, kappa, tp * pool.cost_per_gpu_hour, role="prefill",
                                         kv_transfer_s=transfer, step_time_scale=scale(pool, tp, "prefill")))
    prefill_groups = {c.pd_group for c in configs if c.role == "prefill"}
    return configs + [d for d in decode if d.pd_group in prefill_groups]


def servable_buckets(configs: list[ReplicaConfig], n_buckets: int) -> np.ndarray:
    """Shape (S,) bool: buckets some configuration serves within the SLO: whole on a colocated or
    decode replica, or through a prefill and a decode replica of one P/D group."""
    ok = np.zeros(n_buckets, dtype=bool)
    prefill: dict[tuple, np.ndarray] = {}
    decode: dict[tuple, np.ndarray] = {}
    for c in configs:
        if c.role == "colocated":
            ok |= c.capacity_rps > 0
        elif c.role == "decode":
            ok |= c.whole_capacity_rps > 0
            decode[c.pd_group] = decode.get(c.pd_group, np.zeros(n_buckets, dtype=bool)) | (c.capacity_rps > 0)
        else:
            prefill[c.pd_group] = prefill.get(c.pd_group, np.zeros(n_buckets, dtype=bool)) | (c.capacity_rps > 0)
    for g, pre in prefill.items():
        ok |= pre & decode.get(g, np.zeros(n_buckets, dtype=bool))
    return ok


PARTIAL_MISS_FRACTION = 0.1
"""Part of the SLO's allowance of misses (after the sizes no config serves) that groups serving
almost every size may spend on the few they cannot (e.g. a 32k-token prompt on an L40S under a
tight TTFT): 10% of a p90 SLO's 10% is 1% of requests. A design choice, not a measured constant:
larger values admit more heterogeneity but tighten the percentile every other size is planned at."""


def plan_configs(w: LLMWorkload, model: ModelSpec, pools: list[PoolInfo], share: np.ndarray, inp: np.ndarray,
                 out: np.ndarray, params: PerfParams, pd_allowed: bool, burst: Burstiness,
                 step_scales: StepScales | None = None, rate_rps: float | None = None
                 ) -> tuple[list[ReplicaConfig], np.ndarray | None, float, float]:
    """The workload's configurations with the SLO percentile spent as a budget (DESIGN §6).

    The router balances by load and cannot see sizes, so every group of a workload receives every
    request size. Requests of sizes no configuration serves within the SLO (``servable_buckets``)
    miss it wherever they go; a group that serves all but a few sizes misses those. While such
    misses fit in the allowance 1 - p/100 they are planned as misses, not shed: the misses may
    take the unservable share m plus ``PARTIAL_MISS_FRACTION`` of the rest of the allowance, and
    the capacities are remodelled at the percentile p / (1 - budget), so that all requests together
    still attain p. Beyond the allowance the unservable sizes are shed (a shortage) and the
    capacities stay at p.

    ``rate_rps``: the workload's rate to plan for, req/s (None: unknown): with bursty arrivals a
    colocated configuration's κ is that of one of the replicas it needs to carry it
    (``replica_configs``' ``bucket_rps``, this rate times ``share``).

    Returns:
        (configs, unservable (S,) bool or None, planning percentile %, miss budget: the share of
        requests the plan may leave as SLO misses, 0..1).
    """
    pct = w.spec.slo.percentile
    allowance = 1.0 - pct / 100.0
    bucket_rps = None if rate_rps is None else rate_rps * share  # ``replica_configs``: κ of a group that carries it
    base = replica_configs(w, model, pools, inp, out, params, pd_allowed, burst, step_scales=step_scales,
                           bucket_rps=bucket_rps)
    bad = ~servable_buckets(base, len(share))
    if float(share[bad].sum()) > allowance + 1e-12:
        return base, None, pct, 0.0
    partial = any(c.role != "decode" and (c.capacity_rps[~bad] <= 0).any() for c in base)
    if not bad.any() and not partial:
        return base, None, pct, 0.0
    budget = float(share[bad].sum())
    if partial:
        budget += PARTIAL_MISS_FRACTION * (allowance - budget)
    for _ in range(3):  # a tighter percentile can lose sizes: raise until the budget holds
        raised = min(pct / (1.0 - budget), 99.99)
        configs = replica_configs(w, model, pools, inp, out, params, pd_allowed, burst, percentile=raised,
                                  step_scales=step_scales, bucket_rps=bucket_rps)
        bad = ~servable_buckets(configs, len(share))
        if float(share[bad].sum()) <= budget + 1e-12:
            break
        budget = float(share[bad].sum())
    else:
        return base, None, pct, 0.0
    if float(share[bad].sum()) > allowance + 1e-12:
        return base, None, pct, 0.0
    s, gmu = w.spec.serving, w.spec.serving.gpu_memory_utilization
    for c in configs:  # what a request a group cannot serve in time costs it: its throughput
        kappa = c.whole_capacity_rps if c.role == "decode" else c.capacity_rps
        miss = kappa <= 0
        c.throughput_rps = np.zeros(len(share))
        if not miss.any():
            continue
        cp = scaled_params(params, step_scales, w.spec.model, c.pool.gpu.name, c.tp, c.role)
        if c.role == "prefill":
            c.throughput_rps[miss] = prefill_capacity_rps(model, c.pool.gpu, c.tp, inp[miss], _NO_TARGET_S, raised,
                                                          c.kv_transfer_s[miss], 0.0, cp, gmu,
                                                          burst_subset(burst, miss))
        else:
            c.throughput_rps[miss] = capacity_rps(model, c.pool.gpu, c.tp, inp[miss], out[miss], _NO_TARGET_S,
                                                  _NO_TARGET_S, raised, cp, gmu, s.max_num_seqs,
                                                  s.max_num_batched_tokens, burst_subset(burst, miss))
    return configs, (bad if bad.any() else None), raised, budget


_NO_TARGET_S = 1e9
"""a latency target no request misses: capacity at it is the replica's sustainable throughput"""


def burst_subset(burst: Burstiness, mask: np.ndarray) -> Burstiness:
    """``burst`` restricted to the buckets of ``mask`` (its per-bucket prompt SCV, if an array)."""
    scv = np.asarray(burst.service_scv, dtype=float)
    return burst if scv.ndim == 0 else dataclasses.replace(burst, service_scv=scv[mask])
