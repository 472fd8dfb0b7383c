"""The node power agent's state machine against the NVML fake (device constraints as NVML enforces
them), the real PodResources client talking to a real gRPC server on a unix socket, and an
in-memory Kubernetes side. GPUs are H100 SXM: NVML range 200-700 W, default 700 W (the catalogue's
verified row), so the safe cap is 0.70 x 700 = 490 W."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pynvml
import pytest
from prometheus_client import CollectorRegistry

from llmfleet.power.agent import (ANNOTATION_APPLIED, ANNOTATION_REQUEST, PowerAgent, StateFile,
                                  parse_request_watts)
from llmfleet.power.nvml import FakeDevices, FakeGpu, PowerDevices, PynvmlDevices, h100_sxm
from llmfleet.power.podresources import PodResourcesClient
from power_fakes import FakeKubelet, MemoryNodePods, short_socket_path

A, B, C, D = (f"GPU-{i}{i}{i}{i}0000-0000-0000-0000-00000000000{i}" for i in range(4))
W = 1000  # mW per W


@dataclass
class Node:
    devices: FakeDevices
    kubelet: FakeKubelet
    pods: MemoryNodePods
    client: PodResourcesClient
    state_path: Path
    now_s: list[float]

    def agent(self, registry: CollectorRegistry | None = None) -> PowerAgent:
        return PowerAgent(self.devices, self.pods, self.client, self.state_path, idle_grace_s=30,
                          registry=registry or CollectorRegistry(), clock=lambda: self.now_s[0])

    def run_pod(self, name: str, gpus: list[str], watts: str | None, namespace: str = "llm") -> None:
        """A pod the scheduler placed here, with its GPUs allocated by the kubelet."""
        self.pods.add(namespace, name, {ANNOTATION_REQUEST: watts} if watts is not None else {})
        self.kubelet.give(namespace, name, gpus)

    def delete_pod(self, name: str, namespace: str = "llm") -> None:
        self.pods.remove(namespace, name)
        self.kubelet.remove(namespace, name)

    def limit_w(self, uuid: str) -> float:
        return self.devices.enforced_limit_mw(uuid) / W

    def report(self, name: str, namespace: str = "llm") -> dict:
        return json.loads(self.pods.annotation(namespace, name, ANNOTATION_APPLIED))

    def reasons(self) -> list[tuple[str, str]]:
        return [(pod, reason) for pod, reason, _, _ in self.pods.events]


@pytest.fixture
def node(tmp_path):
    kubelet = FakeKubelet(short_socket_path(tmp_path)).start()
    client = PodResourcesClient(kubelet.socket_path, timeout_s=5)
    try:
        yield Node(FakeDevices([h100_sxm(u) for u in (A, B, C, D)]), kubelet, MemoryNodePods(), client,
                   tmp_path / "state" / "state.json", [1_000.0])
    finally:
        client.close()
        kubelet.stop()


# ---- the fake behaves as NVML does --------------------------------------------------------------

def test_fake_refuses_what_nvml_refuses():
    devices = FakeDevices([h100_sxm(A)])
    assert isinstance(devices, PowerDevices)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        devices.set_limit_mw(A, 199_999)  # 1 mW under the 200 W minimum
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        devices.set_limit_mw(A, 700_001)
    with pytest.raises(pynvml.NVMLError_NotFound):
        devices.management_limit_mw(B)
    devices.set_limit_mw(A, 200_000)  # the bounds themselves are allowed
    assert devices.enforced_limit_mw(A) == 200_000 and devices.writes[A] == 1
    devices.permitted = False
    with pytest.raises(pynvml.NVMLError_NoPermission):
        devices.set_limit_mw(A, 300_000)
    with pytest.raises(ValueError, match="default_mw 800000 outside"):
        FakeGpu(uuid=A, min_mw=200_000, max_mw=700_000, default_mw=800_000)


def test_real_nvml_binding_loads_or_says_why():
    """Where a driver is installed, the real binding lists GPU UUIDs; elsewhere nvmlInit fails with
    the library-not-found class (what `llmfleet power-agent` reports)."""
    try:
        devices = PynvmlDevices()
    except pynvml.NVMLError as err:
        assert isinstance(err, (pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded))
        return
    try:
        assert all(u.startswith(("GPU-", "MIG-")) for u in devices.uuids())
    finally:
        devices.close()


def test_request_parsing():
    assert parse_request_watts("350") == 350.0
    assert parse_request_watts(" 412.5 ") == 412.5
    for bad in ("", "fast", "nan", "inf", "-5", "0", "350W"):
        assert parse_request_watts(bad) is None, bad


def test_annotation_is_the_one_the_operator_renders():
    from llmfleet.operator.render import ANNOTATION_POWER_LIMIT

    assert ANNOTATION_REQUEST == ANNOTATION_POWER_LIMIT


# ---- the state machine --------------------------------------------------------------------------

def test_apply_and_read_back_touches_only_annotated_pods_gpus(node):
    node.run_pod("big-0", [A, B], "450")        # TP 2, capped
    node.run_pod("plain-0", [C], None)           # no annotation: never touched
    agent = node.agent()
    assert agent.reconcile()
    assert (node.limit_w(A), node.limit_w(B)) == (450, 450)
    assert node.devices.writes == {A: 1, B: 1, C: 0, D: 0}
    assert node.report("big-0") == {"status": "applied", "limitWatts": {A: 450.0, B: 450.0}, "message": ""}
    assert node.pods.annotation("llm", "plain-0", ANNOTATION_APPLIED) is None
    assert node.reasons() == [("llm/big-0", "PowerLimitApplied")]
    reg = agent.metrics.registry
    assert reg.get_sample_value("llmfleet_power_agent_gpu_enforced_limit_watts", {"gpu": A}) == 450
    assert reg.get_sample_value("llmfleet_power_agent_managed_gpus") == 2
    # a second pass with nothing changed writes nothing and reports nothing new
    assert agent.reconcile()
    assert node.devices.writes == {A: 1, B: 1, C: 0, D: 0} and len(node.pods.events) == 1


def test_read_back_mismatch_is_reported_and_not_retried(node):
    node.devices.gpus[A].out_of_band_cap_mw = 300 * W  # e.g. a BMC cap below the request
    node.run_pod("big-0", [A], "450")
    agent = node.agent()
    agent.reconcile()
    report = node.report("big-0")
    assert report["status"] == "mismatch" and report["limitWatts"] == {A: 300.0}
    assert "set 450.0 W" in report["message"] and "enforced limit 300.0 W" in report["message"]
    pod, reason, _, warning = node.pods.events[-1]
    assert (pod, reason, warning) == ("llm/big-0", "PowerLimitMismatch", True)
    agent.reconcile()
    assert node.devices.writes[A] == 1 and len(node.pods.events) == 1  # no fight with the out-of-band cap
    node.devices.gpus[A].out_of_band_cap_mw = None  # lifted: the agent's own limit is enforced again
    agent.reconcile()
    assert node.report("big-0")["status"] == "applied" and node.limit_w(A) == 450


def test_pod_removed_restores_the_default_after_the_grace_period(node):
    node.run_pod("big-0", [A], "450")
    agent = node.agent()
    agent.reconcile()
    node.delete_pod("big-0")
    agent.reconcile()  # the first pass without the pod starts the grace period
    node.now_s[0] += 10
    agent.reconcile()
    assert node.limit_w(A) == 450  # within the grace period: a replacement pod may come
    node.now_s[0] += 25  # 35 s since the pass that found the GPU idle, past the 30 s grace
    agent.reconcile()
    assert node.limit_w(A) == 700
    assert agent.gpus == {} and StateFile(node.state_path).load() == {}
    reg = agent.metrics.registry
    assert reg.get_sample_value("llmfleet_power_agent_outcomes_total", {"outcome": "restored"}) == 1
    assert reg.get_sample_value("llmfleet_power_agent_gpu_enforced_limit_watts", {"gpu": A}) is None


def test_replacement_pod_within_the_grace_period_keeps_the_cap(node):
    node.run_pod("big-0", [A], "450")
    agent = node.agent()
    agent.reconcile()
    node.delete_pod("big-0")
    node.now_s[0] += 10
    agent.reconcile()
    node.run_pod("big-1", [A], "450")  # the Deployment's new pod lands on the same GPU
    node.now_s[0] += 60
    agent.reconcile()
    assert node.limit_w(A) == 450 and node.devices.writes[A] == 1  # never lifted, never rewritten
    assert node.report("big-1")["status"] == "applied"


def test_two_pods_disagreeing_on_one_gpu_get_the_safe_cap(node):
    # time-sliced replicas of GPU A held by two pods with different caps
    node.run_pod("a-0", [A + "::0"], "600")
    node.run_pod("b-0", [A + "::1"], "650")
    node.run_pod("c-0", [B + "::0"], "300")
    node.run_pod("d-0", [B + "::1"], "400")
    agent = node.agent()
    agent.reconcile()
    assert node.limit_w(A) == 490  # min(lowest request 600, 0.70 x 700 = 490)
    assert node.limit_w(B) == 300  # min(lowest request 300, 490): never above what a plan asked
    for pod in ("a-0", "b-0"):
        report = node.report(pod)
        assert report["status"] == "safe-cap" and report["limitWatts"] == {A: 490.0}
        assert "llm/a-0, llm/b-0 ask different caps" in report["message"] and "600.0 W, 650.0 W" in report["message"]
    assert ("llm/a-0", "PowerLimitSafeCap") in node.reasons()


def test_unreadable_request_gets_the_safe_cap_and_says_so(node):
    node.run_pod("big-0", [A], "fast please")
    agent = node.agent()
    agent.reconcile()
    assert node.limit_w(A) == 490
    report = node.report("big-0")
    assert report["status"] == "safe-cap"
    assert "not a positive number of watts" in report["message"] and "fast please" not in report["message"]


@pytest.mark.parametrize("asked, applied", [("100", 200), ("900", 700), ("199.5", 200)])
def test_out_of_range_request_is_clamped_to_the_device_range(node, asked, applied):
    node.run_pod("big-0", [A], asked)
    agent = node.agent()
    agent.reconcile()  # FakeDevices would raise NVMLError_InvalidArgument on an unclamped value
    assert node.limit_w(A) == applied
    report = node.report("big-0")
    assert report["status"] == "applied"
    assert "outside the GPU's range [200.0, 700.0] W" in report["message"]


def test_restart_with_state_on_disk_rewrites_nothing_and_still_restores(node):
    node.run_pod("big-0", [A, B], "450")
    node.agent().reconcile()
    saved = json.loads(node.state_path.read_text())
    assert saved["gpus"][A]["target_mw"] == 450_000 and saved["gpus"][A]["observed_mw"] == 450_000
    # the agent restarts (new process): same node, same state file
    agent = node.agent()
    assert set(agent.gpus) == {A, B}
    agent.reconcile()
    assert node.devices.writes == {A: 1, B: 1, C: 0, D: 0} and len(node.pods.events) == 1
    node.delete_pod("big-0")
    agent.reconcile()
    node.now_s[0] += 31
    agent.reconcile()
    assert (node.limit_w(A), node.limit_w(B)) == (700, 700)  # restored by the agent that did not set them


def test_unreadable_state_file_stops_the_agent_instead_of_forgetting(node):
    node.state_path.parent.mkdir(parents=True)
    node.state_path.write_text("{not json")
    with pytest.raises(ValueError, match=r"state\.json is not readable state"):
        node.agent()


def test_shutdown_restores_defaults(node):
    node.run_pod("big-0", [A, B], "450")
    agent = node.agent()
    stop = threading.Event()
    loop = threading.Thread(target=agent.run, args=(stop, 0.05))
    loop.start()
    try:
        for _ in range(200):
            if node.devices.writes[A]:
                break
            stop.wait(0.02)
        assert node.limit_w(A) == 450
    finally:
        stop.set()  # what SIGTERM does in `llmfleet power-agent`
        loop.join(10)
    assert not loop.is_alive()
    assert (node.limit_w(A), node.limit_w(B)) == (700, 700)
    assert StateFile(node.state_path).load() == {}


def test_second_writer_is_reported_not_fought(node):
    node.run_pod("big-0", [A], "450")
    agent = node.agent()
    agent.reconcile()
    node.devices.external_set(A, 600 * W)  # an administrator's nvidia-smi -pl 600
    agent.reconcile()
    assert node.limit_w(A) == 600 and node.devices.writes[A] == 1
    report = node.report("big-0")
    assert report["status"] == "second-writer" and report["limitWatts"] == {A: 600.0}
    assert "600.0 W but the agent set 450.0 W" in report["message"]
    assert node.reasons()[-1] == ("llm/big-0", "PowerLimitSecondWriter")
    agent.reconcile()
    assert node.devices.writes[A] == 1 and len(node.pods.events) == 2  # still hands off, no repeat
    # the GPU goes idle: the other writer's limit stays, the agent lets go
    node.delete_pod("big-0")
    agent.reconcile()
    node.now_s[0] += 31
    agent.reconcile()
    assert node.limit_w(A) == 600 and agent.gpus == {}
    assert agent.metrics.registry.get_sample_value(
        "llmfleet_power_agent_outcomes_total", {"outcome": "released-to-other-writer"}) == 1


def test_second_writer_detected_across_a_restart(node):
    node.run_pod("big-0", [A], "450")
    node.agent().reconcile()
    node.devices.external_set(A, 500 * W)  # while the agent was down
    agent = node.agent()
    agent.reconcile()
    assert node.report("big-0")["status"] == "second-writer" and node.limit_w(A) == 500


def test_a_failed_read_changes_nothing(node):
    node.run_pod("big-0", [A], "450")
    agent = node.agent()
    agent.reconcile()
    node.now_s[0] += 100
    node.pods.fail = True
    assert agent.reconcile() is False
    node.pods.fail = False
    node.kubelet.fail_with = __import__("grpc").StatusCode.UNAVAILABLE
    assert agent.reconcile() is False
    assert node.limit_w(A) == 450 and set(agent.gpus) == {A}  # a missing view never lifts a cap
    reg = agent.metrics.registry
    assert reg.get_sample_value("llmfleet_power_agent_reconcile_errors_total", {"source": "kubernetes"}) == 1
    assert reg.get_sample_value("llmfleet_power_agent_reconcile_errors_total", {"source": "podresources"}) == 1


def test_no_permission_is_reported_as_failed(node):
    node.devices.permitted = False  # the agent runs without root / CAP_SYS_ADMIN
    node.run_pod("big-0", [A], "450")
    agent = node.agent()
    agent.reconcile()
    assert node.limit_w(A) == 700
    report = node.report("big-0")
    assert report["status"] == "failed" and "Insufficient Permissions" in report["message"]
    assert node.reasons() == [("llm/big-0", "PowerLimitFailed")]
    node.devices.permitted = True  # fixed (e.g. the chart's capability added): the next pass applies
    agent.reconcile()
    assert node.limit_w(A) == 450 and node.report("big-0")["status"] == "applied"


def test_index_device_ids_and_mig_devices(node):
    node.run_pod("idx-0", ["2"], "400")  # device plugin with DEVICE_ID_STRATEGY=index: GPU index 2 = C
    node.run_pod("mig-0", ["MIG-1234abcd-0000-0000-0000-000000000000"], "400")
    agent = node.agent()
    agent.reconcile()
    assert node.limit_w(C) == 400
    assert node.report("mig-0")["status"] == "failed"
    assert all(node.devices.writes[u] == 0 for u in (A, B, D))


def test_unknown_gpu_uuid_is_reported_once(node):
    node.run_pod("ghost-0", ["GPU-ffffffff-0000-0000-0000-000000000000"], "400")
    agent = node.agent()
    agent.reconcile()
    agent.reconcile()
    report = node.report("ghost-0")
    assert report["status"] == "failed" and "Not Found" in report["message"]
    assert agent.metrics.registry.get_sample_value("llmfleet_power_agent_outcomes_total", {"outcome": "failed"}) == 1


# ---- the command: SIGTERM restores ---------------------------------------------------------------

SIGTERM_DRIVER = r'''
import json, sys, threading
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
import llmfleet.power.kube as kube, llmfleet.power.nvml as nvml
from power_fakes import FakeKubelet, MemoryNodePods
from llmfleet.cli import main

devices = nvml.FakeDevices([nvml.h100_sxm("GPU-a")])
pods = MemoryNodePods()
pods.add("llm", "big-0", {"llmfleet.dev/gpu-power-limit-watts": "450"})
kubelet = FakeKubelet(sys.argv[2]).start()
kubelet.give("llm", "big-0", ["GPU-a"])
nvml.PynvmlDevices = lambda: devices          # no GPU here: the fake behind the same interface
kube.KubeNodePods = lambda node_name: pods    # no API server here: in memory

def watch():  # tell the test once the cap is applied
    while devices.writes["GPU-a"] == 0:
        threading.Event().wait(0.02)
    print("capped", devices.management_limit_mw("GPU-a"), flush=True)
threading.Thread(target=watch, daemon=True).start()
rc = main(["power-agent", "--node-name", "n1", "--pod-resources-socket", sys.argv[2], "--state-file",
           sys.argv[3], "--interval-seconds", "0.05", "--metrics-port", "0"])
print("exit", rc, devices.management_limit_mw("GPU-a"), flush=True)
kubelet.stop()
'''


def test_sigterm_restores_the_default_limit(tmp_path):
    import signal
    import subprocess
    import sys

    state = tmp_path / "state.json"
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_DRIVER, str(Path(__file__).resolve().parents[1]),
                             short_socket_path(tmp_path), str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().split() == ["capped", "450000"]
        # the pass records the new target in its state file after the NVML write the driver saw
        # (before the write, the file holds the default limit to restore after a crash): wait
        # for that save, bounded
        deadline = time.monotonic() + 10.0
        while json.loads(state.read_text())["gpus"]["GPU-a"]["target_mw"] != 450_000 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert json.loads(state.read_text())["gpus"]["GPU-a"]["target_mw"] == 450_000
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert out.split() == ["exit", "0", "700000"]  # clean exit, default limit back
    assert json.loads(state.read_text())["gpus"] == {}


def test_power_agent_command_without_node_name_or_nvml(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "NODE_NAME"}
    run = lambda *a, **kw: subprocess.run([sys.executable, "-m", "llmfleet", "power-agent", "--metrics-port", "0",  # noqa: E731
                                           "--state-file", str(tmp_path / "s.json"), *a],
                                          capture_output=True, text=True, timeout=60, **kw)
    r = run(env=env)
    assert r.returncode == 1 and r.stderr.strip() == "llmfleet: power-agent: no node name (set --node-name or NODE_NAME)"
    try:
        PynvmlDevices().close()
        pytest.skip("an NVIDIA driver is installed: the no-driver message cannot be shown here")
    except pynvml.NVMLError:
        pass
    r = run("--node-name", "n1", env=env)
    assert r.returncode == 1 and "NVML is not available" in r.stderr and len(r.stderr.strip().splitlines()) == 1
