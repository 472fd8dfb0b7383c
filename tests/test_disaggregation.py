"""Prefill/decode disaggregation in the planner: role choice, the per-domain P/D flow balance,
KV-transfer limits and ``spec.serving.disaggregation``."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np
import pytest

from llmfleet.api.loader import ManifestError, load_fleet
from llmfleet.catalog.gpus import get_gpu
from llmfleet.catalog.models import resolve_model
from llmfleet.perf.capacity import kv_transfer_s, prefill_capacity_rps
from llmfleet.perf.steptime import decode_time_s, prefill_time_s
from llmfleet.solver.milp import as_planned, predicted_latency, solve
from llmfleet.solver.plan import Assignment
from llmfleet.solver.problem import build_problem
from llmfleet.workload.demand import INPUT_EDGES_TOKENS

MODEL = "meta-llama/Llama-3.1-8B-Instruct"

# Long prompts, short answers (summarisation-like), tight TPOT: every prefill that a colocated
# replica interleaves lands on the TPOT of the few tokens each request generates.
WORKLOAD = """
apiVersion: llmfleet.dev/v1alpha1
kind: LLMWorkload
metadata: {name: summarise, namespace: prod}
spec:
  model: %(model)s
  traffic: {requestRatePerSecond: 6, inputTokens: {p50: 5000, p90: 7000, p99: 7900}, outputTokens: {p50: 45, p90: 60, p99: 100}}
  slo: {ttft: 2s, tpot: %(tpot)s, percentile: 90}
  serving: {tensorParallelSizes: [1], disaggregation: %(mode)s, minReplicas: 0}
"""
POOL = """
apiVersion: llmfleet.dev/v1alpha1
kind: GPUPool
metadata: {name: %(name)s}
spec:
  gpuType: %(gpu)s
  maxGPUs: 64
  gpusPerNode: 8
"""
NET = """
  interconnect: {domain: rdma-a, bandwidthGbitPerSecondPerGPU: %(gbit)s}
"""


def fleet(tmp_path, mode="auto", domain_gbit=None, tpot="30ms"):
    """The workload above on an L40S and an A100-80G pool; both in one KV domain when
    ``domain_gbit`` is given (Gbit/s per GPU), else each pool is its own domain."""
    docs = [WORKLOAD % {"model": MODEL, "mode": mode, "tpot": tpot}]
    for name, gpu in (("l40s", "L40S"), ("a100", "A100-80G")):
        doc = POOL % {"name": name, "gpu": gpu}
        if domain_gbit is not None:
            doc += NET % {"gbit": domain_gbit}
        docs.append(doc)
    f = tmp_path / "fleet.yaml"
    f.write_text("---".join(docs))
    return build_problem(load_fleet([f]))


def domain_of(fp, pool):
    return fp.pools[pool].kv_domain


def test_colocated_cannot_meet_tpot_for_long_prompts_but_pd_can(tmp_path):
    # Independent reason, from the step times alone: a colocated request of ~5000 prompt tokens
    # and ~45 output tokens shares its life with other prompts' prefills at any load; at the 90th
    # percentile two of them (the 90th percentile of Poisson(1) is 2), so its TPOT percentile is at
    # least t_d(1) + 2 t_p / O, which exceeds 30 ms on both GPUs. A decode-only A100 replica has
    # t_d(1) well under 30 ms.
    m = resolve_model(MODEL)
    for gpu in ("L40S", "A100-80G"):
        g = get_gpu(gpu)
        assert decode_time_s(m, g, 1, 1, 5000) + 2 * prefill_time_s(m, g, 1, 5000) / 45 > 0.030
    assert decode_time_s(m, get_gpu("A100-80G"), 1, 1, 5000) < 0.025

    never = solve(fleet(tmp_path, "never"))
    assert never.status == "shortage"  # the long-prompt buckets are unreachable colocated
    auto = solve(fleet(tmp_path, "auto"))
    assert auto.status == "optimal"
    roles = {a.role for a in auto.assignments}
    assert {"prefill", "decode"} <= roles


def test_pd_flow_balance_per_bucket_and_domain(tmp_path):
    for gbit in (None, 400):
        fp = fleet(tmp_path, "always", domain_gbit=gbit)
        plan = solve(fp)
        assert plan.status == "optimal"
        assert all(a.role in ("prefill", "decode") for a in plan.assignments)
        rate = fp.workloads[0].rate_rps
        share = fp.workloads[0].share
        flow = defaultdict(lambda: np.zeros(len(share)))
        for a in plan.assignments:
            flow[domain_of(fp, a.pool)] += (1 if a.role == "prefill" else -1) * a.bucket_rate_rps
            # replicas carry their load within the capacity model
            served = a.config.capacity_rps > 0
            assert (a.bucket_rate_rps[served] / a.config.capacity_rps[served]).sum() <= a.replicas + 1e-6
        for d, net in flow.items():
            assert np.abs(net).max() < 1e-6 * rate, d  # every prompt prefilled in D is decoded in D
        prefilled = sum(a.bucket_rate_rps for a in plan.assignments if a.role == "prefill")
        np.testing.assert_allclose(prefilled, rate * share, rtol=1e-6)


def test_cross_pool_pd_only_inside_a_declared_domain(tmp_path):
    # Without an interconnect each pool is a domain of its own. The L40S cannot decode within
    # 18 ms: streaming the 16 GB of BF16 weights once at its datasheet 864 GB/s already takes
    # 18.6 ms, so it cannot be used at all.
    m = resolve_model(MODEL)
    assert m.weight_bytes / get_gpu("L40S").mem_bandwidth_bytes_per_s > 0.018
    alone = solve(fleet(tmp_path, "always", tpot="18ms"))
    assert {a.pool for a in alone.assignments} == {"a100"}
    # In one domain, prefill may move to the L40S pool while the A100 pool decodes; allowing
    # more can only lower the cost.
    shared = solve(fleet(tmp_path, "always", domain_gbit=400, tpot="18ms"))
    assert shared.status == "optimal"
    assert shared.cost_per_hour <= alone.cost_per_hour + 1e-6
    assert all(a.pool == "a100" for a in shared.assignments if a.role == "decode")


def test_kv_transfer_counts_inside_ttft(tmp_path):
    m = resolve_model(MODEL)
    g = get_gpu("A100-80G")
    inp = np.array([5000.0])
    # 5000 tokens x 128 KiB (32 layers x 8 KV heads x 128 x 2 x 2 bytes) at 1 Gbit/s: 5.2 s
    assert m.kv_bytes_per_token == 32 * 8 * 128 * 2 * 2
    slow = kv_transfer_s(m, inp, 1e9 / 8)
    assert slow[0] == pytest.approx(5000 * 131072 * 8 / 1e9)
    assert prefill_capacity_rps(m, g, 1, inp, 2.0, 90, slow, 0.03)[0] == 0.0
    assert prefill_capacity_rps(m, g, 1, inp, 2.0, 90, kv_transfer_s(m, inp, 50e9), 0.03)[0] > 0
    # a domain whose network cannot move the KV cache within the TTFT target cannot disaggregate
    plan = solve(fleet(tmp_path, "always", domain_gbit=0.05))
    assert plan.status == "shortage"
    assert not any(a.role == "prefill" and a.pool == "l40s" for a in plan.assignments)


def test_disaggregation_field_limits_the_roles(tmp_path):
    # with a relaxed TPOT every role is feasible; the field decides which the planner may use
    assert {c.role for c in fleet(tmp_path, "auto", tpot="150ms").workloads[0].configs} == {
        "colocated", "prefill", "decode"}
    never = fleet(tmp_path, "never", tpot="150ms")
    assert {c.role for c in never.workloads[0].configs} == {"colocated"}
    assert {a.role for a in solve(never).assignments} == {"colocated"}
    always = fleet(tmp_path, "always", tpot="150ms")
    assert {c.role for c in always.workloads[0].configs} == {"prefill", "decode"}
    assert {a.role for a in solve(always).assignments} == {"prefill", "decode"}


def test_pd_split_is_one_prompt_length_threshold(tmp_path):
    """The deployed router (llm-d's P/D decider) sends a prompt through a prefill pod exactly when
    it is longer than one threshold, so a plan may not send some prompts of a length P/D and others
    of the same length colocated: every bucket is served by one path, all prompt lengths from the
    threshold up by P/D, all below it colocated, and the plan reports the threshold."""
    doc = (WORKLOAD % {"model": MODEL, "mode": "auto", "tpot": "30ms"}).replace(
        "inputTokens: {p50: 5000, p90: 7000, p99: 7900}", "inputTokens: {p50: 600, p90: 6000, p99: 12000}")
    docs = [doc] + [POOL % {"name": n, "gpu": g} for n, g in (("l40s", "L40S"), ("a100", "A100-80G"))]
    f = tmp_path / "fleet.yaml"
    f.write_text("---".join(docs))
    fp = build_problem(load_fleet([f]))
    plan = solve(fp)
    assert plan.status in ("optimal", "shortage")  # the 12k-token prompts may miss a 2 s TTFT
    w = fp.workloads[0]
    classes = np.array([i for i, _ in w.demand.buckets()])
    inputs = np.array([INPUT_EDGES_TOKENS[i] for i in classes])
    pd_rps = sum((a.bucket_rate_rps for a in plan.assignments if a.role == "prefill"), np.zeros(len(classes)))
    colo_rps = sum((a.bucket_rate_rps for a in plan.assignments if a.role == "colocated"), np.zeros(len(classes)))
    assert not ((pd_rps > 1e-9) & (colo_rps > 1e-9)).any(), "a bucket split between P/D and colocated"
    assert (pd_rps > 1e-9).any(), "a 30 ms TPOT with multi-thousand-token prompts needs P/D (see the first test)"
    threshold = plan.pd_threshold_tokens[w.key]
    assert threshold in INPUT_EDGES_TOKENS
    assert (pd_rps[inputs < threshold] <= 1e-9).all() and (colo_rps[inputs >= threshold] <= 1e-9).all()
    assert plan.to_dict()["pdThresholdTokens"] == {w.key: threshold}


def test_service_routing_never_plans_pd(tmp_path):
    """Behind a plain Service every pod gets an equal share of connections, so nothing sends a
    prompt to a prefill pod and its decode elsewhere: the planner must not choose P/D (a note says
    so), and a workload that demands it is refused naming the field."""
    policy = ("\napiVersion: llmfleet.dev/v1alpha1\nkind: FleetPolicy\nmetadata: {name: default}\n"
              "spec: {routing: {mode: service}}\n")
    for mode in ("auto", "always"):
        docs = [WORKLOAD % {"model": MODEL, "mode": mode, "tpot": "150ms"}, POOL % {"name": "a100", "gpu": "A100-80G"},
                policy]
        f = tmp_path / f"{mode}.yaml"
        f.write_text("---".join(docs))
        if mode == "auto":
            fp = build_problem(load_fleet([f]))
            assert {c.role for c in fp.workloads[0].configs} == {"colocated"}
            assert any("routing.mode is service" in m for m in solve(fp).messages)
        else:
            with pytest.raises(ManifestError, match="spec.serving.disaggregation: always needs a router"):
                build_problem(load_fleet([f]))


def test_a_plans_prefill_ttft_counts_the_kv_transfer_to_the_decode_group_it_planned(tmp_path):
    """The capacity model takes a prefill replica's KV transfer at the slowest decode
    configuration of its P/D group (one GPU receives), so that κ holds whichever decode group the
    solver picks. A plan knows its decode group: a TP-2 prefill replica sends over two GPUs and a
    TP-2 decode replica receives over two, so the transfer takes half as long, as the simulator
    moves it (KV bytes / min(sender, receiver bandwidth)); beside a TP-1 decode group the slower
    one counts."""
    f = tmp_path / "fleet.yaml"
    f.write_text((WORKLOAD % {"model": MODEL, "mode": "always", "tpot": "30ms"}).replace(
        "tensorParallelSizes: [1]", "tensorParallelSizes: [1, 2]") + "---" + POOL % {"name": "h100", "gpu": "H100-SXM"})
    fp = build_problem(load_fleet([f]))
    w = fp.workloads[0]
    by = {(c.role, c.tp): c for c in w.configs}
    prefill, decode1, decode2 = by["prefill", 2], by["decode", 1], by["decode", 2]
    per_gpu = prefill.pool.kv_bytes_per_s_per_gpu
    tokens_bytes = w.input_tokens * w.model.kv_bytes_per_token
    assert prefill.kv_transfer_s == pytest.approx(tokens_bytes / per_gpu)  # as modelled: one receiving GPU

    def group(c, role):
        return Assignment(workload=w.key, pool="h100", gpu_type="H100-SXM", tp=c.tp, replicas=1, gpus=c.tp,
                          cost_per_hour=1.0, rate_rps=1.0, utilization=0.5, bucket_rate_rps=w.share.copy(),
                          config=c, role=role)

    pre = group(prefill, "prefill")
    planned = as_planned(w, prefill, [pre, group(decode2, "decode")])
    assert planned.kv_transfer_s == pytest.approx(tokens_bytes / (2 * per_gpu))
    assert np.array_equal(planned.capacity_rps, prefill.capacity_rps)  # κ stays as the MILP planned it
    assert as_planned(w, prefill, [pre, group(decode1, "decode"), group(decode2, "decode")]) is prefill
    # the read-out: the TTFT at the SLO percentile about half-way between the one-GPU transfer's
    # and none at all (the transfer grows with the prompt, as the prefill does)
    rates = w.rate_rps * w.share
    ttft = {name: predicted_latency(w, c, rates, 0.5, fp.params)[0] for name, c in (
        ("one GPU", prefill), ("planned", planned),
        ("none", dataclasses.replace(prefill, kv_transfer_s=np.zeros_like(prefill.kv_transfer_s))))}
    assert ttft["none"] < ttft["planned"] < ttft["one GPU"]
    assert ttft["planned"] == pytest.approx((ttft["none"] + ttft["one GPU"]) / 2, rel=0.05)
