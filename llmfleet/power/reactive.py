"""Reactive power capping of an oversubscribed power domain, lowest tier first (POLCA).

A power domain (a rack, a row, a node: whatever shares one power budget) may be oversubscribed:
``FleetPolicy`` declares a factor f > 1 by which the sum of the planned caps (caps x GPUs) may
exceed the domain's budget B, on the bet that the GPUs seldom all draw their cap at once
(measured average draw under load is about 0.75 x TDP, ML.ENERGY H100 rows in
``shared/data/profiles``). This module is what keeps the measured draw within B when the bet
fails: one control interval at a time, it turns the domain's measured draw into new per-GPU caps.

The scheme is POLCA's (Patel, Choukse, Zhang, Goiri, Warrier, Mahalingam, Bianchini, "Characterizing
Power Management Opportunities for LLMs in the Cloud", ASPLOS 2024, doi 10.1145/3620666.3651329;
preprint "POLCA: Power Oversubscription in LLM Cloud Providers", arXiv 2308.12908; the same
mechanism is claimed in Microsoft's application US 2025/0377708 A1): two thresholds on the
domain's power; past the first, cap the low-priority inference work; past the second, cap the
high-priority work too; uncap only once the power is a set percentage below a threshold (the
application's claims measure it from the second threshold; here it is measured from the first,
which is stricter, and must also last several intervals). POLCA
showed that this lets a cluster host 30 % more inference servers in the same power with little
performance loss. POLCA acts on SM frequency; llmfleet acts on the power limit, which the node
agent (``llmfleet.power.agent``) sets through NVML and which the GPU enforces by lowering the SM
clock (``llmfleet.perf.powercap``). llmfleet has more than two tiers, so the scheme is generalised:

- draw > T1 x B (level 1): the lowest tier whose groups still have room above their floor loses
  one step per interval (all its groups at once); once it is at its floor, the next tier up does.
  The highest tier present in the domain is never lowered at level 1 (POLCA's high-priority
  work), unless it is the only tier (then it is the lowest too).
- draw > T2 x B (level 2): every group with room, all tiers, loses one step per interval
  (POLCA caps all work past T2). The low tiers have been lowered since T1, so they stay lowest.
- draw < R x B (release) for ``release_intervals`` consecutive intervals: caps are raised, highest
  tier first, never above the planned cap, and only by as much as keeps the draw at or below the
  middle of the release band, (R + T1) / 2 x B, even if every raised GPU used all of its new
  allowance (a GPU draws at most its cap). That bound is why a constant load never oscillates: a
  raise cannot by itself push the draw back over T1, and the half band left (2.5 % of B) absorbs
  measurement noise. After a raise the count starts again (hysteresis).
- otherwise (R x B <= draw <= T1 x B): hold.
- unknown draw (None, NaN, negative: no reading, a failed scrape, a meter error): hold, say so, and
  restart the release count. A cap is never lowered or lifted on data we do not have (DESIGN.md
  §8: missing telemetry never scales anything down; here it never scales anything up either).
- a domain that is not oversubscribed (f = 1): the plan's caps already guarantee Σ caps x GPUs
  <= B, so reactive capping would only cost throughput; caps go back to the plan.

Caps are per GPU (W) and stay within [floor, planned], floor = the device's minimum limit.

Constants (``CappingSettings``; POLCA's own numeric thresholds could not be checked against its
text here, so every value below is a design choice, with the reason):

- T1 = 0.90: start lowering low tiers with 10 % of the budget to spare, enough for the draw to rise
  for a few intervals while only low tiers pay.
- T2 = 0.95: 5 % below the budget, the stated accuracy of NVML's power reading
  (``nvmlDeviceGetPowerUsage``: "accurate to within +/- 5 % of current power draw"; on Ampere and
  newer the reading is a 1 s average): a reading of 0.95 B may be a true B.
- R = 0.85: 5 points under T1 (the same 5 % measurement band), so noise around T1 cannot alternate
  lowering and raising.
- release_intervals = 3: the draw must stay below R for three consecutive intervals (30 s at the
  agent's 10 s interval) before a raise; lowering acts on one reading, because over-drawing risks a
  breaker or a contract while a cap that stays one interval too long costs only a little speed.
- step = 10 % of the device's maximum limit (70 W on a 700 W H100): three steps reach the planner's
  70 % cap level (``perf.powercap.CAP_FRACTIONS``) and eight cover an H100's whole 200-700 W range;
  larger steps overshoot (throughput lost for nothing), smaller ones react slower.

Thresholds are fractions of the budget B, and the draw is the GPUs' draw (NVML or DCGM's
``DCGM_FI_DEV_POWER_USAGE``), the same quantity the planner's budget bounds (caps x GPUs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from llmfleet.catalog.gpus import GPUType
from llmfleet.perf.powercap import cap_levels, power_range

UNKNOWN = None
"""The draw of a domain without a usable reading (pass it as ``draw_watts``)."""

_EPS_WATTS = 1e-3  # 1 mW: NVML's resolution (limits are set in milliwatts)

LOWER, RAISE, CLAMP = "lower", "raise", "clamp"
# levels of a decision
UNKNOWN_DRAW, NORMAL, LEVEL1, LEVEL2, RELEASE, NOT_OVERSUBSCRIBED = (
    "unknown-draw", "normal", "above-threshold-1", "above-threshold-2", "below-release", "not-oversubscribed")
_LEVEL_NUMBER = {UNKNOWN_DRAW: -1, NOT_OVERSUBSCRIBED: 0, NORMAL: 0, RELEASE: 0, LEVEL1: 1, LEVEL2: 2}


@dataclass(frozen=True)
class CappingSettings:
    """The controller's constants (module docstring gives the reason for each default).

    threshold1, threshold2, release: fractions of the domain's budget, release < threshold1 <
    threshold2 <= 1; release_intervals: consecutive intervals below release before a raise (>= 1);
    step_fraction: one step, as a fraction of each group's maximum limit, in (0, 1].

    Raises ValueError (naming the field) when the values are out of order or range."""

    threshold1: float = 0.90
    threshold2: float = 0.95
    release: float = 0.85
    release_intervals: int = 3
    step_fraction: float = 0.10

    def __post_init__(self) -> None:
        for name in ("threshold1", "threshold2", "release", "step_fraction"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v <= 1:
                raise ValueError(f"CappingSettings.{name}: {v!r} must be a fraction in (0, 1]")
        if not self.release < self.threshold1 < self.threshold2:
            raise ValueError(f"CappingSettings: need release < threshold1 < threshold2, got {self.release:g}, "
                             f"{self.threshold1:g}, {self.threshold2:g}")
        if not isinstance(self.release_intervals, int) or self.release_intervals < 1:
            raise ValueError(f"CappingSettings.release_intervals: {self.release_intervals!r} must be an integer >= 1")


DEFAULT_SETTINGS = CappingSettings()


@dataclass(frozen=True)
class GroupPower:
    """One group of identical GPUs in a domain (a replica set of one workload and phase).

    name: unique in the domain (e.g. ``"team-a/chat/prefill"``); workload: the LLMWorkload;
    tier, tier_value: its priority tier (``FleetPolicy.spec.priorityTiers``; a higher value is more
    important); gpus: GPUs in the group; cap_watts: the cap now in force, W per GPU; planned_cap_watts:
    the plan's cap, W per GPU (the ceiling of every raise); min_watts, max_watts: the device's limit
    range, W per GPU (``perf.powercap.power_range``; ``group_limits`` builds them from the catalogue).

    Raises ValueError naming the group and field when a value is missing, not finite or out of order
    (0 < min <= planned <= max; the current cap may be anywhere, the controller clamps it)."""

    name: str
    workload: str
    tier: str
    tier_value: int
    gpus: int
    cap_watts: float
    planned_cap_watts: float
    min_watts: float
    max_watts: float

    def __post_init__(self) -> None:
        where = f"power group {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"power group: name {self.name!r} must be a non-empty string")
        if not isinstance(self.gpus, int) or self.gpus < 1:
            raise ValueError(f"{where}: gpus {self.gpus!r} must be an integer >= 1")
        if not isinstance(self.tier_value, int):
            raise ValueError(f"{where}: tier_value {self.tier_value!r} must be an integer")
        for f in ("cap_watts", "planned_cap_watts", "min_watts", "max_watts"):
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{where}: {f} {v!r} must be a positive number of watts")
        if not self.min_watts <= self.planned_cap_watts <= self.max_watts:
            raise ValueError(f"{where}: planned_cap_watts {self.planned_cap_watts:g} is outside the device range "
                             f"[{self.min_watts:g}, {self.max_watts:g}] W")


@dataclass(frozen=True)
class PowerDomain:
    """GPUs that share one power budget.

    budget_watts: the limit the measured GPU draw must stay within, W; oversubscription: the
    policy's factor f >= 1 (Σ planned caps x GPUs may reach f x budget; 1 = not oversubscribed);
    groups: the GPU groups drawing from it (names unique).

    Raises ValueError naming the domain and field on bad values."""

    name: str
    budget_watts: float
    oversubscription: float
    groups: tuple[GroupPower, ...]

    def __post_init__(self) -> None:
        where = f"power domain {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"power domain: name {self.name!r} must be a non-empty string")
        b = self.budget_watts
        if not isinstance(b, (int, float)) or not math.isfinite(b) or b <= 0:
            raise ValueError(f"{where}: budget_watts {b!r} must be a positive number of watts")
        f = self.oversubscription
        if not isinstance(f, (int, float)) or not math.isfinite(f) or f < 1:
            raise ValueError(f"{where}: oversubscription {f!r} must be a factor >= 1 (1 = not oversubscribed)")
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"{where}: group names must be unique, repeated: {', '.join(dup)}")

    @property
    def planned_watts(self) -> float:
        """Σ planned cap x GPUs, W."""
        return sum(g.planned_cap_watts * g.gpus for g in self.groups)


@dataclass(frozen=True)
class CappingAction:
    """One cap change, as an event: what changed, where, and why.

    direction: ``lower``, ``raise`` or ``clamp`` (brought back inside [min, planned]); reason: a
    short code (``above-threshold-1``, ``above-threshold-2``, ``released``, ``not-oversubscribed``,
    ``above-plan``, ``below-minimum``); message: one line for a person; caps in W per GPU."""

    domain: str
    group: str
    workload: str
    tier: str
    tier_value: int
    direction: str
    old_cap_watts: float
    new_cap_watts: float
    gpus: int
    reason: str
    message: str

    @property
    def event_reason(self) -> str:
        """The Kubernetes Event reason (CamelCase, as Events use)."""
        return {LOWER: "PowerCapLowered", RAISE: "PowerCapRaised", CLAMP: "PowerCapClamped"}[self.direction]

    @property
    def event_type(self) -> str:
        """``Warning`` when a cap goes down because of the draw (the workload slows), else ``Normal``."""
        return "Warning" if self.direction == LOWER else "Normal"


@dataclass(frozen=True)
class CappingDecision:
    """The outcome of one interval for one domain.

    level: ``unknown-draw``, ``normal``, ``above-threshold-1``, ``above-threshold-2``,
    ``below-release`` or ``not-oversubscribed``; caps_watts: group name -> cap to apply, W per GPU
    (every group, changed or not); actions: the changes, in the order taken; below_release_intervals:
    the count to pass to the next interval; notes: anything a person should know (e.g. the groups
    that may be lowered are all at their floor, the draw could not be read)."""

    domain: str
    draw_watts: float | None
    budget_watts: float
    level: str
    caps_watts: dict[str, float]
    actions: tuple[CappingAction, ...]
    below_release_intervals: int
    notes: tuple[str, ...] = ()


def group_limits(gpu: GPUType) -> tuple[float, float]:
    """(floor, max) per GPU, W, for a group on ``gpu``: the catalogue's minimum and maximum power
    limit (``perf.powercap.power_range``). Where the catalogue has no minimum (e.g. H100-NVL), the
    floor is the planner's lowest cap level (``cap_levels``: 70 % of the default limit), a cap the
    plan itself may choose and so one the device is trusted to accept."""
    r = power_range(gpu)
    floor = r.min_watts if r.min_watts is not None else min(cap_levels(gpu))
    return float(floor), float(r.max_watts)


def _usable_draw(draw_watts) -> float | None:
    if draw_watts is None or isinstance(draw_watts, bool) or not isinstance(draw_watts, (int, float)):
        return None
    if not math.isfinite(draw_watts) or draw_watts < 0:
        return None
    return float(draw_watts)


def _w(x: float) -> float:
    return round(x, 3)


def decide(domain: PowerDomain, draw_watts: float | None, below_release_intervals: int = 0,
           settings: CappingSettings = DEFAULT_SETTINGS) -> CappingDecision:
    """One control interval for ``domain`` (module docstring): the caps to apply and why.

    Args:
        domain: the domain, with each group's cap now in force.
        draw_watts: the domain's measured GPU draw over the last interval, W; ``UNKNOWN`` (None),
            NaN, infinite or negative: no usable reading (hold).
        below_release_intervals: consecutive intervals below the release threshold before this one
            (the previous decision's ``below_release_intervals``; 0 at start).
        settings: thresholds, release count and step.

    Pure: the same arguments give the same decision.
    """
    caps = {g.name: float(g.cap_watts) for g in domain.groups}
    draw = _usable_draw(draw_watts)
    actions: list[CappingAction] = []
    notes: list[str] = []
    budget = domain.budget_watts

    def change(g: GroupPower, new: float, direction: str, reason: str, why: str) -> None:
        old = caps[g.name]
        new = _w(new)
        if abs(new - old) < _EPS_WATTS:
            return
        caps[g.name] = new
        message = (f"{direction} the cap of {g.name} (tier {g.tier}, {g.gpus} GPU(s)) "
                   f"from {_w(old):g} W to {new:g} W per GPU: {why}")
        actions.append(CappingAction(domain.name, g.name, g.workload, g.tier, g.tier_value, direction, _w(old), new,
                                     g.gpus, reason, message))

    # 0. caps outside [floor, planned] come back inside, whatever the draw: the plan lowered a cap,
    # or the cap in force was read below the device's floor.
    for g in domain.groups:
        if caps[g.name] > g.planned_cap_watts + _EPS_WATTS:
            change(g, g.planned_cap_watts, CLAMP, "above-plan", f"never above the planned {g.planned_cap_watts:g} W")
        elif caps[g.name] < g.min_watts - _EPS_WATTS:
            change(g, g.min_watts, CLAMP, "below-minimum", f"never below the device minimum {g.min_watts:g} W")

    def done(level: str, count: int) -> CappingDecision:
        return CappingDecision(domain.name, draw, budget, level, caps, tuple(actions), count, tuple(notes))

    if domain.oversubscription <= 1.0:
        for g in domain.groups:
            change(g, g.planned_cap_watts, RAISE, "not-oversubscribed",
                   "the domain is not oversubscribed, so the planned caps already keep it within its budget")
        return done(NOT_OVERSUBSCRIBED, 0)

    planned = domain.planned_watts
    if planned > domain.oversubscription * budget * (1 + 1e-9):
        notes.append(f"planned caps sum to {planned:.0f} W, above oversubscription {domain.oversubscription:g} x "
                     f"budget {budget:.0f} W = {domain.oversubscription * budget:.0f} W")

    if draw is None:
        notes.append(f"no usable power reading for domain {domain.name} ({draw_watts!r}): caps held, "
                     "release count restarted")
        return done(UNKNOWN_DRAW, 0)

    step = {g.name: settings.step_fraction * g.max_watts for g in domain.groups}
    has_room = lambda g: caps[g.name] > g.min_watts + _EPS_WATTS  # noqa: E731
    pct = f"{draw:.0f} W = {draw / budget:.1%} of the {budget:.0f} W budget"

    if draw > settings.threshold2 * budget:
        # level 2: every tier steps down (POLCA caps all work past T2)
        for g in sorted(domain.groups, key=lambda g: (g.tier_value, g.name)):
            if has_room(g):
                change(g, max(g.min_watts, caps[g.name] - step[g.name]), LOWER, "above-threshold-2",
                       f"draw {pct} is above threshold 2 ({settings.threshold2:.0%}): all tiers step down")
        if not any(a.direction == LOWER for a in actions):
            notes.append(f"draw {pct} is above threshold 2 but every group is at its minimum cap")
        return done(LEVEL2, 0)

    if draw > settings.threshold1 * budget:
        # level 1: the lowest tier with room steps down; the highest tier is spared unless alone
        values = sorted({g.tier_value for g in domain.groups})
        protected = values[-1] if len(values) > 1 else None
        for value in values:
            if value == protected:
                continue
            tier_groups = sorted((g for g in domain.groups if g.tier_value == value and has_room(g)),
                                 key=lambda g: g.name)
            if tier_groups:
                for g in tier_groups:
                    change(g, max(g.min_watts, caps[g.name] - step[g.name]), LOWER, "above-threshold-1",
                           f"draw {pct} is above threshold 1 ({settings.threshold1:.0%}): lowest tier with room "
                           "steps down first")
                break
        else:
            notes.append(f"draw {pct} is above threshold 1 but every group below the highest tier is at its minimum "
                         "cap; the highest tier is lowered only past threshold 2")
        return done(LEVEL1, 0)

    if draw >= settings.release * budget:
        return done(NORMAL, 0)

    count = min(below_release_intervals, settings.release_intervals) + 1
    if count < settings.release_intervals:
        return done(RELEASE, count)
    # raise, highest tier first, within the headroom to the middle of the release band (a raised
    # GPU draws at most its new cap, so the draw cannot pass it; module docstring)
    headroom = (settings.release + settings.threshold1) / 2 * budget - draw
    raised_any = False
    for g in sorted(domain.groups, key=lambda g: (-g.tier_value, g.name)):
        gap = g.planned_cap_watts - caps[g.name]
        if gap <= _EPS_WATTS:
            continue
        lift = min(step[g.name], gap, headroom / g.gpus)
        lift = math.floor(lift * 1000) / 1000  # mW, never rounding up past the headroom
        if lift < _EPS_WATTS:
            break  # a higher tier could not be restored: lower tiers wait
        change(g, caps[g.name] + lift, RAISE, "released",
               f"draw {pct} has been below the release threshold ({settings.release:.0%}) for "
               f"{count} intervals: restoring highest tiers first, at most to the planned {g.planned_cap_watts:g} W")
        headroom -= lift * g.gpus
        raised_any = True
    # after a raise, the next one waits another full release window (hysteresis); with nothing to
    # raise, the count keeps running so a later plan change can be followed at once
    return done(RELEASE, 0 if raised_any else settings.release_intervals)


class CappingMetrics:
    """Prometheus metrics of reactive capping, in ``registry`` (the default one in production, a
    fresh one per controller in tests). Watts are W; labels: ``domain``, ``direction`` (lower,
    raise, clamp), ``tier``, ``group``, ``reason``."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else REGISTRY
        kw = {"registry": self.registry}
        self.actions = Counter("llmfleet_power_capping_actions_total",
                               "Cap changes made by reactive capping, by direction and tier",
                               ["domain", "direction", "tier"], **kw)
        self.holds = Counter("llmfleet_power_capping_holds_total",
                             "Intervals in which reactive capping held because it could not act "
                             "(unknown-draw: no usable reading; exhausted: every group it may lower is at its minimum)",
                             ["domain", "reason"], **kw)
        self.draw = Gauge("llmfleet_power_capping_domain_draw_watts",
                          "Last usable measured GPU draw of the power domain", ["domain"], **kw)
        self.budget = Gauge("llmfleet_power_capping_domain_budget_watts", "Power budget of the domain",
                            ["domain"], **kw)
        self.level = Gauge("llmfleet_power_capping_level",
                           "Threshold level of the domain: -1 unknown draw, 0 below threshold 1, 1 above threshold 1, "
                           "2 above threshold 2", ["domain"], **kw)
        self.cap = Gauge("llmfleet_power_capping_group_cap_watts", "Cap per GPU chosen for each group",
                         ["domain", "group", "tier"], **kw)
        self.withheld = Gauge("llmfleet_power_capping_withheld_watts",
                              "Σ (planned cap - cap) x GPUs: the watts reactive capping holds back in the domain",
                              ["domain"], **kw)

    def observe(self, domain: PowerDomain, d: CappingDecision) -> None:
        """Record one decision."""
        self.budget.labels(domain.name).set(domain.budget_watts)
        self.level.labels(domain.name).set(_LEVEL_NUMBER[d.level])
        if d.draw_watts is not None:
            self.draw.labels(domain.name).set(d.draw_watts)
        if d.level == UNKNOWN_DRAW:
            self.holds.labels(domain.name, "unknown-draw").inc()
        elif d.level in (LEVEL1, LEVEL2) and not any(a.direction == LOWER for a in d.actions):
            self.holds.labels(domain.name, "exhausted").inc()
        for a in d.actions:
            self.actions.labels(domain.name, a.direction, a.tier).inc()
        withheld = 0.0
        for g in domain.groups:
            self.cap.labels(domain.name, g.name, g.tier).set(d.caps_watts[g.name])
            withheld += (g.planned_cap_watts - d.caps_watts[g.name]) * g.gpus
        self.withheld.labels(domain.name).set(max(withheld, 0.0))


@dataclass
class ReactiveCapper:
    """The controller over time: keeps each domain's release count between intervals and records
    metrics. ``step`` is the only call; everything else is in ``decide``."""

    settings: CappingSettings = DEFAULT_SETTINGS
    metrics: CappingMetrics = field(default_factory=CappingMetrics)
    _below_release: dict[str, int] = field(default_factory=dict)

    def step(self, domain: PowerDomain, draw_watts: float | None) -> CappingDecision:
        """One interval for ``domain``: ``decide`` with the domain's release count, metrics recorded.
        Apply ``caps_watts`` and pass them back as the groups' ``cap_watts`` next interval."""
        d = decide(domain, draw_watts, self._below_release.get(domain.name, 0), self.settings)
        self._below_release[domain.name] = d.below_release_intervals
        self.metrics.observe(domain, d)
        return d


def with_caps(domain: PowerDomain, caps_watts: dict[str, float]) -> PowerDomain:
    """``domain`` with each group's ``cap_watts`` replaced from ``caps_watts`` (group name -> W)."""
    return replace(domain, groups=tuple(replace(g, cap_watts=caps_watts.get(g.name, g.cap_watts))
                                        for g in domain.groups))
