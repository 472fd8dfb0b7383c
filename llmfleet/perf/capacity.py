"""Capacity of one vLLM replica under TTFT and TPOT percentile SLOs.

Colocated replicas run vLLM V1's scheduler: every iteration first advances the running decodes
(one token each), then fills the rest of the token budget ``max_num_batched_tokens`` with prompt
chunks (chunked prefill), at most ``max_num_seqs`` sequences. For requests of one size (input I,
output O tokens) arriving as a Poisson stream at rate λ:

- Prompt chunks. A prompt runs in the token budget the B decodes leave: ceil(I / c) iterations
  with a chunk c = min(I, budget - B) each. Each such iteration takes ``steptime.step_time_s`` of
  its mix; what it takes beyond a decode-only iteration t_d(B) is the prompt's extra time e(B).
  Steps are not averaged over a mean mix: a chunk of 1,000 tokens makes its iteration
  compute-bound while decode-only iterations stay memory-bound, and the mean of those step times,
  not the step time of the mean mix, is what requests see (``bench/capacity_accuracy.py``).
- Prompts that arrive together share an iteration: the scheduler takes in every waiting prompt's
  chunk, so an iteration that prefills carries m = x / (1 - e^-x) prompts when x arrive per
  iteration (``prompts_per_mixed_iteration``), and each prompt's extra time e(B) is its token
  share of that iteration's time over t_d(B) (``_shared_chunk_extra_s``): more than an iteration
  of its own costs, since only the first chunk's compute overlaps the decodes' memory reads. With
  one iteration per prompt, κ was 6-11% above what the simulator sustains (now 0-8%).
- Decode. With B requests decoding in steady state, λ t̄ = B / O prompts arrive per iteration, so
  the mean iteration is t̄ = t_d(B) + B e(B) / O and, by Little's law, λ(B) = B / (O t̄). A
  request's TPOT is t_d plus the extra time of the K prompts that arrive during its life,
  K ~ Poisson(B) (the batch of an M/G/∞ system); its percentile uses the Poisson quantile of K.
- Prefill. A prompt's service time s(B) is the duration of its chunk iterations.
  Waiting is a single-server queue with service time s (DistServe models prefill as M/D/1, Zhong
  et al., OSDI 2024, §3.1); Kingman's heavy-traffic tail P(W > t) ≈ ρ exp(-2(1-ρ) t / (v s))
  with v = c_a² + c_s², the arrivals' burstiness plus the prompt lengths' variability within the
  bucket (``Burstiness``; v = 1 for Poisson arrivals of one size, the M/D/1 case), so
  W_q = v s ln(ρ / (1-q)) / (2 (1-ρ)) for ρ > 1-q and 0 otherwise. Clumped arrivals (c_a² > 1)
  wait far more often than ρ: the prefactor and decay are then the GI/M/1 queue's with Gamma gaps
  (``burst_busy_probability``, ``mdl_wait_quantile_s``). A router spreads a burst over a group's
  replicas, so one of n sees each dispersion d as 1 + (d - 1) / n (``Burstiness.spread_over``);
  a colocated configuration's κ is that of one of the replicas it needs (``spread_capacity``). TTFT
  at the percentile is s + W_q plus the iteration in progress when the prompt arrives. The
  read-out (``latencies_at_rate`` with a mix) also counts the prompts that arrive right behind
  one and share its iteration, which a first-come-first-served queue puts after it
  (``with_followers``: none for Poisson arrivals; κ does not). (Prefill
  replicas' TTFT distributions also take the wait for the prompt in service as a lower bound:
  ``PrefillQueue.residual_wait_quantiles``.)
- Memory. The batch at its percentile, each request at its full I + O tokens, must fit the KV cache: (memory x gpu_memory_utilization -
  weights/TP - activation reserve) x TP / KV bytes per token (KV heads are replicated when
  TP exceeds the KV-head count).
- Scheduler limits: ``spec.serving.maxNumSeqs`` / ``maxNumBatchedTokens`` where set, else the
  defaults vLLM V1's OpenAI server picks for the GPU (``scheduler_limits``).

A replica whose arrivals mix sizes shares one batch among them (``shared_batch``): the batch,
its context and the prompt chunks a request meets come from the mix, not from each size alone.
The predicted latency and attainment of a plan use it; κ is computed per bucket.

The capacity κ is the largest λ that meets both percentile targets and the memory limit. It is 0
where the SLO cannot be met at any load (for example a prompt whose prefill alone exceeds the
TTFT target). Prefill-only and decode-only replicas (P/D disaggregation) are modelled below. All
functions are vectorised over request-size buckets.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import special

from llmfleet.catalog.gpus import GPUType
from llmfleet.catalog.models import ModelSpec
from llmfleet.perf.steptime import PerfParams, decode_time_s, default_params, prefill_time_s, step_time_s
from llmfleet.workload.demand import INPUT_LENGTH_PROBS, curve_at, dispersion_at

MAX_NUM_SEQS = 256
MAX_NUM_BATCHED_TOKENS = 2048
MAX_NUM_SEQS_LARGE = 1024
MAX_NUM_BATCHED_TOKENS_LARGE = 8192
LARGE_GPU_MEMORY_BYTES = 70 * 2**30
"""vLLM V1's defaults for ``vllm serve`` (the OpenAI server): ``--max-num-seqs`` 1024 and
``--max-num-batched-tokens`` 8192 on GPUs with at least 70 GiB that are not A100s, 256 and 2048
otherwise (vllm/engine/arg_utils.py, ``EngineArgs.get_batch_defaults``; the A100 exception follows
vLLM PR #17885, which measured lower throughput there with the larger budget)"""


def _gamma_ppf(q, shape, scale=1.0) -> np.ndarray:
    """``scipy.stats.gamma.ppf(q, shape, scale=scale)`` (NaN where shape or scale is not positive),
    from ``scipy.special`` directly: importing ``scipy.stats`` took 1.3 s of every ``llmfleet``
    command's 2.7 s of imports. Equal to scipy.stats' to the bit (tests/test_perf.py)."""
    # the ufuncs broadcast the arguments themselves (np.broadcast_arrays took a third of this
    # function's time at the read-out's many small calls)
    q, shape, scale = np.asarray(q, dtype=float), np.asarray(shape, dtype=float), np.asarray(scale, dtype=float)
    with np.errstate(invalid="ignore"):
        x = special.gammaincinv(shape, q) * scale
    return np.where((shape > 0) & (scale > 0) & (q >= 0) & (q <= 1), x, np.nan)


def _poisson_ppf(q, mean) -> np.ndarray:
    """``scipy.stats.poisson.ppf(q, mean)`` for 0 < q < 1 (NaN elsewhere or where the mean is
    negative), from ``scipy.special`` as scipy.stats computes it: the smallest k with P(N <= k)
    >= q. Equal to scipy.stats' to the bit (tests/test_perf.py)."""
    q, mean = np.asarray(q, dtype=float), np.asarray(mean, dtype=float)
    with np.errstate(invalid="ignore"):
        k = np.ceil(special.pdtrik(q, mean))
        below = np.maximum(k - 1, 0)
        x = np.where(special.pdtr(below, mean) >= q, below, k)
    return np.where((mean >= 0) & (q > 0) & (q < 1), x, np.nan)


def scheduler_limits(gpu: GPUType, max_num_seqs: int | None = None,
                     max_num_batched_tokens: int | None = None) -> tuple[int, int]:
    """(max_num_seqs, max_num_batched_tokens) a replica on ``gpu`` runs with: the given values
    where set (``spec.serving``), else vLLM V1's defaults for that GPU."""
    large = gpu.memory_bytes >= LARGE_GPU_MEMORY_BYTES and "a100" not in gpu.name.lower()
    seqs = max_num_seqs or (MAX_NUM_SEQS_LARGE if large else MAX_NUM_SEQS)
    budget = max_num_batched_tokens or (MAX_NUM_BATCHED_TOKENS_LARGE if large else MAX_NUM_BATCHED_TOKENS)
    return int(seqs), int(budget)

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


@dataclass(frozen=True)
class Burstiness:
    """How far a workload's traffic is from Poisson arrivals of one size per bucket.

    ``arrival_scv``: squared coefficient of variation of the arrivals at the seconds timescale
    (``workload.demand.arrival_dispersion`` over ``BURST_WINDOW_S``; 1 for Poisson): bursty
    arrivals widen the batch a request shares its life with (``batch_quantiles``).
    ``arrival_idc``: the same measured over several windows (``Demand.arrival_idc``; empty: the
    one figure at every window), since the dispersion of clustered traffic grows with the window
    (the Azure conversation trace replayed at 4x: 1.25 over 0.5 s, 2.2 over 5 s, 5.6 over 20 s):
    a request's decoding life meets the burstiness of its own length (``scv_over``).
    ``queue_arrival_scv``: the dispersion over the timescale a TTFT queue forms on (about the
    TTFT target; None: ``arrival_scv``). ``service_scv``: shape (S,) or scalar, variance over
    squared mean of the prompt lengths within each bucket, which is the variability of the
    prefill service time (0 for one size). Kingman's G/G/1 approximation scales the M/D/1 wait by
    the queue's c_a² + c_s² (``variability``). ``followers``: (window s, excess followers) pairs,
    ``Demand.arrival_followers``: how many more requests than Poisson's arrive within a window
    after one, the clump mates whose prompts share its prefill iteration (``followers_within``;
    empty: none).
    """

    arrival_scv: float = 1.0
    service_scv: np.ndarray | float = 0.0
    queue_arrival_scv: float | None = None
    arrival_idc: tuple[tuple[float, float], ...] = ()
    followers: tuple[tuple[float, float], ...] = ()

    def scv_over(self, window_s) -> np.ndarray:
        """The arrivals' index of dispersion over ``window_s`` seconds (any shape): the
        ``arrival_idc`` curve there (``workload.demand.dispersion_at``), else ``arrival_scv``."""
        return dispersion_at(self.arrival_idc, window_s, self.arrival_scv)

    def followers_within(self, window_s: float) -> float:
        """The excess followers of a request within ``window_s`` seconds (>= 0): the ``followers``
        curve there (``workload.demand.curve_at``); 0 without one."""
        return float(curve_at(self.followers, window_s, 0.0, 0.0))

    @property
    def queue_scv(self) -> float:
        """the arrivals' c_a² a TTFT queue sees"""
        return self.arrival_scv if self.queue_arrival_scv is None else self.queue_arrival_scv

    @property
    def variability(self) -> np.ndarray | float:
        """c_a² + c_s² of the TTFT queue, 1 for M/D/1"""
        return self.queue_scv + np.asarray(self.service_scv, dtype=float)

    @property
    def bursty(self) -> bool:
        """the arrivals are more variable than Poisson at some timescale"""
        return self.arrival_scv > 1.0 + 1e-9 or self.queue_scv > 1.0 + 1e-9 or any(
            v > 1.0 + 1e-9 for _, v in self.arrival_idc) or any(v > 1e-9 for _, v in self.followers)

    def spread_over(self, replicas: int) -> "Burstiness":
        """The burstiness one of ``replicas`` replicas sees when a router spreads the stream over
        them: every dispersion d becomes 1 + (d - 1) / n, as ``thinned(1 / n)``. A least-loaded
        router spreads a clump more evenly over pods of one speed, so this errs on the bursty side
        (``bench/pod_dispersion.py``). The excess followers are dealt, not thinned: a mean m
        (geometric, ratio r = m / (1 + m)) becomes r^n / (1 - r^n). ``replicas`` <= 1: unchanged."""
        n = max(int(replicas), 1)
        return self.dealt(n, 1.0 / n)

    def dealt(self, pods: int, share: float) -> "Burstiness":
        """The burstiness one of ``pods`` pods sees behind the least-loaded picker when it takes
        ``share`` (0..1] of the stream. The picker keeps the pods' requests in flight level, so a
        burst is dealt out evenly, 1/pods of it to each whatever its speed, while the steady
        traffic splits by speed: a pod's count has variance (d - 1) λt / pods² + share λt, and its
        dispersion is 1 + (d - 1) / (pods² share), at most the stream's own (1 + (d - 1) / pods
        for pods of one speed, ``spread_over``). A slow pod beside fast ones gets the overflow of a
        burst on top of its small share, burstier than a random thinning at that share: in
        ``bench/pod_dispersion.py``'s replays a one-pod L40S TP-2 group at a 0.15-0.20 share of
        three or four pods saw 2.93-4.49 over 2 s where the whole stream's was 7.12 (this: 3.55
        and 4.40). Excess followers are dealt too: a request's own pod gets every pods-th clump
        mate, F // pods, which for F geometric of ratio r = m / (1 + m) is geometric of ratio
        r^pods. ``pods`` <= 1: unchanged."""
        n = max(int(pods), 1)
        if n == 1 or not self.bursty:
            return self
        mates = []
        for t, m in self.followers:
            r_n = (m / (1.0 + m)) ** n
            mates.append((t, r_n / (1.0 - r_n)))
        factor = min(1.0 / (n * n * max(share, 1e-9)), 1.0)
        return dataclasses.replace(self._thinned_by(factor), followers=tuple(mates))

    def thinned(self, share: float) -> "Burstiness":
        """The burstiness of the part of the stream a router sends one pod at random with
        probability ``share`` (<= 0: Poisson; >= 1: unchanged): every dispersion d becomes
        1 + share (d - 1), exact for independent thinning (the count of a p-thinned point process
        has variance p² Var N + p(1-p) E N), and the excess followers become share x theirs (a kept
        request's followers are kept with probability p, as are Poisson's). The prompt lengths'
        variability is the stream's."""
        if share >= 1.0 or not self.bursty:
            return self
        return self._thinned_by(max(share, 0.0))

    def _thinned_by(self, share: float) -> "Burstiness":
        """This burstiness thinned independently at ``share`` (0..1): each dispersion d above 1
        becomes 1 + share (d - 1), each excess follower count share x it."""
        def thin(d):
            return 1.0 + (d - 1.0) * share if d > 1.0 else d

        return dataclasses.replace(self, arrival_scv=thin(self.arrival_scv), queue_arrival_scv=thin(self.queue_scv),
                                   arrival_idc=tuple((t, thin(v)) for t, v in self.arrival_idc),
                                   followers=tuple((t, v * share) for t, v in self.followers))


POISSON = Burstiness()
"""Poisson arrivals of one size per bucket: the M/D/1 case"""


# 4,096 entries of at most 1,024 floats (32 MiB at most): a plan's read-out asks for each group's
# grid of percentiles at its own dispersion, and 64 entries were evicted within one plan (50 workloads:
# the read-out 1.6 -> 1.1 s under cProfile)
@lru_cache(maxsize=4096)
def batch_quantiles(q: float, max_batch: int, dispersion: float = 1.0) -> np.ndarray:
    """Quantile q of the number of requests in an infinite-server system with mean B, for
    B = 1..max_batch, shape (max_batch, 1): Poisson(B) for Poisson arrivals (dispersion 1); for
    bursty arrivals a gamma of mean B and variance B x dispersion (the count of a clustered
    arrival stream over a request's life has variance about B times its index of dispersion)."""
    return _batch_quantile(q, np.arange(1, max_batch + 1, dtype=float), dispersion)[:, None]


def _batch_quantile(q: float, mean: np.ndarray, dispersion: float) -> np.ndarray:
    """``batch_quantiles`` at the mean batch sizes ``mean`` only (any shape, whole numbers), the
    same numbers elementwise: where one row is needed, the others' inverse incomplete gammas are
    not computed (each distinct dispersion is one more curve; ``shared_batch`` asks for one row of
    each group's)."""
    if dispersion <= 1.0 + 1e-9:
        return _poisson_ppf(q, mean)
    return np.ceil(_gamma_ppf(q, mean / dispersion, dispersion))


def erlang_c(servers: int, rho: np.ndarray) -> np.ndarray:
    """Probability that an arrival waits in an M/M/c queue (Erlang's C formula) with ``servers``
    servers each loaded ``rho`` (< 1; 1 at or past it). Shape of ``rho``. ``servers`` 1 gives ρ.
    Computed from Erlang's B by its recursion B(k) = a B(k-1) / (k + a B(k-1)), a = c ρ, which is
    stable for any c."""
    rho = np.asarray(rho, dtype=float)
    a = servers * np.clip(rho, 0.0, 1.0)
    b = np.ones_like(a)
    for k in range(1, servers + 1):
        b = a * b / (k + a * b)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = servers * b / (servers - a * (1.0 - b))
    return np.where(rho >= 1.0, 1.0, np.clip(np.nan_to_num(c, nan=1.0), 0.0, 1.0))


def burst_busy_probability(rho: np.ndarray, arrival_scv=1.0) -> np.ndarray:
    """σ, the probability that an arrival finds the server busy, for arrivals whose gaps are
    Gamma-distributed with squared coefficient of variation ``arrival_scv`` (c_a²) at load ``rho``
    (ρ = λ s, < 1). Shape: ``rho`` and ``arrival_scv`` broadcast.

    It is the root in (0, 1) of σ = Â(μ (1 - σ)), Â the gaps' Laplace transform, which for a
    Gamma of mean 1/λ and SCV c² is σ = (1 + c² (1 - σ) / ρ)^(-1/c²): the GI/M/1 queue's
    probability of waiting and the decay of its wait, P(W > t) = σ exp(-μ (1 - σ) t) (Kleinrock,
    "Queueing Systems", vol. 1, 1975, §6.4). For Poisson arrivals (c² = 1) σ = ρ, as in M/G/1; for
    clumped arrivals (c² > 1) an arrival often lands in the work of the clump before it, so σ is
    well above ρ at low load: 0.72 at ρ 0.2 and c² 7.3, where half of the gaps are under 3% of
    the mean. ``mdl_wait_quantile_s`` uses it as the prefactor of the wait's tail. ρ at c² <= 1
    (smoother than Poisson: Kingman's form, as before); 1 at ρ >= 1. Found by bisection in σ
    (60 halvings: 1e-18 of the interval; the root is unique since the right-hand side is convex
    in σ, above σ at 0 and below it just short of 1 when ρ < 1)."""
    rho, c = np.broadcast_arrays(np.asarray(rho, dtype=float), np.asarray(arrival_scv, dtype=float))
    bursty = (c > 1.0 + 1e-9) & (rho > 0) & (rho < 1.0)
    if not bursty.any():
        return np.where(rho >= 1.0, 1.0, np.clip(rho, 0.0, 1.0))
    r, cc = rho[bursty], c[bursty]
    lo, hi = np.zeros_like(r), np.ones_like(r)
    for _ in range(60):
        mid = (lo + hi) / 2.0
        above = (1.0 + cc * (1.0 - mid) / r) ** (-1.0 / cc) > mid  # left of the root
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    out = np.where(rho >= 1.0, 1.0, np.clip(rho, 0.0, 1.0))
    out[bursty] = hi
    return out


def mdl_wait_quantile_s(rate: np.ndarray, service_s: np.ndarray, q: float, variability=1.0,
                        window_s: float | None = None, servers: int = 1, arrival_scv=1.0) -> np.ndarray:
    """Approximate q-quantile of the waiting time of a single-server queue, s (inf when rate x
    service >= 1): Kingman's heavy-traffic exponential tail P(W > t) ≈ ρ exp(-2(1-ρ) t / (v s))
    with v = c_a² + c_s² (``Burstiness.variability``); v = 1 is M/D/1. ``q`` may be an array
    (broadcast with the others).

    ``arrival_scv`` c_a² > 1 (clumped arrivals, the c_a² inside ``variability``): the tail is
    σ exp(-(1-σ)(1 + c_a²) t / (v s)), σ the GI/M/1 probability of waiting with Gamma gaps
    (``burst_busy_probability``). With exponential service (v = c_a² + 1) this is the GI/M/1
    queue's exact wait; near saturation 1 - σ ≈ 2(1-ρ) / (1 + c_a²), Kingman's tail again; at c_a²
    = 1 it is Kingman's exactly. Kingman's prefactor ρ undercounts the arrivals that wait when they
    come in clumps: against a Lindley-recursion replay with Gamma gaps (c_a² 2-7.3, deterministic,
    gamma c_s² 0.5 and exponential service, ρ 0.2-0.9) this form's p90 and p99 are within 0.80-1.21
    of the replay (Kingman's own at ρ 0.9 is 1.21 there too; 0.74-1.17 at ρ 0.1), where Kingman's
    p90 was 1.55-1.92x short at ρ 0.2 (``tests/test_perf.py``).

    ``servers`` c > 1: c replicas behind a router that sends each request to the least-loaded
    one (the endpoint picker's queue scorer), approximated as one c-server queue, ``rate`` per
    server (Allen-Cunneen): an arrival waits with Erlang's C probability (``erlang_c``) instead
    of ρ, and the wait it meets drains c times as fast, P(W > t) ≈ C exp(-2c(1-ρ) t / (v s)),
    with or without clumps (``arrival_scv`` is read for one server only: the pooled prefill queue
    keeps the form its replay tests check, ``tests/test_perf.py``).

    ``window_s``: the load lasts only that long (one level of ``Demand.rate_levels``). Near and
    past saturation the stationary wait is never reached: the queue relaxes in about
    v s / (1-ρ)², minutes at ρ = 0.95. The wait is then at most what a window of T seconds builds
    from an empty queue, in the diffusion (heavy-traffic) approximation of the workload, drift
    (ρ-1) and variance ρ v s per second (Whitt, "Stochastic-Process Limits", 2002, ch. 5): the
    backlog's growth (ρ-1)⁺ q T met by the q-th of the window's arrivals, and the fluctuation
    z sqrt(ρ v s T/2) of a request half-way through it, z the (1+q)/2 quantile of the standard
    normal (the reflected Brownian motion started empty is half-normal), combined as independent
    (root sum of squares). Finite at any load; against a Lindley-recursion replay of M/D/1 over
    60 s within 25% at ρ 1.0-1.5 and q 0.9-0.99 (``tests/test_perf.py``)."""
    rho = np.asarray(rate, dtype=float) * service_s
    q = np.asarray(q, dtype=float)
    if servers == 1:
        waits = burst_busy_probability(rho, arrival_scv)  # P(W > 0)
        c_a2 = np.maximum(np.asarray(arrival_scv, dtype=float), 1.0)
        drain = np.where(c_a2 > 1.0 + 1e-9, (1.0 - waits) * (1.0 + c_a2), 2.0 * (1.0 - rho))  # the decay x v s
    else:
        waits, drain = erlang_c(servers, rho), 2.0 * (1.0 - rho)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = service_s * variability * np.log(np.maximum(waits, 1e-300) / (1.0 - q)) / (servers * drain)
    w = np.where(waits > 1.0 - q, w, 0.0)
    w = np.where(rho >= 1.0, np.inf, w)
    if window_s is None:
        return w
    # the pooled backlog (c servers' work) drains at c per second: its spread per server is 1/sqrt(c)
    growth = np.maximum(rho - 1.0, 0.0) * q * window_s
    spread = special.ndtri((1.0 + q) / 2.0) * np.sqrt(np.maximum(rho, 0.0) * variability * service_s * window_s
                                                 / (2.0 * servers))
    return np.minimum(w, np.hypot(growth, spread))


def _batch_rows(k: np.ndarray) -> np.ndarray | None:
    """Row indices (shape (B,)) of the batch sizes ``k`` (shape (B, 1), each a whole number in
    1..B) in curves over B = 1..max batch, or None where some is not a whole number in range.
    The curves are elementwise in the batch size, so a row equals the curve evaluated at that
    batch size exactly (same operations on the same numbers)."""
    k = k[:, 0]
    rows = k.astype(np.intp) - 1
    if not (np.all(rows + 1 == k) and np.all(rows >= 0) and np.all(rows < len(k))):
        return None
    return rows


@dataclass(frozen=True)
class ReplicaCurves:
    """Operating curves of one colocated replica over batch sizes B = 1..max_num_seqs per bucket.

    Shapes (max_num_seqs, S): ``rate`` (req/s) keeps B requests decoding; ``tpot_s`` is the TPOT
    percentile there; ``step_s`` the mean iteration time; ``prefill_s`` the service time of one
    prompt (its chunks' iterations), s; ``ok`` the batch fits the KV cache and the token budget.
    """

    rate: np.ndarray
    tpot_s: np.ndarray
    step_s: np.ndarray
    prefill_s: np.ndarray
    ok: np.ndarray


def prompts_per_mixed_iteration(prompts_per_iteration) -> np.ndarray:
    """m, the mean number of prompts an iteration that prefills carries (>= 1; shape of the
    argument), when x prompts arrive per iteration on average (Poisson) and each iteration takes
    in every prompt waiting at its start: the arrivals during one iteration given that there is
    one, m = x / (1 - e^-x), 1 as x -> 0. vLLM V1's scheduler fills an iteration's token budget
    with the chunks of every waiting prompt, so prompts that arrive close together share an
    iteration. In a replica's steady state x = B / Ō, the completions (hence arrivals) per
    iteration of B requests that decode Ō tokens each."""
    x = np.maximum(np.asarray(prompts_per_iteration, dtype=float), 1e-9)
    return x / -np.expm1(-x)


def _shared_chunk_extra_s(model: ModelSpec, gpu: GPUType, tp: int, chunk: np.ndarray, inp: np.ndarray,
                          others: np.ndarray, others_len, room: np.ndarray, batch: np.ndarray,
                          context_tokens: np.ndarray, t_d: np.ndarray, p: PerfParams) -> np.ndarray:
    """The extra time, s, a prompt's chunk of ``chunk`` tokens (of a prompt ``inp`` long) adds to
    its iteration beside ``batch`` decodes of ``context_tokens`` total context, whose decode-only
    step is ``t_d``, when other prompts' chunks share the iteration: ``others`` tokens more (of
    prompts ``others_len`` long) within the ``room`` the decodes leave. The iteration's time over
    t_d is shared by its prompts in proportion to their tokens. A mixed iteration is
    compute-bound while a decode-only one reads the weights and KV cache, so the first chunk in
    an iteration costs less than its compute (the decodes' memory time overlaps it) and the next
    ones cost their full compute: per prompt, a shared iteration costs more than one alone. In
    the simulator's replay of one H100 replica of Llama-3.1-8B at 14 req/s (1,000-token prompts,
    250-token answers) a mixed iteration carried 1.44 prompts and 29.5 ms of prompt time each,
    against 27.0 ms for a prompt alone. Arrays broadcast; ``others`` 0 gives the iteration of the
    chunk alone."""
    n = np.minimum(chunk + others, np.maximum(room, chunk))
    with np.errstate(invalid="ignore", divide="ignore"):
        t = step_time_s(model, gpu, tp, n, chunk * inp / 2.0 + (n - chunk) * others_len / 2.0, batch, context_tokens,
                        p)
        return np.where(n > 0, (t - t_d) * chunk / np.maximum(n, 1e-9), 0.0)


def _shared_prompt_extra_s(model: ModelSpec, gpu: GPUType, tp: int, full: np.ndarray, chunk: np.ndarray,
                           rest: np.ndarray, inp: np.ndarray, others: np.ndarray, others_len, room: np.ndarray,
                           batch: np.ndarray, context_tokens: np.ndarray, t_d: np.ndarray,
                           p: PerfParams) -> np.ndarray:
    """The extra time, s, a whole prompt of ``inp`` tokens adds to the iterations it runs in:
    ``full`` chunks of ``chunk`` tokens and a last one of ``rest`` (0: none), each iteration
    shared with ``others`` tokens of other prompts (``_shared_chunk_extra_s``, whose arguments
    these are; arrays broadcast)."""
    def one(n):
        return _shared_chunk_extra_s(model, gpu, tp, n, inp, others, others_len, room, batch, context_tokens, t_d, p)

    return full * one(chunk) + np.where(rest > 0, one(rest), 0.0)


def _mixed_step_s(model: ModelSpec, gpu: GPUType, tp: int, batch: np.ndarray, inp: np.ndarray, out: np.ndarray,
                  prompt_tokens: np.ndarray, p: PerfParams) -> np.ndarray:
    """One iteration with ``batch`` decodes (context I + O/2 each) and ``prompt_tokens`` of prompt
    chunks (attention over half the prompt on average), s."""
    return step_time_s(model, gpu, tp, prompt_tokens, prompt_tokens * inp / 2.0, batch, batch * (inp + out / 2.0), p)


def replica_curves(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, output_tokens: np.ndarray,
                   percentile: float, p: PerfParams | None = None, gpu_memory_utilization: float = 0.9,
                   max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None,
                   burst: Burstiness = POISSON) -> ReplicaCurves:
    """Rate, TPOT percentile, prompt service time and feasibility against batch size per bucket
    (the chunked-prefill steady state of the module docstring).

    Args:
        input_tokens, output_tokens: shape (S,), representative request size of each bucket.
        percentile: SLO percentile, % (e.g. 90).
        max_num_seqs, max_num_batched_tokens: scheduler limits (None: vLLM's defaults for ``gpu``).
    """
    return replica_curves_at(model, gpu, tp, input_tokens, output_tokens, [percentile], p, gpu_memory_utilization,
                             max_num_seqs, max_num_batched_tokens, burst)[0]


@dataclass(frozen=True)
class _SteadyState:
    """The percentile-free part of ``replica_curves_at``: the chunking of each bucket's prompt and
    the curves at each mean batch size B = 1..max_num_seqs (shapes (max_num_seqs, S); ``inp`` and
    ``out`` (1, S), ``batch`` (max_num_seqs, 1))."""

    inp: np.ndarray
    out: np.ndarray
    batch: np.ndarray
    chunk: np.ndarray
    full: np.ndarray
    rest: np.ndarray
    t_d: np.ndarray
    prefill: np.ndarray
    others: np.ndarray
    budget: int
    step: np.ndarray
    rate: np.ndarray

    def extra_at(self, model: ModelSpec, gpu: GPUType, tp: int, b: np.ndarray, t_d: np.ndarray,
                 p: PerfParams) -> np.ndarray:
        """Extra time a prompt's chunks add to the iterations it runs in, s, with ``b`` decodes
        (shape (max_num_seqs, 1), row by row against this chunking) whose decode-only step is
        ``t_d``, each iteration shared with the other prompts of the steady state
        (``_shared_chunk_extra_s``)."""
        room = np.maximum(self.budget - b, 0.0)
        return _shared_prompt_extra_s(model, gpu, tp, self.full, self.chunk, self.rest, self.inp, self.others,
                                      self.inp, room, b, b * (self.inp + self.out / 2.0), t_d, p)


_STEADY_MEMO: ContextVar[dict | None] = ContextVar("llmfleet_steady_memo", default=None)


@contextmanager
def shared_steady_states():
    """Within this block (in this thread or task), ``replica_curves_at`` and ``replica_rate_rps``
    compute the steady state of a (model, GPU, TP, parameters, scheduler limits, bucket sizes)
    once and reuse it, and its TPOT curve once per percentile and arrival burstiness: one
    workload's capacity model asks for it at its SLO percentile, again at a raised planning
    percentile, and for its power draw, and workloads of the same model and request sizes ask for
    the same curves (``build_problem`` models those in one block). The memo is dropped at the
    block's end, so memory holds one such group's curves at a time."""
    token = _STEADY_MEMO.set({})
    try:
        yield
    finally:
        _STEADY_MEMO.reset(token)


def _steady_state(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, output_tokens: np.ndarray,
                  p: PerfParams, seqs: int, budget: int) -> _SteadyState:
    inp = np.asarray(input_tokens, dtype=float)[None, :]
    out = np.maximum(np.asarray(output_tokens, dtype=float), 1.0)[None, :]
    memo = _STEADY_MEMO.get()
    key = (model, gpu, tp, p, seqs, budget, inp.tobytes(), out.tobytes()) if memo is not None else None
    if key is not None and key in memo:
        return memo[key]
    batch = np.arange(1, seqs + 1, dtype=float)[:, None]
    # a prompt's chunks: the budget left after the decodes, whole chunks then the remainder
    room = np.maximum(budget - batch, 0.0)
    chunk = np.minimum(inp, room)
    with np.errstate(divide="ignore", invalid="ignore"):
        full = np.where(chunk > 0, np.floor(inp / chunk), 0.0)
    rest = np.where(chunk > 0, inp - full * chunk, 0.0)
    t_d = decode_time_s(model, gpu, tp, batch, batch * (inp + out / 2.0), p)
    t_full = _mixed_step_s(model, gpu, tp, batch, inp, out, chunk, p)
    t_rest = np.where(rest > 0, _mixed_step_s(model, gpu, tp, batch, inp, out, rest, p), 0.0)
    # B / Ō prompts arrive per iteration; those that arrive together share an iteration
    others = (prompts_per_mixed_iteration(batch / out) - 1.0) * inp
    ctx = batch * (inp + out / 2.0)
    extra = _shared_prompt_extra_s(model, gpu, tp, full, chunk, rest, inp, others, inp, room, batch, ctx, t_d, p)
    step = t_d + batch * extra / out  # λ t̄ prompts arrive per iteration, each adding ``extra``
    state = _SteadyState(inp, out, batch, chunk, full, rest, t_d,
                         np.where(chunk > 0, full * t_full + t_rest, np.inf), others, int(budget), step,
                         batch / (out * step))
    for a in (state.chunk, state.full, state.rest, state.t_d, state.prefill, state.others, state.step, state.rate):
        a.flags.writeable = False  # shared by every caller within ``shared_steady_states``
    if key is not None:
        memo[key] = state
    return state


def replica_rate_rps(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, output_tokens: np.ndarray,
                     p: PerfParams | None = None, max_num_seqs: int | None = None,
                     max_num_batched_tokens: int | None = None) -> np.ndarray:
    """Steady-state rate, req/s, that keeps B requests decoding on one colocated replica, for
    B = 1..max_num_seqs: ``ReplicaCurves.rate`` without the percentile curves. Shape
    (max_num_seqs, S); ``input_tokens``, ``output_tokens`` shape (S,)."""
    seqs, budget = scheduler_limits(gpu, max_num_seqs, max_num_batched_tokens)
    return _steady_state(model, gpu, tp, input_tokens, output_tokens, p or default_params(), seqs, budget).rate


def replica_curves_at(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, output_tokens: np.ndarray,
                      percentiles, p: PerfParams | None = None, gpu_memory_utilization: float = 0.9,
                      max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None,
                      burst: Burstiness = POISSON) -> list[ReplicaCurves]:
    """``replica_curves`` at each of ``percentiles`` (%, e.g. [50, 90, 99]), in order: one
    ``ReplicaCurves`` per percentile, each array of shape (max batch, S). The steady state at each
    batch size does not depend on the percentile, only the batch quantile does: it is computed
    once (and shared within ``shared_steady_states``). Raises nothing for valid inputs;
    percentiles outside (0, 100) are not meaningful."""
    p = p or default_params()
    seqs, budget = scheduler_limits(gpu, max_num_seqs, max_num_batched_tokens)
    st = _steady_state(model, gpu, tp, input_tokens, output_tokens, p, seqs, budget)
    inp, out, batch = st.inp, st.out, st.batch
    kv_tokens = kv_capacity_tokens(model, gpu, tp, gpu_memory_utilization)
    fits = ((inp + out) <= model.max_context_tokens) & (st.chunk > 0)
    memo = _STEADY_MEMO.get()
    out_curves = []
    for percentile in percentiles:
        k_q = np.minimum(np.maximum(batch_quantiles(percentile / 100.0, seqs, burst.arrival_scv), batch), seqs)
        # the memo holds the state for the block, so its id names it while the memo lives
        key = ("tpot", id(st), float(percentile), float(burst.arrival_scv))
        tpot = memo.get(key) if memo is not None else None
        if tpot is None:
            # K decodes beside a prompt chunked for the mean batch B: the decode-only step at K is a
            # row of the curve (it does not depend on the chunking); the chunks' extra time is not
            rows = _batch_rows(k_q)
            t_dq = (st.t_d[rows] if rows is not None
                    else decode_time_s(model, gpu, tp, k_q, k_q * (inp + out / 2.0), p))
            extra_q = st.extra_at(model, gpu, tp, k_q, t_dq, p)
            tpot = t_dq + k_q * extra_q / out
            if memo is not None:
                tpot.flags.writeable = False
                memo[key] = tpot
        # the batch fluctuates: its KV must fit at the quantile, as for decode-only replicas
        ok = (k_q * (inp + out) <= kv_tokens) & fits
        out_curves.append(ReplicaCurves(st.rate, tpot, st.step, st.prefill, ok))
    return out_curves


def capacity_rps(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, output_tokens: np.ndarray,
                 ttft_s: float, tpot_s: float, percentile: float, p: PerfParams | None = None,
                 gpu_memory_utilization: float = 0.9, max_num_seqs: int | None = None,
                 max_num_batched_tokens: int | None = None, burst: Burstiness = POISSON) -> np.ndarray:
    """κ: the largest request rate, req/s, one colocated replica serves within both SLO percentiles.

    Args:
        input_tokens, output_tokens: shape (S,), bucket request sizes (tokens).
        ttft_s, tpot_s: SLO targets, s. percentile: %, e.g. 90.
        max_num_seqs, max_num_batched_tokens: scheduler limits (None: vLLM's defaults for ``gpu``).
        burst: arrival and prompt-length variability (default: Poisson, one size per bucket).

    Returns:
        Shape (S,), req/s; 0 where the SLO cannot be met or the request does not fit.
    """
    memo = _STEADY_MEMO.get()
    key = None
    if memo is not None:  # workloads of one model, sizes and SLO ask for the same κ (``build_problem``)
        key = ("kappa", model, gpu, tp, p or default_params(), max_num_seqs, max_num_batched_tokens,
               np.asarray(input_tokens, dtype=float).tobytes(), np.asarray(output_tokens, dtype=float).tobytes(),
               float(ttft_s), float(tpot_s), float(percentile), float(gpu_memory_utilization),
               float(burst.arrival_scv), float(burst.queue_scv), burst.arrival_idc,
               np.asarray(burst.service_scv, dtype=float).tobytes())
        if key in memo:
            return memo[key].copy()
    c = replica_curves(model, gpu, tp, input_tokens, output_tokens, percentile, p, gpu_memory_utilization,
                       max_num_seqs, max_num_batched_tokens, burst)
    ok = c.ok & (c.tpot_s <= tpot_s)
    # For each batch size B: the TTFT budget left for queueing after the prompt's own iterations
    # and the iteration in progress at its arrival, and the largest rate whose M/D/1 wait fits it.
    budget = ttft_s - c.prefill_s - c.step_s
    # a replica can run at any B that meets TPOT and memory; the TTFT-limited rate caps it (the
    # queue is solved only where it can matter: most batch sizes miss TPOT or memory)
    run = ok & (budget > 0)
    rate = np.zeros(c.rate.shape)
    if run.any():
        v = np.broadcast_to(np.asarray(burst.variability, dtype=float), c.rate.shape)[run]
        lo = mdl_max_rate(c.prefill_s[run], budget[run], percentile / 100.0, v, burst.queue_scv)
        rate[run] = np.minimum(c.rate[run], lo)
    kappa = rate.max(axis=0)
    if key is not None:
        memo[key] = kappa.copy()
    return kappa


def spread_capacity(kappa_of, burst: Burstiness, kappa_alone: np.ndarray, bucket_rps: np.ndarray,
                    most: int) -> tuple[np.ndarray, int]:
    """(κ per bucket (S,), req/s, n): κ of one of the n replicas a colocated configuration needs to
    carry ``bucket_rps`` (S,) alone, n the fewest with Σ rate / κ(n) <= n, where κ(n) =
    ``kappa_of(burst.spread_over(n))`` (``Burstiness.spread_over``: the router spreads a burst over
    the group's replicas, so each sees a smoother stream than the whole): a fixed point, found by
    bisection between 1 and the replicas κ of one alone (``kappa_alone``) needs, at most ``most``
    (the pool's replicas of this shape). κ(n) grows with n, so the n found carries the rate. A
    group the solver makes smaller (the workload split over several configurations, or a load
    that rounds to fewer than n replicas at κ(n)) is predicted at its own size
    (``solver.milp._latencies_by_bucket``), so a plan that relies on too high a κ says so.

    Args:
        kappa_of: Burstiness -> κ per bucket (S,), req/s (``capacity_rps`` of the configuration
            with everything else fixed).
        burst: the workload's stream as a whole; kappa_alone: ``kappa_of(burst)``.
        bucket_rps: (S,), the workload's rate to plan for per bucket, req/s.
        most: the most replicas of this shape the pool holds (maxGPUs // TP).

    Raises nothing."""
    def needed(kappa: np.ndarray) -> float:
        ok = kappa > 0
        return float(np.sum(bucket_rps[ok] / kappa[ok]))

    hi = min(max(int(np.ceil(needed(kappa_alone) - 1e-9)), 1), max(most, 1))
    if hi <= 1:
        return kappa_alone, 1
    lo, best = 1, kappa_of(burst.spread_over(hi))  # n = hi carries the rate (κ(hi) >= κ(1))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        kappa = kappa_of(burst.spread_over(mid))
        if needed(kappa) <= mid:
            hi, best = mid, kappa
        else:
            lo = mid
    return best, hi


def mdl_max_rate(service_s: np.ndarray, wait_budget_s: np.ndarray, q: float, variability=1.0,
                 arrival_scv=1.0) -> np.ndarray:
    """Largest arrival rate, req/s, whose wait quantile q (``mdl_wait_quantile_s`` with
    ``variability`` and ``arrival_scv``) stays within ``wait_budget_s`` (0 where the budget is not
    positive). Arrays broadcast together.

    In closed form: with a = 1 - q, the probability of waiting σ (ρ for Poisson arrivals,
    ``burst_busy_probability`` for clumped ones) and K = (1 + c_a²) budget / (v s) (2 budget / (v s)
    for Poisson), the quantile meets the budget where ln(σ / a) = K (1 - σ) (any σ <= a waits 0).
    With y = K σ this is y + ln y = K + ln(a K), whose root is the Wright omega function of the
    right-hand side (``scipy.special.wrightomega``; Corless and Jeffrey, "The Wright ω function",
    2002). The load follows from σ by the root's own equation, ρ = c_a² (1 - σ) / (σ^(-c_a²) - 1)
    (ρ = σ at c_a² = 1). The wait quantile increases with the rate, so this root is the largest rate.
    """
    service_s, budget, c_a2 = np.broadcast_arrays(np.asarray(service_s, dtype=float),
                                                  np.asarray(wait_budget_s, dtype=float),
                                                  np.maximum(np.asarray(arrival_scv, dtype=float), 1.0))
    v = np.broadcast_to(np.asarray(variability, dtype=float), service_s.shape)
    ok = (budget > 0) & (service_s > 0)
    bursty = c_a2 > 1.0 + 1e-9
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        k = np.where(ok, np.where(bursty, 1.0 + c_a2, 2.0) * budget / (v * service_s), 1.0)
        sigma = np.minimum(special.wrightomega(k + np.log((1.0 - q) * k)) / k, 1.0)
        sigma = np.maximum(sigma, 1.0 - q)  # the root lies above a; rounding must not put it below
        rho = np.where(bursty & (sigma < 1.0), c_a2 * (1.0 - sigma) / (sigma ** -c_a2 - 1.0), sigma)
    rho = np.clip(np.nan_to_num(rho, nan=1.0), 0.0, 1.0)
    return np.where(ok, rho / np.where(ok, service_s, 1.0), 0.0)


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
                         p: PerfParams | None = None, gpu_memory_utilization: float = 0.9,
                         burst: Burstiness = POISSON) -> np.ndarray:
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
    return np.where(fits, mdl_max_rate(t_p, budget, percentile / 100.0, burst.variability), 0.0)


def decode_curves(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, output_tokens: np.ndarray,
                  percentile: float, p: PerfParams | None = None, gpu_memory_utilization: float = 0.9,
                  max_num_seqs: int | None = None, burst: Burstiness = POISSON) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Operating curves of a decode-only replica over mean batch sizes B = 1..max_num_seqs.

    Requests stay O steps, so by Little's law rate = B / (O t_d(B)). The batch fluctuates: the
    number of requests in an M/G/∞ system is Poisson(B), so the TPOT percentile is the step time
    at the Poisson quantile of the batch, and that batch's KV must fit.

    Returns:
        (rate req/s, TPOT at the percentile s, feasible under memory), each of shape (max_num_seqs, S);
        ``max_num_seqs`` None means vLLM's default for ``gpu``.
    """
    p = p or default_params()
    max_num_seqs, _ = scheduler_limits(gpu, max_num_seqs)
    inp = np.asarray(input_tokens, dtype=float)[None, :]
    out = np.maximum(np.asarray(output_tokens, dtype=float), 1.0)[None, :]
    memo = _STEADY_MEMO.get()
    key = (("decode", model, gpu, tp, p, max_num_seqs, inp.tobytes(), out.tobytes(), float(percentile),
            float(burst.arrival_scv), float(gpu_memory_utilization)) if memo is not None else None)
    if key is not None and key in memo:
        return memo[key]
    batch = np.arange(1, max_num_seqs + 1, dtype=float)[:, None]
    mean_step = decode_time_s(model, gpu, tp, batch, batch * (inp + out / 2.0), p=p)
    rate = batch / (out * mean_step)
    k_q = np.minimum(np.maximum(batch_quantiles(percentile / 100.0, max_num_seqs, burst.arrival_scv), batch),
                     max_num_seqs)
    rows = _batch_rows(k_q)
    tpot = mean_step[rows] if rows is not None else decode_time_s(model, gpu, tp, k_q, k_q * (inp + out / 2.0), p=p)
    kv_ok = (k_q * (inp + out) <= kv_capacity_tokens(model, gpu, tp, gpu_memory_utilization))
    kv_ok &= (inp + out) <= model.max_context_tokens
    if key is not None:
        for a in (rate, tpot, kv_ok):
            a.flags.writeable = False  # shared by every caller within ``shared_steady_states``
        memo[key] = (rate, tpot, kv_ok)
    return rate, tpot, kv_ok


def decode_capacity_rps(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray,
                        output_tokens: np.ndarray, tpot_s: float, percentile: float, p: PerfParams | None = None,
                        gpu_memory_utilization: float = 0.9, max_num_seqs: int | None = None,
                        burst: Burstiness = POISSON) -> np.ndarray:
    """κ of a decode-only replica: the largest rate, req/s, whose TPOT percentile meets the target
    and whose batch fits the KV cache (``decode_curves``). Shape (S,); 0 where no batch does."""
    rate, tpot, kv_ok = decode_curves(model, gpu, tp, input_tokens, output_tokens, percentile, p,
                                      gpu_memory_utilization, max_num_seqs, burst)
    return np.where(kv_ok & (tpot <= tpot_s), rate, 0.0).max(axis=0)


@dataclass(frozen=True)
class _MixState:
    """The percentile-free part of ``shared_batch`` for one replica and one mix: shapes (seqs,)
    over the mean batch B = 1..max_num_seqs, (seqs, S) for the prompt chunking, scalars for the
    mix's context and output length."""

    batch: np.ndarray
    t_d: np.ndarray
    ctx: float
    ctx_scv: float
    kv_per_request: float
    out_mean: float
    length_scv: np.ndarray
    prompt_share: np.ndarray
    chunked: bool
    chunk: np.ndarray | None
    full: np.ndarray | None
    rest: np.ndarray | None
    prefill: np.ndarray
    others: np.ndarray | None
    others_len: float
    mean_extra: np.ndarray
    room_ok: np.ndarray
    rate: np.ndarray


def _mix_state(model: ModelSpec, gpu: GPUType, tp: int, inp: np.ndarray, out: np.ndarray, share: np.ndarray,
               p: PerfParams, seqs: int, budget: int, burst: Burstiness, chunked_prefill: bool,
               prefill_share: np.ndarray | None) -> _MixState:
    """``shared_batch``'s steady state for the bucket proportions ``share`` (S,), summing to 1."""
    # prompts the replica prefills, per request it decodes, by bucket
    prompt_share = share * (np.ones(len(inp)) if prefill_share is None else np.asarray(prefill_share, dtype=float))
    chunked_prefill = chunked_prefill and float(prompt_share.sum()) > 0
    held_tokens = share * out  # a bucket's weight in the batch: its arrivals x its steps
    ctx = float(held_tokens @ (inp + out / 2.0)) / float(held_tokens.sum())
    kv_per_request = float(held_tokens @ (inp + out)) / float(held_tokens.sum())
    length_scv = np.broadcast_to(np.asarray(burst.service_scv, dtype=float), inp.shape)
    ctx_second = float(held_tokens @ ((inp + out / 2.0) ** 2 + length_scv * inp ** 2)) / float(held_tokens.sum())
    ctx_scv = max(ctx_second / ctx ** 2 - 1.0, 0.0)  # the contexts' spread over the batch's requests
    out_mean = float(share @ out)
    batch = np.arange(1, seqs + 1, dtype=float)
    t_d = decode_time_s(model, gpu, tp, batch, batch * ctx, p)
    chunk = full = rest = None
    if chunked_prefill:
        b = batch[:, None]
        room = np.maximum(budget - b, 0.0)
        chunk = np.minimum(inp[None, :], room)
        with np.errstate(divide="ignore", invalid="ignore"):
            full = np.where(chunk > 0, np.floor(inp / chunk), 0.0)
        rest = np.where(chunk > 0, inp - full * chunk, 0.0)
        t_full = step_time_s(model, gpu, tp, chunk, chunk * inp / 2.0, b, b * ctx, p)
        t_rest = np.where(rest > 0, step_time_s(model, gpu, tp, rest, rest * inp / 2.0, b, b * ctx, p), 0.0)
        # B Σ p_b f_b / Ō prompts arrive per iteration; those that arrive together share one
        others_len = float(prompt_share @ inp) / float(prompt_share.sum())
        others = (prompts_per_mixed_iteration(b * float(prompt_share.sum()) / out_mean) - 1.0) * others_len
        extra = _shared_prompt_extra_s(model, gpu, tp, full, chunk, rest, inp, others, others_len, room, b, b * ctx,
                                       t_d[:, None], p)
        prefill = np.where(chunk > 0, full * t_full + t_rest, np.inf)
        mean_extra = extra @ prompt_share
        room_ok = room[:, 0] > 0
    else:
        others, others_len = None, 0.0
        mean_extra = np.zeros(seqs)
        prefill = np.full((seqs, len(inp)), np.inf)
        room_ok = np.ones(seqs, dtype=bool)
    rate = batch / (out_mean * t_d + batch * mean_extra)
    return _MixState(batch, t_d, ctx, ctx_scv, kv_per_request, out_mean, length_scv, prompt_share, chunked_prefill,
                     chunk, full, rest, prefill, others, others_len, mean_extra, room_ok, rate)


def mix_rate_rps(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, output_tokens: np.ndarray,
                 mix_share: np.ndarray, p: PerfParams | None = None, max_num_seqs: int | None = None,
                 max_num_batched_tokens: int | None = None, chunked_prefill: bool = True,
                 prefill_share: np.ndarray | None = None) -> np.ndarray:
    """The rate, req/s, that keeps B requests decoding on one replica whose arrivals have the
    bucket proportions ``mix_share`` (shape (S,), any scale), for B = 1..max_num_seqs: shape
    (max_num_seqs,), the rate curve of ``shared_batch``. ``chunked_prefill``, ``prefill_share``:
    as there."""
    p = p or default_params()
    seqs, budget = scheduler_limits(gpu, max_num_seqs, max_num_batched_tokens)
    share = np.asarray(mix_share, dtype=float)
    return _mix_state(model, gpu, tp, np.asarray(input_tokens, dtype=float),
                      np.maximum(np.asarray(output_tokens, dtype=float), 1.0), share / share.sum(), p, seqs, budget,
                      POISSON, chunked_prefill, prefill_share).rate


@dataclass(frozen=True)
class SharedBatch:
    """One replica serving a mix of request sizes: the batch every request shares, at one SLO
    percentile (``shared_batch``). Shapes (S,) per bucket; scalars for the replica.

    ``tpot_s``: TPOT at the percentile of a request of each bucket, s; ``prefill_s``: its prompt's
    service (its chunk iterations beside the mean batch), s, inf where it does not fit or the
    replica does not prefill; ``step_s``: the mean iteration, s; ``batch``: the mean number of
    requests decoding; ``rate_max_rps``: the most the replica sustains with this mix, req/s;
    ``saturated``: the arrivals exceed it (the values are then those at that most).
    ``backlog_step_s``: an iteration whose token budget is full of prompt chunks beside the
    percentile's batch, s (inf where the replica prefills nothing); ``backlog_room_tokens``: the
    prompt tokens such an iteration takes (the budget less the batch); ``prompt_tokens_rps``: the
    prompt tokens the replica prefills per second at its arrivals (``after_backlog_tpot_s``)."""

    tpot_s: np.ndarray
    prefill_s: np.ndarray
    step_s: float
    batch: int
    rate_max_rps: float
    saturated: bool
    backlog_step_s: float = np.inf
    backlog_room_tokens: float = 0.0
    prompt_tokens_rps: float = 0.0


def shared_batch(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, output_tokens: np.ndarray,
                 mix_rps: np.ndarray, percentiles, p: PerfParams | None = None,
                 gpu_memory_utilization: float = 0.9, max_num_seqs: int | None = None,
                 max_num_batched_tokens: int | None = None, burst: Burstiness = POISSON,
                 chunked_prefill: bool = True, held: bool = False,
                 prefill_share: np.ndarray | None = None) -> list[SharedBatch | None]:
    """The steady state of one replica whose arrivals are a mix of sizes: every request decodes
    in the same batch, so the batch and the step are the mix's, not each size's alone (the
    module docstring's steady state for one size, with the mix's sums in it).

    Requests stay O_b steps, so the batch decoding holds the requests of each bucket in
    proportion to λ_b O_b: its mean context per request is c̄ = Σ λ_b O_b (I_b + O_b/2) / Σ λ_b O_b,
    and its KV per request Σ λ_b O_b (I_b + O_b) / Σ λ_b O_b. With p_b = λ_b / Λ and f_b the share
    of bucket b's prompts the replica prefills, the mean iteration at a mean batch B is
    t̄ = t_d(B) + B ē(B) / Ō (Ō = Σ p_b O_b, ē = Σ p_b f_b e_b(B) the prompts' extra time per
    request) and the rate that keeps B decoding is B / (Ō t̄). The batch is the smallest B whose
    rate reaches Λ = Σ λ_b.

    At the percentile: K, the batch's count (``batch_quantiles``), or the larger batch that the
    arrivals' swing over a request's life sustains (``_sustained_batch``: a busy period of
    decodes, K = g λ Ō t_d(K)), sets the step's per-sequence
    work; the batch's context is a compound sum of K contexts drawn from the mix (variance: the
    count's dispersion plus the contexts' SCV, within-bucket prompt spread included), and a
    request of bucket b has its own context in it, so TPOT_b = t_d(K, C_q + I_b + O_b/2 - c̄).
    The prompts arriving during its O_b steps, O_b B Σ p_b f_b / Ō of them on average, add their
    chunks' extra time spread over those steps, a share s of its iterations' time at the mean.
    Two parts at the percentile: the arrivals run at g times their mean over the request's life
    (g the rate's quantile over that many arrivals, Poisson or bursty, from the dispersion over
    the life's length, ``Burstiness.scv_over``), where the busy period gives TPOT_b / (1 - g s),
    up to every iteration carrying a full token budget of prompt, g read over the life it
    lengthens (``_busy_load``); and the sizes of the prompts met (``_sizes_quantile``): a
    request of a few tokens meets few, and one long one makes its TPOT jump. A prompt's service
    is its own chunks beside B decodes.

    The capacity curves that plan κ (``replica_curves_at``, ``decode_curves``) take the batch's
    count at one instant and the prompts met as a Poisson count at the mean load, with no busy
    period; this read-out is at or above them. With the busy periods for Poisson arrivals too,
    the replayed p99 TPOT of replicas near their throughput (relaxed SLOs) went from 1.29-1.55x
    the prediction to 1.10-1.41x on ``bench/bursty_verify.py`` and from 1.39-1.51x to 1.15-1.28x
    on ``bench/colocated_sweep.py``; the busy load read over the lengthened life brought the
    clumped cases (CV² 7.3) that it over-predicted from 0.76-0.78x to 0.77-0.84x.

    Args:
        input_tokens, output_tokens, mix_rps: shape (S,): bucket sizes (tokens) and the replica's
            arrivals per bucket, req/s.
        percentiles: SLO percentiles, % (one ``SharedBatch`` each, in order).
        chunked_prefill: False for a decode-only replica (no prompts, ``prefill_s`` inf).
        prefill_share: shape (S,), the share of each bucket's prompts the replica prefills itself
            (a decode replica prefills the prompts under the P/D threshold); None: all of them
            (a colocated replica), or none without ``chunked_prefill``.
        held: past what the replica sustains, the values at its largest rate (the excess
            queues, ``saturated``); False: None there.

    Returns:
        One ``SharedBatch`` per percentile, or None where no batch that fits the KV cache carries
        the arrivals (and ``held`` is False) or nothing arrives.
    """
    p = p or default_params()
    seqs, budget = scheduler_limits(gpu, max_num_seqs, max_num_batched_tokens)
    inp = np.asarray(input_tokens, dtype=float)
    out = np.maximum(np.asarray(output_tokens, dtype=float), 1.0)
    lam = np.asarray(mix_rps, dtype=float)
    total = float(lam.sum())
    if total <= 0:
        return [None] * len(percentiles)
    st = _mix_state(model, gpu, tp, inp, out, lam / total, p, seqs, budget, burst, chunked_prefill, prefill_share)
    batch, ctx, out_mean = st.batch, st.ctx, st.out_mean
    fits = (inp + out) <= model.max_context_tokens
    kv_tokens = kv_capacity_tokens(model, gpu, tp, gpu_memory_utilization)
    results = []
    for percentile in percentiles:
        k_q = np.minimum(np.maximum(batch_quantiles(percentile / 100.0, seqs, burst.arrival_scv)[:, 0], batch), seqs)
        ok = st.room_ok & (k_q * st.kv_per_request <= kv_tokens)
        reach = ok & (st.rate >= total)
        if reach.any():
            i, saturated = int(reach.argmax()), False
        elif held and ok.any():
            i, saturated = int(np.where(ok, st.rate, -1.0).argmax()), True
        else:
            results.append(None)
            continue
        k = float(k_q[i])
        backlog = (np.inf, 0.0, 0.0)
        # the batch's context at the percentile: K requests' contexts summed, each drawn from the
        # mix, so its spread adds to the count's (a compound sum: dispersion c_a² + the contexts'
        # SCV), as a multiple of the count's own quantile (so K's bounds hold for it too)
        count_q = float(batch_quantiles(percentile / 100.0, seqs, burst.arrival_scv)[i, 0])
        compound_q = float(_batch_quantile(percentile / 100.0, batch[i:i + 1], burst.arrival_scv + st.ctx_scv)[0])
        ctx_q = ctx * k * compound_q / max(count_q, 1.0)
        # bursty arrivals: the batch a request's life holds, sustained (``_sustained_batch``), at
        # least the instantaneous count's quantile; its context that many mean contexts
        k_life = _sustained_batch(model, gpu, tp, total, out_mean, ctx, percentile / 100.0, burst,
                                  min(float(seqs), kv_tokens / st.kv_per_request), float(batch[i]), p,
                                  prompt_load=float(total * st.mean_extra[i]) if st.chunked else 0.0)
        if k_life > k:
            k, ctx_q = k_life, max(ctx_q, ctx * k_life)
        ctx_b = np.maximum(ctx_q + (inp + out / 2.0 - ctx), inp + out / 2.0)  # a request of bucket b among them
        tpot = decode_time_s(model, gpu, tp, k, ctx_b, p)
        if st.chunked:
            # the prompts arriving during a request's O_b steps, about O_b B / Ō of them, each with
            # its chunks' extra time beside K decodes: their sum at the percentile, a compound sum
            # as the context's, over the request's steps
            t_dk = decode_time_s(model, gpu, tp, k, k * ctx, p)
            row = np.s_[i, :]
            extra_k = _shared_prompt_extra_s(model, gpu, tp, st.full[row], st.chunk[row], st.rest[row], inp,
                                             st.others[i, 0], st.others_len, max(budget - k, 0.0), k, k * ctx, t_dk, p)
            prompts_per_request = float(st.prompt_share.sum())
            extra_mean = float(extra_k @ st.prompt_share) / prompts_per_request  # per prompt
            if extra_mean > 0:
                extra_scv = max(float(st.prompt_share @ (extra_k ** 2 * (1.0 + st.length_scv))) / prompts_per_request
                                / extra_mean ** 2 - 1.0, 0.0)
                q = percentile / 100.0
                prompts = out * batch[i] * prompts_per_request / out_mean
                # (1) the load a request's life sees, sustained: arrivals run above their mean over
                # a life (by chance, and for seconds at a time when they come in bursts), and a
                # busier replica runs more of its iterations with prompt chunks, which lengthens the
                # life and lets still more prompts in (a busy period): at g x the mean load the
                # prompts take a share g s of the iterations and TPOT = t_d / (1 - g s) (g = 1: the
                # mean step), at most a full token budget of prompt in every iteration. In the
                # simulator's replay of the Azure trace the requests above the p99 TPOT spent 85%
                # of their life in prompt iterations against 40% for the median, and
                # t_d / (1 - share) gave both TPOTs within 3%. g: the q-quantile of the arrival rate
                # over the life that g itself lengthens (``_busy_load``)
                step_extra = prompts * extra_mean / out  # the prompts' mean time per output token
                arrivals = np.maximum(prompts / prompts_per_request, 1e-9)
                load = _busy_load(q, burst, tpot, step_extra, arrivals, out)
                share = load * step_extra / (tpot + step_extra)
                full_k = max(budget - k, 1.0)
                t_saturated = float(step_time_s(model, gpu, tp, full_k, full_k * float(st.prompt_share @ inp)
                                                / prompts_per_request / 2.0, k, k * ctx, p))
                backlog = (t_saturated, full_k, total * float(st.prompt_share @ inp))
                sustained = np.minimum(tpot / (1.0 - np.minimum(share, _PROMPT_SHARE_MAX)),
                                       np.maximum(t_saturated, tpot + step_extra))
                # (2) the sizes of the prompts a request meets: their number is in g, but one long
                # prompt among the few a short life meets makes its TPOT jump (a sum of that many
                # sizes at their spread, the count held)
                prompts_q = np.minimum(np.maximum(_sizes_quantile(q, prompts, extra_scv), prompts), seqs)
                tpot = sustained + (prompts_q - prompts) * extra_mean / out
        results.append(SharedBatch(np.where(fits, tpot, np.inf), np.where(fits, st.prefill[i], np.inf),
                                   float(st.t_d[i] + batch[i] * st.mean_extra[i] / out_mean), int(batch[i]),
                                   float(st.rate[i]), saturated, *backlog))
    return results


def _sustained_batch(model: ModelSpec, gpu: GPUType, tp: int, rate_rps: float, out_mean: float, ctx: float,
                     q: float, burst: Burstiness, most: float, mean_batch: float, p: PerfParams,
                     prompt_load: float = 0.0) -> float:
    """The batch a decode replica holds over a request's life while its arrivals run at their
    q-quantile over that life: a busy period of decodes. A larger batch makes each step slower
    (more KV to read), which lengthens every life, which holds still more requests: the batch is
    the fixed point K = g λ Ō t_d(K), with g the q-quantile of the arrival rate over the life
    L = Ō t_d(K) (``_rate_quantile``: mean 1, variance c² / (λ L), c² the dispersion over L,
    ``Burstiness.scv_over``, 1 for Poisson arrivals; as in ``shared_batch``'s prompt busy
    period). Found by iterating from the mean batch, which rises to the smallest fixed point; at
    most ``most`` (the scheduler's ``max_num_seqs`` or what the KV cache holds: past it the
    engine queues or preempts). A request's TPOT is the mean of its steps, so the batch that sets
    it is this life-long one, not the count at one instant; Poisson arrivals swing too, less
    over a longer life.

    Args: ``rate_rps`` the replica's arrivals, req/s; ``out_mean`` Ō, tokens; ``ctx`` the mean
    context per decoding request, tokens; ``mean_batch`` the steady state's batch;
    ``prompt_load`` the share of the replica's time its prompts' chunks take at the mean load (a
    colocated replica, or a decode replica that prefills short prompts; 0 for decode only): a
    token then takes t_d / (1 - g x that share), the prompts' busy period of ``shared_batch``.
    Returns the batch, requests (a float, >= ``mean_batch`` up to ``most``). Raises nothing."""
    k, g = mean_batch, 1.0
    for _ in range(_BUSY_PERIOD_STEPS):
        life_s = (out_mean * float(decode_time_s(model, gpu, tp, k, k * ctx, p))
                  / (1.0 - min(g * prompt_load, _LIFE_PROMPT_SHARE_MAX)))
        g = float(_rate_quantile(q, burst.scv_over(life_s), max(rate_rps * life_s, 1e-9)))
        nxt = min(max(g * rate_rps * life_s, mean_batch), most)
        if abs(nxt - k) <= 1e-3 * k:
            return nxt
        k = nxt
    return k


def _rate_quantile(q: float, scv, arrivals) -> np.ndarray:
    """g, the q-quantile of the arrival rate over a window relative to its mean (dimensionless,
    >= 1): a Gamma of mean 1 and variance c² / n, with c² the arrivals' index of dispersion over
    the window (``Burstiness.scv_over``; 1 for Poisson arrivals) and n > 0 the mean arrivals in
    it: the count over the window has variance c² n. Checked against the windowed counts of
    generated streams at 22 req/s, Poisson and Gamma gaps of CV² 4, over 0.5- to 5-s windows
    (11 to 110 arrivals; tests/test_perf.py): the p90 0.98-1.03x the empirical one, the p99
    1.00-1.11x (above it, the most where clumped arrivals are fewest). When written it was also
    checked on the Azure conversation trace at rateScale 4 and its Gamma CV² 3.7 and 7.3
    variants, whole and split at random in two, over 1-, 2- and 5-s windows: p90 within 3%, p99
    within 9%.
    ``scv`` and ``arrivals`` broadcast; the result has their shape. The busy periods of
    ``shared_batch`` (prompts, ``_busy_load``) and ``_sustained_batch`` (decodes) both read the
    load a request's life sees from it."""
    var = np.maximum(np.asarray(scv, dtype=float), 1.0) / arrivals
    return np.maximum(_gamma_ppf(q, 1.0 / var, var), 1.0)


def _busy_load(q: float, burst: Burstiness, tpot_s: np.ndarray, step_extra_s: np.ndarray,
               arrivals: np.ndarray, out: np.ndarray) -> np.ndarray:
    """g, the load a request's life sees at the q-quantile, relative to the mean (>= 1, shape of
    ``tpot_s``; all arguments of one shape), in ``shared_batch``'s prompt busy period: the life
    of O tokens (``out``) at the mean takes O (t + e) (``tpot_s`` t, ``step_extra_s`` e: the
    prompts' mean time per token) and meets ``arrivals`` n arrivals; at load g the prompts take a
    share g s (s = e / (t + e)) and a token takes t / (1 - g s). The rate over a longer window
    swings less, so g is read over the life that g itself lengthens: the root T of
    T = t / (1 - g(T) s), g(T) the rate's quantile (``_rate_quantile``) over O T with n T / (t + e)
    arrivals. The right side falls as T grows, so the root is one, between t + e (where g >= 1
    puts the right side above) and t / (1 - g(t + e) s). It is found on ``_BUSY_LOAD_GRID``
    points evenly spaced in log T between them (one vectorised quantile call rather than one per
    bisection step: this runs for every group, load level and percentile of a plan's read-out),
    interpolated linearly. Reading g over the life at the mean instead over-predicted the p99
    TPOT of replicas whose arrivals come in clumps (Gamma CV² 7.3 on ``bench/bursty_verify.py``:
    the replay 0.76-0.78x the prediction; 0.77-0.84x read over the lengthened life)."""
    base = tpot_s + step_extra_s
    s = step_extra_s / base

    def load_over(t, ax=()):
        """g over a life of ``t`` s per token; ``ax`` (None,): ``t`` has a grid axis more"""
        return _rate_quantile(q, burst.scv_over(out[(...,) + ax] * t), (arrivals / base)[(...,) + ax] * t)

    def token_s(g, ax=()):
        return tpot_s[(...,) + ax] / (1.0 - np.minimum(g * s[(...,) + ax], _PROMPT_SHARE_MAX))

    lo = np.log(base)
    hi = np.log(token_s(load_over(base)))
    x = lo[..., None] + (hi - lo)[..., None] * np.linspace(0.0, 1.0, _BUSY_LOAD_GRID)
    gap = np.log(token_s(load_over(np.exp(x), (None,)), (None,))) - x
    # the first grid point at or past the root (gap >= 0 below it), and the one before
    j = np.clip(np.argmax(gap <= 0.0, axis=-1), 1, _BUSY_LOAD_GRID - 1)[..., None]
    x0, x1 = np.take_along_axis(x, j - 1, -1)[..., 0], np.take_along_axis(x, j, -1)[..., 0]
    g0, g1 = np.take_along_axis(gap, j - 1, -1)[..., 0], np.take_along_axis(gap, j, -1)[..., 0]
    drop = g0 - g1
    root = x0 + (x1 - x0) * np.clip(g0 / np.where(drop > 0, drop, 1.0), 0.0, 1.0)
    return load_over(np.exp(root))


def _sizes_quantile(q: float, mean: np.ndarray, scv: float) -> np.ndarray:
    """Quantile q of a sum of ``mean`` terms (a count held at its mean, any shape) whose sizes have
    squared coefficient of variation ``scv``, in units of the mean term: a Gamma of that mean and
    variance mean x ``scv`` (the count's own swing is ``_busy_load``'s); ``mean`` itself where the
    sizes do not vary."""
    mean = np.asarray(mean, dtype=float)
    if scv <= 1e-9:
        return mean
    return _gamma_ppf(q, mean / scv, scv)


_PROMPT_SHARE_MAX = 0.999
"""the largest share of a life's iterations ``shared_batch``'s prompt busy period lets prompt
chunks take (TPOT = t_d / (1 - share)): a numerical guard, the TPOT being capped by the saturated
step there anyway"""

_BUSY_LOAD_GRID = 25
"""points of ``_busy_load``'s search for the life's length, evenly spaced in log T over an
interval at most ln(1 / (1 - _PROMPT_SHARE_MAX)) = 6.9 wide (0.29 apart at most; the root is
interpolated between two of them)"""


_LIFE_PROMPT_SHARE_MAX = 0.95
"""the largest share of a decode life's iterations ``_sustained_batch`` lets prompt chunks take
when it lengthens the life (t_d / (1 - share): at most 20 x t_d), so that the fixed point stays
finite at a saturated replica; a design bound (the TPOT itself is capped by the saturated step in
``shared_batch``), not a measured figure"""

_BUSY_PERIOD_STEPS = 60
"""most iterations of ``_sustained_batch``: each multiplies the distance to the fixed point by
the loop gain g λ Ō dt_d/dK (below 1 at a stable fixed point); 60 bound the slow case near 1,
which then ends near the fixed point or at ``most``"""


def _at_offered_rate(rate_curve: np.ndarray, value_curve: np.ndarray, offered_rps: np.ndarray,
                     saturate: bool = False) -> np.ndarray:
    """``value_curve`` (max_batch, S) at the smallest batch whose steady-state rate reaches the
    offered rate (S,) of each bucket; inf where no batch does, or with ``saturate`` the value at
    the batch of the highest reachable rate (the engine caps its batch there and the excess
    queues: for a load held a limited time)."""
    reach = rate_curve >= offered_rps[None, :]
    cols = np.arange(rate_curve.shape[1])
    b = np.where(reach.any(axis=0), reach.argmax(axis=0), -1)
    past = np.inf
    if saturate:
        past = np.where(rate_curve.max(axis=0) > 0, value_curve[rate_curve.argmax(axis=0), cols], np.inf)
    return np.where(b >= 0, value_curve[np.maximum(b, 0), cols], past)


def latency_at_rate(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, output_tokens: np.ndarray,
                    rate_rps: np.ndarray, percentile: float, p: PerfParams | None = None,
                    gpu_memory_utilization: float = 0.9, max_num_seqs: int | None = None,
                    max_num_batched_tokens: int | None = None, burst: Burstiness = POISSON) -> tuple[np.ndarray, np.ndarray]:
    """Predicted (TTFT, TPOT) at the percentile, s, for each bucket served at ``rate_rps``
    req/s by one colocated replica. Shapes (S,). inf where the rate exceeds what the replica can
    sustain."""
    return latencies_at_rate(model, gpu, tp, input_tokens, output_tokens, rate_rps, [percentile], p,
                             gpu_memory_utilization, max_num_seqs, max_num_batched_tokens, burst)[0]


def latencies_at_rate(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, output_tokens: np.ndarray,
                      rate_rps: np.ndarray, percentiles, p: PerfParams | None = None,
                      gpu_memory_utilization: float = 0.9, max_num_seqs: int | None = None,
                      max_num_batched_tokens: int | None = None,
                      burst: Burstiness = POISSON,
                      window_s: float | None = None,
                      mix_rps: np.ndarray | None = None,
                      min_tokens: np.ndarray | None = None,
                      lengths: np.ndarray | None = None,
                      prefill_share: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``latency_at_rate`` at each of ``percentiles`` (%), in order: one (TTFT, TPOT) pair per
    percentile, s, each of shape (S,), inf where ``rate_rps`` (req/s per bucket) exceeds what the
    replica sustains. The steady-state curves are computed once (``replica_curves_at``).

    ``window_s``: the rate lasts only that long (``mdl_wait_quantile_s``): past what the replica
    sustains, the batch stays at its largest (TPOT and the prompt's service there) and the excess
    waits, finite.

    ``mix_rps``: shape (S,), the replica's actual arrivals per bucket, req/s (``rate_rps`` is
    then not used). Every request shares one batch (``shared_batch``: its size, TPOT and each
    prompt's service come from the mix), and the prompts of every bucket wait in one queue, first
    come first served for the token budget: one wait for all, from the mix's prompt service times
    (mean, and c_s² with each bucket's length SCV) at the mix's rate (as
    ``prefill_ttft_quantiles_s``), and at least the rest of the prompt in service; a request's
    TTFT is that wait plus its own prompt's service at its own length (a bucket's lengths:
    ``lengths``, shape (S, len(INPUT_LENGTH_PROBS)), where the trace gave them, else from its
    mean, SCV and lower edge ``min_tokens``, as ``prefill_service_moments``). Past what the
    replica sustains (only with ``window_s``), the excess queues at the replica's largest rate.
    None: each bucket alone at its equivalent load ``rate_rps``, at its mean prompt.
    ``prefill_share`` (with ``mix_rps``): a decode replica's share of each bucket's prompts it
    prefills itself (``_latencies_in_mix``)."""
    held = window_s is not None
    if mix_rps is not None:
        return _latencies_in_mix(model, gpu, tp, input_tokens, output_tokens, np.asarray(mix_rps, dtype=float),
                                 percentiles, p, gpu_memory_utilization, max_num_seqs, max_num_batched_tokens,
                                 burst, window_s, min_tokens, lengths, prefill_share)
    rate = np.asarray(rate_rps, dtype=float)
    out = []
    for percentile, c in zip(percentiles, replica_curves_at(model, gpu, tp, input_tokens, output_tokens, percentiles,
                                                           p, gpu_memory_utilization, max_num_seqs,
                                                           max_num_batched_tokens, burst)):
        reachable = np.where(c.ok, c.rate, 0.0)
        tpot = _at_offered_rate(reachable, c.tpot_s, rate, held)
        step = _at_offered_rate(reachable, c.step_s, rate, held)
        service = _at_offered_rate(reachable, c.prefill_s, rate, held)
        with np.errstate(invalid="ignore"):
            wait = mdl_wait_quantile_s(rate, np.where(np.isfinite(service), service, 1.0), percentile / 100.0,
                                       burst.variability, window_s, arrival_scv=burst.queue_scv)
        out.append((np.where(np.isfinite(service), service + step + wait, np.inf), tpot))
    return out


def _latencies_in_mix(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, output_tokens: np.ndarray,
                      mix_rps: np.ndarray, percentiles, p: PerfParams | None, gpu_memory_utilization: float,
                      max_num_seqs: int | None, max_num_batched_tokens: int | None, burst: Burstiness,
                      window_s: float | None, min_tokens: np.ndarray | None = None,
                      lengths: np.ndarray | None = None,
                      prefill_share: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``latencies_at_rate`` with ``mix_rps``: (TTFT, TPOT) per percentile, s, shapes (S,).

    A prompt's service (its chunk iterations in the shared batch, ``SharedBatch.prefill_s`` at
    the bucket's mean prompt) is taken in proportion to its length, each bucket's lengths
    normalised to their mean (a prompt's chunks each take about one iteration). A prompt that
    arrives while a long one is being prefilled waits for the rest of it (vLLM's scheduler takes
    the waiting prompts first come first served into the token budget the running prompt's
    chunks leave), which Kingman's exponential tail does not carry: the wait is at least that
    rest (``PrefillQueue.residual_wait_quantiles``). Against a replay of one H100 TP-1 and one
    L40S TP-2 replica on Poisson arrivals of the Azure conversation sizes at 20-80% load
    (``bench/ttft_by_bucket.py``), the replay's TTFT p90 over all requests is 0.97-1.12x this
    (1.03-1.20x with each bucket at its mean prompt and the exponential tail alone), its p99
    1.01-1.17x (1.01-1.20x); ``tests/test_perf.py`` checks a bucket of spread-out prompts. Under
    clumped arrivals the prompts right behind one share its iteration (``with_followers``, at
    most what the token budget leaves beside the mean batch and a mean prompt): on Gamma-renewal
    arrivals of CV² 3.7 and 7.3 there, the p90 went from 1.01-1.40x to 0.92-1.24x.

    ``prefill_share`` (S,): a decode replica that prefills that share of each bucket's prompts
    itself (the prompts under the P/D threshold; None: all of them, a colocated replica). Its
    queue holds those prompts alone, their arrivals the stream thinned to their share
    (``Burstiness.thinned``); the TTFT is theirs (inf where a bucket's prompts are all prefilled
    elsewhere), and the TPOT of a bucket is its local requests' (behind the prompts that came
    while they waited, ``after_backlog_tpot_s``) and its remote ones' (joining the batch with the
    prompts queued at that moment ahead, ``ahead=True``), weighted by the shares."""
    size = len(mix_rps)
    local_share = np.ones(size) if prefill_share is None else np.clip(np.asarray(prefill_share, dtype=float), 0.0, 1.0)
    total_rps = float(mix_rps.sum())
    prompt_rps, queue_burst = _own_prompts(mix_rps, local_share, burst)
    local_rps = float(prompt_rps.sum())
    input_tokens = np.asarray(input_tokens, dtype=float)
    budget = scheduler_limits(gpu, max_num_seqs, max_num_batched_tokens)[1]
    relative = _relative_lengths(input_tokens, burst, min_tokens, lengths)
    scv_each = np.broadcast_to(np.asarray(burst.service_scv, dtype=float), input_tokens.shape)
    # the prompts' length SCV over the mix (every bucket's spread and the buckets' own spread)
    prompt_scv = (_over_arrivals(prompt_rps, input_tokens ** 2 * (1.0 + scv_each))
                  / _over_arrivals(prompt_rps, input_tokens) ** 2 - 1.0) if float(prompt_rps @ input_tokens) > 0 else 0.0
    out = []
    for percentile, sb in zip(percentiles, shared_batch(model, gpu, tp, input_tokens, output_tokens, mix_rps,
                                                        percentiles, p, gpu_memory_utilization, max_num_seqs,
                                                        max_num_batched_tokens, burst, held=window_s is not None,
                                                        prefill_share=prefill_share)):
        if sb is None:
            out.append((np.full(size, np.inf), np.full(size, np.inf)))
            continue
        service = sb.prefill_s
        q = percentile / 100.0
        queue = _prompt_queue(sb, prompt_rps, scv_each, relative)
        v = queue_burst.queue_scv + (queue.service_scv if queue is not None else 0.0)
        local = np.isfinite(service) & (local_share > 0)
        if sb.saturated:  # the batch is at its largest: the excess waits for the replica's completions
            with np.errstate(invalid="ignore", divide="ignore"):
                wait = mdl_wait_quantile_s(np.array(total_rps), 1.0 / sb.rate_max_rps, q, v, window_s,
                                           arrival_scv=queue_burst.queue_scv)
            out.append((np.where(local, service + sb.step_s + float(wait), np.inf), sb.tpot_s))
            continue
        wait = _prompt_wait(sb, queue, prompt_rps, input_tokens, queue_burst, window_s, budget)
        ttft, tpot = np.full(size, np.inf), sb.tpot_s.copy()
        output = np.asarray(output_tokens, dtype=float)
        if local.any():
            first = _OwnPlusWait(service[local][:, None] * relative[local] + sb.step_s, wait)
            ttft[local] = first.quantiles([q])[0]
            tpot[local] = after_backlog_tpot_s(tpot[local], output[local], input_tokens[local],
                                               first.own_slices @ first.slices, wait, sb, local_rps, queue_burst,
                                               q, prompt_scv)
        remote = local_share < 1.0
        if remote.any() and local_rps > 0 and queue is not None:
            # prefilled elsewhere: it joins the batch behind the prompts queued at that moment, the
            # queue's work at a random time rather than the wait an arriving prompt sees
            ahead = after_backlog_tpot_s(sb.tpot_s[remote], output[remote], input_tokens[remote],
                                         np.zeros(int(remote.sum())), time_average_work(wait, queue), sb, local_rps,
                                         queue_burst, q, prompt_scv, ahead=True)
            f = local_share[remote]
            tpot[remote] = np.where(local[remote], f * tpot[remote] + (1.0 - f) * ahead, ahead)
        out.append((ttft, tpot))
    return out


def _own_prompts(mix_rps: np.ndarray, share: np.ndarray, burst: Burstiness) -> tuple[np.ndarray, Burstiness]:
    """(req/s per bucket, shape (S,); their arrivals' burstiness) of the prompts a replica with
    arrivals ``mix_rps`` (S,) req/s prefills itself, ``share`` (S,) of each bucket's: the stream
    thinned to that share (``Burstiness.thinned``; the stream's own where nothing arrives)."""
    prompt_rps = mix_rps * share
    total = float(mix_rps.sum())
    return prompt_rps, (burst.thinned(float(prompt_rps.sum()) / total) if total > 0 else burst)


def _relative_lengths(input_tokens: np.ndarray, burst: Burstiness, min_tokens: np.ndarray | None,
                      lengths: np.ndarray | None) -> np.ndarray:
    """Each prompt's length over its bucket's mean, shape (S, len(INPUT_LENGTH_PROBS)), the
    bucket's lengths from ``bucket_prompt_lengths``, slice-weighted so that a bucket's mean
    service stays the shared batch's."""
    lengths = bucket_prompt_lengths(input_tokens, burst.service_scv, min_tokens, lengths)
    return lengths / (((lengths[:, 1:] + lengths[:, :-1]) / 2.0) @ INPUT_LENGTH_SLICES)[:, None]


def _prompt_queue(sb: SharedBatch, prompt_rps: np.ndarray, scv_each: np.ndarray,
                  relative: np.ndarray) -> "PrefillQueue | None":
    """The one queue of the prompts a replica prefills in its shared batch ``sb``: ``prompt_rps``
    (S,) req/s, each prompt's service its chunk iterations (``sb.prefill_s``) at its length
    (``relative``, ``_relative_lengths``; ``scv_each`` (S,) the buckets' length SCVs), one
    server. None when nothing arrives."""
    service = sb.prefill_s
    fin = np.isfinite(service) & (prompt_rps > 0)
    return prefill_queue([(1, prompt_rps[fin], service[fin], service[fin] ** 2 * (1.0 + scv_each[fin]),
                           service[fin][:, None] * relative[fin])])


def _prompt_wait(sb: SharedBatch, queue: "PrefillQueue | None", prompt_rps: np.ndarray, input_tokens: np.ndarray,
                 burst: Burstiness, window_s: float | None, budget: int) -> np.ndarray:
    """The wait of a prompt in ``queue`` (``_prompt_queue``), its quantiles at ``WAIT_PROBS``, s:
    Kingman's at the arrivals' (``burst``) and the services' variability, with the clump mates
    that join the prompt's iteration: those that arrive within about one iteration of it (before
    the next one starts), within the token budget the batch and the prompt leave, each a prompt
    of the mix's mean length (``with_followers``). Zeros without a queue."""
    if queue is None:
        return np.zeros_like(WAIT_PROBS)
    v = burst.queue_scv + queue.service_scv
    wait = queue.wait_quantiles(v, window_s, arrival_scv=burst.queue_scv)
    fin = np.isfinite(sb.prefill_s) & (prompt_rps > 0)
    mean_prompt = float(prompt_rps[fin] @ input_tokens[fin]) / float(prompt_rps[fin].sum())
    room = max(budget - sb.batch - mean_prompt, 0.0)
    return with_followers(wait, burst.followers_within(sb.step_s), queue.mean_service_s, room / max(mean_prompt, 1.0))


def decode_first_token_delay_s(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray,
                               output_tokens: np.ndarray, mix_rps: np.ndarray, p: PerfParams | None = None,
                               gpu_memory_utilization: float = 0.9, max_num_seqs: int | None = None,
                               max_num_batched_tokens: int | None = None, burst: Burstiness = POISSON,
                               prefill_share: np.ndarray | None = None, min_tokens: np.ndarray | None = None,
                               lengths: np.ndarray | None = None) -> np.ndarray | None:
    """The time from a request's KV cache reaching a decode replica to its first token, its
    quantiles at ``WAIT_PROBS``, s (``first_token_delay_s``), for a decode replica whose arrivals
    are ``mix_rps`` (S,) req/s and that prefills ``prefill_share`` (S,) of each bucket's prompts
    itself (None: none; arguments as ``latencies_at_rate``): its mean iteration at its mean batch
    (``shared_batch`` at p50), a full token budget of prompt chunks beside it, and the work its
    prompt queue holds at a random time (``time_average_work``). None where no batch carries the
    arrivals. Raises nothing.

    It stands in the TTFT of a request prefilled elsewhere where the TPOT target stood (which κ,
    ``prefill_capacity_rps``, still takes: a bound for a decode replica that prefills nothing, far
    short of one whose iterations carry its own prompts' chunks). Measured on
    ``tests/test_perf.py``'s decode replica: the replay's delay was 1.13-1.18x this at p90 and
    0.96-0.98x at p99. On ``bench/bursty_verify.py --code-like`` the code-g7.3 tight p99 plan's
    prefill groups (H100 TP-2 and TP-4, beside an H100 TP-2 decode group that prefills 82% of
    the prompts) replayed at 1.47x and 1.77x the model's p99 TTFT with the TPOT target, 1.05x and
    1.06x with this; TTFT within 25% in 8 of the 13 code-like groups (6 before), the other cases'
    prefill groups within 0.78-1.21x as before."""
    share = None if prefill_share is None else np.clip(np.asarray(prefill_share, dtype=float), 0.0, 1.0)
    chunked = share is not None and bool((share > 0).any())
    mix = np.asarray(mix_rps, dtype=float)
    sb = shared_batch(model, gpu, tp, input_tokens, output_tokens, mix, [50.0], p, gpu_memory_utilization,
                      max_num_seqs, max_num_batched_tokens, burst, chunked_prefill=chunked, held=True,
                      prefill_share=share if chunked else None)[0]
    if sb is None:
        return None
    if not chunked:
        return first_token_delay_s(sb.step_s, np.inf, np.zeros_like(WAIT_PROBS))
    inp = np.asarray(input_tokens, dtype=float)
    prompt_rps, queue_burst = _own_prompts(mix, share, burst)
    scv_each = np.broadcast_to(np.asarray(burst.service_scv, dtype=float), inp.shape)
    queue = _prompt_queue(sb, prompt_rps, scv_each, _relative_lengths(inp, burst, min_tokens, lengths))
    budget = scheduler_limits(gpu, max_num_seqs, max_num_batched_tokens)[1]
    wait = _prompt_wait(sb, queue, prompt_rps, inp, queue_burst, None, budget)
    work = time_average_work(wait, queue) if queue is not None else np.zeros_like(WAIT_PROBS)
    return first_token_delay_s(sb.step_s, sb.backlog_step_s, work)


def first_token_delay_s(step_s: float, full_step_s: float, work_s: np.ndarray) -> np.ndarray:
    """The time from a request's KV cache reaching a decode replica to its first token, its
    quantiles at ``WAIT_PROBS``, s: the rest of the iteration in progress and one more (vLLM takes
    the request into the batch at the next iteration, and its first token comes when that one
    ends; the simulator does the same, ``sim.engine``), each of length T = min(``step_s`` + V,
    ``full_step_s``): V the prompt work queued at that moment (``work_s``, its quantiles at
    ``WAIT_PROBS``, s, ``time_average_work``), so the mean iteration where nothing is queued and a
    full token budget of prompt chunks where an iteration's worth or more is. D = (1 + U) T with U
    uniform on [0, 1] (where in the iteration in progress the KV arrives). Raises nothing."""
    work = np.asarray(work_s, dtype=float)
    t = np.minimum(step_s + (work[1:] + work[:-1]) / 2.0, full_step_s)
    u = (np.arange(_RESIDUAL_POINTS) + 0.5) / _RESIDUAL_POINTS
    return _weighted_quantiles((t[:, None] * (1.0 + u[None, :])).ravel(),
                               np.repeat(WAIT_SLICES / _RESIDUAL_POINTS, _RESIDUAL_POINTS))


def sum_quantiles(a_s: np.ndarray, b_s: np.ndarray) -> np.ndarray:
    """The quantiles at ``WAIT_PROBS`` of X + Y, s, for X and Y independent with quantiles
    ``a_s`` and ``b_s`` at ``WAIT_PROBS`` (s; each taken as its slices' midpoints). Raises
    nothing."""
    a, b = np.asarray(a_s, dtype=float), np.asarray(b_s, dtype=float)
    mid_a, mid_b = (a[1:] + a[:-1]) / 2.0, (b[1:] + b[:-1]) / 2.0
    return _weighted_quantiles((mid_a[:, None] + mid_b[None, :]).ravel(), np.outer(WAIT_SLICES, WAIT_SLICES).ravel())


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The quantiles at ``WAIT_PROBS`` of the distribution that puts ``weights`` (summing to 1)
    on ``values`` (same shape), linear between them."""
    order = np.argsort(values, kind="stable")
    v = values[order]
    cum = np.cumsum(weights[order])
    return np.interp(WAIT_PROBS, np.concatenate([[0.0], cum]), np.concatenate([[v[0]], v]))


_RESIDUAL_POINTS = 16
"""points of the uniform residual of the iteration in progress in ``first_token_delay_s`` (a
numerical choice: 1/16 of an iteration, a few ms at most, against TTFT targets of 100s of ms)"""


def after_backlog_tpot_s(tpot_s: np.ndarray, output_tokens: np.ndarray, input_tokens: np.ndarray,
                         own_s: np.ndarray, wait_s: np.ndarray, sb: SharedBatch, arrivals_rps: float,
                         burst: Burstiness, q: float, prompt_scv: float = 0.0, ahead: bool = False) -> np.ndarray:
    """TPOT at quantile ``q`` of requests that start decoding behind a backlog of prompts, s,
    shape (S,): at least ``tpot_s`` (``shared_batch``'s, which reads the load over the decoding
    life alone).

    vLLM's scheduler takes the waiting prompts first come first served into the token budget the
    running decodes leave. A request that waited for its prefill (``wait_s``, its quantiles at
    ``WAIT_PROBS``, s) and was prefilled (``own_s``, shape (S,), s) finds, when its prompt
    completes, the prompts that arrived meanwhile still queued behind it, and its first decode
    iterations carry a full budget of their chunks: ``sb.backlog_step_s`` each instead of its
    TPOT. Behind it are:

    - the prompts that arrived while it waited, less those that fit beside its last chunk
      (``input_tokens`` I modulo the room R, ``sb.backlog_room_tokens``) in its final prefill
      iteration: half of the R - (I mod R) tokens left there, its place among the iteration's
      prompts being anywhere in a backlog (all of them where nothing is queued ahead, none where
      its own chunk ends the iteration);
    - every prompt that arrived during its own prefill.

    A count over a window W has mean λW + F(W) (F: the excess followers of a request, the Palm
    expectation, ``Burstiness.followers_within``) and variance λW I(W) (I: the index of
    dispersion over W, ``Burstiness.scv_over``); over the wait's distribution (total variance)
    the count is taken as a Gamma read at ``q``, a compound sum of prompts of the replica's mean
    prefilled length and length SCV ``prompt_scv``: B tokens. A full iteration takes R of them
    while g P t_full more arrive (P: ``sb.prompt_tokens_rps``), so the backlog lasts
    n = B / (R - g P t_full) iterations (for ever where the arrivals outrun the budget). g, the
    arrivals' rate over the drain, is the mean plus what the wait's burst carries into it: the
    excess of the rate over the wait at ``q`` (``_rate_quantile``) times the regression of the
    drain's count on the wait's, from the counts' variances over W, D = n t_full and W + D (0 for
    Poisson arrivals; near 1 when bursts outlast both). The O - 1 decode intervals
    (``output_tokens`` O) take min(n, O - 1) full iterations and the rest at the mean iteration
    (``sb.step_s``, whose prompt share stands for those that arrive during the life): a long
    answer spreads a few full iterations over many tokens, a code completion of a dozen tokens
    can spend its whole life in them.

    Measured against the simulator: in the replays of ``bench/bursty_verify.py --code-like``
    (Azure arrivals, prompts x 1.5, answers / 10) the requests of the top TTFT decile had a median
    TPOT 9-37x that of the bottom decile, and the p90 TPOT of the colocated groups went from
    0.74-3.32x the model's to 0.71-1.73x (``tests/test_perf.py`` checks one replica on Gamma
    arrivals). Alternatives measured there: the rest of the life at ``tpot_s`` instead of the
    mean iteration (its own busy period at ``q`` on top of the backlog at ``q``) took
    ``bench/colocated_sweep.py``'s TPOT from 18 to 14 of 18 within 25% of the replay; every
    prompt that came during the wait behind the request (none absorbed) over-predicted the median
    TPOT of bursty arrivals (0.59-0.63x on that test's replays, 0.68-0.95x with half the room
    absorbed), and all of the room absorbed under-predicted the p90 (up to 1.38x). Its error
    left is mostly the wait itself, which Kingman's queue under-predicts in bursts (the code-like
    H100 TP-4 replica's p90 TTFT 1.21-1.27x the model's, and its p90 TPOT 1.73x with it).
    ``arrivals_rps``: the replica's prompts per second (``burst`` their arrivals).

    ``ahead``: the request was prefilled elsewhere (a decode replica's request over the P/D
    threshold, ``own_s`` unused): it joins the batch with the prompts then queued ahead of it, a
    wait of ``wait_s`` at ``q`` of full iterations, R tokens each (the caller passes the queue's
    work at a random time, ``time_average_work``), and the drain as above, the wait's burst
    carried on from that wait. On the decode replica of
    ``bench/bursty_verify.py --code-like``'s code-g7.3 tight p99 plan (H100 TP-2, 82% of the
    prompts prefilled locally) the replayed p99 TPOT of these requests was 168.7 ms and that of the
    local ones 135.6 ms, against 54.7 ms for the model without the backlog. On
    ``tests/test_perf.py``'s decode replica (Gamma arrivals, CV² 3.7 and 7.3) the remote requests'
    replayed TPOT was 0.86-1.15x this at p90 and 1.23-1.43x at p99 (1.25-1.81x without the
    backlog): a remote request comes in a burst, so it sees more than the time average at the
    tail. The wait an arriving prompt sees instead gave 1.00-1.14x at p99 but 0.58-0.72x at p90,
    and on ``bench/bursty_verify.py --code-like`` it over-predicted the decode groups of Mooncake
    (0.67-0.75x at low load) and of on/off arrivals (0.13x, where it re-planned one case at 9%
    more cost for nothing): not used.

    Raises nothing; ``tpot_s`` itself where the replica prefills nothing, nothing waits or the
    wait is unbounded (saturated)."""
    tpot_s = np.asarray(tpot_s, dtype=float)
    wait_s = np.asarray(wait_s, dtype=float)
    if (not np.isfinite(sb.backlog_step_s) or sb.prompt_tokens_rps <= 0 or arrivals_rps <= 0
            or not np.all(np.isfinite(wait_s))):
        return tpot_s
    lam = float(arrivals_rps)
    prompt_tokens = sb.prompt_tokens_rps / lam  # the mean prefilled prompt, tokens
    t_full, room = sb.backlog_step_s, sb.backlog_room_tokens
    own = np.asarray(own_s, dtype=float)
    if ahead:  # the prompts queued when it joins: its wait's worth of full iterations
        w_q = np.full(len(own), float(np.interp(q, WAIT_PROBS, wait_s)))
        behind = w_q * room / t_full
    else:
        # arrivals during the wait, the half of the final iteration's room left beside the last
        # chunk taken out, and during the prefill itself
        weight = WAIT_SLICES
        waits = np.broadcast_to((wait_s[1:] + wait_s[:-1])[None, :] / 2.0, (len(own), len(weight)))
        inp = np.asarray(input_tokens, dtype=float)
        last_chunk = inp - room * np.floor(np.maximum(inp - 1.0, 0.0) / max(room, 1.0))  # in (0, R]
        beside = np.maximum(room - last_chunk, 0.0) / 2.0
        behind = (np.maximum(_arrivals_quantile(q, lam, waits, weight, burst, prompt_scv) * prompt_tokens - beside,
                             0.0)
                  + _arrivals_quantile(q, lam, own[:, None], np.ones(1), burst, prompt_scv) * prompt_tokens)
        w_q = own + float(np.interp(q, WAIT_PROBS, wait_s))
    # the drain: the rate over it, the wait's burst carried on by the counts' correlation
    d_w = burst.scv_over(np.maximum(w_q, 1e-6))
    g_wait = _rate_quantile(q, d_w, np.maximum(lam * w_q, 1e-9))
    g = np.ones_like(w_q)
    for _ in range(_BACKLOG_STEPS):
        drain = room - g * sb.prompt_tokens_rps * t_full
        with np.errstate(divide="ignore", invalid="ignore"):
            full = np.where(drain > 0, behind / np.where(drain > 0, drain, 1.0), np.inf)
        d = np.where(np.isfinite(full), np.maximum(full * t_full, 1e-6), 1e6)
        both = (w_q + d) * burst.scv_over(w_q + d) - w_q * d_w - d * burst.scv_over(d)
        g = 1.0 + (g_wait - 1.0) * np.clip(both / (2.0 * d * d_w), 0.0, 1.0)
    steps = np.maximum(np.asarray(output_tokens, dtype=float) - 1.0, 0.0)
    full = np.minimum(full, steps)
    with np.errstate(divide="ignore", invalid="ignore"):
        backlogged = (full * t_full + (steps - full) * sb.step_s) / steps
    return np.where((steps > 0) & np.isfinite(backlogged), np.maximum(tpot_s, backlogged), tpot_s)


def time_average_work(wait_s: np.ndarray, queue: "PrefillQueue") -> np.ndarray:
    """The quantiles at ``WAIT_PROBS`` of the work a prompt queue holds at a random time, s,
    shape of ``wait_s`` (the wait an arriving prompt sees, its quantiles at ``WAIT_PROBS``, s;
    ``queue``: its arrivals and service moments).

    Brumelle's formula (a rate-conservation identity that holds for any arrival process) gives
    the mean work E[V] = λ E[S] E[W] + λ E[S²] / 2 (S the service, independent of the wait W). For
    Poisson arrivals that is E[W] (arrivals see time averages); for bursty ones it is less, since
    a burst's prompts see the queue their own burst built. V is taken as W's tail thinned to that
    mean: P(V > x) = c P(W > x), c = E[V] / E[W] (at most 1), so V's quantile at p is W's at
    1 - (1 - p) / c, and 0 below 1 - c. Raises nothing; ``wait_s`` itself where nothing waits."""
    wait_s = np.asarray(wait_s, dtype=float)
    mean_w = float(((wait_s[1:] + wait_s[:-1]) / 2.0) @ WAIT_SLICES)
    if mean_w <= 0 or not np.isfinite(mean_w):
        return wait_s
    lam, s_mean = queue.rate_rps, queue.mean_service_s
    c = min(lam * s_mean + lam * s_mean ** 2 * (1.0 + queue.service_scv) / (2.0 * mean_w), 1.0)
    probs = 1.0 - (1.0 - WAIT_PROBS) / max(c, 1e-12)
    return np.where(probs > 0, np.interp(np.maximum(probs, 0.0), WAIT_PROBS, wait_s), 0.0)


def _arrivals_quantile(q: float, rate_rps: float, windows_s: np.ndarray, weight: np.ndarray, burst: Burstiness,
                       size_scv: float) -> np.ndarray:
    """The q-quantile of the arrivals after a request within a window of random length, in mean
    arrivals, shape (S,): ``windows_s`` (S, J) the window's lengths (s) with probabilities
    ``weight`` (J,) each (summing to 1). Given the window W the count has mean λW + F(W) (the
    excess followers, ``Burstiness.followers``) and variance λW I(W) (``Burstiness.scv_over``);
    its mean and variance over W by total expectation and variance, plus the mean times
    ``size_scv`` (a compound sum of sizes of that SCV, counted in mean sizes), fitted by a Gamma
    (``_gamma_ppf``). 0 where nothing arrives. Raises nothing."""
    mean_j = rate_rps * windows_s + curve_at(burst.followers, windows_s, 0.0, 0.0)
    var_j = rate_rps * windows_s * burst.scv_over(windows_s)
    mean = mean_j @ weight
    var = np.maximum((var_j + mean_j ** 2) @ weight - mean ** 2 + mean * size_scv, 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        count = np.where(mean > 0, _gamma_ppf(q, mean * mean / var, var / np.maximum(mean, 1e-12)), 0.0)
    return np.nan_to_num(count)


_BACKLOG_STEPS = 12
"""iterations of ``after_backlog_tpot_s``'s fixed point between the drain's length and the rate
over it (a contraction: the rate over a longer drain is carried less of the wait's burst)"""


WAIT_PROBS = np.concatenate([[0.0], 1.0 - np.logspace(0.0, -6.0, 97)[1:]])
"""cumulative probabilities at which the wait's quantile function is evaluated (its CDF is linear
in between): 16 a decade of its tail, down to one in a million"""

WAIT_SLICES = np.diff(WAIT_PROBS) / (WAIT_PROBS[-1] - WAIT_PROBS[0])
"""the probability of each slice between two of ``WAIT_PROBS`` (summing to 1): a quantile
function at ``WAIT_PROBS`` read as its slices' midpoints, each of this weight"""

INPUT_LENGTH_SLICES = np.diff(INPUT_LENGTH_PROBS) / (INPUT_LENGTH_PROBS[-1] - INPUT_LENGTH_PROBS[0])
"""the probability of each slice between two of ``INPUT_LENGTH_PROBS`` (summing to 1)"""


def with_followers(wait: np.ndarray, mean_followers: float, follower_s: float, most: float) -> np.ndarray:
    """The wait's quantiles at ``WAIT_PROBS`` (shape of ``wait``, s) with the prefill of the
    requests that arrive right after a prompt and share its iteration added: F followers of
    ``follower_s`` seconds each, F geometric with mean ``mean_followers``, independent of the
    wait; at most ``most`` followers' worth (the token budget's room over a follower's tokens: a
    follower's chunk fills what is left of it, the rest of its prompt goes to the next iteration).

    vLLM's scheduler takes every waiting prompt into the token budget of the next iteration, and a
    prompt's first token comes when that whole iteration ends, so a prompt that arrives first in a
    clump is served with the clump, not before it as a first-come-first-served queue has it (the
    queue's wait counts the prompts ahead, these are the ones behind). Poisson arrivals have no
    excess followers (``Demand.arrival_followers``): this returns ``wait`` unchanged. Geometric,
    because in a clump of renewal gaps each next gap is short with the same probability. On Gamma
    renewal arrivals of c² 3.7 and 7.3 at 20-80% load of one H100 TP-1 or L40S TP-2 replica of
    Llama-3.1-8B (Azure conversation sizes), the replay's TTFT p90 was 1.01-1.40x the read-out
    without them and is 0.92-1.24x with them, p50 1.01-1.53x and 0.86-1.04x
    (``bench/ttft_by_bucket.py``'s bursty table)."""
    wait = np.asarray(wait, dtype=float)
    if mean_followers <= 1e-9 or most <= 1e-9 or follower_s <= 0 or not np.all(np.isfinite(wait)):
        return wait
    r = mean_followers / (1.0 + mean_followers)
    top = int(np.ceil(most))
    k = np.arange(top + 1)
    prob = (1.0 - r) * r ** k
    prob[-1] = r ** top  # F >= top: the room is full
    shift = np.minimum(k, most) * follower_s
    # the wait's CDF, right-continuous where several quantiles share a value (the zeros of the
    # arrivals that do not wait): each value at the last probability that has it
    values, last = np.unique(wait[::-1], return_index=True)
    at = WAIT_PROBS[len(wait) - 1 - last]
    grid = np.unique((wait[:, None] + shift[None, :]).ravel())
    cdf = np.interp(grid[:, None] - shift[None, :], values, at, left=0.0, right=1.0) @ prob
    return np.interp(WAIT_PROBS, np.maximum.accumulate(cdf), grid)


def prompt_length_quantiles(mean_tokens: np.ndarray, scv: np.ndarray, min_tokens: np.ndarray,
                            probs: np.ndarray) -> np.ndarray:
    """Prompt lengths at cumulative probabilities ``probs`` (shape (J,)) in each bucket, tokens,
    shape (S, J): the bucket's lower edge ``min_tokens`` plus a gamma distribution with the rest of
    its mean and its variance (``mean_tokens``, ``scv`` = variance / mean², shape (S,)). Lengths
    above a bucket's edge fall off like a gamma's tail, as a trace's do (Mooncake's 32k+ bucket:
    median 40k, p90 59k, mean 47k, SCV 0.2; this gives 38k and 71k: where the trace is at
    hand its own lengths are used, ``Demand.input_quantiles``). A bucket of one length (SCV 0)
    is that length."""
    mean = np.asarray(mean_tokens, dtype=float)
    lo = np.minimum(np.asarray(min_tokens, dtype=float), mean)
    var = np.asarray(scv, dtype=float) * mean ** 2
    excess = mean - lo
    spread = (var > 1e-9) & (excess > 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        shape = np.where(spread, excess ** 2 / np.where(spread, var, 1.0), 1.0)
        scale = np.where(spread, var / np.where(spread, excess, 1.0), 1.0)  # 1: unused, keeps gamma defined
    tail = _gamma_ppf(np.asarray(probs, dtype=float)[None, :], shape[:, None], scale[:, None])
    return np.where(spread[:, None], lo[:, None] + np.nan_to_num(tail, posinf=0.0), mean[:, None])


@dataclass(frozen=True)
class PrefillQueue:
    """The queue prompts wait in before their prefill: ``servers`` replicas behind the
    least-loaded router, ``rate_rps`` arrivals per replica, req/s, whose prefill times have mean
    ``mean_service_s`` (s) and squared coefficient of variation ``service_scv``
    (``prefill_queue`` builds it). Prefill groups of one workload share it: the router's prefill
    profile picks among all their pods. ``service_s``, ``service_weight``: shape (K,) each, the
    prefill times of the pooled arrivals (s) and their probabilities (summing to 1), where known
    (``residual_wait_quantiles``); None otherwise."""

    rate_rps: float
    mean_service_s: float
    service_scv: float
    servers: int = 1
    service_s: np.ndarray | None = None
    service_weight: np.ndarray | None = None

    def scaled(self, factor: float) -> "PrefillQueue":
        """The same queue with ``factor`` times the arrivals (a load level)."""
        return dataclasses.replace(self, rate_rps=self.rate_rps * factor)

    def wait_quantiles(self, variability, window_s: float | None = None, arrival_scv=1.0) -> np.ndarray:
        """The wait's quantiles at ``WAIT_PROBS``, s, shape (len(WAIT_PROBS),): Kingman's tail
        (``mdl_wait_quantile_s`` over ``servers``, with the queue's c_a² + c_s² ``variability``, the
        load held ``window_s``, clumped arrivals' ``arrival_scv`` for one server), and at least the
        wait for the prompt in service (``residual_wait_quantiles``: heavy-tailed prompts), made
        non-decreasing. inf past saturation without ``window_s``."""
        with np.errstate(invalid="ignore", divide="ignore"):
            tail = mdl_wait_quantile_s(np.array(self.rate_rps), self.mean_service_s, WAIT_PROBS, variability,
                                       window_s, self.servers, arrival_scv=arrival_scv)
        return np.maximum.accumulate(np.maximum(tail, self.residual_wait_quantiles(WAIT_PROBS)))

    def residual_wait_quantiles(self, probs: np.ndarray) -> np.ndarray:
        """A lower bound on the wait's quantile at each of ``probs`` (shape (P,)), s, from the
        prompt in service alone: an arrival that finds every server busy waits at least until one
        frees, and by PASTA the remaining prefill time of a busy server has the equilibrium
        distribution of the prefill times, P(S_e > t) = E[(S - t)⁺] / E[S]. So
        P(W > t) >= C P(S_e > t)^c, with C the probability that every one of the c servers is
        busy (ρ for one, Erlang's C for more, servers taken as independent). Exact for one server
        in the tail of heavy-tailed prompts, where Kingman's exponential tail (which sees only
        the prefill times' mean and SCV) is too light: on Mooncake, prompts of 191k tokens (0.4%
        of requests) hold a TP-4 H100 for 7.5 s and the prompts behind them set the p99 TTFT.
        Zeros without ``service_s``; past saturation the bound with every server busy."""
        probs = np.asarray(probs, dtype=float)
        if self.service_s is None or self.service_weight is None or self.mean_service_s <= 0:
            return np.zeros(probs.shape)
        rho = min(self.rate_rps * self.mean_service_s, 1.0)
        busy = rho if self.servers == 1 else float(erlang_c(self.servers, np.array(rho)))
        # P(S_e > t) at each distinct prefill time t: piecewise linear in between, 1 at t = 0
        order = np.argsort(self.service_s)
        s, w = self.service_s[order], self.service_weight[order]
        tail_work = np.cumsum((w * s)[::-1])[::-1]  # Σ_{k >= i} w_k s_k
        tail_mass = np.cumsum(w[::-1])[::-1]  # Σ_{k >= i} w_k
        mean = float(w @ s)
        exceed = np.concatenate([[1.0], (tail_work - s * tail_mass) / mean])
        t = np.concatenate([[0.0], s])
        with np.errstate(divide="ignore", invalid="ignore"):
            need = np.where(busy > 0, ((1.0 - probs) / busy) ** (1.0 / self.servers), np.inf)
        # the t where P(S_e > t) falls to ``need`` (decreasing: interpolate on the reversed arrays)
        found = np.interp(need, exceed[::-1], t[::-1])
        return np.where(need >= 1.0, 0.0, found)


def bucket_prompt_lengths(input_tokens: np.ndarray, input_scv, min_tokens: np.ndarray | None = None,
                          lengths: np.ndarray | None = None) -> np.ndarray:
    """Each bucket's prompt lengths at ``INPUT_LENGTH_PROBS``, tokens (at least 1), shape (S, J):
    ``lengths`` where given (a trace's, ``Demand.input_quantiles``, shape (S, J)), else
    ``prompt_length_quantiles`` of the bucket's mean ``input_tokens`` (S,), SCV ``input_scv``
    ((S,) or scalar) and lower edge ``min_tokens`` ((S,); None: 0)."""
    inp = np.asarray(input_tokens, dtype=float)
    if lengths is None:
        scv = np.broadcast_to(np.asarray(input_scv, dtype=float), inp.shape)
        lo = np.zeros_like(inp) if min_tokens is None else np.asarray(min_tokens, dtype=float)
        lengths = prompt_length_quantiles(inp, scv, lo, INPUT_LENGTH_PROBS)
    return np.maximum(np.asarray(lengths, dtype=float), 1.0)


def prefill_service_moments(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray,
                            input_scv: np.ndarray, min_tokens: np.ndarray | None = None,
                            p: PerfParams | None = None,
                            lengths: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(prompt lengths (S, J) at ``INPUT_LENGTH_PROBS``, their prefill times (S, J) s, mean
    prefill time (S,) s, mean squared prefill time (S,) s²) of each bucket on one replica. The
    lengths are ``lengths`` where given (a trace's, ``Demand.input_quantiles``), else
    ``prompt_length_quantiles`` of the bucket's mean ``input_tokens``, SCV ``input_scv`` and lower
    edge ``min_tokens`` (None: 0). Moments by trapezoids over the prefill time's quantile function."""
    lengths = bucket_prompt_lengths(input_tokens, input_scv, min_tokens, lengths)
    service = prefill_time_s(model, gpu, tp, lengths, p=p or default_params())
    dp = np.diff(INPUT_LENGTH_PROBS)
    mean_b = ((service[:, 1:] + service[:, :-1]) / 2.0 * dp).sum(axis=1) / dp.sum()
    square_b = ((service[:, 1:] ** 2 + service[:, :-1] ** 2) / 2.0 * dp).sum(axis=1) / dp.sum()
    return lengths, service, mean_b, square_b


def _over_arrivals(rate_rps, per_bucket) -> float:
    """The mean of ``per_bucket`` (shape (S,)) over the arrivals ``rate_rps`` (shape (S,), req/s,
    not all 0): a replica's mean prefill time (s) or mean squared one (s²) from its buckets'."""
    rate = np.asarray(rate_rps, dtype=float)
    return float(rate @ np.asarray(per_bucket, dtype=float)) / float(rate.sum())


def prefill_queue(parts) -> PrefillQueue | None:
    """The queue (``PrefillQueue``) of prefill replicas pooled by the router. ``parts``: one
    (replicas, per-replica rate per bucket (S,) req/s, mean prefill time (S,) s, mean squared
    prefill time (S,) s², prefill times (S, J) s at ``INPUT_LENGTH_PROBS``) per group
    (``prefill_service_moments`` on its hardware). Each replica serves at its own speed; the
    pooled queue has their total arrivals and work over all their replicas, the prefill times of
    all their arrivals (``residual_wait_quantiles``), and as its c_s² the groups' own SCVs
    weighted by their arrivals: a replica works through the prompts ahead of it at its own
    speed, so the groups' different speeds are not variability of one queue (they scale each
    group's wait, ``prefill_ttft_quantiles_s``). None when nothing arrives."""
    servers = sum(int(n) for n, _, _, _, _ in parts)
    rate = sum(n * float(np.sum(r)) for n, r, _, _, _ in parts)
    if servers <= 0 or rate <= 0:
        return None
    work = sum(n * float(np.asarray(r) @ m) for n, r, m, _, _ in parts)
    mean_s = work / rate
    # each replica works through its own queue (the router balances counts, ``_PrefillTTFT``), so
    # the variability that makes prompts wait is each group's own prefill times', not the spread
    # between groups' speeds: their SCVs, weighted by arrivals
    scv = 0.0
    for n, r, m, m2, _ in parts:
        if float(np.sum(r)) > 0:
            own = _over_arrivals(r, m)
            scv += n * float(np.sum(r)) * max(_over_arrivals(r, m2) / own ** 2 - 1.0, 0.0)
    times = [((t[:, 1:] + t[:, :-1]) / 2.0).ravel() for _, _, _, _, t in parts]
    weights = [(n * np.asarray(r, dtype=float)[:, None] * INPUT_LENGTH_SLICES[None, :]).ravel() / rate
               for n, r, _, _, _ in parts]
    return PrefillQueue(rate / servers, mean_s, scv / rate, servers,
                        np.concatenate(times), np.concatenate(weights))


def prefill_ttft_quantiles_s(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray,
                             rate_rps: np.ndarray, percentiles, transfer_s: np.ndarray, first_token_s: float,
                             p: PerfParams | None = None, burst: Burstiness = POISSON,
                             window_s: float | None = None, servers: int = 1,
                             min_tokens: np.ndarray | None = None, queue: PrefillQueue | None = None,
                             lengths: np.ndarray | None = None) -> list[np.ndarray]:
    """Predicted TTFT at each of ``percentiles`` (%), s, of the requests of each bucket served by
    ``servers`` prefill-only replicas, each loaded with ``rate_rps`` (shape (S,), req/s per
    replica) of every bucket together. Returns one (S,) array per percentile; inf past saturation
    unless the load lasts only ``window_s``.

    A request waits behind the prompts of every bucket, so the wait is the same for all: one
    queue (``mdl_wait_quantile_s``, pooled over ``servers`` by the least-loaded router) whose
    service is the mixture of the buckets' prefill times, with its own c_s² (the long prompts'
    weight in it is what makes short ones wait), and at least the wait for the prompt in service
    (``PrefillQueue.residual_wait_quantiles``: heavy-tailed prompt lengths); ``queue``, where
    given, is that queue instead (several groups pooled, ``prefill_queue``). Pooled replicas of
    different speeds do not wait alike: the router picks the pod with the fewest outstanding
    requests, so each pod has about as many prompts ahead of an arrival, and a pod works through
    them at its own speed; a group's wait is the pooled queue's times its mean prefill time (over
    its arrivals ``rate_rps``) over the pool's (``PrefillQueue.mean_service_s``): a TP-1 replica
    pooled with a TP-4 one waits longer than the pool's mean, the TP-4 one shorter (against a
    replay of that router, ``tests/test_perf.py``). A request's TTFT is that wait plus, independent
    of it, its own prefill and KV transfer (both grow with its prompt: ``transfer_s`` is at the
    bucket's mean length and scales with the length) and the first decode step. Prompt lengths
    within a bucket: ``lengths`` (S, len(INPUT_LENGTH_PROBS)) where the trace gave them, else
    ``prompt_length_quantiles`` with the bucket's mean (``input_tokens``), SCV
    (``burst.service_scv``) and lower edge (``min_tokens``, shape (S,); None: 0), so a bucket's
    long prompts, which set its high percentiles, take their own, super-linear, prefill time.

    Args:
        transfer_s: shape (S,), KV transfer time per bucket at its mean length, s (``kv_transfer_s``).
        first_token_s: the decode replica's first step, s (as ``prefill_capacity_rps``), or its
            quantiles at ``WAIT_PROBS`` (``decode_first_token_delay_s``), independent of the wait.
    """
    ttft = _PrefillTTFT(model, gpu, tp, input_tokens, rate_rps, transfer_s, first_token_s, p, burst, window_s,
                        servers, min_tokens, queue, lengths)
    return ttft.quantiles([float(q) / 100.0 for q in percentiles])


def prefill_ttft_share_within(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray,
                              rate_rps: np.ndarray, ttft_s: float, transfer_s: np.ndarray, first_token_s: float,
                              p: PerfParams | None = None, burst: Burstiness = POISSON,
                              window_s: float | None = None, servers: int = 1,
                              min_tokens: np.ndarray | None = None, queue: PrefillQueue | None = None,
                              lengths: np.ndarray | None = None) -> np.ndarray:
    """Share of each bucket's requests whose TTFT is within ``ttft_s``, 0..1, shape (S,): the
    distribution of ``prefill_ttft_quantiles_s`` (same arguments) read at the target itself
    rather than on a grid of percentiles (a bucket whose longest prompts alone miss the target
    meets it for a share no grid point needs to fall on)."""
    ttft = _PrefillTTFT(model, gpu, tp, input_tokens, rate_rps, transfer_s, first_token_s, p, burst, window_s,
                        servers, min_tokens, queue, lengths)
    return np.minimum(ttft.cdf(np.full((len(ttft.own), 1), float(ttft_s)))[:, 0], 1.0)


class _OwnPlusWait:
    """The TTFT distribution of each bucket as a wait plus the request's own time: the wait's CDF
    linear between its quantiles ``wait`` (shape (len(WAIT_PROBS),), s) at ``WAIT_PROBS``, and
    each bucket's own time ``own`` (shape (S, J), s) at ``INPUT_LENGTH_PROBS``, taken as slices of
    their probability: P(TTFT <= t) = Σ_j slice_j P(wait <= t - own_j). The wait is independent of
    the request's own length."""

    def __init__(self, own: np.ndarray, wait: np.ndarray):
        self.own = own
        self.own_slices = (own[:, 1:] + own[:, :-1]) / 2.0  # (S, J-1), each of probability ``slices``
        self.slices = INPUT_LENGTH_SLICES
        self.wait = wait
        self.saturated = not np.all(np.isfinite(self.wait))

    def cdf(self, t: np.ndarray) -> np.ndarray:
        """P(TTFT <= t) per bucket, ``t`` shape (S, P); 0 when saturated."""
        if self.saturated:
            return np.zeros_like(t)
        x = t[:, :, None] - self.own_slices[:, None, :]
        return np.interp(x, self.wait, WAIT_PROBS, left=0.0, right=1.0) @ self.slices

    def quantiles(self, qs: list[float]) -> list[np.ndarray]:
        """The TTFT at each probability of ``qs``, one (S,) array each, s; inf when saturated."""
        n = len(self.own)
        if self.saturated:
            return [np.full(n, np.inf) for _ in qs]
        target = np.asarray(qs, dtype=float)[None, :]
        lo_t = np.broadcast_to(self.own[:, :1], (n, target.shape[1])).copy()
        hi_t = np.broadcast_to(self.own[:, -1:] + self.wait[-1], (n, target.shape[1])).copy()
        for _ in range(_BISECTION_STEPS):
            mid = (lo_t + hi_t) / 2.0
            below = self.cdf(mid) < target
            lo_t, hi_t = np.where(below, mid, lo_t), np.where(below, hi_t, mid)
        return list(hi_t.T)


class _PrefillTTFT(_OwnPlusWait):
    """The TTFT distribution of each bucket on prefill replicas (``prefill_ttft_quantiles_s``):
    the queue's wait plus the bucket's own time (prefill, KV transfer, first step) at each of its
    prompt lengths (``_OwnPlusWait``)."""

    def __init__(self, model, gpu, tp, input_tokens, rate_rps, transfer_s, first_token_s, p, burst, window_s,
                 servers, min_tokens, queue, lengths):
        inp = np.asarray(input_tokens, dtype=float)
        lengths, service, mean_b, square_b = prefill_service_moments(model, gpu, tp, inp, burst.service_scv,
                                                                     min_tokens, p, lengths)
        first = np.asarray(first_token_s, dtype=float)
        own = service + np.asarray(transfer_s, dtype=float)[:, None] * lengths / inp[:, None] + (
            first if first.ndim == 0 else 0.0)
        if queue is None:
            queue = prefill_queue([(servers, np.asarray(rate_rps, dtype=float), mean_b, square_b, service)])
        if queue is not None:
            wait = queue.wait_quantiles(burst.queue_scv + queue.service_scv, window_s)
            # the router picks the pod with the fewest outstanding requests, so every pod has about
            # as many prompts ahead and a pod drains them at its own speed: its wait is the pooled
            # queue's scaled by its mean prefill time over the pool's (1 for one group)
            if float(np.sum(rate_rps)) > 0 and queue.mean_service_s > 0:
                wait = wait * (_over_arrivals(rate_rps, mean_b) / queue.mean_service_s)
        else:
            wait = np.zeros_like(WAIT_PROBS)  # nothing to wait behind
        if first.ndim:  # the decode replica's delay to the first token, a distribution of its own
            wait = sum_quantiles(wait, first)
        super().__init__(own, wait)


_BISECTION_STEPS = 30
"""bisection halvings of [the shortest TTFT, the longest wait + the longest own time]: one
billionth of that range, below a millisecond for any TTFT here"""


def decode_tpot_at_rate(model: ModelSpec, gpu: GPUType, tp: int, input_tokens: np.ndarray, output_tokens: np.ndarray,
                        rate_rps: np.ndarray, percentile: float, p: PerfParams | None = None,
                        gpu_memory_utilization: float = 0.9, max_num_seqs: int | None = None,
                        burst: Burstiness = POISSON, window_s: float | None = None) -> np.ndarray:
    """Predicted TPOT at the percentile, s, of a decode-only replica loaded at ``rate_rps`` per
    bucket (the inverse of ``decode_capacity_rps``), each bucket alone. Shape (S,); inf past
    saturation, unless the load lasts only ``window_s``: then the TPOT at the largest batch (the
    excess waits). A replica serving a mix of buckets: ``shared_batch``."""
    rate, tpot, _ = decode_curves(model, gpu, tp, input_tokens, output_tokens, percentile, p, gpu_memory_utilization,
                                  max_num_seqs, burst)
    return _at_offered_rate(rate, tpot, np.asarray(rate_rps, dtype=float), window_s is not None)
