"""Re-plans that go on at once from a plan the solver's time limit stopped short
(``operator.handlers.FollowUps``): otherwise the moves such a plan leaves wait for the next change
to any workload, which then moves many workloads that did not change (issue 15)."""

from llmfleet.operator.handlers import FOLLOW_UPS, FollowUps


def test_a_plan_stopped_at_its_limit_is_followed_up_and_a_proven_one_is_not():
    f = FollowUps()
    assert not f.after("optimal", 100.0)
    assert f.after("feasible", 130.0)
    assert f.after("feasible", 110.0)  # it saved: go on
    assert not f.after("optimal", 101.0)  # proven: the series ends
    assert f.done == 0


def test_the_series_stops_without_a_saving_or_after_its_maximum():
    f = FollowUps()
    assert f.after("feasible", 130.0)
    assert not f.after("feasible", 130.0)  # no saving: stop, not a loop of equal plans
    costs = [200.0 - k for k in range(FOLLOW_UPS + 1)]  # each cheaper than the one before
    answers = [f.after("feasible", c) for c in costs]
    assert answers == [True] * FOLLOW_UPS + [False]
    assert f.after("feasible", 150.0)  # a later plan stopped at its limit starts a new series


def test_no_follow_up_for_a_shortage_or_without_a_plan():
    f = FollowUps()
    assert not f.after("shortage", 90.0)
    assert not f.after(None, None)
    assert not f.after("feasible", None)


def test_an_incremental_plan_with_unchecked_kept_workloads_is_followed_up():
    # an incremental re-plan proves its gap on what it planned only: kept workloads it had no time
    # to check against their best plans alone may still move (Plan.unchecked_kept)
    f = FollowUps()
    assert f.after("feasible", 130.0)
    assert f.after("optimal", 120.0, unchecked_kept=40)  # proven on its part, 40 unchecked: go on
    assert not f.after("optimal", 118.0, unchecked_kept=0)  # every kept workload checked: the series ends
    assert f.done == 0
    assert f.after("optimal", 118.0, unchecked_kept=3)
    assert not f.after("optimal", 118.0, unchecked_kept=3)  # no saving: stop
