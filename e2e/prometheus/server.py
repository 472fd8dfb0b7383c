"""Start Debian's ``/usr/bin/prometheus`` on 127.0.0.1 for a test, with file-based discovery.

The server gets a free port, its own ``--storage.tsdb.path`` and configuration in a work folder,
a short scrape interval, and one scrape job whose targets come from a ``file_sd_configs`` JSON
file that ``set_targets`` rewrites (Prometheus re-reads it on change). Targets can carry the
``__meta_kubernetes_*`` labels that Kubernetes pod discovery would give (``pod_target``), so the
job's ``relabel_configs`` can be the very ones of ``examples/monitoring/`` and the tests exercise
the shipped relabelling. Nothing here touches the package's systemd unit or its default port:
the server is a child process of the test and stops with it.

Run ``python -m e2e.prometheus.server`` to check that it starts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import requests
import yaml

from e2e.ports import free_port

PROMETHEUS_BIN = Path(os.environ.get("LLMFLEET_PROMETHEUS", "/usr/bin/prometheus"))
REQUIRE_ENV = "LLMFLEET_REQUIRE_PROMETHEUS"
"""set to 1 (``.ci/run`` does) to make tests fail rather than skip when Prometheus is missing"""


class PrometheusUnavailable(RuntimeError):
    """The binary is missing; the message says how to install it."""


def _label_name(k8s_key: str) -> str:
    """Kubernetes label/annotation key -> Prometheus name part, as kubernetes_sd does (every
    character outside [a-zA-Z0-9_] becomes ``_``)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", k8s_key)


def pod_target(address: str, namespace: str, pod: str, labels: Mapping[str, str],
               annotations: Mapping[str, str] | None = None, port_name: str | None = None,
               port_number: int | None = None) -> dict[str, Any]:
    """A file_sd target group carrying the meta labels of Kubernetes pod discovery
    (``__meta_kubernetes_namespace``, ``_pod_name``, ``_pod_label_<name>``,
    ``_pod_labelpresent_<name>``, ``_pod_annotation_<name>``, ``_pod_annotationpresent_<name>``,
    and the container port's ``_pod_container_port_name``/``_number`` when given)."""
    meta = {"__meta_kubernetes_namespace": namespace, "__meta_kubernetes_pod_name": pod}
    if port_name is not None:
        meta["__meta_kubernetes_pod_container_port_name"] = port_name
    if port_number is not None:
        meta["__meta_kubernetes_pod_container_port_number"] = str(port_number)
    for k, v in labels.items():
        meta[f"__meta_kubernetes_pod_label_{_label_name(k)}"] = v
        meta[f"__meta_kubernetes_pod_labelpresent_{_label_name(k)}"] = "true"
    for k, v in (annotations or {}).items():
        meta[f"__meta_kubernetes_pod_annotation_{_label_name(k)}"] = v
        meta[f"__meta_kubernetes_pod_annotationpresent_{_label_name(k)}"] = "true"
    return {"targets": [address], "labels": meta}


class PrometheusServer:
    """One Prometheus process for a test.

    Args:
        workdir: folder for config, targets files, TSDB and log (a temp folder if None).
        scrape_interval_s: global scrape and evaluation interval, s.
        jobs: scrape jobs, name -> extra job settings (``relabel_configs``, ``metric_relabel_configs``,
            ``honor_labels``);
            each gets its own file_sd targets file. Default: one job ``targets`` as is.

    Raises:
        PrometheusUnavailable: the binary is missing.
    """

    def __init__(self, workdir: Path | None = None, scrape_interval_s: float = 1.0,
                 jobs: Mapping[str, Mapping[str, Any]] | None = None):
        if not PROMETHEUS_BIN.is_file():
            raise PrometheusUnavailable(
                f"{PROMETHEUS_BIN} not found: install Debian's prometheus package "
                "(apt-get install -y prometheus) or set LLMFLEET_PROMETHEUS")
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="llmfleet-prom-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.scrape_interval_s = scrape_interval_s
        jobs = dict(jobs or {"targets": {}})
        self.targets_files = {job: self.workdir / f"targets-{job}.json" for job in jobs}
        for f in self.targets_files.values():
            f.write_text("[]")
        self.config_file = self.workdir / "prometheus.yml"
        interval = f"{int(scrape_interval_s * 1000)}ms"
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval,
                       "scrape_timeout": f"{int(scrape_interval_s * 800)}ms"},
            "scrape_configs": [{
                "job_name": job,
                **{k: v for k, v in settings.items() if k in ("relabel_configs", "metric_relabel_configs", "honor_labels")},
                "file_sd_configs": [{"files": [str(self.targets_files[job])], "refresh_interval": "1s"}],
            } for job, settings in jobs.items()],
        }
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> "PrometheusServer":
        """Start and wait until ``/-/ready`` answers 200. Raises RuntimeError on failure (with the
        log's tail)."""
        log = open(self.workdir / "prometheus.log", "ab")
        self.proc = subprocess.Popen(
            [str(PROMETHEUS_BIN), f"--config.file={self.config_file}",
             f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1d", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout_s:.0f}s: {self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s. The TSDB stays, so ``start()`` can resume on it."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def set_targets(self, groups: Iterable[dict[str, Any]], job: str | None = None) -> None:
        """Replace the discovered targets (file_sd target groups) of ``job`` (the only job when
        None), atomically."""
        if job is None:
            if len(self.targets_files) != 1:
                raise ValueError(f"name the job: one of {sorted(self.targets_files)}")
            job = next(iter(self.targets_files))
        path = self.targets_files[job]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(list(groups)))
        tmp.replace(path)

    def query(self, promql: str) -> list[dict]:
        """An instant query straight over HTTP (for test set-up; llmfleet reads through
        prometheus-api-client)."""
        r = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        r.raise_for_status()
        return r.json()["data"]["result"]

    def active_targets(self) -> list[dict]:
        r = requests.get(f"{self.url}/api/v1/targets", params={"state": "active"}, timeout=5)
        r.raise_for_status()
        return r.json()["data"]["activeTargets"]

    def log_tail(self, n_chars: int = 3000) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace")[-n_chars:] if path.exists() else ""

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "PrometheusServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    with PrometheusServer() as p:
        print(f"prometheus ready at {p.url} (work folder {p.workdir})")


def server_for_tests(workdir: Path, **kwargs) -> Iterator[PrometheusServer]:
    """A started ``PrometheusServer(workdir, **kwargs)`` for a pytest fixture to ``yield from``,
    stopped afterwards. Without the ``prometheus`` binary the test is skipped, or fails where
    ``REQUIRE_ENV`` is set (CI installs Prometheus, so there a skip would hide a missing step)."""
    import pytest

    try:
        server = PrometheusServer(workdir, **kwargs)
    except PrometheusUnavailable as err:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(str(err))
        pytest.skip(str(err))
    server.start()
    try:
        yield server
    finally:
        server.stop()
