"""Render a fleet plan into the Kubernetes objects that run it (plain manifests, no API calls).

``render_plan`` is the one renderer: the operator applies what it returns, and ``llmfleet render``
prints it. One Deployment per (workload, pool, TP, role) running ``vllm serve``; the workload's
routing objects for ``FleetPolicy.spec.routing`` (``routing.py``: InferencePool, endpoint picker,
HTTPRoute, or a plain Service); one PriorityClass per priority tier in use. Everything carries the
labels ``app.kubernetes.io/managed-by: llmfleet`` and ``llmfleet.dev/workload``; namespaced
children carry an owner reference to their LLMWorkload (when it has a UID, i.e. comes from the API
server) so that the garbage collector removes them with it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Collection, Mapping

from llmfleet.api.models import GROUP_VERSION, FleetPolicy, GPUPool, LLMWorkload, RoutingPolicy
from llmfleet.operator import routing
from llmfleet.perf.precision import vllm_flags
from llmfleet.solver.plan import Assignment, Plan

MANAGED_BY = "llmfleet"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_WORKLOAD = "llmfleet.dev/workload"
LABEL_GROUP = "llmfleet.dev/group"
LABEL_ROLE = "llmfleet.dev/role"
LABEL_POOL = "llmfleet.dev/pool"
LABEL_GPU_TYPE = "llmfleet.dev/gpu-type"
LABEL_TP = "llmfleet.dev/tensor-parallel-size"
LABEL_ENTRYPOINT = "llmfleet.dev/entrypoint"
ANNOTATION_POWER_LIMIT = "llmfleet.dev/gpu-power-limit-watts"
ANNOTATION_SPEC_HASH = "llmfleet.dev/spec-hash"
ANNOTATION_EXTERNAL_REPLICAS = "llmfleet.dev/replicas-managed-externally"
"""Set to "true" on a Deployment whose spec.replicas an autoscaler (HPA, KEDA) owns: llmfleet
then leaves the replica count alone and keeps managing the rest of the Deployment."""

PRIORITY_CLASS_PREFIX = "llmfleet-"
VLLM_PORT = 8000
GPU_RESOURCE = "nvidia.com/gpu"

VLLM_UID = 1000
"""UID/GID the vLLM container runs as. The vllm/vllm-openai image has no USER (it runs as root
unless told otherwise); it serves as any UID when HOME and its caches are writable, so llmfleet
points HOME, HF_HOME and the vLLM/Triton caches at an emptyDir and runs it as non-root"""

DEFAULT_PD_THRESHOLD_TOKENS = 0
"""Prompt length from which a prompt goes through a prefill pod when a plan disaggregates a
workload but names no threshold (``Plan.pd_threshold_tokens``): 0, every prompt, as llm-d's P/D
guide configures its picker (``always-disagg-pd-decider``, guides/pd-disaggregation/router)"""

CACHE_DIR = "/var/cache/vllm"
SHM_GIB_PER_GPU = 2
"""/dev/shm size per GPU of a replica, GiB: NCCL's shared-memory transport between TP ranks on one
node; vLLM's Kubernetes guide mounts a memory-backed emptyDir with a 2Gi sizeLimit"""


def dns_name(*parts: str, max_len: int = 63) -> str:
    """Join parts into a DNS-1123 label; names over ``max_len`` keep a stable 8-hex hash suffix."""
    raw = "-".join(p.lower().replace("_", "-").replace(".", "-").replace("/", "-") for p in parts if p)
    raw = "".join(ch for ch in raw if ch.isalnum() or ch == "-").strip("-")
    if len(raw) <= max_len:
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{raw[:max_len - 9].rstrip('-')}-{digest}"


def priority_class_name(tier: str) -> str:
    """Name of the PriorityClass of a FleetPolicy tier: ``llmfleet-<tier>``."""
    return f"{PRIORITY_CLASS_PREFIX}{tier}"


def deployment_name(workload: str, pool: str, tp: int, role: str, cap_watts: float | None = None) -> str:
    """``<workload>-<pool>-tp<N>`` for colocated replicas, with ``-prefill``/``-decode`` for P/D and
    ``-cap<W>w`` for a group under a power cap below the default limit (DESIGN §7: one Deployment
    per workload, GPU type, TP, role and cap)."""
    cap = f"cap{int(round(cap_watts))}w" if cap_watts is not None else ""
    return dns_name(workload, pool, f"tp{tp}", "" if role == "colocated" else role, cap, max_len=52)


def group_deployment_name(workload: str, a: Assignment) -> str:
    """``deployment_name`` of a plan's group ``a`` of the workload named ``workload``."""
    return deployment_name(workload, a.pool, a.tp, a.role, getattr(a.config, "cap_watts", None))


def _owner_references(w: LLMWorkload) -> list[dict[str, Any]]:
    """The controller reference to the LLMWorkload; none for a workload read from a file (no UID:
    ``llmfleet render`` output for GitOps, where nothing owns the objects)."""
    uid = (w.metadata.model_extra or {}).get("uid")
    if not uid:
        return []
    return [{"apiVersion": GROUP_VERSION, "kind": "LLMWorkload", "name": w.metadata.name,
             "uid": uid, "controller": True, "blockOwnerDeletion": True}]


def _child_metadata(w: LLMWorkload, name: str, labels: dict[str, str]) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": w.namespace, "labels": labels}
    refs = _owner_references(w)
    if refs:
        md["ownerReferences"] = refs
    return md


def serving_selector(w: LLMWorkload) -> dict[str, str]:
    """Labels every vLLM pod of ``w`` carries and no other pod (the InferencePool's selector)."""
    return {LABEL_WORKLOAD: w.metadata.name, "app.kubernetes.io/name": "vllm"}


def _base_labels(w: LLMWorkload) -> dict[str, str]:
    return {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": w.metadata.name,
            "app.kubernetes.io/part-of": "llmfleet", LABEL_MANAGED_BY: MANAGED_BY, LABEL_WORKLOAD: w.metadata.name}


def spec_hash(manifest: dict[str, Any]) -> str:
    """Stable short hash of a manifest's content (without the hash annotation itself)."""
    doc = json.loads(json.dumps(manifest, sort_keys=True))
    doc.get("metadata", {}).get("annotations", {}).pop(ANNOTATION_SPEC_HASH, None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def vllm_port(role: str) -> int:
    """vLLM's port: 8000, or 8200 on decode pods, where the P/D sidecar serves 8000."""
    return routing.DECODE_VLLM_PORT if role == "decode" else VLLM_PORT


def vllm_args(w: LLMWorkload, a: Assignment, block_size_tokens: int = 128) -> list[str]:
    """Arguments of ``vllm serve`` for one group (KV transfer and one block size on prefill and
    decode pods, ``block_size_tokens``: ``RoutingPolicy.pd_block_size_tokens``)."""
    s = w.spec.serving
    args = [w.spec.model, "--tensor-parallel-size", str(a.tp), "--port", str(vllm_port(a.role)),
            "--gpu-memory-utilization", f"{s.gpu_memory_utilization:g}", *vllm_flags(s.quantization, s.kv_cache_dtype)]
    if s.max_num_seqs is not None:
        args += ["--max-num-seqs", str(s.max_num_seqs)]
    if s.max_num_batched_tokens is not None:
        args += ["--max-num-batched-tokens", str(s.max_num_batched_tokens)]
    if a.role in ("prefill", "decode"):
        # vLLM's NixlConnector (vLLM >= 0.9, docs "NixlConnector Usage Guide") moves KV caches
        # between any number of prefill and decode instances; both sides run as kv_both and a
        # P/D-aware router (llm-d, Dynamo, vLLM's disagg proxy) pairs them per request; llm-d's
        # P/D guide renders the same --block-size on both sides
        args += ["--kv-transfer-config", json.dumps({"kv_connector": "NixlConnector", "kv_role": "kv_both"}),
                 "--block-size", str(block_size_tokens)]
    return args + list(s.extra_args)


def render_deployment(w: LLMWorkload, a: Assignment, pool_node_selector: dict[str, str],
                      power_limit_watts: float, replicas: int | None,
                      routing_policy: RoutingPolicy | None = None) -> dict[str, Any]:
    """The Deployment of one planned group.

    Args:
        w: the workload (its ``metadata.uid``, when set, makes it the owner).
        a: the planned group (pool, TP, role, replicas).
        pool_node_selector: the GPUPool's ``spec.nodeSelector``.
        power_limit_watts: planned per-GPU power cap, W (annotation read by the power agent).
        replicas: replica count to set; None leaves ``spec.replicas`` out (external autoscaler).
        routing_policy: ``FleetPolicy.spec.routing`` (sidecar image and P/D block size).

    Prefill and decode pods carry llm-d's ``llm-d.ai/role`` label, vLLM's NIXL side channel on
    the pod IP (its port declared) and one ``--block-size``; decode pods add the llm-d P/D sidecar
    on port 8000 with vLLM behind it on 8200 (``routing.py`` names the sources).
    """
    routing_policy = routing_policy or RoutingPolicy()
    name = group_deployment_name(w.metadata.name, a)
    labels = {**_base_labels(w), "app.kubernetes.io/component": a.role, LABEL_ROLE: a.role, LABEL_POOL: a.pool,
              LABEL_GPU_TYPE: dns_name(a.gpu_type), LABEL_TP: str(a.tp), LABEL_GROUP: name}
    pod_labels = {**labels, **routing.pod_role_labels(a.role)}
    if a.role in ("colocated", "decode"):
        pod_labels[LABEL_ENTRYPOINT] = "true"  # requests enter here (a decode pod through its sidecar)
    power = {ANNOTATION_POWER_LIMIT: str(int(round(power_limit_watts)))}
    s = w.spec.serving
    port = vllm_port(a.role)
    cpu_m = int(round(s.cpu_per_gpu * a.tp * 1000))
    memory = f"{int(round(s.memory_gib_per_gpu * a.tp))}Gi"
    env = [{"name": "HOME", "value": CACHE_DIR}, {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
           {"name": "XDG_CACHE_HOME", "value": CACHE_DIR}, {"name": "VLLM_CACHE_ROOT", "value": f"{CACHE_DIR}/vllm"},
           # torch >= 2.11 (vLLM >= 0.20) asks getpass.getuser() at import, which fails for a UID
           # without a passwd entry unless USER is set (vllm-project/vllm#44548; llm-d's vLLM image
           # component sets USER the same way)
           {"name": "USER", "value": "vllm"}]
    ports = [{"name": "vllm" if a.role == "decode" else "http", "containerPort": port, "protocol": "TCP"}]
    if a.role in ("prefill", "decode"):
        env += routing.nixl_env()
        ports.append({"name": "nixl", "containerPort": routing.NIXL_SIDE_CHANNEL_PORT, "protocol": "TCP"})
    vllm = {
        "name": "vllm",
        "image": s.image,
        "command": ["vllm", "serve"],
        "args": vllm_args(w, a, routing_policy.pd_block_size_tokens),
        "env": env,
        "ports": ports,
        "readinessProbe": {"httpGet": {"path": "/health", "port": ports[0]["name"]}, "periodSeconds": 10,
                           "failureThreshold": 3},
        "resources": {
            "requests": {GPU_RESOURCE: str(a.tp), "cpu": f"{cpu_m}m", "memory": memory},
            "limits": {GPU_RESOURCE: str(a.tp), "cpu": f"{2 * cpu_m}m", "memory": memory},
        },
        "securityContext": {"allowPrivilegeEscalation": False, "privileged": False,
                            "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},
                         {"name": "cache", "mountPath": CACHE_DIR}],
    }
    containers = [vllm]
    if a.role == "decode":
        # a regular container, not a native sidecar (initContainers with restartPolicy Always
        # needs Kubernetes >= 1.29): it serves nothing until vLLM answers on 8200 anyway
        containers.append(routing.decode_sidecar(routing_policy))
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {LABEL_WORKLOAD: w.metadata.name, LABEL_GROUP: name}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
        "template": {
            "metadata": {"labels": pod_labels, "annotations": {
                **power, "prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                "prometheus.io/path": "/metrics"}},
            "spec": {
                "priorityClassName": priority_class_name(w.spec.priority),
                "nodeSelector": dict(pool_node_selector),
                "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
                "terminationGracePeriodSeconds": 60,
                # vLLM needs no Kubernetes API access: no token in the pod, no service env vars
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                # Pod Security Standard "restricted": non-root, RuntimeDefault seccomp, no escalation
                "securityContext": {"runAsNonRoot": True, "runAsUser": VLLM_UID, "runAsGroup": VLLM_UID,
                                    "fsGroup": VLLM_UID, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": containers,
                "volumes": [
                    # NCCL between TP ranks needs more shared memory than the container default;
                    # bounded, since a memory-backed emptyDir counts against the node's memory
                    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{SHM_GIB_PER_GPU * a.tp}Gi"}},
                    {"name": "cache", "emptyDir": {}},
                ],
            },
        },
    }
    if replicas is not None:
        spec = {"replicas": replicas, **spec}
    md = _child_metadata(w, name, labels)
    md["annotations"] = dict(power)
    return _with_hash({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": md, "spec": spec})


def _with_hash(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest["metadata"].setdefault("annotations", {})[ANNOTATION_SPEC_HASH] = spec_hash(manifest)
    return manifest


def render_service(w: LLMWorkload, selector: dict[str, str] | None = None) -> dict[str, Any]:
    """The workload's Service, port 80 → the pods' port named ``http``: by default vLLM's OpenAI API
    on colocated pods (and decode pods' sidecars), ``routing`` mode ``service``; in ``standalone``
    mode ``selector`` names the endpoint picker's proxy pods instead."""
    manifest = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _child_metadata(w, w.metadata.name, _base_labels(w)),
        "spec": {
            "selector": selector or {LABEL_WORKLOAD: w.metadata.name, LABEL_ENTRYPOINT: "true"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return _with_hash(manifest)


def render_routing(w: LLMWorkload, mode: str, routing_policy: RoutingPolicy,
                   pd_threshold_tokens: int | None) -> list[dict[str, Any]]:
    """The routing objects of one workload for routing ``mode`` (``routing.py``), with llmfleet's
    labels, owner reference and spec hash. ``pd_threshold_tokens``: None when the workload has no
    P/D group, else the prompt length from which a prompt goes through a prefill pod, tokens.

    Raises:
        ValueError: an unknown mode.
    """
    if mode not in ("inferencePool", "standalone", "service"):
        raise ValueError(f"unknown routing mode {mode!r}; allowed: inferencePool, standalone, service")
    if mode == "service":
        return [render_service(w)]
    ref = routing.WorkloadRef(w.metadata.name, w.namespace, serving_selector(w), priority_class_name(w.spec.priority))
    objects = routing.epp_objects(ref, mode, routing_policy, pd_threshold_tokens)
    if mode == "inferencePool":
        objects.insert(0, routing.inference_pool(ref))
        gw = routing_policy.gateway_ref
        if gw is not None:
            objects.append(routing.http_route(ref, gw.name, gw.namespace))
    labels = {k: v for k, v in _base_labels(w).items() if k != "app.kubernetes.io/name"}
    labels["app.kubernetes.io/component"] = "router"
    out = []
    for m in objects:
        m["metadata"] = {**_child_metadata(w, m["metadata"]["name"], dict(labels)),
                         **{k: v for k, v in m["metadata"].items() if k not in ("name", "namespace")}}
        out.append(_with_hash(m))
    if mode == "standalone":
        out.append(render_service(w, ref.router_selector))
    return out


def render_plan(plan: Plan, workloads: Mapping[str, LLMWorkload], pools: Mapping[str, GPUPool],
                policy: FleetPolicy, routing_mode: str,
                external_replicas: Collection[str] = ()) -> list[dict[str, Any]]:
    """Every object that runs ``plan``: per planned workload its Deployments and routing objects,
    then one PriorityClass per tier in use. The operator applies exactly this (it creates missing
    PriorityClasses only, never updates them); ``llmfleet render`` prints it.

    Args:
        plan: a solved plan (``cost_per_hour`` not None); ``plan.pd_threshold_tokens`` maps a P/D
            workload to its prompt-length threshold (``DEFAULT_PD_THRESHOLD_TOKENS`` if absent).
        workloads: workload key (``namespace/name``) -> LLMWorkload, every key the plan names.
        pools: GPUPool name -> GPUPool, every pool the plan names.
        policy: the FleetPolicy in force (tiers and ``spec.routing``).
        routing_mode: ``RoutingPolicy.effective_mode`` for the cluster (inferencePool, standalone, service).
        external_replicas: ``namespace/name`` of Deployments whose replicas an autoscaler owns
            (``spec.replicas`` is left out of them).
    """
    tiers = {t.name: t.value for t in policy.spec.priority_tiers}
    thresholds = getattr(plan, "pd_threshold_tokens", None) or {}
    by_workload: dict[str, list[Assignment]] = {}
    for a in plan.assignments:
        by_workload.setdefault(a.workload, []).append(a)
    out: list[dict[str, Any]] = []
    for key, groups in by_workload.items():
        w = workloads[key]
        for a in groups:
            pool = pools[a.pool]
            # the planned limit: the cap, else the default limit (the TDP, what the budget counts),
            # never above the pool's declared maximum
            watts = a.config.pool.gpu.tdp_watts
            if pool.spec.power:
                watts = min(watts, pool.spec.power.max_watts)
            if getattr(a.config, "cap_watts", None) is not None:  # the plan's cap (solver.caps)
                watts = min(watts, a.config.cap_watts)
            name = group_deployment_name(w.metadata.name, a)
            replicas = None if f"{w.namespace}/{name}" in external_replicas else a.replicas
            out.append(render_deployment(w, a, pool.spec.node_selector, watts, replicas, policy.spec.routing))
        pd = any(a.role in ("prefill", "decode") for a in groups)
        threshold = thresholds.get(key, DEFAULT_PD_THRESHOLD_TOKENS) if pd else None
        out += render_routing(w, routing_mode, policy.spec.routing, threshold)
    for tier in sorted({workloads[k].spec.priority for k in by_workload}):
        out.append(render_priority_class(tier, tiers[tier]))
    return out


def render_priority_class(tier: str, value: int) -> dict[str, Any]:
    """The PriorityClass of one tier (cluster-scoped, not owned: several workloads share it)."""
    return {
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": priority_class_name(tier),
                     "labels": {LABEL_MANAGED_BY: MANAGED_BY, "app.kubernetes.io/part-of": "llmfleet"}},
        "value": value, "globalDefault": False, "preemptionPolicy": "PreemptLowerPriority",
        "description": f"llmfleet priority tier {tier!r} (FleetPolicy spec.priorityTiers)",
    }


@dataclass(frozen=True)
class ChildKey:
    """Identity of a child object: kind, namespace ('' for cluster-scoped) and name."""

    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> "ChildKey":
        md = manifest["metadata"]
        return cls(manifest["kind"], md.get("namespace") or "", md["name"])
