"""Multi-tenant safety on the real control plane: a tenant who may only manage LLMWorkloads in her
own namespace gets nothing through llmfleet that the cluster admin did not allow.

The tenant is user ``alice`` (impersonated with ``kubectl --as``), bound to a Role in ``team-a``
that allows LLMWorkloads only. ``team-b`` is another tenant whose Deployments must not change.
"""

from __future__ import annotations

import json
import time

from .conftest import wait_until
from .test_operator import l4_workload

L4_POOL = """
apiVersion: llmfleet.dev/v1alpha1
kind: GPUPool
metadata: {name: l4}
spec: {gpuType: L4, gpusPerNode: 4, maxGPUs: 8, costPerGPUHour: 0.8, nodeSelector: {nvidia.com/gpu.product: NVIDIA-L4}}
"""

POLICY = {"apiVersion": "llmfleet.dev/v1alpha1", "kind": "FleetPolicy", "metadata": {"name": "default"},
          "spec": {"tenancy": {"rules": [{"namespaces": ["team-a"], "maxGPUs": 4},
                                         # team-b is selected by its label, as an admin with many teams would
                                         {"namespaceSelector": {"llmfleet.dev/tenant": "b"}, "tiers": ["high"],
                                          "maxGPUs": 8}]}}}

TENANT_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: llmworkload-editor, namespace: team-a}
rules:
- {apiGroups: [llmfleet.dev], resources: [llmworkloads], verbs: [get, list, watch, create, update, patch, delete]}
- {apiGroups: [""], resources: [events], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: llmworkload-editor}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]
"""


def workload(name, ns, rate=1, tier="standard", min_replicas=1):
    """test_operator's L4 workload (TP 1, colocated) in namespace ``ns`` with ``minReplicas``."""
    return (l4_workload(name, rate, tier).replace("namespace: default", f"namespace: {ns}")
            .replace("disaggregation: never}", f"disaggregation: never, minReplicas: {min_replicas}}}"))


def setup_tenants(cluster):
    for ns in ("team-a", "team-b"):
        cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("label", "namespace", "team-b", "llmfleet.dev/tenant=b")
    cluster.apply(TENANT_RBAC)
    cluster.lc.add_gpu_node("l4-0", "NVIDIA-L4", 4)
    cluster.lc.add_gpu_node("l4-1", "NVIDIA-L4", 4)
    cluster.apply([POLICY])
    cluster.apply(L4_POOL)


def as_alice(cluster, text, check=True):
    return cluster.kubectl("apply", "--as=alice", "-n", "team-a", "-f", "-", stdin=text, check=check)


def planned(cluster, name, ns):
    w = cluster.workload(name, ns)
    return cluster.condition(w, "Planned") or {}, w


def refused(cluster, name, ns, reason, field):
    def check():
        cond, w = planned(cluster, name, ns)
        ok = (cond.get("status") == "False" and cond.get("reason") == reason and field in cond.get("message", "")
              and cond.get("observedGeneration") == w["metadata"]["generation"])
        return cond if ok else None
    return wait_until(check, 30, f"{ns}/{name} Planned=False {reason} naming {field}")


def test_a_tenant_gets_no_tier_image_argument_gpus_or_data_beyond_her_policy(cluster, operator):
    setup_tenants(cluster)
    # the tenant's rights are what the admin gave: LLMWorkloads only
    can = lambda *a: cluster.kubectl("auth", "can-i", *a, "--as=alice", "-n", "team-a", check=False).stdout.strip()  # noqa: E731
    assert can("create", "llmworkloads.llmfleet.dev") == "yes"
    assert can("create", "pods") == "no" and can("create", "deployments") == "no" and can("patch", "services") == "no"

    cluster.apply(workload("bob-chat", "team-b", rate=4, tier="high"))
    bob = wait_until(lambda: cluster.deployments("team-b").get("bob-chat-l4-tp1"), 60, "bob's Deployment")
    wait_until(lambda: planned(cluster, "bob-chat", "team-b")[0].get("status") == "True", 30, "bob planned")

    def bob_unchanged():
        now = cluster.deployments("team-b")["bob-chat-l4-tp1"]
        assert (now["metadata"]["uid"], now["spec"]["replicas"], now["metadata"]["generation"]) == \
            (bob["metadata"]["uid"], bob["spec"]["replicas"], bob["metadata"]["generation"])

    # a tier above hers (it would preempt bob's pods), an image and a flag the admin never allowed
    attempts = [
        (workload("alice-chat", "team-a", tier="critical"), "NotAllowed", "spec.priority"),
        (workload("alice-chat", "team-a").replace("disaggregation: never,", "disaggregation: never, "
         "image: 'docker.io/attacker/anything:latest',"), "NotAllowed", "spec.serving.image"),
        (workload("alice-chat", "team-a").replace("disaggregation: never,", "disaggregation: never, "
         "extraArgs: ['--trust-remote-code'],"), "NotAllowed", "spec.serving.extraArgs"),
        # a minimum beyond her namespace's GPU quota: her workload alone is refused
        (workload("alice-chat", "team-a", min_replicas=5000), "ExceedsCapacity", "spec.serving.minReplicas"),
    ]
    for text, reason, field in attempts:
        as_alice(cluster, text)
        cond = refused(cluster, "alice-chat", "team-a", reason, field)
        assert "team-b" not in cond["message"] and "bob" not in cond["message"]
        assert not cluster.deployments("team-a"), "a refused workload gets no Deployment"
        bob_unchanged()

    # a nonsense rate in her own tier: she gets at most her quota, bob keeps his replicas
    as_alice(cluster, workload("alice-chat", "team-a", rate=50000))
    wait_until(lambda: planned(cluster, "alice-chat", "team-a")[0].get("status") == "True", 30, "alice planned")
    w = wait_until(lambda: (w := cluster.workload("alice-chat", "team-a")) and w["status"].get("gpus") and w, 30, "GPUs")
    assert w["status"]["gpus"] <= 4
    assert (cluster.condition(w, "Degraded") or {}).get("reason") == "CapacityShortage"
    time.sleep(3)
    bob_unchanged()

    # her status and her namespace's events name nothing of team-b
    status_text = json.dumps(cluster.workload("alice-chat", "team-a")["status"])
    events_text = json.dumps(cluster.get_json("events", "-n", "team-a"))
    assert "team-b" not in status_text and "bob-chat" not in status_text
    assert "team-b" not in events_text and "bob-chat" not in events_text

    # the pods llmfleet runs for tenants are hardened (rendered as tests/test_render.py checks)
    pod = cluster.deployments("team-b")["bob-chat-l4-tp1"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    c = pod["containers"][0]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["limits"]["memory"] and c["resources"]["limits"]["cpu"]
    assert next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"] == "2Gi"


def test_objects_llmfleet_does_not_own_are_never_taken_over_or_deleted(cluster, operator):
    setup_tenants(cluster)
    # the API server's own Service: a workload named `kubernetes` must not touch it
    before = cluster.get_json("service", "kubernetes", "-n", "default")
    cluster.apply(workload("kubernetes", "default"))
    refused(cluster, "kubernetes", "default", "NameConflict", "kubernetes")
    # a team's own Service with a workload's name, and a foreign Deployment carrying our label
    cluster.kubectl("create", "service", "clusterip", "web", "--tcp=80:8080", "-n", "team-a")
    web = cluster.get_json("service", "web", "-n", "team-a")
    cluster.apply([{"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "decoy", "namespace": "team-a",
                                 "labels": {"app.kubernetes.io/managed-by": "llmfleet", "llmfleet.dev/workload": "gone"}},
                    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "decoy"}},
                             "template": {"metadata": {"labels": {"app": "decoy"}},
                                          "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}])
    as_alice(cluster, workload("web", "team-a"))
    cond = refused(cluster, "web", "team-a", "NameConflict", "Service team-a/web")
    assert "already exists" in cond["message"]
    as_alice(cluster, workload("other", "team-a"))  # a legitimate workload beside them still gets planned
    wait_until(lambda: cluster.deployments("team-a").get("other-l4-tp1"), 60, "team-a/other's Deployment")
    cluster.kubectl("delete", "llmworkload", "kubernetes", "-n", "default")
    time.sleep(3)

    after = cluster.get_json("service", "kubernetes", "-n", "default")
    for key in ("uid", "resourceVersion"):
        assert after["metadata"][key] == before["metadata"][key]
    assert not after["metadata"].get("ownerReferences") and after["spec"] == before["spec"]
    web_after = cluster.get_json("service", "web", "-n", "team-a")
    assert web_after["metadata"]["resourceVersion"] == web["metadata"]["resourceVersion"]
    assert "decoy" in cluster.deployments("team-a"), "a foreign object with our label is never pruned"
    assert not any(d.startswith("web-") for d in cluster.deployments("team-a"))


def test_the_admins_controls_fail_safe(cluster, operator):
    setup_tenants(cluster)
    review = {**POLICY, "spec": {**POLICY["spec"], "mode": "plan"}}
    cluster.apply([review])
    cluster.apply(workload("bob-chat", "team-b", rate=2, tier="high"))
    wait_until(lambda: planned(cluster, "bob-chat", "team-b")[0].get("reason") == "PlannedForReview", 30, "review")

    # an invalid policy (a tenancy rule naming a tier that does not exist: the schema cannot see it)
    # must not fall back to the defaults, whose mode is apply
    broken = json.loads(json.dumps(review))
    broken["spec"]["tenancy"]["rules"][1]["tiers"] = ["gold"]
    broken["spec"]["mode"] = "apply"
    cluster.apply([broken])
    cond = wait_until(lambda: (c := cluster.condition(cluster.get_json("fleetpolicy", "default"), "Planned"))
                      and c["status"] == "False" and c, 30, "the invalid FleetPolicy conditioned")
    assert "tenancy.rules[1].tiers" in cond["message"] and "stays in force (mode plan)" in cond["message"]
    cluster.apply(workload("bob-chat", "team-b", rate=3, tier="high"))  # a change while the policy is broken
    wait_until(lambda: cluster.workload("bob-chat", "team-b")["status"].get("observedGeneration") == 2, 30, "re-plan")
    time.sleep(3)
    assert not cluster.deployments("team-b"), "mode plan stays in force: nothing is applied"

    # what the schema itself refuses: duplicate tier names, absurd numbers
    dup = json.loads(json.dumps(review))
    dup["spec"]["priorityTiers"] = [{"name": "standard", "value": 10}, {"name": "standard", "value": 20}]
    r = cluster.apply([dup], check=False)
    assert r.returncode != 0 and "priorityTiers" in r.stderr
    r = cluster.apply(L4_POOL.replace("costPerGPUHour: 0.8", "costPerGPUHour: 1e308"), check=False)
    assert r.returncode != 0 and "costPerGPUHour" in r.stderr

    # a valid policy that says apply is the only way out of review
    cluster.apply([POLICY])
    wait_until(lambda: cluster.deployments("team-b").get("bob-chat-l4-tp1"), 60, "applied after a valid policy")


def test_namespaced_mode_acts_only_in_its_namespaces_with_roles(cluster_bare, tmp_path):
    """`llmfleet operator --namespace team-a` with a Role in team-a (and a small ClusterRole for the
    cluster-scoped kinds): team-a's workload is served, team-b's is not even read."""
    from llmfleet.operator.rbac import cluster_role, cluster_role_binding, namespaced_mode_rules, role, role_binding

    from .conftest import OPERATOR_NS, OPERATOR_SA, REPO, OperatorProcess

    c = cluster_bare
    c.kubectl("apply", "-f", str(REPO / "crds"))
    wait_until(lambda: c.kubectl("get", "llmworkloads", check=False).returncode == 0, 30, "CRDs served")
    for ns in (OPERATOR_NS, "team-a", "team-b"):
        c.kubectl("create", "namespace", ns)
    c.kubectl("create", "serviceaccount", "-n", OPERATOR_NS, OPERATOR_SA)
    cluster_rules, ns_rules = namespaced_mode_rules()
    c.apply([cluster_role(rules=cluster_rules), cluster_role_binding(OPERATOR_NS, OPERATOR_SA),
             role("team-a", ns_rules), role_binding("team-a", OPERATOR_NS, OPERATOR_SA)])
    kc = c.lc.service_account_kubeconfig(OPERATOR_NS, OPERATOR_SA, tmp_path / "operator.kubeconfig")
    can = lambda *a: c.kubectl("auth", "can-i", *a, check=False, kubeconfig=kc).stdout.strip()  # noqa: E731
    assert can("patch", "deployments", "-n", "team-a") == "yes"
    assert can("patch", "deployments", "-n", "team-b") == "no" and can("list", "llmworkloads.llmfleet.dev", "-A") == "no"

    c.lc.add_gpu_node("l4-0", "NVIDIA-L4", 4)
    c.apply([POLICY])
    c.apply(L4_POOL)
    c.apply(workload("chat", "team-a") + "---" + workload("chat", "team-b"))
    op = OperatorProcess(kc, tmp_path, REPO / "examples", ("--namespace", "team-a")).start()
    try:
        wait_until(lambda: c.deployments("team-a").get("chat-l4-tp1"), 60, "team-a's Deployment")
        time.sleep(3)
        assert not c.deployments("team-b") and not c.workload("chat", "team-b").get("status")
        assert "forbidden" not in op.log().lower()
    finally:
        op.stop()
