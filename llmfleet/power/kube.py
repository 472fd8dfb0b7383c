"""The power agent's three Kubernetes calls, behind a small interface so that the state machine
runs in tests against an in-memory cluster and in production against the API server:

- list the pods bound to this node (field selector ``spec.nodeName``);
- merge-patch one annotation of a pod (the enforcement report);
- record a core/v1 Event about a pod.

RBAC these need: ``AGENT_RULES`` (pods list and patch, events create).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

log = logging.getLogger(__name__)

COMPONENT = "llmfleet-power-agent"

# The RBAC rules the calls below need, and no more (the chart's power-agent ClusterRole; a test
# keeps the two equal, another runs the calls under that role on a real API server).
AGENT_RULES = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]


@dataclass(frozen=True)
class PodInfo:
    """What the agent reads of a pod: identity, phase (``Pending``, ``Running``, ``Succeeded``,
    ``Failed``, ``Unknown``), whether it is being deleted, its annotations and labels, and its
    priority: ``priority`` is ``spec.priority``, the integer the API server's Priority admission
    resolves from ``spec.priorityClassName`` (None where it is absent), ``priority_class`` that
    class's name ("" when none). Reactive capping ranks pods by ``priority``."""

    namespace: str
    name: str
    uid: str = ""
    phase: str = "Running"
    deleting: bool = False
    annotations: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    priority: int | None = None
    priority_class: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """(namespace, name), the key the PodResources API uses."""
        return (self.namespace, self.name)


class NodePods(Protocol):
    """The Kubernetes side of the agent. Implementations raise on a failed list (the agent then
    changes nothing that pass) and never raise from ``annotate``/``event`` for API errors (a
    report is never worth failing a reconcile): they log instead."""

    def list_pods(self) -> list[PodInfo]:
        """Every pod bound to this node."""

    def annotate(self, pod: PodInfo, key: str, value: str) -> None:
        """Set annotation ``key`` of ``pod`` to ``value``."""

    def event(self, pod: PodInfo, reason: str, message: str, warning: bool = False) -> None:
        """Record an Event about ``pod``."""


class KubeNodePods:
    """``NodePods`` over the Kubernetes API (CoreV1Api of the official client).

    ``node_name``: this node (the chart passes ``spec.nodeName`` through the downward API as
    ``NODE_NAME``). ``api``: a ``kubernetes.client.CoreV1Api``; by default from the in-cluster
    service account, else ``$KUBECONFIG``/``~/.kube/config``.
    """

    def __init__(self, node_name: str, api=None):
        from kubernetes import client, config

        if not node_name:
            raise ValueError("power agent: node name is empty (set --node-name or NODE_NAME)")
        if api is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
            api = client.CoreV1Api()
        self.node_name = node_name
        self.api = api
        self.instance = socket.gethostname()

    def list_pods(self) -> list[PodInfo]:
        pods = self.api.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.node_name}")
        return [PodInfo(namespace=p.metadata.namespace, name=p.metadata.name, uid=p.metadata.uid or "",
                        phase=(p.status.phase if p.status else None) or "Unknown",
                        deleting=p.metadata.deletion_timestamp is not None,
                        annotations=dict(p.metadata.annotations or {}),
                        labels=dict(p.metadata.labels or {}),
                        priority=p.spec.priority if p.spec else None,
                        priority_class=(p.spec.priority_class_name if p.spec else None) or "")
                for p in pods.items]

    def annotate(self, pod: PodInfo, key: str, value: str) -> None:
        from kubernetes.client.exceptions import ApiException

        body = {"metadata": {"annotations": {key: value}}}
        try:
            # a dict body is sent as a strategic merge patch, which for annotations is a plain merge
            self.api.patch_namespaced_pod(pod.name, pod.namespace, body)
        except ApiException as err:
            log.warning("could not annotate pod %s/%s: HTTP %s", pod.namespace, pod.name, err.status)

    def event(self, pod: PodInfo, reason: str, message: str, warning: bool = False) -> None:
        from kubernetes.client.exceptions import ApiException

        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{pod.name}.", "namespace": pod.namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod.name,
                               "namespace": pod.namespace, "uid": pod.uid or None},
            "reason": reason, "message": message[:1000], "type": "Warning" if warning else "Normal",
            "source": {"component": COMPONENT, "host": self.node_name},
            "reportingComponent": COMPONENT, "reportingInstance": self.instance,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            self.api.create_namespaced_event(pod.namespace, body)
        except ApiException as err:
            log.warning("could not record event %s on pod %s/%s: HTTP %s", reason, pod.namespace, pod.name,
                        err.status)
