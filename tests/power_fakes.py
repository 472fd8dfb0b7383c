"""Test doubles of what cannot run here, behind the same interfaces as the real thing:

- ``FakeKubelet``: a real gRPC server on a unix socket implementing the servicer generated from
  kubelet's PodResources ``api.proto`` (the real client talks to it over the real wire protocol);
- ``MemoryNodePods``: the agent's Kubernetes side in memory (``llmfleet.power.kube.NodePods``),
  recording annotations and Events. (tests/integration/test_power_agent_rbac.py runs the real
  ``KubeNodePods`` against a real API server.)
"""

from __future__ import annotations

import tempfile
import threading
from concurrent import futures
from dataclasses import replace
from pathlib import Path

import grpc

from llmfleet.power.kube import PodInfo
from llmfleet.power.proto import podresources_v1_pb2 as pb
from llmfleet.power.proto import podresources_v1_pb2_grpc as pb_grpc


def short_socket_path(tmp_path: Path) -> str:
    """A unix socket path under 108 bytes (the sun_path limit); tmp_path can be longer."""
    path = tmp_path / "kubelet.sock"
    if len(str(path)) < 100:
        return str(path)
    return str(Path(tempfile.mkdtemp(prefix="pr-")) / "kubelet.sock")


class FakeKubelet(pb_grpc.PodResourcesListerServicer):
    """Serves ``List`` from ``self.pods``: {(namespace, name): {container: {resource: [device IDs]}}}.
    ``fail_with`` (a grpc.StatusCode) makes every call fail with that status."""

    def __init__(self, socket_path: str):
        self.socket_path = socket_path
        self.pods: dict[tuple[str, str], dict[str, dict[str, list[str]]]] = {}
        self.fail_with: grpc.StatusCode | None = None
        self.calls = 0
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_PodResourcesListerServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"unix://{socket_path}")

    def start(self) -> "FakeKubelet":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=None).wait()

    def give(self, namespace: str, name: str, gpus: list[str], container: str = "vllm",
             resource: str = "nvidia.com/gpu") -> None:
        """Allocate devices of ``resource`` to a container of a pod (as the kubelet's device manager does)."""
        with self._lock:
            self.pods.setdefault((namespace, name), {}).setdefault(container, {})[resource] = list(gpus)

    def remove(self, namespace: str, name: str) -> None:
        with self._lock:
            self.pods.pop((namespace, name), None)

    def List(self, request, context):  # noqa: N802  (the generated servicer's method name)
        self.calls += 1
        if self.fail_with is not None:
            context.abort(self.fail_with, "fake kubelet told to fail")
        with self._lock:
            pods = [pb.PodResources(namespace=ns, name=name, containers=[
                        pb.ContainerResources(name=c, devices=[
                            pb.ContainerDevices(resource_name=r, device_ids=ids) for r, ids in res.items()])
                        for c, res in containers.items()])
                    for (ns, name), containers in sorted(self.pods.items())]
        return pb.ListPodResourcesResponse(pod_resources=pods)


class MemoryNodePods:
    """``NodePods`` in memory: ``pods`` keyed by (namespace, name); ``events`` as (namespace/name,
    reason, message, warning) in order; ``fail`` makes ``list_pods`` raise, as an API outage does."""

    def __init__(self):
        self.pods: dict[tuple[str, str], PodInfo] = {}
        self.events: list[tuple[str, str, str, bool]] = []
        self.fail = False

    def add(self, namespace: str, name: str, annotations: dict[str, str] | None = None, phase: str = "Running",
            priority: int | None = None, priority_class: str = "", labels: dict[str, str] | None = None):
        """A pod; ``priority`` is the ``spec.priority`` the API server would resolve from ``priority_class``."""
        self.pods[(namespace, name)] = PodInfo(namespace, name, uid=f"uid-{name}", phase=phase,
                                               annotations=dict(annotations or {}), labels=dict(labels or {}),
                                               priority=priority, priority_class=priority_class)

    def remove(self, namespace: str, name: str) -> None:
        self.pods.pop((namespace, name), None)

    def list_pods(self) -> list[PodInfo]:
        if self.fail:
            raise ConnectionError("API server unreachable")
        return list(self.pods.values())

    def annotate(self, pod: PodInfo, key: str, value: str) -> None:
        live = self.pods.get(pod.key)
        if live is not None:
            self.pods[pod.key] = replace(live, annotations={**live.annotations, key: value})

    def event(self, pod: PodInfo, reason: str, message: str, warning: bool = False) -> None:
        self.events.append((f"{pod.namespace}/{pod.name}", reason, message, warning))

    def annotation(self, namespace: str, name: str, key: str) -> str | None:
        return self.pods[(namespace, name)].annotations.get(key)
