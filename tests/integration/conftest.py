"""Fixtures for tests on a real Kubernetes control plane (e2e/controlplane): a fresh cluster per
test with the CRDs installed, fake GPU nodes, a fake kubelet, and the operator running as its own
process under exactly the RBAC rules of ``llmfleet.operator.rbac`` (authenticated as its
ServiceAccount, as it would be in a pod)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from e2e.controlplane.localcluster import ControlPlaneUnavailable, FakeKubelet, LocalCluster
from llmfleet.operator.conditions import condition
from llmfleet.operator.rbac import cluster_role, cluster_role_binding

REPO = Path(__file__).resolve().parents[2]
OPERATOR_NS, OPERATOR_SA = "llmfleet-system", "llmfleet-operator"


def wait_until(fn, timeout_s: float = 60.0, what: str = "condition", interval_s: float = 0.2):
    """Poll ``fn`` until it returns a truthy value; return it. Fails the test on timeout."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}; last value: {last!r}")


class Cluster:
    """A started LocalCluster plus kubectl-level helpers used by the tests."""

    def __init__(self, lc: LocalCluster):
        self.lc = lc

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None, kubeconfig: Path | None = None):
        return self.lc.kubectl(*args, check=check, stdin=stdin, kubeconfig=kubeconfig)

    def apply(self, docs: str | list[dict], check: bool = True):
        text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs)
        return self.kubectl("apply", "-f", "-", stdin=text, check=check)

    def get_json(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def deployments(self, namespace: str = "default") -> dict[str, dict]:
        return {d["metadata"]["name"]: d for d in self.get_json("deployments", "-n", namespace)["items"]}

    def pods(self, namespace: str = "default", selector: str | None = None) -> list[dict]:
        args = ["pods", "-n", namespace] + (["-l", selector] if selector else [])
        return self.get_json(*args)["items"]

    def workload(self, name: str, namespace: str = "default") -> dict:
        return self.get_json("llmworkload", name, "-n", namespace)

    def condition(self, obj: dict, type_: str) -> dict | None:
        return condition((obj.get("status") or {}).get("conditions"), type_)

    def nodes_by_name(self) -> dict[str, dict]:
        return {n["metadata"]["name"]: n for n in self.get_json("nodes")["items"]}


class OperatorProcess:
    """``llmfleet operator`` as a child process, with its log in the cluster's workdir."""

    def __init__(self, kubeconfig: Path, workdir: Path, trace_dir: Path, extra_args: tuple[str, ...] = ()):
        self.kubeconfig, self.workdir, self.trace_dir = kubeconfig, workdir, trace_dir
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> "OperatorProcess":
        self.starts += 1
        log = open(self.workdir / f"operator-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmfleet.cli", "operator", "--kubeconfig", str(self.kubeconfig),
             "--trace-dir", str(self.trace_dir), "--debounce-seconds", "0.5",
             # no /metrics unless a test asks (extra_args win): operators started side by side
             # would otherwise contend for one port
             "--metrics-port", "0", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    def kill(self) -> None:
        """SIGKILL: no clean-up, as when a node dies or the OOM killer strikes."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return "\n".join((self.workdir / f"operator-{i}.log").read_text(errors="replace")
                         for i in range(1, self.starts + 1))


@pytest.fixture
def cluster_bare(tmp_path):
    """A fresh control plane with a fake kubelet and nothing installed."""
    try:
        lc = LocalCluster(tmp_path / "k8s")
    except ControlPlaneUnavailable as err:
        if os.environ.get("LLMFLEET_REQUIRE_CONTROL_PLANE"):
            pytest.fail(str(err))
        pytest.skip(str(err))
    lc.start()
    kubelet = FakeKubelet(lc.api_client()).start()
    try:
        yield Cluster(lc)
    finally:
        kubelet.stop()
        lc.stop()


@pytest.fixture
def cluster(cluster_bare):
    """A fresh control plane with the llmfleet CRDs and the operator's ServiceAccount and RBAC."""
    c = cluster_bare
    c.kubectl("apply", "-f", str(REPO / "crds"))
    wait_until(lambda: c.kubectl("get", "llmworkloads", check=False).returncode == 0, 30, "CRDs served")
    c.kubectl("create", "namespace", OPERATOR_NS)
    c.kubectl("create", "serviceaccount", "-n", OPERATOR_NS, OPERATOR_SA)
    c.apply([cluster_role(), cluster_role_binding(OPERATOR_NS, OPERATOR_SA)])
    return c


@pytest.fixture
def operator(cluster, tmp_path):
    """The operator, started; authenticated as its ServiceAccount (token from the token controller)."""
    kc = cluster.lc.service_account_kubeconfig(OPERATOR_NS, OPERATOR_SA, tmp_path / "operator.kubeconfig")
    op = OperatorProcess(kc, tmp_path, REPO / "examples").start()
    yield op
    op.stop()
    if os.environ.get("LLMFLEET_SHOW_OPERATOR_LOG"):
        print(op.log()[-20000:])
