"""When to re-plan: hysteresis, stabilisation, and never a scale-down on missing data.

A pure state machine: ``decide(state, tick, holds_after_scale_down, policy)`` returns a
``Decision`` and the next state, and touches nothing. The caller keeps the state it returns only
when it acts on the decision (a re-plan that fails to apply keeps the old state).

Rules, in the order they are checked:

1. **Unknown demand holds.** A demand that is ``UnknownDemand`` (failed, empty, NaN or stale
   telemetry) gives ``Hold`` and restarts the scale-down window: the stabilisation must be
   re-earned on real data after a gap. Prometheus down → the fleet holds as it is. (A metric-name
   typo read as 0 scaled a fleet down in AIBrix PR #2592; Dynamo's planner treats a failed query
   as "demand unknown, not zero".)
2. **Scale up at once** when the demand forecast leaves the band above the planned demand
   (``> planned · (1 + band_up)``), or exceeds what the *Ready* replicas hold (replicas not yet
   Ready are not capacity), or the predicted SLO attainment is below target. No stabilisation
   (Kubernetes HPA's scale-up stabilisation defaults to 0 s).
3. **No change during a rollout**: while a Deployment of the workload is still rolling out,
   every trigger gives ``Hold`` (its new replicas are coming; acting again would stack plans).
4. **Scale down late and only if safe**: the demand must stay below the band
   (``< planned · (1 − band_down)``) on every tick for ``scale_down_stabilisation_s``, no change
   may have been made for ``cooldown_s``, and ``holds_after_scale_down(target)`` must say the
   remaining replicas hold the load. The target is the highest demand seen in the window (HPA's
   scale-down stabilisation takes the highest recommendation of its window).
5. Otherwise ``Hold`` (within the band).

Constants and their sources (``StabilityPolicy``):

- band ±10%: the default tolerance of the Kubernetes HPA (``--horizontal-pod-autoscaler-tolerance
  0.1``): no scaling while the ratio of desired to current is within 10%.
- scale-down stabilisation 300 s: the HPA's default ``--horizontal-pod-autoscaler-downscale-
  stabilization`` (5 min) and AIBrix KPA's 300 s scale-down cooldown.
- cooldown 300 s after any change: AIBrix KPA's scale-down delay.
- ``REPLAN_INTERVAL_S`` 180 s: NVIDIA Dynamo's SLA planner runs its predictive loop every 180 s.
- ``STABLE_WINDOW_S`` 180 s and ``PANIC_WINDOW_S`` 60 s: AIBrix KPA's windows; the caller
  averages the demand fed to the forecaster over the stable window, and may evaluate the
  scale-up rule (which has no stabilisation) on panic-window rates between re-plans.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum
from typing import Callable, Sequence

from llmfleet.telemetry.forecast import UnknownDemand

REPLAN_INTERVAL_S = 180.0
"""re-plan cadence, s: NVIDIA Dynamo SLA planner's predictive interval"""
STABLE_WINDOW_S = 180.0
"""averaging window of the demand the forecaster sees, s: AIBrix KPA stable window"""
PANIC_WINDOW_S = 60.0
"""window of the reactive scale-up check between re-plans, s: AIBrix KPA panic window"""


@dataclass(frozen=True)
class StabilityPolicy:
    """Hysteresis and windows (sources in the module docstring).

    Attributes:
        band_up: relative band above the planned demand before a scale-up re-plan (0.10).
        band_down: relative band below the planned demand before a scale-down is considered (0.10).
        scale_down_stabilisation_s: time the demand must stay below the band, s (300).
        cooldown_s: no scale-down until this long after the last change, s (300).
    """

    band_up: float = 0.10
    band_down: float = 0.10
    scale_down_stabilisation_s: float = 300.0
    cooldown_s: float = 300.0

    def __post_init__(self):
        for name in ("band_up", "band_down"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0.0 <= v < 1.0):
                raise ValueError(f"StabilityPolicy.{name}: must be in [0, 1), got {v}")
        for name in ("scale_down_stabilisation_s", "cooldown_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0.0):
                raise ValueError(f"StabilityPolicy.{name}: must be >= 0 s, got {v}")


@dataclass(frozen=True)
class GroupCapacity:
    """One group of identical replicas of the running plan.

    Attributes:
        name: for messages (e.g. ``"H100-SXM/tp1/colocated"``).
        replica_capacity_rps: what one replica serves within the SLO at the workload's mix,
            req/s (the performance model's capacity, corrected by calibration).
        desired: replicas the plan asks for.
        ready: replicas whose pod is Ready (only these count as capacity).
    """

    name: str
    replica_capacity_rps: float
    desired: int
    ready: int

    def __post_init__(self):
        if not (math.isfinite(self.replica_capacity_rps) and self.replica_capacity_rps >= 0):
            raise ValueError(f"GroupCapacity({self.name}).replica_capacity_rps: must be finite and >= 0 req/s")
        if self.desired < 0 or self.ready < 0:
            raise ValueError(f"GroupCapacity({self.name}).desired/ready: must be >= 0")

    @property
    def ready_capacity_rps(self) -> float:
        return self.replica_capacity_rps * self.ready


@dataclass(frozen=True)
class Tick:
    """What the caller knows at one re-plan tick.

    Attributes:
        now_s: time, s (monotonic; any origin).
        demand_rps: the demand to provision for (``Forecast.provision_rps``), req/s, or
            ``UnknownDemand``.
        groups: the running plan's groups with their Ready counts.
        rollout_in_progress: a Deployment of the workload has not finished rolling out.
        predicted_attainment: predicted SLO attainment (0-1) of the Ready replicas at
            ``demand_rps``, or None when not computed.
        attainment_target: the SLO percentile as a share (0-1), needed with the above.
    """

    now_s: float
    demand_rps: float | UnknownDemand
    groups: Sequence[GroupCapacity] = ()
    rollout_in_progress: bool = False
    predicted_attainment: float | None = None
    attainment_target: float | None = None

    @property
    def ready_capacity_rps(self) -> float:
        """Sum over groups of Ready replicas × per-replica capacity, req/s (not-Ready excluded)."""
        return sum(g.ready_capacity_rps for g in self.groups)


@dataclass(frozen=True)
class StabilityState:
    """What the state machine remembers between ticks.

    Attributes:
        planned_demand_rps: demand the running plan was made for, req/s.
        last_change_s: time of the last re-plan the caller applied, s (None: none yet).
        below_since_s: first tick of the current run of ticks below the band, s (None: not below).
        window_peak_rps: highest demand during that run, req/s.
        last_tick_s: time of the previous tick, s (ticks must not go back in time).
    """

    planned_demand_rps: float
    last_change_s: float | None = None
    below_since_s: float | None = None
    window_peak_rps: float = 0.0
    last_tick_s: float | None = None


class Action(str, Enum):
    HOLD = "Hold"
    REPLAN_UP = "ReplanUp"
    REPLAN_DOWN = "ReplanDown"


@dataclass(frozen=True)
class Decision:
    """The decision of one tick.

    Attributes:
        action: ``Hold``, ``ReplanUp`` or ``ReplanDown``.
        reason: CamelCase reason (for a Kubernetes Event or condition).
        message: a sentence with the figures.
        demand_rps: the demand to re-plan for (req/s), None for ``Hold``.
    """

    action: Action
    reason: str
    message: str
    demand_rps: float | None = None


def n_minus_one_holds(load_rps: float, ready_replicas: int, replica_capacity_rps: float) -> bool:
    """Would ``ready_replicas − 1`` replicas hold ``load_rps``? (a ready-made predicate).

    NVIDIA Dynamo (PR #9294, after 2↔1 flapping under constant load) predicts the load of each
    remaining replica at N/(N−1) of today's before going from N to N−1; llm-d's autoscaler
    scales down only if N−1 non-saturated replicas absorb the load. Here: ``load_rps / (N − 1)
    <= replica_capacity_rps``. False for N <= 1.
    """
    if ready_replicas <= 1:
        return False
    return load_rps / (ready_replicas - 1) <= replica_capacity_rps


def _known(tick: Tick) -> float | None:
    d = tick.demand_rps
    if isinstance(d, UnknownDemand) or d is None:
        return None
    d = float(d)
    if math.isnan(d):
        return None
    if not math.isfinite(d) or d < 0:
        raise ValueError(f"Tick.demand_rps: must be finite and >= 0 req/s or UnknownDemand, got {d}")
    return d


def decide(state: StabilityState, tick: Tick, holds_after_scale_down: Callable[[float], bool],
           policy: StabilityPolicy = StabilityPolicy()) -> tuple[Decision, StabilityState]:
    """Decide one tick (see the module docstring for the rules).

    Args:
        state: the state returned by the previous call (or a fresh one with the planned demand).
        tick: this tick's demand, capacity and rollout status.
        holds_after_scale_down: called only when a scale-down is otherwise due, with the target
            demand (req/s): True if the fleet planned for it, counting only replicas that stay
            Ready, is predicted to meet the SLO at that demand (e.g. ``n_minus_one_holds``).
        policy: bands and windows.

    Returns:
        (decision, next state). The next state assumes the caller applies a re-plan.

    Raises:
        ValueError: time going backwards, a negative or infinite demand, or an attainment
            without its target.
    """
    if state.last_tick_s is not None and tick.now_s < state.last_tick_s:
        raise ValueError(f"Tick.now_s: {tick.now_s} is before the previous tick {state.last_tick_s}")
    if (tick.predicted_attainment is None) != (tick.attainment_target is None):
        raise ValueError("Tick.predicted_attainment/attainment_target: give both or neither")
    state = replace(state, last_tick_s=tick.now_s)
    planned = state.planned_demand_rps
    demand = _known(tick)
    not_below = replace(state, below_since_s=None, window_peak_rps=0.0)

    if demand is None:
        why = tick.demand_rps.reason if isinstance(tick.demand_rps, UnknownDemand) else "NaN"
        return (Decision(Action.HOLD, "TelemetryUnknown",
                         f"demand unknown ({why}): holding the fleet, no scale-down on missing data"), not_below)

    ready_cap = tick.ready_capacity_rps
    up_reasons = []
    if demand > planned * (1.0 + policy.band_up):
        up_reasons.append(("DemandAboveBand", f"demand {demand:.3g} req/s above the band over the planned "
                                              f"{planned:.3g} req/s (+{policy.band_up:.0%})"))
    if tick.groups and demand > ready_cap:
        up_reasons.append(("ReadyCapacityShort", f"demand {demand:.3g} req/s exceeds the {ready_cap:.3g} req/s "
                                                 f"of the Ready replicas"))
    if tick.predicted_attainment is not None and tick.predicted_attainment < tick.attainment_target:
        up_reasons.append(("AttainmentBelowTarget", f"predicted attainment {tick.predicted_attainment:.3f} below "
                                                    f"the target {tick.attainment_target:.3f}"))
    if up_reasons:
        reason, message = up_reasons[0][0], "; ".join(m for _, m in up_reasons)
        if tick.rollout_in_progress:
            return Decision(Action.HOLD, "RolloutInProgress", f"{message}, but a rollout is in progress"), not_below
        target = max(demand, planned)
        return (Decision(Action.REPLAN_UP, reason, message, target),
                replace(not_below, planned_demand_rps=target, last_change_s=tick.now_s))

    if demand < planned * (1.0 - policy.band_down):
        since = state.below_since_s if state.below_since_s is not None else tick.now_s
        peak = max(state.window_peak_rps, demand)
        below = replace(state, below_since_s=since, window_peak_rps=peak)
        waited = tick.now_s - since
        if tick.rollout_in_progress:
            return Decision(Action.HOLD, "RolloutInProgress", "demand below the band, but a rollout is in progress"), below
        if waited < policy.scale_down_stabilisation_s:
            return (Decision(Action.HOLD, "StabilisingDown",
                             f"demand {demand:.3g} req/s below the band for {waited:.0f} of "
                             f"{policy.scale_down_stabilisation_s:.0f} s"), below)
        if state.last_change_s is not None and tick.now_s - state.last_change_s < policy.cooldown_s:
            return (Decision(Action.HOLD, "Cooldown",
                             f"last change {tick.now_s - state.last_change_s:.0f} s ago, "
                             f"cooldown {policy.cooldown_s:.0f} s"), below)
        if not holds_after_scale_down(peak):
            return (Decision(Action.HOLD, "RemainingWouldNotHold",
                             f"the fleet for {peak:.3g} req/s is not predicted to hold the load"), below)
        return (Decision(Action.REPLAN_DOWN, "DemandBelowBand",
                         f"demand below the band over the planned {planned:.3g} req/s for {waited:.0f} s; "
                         f"re-planning for the window's highest demand {peak:.3g} req/s", peak),
                replace(not_below, planned_demand_rps=peak, last_change_s=tick.now_s))

    return Decision(Action.HOLD, "WithinBand", f"demand {demand:.3g} req/s within the band around "
                                               f"{planned:.3g} req/s"), not_below
