"""Calibration of the capacity model from observed latency (issue 16, item 3).

The performance model predicts step times from a fitted profile; a real engine can be slower or
faster (a new vLLM release, a driver, a noisy neighbour, a different kernel). Each telemetry tick,
for every planned group with traffic in the window, ``Calibration.observe``:

1. reads the group's **mean** TTFT and mean inter-token latency over the window and their sample
   counts (``TelemetryClient``: Σ increase(_sum) / Σ increase(_count), exact). A histogram
   quantile would be interpolated inside vLLM's buckets (0.25-0.5 s for TTFT): an error as large
   as the drift to detect;
2. takes the load the group carried: its request rate is its TTFT observations over the window
   (one per request), spread over its Ready replicas, with the planned length mix; the load over
   capacity is the plan's utilisation scaled by observed over planned rate per replica;
3. finds the **step-time scale that explains the observation**: the s at which the model, with
   every step s times as long, predicts that mean at that load (``implied_scale``; a secant on
   log s within the clamp). A plain latency ratio would overstate a slowdown near saturation,
   where queueing grows faster than the step time;
4. feeds it to ``telemetry.correction.CorrectionTable`` per (model, GPU type, TP, role, metric):
   only windows with enough samples, a consistency gate, EWMA smoothing, clamp [0.5, 2], up at
   once and down only after consecutive faster windows (the safe direction first);
5. keeps the **scales in force** (``step_scales``) per (model, GPU type, TP, role): the larger of
   the TTFT and ITL factors for a colocated group, the ITL factor for a decode group, rounded
   *up* to a grid of steps of the FleetPolicy's hysteresis h (1, 1+h, (1+h)², ...). A scale
   in force rises when the factor passes it by more than h/2 and falls only when the factor is
   below it by more than a whole step, so each change is one re-plan, the wobble of a window's
   mean changes nothing, and the capacity in force never rests above what was observed (the safe
   side of the rounding). The planner models those deployments' capacities with their scale
   (``solver.problem.StepScales``).

Prefill groups are not calibrated: vLLM's TTFT on a prefill pod of llm-d's P/D path ends at its
own first token, while the model's prefill TTFT includes the KV transfer and the decode pod's
first step, so the two do not measure the same thing. Their factor stays 1 and the status says so.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Iterable

import numpy as np

from llmfleet.solver.milp import predicted_mean_latency
from llmfleet.telemetry.client import GroupTelemetry
from llmfleet.telemetry.correction import CorrectionKey, CorrectionPolicy, CorrectionTable

CALIBRATED = {"colocated": ("ttft", "itl"), "decode": ("itl",)}
"""role -> the latencies whose observation calibrates it (module docstring: prefill is not)"""
SCALE_TOLERANCE = 0.01
"""``implied_scale`` stops when the prediction is within 1% of the observation (log scale): far
below the sampling error of a window's mean (``CorrectionPolicy.mean_samples``)"""
MAX_EVALUATIONS = 6
"""model evaluations ``implied_scale`` may spend (each is the quantile grid of one group)"""
BUDGET_S = 2.0
"""wall time one ``observe`` may spend on model evaluations, s: a group costs about 0.1-0.3 s (3-7
evaluations of 23 quantiles, shared by its two latencies), so a large fleet is calibrated a slice
per tick, in turn, instead of stretching the re-plan interval"""


def implied_scale(predict: Callable[[float], float | None], observed_s: float, lo: float, hi: float,
                  start: float = 1.0) -> float | None:
    """The step-time scale s in [lo, hi] at which ``predict(s)`` equals ``observed_s``.

    ``predict`` is increasing in s (longer steps: longer latency, inf past saturation), so the
    root is bracketed: a step proportional to the error first (latency about proportional to the
    step time), then regula falsi inside the bracket, bisection where a step would leave it. The
    bound when the observation lies beyond what [lo, hi] can explain.

    Args:
        predict: s -> predicted mean latency, s (inf past saturation; None: not modelled).
        observed_s: > 0, s.
        lo, hi: the clamp of the scale, 0 < lo <= 1 <= hi.
        start: first scale tried (the factor in force).

    Returns:
        The scale, or None when the model predicts nothing for the group.
    """
    target = math.log(observed_s)
    a, b = math.log(lo), math.log(hi)  # the root lies in [a, b]
    ea = eb = None  # log(predict / observed) at a and at b, once evaluated there
    x = min(b, max(a, math.log(start)))
    for _ in range(MAX_EVALUATIONS):
        y = predict(math.exp(x))
        if y is None:
            return None
        err = math.log(y) - target if 0 < y < math.inf else math.inf
        if abs(err) <= SCALE_TOLERANCE:
            return math.exp(x)
        if err < 0:
            if x >= math.log(hi) - 1e-12:
                return hi  # slower than the clamp can explain
            a, ea = x, err
        else:
            if x <= math.log(lo) + 1e-12:
                return lo  # faster than the clamp can explain
            b, eb = x, err
        if ea is not None and eb is not None and math.isfinite(eb):
            nx = a - ea * (b - a) / (eb - ea)
        elif math.isfinite(err):
            nx = x - err
        else:
            nx = (a + b) / 2  # saturated: back off
        if nx >= b:
            nx = b if eb is None else (a + b) / 2  # an unevaluated bound is tried as it is
        elif nx <= a:
            nx = a if ea is None else (a + b) / 2
        x = nx
    return math.exp(x)


def _grid_ceil(factor: float, step: float) -> float:
    """The smallest (1 + step)^k >= ``factor`` (k an integer); ``factor`` itself when step is 0."""
    if step <= 0:
        return factor
    k = math.ceil(math.log(factor) / math.log1p(step) - 1e-9)
    return (1.0 + step) ** k


@dataclasses.dataclass(frozen=True)
class GroupLoad:
    """One planned group as the calibration needs it.

    Attributes:
        workload: namespace/name; model: ``spec.model``; gpu_type, tp, role: the group's key.
        problem: the workload's ``WorkloadProblem`` the plan was solved with; config: the group's
            ``ReplicaConfig`` in it (its capacities carry the scale in force).
        bucket_rate_rps: (S,) the plan's traffic per bucket (the length mix), req/s.
        planned_rps, utilization, replicas: the plan's rate, load over capacity and replicas.
        ready: Ready replicas now; telemetry: the group's window, or None.
    """

    workload: str
    model: str
    gpu_type: str
    tp: int
    role: str
    problem: object
    config: object
    bucket_rate_rps: np.ndarray
    planned_rps: float
    utilization: float
    replicas: int
    ready: int
    telemetry: GroupTelemetry | None


class Calibration:
    """Correction factors from observed latency and the step-time scales in force (module docstring).

    Args:
        window_s: the telemetry window, s (a group's request rate is its TTFT count over it).
        policy: ``CorrectionPolicy`` (clamp, gate, smoothing).
    """

    def __init__(self, window_s: float, policy: CorrectionPolicy | None = None):
        self.window_s = float(window_s)
        self.table = CorrectionTable(policy=policy or CorrectionPolicy())
        self.in_force: dict[tuple[str, str, int, str], float] = {}
        self.notes: dict[tuple[str, str, int, str], str] = {}
        self.withheld: set[str] = set()  # models whose scales would leave a workload no configuration
        self._turn = 0  # where the next tick starts in the list of groups (BUDGET_S)

    def observe(self, groups: Iterable[GroupLoad], params, hysteresis: float, budget_s: float = BUDGET_S) -> bool:
        """Feed one window per group; returns whether a scale in force changed (a re-plan is due).

        Args:
            params: the ``PerfParams`` the plan was made with.
            hysteresis: relative change of a factor that moves the scale in force
                (``FleetPolicy.spec.hysteresis``).
            budget_s: wall time for model evaluations; groups past it wait for the next tick,
                which starts where this one stopped.
        """
        p = self.table.policy
        groups = list(groups)
        start = self._turn % len(groups) if groups else 0
        t0 = time.perf_counter()
        for i, g in enumerate(groups[start:] + groups[:start]):
            if i and time.perf_counter() - t0 > budget_s:  # at least one group per tick
                self._turn = start + i
                break
            key4 = (g.model, g.gpu_type, g.tp, g.role)
            metrics = CALIBRATED.get(g.role)
            if not metrics:
                self.notes[key4] = ("not calibrated: vLLM's TTFT on a prefill pod ends at its own first token, the "
                                    "model's includes the KV transfer and the decode pod's first step")
                continue
            why = self._load(g)
            if isinstance(why, str):
                self.notes[key4] = why
                continue
            util = why
            predicted: dict[float, tuple[float | None, float | None]] = {}

            def predict(scale: float, metric: str) -> float | None:
                if scale not in predicted:
                    c = dataclasses.replace(g.config, step_time_scale=scale)
                    predicted[scale] = predicted_mean_latency(g.problem, c, g.bucket_rate_rps, util, params)
                return predicted[scale][0 if metric == "ttft" else 1]

            for metric in metrics:
                obs = g.telemetry.mean_ttft_s if metric == "ttft" else g.telemetry.mean_itl_s
                count = g.telemetry.ttft_count if metric == "ttft" else g.telemetry.itl_count
                ck = CorrectionKey(g.model, g.gpu_type, g.tp, g.role, metric)
                if not (obs.known and count.known and obs.value > 0):
                    self.table.update_scale(ck, None, 0, None)
                    continue
                samples = int(round(count.value))
                if samples < p.min_samples(None):
                    self.table.update_scale(ck, 1.0, samples, None)  # records why nothing changed
                    continue
                scale = implied_scale(lambda s: predict(s, metric), obs.value, p.factor_min, p.factor_max,
                                      start=self.table.factor(ck))
                self.table.update_scale(ck, scale, samples, None)
            self.notes[key4] = f"load {util:.2f} of the planned capacity per Ready replica"
        return self._refresh(hysteresis)

    def _load(self, g: GroupLoad) -> float | str:
        """The group's load over capacity in the window, or why it cannot be used."""
        tel = g.telemetry
        if tel is None:
            return "no telemetry for the group"
        if g.ready <= 0 or g.replicas <= 0 or g.planned_rps <= 0 or g.utilization <= 0:
            return "no Ready replica or no planned traffic"
        if not tel.ttft_count.known:
            return f"request count unknown ({tel.ttft_count.detail})"
        rate_per_replica = tel.ttft_count.value / self.window_s / g.ready
        util = g.utilization * rate_per_replica / (g.planned_rps / g.replicas)
        if util <= 0:
            return "no traffic in the window"
        if util >= 1.0:
            return (f"load {util:.2f} of the planned capacity: beyond what the model can be checked at "
                    "(demand re-planning acts on it)")
        return util

    def _refresh(self, hysteresis: float) -> bool:
        """Move the scales in force after the factors (module docstring, step 5); True if one moved."""
        changed = False
        wanted: dict[tuple[str, str, int, str], float] = {}
        for ck in self.table.states:
            key4 = (ck.model, ck.gpu, ck.tp, ck.role)
            if ck.metric in CALIBRATED.get(ck.role, ()):
                wanted[key4] = max(wanted.get(key4, 0.0), self.table.factor(ck))
        for key4, f in wanted.items():
            cur = self.in_force.get(key4, 1.0)
            if not (f > cur * (1.0 + hysteresis / 2) or f * (1.0 + hysteresis) < cur):
                continue
            new = _grid_ceil(f, hysteresis)
            if math.isclose(new, cur, rel_tol=1e-9):
                continue
            if math.isclose(new, 1.0, rel_tol=1e-9):
                self.in_force.pop(key4, None)
            else:
                self.in_force[key4] = new
            self.withheld.discard(key4[0])
            changed = True
        return changed

    def step_scales(self) -> dict[tuple[str, str, int, str], float]:
        """(model, GPU type, TP, role) -> step-time scale in force (``solver.problem.StepScales``),
        less the models withheld."""
        return {k: v for k, v in self.in_force.items() if k[0] not in self.withheld}

    def withhold(self, models: Iterable[str]) -> None:
        """Stop applying the scales of ``models``: with them no configuration of some workload meets
        its SLO, and a plan would shed it whole. They apply again once a scale in force moves
        (a new observation) and still leaves a configuration."""
        self.withheld |= set(models)

    def status(self, model: str, groups: Iterable[tuple[str, int, str]]) -> list[dict]:
        """``LLMWorkload.status.calibration`` rows for a workload's planned groups (gpu, TP, role):
        one per calibrated latency, plus one for a group that is not calibrated."""
        rows = []
        for gpu, tp, role in sorted(set(groups)):
            key4 = (model, gpu, tp, role)
            withheld = model in self.withheld
            base = {"gpuType": gpu, "tensorParallelSize": tp, "role": role,
                    "stepTimeScale": 1.0 if withheld else round(self.in_force.get(key4, 1.0), 4)}
            metrics = CALIBRATED.get(role, ())
            if not metrics:
                rows.append({**base, "reason": self.notes.get(key4, "not calibrated")})
                continue
            for metric in metrics:
                st = self.table.states.get(CorrectionKey(model, gpu, tp, role, metric))
                if st is None:
                    rows.append({**base, "metric": metric, "factor": 1.0, "windows": 0,
                                 "reason": self.notes.get(key4, "no window with traffic yet")})
                    continue
                reason = st.last_reason
                if withheld:
                    reason = ("not applied: at the observed speed no configuration meets the SLO, so the plan "
                              f"would shed the workload (the model as profiled is used; see SLOAtRisk); {reason}")
                rows.append({**base, "metric": metric, "factor": round(st.factor, 4),
                             "lastScale": None if st.last_ratio is None else round(st.last_ratio, 4),
                             "windows": st.windows,
                             "clamped": self.table.clamped(CorrectionKey(model, gpu, tp, role, metric)),
                             "reason": reason})
        return rows

    def fingerprint(self) -> list:
        """The scales applied, for the planner's cache key."""
        return sorted((list(k), round(v, 9)) for k, v in self.step_scales().items())
