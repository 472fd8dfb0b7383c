"""The operator on a real control plane (kube-apiserver, controller-manager and scheduler 1.20.2).

Every test starts its own cluster and operator process; see conftest.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from e2e.controlplane.localcluster import EXAMPLE_NODES
from llmfleet.operator.render import ANNOTATION_EXTERNAL_REPLICAS, ANNOTATION_POWER_LIMIT

from .conftest import REPO, wait_until

EXAMPLES = REPO / "examples"

OPEN_TENANCY = {"rules": [{"namespaces": ["default"], "tiers": ["critical", "high", "standard", "low"],
                           "extraArgs": ["--max-model-len"]}]}
"""These tests are about the operator's mechanics: namespace default may use every tier
(tests/integration/test_tenancy.py tests the tenancy rules themselves)"""
PLAIN_SERVICE = {"mode": "service"}
"""... and they count Deployments, pods and Services: routing mode service adds no endpoint picker
(tests/integration/test_routing.py tests the routing modes; the examples and the RBAC audit here
run in the mode detected, standalone on this cluster)"""


@pytest.fixture(autouse=True)
def open_policy(cluster):
    cluster.apply([{"apiVersion": "llmfleet.dev/v1alpha1", "kind": "FleetPolicy", "metadata": {"name": "default"},
                    "spec": {"tenancy": OPEN_TENANCY, "routing": PLAIN_SERVICE}}])


def add_example_nodes(cluster):
    for prefix, product, gpus, count in EXAMPLE_NODES:
        for i in range(count):
            cluster.lc.add_gpu_node(f"{prefix}-{i}", product, gpus)


def offline_plan() -> dict:
    """The plan ``llmfleet plan`` computes from the same files, with no cluster involved."""
    out = subprocess.run([sys.executable, "-m", "llmfleet.cli", "plan", "-f", str(EXAMPLES), "-o", "json",
                          "--no-baseline"], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout)


def vllm_deployments(cluster, namespace: str = "default") -> dict[str, dict]:
    """llmfleet's vLLM Deployments (a pool label), without the endpoint pickers of the routing mode."""
    return {n: d for n, d in cluster.deployments(namespace).items() if "llmfleet.dev/pool" in d["metadata"]["labels"]}


def groups_in_cluster(cluster) -> dict[tuple[str, str, int, str], int]:
    """(workload, pool, TP, role) -> replicas of the llmfleet vLLM Deployments."""
    out = {}
    for d in vllm_deployments(cluster).values():
        labels = d["metadata"]["labels"]
        out[(labels["llmfleet.dev/workload"], labels["llmfleet.dev/pool"],
             int(labels["llmfleet.dev/tensor-parallel-size"]), labels["llmfleet.dev/role"])] = d["spec"]["replicas"]
    return out


def planned_groups(plan: dict) -> dict[tuple[str, str, int, str], int]:
    """(workload, pool, TP, role) -> replicas of a ``llmfleet plan -o json`` document."""
    return {(a["workload"].split("/")[1], a["pool"], a["tensorParallelSize"], a["role"]): a["replicas"]
            for a in plan["assignments"]}


def all_pods_running(cluster, selector: str | None = None) -> bool:
    pods = cluster.pods(selector=selector)
    return bool(pods) and all(p["status"].get("phase") == "Running" for p in pods)


def test_examples_become_planned_deployments_bound_to_matching_gpu_nodes(cluster, operator):
    add_example_nodes(cluster)
    t0 = time.monotonic()
    cluster.kubectl("apply", "-f", str(EXAMPLES))
    plan = offline_plan()
    expected = planned_groups(plan)
    assert expected, "the example plan has replicas"
    wait_until(lambda: groups_in_cluster(cluster) == expected, 90, "the planned Deployments")
    print(f"kubectl apply -> all planned Deployments: {time.monotonic() - t0:.2f}s")

    # pods run on nodes of the pool's GPU type, with the GPUs, priority and power cap planned
    wait_until(lambda: all_pods_running(cluster), 60, "pods Running")
    nodes = cluster.nodes_by_name()
    pools = {p["metadata"]["name"]: p for p in cluster.get_json("gpupools")["items"]}
    for d in vllm_deployments(cluster).values():
        pool = pools[d["metadata"]["labels"]["llmfleet.dev/pool"]]
        product = pool["spec"]["nodeSelector"]["nvidia.com/gpu.product"]
        tmpl = d["spec"]["template"]["spec"]
        assert tmpl["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == \
            d["metadata"]["labels"]["llmfleet.dev/tensor-parallel-size"]
        assert tmpl["containers"][0]["args"][:3] == [
            cluster.workload(d["metadata"]["labels"]["llmfleet.dev/workload"])["spec"]["model"],
            "--tensor-parallel-size", d["metadata"]["labels"]["llmfleet.dev/tensor-parallel-size"]]
        assert tmpl["priorityClassName"] in ("llmfleet-high", "llmfleet-standard")
        role = d["metadata"]["labels"]["llmfleet.dev/role"]
        assert ("--kv-transfer-config" in tmpl["containers"][0]["args"]) == (role != "colocated")
        assert int(d["metadata"]["annotations"][ANNOTATION_POWER_LIMIT]) > 0
        owner = d["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == \
            ("LLMWorkload", d["metadata"]["labels"]["llmfleet.dev/workload"], True)
        for p in cluster.pods(selector=f"llmfleet.dev/group={d['metadata']['name']}"):
            assert nodes[p["spec"]["nodeName"]]["metadata"]["labels"]["nvidia.com/gpu.product"] == product

    # status: printer columns carry real values once the Deployments are available
    wait_until(lambda: all(cluster.condition(w, "Ready") and cluster.condition(w, "Ready")["status"] == "True"
                           for w in cluster.get_json("llmworkloads")["items"]), 60, "Ready=True")
    table = cluster.kubectl("get", "llmworkloads").stdout
    print(table)
    header = table.splitlines()[0].split()
    assert header == ["NAME", "MODEL", "RATE", "TTFT-SLO", "TPOT-SLO", "GPUS", "COST/H", "READY", "AGE"]
    for row in table.splitlines()[1:]:
        cols = dict(zip(header, row.split()))
        mine = [a for a in plan["assignments"] if a["workload"].endswith("/" + cols["NAME"])]
        assert int(cols["GPUS"]) == sum(a["gpus"] for a in mine)
        assert abs(float(cols["COST/H"]) - sum(a["costPerHour"] for a in mine)) < 0.01
        replicas = sum(a["replicas"] for a in mine)
        assert cols["READY"] == f"{replicas}/{replicas}"
    policy = cluster.get_json("fleetpolicy", "default")["status"]
    assert policy["planStatus"] == "optimal" and abs(policy["costPerHour"] - plan["costPerHour"]) < 0.01
    services = cluster.get_json("services")["items"]
    assert {s["metadata"]["name"] for s in services} >= {"chat-8b", "assistant-70b"}
    reasons = {e["reason"] for e in cluster.get_json("events")["items"] if e["source"].get("component") == "llmfleet"}
    assert {"PlanChanged", "Planned"} <= reasons


ASSISTANT = """
apiVersion: llmfleet.dev/v1alpha1
kind: LLMWorkload
metadata: {name: assistant-70b, namespace: default}
spec:
  model: meta-llama/Llama-3.1-70B-Instruct
  traffic:
    requestRatePerSecond: RATE
    inputTokens: {p50: 1020, p90: 2734, p99: 4142}
    outputTokens: {p50: 129, p90: 424, p99: 601}
  slo: {ttft: 2s, tpot: 120ms, percentile: 90}
  priority: standard
  # these tests are about the operator's mechanics on named colocated groups; P/D is planned
  # for the examples (test_examples_...) and in tests/test_disaggregation.py
  serving: {tensorParallelSizes: [4], disaggregation: never}
"""
H100_POOL = """
apiVersion: llmfleet.dev/v1alpha1
kind: GPUPool
metadata: {name: h100-sxm}
spec: {gpuType: H100-SXM, gpusPerNode: 8, maxGPUs: 16, costPerGPUHour: 6.9,
       nodeSelector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}}
"""


def test_traffic_change_updates_children_in_place_and_deletion_collects_them(cluster, operator):
    for i in range(2):
        cluster.lc.add_gpu_node(f"h100-{i}", "NVIDIA-H100-80GB-HBM3", 8)
    cluster.apply(H100_POOL + "---" + ASSISTANT.replace("RATE", "1"))
    name = "assistant-70b-h100-sxm-tp4"
    first = wait_until(lambda: cluster.deployments().get(name), 60, "the Deployment")
    replicas_before = first["spec"]["replicas"]

    cluster.apply(ASSISTANT.replace("RATE", "6"))
    after = wait_until(lambda: (d := cluster.deployments().get(name)) and d["spec"]["replicas"] > replicas_before
                       and d, 60, "more replicas for 6x the traffic")
    assert after["metadata"]["uid"] == first["metadata"]["uid"], "updated in place, not recreated"
    w = wait_until(lambda: (w := cluster.workload("assistant-70b"))["status"].get("observedGeneration")
                   == w["metadata"]["generation"] and w["status"].get("replicas") == after["spec"]["replicas"] and w,
                   30, "status of the new generation")
    assert w["metadata"]["generation"] == 2
    assert cluster.condition(w, "Planned")["status"] == "True"

    cluster.kubectl("delete", "llmworkload", "assistant-70b")
    wait_until(lambda: not cluster.deployments() and not [
        s for s in cluster.get_json("services")["items"] if s["metadata"]["name"] == "assistant-70b"],
        60, "garbage collection of the children")
    wait_until(lambda: not cluster.pods(), 60, "pods gone")


L4_POOL = """
apiVersion: llmfleet.dev/v1alpha1
kind: GPUPool
metadata: {name: l4}
spec: {gpuType: L4, gpusPerNode: 4, maxGPUs: MAX, nodeSelector: {nvidia.com/gpu.product: NVIDIA-L4}}
"""
L4_WORKLOAD = """
apiVersion: llmfleet.dev/v1alpha1
kind: LLMWorkload
metadata: {name: NAME, namespace: default}
spec:
  model: meta-llama/Llama-3.1-8B-Instruct
  traffic: {requestRatePerSecond: RATE, inputTokens: {p50: 200, p90: 400, p99: 800},
            outputTokens: {p50: 100, p90: 200, p99: 300}}
  slo: {ttft: 2s, tpot: 150ms}
  priority: TIER
  serving: {tensorParallelSizes: [1], disaggregation: never}
"""


def l4_workload(name: str, rate: float, tier: str) -> str:
    return L4_WORKLOAD.replace("NAME", name).replace("RATE", str(rate)).replace("TIER", tier)


def test_priority_tiers_plan_the_top_tier_first_and_the_scheduler_preempts_the_lower_tier(cluster, operator):
    # One node with 4 L4s, while the pool is autoscaled up to 6 (its next node not there yet):
    # the plan fits the pool, the cluster does not, and PriorityClasses decide who runs.
    cluster.lc.add_gpu_node("l4-0", "NVIDIA-L4", 4)
    autoscaled = L4_POOL.replace("MAX", "6").replace("maxGPUs: 6,", "maxGPUs: 6, autoscaled: true,")
    assert "autoscaled: true" in autoscaled
    cluster.apply(autoscaled + "---" + l4_workload("batch-8b", 15, "low"))
    wait_until(lambda: (d := cluster.deployments().get("batch-8b-l4-tp1")) and d["spec"]["replicas"] == 4,
               60, "4 low-tier replicas")
    wait_until(lambda: all_pods_running(cluster, "llmfleet.dev/workload=batch-8b")
               and len(cluster.pods(selector="llmfleet.dev/workload=batch-8b")) == 4, 60, "low tier running")

    cluster.apply(l4_workload("chat-8b", 5, "high"))
    wait_until(lambda: len([p for p in cluster.pods(selector="llmfleet.dev/workload=chat-8b")
                            if p["status"].get("phase") == "Running"]) == 2, 60, "high tier running")
    preempted = [e for e in cluster.get_json("events")["items"] if e["reason"] == "Preempted"]
    assert len(preempted) >= 2 and all("batch-8b" in e["involvedObject"]["name"] for e in preempted)
    assert all(p["spec"]["priorityClassName"] == "llmfleet-high"
               for p in cluster.pods(selector="llmfleet.dev/workload=chat-8b"))

    # the pool is no longer autoscaled: the planner plans within the node's 4 GPUs itself, top tier first
    cluster.apply(L4_POOL.replace("MAX", "6"))
    wait_until(lambda: cluster.deployments()["batch-8b-l4-tp1"]["spec"]["replicas"] == 2, 60, "low tier shrunk")
    assert cluster.deployments()["chat-8b-l4-tp1"]["spec"]["replicas"] == 2
    low = wait_until(lambda: (w := cluster.workload("batch-8b")) and cluster.condition(w, "Degraded")
                     and cluster.condition(w, "Degraded")["reason"] == "CapacityShortage" and w, 30, "Degraded")
    assert "tier low" in cluster.condition(low, "Degraded")["message"]
    high = cluster.workload("chat-8b")
    assert cluster.condition(high, "Degraded")["status"] == "False"
    assert high["status"]["servedRps"] == high["status"]["demandRps"]
    wait_until(lambda: all_pods_running(cluster) and len(cluster.pods()) == 4, 60, "all 4 GPUs in use, none pending")


def test_the_plan_fits_the_gpus_free_on_the_pools_nodes_and_the_scheduler_binds_every_pod(cluster, operator):
    # two nodes of 4 L4s, 3 GPUs of l4-0 held by a foreign training pod: 5 GPUs free, although the
    # pool declares 8 and the workload wants more (30 req/s needs 7 replicas offline, nearly twice
    # the 4 that 15 req/s needs in the test above)
    for i in range(2):
        cluster.lc.add_gpu_node(f"l4-{i}", "NVIDIA-L4", 4)
    cluster.apply([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "training", "namespace": "default",
                                                                     "labels": {"app": "training"}},
                    "spec": {"nodeName": "l4-0", "containers": [{"name": "t", "image": "placeholder.invalid/train:1",
                             "resources": {"requests": {"nvidia.com/gpu": "3"}, "limits": {"nvidia.com/gpu": "3"}}}]}}])
    wait_until(lambda: all_pods_running(cluster, "app=training"), 30, "the foreign pod running")
    cluster.apply(L4_POOL.replace("MAX", "8") + "---" + l4_workload("batch-8b", 30, "low"))
    pool = wait_until(lambda: (p := cluster.get_json("gpupool", "l4")).get("status", {}).get("availableGPUs") == 5
                      and p, 60, "the pool's status counting the nodes")
    assert {k: pool["status"][k] for k in ("nodes", "allocatableGPUs", "foreignGPUs", "freeGPUs")} == \
        {"nodes": 2, "allocatableGPUs": 8, "foreignGPUs": 3, "freeGPUs": 5}
    assert "5 GPUs free on its 2 node(s)" in cluster.condition(pool, "Planned")["message"]
    wait_until(lambda: (d := cluster.deployments().get("batch-8b-l4-tp1")) and d["spec"]["replicas"] == 5,
               60, "5 replicas: the GPUs free, not maxGPUs")
    # the real scheduler binds every planned pod: none Pending
    wait_until(lambda: all_pods_running(cluster, "llmfleet.dev/workload=batch-8b")
               and len(cluster.pods(selector="llmfleet.dev/workload=batch-8b")) == 5, 60, "every planned pod running")
    w = cluster.workload("batch-8b")
    assert cluster.condition(w, "Degraded")["reason"] == "CapacityShortage"


def test_invalid_objects_are_refused_or_conditioned_and_running_children_stay(cluster, operator):
    cluster.lc.add_gpu_node("l4-0", "NVIDIA-L4", 4)
    cluster.apply(L4_POOL.replace("MAX", "4") + "---" + l4_workload("chat-8b", 2, "high"))
    before = wait_until(lambda: cluster.deployments().get("chat-8b-l4-tp1"), 60, "the Deployment")

    # refused by the CRD schema: a duration without a unit, a TP degree vLLM does not take
    bad = cluster.apply(l4_workload("chat-8b", 2, "high").replace("ttft: 2s", "ttft: 2"), check=False)
    assert bad.returncode != 0 and "spec.slo.ttft" in bad.stderr
    bad = cluster.apply(l4_workload("chat-8b", 2, "high").replace("[1]", "[3]"), check=False)
    assert bad.returncode != 0 and "tensorParallelSizes" in bad.stderr

    # accepted by the schema, refused by the planner: percentiles out of order, unknown tier
    cluster.apply(l4_workload("chat-8b", 2, "high").replace("p90: 400", "p90: 100"))
    w = wait_until(lambda: (w := cluster.workload("chat-8b")) and cluster.condition(w, "Planned")
                   and cluster.condition(w, "Planned")["status"] == "False" and w, 30, "Planned=False")
    planned = cluster.condition(w, "Planned")
    assert planned["reason"] == "InvalidSpec" and "spec.traffic.inputTokens" in planned["message"]
    assert planned["observedGeneration"] == w["metadata"]["generation"]
    time.sleep(3)  # give a wrong operator time to act
    after = cluster.deployments()["chat-8b-l4-tp1"]
    assert (after["metadata"]["uid"], after["spec"]["replicas"], after["metadata"]["generation"]) == \
        (before["metadata"]["uid"], before["spec"]["replicas"], before["metadata"]["generation"])
    events = [e for e in cluster.get_json("events")["items"] if e["reason"] == "InvalidSpec"]
    assert events and events[0]["type"] == "Warning"

    cluster.apply(l4_workload("chat-8b", 2, "gold"))
    wait_until(lambda: "spec.priority" in (cluster.condition(cluster.workload("chat-8b"), "Planned") or {}).get(
        "message", ""), 30, "Planned=False naming spec.priority")
    assert cluster.deployments()["chat-8b-l4-tp1"]["metadata"]["uid"] == before["metadata"]["uid"]

    cluster.apply(l4_workload("chat-8b", 2, "high"))  # fixed: planned again
    wait_until(lambda: (cluster.condition(cluster.workload("chat-8b"), "Planned") or {}).get("status") == "True",
               30, "Planned=True after the fix")


def test_trace_paths_outside_the_trace_dir_are_refused_and_no_file_content_reaches_status(cluster, operator, tmp_path):
    """The attack of issue 10/11: a workload whose trace path walks out of --trace-dir to a secret
    (here a stand-in for the ServiceAccount token). The workload gets Planned=False naming the
    field; the secret's text is in no status, event or operator log line."""
    import os

    secret_text = "eyJhbGciOiJSUzI1NiJ9.stand-in-for-a-service-account-token"
    secret = tmp_path / "token"
    secret.write_text(secret_text + "\n")
    cluster.lc.add_gpu_node("l4-0", "NVIDIA-L4", 4)
    cluster.apply(L4_POOL.replace("MAX", "4"))

    def trace_workload(path: str) -> str:
        return l4_workload("thief", 1, "high").replace(
            "traffic: {requestRatePerSecond: 1, inputTokens: {p50: 200, p90: 400, p99: 800},\n"
            "            outputTokens: {p50: 100, p90: 200, p99: 300}}",
            f"traffic: {{trace: {{path: '{path}', format: csv}}}}")

    def refusal(path: str) -> str | None:
        c = cluster.condition(cluster.workload("thief") or {}, "Planned") or {}
        msg = c.get("message", "")
        return msg if c.get("status") == "False" and f"{path}" in msg else None

    for path in (os.path.relpath(secret, operator.trace_dir), str(secret)):
        cluster.apply(trace_workload(path))
        msg = wait_until(lambda: refusal(path), 30, f"Planned=False for trace path {path}")
        assert "spec.traffic.trace.path" in msg and secret_text not in msg
        assert not cluster.deployments().get("thief-l4-tp1")
    everything = json.dumps(cluster.get_json("llmworkloads")) + json.dumps(cluster.get_json("events")) + operator.log()
    assert secret_text not in everything


def test_operator_killed_mid_reconcile_converges_to_the_same_children(cluster, operator):
    add_example_nodes(cluster)
    cluster.kubectl("apply", "-f", str(EXAMPLES))
    expected = planned_groups(offline_plan())
    # kill it as soon as the first child exists: the rest of that reconcile never happens
    wait_until(lambda: cluster.deployments(), 60, "the first child", interval_s=0.05)
    operator.kill()
    partial = groups_in_cluster(cluster)
    operator.start()
    wait_until(lambda: groups_in_cluster(cluster) == expected, 90, "the planned Deployments after restart")
    wait_until(lambda: all_pods_running(cluster), 60, "pods Running")
    # no duplicates: one ReplicaSet per Deployment, exactly the planned number of pods. Waited for,
    # not sampled: when the first reconcile saw only part of `kubectl apply` (the pools arrive one
    # by one), groups it planned then are pruned after the restart and garbage-collected in the
    # background.
    # Services come last in a reconcile, so they too are waited for: one per workload + `kubernetes`.
    # (vLLM's, with a pool label: the routing mode detected here, standalone, adds one endpoint
    # picker per workload behind the workload's Service)
    wait_until(lambda: len(cluster.get_json("replicasets", "-l", "llmfleet.dev/pool")["items"]) == len(expected)
               and len(cluster.pods(selector="llmfleet.dev/pool")) == sum(expected.values())
               and len(cluster.get_json("services")["items"]) == 1 + len({g[0] for g in expected}), 60,
               f"one ReplicaSet per planned group, the planned pods and one Service per workload "
               f"(groups at the kill: {partial})")
    assert groups_in_cluster(cluster) == expected


def test_plan_mode_changes_nothing_until_apply(cluster, operator):
    cluster.lc.add_gpu_node("l4-0", "NVIDIA-L4", 4)
    policy = {"apiVersion": "llmfleet.dev/v1alpha1", "kind": "FleetPolicy", "metadata": {"name": "default"},
              "spec": {"mode": "plan", "tenancy": OPEN_TENANCY, "routing": PLAIN_SERVICE}}
    cluster.apply([policy])
    cluster.apply(L4_POOL.replace("MAX", "4") + "---" + l4_workload("chat-8b", 2, "high"))
    st = wait_until(lambda: cluster.get_json("fleetpolicy", "default").get("status", {}).get("diff"), 60,
                    "the diff in the FleetPolicy status")
    assert {(c["action"], c["kind"], c["name"]) for c in st} == {
        ("create", "Deployment", "chat-8b-l4-tp1"), ("create", "Service", "chat-8b")}
    assert cluster.get_json("fleetpolicy", "default")["status"]["applied"] is False
    time.sleep(2)
    assert not cluster.deployments()
    assert cluster.condition(cluster.workload("chat-8b"), "Planned")["reason"] == "PlannedForReview"

    cluster.apply([{**policy, "spec": {"mode": "apply", "tenancy": OPEN_TENANCY, "routing": PLAIN_SERVICE}}])
    wait_until(lambda: cluster.deployments().get("chat-8b-l4-tp1"), 60, "children after switching to apply")
    wait_until(lambda: cluster.get_json("fleetpolicy", "default")["status"].get("applied") is True, 30, "applied")


def test_externally_scaled_deployment_keeps_its_replicas(cluster, operator):
    cluster.lc.add_gpu_node("l4-0", "NVIDIA-L4", 4)
    cluster.lc.add_gpu_node("l4-1", "NVIDIA-L4", 4)
    cluster.apply(L4_POOL.replace("MAX", "8") + "---" + l4_workload("chat-8b", 2, "high"))
    wait_until(lambda: cluster.deployments().get("chat-8b-l4-tp1"), 60, "the Deployment")
    # an autoscaler takes over: opt-out annotation, then it scales to 5
    cluster.kubectl("annotate", "deployment", "chat-8b-l4-tp1", f"{ANNOTATION_EXTERNAL_REPLICAS}=true")
    time.sleep(2)  # the operator hands spec.replicas over
    cluster.kubectl("scale", "deployment", "chat-8b-l4-tp1", "--replicas=5")
    cluster.apply(l4_workload("chat-8b", 1, "high"))  # a plan that alone would shrink it
    wait_until(lambda: cluster.workload("chat-8b")["status"].get("observedGeneration") == 2, 30, "re-plan")
    time.sleep(2)
    assert cluster.deployments()["chat-8b-l4-tp1"]["spec"]["replicas"] == 5


def test_operator_permissions_are_least_privilege(cluster, operator):
    kc = operator.kubeconfig
    can = lambda *a: cluster.kubectl("auth", "can-i", *a, check=False, kubeconfig=kc).stdout.strip()  # noqa: E731
    assert can("patch", "deployments", "-n", "default") == "yes"
    assert can("patch", "llmworkloads.llmfleet.dev", "--subresource=status", "-n", "default") == "yes"
    for verb, res in (("delete", "priorityclasses"), ("update", "llmworkloads.llmfleet.dev"),
                      ("get", "secrets"), ("create", "pods"), ("list", "customresourcedefinitions"),
                      ("delete", "llmworkloads.llmfleet.dev")):
        assert can(verb, res, "-A") == "no", f"{verb} {res} must stay forbidden"


RARE_PATHS = {("", "services", "delete"): "a Service is pruned only when a workload that still exists gets no "
                                          "replica at all in the plan; deleting the workload lets the garbage "
                                          "collector remove its Service",
              **{(g, r, "delete"): "routing objects are pruned when the routing mode changes "
                                   "(tests/integration/test_routing.py) or a workload gets no replica"
                 for g, r in (("", "configmaps"), ("", "serviceaccounts"), ("rbac.authorization.k8s.io", "roles"),
                              ("rbac.authorization.k8s.io", "rolebindings"))},
              **{(g, r, v): "InferencePools and HTTPRoutes are applied in routing mode inferencePool, on a "
                            "cluster with their CRDs (tests/integration/test_routing.py); this one has none"
                 for g, r in (("inference.networking.k8s.io", "inferencepools"),
                              ("gateway.networking.k8s.io", "httproutes"))
                 for v in ("get", "list", "watch", "create", "patch", "delete")}}
"""Granted verbs a short scenario does not reach, each with the path that uses it"""


def test_the_cluster_role_holds_exactly_the_verbs_the_operator_uses(cluster, operator):
    """Measured from the API server's audit log: every request of the operator's ServiceAccount
    while it creates, updates, re-shapes (prunes) and loses a workload, against OPERATOR_RULES."""
    from llmfleet.operator.rbac import EPP_RULES, OPERATOR_RULES

    # the routing mode this cluster implies (standalone: no InferencePool CRD), so that the
    # endpoint picker's objects are applied too
    cluster.apply([{"apiVersion": "llmfleet.dev/v1alpha1", "kind": "FleetPolicy", "metadata": {"name": "default"},
                    "spec": {"tenancy": OPEN_TENANCY}}])
    cluster.lc.add_gpu_node("l4-0", "NVIDIA-L4", 4)
    cluster.apply(L4_POOL.replace("MAX", "4") + "---" + l4_workload("chat-8b", 2, "high"))
    wait_until(lambda: cluster.deployments().get("chat-8b-l4-tp1"), 60, "the Deployment")
    # TP 2 only: the planned group changes, so the TP-1 Deployment is pruned
    cluster.apply(l4_workload("chat-8b", 3, "high").replace("tensorParallelSizes: [1]", "tensorParallelSizes: [2]"))
    wait_until(lambda: set(vllm_deployments(cluster)) == {"chat-8b-l4-tp2"}, 60, "the TP-2 group alone")
    cluster.kubectl("delete", "llmworkload", "chat-8b")
    wait_until(lambda: not cluster.deployments(), 60, "children collected")
    time.sleep(3)
    operator.stop()  # the API server audits a watch once it is closed
    time.sleep(1)

    sa = "system:serviceaccount:llmfleet-system:llmfleet-operator"
    events = cluster.lc.audit_events(sa)
    assert events, "the audit log records the operator's requests"
    used = set()
    for e in events:
        ref = e.get("objectRef") or {}
        if not ref.get("resource"):
            continue  # discovery (/api, /apis) and /version need no rule
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        used.add((ref.get("apiGroup", ""), resource, e["verb"]))
        if e["verb"] == "patch" and e["responseStatus"]["code"] == 201:
            used.add((ref.get("apiGroup", ""), resource, "create"))  # a server-side apply that created
        assert e["responseStatus"]["code"] != 403, f"forbidden: {e['verb']} {resource}"
    granted = {(g, r, v) for rule in OPERATOR_RULES for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    assert used <= granted, f"used but not granted: {sorted(used - granted)}"
    # held only so that the operator may grant them to each endpoint picker's Role (RBAC refuses a
    # Role granting more than its creator holds); the operator itself uses none of them, except
    # listing pods (the GPUs other pods hold on the pools' nodes)
    held_to_grant = {(g, r, v) for rule in EPP_RULES for g in rule["apiGroups"] for r in rule["resources"]
                     for v in rule["verbs"] if r != "inferencepools"} - {("", "pods", "list")}
    assert ("", "nodes", "list") in used and ("", "pods", "list") in used
    assert not used & held_to_grant, f"the operator itself reads {sorted(used & held_to_grant)}"
    unused = granted - used - set(RARE_PATHS) - held_to_grant
    assert not unused, f"granted but never used: {sorted(unused)}"
