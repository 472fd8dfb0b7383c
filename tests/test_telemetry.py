"""Telemetry, the parts without a server: the Reading type, vLLM's exposition (names, types,
buckets) as the emulator serves it, the length-bucket mapping, the PromQL and the examples."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from e2e.vllm_emulator import EmulatedPod
from llmfleet.telemetry import metrics as m
from llmfleet.telemetry import promql
from llmfleet.telemetry.client import TelemetryClient
from llmfleet.telemetry.lengths import straddle_mass, to_planner_buckets
from llmfleet.telemetry.reading import Reading, Unknown, UnknownTelemetry
from llmfleet.workload.demand import INPUT_EDGES_TOKENS, OUTPUT_EDGES_TOKENS

REPO = Path(__file__).resolve().parents[1]

# vLLM V1's PrometheusStatLogger (vllm/v1/metrics/loggers.py, 0.11/0.12) as declared there, typed
# by hand from the source: declared name -> (type, bucket bounds or None). Counters are declared
# without _total; prometheus_client's parser reports a counter family by that name.
VLLM_DECLARED = {
    "vllm:num_requests_running": ("gauge", None),
    "vllm:num_requests_waiting": ("gauge", None),
    "vllm:kv_cache_usage_perc": ("gauge", None),
    "vllm:num_preemptions": ("counter", None),
    "vllm:prompt_tokens": ("counter", None),
    "vllm:generation_tokens": ("counter", None),
    "vllm:request_success": ("counter", None),
    "vllm:time_to_first_token_seconds": ("histogram", [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                                                       0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0,
                                                       640.0, 2560.0]),
    "vllm:inter_token_latency_seconds": ("histogram", [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
                                                       0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0]),
    "vllm:e2e_request_latency_seconds": ("histogram", [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
                                                       30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
                                                       1920.0, 7680.0]),
    "vllm:request_queue_time_seconds": ("histogram", [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
                                                      30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
                                                      1920.0, 7680.0]),
    # build_1_2_5_buckets(max_model_len=8192)
    "vllm:request_prompt_tokens": ("histogram", [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]),
    "vllm:request_generation_tokens": ("histogram", [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]),
}


# ------------------------------------------------------------------------------------ Reading

def test_reading_is_a_finite_value_or_unknown_with_a_reason_never_zero():
    assert Reading.of(2.5).require() == 2.5
    nan = Reading.of(float("nan"), detail="kv")
    assert not nan.known and nan.unknown is Unknown.NAN and nan.value is None
    assert Reading.of(float("inf")).unknown is Unknown.NAN
    gone = Reading.missing(Unknown.MISSING_SERIES, "vllm:num_requests_waiting")
    with pytest.raises(UnknownTelemetry, match="MissingSeries: vllm:num_requests_waiting"):
        gone.require()
    with pytest.raises(UnknownTelemetry):
        float(gone)
    assert gone.value_or(7.0) == 7.0
    with pytest.raises(TypeError, match="no truth value"):
        bool(gone)
    with pytest.raises(TypeError):
        bool(Reading.of(0.0))
    with pytest.raises(ValueError):
        Reading(value=1.0, unknown=Unknown.NAN)
    with pytest.raises(ValueError):
        Reading()


# --------------------------------------------------------------------------- exposition text

def test_emulator_exposes_vllm_names_types_labels_and_buckets():
    pod = EmulatedPod(max_model_len_tokens=8192)
    pod.complete(prompt_tokens=300, generation_tokens=3, ttft_s=0.2, itl_s=0.03)
    pod.set_queue(2, 1)
    pod.set_kv_cache_usage(0.5)
    families = {f.name: f for f in text_string_to_metric_families(pod.exposition().decode())}
    for name, (typ, buckets) in VLLM_DECLARED.items():
        assert name in families, name
        fam = families[name]
        assert fam.type == typ, name
        for s in fam.samples:
            assert {"model_name", "engine"} <= set(s.labels), (name, s.labels)
        if typ == "counter":
            assert any(s.name == name + "_total" for s in fam.samples), name
        if buckets:
            les = [float(s.labels["le"]) for s in fam.samples if s.name == name + "_bucket"]
            assert les == [float(b) for b in buckets] + [math.inf], name
    reasons = {s.labels["finished_reason"] for s in families["vllm:request_success"].samples}
    assert reasons == {"stop", "length", "abort", "error", "repetition"}
    # what llmfleet queries exists under exactly that name and type in the text
    exposed = {s.name for f in families.values() for s in f.samples}
    for name, typ in m.METRIC_TYPES.items():
        suffix = "_bucket" if typ == "histogram" else ""
        assert name + suffix in exposed, name
        family = name[: -len("_total")] if typ == "counter" else name
        assert families[family].type == typ
    assert list(m.TTFT_BUCKETS_S) == VLLM_DECLARED["vllm:time_to_first_token_seconds"][1]
    assert list(m.ITL_BUCKETS_S) == VLLM_DECLARED["vllm:inter_token_latency_seconds"][1]
    assert list(m.token_buckets(8192)) == VLLM_DECLARED["vllm:request_prompt_tokens"][1]


def test_emulator_records_a_request_as_vllm_does():
    pod = EmulatedPod()
    pod.complete(prompt_tokens=100, generation_tokens=11, ttft_s=0.2, itl_s=0.05, queue_s=0.1)
    samples = {(s.name, s.labels.get("le"), s.labels.get("finished_reason")): s.value
               for f in text_string_to_metric_families(pod.exposition().decode()) for s in f.samples}
    assert samples[("vllm:request_success_total", None, "stop")] == 1
    assert samples[("vllm:prompt_tokens_total", None, None)] == 100
    assert samples[("vllm:generation_tokens_total", None, None)] == 11
    assert samples[("vllm:inter_token_latency_seconds_count", None, None)] == 10  # one per gap
    assert samples[("vllm:e2e_request_latency_seconds_sum", None, None)] == pytest.approx(0.1 + 0.2 + 10 * 0.05)
    with pytest.raises(ValueError, match="need 10 inter-token latencies"):
        pod.complete(1, 11, 0.1, [0.1] * 3)


def test_vllm_1_2_5_buckets_match_the_source_docstring():
    assert m.token_buckets(100) == (1, 2, 5, 10, 20, 50, 100)  # build_1_2_5_buckets(100) example
    with pytest.raises(ValueError):
        m.token_buckets(0)


# ----------------------------------------------------------------------------- length buckets

def _cumulative(lengths, bounds):
    lengths = np.asarray(lengths)
    return [float((lengths <= b).sum()) for b in bounds] + [float(len(lengths))]


def test_length_histogram_maps_onto_planner_buckets_by_hand():
    # 10 requests of 1000 tokens: vLLM bucket (500, 1000] holds the integers 501..1000; the
    # planner's [128, 512) gets 501..511 (11 of 500), [512, 2048) the other 489
    bounds = list(m.token_buckets(8192))
    d = to_planner_buckets(bounds + [math.inf], _cumulative([1000] * 10, bounds), INPUT_EDGES_TOKENS)
    assert d.count == 10
    assert d.share[1] == pytest.approx(11 / 500)
    assert d.share[2] == pytest.approx(489 / 500)
    assert d.mean_tokens[2] == pytest.approx((512 + 1000) / 2)
    assert d.share.sum() == pytest.approx(1.0)


def test_length_mapping_error_is_within_the_straddling_mass():
    rng = np.random.default_rng(0)
    bounds = list(m.token_buckets(32768))
    for edges in (INPUT_EDGES_TOKENS, OUTPUT_EDGES_TOKENS):
        lengths = np.clip(np.round(rng.lognormal(6.0, 1.2, 5000)), 1, 32768)
        cum = _cumulative(lengths, bounds)
        d = to_planner_buckets(bounds + [math.inf], cum, edges)
        idx = np.clip(np.searchsorted(edges, lengths, side="right") - 1, 0, len(edges) - 2)
        exact = np.bincount(idx, minlength=len(edges) - 1) / len(lengths)
        bound = straddle_mass(bounds + [math.inf], cum, edges)
        assert 0 < bound < 1
        assert np.abs(d.share - exact).sum() / 2 <= bound + 1e-9


def test_length_mapping_refuses_bad_histograms_and_reports_empty():
    with pytest.raises(ValueError, match="Inf"):
        to_planner_buckets([1, 2], [0, 1], INPUT_EDGES_TOKENS)
    with pytest.raises(ValueError, match="increasing"):
        to_planner_buckets([2, 1, math.inf], [0, 1, 1], INPUT_EDGES_TOKENS)
    assert to_planner_buckets([1, 2, math.inf], [0, 0, 0], INPUT_EDGES_TOKENS) is None


# --------------------------------------------------------------------------------------- PromQL

def test_counters_are_queried_with_their_total_suffix_and_through_rate():
    for name, typ in m.METRIC_TYPES.items():
        assert name.endswith("_total") == (typ == "counter"), name
    L = m.LabelSchema()
    q = promql.vllm_arrival_rate(m.VLLM_REQUEST_SUCCESS, m.VLLM_RUNNING, m.VLLM_WAITING, L, 60)
    assert 'rate(vllm:request_success_total{llmfleet_workload!=""}[60s])' in q
    assert "delta(vllm:num_requests_running" in q and "/ 60" in q
    mean = promql.histogram_mean(m.VLLM_TTFT, L, 60)
    assert mean.count("increase(") == 2 and "_sum" in mean and "_count" in mean
    assert "histogram_quantile(0.9, sum by (namespace, llmfleet_workload, llmfleet_group, le) (rate(" in \
        promql.histogram_quantile(m.VLLM_TTFT, 0.9, L, 60)
    router = promql.router_arrival_rate(m.EPP_REQUEST_COUNTERS, L, 60)
    assert router.count(" or on (namespace, llmfleet_workload) ") == 2
    with pytest.raises(ValueError):
        promql.histogram_quantile(m.VLLM_TTFT, 1.0, L, 60)
    with pytest.raises(ValueError, match="metric name"):
        promql.gauge_sum('x"}) or vector(1', L)


def test_dcgm_join_renames_exported_labels_when_configured():
    q = promql.gpu_power_by_group(m.LabelSchema(dcgm_pod="exported_pod", dcgm_namespace="exported_namespace"),
                                  m.VLLM_RUNNING)
    assert 'label_replace(DCGM_FI_DEV_POWER_USAGE, "pod", "$1", "exported_pod", "(.+)")' in q
    assert "group_left (llmfleet_workload, llmfleet_group)" in q


def test_client_refuses_a_window_too_short_for_rate():
    with pytest.raises(ValueError, match="4 scrape intervals"):
        TelemetryClient(window_s=30, scrape_interval_s=15)


# ------------------------------------------------------------------------------------- examples

def test_monitoring_examples_keep_the_labels_the_queries_group_by():
    L = m.LabelSchema()
    cfg = yaml.safe_load((REPO / "examples/monitoring/prometheus-scrape-config.yaml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    vllm_targets = {r.get("target_label") for r in jobs["llmfleet-vllm"]["relabel_configs"]}
    assert {L.namespace, L.pod, L.workload, L.group, L.role} <= vllm_targets
    assert L.workload in {r.get("target_label") for r in jobs["llmfleet-epp"]["relabel_configs"]}
    assert jobs["dcgm-exporter"]["honor_labels"] is True
    monitors = list(yaml.safe_load_all((REPO / "examples/monitoring/podmonitor.yaml").read_text()))
    assert [d["kind"] for d in monitors] == ["PodMonitor"] * 3
    assert all(d["apiVersion"] == "monitoring.coreos.com/v1" for d in monitors)
    ports = {d["metadata"]["name"]: d["spec"]["podMetricsEndpoints"][0]["port"] for d in monitors}
    # vLLM's own port names in rendered pods: http (colocated, prefill), vllm (decode)
    assert ports == {"llmfleet-vllm": "http", "llmfleet-vllm-decode": "vllm", "llmfleet-epp": "metrics"}
    for d in monitors[:2]:
        targets = {r["targetLabel"] for r in d["spec"]["podMetricsEndpoints"][0]["relabelings"]}
        assert {L.workload, L.group, L.role} <= targets
