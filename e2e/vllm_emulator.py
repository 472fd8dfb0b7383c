"""A vLLM V1 metrics endpoint without a GPU: one HTTP ``/metrics`` per emulated pod.

Each ``EmulatedPod`` exposes, through prometheus_client, the series vLLM's
``PrometheusStatLogger`` exposes (vllm/v1/metrics/loggers.py, 0.11/0.12 line; bucket bounds from
vllm/v1/metrics/buckets.py at commit 139b1c3f): the same names, types, label names
(``model_name``, ``engine``; ``finished_reason`` on ``vllm:request_success``), histogram buckets,
and counters declared without ``_total`` so that the client library adds it, as in vLLM. Values
are what the caller drives: ``complete()`` records one finished request the way vLLM's
``record()`` does (counters, length and latency histograms; one inter-token latency per output
token after the first), and gauges are set directly, so that the simulator (``llmfleet.sim``)
can replay traffic against the pods.

``EmulatedRouter`` does the same for the endpoint picker's request counter.

Test knobs: ``renames`` exposes a metric under another name (a renamed metric in a new vLLM
release); ``restart()`` starts the process over with every counter at 0 (a pod restart).
"""

from __future__ import annotations

import math
import threading
from typing import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

TTFT_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                  7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                 10.0, 20.0, 40.0, 80.0)
REQUEST_LATENCY_BUCKETS_S = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
                             50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
"""``FINISH_REASON_STRINGS`` of vllm/v1/engine/__init__.py"""


def build_1_2_5_buckets(max_value: int) -> list[int]:
    """vLLM's token-count buckets: 1, 2, 5, 10, 20, 50, ... up to ``max_value``."""
    out, scale = [], 1
    while True:
        for m in (1, 2, 5):
            if m * scale > max_value:
                return out
            out.append(m * scale)
        scale *= 10


class EmulatedPod:
    """The ``/metrics`` endpoint of one vLLM pod, on 127.0.0.1.

    Args:
        model_name: value of the ``model_name`` label (vLLM's served model name).
        max_model_len_tokens: bounds the token-count histograms, as in vLLM.
        port: TCP port; 0 picks a free one (kept across ``restart()``).
        renames: exposed name -> name to expose instead (before the client adds ``_total``).
        engine: value of the ``engine`` label (the engine index; "0" without data parallelism).
    """

    def __init__(self, model_name: str = "meta-llama/Llama-3.1-8B-Instruct", max_model_len_tokens: int = 32768,
                 port: int = 0, renames: Mapping[str, str] | None = None, engine: str = "0"):
        self.model_name, self.engine = model_name, engine
        self.max_model_len_tokens = max_model_len_tokens
        self.renames = dict(renames or {})
        self.port = port
        self._server = None
        self._lock = threading.Lock()
        self._build()

    # --------------------------------------------------------------------------- metrics

    def _name(self, name: str) -> str:
        return self.renames.get(name, name)

    def _build(self) -> None:
        r = self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        values = (self.model_name, self.engine)

        def gauge(name, doc):
            return Gauge(self._name(name), doc, labels, registry=r, multiprocess_mode="mostrecent").labels(*values)

        def counter(name, doc):
            return Counter(self._name(name), doc, labels, registry=r).labels(*values)

        def histogram(name, doc, buckets):
            return Histogram(self._name(name), doc, labels, registry=r, buckets=buckets).labels(*values)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.kv_cache_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.preemptions = counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        success = Counter(self._name("vllm:request_success"), "Count of successfully processed requests.",
                          labels + ["finished_reason"], registry=r)
        self.success = {reason: success.labels(*values, reason) for reason in FINISH_REASONS}
        tokens = build_1_2_5_buckets(self.max_model_len_tokens)
        self.prompt_len = histogram("vllm:request_prompt_tokens", "Number of prefill tokens processed.", tokens)
        self.generation_len = histogram("vllm:request_generation_tokens", "Number of generation tokens processed.",
                                        tokens)
        self.ttft = histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                              TTFT_BUCKETS_S)
        self.itl = histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                             ITL_BUCKETS_S)
        self.e2e = histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                             REQUEST_LATENCY_BUCKETS_S)
        self.queue_time = histogram("vllm:request_queue_time_seconds",
                                    "Histogram of time spent in WAITING phase for request.", REQUEST_LATENCY_BUCKETS_S)

    def complete(self, prompt_tokens: int, generation_tokens: int, ttft_s: float,
                 itl_s: float | Sequence[float], queue_s: float = 0.0, finished_reason: str = "stop") -> None:
        """Record one finished request as vLLM does when it completes.

        Args:
            prompt_tokens, generation_tokens: its lengths, tokens (>= 0).
            ttft_s: time to first token, s.
            itl_s: inter-token latency, s: one value for every gap, or one per gap
                (``generation_tokens - 1`` values).
            queue_s: time waiting before scheduling, s.
            finished_reason: one of ``FINISH_REASONS``.

        Raises:
            ValueError: negative lengths, wrong number of gaps, unknown reason.
        """
        if prompt_tokens < 0 or generation_tokens < 0:
            raise ValueError(f"lengths must be >= 0, got {prompt_tokens}, {generation_tokens}")
        if finished_reason not in self.success:
            raise ValueError(f"finished_reason must be one of {FINISH_REASONS}, got {finished_reason!r}")
        gaps = max(generation_tokens - 1, 0)
        itls = [float(itl_s)] * gaps if isinstance(itl_s, (int, float)) else [float(x) for x in itl_s]
        if len(itls) != gaps:
            raise ValueError(f"need {gaps} inter-token latencies for {generation_tokens} tokens, got {len(itls)}")
        with self._lock:
            self.prompt_tokens.inc(prompt_tokens)
            self.generation_tokens.inc(generation_tokens)
            self.ttft.observe(ttft_s)
            for x in itls:
                self.itl.observe(x)
            self.success[finished_reason].inc()
            self.e2e.observe(queue_s + ttft_s + sum(itls))
            self.queue_time.observe(queue_s)
            self.prompt_len.observe(prompt_tokens)
            self.generation_len.observe(generation_tokens)

    def set_queue(self, running: float, waiting: float) -> None:
        """Requests in the running batch and waiting (vLLM's scheduler gauges)."""
        self.running.set(running)
        self.waiting.set(waiting)

    def set_kv_cache_usage(self, fraction: float) -> None:
        """KV-cache fill, 0..1 (NaN allowed: a broken engine can export it)."""
        if not math.isnan(fraction) and not 0.0 <= fraction <= 1.0:
            raise ValueError(f"KV-cache usage is a fraction in [0, 1], got {fraction}")
        self.kv_cache_usage.set(fraction)

    def exposition(self) -> bytes:
        """The text a scrape of ``/metrics`` returns now."""
        return generate_latest(_ScrapedUnderLock(self))

    # ---------------------------------------------------------------------------- server

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>`` (the scrape target)."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> "EmulatedPod":
        server, _ = start_http_server(self.port, addr="127.0.0.1", registry=_ScrapedUnderLock(self))
        self._server = server
        self.port = server.server_address[1]
        return self

    def stop(self) -> None:
        """The pod is gone: the port refuses connections."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def restart(self) -> None:
        """A process restart: same address, every counter and histogram back to 0."""
        self.stop()
        self._build()
        self.start()


class _ScrapedUnderLock:
    """A pod's registry as a scrape reads it: every sample read under the lock ``complete`` holds,
    so a scrape sees each request recorded whole or not at all. Without it a scrape could land
    inside ``Histogram.observe`` (its sum already counted, its bucket not yet) and the window's
    mean length read off by one request's tokens (CI: 484.18 against 477.5 output tokens)."""

    def __init__(self, pod: "EmulatedPod"):
        self.pod = pod

    def collect(self):
        with self.pod._lock:
            return list(self.pod.registry.collect())


class EmulatedRouter:
    """The endpoint picker's request counter on 127.0.0.1 (``counter``: one of
    ``llmfleet.telemetry.metrics.EPP_REQUEST_COUNTERS``; labels ``model_name``,
    ``target_model_name`` as in the GIE/llm-d source)."""

    def __init__(self, counter: str = "inference_objective_request_total", model_name: str = "m", port: int = 0):
        if not counter.endswith("_total"):
            raise ValueError(f"a counter's exposed name ends in _total, got {counter!r}")
        self.registry = CollectorRegistry()
        self.model_name, self.port, self._server = model_name, port, None
        self.requests = Counter(counter[: -len("_total")], "Counter of inference objective requests.",
                                ["model_name", "target_model_name"], registry=self.registry
                                ).labels(model_name, model_name)

    def arrive(self, n: int = 1) -> None:
        self.requests.inc(n)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "EmulatedRouter":
        server, _ = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        self._server, self.port = server, server.server_address[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class EmulatedDCGM:
    """The DCGM exporter's ``DCGM_FI_DEV_POWER_USAGE`` gauge (W) on 127.0.0.1, one series per
    GPU with the labels the exporter sets under Kubernetes mapping (``gpu``, ``UUID``,
    ``Hostname``, ``modelName``, and ``namespace``/``pod``/``container`` of the pod using it)."""

    def __init__(self, hostname: str = "gpu-node-0", model_name: str = "NVIDIA H100 80GB HBM3", port: int = 0):
        self.registry = CollectorRegistry()
        self.hostname, self.model_name, self.port, self._server = hostname, model_name, port, None
        self.power = Gauge("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).",
                           ["gpu", "UUID", "Hostname", "modelName", "namespace", "pod", "container"],
                           registry=self.registry)

    def set_power(self, gpu: int, watts: float, namespace: str = "", pod: str = "", container: str = "") -> None:
        """Power of GPU ``gpu``, W, used by ``namespace/pod`` (empty when idle)."""
        uuid = f"GPU-{self.hostname}-{gpu:04d}"
        self.power.labels(str(gpu), uuid, self.hostname, self.model_name, namespace, pod, container).set(watts)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "EmulatedDCGM":
        server, _ = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)
        self._server, self.port = server, server.server_address[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
