"""`helm install` of the chart into the real control plane (through the Helm SDK, no helm binary),
then the operator, authenticated as the chart's ServiceAccount, reconciles workloads: the RBAC the
chart grants suffices, and what it does not grant stays forbidden. The black-box e2e tests run
against the result."""

from __future__ import annotations

import os
import subprocess
import sys

import helm_python as helm

from .conftest import REPO, OperatorProcess, wait_until

CHART = REPO / "helm" / "llmfleet"
RELEASE, NAMESPACE = "llmfleet", "llmfleet-system"


def test_helm_install_then_operator_as_the_chart_service_account(cluster_bare, tmp_path):
    c = cluster_bare
    c.lc.add_gpu_node("l4-0", "NVIDIA-L4", 8)
    cfg = helm.Config(kubeconfig_path=str(c.lc.admin_kubeconfig), namespace=NAMESPACE)
    values = {
        "gpuPools": [{"name": "l4", "spec": {"gpuType": "L4", "gpusPerNode": 8, "maxGPUs": 8,
                                             "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"}}}],
        "fleetPolicy": {"create": True, "spec": {"mode": "apply"}},
    }
    release = cfg.install(str(CHART), RELEASE, values, namespace=NAMESPACE, create_namespace=True, timeout=120)
    assert (release["status"], release["revision"]) == ("deployed", 1)

    # what the chart made: CRDs (from crds/), the tiers' PriorityClasses, the pool and policy
    crds = {x["metadata"]["name"] for x in c.get_json("crd")["items"]}
    assert {"llmworkloads.llmfleet.dev", "gpupools.llmfleet.dev", "fleetpolicies.llmfleet.dev"} <= crds
    pcs = {x["metadata"]["name"] for x in c.get_json("priorityclasses")["items"]}
    assert {"llmfleet-critical", "llmfleet-high", "llmfleet-standard", "llmfleet-low"} <= pcs
    assert c.get_json("gpupool", "l4")["spec"]["maxGPUs"] == 8
    dep = c.get_json("deployment", RELEASE, "-n", NAMESPACE)
    sc = dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]

    # the operator process, authenticated as the chart's ServiceAccount with its token
    kc = c.lc.service_account_kubeconfig(NAMESPACE, RELEASE, tmp_path / "chart-sa.kubeconfig")
    op = OperatorProcess(kc, tmp_path, REPO / "examples").start()
    try:
        can = lambda *a: c.kubectl("auth", "can-i", *a, check=False, kubeconfig=kc).stdout.strip()  # noqa: E731
        assert can("patch", "deployments", "-n", "default") == "yes"
        for verb, res in (("delete", "priorityclasses"), ("get", "secrets"), ("create", "pods"),
                          ("delete", "llmworkloads.llmfleet.dev"), ("update", "nodes"), ("list", "clusterkopfpeerings.kopf.dev")):
            assert can(verb, res, "-A") == "no", f"{verb} {res} must stay forbidden"
        denied = c.kubectl("delete", "priorityclass", "llmfleet-low", check=False, kubeconfig=kc)
        assert denied.returncode != 0 and "forbidden" in denied.stderr

        # the e2e suite, black-box, against this cluster
        env = {**os.environ, "KUBECONFIG": str(c.lc.admin_kubeconfig), "KUBECTL": str(c.lc.bin_dir / "kubectl")}
        res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "e2e")],
                             capture_output=True, text=True, env=env, cwd=REPO)
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
        assert "3 passed" in res.stdout
        assert "Forbidden" not in op.log() and "forbidden" not in op.log()
    finally:
        op.stop()

    # an upgrade keeps the release working (CRDs are not touched by Helm on upgrade)
    upgraded = cfg.upgrade(str(CHART), RELEASE, {**values, "replicaCount": 2}, namespace=NAMESPACE, timeout=120)
    assert (upgraded["status"], upgraded["revision"]) == ("deployed", 2)
    lease_role = c.get_json("role", f"{RELEASE}-leader-election", "-n", NAMESPACE)
    assert {g for r in lease_role["rules"] for g in r["apiGroups"]} == {"coordination.k8s.io"}
    wait_until(lambda: c.get_json("deployment", RELEASE, "-n", NAMESPACE)["spec"]["replicas"] == 2, 30, "2 replicas")

    # with leader election, the same ServiceAccount suffices: it takes the Lease and plans
    peer = OperatorProcess(kc, tmp_path, REPO / "examples",
                           ("--leader-elect", "--leader-election-namespace", NAMESPACE)).start()
    try:
        c.apply(WORKLOAD)
        wait_until(lambda: c.deployments().get("peer-chat-l4-tp1"), 90, "a child planned by the peered operator")
        lease = c.get_json("lease", "llmfleet", "-n", NAMESPACE)
        assert lease["spec"].get("holderIdentity"), "the operator holds the Lease"
        assert "orbidden" not in peer.log()
    finally:
        peer.stop()


WORKLOAD = """
apiVersion: llmfleet.dev/v1alpha1
kind: LLMWorkload
metadata: {name: peer-chat, namespace: default}
spec:
  model: meta-llama/Llama-3.1-8B-Instruct
  traffic: {requestRatePerSecond: 1, inputTokens: {p50: 200, p90: 400, p99: 800},
            outputTokens: {p50: 100, p90: 200, p99: 300}}
  slo: {ttft: 2s, tpot: 150ms}
  serving: {tensorParallelSizes: [1]}
"""
