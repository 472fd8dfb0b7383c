"""CustomResourceDefinitions generated from the pydantic API models.

The models in ``llmfleet.api.models`` are the single source of truth; ``llmfleet crds`` writes the
result to ``crds/`` and a test fails when the files drift. Pydantic emits JSON Schema 2020-12;
Kubernetes wants a *structural* OpenAPI v3.0 schema (no ``$ref``, no ``anyOf`` for nullability,
no ``additionalProperties`` beside ``properties``, boolean ``exclusiveMinimum``), so the schema is
rewritten node by node here. Checks that span fields (``p50 <= p90 <= p99``) cannot be said in a
Kubernetes 1.20 schema; the operator reports them as ``Planned=False`` naming the field.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from llmfleet.api.models import API_GROUP, API_VERSION, FleetPolicy, GPUPool, LLMWorkload

CATEGORY = "llmfleet"


def _column(name: str, typ: str, path: str, **extra: Any) -> dict[str, Any]:
    """One ``additionalPrinterColumns`` entry (``kubectl get`` column)."""
    return {"name": name, "type": typ, "jsonPath": path, **extra}


_AGE = _column("AGE", "date", ".metadata.creationTimestamp")

# kind -> model, scope, plural, short names and printer columns
CRD_KINDS: dict[str, dict[str, Any]] = {
    "LLMWorkload": {
        "model": LLMWorkload, "scope": "Namespaced", "plural": "llmworkloads", "short": ["llmw"],
        "columns": [
            _column("MODEL", "string", ".spec.model"),
            _column("RATE", "number", ".status.demandRps", description="request rate planned for, req/s"),
            _column("TTFT-SLO", "string", ".spec.slo.ttft"),
            _column("TPOT-SLO", "string", ".spec.slo.tpot"),
            _column("GPUS", "integer", ".status.gpus"),
            _column("COST/H", "number", ".status.costPerHour", description="USD per hour"),
            _column("READY", "string", ".status.ready", description="ready/planned replicas"),
            _AGE,
        ],
    },
    "GPUPool": {
        "model": GPUPool, "scope": "Cluster", "plural": "gpupools", "short": ["gpupool", "gpup"],
        "columns": [
            _column("GPU", "string", ".spec.gpuType"),
            _column("MAX-GPUS", "integer", ".spec.maxGPUs"),
            _column("NODES", "integer", ".status.nodes"),
            _column("FREE", "integer", ".status.freeGPUs", description="GPUs free on the pool's nodes"),
            _column("AVAILABLE", "integer", ".status.availableGPUs", description="GPUs the plan may use"),
            _column("PLANNED", "integer", ".status.plannedGPUs"),
            _column("AUTOSCALED", "boolean", ".spec.autoscaled", priority=1),
            _column("$/GPU-H", "number", ".status.costPerGPUHour"),
            _AGE,
        ],
    },
    "FleetPolicy": {
        "model": FleetPolicy, "scope": "Cluster", "plural": "fleetpolicies", "short": ["fleetpol"],
        "columns": [
            _column("MODE", "string", ".spec.mode"),
            _column("PLAN", "string", ".status.planStatus"),
            _column("COST/H", "number", ".status.costPerHour", description="USD per hour"),
            _column("GPUS", "integer", ".status.totalGPUs"),
            _column("GAP", "number", ".status.gap", priority=1),
            _column("SOLVE-S", "number", ".status.solveTimeSeconds", priority=1),
            _AGE,
        ],
    },
}

_DROP = {"title", "additionalProperties", "const"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """Rewrite one pydantic JSON-Schema node into a structural OpenAPI v3.0 node."""
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:  # inline the definition, keeping the field's own description/default
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        node = {**target, **node}
    if "anyOf" in node:  # Optional[X] is anyOf [X, null]
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {options} structurally")
        outer = _structural(node, defs)  # the field's own description and default
        return {**_structural(options[0], defs), **outer, "nullable": True}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            if key == "additionalProperties" and isinstance(value, dict):
                out[key] = _structural(value, defs)  # dict[str, str] maps
            continue
        if key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "properties":
            out[key] = {k: _structural(v, defs) for k, v in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
        elif key == "default" and value is None:
            continue
        else:
            out[key] = value
    if "type" not in out and "properties" in out:
        out["type"] = "object"
    return out


def _without_defaults(node: Any) -> Any:
    """Drop ``default`` everywhere: the operator writes status whole, and the 1.20 API server
    refuses an empty-string default (it reads it as null)."""
    if isinstance(node, list):
        return [_without_defaults(n) for n in node]
    if not isinstance(node, dict):
        return node
    return {k: _without_defaults(v) for k, v in node.items() if k != "default"}


def openapi_schema(kind: str) -> dict[str, Any]:
    """The structural ``openAPIV3Schema`` of one kind (spec and status from the pydantic model).

    Raises:
        KeyError: unknown kind; ValueError: a model uses a construct with no structural form.
    """
    model = CRD_KINDS[kind]["model"]
    js = model.model_json_schema(by_alias=True, mode="validation")
    defs = js.get("$defs", {})
    props = js["properties"]
    schema: dict[str, Any] = {
        "type": "object",
        "description": (model.__doc__ or kind).strip().splitlines()[0],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": _structural(props["spec"], defs),
            "status": _without_defaults(_structural(props["status"], defs)),
        },
    }
    if "spec" in js.get("required", []):
        schema["required"] = ["spec"]
    schema["properties"]["spec"].pop("default", None)
    return schema


def crd(kind: str) -> dict[str, Any]:
    """The full ``apiextensions.k8s.io/v1`` CustomResourceDefinition of one kind."""
    info = CRD_KINDS[kind]
    plural = info["plural"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{API_GROUP}",
            "labels": {"app.kubernetes.io/name": "llmfleet", "app.kubernetes.io/part-of": "llmfleet"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": info["scope"],
            "names": {
                "kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower(),
                "shortNames": info["short"], "categories": [CATEGORY],
            },
            "versions": [{
                "name": API_VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": openapi_schema(kind)},
                "subresources": {"status": {}},
                "additionalPrinterColumns": info["columns"],
            }],
        },
    }


def crd_files() -> dict[str, str]:
    """File name -> YAML text of every CRD, as written to ``crds/``."""
    header = "# Generated by `llmfleet crds` from llmfleet/api/models.py. Do not edit.\n"
    return {
        f"{API_GROUP}_{info['plural']}.yaml": header + yaml.safe_dump(crd(kind), sort_keys=False, width=120)
        for kind, info in CRD_KINDS.items()
    }


def write_crds(directory: str | Path) -> list[Path]:
    """Write every CRD into ``directory`` (created if missing); return the paths written."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in crd_files().items():
        (out / name).write_text(text)
        paths.append(out / name)
    return paths
