"""High availability and shutdown on a real control plane: two ``llmfleet operator --leader-elect``
processes, each authenticated as its own ServiceAccount (so the API server's audit log tells
their requests apart), elect one leader with a ``coordination.k8s.io/v1`` Lease.

Timing of the election in these tests: lease 4 s, renew deadline 3 s, retry 1 s (the smallest the
Kubernetes client accepts: retry >= 1 s, renew deadline > 1.2 x retry, lease > renew deadline), so a
standby must hold the Lease at most 4 + 1 = 5 s after the leader's last renewal.
"""

from __future__ import annotations

import re
import signal
import time

from llmfleet.operator.rbac import cluster_role_binding, lease_role, role_binding

from .audit import describe, writes
from .conftest import OPERATOR_NS, REPO, OperatorProcess, wait_until

LEASE_S, RENEW_S, RETRY_S = 4, 3, 1
ELECTION = ("--leader-elect", "--leader-election-namespace", OPERATOR_NS, "--lease-duration-seconds", str(LEASE_S),
            "--renew-deadline-seconds", str(RENEW_S), "--retry-period-seconds", str(RETRY_S))
SLACK_S = 2.0
"""Allowance on the time bounds for process scheduling on the 2 shared cores the tests run on"""
WRITES_STOP_S = 0.5
"""how soon after SIGTERM the operator's writes must have stopped, s"""

POLICY = {"apiVersion": "llmfleet.dev/v1alpha1", "kind": "FleetPolicy", "metadata": {"name": "default"},
          "spec": {"tenancy": {"rules": [{"namespaces": ["default"], "tiers": ["critical", "high", "standard", "low"]}]},
                   "routing": {"mode": "service"}}}
POOL = """
apiVersion: llmfleet.dev/v1alpha1
kind: GPUPool
metadata: {name: l4}
spec: {gpuType: L4, gpusPerNode: 8, maxGPUs: 64, autoscaled: true, nodeSelector: {nvidia.com/gpu.product: NVIDIA-L4}}
"""
"""autoscaled: these tests count Deployments and writes, not pods; one node does not bound the plan"""
WORKLOAD = """
apiVersion: llmfleet.dev/v1alpha1
kind: LLMWorkload
metadata: {name: NAME, namespace: default}
spec:
  model: meta-llama/Llama-3.1-8B-Instruct
  traffic: {requestRatePerSecond: RATE, inputTokens: {p50: 200, p90: 400, p99: 800},
            outputTokens: {p50: 100, p90: 200, p99: 300}}
  slo: {ttft: 2s, tpot: 150ms}
  priority: high
  serving: {tensorParallelSizes: [1], disaggregation: never}
"""


def workload(name: str, rate: float) -> str:
    return WORKLOAD.replace("NAME", name).replace("RATE", str(rate))


def sa_name(i: int) -> str:
    return f"llmfleet-operator-{'ab'[i]}"


def start_replicas(cluster, tmp_path, extra: tuple[str, ...] = ()) -> list[OperatorProcess]:
    """Two operator replicas with their own ServiceAccounts, bound to the operator's ClusterRole and
    to the Lease Role; the first is started first and becomes the leader."""
    cluster.apply([lease_role(OPERATOR_NS)])
    procs = []
    for i in range(2):
        sa = sa_name(i)
        cluster.kubectl("create", "serviceaccount", "-n", OPERATOR_NS, sa)
        cluster.apply([cluster_role_binding(OPERATOR_NS, sa, name=f"llmfleet-operator-{sa}") |
                       {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                    "name": "llmfleet-operator"}},
                       role_binding(OPERATOR_NS, OPERATOR_NS, sa, name=f"leader-election-{sa}") |
                       {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                    "name": "llmfleet-operator-leader-election"}}])
        workdir = tmp_path / sa
        workdir.mkdir()
        kc = cluster.lc.service_account_kubeconfig(OPERATOR_NS, sa, workdir / "kubeconfig")
        procs.append(OperatorProcess(kc, workdir, REPO / "examples", ELECTION + extra))
    procs[0].start()
    wait_until(lambda: "holds Lease" in procs[0].log(), 60, "the first replica to hold the Lease")
    procs[1].start()
    wait_until(lambda: "is a candidate" in procs[1].log(), 60, "the second replica to stand by")
    return procs


def identity(op: OperatorProcess) -> str:
    return re.search(r"leader election: (\S+) is a candidate", op.log()).group(1)


def holder(cluster) -> str | None:
    return cluster.get_json("lease", "llmfleet", "-n", OPERATOR_NS)["spec"].get("holderIdentity")


def sa_events(cluster, i: int) -> list[dict]:
    return cluster.lc.audit_events(f"system:serviceaccount:{OPERATOR_NS}:{sa_name(i)}")


def test_leader_killed_standby_takes_over_within_the_lease_and_stayed_quiet_before(cluster, tmp_path):
    cluster.lc.add_gpu_node("l4-0", "NVIDIA-L4", 8)
    cluster.apply([POLICY])
    leader, standby = start_replicas(cluster, tmp_path)
    try:
        assert holder(cluster) == identity(leader)
        cluster.apply(POOL + "---" + workload("chat-8b", 2))
        first = wait_until(lambda: cluster.deployments().get("chat-8b-l4-tp1"), 60, "the leader's Deployment")
        time.sleep(2 * RETRY_S)  # the standby had every chance to act

        # the standby wrote nothing: no child, no status, no event, not even a dry run
        quiet = writes(sa_events(cluster, 1), include_dry_run=True)
        assert not quiet, f"the standby wrote: {describe(quiet)}"
        assert writes(sa_events(cluster, 0)), "the leader's writes are in the audit log"
        assert holder(cluster) == identity(leader)

        # the leader dies without a word (SIGKILL: no release of the Lease)
        killed = time.time()
        leader.kill()
        wait_until(lambda: holder(cluster) == identity(standby), LEASE_S + RETRY_S + 10, "the standby to hold the Lease",
                   interval_s=0.05)
        takeover_s = time.time() - killed
        print(f"takeover after SIGKILL of the leader: {takeover_s:.2f}s (bound {LEASE_S + RETRY_S}s)")
        assert takeover_s <= LEASE_S + RETRY_S + SLACK_S

        # the new leader reconciles: a rate change reaches the Deployment, written by it
        cluster.apply(workload("chat-8b", 12))
        wait_until(lambda: cluster.deployments()["chat-8b-l4-tp1"]["spec"]["replicas"] > first["spec"]["replicas"],
                   60, "more replicas, planned by the new leader")
        mine = [e for e in writes(sa_events(cluster, 1)) if (e.get("objectRef") or {}).get("resource") == "deployments"]
        assert mine, "the new leader wrote the Deployment"
        assert "Handler" not in standby.log(), "kopf's per-handler lines stay below INFO"
    finally:
        standby.stop()
        leader.stop()


def test_sigterm_mid_apply_stops_writes_releases_the_lease_and_exits_in_time(cluster, tmp_path):
    cluster.lc.add_gpu_node("l4-0", "NVIDIA-L4", 8)
    cluster.apply([POLICY])
    shutdown_s = 10
    leader, standby = start_replicas(cluster, tmp_path, ("--shutdown-timeout-seconds", str(shutdown_s)))
    try:
        # 12 workloads: a reconcile of dozens of writes, so that SIGTERM lands in the middle of it
        cluster.apply(POOL + "---" + "---".join(workload(f"w{i:02d}", 1) for i in range(12)))
        wait_until(lambda: cluster.deployments(), 60, "the apply to start", interval_s=0.05)
        term = time.time()
        leader.proc.send_signal(signal.SIGTERM)
        at_term = len(cluster.deployments())
        code = leader.proc.wait(shutdown_s + 5)
        exited_s = time.time() - term
        wait_until(lambda: holder(cluster) == identity(standby), RETRY_S + 10, "the standby to hold the Lease",
                   interval_s=0.05)
        takeover_s = time.time() - term
        print(f"SIGTERM with {at_term}/12 Deployments written -> exit {exited_s:.2f}s (code {code}); "
              f"SIGTERM -> standby holds the Lease {takeover_s:.2f}s; "
              f"apply abandoned: {'reconcile abandoned' in leader.log()}")
        assert code == 0 and exited_s <= shutdown_s
        # a released Lease is taken within one retry period, not after the lease duration
        assert takeover_s <= exited_s + RETRY_S + SLACK_S
        # writes stop at once: none later than WRITES_STOP_S after SIGTERM (requests already past
        # their check, or on the wire, as the signal arrives may still land; on an idle machine
        # that is at most one, under CPU contention the main thread takes the signal a little later)
        events = sa_events(cluster, 0)
        print(f"writes in the {WRITES_STOP_S:g} s after SIGTERM: {describe(writes(events, since_s=term))}")
        late = writes(events, since_s=term + WRITES_STOP_S)
        assert not late, f"writes more than {WRITES_STOP_S:g} s after SIGTERM: {describe(late)}"
        assert "no more writes" in leader.log()
        # the new leader finishes the job: every workload gets its Deployment
        wait_until(lambda: len(cluster.deployments()) == 12, 90, "all 12 Deployments, by the new leader")
    finally:
        standby.stop()
        leader.stop()
