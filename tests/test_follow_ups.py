"""Re-plans that go on at once from a plan the solver's time limit stopped short
(``operator.handlers.FollowUps``): otherwise the moves such a plan leaves wait for the next change
to any workload, which then moves many workloads that did not change (issue 15)."""

from llmfleet.operator.handlers import FOLLOW_UPS, FollowUps, shed_by_tier, stopped_at_limit
from llmfleet.solver.plan import Plan, WorkloadResult


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


def test_no_follow_up_for_a_shortage_whose_phases_finished_or_without_a_plan():
    f = FollowUps()
    assert not f.after("shortage", 90.0)
    assert not f.after("shortage", 90.0, stopped=False, shed_by_tier=(0.0, 5.0))
    assert not f.after(None, None)
    assert not f.after("feasible", None)


def test_a_shortage_stopped_at_its_limit_is_followed_up_while_it_sheds_less_in_tier_order():
    # a first plan of a fleet whose pools are too small stops at its limit and may leave a group
    # over-provisioned while others shed: the re-plan from it gives those replicas to the short
    # workloads. Progress in a shortage is less shed, tier by tier from the highest, and only then
    # a lower cost: shedding more of a higher tier is worse whatever it saves.
    f = FollowUps()
    assert f.after("shortage", 900.0, stopped=True, shed_by_tier=(0.0, 10.0, 50.0))
    assert f.after("shortage", 900.0, stopped=True, shed_by_tier=(0.0, 8.0, 55.0))  # silver sheds less
    assert not f.after("shortage", 850.0, stopped=True, shed_by_tier=(0.5, 0.0, 0.0))  # gold sheds more: stop
    assert f.done == 0
    assert f.after("shortage", 900.0, stopped=True, shed_by_tier=(0.0, 8.0, 55.0))
    assert f.after("shortage", 890.0, stopped=True, shed_by_tier=(0.0, 8.0004, 55.0))  # same shed, cheaper
    assert not f.after("shortage", 890.0, stopped=True, shed_by_tier=(0.0, 8.0, 55.0))  # no better: stop


def test_a_plans_shed_by_tier_and_whether_it_stopped_come_from_its_workloads_and_phases():
    def result(key, shed, tier, value):
        return WorkloadResult(key, 10.0, 10.0 - shed, shed, tier, 0, value)

    plan = Plan(status="shortage", cost_per_hour=1.0, lp_bound=None, dual_bound=None, gap=None, solve_time_s=1.0,
                solver="HiGHS", assignments=[], messages=[],
                workloads=[result("a/x", 2.0, "bronze", 1000), result("a/y", 0.5, "gold", 1000000),
                           result("a/z", 1.0, "bronze", 1000), result("a/w", 0.0, "silver", 100000)],
                phases=[{"phase": "tier gold (value 1000000): req/s shed", "status": "Optimal"},
                        {"phase": "cost, $/h", "status": "Optimal"}])
    assert shed_by_tier(plan) == (0.5, 0.0, 3.0)
    assert not stopped_at_limit(plan)
    plan.phases.append({"phase": "tier silver (value 100000): req/s shed", "status": "Time limit reached"})
    assert stopped_at_limit(plan)
    plan.phases[-1] = {"phase": "cost, $/h", "status": "not run: time limit"}
    assert stopped_at_limit(plan)


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
