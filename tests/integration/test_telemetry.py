"""Telemetry against a real Prometheus (Debian's package, started on loopback) scraping emulated
vLLM, endpoint-picker and DCGM endpoints, through the relabelling shipped in
``examples/monitoring/prometheus-scrape-config.yaml`` and pod labels rendered by llmfleet.

Scrape interval 1 s, query window 20 s. Tolerances: a rate over a window of W seconds from
samples 1 s apart can be off by the increments of about one interval at each end (extrapolation),
so 2 s / 20 s = 10%; histogram quantiles are exact where the driven values are spread uniformly
inside vLLM's buckets (the interpolation histogram_quantile assumes), up to that same timing.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from e2e.prometheus.server import PrometheusServer, pod_target, server_for_tests
from e2e.vllm_emulator import FINISH_REASONS, EmulatedDCGM, EmulatedPod, EmulatedRouter
from llmfleet.api.models import LLMWorkload
from llmfleet.operator.render import render_deployment
from llmfleet.solver.plan import Assignment
from llmfleet.telemetry import metrics as m
from llmfleet.telemetry.client import TelemetryClient
from llmfleet.telemetry.reading import Unknown

REPO = Path(__file__).resolve().parents[2]
SCRAPE_S, WINDOW_S = 1.0, 20.0
WL = ("team-a", "chat-8b")

WORKLOAD = LLMWorkload.model_validate({
    "apiVersion": "llmfleet.dev/v1alpha1", "kind": "LLMWorkload",
    "metadata": {"name": "chat-8b", "namespace": "team-a", "uid": "1234"},
    "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct",
             "traffic": {"requestRatePerSecond": 2, "inputTokens": {"p50": 100, "p90": 200, "p99": 300},
                         "outputTokens": {"p50": 100, "p90": 200, "p99": 300}},
             "slo": {"ttft": "1s", "tpot": "100ms"}, "priority": "high"},
})

# one batch of requests: every input and output length in a different planner bucket; the
# output lengths lie in vLLM buckets no planner edge cuts (mapped shares exactly 0.25), two of the
# input lengths in buckets that an edge cuts (shares worked out by hand in the test)
PROMPTS = (50, 300, 1000, 3000)
OUTPUTS = (10, 100, 300, 1500)
OUTPUT_SHARE = [0.25, 0.25, 0.25, 0.25, 0.0]


def _jobs() -> dict:
    cfg = yaml.safe_load((REPO / "examples/monitoring/prometheus-scrape-config.yaml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    keep = ("relabel_configs", "metric_relabel_configs", "honor_labels")
    out = {name: {k: v for k, v in j.items() if k in keep} for name, j in jobs.items()}
    # a generic job (not llmfleet's) that also scrapes some vLLM pod, without llmfleet's labels
    out["other-pods"] = {"metric_relabel_configs": jobs["llmfleet-vllm"]["metric_relabel_configs"]}
    return out


@pytest.fixture
def prom(tmp_path):
    yield from server_for_tests(tmp_path / "prom", scrape_interval_s=SCRAPE_S, jobs=_jobs())


def _pod_labels(tp: int, pool: str, gpu: str, role: str = "colocated") -> tuple[dict, dict]:
    a = Assignment(workload="team-a/chat-8b", pool=pool, gpu_type=gpu, tp=tp, replicas=1, gpus=tp,
                   cost_per_hour=1.0, rate_rps=1.0, utilization=0.5, bucket_rate_rps=np.zeros(1), role=role)
    d = render_deployment(WORKLOAD, a, {}, 500.0, 1)
    md = d["spec"]["template"]["metadata"]
    return md["labels"], md["annotations"]


def vllm_target(pod: EmulatedPod, name: str, labels: dict, annotations: dict, namespace: str = "team-a") -> dict:
    # the rendered pod declares its port in prometheus.io/port; the emulator listens elsewhere
    return pod_target(pod.address, namespace, name, labels, {**annotations, "prometheus.io/port": str(pod.port)})


class Driver:
    """Completes batches of requests on emulated pods at fixed periods, in a thread."""

    def __init__(self):
        self.plan: list[tuple[EmulatedPod, float, tuple]] = []  # pod, period_s, ttft ranges
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.i = 0

    def add(self, pod: EmulatedPod, period_s: float, ttft_ranges_s: tuple[tuple[float, float], ...]):
        self.plan.append((pod, period_s, ttft_ranges_s))
        return self

    def _batch(self, pod, ttft_ranges):
        golden = 0.6180339887
        for k, (p, g) in enumerate(zip(PROMPTS, OUTPUTS)):
            self.i += 1
            lo, hi = ttft_ranges[k % len(ttft_ranges)]
            ttft = lo + (hi - lo) * (0.02 + 0.96 * ((self.i * golden) % 1.0))
            gaps = g - 1
            itl = [0.025 + 0.025 * (j + 0.5) / gaps for j in range(gaps)]  # uniform in (0.025, 0.05]
            pod.complete(p, g, ttft, itl)

    def _run(self):
        start = time.monotonic()
        due = [start] * len(self.plan)
        while not self._stop.is_set():
            now = time.monotonic()
            for idx, (pod, period, ranges) in enumerate(self.plan):
                if now >= due[idx]:
                    self._batch(pod, ranges)
                    due[idx] += period
            self._stop.wait(0.02)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self._stop.set()
        self.thread.join(10)


def client(prom: PrometheusServer, **kw) -> TelemetryClient:
    kw.setdefault("stale_after_intervals", 5)  # 2 shared CPU cores: allow late scrapes
    return TelemetryClient(prom.url, window_s=WINDOW_S, scrape_interval_s=SCRAPE_S, **kw)


def wait_scraped(prom: PrometheusServer, n_targets: int, timeout_s: float = 30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        up = prom.query("up == 1")
        if len(up) >= n_targets:
            return
        time.sleep(0.3)
    pytest.fail(f"only {len(prom.query('up == 1'))} of {n_targets} targets up: {prom.log_tail()}")


def test_rates_lengths_percentiles_queue_and_power_match_what_the_pods_were_driven_with(prom):
    lab_a, ann_a = _pod_labels(2, "h100", "H100-SXM")
    lab_b, ann_b = _pod_labels(4, "a100", "A100-80GB")
    pods = [EmulatedPod().start() for _ in range(4)]
    a1, a2, b1, stray = pods
    dcgm = EmulatedDCGM().start()
    try:
        prom.set_targets([vllm_target(a1, "a-1", lab_a, ann_a), vllm_target(a2, "a-2", lab_a, ann_a),
                          vllm_target(b1, "b-1", lab_b, ann_b)], job="llmfleet-vllm")
        # a vLLM pod no LLMWorkload owns, scraped by some other job: its series lack the labels
        prom.set_targets([{"targets": [stray.address], "labels": {"namespace": "other", "pod": "stray-0"}}],
                         job="other-pods")
        prom.set_targets([pod_target(dcgm.address, "gpu-operator", "dcgm-0", {"app": "nvidia-dcgm-exporter"},
                                     port_number=9400)], job="dcgm-exporter")
        for i, (pod, name) in enumerate([(a1, "a-1"), (a1, "a-1"), (a2, "a-2"), (b1, "b-1")]):
            dcgm.set_power(i, 300.0 + 10 * i, namespace="team-a", pod=name, container="vllm")
        dcgm.set_power(7, 60.0)  # an idle GPU, no pod
        a1.set_queue(3, 2), a2.set_queue(1, 0), b1.set_queue(2, 1), stray.set_queue(9, 9)
        a1.set_kv_cache_usage(0.2), a2.set_kv_cache_usage(0.4), b1.set_kv_cache_usage(0.6)
        # group A: 4 req/s + 2 req/s, TTFT half in (0.1, 0.25], half in (0.25, 0.5];
        # group B: 2 req/s, TTFT in (0.5, 0.75]; the stray pod 4 req/s
        quarter = ((0.1, 0.25), (0.25, 0.5))
        driver = (Driver().add(a1, 1.0, quarter).add(a2, 2.0, quarter).add(b1, 2.0, ((0.5, 0.75),))
                  .add(stray, 1.0, quarter).start())
        wait_scraped(prom, 5)
        time.sleep(WINDOW_S + 3)
        snap = client(prom).snapshot([WL])
        driver.stop()
    finally:
        for p in pods:
            p.stop()
        dcgm.stop()

    assert snap.reachable.known and snap.missing_required == ()
    assert set(snap.missing_optional) == set(m.EPP_REQUEST_COUNTERS)  # no router in this test
    w = snap.workloads[WL]
    assert w.targets == 3 and w.targets_down == 0
    assert w.arrival_source == "vllm"
    assert w.arrival_rps.require() == pytest.approx(8.0, rel=0.10)      # 4 + 2 + 2 req/s
    assert w.completion_rps.require() == pytest.approx(8.0, rel=0.10)
    assert w.running.require() == 6 and w.waiting.require() == 3         # the stray pod's 9+9 not in
    assert w.kv_cache_usage.require() == pytest.approx(0.4) and w.kv_cache_usage_max.require() == pytest.approx(0.6)
    assert w.mean_input_tokens.require() == pytest.approx(np.mean(PROMPTS), rel=1e-6)
    assert w.mean_output_tokens.require() == pytest.approx(np.mean(OUTPUTS), rel=1e-6)
    # 1000 tokens lie in vLLM's (500, 1000], which the 512 edge cuts: 11 of its 500 integers
    # (501..511) fall below; 3000 in (2000, 5000], cut by 2048: 47 of 3000 (2001..2047) below
    inp = [0.25, 0.25 + 0.25 * 11 / 500, 0.25 * 489 / 500 + 0.25 * 47 / 3000, 0.25 * (1 - 47 / 3000), 0.0, 0.0]
    assert w.input_lengths.share == pytest.approx(inp, abs=1e-6)
    assert w.output_lengths.share == pytest.approx(OUTPUT_SHARE, abs=1e-6)

    ga, gb = lab_a["llmfleet.dev/group"], lab_b["llmfleet.dev/group"]
    assert set(w.groups) == {ga, gb}
    # TTFT: half the mass uniform in (0.1, 0.25], half in (0.25, 0.5] -> p50 0.25, p90 0.45;
    # group B uniform in (0.5, 0.75] -> p50 0.625, p90 0.725; ITL uniform in (0.025, 0.05]
    assert w.groups[ga].ttft_s[0.5].require() == pytest.approx(0.25, abs=0.01)
    assert w.groups[ga].ttft_s[0.9].require() == pytest.approx(0.45, abs=0.01)
    assert w.groups[gb].ttft_s[0.5].require() == pytest.approx(0.625, abs=0.01)
    assert w.groups[gb].ttft_s[0.9].require() == pytest.approx(0.725, abs=0.01)
    assert w.groups[ga].itl_s[0.5].require() == pytest.approx(0.0375, abs=0.001)
    assert w.groups[ga].mean_ttft_s.require() == pytest.approx((0.175 + 0.375) / 2, rel=0.03)
    assert w.groups[gb].mean_itl_s.require() == pytest.approx(0.0375, rel=0.01)
    # power: GPUs 0, 1 (a-1) and 2 (a-2) in group A, 3 (b-1) in group B; idle GPU 7 in neither
    assert w.groups[ga].power_watts.require() == pytest.approx(300 + 310 + 320)
    assert w.groups[gb].power_watts.require() == pytest.approx(330)
    assert w.power_watts.require() == pytest.approx(1260)
    # the stray vLLM pod is counted, not attributed, and named
    assert snap.unattributed.get(m.VLLM_RUNNING) == 1
    assert any("other/stray-0" in t for t in snap.unattributed_targets)


def test_router_counter_is_the_arrival_rate_where_an_endpoint_picker_runs(prom):
    lab, ann = _pod_labels(2, "h100", "H100-SXM")
    pod, router = EmulatedPod().start(), EmulatedRouter("inference_objective_request_total").start()
    try:
        prom.set_targets([vllm_target(pod, "a-1", lab, ann)], job="llmfleet-vllm")
        prom.set_targets([pod_target(router.address, "team-a", "chat-8b-epp-0", {"llmfleet.dev/router": "chat-8b"},
                                     port_name="metrics")], job="llmfleet-epp")
        wait_scraped(prom, 2)
        # 5 req/s arrive at the router while the engine completes only 1 req/s (backpressure):
        # arrivals must come from the router, not from completions (Dynamo #8861)
        driver = Driver().add(pod, 4.0, ((0.1, 0.25),)).start()
        end = time.monotonic() + WINDOW_S + 3
        while time.monotonic() < end:
            router.arrive(1)
            time.sleep(0.2)
        snap = client(prom).snapshot([WL])
        driver.stop()
    finally:
        pod.stop(), router.stop()
    w = snap.workloads[WL]
    assert w.arrival_source == "inference_objective_request_total"
    # the loop's sleep overhead makes it slightly slower than 5/s: at most 10% below, never above
    assert 4.0 <= w.arrival_rps.require() <= 5.0 * 1.1
    # completions come in batches of 4 every 4 s, so a 20 s window holds one batch more or less
    # than its share depending on where it starts: 16 or 20 completions over a ~19 s sample span,
    # which Prometheus extrapolates to 0.84 or 1.05 req/s; one late scrape moves it a little more
    one_batch_rps = len(PROMPTS) / (WINDOW_S - SCRAPE_S)
    assert abs(w.completion_rps.require() - 1.0) <= one_batch_rps + 0.05


def test_a_pod_restart_resets_counters_without_a_negative_or_spurious_rate(prom):
    lab, ann = _pod_labels(2, "h100", "H100-SXM")
    pod = EmulatedPod().start()
    try:
        prom.set_targets([vllm_target(pod, "a-1", lab, ann)], job="llmfleet-vllm")
        pod.set_queue(0, 0)
        driver = Driver().add(pod, 1.0, ((0.1, 0.25),)).start()  # 4 req/s
        wait_scraped(prom, 1)
        time.sleep(WINDOW_S + 2)
        c = client(prom)
        before = c.snapshot([WL]).workloads[WL].completion_rps.require()
        pod.restart()  # every counter back to 0, same address
        pod.set_queue(0, 0)
        seen = []
        for _ in range(12):  # across the whole window after the reset
            time.sleep(2)
            seen.append(c.snapshot([WL]).workloads[WL])
        driver.stop()
    finally:
        pod.stop()
    assert before == pytest.approx(4.0, rel=0.10)
    known = [w.completion_rps.value for w in seen if w.completion_rps.known]
    assert len(known) >= 10, [str(w.completion_rps) for w in seen]
    # a naive difference would read about -80 req / 20 s = -4 req/s; rate() must not: the only
    # loss is the requests finished between the last scrape and the restart (<= 1 s of 4 req/s)
    assert all(v >= 0 for v in known)
    assert all(v == pytest.approx(4.0, rel=0.15) for v in known), known
    for w in seen:
        if w.arrival_rps.known:
            assert w.arrival_rps.value == pytest.approx(4.0, rel=0.15)


def test_stopped_prometheus_reads_as_unreachable_never_zero(prom):
    lab, ann = _pod_labels(2, "h100", "H100-SXM")
    pod = EmulatedPod().start()
    try:
        prom.set_targets([vllm_target(pod, "a-1", lab, ann)], job="llmfleet-vllm")
        pod.set_queue(2, 1)
        wait_scraped(prom, 1)
        c = client(prom, timeout_s=2)
        assert c.snapshot([WL]).workloads[WL].running.require() == 2
        prom.stop()
        t0 = time.monotonic()
        snap = c.snapshot([WL])
        elapsed = time.monotonic() - t0
    finally:
        pod.stop()
    assert elapsed < 10
    assert snap.reachable.unknown is Unknown.UNREACHABLE
    w = snap.workloads[WL]
    for r in (w.arrival_rps, w.completion_rps, w.running, w.waiting, w.kv_cache_usage, w.power_watts,
              w.mean_input_tokens, w.input_lengths):
        assert r.unknown is Unknown.UNREACHABLE and r.value is None


def test_renamed_metric_is_named_by_the_startup_check_and_its_values_are_unknown(prom):
    lab, ann = _pod_labels(2, "h100", "H100-SXM")
    # a release renames the waiting gauge, and exports the success counter without _total
    pod = EmulatedPod(renames={"vllm:num_requests_waiting": "vllm:num_requests_waiting_v2"}).start()
    try:
        prom.set_targets([vllm_target(pod, "a-1", lab, ann)], job="llmfleet-vllm")
        pod.set_queue(2, 5)
        driver = Driver().add(pod, 1.0, ((0.1, 0.25),)).start()
        wait_scraped(prom, 1)
        time.sleep(6)
        c = client(prom)
        required, _ = c.missing_series()
        snap = c.snapshot([WL])
        driver.stop()
    finally:
        pod.stop()
    assert required == (m.VLLM_WAITING,)
    w = snap.workloads[WL]
    assert w.waiting.unknown is Unknown.MISSING_SERIES and m.VLLM_WAITING in w.waiting.detail
    assert w.arrival_rps.unknown is Unknown.MISSING_SERIES  # needs waiting: not completions alone
    assert w.running.require() == 2 and w.completion_rps.known  # the rest still reads


def test_nan_gauge_stale_samples_and_a_down_target_are_unknown(prom):
    lab, ann = _pod_labels(2, "h100", "H100-SXM")
    p1, p2 = EmulatedPod().start(), EmulatedPod().start()
    try:
        prom.set_targets([vllm_target(p1, "a-1", lab, ann), vllm_target(p2, "a-2", lab, ann)], job="llmfleet-vllm")
        p1.set_queue(1, 1), p2.set_queue(1, 1)
        p1.set_kv_cache_usage(0.3)
        p2.set_kv_cache_usage(float("nan"))
        wait_scraped(prom, 2)
        time.sleep(3)
        c = client(prom)
        now = c.snapshot([WL]).workloads[WL]
        # evaluated 60 s after the last scrape, as when Prometheus has stopped scraping: the
        # samples are still inside the 5 min look-back, but stale
        later = c.snapshot([WL], at=time.time() + 60).workloads[WL]
        p2.stop()  # the pod's endpoint is gone: its scrape fails and its series go stale
        time.sleep(3 * SCRAPE_S)
        down = c.snapshot([WL]).workloads[WL]
    finally:
        p1.stop(), p2.stop()
    assert now.kv_cache_usage.unknown is Unknown.NAN and now.kv_cache_usage_max.unknown is Unknown.NAN
    assert now.running.require() == 2
    assert later.running.unknown is Unknown.STALE and later.waiting.unknown is Unknown.STALE
    assert down.targets_down == 1
    assert down.running.unknown is Unknown.TARGET_DOWN  # a sum over the pods still up would undercount


def test_a_new_pods_series_is_young_for_one_window_and_its_rate_under_reads_until_then(prom):
    # the requests a pod serves before Prometheus first scrapes it are in no series: a Σ of rates
    # over a workload's pods reads low until the new pod's series fills the window
    lab, ann = _pod_labels(2, "h100", "H100-SXM")
    old, new = EmulatedPod().start(), EmulatedPod().start()
    drivers = []
    try:
        prom.set_targets([vllm_target(old, "a-1", lab, ann)], job="llmfleet-vllm")
        drivers.append(Driver().add(old, 1.0, ((0.1, 0.25),)).start())  # 4 req/s
        wait_scraped(prom, 1)
        time.sleep(WINDOW_S + 2)
        c = client(prom)
        settled = c.snapshot([WL]).workloads[WL]
        drivers.append(Driver().add(new, 1.0, ((0.1, 0.25),)).start())  # 4 req/s more, not yet scraped
        time.sleep(2)
        prom.set_targets([vllm_target(old, "a-1", lab, ann), vllm_target(new, "a-2", lab, ann)], job="llmfleet-vllm")
        wait_scraped(prom, 2)
        time.sleep(2 * SCRAPE_S)  # two samples of the new pod: rate() reads it
        young = c.snapshot([WL]).workloads[WL]
        time.sleep(WINDOW_S + 2)
        filled = c.snapshot([WL]).workloads[WL]
    finally:
        for d in drivers:
            d.stop()
        old.stop(), new.stop()
    print(f"4 -> 8 req/s: young series {settled.young_series} -> {young.young_series} -> {filled.young_series}; "
          f"arrival {settled.arrival_rps.value:.2f} -> {young.arrival_rps.value:.2f} -> {filled.arrival_rps.value:.2f} req/s")
    assert settled.young_series == 0 and settled.arrival_rps.require() == pytest.approx(4.0, rel=0.10)
    # one series per finished_reason of the new pod's vllm:request_success_total
    assert young.young_series == len(FINISH_REASONS)
    assert young.arrival_rps.require() < 0.8 * 8.0
    assert filled.young_series == 0 and filled.arrival_rps.require() == pytest.approx(8.0, rel=0.10)
