"""Series without the workload label reach ``FleetPolicy.status.telemetry`` (issue 16 item 5):
``LiveDemand`` keeps the last successful read's counts, targets and time, a failed read keeps
them, and the planner writes them (as the API server stores a JSON merge patch).

The first test runs a real Prometheus (``e2e/prometheus/server.py``, Debian's binary; skipped
where it is missing unless ``LLMFLEET_REQUIRE_PROMETHEUS`` is set) scraping emulated vLLM pods
through the shipped relabelling, with the helpers of ``tests/integration/test_telemetry.py``.
The others feed ``LiveDemand`` hand-built snapshots, at the boundary where a read enters it.
"""

from __future__ import annotations

import logging

import pytest

from e2e.prometheus.server import server_for_tests
from e2e.vllm_emulator import FINISH_REASONS, EmulatedPod
from llmfleet.api.models import FleetPolicyStatus, LLMWorkload
from llmfleet.operator.live import CHECKED_METRICS, LiveDemand
from llmfleet.operator.planner import FleetPlanner
from llmfleet.telemetry import metrics as m
from llmfleet.telemetry.client import Snapshot
from llmfleet.telemetry.reading import Reading, Unknown
from tests.integration.test_telemetry import SCRAPE_S, _jobs, _pod_labels, client, vllm_target, wait_scraped
from tests.test_live_demand import KEY, workload

LIVE_LOG = "llmfleet.operator.live"


class StatusStore:
    """Stands in for ``Kube`` where the planner writes a status: applies each patch as the API
    server applies a JSON merge patch (RFC 7386: maps merged key by key, null deletes, lists and
    scalars replaced) to the stored status, and counts the patches."""

    def __init__(self):
        self.status: dict = {}
        self.patches = 0

    def patch_status(self, kind, name, namespace, patch):
        self.status = _merge(self.status, patch)
        self.patches += 1

    def event(self, *args, **kwargs):
        pass


def _merge(target, patch):
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


def write_policy_status(planner: FleetPlanner, store: StatusStore) -> dict:
    """One ``_policy_status`` of the FleetPolicy named default (nothing planned), from the status
    stored so far; returns the stored status after the write, checked against the model."""
    raw = {"apiVersion": "llmfleet.dev/v1alpha1", "kind": "FleetPolicy",
           "metadata": {"name": "default", "generation": 1}, "status": store.status}
    planner._policy_status(raw, None, False, False, [], False, [], "dry-run")
    FleetPolicyStatus.model_validate(store.status)
    return store.status


def expected_series(**counts: int) -> dict[str, int]:
    return {name: counts.get(name, 0) for name in CHECKED_METRICS}


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LIVE_LOG and r.levelno == logging.WARNING]


# ------------------------------------------------------------------------- real Prometheus

def live_workload() -> LLMWorkload:
    """team-a/chat-8b (the workload the rendered pod labels of ``_pod_labels`` name), read live."""
    return LLMWorkload.model_validate({
        "apiVersion": "llmfleet.dev/v1alpha1", "kind": "LLMWorkload",
        "metadata": {"name": "chat-8b", "namespace": "team-a"},
        "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct",
                 "traffic": {"source": "observed", "requestRatePerSecond": 2,
                             "inputTokens": {"p50": 100, "p90": 200, "p99": 300},
                             "outputTokens": {"p50": 100, "p90": 200, "p99": 300}},
                 "slo": {"ttft": "1s", "tpot": "100ms"}}})


@pytest.fixture
def prom(tmp_path):
    # the jobs of tests/integration/test_telemetry.py: llmfleet's relabelling, plus a generic job
    # that scrapes vLLM pods without llmfleet's labels
    yield from server_for_tests(tmp_path / "prom", scrape_interval_s=SCRAPE_S, jobs=_jobs())


def test_a_vllm_pod_without_the_workload_label_is_counted_in_the_status_and_kept_through_an_outage(prom, caplog):
    caplog.set_level(logging.INFO, logger=LIVE_LOG)
    lab, ann = _pod_labels(2, "h100", "H100-SXM")
    pod, stray = EmulatedPod().start(), EmulatedPod().start()
    try:
        # one vLLM pod of the workload (llmfleet's job keeps its llmfleet.dev/workload label), one
        # that a generic job scrapes: the same vLLM series, without the workload label
        prom.set_targets([vllm_target(pod, "chat-8b-0", lab, ann)], job="llmfleet-vllm")
        prom.set_targets([{"targets": [stray.address], "labels": {"namespace": "other", "pod": "stray-0"}}],
                         job="other-pods")
        wait_scraped(prom, 2)
        live = LiveDemand(client(prom))
        store = StatusStore()
        planner = FleetPlanner(store, live=live)
        workloads = {"team-a/chat-8b": live_workload()}
        live.tick(workloads, lambda key: None, {}, 60.0, 0.1)
    finally:
        pod.stop(), stray.stop()
    assert live.snapshot.reachable.known

    tel = write_policy_status(planner, store)["telemetry"]
    # the stray pod's series, one per series vLLM exports (histograms by their _count): the
    # success counter has one per finished_reason; the pod of the workload adds nothing
    assert tel["unattributedSeries"] == expected_series(**{
        m.VLLM_RUNNING: 1, m.VLLM_WAITING: 1, m.VLLM_KV_CACHE_USAGE: 1, m.VLLM_REQUEST_SUCCESS: len(FINISH_REASONS),
        m.VLLM_PROMPT_LEN: 1, m.VLLM_GENERATION_LEN: 1, m.VLLM_TTFT: 1, m.VLLM_ITL: 1})
    assert tel["unattributedTargets"] == [f"{stray.address} other/stray-0"]
    assert tel["observedAt"].endswith("Z")
    assert len(warnings(caplog)) == 1 and m.VLLM_RUNNING + " 1" in warnings(caplog)[0]
    assert "stray-0" not in warnings(caplog)[0]  # pod names only in the status

    # Prometheus gone: the read fails, the figures (and their time) stay, nothing is logged anew
    prom.stop()
    caplog.clear()
    live.tick(workloads, lambda key: None, {}, 60.0, 0.1)
    assert live.snapshot.reachable.unknown is Unknown.UNREACHABLE
    before = store.patches
    assert write_policy_status(planner, store)["telemetry"] == tel
    assert store.patches == before  # unchanged status: no write
    assert warnings(caplog) == []


# ---------------------------------------------------------------- at LiveDemand's boundary

class SnapshotClient:
    """Stands in for ``TelemetryClient``: each ``snapshot`` returns the next prepared Snapshot."""

    def __init__(self, *snaps: Snapshot):
        self.quantiles = (0.9,)
        self.window_s = 60.0
        self.snaps = list(snaps)

    def snapshot(self, keys):
        return self.snaps.pop(0)


def read(at: float, series: dict[str, int], targets: tuple[str, ...] = ()) -> Snapshot:
    return Snapshot(at=at, workloads={}, reachable=Reading.of(1.0), unattributed=series, unattributed_targets=targets)


def failed(at: float) -> Snapshot:
    return Snapshot(at=at, workloads={}, reachable=Reading.missing(Unknown.QUERY_ERROR, "HTTP 503"))


def tick(live: LiveDemand) -> None:
    live.tick({KEY: workload("observed")}, lambda key: None, {}, 60.0, 0.1)


def test_figures_follow_successful_reads_only_and_the_log_follows_the_set_of_metrics(caplog):
    caplog.set_level(logging.INFO, logger=LIVE_LOG)
    live = LiveDemand(SnapshotClient(
        failed(0.0),
        read(60.0, {m.VLLM_RUNNING: 2}, ("10.0.0.7:8000 other/a", "10.0.0.8:8000 other/b")),
        read(120.0, {m.VLLM_RUNNING: 3}, ("10.0.0.7:8000 other/a",)),  # same metrics, other count
        failed(180.0),
        # Prometheus answered the workload queries but not the unattributed one: unknown, not none
        Snapshot(at=210.0, workloads={}, reachable=Reading.of(1.0), unattributed=None),
        read(240.0, {m.VLLM_TTFT: 1}, ("10.0.0.9:8000",)),
        read(300.0, {}),
    ))
    store = StatusStore()
    planner = FleetPlanner(store, live=live)

    tick(live)  # no successful read yet: unknown, so no figures at all (not zeros)
    assert live.unattributed is None and live.telemetry_status() is None
    assert "telemetry" not in write_policy_status(planner, store)

    tick(live)
    assert write_policy_status(planner, store)["telemetry"] == {
        "unattributedSeries": expected_series(**{m.VLLM_RUNNING: 2}),
        "unattributedTargets": ["10.0.0.7:8000 other/a", "10.0.0.8:8000 other/b"],
        "observedAt": "1970-01-01T00:01:00Z"}
    assert warnings(caplog) == [f"series without the workload label, in no workload's demand: {m.VLLM_RUNNING} 2 "
                                "(targets in FleetPolicy status.telemetry)"]

    tick(live)  # the count moves, the set of metrics does not: no new log line
    tel = write_policy_status(planner, store)["telemetry"]
    assert tel["unattributedSeries"][m.VLLM_RUNNING] == 3 and tel["unattributedTargets"] == ["10.0.0.7:8000 other/a"]
    assert tel["observedAt"] == "1970-01-01T00:02:00Z" and len(warnings(caplog)) == 1

    tick(live)  # failed read: the last figures and their time stand
    assert write_policy_status(planner, store)["telemetry"] == tel and len(warnings(caplog)) == 1
    tick(live)  # the unattributed query alone failed: the same
    assert write_policy_status(planner, store)["telemetry"] == tel and len(warnings(caplog)) == 1
    assert not any("carries the workload label again" in r.getMessage() for r in caplog.records)

    tick(live)  # another metric instead: one line; the stored status drops the old count to 0
    tel = write_policy_status(planner, store)["telemetry"]
    assert tel["unattributedSeries"] == expected_series(**{m.VLLM_TTFT: 1})
    assert tel["unattributedTargets"] == ["10.0.0.9:8000"]
    assert len(warnings(caplog)) == 2 and f"{m.VLLM_TTFT} 1" in warnings(caplog)[1]

    tick(live)  # all attributed again: zeros read from Prometheus, said at INFO, not as a warning
    tel = write_policy_status(planner, store)["telemetry"]
    assert tel == {"unattributedSeries": expected_series(), "unattributedTargets": [],
                   "observedAt": "1970-01-01T00:05:00Z"}
    assert len(warnings(caplog)) == 2
    assert any(r.levelno == logging.INFO and "carries the workload label again" in r.getMessage()
               for r in caplog.records if r.name == LIVE_LOG)


def test_no_telemetry_field_without_live_demand_and_an_old_one_is_removed():
    store = StatusStore()
    store.status = {"telemetry": {"unattributedSeries": {m.VLLM_RUNNING: 1}, "unattributedTargets": [],
                                  "observedAt": "2025-01-01T00:00:00Z"}}
    assert "telemetry" not in write_policy_status(FleetPlanner(store), store)
