"""Tenancy: what the LLMWorkloads of a namespace may ask for, from ``FleetPolicy.spec.tenancy``.

Creating an LLMWorkload makes the operator create Pods on GPUs with the operator's own rights. So
every field that would give a tenant more than the cluster admin allowed is checked here before a
workload is planned: the priority tier (a higher tier preempts other tenants' pods), the image and
the extra ``vllm serve`` arguments (a way around RBAC that forbids the tenant to create Pods:
``--trust-remote-code`` runs code from the model repository, other flags open files or ports), and
the GPUs a namespace may hold (a per-namespace constraint of the MILP, in ``llmfleet plan`` too).
The operator refuses workloads that break the rules; ``llmfleet plan``, run by the admin on files,
applies only the quotas.

The defaults are safe: a namespace no rule covers may use only the default tier
(``FleetPolicySpec.default_tier``), the default vLLM image and no extra arguments. Pure logic on
the API models: no Kubernetes calls.
"""

from __future__ import annotations

import fnmatch
import re

from llmfleet.api.models import DEFAULT_IMAGE, FleetPolicy, LLMWorkload, TenantRule

RESERVED_FLAGS = ("--tensor-parallel-size", "--port", "--gpu-memory-utilization", "--kv-transfer-config", "--host",
                  "--quantization", "--kv-cache-dtype", "--max-num-seqs", "--max-num-batched-tokens", "--block-size")
"""Flags llmfleet sets itself (from the plan, the Service and spec.serving): never taken from extraArgs"""

_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def covers(rule: TenantRule, namespace: str, labels: dict[str, str] | None) -> bool:
    """Whether ``rule`` covers ``namespace`` with ``labels`` (None: labels unknown, so a rule with a
    ``namespaceSelector`` cannot match)."""
    if rule.namespaces and not any(fnmatch.fnmatchcase(namespace, pattern) for pattern in rule.namespaces):
        return False
    if rule.namespace_selector:
        return labels is not None and all(labels.get(k) == v for k, v in rule.namespace_selector.items())
    return True


def rule_for(policy: FleetPolicy, namespace: str,
             labels: dict[str, str] | None = None) -> tuple[int, TenantRule] | None:
    """The first tenancy rule (index, rule) covering ``namespace`` (whose labels are ``labels``), or None."""
    for i, rule in enumerate(policy.spec.tenancy.rules):
        if covers(rule, namespace, labels):
            return i, rule
    return None


def image_allowed(image: str, allowed: list[str]) -> bool:
    """``image`` is the default image, equals an allowed entry, or starts with an allowed prefix
    that ends in '/' or ':' (so ``registry.example.com/`` never admits ``registry.example.com.evil/``)."""
    if image == DEFAULT_IMAGE:
        return True
    return any(image == a or (a.endswith(("/", ":")) and image.startswith(a)) for a in allowed)


def flags_of(args: list[str]) -> list[str]:
    """The flag names in an argument list (``--x=1`` gives ``--x``); values, negative numbers included, are not flags."""
    out = []
    for arg in args:
        if arg.startswith("-") and not _NUMBER.match(arg):
            out.append(arg.split("=", 1)[0])
    return out


def violation(policy: FleetPolicy, w: LLMWorkload, labels: dict[str, str] | None = None) -> str | None:
    """Why ``w`` asks for more than its namespace may, naming the field and the rule; None if it does not.

    Returns:
        e.g. ``spec.priority: tier 'critical' is not allowed in namespace team-a (FleetPolicy default
        spec.tenancy.rules[0] allows: standard, high)``.
    """
    ns = w.namespace
    found = rule_for(policy, ns, labels)
    where = (f"FleetPolicy {policy.metadata.name} spec.tenancy.rules[{found[0]}]" if found
             else f"no rule of FleetPolicy {policy.metadata.name} spec.tenancy.rules covers namespace {ns}")
    rule = found[1] if found else None
    tiers = [policy.spec.default_tier, *(t for t in (rule.tiers if rule else []) if t != policy.spec.default_tier)]
    if w.spec.priority not in tiers:
        return f"spec.priority: tier {w.spec.priority!r} is not allowed in namespace {ns} ({where}; allowed: {', '.join(tiers)})"
    s = w.spec.serving
    if not image_allowed(s.image, rule.images if rule else []):
        allowed = ", ".join([DEFAULT_IMAGE, *(rule.images if rule else [])])
        return f"spec.serving.image: {s.image[:120]!r} is not allowed in namespace {ns} ({where}; allowed: {allowed})"
    flags = flags_of(s.extra_args)
    reserved = [f for f in flags if f in RESERVED_FLAGS]
    if reserved:
        return f"spec.serving.extraArgs: {reserved[0]} is set by llmfleet from the plan and cannot be overridden"
    allowed_flags = set(rule.extra_args if rule else [])
    bad = [f for f in flags if f not in allowed_flags]
    if bad:
        return (f"spec.serving.extraArgs: {bad[0][:80]} is not allowed in namespace {ns} ({where}; allowed: "
                f"{', '.join(sorted(allowed_flags)) or 'no extra arguments'})")
    if s.extra_args and not flags_of(s.extra_args[:1]):
        return "spec.serving.extraArgs: must start with a flag (--name)"
    return None


def gpu_quotas(policy: FleetPolicy, workloads: list[LLMWorkload],
               namespace_labels: dict[str, dict[str, str]] | None = None) -> dict[str, tuple[int, frozenset[str]]]:
    """Per-namespace GPU quotas that apply: namespace -> (max GPUs, keys of its workloads).
    ``namespace_labels``: namespace -> its labels, where known."""
    by_ns: dict[str, set[str]] = {}
    for w in workloads:
        by_ns.setdefault(w.namespace, set()).add(w.key)
    out = {}
    for ns, keys in by_ns.items():
        found = rule_for(policy, ns, (namespace_labels or {}).get(ns))
        if found and found[1].max_gpus is not None:
            out[ns] = (found[1].max_gpus, frozenset(keys))
    return out
