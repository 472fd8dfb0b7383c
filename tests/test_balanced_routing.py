"""The MILP routes only as the deployed router does (DESIGN §7a, issue 13): one load-balanced length
mix per workload, P/D by one prompt-length threshold, one group behind a plain Service, P/D pairs
that vLLM's NixlConnector accepts; and the SLO percentile spent as a budget (issue 14)."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest

from llmfleet.api.loader import load_fleet
from llmfleet.catalog.gpus import get_gpu
from llmfleet.catalog.models import resolve_model
from llmfleet.perf.steptime import load_profile, prefill_time_s
from llmfleet.solver.milp import routed_buckets, solve
from llmfleet.solver.pd_rules import attention_backend
from llmfleet.solver.problem import build_problem, servable_buckets

from conftest import EXAMPLES, mooncake_fleet, write_gamma_arrivals, write_llama_workload

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture(scope="module")
def example():
    fp = build_problem(load_fleet([EXAMPLES]))
    return fp, solve(fp)


def test_every_group_of_a_workload_gets_the_whole_length_mix_at_equal_utilisation(example):
    # A router sees a request's prompt, never its output length, and llm-d's picker balances by
    # load: each colocated group of a workload must receive the workload's own length mix, and a
    # load balancer that equalises queues runs every group at the same utilisation.
    fp, plan = example
    for w in fp.workloads:
        # the groups requests enter: colocated ones, or decode ones for a P/D workload (llm-d's
        # decode profile picks a pod for every request; prompts past the threshold are prefilled
        # elsewhere first)
        groups = [a for a in plan.assignments if a.workload == w.key and a.role != "prefill"]
        assert groups, w.key
        ok, misses = routed_buckets(w)
        mix = w.share[ok | misses] / w.share[ok | misses].sum()
        for a in groups:
            got = a.bucket_rate_rps[ok | misses] / a.bucket_rate_rps.sum()
            np.testing.assert_allclose(got, mix, rtol=1e-9, atol=1e-12)
        assert max(a.utilization for a in groups) - min(a.utilization for a in groups) < 1e-9
        assert sum(a.rate_rps for a in groups) == pytest.approx(w.rate_rps, rel=1e-6)
        for a in groups:  # each group carries its share within its capacity
            assert a.utilization <= 1.0 + 1e-6


def test_the_pinned_plan_is_only_for_comparison_and_routes_by_bucket(example):
    fp, _ = example
    pinned = solve(dataclasses.replace(fp, pin_buckets=True))
    mixes = []
    for a in pinned.assignments:
        if a.workload == "default/chat-8b" and a.rate_rps > 0:
            mixes.append(a.bucket_rate_rps / a.rate_rps)
    # Mélange's assumption lets groups take different size mixes (what no deployed router does)
    assert len(mixes) >= 2 and max(np.abs(m - mixes[0]).max() for m in mixes) > 0.01


def test_service_routing_runs_each_workload_on_one_group(tmp_path):
    # kube-proxy spreads requests evenly over pods: unequal replicas cannot share a workload
    policy = (EXAMPLES / "fleetpolicy.yaml").read_text() + "  routing: {mode: service}\n"
    (tmp_path / "fleetpolicy.yaml").write_text(policy)
    for name in ("workloads.yaml", "gpupools.yaml"):
        (tmp_path / name).write_text((EXAMPLES / name).read_text())
    shutil.copytree(EXAMPLES / "traces", tmp_path / "traces")  # traces must lie inside the folder
    plan = solve(build_problem(load_fleet([tmp_path])))
    assert plan.status == "optimal"
    for key in {a.workload for a in plan.assignments}:
        groups = {(a.pool, a.tp, a.role) for a in plan.assignments if a.workload == key}
        assert len(groups) == 1 and next(iter(groups))[2] == "colocated", groups


def test_attention_backends_follow_vllms_defaults():
    # vllm/platforms/cuda.py: FLASHINFER first on compute capability 10.x, FLASH_ATTN elsewhere
    assert attention_backend(get_gpu("B200")) == attention_backend(get_gpu("GB200")) == "FLASHINFER"
    assert {attention_backend(get_gpu(g)) for g in ("A100-80G", "L40S", "H100-SXM", "H200")} == {"FLASH_ATTN"}
    assert attention_backend(get_gpu("MI300X")) == "ROCM"
    assert attention_backend(get_gpu("RTX-PRO-6000")) == "gpu:RTX-PRO-6000"  # not established: own type only


PD_FLEET = """
apiVersion: llmfleet.dev/v1alpha1
kind: LLMWorkload
metadata: {name: summarise, namespace: prod}
spec:
  model: %(model)s
  traffic: {requestRatePerSecond: 6, inputTokens: {p50: 5000, p90: 7000, p99: 7900}, outputTokens: {p50: 45, p90: 60, p99: 100}}
  slo: {ttft: 2s, tpot: 30ms, percentile: 90}
  serving: {tensorParallelSizes: [1, 2], disaggregation: always, minReplicas: 2}
---
apiVersion: llmfleet.dev/v1alpha1
kind: GPUPool
metadata: {name: b200}
spec: {gpuType: B200, maxGPUs: 64, gpusPerNode: 8, interconnect: {domain: rdma, bandwidthGbitPerSecondPerGPU: 400}}
---
apiVersion: llmfleet.dev/v1alpha1
kind: GPUPool
metadata: {name: h100}
spec: {gpuType: H100-SXM, maxGPUs: 64, gpusPerNode: 8, interconnect: {domain: rdma, bandwidthGbitPerSecondPerGPU: 400}}
"""


def test_pd_pairs_share_one_attention_backend_and_minimums_are_serving_replicas(tmp_path):
    f = tmp_path / "pd.yaml"
    f.write_text(PD_FLEET % {"model": MODEL})
    fp = build_problem(load_fleet([f]))
    w = fp.workloads[0]
    # both GPU types can prefill and decode: the rule, not capacity, keeps them apart
    assert {(c.pool.name, c.role) for c in w.configs} >= {("b200", "prefill"), ("h100", "prefill"),
                                                           ("b200", "decode"), ("h100", "decode")}
    plan = solve(fp)
    assert plan.status == "optimal"
    backends = {attention_backend(get_gpu(a.gpu_type)) for a in plan.assignments}
    assert len(backends) == 1
    assert {a.role for a in plan.assignments} == {"prefill", "decode"}
    # minReplicas 2 are met by replicas that serve a request to its end (decode), and no prefill
    # group is kept without traffic
    assert sum(a.replicas for a in plan.assignments if a.role == "decode") >= 2
    assert all(a.rate_rps > 0 for a in plan.assignments)
    # P/D traffic balances: every prompt prefilled is decoded
    pre = sum(a.bucket_rate_rps for a in plan.assignments if a.role == "prefill")
    np.testing.assert_allclose(pre, w.rate_rps * w.share, rtol=1e-6)


BUDGET_FLEET = """
apiVersion: llmfleet.dev/v1alpha1
kind: LLMWorkload
metadata: {name: long, namespace: prod}
spec:
  model: %(model)s
  traffic: {requestRatePerSecond: 4, inputTokens: {p50: 1000, p90: 4000, p99: 12000}, outputTokens: {p50: 100, p90: 300, p99: 600}}
  slo: {ttft: 2s, tpot: 300ms, percentile: %(pct)s}
  serving: {tensorParallelSizes: [1], minReplicas: 0, disaggregation: never}
---
apiVersion: llmfleet.dev/v1alpha1
kind: GPUPool
metadata: {name: l4}
spec: {gpuType: L4, maxGPUs: 64, gpusPerNode: 8}
"""


def budget_problem(tmp_path, pct):
    f = tmp_path / f"budget{pct}.yaml"
    f.write_text(BUDGET_FLEET % {"model": MODEL, "pct": pct})
    return build_problem(load_fleet([f]))


def test_requests_no_gpu_serves_in_time_spend_the_slo_allowance_before_any_shortage(tmp_path):
    fp = budget_problem(tmp_path, 90)
    w = fp.workloads[0]
    bad = w.unservable
    assert bad is not None and bad.any()
    # independent reason: the prompt of the top bucket alone takes longer than the 2 s TTFT on an L4
    top = int(np.argmax(w.input_tokens))
    assert bad[top]
    assert prefill_time_s(resolve_model(MODEL), get_gpu("L4"), 1, w.input_tokens[top], p=load_profile("vllm-v1")) > 2.0
    m = w.slo_miss_share
    assert 0 < m <= 0.10
    # the rest is planned at p / (1 - m), so that all requests together still attain p
    assert w.planning_percentile == pytest.approx(90 / (1 - w.miss_budget))
    plan = solve(fp)
    assert plan.status == "optimal" and plan.workloads[0].shed_rps == 0
    assert any("planned as misses" in msg and "p90" in msg for msg in plan.messages)
    # the same sizes under p99 exceed its 1% allowance: now it is a shortage, named as such
    strict = solve(budget_problem(tmp_path, 99))
    assert strict.status == "shortage"
    assert strict.workloads[0].shed_rps == pytest.approx(m * fp.workloads[0].rate_rps, rel=1e-6)
    assert any("more than the 1% the p99 SLO allows" in msg for msg in strict.messages)


def test_a_group_that_misses_a_few_sizes_may_join_within_the_allowance(example):
    # chat-8b: an L40S replica cannot serve the rarest, longest prompts within 1 s, and they are
    # well under the p90 allowance; it joins the mix, its misses budgeted
    fp, plan = example
    w = next(w for w in fp.workloads if w.key == "default/chat-8b")
    assert w.miss_budget > 0 and w.planning_percentile > 90
    ok = servable_buckets(w.configs, len(w.share))
    for a in plan.assignments:
        if a.workload != w.key:
            continue
        fails = ok & (a.config.capacity_rps <= 0)
        assert w.share[fails].sum() <= w.miss_budget + 1e-12


def test_predicted_attainment_is_close_to_the_simulated_one(example):
    # the capacity model's own estimate, printed without --verify, against a replay of the Azure
    # hour through the simulator's vLLM scheduler and load-aware router (an independent model of
    # the queueing): within 5 points, and both above the 90% target
    from llmfleet.sim.engine import simulate
    from llmfleet.sim.scenario import from_plan
    from llmfleet.solver.milp import predicted_attainment
    from llmfleet.workload.traces import load_trace

    fp, plan = example
    predicted = predicted_attainment(fp, plan)
    chat = next(w for w in from_plan(plan, fp) if w.key == "default/chat-8b")
    simulated = simulate(chat, load_trace(EXAMPLES / "traces" / "azure_llm_2023_conv.csv", "azure")).attainment
    assert abs(predicted["default/chat-8b"] - simulated) < 0.05
    assert min(predicted.values()) >= 0.9 and simulated >= 0.9


def test_predicted_attainment_counts_each_minute_at_its_own_load(tmp_path, shared_data):
    # Mooncake's 17 minutes at TTFT 5 s / TPOT 100 ms p90: the plan is sized for the p90 minute
    # with headroom, and most minutes run below it. Counting every request at that peak load
    # under-states attainment; counting each minute's requests at that minute's load (the trace's
    # ``Demand.rate_levels``) is what the replay through the simulator measures.
    from llmfleet.sim.engine import simulate
    from llmfleet.sim.scenario import from_plan
    from llmfleet.sim.verify import workload_traces
    from llmfleet.solver.milp import predicted_attainment

    mooncake_fleet(tmp_path, shared_data, "{ttft: 5s, tpot: 100ms, percentile: 90}")
    fleet = load_fleet([tmp_path])
    fp = build_problem(fleet)
    w = fp.workloads[0]
    assert len(w.demand.rate_levels) > 1 and w.rate_rps > w.demand.rate_mean_rps  # the load does swing
    plan = solve(fp)
    traces, _ = workload_traces(fp, fleet)
    simulated = simulate(next(s for s in from_plan(plan, fp) if s.key == w.key), traces[w.key]).attainment
    over_period = predicted_attainment(fp, plan)[w.key]
    at_peak = predicted_attainment(fp, plan, over_period=False)[w.key]
    assert abs(over_period - simulated) < abs(at_peak - simulated)
    assert abs(over_period - simulated) < 0.03 and over_period >= 0.9 and simulated >= 0.9


@pytest.mark.parametrize("slo", ["{ttft: 3s, tpot: 40ms, percentile: 90}", "{ttft: 3s, tpot: 40ms, percentile: 99}",
                                 "{ttft: 5s, tpot: 100ms, percentile: 99}"])
def test_prefill_ttft_is_predicted_as_the_replay_measures_it(tmp_path, shared_data, slo):
    # Mooncake at TTFT 3 s / TPOT 40 ms: every prompt of 2k tokens or more is prefilled by the
    # plan's H100 TP-4 prefill group. Its TTFT at the SLO percentile, predicted over the trace's
    # minutes (``predicted_latency`` with the trace's load levels, the group's replicas as one
    # queue, each bucket's own prompt lengths), is within 25% of the simulator's over the
    # requests that group served. Before, each bucket queued alone at its mean prompt length:
    # 1.30x off at p99 (bench/bursty_verify.py). At 5 s / 100 ms the plan needs one TP-4 replica
    # at about 60% load, and its p99 is set by the prompts queued behind the trace's 191k-token
    # ones (7.5 s each): Kingman's tail alone, which sees only the prefill times' mean and SCV,
    # was 1.36x short; the wait for the prompt in service (``residual_wait_quantiles``) is not.
    from llmfleet.sim.engine import Simulation
    from llmfleet.sim.scenario import from_plan
    from llmfleet.sim.verify import workload_traces
    from llmfleet.solver.milp import _prefill_queue, period_levels, predicted_latency

    mooncake_fleet(tmp_path, shared_data, slo)
    percentile = float(slo.split("percentile: ")[1].rstrip("}"))
    fleet = load_fleet([tmp_path])
    fp = build_problem(fleet)
    w = fp.workloads[0]
    plan = solve(fp)
    prefill = [a for a in plan.assignments if a.role == "prefill"]
    assert plan.status == "optimal" and len(prefill) == 1
    a = prefill[0]
    traces, _ = workload_traces(fp, fleet)
    scenario = next(s for s in from_plan(plan, fp) if s.key == w.key)
    sim = Simulation(scenario, traces[w.key], seed=0)
    sim.run()
    gi = next(i for i, g in enumerate(scenario.groups) if g.role == "prefill")
    mine = sim.rq.entry_group == gi
    simulated = float(np.percentile((sim.rq.first - sim.rq.arrival)[mine], percentile))
    util, levels = period_levels(w, a.utilization)
    queue = _prefill_queue(w, [(a.config, a.bucket_rate_rps, util, a.replicas)], fp.params)
    ttft, tpot = predicted_latency(w, a.config, a.bucket_rate_rps, util, fp.params, levels=levels,
                                  replicas=a.replicas, queue=queue)
    assert tpot is None and ttft == pytest.approx(simulated, rel=0.25)


def test_a_prefill_group_may_miss_a_rare_size_within_the_allowance(tmp_path, shared_data):
    # Mooncake's long-context trace under TTFT 2 s: its ~47k-token prompts (14% of requests) fit
    # the TTFT only through H100 TP-4 prefill replicas, which cannot prefill the rarer ~51k-token
    # ones (under 1%) in time. Those may miss within the p90 allowance; shedding all would be wrong.
    mooncake_fleet(tmp_path, shared_data, "{ttft: 2s, tpot: 100ms, percentile: 90}")
    fp = build_problem(load_fleet([tmp_path]))
    plan = solve(fp)
    assert plan.status == "optimal" and plan.workloads[0].shed_rps == 0
    prefill = [a for a in plan.assignments if a.role == "prefill"]
    assert prefill and all(a.gpu_type == "H100-SXM" and a.tp == 4 for a in prefill)
    w = fp.workloads[0]
    missed = [b for b in range(len(w.share)) if prefill[0].bucket_rate_rps[b] > 0 and prefill[0].config.capacity_rps[b] <= 0]
    assert missed and w.share[missed].sum() <= w.miss_budget


@pytest.mark.parametrize("percentile, arrival_scv", [(99, None), (90, 7.0)])
def test_decode_tpot_is_predicted_as_the_replay_measures_it(tmp_path, shared_data, percentile, arrival_scv):
    # Mooncake at TTFT 3 s / TPOT 40 ms, as recorded at p99 and with Gamma arrivals of CV² 7 at
    # p90 (at p99 those plan short of the pool): the plan's decode group serves every request.
    # Its TPOT at the percentile, predicted over the trace's minutes, is within 25% of the
    # simulator's over the requests it decoded. Every request decodes in one batch whose
    # contexts come from the whole mix (``capacity.shared_batch``); before, each bucket was read
    # as if the batch held only its own size, and at p99 the 47k-token bucket's batch of K long
    # contexts set the figure: 1.35x the replay (bench/bursty_verify.py: 0.74 as replay over model).
    from llmfleet.sim.engine import Simulation
    from llmfleet.sim.scenario import from_plan
    from llmfleet.sim.verify import workload_traces
    from llmfleet.solver.milp import local_prefill_shares, period_levels, predicted_latency

    mooncake_fleet(tmp_path, shared_data, f"{{ttft: 3s, tpot: 40ms, percentile: {percentile}}}", arrival_scv=arrival_scv)
    fleet = load_fleet([tmp_path])
    fp = build_problem(fleet)
    w = fp.workloads[0]
    plan = solve(fp)
    decode = [a for a in plan.assignments if a.role == "decode"]
    assert plan.status == "optimal" and len(decode) == 1
    a = decode[0]
    traces, _ = workload_traces(fp, fleet)
    scenario = next(s for s in from_plan(plan, fp) if s.key == w.key)
    sim = Simulation(scenario, traces[w.key], seed=0)
    sim.run()
    gi = next(i for i, g in enumerate(scenario.groups) if g.role == "decode")
    rq = sim.rq
    mine = (rq.decode_group == gi) & (rq.out > 1)
    simulated = float(np.percentile(((rq.finish - rq.first) / (rq.out - 1))[mine], percentile))
    util, levels = period_levels(w, a.utilization)
    local = local_prefill_shares(plan.assignments, len(w.share))  # prompts under the P/D threshold
    ttft, tpot = predicted_latency(w, a.config, a.bucket_rate_rps, util, fp.params, levels=levels,
                                  replicas=a.replicas, local_prefill=local)
    assert ttft is None and tpot == pytest.approx(simulated, rel=0.25)


def test_the_prefill_split_is_what_the_replayed_router_gives_each_prefill_group(tmp_path, shared_data):
    # Mooncake with Gamma arrivals of CV² 7 at TTFT 5 s / TPOT 100 ms, p90: the plan prefills on
    # an H100 TP-1 and an H100 TP-4 group and gives the TP-1 one about a ninth of the long
    # prompts. The simulator's router (fewest in flight, ties at random: an independent model)
    # gives each prefill pod about as many whenever both are idle. ``prefill_router_split``
    # predicts each group's share of the prompts within 0.05 of the replay (measured 0.026); the
    # plan's split is off by several times that (measured 0.28).
    from llmfleet.sim.engine import Simulation
    from llmfleet.sim.scenario import from_plan
    from llmfleet.sim.verify import workload_traces
    from llmfleet.solver.milp import prefill_router_split

    mooncake_fleet(tmp_path, shared_data, "{ttft: 5s, tpot: 100ms, percentile: 90}", "standard",
                   "{tensorParallelSizes: [1, 2, 4], minReplicas: 1}", arrival_scv=7.0)
    fleet = load_fleet([tmp_path])
    fp = build_problem(fleet)
    w = fp.workloads[0]
    plan = solve(fp)
    prefill = [(gi, a) for gi, a in enumerate(plan.assignments) if a.role == "prefill"]
    assert plan.status == "optimal" and len({(a.gpu_type, a.tp) for _, a in prefill}) >= 2
    traces, _ = workload_traces(fp, fleet)
    scenario = next(s for s in from_plan(plan, fp) if s.key == w.key)
    sim = Simulation(scenario, traces[w.key], seed=0)
    sim.run()
    replayed = np.array([(sim.rq.entry_group == gi).sum() for gi, _ in prefill], dtype=float)
    replayed /= replayed.sum()
    split = prefill_router_split(w, [(a, a.bucket_rate_rps) for _, a in prefill], fp.params)
    predicted = np.array([split[id(a)].sum() for _, a in prefill])
    predicted /= predicted.sum()
    planned = np.array([a.rate_rps for _, a in prefill]) / sum(a.rate_rps for _, a in prefill)
    error = np.abs(predicted - replayed).max()
    assert error < 0.05 and np.abs(planned - replayed).max() > max(3 * error, 0.1)


def test_the_idle_first_split_runs_from_even_to_in_proportion_to_speed():
    # Closed-form ends of ``idle_first_split``: a pod twice as fast as another gets the same
    # share at light load (both idle nearly always: a tie broken at random), and at saturation
    # a share in proportion to its speed; in between, more than even and less than in proportion.
    from llmfleet.solver.milp import idle_first_split

    speeds, pods = np.array([1.0, 2.0]), np.array([1, 1])
    light = idle_first_split(0.003, speeds, pods)
    assert light[1] / light[0] == pytest.approx(1.0, rel=0.01)
    assert idle_first_split(3.0, speeds, pods) == pytest.approx([1.0, 2.0])
    mid = idle_first_split(1.5, speeds, pods)
    assert mid.sum() == pytest.approx(1.5) and 1.0 < mid[1] / mid[0] < 2.0
    # pods of one kind are alike: three of one speed share its traffic evenly
    assert idle_first_split(1.0, np.array([1.0]), np.array([3])) == pytest.approx([1.0 / 3.0])


def bursty_azure_chat(folder, arrival_scv: float, seed: int, slo: str, serving: str,
                      minutes: float | None = None) -> None:
    """``folder`` gains ``azure.csv`` (the Azure conversation trace, its first ``minutes`` or all,
    with Gamma arrivals of ``arrival_scv``, ``write_gamma_arrivals``) and ``w.yaml``: an
    LLMWorkload ``chat`` (``write_llama_workload``) replaying it at rateScale 4 with ``slo`` and
    ``serving`` as YAML flow mappings."""
    from llmfleet.workload.traces import load_trace

    azure = load_trace(EXAMPLES / "traces" / "azure_llm_2023_conv.csv", "azure")
    if minutes is not None:
        azure = azure[azure["arrival_s"] < minutes * 60.0].reset_index(drop=True)
    write_gamma_arrivals(azure, folder / "azure.csv", arrival_scv, seed=seed)
    write_llama_workload(folder, "chat", "{path: azure.csv, format: csv, rateScale: 4}", slo, "standard", serving)


def test_the_router_split_is_what_the_replayed_picker_gives_each_group(tmp_path):
    # The Azure conversation hour at rateScale 4 with Gamma arrivals of CV² 7, TTFT 1 s /
    # TPOT 80 ms at p90, on the example pools: the plan runs three colocated groups (H100, TP-2
    # L4 and L40S) and splits the traffic between them in proportion to their SLO capacity κ. The
    # simulator's picker sends each request to the pod with the fewest in flight, an independent
    # model of the router. The equal-batch split (``router_split``) gives each group's share of
    # the requests within 0.03 of what the replay sent it (measured 0.006); the plan's split is
    # many times further off, beyond the same 0.03 (measured 0.085): the slower groups get more
    # than their κ share.
    # (The plan is what makes the case: at TTFT 500 ms / TPOT 40 ms, the SLO this test used before
    # the demand was measured on the replayed timeline, it runs one group; at 2 s, since a burst
    # is spread over a group's replicas (``Burstiness.spread_over``), seven L40S pods alone; at
    # 1 s / 100 ms, since prompts that arrive together share an iteration in κ, nine L40S pods.)
    from llmfleet.sim.engine import Simulation
    from llmfleet.sim.scenario import from_plan
    from llmfleet.sim.verify import workload_traces
    from llmfleet.solver.milp import router_split

    bursty_azure_chat(tmp_path, 7.0, 2, "{ttft: 1s, tpot: 80ms, percentile: 90}", "{tensorParallelSizes: [1, 2, 4]}")
    for name in ("gpupools.yaml", "fleetpolicy.yaml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    fleet = load_fleet([tmp_path])
    fp = build_problem(fleet)
    w = fp.workloads[0]
    plan = solve(fp)
    entry = [a for a in plan.assignments if a.role == "colocated"]
    assert plan.status == "optimal" and len(entry) >= 2 and len(entry) == len(plan.assignments)
    traces, _ = workload_traces(fp, fleet)
    scenario = next(s for s in from_plan(plan, fp) if s.key == w.key)
    sim = Simulation(scenario, traces[w.key], seed=0)
    sim.run()
    replayed = np.array([(sim.rq.entry_group == gi).sum() for gi in range(len(scenario.groups))], dtype=float)
    replayed /= replayed.sum()
    split = router_split(w, plan.assignments, fp.params)
    predicted = np.array([split[id(a)].sum() for a in entry]) / sum(v.sum() for v in split.values())
    planned = np.array([a.rate_rps for a in entry]) / sum(a.rate_rps for a in entry)
    error = np.abs(predicted - replayed).max()
    assert error < 0.03 and np.abs(planned - replayed).max() > max(10 * error, 0.03)


SUMMARISER = """
apiVersion: llmfleet.dev/v1alpha1
kind: LLMWorkload
metadata: {name: summarise, namespace: default}
spec:
  model: meta-llama/Llama-3.1-8B-Instruct
  traffic:
    requestRatePerSecond: 6
    inputTokens: {p50: 2730, p90: 3702, p99: 3933}
    outputTokens: {p50: 167, p90: 372, p99: 3271}
  slo: {ttft: 4s, tpot: 50ms, percentile: 95}
  priority: standard
  serving: {tensorParallelSizes: [1, 2, 4, 8]}
"""
"""an 8B summariser declared by rate (arXiv summarisation token percentiles, as
bench/solver_scale.py's generator gives them) whose cheapest plan on the example pools mixes an
H100 and an L40S colocated group"""


def test_a_plan_the_picker_would_overload_is_planned_again(tmp_path):
    # An 8B summariser at 6 req/s (arXiv lengths), TPOT 50 ms at p95, on the example pools. The
    # MILP's cheapest plan mixes an H100 and an L40S colocated group, split in proportion to their
    # SLO capacities; the simulator's picker (fewest requests in flight, an independent model of
    # the router) gives the L40S far more, and the replay misses the target. ``solve`` sees that
    # coming (``router_split``), lowers the overloaded group's κ and plans again: the plan it
    # returns replays above the target, costs more, and leaves the caller's problem as it was.
    import time

    from llmfleet.sim.engine import Simulation
    from llmfleet.sim.scenario import from_plan
    from llmfleet.sim.verify import workload_traces
    from llmfleet.solver import milp

    for name in ("gpupools.yaml", "fleetpolicy.yaml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    (tmp_path / "w.yaml").write_text(SUMMARISER)
    fleet = load_fleet([tmp_path])
    fp = build_problem(fleet)
    w = fp.workloads[0]
    kappa = [c.capacity_rps.copy() for c in w.configs]
    traces, _ = workload_traces(fp, fleet)

    def replayed(plan):
        scenario = next(s for s in from_plan(plan, fp) if s.key == w.key)
        sim = Simulation(scenario, traces[w.key], seed=0)
        return sim.run().attainment

    first = milp._solve(fp, time.perf_counter() + 30)  # the MILP's plan, before the picker's check
    assert sum(1 for a in first.assignments if a.role == "colocated") >= 2
    assert replayed(first) < 0.95  # the problem is real: measured 0.76
    plan = milp.solve(fp)
    assert plan.status == "optimal" and any("endpoint picker's split" in m for m in plan.messages)
    assert replayed(plan) >= 0.95  # measured 0.98
    assert plan.cost_per_hour > first.cost_per_hour
    assert all(np.array_equal(c.capacity_rps, k) for c, k in zip(w.configs, kappa))
    assert all(any(a.config is c for c in w.configs) for a in plan.assignments)


def test_the_picker_check_never_trades_served_demand_for_it(tmp_path):
    # The same summariser with one H100 and one L40S in all: the picker still overloads the L40S,
    # but no plan on two GPUs serves 6 req/s with less on it. Lowering its κ would shed demand, so
    # ``solve`` keeps the plan that serves everything and says so.
    from llmfleet.solver import milp

    shutil.copy(EXAMPLES / "fleetpolicy.yaml", tmp_path / "fleetpolicy.yaml")
    pools = (("h100", "H100-SXM"), ("l40s", "L40S"))
    (tmp_path / "pools.yaml").write_text("\n---\n".join(
        f"apiVersion: llmfleet.dev/v1alpha1\nkind: GPUPool\nmetadata: {{name: {name}}}\n"
        f"spec: {{gpuType: {gpu}, maxGPUs: 1, gpusPerNode: 1}}\n" for name, gpu in pools))
    (tmp_path / "w.yaml").write_text(SUMMARISER)
    plan = milp.solve(build_problem(load_fleet([tmp_path])))
    assert plan.status == "optimal" and plan.workloads[0].shed_rps == 0
    assert sorted(a.gpu_type for a in plan.assignments) == ["H100-SXM", "L40S"]
    assert any("kept the plan before it" in m for m in plan.messages)


def test_a_stream_split_at_random_over_n_replicas_has_the_dispersion_spread_over_says():
    """``Burstiness.spread_over`` and ``Burstiness.thinned``: Gamma arrivals of CV² 3.7 and 7.3 (a
    renewal stream, whose index of dispersion over long windows is its CV²) split at random over
    n = 2, 4 and 8 replicas, or sent to one pod with probability 0.15 and 0.29 (the shares of the
    slow one-pod groups in ``bench/pod_dispersion.py``): the dispersion of that pod's counts over
    20 s windows is 1 + (d - 1) / n, or 1 + share (d - 1), of the whole stream's d measured the
    same way, within 10% (the thinned count's variance p² Var N + p(1-p) E N)."""
    from llmfleet.perf.capacity import Burstiness
    rng = np.random.default_rng(5)
    for c_a2 in (3.7, 7.3):
        arrivals = np.cumsum(rng.gamma(1.0 / c_a2, c_a2 / 10.0, 400_000))  # 10 req/s
        windows = np.arange(0.0, arrivals[-1], 20.0)

        def dispersion(times):
            counts = np.histogram(times, windows)[0]
            return counts.var() / counts.mean()

        whole = dispersion(arrivals)
        for n in (2, 4, 8):
            mine = arrivals[rng.integers(0, n, len(arrivals)) == 0]
            spread = Burstiness(arrival_scv=whole, queue_arrival_scv=whole).spread_over(n)
            assert spread.queue_scv == pytest.approx(dispersion(mine), rel=0.1), (c_a2, n)
            assert spread.arrival_scv == spread.queue_scv  # every dispersion is spread alike
        for share in (0.15, 0.29):
            mine = arrivals[rng.random(len(arrivals)) < share]
            thinned = Burstiness(arrival_scv=whole, queue_arrival_scv=whole).thinned(share)
            assert thinned.queue_scv == pytest.approx(dispersion(mine), rel=0.1), (c_a2, share)


def test_the_least_loaded_picker_deals_a_burst_evenly_over_pods_of_different_speeds():
    """``Burstiness.dealt``: half an hour of Gamma arrivals of CV² 3.7 and 7.3 at 16 req/s
    (1,000-token prompts, 200-token answers) over two H100 TP-1 pods and one L40S TP-2 pod of
    Llama-3.1-8B behind the simulator's least-loaded picker (an independent model of the router).
    The picker keeps the pods' requests in flight level, so each gets a third of a burst while the
    slow pod takes about a fifth of the traffic: its arrivals over 2 s windows are burstier than
    the even spread over three pods or a random thinning at its share say. Each pod's measured
    dispersion is closer to ``dealt(3, its share)`` than to either, and the slow pod's within 20%
    of it (measured 2.78 and 4.46 against 2.34 and 3.97; even spread 1.82 and 2.91, thinning 1.50
    and 2.23)."""
    from llmfleet.perf.capacity import Burstiness
    from llmfleet.sim.engine import Simulation
    from llmfleet.sim.scenario import SimGroup, SimWorkload
    from llmfleet.workload.demand import arrival_dispersion, bucket_index

    model = resolve_model("meta-llama/Llama-3.1-8B-Instruct")
    i, j = bucket_index(np.array([1000.0]), np.array([200.0]))
    rng = np.random.default_rng(4)
    for c_a2 in (3.7, 7.3):
        arrival = np.cumsum(rng.gamma(1.0 / c_a2, c_a2 / 16.0, 16 * 1800))
        requests = pd.DataFrame({"arrival_s": arrival, "input_tokens": 1000, "output_tokens": 200})
        groups = [SimGroup("colocated", "h100", get_gpu("H100-SXM"), 1, 2, np.array([6.0]), "net", 1e12),
                  SimGroup("colocated", "l40s", get_gpu("L40S"), 2, 1, np.array([4.0]), "net", 1e12)]
        sim = Simulation(SimWorkload("test/dealt", model, 10.0, 1.0, 99.0, 0.9, [(int(i[0]), int(j[0]))], groups),
                         requests)
        sim.run()
        whole = arrival_dispersion(arrival, 2.0)
        burst = Burstiness(arrival_scv=whole, queue_arrival_scv=whole)
        for gi in range(len(groups)):
            pod = (sim.rq.entry_group == gi) & (sim.rq.entry_replica == 0)
            share = float(pod.mean())
            measured = arrival_dispersion(sim.rq.arrival[pod], 2.0)
            error = {name: abs(np.log(b.queue_scv / measured)) for name, b in (
                ("dealt", burst.dealt(3, share)), ("even", burst.spread_over(3)), ("thinned", burst.thinned(share)))}
            assert error["dealt"] < min(error["even"], error["thinned"]), (c_a2, gi, error)
            if gi == 1:  # the slow pod
                assert share < 0.25 and burst.dealt(3, share).queue_scv == pytest.approx(measured, rel=0.2), c_a2


def test_bursty_colocated_replicas_are_planned_as_the_router_spreads_the_bursts(tmp_path):
    # The first 30 min of the Azure conversation trace at rateScale 4 (about 22 req/s) with Gamma
    # arrivals of CV² 3.7, Llama-3.1-8B colocated on H100 TP 1 only, TTFT 500 ms / TPOT 40 ms at
    # p99. Each replica was planned as if it met the whole stream's bursts: 17 replicas where the
    # replay needs 4 (``bench/colocated_sweep.py``). The router spreads a burst over the group's
    # pods, so one replica's κ is planned at the dispersion one of n sees (``spread_capacity``).
    # The replay (the simulator's least-loaded picker, an independent model of the router) of the
    # plan meets the p99 target, and half the plan's replicas miss it: the plan is within 2x of
    # what its own replay needs (measured: 6 planned, 4 needed).
    from llmfleet.sim.engine import Simulation
    from llmfleet.sim.scenario import from_plan
    from llmfleet.sim.verify import workload_traces

    bursty_azure_chat(tmp_path, 3.7, 0, "{ttft: 500ms, tpot: 40ms, percentile: 99}",
                      "{tensorParallelSizes: [1], disaggregation: never}", minutes=30.0)
    shutil.copy(EXAMPLES / "fleetpolicy.yaml", tmp_path / "fleetpolicy.yaml")
    (tmp_path / "pool.yaml").write_text("""
apiVersion: llmfleet.dev/v1alpha1
kind: GPUPool
metadata: {name: h100}
spec: {gpuType: H100-SXM, gpusPerNode: 8, maxGPUs: 64}
""")
    fleet = load_fleet([tmp_path])
    fp = build_problem(fleet)
    assert fp.workloads[0].burst.queue_scv > 3.0  # the planner sees the bursts
    plan = solve(fp)
    assert len(plan.assignments) == 1
    planned = plan.assignments[0].replicas
    traces, _ = workload_traces(fp, fleet)
    scenario = next(s for s in from_plan(plan, fp) if s.groups)

    def attainment(replicas: int) -> float:
        group = dataclasses.replace(scenario.groups[0], replicas=replicas)
        sim = Simulation(dataclasses.replace(scenario, groups=[group]), traces[scenario.key], seed=0)
        return sim.run().attainment

    assert attainment(planned) >= 0.99
    assert attainment(planned // 2) < 0.99, planned
    # and every size is served: under the whole stream's bursts the 4k-token prompts' κ was 0 (shed)
    assert plan.status == "optimal", plan.messages


def test_a_decode_group_gives_the_ttft_of_the_prompts_it_prefills_itself(tmp_path, shared_data):
    # Mooncake at TTFT 3 s / TPOT 40 ms p90: the plan's decode group prefills the prompts under
    # the P/D threshold itself, and ``predicted_attainment`` checks their TTFT there
    # (``_latencies_by_bucket(local_ttft=True)``: ``capacity._latencies_in_mix``'s queue of
    # those prompts, within 25% of the replay in tests/test_perf.py): finite for the buckets it
    # prefills, inf for those the prefill groups take (their TTFT is the prefill groups'), and
    # None without the flag (a decode group's latency, as the plan's table shows it, is its TPOT)
    from llmfleet.solver.milp import _latencies_by_bucket, local_prefill_shares

    mooncake_fleet(tmp_path, shared_data, "{ttft: 3s, tpot: 40ms, percentile: 90}")
    fp = build_problem(load_fleet([tmp_path]))
    plan = solve(fp)
    w = fp.workloads[0]
    groups = [a for a in plan.assignments if a.workload == w.key and a.rate_rps > 0]
    local = local_prefill_shares(groups, len(w.share))
    decode = next(a for a in groups if a.role == "decode")
    args = (w, decode.config, decode.bucket_rate_rps, min(decode.utilization, 1.0), fp.params, [50.0, 90.0])
    served, ttft, tpot = _latencies_by_bucket(*args, local_prefill=local, local_ttft=True)
    mine = local[served] > 0
    assert mine.any() and (~mine).any()
    for t in ttft:
        assert np.all(np.isfinite(t[mine]) & (t[mine] > 0)) and np.all(np.isinf(t[~mine]))
    assert np.all(ttft[1][mine] >= ttft[0][mine])
    assert _latencies_by_bucket(*args, local_prefill=local)[1] == [None, None]
    assert np.array_equal(_latencies_by_bucket(*args, local_prefill=local)[2][1], tpot[1])
