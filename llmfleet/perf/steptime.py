"""Step times of vLLM forward passes from a calibrated roofline.

A forward pass over a batch of ``seqs`` sequences on a TP group of ``tp`` GPUs takes

    t = t_fixed + t_seq x seqs + L x overhead_bytes / bandwidth
        + max(FLOPs / (tp x peak(dtype) x eff_compute), bytes / (tp x bandwidth x eff_bandwidth))
        + 2 x L x all_reduce(tp, activation bytes)

- FLOPs: 2 x active parameters per token, plus 4 x layers x heads x head_dim per (token, context
  token) for attention scores (halved for a causal prefill); the peak is the dense peak of the
  GEMM dtype (BF16, FP8 or FP4: ``catalog/gpus.csv``, ``perf/precision.py``).
- bytes: the weights the pass reads (all of them for dense models; the routed experts for MoE) at
  their precision, plus the KV cache of the context at the KV dtype.
- all-reduce: Megatron-style TP does two per layer (after attention and after the MLP). Profiles
  with measured collectives take each from NCCL all-reduce tables (Vidur's DGX A100/H100
  profiles: a latency per TP degree and an achieved bus bandwidth); the Splitwise-era profile uses
  a fitted ring (``(tp - 1) x alpha_hop`` plus the transfer). Measured latencies do not grow with
  TP beyond a few microseconds while the weight and KV reads per GPU halve, so more TP never slows
  a dense model's decode step at equal batch (``tests/test_perf.py`` checks the catalogue).
- t_fixed, t_seq and the per-layer overhead: engine costs a roofline omits (launches, scheduler,
  sampler); CUDA graphs make the per-layer part small.

The constants (``PerfParams``) form a calibration profile per engine generation, fitted by
``bench/fit_profiles.py`` on measurements vendored in ``data/profiles`` and shipped in
``llmfleet/perf/profiles/<name>.json``. Peak FLOP/s, bandwidth and interconnect come from the
datasheet of each GPU, so a GPU the fit never saw is predicted from its datasheet alone.

All functions are vectorised: length and batch arguments may be numpy arrays of any one shape,
and the result has that shape.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources

import numpy as np

from llmfleet.catalog.gpus import GPUType
from llmfleet.catalog.models import ModelSpec

ACTIVATION_BYTES = 2.0
"""bytes per activation element (BF16/FP16) in the TP all-reduces"""

DEFAULT_PROFILE = "vllm-v1"
"""the calibration profile plans use unless ``FleetPolicy.spec.performanceProfile`` names another"""

PROFILES = ("vllm-v1", "splitwise-2023")
"""shipped calibration profiles (``llmfleet/perf/profiles/<name>.json``, written by
``bench/fit_profiles.py``):

- ``vllm-v1``: today's vLLM (V1 engine, CUDA graphs, chunked prefill): decode fitted on the
  ML.ENERGY Benchmark v3 H100 rows, prefill on the Splitwise prompt rows, collectives from Vidur's
  NCCL all-reduce tables.
- ``splitwise-2023``: the pre-CUDA-graph vLLM of the Splitwise measurements (A100/H100, 2023) with
  a fitted ring all-reduce; kept to reproduce old plans and benches."""

NVLINK_SWITCH_MIN_GBPS = 300.0
"""interconnect bandwidth (GB/s per GPU, ``catalog/gpus.csv``) from which a GPU is taken to sit on
an all-to-all NVLink/Infinity Fabric switch; below it, PCIe cards (and pairwise NVLink bridges)"""


def all_reduce_table(gpu: GPUType) -> str:
    """Which measured NCCL table (Vidur, ``data/profiles/vidur_all_reduce_medians.csv``) gives a
    GPU's all-reduce latency and achieved fraction of its datasheet interconnect bandwidth: DGX H100
    for switched Hopper, Blackwell and AMD CDNA3 parts (MI300X/MI325X have no table; Infinity Fabric
    is the nearest in class), DGX A100 for Ampere and for every PCIe card (no PCIe table was measured;
    the A100 table's higher latency is the conservative choice)."""
    if gpu.interconnect_gbps >= NVLINK_SWITCH_MIN_GBPS and gpu.architecture in ("hopper", "blackwell", "cdna3"):
        return "h100_dgx"
    return "a100_dgx"


@dataclass(frozen=True)
class AllReduceFit:
    """NCCL all-reduce on one node of ``tp`` GPUs, fitted as t = latency + 2(tp-1)/tp x bytes / busbw
    on a measured table (median absolute error of the fit: 2-9% over 2 KB-64 MB messages).

    ``bus_fraction`` is the achieved bus bandwidth over the datasheet interconnect bandwidth of the
    GPU the table was measured on (H100-SXM 900 GB/s, A100 600 GB/s), so a GPU of the same class
    with another NVLink generation scales with its own datasheet figure."""

    table: str
    tp: int
    latency_s: float
    bus_fraction: float


@dataclass(frozen=True)
class PerfParams:
    """Calibrated efficiencies (dimensionless), overheads (s, or bytes where named) and their source."""

    eff_compute: float = 0.6
    """achieved fraction of the GEMM dtype's dense peak FLOP/s (compute-bound prompts)"""
    eff_bandwidth: float = 0.7
    """achieved fraction of peak memory bandwidth when streaming weights and KV"""
    t_fixed_s: float = 0.004
    """per-step overhead (scheduling, sampling, launch), s; CUDA graphs make it small"""
    layer_overhead_bytes: float = 2e8
    """per-layer overhead expressed as bytes moved at the GPU's memory bandwidth: the small
    memory-bound kernels (norms, rotary, activation, residual adds) and their launches, which a
    GEMM roofline omits; expressed in bytes so that it scales with the GPU generation"""
    alpha_hop_s: float = 1e-5
    """ring all-reduce latency per hop, s (used only when ``all_reduce`` is empty)"""
    eff_interconnect: float = 0.7
    """achieved fraction of datasheet interconnect bandwidth in the ring all-reduce (used only when
    ``all_reduce`` is empty)"""
    t_seq_s: float = 0.0
    """host time per sequence in the batch per step, s: the scheduler, sampler and detokeniser work
    on the CPU that grows with the batch and that CUDA graphs do not hide"""
    all_reduce: tuple[AllReduceFit, ...] = ()
    """measured NCCL all-reduce fits per (table, TP); empty: the fitted ring model above"""
    all_reduce_latency_scale: float = 1.0
    """share of the measured NCCL latency a served step pays per all-reduce: vLLM replaces NCCL
    with its own one-shot all-reduce over NVLink peer memory for small messages and captures it in
    CUDA graphs, which removes most launch and protocol latency; one factor for every TP degree,
    so the measured ordering across TP is kept"""
    step_time_scale: float = 1.0
    """observed over modelled time of every forward pass of one deployment (model, GPU type, TP,
    role): the calibration from live telemetry (``telemetry.correction``); 1 for the fitted
    profile itself. It scales the whole step, overheads included: an engine that runs slower
    than the profile predicts (a new release, a driver, a noisy neighbour) is slower throughout."""
    name: str = "custom"
    source: str = "defaults"

    def to_json(self) -> str:
        d = asdict(self)
        d["all_reduce"] = [asdict(a) for a in self.all_reduce]
        return json.dumps(d, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "PerfParams":
        d = json.loads(text)
        d["all_reduce"] = tuple(AllReduceFit(**a) for a in d.get("all_reduce", ()))
        return cls(**d)


@cache
def load_profile(name: str) -> PerfParams:
    """A shipped calibration profile by name (see ``PROFILES``).

    Raises:
        ValueError: naming the profiles that exist, when ``name`` is not one of them.
    """
    if name not in PROFILES:
        raise ValueError(f"unknown performance profile {name!r}; allowed: {', '.join(PROFILES)}")
    text = resources.files(__package__).joinpath("profiles", f"{name}.json").read_text()
    return PerfParams.from_json(text)


def default_params() -> PerfParams:
    """The default profile (``DEFAULT_PROFILE``)."""
    return load_profile(DEFAULT_PROFILE)


def all_reduce_s(gpu: GPUType, tp: int, nbytes: np.ndarray | float, p: PerfParams) -> np.ndarray:
    """Time of one all-reduce of ``nbytes`` bytes across ``tp`` GPUs of one node, s (0 for tp == 1).

    With measured fits (``p.all_reduce``): latency of the GPU's table at this TP (times
    ``all_reduce_latency_scale``) plus the bus
    transfer at the table's achieved fraction of this GPU's datasheet interconnect bandwidth. A TP
    degree the table lacks uses the nearest measured degree above it (else the largest).
    Without: a ring of (tp-1) hops of ``alpha_hop_s`` plus 2(tp-1)/tp x bytes at
    ``eff_interconnect`` of the datasheet bandwidth.
    """
    nbytes = np.asarray(nbytes, dtype=float)
    if tp <= 1:
        return np.zeros_like(nbytes)
    volume = 2.0 * (tp - 1) / tp * nbytes
    if not p.all_reduce:
        bw = gpu.interconnect_gbps * 1e9 * p.eff_interconnect
        return (tp - 1) * p.alpha_hop_s + volume / bw
    fit = _all_reduce_fit(p, all_reduce_table(gpu), tp)
    return fit.latency_s * p.all_reduce_latency_scale + volume / (gpu.interconnect_gbps * 1e9 * fit.bus_fraction)


def _all_reduce_fit(p: PerfParams, table: str, tp: int) -> AllReduceFit:
    fits = sorted((a for a in p.all_reduce if a.table == table), key=lambda a: a.tp)
    if not fits:
        raise ValueError(f"performance profile {p.name} has no all-reduce fit for table {table}")
    return next((a for a in fits if a.tp >= tp), fits[-1])


def _forward_s(model: ModelSpec, gpu: GPUType, tp: int, tokens, seqs, flops, nbytes, p: PerfParams) -> np.ndarray:
    t_compute = flops / (tp * gpu.peak_flops_for(model.compute_dtype) * p.eff_compute)
    t_memory = nbytes / (tp * gpu.mem_bandwidth_bytes_per_s * p.eff_bandwidth)
    comm = 2 * model.num_layers * all_reduce_s(gpu, tp, tokens * model.hidden_size * ACTIVATION_BYTES, p)
    t_layer = p.layer_overhead_bytes / gpu.mem_bandwidth_bytes_per_s
    t = p.t_fixed_s + p.t_seq_s * seqs + model.num_layers * t_layer + np.maximum(t_compute, t_memory) + comm
    return t * p.step_time_scale if p.step_time_scale != 1.0 else t


def prefill_time_s(model: ModelSpec, gpu: GPUType, tp: int, num_tokens, sum_sq_tokens=None,
                   p: PerfParams | None = None) -> np.ndarray:
    """Time of one prefill step over ``num_tokens`` prompt tokens, s.

    Args:
        num_tokens: total prompt tokens in the batch (array or scalar).
        sum_sq_tokens: sum over the batch's prompts of length^2 (attention cost); default
            ``num_tokens**2`` (one prompt).
    """
    p = p or default_params()
    n = np.asarray(num_tokens, dtype=float)
    sq = n**2 if sum_sq_tokens is None else np.asarray(sum_sq_tokens, dtype=float)
    flops = model.linear_flops_per_token * n + model.attention_flops_per_token_per_context * sq / 2.0
    nbytes = model.weight_bytes_read(n) + n * model.kv_bytes_per_token  # weights in, KV written
    return _forward_s(model, gpu, tp, n, 1.0, flops, nbytes, p)


def decode_time_s(model: ModelSpec, gpu: GPUType, tp: int, batch, context_tokens,
                  p: PerfParams | None = None) -> np.ndarray:
    """Time of one decode iteration, s.

    Args:
        batch: sequences decoding together (one new token each).
        context_tokens: total context (prompt + generated so far) summed over the batch, tokens.
    """
    p = p or default_params()
    b = np.asarray(batch, dtype=float)
    ctx = np.asarray(context_tokens, dtype=float)
    flops = model.linear_flops_per_token * b + model.attention_flops_per_token_per_context * ctx
    nbytes = model.weight_bytes_read(b) + ctx * model.kv_bytes_per_token
    return _forward_s(model, gpu, tp, b, b, flops, nbytes, p)


def step_time_s(model: ModelSpec, gpu: GPUType, tp: int, prefill_tokens, prefill_pairs, decode_batch,
                decode_context_tokens, p: PerfParams | None = None) -> np.ndarray:
    """Time of one mixed iteration of continuous batching (chunked prefill), s.

    vLLM runs the prompt chunks and the decode tokens of an iteration as one forward pass, so the
    weights are read once for all of them.

    Args:
        prefill_tokens: prompt tokens processed in the iteration (sum of chunk lengths).
        prefill_pairs: attention (query, key) pairs of those chunks: for a chunk of c tokens after
            p tokens already prefilled, c·p + c²/2.
        decode_batch: sequences decoding one token each.
        decode_context_tokens: their total context, tokens.

    ``prefill_time_s(n)`` equals ``step_time_s(n, n²/2, 0, 0)`` and ``decode_time_s(b, c)`` equals
    ``step_time_s(0, 0, b, c)``.
    """
    p = p or default_params()
    n = np.asarray(prefill_tokens, dtype=float)
    b = np.asarray(decode_batch, dtype=float)
    ctx = np.asarray(decode_context_tokens, dtype=float)
    pairs = np.asarray(prefill_pairs, dtype=float)
    flops = (model.linear_flops_per_token * (n + b)
             + model.attention_flops_per_token_per_context * (pairs + ctx))
    nbytes = model.weight_bytes_read(n + b) + n * model.kv_bytes_per_token + ctx * model.kv_bytes_per_token
    return _forward_s(model, gpu, tp, n + b, b + (n > 0), flops, nbytes, p)
