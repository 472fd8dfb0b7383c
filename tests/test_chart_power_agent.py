"""The chart's node power agent (templates/power-agent.yaml): absent by default; when enabled a
valid DaemonSet with exactly the privileges the agent needs (root, CAP_SYS_ADMIN, the kubelet's
pod-resources socket read-only, a hostPath for its state) and RBAC equal to what its code calls."""

from __future__ import annotations

import helm_python as helm
import kubernetes_validate
import pytest

from llmfleet.power.kube import AGENT_RULES
from llmfleet.power.podresources import DEFAULT_SOCKET
from pss import baseline_violations
from test_chart import CHART, KUBE_VERSION, render

ENABLED = {"powerAgent": {"enabled": True}}


def agent_objects(values: dict) -> list[dict]:
    return [d for d in render(values)
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "power-agent"]


def daemonset(values: dict) -> dict:
    return next(d for d in agent_objects(values) if d["kind"] == "DaemonSet")


def test_absent_by_default():
    assert agent_objects({}) == []
    assert not [d for d in render({}) if d["kind"] == "DaemonSet"]


def test_enabled_renders_valid_objects_and_lints():
    objs = agent_objects(ENABLED)
    assert sorted(d["kind"] for d in objs) == ["ClusterRole", "ClusterRoleBinding", "DaemonSet", "ServiceAccount"]
    for d in objs:
        kubernetes_validate.validate(d, KUBE_VERSION, strict=True)
    report = helm.lint(str(CHART), ENABLED, strict=True)
    assert not report["errors"], report
    assert all(m["severity"] < 2 for m in report["messages"]), report["messages"]


def test_rbac_is_exactly_what_the_agent_calls():
    objs = {d["kind"]: d for d in agent_objects(ENABLED)}
    assert objs["ClusterRole"]["rules"] == AGENT_RULES
    assert objs["ClusterRoleBinding"]["roleRef"]["name"] == objs["ClusterRole"]["metadata"]["name"]
    assert objs["ClusterRoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "llmfleet-power-agent", "namespace": "llmfleet-system"}]
    assert objs["DaemonSet"]["spec"]["template"]["spec"]["serviceAccountName"] == "llmfleet-power-agent"


def test_daemonset_privileges_are_the_justified_minimum():
    pod = daemonset(ENABLED)["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["args"][0] == "power-agent"
    # root (NVML's set calls and the root-owned socket) ...
    assert pod["securityContext"]["runAsUser"] == 0 and pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # ... with one capability instead of privileged mode, and a read-only root filesystem
    assert c["securityContext"] == {"privileged": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}
    assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    # the PodResources socket's folder, read-only, where the agent's client looks for it
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["pod-resources"] == {"name": "pod-resources", "mountPath": DEFAULT_SOCKET.rsplit("/", 1)[0],
                                       "readOnly": True}
    assert volumes["pod-resources"]["hostPath"] == {"path": "/var/lib/kubelet/pod-resources", "type": "Directory"}
    assert volumes["state"]["hostPath"]["path"] == mounts["state"]["mountPath"] == "/var/lib/llmfleet-power-agent"
    assert "--state-file=/var/lib/llmfleet-power-agent/state.json" in c["args"]
    # every GPU through the NVIDIA runtime, none taken from the workloads
    env = {e["name"]: e for e in c["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility"
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "nvidia.com/gpu" not in str(c["resources"])
    # the Pod Security "baseline" profile is broken on exactly the two justified points
    assert baseline_violations(pod) == ["volume pod-resources: hostPath is not allowed",
                                        "volume state: hostPath is not allowed",
                                        "container power-agent: capabilities ['SYS_ADMIN'] added"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["terminationGracePeriodSeconds"] >= 10  # time to restore the defaults on SIGTERM


def test_values_reach_the_daemonset():
    ds = daemonset({"powerAgent": {"enabled": True, "runtimeClassName": "nvidia", "privileged": True,
                                   "intervalSeconds": 5, "metricsPort": 9500,
                                   "nodeSelector": {"pool": "h100"}}})
    pod = ds["spec"]["template"]["spec"]
    c = pod["containers"][0]
    # Helm merges a user's map into the default one (a key set to null drops a default)
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true", "pool": "h100"}
    assert c["securityContext"]["privileged"] is True
    assert "--interval-seconds=5" in c["args"] and "--metrics-port=9500" in c["args"]
    assert c["ports"] == [{"name": "metrics", "containerPort": 9500, "protocol": "TCP"}]
    kubernetes_validate.validate(ds, KUBE_VERSION, strict=True)


def test_reactive_capping_is_off_by_default_and_its_values_reach_the_args():
    def args(values: dict) -> list[str]:
        return daemonset({"powerAgent": {"enabled": True, **values}})["spec"]["template"]["spec"]["containers"][0]["args"]

    off = args({})
    assert not [a for a in off if a.startswith(("--node-budget-watts", "--oversubscription"))]
    assert [a for a in args({"reactive": {"nodeBudgetWatts": 4260}}) if a.startswith("--node-budget")] == [
        "--node-budget-watts=4260"]
    assert not [a for a in args({"reactive": {"nodeBudgetWatts": 4260}}) if a.startswith("--oversubscription")]
    on = args({"reactive": {"nodeBudgetWatts": 4260.5, "oversubscription": 1.3}})
    assert on[-2:] == ["--node-budget-watts=4260.5", "--oversubscription=1.3"]
    # an oversubscription without a budget means nothing: not rendered
    assert args({"reactive": {"oversubscription": 1.3}}) == off


def test_rendered_reactive_args_are_what_the_command_parses():
    """The chart's args, parsed by the agent's own argparse options (no NVML needed to parse)."""
    import argparse

    from llmfleet.power.main import add_power_agent_arguments

    c = daemonset({"powerAgent": {"enabled": True, "reactive": {"nodeBudgetWatts": 4260, "oversubscription": 1.25}}})
    parser = argparse.ArgumentParser()
    add_power_agent_arguments(parser)
    parsed = parser.parse_args(c["spec"]["template"]["spec"]["containers"][0]["args"][1:])
    assert (parsed.node_budget_watts, parsed.oversubscription) == (4260.0, 1.25)


@pytest.mark.parametrize("values, field", [
    ({"powerAgent": {"reactive": {"nodeBudgetWatts": -1}}}, "nodeBudgetWatts"),
    ({"powerAgent": {"reactive": {"nodeBudgetWatts": 4260, "oversubscription": 0.9}}}, "oversubscription"),
    ({"powerAgent": {"reactive": {"budget": 4260}}}, "budget"),
    ({"powerAgent": {"enabled": "yes"}}, "enabled"),
    ({"powerAgent": {"metricsPort": 80}}, "metricsPort"),
    ({"powerAgent": {"intervalSeconds": 0}}, "intervalSeconds"),
    ({"powerAgent": {"privilege": True}}, "privilege"),
])
def test_values_schema_refuses_bad_power_agent_values(values, field):
    with pytest.raises(helm.HelmValuesError, match=field):
        helm.Chart.load(str(CHART)).validate_schema(values)
