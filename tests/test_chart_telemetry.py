"""The chart wires the operator's telemetry: --prometheus-url from telemetry.prometheusURL, its
own /metrics port on the pod and the Service, and a ServiceMonitor for it (real Helm rendering)."""

from __future__ import annotations

from tests.test_chart import render


def _by_kind(docs):
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_telemetry_off_by_default_and_metrics_port_exposed():
    docs = _by_kind(render({}))
    pod = docs[("Deployment", "llmfleet")]["spec"]["template"]["spec"]["containers"][0]
    assert "--metrics-port=9102" in pod["args"]
    assert not any(a.startswith("--prometheus-url") for a in pod["args"])
    assert {"name": "metrics", "containerPort": 9102, "protocol": "TCP"} in pod["ports"]
    ports = {p["name"]: p for p in docs[("Service", "llmfleet")]["spec"]["ports"]}
    assert ports["metrics"]["port"] == 9102 and ports["metrics"]["targetPort"] == "metrics"
    assert ("ServiceMonitor", "llmfleet") not in docs


def test_prometheus_url_and_service_monitor():
    docs = _by_kind(render({"telemetry": {"prometheusURL": "http://prometheus.monitoring:9090"},
                            "metricsPort": 9200, "serviceMonitor": {"enabled": True}}))
    pod = docs[("Deployment", "llmfleet")]["spec"]["template"]["spec"]["containers"][0]
    assert "--prometheus-url=http://prometheus.monitoring:9090" in pod["args"] and "--metrics-port=9200" in pod["args"]
    sm = docs[("ServiceMonitor", "llmfleet")]
    svc = docs[("Service", "llmfleet")]
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
