"""The Grafana dashboard shipped in the chart (dashboards/llmfleet.json, templates/grafana-dashboard.yaml).

What is checked, and why:
- the chart renders the dashboard's ConfigMap (labelled for Grafana's dashboard sidecar) only when
  ``grafanaDashboard.enabled`` is true, the ConfigMap is valid Kubernetes, its JSON is the file's
  byte for byte, and the chart lints strictly with the value on and off (also on top of
  test_chart's "ha-and-extras" variant), so that turning it on cannot break an install;
- every PromQL expression of the dashboard, with Grafana's variables filled in, is accepted by a
  real Prometheus (Debian's, started as the telemetry tests do): Grafana shows a parse error only
  once someone opens the panel, and no unit test of ours would notice it otherwise. An empty
  answer is fine, the server holds no data;
- every metric name the dashboard reads is one llmfleet exports (``llmfleet/operator/selfmetrics``)
  or queries (``llmfleet/telemetry``), read from those modules: a renamed series would otherwise
  leave a silently empty panel. And every series the operator exports has a panel;
- every panel has a title and a description (which states its unit) and a unit on its values.
"""

from __future__ import annotations

import copy
import json
import re

import helm_python as helm
import kubernetes_validate
import pytest
import requests

from e2e.prometheus.server import server_for_tests
from llmfleet.operator import selfmetrics
from llmfleet.telemetry import client as telemetry_client
from test_chart import CHART, KUBE_VERSION, VARIANTS, render

DASHBOARD_FILE = CHART / "dashboards" / "llmfleet.json"
ENABLED = {"grafanaDashboard": {"enabled": True}}
SIDECAR_LABEL = ("grafana_dashboard", "1")
"""the label kube-prometheus-stack's Grafana sidecar selects dashboard ConfigMaps by (its default)"""


def dashboard() -> dict:
    return json.loads(DASHBOARD_FILE.read_text())


def panels(d: dict) -> list[dict]:
    """Every panel, rows' nested panels included, rows themselves left out."""
    out = []
    for p in d["panels"]:
        if p["type"] == "row":
            out += p.get("panels", [])
        else:
            out.append(p)
    return out


def exprs(d: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and of every query variable's ``label_values``
    selector (the part Prometheus evaluates; ``label_values`` itself is Grafana's)."""
    out = [(f"panel {p['title']!r} target {t['refId']}", t["expr"]) for p in panels(d) for t in p["targets"]]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.+),\s*([a-zA-Z_]\w*)\)", q)
            assert m, f"variable {v['name']}: expected label_values(selector, label), got {q!r}"
            out.append((f"variable {v['name']}", m.group(1)))
    return out


def fill(expr: str, values: dict[str, str]) -> str:
    """Grafana's substitution: ``$__rate_interval`` -> 5m, each template variable -> its value.
    ``$1`` in a label_replace replacement is PromQL's, not Grafana's, and stays."""
    out = expr.replace("$__rate_interval", "5m")
    for name, value in values.items():
        out = out.replace("${" + name + "}", value).replace("$" + name, value)
    assert not re.search(r"\$(?![0-9])", out), f"unfilled variable in {out!r}"
    return out


# ------------------------------------------------------------------------------------ the chart

def dashboard_configmaps(values: dict) -> list[dict]:
    return [d for d in render(values)
            if d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get(SIDECAR_LABEL[0]) == SIDECAR_LABEL[1]]


def test_configmap_only_when_enabled_and_equal_to_the_file():
    assert dashboard_configmaps({}) == []
    assert dashboard_configmaps({"grafanaDashboard": {"enabled": False}}) == []
    [cm] = dashboard_configmaps({"grafanaDashboard": {"enabled": True, "labels": {"team": "ml"},
                                                      "annotations": {"grafana_folder": "LLM serving"}}})
    kubernetes_validate.validate(cm, KUBE_VERSION, strict=True)
    assert cm["metadata"]["namespace"] == "llmfleet-system"
    assert cm["metadata"]["labels"]["team"] == "ml"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "LLM serving"}
    assert list(cm["data"]) == ["llmfleet.json"]
    assert cm["data"]["llmfleet.json"] == DASHBOARD_FILE.read_text()
    assert json.loads(cm["data"]["llmfleet.json"]) == dashboard()


@pytest.mark.parametrize("values", [{}, ENABLED, {**copy.deepcopy(VARIANTS["ha-and-extras"]), **ENABLED}],
                         ids=["off", "on", "ha-and-extras-on"])
def test_chart_lints_strictly_with_the_dashboard_on_and_off(values):
    report = helm.lint(str(CHART), values, strict=True)
    assert not report["errors"], report
    assert all(m["severity"] < 2 for m in report["messages"]), report["messages"]


@pytest.mark.parametrize("values", [
    {"grafanaDashboard": {"enabled": "yes"}},
    {"grafanaDashboard": {"enabled": True, "folder": "x"}},
    {"grafanaDashboard": {"labels": {"grafana_dashboard": 1}}},
])
def test_values_schema_refuses_bad_dashboard_values(values):
    with pytest.raises(helm.HelmValuesError, match="grafanaDashboard"):
        helm.Chart.load(str(CHART)).validate_schema(values)


# ------------------------------------------------------------------------------- the dashboard

def test_dashboard_shape():
    d = dashboard()
    assert d["schemaVersion"] == 39 and d["uid"] and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "workload"} <= set(variables)
    ids = [p["id"] for p in d["panels"]] + [p["id"] for r in d["panels"] if r["type"] == "row" for p in r["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels(d):
        assert p["title"] and len(p["description"]) > 20, p["title"]
        assert p["fieldConfig"]["defaults"]["unit"], f"{p['title']}: no unit"
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and all(t["datasource"] == p["datasource"] for t in p["targets"]), p["title"]
        pos = p["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, p["title"]


# PromQL words that are not metric names: binary set operators and modifiers (a grouping list after
# by/without/on/ignoring/group_left/group_right is removed before); numbers never match the name
# pattern; a name followed by "(" is a function or an aggregation.
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: string literals, label matchers ``{...}``, ranges
    ``[...]`` and grouping label lists are removed first, so what remains named is a selector."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", s):
        word = m.group(0)
        if word.lower() in _KEYWORDS or s[m.end():].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def exported_series() -> set[str]:
    """Series names the operator's /metrics exposes, from its registry: a counter as <name>_total,
    a histogram as <name>_bucket, _sum and _count, a gauge as is (the exposition format's rules)."""
    out = set()
    for family in selfmetrics.REGISTRY.collect():
        if family.type == "counter":
            out.add(family.name + "_total")
        elif family.type == "histogram":
            out |= {family.name + s for s in ("_bucket", "_sum", "_count")}
        else:
            out.add(family.name)
    return out


def queried_series() -> set[str]:
    """Series names llmfleet's telemetry queries: every name its client looks for, a histogram
    (which the client knows by its ``_count`` series) with its _bucket, _sum and _count."""
    out = set()
    for series, name in telemetry_client.SERIES_OF.items():
        out |= {name + s for s in ("_bucket", "_sum", "_count")} if series != name else {name}
    return out


def test_metric_name_extraction_sees_selectors_only():
    # the extraction itself, on the constructs the dashboard uses
    e = ('sum by (namespace, llmfleet_workload) (a:b_total{x=~"$v", y!=""} * on (namespace, pod) '
         'group_left (llmfleet_workload) group by (namespace, pod) (c[5m])) or vector(0) '
         'or label_replace(d{z="w"}, "namespace", "$1", "exported_namespace", "(.+)") > bool 0.5')
    assert metric_names(e) == {"a:b_total", "c", "d"}


def test_every_metric_name_is_one_llmfleet_exports_or_queries():
    known = exported_series() | queried_series()
    used = set()
    for where, expr in exprs(dashboard()):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= known, f"{where}: {sorted(names - known)} neither exported nor queried by llmfleet"
        used |= names
    # every operator series is on the dashboard (a histogram through its buckets)
    for family in selfmetrics.REGISTRY.collect():
        assert any(n == family.name or n.startswith(family.name + "_") for n in used), \
            f"{family.name} (llmfleet/operator/selfmetrics.py) has no panel"


# ------------------------------------------------------------------------ a real Prometheus

@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    yield from server_for_tests(tmp_path_factory.mktemp("prom"))


def test_every_expression_is_valid_promql(prom):
    d = dashboard()
    variables = [v for v in d["templating"]["list"] if v["type"] == "query"]
    # once with "All" (each variable's allValue), once with one value picked
    fillings = [{v["name"]: v["allValue"] for v in variables},
                {v["name"]: {"namespace": "team-a"}.get(v["name"], "chat-8b") for v in variables}]
    checked = 0
    for where, expr in exprs(d):
        for values in fillings:
            q = fill(expr, values)
            r = requests.get(f"{prom.url}/api/v1/query", params={"query": q}, timeout=10)
            body = r.json()
            assert r.status_code == 200 and body["status"] == "success", \
                f"{where}: Prometheus refused {q!r}: {body.get('errorType')}: {body.get('error')}"
            checked += 1
    assert checked >= 2 * 15
