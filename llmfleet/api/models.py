"""Pydantic models of the llmfleet custom resources (group ``llmfleet.dev``, version ``v1alpha1``).

These models are the single source of truth for the CRDs: field names are the camelCase names a
user writes in YAML (``costPerGPUHour``), Python code uses the snake_case attribute
(``cost_per_gpu_hour``). Unknown fields are refused so that a typo never silently falls back to
a default. Every numeric field carries its unit in its name or its description.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from llmfleet.api.units import DURATION_PATTERN, format_duration, parse_duration_s

API_GROUP = "llmfleet.dev"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"

MAX_TOKENS = 10_000_000
"""Upper bound on any token count we accept, tokens: above the longest context window of any model
served today (Llama 4 Scout, 10M tokens); larger values are input errors, not workloads"""

DEFAULT_IMAGE = "vllm/vllm-openai:v0.26.0"
"""The vLLM image rendered when a workload names none (and the only one allowed without a tenancy rule).
v0.26.0 is the release llm-d's P/D path pins beside llm-d-router v0.10.0 (llm-d/llm-d
guides/recipes/modelserver/components/images/gpu-vllm/release/kustomization.yaml, llm-d release 0.9);
it has the NixlConnector the P/D pods use (vLLM docs features/nixl_connector_usage.md)."""


MAX_RATE_RPS = 1_000_000.0
"""Upper bound on a declared request rate, req/s (a whole large provider's traffic is ~1e4-1e5)"""

#: Tensor-parallel degrees vLLM supports on one node for the dense and MoE models we catalogue.
ALLOWED_TP = (1, 2, 4, 8)

DurationS = Annotated[
    float,
    BeforeValidator(parse_duration_s),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN}),
]


def _alias(name: str) -> str:
    """camelCase with the acronyms Kubernetes users expect: ``maxGPUs``, ``costPerGPUHour``."""
    return to_camel(name).replace("Gpu", "GPU").replace("Kwh", "KWh")


class _Model(BaseModel):
    # allow_inf_nan=False: `.inf` and `.nan` are valid YAML floats; no field of ours means them
    model_config = ConfigDict(
        alias_generator=_alias, populate_by_name=True, extra="forbid", frozen=True, allow_inf_nan=False
    )


class ObjectMeta(BaseModel):
    """The part of Kubernetes ``metadata`` llmfleet reads; other keys are kept but ignored."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)



# --------------------------------------------------------------------------------------------
# Status (written by the operator; the CRD status subresource schema comes from these models)


class Condition(_Model):
    """A Kubernetes-convention condition (``metav1.Condition``)."""

    type: str = Field(description="Planned, Ready, Degraded, Contested, TelemetryStale or SLOAtRisk")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(default="", description="CamelCase machine-readable reason")
    message: str = Field(default="", description="human-readable explanation")
    last_transition_time: str | None = Field(default=None, description="RFC 3339 time the status last changed")
    observed_generation: int | None = Field(default=None, ge=0)


class PlannedGroup(_Model):
    """One group of identical replicas in a plan: a workload on one (GPU type, TP, role)."""

    workload: str | None = Field(default=None, description="namespace/name (only in the FleetPolicy status)")
    pool: str
    gpu_type: str
    tensor_parallel_size: int = Field(ge=1)
    role: Literal["colocated", "prefill", "decode"] = "colocated"
    replicas: int = Field(ge=0)
    gpus: int = Field(ge=0)
    cost_per_hour: float = Field(ge=0, description="USD per hour of this group")
    rate_rps: float = Field(ge=0, description="traffic routed to the group, req/s")
    utilization: float = Field(ge=0, description="planned load / capacity under the SLO")
    deployment: str | None = Field(default=None, description="name of the Deployment that runs the group")


class GroupCalibration(_Model):
    """The calibration of one planned group's capacity model from observed latency
    (``operator.calibration``): one row per latency that calibrates it."""

    gpu_type: str
    tensor_parallel_size: int = Field(ge=1)
    role: Literal["colocated", "prefill", "decode"] = "colocated"
    metric: Literal["ttft", "itl"] | None = Field(default=None, description=(
        "the latency observed: ttft (mean time to first token) or itl (mean inter-token latency); "
        "absent for a group that is not calibrated"))
    step_time_scale: float = Field(ge=0, description=(
        "in force: the group's capacities are modelled with step times x this (1: the profile as is)"))
    factor: float | None = Field(default=None, ge=0, description=(
        "correction factor from this latency (smoothed, clamped to [0.5, 2]); the scale in force follows "
        "it when it moves beyond the FleetPolicy's hysteresis"))
    last_scale: float | None = Field(default=None, ge=0, description=(
        "step-time scale that explained the last window with enough samples"))
    windows: int | None = Field(default=None, ge=0, description="windows used so far")
    clamped: bool | None = Field(default=None, description="the factor sits at a clamp bound: the model is off "
                                 "by more than 2x, check the performance profile")
    reason: str = Field(default="", description="what the last window did")


class LLMWorkloadStatus(_Model):
    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)
    plan: list[PlannedGroup] = Field(default_factory=list, description="this workload's slice of the fleet plan")
    demand_rps: float | None = Field(default=None, ge=0, description="request rate planned for, req/s")
    served_rps: float | None = Field(default=None, ge=0, description="part of the demand the plan serves, req/s")
    observed_demand_rps: float | None = Field(default=None, ge=0, description=(
        "arrival rate Prometheus showed at the last telemetry read, req/s (spec.traffic.source observed or max)"))
    forecast_demand_rps: float | None = Field(default=None, ge=0, description=(
        "forecast demand over the re-plan interval at the last telemetry read (a high quantile), req/s"))
    observed_ttft_seconds: float | None = Field(default=None, ge=0, description=(
        "observed time to first token at the SLO percentile, worst group, s"))
    observed_itl_seconds: float | None = Field(default=None, ge=0, description=(
        "observed inter-token latency at the SLO percentile, worst group, s (compare predictedTpotSeconds)"))
    telemetry_age_seconds: float | None = Field(default=None, ge=0, description=(
        "age of the newest telemetry the plan could use, s"))
    observed_power_watts: float | None = Field(default=None, ge=0, description=(
        "GPU board power of the workload's pods at the last telemetry read (DCGM_FI_DEV_POWER_USAGE, summed), W "
        "(compare predictedPowerWatts)"))
    predicted_power_watts: float | None = Field(default=None, ge=0, description=(
        "the plan's predicted average draw of the workload's GPUs, W (perf.power)"))
    gpus: int | None = Field(default=None, ge=0, description="GPUs planned for the workload")
    cost_per_hour: float | None = Field(default=None, ge=0, description="USD per hour of the workload's replicas")
    replicas: int | None = Field(default=None, ge=0, description="replicas planned")
    ready_replicas: int | None = Field(default=None, ge=0, description="replicas available (Deployment status)")
    ready: str | None = Field(default=None, description="ready/planned replicas, e.g. 2/3")
    predicted_ttft_seconds: float | None = Field(default=None, ge=0)
    predicted_tpot_seconds: float | None = Field(default=None, ge=0)
    calibration: list[GroupCalibration] | None = Field(default=None, description=(
        "correction of the capacity model from observed latency, per planned group (spec.traffic.source "
        "observed or max)"))


class GPUPoolStatus(_Model):
    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)
    planned_gpus: int | None = Field(default=None, ge=0, description="GPUs of the pool the plan uses")
    nodes: int | None = Field(default=None, ge=0, description="Ready, schedulable nodes matching the nodeSelector")
    allocatable_gpus: int | None = Field(default=None, ge=0, description="their allocatable nvidia.com/gpu")
    foreign_gpus: int | None = Field(default=None, ge=0, description="of those, requested by pods llmfleet does not manage")
    free_gpus: int | None = Field(default=None, ge=0, description="allocatable less foreign: what llmfleet may use")
    available_gpus: int | None = Field(default=None, ge=0, description=(
        "GPUs the plan may use: maxGPUs, and for a pool not autoscaled at most freeGPUs"))
    cost_per_gpu_hour: float | None = Field(default=None, ge=0, description="price in effect, USD per GPU-hour")


class ChildChange(_Model):
    """One difference between the plan and what runs in the cluster."""

    action: Literal["create", "update", "delete", "unchanged"]
    kind: str
    namespace: str | None = None
    name: str
    replicas_from: int | None = None
    replicas_to: int | None = None


class TelemetryStatus(_Model):
    """Series in Prometheus that no workload's demand includes, from the operator's last successful
    telemetry read (``LiveDemand.telemetry_status``; the counts come from ``TelemetryClient.snapshot``).

    A series without the workload label (``llmfleet_workload`` with the shipped scrape configuration)
    belongs to a pod llmfleet cannot attribute to an LLMWorkload: its requests are in no demand, so
    a large count points at a scrape job missing the relabelling of ``examples/monitoring/``.
    """

    unattributed_series: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict, description=(
        "metric name -> number of its series (count) without the workload label at observedAt; every "
        "metric llmfleet reads per workload is listed, 0 where all its series carry the label"))
    unattributed_targets: list[str] = Field(default_factory=list, max_length=20, description=(
        "up to 20 scrape targets exposing such series, as 'instance namespace/pod' (the instance "
        "alone where the series carry neither label), sorted"))
    observed_at: str | None = Field(default=None, description=(
        "RFC 3339 time (UTC, s) of the Prometheus read these figures come from; a failed read leaves "
        "all three fields as they were"))


class FleetPolicyStatus(_Model):
    observed_generation: int | None = Field(default=None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)
    plan_status: str | None = Field(default=None, description="optimal, feasible, shortage or infeasible")
    cost_per_hour: float | None = Field(default=None, ge=0, description="USD per hour of the whole plan")
    lp_bound: float | None = Field(default=None, description="LP relaxation bound, USD per hour")
    gap: float | None = Field(default=None, description="relative gap between the plan and the best bound")
    solve_time_seconds: float | None = Field(default=None, ge=0)
    solver: str | None = None
    total_gpus: int | None = Field(default=None, ge=0)
    plan: list[PlannedGroup] = Field(default_factory=list)
    diff: list[ChildChange] = Field(default_factory=list, description="children to change to reach the plan")
    messages: list[str] = Field(default_factory=list)
    last_plan_time: str | None = Field(default=None, description="RFC 3339 time of the last solve")
    applied: bool | None = Field(default=None, description="whether the plan was carried out (mode apply)")
    telemetry: TelemetryStatus | None = Field(default=None, description=(
        "series Prometheus holds that no workload is credited with (only while the operator reads "
        "telemetry, after its first successful read)"))

# --------------------------------------------------------------------------------------------
# LLMWorkload


class ModelArchitecture(_Model):
    """Architecture numbers of a model, for models the catalogue does not know.

    Values come from the model's Hugging Face ``config.json``.
    """

    num_layers: int = Field(gt=0, le=1024, description="num_hidden_layers")
    hidden_size: int = Field(gt=0, le=1 << 17)
    num_attention_heads: int = Field(gt=0, le=1024)
    num_kv_heads: int = Field(gt=0, le=1024, description="num_key_value_heads (GQA); equal to heads for MHA")
    intermediate_size: int = Field(gt=0, le=1 << 20)
    vocab_size: int = Field(gt=0, le=1 << 24)
    params_billion: float = Field(gt=0, le=100_000, description="total parameters, billions")
    active_params_billion: float | None = Field(
        default=None, gt=0, le=100_000, description="parameters used per token (MoE), billions; default: all"
    )
    bytes_per_weight: float = Field(default=2.0, gt=0, le=4, description="2 for BF16/FP16, 1 for FP8")
    max_context_tokens: int = Field(default=4096, gt=0, le=MAX_TOKENS)
    head_dim: int | None = Field(
        default=None, gt=0, le=1024,
        description="head_dim, where config.json sets it (Qwen3, gemma-3, gpt-oss); default: hiddenSize / numAttentionHeads",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "ModelArchitecture":
        # the shapes a transformer must have for vLLM to load it (Hugging Face config.json semantics)
        if self.num_kv_heads > self.num_attention_heads:
            raise ValueError(f"numKvHeads ({self.num_kv_heads}) cannot exceed numAttentionHeads ({self.num_attention_heads})")
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(f"numAttentionHeads ({self.num_attention_heads}) must be a multiple of numKvHeads "
                             f"({self.num_kv_heads}) (grouped-query attention)")
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hiddenSize ({self.hidden_size}) must be divisible by numAttentionHeads ({self.num_attention_heads}) "
                             "unless headDim is given")
        if self.active_params_billion is not None and self.active_params_billion > self.params_billion:
            raise ValueError(f"activeParamsBillion ({self.active_params_billion}) cannot exceed paramsBillion ({self.params_billion})")
        return self


class LengthPercentiles(_Model):
    """A token-length distribution given by three percentiles (tokens)."""

    p50: int = Field(gt=0, le=MAX_TOKENS)
    p90: int = Field(gt=0, le=MAX_TOKENS)
    p99: int = Field(gt=0, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _ordered(self) -> "LengthPercentiles":
        if not (self.p50 <= self.p90 <= self.p99):
            raise ValueError(f"percentiles must satisfy p50 <= p90 <= p99, got {self.p50}, {self.p90}, {self.p99}")
        return self


class TraceRef(_Model):
    """A request trace to derive the demand from (rate and length histogram)."""

    path: str = Field(description="file path (local to where the planner runs)")
    format: Literal["azure", "mooncake", "burstgpt", "csv"] = "azure"
    rate_scale: float = Field(default=1.0, gt=0, le=10_000, description="multiplier applied to the trace's request rate")


class TrafficSpec(_Model):
    """Offered load of a workload: a request rate with length percentiles, or a trace."""

    request_rate_per_second: float | None = Field(default=None, gt=0, le=MAX_RATE_RPS, description="mean arrivals, req/s")
    peak_quantile: float = Field(
        default=0.9, ge=0.5, le=1.0,
        description="plan for this quantile of the per-window request rate of a trace (1.0 = max)",
    )
    rate_window_seconds: float = Field(default=60.0, gt=0, le=86_400, description="window for the peak rate, s")
    input_tokens: LengthPercentiles | None = None
    output_tokens: LengthPercentiles | None = None
    trace: TraceRef | None = None
    source: Literal["declared", "observed", "max"] = Field(default="declared", description=(
        "where the planned demand comes from: declared (the rate and lengths or the trace above); observed "
        "(the operator's Prometheus telemetry, forecast over the re-plan interval; the declared traffic is "
        "the first plan, before any observation); max (the larger of declared and observed rates: the declared "
        "rate is a floor). Needs the operator's --prometheus-url; missing or stale telemetry never lowers "
        "the plan"))

    @model_validator(mode="after")
    def _source(self) -> "TrafficSpec":
        if self.trace is not None:
            both = [n for n, v in (("requestRatePerSecond", self.request_rate_per_second),
                                   ("inputTokens", self.input_tokens), ("outputTokens", self.output_tokens))
                    if v is not None]
            if both:
                raise ValueError(f"give either a trace or {', '.join(both)}, not both: the trace's rate and lengths "
                                 "would silently replace them (scale a trace with trace.rateScale)")
        else:
            missing = [
                n for n, v in (
                    ("requestRatePerSecond", self.request_rate_per_second),
                    ("inputTokens", self.input_tokens),
                    ("outputTokens", self.output_tokens),
                ) if v is None
            ]
            if missing:
                raise ValueError(
                    f"without a trace, traffic needs {', '.join(missing)} "
                    "(or give traffic.trace with a path and format)"
                )
        return self


class SLOSpec(_Model):
    """Latency SLOs: time to first token and time per output token at a percentile."""

    ttft: DurationS = Field(description="time-to-first-token target, e.g. '500ms'")
    tpot: DurationS = Field(description="time-per-output-token target, e.g. '50ms'")
    percentile: float = Field(default=90.0, ge=50.0, lt=100.0, description="percentile the targets apply to, %")


class ServingSpec(_Model):
    """How replicas of the workload are run."""

    image: str = Field(default=DEFAULT_IMAGE, min_length=1, max_length=255,
                       description="vLLM image; P/D disaggregation needs vLLM >= 0.9 (NixlConnector)")
    tensor_parallel_sizes: list[int] = Field(
        default_factory=lambda: list(ALLOWED_TP), min_length=1,
        description="TP degrees the planner may choose from",
        json_schema_extra={"items": {"type": "integer", "enum": list(ALLOWED_TP)}},
    )
    disaggregation: Literal["auto", "always", "never"] = "auto"
    quantization: Literal["bf16", "fp8", "int8", "fp4"] = Field(default="bf16", description=(
        "weight precision: bf16; fp8 (W8A8, rendered as --quantization fp8; weight-only on Ampere); int8 "
        "(W8A16) and fp4 (NVFP4, Blackwell) need a checkpoint quantized that way as spec.model"))
    max_num_seqs: int | None = Field(default=None, ge=1, le=4096, description=(
        "vLLM --max-num-seqs: most sequences a replica batches; unset: not rendered, modelled as 256"))
    max_num_batched_tokens: int | None = Field(default=None, ge=256, le=1_048_576, description=(
        "vLLM --max-num-batched-tokens: token budget of one scheduler step (chunked prefill); unset: not "
        "rendered, simulated as 8192 on GPUs with at least 70 GB, else 2048"))
    kv_cache_dtype: Literal["auto", "fp8"] = Field(default="auto", description=(
        "KV-cache dtype: auto (the model's) or fp8 (--kv-cache-dtype fp8; GPUs with FP8 tensor cores)"))
    extra_args: list[Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=list, max_length=64,
        description="extra `vllm serve` arguments; the FleetPolicy's tenancy rules say which flags a namespace may use")
    min_replicas: int = Field(default=1, ge=0, le=10_000)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.1, le=0.98, description="vLLM --gpu-memory-utilization")
    cpu_per_gpu: float = Field(default=4.0, ge=0.5, le=64, description=(
        "CPU cores requested per GPU of a replica (limit: twice that); default 4: GPU nodes carry 12-24 "
        "vCPU per GPU (AWS p4d 96 vCPU / 8 A100, p5 192 vCPU / 8 H100)"))
    memory_gib_per_gpu: float = Field(default=32.0, ge=4, le=1024, description=(
        "memory request and limit per GPU of a replica, GiB (includes /dev/shm); default 32: GPU nodes carry "
        "144-256 GiB per GPU (AWS p4d 1152 GiB / 8, p5 2 TiB / 8)"))

    @model_validator(mode="after")
    def _tp(self) -> "ServingSpec":
        bad = [tp for tp in self.tensor_parallel_sizes if tp not in ALLOWED_TP]
        if bad or not self.tensor_parallel_sizes:
            raise ValueError(f"tensorParallelSizes must be a non-empty subset of {list(ALLOWED_TP)}, got {self.tensor_parallel_sizes}")
        return self


class LLMWorkloadSpec(_Model):
    """What a user declares for one served model: its traffic, latency SLOs and priority tier."""

    model: str = Field(min_length=1, description="Hugging Face model id, e.g. meta-llama/Llama-3.1-8B-Instruct")
    architecture: ModelArchitecture | None = Field(default=None, description="override for models not in the catalogue")
    traffic: TrafficSpec
    slo: SLOSpec
    priority: str = Field(default="standard", description="tier name; see FleetPolicy.spec.priorityTiers")
    serving: ServingSpec = Field(default_factory=ServingSpec)


class LLMWorkload(_Model):
    """A served model with its traffic, latency SLOs and priority; llmfleet plans and runs its replicas."""

    api_version: Literal["llmfleet.dev/v1alpha1"] = GROUP_VERSION
    kind: Literal["LLMWorkload"] = "LLMWorkload"
    metadata: ObjectMeta
    spec: LLMWorkloadSpec
    status: LLMWorkloadStatus | None = None

    @property
    def namespace(self) -> str:
        """``metadata.namespace``, ``default`` when unset (as kubectl applies it)."""
        return self.metadata.namespace or "default"

    @property
    def key(self) -> str:
        """``namespace/name``, the identity of a namespaced workload."""
        return f"{self.namespace}/{self.metadata.name}"


# --------------------------------------------------------------------------------------------
# GPUPool


class GPUSpecOverride(_Model):
    """A full GPU spec for GPU types the catalogue does not know (datasheet values)."""

    memory_gb: float = Field(gt=0, le=10_000)
    mem_bandwidth_gbps: float = Field(gt=0, le=1_000_000, description="HBM/GDDR bandwidth, GB/s")
    peak_bf16_tflops: float = Field(gt=0, le=1_000_000, description="dense BF16 TFLOPS")
    peak_fp8_tflops: float | None = Field(default=None, gt=0, le=1_000_000, description="dense FP8 TFLOPS, if any")
    architecture: Literal["ampere", "ada", "hopper", "blackwell", "cdna3"] | None = Field(
        default=None, description="GPU architecture: decides which quantizations vLLM runs; unset: bf16 only")
    tdp_watts: float = Field(gt=0, le=100_000)
    interconnect_gbps: float = Field(default=64.0, gt=0, le=1_000_000,
                                     description="per-GPU intra-node all-reduce bandwidth, GB/s")


class PowerRange(_Model):
    """Allowed power cap range of one GPU, W (nvidia-smi -q -d POWER: Min/Max Power Limit)."""

    min_watts: float = Field(gt=0, le=100_000)
    max_watts: float = Field(gt=0, le=100_000)

    @model_validator(mode="after")
    def _ordered(self) -> "PowerRange":
        if self.min_watts > self.max_watts:
            raise ValueError(f"minWatts ({self.min_watts}) must not exceed maxWatts ({self.max_watts})")
        return self


DEFAULT_KV_GBIT_PER_S_PER_GPU = 50.0
"""KV-transfer bandwidth per GPU when a pool declares none, Gbit/s: AWS p4d.24xlarge has 400 Gbit/s
of EFA for 8 A100 GPUs (AWS EC2 P4 instance page), a common floor for GPU nodes"""


class KVInterconnect(_Model):
    """How a pool's nodes move KV caches to other nodes (prefill/decode disaggregation).

    Pools that name the same ``domain`` can exchange KV caches, so prefill may run on one GPU type
    and decode on another; a pool without an interconnect can still disaggregate within itself.
    """

    domain: str = Field(min_length=1, description="KV-transfer domain; pools with the same domain can exchange KV")
    bandwidth_gbit_per_second_per_gpu: float = Field(
        default=DEFAULT_KV_GBIT_PER_S_PER_GPU, gt=0, le=100_000,
        description="network bandwidth per GPU for KV transfer (RDMA/NIC), Gbit/s",
    )


class GPUPoolSpec(_Model):
    """GPUs of one type the fleet may use: how many, on which nodes, at what price and power."""

    gpu_type: str = Field(min_length=1, description="catalogue name (e.g. H100-SXM) or a name for `gpu`")
    gpu: GPUSpecOverride | None = Field(default=None, description="full spec when gpuType is not catalogued")
    node_selector: dict[str, str] = Field(default_factory=dict)
    gpus_per_node: int = Field(default=8, ge=1, le=16)
    max_gpus: int = Field(ge=0, le=1_000_000, description="GPUs of this pool the fleet may use (availability)")
    autoscaled: bool = Field(default=False, description=(
        "a node autoscaler (Karpenter, Cluster Autoscaler) adds this pool's nodes for pending pods: the plan "
        "is bounded by maxGPUs only; otherwise the operator plans within the GPUs free on the pool's Ready "
        "nodes (nodeSelector), less those other pods request"))
    cost_per_gpu_hour: float | None = Field(default=None, ge=0, le=10_000,
                                            description="USD per GPU-hour; default: catalogue list price")
    power: PowerRange | None = None
    power_budget_watts: float | None = Field(default=None, gt=0, le=1e9, description=(
        "watts this pool's GPUs may draw (e.g. its racks' feed): bounds the sum over its planned GPUs of "
        "their power cap, besides the FleetPolicy's fleet-wide budget"))
    interconnect: KVInterconnect | None = Field(
        default=None,
        description="network for prefill/decode KV-cache transfer; without it P/D stays inside the pool",
    )


class GPUPool(_Model):
    """GPUs of one type that llmfleet may use for LLM serving, with price, power range and availability."""

    api_version: Literal["llmfleet.dev/v1alpha1"] = GROUP_VERSION
    kind: Literal["GPUPool"] = "GPUPool"
    metadata: ObjectMeta
    spec: GPUPoolSpec
    status: GPUPoolStatus | None = None


# --------------------------------------------------------------------------------------------
# FleetPolicy


class PriorityTier(_Model):
    """A priority tier: workloads name it in spec.priority; it becomes a PriorityClass."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    value: int = Field(ge=0, le=1_000_000_000, description="PriorityClass value; higher is served first")


def _default_tiers() -> list[PriorityTier]:
    return [
        PriorityTier(name="critical", value=1_000_000),
        PriorityTier(name="high", value=100_000),
        PriorityTier(name="standard", value=10_000),
        PriorityTier(name="low", value=1_000),
    ]


class SolverOptions(_Model):
    """MILP time limit (s) and the relative gap at which a plan counts as optimal."""

    time_limit_seconds: float = Field(
        default=30.0, gt=0, le=86_400,
        description="wall-clock bound of a plan: in `llmfleet plan` from the command's start (capacity model, "
                    "MILP phases, node placement); in the operator, of the MILP phases and node placement")
    relative_gap: float = Field(default=1e-3, ge=0, le=0.5, description="stop when the proven gap is below this")


ROUTING_MODES = ("inferencePool", "standalone", "service")
"""How requests reach a workload's pods (``FleetPolicy.spec.routing.mode``):

- ``inferencePool``: a Gateway API Inference Extension InferencePool with llm-d's endpoint picker
  (load-, queue- and KV-aware; P/D by a prompt-length threshold);
- ``standalone``: the same endpoint picker run standalone behind the workload's Service;
- ``service``: a plain Service: kube-proxy spreads connections evenly over the pods, so no P/D and
  no mixing of replicas of unequal capacity in one workload."""


class GatewayRef(_Model):
    """The Gateway an HTTPRoute per workload attaches to (``inferencePool`` mode)."""

    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = Field(default=None, max_length=63, description="default: the workload's namespace")


class RoutingPolicy(_Model):
    """How requests are routed to each workload's pods, and so what the planner may assume."""

    mode: Literal["inferencePool", "standalone", "service"] | None = Field(default=None, description=(
        "inferencePool | standalone | service; unset: inferencePool where the cluster has the "
        "InferencePool CRD (and offline), standalone otherwise"))
    gateway_ref: GatewayRef | None = Field(default=None, description="Gateway for an HTTPRoute per workload")
    # images pinned to one llm-d release (llm-d 0.9: router chart and images v0.10.0); the vLLM
    # image is each workload's spec.serving.image, so prefill and decode pods always share it
    endpoint_picker_image: str = Field(
        default="ghcr.io/llm-d/llm-d-router-endpoint-picker:v0.10.0", min_length=1, max_length=255,
        pattern=r"^\S+$", description=(
            "llm-d endpoint picker (EPP) image: load-, queue-, KV- and prefix-aware routing and the P/D decision"))
    disagg_sidecar_image: str = Field(
        default="ghcr.io/llm-d/llm-d-router-disagg-sidecar:v0.10.0", min_length=1, max_length=255,
        pattern=r"^\S+$", description=(
            "llm-d P/D sidecar image on decode pods: runs the remote prefill, then the local decode"))
    proxy_image: str = Field(
        default="envoyproxy/envoy:distroless-v1.33.2", min_length=1, max_length=255, pattern=r"^\S+$",
        description="Envoy image of the standalone mode's proxy beside the endpoint picker (llm-d's standalone chart)")
    pd_block_size_tokens: Literal[16, 32, 64, 128] = Field(default=128, description=(
        "vLLM --block-size rendered on both the prefill and the decode pods of a P/D workload, tokens "
        "(the KV blocks NIXL moves); llm-d's P/D guide uses 128 on both sides"))

    def effective_mode(self, inference_pool_crd: bool = True) -> str:
        """The mode in force: ``mode`` when set; else inferencePool when the InferencePool CRD is
        installed (offline planning assumes it is), standalone otherwise."""
        return self.mode or ("inferencePool" if inference_pool_crd else "standalone")


def _unique_tiers(tiers: list[PriorityTier]) -> list[PriorityTier]:
    names = [t.name for t in tiers]
    if len(set(names)) != len(names):
        raise ValueError(f"priorityTiers names must be unique, got {names}")
    return tiers


class TenantRule(_Model):
    """What the workloads of some namespaces may ask for. Set by the cluster admin in the
    (cluster-scoped) FleetPolicy, which tenants cannot edit."""

    namespaces: list[Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9*?-]+$")]] = Field(
        default_factory=list, description="namespace names this rule covers; shell-style wildcards * and ? allowed")
    namespace_selector: dict[Annotated[str, Field(max_length=317)], Annotated[str, Field(max_length=63)]] | None = Field(
        default=None, description=("labels a namespace must carry for this rule to cover it (matchLabels: all of "
                                   "them); with namespaces, both must match"))
    tiers: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list, description="priority tiers these namespaces may use, besides tenancy.defaultTier")
    images: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        default_factory=list, description=("images allowed besides the default vLLM image: an exact image "
                                           "reference, or a prefix ending in '/' or ':' (a registry, repository or tag)"))
    extra_args: list[Annotated[str, Field(pattern=r"^--[a-z0-9][a-z0-9-]*$", max_length=80)]] = Field(
        default_factory=list, description=("vLLM flags allowed in spec.serving.extraArgs (e.g. --max-model-len); "
                                           "flags that run remote code or open files or ports are refused unless listed"))
    max_gpus: int | None = Field(default=None, ge=0, le=1_000_000,
                                 description="GPUs all workloads of one such namespace may be planned together")

    @model_validator(mode="after")
    def _selects_something(self) -> "TenantRule":
        if not self.namespaces and not self.namespace_selector:
            raise ValueError("a tenancy rule needs namespaces or namespaceSelector")
        return self


class TenancyPolicy(_Model):
    """Per-namespace limits on LLMWorkloads. A namespace no rule covers may use only ``defaultTier``,
    the default image and no extra arguments."""

    default_tier: str | None = Field(default=None, max_length=63,
                                     description=("tier every namespace may use; default: standard when it is a "
                                                  "tier, else the tier with the lowest value"))
    rules: list[TenantRule] = Field(default_factory=list, description="first matching rule applies")


class FleetPolicySpec(_Model):
    """Fleet-wide settings: apply or only plan, power budget, energy price, solver, priority tiers."""

    @property
    def default_tier(self) -> str:
        """The tier every namespace may use: ``tenancy.defaultTier``; else ``standard`` (an
        LLMWorkload's default priority) when it is a tier; else the lowest-valued tier."""
        if self.tenancy.default_tier:
            return self.tenancy.default_tier
        names = [t.name for t in self.priority_tiers]
        return "standard" if "standard" in names else min(self.priority_tiers, key=lambda t: t.value).name

    mode: Literal["apply", "plan", "advisory"] = "apply"
    power_budget_watts: float | None = Field(default=None, gt=0, le=1e10, description=(
        "watts the fleet's GPUs may draw: bounds the sum over planned GPUs of their power cap (a "
        "guarantee the power agent enforces); the planner chooses a cap per GPU group"))
    power_oversubscription: float = Field(default=1.0, ge=1.0, le=3.0, description=(
        "caps may sum to this multiple of powerBudgetWatts while the predicted average draw stays "
        "within it; above 1, reactive capping (lowest tier first) must keep the measured draw within "
        "the budget"))
    energy_price_per_kwh: float = Field(default=0.0, ge=0, le=1_000, description=(
        "USD per kWh, added to the cost at each replica's predicted average GPU draw"))
    performance_profile: Literal["vllm-v1", "splitwise-2023"] = Field(default="vllm-v1", description=(
        "step-time calibration the planner uses: vllm-v1 (today's vLLM V1 engine with CUDA graphs, the "
        "default image's engine) or splitwise-2023 (the 2023 vLLM of the Splitwise measurements, to "
        "reproduce old plans)"))
    headroom: float = Field(default=0.1, ge=0, le=1.0, description="extra capacity planned above demand, fraction")
    replan_interval_seconds: float = Field(default=300.0, gt=0, le=86_400)
    hysteresis: float = Field(default=0.1, ge=0, le=1.0, description="relative demand change that triggers a re-plan")
    calibrate: bool = Field(default=True, description=(
        "correct each deployment's modelled step times from its observed latency (needs telemetry; "
        "LLMWorkload status.calibration shows the factors); false plans with the performance profile as is"))
    solver: SolverOptions = Field(default_factory=SolverOptions)
    priority_tiers: Annotated[list[PriorityTier], AfterValidator(_unique_tiers)] = Field(
        default_factory=_default_tiers, min_length=1,
        # the API server refuses duplicate names itself (a list-map keyed by name)
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    tenancy: TenancyPolicy = Field(default_factory=TenancyPolicy,
                                   description="what each namespace's LLMWorkloads may ask for (enforced by the operator)")
    routing: RoutingPolicy = Field(default_factory=RoutingPolicy,
                                   description="how requests reach each workload's pods (and what the planner may assume)")

    @model_validator(mode="after")
    def _tenancy_tiers_exist(self) -> "FleetPolicySpec":
        names = [t.name for t in self.priority_tiers]
        if self.tenancy.default_tier is not None and self.tenancy.default_tier not in names:
            raise ValueError(f"tenancy.defaultTier {self.tenancy.default_tier!r} is not one of priorityTiers ({', '.join(names)})")
        for i, rule in enumerate(self.tenancy.rules):
            unknown = [t for t in rule.tiers if t not in names]
            if unknown:
                raise ValueError(f"tenancy.rules[{i}].tiers: {unknown[0]!r} is not one of priorityTiers ({', '.join(names)})")
        return self


class FleetPolicy(_Model):
    """Fleet-wide planning policy (one object, named default); its status holds the whole plan."""

    api_version: Literal["llmfleet.dev/v1alpha1"] = GROUP_VERSION
    kind: Literal["FleetPolicy"] = "FleetPolicy"
    metadata: ObjectMeta
    spec: FleetPolicySpec = Field(default_factory=FleetPolicySpec)
    status: FleetPolicyStatus | None = None


KINDS: dict[str, type[_Model]] = {"LLMWorkload": LLMWorkload, "GPUPool": GPUPool, "FleetPolicy": FleetPolicy}
