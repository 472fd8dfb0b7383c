"""Re-plan rules: hysteresis, scale-down stabilisation, rollouts, Ready capacity, unknown demand."""

from __future__ import annotations

import numpy as np
import pytest

from llmfleet.telemetry.forecast import Forecast, SeasonalQuantileForecaster, UnknownDemand
from llmfleet.telemetry.stability import (Action, GroupCapacity, StabilityPolicy, StabilityState, Tick, decide,
                                          n_minus_one_holds)

TICK_S = 60.0
CAP = 10.0  # req/s one replica holds within the SLO


def always(_target):
    return True


def groups(ready=4, desired=4):
    return (GroupCapacity("H100-SXM/tp1/colocated", CAP, desired, ready),)


def run(demands, state, holds=always, start_s=0.0, **tick_kw):
    """Feed one tick per demand value; returns (decisions, final state), applying every re-plan."""
    decisions = []
    for i, d in enumerate(demands):
        tick = Tick(start_s + i * TICK_S, d, tick_kw.get("groups", groups()), **{k: v for k, v in tick_kw.items() if k != "groups"})
        decision, state = decide(state, tick, holds)
        decisions.append(decision)
    return decisions, state


def poisson_forecasts(rate_rps, n, seed, history=None):
    """Provisioned demand at each 60 s tick: Poisson counts at a constant rate, forecast at q 0.9."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rate_rps * TICK_S, n + 120) / TICK_S
    fc = SeasonalQuantileForecaster(TICK_S, 0.9)
    out = []
    for t in range(120, n + 120):  # two hours of history before the first tick
        f = fc.forecast(counts[:t], 3)  # the 180 s re-plan horizon
        out.append(f.provision_rps if isinstance(f, Forecast) else f)
    return out


def test_constant_load_gives_zero_changes_over_many_intervals():
    # 30 req/s with real sampling noise (Poisson counts per minute: ±2.6%), forecast at q 0.9
    demands = poisson_forecasts(30.0, 1000, seed=0)
    state = StabilityState(planned_demand_rps=demands[0])
    decisions, _ = run(demands, state)
    changes = [d for d in decisions if d.action != Action.HOLD]
    assert changes == []
    assert {d.reason for d in decisions} == {"WithinBand"}


def test_step_up_replans_at_the_first_interval():
    demands = poisson_forecasts(30.0, 40, seed=1)
    state = StabilityState(planned_demand_rps=demands[0])
    decisions, state = run(demands, state)
    assert all(d.action == Action.HOLD for d in decisions)
    # the load doubles: the forecast over a history ending in one 60 s sample of the new rate
    rng = np.random.default_rng(2)
    history = list(rng.poisson(30 * TICK_S, 160) / TICK_S) + [rng.poisson(60 * TICK_S) / TICK_S]
    f = SeasonalQuantileForecaster(TICK_S, 0.9).forecast(history, 3)
    d, state = decide(state, Tick(40 * TICK_S, f.provision_rps, groups()), always)
    assert d.action == Action.REPLAN_UP and d.reason in ("DemandAboveBand", "ReadyCapacityShort")
    assert d.demand_rps == pytest.approx(f.provision_rps) and d.demand_rps > 1.1 * demands[0]
    assert state.planned_demand_rps == d.demand_rps and state.last_change_s == 40 * TICK_S


def test_scale_down_waits_for_the_stabilisation_window():
    state = StabilityState(planned_demand_rps=30.0)
    decisions, state = run([15.0, 14.0, 16.0, 15.0, 15.0, 15.0, 15.0], state)
    # ticks at 0..300 s: below the band from 0 s; 300 s of stabilisation means the tick at 300 s
    assert [d.action for d in decisions[:5]] == [Action.HOLD] * 5
    assert {d.reason for d in decisions[:5]} == {"StabilisingDown"}
    assert decisions[5].action == Action.REPLAN_DOWN and decisions[5].reason == "DemandBelowBand"
    assert decisions[5].demand_rps == 16.0  # the highest demand in the window, not the last
    assert decisions[6].action == Action.HOLD  # planned is now 16: 15 is within the band


def test_a_bounce_into_the_band_restarts_the_window():
    state = StabilityState(planned_demand_rps=30.0)
    decisions, _ = run([15.0] * 4 + [29.0] + [15.0] * 5 + [15.0], state)
    downs = [i for i, d in enumerate(decisions) if d.action == Action.REPLAN_DOWN]
    assert downs == [10]  # 300 s after the bounce at index 4 ended (index 5 → 5 + 5)


def test_scale_down_only_if_the_remaining_replicas_hold():
    state = StabilityState(planned_demand_rps=30.0)
    asked = []

    def holds(target):
        asked.append(target)
        return False

    decisions, state = run([15.0] * 8, state, holds=holds)
    assert all(d.action == Action.HOLD for d in decisions)
    assert decisions[-1].reason == "RemainingWouldNotHold" and asked == [15.0] * 3
    assert state.planned_demand_rps == 30.0


def test_unknown_gap_during_falling_demand_never_scales_down():
    # demand falls from 30 to 12 req/s while Prometheus is unreachable for 10 minutes
    state = StabilityState(planned_demand_rps=30.0)
    before = [30.0, 29.0, 28.0]
    gap = [UnknownDemand("Prometheus unreachable")] * 10
    after = [12.0] * 8
    decisions, _ = run(before + gap + after, state)
    gap_and_after = decisions[len(before):]
    downs = [i for i, d in enumerate(decisions) if d.action == Action.REPLAN_DOWN]
    assert all(d.reason == "TelemetryUnknown" for d in gap_and_after[:10])
    # none during the gap, and none until 300 s of real data below the band after it
    assert downs == [len(before) + len(gap) + 5]


def test_unknown_samples_fed_through_the_forecaster_hold():
    rng = np.random.default_rng(3)
    history = list(rng.poisson(30 * TICK_S, 200) / TICK_S)
    fc = SeasonalQuantileForecaster(TICK_S, 0.9)
    planned = fc.forecast(history, 3).provision_rps
    state = StabilityState(planned_demand_rps=planned)
    actions = []
    for t in range(20):  # the metric disappears (renamed): every sample unknown from now on
        history.append(None)
        f = fc.forecast(history, 3)
        demand = f.provision_rps if isinstance(f, Forecast) else f
        d, state = decide(state, Tick(t * TICK_S, demand, groups()), always)
        actions.append(d.action)
    assert actions == [Action.HOLD] * 20
    # the first missing sample still has a known one before it (level = median of known): same plan
    assert state.planned_demand_rps == planned


def test_no_change_while_a_rollout_is_in_progress():
    state = StabilityState(planned_demand_rps=30.0)
    d, _ = decide(state, Tick(0.0, 45.0, groups(), rollout_in_progress=True), always)
    assert d.action == Action.HOLD and d.reason == "RolloutInProgress"
    decisions, _ = run([15.0] * 8, state, rollout_in_progress=True)
    assert all(x.action == Action.HOLD for x in decisions)


def test_not_ready_replicas_are_not_capacity():
    state = StabilityState(planned_demand_rps=30.0)
    # demand within the band, 4 replicas of 10 req/s desired: all Ready hold 40 req/s
    d, _ = decide(state, Tick(0.0, 31.0, groups(ready=4)), always)
    assert d.action == Action.HOLD and d.reason == "WithinBand"
    # two not Ready: 20 req/s of capacity for 31 req/s of demand
    d, _ = decide(state, Tick(0.0, 31.0, groups(ready=2)), always)
    assert d.action == Action.REPLAN_UP and d.reason == "ReadyCapacityShort"


def test_predicted_attainment_below_target_replans():
    state = StabilityState(planned_demand_rps=30.0)
    d, s = decide(state, Tick(0.0, 30.0, groups(), predicted_attainment=0.85, attainment_target=0.9), always)
    assert d.action == Action.REPLAN_UP and d.reason == "AttainmentBelowTarget" and d.demand_rps == 30.0
    d, _ = decide(state, Tick(0.0, 30.0, groups(), predicted_attainment=0.95, attainment_target=0.9), always)
    assert d.action == Action.HOLD


def test_cooldown_after_a_change():
    policy = StabilityPolicy(scale_down_stabilisation_s=0.0, cooldown_s=300.0)
    state = StabilityState(planned_demand_rps=30.0, last_change_s=0.0)
    d, _ = decide(state, Tick(120.0, 10.0, groups()), always, policy)
    assert d.action == Action.HOLD and d.reason == "Cooldown"
    d, _ = decide(state, Tick(300.0, 10.0, groups()), always, policy)
    assert d.action == Action.REPLAN_DOWN


def test_n_minus_one_rule():
    # Dynamo's N/(N-1): 2 replicas at 6 req/s each (12 total) cannot go to 1 of capacity 10
    assert not n_minus_one_holds(12.0, 2, 10.0)
    assert n_minus_one_holds(12.0, 3, 10.0)
    assert not n_minus_one_holds(1.0, 1, 10.0)


def test_bad_input_is_refused():
    state = StabilityState(planned_demand_rps=30.0, last_tick_s=100.0)
    with pytest.raises(ValueError, match="now_s"):
        decide(state, Tick(50.0, 30.0), always)
    with pytest.raises(ValueError, match="demand_rps"):
        decide(StabilityState(30.0), Tick(0.0, -1.0), always)
    with pytest.raises(ValueError, match="attainment"):
        decide(StabilityState(30.0), Tick(0.0, 30.0, predicted_attainment=0.5), always)
    with pytest.raises(ValueError, match="band_up"):
        StabilityPolicy(band_up=1.5)
    with pytest.raises(ValueError, match="replica_capacity_rps"):
        GroupCapacity("g", float("nan"), 1, 1)
