"""Calibration of the capacity model from observed latency (llmfleet/operator/calibration.py).

The observations here come from the performance model itself run with slower or faster steps: an
engine whose every forward pass takes s times the profile's. Calibration must recover s from the
mean latency at the observed load, and a plan made with it must size the fleet for that engine.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from llmfleet.api.loader import FleetSpec
from llmfleet.api.models import FleetPolicy, GPUPool, LLMWorkload
from llmfleet.catalog.gpus import get_gpu
from llmfleet.catalog.models import resolve_model
from llmfleet.operator.calibration import Calibration, GroupLoad, implied_scale
from llmfleet.perf.steptime import decode_time_s, load_profile, prefill_time_s
from llmfleet.solver.milp import predicted_mean_latency, solve
from llmfleet.solver.problem import build_problem
from llmfleet.telemetry.client import GroupTelemetry
from llmfleet.telemetry.reading import Reading, Unknown

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
WINDOW_S = 60.0


def spec(rate_rps: float, tpot: str = "150ms") -> FleetSpec:
    pool = GPUPool.model_validate({"apiVersion": "llmfleet.dev/v1alpha1", "kind": "GPUPool", "metadata": {"name": "l4"},
                                   "spec": {"gpuType": "L4", "gpusPerNode": 8, "maxGPUs": 32}})
    wl = LLMWorkload.model_validate({
        "apiVersion": "llmfleet.dev/v1alpha1", "kind": "LLMWorkload", "metadata": {"name": "chat", "namespace": "default"},
        "spec": {"model": MODEL, "priority": "high",
                 "traffic": {"requestRatePerSecond": rate_rps, "inputTokens": {"p50": 300, "p90": 400, "p99": 450},
                             "outputTokens": {"p50": 100, "p90": 120, "p99": 125}},
                 "slo": {"ttft": "1s", "tpot": tpot},
                 "serving": {"tensorParallelSizes": [1], "disaggregation": "never"}}})
    policy = FleetPolicy.model_validate({"apiVersion": "llmfleet.dev/v1alpha1", "kind": "FleetPolicy",
                                         "metadata": {"name": "default"}, "spec": {"routing": {"mode": "service"}}})
    return FleetSpec(workloads=[wl], pools=[pool], policy=policy)


def engine_window(fp, a, true_scale: float, util: float) -> GroupTelemetry:
    """One telemetry window of a group whose engine runs every step ``true_scale`` times the
    profile's, loaded at ``util`` of its planned capacity per replica (all replicas Ready)."""
    wp = fp.workloads[0]
    c = dataclasses.replace(a.config, step_time_scale=true_scale)
    ttft, itl = predicted_mean_latency(wp, c, a.bucket_rate_rps, util, fp.params)
    rate = util / a.utilization * a.rate_rps  # the group's request rate at that load, req/s
    tokens = rate * float(np.dot(a.bucket_rate_rps, np.maximum(wp.output_tokens - 1, 0)) / a.bucket_rate_rps.sum())
    unknown = Reading.missing(Unknown.EMPTY_RESULT, "not read")
    return GroupTelemetry(ttft_s={}, itl_s={}, mean_ttft_s=Reading.of(ttft), mean_itl_s=Reading.of(itl),
                          power_watts=unknown, ttft_count=Reading.of(rate * WINDOW_S),
                          itl_count=Reading.of(tokens * WINDOW_S))


def load(a, fp, tel: GroupTelemetry, role: str = "colocated") -> GroupLoad:
    wp = fp.workloads[0]
    return GroupLoad(a.workload, MODEL, a.gpu_type, a.tp, role, wp, a.config, a.bucket_rate_rps, a.rate_rps,
                     a.utilization, a.replicas, a.replicas, tel)


def test_step_time_scale_lengthens_every_forward_pass_by_that_factor():
    model, gpu = resolve_model(MODEL), get_gpu("L4")
    p = load_profile("vllm-v1")
    slow = dataclasses.replace(p, step_time_scale=1.3)
    tokens, batch, ctx = np.array([128.0, 2048.0]), np.array([1.0, 64.0]), np.array([500.0, 64 * 900.0])
    assert np.allclose(prefill_time_s(model, gpu, 1, tokens, p=slow), 1.3 * prefill_time_s(model, gpu, 1, tokens, p=p))
    assert np.allclose(decode_time_s(model, gpu, 1, batch, ctx, p=slow), 1.3 * decode_time_s(model, gpu, 1, batch, ctx, p=p))


@pytest.mark.parametrize("true_scale", [0.7, 1.3, 1.8])
@pytest.mark.parametrize("util", [0.3, 0.6])
def test_implied_scale_recovers_the_engine_speed_behind_an_observed_mean(true_scale, util):
    fp = build_problem(spec(4.0))
    a = solve(fp).assignments[0]
    wp = fp.workloads[0]
    tel = engine_window(fp, a, true_scale, util)

    def predict(s):
        return predicted_mean_latency(wp, dataclasses.replace(a.config, step_time_scale=s), a.bucket_rate_rps,
                                      util, fp.params)
    explained = 0
    for i, observed in enumerate((tel.mean_ttft_s, tel.mean_itl_s)):
        if not observed.known:
            continue  # this engine cannot carry that load: no finite observation to explain
        s = implied_scale(lambda x: predict(x)[i], observed.value, 0.5, 2.0)
        explained += 1
        assert s == pytest.approx(true_scale, rel=0.02)
    assert explained == 2 or (true_scale > 1.5 and util > 0.5)


def test_a_slower_engine_is_learnt_within_the_hysteresis_and_the_plan_sizes_for_it():
    fp = build_problem(spec(8.0))
    plan = solve(fp)
    a = plan.assignments[0]
    cal = Calibration(WINDOW_S)
    # the real engine is 30% slower; it runs at 60% of the load the plan thinks it can carry
    changes = [cal.observe([load(a, fp, engine_window(fp, a, 1.3, 0.6))], fp.params, hysteresis=0.1)
               for _ in range(10)]
    scale = cal.step_scales()[(MODEL, "L4", 1, "colocated")]
    assert any(changes) and not changes[-1]  # it moved, then settled
    assert scale == pytest.approx(1.1 ** 3)  # 1.3 rounded up to the 10% grid of the hysteresis
    rows = cal.status(MODEL, [("L4", 1, "colocated")])
    assert {r["metric"] for r in rows} == {"ttft", "itl"} and all(r["windows"] == 10 for r in rows)

    replan = solve(build_problem(spec(8.0), step_scales=cal.step_scales()))
    b = replan.assignments[0]
    assert b.replicas > a.replicas
    # the slower engine at the new plan's load meets the ITL target (mean ITL below the TPOT SLO)
    fp2 = build_problem(spec(8.0), step_scales=cal.step_scales())
    wp2 = fp2.workloads[0]
    per_replica = b.rate_rps / b.replicas
    util_true = b.utilization * per_replica / (b.rate_rps / b.replicas)
    _, itl = predicted_mean_latency(wp2, dataclasses.replace(b.config, step_time_scale=1.3), b.bucket_rate_rps,
                                    util_true, fp2.params)
    assert itl < 0.150


def test_a_tick_past_its_budget_leaves_the_other_groups_to_the_next_tick_in_turn():
    fp = build_problem(spec(8.0))
    a = solve(fp).assignments[0]
    cal = Calibration(WINDOW_S)
    tel = engine_window(fp, a, 1.3, 0.6)
    groups = [dataclasses.replace(load(a, fp, tel), gpu_type=gpu) for gpu in ("L4", "L4-b", "L4-c")]
    seen = []
    for _ in range(3):
        cal.observe(groups, fp.params, hysteresis=0.1, budget_s=0.0)  # one group per tick
        seen.append({k.gpu for k, st in cal.table.states.items() if st.windows} - set().union(*seen))
    assert seen == [{"L4"}, {"L4-b"}, {"L4-c"}]


def test_idle_unknown_and_prefill_windows_change_nothing():
    fp = build_problem(spec(8.0))
    a = solve(fp).assignments[0]
    cal = Calibration(WINDOW_S)
    slow = engine_window(fp, a, 1.5, 0.6)
    idle = dataclasses.replace(slow, ttft_count=Reading.of(3.0), itl_count=Reading.of(20.0))
    unknown = dataclasses.replace(slow, mean_ttft_s=Reading.missing(Unknown.NAN, "NaN"),
                                  mean_itl_s=Reading.missing(Unknown.STALE, "old"))
    for tel in (idle, unknown, None):
        assert not cal.observe([load(a, fp, tel)], fp.params, hysteresis=0.1)
    assert not cal.observe([load(a, fp, slow, role="prefill")], fp.params, hysteresis=0.1)
    assert cal.step_scales() == {}
    rows = cal.status(MODEL, [("L4", 1, "prefill")])
    assert rows[0]["stepTimeScale"] == 1.0 and "not calibrated" in rows[0]["reason"]


def test_a_scale_that_leaves_no_configuration_is_withheld():
    fp = build_problem(spec(8.0, tpot="100ms"))
    a = solve(fp).assignments[0]
    cal = Calibration(WINDOW_S)
    for _ in range(6):
        cal.observe([load(a, fp, engine_window(fp, a, 1.6, 0.3))], fp.params, hysteresis=0.1)
    scales = cal.step_scales()
    assert scales[(MODEL, "L4", 1, "colocated")] > 1.3
    # at that speed no L4 replica decodes within 100 ms per token: the workload would be shed
    assert build_problem(spec(8.0, tpot="100ms"), step_scales=scales).workloads[0].configs == []
    cal.withhold({MODEL})
    assert cal.step_scales() == {}
    assert "not applied" in cal.status(MODEL, [("L4", 1, "colocated")])[0]["reason"]
