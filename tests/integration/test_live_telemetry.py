"""The operator planning from live telemetry, with real parts end to end: the real control plane
(e2e/controlplane), the operator process with ``--prometheus-url``, a real Prometheus (Debian's
package, e2e/prometheus) scraping emulated vLLM ``/metrics`` endpoints (e2e/vllm_emulator), one
per pod the operator's Deployment has, discovered with that pod's real labels and annotations
through the relabelling shipped in examples/monitoring/prometheus-scrape-config.yaml.

Scenarios of issue 16: (b) Prometheus stopped while demand falls: no scale-down until data
returns (and then one: the control that the test can fail); (c) constant load for many re-plan
intervals: no plan change; (e) a step up in load: the time until the Deployment asks for more
replicas.

Settings: scrape 1 s, rate window 10 s, re-plan interval 5 s, scale-down stabilisation and
cooldown 15 s each (short, so that a scale-down on missing data would show within the outage).
The replicas each rate needs are what ``llmfleet plan`` gives the same manifests with that rate
declared (``offline_replicas``: one L4 pool, 10% headroom); the operator, planning from the rate
it observes, must reach the same. One L4 replica of Llama-3.1-8B holds about 3 req/s of this mix
within the SLO: 2 req/s -> 1 replica, 5 req/s -> 2, 9 req/s -> 4 (3 while κ charged each prompt
an iteration of its own, 3.2 req/s a replica).
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
import requests
import yaml

from e2e.prometheus.server import PrometheusServer, pod_target, server_for_tests
from e2e.ports import free_port
from e2e.vllm_emulator import EmulatedPod

from .conftest import OPERATOR_NS, OPERATOR_SA, REPO, OperatorProcess, wait_until

SCRAPE_S, WINDOW_S, INTERVAL_S, STABILISE_S = 1.0, 10.0, 5, 15.0
NS, NAME = "default", "chat"
SELECTOR = f"llmfleet.dev/workload={NAME}"
PROMPT_TOKENS, OUTPUT_TOKENS, TTFT_S, ITL_S = 300, 100, 0.2, 0.03


def manifests(declared_rps: float, calibrate: bool = False, slo: dict | None = None,
              lengths: dict | None = None) -> list[dict]:
    """FleetPolicy, GPUPool and LLMWorkload of the scenarios. Calibration is off unless asked for:
    these endpoints report fixed latencies (``TTFT_S``, ``ITL_S``), not an engine's, and the
    scenarios here isolate demand (test_live_calibration.py runs a model-driven engine)."""
    policy = {"apiVersion": "llmfleet.dev/v1alpha1", "kind": "FleetPolicy", "metadata": {"name": "default"},
              "spec": {"replanIntervalSeconds": INTERVAL_S, "routing": {"mode": "service"}, "calibrate": calibrate,
                       "tenancy": {"rules": [{"namespaces": [NS], "tiers": ["high"]}]}}}
    pool = {"apiVersion": "llmfleet.dev/v1alpha1", "kind": "GPUPool", "metadata": {"name": "l4"},
            "spec": {"gpuType": "L4", "gpusPerNode": 8, "maxGPUs": 8,
                     "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"}}}
    wl = {"apiVersion": "llmfleet.dev/v1alpha1", "kind": "LLMWorkload", "metadata": {"name": NAME, "namespace": NS},
          "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct", "priority": "high",
                   "traffic": {"source": "observed", "requestRatePerSecond": declared_rps,
                               **(lengths or {"inputTokens": {"p50": 300, "p90": 400, "p99": 450},
                                              "outputTokens": {"p50": 100, "p90": 120, "p99": 125}})},
                   "slo": slo or {"ttft": "1s", "tpot": "100ms"},
                   "serving": {"tensorParallelSizes": [1], "disaggregation": "never"}}}
    return [policy, pool, wl]


class EmulatedFleet:
    """Emulated vLLM endpoints following the workload's pods in the cluster, traffic driven at a
    set rate, and a record of the Deployment's replicas over time (threads).

    ``request`` makes each request: (per-pod req/s now) -> (prompt tokens, output tokens, TTFT s,
    ITL s); by default fixed lengths and latencies. ``served`` records (monotonic s, TTFT s, ITL s)
    of every request completed."""

    def __init__(self, cluster, prom: PrometheusServer,
                 request: Callable[[float], tuple[int, int, float, float]] | None = None):
        from kubernetes import client

        api = cluster.lc.api_client()
        self.core, self.apps = client.CoreV1Api(api), client.AppsV1Api(api)
        self.prom = prom
        self.pods: dict[str, EmulatedPod] = {}
        self.rate_rps = 0.0
        self.request = request or (lambda _: (PROMPT_TOKENS, OUTPUT_TOKENS, TTFT_S, ITL_S))
        self.served: list[tuple[float, float, float]] = []
        self.replicas: list[tuple[float, int]] = []  # (monotonic s, Σ spec.replicas of the workload)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._sync, self._drive, self._watch)]

    def start(self) -> "EmulatedFleet":
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(10)
        for p in self.pods.values():
            p.stop()

    def _sync(self) -> None:
        while not self._stop.wait(1.0):
            try:
                live = {p.metadata.name: p for p in self.core.list_namespaced_pod(NS, label_selector=SELECTOR).items
                        if p.status.phase == "Running" and p.metadata.deletion_timestamp is None}
            except Exception:  # noqa: BLE001 (the API server is stopping at the end of the test)
                continue
            with self._lock:
                for name in [n for n in self.pods if n not in live]:
                    self.pods.pop(name).stop()
                for name in live:
                    if name not in self.pods:
                        self.pods[name] = EmulatedPod().start()
                targets = []
                for name, pod in live.items():
                    ann = dict(pod.metadata.annotations or {})
                    ann["prometheus.io/port"] = str(self.pods[name].port)  # the emulator listens elsewhere
                    targets.append(pod_target(self.pods[name].address, NS, name, pod.metadata.labels or {}, ann))
            self.prom.set_targets(targets)

    def _drive(self) -> None:
        """Complete requests at ``rate_rps`` (evenly spaced, round robin over the pods)."""
        due, i = time.monotonic(), 0
        while not self._stop.is_set():
            rate = self.rate_rps
            if rate <= 0:
                self._stop.wait(0.1)
                due = time.monotonic()
                continue
            due += 1.0 / rate
            wait = due - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)
            with self._lock:
                pods = list(self.pods.values())
            if pods:
                prompt, output, ttft, itl = self.request(rate / len(pods))
                pods[i % len(pods)].complete(prompt, output, ttft, itl)
                self.served.append((time.monotonic(), ttft, itl))
                i += 1

    def _watch(self) -> None:
        while not self._stop.wait(0.3):
            try:
                deps = self.apps.list_namespaced_deployment(NS, label_selector=SELECTOR).items
            except Exception:  # noqa: BLE001
                continue
            n = sum(d.spec.replicas or 0 for d in deps)
            if not self.replicas or self.replicas[-1][1] != n:
                self.replicas.append((time.monotonic(), n))

    def current(self) -> int:
        return self.replicas[-1][1] if self.replicas else 0

    def emulated(self) -> int:
        with self._lock:
            return len(self.pods)

    def decreases(self, since_s: float) -> list[tuple[int, int]]:
        """Replica decreases recorded after ``since_s`` (monotonic), as (from, to)."""
        out, prev = [], None
        for t, n in self.replicas:
            if prev is not None and t >= since_s and n < prev:
                out.append((prev, n))
            prev = n
        return out

    def changes(self, since_s: float) -> list[tuple[float, int]]:
        return [(t, n) for t, n in self.replicas if t >= since_s]


@pytest.fixture
def prom(tmp_path):
    cfg = yaml.safe_load((REPO / "examples/monitoring/prometheus-scrape-config.yaml").read_text())
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "llmfleet-vllm")
    yield from server_for_tests(tmp_path / "prom", scrape_interval_s=SCRAPE_S, jobs={"llmfleet-vllm": {
            k: v for k, v in job.items() if k in ("relabel_configs", "metric_relabel_configs")}})


@pytest.fixture
def live_operator(cluster, prom, tmp_path, monkeypatch):
    """The operator with telemetry on, its own /metrics port, and short windows for the test."""
    cluster.lc.add_gpu_node("l4-0", "NVIDIA-L4", 8)
    for k, v in {"LLMFLEET_TELEMETRY_SCRAPE_INTERVAL_SECONDS": SCRAPE_S, "LLMFLEET_TELEMETRY_WINDOW_SECONDS": WINDOW_S,
                 "LLMFLEET_TELEMETRY_STALE_INTERVALS": 5,  # 2 shared CPU cores: allow late scrapes
                 "LLMFLEET_SCALE_DOWN_STABILISATION_SECONDS": STABILISE_S,
                 "LLMFLEET_SCALE_DOWN_COOLDOWN_SECONDS": STABILISE_S}.items():
        monkeypatch.setenv(k, str(v))
    metrics_port = free_port()
    kc = cluster.lc.service_account_kubeconfig(OPERATOR_NS, OPERATOR_SA, tmp_path / "operator.kubeconfig")
    op = OperatorProcess(kc, tmp_path, REPO / "examples",
                         ("--prometheus-url", prom.url, "--metrics-port", str(metrics_port))).start()
    op.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    fleet = EmulatedFleet(cluster, prom).start()
    yield op, fleet
    fleet.stop()
    op.stop()
    if os.environ.get("LLMFLEET_SHOW_OPERATOR_LOG"):
        print(op.log()[-20000:])


def telemetry_condition(cluster) -> dict | None:
    return cluster.condition(cluster.workload(NAME, NS), "TelemetryStale")


@functools.cache
def offline_replicas(declared_rps: float) -> int:
    """The replicas ``llmfleet plan`` plans for ``manifests(declared_rps)``, no cluster involved
    (load_fleet, build_problem, solve: the CLI's path); solved once per rate for the module."""
    from llmfleet.api.loader import load_fleet
    from llmfleet.solver.milp import solve
    from llmfleet.solver.problem import build_problem

    with tempfile.TemporaryDirectory(prefix="live-offline-") as tmp:
        path = Path(tmp) / "fleet.yaml"
        path.write_text(yaml.safe_dump_all(manifests(declared_rps)))
        plan = solve(build_problem(load_fleet([path])))
    return sum(a.replicas for a in plan.assignments)


def fresh_and_settled(cluster, fleet, replicas: int) -> bool:
    """The plan asks for ``replicas``, every one has an emulated endpoint, telemetry is fresh."""
    c = telemetry_condition(cluster)
    return fleet.current() == replicas and fleet.emulated() == replicas and c is not None and c["status"] == "False"


def decisions(metrics_url: str) -> dict[tuple[str, str], float]:
    """(action, reason) -> count, from the operator's own /metrics."""
    text = requests.get(metrics_url, timeout=5).text
    out = {}
    for m in re.finditer(r'^llmfleet_decisions_total\{([^}]*)\} ([0-9.e+]+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        out[(labels["action"], labels["reason"])] = float(m.group(2))
    return out


def settle_at_9_rps_with_history(cluster, op, fleet) -> tuple[int, float]:
    """Drive 9 req/s until the replicas the offline plan gives it (``offline_replicas``) run with
    fresh telemetry and the forecaster has a history; returns (replicas, Hold/TelemetryUnknown
    decisions so far)."""
    want = offline_replicas(9.0)
    assert want > 1  # a scale-down must be possible
    fleet.rate_rps = 9.0
    cluster.apply(manifests(declared_rps=9.0))
    wait_until(lambda: fresh_and_settled(cluster, fleet, want), 90,
               f"{want} replicas for 9 req/s with fresh telemetry", interval_s=1.0)
    # a history for the forecaster: with fewer than 10 ratio samples it provisions for the
    # largest rate it has seen (forecast.SeasonalQuantileForecaster.min_samples)
    time.sleep(12 * INTERVAL_S)
    high = fleet.current()
    assert high == want
    return high, decisions(op.metrics_url).get(("Hold", "TelemetryUnknown"), 0)


def test_prometheus_outage_while_demand_falls_scales_nothing_down_until_data_returns(cluster, prom, live_operator):
    op, fleet = live_operator
    high, unknown_before = settle_at_9_rps_with_history(cluster, op, fleet)

    prom.stop()
    fleet.rate_rps = 1.0  # demand falls while nobody can see it
    t_out = time.monotonic()
    outage_s = 2 * STABILISE_S + 2 * INTERVAL_S  # beyond stabilisation + cooldown + two ticks
    stale = wait_until(lambda: (c := telemetry_condition(cluster)) and c["status"] == "True" and c, 30,
                       "TelemetryStale=True")
    time.sleep(max(0.0, outage_s - (time.monotonic() - t_out)))
    down_during_outage = fleet.decreases(t_out)
    held = decisions(op.metrics_url).get(("Hold", "TelemetryUnknown"), 0) - unknown_before
    print(f"outage {time.monotonic() - t_out:.0f}s: replicas {high} -> {fleet.current()}, "
          f"scale-downs {len(down_during_outage)}; TelemetryStale {stale['reason']}: {stale['message']}; "
          f"Hold/TelemetryUnknown decisions during the outage {held:.0f}")
    assert down_during_outage == []
    assert fleet.current() == high
    assert stale["reason"] == "PrometheusUnreachable"
    assert held >= 3  # the ticks ran and held

    # data returns: the fall is now seen and, after the stabilisation window, acted on (this
    # is what would have happened during the outage had missing data been read as low demand)
    t_back = time.monotonic()
    prom.start()
    wait_until(lambda: fleet.current() < high, 90, "a scale-down once telemetry is back", interval_s=1.0)
    print(f"after Prometheus returned: scale-down {high} -> {fleet.current()} in {time.monotonic() - t_back:.1f}s")
    assert telemetry_condition(cluster)["status"] == "False"


def test_constant_load_for_many_replan_intervals_changes_no_plan(cluster, live_operator):
    op, fleet = live_operator
    want = offline_replicas(5.0)
    fleet.rate_rps = 5.0
    cluster.apply(manifests(declared_rps=5.0))
    wait_until(lambda: fresh_and_settled(cluster, fleet, want), 90, f"{want} replicas with fresh telemetry",
               interval_s=1.0)
    time.sleep(WINDOW_S)  # the rate window now holds only steady traffic
    before = decisions(op.metrics_url)
    t0 = time.monotonic()
    intervals = 16
    time.sleep(intervals * INTERVAL_S)
    after = decisions(op.metrics_url)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    replans = sum(v for (action, _), v in delta.items() if action != "Hold")
    wl = cluster.workload(NAME, NS)["status"]
    events = [e for e in cluster.get_json("events", "-n", NS)["items"]
              if e["reason"] == "PlanChanged" and e["involvedObject"]["name"] == NAME]
    print(f"constant 5 req/s for {time.monotonic() - t0:.0f}s ({intervals} intervals): replica changes "
          f"{len(fleet.changes(t0))}, re-plan decisions {replans:.0f}, decisions {delta}; observed "
          f"{wl.get('observedDemandRps')} req/s, forecast {wl.get('forecastDemandRps')}, planned "
          f"{wl.get('demandRps')}, PlanChanged events in total {len(events)}")
    assert fleet.changes(t0) == []
    assert replans == 0
    assert sum(delta.values()) >= intervals * 0.6  # the ticks really ran (a reconcile can run late on 2 cores)
    assert 4.0 <= wl["observedDemandRps"] <= 6.0
    assert wl["observedTtftSeconds"] <= 0.25 and cluster.condition({"status": wl}, "SLOAtRisk")["status"] == "False"
    text = requests.get(op.metrics_url, timeout=5).text
    for series in ("llmfleet_reconcile_duration_seconds_count", "llmfleet_plan_cost_usd_per_hour",
                   "llmfleet_plan_gap_ratio", 'llmfleet_telemetry_age_seconds{namespace="default",workload="chat"}'):
        assert series in text


def test_step_up_in_load_raises_the_planned_replicas(cluster, live_operator):
    op, fleet = live_operator
    low, high = offline_replicas(2.0), offline_replicas(9.0)
    assert high > low
    fleet.rate_rps = 2.0
    cluster.apply(manifests(declared_rps=2.0))
    wait_until(lambda: fresh_and_settled(cluster, fleet, low), 90, f"{low} replica(s) with fresh telemetry",
               interval_s=1.0)
    time.sleep(3 * INTERVAL_S)  # a few ticks of steady history
    assert fleet.current() == low
    t0 = time.monotonic()
    fleet.rate_rps = 9.0
    wait_until(lambda: fleet.current() > low, 60, "more replicas after the step", interval_s=0.2)
    first = next(t for t, n in fleet.replicas if t >= t0 and n > low) - t0
    wait_until(lambda: fleet.current() >= high, 60, f"{high} replicas for 9 req/s", interval_s=0.2)
    full = next(t for t, n in fleet.replicas if t >= t0 and n >= high) - t0
    print(f"step 2 -> 9 req/s: first rise after {first:.1f}s, {high} replicas after {full:.1f}s "
          f"(scrape {SCRAPE_S:g}s, window {WINDOW_S:g}s, re-plan interval {INTERVAL_S}s); replicas {fleet.replicas}")
    assert full < 60
