"""Names, types and label names of the series llmfleet reads, and the target labels it needs.

Sources (read, not copied):
- vLLM V1: ``vllm/v1/metrics/loggers.py`` (``PrometheusStatLogger``, the 0.11/0.12 line: the one
  that hides ``vllm:time_per_output_token_seconds`` behind ``--show-hidden-metrics-for-version``)
  and ``vllm/v1/metrics/buckets.py`` (commit 139b1c3f17720f4bb6865309f365e6b1f1607a45), which
  holds the same bucket boundaries as named constants. Every vLLM series carries the labels
  ``model_name`` and ``engine``; counters are declared without ``_total`` and prometheus_client
  exposes them with it, so a query must name ``vllm:request_success_total`` (llm-d #1526, #1056:
  the name without the suffix reads nothing).
- Endpoint picker request counter, three generations, newest first: ``llm_d_epp_request_total``
  (llm-d router, ``pkg/epp/metrics/metrics.go``, which deprecates the next one, llm-d/
  llm-d-inference-scheduler#1070), ``inference_objective_request_total`` (Gateway API Inference
  Extension 1.x, same file) and ``inference_model_request_total`` (GIE 0.x, kubernetes-sigs/
  gateway-api-inference-extension commit 8c7067f3). Labels ``model_name``, ``target_model_name``
  (and ``priority`` on the newest).
- DCGM exporter: ``DCGM_FI_DEV_POWER_USAGE`` (W, gauge); with Kubernetes mapping on
  (``DCGM_EXPORTER_KUBERNETES=true``) it labels each GPU with the ``namespace`` and ``pod`` using
  it, which the scrape job must keep with ``honor_labels: true`` (else they arrive as
  ``exported_namespace``/``exported_pod``; ``LabelSchema`` can name those instead).
"""

from __future__ import annotations

from dataclasses import dataclass

# ----------------------------------------------------------------------------------- vLLM V1

VLLM_RUNNING = "vllm:num_requests_running"
VLLM_WAITING = "vllm:num_requests_waiting"
VLLM_KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
"""fraction 0..1 despite the name ("1 means 100 percent usage", loggers.py)"""
VLLM_REQUEST_SUCCESS = "vllm:request_success_total"
"""completions, one series per ``finished_reason`` (stop, length, abort, error, repetition)"""
VLLM_PROMPT_TOKENS = "vllm:prompt_tokens_total"
VLLM_GENERATION_TOKENS = "vllm:generation_tokens_total"
VLLM_PREEMPTIONS = "vllm:num_preemptions_total"
VLLM_PROMPT_LEN = "vllm:request_prompt_tokens"
VLLM_GENERATION_LEN = "vllm:request_generation_tokens"
VLLM_TTFT = "vllm:time_to_first_token_seconds"
VLLM_ITL = "vllm:inter_token_latency_seconds"
VLLM_ITL_OLD = "vllm:time_per_output_token_seconds"
"""the same histogram before vLLM 0.11; hidden since, removed in 0.13 (loggers.py comments)"""
VLLM_E2E = "vllm:e2e_request_latency_seconds"
VLLM_QUEUE_TIME = "vllm:request_queue_time_seconds"

VLLM_LABELS = ("model_name", "engine")

METRIC_TYPES: dict[str, str] = {
    VLLM_RUNNING: "gauge", VLLM_WAITING: "gauge", VLLM_KV_CACHE_USAGE: "gauge",
    VLLM_REQUEST_SUCCESS: "counter", VLLM_PROMPT_TOKENS: "counter", VLLM_GENERATION_TOKENS: "counter",
    VLLM_PREEMPTIONS: "counter",
    VLLM_PROMPT_LEN: "histogram", VLLM_GENERATION_LEN: "histogram", VLLM_TTFT: "histogram",
    VLLM_ITL: "histogram", VLLM_E2E: "histogram", VLLM_QUEUE_TIME: "histogram",
}
"""vLLM V1 series llmfleet reads, by exposed name (counters with ``_total``)"""

TTFT_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                  7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
"""``TIME_TO_FIRST_TOKEN_BUCKETS`` of vllm/v1/metrics/buckets.py, s"""
ITL_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                 10.0, 20.0, 40.0, 80.0)
"""``INTER_TOKEN_LATENCY_BUCKETS`` of vllm/v1/metrics/buckets.py, s"""
REQUEST_LATENCY_BUCKETS_S = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
                             50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
"""``REQUEST_LATENCY_BUCKETS`` (e2e and queue time) of vllm/v1/metrics/buckets.py, s"""


def token_buckets(max_model_len_tokens: int) -> tuple[int, ...]:
    """vLLM's 1-2-5 series up to ``max_model_len`` (``build_1_2_5_buckets``): the bucket bounds of
    ``vllm:request_prompt_tokens`` and ``vllm:request_generation_tokens``, tokens.

    Raises:
        ValueError: ``max_model_len_tokens`` below 1.
    """
    if max_model_len_tokens < 1:
        raise ValueError(f"max_model_len_tokens must be >= 1, got {max_model_len_tokens}")
    out, scale = [], 1
    while True:
        for m in (1, 2, 5):
            if m * scale > max_model_len_tokens:
                return tuple(out)
            out.append(m * scale)
        scale *= 10


# ------------------------------------------------------------------------ router and DCGM

EPP_REQUEST_COUNTERS = ("llm_d_epp_request_total", "inference_objective_request_total",
                        "inference_model_request_total")
"""the endpoint picker's request counter, newest name first; arrivals where requests enter"""

DCGM_POWER = "DCGM_FI_DEV_POWER_USAGE"
"""GPU board power draw, W (DCGM field 155)"""


# ------------------------------------------------------------------------------- target labels

@dataclass(frozen=True)
class LabelSchema:
    """Target labels the scrape configuration must put on every vLLM and router series.

    The relabelling in ``examples/monitoring/`` maps the pod labels llmfleet renders
    (``llmfleet/operator/render.py``) to these names: ``llmfleet.dev/workload`` (vLLM pods) and
    ``llmfleet.dev/router`` (endpoint-picker pods) both to ``workload``; ``llmfleet.dev/group``
    (the Deployment: one GPU type, TP and role) to ``group``; ``llmfleet.dev/role`` to ``role``;
    the pod's namespace and name to ``namespace`` and ``pod``.

    Attributes:
        namespace, pod, workload, group, role: target label names.
        dcgm_namespace, dcgm_pod: labels of the DCGM series naming the pod that uses the GPU.
    """

    namespace: str = "namespace"
    pod: str = "pod"
    workload: str = "llmfleet_workload"
    group: str = "llmfleet_group"
    role: str = "llmfleet_role"
    dcgm_namespace: str = "namespace"
    dcgm_pod: str = "pod"

    @property
    def workload_key(self) -> tuple[str, str]:
        """Labels that identify one workload: (namespace label, workload label)."""
        return (self.namespace, self.workload)

    @property
    def group_key(self) -> tuple[str, str, str]:
        return (self.namespace, self.workload, self.group)

    def required(self) -> tuple[str, ...]:
        """The labels without which a series cannot be attributed to a workload."""
        return (self.namespace, self.workload)
