"""Step times of vLLM forward passes from a calibrated roofline.

A forward pass over a batch on a TP group of ``tp`` GPUs takes

    t = t_fixed + L * overhead_bytes / bandwidth + max(FLOPs / (tp * peak * eff_compute),
                                     bytes / (tp * bandwidth * eff_bandwidth))
        + 2 * L * all_reduce(tp, activation bytes)

- FLOPs: 2 x active parameters per token, plus 4 x layers x hidden per (token, context token)
  for attention scores (halved for a causal prefill).
- bytes: the weights the pass reads (all of them for dense models; the routed experts for MoE),
  plus the KV cache of the context for decode.
- all-reduce: Megatron-style TP does two per layer (after attention and after the MLP); a ring
  all-reduce costs ``(tp - 1) * alpha_hop`` of latency plus ``2 (tp-1)/tp x bytes`` over the
  GPU's interconnect bandwidth (datasheet, ``catalog/gpus.csv``).
- t_fixed and the per-layer overhead: scheduler, sampling and small-kernel costs a roofline omits.

The five efficiencies and overheads (``PerfParams``) are fitted by ``llmfleet.perf.calibration``
on measured vLLM step times (Splitwise, ``shared/data/profiles/splitwise_perf_model.csv``), and
shipped in ``calibration.json``. Peak FLOPs, bandwidth and interconnect come from the datasheet
of each GPU, so a GPU the fit never saw is predicted from its datasheet alone.

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


@dataclass(frozen=True)
class PerfParams:
    """Calibrated efficiencies (dimensionless), overheads (s, or bytes where named) and their source."""

    eff_compute: float = 0.6
    """achieved fraction of peak dense BF16 FLOPs in GEMMs"""
    eff_bandwidth: float = 0.7
    """achieved fraction of peak memory bandwidth when streaming weights and KV"""
    t_fixed_s: float = 0.004
    """per-step overhead (scheduling, sampling, launch), s"""
    layer_overhead_bytes: float = 2e8
    """per-layer overhead expressed as bytes moved at the GPU's memory bandwidth: the small
    memory-bound kernels (norms, rotary, activation, residual adds) and their launches, which a
    GEMM roofline omits; expressed in bytes so that it scales with the GPU generation"""
    alpha_hop_s: float = 1e-5
    """all-reduce latency per ring hop, s"""
    eff_interconnect: float = 0.7
    """achieved fraction of datasheet interconnect bandwidth in all-reduce (NCCL bus bandwidth
    on A100/H100 NVLink reaches about 70-80% of the link rate; vidur network profiles)"""
    source: str = "defaults"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@cache
def default_params() -> PerfParams:
    """The shipped calibration (``calibration.json``, written by ``bench/perf_accuracy.py --write``)."""
    text = resources.files(__package__).joinpath("calibration.json").read_text()
    return PerfParams(**json.loads(text))


def all_reduce_s(gpu: GPUType, tp: int, nbytes: np.ndarray | float, p: PerfParams) -> np.ndarray:
    """Time of one ring all-reduce of ``nbytes`` bytes across ``tp`` GPUs, s (0 for tp == 1)."""
    if tp <= 1:
        return np.zeros_like(np.asarray(nbytes, dtype=float))
    bw = gpu.interconnect_gbps * 1e9 * p.eff_interconnect
    return (tp - 1) * p.alpha_hop_s + 2.0 * (tp - 1) / tp * np.asarray(nbytes, dtype=float) / bw


def _forward_s(model: ModelSpec, gpu: GPUType, tp: int, tokens, flops, nbytes, p: PerfParams) -> np.ndarray:
    t_compute = flops / (tp * gpu.peak_flops_for(model.compute_dtype) * p.eff_compute)
    t_memory = nbytes / (tp * gpu.mem_bandwidth_bytes_per_s * p.eff_bandwidth)
    comm = 2 * model.num_layers * all_reduce_s(gpu, tp, tokens * model.hidden_size * ACTIVATION_BYTES, p)
    t_layer = p.layer_overhead_bytes / gpu.mem_bandwidth_bytes_per_s
    return p.t_fixed_s + model.num_layers * t_layer + np.maximum(t_compute, t_memory) + comm


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
    return _forward_s(model, gpu, tp, n, flops, nbytes, p)


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
    return _forward_s(model, gpu, tp, b, flops, nbytes, p)


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
    return _forward_s(model, gpu, tp, n + b, flops, nbytes, p)
