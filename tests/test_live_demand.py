"""Observed demand for the planner (llmfleet.operator.live): the mapping of observed rates and
length histograms onto the planner's Demand, and the per-tick rules (unknown holds, band,
declared floor, rollouts) with a stand-in for TelemetryClient (its real behaviour against
Prometheus is tested in tests/integration/test_telemetry.py and test_live_telemetry.py)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from conftest import SHARED_DATA

from llmfleet.api.models import LLMWorkload
from llmfleet.operator.live import LiveDemand, PlanView, observed_demand, plan_views, with_rate
from llmfleet.solver.plan import Assignment
from llmfleet.telemetry.client import GroupTelemetry, Snapshot, WorkloadTelemetry, _all_unknown
from llmfleet.telemetry.lengths import LengthDistribution, to_planner_buckets
from llmfleet.telemetry.reading import Reading, Unknown
from llmfleet.telemetry.stability import Action
from llmfleet.workload.demand import INPUT_EDGES_TOKENS, OUTPUT_EDGES_TOKENS, demand_from_spec, demand_from_trace
from llmfleet.workload.traces import load_trace

INF = float("inf")


def dist(edges, share, mean):
    return LengthDistribution(np.asarray(edges, float), np.asarray(share, float), np.asarray(mean, float), 100.0)


def test_observed_demand_is_the_independent_product_of_the_marginals_by_hand():
    # every input in [128, 512) with mean 300; outputs half in [32, 128) (mean 100), half in [128, 512) (300)
    inp = dist(INPUT_EDGES_TOKENS, [0, 1, 0, 0, 0, 0], [0, 300, 0, 0, 0, 0])
    out = dist(OUTPUT_EDGES_TOKENS, [0, 0.5, 0.5, 0, 0], [0, 100, 300, 0, 0])
    d = observed_demand(12.0, inp, out, rate_mean_rps=10.0)
    assert d.share.shape == (6, 5)
    assert d.share[1, 1] == pytest.approx(0.5) and d.share[1, 2] == pytest.approx(0.5)
    assert d.share.sum() == pytest.approx(1.0) and np.count_nonzero(d.share) == 2
    assert d.input_tokens[1, 1] == 300 and d.input_tokens[1, 2] == 300
    assert d.output_tokens[1, 1] == 100 and d.output_tokens[1, 2] == 300
    assert d.input_tokens[0, 0] == 0  # empty cells carry no length
    assert (d.rate_plan_rps, d.rate_mean_rps, d.arrival_scv) == (12.0, 10.0, 1.0)
    assert d.mean_input_tokens == pytest.approx(300) and d.mean_output_tokens == pytest.approx(200)
    # uniform on [128, 2*300-128 = 472]: variance 344^2/12, over 300^2
    assert d.input_scv[1, 1] == pytest.approx(344 ** 2 / 12 / 300 ** 2)


def test_observed_demand_from_a_vllm_histogram_keeps_the_mean_lengths():
    # 100 prompts of 1000 tokens (vLLM bucket (500, 1000]) and 100 of 3000 ((2000, 5000]);
    # 200 outputs of 150 tokens ((100, 200])
    le = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, INF]
    cum_in = [0] * 9 + [100, 100, 200, 200, 200]
    cum_out = [0] * 7 + [200] * 7
    inp = to_planner_buckets(le, cum_in, INPUT_EDGES_TOKENS)
    out = to_planner_buckets(le, cum_out, OUTPUT_EDGES_TOKENS)
    d = observed_demand(5.0, inp, out)
    # the uniform spreading inside vLLM's buckets puts the means at the buckets' midpoints
    # (750.5 and 3500.5 tokens: the integers 501..1000 and 2001..5000), and keeps the total mean
    assert d.mean_input_tokens == pytest.approx((750.5 + 3500.5) / 2, rel=1e-6)
    assert d.mean_output_tokens == pytest.approx(150.5, rel=1e-6)
    assert d.rate_mean_rps == d.rate_plan_rps == 5.0


def test_observed_demand_refuses_other_grids_and_bad_rates():
    inp = dist(INPUT_EDGES_TOKENS, [1, 0, 0, 0, 0, 0], [50, 0, 0, 0, 0, 0])
    out = dist(OUTPUT_EDGES_TOKENS, [1, 0, 0, 0, 0], [10, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="input_lengths is not on the planner's bucket grid"):
        observed_demand(1.0, out, out)
    with pytest.raises(ValueError, match="rate_plan_rps must be finite"):
        observed_demand(math.nan, inp, out)
    with pytest.raises(ValueError, match="output_lengths.share must sum to 1"):
        observed_demand(1.0, inp, dist(OUTPUT_EDGES_TOKENS, [0.5, 0, 0, 0, 0], [10, 0, 0, 0, 0]))


# ------------------------------------------------------------------------------ ticks

def workload(source: str, rate: float = 10.0) -> LLMWorkload:
    return LLMWorkload.model_validate({
        "apiVersion": "llmfleet.dev/v1alpha1", "kind": "LLMWorkload",
        "metadata": {"name": "chat", "namespace": "team-a"},
        "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct",
                 "traffic": {"source": source, "requestRatePerSecond": rate,
                             "inputTokens": {"p50": 300, "p90": 400, "p99": 450},
                             "outputTokens": {"p50": 100, "p90": 120, "p99": 125}},
                 "slo": {"ttft": "1s", "tpot": "50ms", "percentile": 90}}})


KEY = "team-a/chat"


class StubClient:
    """Stands in for TelemetryClient.snapshot: returns the arrival rate the test sets (None:
    Prometheus unreachable), with one input and output bucket and a group's latency."""

    def __init__(self):
        self.quantiles = (0.9,)
        self.window_s = 15.0  # the tick after unknown data or a rollout (10 s later) is settling
        self.rate: float | None = None
        self.young = 0  # series of the arrival counter younger than the window
        self.ttft_s = 0.2
        self.missing: Unknown | None = None  # Prometheus answers, but the arrival rate is unknown for this

    def snapshot(self, keys):
        keys = [tuple(k) for k in keys]
        if self.rate is None:
            r = Reading.missing(Unknown.UNREACHABLE, "ConnectionError")
            return Snapshot(at=0.0, workloads={k: _all_unknown(r) for k in keys}, reachable=r)
        inp = dist(INPUT_EDGES_TOKENS, [0, 1, 0, 0, 0, 0], [300, 300, 0, 0, 0, 0])
        out = dist(OUTPUT_EDGES_TOKENS, [0, 1, 0, 0, 0], [0, 100, 0, 0, 0])
        g = GroupTelemetry(ttft_s={0.9: Reading.of(self.ttft_s)}, itl_s={0.9: Reading.of(0.03)},
                           mean_ttft_s=Reading.of(0.1), mean_itl_s=Reading.of(0.02), power_watts=Reading.of(300))
        ok = Reading.of(self.rate, age_s=1.0)
        arrival = ok if self.missing is None else Reading.missing(self.missing, "renamed")
        tel = WorkloadTelemetry(arrival_rps=arrival, arrival_source="vllm", completion_rps=ok, mean_input_tokens=Reading.of(300),
                                mean_output_tokens=Reading.of(100), input_lengths=inp, output_lengths=out,
                                running=Reading.of(0), waiting=Reading.of(0), kv_cache_usage=Reading.of(0.1),
                                kv_cache_usage_max=Reading.of(0.1), power_watts=Reading.of(300), groups={"g": g},
                                targets=1, targets_down=0, age_s=Reading.of(1.0), young_series=self.young)
        return Snapshot(at=0.0, workloads={k: tel for k in keys}, reachable=Reading.of(1.0))


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def ticker(source="observed", rate=10.0, stabilisation_s=30.0, declared=None):
    client, clock = StubClient(), Clock()
    live = LiveDemand(client, scale_down_stabilisation_s=stabilisation_s, cooldown_s=stabilisation_s, clock=clock)
    w = workload(source, rate)
    declared = declared or demand_from_spec(w.spec.traffic)

    def tick(observed, view=PlanView()):
        client.rate = observed
        clock.t += 10.0
        return live.tick({KEY: w}, lambda k: declared, {KEY: view}, 10.0, 0.1).get(KEY)

    return live, tick, w, client


def test_unknown_telemetry_holds_the_plan_and_never_lowers_demand():
    live, tick, w, _ = ticker()
    for _ in range(3):
        assert tick(10.0).action == Action.HOLD  # within the band around the declared 10 req/s
    decisions = [tick(None) for _ in range(20)]  # Prometheus down for 200 s, beyond the 30 s window
    assert {d.action for d in decisions} == {Action.HOLD}
    assert {d.reason for d in decisions} == {"TelemetryUnknown"}
    assert live.demands() == {}  # the declared demand stays in force
    fields, conds = live.status(KEY, w)
    stale = {c[0]: c for c in conds}["TelemetryStale"]
    assert stale[1] is True and stale[2] == "PrometheusUnreachable"
    assert fields["observedDemandRps"] is None and fields["forecastDemandRps"] is None
    assert fields["observedPowerWatts"] is None  # unknown, not 0


def test_a_hold_on_unknown_demand_is_logged_once_per_cause(caplog):
    # One line per decision, not per tick: the same hold repeated stays quiet. But a hold whose
    # cause changes while its reason stays TelemetryUnknown (Prometheus was unreachable; now it
    # answers and the arrival metric has no series, as after a rename) is news to the operator.
    caplog.set_level(logging.INFO, logger="llmfleet.operator.live")
    live, tick, _, client = ticker()
    for _ in range(3):
        tick(10.0)
    holds = lambda: [r.getMessage() for r in caplog.records if "Hold (TelemetryUnknown)" in r.getMessage()]  # noqa: E731
    for _ in range(4):
        tick(None)
    assert len(holds()) == 1 and "PrometheusUnreachable" in holds()[0]
    client.missing = Unknown.MISSING_SERIES
    for _ in range(4):
        assert tick(10.0).reason == "TelemetryUnknown"
    assert len(holds()) == 2 and "MissingSeries" in holds()[1]


def test_a_rise_beyond_the_band_replans_at_the_observed_mix_and_a_fall_waits():
    live, tick, w, client = ticker(stabilisation_s=30.0)
    for _ in range(12):  # enough history for the forecaster's ratios (min 10 samples)
        assert tick(10.0).action == Action.HOLD
    d = tick(20.0)
    assert d.action == Action.REPLAN_UP and d.reason == "DemandAboveBand"
    demand = live.demands()[KEY]
    assert demand.rate_plan_rps == pytest.approx(d.demand_rps) and d.demand_rps > 11.0
    assert demand.share[1, 1] == pytest.approx(1.0)  # the observed mix, not the declared one
    fp = live.fingerprint()
    for _ in range(3):
        tick(20.0)
    # demand falls: held for the stabilisation window (30 s), then re-planned down
    downs = [tick(5.0) for _ in range(6)]
    assert [x.action for x in downs[:3]] == [Action.HOLD] * 3
    assert {x.reason for x in downs[:3]} <= {"StabilisingDown", "Cooldown"}
    assert Action.REPLAN_DOWN in [x.action for x in downs]
    assert live.fingerprint() != fp
    fields, conds = live.status(KEY, w)
    assert fields["observedDemandRps"] == 5.0
    assert fields["observedPowerWatts"] == 300.0  # DCGM's sum over the workload's GPUs
    assert {c[0]: c[1] for c in conds} == {"TelemetryStale": False, "SLOAtRisk": False}


def test_a_replan_on_telemetry_keeps_the_declared_traces_burstiness():
    # Prometheus reads rates over windows of a minute and more; the clumps within them, which
    # decide TTFT, were measured from the declared trace (the real Azure conversation trace at
    # the example's 4x). A live re-plan takes the observed rate and length mix and keeps those.
    trace = load_trace(SHARED_DATA / "traces/azure_llm_2023_conv.csv", "azure")
    declared = demand_from_trace(trace, rate_scale=4.0)
    assert declared.arrival_idc[-1][1] > 1.5 and declared.arrival_followers[-1][1] > 0.0  # not Poisson
    live, tick, _, _ = ticker(declared=declared)
    for _ in range(12):
        assert tick(declared.rate_plan_rps).action == Action.HOLD
    assert tick(2.5 * declared.rate_plan_rps).action == Action.REPLAN_UP
    demand = live.demands()[KEY]
    assert demand.share[1, 1] == pytest.approx(1.0)  # the observed mix
    assert (demand.arrival_scv, demand.arrival_idc, demand.arrival_followers, demand.rate_levels) == \
        (declared.arrival_scv, declared.arrival_idc, declared.arrival_followers, declared.rate_levels)
    assert demand.window_counts is declared.window_counts  # the length mix shifts minute by minute as declared
    # a later rate change on the same mix keeps them too, and the length quantiles
    moved = with_rate(demand, 3.0 * declared.rate_plan_rps)
    assert moved.rate_plan_rps == pytest.approx(3.0 * declared.rate_plan_rps)
    assert moved.arrival_idc == declared.arrival_idc and moved.rate_levels == declared.rate_levels
    assert with_rate(declared, 1.0).input_quantiles is declared.input_quantiles


def test_max_source_keeps_the_declared_rate_as_a_floor():
    live, tick, _, _ = ticker(source="max", rate=10.0, stabilisation_s=10.0)
    decisions = [tick(2.0) for _ in range(20)]
    assert {d.action for d in decisions} == {Action.HOLD}  # 2 req/s observed, but 10 declared
    assert live.demands() == {}


def test_declared_source_is_not_read():
    live, tick, _, _ = ticker(source="declared")
    assert tick(100.0) is None and live.workloads == {}


def test_no_replan_during_a_rollout_and_slo_at_risk_from_observed_latency():
    live, tick, w, client = ticker()
    for _ in range(12):
        tick(10.0)
    d = tick(30.0, PlanView(rollout_in_progress=True))
    assert d.action == Action.HOLD and d.reason == "RolloutInProgress"
    # the tick after a rollout reads a rate window that still holds the old pods' share: settling
    assert tick(30.0).reason == "Settling"
    assert tick(30.0).action == Action.REPLAN_UP
    client.ttft_s = 1.5  # above the 1 s p90 target
    tick(10.0)
    conds = {c[0]: c for c in live.status(KEY, w)[1]}
    assert conds["SLOAtRisk"][1] is True and "TTFT p90 1.5s > 1s" in conds["SLOAtRisk"][3]


def test_a_rate_read_while_a_series_is_young_is_settling_for_at_most_two_windows():
    live, tick, _, client = ticker()
    for _ in range(12):
        tick(10.0)
    # a pod Prometheus discovered late: its series is young, and the rate reads low, well after
    # the clock-based settling ended; no decision on it (a plain reading would re-plan down)
    client.young = 5
    d = tick(6.0)
    assert d.action == Action.HOLD and d.reason == "Settling" and "5 series first scraped inside" in d.message
    assert math.isnan(live.workloads[KEY].history[-1])
    # pods replaced faster than the window would keep it young for good: after two windows
    # (2 x 15 s) the rate is used
    reasons = [tick(6.0).reason for _ in range(4)]
    assert reasons[:2] == ["Settling", "Settling"] and "Settling" not in reasons[2:]
    client.young = 0
    tick(6.0)
    client.young = 5
    assert tick(6.0).reason == "Settling"  # a new run of young series settles again


def test_plan_views_see_rollouts_and_ready_capacity():
    a = Assignment(workload=KEY, pool="h100", gpu_type="H100-SXM", tp=1, replicas=4, gpus=4, cost_per_hour=1.0,
                   rate_rps=20.0, utilization=0.5, bucket_rate_rps=np.zeros(1))

    def dep(available, generation=1, observed=1):
        return {"metadata": {"name": "chat-dep", "namespace": "team-a", "generation": generation,
                             "labels": {"llmfleet.dev/workload": "chat"}},
                "spec": {"replicas": 4},
                "status": {"observedGeneration": observed, "updatedReplicas": 4, "availableReplicas": available}}

    v = plan_views([a], [dep(4)], "llmfleet.dev/workload", lambda name, a: "chat-dep")[KEY]
    assert not v.rollout_in_progress
    # 20 req/s at utilisation 0.5 on 4 replicas: 10 req/s each
    assert [(g.replica_capacity_rps, g.ready) for g in v.groups] == [(10.0, 4)]
    assert plan_views([a], [dep(2)], "llmfleet.dev/workload", lambda n, a: "chat-dep")[KEY].rollout_in_progress
    assert plan_views([a], [dep(4, 2, 1)], "llmfleet.dev/workload", lambda n, a: "chat-dep")[KEY].rollout_in_progress
