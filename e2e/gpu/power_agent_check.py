"""On a machine with a real NVIDIA GPU (run as root): check the NVML calls the power agent relies
on, then one pass of the agent itself against the real GPU. Called by power_agent_check.sh.

1. reads the GPU's limits (min, max, default, management, enforced) and draw through
   llmfleet.power.nvml.PynvmlDevices, the agent's real NVML implementation;
2. sets a cap inside the range (85% of the default, at least the minimum), reads it back, and
   cross-checks with nvidia-smi when present;
3. asks for 1 W above the maximum and expects NVMLError_InvalidArgument, the refusal the agent's
   NVML fake (FakeDevices) imitates;
4. restores the limit it found and checks it;
5. runs the agent (PowerAgent) once with an in-memory pod asking 80% of the default and a real
   PodResources gRPC server (tests/power_fakes.py) giving it this GPU, then its shutdown, which
   must restore the default limit.
Exit status 0 when every check holds; 1 otherwise, with the failed checks listed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import pynvml  # noqa: E402

from llmfleet.power.nvml import PynvmlDevices  # noqa: E402

failures: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {what}")
    if not ok:
        failures.append(what)


def smi_limits_w(uuid: str) -> dict[str, float] | None:
    """nvidia-smi's view of the same GPU, W (None without nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        return None
    fields = ["power.limit", "enforced.power.limit", "power.default_limit", "power.min_limit", "power.max_limit"]
    out = subprocess.run(["nvidia-smi", "-i", uuid, f"--query-gpu={','.join(fields)}",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True, check=True).stdout
    return dict(zip(fields, (float(v) for v in out.strip().split(","))))


def agent_pass(devices: PynvmlDevices, uuid: str, default_mw: int) -> None:
    from prometheus_client import CollectorRegistry

    from llmfleet.power.agent import ANNOTATION_REQUEST, PowerAgent
    from llmfleet.power.podresources import PodResourcesClient
    from power_fakes import FakeKubelet, MemoryNodePods

    ask_w = round(0.80 * default_mw / 1000)
    with tempfile.TemporaryDirectory(prefix="pa-") as tmp:
        kubelet = FakeKubelet(f"{tmp}/kubelet.sock").start()
        client = PodResourcesClient(kubelet.socket_path, timeout_s=5)
        try:
            pods = MemoryNodePods()
            pods.add("llm", "check-0", {ANNOTATION_REQUEST: str(ask_w)})
            kubelet.give("llm", "check-0", [uuid])
            agent = PowerAgent(devices, pods, client, f"{tmp}/state.json", registry=CollectorRegistry())
            agent.reconcile()
            low, high = devices.limit_constraints_mw(uuid)
            expected = max(low, min(high, ask_w * 1000))
            check(devices.management_limit_mw(uuid) == expected,
                  f"agent set the pod's cap: {devices.management_limit_mw(uuid) / 1000} W, expected {expected / 1000} W")
            print(f"  agent report: {pods.annotation('llm', 'check-0', 'llmfleet.dev/gpu-power-limit-applied')}")
            agent.shutdown()
            check(devices.management_limit_mw(uuid) == default_mw,
                  f"agent shutdown restored the default {default_mw / 1000} W "
                  f"(now {devices.management_limit_mw(uuid) / 1000} W)")
        finally:
            client.close()
            kubelet.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", type=int, default=0, help="GPU index (default 0)")
    ap.add_argument("--skip-agent", action="store_true", help="only the NVML checks (steps 1-4)")
    args = ap.parse_args()
    devices = PynvmlDevices()
    uuid = devices.uuids()[args.gpu]
    low, high = devices.limit_constraints_mw(uuid)
    default, found = devices.default_limit_mw(uuid), devices.management_limit_mw(uuid)
    print(f"GPU {args.gpu} {uuid}: min {low / 1000} W, max {high / 1000} W, default {default / 1000} W, "
          f"set {found / 1000} W, enforced {devices.enforced_limit_mw(uuid) / 1000} W, "
          f"drawing {devices.power_usage_mw(uuid) / 1000} W")
    check(low <= default <= high, "default limit within [min, max]")
    cap = max(low, round(0.85 * default / 1000) * 1000)
    if cap == found:
        cap = max(low, cap - 10_000)
    try:
        devices.set_limit_mw(uuid, cap)
        check(devices.management_limit_mw(uuid) == cap, f"set {cap / 1000} W, read back "
              f"{devices.management_limit_mw(uuid) / 1000} W (enforced {devices.enforced_limit_mw(uuid) / 1000} W)")
        smi = smi_limits_w(uuid)
        if smi is not None:
            check(abs(smi["power.limit"] - cap / 1000) < 0.5, f"nvidia-smi agrees: {smi}")
        try:
            devices.set_limit_mw(uuid, high + 1000)
            check(False, f"{(high + 1000) / 1000} W (1 W over the max) was refused")
        except pynvml.NVMLError_InvalidArgument:
            check(True, f"{(high + 1000) / 1000} W (1 W over the max) refused with NVMLError_InvalidArgument")
    except pynvml.NVMLError_NoPermission:
        check(False, "permission to set the limit (run as root; in a container add CAP_SYS_ADMIN)")
    finally:
        try:
            devices.set_limit_mw(uuid, found)
        except pynvml.NVMLError as err:
            print(f"  could not restore {found / 1000} W: {err}")
    check(devices.management_limit_mw(uuid) == found, f"restored the limit found, {found / 1000} W")
    if not args.skip_agent and not failures:
        agent_pass(devices, uuid, default)
        if found != default:
            devices.set_limit_mw(uuid, found)  # the agent restores the default; put back what was there
    devices.close()
    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
