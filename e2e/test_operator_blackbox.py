"""Black-box tests of an installed llmfleet against any cluster.

Run against a cluster where the chart is installed (see e2e/README.md):

    KUBECONFIG=~/.kube/config .venv/bin/python -m pytest e2e -q

They touch only objects they create: a namespace ``llmfleet-e2e-<random>`` and a GPUPool of the
same name, removed at the end. No GPU is needed: the pool's nodeSelector matches no node and the
pool is declared autoscaled (so the operator plans up to its maxGPUs, not within the nodes
present), the vLLM pods stay Pending, while the plan, the children, their owner references, the
status and the garbage collection are all checked. The FleetPolicy is not changed; its mode must be ``apply``
(the default).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time

import pytest
import yaml

KUBECTL = os.environ.get("KUBECTL") or shutil.which("kubectl")

pytestmark = pytest.mark.skipif(not os.environ.get("KUBECONFIG") or not KUBECTL,
                                reason="set KUBECONFIG (and put kubectl on PATH or in $KUBECTL) to run the e2e tests")


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([KUBECTL, *args], input=stdin, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {res.stderr}")
    return res


def get(*args: str) -> dict:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def wait_until(fn, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


@pytest.fixture
def sandbox():
    name = f"llmfleet-e2e-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    pool = {"apiVersion": "llmfleet.dev/v1alpha1", "kind": "GPUPool", "metadata": {"name": name},
            "spec": {"gpuType": "L4", "gpusPerNode": 8, "maxGPUs": 8, "costPerGPUHour": 0.8, "autoscaled": True,
                     "nodeSelector": {"llmfleet.dev/e2e-pool": name}}}
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(pool))
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)
    kubectl("delete", "gpupool", name, check=False)


def workload(namespace: str, rate: float) -> str:
    return yaml.safe_dump({
        "apiVersion": "llmfleet.dev/v1alpha1", "kind": "LLMWorkload",
        "metadata": {"name": "chat", "namespace": namespace},
        "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct",
                 "traffic": {"requestRatePerSecond": rate, "inputTokens": {"p50": 200, "p90": 400, "p99": 800},
                             "outputTokens": {"p50": 100, "p90": 200, "p99": 300}},
                 "slo": {"ttft": "2s", "tpot": "150ms"}, "priority": "standard",
                 # one colocated group: the checks below follow one Deployment as traffic changes
                 "serving": {"tensorParallelSizes": [1], "disaggregation": "never"}},
    })


def test_crds_and_printer_columns_are_installed():
    names = {c["metadata"]["name"] for c in get("crd")["items"]}
    assert {"llmworkloads.llmfleet.dev", "gpupools.llmfleet.dev", "fleetpolicies.llmfleet.dev"} <= names
    header = kubectl("get", "llmworkloads", "-A").stdout.splitlines()
    assert not header or header[0].split()[:4] == ["NAMESPACE", "NAME", "MODEL", "RATE"]


def test_workload_is_planned_into_owned_children_and_collected_on_delete(sandbox):
    kubectl("apply", "-f", "-", stdin=workload(sandbox, 2))
    w = wait_until(lambda: (o := get("llmworkload", "chat", "-n", sandbox)).get("status", {}).get("plan") and o,
                   120, "the workload's slice of the plan")
    planned = next(c for c in w["status"]["conditions"] if c["type"] == "Planned")
    assert planned["status"] == "True" and w["status"]["gpus"] >= 1 and w["status"]["costPerHour"] > 0
    groups = w["status"]["plan"]
    # the vLLM Deployments (a pool label); the routing mode may add an endpoint picker's Deployment
    deps = wait_until(lambda: get("deployments", "-n", sandbox, "-l", "llmfleet.dev/pool")["items"], 60,
                      "the Deployments")
    assert {d["metadata"]["name"] for d in deps} == {g["deployment"] for g in groups}
    for d in deps:
        assert d["metadata"]["ownerReferences"][0]["kind"] == "LLMWorkload"
        pod = d["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"llmfleet.dev/e2e-pool": sandbox}
        assert pod["priorityClassName"] == "llmfleet-standard"
    # no GPU node matches: the pods wait, and the workload says so instead of claiming Ready
    ready = next(c for c in w["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"

    kubectl("apply", "-f", "-", stdin=workload(sandbox, 8))
    wait_until(lambda: sum(d["spec"]["replicas"] for d in get("deployments", "-n", sandbox, "-l",
                                                                "llmfleet.dev/pool")["items"])
               > sum(g["replicas"] for g in groups), 120, "more replicas for four times the traffic")

    kubectl("delete", "llmworkload", "chat", "-n", sandbox)
    wait_until(lambda: not get("deployments", "-n", sandbox)["items"], 120, "garbage collection")


def test_invalid_workload_is_refused_by_the_schema(sandbox):
    bad = workload(sandbox, 2).replace("ttft: 2s", "ttft: '2'")
    res = kubectl("apply", "-f", "-", stdin=bad, check=False)
    assert res.returncode != 0 and "ttft" in res.stderr
