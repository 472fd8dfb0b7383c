"""The CRDs are generated from the API models: checked for drift and for the structural-schema
rules the API server enforces (the integration tests then install them on a real one)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from llmfleet.api.crds import CRD_KINDS, crd, crd_files
from llmfleet.api.models import ALLOWED_TP

REPO = Path(__file__).resolve().parents[1]


def test_crds_folder_matches_the_models():
    files = crd_files()
    on_disk = {p.name: p.read_text() for p in (REPO / "crds").glob("*.yaml")}
    assert on_disk.keys() == files.keys(), "run `llmfleet crds` to regenerate crds/"
    for name, text in files.items():
        assert on_disk[name] == text, f"crds/{name} drifted from llmfleet/api/models.py; run `llmfleet crds`"


def _walk(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def test_schemas_are_structural():
    for kind in CRD_KINDS:
        schema = crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            if path.endswith(".properties"):
                continue  # a map of field names, not a schema node
            assert not {"$ref", "anyOf", "allOf", "oneOf", "const", "title"} & node.keys(), path
            assert not ("properties" in node and "additionalProperties" in node), path
            if "exclusiveMinimum" in node:
                assert node["exclusiveMinimum"] is True and "minimum" in node, path
            if "properties" in node or "items" in node:
                assert node.get("type") in ("object", "array"), path


def test_workload_schema_carries_the_validation_a_user_relies_on():
    spec = crd("LLMWorkload")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = spec["properties"]
    assert set(spec["required"]) == {"model", "traffic", "slo"}
    assert props["slo"]["properties"]["ttft"]["pattern"].endswith("(us|µs|ms|s|m)$")
    assert props["serving"]["properties"]["tensorParallelSizes"]["items"]["enum"] == list(ALLOWED_TP)
    assert props["serving"]["properties"]["disaggregation"]["enum"] == ["auto", "always", "never"]
    assert props["slo"]["properties"]["percentile"] == {
        "default": 90.0, "description": "percentile the targets apply to, %", "maximum": 100.0,
        "exclusiveMaximum": True, "minimum": 50.0, "type": "number"}
    pool = crd("GPUPool")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert pool["properties"]["maxGPUs"]["minimum"] == 0 and "maxGPUs" in pool["required"]


def test_printer_columns_short_names_and_status_subresource():
    w = crd("LLMWorkload")["spec"]
    assert [c["name"] for c in w["versions"][0]["additionalPrinterColumns"]] == [
        "MODEL", "RATE", "TTFT-SLO", "TPOT-SLO", "GPUS", "COST/H", "READY", "AGE"]
    assert w["names"]["shortNames"] == ["llmw"] and w["names"]["categories"] == ["llmfleet"]
    assert crd("GPUPool")["spec"]["names"]["shortNames"][0] == "gpupool"
    for kind in CRD_KINDS:
        version = crd(kind)["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert "default" not in json.dumps(status)  # the operator writes status whole
        # every printer column points at a field the schema declares
        for col in version["additionalPrinterColumns"]:
            node = version["schema"]["openAPIV3Schema"]
            for part in col["jsonPath"].strip(".").split("."):
                if part == "metadata":
                    break
                node = node["properties"][part]


def test_yaml_round_trip():
    for text in crd_files().values():
        doc = yaml.safe_load(text)
        assert doc["kind"] == "CustomResourceDefinition" and doc["spec"]["group"] == "llmfleet.dev"
