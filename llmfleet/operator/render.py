"""Render a fleet plan into the Kubernetes objects that run it (plain manifests, no API calls).

One Deployment per (workload, pool, TP, role) running ``vllm serve``; one Service per workload;
one PriorityClass per priority tier in use. Everything carries the labels
``app.kubernetes.io/managed-by: llmfleet`` and ``llmfleet.dev/workload``; namespaced children carry
an owner reference to their LLMWorkload so that the garbage collector removes them with it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from llmfleet.api.models import GROUP_VERSION, LLMWorkload
from llmfleet.perf.precision import vllm_flags
from llmfleet.solver.plan import Assignment

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


def deployment_name(workload: str, pool: str, tp: int, role: str) -> str:
    """``<workload>-<pool>-tp<N>`` for colocated replicas, with ``-prefill``/``-decode`` for P/D."""
    return dns_name(workload, pool, f"tp{tp}", "" if role == "colocated" else role, max_len=52)


def _owner_reference(w: LLMWorkload) -> dict[str, Any]:
    return {"apiVersion": GROUP_VERSION, "kind": "LLMWorkload", "name": w.metadata.name,
            "uid": w.metadata.model_extra["uid"], "controller": True, "blockOwnerDeletion": True}


def _base_labels(w: LLMWorkload) -> dict[str, str]:
    return {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": w.metadata.name,
            "app.kubernetes.io/part-of": "llmfleet", LABEL_MANAGED_BY: MANAGED_BY, LABEL_WORKLOAD: w.metadata.name}


def spec_hash(manifest: dict[str, Any]) -> str:
    """Stable short hash of a manifest's content (without the hash annotation itself)."""
    doc = json.loads(json.dumps(manifest, sort_keys=True))
    doc.get("metadata", {}).get("annotations", {}).pop(ANNOTATION_SPEC_HASH, None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def vllm_args(w: LLMWorkload, a: Assignment) -> list[str]:
    """Arguments of ``vllm serve`` for one group (role flags for disaggregated prefill/decode)."""
    s = w.spec.serving
    args = [w.spec.model, "--tensor-parallel-size", str(a.tp), "--port", str(VLLM_PORT),
            "--gpu-memory-utilization", f"{s.gpu_memory_utilization:g}", *vllm_flags(s.quantization, s.kv_cache_dtype)]
    if s.max_num_seqs is not None:
        args += ["--max-num-seqs", str(s.max_num_seqs)]
    if s.max_num_batched_tokens is not None:
        args += ["--max-num-batched-tokens", str(s.max_num_batched_tokens)]
    if a.role in ("prefill", "decode"):
        # vLLM's NixlConnector (vLLM >= 0.9, docs "NixlConnector Usage Guide") moves KV caches
        # between any number of prefill and decode instances; both sides run as kv_both and a
        # P/D-aware router (llm-d, Dynamo, vLLM's disagg proxy) pairs them per request
        args += ["--kv-transfer-config", json.dumps({"kv_connector": "NixlConnector", "kv_role": "kv_both"})]
    return args + list(s.extra_args)


def render_deployment(w: LLMWorkload, a: Assignment, pool_node_selector: dict[str, str],
                      power_limit_watts: float, replicas: int | None) -> dict[str, Any]:
    """The Deployment of one planned group.

    Args:
        w: the workload (its ``metadata.uid`` must be set: it comes from the API server).
        a: the planned group (pool, TP, role, replicas).
        pool_node_selector: the GPUPool's ``spec.nodeSelector``.
        power_limit_watts: planned per-GPU power cap, W (annotation read by the power agent).
        replicas: replica count to set; None leaves ``spec.replicas`` out (external autoscaler).
    """
    name = deployment_name(w.metadata.name, a.pool, a.tp, a.role)
    labels = {**_base_labels(w), "app.kubernetes.io/component": a.role, LABEL_ROLE: a.role, LABEL_POOL: a.pool,
              LABEL_GPU_TYPE: dns_name(a.gpu_type), LABEL_TP: str(a.tp), LABEL_GROUP: name}
    pod_labels = dict(labels)
    if a.role in ("colocated", "prefill"):
        pod_labels[LABEL_ENTRYPOINT] = "true"  # requests enter here; decode replicas get KV from prefill
    power = {ANNOTATION_POWER_LIMIT: str(int(round(power_limit_watts)))}
    s = w.spec.serving
    cpu_m = int(round(s.cpu_per_gpu * a.tp * 1000))
    memory = f"{int(round(s.memory_gib_per_gpu * a.tp))}Gi"
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {LABEL_WORKLOAD: w.metadata.name, LABEL_GROUP: name}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
        "template": {
            "metadata": {"labels": pod_labels, "annotations": {
                **power, "prometheus.io/scrape": "true", "prometheus.io/port": str(VLLM_PORT),
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
                "containers": [{
                    "name": "vllm",
                    "image": s.image,
                    "command": ["vllm", "serve"],
                    "args": vllm_args(w, a),
                    "env": [{"name": "HOME", "value": CACHE_DIR}, {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
                            {"name": "XDG_CACHE_HOME", "value": CACHE_DIR},
                            {"name": "VLLM_CACHE_ROOT", "value": f"{CACHE_DIR}/vllm"}],
                    "ports": [{"name": "http", "containerPort": VLLM_PORT, "protocol": "TCP"}],
                    "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10,
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
                }],
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
    manifest = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": w.namespace, "labels": labels,
                     "annotations": dict(power), "ownerReferences": [_owner_reference(w)]},
        "spec": spec,
    }
    manifest["metadata"]["annotations"][ANNOTATION_SPEC_HASH] = spec_hash(manifest)
    return manifest


def render_service(w: LLMWorkload) -> dict[str, Any]:
    """The workload's Service: port 80 → vLLM's OpenAI API on colocated and prefill replicas."""
    manifest = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": w.metadata.name, "namespace": w.namespace,
                     "labels": _base_labels(w), "ownerReferences": [_owner_reference(w)]},
        "spec": {
            "selector": {LABEL_WORKLOAD: w.metadata.name, LABEL_ENTRYPOINT: "true"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    manifest["metadata"]["annotations"] = {ANNOTATION_SPEC_HASH: spec_hash(manifest)}
    return manifest


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
