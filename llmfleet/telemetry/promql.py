"""The PromQL llmfleet runs: pure functions from metric names, labels and a window to query text.

Rules every query keeps (issue 16, DESIGN.md §8):
- counters only through ``rate()``/``increase()``, which treat a drop in value as a reset (a pod
  restart) rather than a negative change;
- averages over pods as Σ increase(_sum) / Σ increase(_count), never a mean of per-pod means;
- percentiles with ``histogram_quantile`` over the Σ of bucket rates of a group's pods;
- only series carrying the workload label take part (``workload!=""``); the rest are counted
  separately as unattributed.
"""

from __future__ import annotations

import re

from llmfleet.telemetry.metrics import DCGM_POWER, LabelSchema


def duration(window_s: float) -> str:
    """A PromQL range like ``90s``. Raises ValueError for a window under 1 s."""
    if window_s < 1:
        raise ValueError(f"query window must be >= 1 s, got {window_s}")
    return f"{int(round(window_s))}s"


def _by(*labels: str) -> str:
    return ", ".join(labels)


def attributed(metric: str, labels: LabelSchema) -> str:
    """Selector of the series of ``metric`` that carry a workload label."""
    return f'{_name_selector(metric)}{{{labels.workload}!=""}}'


def _name_selector(metric: str) -> str:
    # names with a colon are valid metric names; quoting through __name__ is not needed
    if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", metric):
        raise ValueError(f"not a Prometheus metric name: {metric!r}")
    return metric


def names_regex(metrics: list[str] | tuple[str, ...]) -> str:
    return "|".join(re.escape(_name_selector(m)) for m in metrics)


def present_names(metrics: list[str] | tuple[str, ...]) -> str:
    """One series per metric name (of ``metrics``) that has any series: the absent() check for
    many names in one query."""
    return f'group by (__name__) ({{__name__=~"{names_regex(metrics)}"}})'


def unattributed(metrics: list[str] | tuple[str, ...], labels: LabelSchema) -> str:
    """Per metric name, the number of series without the workload label."""
    return f'count by (__name__) ({{__name__=~"{names_regex(metrics)}", {labels.workload}=""}})'


def unattributed_targets(metrics: list[str] | tuple[str, ...], labels: LabelSchema) -> str:
    """The targets (instance, namespace, pod) exposing such series, to name them in a report."""
    return (f'group by (instance, {labels.namespace}, {labels.pod}) '
            f'({{__name__=~"{names_regex(metrics)}", {labels.workload}=""}})')


def targets_up(labels: LabelSchema) -> str:
    """``up`` of every scrape target with a workload label (1 up, 0 down), per target."""
    return f'up{{{labels.workload}!=""}}'


def oldest_sample_age(metric: str, labels: LabelSchema) -> str:
    """Age, s, of the oldest latest-sample among a workload's series of ``metric``."""
    return f"max by ({_by(*labels.workload_key)}) (time() - timestamp({attributed(metric, labels)}))"


def gauge_sum(metric: str, labels: LabelSchema) -> str:
    return f"sum by ({_by(*labels.workload_key)}) ({attributed(metric, labels)})"


def gauge_avg(metric: str, labels: LabelSchema) -> str:
    return f"avg by ({_by(*labels.workload_key)}) ({attributed(metric, labels)})"


def gauge_max(metric: str, labels: LabelSchema) -> str:
    """The largest value over a workload's pods, NaN if any pod's is NaN: PromQL's ``max`` skips
    NaN samples, which would hide a broken pod, so ``0 * sum`` (which propagates NaN) is added."""
    sel = attributed(metric, labels)
    by = _by(*labels.workload_key)
    return f"max by ({by}) ({sel}) + 0 * sum by ({by}) ({sel})"


def counter_rate(metric: str, labels: LabelSchema, window_s: float, by: tuple[str, ...] | None = None) -> str:
    """Σ over pods of the per-second rate of a counter (``_total`` name), per workload."""
    by = by or labels.workload_key
    return f"sum by ({_by(*by)}) (rate({attributed(metric, labels)}[{duration(window_s)}]))"


def young_series(metrics: tuple[str, ...], labels: LabelSchema, window_s: float) -> str:
    """Per workload and metric name, how many series of ``metrics`` have no sample one window
    ago: series of pods (or scrape targets) that Prometheus first scraped inside the window.

    ``rate()`` over such a series counts only the increase since its first sample: the requests
    a new pod served before Prometheus discovered and first scraped it are in no series, so a
    Σ of rates over a workload's pods under-reads until the window has passed (3.2 of 5 req/s
    for the first read of a new workload's two pods on the test bed). A series still present
    one window ago has a sample within the lookback before the window's start, so its rate
    covers the window. ``unless`` matches series on their labels, the metric name aside, so each
    series is set against its own past (the vLLM counter's series and the picker's come from
    different pods, so one name's series never stands in for another's). No result for a
    workload without such series.
    """
    key = _by(*labels.workload_key, "__name__")
    sel = f'{{__name__=~"{names_regex(metrics)}", {labels.workload}!=""}}'
    return f"count by ({key}) ({sel} unless {sel} offset {duration(window_s)})"


def router_arrival_rate(counters: tuple[str, ...], labels: LabelSchema, window_s: float) -> str:
    """Arrivals at the endpoint picker, req/s, from the first of ``counters`` a workload has.

    Each term is tagged with a ``source`` label naming its counter; ``or on(workload key)`` keeps
    the first name present per workload, so an EPP exporting a deprecated and a new name for the
    same requests is never counted twice.
    """
    key = _by(*labels.workload_key)
    terms = [f'label_replace({counter_rate(c, labels, window_s)}, "source", "{c}", "", "")' for c in counters]
    return f" or on ({key}) ".join(terms)


def vllm_arrival_rate(success_total: str, running: str, waiting: str, labels: LabelSchema, window_s: float) -> str:
    """Arrivals, req/s, where no router counts them: completions plus the change in requests in
    the engines (running + waiting) over the window, divided by the window. vLLM has no arrival
    counter; counting completions alone stays flat under backpressure (Dynamo #8861)."""
    key = _by(*labels.workload_key)
    d = duration(window_s)
    queue_change = (f"sum by ({key}) (delta({attributed(running, labels)}[{d}]) "
                    f"+ delta({attributed(waiting, labels)}[{d}]))")
    return f"{counter_rate(success_total, labels, window_s)} + {queue_change} / {float(window_s):g}"


def histogram_mean(metric: str, labels: LabelSchema, window_s: float, by: tuple[str, ...] | None = None) -> str:
    """Σ increase(_sum) / Σ increase(_count) over the window: NaN (unknown) without observations."""
    by = by or labels.workload_key
    d = duration(window_s)
    return (f"sum by ({_by(*by)}) (increase({attributed(metric + '_sum', labels)}[{d}])) / "
            f"sum by ({_by(*by)}) (increase({attributed(metric + '_count', labels)}[{d}]))")


def histogram_count(metric: str, labels: LabelSchema, window_s: float, by: tuple[str, ...] | None = None) -> str:
    """Σ increase(_count) over the window: observations in it (requests for TTFT, token intervals
    for ITL); 0 for an idle window, no result without the series."""
    by = by or labels.workload_key
    return f"sum by ({_by(*by)}) (increase({attributed(metric + '_count', labels)}[{duration(window_s)}]))"


def histogram_buckets(metric: str, labels: LabelSchema, window_s: float) -> str:
    """Σ increase of each cumulative bucket (label ``le``) over the window, per workload."""
    return (f"sum by ({_by(*labels.workload_key, 'le')}) "
            f"(increase({attributed(metric + '_bucket', labels)}[{duration(window_s)}]))")


def histogram_quantile(metric: str, q: float, labels: LabelSchema, window_s: float) -> str:
    """The ``q`` quantile per group (one Deployment: one GPU type, TP and role) over the window,
    from the Σ over the group's pods of bucket rates. NaN (unknown) without observations."""
    if not 0 < q < 1:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    by = _by(*labels.group_key, "le")
    return (f"histogram_quantile({q:g}, sum by ({by}) "
            f"(rate({attributed(metric + '_bucket', labels)}[{duration(window_s)}])))")


def gpu_power_by_group(labels: LabelSchema, running: str, power: str = DCGM_POWER) -> str:
    """Σ GPU power, W, per group: DCGM's per-GPU series joined to the vLLM pods on (namespace,
    pod). DCGM series name the pod that holds the GPU (Kubernetes mapping on); the vLLM side
    gives each such pod its workload and group (``group by`` yields 1, so the product is the
    power itself)."""
    dcgm = power
    if labels.dcgm_pod != labels.pod:
        dcgm = f'label_replace({dcgm}, "{labels.pod}", "$1", "{labels.dcgm_pod}", "(.+)")'
    if labels.dcgm_namespace != labels.namespace:
        dcgm = f'label_replace({dcgm}, "{labels.namespace}", "$1", "{labels.dcgm_namespace}", "(.+)")'
    pods = f"group by ({_by(labels.namespace, labels.pod, labels.workload, labels.group)}) ({attributed(running, labels)})"
    return (f"sum by ({_by(*labels.group_key)}) ({dcgm} * on ({labels.namespace}, {labels.pod}) "
            f"group_left ({labels.workload}, {labels.group}) {pods})")
