"""What the simulator replays a trace against: a plan's replica groups with everything needed to
time them (model, GPU, TP, role, KV-transfer domain) and to route requests (per-bucket rates).

A ``Scenario`` is built from a solved plan in memory (``from_plan``) or read back from the
``scenario`` key of ``llmfleet plan -o json`` (``from_document``), so ``llmfleet simulate`` needs
nothing but the plan file and a trace.
"""

from __future__ import annotations

import dataclasses
import math

from dataclasses import asdict, dataclass, field

import numpy as np

from llmfleet.catalog.gpus import GPUType
from llmfleet.catalog.models import ModelSpec, resolve_model
from llmfleet.api.models import ALLOWED_TP, ModelArchitecture
from llmfleet.perf.steptime import DEFAULT_PROFILE, PROFILES
from llmfleet.solver.plan import Plan
from llmfleet.solver.problem import FleetProblem
from llmfleet.workload.demand import INPUT_EDGES_TOKENS, OUTPUT_EDGES_TOKENS, bucket_index


ROUTERS = ("load-aware", "uniform", "plan-shares")
"""How the simulator routes a request to a replica:

- ``load-aware``: what llm-d's endpoint picker does (``inferencePool`` and ``standalone``
  routing): a prompt of at least the plan's P/D threshold goes to the prefill replica, and its
  decode to the decode replica (same KV domain), with the fewest outstanding requests; any other
  prompt to the colocated replica with the fewest. The picker's queue scorer sees exactly that;
  its KV-cache and prefix scorers are not modelled (no prefix reuse is simulated).
- ``uniform``: a plain Service: kube-proxy picks a pod at random, every pod alike.
- ``plan-shares``: the plan's own per-bucket shares, then the least-loaded replica of the group.
  It knows each request's output length, which no router does; kept to compare with old plans."""

ROUTER_OF_MODE = {"inferencePool": "load-aware", "standalone": "load-aware", "service": "uniform"}
"""the simulated router of each ``FleetPolicy.spec.routing`` mode"""


class ScenarioError(ValueError):
    """A plan document the simulator cannot use (the message names the key)."""


@dataclass
class SimGroup:
    """Identical replicas of one workload: ``replicas`` x ``tp`` GPUs of ``gpu`` in ``role``.

    ``bucket_rate_rps`` (S,) is the traffic the plan routes to the group per bucket, req/s.
    """

    role: str
    pool: str
    gpu: GPUType
    tp: int
    replicas: int
    bucket_rate_rps: np.ndarray
    kv_domain: str
    kv_bytes_per_s_per_gpu: float
    compute_scale: float = 1.0
    """factor on the step times' compute rate under the group's power cap (``solver.caps``, 1: none)"""
    cap_watts: float | None = None
    """the group's power cap per GPU, W (None: the default limit)"""

    @property
    def name(self) -> str:
        cap = f"@{self.cap_watts:.0f}W" if self.cap_watts is not None else ""
        return f"{self.pool}/tp{self.tp}/{self.role}{cap}"


@dataclass
class SimWorkload:
    """One workload: its model, SLO, size buckets and the groups that serve it.

    ``buckets`` holds the (input, output) grid index of each of the plan's S buckets.
    """

    key: str
    model: ModelSpec
    ttft_s: float
    tpot_s: float
    percentile: float
    gpu_memory_utilization: float
    buckets: list[tuple[int, int]]
    groups: list[SimGroup] = field(default_factory=list)
    rate_scale: float = 1.0
    architecture: dict | None = None
    max_num_seqs: int | None = None
    """``spec.serving.maxNumSeqs`` (None: the simulator's default)"""
    max_num_batched_tokens: int | None = None
    """``spec.serving.maxNumBatchedTokens`` (None: vLLM's default by GPU memory)"""
    performance_profile: str = DEFAULT_PROFILE
    """the step-time calibration the plan was made with (``FleetPolicy.spec.performanceProfile``)"""
    router: str = "load-aware"
    """how the deployed router spreads requests (``ROUTERS``): ``load-aware`` for an endpoint picker
    (``inferencePool``/``standalone`` routing), ``uniform`` for a plain Service"""
    pd_threshold_tokens: int | None = None
    """prompts of at least this many tokens go through a prefill pod (``Plan.pd_threshold_tokens``);
    None with prefill groups: every prompt does"""

    def bucket_of(self, input_tokens: np.ndarray, output_tokens: np.ndarray) -> np.ndarray:
        """Index into ``buckets`` of each request, -1 for sizes the plan has no bucket for."""
        i, j = bucket_index(input_tokens, output_tokens)
        lookup = {b: k for k, b in enumerate(self.buckets)}
        return np.array([lookup.get((int(a), int(b)), -1) for a, b in zip(i, j)], dtype=int)


def from_plan(plan: Plan, fp: FleetProblem) -> list[SimWorkload]:
    """The scenario of a solved plan (workloads without a model, e.g. Mélange input, are skipped)."""
    out = []
    for w in fp.workloads:
        if w.model is None or w.workload is None:
            continue
        spec = w.workload.spec
        grid = [(int(i), int(j)) for i, j in w.demand.buckets()]  # the order build_problem uses
        sw = SimWorkload(
            key=w.key, model=w.model, ttft_s=spec.slo.ttft, tpot_s=spec.slo.tpot, percentile=spec.slo.percentile,
            gpu_memory_utilization=spec.serving.gpu_memory_utilization, buckets=grid,
            rate_scale=spec.traffic.trace.rate_scale if spec.traffic.trace else 1.0,
            architecture=spec.architecture.model_dump(by_alias=True) if spec.architecture else None,
            max_num_seqs=spec.serving.max_num_seqs, max_num_batched_tokens=spec.serving.max_num_batched_tokens,
            performance_profile=fp.params.name, router=ROUTER_OF_MODE[fp.routing_mode],
            pd_threshold_tokens=plan.pd_threshold_tokens.get(w.key),
        )
        for a in plan.assignments:
            if a.workload != w.key:
                continue
            pool = a.config.pool
            sw.groups.append(SimGroup(a.role, a.pool, pool.gpu, a.tp, a.replicas, np.asarray(a.bucket_rate_rps, dtype=float),
                                      pool.kv_domain, pool.kv_bytes_per_s_per_gpu,
                                      getattr(a.config, "compute_scale", 1.0), getattr(a.config, "cap_watts", None)))
        out.append(sw)
    return out


def to_document(workloads: list[SimWorkload]) -> dict:
    """JSON-ready form (the ``scenario`` key of ``llmfleet plan -o json``)."""
    docs = []
    for w in workloads:
        docs.append({
            "workload": w.key, "model": w.model.name, "architecture": w.architecture,
            "precision": {"bytesPerWeight": w.model.bytes_per_weight, "kvBytesPerElement": w.model.kv_bytes_per_element,
                          "computeDtype": w.model.compute_dtype},
            "slo": {"ttftSeconds": w.ttft_s, "tpotSeconds": w.tpot_s, "percentile": w.percentile},
            "gpuMemoryUtilization": w.gpu_memory_utilization, "rateScale": w.rate_scale,
            "maxNumSeqs": w.max_num_seqs, "maxNumBatchedTokens": w.max_num_batched_tokens,
            "performanceProfile": w.performance_profile, "router": w.router,
            "pdThresholdTokens": w.pd_threshold_tokens,
            "buckets": [list(b) for b in w.buckets],
            "groups": [{
                "role": g.role, "pool": g.pool, "tensorParallelSize": g.tp, "replicas": g.replicas,
                "bucketRateRps": [round(float(v), 6) for v in g.bucket_rate_rps],
                "kvDomain": g.kv_domain, "kvBytesPerSecondPerGPU": g.kv_bytes_per_s_per_gpu,
                "computeScale": g.compute_scale, "powerCapWatts": g.cap_watts,
                "gpu": asdict(g.gpu),
            } for g in w.groups],
        })
    return {"inputEdgesTokens": INPUT_EDGES_TOKENS.tolist(), "outputEdgesTokens": OUTPUT_EDGES_TOKENS.tolist(),
            "workloads": docs}


def from_document(doc: dict) -> list[SimWorkload]:
    """Read the ``scenario`` of a plan document.

    Raises:
        ScenarioError: missing keys, values of the wrong type or range, an unknown model, or
            bucket edges from another llmfleet version.
    """
    try:
        sc = doc["scenario"]
        if sc["inputEdgesTokens"] != INPUT_EDGES_TOKENS.tolist() or sc["outputEdgesTokens"] != OUTPUT_EDGES_TOKENS.tolist():
            raise ScenarioError("scenario: bucket edges differ from this llmfleet's; re-run `llmfleet plan -o json`")
        out = []
        for w in sc["workloads"]:
            arch = w.get("architecture")
            model = resolve_model(w["model"], ModelArchitecture.model_validate(arch) if arch else None)
            prec = w.get("precision")
            if prec:  # plans written before precision was modelled are BF16
                if prec["computeDtype"] not in ("bf16", "fp8", "fp4"):
                    raise ValueError("computeDtype")
                model = dataclasses.replace(model, bytes_per_weight=float(prec["bytesPerWeight"]),
                                            kv_bytes_per_element=float(prec["kvBytesPerElement"]),
                                            compute_dtype=prec["computeDtype"])
            sw = SimWorkload(
                key=w["workload"], model=model, ttft_s=w["slo"]["ttftSeconds"], tpot_s=w["slo"]["tpotSeconds"],
                percentile=w["slo"]["percentile"], gpu_memory_utilization=w["gpuMemoryUtilization"],
                buckets=[tuple(b) for b in w["buckets"]], rate_scale=w.get("rateScale", 1.0), architecture=arch,
                max_num_seqs=_optional_int(w.get("maxNumSeqs")),
                max_num_batched_tokens=_optional_int(w.get("maxNumBatchedTokens")),
                # plans written before profiles existed were made with the Splitwise-era model
                performance_profile=str(w.get("performanceProfile", "splitwise-2023")),
                # plans written before routers were simulated assumed the plan's own shares
                router=str(w.get("router", "plan-shares")),
                pd_threshold_tokens=_optional_int(w.get("pdThresholdTokens")),
            )
            for g in w["groups"]:
                sw.groups.append(SimGroup(g["role"], g["pool"], GPUType(**g["gpu"]), g["tensorParallelSize"], g["replicas"],
                                          np.asarray(g["bucketRateRps"], dtype=float), g["kvDomain"],
                                          g["kvBytesPerSecondPerGPU"], float(g.get("computeScale", 1.0)),
                                          g.get("powerCapWatts")))
            _check(sw)
            out.append(sw)
        return out
    except ScenarioError:
        raise
    except KeyError as err:
        raise ScenarioError(f"plan document: missing key {str(err.args[0])[:60]!r} (write it with `llmfleet plan -o json`)") from None
    except (TypeError, ValueError, AttributeError, IndexError) as err:
        raise ScenarioError(f"plan document: scenario has a value of the wrong type or shape ({type(err).__name__}); "
                            "write it with `llmfleet plan -o json`") from None


def _optional_int(value) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1_048_576:
        raise ValueError("scheduler limit")
    return value


def _check(w: SimWorkload) -> None:
    """Ranges the simulator relies on (a hand-edited plan file can hold anything)."""
    def positive(value, name):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
            raise ScenarioError(f"plan document: workload {w.key}: {name} must be a finite number > 0")
    positive(w.ttft_s, "slo.ttftSeconds")
    positive(w.tpot_s, "slo.tpotSeconds")
    positive(w.rate_scale, "rateScale")
    if not 0 < w.percentile < 100:
        raise ScenarioError(f"plan document: workload {w.key}: slo.percentile must be in (0, 100)")
    if w.router not in ROUTERS:
        raise ScenarioError(f"plan document: workload {w.key}: router must be one of {', '.join(ROUTERS)}")
    if w.performance_profile not in PROFILES:
        raise ScenarioError(f"plan document: workload {w.key}: performanceProfile must be one of {', '.join(PROFILES)}")
    for g in w.groups:
        if not isinstance(g.replicas, int) or isinstance(g.replicas, bool) or g.replicas < 0 or g.tp not in ALLOWED_TP:
            raise ScenarioError(f"plan document: workload {w.key}: group {g.pool}: replicas must be an integer >= 0 "
                                f"and tensorParallelSize one of {', '.join(map(str, ALLOWED_TP))}")
        if len(g.bucket_rate_rps) != len(w.buckets) or not np.isfinite(g.bucket_rate_rps).all() or (g.bucket_rate_rps < 0).any():
            raise ScenarioError(f"plan document: workload {w.key}: group {g.pool}: bucketRateRps must hold one finite "
                                f"rate >= 0 per bucket ({len(w.buckets)})")
