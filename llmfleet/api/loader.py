"""Load Kubernetes-style YAML documents into the API models.

The same files a user gives ``llmfleet plan -f`` go to ``kubectl apply -f``: documents with
``apiVersion: llmfleet.dev/v1alpha1``, ``kind``, ``metadata`` and ``spec``. Documents of other
API groups (a Namespace, a ConfigMap in the same folder) are skipped, so a GitOps folder can be
planned as it is; a document that names one of our kinds, or an ``llmfleet`` group, with another
apiVersion is refused rather than skipped, since that is a typo that would silently drop an object.

Files are read strictly: UTF-8 only, duplicate mapping keys refused (PyYAML keeps the last one
silently; the API server refuses them), nesting depth bounded, and YAML errors reported by line
and column without echoing the file's text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from llmfleet.api.models import API_GROUP, GROUP_VERSION, KINDS, FleetPolicy, GPUPool, LLMWorkload

YAML_SUFFIXES = (".yaml", ".yml")

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
"""Largest manifest file read, bytes (the API server's own request limit is 3 MiB per object)"""

POLICY_NAME = "default"
"""The one FleetPolicy name the operator reads; the CLI refuses others instead of using them"""


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
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    """namespace -> its labels (Namespace documents among the files, or the cluster's), for tenancy
    rules that select namespaces by label"""
    base_dir: Path | None = None
    """folder relative trace paths are resolved against for objects with no source file (the
    operator's ``--trace-dir``); objects read from a file resolve against that file's folder"""


def source_key(obj: LLMWorkload | GPUPool | FleetPolicy) -> str:
    """Key of an object in ``FleetSpec.sources``: ``kind/namespace/name`` (namespace empty when unset)."""
    return f"{obj.kind}/{obj.metadata.namespace or ''}/{obj.metadata.name}"


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def format_validation_error(err: ValidationError, where: str) -> str:
    """One line per problem: ``<where>: spec.slo.ttft: invalid duration '5' ...``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(document)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; fields are camelCase)"
        elif e["type"] == "literal_error":
            msg = f"{msg} (got {_short(e.get('input'))})"
        elif e["type"] == "finite_number":
            msg = "must be a finite number (NaN and infinity are not allowed)"
        lines.append(f"{where}: {loc}: {msg}")
    return "\n".join(lines)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in a mapping (as the API server does)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a scalar",
                                                        key_node.start_mark) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_short(key, 40)} (first at line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _yaml_error(err: yaml.YAMLError) -> str:
    """A YAML error as 'line L, column C: problem', never with the snippet of the file PyYAML adds."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or type(err).__name__
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def read_yaml_documents(path: Path) -> list:
    """All documents of one YAML file, read strictly.

    Raises:
        ManifestError: the file is unreadable, larger than ``MAX_MANIFEST_BYTES``, not UTF-8, not
            valid YAML, has a duplicate key, or is nested too deeply; the message names the file
            and the line, and quotes none of its text.
    """
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB; not a manifest")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not UTF-8 text (invalid byte at offset {err.start}); "
                            "Kubernetes manifests are UTF-8") from None
    except OSError as err:
        raise ManifestError(f"{path}: cannot read: {err.strerror or type(err).__name__}") from None
    try:
        return list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.YAMLError as err:
        raise ManifestError(f"{path}: not valid YAML: {_yaml_error(err)}") from None
    except RecursionError:
        raise ManifestError(f"{path}: not valid YAML: nested too deeply") from None


def parse_document(doc: dict, where: str) -> LLMWorkload | GPUPool | FleetPolicy | None:
    """Validate one YAML document; return None for documents of other API groups.

    Raises:
        ManifestError: for an llmfleet document with an unknown kind or an invalid field.
    """
    if not isinstance(doc, dict):
        raise ManifestError(f"{where}: expected a mapping with apiVersion, kind, metadata, spec")
    api_version = doc.get("apiVersion", "")
    kind = doc.get("kind")
    if not isinstance(api_version, str):
        raise ManifestError(f"{where}: apiVersion must be a string such as {GROUP_VERSION!r}")
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    ours = group == API_GROUP
    if not ours:
        # another group's object is skipped, unless it looks like ours with a wrong apiVersion
        if (isinstance(kind, str) and kind in KINDS) or "llmfleet" in group.lower():
            raise ManifestError(f"{where}: apiVersion: {_short(api_version, 60)} is not served by llmfleet; "
                                f"use {GROUP_VERSION!r} for kind {', '.join(KINDS)}")
        return None
    if api_version != GROUP_VERSION:
        raise ManifestError(f"{where}: apiVersion: {_short(api_version, 60)}: version not served; use {GROUP_VERSION!r}")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ManifestError(f"{where}: kind: {_short(kind, 40)} is not an llmfleet kind; allowed: {', '.join(KINDS)}")
    meta = doc.get("metadata")
    name = meta.get("name", "?") if isinstance(meta, dict) else "?"
    where = f"{where} {kind}/{_short(name, 70) if not isinstance(name, str) else name[:70]}"
    try:
        return KINDS[kind].model_validate(doc)
    except ValidationError as err:
        raise ManifestError(format_validation_error(err, where)) from None
    except RecursionError:
        raise ManifestError(f"{where}: nested too deeply") from None


def _yaml_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix in YAML_SUFFIXES))
        elif p.is_file():
            files.append(p)
        elif p.exists():  # a FIFO or device would block the read or never end
            raise ManifestError(f"{p}: not a regular file or folder")
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
        for i, doc in enumerate(read_yaml_documents(f)):
            if doc is None:
                continue
            if isinstance(doc, dict) and doc.get("apiVersion") == "v1" and doc.get("kind") == "Namespace":
                md = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
                labels = md.get("labels") if isinstance(md.get("labels"), dict) else {}
                if isinstance(md.get("name"), str):
                    spec.namespace_labels[md["name"]] = {str(k): str(v) for k, v in labels.items()}
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
        where = ", ".join(str(spec.sources[source_key(p)]) for p in policies)
        raise ManifestError(f"{where}: more than one FleetPolicy given; llmfleet uses a single one named {POLICY_NAME!r}")
    if policies:
        p = policies[0]
        if p.metadata.name != POLICY_NAME:
            raise ManifestError(f"{spec.sources[source_key(p)]}: FleetPolicy/{p.metadata.name}: metadata.name must be "
                                f"{POLICY_NAME!r}: the operator reads only the policy named {POLICY_NAME!r} and "
                                "would ignore this one")
        spec.policy = p
    validate_fleet(spec)
    return spec


def object_ref(spec: FleetSpec, obj: LLMWorkload | GPUPool | FleetPolicy) -> str:
    """``<file>: <Kind>/<key>`` for messages about ``obj`` (no file for objects not read from one)."""
    key = obj.key if isinstance(obj, LLMWorkload) else obj.metadata.name
    source = spec.sources.get(source_key(obj))
    return f"{source}: {obj.kind}/{key}" if source else f"{obj.kind} {key}"


def validate_fleet(spec: FleetSpec) -> None:
    """Checks that span objects. Raises ManifestError."""
    if not spec.workloads:
        raise ManifestError("no LLMWorkload found (apiVersion llmfleet.dev/v1alpha1, kind LLMWorkload)")
    if not spec.pools:
        raise ManifestError("no GPUPool found (apiVersion llmfleet.dev/v1alpha1, kind GPUPool)")
    tiers = [t.name for t in spec.policy.spec.priority_tiers]
    for w in spec.workloads:
        if w.spec.priority not in tiers:
            policy_src = spec.sources.get(source_key(spec.policy))
            defined = f"the FleetPolicy in {policy_src}" if policy_src else "the default FleetPolicy"
            raise ManifestError(
                f"{object_ref(spec, w)}: spec.priority: {_short(w.spec.priority, 40)} is not a tier of {defined}; "
                f"allowed: {', '.join(tiers)}", ("LLMWorkload", w.key)
            )
