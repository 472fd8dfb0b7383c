"""The kubelet PodResources v1 client: the generated code is what generate.sh produces from the
committed proto, the proto keeps upstream's wire names and numbers, and the client reads a real
gRPC server (implementing the generated servicer) over a unix socket."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from llmfleet.power.podresources import PodResourcesClient, PodResourcesError, physical_device_id
from llmfleet.power.proto import podresources_v1_pb2 as pb
from power_fakes import FakeKubelet, short_socket_path

REPO = Path(__file__).resolve().parents[1]
PROTO_DIR = REPO / "llmfleet" / "power" / "proto"


def test_regenerating_gives_the_committed_modules(tmp_path):
    subprocess.run(["bash", str(PROTO_DIR / "generate.sh"), str(tmp_path)], check=True,
                   env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    for name in ("podresources_v1_pb2.py", "podresources_v1_pb2_grpc.py"):
        fresh = tmp_path / "llmfleet" / "power" / "proto" / name
        assert fresh.is_file(), name
        assert filecmp.cmp(fresh, PROTO_DIR / name, shallow=False), f"{name} differs: run {PROTO_DIR}/generate.sh"


def test_proto_keeps_upstream_names_and_field_numbers():
    # expected values read from kubernetes/kubernetes staging/src/k8s.io/kubelet/pkg/apis/podresources/v1/api.proto
    service = pb.DESCRIPTOR.services_by_name["PodResourcesLister"]
    assert service.full_name == "v1.PodResourcesLister"
    assert [m.name for m in service.methods] == ["List", "GetAllocatableResources", "Get"]
    fields = {m: {f.name: f.number for f in pb.DESCRIPTOR.message_types_by_name[m].fields}
              for m in ("ListPodResourcesResponse", "PodResources", "ContainerResources", "ContainerDevices",
                        "DynamicResource", "GetPodResourcesRequest")}
    assert fields["ListPodResourcesResponse"] == {"pod_resources": 1}
    assert fields["PodResources"] == {"name": 1, "namespace": 2, "containers": 3}
    assert fields["ContainerResources"] == {"name": 1, "devices": 2, "cpu_ids": 3, "memory": 4, "dynamic_resources": 5}
    assert fields["ContainerDevices"] == {"resource_name": 1, "device_ids": 2, "topology": 3}
    assert fields["DynamicResource"] == {"claim_name": 2, "claim_namespace": 3, "claim_resources": 4}
    assert fields["GetPodResourcesRequest"] == {"pod_name": 1, "pod_namespace": 2}


def test_wire_bytes_match_the_proto3_encoding():
    # ContainerDevices{resource_name="nvidia.com/gpu", device_ids=["GPU-a"]}: field 1 (tag 0x0a) length 14,
    # field 2 (tag 0x12) length 5 -- computed by hand from the protobuf encoding rules.
    msg = pb.ContainerDevices(resource_name="nvidia.com/gpu", device_ids=["GPU-a"])
    assert msg.SerializeToString() == b"\x0a\x0envidia.com/gpu\x12\x05GPU-a"


@pytest.fixture
def kubelet(tmp_path):
    server = FakeKubelet(short_socket_path(tmp_path)).start()
    try:
        yield server
    finally:
        server.stop()


def test_client_maps_pods_to_physical_gpus(kubelet):
    kubelet.give("llm", "big-0", ["GPU-b", "GPU-a"])                                # TP 2
    kubelet.give("llm", "big-0", ["GPU-c"], container="sidecar")                    # another container's GPU
    kubelet.give("llm", "shared-0", ["GPU-d::0"])                                   # time-sliced replicas
    kubelet.give("llm", "shared-1", ["GPU-d::1", "GPU-d::2"])                       # two replicas of one GPU
    kubelet.give("net", "nic-only", ["0000:3b:00.1"], resource="example.com/sriov")  # no GPU: absent
    kubelet.give("llm", "by-index", ["3"])                                          # index ID strategy
    client = PodResourcesClient(kubelet.socket_path, timeout_s=5)
    try:
        assert client.gpus_by_pod() == {
            ("llm", "big-0"): ["GPU-a", "GPU-b", "GPU-c"],
            ("llm", "shared-0"): ["GPU-d"],
            ("llm", "shared-1"): ["GPU-d"],
            ("llm", "by-index"): ["3"],
        }
        raw = client.list_pods()
        assert {(p.namespace, p.name) for p in raw} == {("llm", "big-0"), ("llm", "shared-0"), ("llm", "shared-1"),
                                                      ("net", "nic-only"), ("llm", "by-index")}
    finally:
        client.close()


def test_client_reads_responses_over_grpcs_default_4_mib(kubelet):
    # 60,000 device IDs of 100 characters: about 6.1 MB, over gRPC's default 4 MiB receive limit and
    # under the 16 MiB the kubelet's own clients allow
    ids = [f"GPU-{i:096d}" for i in range(60_000)]
    kubelet.give("llm", "huge", ids)
    client = PodResourcesClient(kubelet.socket_path, timeout_s=20)
    try:
        assert len(client.gpus_by_pod()[("llm", "huge")]) == 60_000
    finally:
        client.close()


def test_client_error_names_socket_and_status(kubelet, tmp_path):
    kubelet.fail_with = grpc.StatusCode.PERMISSION_DENIED
    client = PodResourcesClient(kubelet.socket_path, timeout_s=5)
    with pytest.raises(PodResourcesError, match=r"kubelet\.sock failed: PERMISSION_DENIED"):
        client.gpus_by_pod()
    client.close()
    missing = PodResourcesClient(str(Path(kubelet.socket_path).with_name("absent.sock")), timeout_s=2)
    with pytest.raises(PodResourcesError, match=r"absent\.sock failed: (UNAVAILABLE|DEADLINE_EXCEEDED)"):
        missing.gpus_by_pod()
    missing.close()


@pytest.mark.parametrize("device_id, physical", [
    ("GPU-8f2c1d90-3e5a-4b17-9c2e-5da9abb51763::3", "GPU-8f2c1d90-3e5a-4b17-9c2e-5da9abb51763"),
    ("GPU-8f2c1d90-3e5a-4b17-9c2e-5da9abb51763", "GPU-8f2c1d90-3e5a-4b17-9c2e-5da9abb51763"),
    ("0::1", "0"),
])
def test_physical_device_id_drops_the_time_slicing_replica(device_id, physical):
    assert physical_device_id(device_id) == physical
