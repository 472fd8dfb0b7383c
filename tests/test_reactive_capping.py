"""Reactive power capping (llmfleet.power.reactive) driven over time against a simulated power domain.

The simulated domain draws what its GPUs draw: per GPU min(cap, demand), where the demand is the
draw the GPU would have uncapped (a GPU never draws above its enforced limit, and a cap above the
demand costs nothing: perf.powercap.capped_draw_watts). The device limits are the catalogue's real
H100 SXM range (200-700 W), so one step is 10 % of 700 W = 70 W.

The domain (used by most tests): 12 H100s in three groups of 4, planned at 700 W each = 8,400 W,
under a 6,500 W budget with oversubscription 1.3 (POLCA's 30 % more servers in the same power):
T1 = 0.90 x 6,500 = 5,850 W, T2 = 6,175 W, release R = 5,525 W, raise ceiling (R + T1) / 2 = 5,687.5 W.
Every expected value below is worked out by hand from those numbers in the test's comments.
"""

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from llmfleet.catalog.gpus import get_gpu
from llmfleet.perf.powercap import power_range
from llmfleet.power.reactive import (CLAMP, LEVEL1, LEVEL2, LOWER, NORMAL, NOT_OVERSUBSCRIBED, RAISE, UNKNOWN,
                                     UNKNOWN_DRAW, CappingMetrics, CappingSettings, GroupPower, PowerDomain,
                                     ReactiveCapper, decide, group_limits, with_caps)

H100 = get_gpu("H100-SXM")
FLOOR_W, MAX_W = group_limits(H100)
BUDGET_W = 6500.0
TIERS = {"low": 1_000, "standard": 10_000, "critical": 1_000_000}  # the policy's default tier values


def group(name: str, tier: str, gpus: int = 4, planned: float = 700.0, cap: float | None = None) -> GroupPower:
    return GroupPower(name=name, workload=name.split("/")[0], tier=tier, tier_value=TIERS[tier], gpus=gpus,
                      cap_watts=planned if cap is None else cap, planned_cap_watts=planned,
                      min_watts=FLOOR_W, max_watts=MAX_W)


def rack(oversubscription: float = 1.3, budget: float = BUDGET_W) -> PowerDomain:
    return PowerDomain("rack-a", budget, oversubscription,
                       (group("batch/summarise", "low"), group("chat/decode", "standard"),
                        group("chat/prefill", "critical")))


LOW, STD, CRIT = "batch/summarise", "chat/decode", "chat/prefill"


class Sim:
    """A power domain over time: demand per group (W per GPU, uncapped) -> measured draw -> controller
    -> caps applied for the next interval."""

    def __init__(self, domain: PowerDomain, demand: dict[str, float], settings: CappingSettings | None = None):
        self.domain = domain
        self.demand = dict(demand)
        self.registry = CollectorRegistry()
        self.capper = ReactiveCapper(settings or CappingSettings(), CappingMetrics(self.registry))
        self.history: list[tuple[float, dict[str, float], object]] = []  # (true draw, caps before, decision)

    def draw(self) -> float:
        return sum(g.gpus * min(g.cap_watts, self.demand[g.name]) for g in self.domain.groups)

    def caps(self) -> dict[str, float]:
        return {g.name: g.cap_watts for g in self.domain.groups}

    def run(self, intervals: int, noise=None, measure=None):
        """``noise(t)``: relative measurement error of interval t; ``measure(t, draw)``: overrides the
        reading (e.g. UNKNOWN)."""
        out = []
        for t in range(intervals):
            true = self.draw()
            reading = true * (1 + noise(t)) if noise else true
            if measure is not None:
                reading = measure(t, reading)
            before = self.caps()
            d = self.capper.step(self.domain, reading)
            self.history.append((true, before, d))
            self.domain = with_caps(self.domain, d.caps_watts)
            out.append(d)
        return out

    def changes(self) -> int:
        return sum(len(d.actions) for _, _, d in self.history)

    def metric(self, name, **labels):
        return self.registry.get_sample_value(name, {"domain": self.domain.name, **labels})


def test_catalogue_limits_are_what_the_hand_calculations_assume():
    r = power_range(H100)
    assert (FLOOR_W, MAX_W) == (r.min_watts, r.max_watts) == (200.0, 700.0)
    assert rack().planned_watts == 8400.0 <= 1.3 * BUDGET_W


def test_surge_above_threshold_1_lowers_only_the_lowest_tier():
    # steady 5,800 W (2,400 + 1,600 + 1,800) < T1 5,850: nothing happens
    sim = Sim(rack(), {LOW: 600, STD: 400, CRIT: 450})
    assert all(not d.actions and d.level == NORMAL for d in sim.run(5))
    # the batch workload surges to 680 W/GPU: 2,720 + 1,600 + 1,800 = 6,120 W, between T1 and T2
    sim.demand[LOW] = 680
    ds = sim.run(10)
    # by hand: low must reach 4c + 3,400 <= 5,850, c <= 612.5 W; steps of 70 from 700: 630, 560
    assert [d.level for d in ds[:3]] == [LEVEL1, LEVEL1, NORMAL]
    assert sim.caps() == {LOW: 560.0, STD: 700.0, CRIT: 700.0}
    assert {a.group for d in ds for a in d.actions} == {LOW}
    assert all(a.direction == LOWER and a.reason == "above-threshold-1" for d in ds for a in d.actions)
    assert sim.draw() == 5640.0 and all(not d.actions for d in ds[2:])  # settled between R and T1
    assert sim.metric("llmfleet_power_capping_actions_total", direction="lower", tier="low") == 2
    assert sim.metric("llmfleet_power_capping_actions_total", direction="lower", tier="critical") is None
    assert sim.metric("llmfleet_power_capping_withheld_watts") == 4 * (700 - 560)


def test_level_1_moves_to_the_next_tier_but_spares_the_highest():
    # low already at its floor; 4 x 200 + 4 x 700 + 4 x 600 = 6,000 W: above T1, below T2
    dom = rack()
    dom = with_caps(dom, {LOW: 200.0})
    sim = Sim(dom, {LOW: 700, STD: 700, CRIT: 600})
    ds = sim.run(6)
    # standard steps down until 800 + 4c + 2,400 <= 5,850 -> c <= 662.5 -> 630 W, after one step
    assert sim.caps() == {LOW: 200.0, STD: 630.0, CRIT: 700.0}
    assert {a.group for d in ds for a in d.actions} == {STD}
    # with the standard tier at its floor too, level 1 only reports: the critical tier waits for T2
    # draw 800 + 800 + 2,800 = 4,400 W, made 92 % of the budget (between T1 and T2)
    groups = with_caps(rack(), {LOW: 200.0, STD: 200.0}).groups
    sim2 = Sim(PowerDomain("rack-a", 4400.0 / 0.92, 1.8, groups), {LOW: 700, STD: 700, CRIT: 700})
    d = sim2.run(1)[0]
    assert d.level == LEVEL1 and not d.actions
    assert d.notes == (d.notes[0],) and "lowered only past threshold 2" in d.notes[0]
    assert sim2.metric("llmfleet_power_capping_holds_total", reason="exhausted") == 1


def test_surge_above_threshold_2_lowers_higher_tiers_too_and_ends_within_budget():
    sim = Sim(rack(), {LOW: 600, STD: 400, CRIT: 450})
    sim.run(3)
    # everything surges: 2,800 + 2,600 + 2,800 = 8,200 W, 126 % of the budget
    sim.demand.update({LOW: 700, STD: 650, CRIT: 700})
    ds = sim.run(12)
    draws = [true for true, _, _ in sim.history[3:]]
    # by hand: 8,200 (all -> 630) -> 2,520 + 2,520 + 2,520 = 7,560 (all -> 560) -> 6,720 (all -> 490)
    #  -> 1,960 x 3 = 5,880 > T1 only (low -> 420) -> 1,680 + 1,960 + 1,960 = 5,600, between R and T1
    assert draws[:5] == [8200.0, 7560.0, 6720.0, 5880.0, 5600.0]
    assert [d.level for d in ds[:5]] == [LEVEL2, LEVEL2, LEVEL2, LEVEL1, NORMAL]
    intervals_to_budget = next(i for i, w in enumerate(draws) if w <= BUDGET_W)
    assert intervals_to_budget == 3
    assert sim.caps() == {LOW: 420.0, STD: 490.0, CRIT: 490.0}
    assert {a.tier for d in ds[:3] for a in d.actions} == {"low", "standard", "critical"}
    assert all(w <= BUDGET_W for w in draws[3:])
    assert sim.metric("llmfleet_power_capping_actions_total", direction="lower", tier="critical") == 3
    assert sim.metric("llmfleet_power_capping_actions_total", direction="lower", tier="low") == 4
    assert sim.metric("llmfleet_power_capping_level") == 0
    assert sim.metric("llmfleet_power_capping_domain_draw_watts") == 5600.0
    # every lowering action is event-like: reason, tier, old/new cap, a Warning
    a = ds[0].actions[0]
    assert (a.direction, a.old_cap_watts, a.new_cap_watts, a.event_reason, a.event_type) == \
        (LOWER, 700.0, 630.0, "PowerCapLowered", "Warning")
    assert "threshold 2" in a.message and a.tier == "low"  # lowest tier listed first


def _capped_after_surge() -> Sim:
    sim = Sim(rack(), {LOW: 700, STD: 650, CRIT: 700})
    sim.run(6)
    assert sim.caps() == {LOW: 420.0, STD: 490.0, CRIT: 490.0}
    return sim


def test_when_demand_falls_caps_are_lifted_with_hysteresis_highest_tier_first():
    sim = _capped_after_surge()
    # demand falls to 300 W/GPU everywhere: 3,600 W < R 5,525
    sim.demand.update({LOW: 300, STD: 300, CRIT: 300})
    ds = sim.run(20)
    raises = [t for t, d in enumerate(ds) if d.actions]
    # a raise needs 3 consecutive intervals below R, and the count starts again after each raise
    assert raises == [2, 5, 8, 11]
    assert all(a.direction == RAISE and a.reason == "released" for t in raises for a in ds[t].actions)
    # headroom to the raise ceiling is 5,687.5 - 3,600 = 2,087.5 W: one step (3 x 280 W) for all
    assert {a.group: a.new_cap_watts for a in ds[2].actions} == {CRIT: 560.0, STD: 560.0, LOW: 490.0}
    assert [a.tier for a in ds[2].actions] == ["critical", "standard", "low"]  # highest first
    assert sim.caps() == {LOW: 700.0, STD: 700.0, CRIT: 700.0}  # back to the plan, never above
    assert all(not d.actions for d in ds[12:])


def test_raise_headroom_goes_to_the_highest_tier_first():
    sim = _capped_after_surge()
    # low demand falls to 370: 1,480 + 1,960 + 1,960 = 5,400 W < R; the others still want 700
    sim.demand.update({LOW: 370, STD: 700, CRIT: 700})
    ds = sim.run(10)
    raised = [d for d in ds if d.actions]
    assert len(raised) == 1
    # headroom 5,687.5 - 5,400 = 287.5 W: critical +70 (280 W), standard the last 7.5 W / 4, low none
    assert sim.caps() == {LOW: 420.0, STD: 491.875, CRIT: 560.0}
    assert sim.draw() == 5687.5  # the raise ceiling, reached, not passed: no lowering follows
    t = next(i for i, d in enumerate(ds) if d.actions)
    assert all(d.level == NORMAL and not d.actions for d in ds[t + 1:])


def test_hysteresis_needs_consecutive_intervals_below_release():
    sim = _capped_after_surge()
    caps = sim.caps()
    # below R for 2 intervals, then 5,600 (inside the band), twice over: never 3 in a row
    pattern = [3600.0, 3600.0, 5600.0]
    ds = sim.run(30, measure=lambda t, _: pattern[t % 3])
    assert all(not d.actions for d in ds) and sim.caps() == caps


def test_constant_load_near_the_threshold_does_not_oscillate():
    # uncapped demand 6,600 W (101.5 % of the budget) held for 1,000 intervals, read with +/-1.5 %
    # deterministic measurement noise (more than a third of the 5 % band between R and T1)
    rng = np.random.default_rng(20240427)
    eps = rng.uniform(-0.015, 0.015, size=1000)
    sim = Sim(rack(), {LOW: 650, STD: 500, CRIT: 500})
    ds = sim.run(1000, noise=lambda t: eps[t])
    # by hand (without noise): 2,600 + 2,000 + 2,000 = 6,600 > T2 -> all to 630: 2,520 + 4,000 =
    # 6,520 > T2 -> all to 560: 2,240 + 4,000 = 6,240 > T2 -> all to 490: 1,960 x 3 = 5,880 > T1 ->
    # low to 420: 1,680 + 1,960 + 1,960 = 5,600 W, inside the band [R, T1] = [5,525, 5,850]: hold.
    # The noise (+/-84 W at 5,600) can dip the reading under R for 3 intervals in a row and allow a
    # raise, but a raise is bounded so it cannot push the draw back over T1: no group ever goes down
    # after it went up, i.e. no oscillation.
    changes = [(t, a.group, a.direction) for t, d in enumerate(ds) for a in d.actions]
    assert [c[2] for c in changes[:10]] == [LOWER] * 10
    assert [t for t, *_ in changes[:10]] == [0] * 3 + [1] * 3 + [2] * 3 + [3]
    for name in (LOW, STD, CRIT):
        dirs = [dr for _, g, dr in changes if g == name]
        first_raise = dirs.index(RAISE) if RAISE in dirs else len(dirs)
        assert LOWER not in dirs[first_raise:], (name, dirs)
    assert len(changes) <= 13  # 10 lowerings + at most one raise per group
    assert all(d.level not in (LEVEL1, LEVEL2) for d in ds[4:])
    assert all(true <= BUDGET_W for true, _, _ in sim.history[3:])
    # the counting does catch oscillation: with no hysteresis band (R just under T1, one interval)
    # the same load and noise make the low tier go down and up hundreds of times
    naive = Sim(rack(), {LOW: 650, STD: 500, CRIT: 500}, CappingSettings(release=0.899, release_intervals=1))
    naive.run(1000, noise=lambda t: eps[t])
    assert naive.changes() > 300
    # the same run again gives the same decisions (deterministic)
    sim2 = Sim(rack(), {LOW: 650, STD: 500, CRIT: 500})
    ds2 = sim2.run(1000, noise=lambda t: eps[t])
    assert [d.caps_watts for d in ds2] == [d.caps_watts for d in ds]


@pytest.mark.parametrize("reading", [UNKNOWN, float("nan"), float("inf"), -5.0], ids=repr)
def test_unknown_draw_changes_nothing(reading):
    sim = _capped_after_surge()
    caps = sim.caps()
    sim.demand.update({LOW: 800, STD: 800, CRIT: 800})  # a real surge the controller cannot see
    ds = sim.run(5, measure=lambda t, _: reading)
    assert all(d.level == UNKNOWN_DRAW and not d.actions and d.notes for d in ds)
    assert sim.caps() == caps
    assert sim.metric("llmfleet_power_capping_holds_total", reason="unknown-draw") == 5
    assert sim.metric("llmfleet_power_capping_level") == -1


def test_unknown_draw_restarts_the_release_count():
    sim = _capped_after_surge()
    caps = sim.caps()
    readings = [3600.0, 3600.0, UNKNOWN, 3600.0, 3600.0, 3600.0]
    ds = sim.run(6, measure=lambda t, _: readings[t])
    assert [bool(d.actions) for d in ds] == [False, False, False, False, False, True]
    assert sim.caps() != caps


def test_caps_stay_within_device_minimum_and_planned_cap_under_random_demand():
    # 2,000 intervals of random demand (seeded) from idle to far beyond what even the floors allow
    rng = np.random.default_rng(7)
    groups = (group(LOW, "low"), group(STD, "standard", gpus=2, planned=560.0), group(CRIT, "critical", gpus=6))
    # 12 GPUs at their 200 W floors draw 2,400 W > T2 of a 2,400 W budget: demand can beat every cap
    sim = Sim(PowerDomain("rack-b", 2400.0, 3.5, groups), {g.name: 0.0 for g in groups})
    limits = {g.name: (g.min_watts, g.planned_cap_watts) for g in groups}
    for _ in range(200):
        level = rng.uniform(0.1, 1.6)
        sim.demand = {g.name: float(rng.uniform(0.5, 1.0) * level * 700) for g in groups}
        sim.run(10)
    steps = [abs(d.caps_watts[n] - before[n]) for _, before, d in sim.history for n in before]
    assert max(steps) <= 70.0 + 1e-9  # never more than one step per interval
    for _, before, d in sim.history:
        for name, cap in d.caps_watts.items():
            lo, hi = limits[name]
            assert lo <= cap <= hi, (name, cap)
    floors = [d for true, _, d in sim.history if d.level == LEVEL2 and not d.actions]
    assert floors and all("minimum" in d.notes[-1] for d in floors)  # the over-budget demand was reached
    assert any(d.level == "below-release" and d.actions for _, _, d in sim.history)  # and raises happened


def test_caps_outside_the_range_are_clamped_first():
    dom = PowerDomain("rack-a", BUDGET_W, 1.3, (group(LOW, "low", planned=560.0, cap=700.0),
                                                group(STD, "standard", cap=150.0), group(CRIT, "critical")))
    d = decide(dom, 3000.0)
    assert {(a.group, a.direction, a.reason, a.new_cap_watts) for a in d.actions} == {
        (LOW, CLAMP, "above-plan", 560.0), (STD, CLAMP, "below-minimum", 200.0)}
    assert all(a.event_type == "Normal" for a in d.actions)


def test_a_domain_that_is_not_oversubscribed_is_never_capped_reactively():
    dom = with_caps(rack(oversubscription=1.0, budget=8400.0), {LOW: 420.0})
    d = decide(dom, 10_000.0)  # far above the budget: the plan guarantees it cannot be real GPU draw
    assert d.level == NOT_OVERSUBSCRIBED
    assert d.caps_watts == {LOW: 700.0, STD: 700.0, CRIT: 700.0}
    assert [(a.direction, a.reason) for a in d.actions] == [(RAISE, "not-oversubscribed")]


def test_planned_caps_beyond_the_oversubscription_factor_are_reported():
    d = decide(rack(oversubscription=1.2), 1000.0)  # 8,400 W > 1.2 x 6,500 = 7,800 W
    assert any("above oversubscription 1.2" in n for n in d.notes)


def test_a_single_tier_domain_is_its_own_lowest_tier():
    dom = PowerDomain("node-1", 2000.0, 1.4, (group(STD, "standard"),))
    d = decide(dom, 1850.0)  # 92.5 %: level 1
    assert d.level == LEVEL1 and d.caps_watts == {STD: 630.0}


def test_group_limits_fall_back_to_the_lowest_planner_level_when_the_minimum_is_unknown():
    nvl = get_gpu("H100-NVL")
    assert power_range(nvl).min_watts is None
    assert group_limits(nvl) == (280.0, 400.0)  # 70 % of its 400 W default limit


@pytest.mark.parametrize("make, field", [
    (lambda: group(LOW, "low", planned=800.0), "planned_cap_watts"),
    (lambda: GroupPower(LOW, "w", "low", 1, 0, 500.0, 500.0, 200.0, 700.0), "gpus"),
    (lambda: GroupPower(LOW, "w", "low", 1, 4, math.nan, 500.0, 200.0, 700.0), "cap_watts"),
    (lambda: PowerDomain("rack-a", -1.0, 1.3, ()), "budget_watts"),
    (lambda: PowerDomain("rack-a", 100.0, 0.8, ()), "oversubscription"),
    (lambda: PowerDomain("rack-a", 100.0, 1.3, (group(LOW, "low"), group(LOW, "low"))), "unique"),
    (lambda: CappingSettings(threshold1=0.97), "threshold1"),
    (lambda: CappingSettings(release_intervals=0), "release_intervals"),
])
def test_bad_input_names_the_object_and_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()
