"""Plans fit the pools' nodes (issue 15 item 4): every TP group on one node, through the MILP's
node-shape cuts and the CP-SAT placement after it."""

from __future__ import annotations

from llmfleet.api.loader import load_fleet
from llmfleet.solver.milp import solve
from llmfleet.solver.problem import build_problem

FLEET = """
apiVersion: llmfleet.dev/v1alpha1
kind: LLMWorkload
metadata: {name: chat, namespace: prod}
spec:
  model: meta-llama/Llama-3.1-8B-Instruct
  traffic: {requestRatePerSecond: 200, inputTokens: {p50: 500, p90: 1500, p99: 3000}, outputTokens: {p50: 200, p90: 400, p99: 800}}
  slo: {ttft: 1s, tpot: 100ms}
  serving: {tensorParallelSizes: [4], minReplicas: 0}
---
apiVersion: llmfleet.dev/v1alpha1
kind: GPUPool
metadata: {name: h100}
spec: {gpuType: H100-SXM, maxGPUs: 12, gpusPerNode: %(per_node)d}
"""


def plan_for(tmp_path, per_node):
    f = tmp_path / f"fleet{per_node}.yaml"
    f.write_text(FLEET % {"per_node": per_node})
    fp = build_problem(load_fleet([f]))
    return fp, solve(fp)


def test_a_tp_group_never_spans_nodes(tmp_path):
    # 12 GPUs as two 6-GPU nodes hold two TP-4 groups, not three: 4 GPUs do not fit in the 2 left
    # on each node. The demand (200 req/s) needs more than any of these fleets, so the plans take
    # all the GPUs they can place.
    fp, split = plan_for(tmp_path, 6)
    assert [n.allocatable_gpus for n in fp.nodes] == [6, 6]
    assert sum(a.replicas for a in split.assignments) == 2
    assert split.placement is not None and split.placement.all_placed
    assert sorted(len(v) for v in split.placement.nodes_used.values()) == [2]
    # the same 12 GPUs as one node hold three
    _, whole = plan_for(tmp_path, 12)
    assert sum(a.replicas for a in whole.assignments) == 3 and whole.placement.all_placed
    doc = split.to_dict()
    assert {b["node"] for b in doc["placement"]["bindings"]} == {"h100-0", "h100-1"}
