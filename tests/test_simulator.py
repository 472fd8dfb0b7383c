"""The trace-driven simulator: queueing against closed forms, conservation of requests, P/D
routing inside KV domains, and KV-cache preemption."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from llmfleet.api.loader import load_fleet
from llmfleet.catalog.gpus import get_gpu
from llmfleet.catalog.models import resolve_model
from llmfleet.perf.capacity import kv_capacity_tokens
from llmfleet.perf.steptime import decode_time_s, prefill_time_s, step_time_s
from llmfleet.sim.engine import Simulation
from llmfleet.sim.scenario import SimGroup, SimWorkload, from_document, from_plan, to_document
from llmfleet.sim.verify import Round, best_round
from llmfleet.solver.milp import solve
from llmfleet.solver.problem import build_problem
from llmfleet.workload.traces import load_trace

from conftest import EXAMPLES, mooncake_fleet

MODEL = resolve_model("meta-llama/Llama-3.1-8B-Instruct")
A100 = get_gpu("A100-80G")


def poisson_trace(rate_rps: float, n: int, input_tokens: int, output_tokens: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"arrival_s": np.cumsum(rng.exponential(1.0 / rate_rps, n)),
                         "input_tokens": np.full(n, input_tokens), "output_tokens": np.full(n, output_tokens)})


def test_step_time_reduces_to_the_phase_step_times():
    assert step_time_s(MODEL, A100, 2, 1000, 1000**2 / 2, 0, 0) == pytest.approx(prefill_time_s(MODEL, A100, 2, 1000))
    assert step_time_s(MODEL, A100, 2, 0, 0, 16, 16 * 900) == pytest.approx(decode_time_s(MODEL, A100, 2, 16, 16 * 900))


def md1_replay(rho: float, prompt: int = 1000):
    """(result, each prompt's wait for its prefill in s, the prefill time s) of a simulated prefill
    replica (A100, TP 1) given 40,000 Poisson arrivals of ``prompt``-token prompts at load ``rho``,
    one prompt per iteration: an M/D/1 queue."""
    service = float(prefill_time_s(MODEL, A100, 1, prompt))
    rate = rho / service
    w = SimWorkload("t/md1", MODEL, ttft_s=60, tpot_s=1, percentile=90, gpu_memory_utilization=0.9, buckets=[(2, 0)],
                    groups=[SimGroup("prefill", "p", A100, 1, 1, np.array([rate]), "net", 1e12),
                            SimGroup("decode", "d", A100, 1, 4, np.array([rate]), "net", 1e12)])
    sim = Simulation(w, poisson_trace(rate, 40_000, prompt, 2), max_batched_tokens=prompt)
    res = sim.run()
    return res, sim.rq.prefill_end - sim.rq.arrival - service, service


@pytest.mark.parametrize("rho", [0.5, 0.85])
def test_prefill_queue_is_md1(rho):
    """One prompt per iteration on a prefill replica with Poisson arrivals is an M/D/1 queue:
    the mean wait must match Pollaczek-Khinchine, W = ρ s / (2 (1 - ρ)), and the 90th percentile
    stay near the Kingman exponential tail the planner's capacity model uses."""
    res, wait, service = md1_replay(rho)
    assert res.finished == res.requests
    assert wait.min() >= -1e-9
    assert wait.mean() == pytest.approx(rho * service / (2 * (1 - rho)), rel=0.05)
    kingman_p90 = service * np.log(rho / 0.1) / (2 * (1 - rho))
    assert 0.85 * kingman_p90 <= np.percentile(wait, 90) <= 1.02 * kingman_p90


@pytest.mark.parametrize("rho, q", [(0.1, 0.95), (0.2, 0.85), (0.2, 0.9)])
def test_the_prompt_in_service_bounds_the_wait_at_light_load(rho, q):
    """At light load an arrival that waits mostly waits for the one prompt in service, whose
    remaining time is uniform for prompts of one size: P(W > t) >= ρ (1 - t/s) (PASTA). The
    bound (``PrefillQueue.residual_wait_quantiles``) holds in the simulated M/D/1 queue, and
    where it lies above Kingman's exponential tail it is the nearer of the two (measured at
    ρ 0.1, p95: replay 0.54 s, Kingman 0.39, bound 0.50, in units of the prefill time)."""
    from llmfleet.perf.capacity import PrefillQueue, mdl_wait_quantile_s

    _, wait, service = md1_replay(rho)
    rate = rho / service
    replay = float(np.percentile(wait, q * 100))
    bound = float(PrefillQueue(rate, service, 0.0, 1, np.array([service]), np.array([1.0]))
                  .residual_wait_quantiles(np.array([q]))[0])
    kingman = float(mdl_wait_quantile_s(np.array(rate), service, np.array([q]))[0])
    assert bound == pytest.approx(service * (1.0 - (1.0 - q) / rho))
    assert bound <= replay * 1.02 and bound > kingman
    assert abs(max(bound, kingman) - replay) < abs(kingman - replay)


def test_example_plan_replay_conserves_requests_and_keeps_kv_in_domain():
    fp = build_problem(load_fleet([EXAMPLES]))
    plan = solve(fp)
    chat = next(w for w in from_plan(plan, fp) if w.key == "default/chat-8b")
    trace = load_trace(EXAMPLES / "traces" / "azure_llm_2023_conv.csv", "azure").iloc[:3000]
    sim = Simulation(chat, trace, router="plan-shares")  # the comparison router: checked below
    res = sim.run()
    assert res.finished == res.requests == 3000
    rq = sim.rq
    assert (rq.first >= rq.arrival).all() and (rq.finish >= rq.first).all()
    assert sum(g.requests for g in res.groups if g.role != "decode") == 3000  # each request enters once
    for r in np.flatnonzero(rq.decode_group >= 0):
        assert chat.groups[rq.entry_group[r]].role == "prefill"
        assert chat.groups[rq.decode_group[r]].kv_domain == chat.groups[rq.entry_group[r]].kv_domain
    # the plan-shares router follows the plan's per-bucket shares: a request of bucket b goes to
    # entry group g with probability rate[g, b] / Σ_g rate[g, b]
    entry = [g for g in chat.groups if g.role != "decode"]
    rates = np.array([g.bucket_rate_rps for g in entry])  # (G, S)
    buckets = chat.bucket_of(trace["input_tokens"].to_numpy(), trace["output_tokens"].to_numpy())
    assert (buckets >= 0).all()
    expected = (rates / rates.sum(axis=0, keepdims=True))[:, buckets].sum(axis=1)
    seen = np.array([g.requests for g in res.groups if g.role != "decode"])
    np.testing.assert_allclose(seen, expected, rtol=0.1)


def test_scenario_document_round_trip_gives_the_same_simulation():
    fp = build_problem(load_fleet([EXAMPLES]))
    plan = solve(fp)
    sc = from_plan(plan, fp)
    back = from_document({"scenario": to_document(sc)})
    trace = load_trace(EXAMPLES / "traces" / "azure_llm_2023_conv.csv", "azure").iloc[:1000]
    a = Simulation(sc[0], trace).run().to_dict()
    b = Simulation(back[0], trace).run().to_dict()
    assert a == b


def test_kv_cache_pressure_preempts_and_still_finishes():
    # 0.25 of an A100's 80 GB leaves ~2 GB of KV (~16k tokens) after the 16 GB of weights;
    # 64 long requests cannot all fit and must be preempted and recomputed
    gmu = 0.25
    cap = kv_capacity_tokens(MODEL, A100, 1, gmu)
    assert 8_000 < cap < 40_000
    w = SimWorkload("t/kv", MODEL, ttft_s=60, tpot_s=1, percentile=90, gpu_memory_utilization=gmu, buckets=[(2, 3)],
                    groups=[SimGroup("colocated", "a", A100, 1, 1, np.array([1.0]), "pool/a", 1e10)])
    trace = pd.DataFrame({"arrival_s": np.zeros(64), "input_tokens": np.full(64, 600), "output_tokens": np.full(64, 1500)})
    sim = Simulation(w, trace)
    res = sim.run()
    assert res.finished == 64 and res.preemptions > 0
    roomy = Simulation(SimWorkload("t/kv", MODEL, 60, 1, 90, 0.9, [(2, 3)], w.groups), trace).run()
    assert roomy.preemptions == 0
    assert res.tpot_p90_s > roomy.tpot_p90_s


def test_verify_loop_keeps_the_round_closest_to_its_targets():
    """A repair round can come out worse than an earlier one (the next solve moves traffic to other
    configurations); the loop deploys the round that meets every target shedding the least
    demand, then the cheapest, else the round whose worst workload is closest to its target,
    never simply the last."""
    fp = build_problem(load_fleet([EXAMPLES]))
    plan = solve(fp)
    chat = next(w for w in from_plan(plan, fp) if w.key == "default/chat-8b")
    res = Simulation(chat, load_trace(EXAMPLES / "traces" / "azure_llm_2023_conv.csv", "azure").iloc[:2000]).run()

    def rnd(attainment: float, cost: float, shed_rps: float = 0.0) -> Round:
        shedding = [dataclasses.replace(w, shed_rps=shed_rps if w.workload == chat.key else 0.0) for w in plan.workloads]
        p = dataclasses.replace(plan, cost_per_hour=cost, workloads=shedding)
        return Round(p, {chat.key: dataclasses.replace(res, attainment=attainment, target_percentile=90.0)})

    missed_then_worse = [rnd(0.85, 40.0), rnd(0.80, 44.0), rnd(0.88, 47.0), rnd(0.83, 49.0)]
    assert best_round(missed_then_worse) is missed_then_worse[2]
    meets_later = [rnd(0.85, 40.0), rnd(0.91, 44.0), rnd(0.95, 47.0)]
    assert best_round(meets_later) is meets_later[1]
    tie = [rnd(0.85, 44.0), rnd(0.85, 40.0)]
    assert best_round(tie) is tie[1]
    # a round that meets its targets shedding 0.5 req/s, then raised ones: the one serving the most wins
    raised = [rnd(0.95, 40.0, 0.5), rnd(0.93, 40.0, 0.1), rnd(0.80, 30.0), rnd(0.92, 44.0, 0.0)]
    assert best_round(raised) is raised[3]


def test_a_repair_cuts_the_group_that_missed_and_changes_the_plan(tmp_path, shared_data):
    """Mooncake's long-context trace at TTFT 5 s / TPOT 100 ms, p99: the round-0 plan misses its
    target slightly through its prefill group's TTFT while its decode group meets TPOT. The repair
    must cut the prefill group only (the decode group's TPOT is not the cause), and deep enough
    that the next plan changes: a 10% cut of a group at about 60% utilization would leave the plan
    as it is and replay the same miss in every round."""
    from llmfleet.sim.verify import MIN_CUT, plan_and_verify, workload_traces

    mooncake_fleet(tmp_path, shared_data, "{ttft: 5s, tpot: 100ms, percentile: 99}", "standard",
                   "{tensorParallelSizes: [1, 2, 4], minReplicas: 1}")
    fleet = load_fleet([tmp_path])
    fp = build_problem(fleet)
    traces, _ = workload_traces(fp, fleet)
    rounds = plan_and_verify(fp, traces)  # the default number of repair rounds
    first = rounds[0]
    res = first.results["default/mc"]
    assert not res.meets_target
    groups = dict(zip((a.role for a in first.plan.assignments), zip(first.plan.assignments, res.groups)))
    prefill, decode = groups["prefill"], groups["decode"]
    # the precondition: a prefill group with room to spare (a 10% cut keeps its load within its
    # replicas) that misses TTFT, and a decode group within TPOT at the percentile
    assert prefill[0].utilization < MIN_CUT and prefill[1].ttft_s > 5.0
    assert decode[1].tpot_s <= 0.1
    assert any(prefill[1].name in k for k in first.factors)
    assert not any(decode[1].name in k for k in first.factors)
    shape = lambda plan: sorted((a.pool, a.tp, a.role, a.replicas) for a in plan.assignments)  # noqa: E731
    assert shape(rounds[1].plan) != shape(first.plan)
    assert rounds[-1].meets_targets and best_round(rounds) is rounds[-1]


def test_a_repair_plans_prefill_pods_for_the_routers_split_not_its_own(tmp_path, shared_data):
    """The same case: after the first cut, the cheapest MILP plan adds an H100 TP-1 prefill pod
    and gives it a few percent of the long prompts. The router's prefill profile would give it
    about 40% (``prefill_router_split``; the replay of that plan: 39.6%), which it cannot
    prefill within 5 s, so ``solve`` lowers that configuration's κ and plans again: the repair's
    plan prefills on faster pods only, says why, and meets the target in the replay at once."""
    from llmfleet.sim.verify import plan_and_verify, workload_traces

    mooncake_fleet(tmp_path, shared_data, "{ttft: 5s, tpot: 100ms, percentile: 99}", "standard",
                   "{tensorParallelSizes: [1, 2, 4], minReplicas: 1}")
    fleet = load_fleet([tmp_path])
    fp = build_problem(fleet)
    traces, _ = workload_traces(fp, fleet)
    rounds = plan_and_verify(fp, traces)
    assert not rounds[0].meets_targets and len(rounds) == 2 and rounds[1].meets_targets
    repaired = rounds[1].plan
    assert any("endpoint picker's split" in m and "h100-sxm/tp1/prefill" in m for m in repaired.messages)
    assert all(a.tp > 1 for a in repaired.assignments if a.role == "prefill")


def test_a_repair_never_adds_prefill_pods_the_pooled_router_overloads(tmp_path, shared_data, monkeypatch):
    """The same case, with the planner blind to the router's prefill split (as it was before
    ``prefill_router_split``; the repair is the backstop where that model is off): the first
    repair buys the cheapest prefill capacity, an H100 TP-1 pod the plan gives only a few of the
    long prompts. The router's prefill profile pools every prefill pod (least loaded first, ties
    at random), so the replay gives it far more of them than planned, and it prefills the
    ~47k-token prompts too slowly. Cutting its κ in proportion would make the next plan add a
    second such pod (the replay then gets worse again). The repair instead removes the sizes it
    missed from that configuration and from every prefill configuration no faster, so no later
    round runs it and the loop meets its target."""
    from llmfleet.sim.verify import plan_and_verify, workload_traces
    from llmfleet.solver import milp

    monkeypatch.setattr(milp, "prefill_router_split", lambda w, groups, params: {})

    mooncake_fleet(tmp_path, shared_data, "{ttft: 5s, tpot: 100ms, percentile: 99}", "standard",
                   "{tensorParallelSizes: [1, 2, 4], minReplicas: 1}")
    fleet = load_fleet([tmp_path])
    fp = build_problem(fleet)
    traces, _ = workload_traces(fp, fleet)
    rounds = plan_and_verify(fp, traces)
    flagged = [(k, name.split()[1].rstrip(":")) for k, r in enumerate(rounds) for name in r.factors
               if "pooled prefill router" in name]
    assert flagged
    for k, group in flagged:
        plan, res = rounds[k].plan, rounds[k].results["default/mc"]
        prefill = [(a, g) for a, g in zip(plan.assignments, res.groups) if a.role == "prefill"]
        a, g = next((a, g) for a, g in prefill if g.name == group)
        planned = a.rate_rps / sum(b.rate_rps for b, _ in prefill)
        served = g.requests / sum(h.requests for _, h in prefill)
        assert served > 2 * planned  # the router's pooling, not the plan, gave it its prompts
        for later in rounds[k + 1:]:
            assert all(f"{b.pool}/tp{b.tp}/{b.role}" != group for b in later.plan.assignments)
    assert rounds[-1].meets_targets


def test_a_repair_where_every_group_met_its_own_latency_still_changes_the_plan(tmp_path, shared_data):
    """TTFT and TPOT can miss on different requests, so that each group meets the target in the
    latency it decides while the workload misses it. Then every group is cut by ``MIN_CUT`` and
    the one nearest its own miss (here the prefill group, at 99.5% against 99%) far enough that
    its load no longer fits its replicas: a uniform 10% cut of groups with room to spare would
    replay the same plan."""
    from llmfleet.sim.verify import FORCE_MARGIN, MAX_CUT, MIN_CUT, _cut_capacities

    mooncake_fleet(tmp_path, shared_data, "{ttft: 5s, tpot: 100ms, percentile: 99}", "standard",
                   "{tensorParallelSizes: [1, 2, 4], minReplicas: 1}")
    fp = build_problem(load_fleet([tmp_path]))
    plan = solve(fp)
    roles = [a.role for a in plan.assignments]
    assert sorted(roles) == ["decode", "prefill"]
    sw = next(w for w in from_plan(plan, fp) if w.key == "default/mc")
    trace = load_trace(shared_data / "traces" / "mooncake_fast25_synthetic.jsonl", "mooncake").iloc[:400]
    res = Simulation(sw, trace).run()
    groups = []
    for a, g in zip(plan.assignments, res.groups):
        n = g.bucket_requests
        own = n.copy()
        if a.role == "prefill":  # 99.5% of its requests within TTFT: above the 99% target
            own[np.argmax(n)] -= int(round(0.005 * n.sum()))
        groups.append(dataclasses.replace(g, bucket_own_met=own))
    missed = dataclasses.replace(res, attainment=0.985, target_percentile=99.0, groups=groups)
    before = {a.role: a.config.capacity_rps.copy() for a in plan.assignments}
    util = {a.role: a.utilization for a in plan.assignments}
    assert util["prefill"] < MIN_CUT  # a 10% cut alone would keep its load within its replicas
    _cut_capacities(fp, plan, Round(plan, {"default/mc": missed}))
    for a in plan.assignments:
        carried = (a.bucket_rate_rps > 0) & (before[a.role] > 0)
        ratio = a.config.capacity_rps[carried] / before[a.role][carried]
        expected = min(MIN_CUT, max(util["prefill"] / (1 + FORCE_MARGIN), MAX_CUT)) if a.role == "prefill" else MIN_CUT
        assert ratio == pytest.approx(np.full(len(ratio), expected))


def _two_groups(router: str, threshold: int | None = None) -> SimWorkload:
    """One workload on a colocated group of 1 A100 replica and 3 L40S replicas, plus a prefill and
    a decode A100 replica in one KV domain, routed by ``router``."""
    l40s = get_gpu("L40S")
    rate = np.array([1.0])
    groups = [SimGroup("colocated", "a", A100, 1, 1, rate, "net", 1e12),
              SimGroup("colocated", "l", l40s, 1, 3, rate, "net", 1e12)]
    if threshold is not None:
        groups += [SimGroup("prefill", "p", A100, 1, 1, rate, "net", 1e12),
                   SimGroup("decode", "d", A100, 1, 1, rate, "net", 1e12)]
    return SimWorkload("t/route", MODEL, ttft_s=10, tpot_s=1, percentile=90, gpu_memory_utilization=0.9,
                       buckets=[(2, 1)], groups=groups, router=router, pd_threshold_tokens=threshold)


def test_service_routing_spreads_requests_evenly_over_pods():
    """kube-proxy picks a pod at random whatever its GPU: 3 of 4 pods are L40S, so about 3/4 of
    the requests go there although the A100 is faster."""
    sim = Simulation(_two_groups("uniform"), poisson_trace(2.0, 4000, 600, 60))
    res = sim.run()
    share = res.groups[1].requests / res.requests
    assert share == pytest.approx(0.75, abs=0.03)


def test_each_request_records_the_pod_it_entered():
    """``rq.entry_replica`` is the pod within the entry group: kube-proxy picks each of the four
    pods (one A100, three L40S) with probability 1/4, so each pod's own count is about a quarter
    of the requests (what ``bench/pod_dispersion.py`` reads per pod)."""
    sim = Simulation(_two_groups("uniform"), poisson_trace(2.0, 4000, 600, 60))
    sim.run()
    pods = {(g, k) for g, k in zip(sim.rq.entry_group.tolist(), sim.rq.entry_replica.tolist())}
    assert pods == {(0, 0), (1, 0), (1, 1), (1, 2)}
    for g, k in pods:
        share = float(np.mean((sim.rq.entry_group == g) & (sim.rq.entry_replica == k)))
        assert share == pytest.approx(0.25, abs=0.03), (g, k)


def test_load_aware_routing_is_llm_d_p_d_routing():
    """With llm-d's endpoint picker and a P/D threshold of 2,048 tokens, every request first gets a
    decode-capable pod (colocated or decode: the decode-filter admits pods without a P/D role).
    A prompt at or above the threshold that lands on a decode pod is prefilled on the prefill
    replica first; anything else is served whole where it landed (a short prompt on a decode pod
    too: its sidecar passes it to the local vLLM). Output lengths play no part."""
    rng = np.random.default_rng(3)
    trace = poisson_trace(2.0, 3000, 600, 60)
    trace["input_tokens"] = rng.choice([600, 4000], len(trace))
    sim = Simulation(_two_groups("load-aware", threshold=2048), trace)
    res = sim.run()
    assert res.finished == res.requests
    role = lambda idx: np.array([sim.w.groups[g].role if g >= 0 else "-" for g in idx])  # noqa: E731
    entry, decode = role(sim.rq.entry_group), role(sim.rq.decode_group)
    long_prompt = sim.rq.inp >= 2048
    assert (entry[~long_prompt] != "prefill").all()  # short prompts never reach a prefill pod
    via_prefill = entry == "prefill"
    assert long_prompt[via_prefill].all() and (decode[via_prefill] == "decode").all()
    # the decode pod serves short prompts whole; colocated pods serve long ones whole
    whole_on_decode = (entry == "decode") & (decode == "decode")
    assert whole_on_decode.any() and not long_prompt[whole_on_decode].any()
    assert (long_prompt & (entry == "colocated") & (decode == "-")).any()
    # every long prompt that picked the decode pod went through prefill
    assert not (long_prompt & (decode == "decode") & (entry != "prefill")).any()


def test_scenario_documents_carry_the_router():
    w = _two_groups("load-aware", threshold=2048)
    doc = {"scenario": to_document([w])}
    back = from_document(doc)[0]
    assert (back.router, back.pd_threshold_tokens) == ("load-aware", 2048)
    # plans written before routers were simulated replay as they were planned
    for wdoc in doc["scenario"]["workloads"]:
        del wdoc["router"]
    assert from_document(doc)[0].router == "plan-shares"


def _verified(folder):
    from llmfleet.sim.verify import plan_and_verify, workload_traces

    fleet = load_fleet([folder])
    fp = build_problem(fleet)
    traces, _ = workload_traces(fp, fleet)
    return fp, plan_and_verify(fp, traces)  # the default number of repair rounds


def test_a_plan_that_meets_its_target_but_sheds_gets_the_capacity_the_replay_showed(tmp_path, shared_data):
    """Mooncake's requests with Gamma inter-arrivals of CV² 7 (ServeGen's burstiest clients),
    TTFT 3 s / TPOT 40 ms at p99: the capacity model sizes for bursts, finds the 16 H100s too few
    and sheds, while the replay of all the traffic on that very fleet meets the target. The loop
    must raise capacity where the replay showed room (never where a group had none), and deploy a
    plan that serves all the demand, meets the target in its own replay and costs no more."""
    from llmfleet.sim.verify import shed_rps

    _, rounds = _verified(mooncake_fleet(tmp_path, shared_data, "{ttft: 3s, tpot: 40ms, percentile: 99}",
                                         "standard", "{tensorParallelSizes: [1, 2, 4], minReplicas: 1}", 7.0))
    first = rounds[0]
    assert shed_rps(first.plan) > 0 and first.meets_targets  # the precondition
    raised = [f for r in rounds[:-1] for f in r.factors.values()]
    assert raised and all(f > 1.0 for f in raised)  # raises only: no round missed
    res = first.results["default/mc"]
    for a, g in zip(first.plan.assignments, res.groups):
        limits = {"prefill": [(3.0, g.ttft_s)], "decode": [(0.04, g.tpot_s)]}.get(a.role, [(3.0, g.ttft_s), (0.04, g.tpot_s)])
        if any(sim >= limit for limit, sim in limits):  # no room to spare: not raised
            assert not any(g.name in k for k in first.factors)
    best = best_round(rounds)
    assert best is rounds[-1] and best.plan.serves_all_demand and best.meets_targets
    assert best.plan.cost_per_hour <= first.plan.cost_per_hour
    assert rounds[-1].stop_reason == "every simulated workload meets its SLO target"


def test_a_raise_that_misses_is_undone_and_never_deployed(tmp_path, shared_data, monkeypatch):
    """The same bursty Mooncake case with a reckless raise (20x, aimed 10x past the shed demand):
    the next solve buys a fleet far too small and its replay misses. That raise must be undone
    (the κ back to those of the round it departed from, so solving again gives that round's plan),
    a smaller one tried, and the plan deployed one that meets its target."""
    from llmfleet.sim import verify
    from llmfleet.sim.verify import shed_rps

    monkeypatch.setattr(verify, "MAX_RAISE", 20.0)
    monkeypatch.setattr(verify, "RAISE_MARGIN", 10.0)
    kappa = []  # each round's κ as its solve saw them: config id -> capacity_rps
    real_solve = verify.solve

    def recording_solve(fp):
        kappa.append({id(c): c.capacity_rps.copy() for w in fp.workloads for c in w.configs})
        return real_solve(fp)

    monkeypatch.setattr(verify, "solve", recording_solve)
    _, rounds = _verified(mooncake_fleet(tmp_path, shared_data, "{ttft: 3s, tpot: 40ms, percentile: 99}",
                                         "standard", "{tensorParallelSizes: [1, 2, 4], minReplicas: 1}", 7.0))
    assert shed_rps(rounds[0].plan) > 0 and rounds[0].meets_targets
    assert not rounds[1].meets_targets  # the reckless raise missed
    assert rounds[0].factors and rounds[1].factors  # and a smaller raise followed, from round 0
    assert all(rounds[1].factors[k] < rounds[0].factors[k] for k in rounds[0].factors)
    # undone: round 2 was solved with round 0's κ times the smaller raise, not on top of the first
    checked = 0
    for a in rounds[0].plan.assignments:
        f = rounds[1].factors.get(f"default/mc {a.pool}/tp{a.tp}/{a.role}")
        if f is not None:
            np.testing.assert_allclose(kappa[2][id(a.config)], kappa[0][id(a.config)] * f, rtol=1e-9)
            checked += 1
    assert checked == len(rounds[1].factors)
    best = best_round(rounds)
    assert best.meets_targets and shed_rps(best.plan) <= shed_rps(rounds[0].plan)
