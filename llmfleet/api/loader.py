"""Load Kubernetes-style YAML documents into the API models.

The same files a user gives ``llmfleet plan -f`` go to ``kubectl apply -f``: documents with
``apiVersion: llmfleet.dev/v1alpha1``, ``kind``, ``metadata`` and ``spec``. Documents of other
API groups (a Namespace, a ConfigMap in the same folder) are skipped, so a GitOps folder can be
planned as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from llmfleet.api.models import API_GROUP, KINDS, FleetPolicy, GPUPool, LLMWorkload

YAML_SUFFIXES = (".yaml", ".yml")


class ManifestError(ValueError):
    """A document that cannot be used; the message names the file, the object and the field.

    Attributes:
        obj: ``(kind, key)`` of the offending object when one object is to blame (``key`` is
            ``namespace/name`` for an LLMWorkload, ``name`` for a GPUPool), else None.
    """

    def __init__(self, message: str, obj: tuple[str, str] | None = None):
        super().__init__(message)
        self.obj = obj


@dataclass
class FleetSpec:
    """Everything the planner needs: all workloads, all pools and the (single) policy."""

    workloads: list[LLMWorkload] = field(default_factory=list)
    pools: list[GPUPool] = field(default_factory=list)
    policy: FleetPolicy = field(default_factory=lambda: FleetPolicy(metadata={"name": "default"}))
    sources: dict[str, Path] = field(default_factory=dict)
    """object key (``kind/namespace/name``) -> the file it came from, for error messages"""
    base_dir: Path | None = None
    """folder relative trace paths are resolved against for objects with no source file (the
    operator's ``--trace-dir``); objects read from a file resolve against that file's folder"""


def source_key(obj: LLMWorkload | GPUPool | FleetPolicy) -> str:
    """Key of an object in ``FleetSpec.sources``: ``kind/namespace/name`` (namespace empty when unset)."""
    return f"{obj.kind}/{obj.metadata.namespace or ''}/{obj.metadata.name}"


def format_validation_error(err: ValidationError, where: str) -> str:
    """One line per problem: ``<where>: spec.slo.ttft: invalid duration '5' ...``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(document)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; fields are camelCase)"
        elif e["type"] == "literal_error":
            msg = f"{msg} (got {e.get('input')!r})"
        lines.append(f"{where}: {loc}: {msg}")
    return "\n".join(lines)


def parse_document(doc: dict, where: str) -> LLMWorkload | GPUPool | FleetPolicy | None:
    """Validate one YAML document; return None for documents of other API groups.

    Raises:
        ManifestError: for an llmfleet document with an unknown kind or an invalid field.
    """
    if not isinstance(doc, dict):
        raise ManifestError(f"{where}: expected a mapping with apiVersion, kind, metadata, spec")
    api_version = str(doc.get("apiVersion", ""))
    if not api_version.startswith(API_GROUP + "/"):
        return None
    kind = doc.get("kind")
    if kind not in KINDS:
        raise ManifestError(f"{where}: kind: {kind!r} is not an llmfleet kind; allowed: {', '.join(KINDS)}")
    name = (doc.get("metadata") or {}).get("name", "?")
    try:
        return KINDS[kind].model_validate(doc)
    except ValidationError as err:
        raise ManifestError(format_validation_error(err, f"{where} {kind}/{name}")) from None


def _yaml_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix in YAML_SUFFIXES))
        elif p.exists():
            files.append(p)
        else:
            raise ManifestError(f"{p}: no such file or folder")
    return files


def load_fleet(paths: list[str | Path]) -> FleetSpec:
    """Read YAML files (or folders of them, recursively) into a validated FleetSpec.

    Cross-object checks: unique names per kind, at most one FleetPolicy (named ``default``), every
    workload's ``priority`` is a tier of the policy, at least one workload and one pool.

    Raises:
        ManifestError: naming the file, object and field of every problem found.
    """
    spec = FleetSpec()
    policies: list[FleetPolicy] = []
    for f in _yaml_files([Path(p) for p in paths]):
        try:
            docs = list(yaml.safe_load_all(f.read_text()))
        except yaml.YAMLError as err:
            raise ManifestError(f"{f}: not valid YAML: {err}") from None
        for i, doc in enumerate(docs):
            if doc is None:
                continue
            obj = parse_document(doc, f"{f}[{i}]")
            if obj is None:
                continue
            key = source_key(obj)
            if key in spec.sources:
                raise ManifestError(f"{f}: {obj.kind} {obj.metadata.name!r} is also defined in {spec.sources[key]}")
            spec.sources[key] = f
            if isinstance(obj, LLMWorkload):
                spec.workloads.append(obj)
            elif isinstance(obj, GPUPool):
                spec.pools.append(obj)
            else:
                policies.append(obj)
    if len(policies) > 1:
        raise ManifestError("more than one FleetPolicy given; llmfleet uses a single one named 'default'")
    if policies:
        spec.policy = policies[0]
    validate_fleet(spec)
    return spec


def validate_fleet(spec: FleetSpec) -> None:
    """Checks that span objects. Raises ManifestError."""
    if not spec.workloads:
        raise ManifestError("no LLMWorkload found (apiVersion llmfleet.dev/v1alpha1, kind LLMWorkload)")
    if not spec.pools:
        raise ManifestError("no GPUPool found (apiVersion llmfleet.dev/v1alpha1, kind GPUPool)")
    tiers = [t.name for t in spec.policy.spec.priority_tiers]
    for w in spec.workloads:
        if w.spec.priority not in tiers:
            raise ManifestError(
                f"LLMWorkload {w.key}: spec.priority: {w.spec.priority!r} is not a tier; allowed: {', '.join(tiers)}"
            )
