"""The permissions the operator needs: exactly the resources and verbs its code uses.

Kept as data so that the integration tests grant precisely this (and the Helm chart renders the
same rules); `tests/integration/test_operator.py` reads the API server's audit log and checks that
the operator uses every verb here and no other. Why each rule exists:
- llmfleet.dev objects: list/watch to plan (kopf watches them too), status patch to report.
- Deployments: list/watch (kopf watches the children it made) and get (is a name free before a
  child is created? ``NameConflict``), patch for server-side apply, plus create for an apply that
  creates the object (the API server checks ``create`` too; the audit log shows such a request as
  a ``patch`` answered 201), delete to prune children the plan dropped.
- Services: the same without watch (no handler watches Services).
- PriorityClasses: get to see whether a tier's class exists, patch + create to apply it; never
  deleted by llmfleet, so no delete verb.
- Events: create to record decisions and failures.
"""

from __future__ import annotations

from llmfleet.api.models import API_GROUP

OPERATOR_RULES: list[dict] = [
    {"apiGroups": [API_GROUP], "resources": ["llmworkloads", "gpupools", "fleetpolicies"], "verbs": ["list", "watch"]},
    {"apiGroups": [API_GROUP], "resources": ["llmworkloads/status", "gpupools/status", "fleetpolicies/status"],
     "verbs": ["patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "create", "patch", "delete"]},
    {"apiGroups": ["scheduling.k8s.io"], "resources": ["priorityclasses"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]


def cluster_role(name: str = "llmfleet-operator") -> dict:
    """The ClusterRole that grants ``OPERATOR_RULES``."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "llmfleet"}},
            "rules": OPERATOR_RULES}


def cluster_role_binding(namespace: str, service_account: str, name: str = "llmfleet-operator") -> dict:
    """Binds ``cluster_role(name)`` to ServiceAccount ``namespace/service_account``."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "llmfleet"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]}
