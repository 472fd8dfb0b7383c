"""GPU power model (llmfleet.perf.power) and its use in the MILP's energy cost and power budget."""

import dataclasses
import json
from importlib import resources

import numpy as np
import pytest

from llmfleet.api.loader import load_fleet
from llmfleet.catalog.gpus import get_gpu, gpu_catalog
from llmfleet.perf.power import (PHASES, PowerParams, default_power, fit_power, gpu_power_watts, load_mlenergy,
                                 power_holdout_report, prefill_load_from_splitwise, replica_gpu_watts)
from llmfleet.solver import milp
from llmfleet.solver.milp import solve
from llmfleet.solver.problem import build_problem

from conftest import EXAMPLES, ROOT

MLENERGY = ROOT / "data" / "profiles" / "mlenergy_h100_configurations.csv"
SPLITWISE = ROOT / "data" / "profiles" / "splitwise_perf_model.csv"

LOMO_BOUND_PCT = 10.0
"""leave-one-model-out median absolute error of the per-GPU draw: 7.8 % measured
(``python -m llmfleet.perf.power``), bound with 2 points of margin"""
LOTPO_BOUND_PCT = 10.5
"""leave-one-TP-degree-out: 8.2 % measured, 2 points of margin"""


@pytest.fixture(scope="module")
def mlenergy():
    if not MLENERGY.is_file():
        pytest.skip(f"{MLENERGY} not present")
    return load_mlenergy(MLENERGY)


@pytest.fixture(scope="module")
def examples():
    return build_problem(load_fleet([EXAMPLES]))


def test_mlenergy_power_is_the_sum_over_the_gpus(mlenergy):
    """avg_power_watts counts all num_gpus GPUs: raw 8-GPU rows exceed one H100's 700 W TDP several
    times over, while per GPU every row lies below the TDP (and above idle)."""
    tdp = get_gpu("H100-SXM").tdp_watts
    assert mlenergy[mlenergy.num_gpus == 8].avg_power_watts.max() > 4 * tdp
    assert (mlenergy.gpu_watts <= tdp).all() and (mlenergy.gpu_watts > 0.1 * tdp).all()
    # the figure: the median draw under load is about three quarters of the TDP
    assert 0.70 < mlenergy.power_fraction.median() < 0.78


@pytest.mark.parametrize("phase", PHASES)
def test_draw_between_idle_and_tdp_for_any_input(phase):
    p = default_power()
    u = np.concatenate([[0.0, 1e-9, 1e9], np.random.default_rng(3).exponential(1.0, 500)])
    phi = np.random.default_rng(4).uniform(0, 1, u.shape)
    for gpu in gpu_catalog().values():
        w = gpu_power_watts(gpu, phase, u, phi)
        assert w.shape == u.shape
        assert (w >= p.idle_fraction * gpu.tdp_watts - 1e-9).all() and (w <= gpu.tdp_watts + 1e-9).all()


def test_draw_grows_with_load_and_prefill_draws_most():
    u = np.linspace(0.0, 20.0, 2001)
    for gpu in gpu_catalog().values():
        decode = gpu_power_watts(gpu, "decode", u)
        mixed = gpu_power_watts(gpu, "mixed", u, 0.3)
        prefill = gpu_power_watts(gpu, "prefill", u)
        assert (np.diff(decode) >= 0).all() and (np.diff(mixed) >= 0).all()
        assert decode[-1] > decode[0]  # memory-bound decode draws less than a saturated step
        assert (prefill >= mixed).all() and (mixed >= decode).all()
        assert (np.diff(gpu_power_watts(gpu, "mixed", 0.05, np.linspace(0, 1, 11))) >= 0).all()


def test_unknown_phase_is_refused():
    with pytest.raises(ValueError, match="phase"):
        gpu_power_watts(get_gpu("H100-SXM"), "training", 0.5)


def test_held_out_error(mlenergy):
    """Each model (and each TP degree) predicted by a fit that never saw it; the fit must also beat
    the best constant fraction of TDP and, by far, the TDP the planner assumed before."""
    r = power_holdout_report(mlenergy)
    lomo, lotpo = r.loc["leave-one-model-out"], r.loc["leave-one-TP-out"]
    assert lomo.groups >= 20 and lotpo.groups == 4
    assert lomo.model < LOMO_BOUND_PCT and lotpo.model < LOTPO_BOUND_PCT
    assert lomo.model < lomo.constant - 3 and lotpo.model < lotpo.constant - 3
    assert lomo.tdp > 30


def test_shipped_constants_are_the_fit_of_the_data(mlenergy):
    """power.json must be what ``python -m llmfleet.perf.power --write`` writes from the vendored rows."""
    shipped = default_power()
    refit = fit_power(mlenergy, PowerParams(idle_fraction=shipped.idle_fraction, prefill_load=shipped.prefill_load))
    for name in ("decode_floor", "decode_ceiling", "half_utilisation"):
        assert getattr(refit, name) == pytest.approx(getattr(shipped, name), rel=0.01), name
    text = json.loads(resources.files("llmfleet.perf").joinpath("power.json").read_text())
    assert text["fit"]["leave-one-model-out_mdape_pct"] < LOMO_BOUND_PCT


def test_prefill_draws_the_tdp_in_splitwise():
    """Splitwise's A100 prompt phases (>= 1 s) peak at about the TDP: the shipped prefill load is that, capped at 1."""
    if not SPLITWISE.is_file():
        pytest.skip(f"{SPLITWISE} not present")
    f_p, median, rows = prefill_load_from_splitwise(SPLITWISE)
    assert rows >= 30 and median > 0.95
    assert default_power().prefill_load == pytest.approx(f_p)


def test_planned_replicas_draw_between_idle_and_tdp(examples):
    p = default_power()
    for w in examples.workloads:
        for c in w.configs:
            tdp = c.pool.gpu.tdp_watts
            assert p.idle_fraction * tdp <= c.gpu_watts <= tdp
            if c.role == "prefill":
                assert c.gpu_watts == pytest.approx(p.prefill_load * tdp)


def test_replica_draw_grows_with_its_capacity(examples):
    """A replica loaded to a higher rate runs a larger batch, so draws at least as much."""
    w = examples.workloads[0]
    c = next(c for c in w.configs if c.role == "colocated")
    s = w.workload.spec
    args = (w.model, c.pool.gpu, c.tp, c.role, w.input_tokens, w.output_tokens)
    watts = [replica_gpu_watts(*args, c.capacity_rps * f, s.slo.percentile, w.share,
                               gpu_memory_utilization=s.serving.gpu_memory_utilization,
                               max_num_seqs=s.serving.max_num_seqs,
                               max_num_batched_tokens=s.serving.max_num_batched_tokens) for f in (0.1, 0.5, 1.0)]
    assert watts[0] <= watts[1] <= watts[2] and watts[0] < watts[2]


def _at_tdp(fp):
    """The same problem with every config at its TDP (the planner's former assumption)."""
    return dataclasses.replace(fp, workloads=[
        dataclasses.replace(w, configs=[dataclasses.replace(c, gpu_watts=None) for c in w.configs])
        for w in fp.workloads])


def test_energy_cost_below_the_tdp_figure(examples):
    priced = dataclasses.replace(examples, energy_price_per_kwh=0.15)
    plan, at_tdp = solve(priced), solve(_at_tdp(priced))
    gpu_hours = sum(a.config.cost_per_replica_hour * a.replicas for a in plan.assignments)
    energy = plan.cost_per_hour - gpu_hours
    tdp_energy = sum(a.gpus * a.config.pool.gpu.tdp_watts for a in plan.assignments) / 1000 * 0.15
    assert 0 < energy < tdp_energy
    assert plan.cost_per_hour < at_tdp.cost_per_hour
    # with no energy price the predicted draw changes nothing
    assert solve(examples).cost_per_hour == pytest.approx(solve(_at_tdp(examples)).cost_per_hour, rel=1e-9)


def test_power_budget_rows_bound_the_caps_and_with_oversubscription_the_draw(examples):
    free = solve(examples)
    predicted = free.power_watts
    at_tdp = sum(a.gpus * a.config.pool.gpu.tdp_watts for a in free.assignments)
    assert free.tdp_watts == pytest.approx(at_tdp) == pytest.approx(free.limit_watts)  # no caps without a budget
    assert predicted < at_tdp
    # the guarantee: the budget bounds every GPU at its power limit (cap, else the default = TDP)
    budget = dataclasses.replace(examples, power_budget_watts=at_tdp + 1.0)
    m = milp._build(budget, allow_shed=False)
    row = m.prob.get_constraint_by_name("power_budget")
    for (wi, ci), var in m.n.items():
        c = budget.workloads[wi].configs[ci]
        assert row.get(var, None) == pytest.approx(c.tp * c.pool.gpu.tdp_watts)
    assert m.prob.get_constraint_by_name("power_draw") is None
    # declared oversubscription: the limits may sum to f x budget, the predicted draw must fit it
    over = dataclasses.replace(examples, power_budget_watts=predicted + 1.0, power_oversubscription=1.5)
    m = milp._build(over, allow_shed=False)
    draw = m.prob.get_constraint_by_name("power_draw")
    for (wi, ci), var in m.n.items():
        c = over.workloads[wi].configs[ci]
        assert draw.get(var, None) == pytest.approx(c.tp * c.gpu_watts)
    plan = solve(over)
    assert plan.status == "optimal" and plan.cost_per_hour == pytest.approx(free.cost_per_hour, rel=1e-6)
    assert plan.power_watts <= over.power_budget_watts and plan.limit_watts <= 1.5 * over.power_budget_watts


def test_configs_without_a_prediction_count_at_tdp(examples):
    c = dataclasses.replace(examples.workloads[0].configs[0], gpu_watts=None)
    assert c.watts_per_gpu == c.pool.gpu.tdp_watts


def test_main_prints_the_held_out_table(capsys, monkeypatch):
    if not (MLENERGY.is_file() and SPLITWISE.is_file()):
        pytest.skip("vendored measurements not present")
    from llmfleet.perf.power import main
    assert main(["--data", str(MLENERGY), "--splitwise", str(SPLITWISE)]) == 0
    out = capsys.readouterr().out
    assert "leave-one-model-out" in out and "leave-one-TP-out" in out
