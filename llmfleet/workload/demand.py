"""Demand of one workload: a request rate and a 2-D histogram of request sizes.

Request sizes are bucketed on a fixed log-spaced grid (factor 4 per bucket) in both input and
output tokens, as Mélange does, so that the capacity of a replica can be computed per bucket and
the solver can split each bucket's traffic across GPU types. The grid is fixed (not fitted to the
trace) so that plans of different workloads and re-plans over time use the same buckets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import ndtri

from llmfleet.api.models import LengthPercentiles, TrafficSpec

#: Bucket edges, tokens. Bucket i holds lengths in [edges[i], edges[i+1]).
INPUT_EDGES_TOKENS = np.array([1, 128, 512, 2048, 8192, 32768, 2**31], dtype=float)
OUTPUT_EDGES_TOKENS = np.array([1, 32, 128, 512, 2048, 2**31], dtype=float)

INPUT_LENGTH_PROBS = np.concatenate([np.linspace(0.0, 0.99, 100), 1.0 - np.logspace(-2.25, -5.0, 12)])
"""cumulative probabilities at which a bucket's prompt lengths are kept (``Demand.input_quantiles``)
and its prefill times evaluated (``perf.capacity.prefill_service_moments``; linear in between):
every percent, then ever closer to 1, so the longest prompts of a bucket, which set a high TTFT
percentile, are there"""


@dataclass(frozen=True)
class Demand:
    """Offered load of one workload.

    Attributes:
        rate_mean_rps: mean arrival rate over the trace or as declared, req/s.
        rate_plan_rps: the rate to plan for (the chosen peak quantile of windowed rates), req/s.
        share: shape (n_in, n_out), fraction of requests per (input, output) bucket; sums to 1.
        input_tokens: shape (n_in, n_out), mean input length of the requests in each bucket
            (0 where the bucket is empty).
        output_tokens: shape (n_in, n_out), mean output length per bucket (0 where empty).
        input_edges, output_edges: bucket edges, tokens.
        input_scv: shape (n_in, n_out), squared coefficient of variation (variance / mean²) of the
            input lengths within each bucket: the variability of a bucket's prefill service time.
        arrival_scv: burstiness of arrivals at the seconds timescale (``arrival_dispersion``
            over ``BURST_WINDOW_S``); 1 for Poisson arrivals.
        arrival_idc: (window s, index of dispersion) pairs at ``ARRIVAL_IDC_WINDOWS_S``, windows
            ascending (``arrival_dispersion`` over each): how the burstiness grows with the
            timescale, as clustered traffic's does (``arrival_scv_at``); empty for a declared rate.
        rate_levels: how the load swings over the trace (``rate_levels``): (one-minute rate over
            the mean rate, share of requests) pairs, shares summing to 1; one level (1, 1) for a
            declared rate. A latency percentile over all requests mixes the latency at each level.
        input_quantiles: shape (n_in, n_out, len(INPUT_LENGTH_PROBS)), the input lengths of each
            bucket's requests at ``INPUT_LENGTH_PROBS`` (``input_length_quantiles``; 0 where
            empty), tokens; None where only the mean and SCV are known (a declared rate).
        arrival_followers: (window s, excess followers) pairs at ``FOLLOWER_WINDOWS_S``, windows
            ascending (``arrival_followers``): how many more requests arrive within that window
            after a request than Poisson arrivals would bring, the clumps prompts share an
            iteration with; empty for a declared rate (Poisson: none).
        window_counts: shape (n_windows, n_in, n_out), the requests of each bucket in each full
            ``RATE_LEVEL_WINDOW_S`` window of the trace as replayed (``window_counts``): the
            length mix shifts from minute to minute as well as the rate (the Azure conversation
            trace's prompts of 2,048 tokens or more are 12-29% of a minute's requests), so a group
            that serves part of the mix, or serves it at its own speeds, swings by its own load
            (``solver.milp.group_levels``); None for a declared rate (``rate_levels`` for all).
    """

    rate_mean_rps: float
    rate_plan_rps: float
    share: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    input_edges: np.ndarray = field(default_factory=INPUT_EDGES_TOKENS.copy)
    output_edges: np.ndarray = field(default_factory=OUTPUT_EDGES_TOKENS.copy)
    input_scv: np.ndarray | None = None
    arrival_scv: float = 1.0
    rate_levels: tuple[tuple[float, float], ...] = ((1.0, 1.0),)
    input_quantiles: np.ndarray | None = None
    arrival_idc: tuple[tuple[float, float], ...] = ()
    arrival_followers: tuple[tuple[float, float], ...] = ()
    window_counts: np.ndarray | None = None

    def arrival_scv_at(self, window_s: float) -> float:
        """The arrivals' index of dispersion over ``window_s`` seconds (``dispersion_at`` on
        ``arrival_idc``; ``arrival_scv`` where there is no curve)."""
        return float(dispersion_at(self.arrival_idc, window_s, self.arrival_scv))

    def buckets(self) -> list[tuple[int, int]]:
        """Indices (i, j) of the non-empty buckets."""
        return [tuple(ix) for ix in np.argwhere(self.share > 0)]

    @property
    def mean_input_tokens(self) -> float:
        return float((self.share * self.input_tokens).sum())

    @property
    def mean_output_tokens(self) -> float:
        return float((self.share * self.output_tokens).sum())


def bucket_index(input_tokens: np.ndarray, output_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid cell (input index, output index) of each request, two int arrays of the inputs' shape."""
    i = np.clip(np.searchsorted(INPUT_EDGES_TOKENS, input_tokens, side="right") - 1, 0, len(INPUT_EDGES_TOKENS) - 2)
    j = np.clip(np.searchsorted(OUTPUT_EDGES_TOKENS, output_tokens, side="right") - 1, 0, len(OUTPUT_EDGES_TOKENS) - 2)
    return i, j


def histogram(input_tokens: np.ndarray, output_tokens: np.ndarray,
              weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bucket requests on the fixed grid.

    Returns:
        (share, mean_input, mean_output, input_scv), each of shape (n_in, n_out); ``input_scv`` is
        the variance of the input lengths in a bucket over their squared mean (0 where empty).
    """
    inp = np.asarray(input_tokens, dtype=float)
    out = np.asarray(output_tokens, dtype=float)
    w = np.ones_like(inp) if weights is None else np.asarray(weights, dtype=float)
    i, j = bucket_index(inp, out)
    shape = (len(INPUT_EDGES_TOKENS) - 1, len(OUTPUT_EDGES_TOKENS) - 1)
    count = np.zeros(shape)
    sum_in = np.zeros(shape)
    sum_out = np.zeros(shape)
    sq_in = np.zeros(shape)
    np.add.at(count, (i, j), w)
    np.add.at(sum_in, (i, j), w * inp)
    np.add.at(sum_out, (i, j), w * out)
    np.add.at(sq_in, (i, j), w * inp**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_in = np.where(count > 0, sum_in / count, 0.0)
        mean_out = np.where(count > 0, sum_out / count, 0.0)
        scv_in = np.where(count > 0, np.maximum(sq_in / count - mean_in**2, 0.0) / np.maximum(mean_in, 1.0) ** 2, 0.0)
    return count / count.sum(), mean_in, mean_out, scv_in


def input_length_quantiles(input_tokens: np.ndarray, output_tokens: np.ndarray) -> np.ndarray:
    """Shape (n_in, n_out, len(INPUT_LENGTH_PROBS)): the input lengths of each bucket's requests
    at ``INPUT_LENGTH_PROBS`` (linear interpolation between order statistics), tokens; 0 where a
    bucket is empty. A trace's lengths within a bucket are far from any one family (Mooncake's
    32k+ bucket: median 40k, p90 59k, p99 191k), and its high TTFT percentiles are set by them."""
    inp = np.asarray(input_tokens, dtype=float)
    i, j = bucket_index(inp, np.asarray(output_tokens, dtype=float))
    out = np.zeros((len(INPUT_EDGES_TOKENS) - 1, len(OUTPUT_EDGES_TOKENS) - 1, len(INPUT_LENGTH_PROBS)))
    cell = i * out.shape[1] + j
    order = np.lexsort((inp, cell))
    cells, starts = np.unique(cell[order], return_index=True)
    for c, lo, hi in zip(cells, starts, list(starts[1:]) + [len(order)]):
        out[c // out.shape[1], c % out.shape[1]] = np.quantile(inp[order[lo:hi]], INPUT_LENGTH_PROBS)
    return out


def windowed_rates(arrival_s: np.ndarray, window_s: float) -> np.ndarray:
    """Request rate in each full window of ``window_s`` seconds, req/s (shape (n_windows,))."""
    arrival_s = np.asarray(arrival_s, dtype=float)
    span = float(arrival_s.max() - arrival_s.min()) if len(arrival_s) else 0.0
    n = max(int(span // window_s), 1)
    counts, _ = np.histogram(arrival_s - arrival_s.min(), bins=n, range=(0.0, n * window_s))
    return counts / window_s


ARRIVAL_IDC_WINDOWS_S = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
"""windows over which ``Demand.arrival_idc`` measures the arrivals' dispersion, s: from the
shortest TTFT targets (0.5 s) to the decoding life of a long answer (hundreds of tokens at tens of
ms each); swings over whole minutes are ``rate_levels``"""


def curve_at(curve: tuple[tuple[float, float], ...], window_s, default: float, floor: float) -> np.ndarray:
    """A (window s, value) curve measured at a few windows (ascending, as ``Demand.arrival_idc``
    and ``Demand.arrival_followers``) read at ``window_s`` seconds (scalar or array; the result has
    its shape): interpolated linearly in log(window), held at its ends, at least ``floor``;
    ``default`` everywhere where the curve is empty (a declared rate)."""
    window_s = np.asarray(window_s, dtype=float)
    if not curve:
        return np.full(window_s.shape, float(default))
    windows, values = zip(*curve)
    return np.maximum(np.interp(np.log(np.maximum(window_s, 1e-3)), np.log(windows), values), floor)


def dispersion_at(idc: tuple[tuple[float, float], ...], window_s, default: float = 1.0) -> np.ndarray:
    """Index of dispersion of arrival counts over ``window_s`` seconds (scalar or array; the result
    has its shape), at least 1: the (window s, dispersion) curve ``idc`` (``Demand.arrival_idc``)
    read by ``curve_at``; ``default`` everywhere where the curve is empty (a declared rate)."""
    return curve_at(idc, window_s, default, 1.0)


FOLLOWER_WINDOWS_S = (0.01, 0.03, 0.1, 0.3, 1.0)
"""windows over which ``Demand.arrival_followers`` counts the requests that follow one, s: the
time a prompt waits for the iteration it joins, from one decode step of a small model (about
10 ms) to the prefill of a long prompt"""


def arrival_followers(arrival_s: np.ndarray, window_s: float, minute_s: float = 60.0) -> float:
    """The mean number of requests that arrive within ``window_s`` seconds after a request, less
    what Poisson arrivals at the rate of its minute would bring there (that rate x ``window_s``):
    the Palm excess H(τ) - λτ of the arrival process (H(τ), the expected arrivals in (0, τ] given
    one at 0). 0 for Poisson arrivals, above 0 when requests come in clumps: for a renewal process
    it tends to (c² - 1) / 2 at long windows, c² the gaps' squared coefficient of variation (Cox
    and Lewis, "The Statistical Analysis of Series of Events", 1966, ch. 4), and the index of
    dispersion over a window t is 1 + (2/t) ∫_0^t (H(u) - λu) du. A prompt that arrives with others
    shares their prefill iteration and gets its first token when the whole iteration ends
    (``perf.capacity``'s TTFT read-out). Returns 0 for fewer than two arrivals.
    """
    arrival_s = np.sort(np.asarray(arrival_s, dtype=float))
    n = len(arrival_s)
    if n < 2:
        return 0.0
    after = np.searchsorted(arrival_s, arrival_s + window_s, side="right") - np.arange(1, n + 1)
    minute = ((arrival_s - arrival_s[0]) // minute_s).astype(np.intp)
    counts = np.bincount(minute)
    # the rate of each request's own minute (the last, partial minute at its own length)
    length = np.full(len(counts), float(minute_s))
    length[-1] = max(float(arrival_s[-1] - arrival_s[0]) - minute_s * (len(counts) - 1), window_s)
    local = (counts / length)[minute]
    return float(after.mean() - (local * window_s).mean())


BURST_WINDOW_S = 5.0
"""window of the arrival counts whose dispersion measures burstiness: TTFT targets are 0.1-10 s,
so the queues that break them build over seconds, not over the minutes the planning rate uses"""


def arrival_dispersion(arrival_s: np.ndarray, window_s: float = BURST_WINDOW_S, minute_s: float = 60.0) -> float:
    """Index of dispersion of arrival counts in ``window_s`` windows around each minute's own mean
    rate: Σ (n - n̄_minute)² / Σ n̄_minute over the windows. 1 for Poisson arrivals, above 1 for
    bursts within the minute (the minute-to-minute swings are what the planning rate's quantile
    covers, so they are taken out). For a renewal process it tends to the squared coefficient of
    variation of the inter-arrival times, which is how the capacity model's Kingman (G/G/1)
    approximation uses it. Returns 1 for a trace shorter than one minute.
    """
    arrival_s = np.asarray(arrival_s, dtype=float)
    span = float(arrival_s.max() - arrival_s.min()) if len(arrival_s) else 0.0
    per_minute = int(minute_s // window_s)
    minutes = int(span // minute_s)
    if minutes < 1 or per_minute < 2:
        return 1.0
    counts, _ = np.histogram(arrival_s - arrival_s.min(), bins=minutes * per_minute,
                             range=(0.0, minutes * per_minute * window_s))
    counts = counts.reshape(minutes, per_minute).astype(float)
    local = counts.mean(axis=1, keepdims=True)
    if local.sum() <= 0:
        return 1.0
    return float(((counts - local) ** 2).sum() / (local.sum() * per_minute) * per_minute / (per_minute - 1))


RATE_LEVEL_EDGES = (0.0, 0.2, 0.4, 0.6, 0.75, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0)
"""request-share edges of the load levels ``rate_levels`` keeps: finer at the top, where the
minutes that decide a p90 or p99 over requests lie"""


RATE_LEVEL_WINDOW_S = 60.0
"""how long one load level lasts, s: the one-minute windows ``rate_levels`` measures, as the
planning rate's ``demand_from_trace`` windows"""


def rate_levels(arrival_s: np.ndarray, window_s: float = RATE_LEVEL_WINDOW_S,
                edges: tuple[float, ...] = RATE_LEVEL_EDGES) -> tuple[tuple[float, float], ...]:
    """The load a trace puts on a fleet minute by minute, as at most ``len(edges) - 1`` levels.

    The full ``window_s`` windows are sorted by rate and cut where their cumulative share of the
    requests crosses ``edges``; each level is the request-weighted mean rate of its windows over
    the trace's mean rate, with their share of the requests (``load_levels`` with each window's
    rate as its load). A percentile over all requests is a percentile of the mixture of the
    latency distributions at these levels: the requests of a busy minute see that minute's queues
    (issue 14: the minutes above a p90 planning rate held 23.7% of the requests and 65% of the
    misses).

    Returns:
        ((rate / mean rate, share of requests), ...), shares summing to 1, rates ascending;
        ((1.0, 1.0),) for a trace shorter than two windows or with no requests in them.
    """
    rates = windowed_rates(arrival_s, window_s)
    return load_levels(rates, rates, edges)


def load_levels(load: np.ndarray, requests: np.ndarray,
                edges: tuple[float, ...] = RATE_LEVEL_EDGES) -> tuple[tuple[float, float], ...]:
    """Windows' loads as at most ``len(edges) - 1`` levels: the windows sorted by ``load`` (shape
    (n_windows,), any unit) are cut where their cumulative share of ``requests`` (shape
    (n_windows,), the requests in each, any scale) crosses ``edges``; each level is the
    request-weighted mean load of its windows over the mean load of all windows, with their share
    of the requests.

    Returns:
        ((load / mean load, share of requests), ...), shares summing to 1, loads ascending;
        ((1.0, 1.0),) for fewer than two windows, or no load or requests in them.
    """
    load, requests = np.asarray(load, dtype=float), np.asarray(requests, dtype=float)
    if len(load) < 2 or load.sum() <= 0 or requests.sum() <= 0:
        return ((1.0, 1.0),)
    order = np.argsort(load, kind="stable")
    load, share = load[order], requests[order] / requests.sum()
    mid = np.cumsum(share) - share / 2.0  # each window's place in the request-share order
    level = np.clip(np.searchsorted(np.asarray(edges), mid, side="right") - 1, 0, len(edges) - 2)
    mean = load.mean()
    out = []
    for k in np.unique(level):
        m = level == k
        if share[m].sum() > 0:
            out.append((float((load[m] * share[m]).sum() / share[m].sum() / mean), float(share[m].sum())))
    return tuple(out)


def window_counts(arrival_s: np.ndarray, input_tokens: np.ndarray, output_tokens: np.ndarray,
                  window_s: float = RATE_LEVEL_WINDOW_S) -> np.ndarray | None:
    """The requests of each (input, output) bucket in each full ``window_s`` window (the windows
    of ``windowed_rates``), shape (n_windows, n_in, n_out); None for a trace shorter than two
    windows (``rate_levels`` has one level there)."""
    arrival_s = np.asarray(arrival_s, dtype=float)
    n = int((arrival_s.max() - arrival_s.min()) // window_s) if len(arrival_s) else 0
    if n < 2:
        return None
    k = ((arrival_s - arrival_s.min()) // window_s).astype(np.intp)
    i, j = bucket_index(np.asarray(input_tokens, dtype=float), np.asarray(output_tokens, dtype=float))
    out = np.zeros((n, len(INPUT_EDGES_TOKENS) - 1, len(OUTPUT_EDGES_TOKENS) - 1))
    full = k < n
    np.add.at(out, (k[full], i[full], j[full]), 1.0)
    return out


def demand_from_trace(trace: pd.DataFrame, peak_quantile: float = 0.9, window_s: float = 60.0,
                      rate_scale: float = 1.0) -> Demand:
    """Demand of a trace (columns ``arrival_s``, ``input_tokens``, ``output_tokens``).

    The planning rate is the ``peak_quantile`` of the per-window rates (windows of ``window_s``),
    at least the mean rate; with a trace shorter than one window the mean rate is used.
    ``rate_scale`` replays the trace that many times faster, as the simulator does
    (``sim.engine``): both rates are multiplied by it, and the windows, the arrival burstiness
    (``arrival_scv``, ``arrival_idc``, ``arrival_followers``) and the load levels are measured on
    the replayed timeline, where a burst lasts 1/rate_scale as long.

    Raises:
        ValueError: for an empty trace or one whose requests all arrive at the same instant.
    """
    if trace.empty:
        raise ValueError("trace is empty")
    arrival = trace["arrival_s"].to_numpy()
    span = float(arrival.max() - arrival.min())
    if span <= 0:
        raise ValueError("trace spans no time: cannot derive a request rate")
    # the trace as it is replayed: rate_scale times faster (``sim.engine``), so that the windows,
    # the burstiness and the load levels are those of the timeline the requests will meet
    arrival = (arrival - arrival.min()) / rate_scale
    span /= rate_scale
    mean = len(trace) / span
    plan = float(np.quantile(windowed_rates(arrival, window_s), peak_quantile)) if span >= window_s else mean
    # never below the mean: a fleet planned for less than the mean rate falls behind for good. The
    # quantile of window rates falls there where most windows hold no request (windows shorter
    # than the gaps between requests: at 1 ms on the Azure trace its p90 is 0)
    plan = max(plan, mean)
    share, mi, mo, scv = histogram(trace["input_tokens"].to_numpy(), trace["output_tokens"].to_numpy())
    return Demand(mean, plan, share, mi, mo, input_scv=scv,
                  arrival_scv=max(arrival_dispersion(arrival), 1.0),
                  arrival_idc=tuple((w, max(arrival_dispersion(arrival, w), 1.0)) for w in ARRIVAL_IDC_WINDOWS_S),
                  arrival_followers=tuple((w, max(arrival_followers(arrival, w), 0.0)) for w in FOLLOWER_WINDOWS_S),
                  rate_levels=rate_levels(arrival),
                  window_counts=window_counts(arrival, trace["input_tokens"].to_numpy(),
                                              trace["output_tokens"].to_numpy()),
                  input_quantiles=input_length_quantiles(trace["input_tokens"].to_numpy(),
                                                         trace["output_tokens"].to_numpy()))


def _lognormal_quantiles(p: LengthPercentiles, n: int) -> np.ndarray:
    """``n`` evenly spaced quantiles of the log-normal through p50 and p90 (p99 caps the tail)."""
    mu = np.log(p.p50)
    sigma = max((np.log(p.p90) - mu) / ndtri(0.9), 1e-6)
    q = (np.arange(n) + 0.5) / n
    return np.minimum(np.exp(mu + sigma * ndtri(q)), max(p.p99 * 1.5, p.p90))


def demand_from_spec(traffic: TrafficSpec, n_quantiles: int = 200) -> Demand:
    """Demand from a declared rate and input/output length percentiles.

    Lengths are modelled as independent log-normals fitted to p50 and p90 (the usual shape of
    LLM prompt and answer lengths, e.g. the Azure 2023 traces), truncated at 1.5 x p99; the
    histogram is built from every pair of ``n_quantiles`` evenly spaced quantiles of each.

    Raises:
        ValueError: when the rate or a length distribution is missing (TrafficSpec refuses that too).
    """
    if not (traffic.input_tokens and traffic.output_tokens and traffic.request_rate_per_second):
        raise ValueError("traffic needs requestRatePerSecond, inputTokens and outputTokens without a trace")
    inp = _lognormal_quantiles(traffic.input_tokens, n_quantiles)
    out = _lognormal_quantiles(traffic.output_tokens, n_quantiles)
    ii, oo = np.meshgrid(inp, out, indexing="ij")  # independent marginals
    share, mi, mo, scv = histogram(ii.ravel(), oo.ravel())
    rate = traffic.request_rate_per_second
    return Demand(rate, rate, share, mi, mo, input_scv=scv)  # declared rates: Poisson arrivals


def synthetic_trace(traffic: TrafficSpec, duration_s: float = 3600.0, seed: int = 0) -> pd.DataFrame:
    """A Poisson trace for a workload declared by rate and length percentiles (no trace of its own).

    Arrivals are Poisson at ``requestRatePerSecond``; lengths are drawn from the same log-normals
    ``demand_from_spec`` plans with (fitted to p50 and p90, truncated at 1.5 x p99).

    Returns:
        DataFrame with ``arrival_s``, ``input_tokens``, ``output_tokens`` (``load_trace``'s columns).

    Raises:
        ValueError: when the rate or a length distribution is missing.
    """
    if not (traffic.input_tokens and traffic.output_tokens and traffic.request_rate_per_second):
        raise ValueError("traffic needs requestRatePerSecond, inputTokens and outputTokens to synthesise a trace")
    rng = np.random.default_rng(seed)
    n = max(int(rng.poisson(traffic.request_rate_per_second * duration_s)), 1)
    arrival = np.sort(rng.uniform(0.0, duration_s, n))  # Poisson process: uniform given the count

    def draw(p: LengthPercentiles) -> np.ndarray:
        mu = np.log(p.p50)
        sigma = max((np.log(p.p90) - mu) / ndtri(0.9), 1e-6)
        x = np.exp(rng.normal(mu, sigma, n))
        return np.clip(np.round(np.minimum(x, max(p.p99 * 1.5, p.p90))), 1, None).astype(int)

    return pd.DataFrame({"arrival_s": arrival - arrival[0], "input_tokens": draw(traffic.input_tokens),
                         "output_tokens": draw(traffic.output_tokens)})
