"""Re-planning against the running plan (issue 15 item 2): a change to one workload changes that
workload's groups only, the churn is reported, and what starting a replica costs has its sources."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import time

import numpy as np
import pytest

from llmfleet.api.loader import load_fleet
from llmfleet.catalog.models import resolve_model
from llmfleet.solver import churn
from llmfleet.solver import milp
from llmfleet.solver.milp import solve
from llmfleet.solver.problem import build_problem

from conftest import EXAMPLES
from test_cli import LLMFLEET
from test_solver import POOL, WORKLOAD, tiered_problem


def fleet_with_rate(tmp_path, rate):
    d = tmp_path / f"rate{rate}"
    shutil.copytree(EXAMPLES, d)
    text = (d / "workloads.yaml").read_text()
    (d / "workloads.yaml").write_text(text.replace("requestRatePerSecond: 3\n", f"requestRatePerSecond: {rate}\n"))
    return d


def test_start_cost_is_the_weights_read_plus_the_engine_start():
    # one TP-4 replica of the 70B model on H100 ($6.90 per GPU-hour in the examples' catalogue):
    # each of 4 GPUs reads a quarter of 141.2 GB at 1.6 GB/s (22.1 s), then 60 s of engine start
    m = resolve_model("meta-llama/Llama-3.1-70B-Instruct")
    w = type("W", (), {"model": m})()
    c = type("C", (), {"tp": 4, "cost_per_replica_hour": 4 * 6.90})()
    assert churn.start_cost_usd(w, c) == pytest.approx(27.6 * (m.weight_bytes / 4 / 1.6e9 + 60.0) / 3600)


def test_a_change_to_one_workload_moves_only_its_groups(tmp_path):
    base = build_problem(load_fleet([EXAMPLES]))
    running = solve(base)
    current = churn.current_from_document(json.loads(json.dumps(running.to_dict())))
    same = dict(current)
    # the same input re-planned against itself: nothing starts or stops
    again = build_problem(load_fleet([EXAMPLES]))
    again.current = same
    report = churn.churn_report(solve(again), current)
    assert report["replicasStarted"] == report["replicasStopped"] == 0
    # three times the 70B traffic: only assistant-70b's groups change
    moved = build_problem(load_fleet([fleet_with_rate(tmp_path, 9)]))
    moved.current = current
    plan = solve(moved)
    report = churn.churn_report(plan, current)
    assert report["workloadsChanged"] == ["default/assistant-70b"]
    assert report["replicasStarted"] >= 1


def test_under_a_shortage_a_change_to_one_workload_moves_only_its_groups(tmp_path):
    # Independent reason: nine 8B workloads in three tiers share one A100 pool at TP 1, and the pool
    # holds the top tier and half the middle one. The middle tier sheds, and how its replicas are
    # split among its three workloads does not change what it sheds: every split is as good for the
    # tier order. So a re-plan has no reason to move a replica, and one workload's extra traffic
    # can only be shed by that workload (the pool is full), leaving every other workload as it ran.
    ample = solve(tiered_problem(tmp_path, gpus=64))
    need = {t: sum(a.gpus for a in ample.assignments if a.workload.startswith(f"prod/{t}"))
            for t in ("critical", "standard")}
    gpus = need["critical"] + need["standard"] // 2
    running = solve(tiered_problem(tmp_path, gpus=gpus))
    assert running.status == "shortage"
    current = churn.current_from_document(json.loads(json.dumps(running.to_dict())))
    again = tiered_problem(tmp_path, gpus=gpus)
    again.current = current
    report = churn.churn_report(solve(again), current)
    assert report["replicasStarted"] == report["replicasStopped"] == 0
    moved = tiered_problem(tmp_path, gpus=gpus, rates={"standard-1": 18})  # 15 req/s before
    moved.current = current
    plan = solve(moved)
    assert plan.status == "shortage"
    assert set(churn.churn_report(plan, current)["workloadsChanged"]) <= {"prod/standard-1"}


def test_under_a_shortage_a_replan_frees_only_what_a_higher_tier_could_take(tmp_path):
    # Independent reason: nine 8B workloads in three tiers on one A100 pool at TP 1 that holds the
    # top two tiers and half the low one. A top-tier workload's traffic then grows past what the
    # full pool leaves it: tier order says it takes GPUs from the low tier (the standard tier gives
    # up nothing while the low one holds any). The re-plan gives it the low tier's GPUs first
    # (milp._repaired_start), so it holds the other top-tier workloads and the standard ones, which
    # no workload left short outranks, plans afresh only the grown one and the low tier's, and keeps
    # its own result although demand is still shed: before, that result was thrown away and the
    # whole fleet solved again, which on 100 workloads had no time left for its phases and returned
    # the running plan.
    ample = solve(tiered_problem(tmp_path, gpus=64))
    need = {t: sum(a.gpus for a in ample.assignments if a.workload.startswith(f"prod/{t}"))
            for t in ("critical", "standard", "low")}
    gpus = need["critical"] + need["standard"] + need["low"] // 2
    running = solve(tiered_problem(tmp_path, gpus=gpus))
    shed = {r.workload: r.shed_rps for r in running.workloads}
    assert running.status == "shortage" and sum(v for k, v in shed.items() if "/low-" not in k) == 0
    current = churn.current_from_document(json.loads(json.dumps(running.to_dict())))
    grown = tiered_problem(tmp_path, gpus=gpus, rates={"critical-0": 30})  # 12 req/s before
    grown.current = current
    plan = solve(grown)
    res = {r.workload: r for r in plan.workloads}
    assert all(r.shed_rps == 0 for k, r in res.items() if "/low-" not in k)
    assert sum(r.shed_rps for k, r in res.items() if "/low-" in k) > sum(v for k, v in shed.items() if "/low-" in k)
    assert set(churn.churn_report(plan, current)["workloadsChanged"]) <= {"prod/critical-0", "prod/low-0",
                                                                          "prod/low-1", "prod/low-2"}
    assert any(m.startswith("incremental re-plan: 4 workload(s) planned afresh; 5 kept as they run") for m in plan.messages), \
        plan.messages


def test_plan_current_reports_the_churn(tmp_path):
    running = subprocess.run([LLMFLEET, "plan", "-f", EXAMPLES, "-o", "json", "--no-baseline"],
                             capture_output=True, text=True, timeout=300)
    assert running.returncode == 0, running.stderr
    cur = tmp_path / "running.json"
    cur.write_text(running.stdout)
    r = subprocess.run([LLMFLEET, "plan", "-f", fleet_with_rate(tmp_path, 9), "-o", "json", "--no-baseline",
                        "--current", cur], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["churn"]["workloadsChanged"] == ["default/assistant-70b"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"assignments": [{"workload": "x"}]}')
    r = subprocess.run([LLMFLEET, "plan", "-f", EXAMPLES, "--current", bad], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--current" in r.stderr and "assignments[0]" in r.stderr


def test_the_operator_reads_the_plan_in_force_from_its_deployments():
    # what the operator renders for a plan, read back from the Deployments, is that plan's groups
    # (the key a re-plan's churn cost and start use), whatever the JSON round trip
    from llmfleet.operator.planner import running_groups
    from llmfleet.operator.render import render_plan

    fleet = load_fleet([EXAMPLES])
    problem = build_problem(fleet)
    plan = solve(problem)
    objs = render_plan(plan, {w.key: w for w in fleet.workloads}, {p.metadata.name: p for p in fleet.pools},
                       fleet.policy, "service")
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    assert len(deployments) == len(plan.assignments)
    assert running_groups(problem, deployments) == churn.current_from_document(json.loads(json.dumps(plan.to_dict())))
    # a Deployment that is not the rendering of one of the problem's configurations is not counted
    stray = json.loads(json.dumps(deployments[0]))
    stray["metadata"]["name"] = "someone-elses"
    assert running_groups(problem, [stray]) == {}


def test_a_replan_keeps_the_running_pd_threshold_among_equal_ones(tmp_path):
    # Independent reason: a P/D workload on A100s whose prompts span 1 to 12k tokens; with its
    # replicas fixed, several thresholds serve it at the same cost (the decode pods have room for
    # the shorter prompts' prefill). The identical input re-planned against its own plan must keep
    # the plan as it runs, threshold included: another one rewrites the endpoint picker's
    # configuration (and restarts it) for nothing. Before the fix it came back as 2048 for a
    # running 512.
    from test_disaggregation import MODEL, POOL, WORKLOAD
    doc = (WORKLOAD % {"model": MODEL, "mode": "auto", "tpot": "30ms"}).replace(
        "inputTokens: {p50: 5000, p90: 7000, p99: 7900}", "inputTokens: {p50: 600, p90: 6000, p99: 12000}")
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("---".join([doc, POOL % {"name": "a100", "gpu": "A100-80G"}]))
    first = subprocess.run([LLMFLEET, "plan", "-f", fleet, "-o", "json", "--no-baseline"],
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    running = json.loads(first.stdout)
    assert running["pdThresholdTokens"], "the case needs a P/D plan"
    for threshold in (running["pdThresholdTokens"]["prod/summarise"], 128):  # its own, and another that serves
        running["pdThresholdTokens"]["prod/summarise"] = threshold
        cur = tmp_path / f"running-{threshold}.json"
        cur.write_text(json.dumps(running))
        r = subprocess.run([LLMFLEET, "plan", "-f", fleet, "-o", "json", "--no-baseline", "--current", cur],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        again = json.loads(r.stdout)
        assert again["churn"]["replicasStarted"] == again["churn"]["replicasStopped"] == 0
        assert again["costPerHour"] == pytest.approx(running["costPerHour"], rel=1e-6)
        assert again["pdThresholdTokens"] == {"prod/summarise": threshold}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**running, "pdThresholdTokens": {"prod/summarise": "long"}}))
    r = subprocess.run([LLMFLEET, "plan", "-f", fleet, "--current", bad], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "pdThresholdTokens['prod/summarise']" in r.stderr


DIGEST = """\
apiVersion: llmfleet.dev/v1alpha1
kind: LLMWorkload
metadata: {name: digest, namespace: prod}
spec:
  model: mistralai/Mistral-7B-Instruct-v0.1
  traffic: {requestRatePerSecond: 36, inputTokens: {p50: 2730, p90: 3702, p99: 3933}, outputTokens: {p50: 167, p90: 372, p99: 3271}}
  slo: {ttft: 4s, tpot: 50ms, percentile: 95}
  serving: {tensorParallelSizes: [1, 2]}
---
apiVersion: llmfleet.dev/v1alpha1
kind: GPUPool
metadata: {name: h100}
spec: {gpuType: H100-PCIe, gpusPerNode: 4, maxGPUs: 64}
"""


def test_an_unchanged_pd_workload_is_kept_as_it_runs_by_a_replan(tmp_path):
    # Independent reason: re-planned against its own plan, an unchanged input is served in full by
    # the replicas that run, so the re-plan must hold the workload as it runs and plan nothing
    # afresh (the fast path the operator takes on every re-plan interval). Before the fix the
    # re-plan's start asked the greedy to top up the running replicas; the greedy's load estimate
    # routes every prompt through prefill and read this P/D plan (threshold 2048 tokens: shorter
    # prompts are prefilled on the decode pods) as short, added replicas, and the workload was
    # planned afresh (at 100 workloads, 7 P/D workloads and a 5 s cost phase for nothing).
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(DIGEST)
    first = subprocess.run([LLMFLEET, "plan", "-f", fleet, "-o", "json", "--no-baseline"],
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    running = json.loads(first.stdout)
    assert {a["role"] for a in running["assignments"]} == {"prefill", "decode"}, "the case needs a P/D plan"
    assert running["pdThresholdTokens"]["prod/digest"] > 1, "the case needs a threshold"
    cur = tmp_path / "running.json"
    cur.write_text(first.stdout)
    r = subprocess.run([LLMFLEET, "plan", "-f", fleet, "-o", "json", "--no-baseline", "--current", cur],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)
    assert any(m.startswith("incremental re-plan: 0 workload(s) planned afresh; 1 kept as they run")
               for m in again["messages"]), again["messages"]
    assert again["churn"]["replicasStarted"] == again["churn"]["replicasStopped"] == 0
    assert again["costPerHour"] == pytest.approx(running["costPerHour"], rel=1e-6)


def test_the_capacity_cache_remodels_only_what_changed_its_inputs(tmp_path):
    # The operator keeps each workload's capacity model between re-plans (build_problem(cache=)).
    # A model must be reused exactly when nothing it reads changed: the solver's time limit is not
    # read by any capacity model, the policy's headroom scales every workload's planned rate, and
    # one workload's rate is read by that workload's model alone.
    def build(d, cache):
        return {w.key: w for w in build_problem(load_fleet([d]), cache=cache).workloads}

    cache: dict = {}
    first = build(EXAMPLES, cache)
    slower = tmp_path / "limit"
    shutil.copytree(EXAMPLES, slower)
    policy = slower / "fleetpolicy.yaml"
    policy.write_text(policy.read_text().replace("timeLimitSeconds: 30", "timeLimitSeconds: 90"))
    again = build(slower, cache)
    assert all(again[k].configs is first[k].configs for k in first)
    moved = build(fleet_with_rate(tmp_path, 9), cache)
    assert [k for k in first if moved[k].configs is not first[k].configs] == ["default/assistant-70b"]
    more = tmp_path / "headroom"
    shutil.copytree(EXAMPLES, more)
    policy = more / "fleetpolicy.yaml"
    policy.write_text(policy.read_text().replace("headroom: 0.1 ", "headroom: 0.3 "))
    wider = build(more, cache)
    assert all(wider[k].configs is not first[k].configs for k in first)
    assert wider["default/chat-8b"].rate_rps == pytest.approx(first["default/chat-8b"].rate_rps * 1.3 / 1.1)


def fleet_with_h100_twin(tmp_path, price, gpus=16):
    """The examples plus a second H100-SXM pool of ``gpus`` GPUs, priced ``price`` USD per
    GPU-hour (the examples' H100 pool: 6.90)."""
    d = tmp_path / f"twin{price}-{gpus}"
    shutil.copytree(EXAMPLES, d)
    (d / "twin.yaml").write_text(
        "apiVersion: llmfleet.dev/v1alpha1\nkind: GPUPool\nmetadata:\n  name: h100-reserved\n"
        f"spec:\n  gpuType: H100-SXM\n  gpusPerNode: 8\n  maxGPUs: {gpus}\n  costPerGPUHour: {price}\n")
    return d


def test_a_replan_moves_a_kept_workload_only_where_its_best_plan_alone_saves_more_than_the_churn(tmp_path, monkeypatch):
    # Independent reason: a second H100-SXM pool at half the price runs every H100 replica the
    # same for $3.45 instead of $6.90 per GPU-hour. The running plan's TP-4 70B replica alone then
    # saves 4 x 3.45 = $13.80/h, against a churn of about $6/h spread over the 300 s re-plan
    # interval (solver.churn: starting it reads 141 GB over 4 GPUs at 1.6 GB/s plus 60 s of engine
    # start, 82 s of $13.80/h; stopping one drains its requests): the re-plan must move it, and no
    # replica stays on the dear pool. At $6.85 the saving, 4 x 0.05 = $0.20/h for that replica,
    # is far below the churn: nothing may move. Before, a re-plan kept every workload it served in
    # full as it ran, whatever a cheaper plan saved.
    running = solve(build_problem(load_fleet([EXAMPLES])))
    current = churn.current_from_document(json.loads(json.dumps(running.to_dict())))
    assert any(a.pool == "h100-sxm" and a.tp == 4 for a in running.assignments), "the case needs the 70B on H100"
    cheap = build_problem(load_fleet([fleet_with_h100_twin(tmp_path, 3.45)]))
    cheap.current = current
    moved = solve(cheap)
    assert moved.status == "optimal"
    assert not [a for a in moved.assignments if a.pool == "h100-sxm"]
    assert moved.cost_per_hour < running.cost_per_hour - 13.80
    assert "default/assistant-70b" in churn.churn_report(moved, current)["workloadsChanged"]
    assert any("moved to a plan cheaper by" in m for m in moved.messages), moved.messages
    # the next re-plan, with the plans shown optimal alone remembered as the operator keeps them,
    # holds everything without solving any workload alone again
    solved_alone = []
    real = milp._decompose_one
    monkeypatch.setattr(milp, "_decompose_one", lambda *a: solved_alone.append(a[2].key) or real(*a))
    again = build_problem(load_fleet([fleet_with_h100_twin(tmp_path / "again", 3.45)]))
    again.current = churn.current_from_document(json.loads(json.dumps(moved.to_dict())))
    again.alone_optima = cheap.alone_optima
    kept = solve(again)
    assert solved_alone == []
    assert churn.churn_report(kept, again.current)["replicasStarted"] == 0
    assert any(m.startswith("kept workloads checked against their best plan alone: 3 known optimal, 0 solved")
               for m in kept.messages), kept.messages
    monkeypatch.undo()
    near = build_problem(load_fleet([fleet_with_h100_twin(tmp_path, 6.85)]))
    near.current = current
    stay = solve(near)
    report = churn.churn_report(stay, current)
    assert report["replicasStarted"] == report["replicasStopped"] == 0
    assert stay.cost_per_hour == pytest.approx(running.cost_per_hour, rel=1e-9)


def test_a_replan_moves_what_fits_when_the_cheaper_pool_cannot_take_every_move(tmp_path, monkeypatch):
    # Independent reason: each workload alone would move its H100 replicas (or, for summarise-8b,
    # its nine L40S replicas) to a half-price H100 pool of 4 GPUs, but together they need more
    # than 4. The 70B's move saves the most: $13.80/h gross less about $6/h of churn, against at
    # most 2 x 3.45 = $6.90/h gross for chat-8b's two replicas and 9 x 1.861 - 3 x 3.45 = $6.40/h
    # for summarise-8b's, each less its own churn. So the re-plan moves the 70B alone, where
    # before (all moves or none) it moved nothing.
    running = solve(build_problem(load_fleet([EXAMPLES])))
    current = churn.current_from_document(json.loads(json.dumps(running.to_dict())))
    small = build_problem(load_fleet([fleet_with_h100_twin(tmp_path, 3.45, gpus=4)]))
    small.current = current
    plan = solve(small)
    assert plan.status == "optimal"
    assert churn.churn_report(plan, current)["workloadsChanged"] == ["default/assistant-70b"]
    assert sum(a.gpus for a in plan.assignments if a.pool == "h100-reserved") == 4
    assert plan.cost_per_hour < running.cost_per_hour
    # the next re-plan, with both memos kept as the operator keeps them: the cheap pool is full,
    # and the two moves that did not fit were found already. Solving those workloads alone again
    # could only find the same moves, and, costliest first, it would spend the check's time on
    # them every re-plan: none is solved alone, and nothing moves.
    solved_alone = []
    real = milp._decompose_one
    monkeypatch.setattr(milp, "_decompose_one", lambda *a: solved_alone.append(a[2].key) or real(*a))
    again = build_problem(load_fleet([fleet_with_h100_twin(tmp_path / "again", 3.45, gpus=4)]))
    again.current = churn.current_from_document(json.loads(json.dumps(plan.to_dict())))
    again.alone_optima, again.alone_moves = small.alone_optima, small.alone_moves
    assert len(again.alone_moves) == 2
    kept = solve(again)
    assert solved_alone == []
    assert churn.churn_report(kept, again.current)["workloadsChanged"] == []
    assert any(m.startswith("kept workloads checked against their best plan alone: 1 known optimal, "
                            "2 with a cheaper plan found before, 0 solved now") for m in kept.messages), kept.messages


def test_a_replan_keeps_the_capacity_the_picker_check_gave_a_group(tmp_path):
    # Independent reason: the summariser of test_balanced_routing's picker tests at 8 req/s, whose
    # cheapest plan the endpoint picker would overload, so ``solve`` plans one decode group at a
    # lowered κ. The plan document records that factor, and a re-plan against it plans the group
    # at the same κ: it runs on unchanged and the document it writes still says so (forgetting
    # it, a re-plan would size the group by its full κ again and the next one could not know).
    from test_balanced_routing import SUMMARISER
    for name in ("gpupools.yaml", "fleetpolicy.yaml"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    (tmp_path / "w.yaml").write_text(SUMMARISER.replace("requestRatePerSecond: 6\n", "requestRatePerSecond: 8\n"))
    first = subprocess.run([LLMFLEET, "plan", "-f", tmp_path, "-o", "json", "--no-baseline"],
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    running = json.loads(first.stdout)
    lowered = [a for a in running["assignments"] if a["pickerCapacityFactor"] < 1]
    assert lowered, "the case needs a group planned at a lowered κ"

    def replan(doc, name):
        cur = tmp_path.parent / f"{tmp_path.name}-{name}.json"  # outside -f's folder
        cur.write_text(json.dumps(doc))
        return subprocess.run([LLMFLEET, "plan", "-f", tmp_path, "-o", "json", "--no-baseline", "--current", cur],
                              capture_output=True, text=True, timeout=300)

    r = replan(running, "running")
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)
    assert again["churn"]["replicasStarted"] == again["churn"]["replicasStopped"] == 0
    assert again["costPerHour"] == pytest.approx(running["costPerHour"], rel=1e-6)
    # the same groups at the same factor; the routing between two decode groups of equal cost may
    # move a ten-thousandth of a req/s (the routing LP has many optima)
    keys = ("workload", "pool", "gpuType", "tensorParallelSize", "role", "replicas", "powerCapWatts",
            "pickerCapacityFactor")
    group = lambda a: {k: a[k] for k in keys}  # noqa: E731
    kept = [a for a in again["assignments"] if a["pickerCapacityFactor"] < 1]
    assert [group(a) for a in kept] == [group(a) for a in lowered]
    assert [a["rateRps"] for a in kept] == pytest.approx([a["rateRps"] for a in lowered], abs=1e-3)
    bad = {**running, "assignments": [{**a, "pickerCapacityFactor": 1.5} for a in running["assignments"]]}
    r = replan(bad, "bad")
    assert r.returncode == 2 and "assignments[0].pickerCapacityFactor" in r.stderr and "(0, 1]" in r.stderr


def test_a_replan_starts_a_new_workload_from_its_best_plan_alone():
    # chat-8b arrives while the other two run (an operator planning while a GitOps sync applies
    # the fleet). The re-plan holds the two and plans chat-8b around them; the joint solve starts
    # from chat-8b's best plan alone (which, with ample pools, is also its best joint plan), not
    # from the greedy's, which the joint solve of many new workloads could not improve in time.
    full = build_problem(load_fleet([EXAMPLES]))
    new = next(i for i, w in enumerate(full.workloads) if w.key == "default/chat-8b")
    running = solve(dataclasses.replace(full, workloads=[w for i, w in enumerate(full.workloads) if i != new]))
    fp = build_problem(load_fleet([EXAMPLES]))
    fp.current = churn.current_from_document(json.loads(json.dumps(running.to_dict())))
    fp = dataclasses.replace(fp, workloads=[dataclasses.replace(w, configs=milp.prune_dominated(w, fp.current))
                                            for w in fp.workloads])
    prepared = milp._prepare(fp, time.perf_counter() + 60)
    settled = frozenset(milp._settled(fp, prepared))
    assert new not in settled and len(settled) == 2

    def groups(values):
        return {(fp.workloads[wi].configs[ci].pool.name, fp.workloads[wi].configs[ci].tp,
                 fp.workloads[wi].configs[ci].role): r
                for (wi, ci), r in milp._counts(prepared.model, prepared.highs, values).items() if wi == new}

    alone = solve(dataclasses.replace(build_problem(load_fleet([EXAMPLES])), workloads=[full.workloads[new]]))
    best = {(a.pool, a.tp, a.role): a.replicas for a in alone.assignments}
    greedy = groups(prepared.start)
    assert greedy != best  # else this case could not tell the two starts apart
    assert milp._start_afresh_alone(fp, prepared, settled, time.perf_counter() + 30, time.perf_counter() + 60) == 1
    assert groups(prepared.start) == best
    assert prepared.serves_all(fp)


def test_the_picker_re_solve_solves_alone_only_the_workloads_it_lowered(tmp_path, monkeypatch):
    # The examples' three workloads beside the summariser of test_balanced_routing at 6 req/s,
    # whose cheapest plan the endpoint picker would overload: ``solve`` lowers the κ of the
    # summariser's group and solves the fleet again. The other three workloads' problems are
    # unchanged, so the re-solve reuses their plans alone instead of solving them again (at 100
    # workloads, solving all again ran out of the time limit and returned a plan 40% dearer).
    from test_balanced_routing import SUMMARISER
    folder = tmp_path / "fleet"
    shutil.copytree(EXAMPLES, folder)
    (folder / "summariser.yaml").write_text(SUMMARISER)
    solved: list[str] = []
    alone = milp._decompose_one

    def counted(fp, wi, w, deadline):
        solved.append(w.key)
        return alone(fp, wi, w, deadline)

    monkeypatch.setattr(milp, "_decompose_one", counted)
    fp = build_problem(load_fleet([folder]))
    plan = solve(fp)
    assert any("lowered the capacity of default/summarise" in m for m in plan.messages), plan.messages
    assert sorted(set(solved)) == sorted(w.key for w in fp.workloads)
    assert {k: solved.count(k) for k in set(solved)} == {
        **{w.key: 1 for w in fp.workloads}, "default/summarise": 1 + sum(
            "lowered the capacity of default/summarise" in m for m in plan.messages)}
    assert plan.status == "optimal"


def _configs_modelled(monkeypatch) -> list[int]:
    """Configurations of every fleet model ``milp._prepare`` builds from now on (one-workload
    models, solved alone, left out), in call order."""
    seen = []
    real = milp._prepare
    monkeypatch.setattr(milp, "_prepare", lambda fp, deadline: (
        seen.append(sum(len(w.configs) for w in fp.workloads)) if len(fp.workloads) > 1 else None) or real(fp, deadline))
    return seen


def test_a_replan_models_the_workloads_known_optimal_alone_on_their_running_configurations(tmp_path, monkeypatch):
    # Independent reason: a re-plan holds every workload it keeps as it runs, which fixes that
    # workload's other configurations at 0 replicas. Leaving them out of the model is the same
    # problem, so the re-plan of a change to assistant-70b must cost the same with or without
    # them and keep the other two as they run, while its model holds only assistant-70b's
    # configurations and the others' running ones (counted from the running plan, not the solver).
    base = build_problem(load_fleet([EXAMPLES]))
    running = solve(base)
    assert base.alone_optima, "the first plan solves each workload alone (everything fits)"
    current = churn.current_from_document(json.loads(json.dumps(running.to_dict())))
    plans, modelled = {}, {}
    for narrow in (True, False):
        grown = build_problem(load_fleet([fleet_with_rate(tmp_path / str(narrow), 9)]))  # 3 req/s before
        grown.current, grown.alone_optima = current, set(base.alone_optima)
        with monkeypatch.context() as m:
            if not narrow:
                m.setattr(milp, "_narrowed", lambda fp: (fp, frozenset()))
            modelled[narrow] = _configs_modelled(m)
            plans[narrow] = solve(grown)
    by_key = {w.key: w for w in grown.workloads}
    others_running = sum(1 for key in current if key[0] != "default/assistant-70b")
    assert modelled[True][0] <= len(by_key["default/assistant-70b"].configs) + others_running
    assert modelled[True][0] < modelled[False][0] / 3
    for plan in plans.values():
        assert plan.status == "optimal"
        assert churn.churn_report(plan, current)["workloadsChanged"] == ["default/assistant-70b"]
    assert plans[True].cost_per_hour == pytest.approx(plans[False].cost_per_hour, rel=base.relative_gap)


def test_a_replan_under_a_shortage_models_the_whole_fleet_where_a_narrowed_workload_may_have_to_give(tmp_path, monkeypatch):
    # Independent reason: every workload of the first plan is known optimal alone, but when
    # critical-0's traffic grows past the pool, the lower tiers may have to give it GPUs, on
    # configurations they do not run on: the re-plan must model every configuration again
    # (the whole fleet's count, as without narrowing) and reach the same tier order.
    ample = solve(tiered_problem(tmp_path, gpus=64))
    gpus = sum(a.gpus for a in ample.assignments)
    first = tiered_problem(tmp_path, gpus=gpus)
    running = solve(first)
    assert running.status == "optimal" and first.alone_optima
    current = churn.current_from_document(json.loads(json.dumps(running.to_dict())))
    grown = tiered_problem(tmp_path, gpus=gpus, rates={"critical-0": 30})  # 12 req/s before
    grown.current, grown.alone_optima = current, set(first.alone_optima)
    modelled = _configs_modelled(monkeypatch)
    plan = solve(grown)
    whole = sum(len(milp.prune_dominated(w, current)) for w in grown.workloads)
    assert modelled[0] < whole and whole in modelled[1:]
    res = {r.workload: r for r in plan.workloads}
    assert all(r.shed_rps == 0 for k, r in res.items() if "/low-" not in k)
    assert sum(r.shed_rps for k, r in res.items() if "/low-" in k) > 0
    assert set(churn.churn_report(plan, current)["workloadsChanged"]) <= {"prod/critical-0", "prod/low-0",
                                                                          "prod/low-1", "prod/low-2"}
    assert any(m.startswith("incremental re-plan: ") for m in plan.messages), plan.messages


def _running(plan) -> tuple[dict, dict]:
    """The running plan as ``llmfleet plan --current`` reads it: replicas per group and shortfall."""
    doc = json.loads(json.dumps(plan.to_dict()))
    return churn.current_from_document(doc), churn.shortfall_from_document(doc)


def _shed(plan, tier: str) -> float:
    return sum(r.shed_rps for r in plan.workloads if r.workload.startswith(f"prod/{tier}-"))


def _short_fleet(tmp_path, rates=None):
    """tiered_problem on a pool that holds the critical tier and half the standard one: the
    standard tier sheds and the low one gets nothing (its minimum of 1 replica short)."""
    ample = solve(tiered_problem(tmp_path, gpus=64))
    need = {t: sum(a.gpus for a in ample.assignments if a.workload.startswith(f"prod/{t}"))
            for t in ("critical", "standard")}
    gpus = need["critical"] + need["standard"] // 2
    return gpus, tiered_problem(tmp_path, gpus=gpus, rates=rates)


def test_under_a_shortage_an_unchanged_fleet_is_held_whole_short_workloads_included(tmp_path):
    # Independent reason: nothing changed since the running plan, so every workload, served in full
    # or short, is as that plan left it and nothing freed GPUs for anyone: the re-plan plans no
    # workload afresh (before, the short ones and every lower-tier one were planned afresh and the
    # tier phases searched them again: on bench/solver_scale.py (c), 100 workloads with binding
    # pools, 26 s of a 30-s limit, restarting 26 replicas at the same cost).
    gpus, fp = _short_fleet(tmp_path)
    running = solve(fp)
    assert running.status == "shortage" and _shed(running, "standard") > 0
    res = {r.workload: r for r in running.workloads}
    assert all(res[f"prod/low-{k}"].replicas_short == 1 for k in range(3))
    again = tiered_problem(tmp_path, gpus=gpus)
    again.current, again.current_shortfall = _running(running)
    assert set(again.current_shortfall) >= {"prod/low-0", "prod/low-1", "prod/low-2"}
    plan = solve(again)
    report = churn.churn_report(plan, again.current)
    assert report["replicasStarted"] == report["replicasStopped"] == 0
    short = sum(1 for r in running.workloads if r.shed_rps > 0 or r.replicas_short > 0)
    assert any(m.startswith("incremental re-plan: 0 workload(s) planned afresh")
               and f"{short} kept short as the running plan left them" in m for m in plan.messages), plan.messages


def test_a_short_workload_whose_minimum_was_raised_is_planned_afresh(tmp_path):
    # Independent reason: low-0 runs no replica and its minimum goes from 1 to 2: it now misses two
    # replicas where the running plan missed one, so it is worse off than the running plan left it
    # and must be planned afresh; every other workload is as it was.
    gpus, fp = _short_fleet(tmp_path)
    running = solve(fp)
    again = tiered_problem(tmp_path, gpus=gpus)
    again.workloads = [dataclasses.replace(w, min_replicas=2) if w.key == "prod/low-0" else w for w in again.workloads]
    again.current, again.current_shortfall = _running(running)
    plan = solve(again)
    assert any(m.startswith("incremental re-plan: 1 workload(s) planned afresh") for m in plan.messages), plan.messages
    assert {r.workload: r.replicas_short for r in plan.workloads}["prod/low-0"] == 2


def test_a_short_workload_is_not_held_where_a_higher_tier_may_give_gpus_back(tmp_path):
    # Independent reason: critical-0's traffic falls from 12 to 3 req/s, so its replicas are partly
    # idle and the re-plan shrinks them. Tier order gives the GPUs it frees to the standard tier,
    # which sheds: the short standard workloads must not be held as they ran, and the standard
    # tier then sheds less than before. It still sheds (the pool holds half of it besides the
    # critical tier, and critical-0 frees less than the other half), so the low tier gets nothing
    # and stays as it ran: its phases are held, not searched again.
    gpus, fp = _short_fleet(tmp_path)
    running = solve(fp)
    before = _shed(running, "standard")
    less = tiered_problem(tmp_path, gpus=gpus, rates={"critical-0": 3})
    less.current, less.current_shortfall = _running(running)
    plan = solve(less)
    assert _shed(plan, "critical") == 0
    assert _shed(plan, "standard") < before - 1.0
    assert _shed(plan, "standard") > 0
    low = [p for p in plan.phases if p["phase"].startswith("tier low")]
    assert low and all(p["status"] == "held" for p in low)


H100_POOL = """
apiVersion: llmfleet.dev/v1alpha1
kind: GPUPool
metadata: {name: h100}
spec: {gpuType: H100-SXM, maxGPUs: 1, gpusPerNode: 8}
"""


def _fp8_fleet(tmp_path, a100_gpus: int, critical0_rps: float):
    """tiered_problem's nine workloads on an A100 pool of ``a100_gpus`` and one H100, critical-0
    with an FP8 KV cache, which only the H100 can hold (FP8 tensor cores; gpus.csv)."""
    docs = []
    for tier in ("critical", "standard", "low"):
        for k in range(3):
            doc = WORKLOAD % {"name": f"{tier}-{k}", "ttft": "1s", "tier": tier, "minrep": 1}
            rate = critical0_rps if (tier, k) == ("critical", 0) else 12 + 3 * k
            doc = doc.replace("requestRatePerSecond: 20", f"requestRatePerSecond: {rate}")
            if (tier, k) == ("critical", 0):
                doc = doc.replace("minReplicas: 1}", "minReplicas: 1, kvCacheDtype: fp8}")
            docs.append(doc)
    f = tmp_path / "fp8.yaml"
    f.write_text("---".join(docs + [POOL % {"gpus": a100_gpus}, H100_POOL]))
    return build_problem(load_fleet([f]))


def test_a_top_tier_workload_short_at_its_best_leaves_the_lower_tiers_held(tmp_path):
    # Independent reason: critical-0 can run only on the one H100 (its FP8 KV cache needs FP8
    # tensor cores, which the A100 lacks), and it has it already. Once its demand grows past that
    # GPU it sheds whatever the lower tiers do, so no lower-tier GPU can help it: after the
    # critical tier's phases the lower tiers, short as before with nothing freed, are held as they
    # run (their phases reported held, nothing of theirs moved). Before, one top-tier workload
    # short at its best left every lower-tier workload to the phases (bench/solver_scale.py (c),
    # 100 workloads with binding pools: the 30-s limit reached, 17 other workloads changed).
    ample = solve(_fp8_fleet(tmp_path, 64, 12))
    assert {a.config.pool.name for a in ample.assignments if a.workload == "prod/critical-0"} == {"h100"}
    need = {t: sum(a.gpus for a in ample.assignments if a.workload.startswith(f"prod/{t}") and a.config.pool.name == "a100")
            for t in ("critical", "standard")}
    a100 = need["critical"] + need["standard"] // 2
    running = solve(_fp8_fleet(tmp_path, a100, 12))
    assert running.status == "shortage" and _shed(running, "critical") == 0 and _shed(running, "standard") > 0
    more = _fp8_fleet(tmp_path, a100, 30)
    more.current, more.current_shortfall = _running(running)
    plan = solve(more)
    shed = {r.workload: r.shed_rps for r in plan.workloads}
    assert shed["prod/critical-0"] > 1.0 and shed["prod/critical-1"] == shed["prod/critical-2"] == 0
    assert churn.churn_report(plan, more.current)["workloadsChanged"] == []
    lower = [p for p in plan.phases if p["phase"].startswith(("tier standard", "tier low"))]
    assert lower and all(p["status"] == "held" for p in lower)
    assert _shed(plan, "standard") == pytest.approx(_shed(running, "standard"), abs=1e-3)


def test_replicas_a_minimum_keeps_idle_free_no_gpus_and_the_fleet_is_held_whole(tmp_path):
    # Independent reason: critical-0 asks for 3 replicas at 1 req/s, which one replica serves, so
    # two stay idle by the user's choice (minReplicas), not because demand fell: the re-plan may
    # not shrink them, so they free no GPUs for the short standard and low workloads. With nothing
    # changed, the fleet is held whole. Before, the idle replicas read as GPUs that may be freed
    # and every short workload was planned afresh again.
    fleet = dict(gpus=12, rates={"critical-0": 1}, min_replicas={"critical-0": 3})
    running = solve(tiered_problem(tmp_path, **fleet))
    assert running.status == "shortage" and _shed(running, "standard") > 0
    assert sum(a.replicas for a in running.assignments if a.workload == "prod/critical-0") == 3
    again = tiered_problem(tmp_path, **fleet)
    again.current, again.current_shortfall = _running(running)
    plan = solve(again)
    assert churn.churn_report(plan, again.current)["workloadsChanged"] == []
    assert [p["status"] for p in plan.phases] == ["held"]
    assert any("0 workload(s) planned afresh" in m for m in plan.messages)


def test_the_shortfall_is_read_from_the_plan_document():
    doc = {"assignments": [], "workloads": [
        {"workload": "a/x", "shedRps": 2.5, "minReplicasShort": 0},
        {"workload": "a/y", "shedRps": 4.0, "minReplicasShort": 1},
        {"workload": "a/z", "shedRps": 0.0, "minReplicasShort": 0},
        {"workload": "a/old", "shedRps": 1.0}]}  # a document written before minReplicasShort
    assert churn.shortfall_from_document(doc) == {"a/x": (2.5, 0), "a/y": (4.0, 1), "a/old": (1.0, 0)}
    for bad, field in (({"workload": "a/x", "shedRps": -1}, "shedRps"), ({"workload": "a/x", "minReplicasShort": 1.5},
                                                                        "minReplicasShort"), ({"shedRps": 1}, "workload key")):
        with pytest.raises(ValueError, match=rf"--current p\.json: workloads\[0\].*{field}"):
            churn.shortfall_from_document({"workloads": [bad]}, "--current p.json")


def test_a_replans_tier_phases_start_from_a_solution_that_keeps_the_held_replicas(tmp_path, monkeypatch):
    # Independent reason: critical-0 grows from 12 to 15 req/s on a pool that the running plan
    # fills, so the re-plan holds the lower-tier workloads it keeps (short as before) at their
    # replicas while the critical tier's phases run. Those phases must start from a solution of
    # the re-plan's model, whose bounds fix the held replicas: a start that drops them is one HiGHS
    # discards, and a phase "met by the incumbent" hands it on as the plan so far (before, the
    # critical phases' start had the held standard replicas at 0: 2 columns out of bounds).
    gpus, fp = _short_fleet(tmp_path)
    running = solve(fp)
    starts = []
    phase = milp._phase

    def checked(model, objective, start, deadline, share, gap, label, *args, **kwargs):
        if start is not None:
            lower, upper = model.bounds(np.arange(model.num_columns))
            starts.append((label, int(((start < lower - 1e-6) | (start > upper + 1e-6)).sum())))
        return phase(model, objective, start, deadline, share, gap, label, *args, **kwargs)

    monkeypatch.setattr(milp, "_phase", checked)
    more = tiered_problem(tmp_path, gpus=gpus, rates={"critical-0": 15})
    more.current, more.current_shortfall = _running(running)
    plan = solve(more)
    assert any("kept short as the running plan left them" in m for m in plan.messages), plan.messages
    assert any(label.startswith("tier critical") for label, _ in starts)
    assert [(label, out) for label, out in starts if out] == []


def _replan_of_short_fleet(tmp_path):
    """The short tiered fleet re-planned against its own first plan, prepared as ``_phases`` gets
    it: (GPUs per pool, the problem, the model, the HiGHS model, the start's column values, the
    top tier's value, the lower tiers' replicas in the start, (workload, config) -> replicas)."""
    gpus, fp = _short_fleet(tmp_path)
    again = tiered_problem(tmp_path, gpus=gpus)
    again.current, again.current_shortfall = _running(solve(fp))
    prepared = milp._prepare(again, time.perf_counter() + 30.0)
    m, model, start = prepared.model, prepared.highs, prepared.start
    top = max(w.tier_value for w in again.workloads)
    theirs = {key: r for key, r in milp._counts(m, model, start).items() if again.workloads[key[0]].tier_value < top}
    return gpus, again, m, model, start, top, theirs


def test_after_a_tiers_phases_a_plan_beside_every_lower_tier_replica_is_found_where_one_exists(tmp_path):
    # Independent reason: the running plan itself serves the critical tier beside every lower-tier
    # replica it runs, so with the critical tier's shed fixed at what that plan reaches (as its
    # phase leaves it), such a plan exists and must be found with the lower tiers' replica counts
    # exactly as they ran; with a pool's worth more lower-tier replicas than the pool holds, none
    # exists. (A phase stops once its bound is within its tie-break, so its plan may take lower-tier
    # GPUs it does not need; bench/solver_scale.py (c), gold w019 +20%: two silver workloads lost
    # replicas and their tier's phases ran for 1.1 s to give them back.)
    gpus, again, m, model, start, top, theirs = _replan_of_short_fleet(tmp_path)
    below = lambda key: again.workloads[key[0]].tier_value < top  # noqa: E731
    assert sum(theirs.values()) > 0
    shed = sum(milp._shed_rps(again, m, wi) for wi, w in enumerate(again.workloads) if w.tier_value == top)
    reached = model.value(shed, start)
    milp._fix_objective(model, shed, reached)
    values = milp._beside_lower_tiers(again, m, model, top, frozenset(), theirs, time.perf_counter() + 30.0,
                                     time.perf_counter() + 30.0)
    assert values is not None
    assert {key: r for key, r in milp._counts(m, model, values).items() if below(key)} == theirs
    assert model.value(shed, values) <= reached + 1e-6
    key = next(iter(theirs))
    crowded = {**theirs, key: theirs[key] + gpus}
    assert milp._beside_lower_tiers(again, m, model, top, frozenset(), crowded,
                                     time.perf_counter() + 30.0, time.perf_counter() + 30.0) is None


def test_a_plan_beside_the_lower_tiers_that_its_slice_stopped_is_routed_within_the_solves_time(tmp_path, monkeypatch):
    # Independent reason: a solve stopped by its slice (``until``) has spent that slice, so the
    # completion that routes its counts again must run within the solve's deadline; within the
    # spent slice it got 0.05 s, less than the whole model's presolve at 100 workloads (0.1 s), and
    # the unrouted solution stood.
    _, again, m, model, _, top, theirs = _replan_of_short_fleet(tmp_path)
    real_solve, real_complete = model.solve, milp._complete
    seen = []

    def stopped(*args, **kwargs):
        res = real_solve(*args, **kwargs)
        return dataclasses.replace(res, status="Time limit reached") if kwargs.get("label") == "beside the lower tiers" \
            else res

    def complete(fp_, m_, model_, counts, deadline):
        seen.append(deadline - time.perf_counter())
        return real_complete(fp_, m_, model_, counts, deadline)

    monkeypatch.setattr(model, "solve", stopped)
    monkeypatch.setattr(milp, "_complete", complete)
    spent = time.perf_counter() - 1.0
    values = milp._beside_lower_tiers(again, m, model, top, frozenset(), theirs, spent, time.perf_counter() + 30.0)
    assert values is not None and len(seen) == 1 and seen[0] > 20.0
    assert {key: r for key, r in milp._counts(m, model, values).items()
            if again.workloads[key[0]].tier_value < top} == theirs
