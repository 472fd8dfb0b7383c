"""Capacity of one colocated vLLM replica under TTFT and TPOT percentile SLOs.

For requests of one size (input I, output O tokens) arriving as a Poisson stream at rate λ to a
replica that runs continuous batching with prefill priority (vLLM's scheduler):

- Decode. With B requests decoding, one iteration takes t_d(B) (``steptime.decode_time_s`` at
  context B x (I + O/2)). Each request also waits for the prefills of the requests that arrive
  during its life; by Little's law that is B arrivals on average, so the steady state satisfies
  λ(B) = B / (O t_d(B) + B t_p), and the TPOT of one request is t_d + K t_p / O with
  K ~ Poisson(B) prefills interleaved; its percentile uses the Poisson quantile of K.
- Prefill. Prompts queue for the GPU as an M/D/1 queue with service time t_p (DistServe models
  the prefill instance the same way, Zhong et al., OSDI 2024, §3.1): waiting-time tail
  P(W > t) ≈ ρ exp(-2(1-ρ) t / t_p) (Kingman's heavy-traffic exponential tail with zero service
  variance), so W_q = t_p ln(ρ / (1-q)) / (2 (1-ρ)) for ρ > 1-q and 0 otherwise. TTFT at the
  percentile is t_p + W_q plus one decode iteration that may be running when the prompt arrives.
- Memory. B x (I + O) tokens must fit the KV cache: (memory x gpu_memory_utilization -
  weights/TP - activation reserve) x TP / KV bytes per token (KV heads are replicated when
  TP exceeds the KV-head count), and B is capped at vLLM's default ``max_num_seqs`` (256).

The capacity κ is the largest λ that meets both percentile targets and the memory limit. It is 0
where the SLO cannot be met at any load (for example a prompt whose prefill alone exceeds the
TTFT target). All functions are vectorised over request-size buckets.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.stats import poisson

from llmfleet.catalog.gpus import GPUType
from llmfleet.catalog.models import ModelSpec
from llmfleet.perf.steptime import PerfParams, decode_time_s, default_params, prefill_time_s

MAX_NUM_SEQS = 256
"""vLLM's default ``--max-num-seqs`` (vllm/config.py, SchedulerConfig)"""

ACTIVATION_RESERVE_BYTES = 2e9
"""per-GPU memory vLLM's profiling run keeps for activations and CUDA graphs at default
``--max-num-batched-tokens`` (estimate; vLLM reports 1-3 GB for 7B-70B models in its startup logs)"""


def kv_capacity_tokens(model: ModelSpec, gpu: GPUType, tp: int, gpu_memory_utilization: float = 0.9) -> float:
    """KV-cache capacity of a TP group, tokens (<= 0 when the weights do not fit)."""
    per_gpu_free = gpu.memory_bytes * gpu_memory_utilization - model.weight_bytes / tp - ACTIVATION_RESERVE_BYTES
    replication = max(1.0, tp / model.num_kv_heads)
    return per_gpu_free * tp / (model.kv_bytes_per_token * replication)


MIN_KV_TOKENS = 2048
"""smallest KV cache worth deploying: two median chat requests (Azure 2023 conversation trace:
median input 1,020 tokens; shared/data/README.md)"""


def weights_fit(model: ModelSpec, gpu: GPUType, tp: int, gpu_memory_utilization: float = 0.9) -> bool:
    """True when the weights leave room for a KV cache of at least ``MIN_KV_TOKENS``."""
    return kv_capacity_tokens(model, gpu, tp, gpu_memory_utilization) >= MIN_KV_TOKENS


@lru_cache(maxsize=64)
def _poisson_quantiles(q: float, max_batch: int) -> np.ndarray:
    """quantile q of Poisson(B) for B = 1..max_batch, shape (max_batch, 1)"""
    return poisson.ppf(q, np.arange(1, max_batch + 1, dtype=float))[:, None]


def mdl_wait_quantile_s(rate: np.ndarray, service_s: np.ndarray, q: float) -> np.ndarray:
    """Approximate q-quantile of the M/D/1 waiting time, s (inf when rate x service >= 1)."""
    rho = np.asarray(rate, dtype=float) * service_s
    with np.errstate(divide="ignore", invalid="ignore"):
        w = service_s * np.log(np.maximum(rho, 1e-300) / (1.0 - q)) / (2.0 * (1.0 - rho))
    w = np.where(rho > 1.0 - q, w, 0.0)
    return np.where(rho >= 1.0, np.inf, w)


@dataclass(frozen=True)
class ReplicaCurves:
    """Operating curves of one replica over batch sizes B = 1..max_batch for each bucket.

    Shapes: ``rate`` (req/s), ``tpot_s``, ``decode_s`` (s) and ``kv_ok`` are (max_batch, S);
    ``prefill_s`` (s) is (S,). ``rate[b, s]`` is the request rate that keeps b+1 requests decoding.
    """

    rate: np.ndarray
    tpot_s: np.ndarray
    decode_s: np.ndarray
    prefill_s: np.ndarray
    kv_ok: np.ndarray


def replica_curves(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, output_tokens: np.ndarray,
                   percentile: float, p: PerfParams | None = None, gpu_memory_utilization: float = 0.9,
                   max_num_seqs: int = MAX_NUM_SEQS) -> ReplicaCurves:
    """Rate, TPOT percentile and memory feasibility against batch size for each bucket.

    Args:
        input_tokens, output_tokens: shape (S,), representative request size of each bucket.
        percentile: SLO percentile, % (e.g. 90).
    """
    p = p or default_params()
    inp = np.asarray(input_tokens, dtype=float)[None, :]
    out = np.maximum(np.asarray(output_tokens, dtype=float), 1.0)[None, :]
    batch = np.arange(1, max_num_seqs + 1, dtype=float)[:, None]
    t_p = prefill_time_s(model, gpu, tp, inp[0], p=p)
    t_d = decode_time_s(model, gpu, tp, batch, batch * (inp + out / 2.0), p=p)
    rate = batch / (out * t_d + batch * t_p[None, :])
    k_q = _poisson_quantiles(percentile / 100.0, max_num_seqs)
    tpot = t_d + k_q * t_p[None, :] / out
    kv_ok = batch * (inp + out) <= kv_capacity_tokens(model, gpu, tp, gpu_memory_utilization)
    kv_ok &= (inp + out) <= model.max_context_tokens
    return ReplicaCurves(rate, tpot, t_d, t_p, kv_ok)


def capacity_rps(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, output_tokens: np.ndarray,
                 ttft_s: float, tpot_s: float, percentile: float, p: PerfParams | None = None,
                 gpu_memory_utilization: float = 0.9, max_num_seqs: int = MAX_NUM_SEQS) -> np.ndarray:
    """κ: the largest request rate, req/s, one replica serves within both SLO percentiles.

    Args:
        input_tokens, output_tokens: shape (S,), bucket request sizes (tokens).
        ttft_s, tpot_s: SLO targets, s. percentile: %, e.g. 90.

    Returns:
        Shape (S,), req/s; 0 where the SLO cannot be met or the request does not fit.
    """
    c = replica_curves(model, gpu, tp, input_tokens, output_tokens, percentile, p, gpu_memory_utilization, max_num_seqs)
    ok = c.kv_ok & (c.tpot_s <= tpot_s)
    # For each batch size B: the TTFT budget left for queueing after the prefill and one decode
    # iteration (which grows with B), and the largest rate whose M/D/1 wait quantile fits it.
    budget = ttft_s - c.prefill_s[None, :] - c.decode_s
    service = np.broadcast_to(c.prefill_s[None, :], budget.shape)
    lo = mdl_max_rate(service, budget, percentile / 100.0)
    # a replica can run at any B that meets TPOT and memory; the TTFT-limited rate caps it
    rate = np.where(ok & (budget > 0), np.minimum(c.rate, lo), 0.0)
    return rate.max(axis=0)


def mdl_max_rate(service_s: np.ndarray, wait_budget_s: np.ndarray, q: float) -> np.ndarray:
    """Largest arrival rate, req/s, whose M/D/1 wait quantile q stays within ``wait_budget_s``
    (0 where the budget is not positive). Arrays broadcast together."""
    service_s, budget = np.broadcast_arrays(np.asarray(service_s, dtype=float), np.asarray(wait_budget_s, dtype=float))
    lo = np.zeros(budget.shape)
    hi = np.where(budget > 0, 1.0 / service_s, 0.0)
    for _ in range(50):  # bisection: the wait quantile is increasing in the rate
        mid = (lo + hi) / 2.0
        good = mdl_wait_quantile_s(mid, service_s, q) <= budget
        lo = np.where(good, mid, lo)
        hi = np.where(good, hi, mid)
    return np.where(budget > 0, lo, 0.0)


# --------------------------------------------------------------------------------------------
# Prefill/decode disaggregation (DistServe, Zhong et al., OSDI 2024; Splitwise, Patel et al.,
# ISCA 2024): prompts run on prefill-only replicas, the KV cache moves over the network, and
# tokens are generated on decode-only replicas, so neither phase interferes with the other.


def kv_transfer_s(model: ModelSpec, prompt_tokens: np.ndarray, bandwidth_bytes_per_s: float) -> np.ndarray:
    """Time to move the KV cache of prompts from a prefill to a decode replica, s.

    Args:
        prompt_tokens: shape (S,), prompt lengths, tokens.
        bandwidth_bytes_per_s: network bandwidth available to the transfer, bytes/s (the slower
            side's per-GPU bandwidth x the GPUs that send or receive in parallel).
    """
    return np.asarray(prompt_tokens, dtype=float) * model.kv_bytes_per_token / bandwidth_bytes_per_s


def prefill_capacity_rps(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, ttft_s: float,
                         percentile: float, transfer_s: np.ndarray, first_token_s: float,
                         p: PerfParams | None = None, gpu_memory_utilization: float = 0.9) -> np.ndarray:
    """κ of a prefill-only replica: the largest rate, req/s, whose TTFT percentile meets the target.

    Prompts form an M/D/1 queue with service time t_p (one prompt per step, as DistServe models its
    prefill instances, §3.1); TTFT = wait + t_p + KV transfer + the decode replica's first step.

    Args:
        input_tokens: shape (S,), prompt length per bucket, tokens.
        transfer_s: shape (S,), KV transfer time per bucket, s (``kv_transfer_s``).
        first_token_s: time the decode replica takes to emit the first token, s (the planner uses
            the TPOT target: a decode replica that meets it never takes longer per step).

    Returns:
        Shape (S,), req/s; 0 where the prompt alone misses the target or its KV does not fit.
    """
    p = p or default_params()
    inp = np.asarray(input_tokens, dtype=float)
    t_p = prefill_time_s(model, gpu, tp, inp, p=p)
    budget = ttft_s - t_p - np.asarray(transfer_s, dtype=float) - first_token_s
    fits = (inp <= kv_capacity_tokens(model, gpu, tp, gpu_memory_utilization)) & (inp <= model.max_context_tokens)
    return np.where(fits, mdl_max_rate(t_p, budget, percentile / 100.0), 0.0)


def decode_curves(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, output_tokens: np.ndarray,
                  percentile: float, p: PerfParams | None = None, gpu_memory_utilization: float = 0.9,
                  max_num_seqs: int = MAX_NUM_SEQS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Operating curves of a decode-only replica over mean batch sizes B = 1..max_num_seqs.

    Requests stay O steps, so by Little's law rate = B / (O t_d(B)). The batch fluctuates: the
    number of requests in an M/G/∞ system is Poisson(B), so the TPOT percentile is the step time
    at the Poisson quantile of the batch, and that batch's KV must fit.

    Returns:
        (rate req/s, TPOT at the percentile s, feasible under memory), each of shape (max_num_seqs, S).
    """
    p = p or default_params()
    inp = np.asarray(input_tokens, dtype=float)[None, :]
    out = np.maximum(np.asarray(output_tokens, dtype=float), 1.0)[None, :]
    batch = np.arange(1, max_num_seqs + 1, dtype=float)[:, None]
    mean_step = decode_time_s(model, gpu, tp, batch, batch * (inp + out / 2.0), p=p)
    rate = batch / (out * mean_step)
    k_q = np.minimum(np.maximum(_poisson_quantiles(percentile / 100.0, max_num_seqs), batch), max_num_seqs)
    tpot = decode_time_s(model, gpu, tp, k_q, k_q * (inp + out / 2.0), p=p)
    kv_ok = (k_q * (inp + out) <= kv_capacity_tokens(model, gpu, tp, gpu_memory_utilization))
    kv_ok &= (inp + out) <= model.max_context_tokens
    return rate, tpot, kv_ok


def decode_capacity_rps(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray,
                        output_tokens: np.ndarray, tpot_s: float, percentile: float, p: PerfParams | None = None,
                        gpu_memory_utilization: float = 0.9, max_num_seqs: int = MAX_NUM_SEQS) -> np.ndarray:
    """κ of a decode-only replica: the largest rate, req/s, whose TPOT percentile meets the target
    and whose batch fits the KV cache (``decode_curves``). Shape (S,); 0 where no batch does."""
    rate, tpot, kv_ok = decode_curves(model, gpu, tp, input_tokens, output_tokens, percentile, p,
                                      gpu_memory_utilization, max_num_seqs)
    return np.where(kv_ok & (tpot <= tpot_s), rate, 0.0).max(axis=0)


def _at_offered_rate(rate_curve: np.ndarray, value_curve: np.ndarray, offered_rps: np.ndarray) -> np.ndarray:
    """``value_curve`` (max_batch, S) at the smallest batch whose steady-state rate reaches the
    offered rate (S,) of each bucket; inf where no batch does."""
    reach = rate_curve >= offered_rps[None, :]
    b = np.where(reach.any(axis=0), reach.argmax(axis=0), -1)
    return np.where(b >= 0, value_curve[np.maximum(b, 0), np.arange(rate_curve.shape[1])], np.inf)


def latency_at_rate(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, output_tokens: np.ndarray,
                    rate_rps: np.ndarray, percentile: float, p: PerfParams | None = None,
                    gpu_memory_utilization: float = 0.9, max_num_seqs: int = MAX_NUM_SEQS) -> tuple[np.ndarray, np.ndarray]:
    """Predicted (TTFT, TPOT) at the percentile, s, for each bucket served at ``rate_rps``
    req/s by one replica. Shapes (S,). inf where the rate exceeds what the replica can sustain."""
    c = replica_curves(model, gpu, tp, input_tokens, output_tokens, percentile, p, gpu_memory_utilization, max_num_seqs)
    rate = np.asarray(rate_rps, dtype=float)
    tpot = _at_offered_rate(c.rate, c.tpot_s, rate)
    t_d = _at_offered_rate(c.rate, c.decode_s, rate)
    ttft = c.prefill_s + t_d + mdl_wait_quantile_s(rate, c.prefill_s, percentile / 100.0)
    return ttft, tpot


def prefill_ttft_at_rate(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, rate_rps: np.ndarray,
                         percentile: float, transfer_s: np.ndarray, first_token_s: float,
                         p: PerfParams | None = None) -> np.ndarray:
    """Predicted TTFT at the percentile, s, of a prefill-only replica loaded at ``rate_rps`` per
    bucket (the inverse of ``prefill_capacity_rps``). Shape (S,); inf past saturation."""
    t_p = prefill_time_s(model, gpu, tp, np.asarray(input_tokens, dtype=float), p=p or default_params())
    wait = mdl_wait_quantile_s(np.asarray(rate_rps, dtype=float), t_p, percentile / 100.0)
    return wait + t_p + np.asarray(transfer_s, dtype=float) + first_token_s


def decode_tpot_at_rate(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, output_tokens: np.ndarray,
                        rate_rps: np.ndarray, percentile: float, p: PerfParams | None = None,
                        gpu_memory_utilization: float = 0.9, max_num_seqs: int = MAX_NUM_SEQS) -> np.ndarray:
    """Predicted TPOT at the percentile, s, of a decode-only replica loaded at ``rate_rps`` per
    bucket (the inverse of ``decode_capacity_rps``). Shape (S,); inf past saturation."""
    rate, tpot, _ = decode_curves(model, gpu, tp, input_tokens, output_tokens, percentile, p, gpu_memory_utilization,
                                  max_num_seqs)
    return _at_offered_rate(rate, tpot, np.asarray(rate_rps, dtype=float))
