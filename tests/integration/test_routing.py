"""Routing objects on a real control plane (kube-apiserver 1.20.2, see conftest.py).

The Gateway API Inference Extension's InferencePool CRD (../shared/data/crds) is installed with its
``x-kubernetes-validations`` (CEL) rules stripped: CEL validation exists from Kubernetes 1.25 on and
a 1.20 API server does not know the field. The two rules are checked offline instead
(tests/test_routing.py::cel_rule_errors), as is the whole schema. One ``default: ""`` goes too
(``for_1_20``): 1.20 refuses an empty-string default. No kubelet runs: pods are scheduled and marked Running by
the fake kubelet, so these tests show what the API server accepts and stores, not that vLLM, the
picker or the sidecar serve traffic.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from epp_config import epp_config_errors
from llmfleet.operator import routing

from .conftest import REPO, wait_until

CRD_FILE = REPO.parent / "shared" / "data" / "crds" / "inference.networking.k8s.io_inferencepools.yaml"

POOL_AND_PD_WORKLOAD = """
apiVersion: llmfleet.dev/v1alpha1
kind: GPUPool
metadata: {name: l4}
spec: {gpuType: L4, gpusPerNode: 4, maxGPUs: 8, nodeSelector: {nvidia.com/gpu.product: NVIDIA-L4}}
---
apiVersion: llmfleet.dev/v1alpha1
kind: LLMWorkload
metadata: {name: pd-8b, namespace: default}
spec:
  model: meta-llama/Llama-3.1-8B-Instruct
  traffic: {requestRatePerSecond: 2, inputTokens: {p50: 2000, p90: 3000, p99: 4000},
            outputTokens: {p50: 100, p90: 200, p99: 300}}
  slo: {ttft: 2s, tpot: 100ms}
  priority: standard
  serving: {tensorParallelSizes: [1], disaggregation: always}
"""

COLOCATED = POOL_AND_PD_WORKLOAD.replace("pd-8b", "chat-8b").replace("disaggregation: always", "disaggregation: never")

KINDS = "deployments,services,configmaps,serviceaccounts,roles,rolebindings"


def for_1_20(node):
    """The CRD as a 1.20 API server takes it: every ``x-kubernetes-validations`` (CEL, unknown
    before 1.25) removed, and the empty-string ``default`` of ``endpointPickerRef.group`` (1.20
    reads ``default: ""`` as null and refuses the CRD; the group it names, core, is what an
    absent group means to the picker anyway)."""
    if isinstance(node, dict):
        return {k: for_1_20(v) for k, v in node.items()
                if k != "x-kubernetes-validations" and not (k == "default" and v == "")}
    if isinstance(node, list):
        return [for_1_20(v) for v in node]
    return node


@pytest.fixture
def inference_pool_crd(cluster):
    """The InferencePool CRD, installed before the operator starts (it reads discovery at start)."""
    if not CRD_FILE.is_file():
        pytest.skip(f"{CRD_FILE} not present")
    crd = for_1_20(yaml.safe_load(CRD_FILE.read_text()))
    crd.pop("status", None)
    cluster.apply([crd])
    wait_until(lambda: cluster.kubectl("get", "inferencepools", check=False).returncode == 0, 30, "CRD served")
    return crd


def managed(cluster, kinds: str = KINDS, namespace: str = "default") -> set[tuple[str, str]]:
    items = cluster.get_json(kinds, "-n", namespace, "-l", "app.kubernetes.io/managed-by=llmfleet")["items"]
    return {(i["kind"], i["metadata"]["name"]) for i in items}


def rendered(tmp_path, text: str) -> list[dict]:
    """``llmfleet render`` of the same objects, offline."""
    (tmp_path / "fleet.yaml").write_text(text)
    out = subprocess.run([sys.executable, "-m", "llmfleet.cli", "render", "-f", str(tmp_path / "fleet.yaml"), "-q"],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return list(yaml.safe_load_all(out.stdout))


def test_pd_workload_gets_an_inference_pool_a_picker_and_labelled_pods_with_sidecar_and_nixl(
        cluster, inference_pool_crd, operator, tmp_path):
    for i in range(2):
        cluster.lc.add_gpu_node(f"l4-{i}", "NVIDIA-L4", 4)
    cluster.apply(POOL_AND_PD_WORKLOAD)  # no FleetPolicy: routing mode unset, the CRD is there: inferencePool

    pool = wait_until(lambda: cluster.kubectl("get", "inferencepool", "pd-8b", "-o", "json", check=False).stdout,
                      90, "the InferencePool")
    pool = yaml.safe_load(pool)
    assert pool["spec"]["endpointPickerRef"]["name"] == "pd-8b-epp"
    assert pool["metadata"]["ownerReferences"][0]["name"] == "pd-8b"
    want = {("Deployment", "pd-8b-l4-tp1-prefill"), ("Deployment", "pd-8b-l4-tp1-decode"),
            ("Deployment", "pd-8b-epp"), ("Service", "pd-8b-epp"), ("ConfigMap", "pd-8b-epp"),
            ("ServiceAccount", "pd-8b-epp"), ("Role", "pd-8b-epp"), ("RoleBinding", "pd-8b-epp")}
    wait_until(lambda: managed(cluster) == want, 60, "the picker's objects")

    # the operator applied exactly what `llmfleet render` prints for the same files
    offline = rendered(tmp_path, POOL_AND_PD_WORKLOAD)
    assert {(d["kind"], d["metadata"]["name"]) for d in offline if d["kind"] != "PriorityClass"} == \
        want | {("InferencePool", "pd-8b")}
    live_cm = cluster.get_json("configmap", "pd-8b-epp")
    offline_cm = next(d for d in offline if d["kind"] == "ConfigMap")
    assert live_cm["data"] == offline_cm["data"]
    cfg = yaml.safe_load(live_cm["data"][routing.EPP_CONFIG_FILE])
    assert epp_config_errors(cfg) == []
    assert {p["type"] for p in cfg["plugins"]} >= {"disagg-profile-handler", "prefill-filter", "decode-filter"}

    # the pool's selector takes the 3 prefill and 3 decode pods, labelled for llm-d's filters
    selector = ",".join(f"{k}={v}" for k, v in pool["spec"]["selector"]["matchLabels"].items())
    pods = wait_until(lambda: (p := cluster.pods(selector=selector)) and len(p) == 6
                      and all(x["status"].get("phase") == "Running" for x in p) and p, 90, "6 serving pods Running")
    roles = sorted(p["metadata"]["labels"]["llm-d.ai/role"] for p in pods)
    assert roles == ["decode"] * 3 + ["prefill"] * 3
    for p in pods:
        spec = p["spec"]
        vllm = next(c for c in spec["containers"] if c["name"] == "vllm")
        env = {e["name"]: e for e in vllm["env"]}
        assert env["VLLM_NIXL_SIDE_CHANNEL_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert any(port["containerPort"] == routing.NIXL_SIDE_CHANNEL_PORT for port in vllm["ports"])
        names = [c["name"] for c in spec["containers"]]
        if p["metadata"]["labels"]["llm-d.ai/role"] == "decode":
            assert names == ["vllm", "disagg-sidecar"]
            assert "--port=8000" in spec["containers"][1]["args"] and "8200" in vllm["args"]
        else:
            assert names == ["vllm"]
    # the picker's pod runs under its own ServiceAccount, which may read pods and pools and nothing else
    epp_pod = wait_until(lambda: cluster.pods(selector="llmfleet.dev/router=pd-8b"), 60, "the picker's pod")[0]
    assert epp_pod["spec"]["serviceAccountName"] == "pd-8b-epp"
    sa = "system:serviceaccount:default:pd-8b-epp"
    can = lambda *a: cluster.kubectl("auth", "can-i", *a, "--as", sa, "-n", "default", check=False).stdout.strip()  # noqa: E731
    assert can("watch", "pods") == "yes" and can("get", "inferencepools.inference.networking.k8s.io") == "yes"
    for verb, res in (("create", "pods"), ("list", "secrets"), ("patch", "inferencepools.inference.networking.k8s.io"),
                      ("list", "configmaps")):
        assert can(verb, res) == "no", f"{verb} {res} must stay forbidden to the picker"


def test_standalone_without_the_crd_then_service_mode_prunes_the_picker(cluster, operator):
    cluster.lc.add_gpu_node("l4-0", "NVIDIA-L4", 4)
    cluster.apply(COLOCATED)  # no InferencePool CRD on this cluster: standalone
    want = {("Deployment", "chat-8b-l4-tp1"), ("Deployment", "chat-8b-epp"), ("Service", "chat-8b"),
            ("ConfigMap", "chat-8b-epp"), ("ServiceAccount", "chat-8b-epp"), ("Role", "chat-8b-epp"),
            ("RoleBinding", "chat-8b-epp")}
    wait_until(lambda: managed(cluster) == want, 90, "the standalone picker behind the workload Service")
    svc = cluster.get_json("service", "chat-8b")
    assert svc["spec"]["selector"] == {"llmfleet.dev/router": "chat-8b"}
    epp = cluster.deployments()["chat-8b-epp"]["spec"]["template"]["spec"]
    assert [c["name"] for c in epp["containers"]] == ["epp", "proxy"]
    assert "--endpoint-selector" in epp["containers"][0]["args"]
    assert not any(r for r in cluster.get_json("role", "chat-8b-epp")["rules"] if "inferencepools" in r["resources"])

    cluster.apply([{"apiVersion": "llmfleet.dev/v1alpha1", "kind": "FleetPolicy", "metadata": {"name": "default"},
                    "spec": {"routing": {"mode": "service"}}}])
    wait_until(lambda: managed(cluster) == {("Deployment", "chat-8b-l4-tp1"), ("Service", "chat-8b")}, 60,
               "the picker pruned")
    assert cluster.get_json("service", "chat-8b")["spec"]["selector"] == {"llmfleet.dev/workload": "chat-8b",
                                                                           "llmfleet.dev/entrypoint": "true"}
