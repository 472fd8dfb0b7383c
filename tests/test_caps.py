"""Power caps chosen in the plan under a power budget (issue 17 item 2): cap levels as a dimension
of the configurations, the budget as a guarantee on Σ GPUs x cap, the gain over TDP accounting,
and the cap carried into the rendered Deployments and the simulation."""

from __future__ import annotations

import shutil

import pytest

from llmfleet.api.loader import load_fleet
from llmfleet.catalog.gpus import get_gpu
from llmfleet.operator.render import ANNOTATION_POWER_LIMIT
from llmfleet.perf.powercap import cap_levels, power_range
from llmfleet.solver.caps import without_caps
from llmfleet.solver.milp import solve
from llmfleet.solver.problem import build_problem

from conftest import EXAMPLES

BUDGET_WATTS = 6000


@pytest.fixture(scope="module")
def budget_fleet(tmp_path_factory):
    d = tmp_path_factory.mktemp("budget")
    shutil.copytree(EXAMPLES, d, dirs_exist_ok=True)
    policy = (d / "fleetpolicy.yaml").read_text()
    (d / "fleetpolicy.yaml").write_text(policy.replace("  headroom: 0.1", f"  powerBudgetWatts: {BUDGET_WATTS}\n  headroom: 0.1"))
    fleet = load_fleet([d])
    return fleet, build_problem(fleet)


def test_capped_configs_are_slower_never_faster_and_within_the_device_range(budget_fleet):
    _, fp = budget_fleet
    for w in fp.workloads:
        base = {(c.pool.name, c.tp, c.role): c for c in w.configs if c.cap_watts is None}
        capped = [c for c in w.configs if c.cap_watts is not None]
        assert capped
        for c in capped:
            r = power_range(c.pool.gpu)
            assert (r.min_watts or 0) <= c.cap_watts < r.default_watts
            assert c.cap_watts in cap_levels(c.pool.gpu)
            b = base[c.pool.name, c.tp, c.role]
            assert (c.capacity_rps <= b.capacity_rps + 1e-9).all()
            assert c.watts_per_gpu <= c.cap_watts + 1e-9


def test_under_a_budget_caps_serve_what_tdp_accounting_cannot(budget_fleet):
    fleet, fp = budget_fleet
    plan = solve(fp)
    tdp = solve(without_caps(fp))
    # the examples' fleet is 8.1 kW at TDP; at default limits the 70B model alone takes at least
    # 1.6 kW (its BF16 weights, 141 GB, leave a KV cache only from four 80 GB GPUs up; 400 W A100s
    # are the lowest TDP among them), and the rest of 6 kW does not carry the other two workloads:
    # TDP accounting sheds; caps serve everything
    assert tdp.status == "shortage" and sum(r.shed_rps for r in tdp.workloads) > 0
    assert plan.status in ("optimal", "feasible") and sum(r.shed_rps for r in plan.workloads) == 0
    assert plan.limit_watts <= BUDGET_WATTS + 1e-6  # the guarantee the power agent enforces
    capped = [a for a in plan.assignments if a.config.cap_watts is not None]
    assert capped
    doc = plan.to_dict()
    assert doc["powerCapWatts"] <= BUDGET_WATTS
    assert {g["powerCapWatts"] for g in doc["assignments"]} - {None}
    # equal-cost plans are broken toward the highest caps the budget allows: no capped group could
    # take its next level up within the budget
    for a in capped:
        ups = [lvl for lvl in cap_levels(get_gpu(a.gpu_type)) if lvl > a.config.cap_watts]
        assert all(plan.limit_watts + a.gpus * (u - a.config.cap_watts) > BUDGET_WATTS for u in ups)


def test_the_cap_reaches_the_deployment_and_the_simulator(budget_fleet):
    from llmfleet.operator.render import render_plan
    from llmfleet.sim.scenario import from_document, from_plan, to_document

    fleet, fp = budget_fleet
    plan = solve(fp)
    workloads = {w.key: w for w in fleet.workloads}
    pools = {p.metadata.name: p for p in fleet.pools}
    objs = render_plan(plan, workloads, pools, fleet.policy, "service")
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    for a in plan.assignments:
        cap = a.config.cap_watts
        mine = [d for d in deployments if d["metadata"]["labels"].get("llmfleet.dev/workload") == a.workload.split("/")[1]
                and (cap is None) == ("-cap" not in d["metadata"]["name"])]
        assert mine, a
        watts = {int(d["spec"]["template"]["metadata"]["annotations"][ANNOTATION_POWER_LIMIT]) for d in mine}
        assert (round(cap) if cap else int(get_gpu(a.gpu_type).tdp_watts)) in watts
    sims = from_document({"scenario": to_document(from_plan(plan, fp))})
    groups = [g for w in sims for g in w.groups if g.cap_watts is not None]
    # capped compute-bound groups run slower; a decode group capped above its draw does not
    assert groups and all(0 < g.compute_scale <= 1 for g in groups)
    assert any(g.compute_scale < 1 for g in groups)


def test_a_pools_own_budget_bounds_its_caps(tmp_path):
    # GPUPool spec.powerBudgetWatts alone (no fleet budget): the H100 pool's planned GPUs may add up
    # to at most 2 kW of power limits; at default limits (700 W each) only two H100s would fit
    d = tmp_path / "pool-budget"
    shutil.copytree(EXAMPLES, d)
    pools = (d / "gpupools.yaml").read_text()
    (d / "gpupools.yaml").write_text(pools.replace("  gpuType: H100-SXM\n", "  gpuType: H100-SXM\n  powerBudgetWatts: 2000\n"))
    fp = build_problem(load_fleet([d]))
    assert fp.pools["h100-sxm"].power_budget_watts == 2000 and fp.power_budget_watts is None
    plan = solve(fp)
    h100 = [a for a in plan.assignments if a.pool == "h100-sxm"]
    assert sum(a.gpus * a.config.limit_watts for a in h100) <= 2000 + 1e-6
    assert any(a.config.cap_watts is not None for a in h100) or sum(a.gpus for a in h100) <= 2
