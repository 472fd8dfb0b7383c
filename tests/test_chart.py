"""The Helm chart, offline: strict lint, rendering, every built-in object validated by
kubernetes-validate (strict), custom resources validated against the generated CRD schemas, the
RBAC equal to what the operator's code uses, and the values schema refusing bad values."""

from __future__ import annotations

import copy
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from llmfleet.api.crds import CRD_KINDS, crd, crd_files
from llmfleet.operator.rbac import OPERATOR_RULES, lease_role

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "llmfleet"
KUBE_VERSION = "1.28.0"  # the oldest release the e2e suite targets; the local control plane is 1.20.2

VARIANTS = {
    "defaults": {},
    "ha-and-extras": {
        "replicaCount": 2, "fleetPolicy": {"create": True, "spec": {"mode": "plan", "headroom": 0.2}},
        "gpuPools": [{"name": "h100", "spec": {"gpuType": "H100-SXM", "maxGPUs": 16, "costPerGPUHour": 6.9}}],
        "serviceMonitor": {"enabled": True}, "operator": {"tracesConfigMap": "traces", "logLevel": "debug"},
    },
}


def render(values: dict) -> list[dict]:
    out = helm.Chart.load(str(CHART)).render(values, name="llmfleet", namespace="llmfleet-system", is_install=True)
    return [d for path, text in out.items() if not path.endswith("NOTES.txt")
            for d in yaml.safe_load_all(text) if d]


def _nullable_to_jsonschema(node):
    """OpenAPI 3.0 ``nullable`` -> JSON Schema ``type: [t, "null"]`` (draft 4 keeps the boolean
    exclusiveMinimum of OpenAPI 3.0)."""
    if isinstance(node, list):
        return [_nullable_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable_to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    return node


def crd_validator(kind: str) -> jsonschema.Draft4Validator:
    schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return jsonschema.Draft4Validator(_nullable_to_jsonschema(schema))


def test_chart_lints_strictly():
    for values in VARIANTS.values():
        report = helm.lint(str(CHART), values, strict=True)
        assert not report["errors"], report
        assert all(m["severity"] < 2 for m in report["messages"]), report["messages"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_builtin_objects_are_valid_kubernetes(variant):
    docs = render(VARIANTS[variant])
    builtin = [d for d in docs
               if not d["apiVersion"].startswith(("llmfleet.dev/", "monitoring.coreos.com/", "kopf.dev/"))]
    assert {d["kind"] for d in builtin} >= {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                          "PriorityClass", "Service"}
    for d in builtin:
        kubernetes_validate.validate(d, KUBE_VERSION, strict=True)


def test_custom_resources_from_the_chart_and_examples_match_the_crd_schema():
    docs = render(VARIANTS["ha-and-extras"])
    docs += [d for f in sorted((REPO / "examples").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    checked = 0
    for d in docs:
        if d["apiVersion"].startswith("llmfleet.dev/"):
            crd_validator(d["kind"]).validate(d)
            checked += 1
    assert checked >= 9  # 1 policy + 1 pool from values, 1 policy + 5 pools + 2 workloads in examples/
    bad = copy.deepcopy(next(d for d in docs if d["kind"] == "LLMWorkload"))
    bad["spec"]["slo"]["ttft"] = "2"  # no unit
    with pytest.raises(jsonschema.ValidationError, match="does not match"):
        crd_validator("LLMWorkload").validate(bad)


def test_clusterrole_grants_exactly_what_the_operator_uses():
    role = next(d for d in render({}) if d["kind"] == "ClusterRole")
    assert role["rules"] == OPERATOR_RULES
    # more than one replica: the same ClusterRole, plus the leader election's Lease Role in the
    # release namespace, exactly the rules of llmfleet/operator/rbac.py
    ha = render({"replicaCount": 2})
    assert next(d for d in ha if d["kind"] == "ClusterRole")["rules"] == OPERATOR_RULES
    lease = next(d for d in ha if d["kind"] == "Role")
    assert lease["metadata"]["namespace"] == "llmfleet-system"
    assert lease["rules"] == lease_role("llmfleet-system", "llmfleet")["rules"]
    lease_binding = next(d for d in ha if d["kind"] == "RoleBinding")
    assert lease_binding["roleRef"]["name"] == lease["metadata"]["name"]
    assert not [d for d in render({}) if d["kind"] in ("Role", "RoleBinding")]
    assert not [d for d in ha if d["apiVersion"].startswith("kopf.dev/")]
    binding = next(d for d in render({}) if d["kind"] == "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "llmfleet", "namespace": "llmfleet-system"}]


def test_operator_pod_is_locked_down():
    dep = next(d for d in render({}) if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    c = pod["containers"][0]
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "privileged": False, "capabilities": {"drop": ["ALL"]}}
    assert c["resources"]["requests"] and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "--leader-elect" not in c["args"]
    assert "--planner-workers=1" in c["args"]  # the capacity model in the operator's own process
    dep2 = next(d for d in render({"replicaCount": 2}) if d["kind"] == "Deployment")
    args2 = dep2["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--leader-elect" in args2 and "--leader-election-namespace=llmfleet-system" in args2
    assert not [a for a in args2 if a.startswith("--peering")]


@pytest.mark.parametrize("values, field", [
    ({"replicaCount": -1}, "replicaCount"),
    ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"priorityClasses": {"tiers": [{"name": "Gold!", "value": 1}]}}, "name"),
    ({"fleetPolicy": {"create": True, "spec": {"mode": "yolo"}}}, "mode"),
    ({"replicas": 2}, "replicas"),
    ({"leaderElection": {"retryPeriodSeconds": 0}}, "retryPeriodSeconds"),
    ({"operator": {"plannerWorkers": 0}}, "plannerWorkers"),
])
def test_values_schema_refuses_bad_values(values, field):
    with pytest.raises(helm.HelmValuesError, match=field):
        helm.Chart.load(str(CHART)).validate_schema(values)


def test_chart_crds_are_the_generated_ones():
    for name, text in crd_files().items():
        assert (CHART / "crds" / name).read_text() == text, f"run `llmfleet crds -d {CHART / 'crds'}`"
    assert set(CRD_KINDS) == {"LLMWorkload", "GPUPool", "FleetPolicy"}
