"""Request-length histograms from vLLM, mapped onto the planner's length buckets.

vLLM records ``vllm:request_prompt_tokens`` and ``vllm:request_generation_tokens`` on a 1-2-5
grid (``metrics.token_buckets``); the planner buckets lengths on its own grid
(``llmfleet.workload.demand.INPUT_EDGES_TOKENS`` / ``OUTPUT_EDGES_TOKENS``, bucket i =
[edges[i], edges[i+1])). The grids do not line up, so mass inside a vLLM bucket is spread
uniformly over the integers it holds, the assumption ``histogram_quantile`` makes. The error this
causes is at most the mass of the vLLM buckets that straddle a planner edge (``straddle_mass``).

vLLM only exports the two marginals: the joint (input, output) mix the planner uses has to be
assumed (for example independent) by the caller. The histograms are recorded at completion, so
in a window they lag arrivals and favour short requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class LengthDistribution:
    """Observed lengths in a window on the planner's grid.

    Attributes:
        edges_tokens: planner bucket edges, shape (n+1,), tokens.
        share: fraction of requests per planner bucket, shape (n,), sums to 1.
        mean_tokens: mean length within each bucket, shape (n,), tokens (0 where empty).
        count: number of requests the histogram holds in the window (an increase(), so fractional).
    """

    edges_tokens: np.ndarray
    share: np.ndarray
    mean_tokens: np.ndarray
    count: float


def _pieces(le: Sequence[float], cumulative: Sequence[float]) -> list[tuple[float, float, float]]:
    """(lo, hi, mass) per vLLM bucket, holding the integers lo+1..hi; +Inf mass goes to the last
    finite bound (vLLM cannot produce a length above ``max_model_len``, its last bound)."""
    bounds = [float(b) for b in le]
    cum = [float(c) for c in cumulative]
    if len(bounds) != len(cum) or not bounds:
        raise ValueError(f"bucket bounds and counts differ in length ({len(bounds)} vs {len(cum)})")
    if any(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])):
        raise ValueError(f"bucket bounds are not increasing: {bounds}")
    if not math.isinf(bounds[-1]):
        raise ValueError("the last bucket bound must be +Inf (a Prometheus histogram always has one)")
    # increase() of a bucket can dip below the one before it by float noise: keep it monotone
    cum = list(np.maximum.accumulate(np.maximum(cum, 0.0)))
    pieces, lo, prev = [], 0.0, 0.0
    for b, c in zip(bounds, cum):
        mass = c - prev
        if math.isinf(b):
            if mass > 0:
                last_lo, last_hi, last_mass = pieces[-1] if pieces else (0.0, max(lo, 1.0), 0.0)
                pieces[-1:] = [(last_lo, last_hi, last_mass + mass)]
        else:
            pieces.append((lo, b, mass))
            lo = b
        prev = c
    return pieces


def to_planner_buckets(le: Sequence[float], cumulative: Sequence[float],
                       edges_tokens: Sequence[float]) -> LengthDistribution | None:
    """Map one cumulative histogram (``le`` bounds with their cumulative counts, +Inf last) onto
    planner buckets ``edges_tokens``. None when the histogram holds no request.

    Raises:
        ValueError: bounds not increasing, no +Inf bound, or lengths differ.
    """
    edges = np.asarray(edges_tokens, dtype=float)
    pieces = _pieces(le, cumulative)
    total = sum(m for _, _, m in pieces)
    if total <= 0:
        return None
    n = len(edges) - 1
    mass = np.zeros(n)
    moment = np.zeros(n)
    for lo, hi, m in pieces:
        if m <= 0:
            continue
        # the piece holds the integers lo+1..hi with equal mass; planner bucket i holds the
        # integers edges[i]..edges[i+1]-1, i.e. the real interval (edges[i]-1, edges[i+1]-1]
        for i in range(n):
            a, b = max(lo, edges[i] - 1), min(hi, edges[i + 1] - 1)
            if i == 0:
                a = lo  # lengths below the first edge count in the first bucket
            if i == n - 1:
                b = hi
            if b <= a:
                continue
            part = m * (b - a) / (hi - lo)
            mass[i] += part
            moment[i] += part * ((a + b) / 2 + 0.5)  # mean of the integers a+1..b
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(mass > 0, moment / mass, 0.0)
    return LengthDistribution(edges_tokens=edges, share=mass / mass.sum(), mean_tokens=mean, count=total)


def straddle_mass(le: Sequence[float], cumulative: Sequence[float], edges_tokens: Sequence[float]) -> float:
    """Fraction of requests in vLLM buckets that a planner edge cuts: an upper bound on the total
    share ``to_planner_buckets`` can put in a wrong planner bucket."""
    pieces = _pieces(le, cumulative)
    total = sum(m for _, _, m in pieces)
    if total <= 0:
        return 0.0
    cut = 0.0
    for lo, hi, m in pieces:
        if any(lo < e - 1 < hi for e in edges_tokens[1:-1]):
            cut += m
    return cut / total
