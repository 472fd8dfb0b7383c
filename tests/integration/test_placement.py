"""Node placement against the real kube-scheduler (e2e/controlplane): fake GPU nodes, two of them
partly held by a foreign training pod, nodes built from the live objects, a plan placed on them,
and pods with exactly the planned GPU requests created: the scheduler binds every placed replica
and leaves the one the placement reported as not fitting Pending for lack of GPUs."""

from __future__ import annotations

import pytest

from llmfleet.solver.placement import ReplicaGroup, nodes_from_cluster, place

from .conftest import wait_until

POOL_LABEL = {"llmfleet.dev/test-pool": "h100"}
NS = "default"


def _pod(name: str, gpus: int, labels: dict, node: str | None = None) -> dict:
    """A pod requesting ``gpus`` nvidia.com/gpu on the pool's nodes (as llmfleet renders: the pool's
    nodeSelector, the nvidia.com/gpu toleration); ``node`` pins it with required node affinity."""
    spec = {"nodeSelector": dict(POOL_LABEL),
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "main", "image": "placeholder.invalid/vllm:test",
                            "resources": {"requests": {"nvidia.com/gpu": str(gpus)},
                                          "limits": {"nvidia.com/gpu": str(gpus)}}}]}
    if node:
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": labels},
            "spec": spec}


def _replica_pods(result, pin: bool) -> list[dict]:
    """One pod per placed replica, largest TP first (what ``shape_cuts`` proves any-fit packing
    needs), labelled as llmfleet's so that they never count as foreign."""
    pods = []
    for b in sorted(result.bindings, key=lambda b: (-b.tp, b.workload, b.node)):
        for i in range(b.replicas):
            name = f"{b.workload}-tp{b.tp}-{b.node}-{i}"
            pods.append(_pod(name, b.tp, {"llmfleet.dev/workload": b.workload}, b.node if pin else None))
    return pods


def _bound(cluster, name: str) -> str | None:
    return cluster.get_json("pod", name, "-n", NS)["spec"].get("nodeName")


def _create_one_by_one(cluster, pods: list[dict]) -> dict[str, str]:
    """Create each pod and wait until the scheduler binds it; return pod -> node."""
    where = {}
    for p in pods:
        cluster.apply([p])
        name = p["metadata"]["name"]
        where[name] = wait_until(lambda: _bound(cluster, name), 30, f"pod {name} bound by kube-scheduler")
    return where


def _live_nodes(cluster):
    return nodes_from_cluster({"h100": POOL_LABEL}, cluster.get_json("nodes")["items"],
                              cluster.get_json("pods", "--all-namespaces")["items"]).nodes


def test_real_scheduler_binds_every_placed_replica_and_refuses_the_unplaced_one(cluster_bare):
    c = cluster_bare
    for i in range(3):
        c.lc.add_gpu_node(f"h100-{i}", "NVIDIA-H100-80GB-HBM3", 8, labels=POOL_LABEL)
    c.lc.add_gpu_node("l4-0", "NVIDIA-L4", 8)  # outside the pool: no pod may land there
    # a foreign training job holds 6 GPUs on each of h100-0 and h100-1 (free: 2, 2, 8)
    for node in ("h100-0", "h100-1"):
        c.apply([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"training-{node}", "namespace": NS},
                  "spec": {"nodeName": node, "containers": [{"name": "t", "image": "placeholder.invalid/train:1",
                           "resources": {"requests": {"nvidia.com/gpu": "6"}, "limits": {"nvidia.com/gpu": "6"}}}]}}])
    wait_until(lambda: all(p.get("status", {}).get("phase") == "Running" for p in c.pods(NS)) and len(c.pods(NS)) == 2,
               30, "the foreign training pods running")

    nodes = _live_nodes(c)
    assert [(n.name, n.allocatable_gpus, n.foreign_gpus) for n in nodes] == [
        ("h100-0", 8, 6), ("h100-1", 8, 6), ("h100-2", 8, 0)]

    # plan A uses every free GPU (8 + 2 + 1 + 1): it fits only node by node as placed
    plan_a = [ReplicaGroup("gold", "h100", 8, 1, 1_000_000), ReplicaGroup("silver", "h100", 2, 1, 100_000),
              ReplicaGroup("bronze", "h100", 1, 2, 1_000)]
    result = place(plan_a, nodes)
    assert result.all_placed and result.status == "optimal"
    assert set(result.free_after.values()) == {0}

    # 1. pinned to the placement's nodes: the scheduler accepts every pod on exactly that node
    pinned = _replica_pods(result, pin=True)
    where = _create_one_by_one(c, pinned)
    assert where == {p["metadata"]["name"]: p["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0]
        for p in pinned}
    for p in pinned:
        c.kubectl("delete", "pod", "-n", NS, p["metadata"]["name"], "--grace-period=0", "--force", "--wait=true")

    # 2. requests only, the scheduler choosing the nodes: every pod is bound, none left Pending
    free = _create_one_by_one(c, _replica_pods(result, pin=False))
    assert len(free) == 4 and "l4-0" not in free.values()
    pending = [p["metadata"]["name"] for p in c.pods(NS) if not p["spec"].get("nodeName")]
    assert pending == []
    for p in list(free):
        c.kubectl("delete", "pod", "-n", NS, p, "--grace-period=0", "--force", "--wait=true")

    # 3. plan B: 12 GPUs wanted, 12 free, but the TP-4 group meets 2+2 on two nodes
    nodes = _live_nodes(c)
    plan_b = [ReplicaGroup("gold", "h100", 8, 1, 1_000_000), ReplicaGroup("bronze", "h100", 4, 1, 1_000)]
    result = place(plan_b, nodes)
    [u] = result.unplaced
    assert (u.workload, u.reason_code) == ("bronze", "fragmented")
    assert "free GPUs 2+2 over 2 nodes cannot host a TP-4 group" in u.reason
    _create_one_by_one(c, _replica_pods(result, pin=False))
    c.apply([_pod("bronze-unplaced", 4, {"llmfleet.dev/workload": "bronze"})])

    def refused():
        events = c.get_json("events", "-n", NS, "--field-selector", "involvedObject.name=bronze-unplaced")["items"]
        return [e["message"] for e in events if e.get("reason") == "FailedScheduling"]

    messages = wait_until(refused, 30, "a FailedScheduling event for the unplaced TP-4 pod")
    assert "Insufficient nvidia.com/gpu" in messages[0]
    assert _bound(c, "bronze-unplaced") is None


if __name__ == "__main__":
    pytest.main([__file__, "-v"])
