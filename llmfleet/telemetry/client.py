"""Read each workload's telemetry from Prometheus (prometheus-api-client's ``PrometheusConnect``).

One ``snapshot()`` runs a fixed set of instant queries (``promql.py``) for all workloads at once
and returns, per workload, ``Reading``s that are either a finite value or UNKNOWN with a reason:
Prometheus unreachable or erroring, a metric missing altogether (renamed, wrong suffix), nothing
for the workload, NaN, stale samples, or a scrape target of the workload down (a sum over its
pods would undercount). Nothing unknown is ever returned as 0.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from llmfleet.telemetry import metrics as m
from llmfleet.telemetry import promql
from llmfleet.telemetry.lengths import LengthDistribution, to_planner_buckets
from llmfleet.telemetry.reading import Reading, Unknown
from llmfleet.workload.demand import INPUT_EDGES_TOKENS, OUTPUT_EDGES_TOKENS

log = logging.getLogger(__name__)

WorkloadKey = tuple[str, str]
"""(namespace, LLMWorkload name)"""

REQUIRED_VLLM = (m.VLLM_RUNNING, m.VLLM_WAITING, m.VLLM_KV_CACHE_USAGE, m.VLLM_REQUEST_SUCCESS,
                 m.VLLM_PROMPT_LEN, m.VLLM_GENERATION_LEN, m.VLLM_TTFT)
"""series every vLLM V1 pod exports and llmfleet needs (ITL is checked under either name)"""
OPTIONAL = (*m.EPP_REQUEST_COUNTERS, m.DCGM_POWER)
"""series llmfleet uses where they exist: the router's counter (arrivals), DCGM (power)"""
ALL_NAMES = (*REQUIRED_VLLM, m.VLLM_ITL, m.VLLM_ITL_OLD, *OPTIONAL)
_HISTOGRAMS = {n for n, t in m.METRIC_TYPES.items() if t == "histogram"} | {m.VLLM_ITL_OLD}
SERIES_OF = {(n + "_count" if n in _HISTOGRAMS else n): n for n in ALL_NAMES}
"""series name that shows a metric exists (a histogram by its _count) -> metric name"""
ATTRIBUTABLE = tuple(s for s, n in SERIES_OF.items() if n != m.DCGM_POWER)
"""series that must carry a workload label (DCGM series name the GPU's pod instead)"""


@dataclass(frozen=True)
class GroupTelemetry:
    """Latency and power of one group (one Deployment: GPU type, TP, role) of a workload.

    Attributes:
        ttft_s, itl_s: quantile -> observed time to first token / inter-token latency, s.
        mean_ttft_s, mean_itl_s: Σ increase(_sum) / Σ increase(_count) over the window, s.
        power_watts: Σ GPU board power of the group's pods (DCGM), W.
        ttft_count, itl_count: Σ increase(_count) over the window: requests that got their first
            token, and token intervals (the samples behind the means).
    """

    ttft_s: dict[float, Reading]
    itl_s: dict[float, Reading]
    mean_ttft_s: Reading
    mean_itl_s: Reading
    power_watts: Reading
    ttft_count: Reading = Reading.missing(Unknown.EMPTY_RESULT, "not read")
    itl_count: Reading = Reading.missing(Unknown.EMPTY_RESULT, "not read")


@dataclass(frozen=True)
class WorkloadTelemetry:
    """What Prometheus says about one workload over the window.

    Attributes:
        arrival_rps: requests arriving, req/s: the router's counter where one exists, else vLLM
            completions + Δ(running + waiting) / window.
        arrival_source: the counter the arrival rate came from, or "vllm".
        completion_rps: Σ rate of ``vllm:request_success_total``, req/s.
        mean_input_tokens, mean_output_tokens: Σ increase(_sum)/Σ increase(_count), tokens.
        input_lengths, output_lengths: the length histograms on the planner's buckets, or an
            UNKNOWN Reading.
        running, waiting: Σ over pods of requests running / waiting now.
        kv_cache_usage: mean over pods of the KV-cache fill fraction (0..1); kv_cache_usage_max
            the fullest pod's.
        power_watts: Σ GPU board power of the workload's pods, W.
        groups: per group label value.
        targets, targets_down: scrape targets of the workload, and how many are down.
        age_s: age of the oldest latest-sample among its pods, s (UNKNOWN when none).
        young_series: series of the arrival counter first scraped inside the rate window
            (``promql.young_series``): while above 0 the arrival rate under-reads; None when
            not known (the query failed).
    """

    arrival_rps: Reading
    arrival_source: str
    completion_rps: Reading
    mean_input_tokens: Reading
    mean_output_tokens: Reading
    input_lengths: LengthDistribution | Reading
    output_lengths: LengthDistribution | Reading
    running: Reading
    waiting: Reading
    kv_cache_usage: Reading
    kv_cache_usage_max: Reading
    power_watts: Reading
    groups: dict[str, GroupTelemetry]
    targets: int
    targets_down: int
    age_s: Reading
    young_series: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """One read of Prometheus.

    Attributes:
        at: evaluation time, Unix s.
        workloads: per requested (namespace, name).
        reachable: known (1) when Prometheus answered, else UNKNOWN(UNREACHABLE / QUERY_ERROR).
        missing_required: required vLLM series with no series at all (renamed or not scraped).
        missing_optional: optional series absent (router counters, DCGM).
        unattributed: metric name -> number of series without the workload label; None when
            that query failed (unknown, not none).
        unattributed_targets: up to 20 "instance namespace/pod" of such series.
        unknown_workloads: workloads seen in Prometheus that were not asked for.
    """

    at: float
    workloads: dict[WorkloadKey, WorkloadTelemetry]
    reachable: Reading
    missing_required: tuple[str, ...] = ()
    missing_optional: tuple[str, ...] = ()
    unattributed: dict[str, int] | None = field(default_factory=dict)
    unattributed_targets: tuple[str, ...] = ()
    unknown_workloads: tuple[WorkloadKey, ...] = ()


class _QueryFailed(Exception):
    def __init__(self, reason: Unknown, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class TelemetryClient:
    """Reads workload telemetry through ``PrometheusConnect``.

    Args:
        url: Prometheus base URL, e.g. ``http://prometheus.monitoring:9090``.
        window_s: rate/increase window, s; at least 4 scrape intervals so that ``rate()`` has
            samples to work with (Prometheus documentation's rule of thumb for rate ranges).
        scrape_interval_s: the scrape interval of the vLLM job, s.
        stale_after_intervals: a sample older than this many scrape intervals is stale (3: two
            missed scrapes are tolerated, a third is not).
        quantiles: latency quantiles to read per group.
        labels: target label names (``LabelSchema``).
        timeout_s: per-query HTTP timeout, s.
        connect: an existing PrometheusConnect (tests, custom auth); built from ``url`` if None.

    Raises:
        ValueError: window shorter than 4 scrape intervals, or non-positive settings.
    """

    def __init__(self, url: str = "http://127.0.0.1:9090", window_s: float = 60.0, scrape_interval_s: float = 15.0,
                 stale_after_intervals: float = 3.0, quantiles: Iterable[float] = (0.5, 0.9, 0.99),
                 labels: m.LabelSchema | None = None, timeout_s: float = 10.0,
                 connect: PrometheusConnect | None = None):
        if scrape_interval_s <= 0 or stale_after_intervals <= 0 or timeout_s <= 0:
            raise ValueError("scrape_interval_s, stale_after_intervals and timeout_s must be positive")
        if window_s < 4 * scrape_interval_s:
            raise ValueError(f"window_s ({window_s}) must span at least 4 scrape intervals "
                             f"({4 * scrape_interval_s} s) for rate() to have enough samples")
        self.window_s, self.scrape_interval_s = float(window_s), float(scrape_interval_s)
        self.stale_after_s = stale_after_intervals * scrape_interval_s
        self.quantiles = tuple(float(q) for q in quantiles)
        self.labels = labels or m.LabelSchema()
        self.timeout_s = timeout_s
        # one quick retry: an unreachable Prometheus must turn into UNKNOWN within one re-plan
        # tick, not after the library's default 3 retries with back-off
        self.prom = connect or PrometheusConnect(url=url, retry=Retry(total=1, backoff_factor=0.1),
                                                 timeout=timeout_s)

    # ------------------------------------------------------------------------------ queries

    def _query(self, text: str, at: float) -> list[dict[str, Any]]:
        try:
            result = self.prom.custom_query(text, params={"time": f"{at:.3f}"})
        except requests.exceptions.RequestException as err:
            raise _QueryFailed(Unknown.UNREACHABLE, type(err).__name__) from None
        except PrometheusApiClientException as err:
            raise _QueryFailed(Unknown.QUERY_ERROR, str(err)[:300]) from None
        except ValueError as err:  # a body that is not the JSON Prometheus sends
            raise _QueryFailed(Unknown.QUERY_ERROR, f"malformed answer: {err}"[:300]) from None
        if not isinstance(result, list):
            raise _QueryFailed(Unknown.QUERY_ERROR, "result is not an instant vector")
        return result

    def _vector(self, text: str, at: float, key: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        """Instant vector -> {label values of ``key``: float} (NaN kept: the caller decides)."""
        out = {}
        for s in self._query(text, at):
            labels, value = s.get("metric", {}), s.get("value")
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise _QueryFailed(Unknown.QUERY_ERROR, "sample without a value")
            out[tuple(labels.get(k, "") for k in key)] = float(value[1])
        return out

    def _present(self, at: float) -> set[str]:
        try:
            found = self._vector(promql.present_names(tuple(SERIES_OF)), at, ("__name__",))
            return {SERIES_OF[k[0]] for k in found if k[0] in SERIES_OF}
        except _QueryFailed as err:
            raise TelemetryUnavailable(err.reason, err.detail) from None

    @staticmethod
    def _missing(present: set[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        required = [n for n in REQUIRED_VLLM if n not in present]
        if m.VLLM_ITL not in present and m.VLLM_ITL_OLD not in present:
            required.append(m.VLLM_ITL)
        return tuple(required), tuple(n for n in OPTIONAL if n not in present)

    def missing_series(self, at: float | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The start-up check: (required, optional) metric names with no series in Prometheus,
        as ``absent()`` would report them. ITL counts as present under either of its names.

        Raises:
            TelemetryUnavailable: Prometheus unreachable or erroring.
        """
        return self._missing(self._present(time.time() if at is None else at))

    # ----------------------------------------------------------------------------- snapshot

    def snapshot(self, workloads: Iterable[WorkloadKey], at: float | None = None) -> Snapshot:
        """Read every quantity of ``workloads`` as of ``at`` (Unix s; now by default)."""
        at = time.time() if at is None else at
        keys = [tuple(k) for k in workloads]
        try:
            present = self._present(at)
        except TelemetryUnavailable as err:
            unknown = Reading.missing(err.reason, err.detail)
            return Snapshot(at=at, workloads={k: _all_unknown(unknown) for k in keys}, reachable=unknown)
        return _Assembler(self, at, keys, present).run()


class TelemetryUnavailable(RuntimeError):
    """Prometheus could not be read at all; ``reason`` is UNREACHABLE or QUERY_ERROR."""

    def __init__(self, reason: Unknown, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason, self.detail = reason, detail


def _all_unknown(r: Reading) -> WorkloadTelemetry:
    return WorkloadTelemetry(arrival_rps=r, arrival_source="", completion_rps=r, mean_input_tokens=r,
                             mean_output_tokens=r, input_lengths=r, output_lengths=r, running=r, waiting=r,
                             kv_cache_usage=r, kv_cache_usage_max=r, power_watts=r, groups={}, targets=0,
                             targets_down=0, age_s=r)


class _Assembler:
    """Runs the queries of one snapshot and turns their results into Readings."""

    def __init__(self, client: TelemetryClient, at: float, keys: list[WorkloadKey], present: set[str]):
        self.c, self.at, self.keys = client, at, keys
        self.L = client.labels
        self.missing_req, self.missing_opt = client._missing(present)
        self.missing = set(self.missing_req) | set(self.missing_opt)
        # vLLM < 0.11 names the inter-token histogram time_per_output_token_seconds
        self.itl = m.VLLM_ITL_OLD if m.VLLM_ITL not in present and m.VLLM_ITL_OLD in present else m.VLLM_ITL

    def fetch(self, text: str, key: tuple[str, ...]) -> dict[tuple[str, ...], float] | _QueryFailed:
        try:
            return self.c._vector(text, self.at, key)
        except _QueryFailed as err:
            log.warning("telemetry query failed (%s): %s", err.reason.value, err.detail)
            return err

    def read(self, result, key: tuple[str, ...], metrics: tuple[str, ...], wl: WorkloadKey,
             extensive: bool = False) -> Reading:
        """One value of a query result as a Reading, checking in order: a metric it needs is
        missing, the query failed, a target is down (for sums over pods), no value for the key,
        NaN, stale samples."""
        gone = [n for n in metrics if n in self.missing]
        if gone:
            return Reading.missing(Unknown.MISSING_SERIES, ", ".join(gone))
        if isinstance(result, _QueryFailed):
            return Reading.missing(result.reason, result.detail)
        if extensive and self.down.get(wl, 0) > 0:
            return Reading.missing(Unknown.TARGET_DOWN, f"{self.down[wl]} of {self.targets.get(wl, 0)} targets down")
        if key not in result:
            return Reading.missing(Unknown.EMPTY_RESULT, f"no series of {metrics[0]} for {'/'.join(key)}")
        value = result[key]
        if math.isnan(value):
            return Reading.missing(Unknown.NAN, f"{metrics[0]} is NaN for {'/'.join(key)}")
        age = self.age.get(wl)
        if age is None or math.isnan(age):
            return Reading.missing(Unknown.EMPTY_RESULT, f"no current sample for {'/'.join(wl)}")
        if age > self.c.stale_after_s:
            return Reading.missing(Unknown.STALE, f"newest sample {age:.0f} s old (limit {self.c.stale_after_s:g} s)")
        return Reading.of(value, age_s=age)

    def run(self) -> Snapshot:
        c, L, w = self.c, self.L, self.c.window_s
        wk, gk = L.workload_key, L.group_key

        up = self.fetch(promql.targets_up(L), (*wk, "instance"))
        self.targets, self.down = {}, {}
        if not isinstance(up, _QueryFailed):
            for (ns, name, _), v in up.items():
                self.targets[(ns, name)] = self.targets.get((ns, name), 0) + 1
                self.down[(ns, name)] = self.down.get((ns, name), 0) + (0 if v == 1 else 1)
        age = self.fetch(promql.oldest_sample_age(m.VLLM_RUNNING, L), wk)
        self.age = {} if isinstance(age, _QueryFailed) else age

        q = {
            "completion": self.fetch(promql.counter_rate(m.VLLM_REQUEST_SUCCESS, L, w), wk),
            "vllm_arrival": self.fetch(promql.vllm_arrival_rate(m.VLLM_REQUEST_SUCCESS, m.VLLM_RUNNING,
                                                                m.VLLM_WAITING, L, w), wk),
            "running": self.fetch(promql.gauge_sum(m.VLLM_RUNNING, L), wk),
            "waiting": self.fetch(promql.gauge_sum(m.VLLM_WAITING, L), wk),
            "kv": self.fetch(promql.gauge_avg(m.VLLM_KV_CACHE_USAGE, L), wk),
            "kv_max": self.fetch(promql.gauge_max(m.VLLM_KV_CACHE_USAGE, L), wk),
            "mean_in": self.fetch(promql.histogram_mean(m.VLLM_PROMPT_LEN, L, w), wk),
            "mean_out": self.fetch(promql.histogram_mean(m.VLLM_GENERATION_LEN, L, w), wk),
            "in_buckets": self.fetch(promql.histogram_buckets(m.VLLM_PROMPT_LEN, L, w), (*wk, "le")),
            "out_buckets": self.fetch(promql.histogram_buckets(m.VLLM_GENERATION_LEN, L, w), (*wk, "le")),
            "mean_ttft": self.fetch(promql.histogram_mean(m.VLLM_TTFT, L, w, by=gk), gk),
            "mean_itl": self.fetch(promql.histogram_mean(self.itl, L, w, by=gk), gk),
            "n_ttft": self.fetch(promql.histogram_count(m.VLLM_TTFT, L, w, by=gk), gk),
            "n_itl": self.fetch(promql.histogram_count(self.itl, L, w, by=gk), gk),
        }
        routers = tuple(n for n in m.EPP_REQUEST_COUNTERS if n not in self.missing)
        q["young"] = self.fetch(promql.young_series((m.VLLM_REQUEST_SUCCESS, *routers), L, w), (*wk, "__name__"))
        router = self.fetch(promql.router_arrival_rate(routers, L, w), (*wk, "source")) if routers else {}
        power = (self.fetch(promql.gpu_power_by_group(L, m.VLLM_RUNNING), gk)
                 if m.DCGM_POWER not in self.missing else None)
        ttft = {qq: self.fetch(promql.histogram_quantile(m.VLLM_TTFT, qq, L, w), gk) for qq in c.quantiles}
        itl = {qq: self.fetch(promql.histogram_quantile(self.itl, qq, L, w), gk) for qq in c.quantiles}

        workloads = {}
        for wl in self.keys:
            workloads[wl] = self._workload(wl, q, router, power, ttft, itl)

        seen = set(self.targets) | set(self.age)
        unattr = self.fetch(promql.unattributed(ATTRIBUTABLE, L), ("__name__",))
        where = self.fetch(promql.unattributed_targets(ATTRIBUTABLE, L), ("instance", L.namespace, L.pod))
        return Snapshot(
            at=self.at, workloads=workloads, reachable=Reading.of(1.0),
            missing_required=self.missing_req, missing_optional=self.missing_opt,
            unattributed=None if isinstance(unattr, _QueryFailed) else {SERIES_OF[k[0]]: int(v) for k, v in unattr.items()
                                                                       if k[0] in SERIES_OF},
            unattributed_targets=() if isinstance(where, _QueryFailed) else tuple(sorted(
                f"{i} {ns}/{pod}" if ns or pod else i for i, ns, pod in where))[:20],
            unknown_workloads=tuple(sorted(k for k in seen if k not in set(self.keys))))

    def _workload(self, wl, q, router, power, ttft, itl) -> WorkloadTelemetry:
        r = self.read
        completion = r(q["completion"], wl, (m.VLLM_REQUEST_SUCCESS,), wl, extensive=True)
        arrival, source = self._arrival(wl, q, router)
        groups = {}
        group_names = set()
        for res in (q["mean_ttft"], *ttft.values()):
            if not isinstance(res, _QueryFailed):
                group_names |= {g for ns, name, g in res if (ns, name) == wl}
        for g in sorted(group_names):
            gkey = (*wl, g)
            groups[g] = GroupTelemetry(
                ttft_s={qq: r(res, gkey, (m.VLLM_TTFT,), wl) for qq, res in ttft.items()},
                itl_s={qq: r(res, gkey, (self.itl,), wl) for qq, res in itl.items()},
                mean_ttft_s=r(q["mean_ttft"], gkey, (m.VLLM_TTFT,), wl),
                mean_itl_s=r(q["mean_itl"], gkey, (self.itl,), wl),
                ttft_count=r(q["n_ttft"], gkey, (m.VLLM_TTFT,), wl, extensive=True),
                itl_count=r(q["n_itl"], gkey, (self.itl,), wl, extensive=True),
                power_watts=(Reading.missing(Unknown.MISSING_SERIES, m.DCGM_POWER) if power is None
                             else r(power, gkey, (m.DCGM_POWER,), wl, extensive=True)))
        young = q["young"]
        counter = m.VLLM_REQUEST_SUCCESS if source in ("", "vllm") else source
        return WorkloadTelemetry(
            young_series=(None if isinstance(young, _QueryFailed) else
                          int(sum(v for (ns, name, metric), v in young.items() if (ns, name) == wl and metric == counter))),
            arrival_rps=arrival, arrival_source=source, completion_rps=completion,
            mean_input_tokens=r(q["mean_in"], wl, (m.VLLM_PROMPT_LEN,), wl),
            mean_output_tokens=r(q["mean_out"], wl, (m.VLLM_GENERATION_LEN,), wl),
            input_lengths=self._lengths(q["in_buckets"], wl, m.VLLM_PROMPT_LEN, INPUT_EDGES_TOKENS),
            output_lengths=self._lengths(q["out_buckets"], wl, m.VLLM_GENERATION_LEN, OUTPUT_EDGES_TOKENS),
            running=r(q["running"], wl, (m.VLLM_RUNNING,), wl, extensive=True),
            waiting=r(q["waiting"], wl, (m.VLLM_WAITING,), wl, extensive=True),
            kv_cache_usage=r(q["kv"], wl, (m.VLLM_KV_CACHE_USAGE,), wl),
            kv_cache_usage_max=r(q["kv_max"], wl, (m.VLLM_KV_CACHE_USAGE,), wl),
            power_watts=self._sum_groups([g.power_watts for g in groups.values()], m.DCGM_POWER),
            groups=groups, targets=self.targets.get(wl, 0), targets_down=self.down.get(wl, 0),
            age_s=(Reading.of(self.age[wl]) if wl in self.age else
                   Reading.missing(Unknown.EMPTY_RESULT, f"no {m.VLLM_RUNNING} for {'/'.join(wl)}")))

    def _arrival(self, wl, q, router) -> tuple[Reading, str]:
        if not isinstance(router, _QueryFailed):
            for (ns, name, source), v in router.items():
                if (ns, name) == wl:
                    return self.read({wl: v}, wl, (source,), wl), source
        elif router:
            return Reading.missing(router.reason, router.detail), ""
        a = self.read(q["vllm_arrival"], wl, (m.VLLM_REQUEST_SUCCESS, m.VLLM_RUNNING, m.VLLM_WAITING), wl,
                      extensive=True)
        if a.known and a.value < 0:
            # more requests left the engines than completed: they vanished (a pod died with
            # requests in flight); the estimate means nothing until the window has passed
            return Reading.missing(Unknown.INCONSISTENT, f"negative arrival estimate {a.value:.3g} req/s"), "vllm"
        return a, "vllm"

    def _lengths(self, result, wl, metric, edges) -> LengthDistribution | Reading:
        if metric in self.missing:
            return Reading.missing(Unknown.MISSING_SERIES, metric)
        if isinstance(result, _QueryFailed):
            return Reading.missing(result.reason, result.detail)
        rows = sorted((float(le), v) for (ns, name, le), v in result.items() if (ns, name) == wl)
        if not rows:
            return Reading.missing(Unknown.EMPTY_RESULT, f"no {metric} buckets for {'/'.join(wl)}")
        if any(math.isnan(v) for _, v in rows):
            return Reading.missing(Unknown.NAN, f"{metric} bucket is NaN")
        age = self.age.get(wl)
        if age is None or age > self.c.stale_after_s:
            return Reading.missing(Unknown.STALE, f"{metric}: newest sample too old or absent")
        dist = to_planner_buckets([le for le, _ in rows], [v for _, v in rows], edges)
        if dist is None:
            return Reading.missing(Unknown.EMPTY_RESULT, f"no request completed in the window ({metric})")
        return dist

    @staticmethod
    def _sum_groups(readings: list[Reading], metric: str) -> Reading:
        if not readings:
            return Reading.missing(Unknown.EMPTY_RESULT, f"no group with {metric}")
        for x in readings:
            if not x.known:
                return x
        return Reading.of(sum(x.value for x in readings))
