import textwrap

import pytest

from llmfleet.api.loader import ManifestError, load_fleet
from llmfleet.api.units import parse_duration_s

from conftest import EXAMPLES

WORKLOAD = """
apiVersion: llmfleet.dev/v1alpha1
kind: LLMWorkload
metadata: {name: w}
spec:
  model: meta-llama/Llama-3.1-8B-Instruct
  traffic: {requestRatePerSecond: 2, inputTokens: {p50: 500, p90: 1500, p99: 3000}, outputTokens: {p50: 100, p90: 300, p99: 500}}
  slo: {ttft: %(ttft)s, tpot: 50ms}
  priority: %(priority)s
  serving: {tensorParallelSizes: %(tp)s, disaggregation: %(disagg)s}
---
apiVersion: llmfleet.dev/v1alpha1
kind: GPUPool
metadata: {name: p}
spec: {gpuType: A100-80G, %(maxgpus)s: 8}
"""


def write(tmp_path, **over):
    values = {"ttft": "500ms", "priority": "standard", "tp": "[1, 2]", "disagg": "auto", "maxgpus": "maxGPUs"}
    values.update(over)
    f = tmp_path / "fleet.yaml"
    f.write_text(textwrap.dedent(WORKLOAD % values))
    return f


def test_examples_load_as_kubernetes_documents():
    spec = load_fleet([EXAMPLES])
    assert sorted(w.metadata.name for w in spec.workloads) == ["assistant-70b", "chat-8b", "summarise-8b"]
    assert {p.spec.gpu_type for p in spec.pools} == {"A10G", "L4", "L40S", "A100-80G", "H100-SXM"}
    chat = next(w for w in spec.workloads if w.metadata.name == "chat-8b")
    # "1s" and "100ms" in the YAML are held in seconds
    assert chat.spec.slo.ttft == pytest.approx(1.0)
    assert chat.spec.slo.tpot == pytest.approx(0.1)
    assert spec.policy.spec.headroom == pytest.approx(0.1)


@pytest.mark.parametrize("text,seconds", [("500ms", 0.5), ("0.2s", 0.2), ("2s", 2.0), ("1m", 60.0), ("250us", 250e-6)])
def test_duration_units(text, seconds):
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("override,expected", [
    # a duration without a unit: the field, and the units allowed
    ({"ttft": '"5"'}, ["spec.slo.ttft", "ms"]),
    # a typo: the unknown field, and the required field it left missing
    ({"maxgpus": "maxGpus"}, ["spec.maxGpus: unknown field", "spec.maxGPUs"]),
    ({"priority": "urgent"}, ["spec.priority", "critical, high, standard, low"]),
    ({"disagg": "sometimes"}, ["spec.serving.disaggregation", "'auto'"]),
    ({"tp": "[3]"}, ["tensorParallelSizes", "[1, 2, 4, 8]"]),
])
def test_invalid_field_is_refused_naming_field_and_allowed_values(tmp_path, override, expected):
    with pytest.raises(ManifestError) as e:
        load_fleet([write(tmp_path, **override)])
    for fragment in expected:
        assert fragment in str(e.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ManifestError, match="no such file"):
        load_fleet([tmp_path / "nope.yaml"])


def test_other_api_groups_are_skipped(tmp_path):
    f = write(tmp_path)
    f.write_text(f.read_text() + "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: serving}\n")
    spec = load_fleet([f])
    assert len(spec.workloads) == 1 and len(spec.pools) == 1
