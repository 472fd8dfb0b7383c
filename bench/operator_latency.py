"""Time from `kubectl apply -f examples/` to the planned children existing, on the local control
plane (e2e/controlplane), over several runs; prints each run and the median.

    python bench/operator_latency.py [--runs 5]

Each run applies the example LLMWorkloads to a cluster where the operator already runs (CRDs,
pools and policy in place), waits until every planned Deployment exists with its planned replica
count, then deletes the workloads and waits for garbage collection. The first apply includes the
capacity-model build for the trace-driven workload; later ones reuse the cached plan only when
the inputs are identical, which they are, so both figures are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from e2e.controlplane.localcluster import EXAMPLE_NODES, FakeKubelet, LocalCluster  # noqa: E402
from llmfleet.operator.render import deployment_name  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmfleet-bench-"))
    cluster = LocalCluster(work / "k8s").start()
    kubelet = FakeKubelet(cluster.api_client()).start()
    op = None
    try:
        for prefix, product, gpus, count in EXAMPLE_NODES:
            for i in range(count):
                cluster.add_gpu_node(f"{prefix}-{i}", product, gpus)
        cluster.kubectl("apply", "-f", str(REPO / "crds"))
        time.sleep(2)
        cluster.kubectl("apply", "-f", str(REPO / "examples/gpupools.yaml"), "-f", str(REPO / "examples/fleetpolicy.yaml"))
        plan = json.loads(subprocess.run([sys.executable, "-m", "llmfleet.cli", "plan", "-f", str(REPO / "examples"),
                                          "-o", "json", "--no-baseline"], capture_output=True, text=True,
                                         cwd=REPO).stdout)
        expected = {deployment_name(a["workload"].split("/")[1], a["pool"], a["tensorParallelSize"], a["role"]):
                    a["replicas"] for a in plan["assignments"]}
        log = open(work / "operator.log", "wb")
        op = subprocess.Popen([sys.executable, "-m", "llmfleet.cli", "operator", "--kubeconfig",
                               str(cluster.admin_kubeconfig), "--trace-dir", str(REPO / "examples"),
                               "--debounce-seconds", "0.5"], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        time.sleep(5)

        def children() -> dict[str, int]:
            items = json.loads(cluster.kubectl("get", "deployments", "-o", "json").stdout)["items"]
            return {d["metadata"]["name"]: d["spec"]["replicas"] for d in items}

        times = []
        for run in range(args.runs):
            t0 = time.monotonic()
            cluster.kubectl("apply", "-f", str(REPO / "examples/workloads.yaml"))
            while children() != expected:
                if time.monotonic() - t0 > 120:
                    raise RuntimeError(f"run {run}: children {children()} never matched {expected}")
                time.sleep(0.05)
            dt = time.monotonic() - t0
            times.append(dt)
            print(f"run {run + 1}: kubectl apply -> {len(expected)} planned Deployments in {dt:.2f}s", flush=True)
            cluster.kubectl("delete", "-f", str(REPO / "examples/workloads.yaml"))
            while children():
                time.sleep(0.2)
            time.sleep(1.0)
        print(f"median {statistics.median(times):.2f}s over {len(times)} runs "
              f"(min {min(times):.2f}s, max {max(times):.2f}s); debounce 0.5s included")
    finally:
        if op:
            op.terminate()
            op.wait(15)
        kubelet.stop()
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
