"""Calibration from observation: correction factors on predicted latency.

No offline performance model is right for every engine version, kernel and driver; runtime
observations must correct its capacity estimates (DriftSched's point; Dynamo's SLA planner keeps
"correction factors" for the same reason). For each (model, GPU type, TP, role) and each latency
metric (``ttft``, ``itl``) this module keeps a factor ``f``: the planner multiplies the latency
the performance model predicts by ``f`` (``f > 1``: the engine is slower than modelled, so each
replica serves less within the SLO).

How one window of telemetry updates a factor (``CorrectionTable.update``):

1. **Only windows with traffic.** An observed percentile must rest on at least
   ``ceil(10 / (1 − percentile))`` samples (ten beyond the percentile: 100 for a p90, 1000 for a
   p99), an observed mean on ``mean_samples``, and be known; otherwise nothing changes and the
   reason says why (an idle or unknown window says nothing about speed, and is never read as
   "fast").
2. **Ratio at the observed load.** ``r = observed / predicted``, where the caller computes
   ``predicted`` with the performance model at the load actually observed in that window (not
   the planned load), so queueing differences do not masquerade as speed differences. The
   operator (``operator.calibration``) goes one step further and feeds ``update_scale`` with
   the step-time scale that makes the model's prediction at the observed load equal the
   observation: queueing grows faster than linearly in the step time, so a latency ratio near
   saturation would overstate the slowdown.
3. **Consistency gate** (after llm-d's autoscaler, which gates its Kalman-filter updates with a
   chi-squared test): a window whose log ratio is further than ``log(gate_ratio)`` from the
   current estimate is held as an outlier and not used, unless the window before it was an
   outlier on the same side, in which case the shift is real and the window is used. One spike
   (a GC pause, a noisy neighbour) therefore moves nothing; a real step moves it one window late.
4. **Smoothing**: EWMA of the log ratio, ``log e ← log e + alpha · (log r − log e)``, clamped to
   ``[factor_min, factor_max]``.
5. **Safe direction first**: the applied factor follows the estimate up at once (slower than
   predicted: provision more now), but down (faster than predicted: provision less) only after
   ``faster_windows`` consecutive used windows each faster than the applied factor.

Constants (``CorrectionPolicy``) are llmfleet's choices, each justified in its docstring; the
clamp [0.5, 2] is the range the issue proposes: a model off by more than 2× is broken, not
drifting, and is reported (``clamped``) rather than silently followed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ROLES = ("colocated", "prefill", "decode")
"""the roles of a plan's groups (``llmfleet.api.models``)"""
METRICS = ("ttft", "itl")
"""time to first token and inter-token latency, the two latencies vLLM V1 reports as histograms
(``vllm:time_to_first_token_seconds``, ``vllm:inter_token_latency_seconds``)"""


@dataclass(frozen=True)
class CorrectionPolicy:
    """How fast and how far correction factors move.

    Attributes:
        alpha: EWMA weight of a new window in log space. 0.4: a constant slowdown is within 2% of
            its value after 6 windows (1 − 0.6⁶ = 95% of the log step), while one window's sampling
            noise enters the estimate at sqrt(0.4 / 1.6) = 50% of its spread.
        factor_min, factor_max: clamp of estimate and factor, [0.5, 2] (issue 16's proposal).
        gate_ratio: a window more than this factor away from the estimate (either side) is an
            outlier until the next window confirms it. 1.5: a p90 from ≥100 samples of a stable
            engine varies by well under ±20% between windows, so 1.5× is far beyond noise, yet a
            30% drift passes at once.
        faster_windows: consecutive faster-than-applied windows needed before the factor comes
            down. 3: with a right factor, a window reads faster by chance about half the time, so
            three in a row by chance happen 1 time in 8 (independent windows), and even then the
            factor only comes down to the smoothed estimate, not to one reading.
        tail_samples: samples beyond the percentile a window needs (10; see the module docstring).
        mean_samples: samples a window's mean needs. 50: latencies of one engine vary with a
            coefficient of variation near 0.5 or less, so a mean of 50 is within
            0.5 / sqrt(50) = 7% (one standard error), well inside the 1.5x gate.
    """

    alpha: float = 0.4
    factor_min: float = 0.5
    factor_max: float = 2.0
    gate_ratio: float = 1.5
    faster_windows: int = 3
    tail_samples: int = 10
    mean_samples: int = 50

    def __post_init__(self):
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"CorrectionPolicy.alpha: must be in (0, 1], got {self.alpha}")
        if not 0.0 < self.factor_min <= 1.0 <= self.factor_max:
            raise ValueError(f"CorrectionPolicy.factor_min/factor_max: need 0 < min <= 1 <= max, "
                             f"got {self.factor_min}, {self.factor_max}")
        if not self.gate_ratio > 1.0:
            raise ValueError(f"CorrectionPolicy.gate_ratio: must be > 1, got {self.gate_ratio}")
        if self.faster_windows < 1 or self.tail_samples < 1 or self.mean_samples < 1:
            raise ValueError("CorrectionPolicy.faster_windows/tail_samples/mean_samples: must be >= 1")

    def min_samples(self, percentile: float | None) -> int:
        """Fewest samples a window needs for a percentile in (0, 1): ``ceil(tail / (1 − p))``;
        for a mean (``percentile`` None): ``mean_samples``."""
        if percentile is None:
            return self.mean_samples
        if not 0.0 < percentile < 1.0:
            raise ValueError(f"percentile: must be in (0, 1), got {percentile}")
        return math.ceil(self.tail_samples / (1.0 - percentile) - 1e-9)


@dataclass(frozen=True)
class CorrectionKey:
    """What a factor belongs to: one (model, GPU type, TP, role) and one latency metric."""

    model: str
    gpu: str
    tp: int
    role: str
    metric: str

    def __post_init__(self):
        if not self.model or not isinstance(self.model, str):
            raise ValueError("CorrectionKey.model: must be a non-empty string")
        if not self.gpu or not isinstance(self.gpu, str):
            raise ValueError(f"CorrectionKey.gpu: must be a non-empty string (model {self.model})")
        if isinstance(self.tp, bool) or not isinstance(self.tp, int) or self.tp < 1:
            raise ValueError(f"CorrectionKey.tp: must be an integer >= 1, got {self.tp!r}")
        if self.role not in ROLES:
            raise ValueError(f"CorrectionKey.role: must be one of {', '.join(ROLES)}, got {self.role!r}")
        if self.metric not in METRICS:
            raise ValueError(f"CorrectionKey.metric: must be one of {', '.join(METRICS)}, got {self.metric!r}")


@dataclass
class CorrectionState:
    """One factor's state.

    Attributes:
        factor: applied factor on predicted latency (what the planner uses).
        estimate: smoothed evidence (exp of the EWMA of log ratios); may be below ``factor``
            while a faster reading awaits confirmation.
        windows: windows used so far.
        faster_streak: consecutive used windows faster than ``factor``.
        outlier_side: +1 / −1 when the last window was held as an outlier on that side, else 0.
        last_ratio: observed / predicted of the last window with enough samples, or None.
        last_reason: what the last window did, for status.
    """

    factor: float = 1.0
    estimate: float = 1.0
    windows: int = 0
    faster_streak: int = 0
    outlier_side: int = 0
    last_ratio: float | None = None
    last_reason: str = "no window yet"


@dataclass(frozen=True)
class Update:
    """What one window did: ``used`` (it moved the estimate), the factor after it, and why."""

    used: bool
    factor: float
    reason: str


def _positive(value, field_name: str, key: CorrectionKey) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field_name} ({key.model}/{key.gpu}/tp{key.tp}/{key.role}/{key.metric}): "
                         f"expected seconds, got {type(value).__name__}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{field_name} ({key.model}/{key.gpu}/tp{key.tp}/{key.role}/{key.metric}): "
                         f"must be finite and > 0 s, got {v}")
    return v


@dataclass
class CorrectionTable:
    """Correction factors for every (model, GPU type, TP, role, metric) seen so far."""

    policy: CorrectionPolicy = field(default_factory=CorrectionPolicy)
    states: dict[CorrectionKey, CorrectionState] = field(default_factory=dict)

    def factor(self, key: CorrectionKey) -> float:
        """Applied factor for ``key``; 1.0 (the model as is) when nothing was observed."""
        state = self.states.get(key)
        return state.factor if state is not None else 1.0

    def update(self, key: CorrectionKey, observed_s: float | None, predicted_s: float, samples: int,
               percentile: float | None) -> Update:
        """Feed one window's observation (the ratio observed / predicted).

        Args:
            key: what was observed.
            observed_s: observed latency percentile over the window, s; None or NaN when unknown.
            predicted_s: the performance model's prediction of the same percentile at the load
                observed in the window, s.
            samples: histogram observations in the window (requests for TTFT, token intervals
                for ITL), i.e. the increase of the histogram's ``_count``.
            percentile: the percentile observed, in (0, 1); None: ``observed_s`` and
                ``predicted_s`` are means.

        Returns:
            ``Update``; the table is changed only when ``used`` is True (or an outlier is noted).

        Raises:
            ValueError: a bad key, a non-positive or non-finite ``predicted_s``, a non-positive
                ``observed_s``, a negative ``samples`` or a percentile outside (0, 1).
        """
        predicted = _positive(predicted_s, "predicted_s", key)
        if observed_s is None or (isinstance(observed_s, float) and math.isnan(observed_s)):
            return self.update_scale(key, None, samples, percentile)
        return self.update_scale(key, _positive(observed_s, "observed_s", key) / predicted, samples, percentile)

    def update_scale(self, key: CorrectionKey, ratio: float | None, samples: int,
                     percentile: float | None) -> Update:
        """Feed one window's ratio of observed over modelled time directly (``update`` computes it
        from latencies; the operator passes the step-time scale that explains the observation).

        Args:
            ratio: > 0; None or NaN when the window's latency is unknown.
            samples, percentile: as for ``update``.

        Raises:
            ValueError: a bad key, a non-positive or non-finite ratio, a negative ``samples`` or a
                percentile outside (0, 1).
        """
        p = self.policy
        need = p.min_samples(percentile)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise ValueError(f"samples ({key.model}/{key.gpu}/{key.metric}): must be an integer >= 0, got {samples!r}")
        state = self.states.setdefault(key, CorrectionState())
        if ratio is None or (isinstance(ratio, float) and math.isnan(ratio)):
            state.last_reason = "observed latency unknown: no update"
            return Update(False, state.factor, state.last_reason)
        ratio = _positive(ratio, "ratio", key)
        if samples < need:
            what = "the mean" if percentile is None else f"p{percentile * 100:g}"
            state.last_reason = f"{samples} samples < {need} needed for {what}: no update"
            return Update(False, state.factor, state.last_reason)

        state.last_ratio = ratio
        lo, hi = math.log(p.factor_min), math.log(p.factor_max)
        log_est = math.log(state.estimate)
        innovation = math.log(ratio) - log_est
        side = 1 if innovation > 0 else -1
        if abs(innovation) > math.log(p.gate_ratio) and state.outlier_side != side:
            state.outlier_side = side
            state.last_reason = (f"ratio {ratio:.3g} is beyond {p.gate_ratio:g}x of the estimate "
                                 f"{state.estimate:.3g}: held as an outlier until the next window agrees")
            return Update(False, state.factor, state.last_reason)
        # within the gate, or the second consecutive window beyond it on the same side (a real shift)
        confirmed = abs(innovation) > math.log(p.gate_ratio)
        state.outlier_side = side if confirmed else 0
        state.estimate = math.exp(min(hi, max(lo, log_est + p.alpha * innovation)))
        state.windows += 1
        state.faster_streak = state.faster_streak + 1 if ratio < state.factor else 0
        if state.estimate >= state.factor:
            state.factor = state.estimate
            state.last_reason = f"ratio {ratio:.3g}: factor {state.factor:.3g}"
        elif state.faster_streak >= p.faster_windows:
            state.factor = state.estimate
            state.last_reason = (f"ratio {ratio:.3g}: {state.faster_streak} consecutive faster windows, "
                                 f"factor down to {state.factor:.3g}")
        else:
            state.last_reason = (f"ratio {ratio:.3g}: faster than factor {state.factor:.3g} in "
                                 f"{state.faster_streak} of {p.faster_windows} windows needed: factor kept")
        if confirmed:
            state.last_reason += " (shift beyond the gate confirmed by two windows)"
        return Update(True, state.factor, state.last_reason)

    def clamped(self, key: CorrectionKey) -> bool:
        """True when the factor sits at a clamp bound: the model is off by more than the clamp."""
        f = self.factor(key)
        return f <= self.policy.factor_min * (1 + 1e-9) or f >= self.policy.factor_max * (1 - 1e-9)

    # --- status ----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """A JSON-ready dict for a status field: ``{"corrections": [ {...}, ... ]}``, sorted by key."""
        rows = []
        for key in sorted(self.states, key=lambda k: (k.model, k.gpu, k.tp, k.role, k.metric)):
            s = self.states[key]
            rows.append({
                "model": key.model, "gpu": key.gpu, "tp": key.tp, "role": key.role, "metric": key.metric,
                "factor": round(s.factor, 6), "estimate": round(s.estimate, 6), "windows": s.windows,
                "fasterStreak": s.faster_streak, "outlierSide": s.outlier_side,
                "lastRatio": None if s.last_ratio is None else round(s.last_ratio, 6),
                "clamped": self.clamped(key), "lastReason": s.last_reason,
            })
        return {"corrections": rows}

    @classmethod
    def from_dict(cls, data: dict, policy: CorrectionPolicy | None = None) -> "CorrectionTable":
        """Rebuild a table from ``to_dict`` output (e.g. after an operator restart).

        Raises:
            ValueError: a missing or out-of-range field (names the entry index and field).
        """
        table = cls(policy=policy or CorrectionPolicy())
        if not isinstance(data, dict) or not isinstance(data.get("corrections"), list):
            raise ValueError("corrections: expected a dict with a 'corrections' list")
        lo, hi = table.policy.factor_min, table.policy.factor_max
        for i, row in enumerate(data["corrections"]):
            where = f"corrections[{i}]"
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected an object")
            try:
                key = CorrectionKey(row["model"], row["gpu"], row["tp"], row["role"], row["metric"])
                factor, estimate = float(row["factor"]), float(row["estimate"])
                windows, streak = int(row.get("windows", 0)), int(row.get("fasterStreak", 0))
                side = int(row.get("outlierSide", 0))
                last = row.get("lastRatio")
                last = None if last is None else float(last)
            except KeyError as e:
                raise ValueError(f"{where}.{e.args[0]}: missing") from None
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: {e}") from None
            for name, v in (("factor", factor), ("estimate", estimate)):
                if not (math.isfinite(v) and lo <= v <= hi):
                    raise ValueError(f"{where}.{name}: must be within [{lo}, {hi}], got {v}")
            if windows < 0 or streak < 0 or side not in (-1, 0, 1):
                raise ValueError(f"{where}: windows/fasterStreak must be >= 0 and outlierSide in -1, 0, 1")
            if key in table.states:
                raise ValueError(f"{where}: duplicate entry for {key.model}/{key.gpu}/tp{key.tp}/{key.role}/{key.metric}")
            table.states[key] = CorrectionState(factor, estimate, windows, streak, side, last,
                                                str(row.get("lastReason", "restored")))
        return table
