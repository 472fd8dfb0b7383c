"""Client of the kubelet PodResources API v1: which GPUs the kubelet gave each pod on this node.

The kubelet serves ``v1.PodResourcesLister`` over gRPC on a unix socket, by default
``/var/lib/kubelet/pod-resources/kubelet.sock`` (Kubernetes documentation, "Monitor Device Plugin
Resources"; GA since Kubernetes 1.28, v1 since 1.20). ``List`` returns every pod with its
containers and, per container, the devices of each extended resource: for NVIDIA's device plugin
the resource ``nvidia.com/gpu`` and device IDs that are GPU UUIDs (its default
``DEVICE_ID_STRATEGY=uuid``), GPU indices (``index`` strategy), or, with time-slicing, a UUID or
index with a replica suffix ``::N`` (k8s-device-plugin ``internal/rm/devices.go``,
``NewAnnotatedID``: ``"%s::%d"``).

The messages and stub are generated from kubelet's ``api.proto`` (``proto/generate.sh``).
"""

from __future__ import annotations

import grpc

from llmfleet.power.proto import podresources_v1_pb2 as pb
from llmfleet.power.proto import podresources_v1_pb2_grpc as pb_grpc

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
GPU_RESOURCE = "nvidia.com/gpu"
# The kubelet's own clients of this API allow 16 MiB responses (defaultPodResourcesMaxSize =
# 1024*1024*16 in kubernetes/kubernetes test/e2e_node/util.go); gRPC's default of 4 MiB can be
# too small on a node with hundreds of pods and many CPU IDs.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
# The same source uses a 10 s timeout (defaultPodResourcesTimeout); a local List answers in ms.
DEFAULT_TIMEOUT_S = 10.0


class PodResourcesError(RuntimeError):
    """The PodResources API could not be read (socket missing, kubelet down, timeout). The message
    names the socket and the gRPC status code; the agent changes nothing on this error."""


def physical_device_id(device_id: str) -> str:
    """The physical GPU a device-plugin device ID stands for: the ID without the time-slicing
    replica suffix ``::N`` (``GPU-abc::3`` → ``GPU-abc``, ``0::1`` → ``0``)."""
    return device_id.split("::", 1)[0]


class PodResourcesClient:
    """``List`` on the kubelet's PodResources socket, reduced to the GPUs of each pod.

    ``socket_path``: the unix socket (absolute path). The channel is created once and reused.
    """

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout_s: float = DEFAULT_TIMEOUT_S,
                 resource_name: str = GPU_RESOURCE):
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self.resource_name = resource_name
        self._channel = grpc.insecure_channel(
            f"unix://{socket_path}", options=[("grpc.max_receive_message_length", MAX_RESPONSE_BYTES)])
        self._stub = pb_grpc.PodResourcesListerStub(self._channel)

    def close(self) -> None:
        """Close the gRPC channel."""
        self._channel.close()

    def list_pods(self) -> list[pb.PodResources]:
        """The raw ``List`` answer: every pod the kubelet admitted, with its containers' devices.

        Raises:
            PodResourcesError: the call failed (message: socket path and gRPC status code).
        """
        try:
            response = self._stub.List(pb.ListPodResourcesRequest(), timeout=self.timeout_s)
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else None
            name = code.name if code is not None else "UNKNOWN"
            raise PodResourcesError(f"PodResources List on {self.socket_path} failed: {name}") from err
        return list(response.pod_resources)

    def gpus_by_pod(self) -> dict[tuple[str, str], list[str]]:
        """{(namespace, pod name): physical GPU IDs (UUIDs or indices, replica suffix removed),
        sorted, without duplicates} for every pod with at least one device of ``resource_name``.
        Devices of all containers count (init containers' devices are reused by the pod's others).

        Raises:
            PodResourcesError: as ``list_pods``.
        """
        out: dict[tuple[str, str], list[str]] = {}
        for pod in self.list_pods():
            ids = {physical_device_id(device_id)
                   for container in pod.containers for devices in container.devices
                   if devices.resource_name == self.resource_name for device_id in devices.device_ids}
            if ids:
                out[(pod.namespace, pod.name)] = sorted(ids)
        return out
