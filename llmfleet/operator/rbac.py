"""The permissions the operator needs: exactly the resources and verbs its code uses.

Kept as data so that the integration tests grant precisely this (and the Helm chart renders the
same rules); `tests/integration/test_operator.py` reads the API server's audit log and checks that
the operator uses every verb here and no other. Why each rule exists:
- llmfleet.dev objects: list/watch to plan (kopf watches them too), status patch to report.
- Deployments: list/watch (kopf watches the children it made) and get (is a name free before a
  child is created? ``NameConflict``), patch for server-side apply, plus create for an apply that
  creates the object (the API server checks ``create`` too; the audit log shows such a request as
  a ``patch`` answered 201), delete to prune children the plan dropped.
- Services: the same (a handler watches them so that a hand-edited selector is repaired at once).
- PriorityClasses: get to see whether a tier's class exists, patch + create to apply it; never
  deleted by llmfleet, so no delete verb.
- Events: create to record decisions and failures.
- Namespaces: list, for tenancy rules that select namespaces by label.
- Routing objects of each workload (``llmfleet.operator.routing``): ConfigMaps, ServiceAccounts,
  Roles, RoleBindings, InferencePools and HTTPRoutes, each with get (name check), list (diff and
  pruning), create + patch (server-side apply) and delete (pruning when the routing mode changes).
- The pools' GPUs (``planner.cluster_nodes``): Nodes, and the Pods on them that llmfleet does not
  manage, both read (list) to plan within the GPUs free on each pool's nodes.
- What the endpoint picker's Role grants (``EPP_RULES``: read pods, InferencePools and llm-d's
  InferenceObjectives): Kubernetes refuses to create a Role granting permissions its creator lacks
  (RBAC privilege-escalation prevention), so the operator holds them too, and uses the pod and
  InferencePool ones itself.
"""

from __future__ import annotations

from llmfleet.api.models import API_GROUP

EPP_RULES: list[dict] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["inference.networking.k8s.io"], "resources": ["inferencepools"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["llm-d.ai", "inference.networking.x-k8s.io"],
     "resources": ["inferenceobjectives", "inferencemodelrewrites"], "verbs": ["get", "list", "watch"]},
]
"""What llm-d's endpoint picker reads in its own namespace, granted by one Role per workload:
the model-server pods it picks from, its InferencePool (``inferencePool`` mode only) and the
request-objective kinds it watches when their CRDs exist. The same rules as llm-d-router's own
deployments (deploy/components/inference-gateway/single-pool/rbac.yaml; config/charts/inferencepool
templates/rbac.yaml) less the tokenreviews/subjectaccessreviews ones, which only its authenticated
metrics endpoint needs: llmfleet runs the picker with ``--metrics-endpoint-auth=false``."""


def epp_rules(mode: str) -> list[dict]:
    """The endpoint picker's Role rules for a routing mode (``standalone`` reads no InferencePool)."""
    return [r for r in EPP_RULES if mode == "inferencePool" or "inferencepools" not in r["resources"]]


OPERATOR_RULES: list[dict] = [
    {"apiGroups": [API_GROUP], "resources": ["llmworkloads", "gpupools", "fleetpolicies"], "verbs": ["list", "watch"]},
    {"apiGroups": [API_GROUP], "resources": ["llmworkloads/status", "gpupools/status", "fleetpolicies/status"],
     "verbs": ["patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": ["scheduling.k8s.io"], "resources": ["priorityclasses"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["configmaps", "serviceaccounts"],
     "verbs": ["get", "list", "create", "patch", "delete"]},
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
     "verbs": ["get", "list", "create", "patch", "delete"]},
    {"apiGroups": ["inference.networking.k8s.io"], "resources": ["inferencepools"],
     "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"],
     "verbs": ["get", "list", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["llm-d.ai", "inference.networking.x-k8s.io"],
     "resources": ["inferenceobjectives", "inferencemodelrewrites"], "verbs": ["get", "list", "watch"]},
]


LEASE_RULES: list[dict] = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["LEASE"],
     "verbs": ["get", "update"]},
]
"""Leader election (``--leader-elect``, leader.py), in the operator's own namespace only: the
Kubernetes client's LeaseLock reads (get), creates and replaces (update) one Lease; RBAC cannot
limit ``create`` by name, so that rule names none. ``LEASE`` stands for the Lease's name."""


def lease_role(namespace: str, lease_name: str = "llmfleet", name: str = "llmfleet-operator-leader-election") -> dict:
    """The Role that lets the operator hold Lease ``namespace/lease_name`` (``LEASE_RULES``)."""
    rules = [{**r, "resourceNames": [lease_name]} if "resourceNames" in r else dict(r) for r in LEASE_RULES]
    return role(namespace, rules, name)


def cluster_role(name: str = "llmfleet-operator", rules: list[dict] | None = None) -> dict:
    """The ClusterRole that grants ``rules`` (default ``OPERATOR_RULES``)."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "llmfleet"}},
            "rules": OPERATOR_RULES if rules is None else rules}


def cluster_role_binding(namespace: str, service_account: str, name: str = "llmfleet-operator") -> dict:
    """Binds ``cluster_role(name)`` to ServiceAccount ``namespace/service_account``."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "llmfleet"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]}


NAMESPACED_RESOURCES = ("llmworkloads", "llmworkloads/status", "deployments", "services", "configmaps",
                        "serviceaccounts", "roles", "rolebindings", "inferencepools", "httproutes", "pods",
                        "inferenceobjectives", "inferencemodelrewrites")
"""What the namespaced mode (``llmfleet operator --namespace NS``) needs only inside its namespaces"""


def namespaced_mode_rules() -> tuple[list[dict], list[dict]]:
    """``OPERATOR_RULES`` split for the namespaced mode: (rules for a ClusterRole: the cluster-scoped
    GPUPools, FleetPolicy, PriorityClasses and Nodes, Events, which llmfleet records for
    cluster-scoped objects in ``default``, and listing pods in every namespace, to count the GPUs
    they hold on the pools' nodes; rules for a Role in each watched namespace: LLMWorkloads and
    children)."""
    cluster, namespaced = [], []
    for rule in OPERATOR_RULES:
        inside = [r for r in rule["resources"] if r in NAMESPACED_RESOURCES]
        outside = [r for r in rule["resources"] if r not in NAMESPACED_RESOURCES]
        if inside:
            namespaced.append({**rule, "resources": inside})
        if outside:
            cluster.append({**rule, "resources": outside})
    # the GPUs other pods hold on the pools' nodes are counted whatever their namespace
    # (planner.cluster_nodes): listing pods stays cluster-wide
    cluster.append({"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]})
    return cluster, namespaced


def role(namespace: str, rules: list[dict], name: str = "llmfleet-operator") -> dict:
    """A Role granting ``rules`` in ``namespace`` (namespaced mode)."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "llmfleet"}},
            "rules": rules}


def role_binding(namespace: str, service_account_namespace: str, service_account: str,
                 name: str = "llmfleet-operator") -> dict:
    """Binds ``role(namespace)`` to ServiceAccount ``service_account_namespace/service_account``."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "llmfleet"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": service_account_namespace}]}
