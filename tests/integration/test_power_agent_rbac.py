"""The power agent's Kubernetes side on a real API server (e2e/controlplane), authenticated as the
chart's power-agent ServiceAccount under the chart's ClusterRole: it sees only its node's pods,
its report annotation and Event land on the real pod, and what the role does not grant stays
forbidden. The GPUs (NVML fake) and the kubelet's PodResources socket (a real gRPC server) are the
only stand-ins."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from llmfleet.power.agent import ANNOTATION_APPLIED, ANNOTATION_REQUEST, PowerAgent
from llmfleet.power.kube import KubeNodePods
from llmfleet.power.nvml import FakeDevices, h100_sxm
from llmfleet.power.podresources import PodResourcesClient
from power_fakes import FakeKubelet, short_socket_path
from test_chart import render

from .conftest import wait_until

NS = "llmfleet-system"
A, B = "GPU-aaaaaaaa-0000-0000-0000-000000000001", "GPU-bbbbbbbb-0000-0000-0000-000000000002"


def pod(name: str, node: str, annotations: dict[str, str], priority_class: str | None = None) -> dict:
    spec = {"nodeName": node, "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}]}
    if priority_class:
        spec["priorityClassName"] = priority_class
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "llm", "annotations": annotations,
                         "labels": {"llmfleet.dev/workload": name[:-2]}},
            "spec": spec}


def test_agent_under_the_chart_rbac_reports_on_real_pods(cluster_bare, tmp_path):
    c = cluster_bare
    c.lc.add_gpu_node("gpu-1", "NVIDIA-H100-80GB-HBM3", 8)
    c.lc.add_gpu_node("gpu-2", "NVIDIA-H100-80GB-HBM3", 8)
    c.kubectl("create", "namespace", NS)
    c.kubectl("create", "namespace", "llm")
    rbac = [d for d in render({"powerAgent": {"enabled": True}})
            if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")
            and d["metadata"]["labels"].get("app.kubernetes.io/component") == "power-agent"]
    assert len(rbac) == 3
    c.apply(rbac)
    # the tier reactive capping ranks pods by: spec.priority, which the API server's Priority
    # admission resolves from the PriorityClass (as the operator renders llmfleet-<tier> classes)
    c.apply([{"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "llmfleet-low"},
              "value": 1000}])
    c.apply([pod("big-0", "gpu-1", {ANNOTATION_REQUEST: "450"}, "llmfleet-low"),
             pod("plain-0", "gpu-1", {}),
             pod("other-0", "gpu-2", {ANNOTATION_REQUEST: "300"})])
    sa = next(d for d in rbac if d["kind"] == "ServiceAccount")["metadata"]["name"]
    kubeconfig = c.lc.service_account_kubeconfig(NS, sa, tmp_path / "agent.kubeconfig")
    api = client.CoreV1Api(c.lc.api_client(kubeconfig))

    pods = KubeNodePods("gpu-1", api=api)
    seen = {p.name: p for p in pods.list_pods()}
    assert sorted(seen) == ["big-0", "plain-0"]  # only its node's pods
    assert (seen["big-0"].priority, seen["big-0"].priority_class) == (1000, "llmfleet-low")
    assert seen["big-0"].labels["llmfleet.dev/workload"] == "big"
    assert (seen["plain-0"].priority, seen["plain-0"].priority_class) == (0, "")  # no class, no default: 0

    kubelet = FakeKubelet(short_socket_path(tmp_path)).start()
    podresources = PodResourcesClient(kubelet.socket_path, timeout_s=5)
    try:
        kubelet.give("llm", "big-0", [A])
        devices = FakeDevices([h100_sxm(A), h100_sxm(B)])
        agent = PowerAgent(devices, pods, podresources, tmp_path / "state.json", registry=CollectorRegistry())
        assert agent.reconcile()
        assert devices.enforced_limit_mw(A) == 450_000 and devices.writes[B] == 0
    finally:
        podresources.close()
        kubelet.stop()

    live = c.get_json("pod", "big-0", "-n", "llm")
    assert json.loads(live["metadata"]["annotations"][ANNOTATION_APPLIED]) == {
        "status": "applied", "limitWatts": {A: 450.0}, "message": ""}
    events = wait_until(lambda: [e for e in c.get_json("events", "-n", "llm")["items"]
                                 if e["involvedObject"]["name"] == "big-0" and e["reason"] == "PowerLimitApplied"],
                        10, "the agent's Event")
    assert events[0]["involvedObject"]["kind"] == "Pod" and f"{A} 450.0 W" in events[0]["message"]

    # least privilege: nothing beyond list/patch pods and create events
    for forbidden in (lambda: api.read_namespaced_pod("big-0", "llm"),
                      lambda: api.delete_namespaced_pod("big-0", "llm"),
                      lambda: api.list_namespaced_secret(NS),
                      lambda: api.patch_node("gpu-1", {"metadata": {"labels": {"x": "y"}}})):
        with pytest.raises(ApiException) as err:
            forbidden()
        assert err.value.status == 403
