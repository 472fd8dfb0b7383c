"""A real Kubernetes 1.20 control plane on loopback, for tests and the operator quickstart.

Starts Debian's ``etcd``, then ``kube-apiserver``, ``kube-controller-manager`` and
``kube-scheduler`` built by ``e2e/controlplane/build.sh`` (DESIGN.md §9), with TLS from a
throw-away CA, static-token authentication and RBAC. No kubelet runs: ``FakeKubelet`` marks pods
the real scheduler bound Running and Ready and finishes their deletion, and ``add_gpu_node``
creates Node objects that advertise ``nvidia.com/gpu`` the way the NVIDIA device plugin does.

Run ``python -m e2e.controlplane.localcluster`` to keep one up for manual use (it prints the
KUBECONFIG to export) and stop it with Ctrl-C.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from e2e.ports import free_port

DEFAULT_BIN_DIR = Path(os.environ.get("LLMFLEET_K8S_BIN", Path.home() / ".cache/llmfleet/kubernetes-1.20.2/bin"))
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
BUILD_SCRIPT = Path(__file__).with_name("build.sh")


class ControlPlaneUnavailable(RuntimeError):
    """The binaries (or etcd) are missing; the message says how to get them."""


def missing_components(bin_dir: Path = DEFAULT_BIN_DIR) -> list[str]:
    """Names of the binaries not found (empty when the control plane can start)."""
    missing = [b for b in BINARIES if not (bin_dir / b).is_file()]
    if shutil.which("etcd") is None:
        missing.append("etcd (Debian package etcd-server)")
    return missing


def _run(cmd: list[str], cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class User:
    name: str
    token: str
    groups: tuple[str, ...] = ()


class LocalCluster:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler on 127.0.0.1.

    Attributes:
        workdir: folder holding certificates, kubeconfigs, etcd data and component logs.
        server: ``https://127.0.0.1:<port>`` of the API server.
        admin_kubeconfig: kubeconfig of a ``system:masters`` user.
    """

    ADMIN = User("admin", "admin-token-llmfleet", ("system:masters",))
    CONTROLLER_MANAGER = User("system:kube-controller-manager", "kcm-token-llmfleet")
    SCHEDULER = User("system:kube-scheduler", "sched-token-llmfleet")

    def __init__(self, workdir: Path | None = None, bin_dir: Path = DEFAULT_BIN_DIR):
        missing = missing_components(bin_dir)
        if missing:
            raise ControlPlaneUnavailable(
                f"missing {', '.join(missing)} in {bin_dir}; run `bash {BUILD_SCRIPT}` (about 10 minutes once)"
            )
        self.bin_dir = bin_dir
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="llmfleet-k8s-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.admin_kubeconfig = self.workdir / "admin.kubeconfig"
        self.audit_log = self.workdir / "audit.log"
        self._procs: dict[str, subprocess.Popen] = {}

    # ---------------------------------------------------------------- certificates and kubeconfigs
    def _pki(self) -> None:
        d = self.workdir
        _run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=llmfleet-test-ca",
              "-keyout", "ca.key", "-out", "ca.crt"], d)
        _run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
              "-keyout", "apiserver.key", "-out", "apiserver.csr"], d)
        (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n")
        _run(["openssl", "x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
              "-days", "2", "-extfile", "san.ext", "-out", "apiserver.crt"], d)
        _run(["openssl", "genrsa", "-out", "sa.key", "2048"], d)
        _run(["openssl", "rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"], d)
        users = (self.ADMIN, self.CONTROLLER_MANAGER, self.SCHEDULER)
        (d / "tokens.csv").write_text("".join(
            f'{u.token},{u.name},{u.name},"{",".join(u.groups)}"\n' for u in users))

    def kubeconfig(self, path: Path, user: str, token: str, namespace: str = "default") -> Path:
        """Write a kubeconfig that authenticates with a bearer token; return its path."""
        cfg = {
            "apiVersion": "v1", "kind": "Config", "current-context": "local",
            "clusters": [{"name": "local", "cluster": {"server": self.server,
                                                       "certificate-authority": str(self.workdir / "ca.crt")}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user, "namespace": namespace}}],
        }
        path.write_text(yaml.safe_dump(cfg))
        return path

    # ---------------------------------------------------------------- processes
    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")
        self._procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                             start_new_session=True)

    def audit_events(self, username: str) -> list[dict]:
        """Audit events (``audit.k8s.io/v1`` Event, stage ResponseStarted or ResponseComplete) of requests by ``username``
        that the audit policy records (service accounts of namespace ``llmfleet-system``)."""
        if not self.audit_log.exists():
            return []
        out = []
        for line in self.audit_log.read_text(errors="replace").splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            # a watch is logged when its response starts (it completes only when closed)
            if e.get("user", {}).get("username") == username and e.get("stage") in ("ResponseStarted", "ResponseComplete"):
                out.append(e)
        return out

    def _check_alive(self) -> None:
        for name, p in self._procs.items():
            if p.poll() is not None:
                tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {p.returncode}:\n{tail}")

    def start(self, timeout_s: float = 60.0) -> "LocalCluster":
        """Start all components and wait until the API server is ready and the default
        ServiceAccount exists. Raises RuntimeError (with the component's log tail) on failure,
        after stopping whatever it had started (an etcd left behind would outlive the test)."""
        try:
            return self._start(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout_s: float) -> "LocalCluster":
        """``start``'s work: etcd, kube-apiserver, kube-controller-manager, kube-scheduler."""
        d = self.workdir
        self._pki()
        etcd_port, peer_port = free_port(), free_port()
        etcd_url, peer_url = f"http://127.0.0.1:{etcd_port}", f"http://127.0.0.1:{peer_port}"
        self._spawn("etcd", ["etcd", "--data-dir", str(d / "etcd"), "--listen-client-urls", etcd_url,
                             "--advertise-client-urls", etcd_url, "--listen-peer-urls", peer_url,
                             "--initial-advertise-peer-urls", peer_url, "--initial-cluster", f"default={peer_url}",
                             "--unsafe-no-fsync"])
        b = self.bin_dir
        # requests of service accounts in the operator's namespaces, at Metadata level: the tests
        # compare the verbs the operator really uses with the ClusterRole it is granted
        (d / "audit-policy.yaml").write_text(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n"
            "- level: Metadata\n  userGroups: [system:serviceaccounts:llmfleet-system]\n- level: None\n")
        self._spawn("kube-apiserver", [
            str(b / "kube-apiserver"), f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1", f"--secure-port={self.port}", "--insecure-port=0",
            f"--cert-dir={d}", f"--tls-cert-file={d / 'apiserver.crt'}", f"--tls-private-key-file={d / 'apiserver.key'}",
            f"--client-ca-file={d / 'ca.crt'}", f"--token-auth-file={d / 'tokens.csv'}", "--authorization-mode=RBAC",
            f"--service-account-key-file={d / 'sa.pub'}", f"--service-account-signing-key-file={d / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc", "--service-cluster-ip-range=10.96.0.0/16",
            "--endpoint-reconciler-type=none", "--allow-privileged=true", "--profiling=false",
            f"--audit-policy-file={d / 'audit-policy.yaml'}", f"--audit-log-path={self.audit_log}",
        ])
        self.kubeconfig(self.admin_kubeconfig, self.ADMIN.name, self.ADMIN.token)
        self._wait_ready(timeout_s)
        kcm = self.kubeconfig(d / "kcm.kubeconfig", "kcm", self.CONTROLLER_MANAGER.token, "kube-system")
        sched = self.kubeconfig(d / "sched.kubeconfig", "sched", self.SCHEDULER.token, "kube-system")
        # nodelifecycle is off: no kubelet sends heartbeats, and the fake nodes must stay Ready
        self._spawn("kube-controller-manager", [
            str(b / "kube-controller-manager"), f"--kubeconfig={kcm}", "--leader-elect=false", "--port=0",
            "--secure-port=0", f"--service-account-private-key-file={d / 'sa.key'}", f"--root-ca-file={d / 'ca.crt'}",
            "--controllers=*,-nodelifecycle", "--use-service-account-credentials=true", "--concurrent-deployment-syncs=10", "--concurrent-gc-syncs=10",
        ])
        self._spawn("kube-scheduler", [str(b / "kube-scheduler"), f"--kubeconfig={sched}", "--leader-elect=false",
                                       "--port=0", "--secure-port=0"])
        self._wait_for(lambda: self.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
                       timeout_s, "the default ServiceAccount (token controller)")
        return self

    def _wait_for(self, ok, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            if ok():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}; logs in {self.workdir}")

    def _wait_ready(self, timeout_s: float) -> None:
        self._wait_for(lambda: self.kubectl("get", "--raw", "/readyz", check=False).returncode == 0,
                       timeout_s, "kube-apiserver /readyz")

    def stop(self) -> None:
        """Stop every component (SIGTERM, then SIGKILL after 10 s)."""
        for p in reversed(list(self._procs.values())):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self._procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self._procs.clear()

    # ---------------------------------------------------------------- helpers
    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None,
                kubeconfig: Path | None = None) -> subprocess.CompletedProcess:
        """Run the kubectl built with the control plane (1.20.2) against this cluster."""
        env = {**os.environ, "KUBECONFIG": str(kubeconfig or self.admin_kubeconfig)}
        res = subprocess.run([str(self.bin_dir / "kubectl"), *args], input=stdin, capture_output=True, text=True,
                             env=env)
        if check and res.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {res.stderr.strip()}")
        return res

    def add_gpu_node(self, name: str, product: str, gpus: int, labels: dict[str, str] | None = None) -> None:
        """Create a Ready Node that advertises ``gpus`` ``nvidia.com/gpu`` with label
        ``nvidia.com/gpu.product=<product>`` (what the NVIDIA device plugin and GPU feature
        discovery publish), 64 CPUs and 512 GiB."""
        from kubernetes import client

        api = client.CoreV1Api(self.api_client())
        node = client.V1Node(metadata=client.V1ObjectMeta(
            name=name, labels={"kubernetes.io/hostname": name, "nvidia.com/gpu.product": product,
                               "nvidia.com/gpu.count": str(gpus), **(labels or {})}))
        api.create_node(node)
        resources = {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        api.patch_node_status(name, {"status": {
            "capacity": resources, "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "fake kubelet",
                            "lastHeartbeatTime": now, "lastTransitionTime": now}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        }})
        # The TaintNodesByCondition admission plugin taints every new node not-ready; the node
        # lifecycle controller would lift it on the first heartbeat, but it is off here.
        api.patch_node(name, {"spec": {"taints": None}})

    def api_client(self, kubeconfig: Path | None = None):
        """A kubernetes.client.ApiClient for this cluster (admin unless ``kubeconfig`` is given)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(kubeconfig or self.admin_kubeconfig))

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path) -> Path:
        """A kubeconfig that authenticates as ServiceAccount ``namespace/name`` with its token
        (the Secret the token controller creates), as a pod of that account would."""
        from kubernetes import client

        api = client.CoreV1Api(self.api_client())
        token = None

        def have_token() -> bool:
            nonlocal token
            sa = api.read_namespaced_service_account(name, namespace)
            for ref in sa.secrets or []:
                secret = api.read_namespaced_secret(ref.name, namespace)
                if secret.type == "kubernetes.io/service-account-token" and secret.data and "token" in secret.data:
                    token = base64.b64decode(secret.data["token"]).decode()
                    return True
            return False

        self._wait_for(have_token, 30, f"a token for ServiceAccount {namespace}/{name}")
        return self.kubeconfig(path, f"system:serviceaccount:{namespace}:{name}", token, namespace)

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class FakeKubelet:
    """Stands in for the kubelets of fake GPU nodes: marks every pod the scheduler bound Running
    and Ready (so Deployments become Available) and completes graceful deletions (so preemption
    and scale-down finish). Runs in a background thread, polling every ``interval_s``."""

    def __init__(self, api_client, interval_s: float = 0.3):
        from kubernetes import client

        self.api = client.CoreV1Api(api_client)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fake-kubelet", daemon=True)

    def start(self) -> "FakeKubelet":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        from kubernetes.client.exceptions import ApiException

        while not self._stop.is_set():
            try:
                self.sync_once()
            except ApiException:
                pass  # a pod changed under us; the next round sees the new state
            except Exception:  # the API server is stopping
                if self._stop.is_set():
                    return
            self._stop.wait(self.interval_s)

    def sync_once(self) -> None:
        """One pass over all pods."""
        from kubernetes.client.exceptions import ApiException

        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for pod in self.api.list_pod_for_all_namespaces().items:
            ns, name = pod.metadata.namespace, pod.metadata.name
            if pod.metadata.deletion_timestamp is not None:
                try:
                    self.api.delete_namespaced_pod(name, ns, grace_period_seconds=0)
                except ApiException as err:
                    if err.status != 404:
                        raise
                continue
            if not pod.spec.node_name or pod.status.phase == "Running":
                continue
            conds = [{"type": t, "status": "True", "lastTransitionTime": now}
                     for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")]
            statuses = [{"name": c.name, "ready": True, "restartCount": 0, "image": c.image, "imageID": "",
                         "started": True, "state": {"running": {"startedAt": now}}} for c in pod.spec.containers]
            self.api.patch_namespaced_pod_status(name, ns, {"status": {
                "phase": "Running", "conditions": conds, "containerStatuses": statuses,
                "hostIP": "127.0.0.1", "podIP": "10.244.0.1", "startTime": now}})


EXAMPLE_NODES = [("a10g", "NVIDIA-A10G", 4, 2), ("l4", "NVIDIA-L4", 8, 1), ("l40s", "NVIDIA-L40S", 8, 2),
                 ("a100", "NVIDIA-A100-SXM4-80GB", 8, 1), ("h100", "NVIDIA-H100-80GB-HBM3", 8, 2)]
"""(name prefix, nvidia.com/gpu.product, GPUs per node, nodes): fake nodes for examples/gpupools.yaml"""


def main(argv: list[str] | None = None) -> int:
    """Keep a local control plane with fake GPU nodes running until Ctrl-C or SIGTERM."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m e2e.controlplane.localcluster", description=main.__doc__)
    ap.add_argument("--workdir", type=Path, help="folder for certificates, kubeconfigs, etcd data and logs")
    ap.add_argument("--example-nodes", action="store_true", help="add fake GPU nodes for examples/gpupools.yaml")
    ap.add_argument("--gpu-node", action="append", default=[], metavar="NAME:PRODUCT:GPUS",
                    help="add a fake node, e.g. l4-0:NVIDIA-L4:8 (repeatable)")
    args = ap.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cluster = LocalCluster(args.workdir).start()
    kubelet = FakeKubelet(cluster.api_client()).start()
    try:
        nodes = [(f"{prefix}-{i}", product, gpus) for prefix, product, gpus, count in
                 (EXAMPLE_NODES if args.example_nodes else []) for i in range(count)]
        nodes += [(n, p, int(g)) for n, p, g in (spec.split(":") for spec in args.gpu_node)]
        for name, product, gpus in nodes:
            cluster.add_gpu_node(name, product, gpus)
        print(f"control plane up with {len(nodes)} fake GPU nodes; logs in {cluster.workdir}")
        print(f"export KUBECONFIG={cluster.admin_kubeconfig}", flush=True)
        stop.wait()
    finally:
        kubelet.stop()
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
