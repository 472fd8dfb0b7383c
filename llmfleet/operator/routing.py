"""Routing objects of one workload: how requests reach its vLLM pods (``FleetPolicy.spec.routing``).

Pure functions that return plain manifests; ``render.render_plan`` calls them and adds the common
metadata (labels, owner reference, spec hash). No router is written here: the objects run the
standard components, with the names, flags and ports of their releases pinned in
``RoutingPolicy`` (llm-d 0.9: llm-d-router v0.10.0, vLLM v0.26.0, Gateway API Inference Extension
InferencePool ``inference.networking.k8s.io/v1``).

Modes:
- ``inferencePool``: an ``InferencePool`` selecting every serving pod of the workload, llm-d's
  endpoint picker (EPP: Deployment, Service, ConfigMap, ServiceAccount, Role, RoleBinding) and,
  when ``gatewayRef`` names a Gateway, an ``HTTPRoute`` from it to the pool.
- ``standalone``: the same EPP in standalone mode (``--endpoint-selector``, no CRD) with an Envoy
  proxy in its pod, behind the workload's Service.
- ``service``: the workload's Service alone (``render.render_service``).

P/D (both EPP modes): the picker runs llm-d's ``disagg-profile-handler``: every request first gets a
decode pod; the ``prefix-based-pd-decider`` adds a prefill pod when the prompt's part not in the
decode pod's prefix cache has at least ``nonCachedTokens`` tokens. The decode pod's sidecar then
runs the prefill on that pod and the decode locally; vLLM's NixlConnector pulls the KV cache from
the prefill pod to the decode pod. Sources of every name below:

- llm-d-router docs/disaggregation.md (pod label ``llm-d.ai/role: prefill|decode``, the sidecar on
  decode pods, ``disagg-profile-handler``, ``prefix-based-pd-decider`` and ``nonCachedTokens``);
  pkg/epp/framework/plugins/scheduling/profilehandler/disagg (``nonCachedTokens``: disaggregate when
  the non-cached prompt suffix is at least that many tokens; 0 disables P/D);
  deploy/config/epp-config.yaml and pd-epp-config.yaml (sample configs, ``llm-d.ai/v1alpha1``
  ``EndpointPickerConfig``); pkg/epp/config/loader (strict decoding; one profile handler;
  ``single-profile-handler`` with one profile); cmd/epp/runner/runner.go (plugin registry: every
  plugin used here is Beta, so no ``--allow-experimental-plugins``).
- llm-d-router pkg/epp/server/options.go (EPP flags and ports: ``--pool-name``,
  ``--pool-namespace``, ``--pool-group``, ``--endpoint-selector``, ``--endpoint-target-ports``,
  ``--config-file``, ``--grpc-port`` 9002, ``--grpc-health-port`` 9003, ``--metrics-port`` 9090,
  ``--secure-serving``, ``--metrics-endpoint-auth``, ``--tracing``); config/charts/routerlib
  templates/_deployment.yaml (``NAMESPACE`` and ``POD_NAME`` from the downward API; standalone mode
  reads its Deployment name from ``POD_NAME``), _service.yaml, _inferencepool.yaml
  (``endpointPickerRef`` port 9002, ``failureMode: FailOpen``); Dockerfile.epp and
  Dockerfile.sidecar (both images run as UID 65532).
- llm-d-router pkg/sidecar/proxy/options.go (sidecar ``--port`` 8000, ``--model-server-port``
  default 8200, ``--kv-connector`` ``nixlv2``, ``--secure-proxy``: later releases name it
  ``--secure-serving`` and keep ``--secure-proxy`` as a deprecated alias); llm-d
  guides/recipes/modelserver/base/single-host/pd/vllm/patch-sidecar.yaml and
  guides/pd-disaggregation/modelserver/gpu/vllm/base/patch-{decode,prefill}.yaml (vLLM on 8200
  behind the sidecar, ``--block-size`` equal on both sides, ``VLLM_NIXL_SIDE_CHANNEL_HOST`` from
  ``status.podIP``, heterogeneous TP: prefill TP 1 with decode TP 4).
- vLLM docs features/nixl_connector_usage.md (``VLLM_NIXL_SIDE_CHANNEL_HOST`` defaults to
  localhost, vllm-project/vllm#27083; ``VLLM_NIXL_SIDE_CHANNEL_PORT`` default 5600).
- Gateway API Inference Extension: the InferencePool CRD (../shared/data/crds) and
  docs/proposals/004-endpoint-picker-protocol (the picked endpoint arrives in header
  ``x-gateway-destination-endpoint``; ext_proc body mode ``FULL_DUPLEX_STREAMED``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import yaml

from llmfleet.api.models import RoutingPolicy
from llmfleet.operator.rbac import epp_rules

ROLE_LABEL = "llm-d.ai/role"
"""Pod label the EPP's prefill-filter and decode-filter read; pods without it count as decode-capable
(colocated replicas), never as prefill pods"""
ENGINE_TYPE_LABEL = "llm-d.ai/engine-type"
"""Model-server type label the EPP reads (llm-d-router RELEASE-NOTES, PR 922)"""
ROUTER_LABEL = "llmfleet.dev/router"
"""Selector label of a workload's EPP (and proxy) pods; never on vLLM pods"""

SERVING_PORT = 8000
"""The InferencePool's target port on every pod: vLLM on colocated and prefill pods, the sidecar on decode pods"""
DECODE_VLLM_PORT = 8200
"""vLLM's port behind the decode sidecar (the sidecar's ``--model-server-port`` default)"""
NIXL_SIDE_CHANNEL_PORT = 5600
"""vLLM's NIXL handshake port (``VLLM_NIXL_SIDE_CHANNEL_PORT`` default)"""
EPP_GRPC_PORT, EPP_HEALTH_PORT, EPP_METRICS_PORT = 9002, 9003, 9090
PROXY_PORT = 8081
"""Envoy's listener in standalone mode (llm-d-router's standalone chart uses 8081)"""
EPP_CONFIG_API_VERSION = "llm-d.ai/v1alpha1"
"""``EndpointPickerConfig`` group/version v0.10 decodes (``inference.networking.x-k8s.io/v1alpha1`` is deprecated)"""
EPP_CONFIG_FILE = "epp-config.yaml"
ENVOY_CONFIG_FILE = "envoy.yaml"
CONFIG_DIR = "/config"
EPP_UID = 65532
"""UID of the EPP, sidecar and distroless Envoy images (``USER 65532:65532``)"""

EPP_RESOURCES = {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"memory": "16Gi"}}
"""EPP container resources: llm-d-router's chart defaults (RELEASE-NOTES PR 1229: 4 CPU and 8Gi
requested; routerlib values.yaml: 16Gi memory limit, no CPU limit)"""
PROXY_RESOURCES = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
SIDECAR_RESOURCES = {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
"""The sidecar only relays HTTP (upstream sets no resources); bounded so that it never starves vLLM"""

SCORER_WEIGHTS = (("prefix-cache-scorer", 2), ("queue-scorer", 1), ("kv-cache-utilization-scorer", 1))
"""Scorers of every scheduling profile (prefix-, queue- and KV-cache-aware) and their weights, as in
llm-d-router's deploy/config/pd-epp-config.yaml (prefix 2, queue 1), plus the KV-cache scorer"""

RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "privileged": False, "capabilities": {"drop": ["ALL"]},
                        "runAsNonRoot": True, "readOnlyRootFilesystem": True,
                        "seccompProfile": {"type": "RuntimeDefault"}}
"""Pod Security Standard "restricted" container context; none of the router images needs more"""


@dataclass(frozen=True)
class WorkloadRef:
    """What the routing objects of one workload need to know about it.

    Attributes:
        name, namespace: the LLMWorkload's.
        serving_selector: labels every vLLM pod of the workload carries, and no other pod.
        priority_class: the tier's PriorityClass (the router shares its workload's tier).
    """

    name: str
    namespace: str
    serving_selector: dict[str, str]
    priority_class: str

    @property
    def epp_name(self) -> str:
        """Name of the EPP's Deployment, Service, ConfigMap, ServiceAccount, Role and RoleBinding."""
        return _label(f"{self.name}-epp")

    @property
    def router_selector(self) -> dict[str, str]:
        return {ROUTER_LABEL: _label(self.name)}


def _label(text: str) -> str:
    """A name or label value of at most 63 characters (a long workload name is cut, not hashed:
    workload names are DNS labels of at most 63 characters already)."""
    return text[:63].rstrip("-")


# ------------------------------------------------------------------------------------------ pods


def pod_role_labels(role: str) -> dict[str, str]:
    """Labels the EPP reads on a vLLM pod of ``role`` (colocated pods get no P/D role)."""
    labels = {ENGINE_TYPE_LABEL: "vllm"}
    if role in ("prefill", "decode"):
        labels[ROLE_LABEL] = role
    return labels


def nixl_env() -> list[dict[str, Any]]:
    """vLLM's NIXL side channel on the pod IP (not localhost, its default), on the declared port."""
    return [{"name": "VLLM_NIXL_SIDE_CHANNEL_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "VLLM_NIXL_SIDE_CHANNEL_PORT", "value": str(NIXL_SIDE_CHANNEL_PORT)}]


def decode_sidecar(policy: RoutingPolicy) -> dict[str, Any]:
    """The llm-d P/D sidecar of a decode pod: serves the pod's port 8000, runs the prefill on the
    pod named by the EPP (header ``x-prefiller-host-port``) and then the decode on local vLLM (8200).
    Plain HTTP inside the cluster (``--secure-proxy=false``), as in llm-d's guides; restricted."""
    return {
        "name": "disagg-sidecar",
        "image": policy.disagg_sidecar_image,
        "args": [f"--port={SERVING_PORT}", f"--model-server-port={DECODE_VLLM_PORT}", "--kv-connector=nixlv2",
                 "--secure-proxy=false"],
        "ports": [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
        "resources": SIDECAR_RESOURCES,
        "securityContext": dict(RESTRICTED_CONTAINER),
    }


# ------------------------------------------------------------------------------------------ EPP config


def epp_config(pd_threshold_tokens: int | None) -> dict[str, Any]:
    """The ``EndpointPickerConfig`` of a workload.

    Args:
        pd_threshold_tokens: None for a workload without P/D: one profile (``single-profile-handler``)
            over all its pods. Else the plan's prompt length, tokens, from which a prompt goes
            through a prefill pod: the ``prefix-based-pd-decider``'s ``nonCachedTokens`` (the
            decider compares the prompt's non-cached suffix, so prefix-cache hits keep a long prompt
            local). A threshold below 1 means always: ``always-disagg-pd-decider``.
    """
    scorers = [{"type": t} for t, _ in SCORER_WEIGHTS]

    def profile(name: str, *filters: str) -> dict[str, Any]:
        return {"name": name, "plugins": [*({"pluginRef": f} for f in filters), {"pluginRef": "max-score-picker"},
                                          *({"pluginRef": t, "weight": w} for t, w in SCORER_WEIGHTS)]}

    if pd_threshold_tokens is None:
        return {"apiVersion": EPP_CONFIG_API_VERSION, "kind": "EndpointPickerConfig",
                "plugins": [{"type": "single-profile-handler"}, *scorers, {"type": "max-score-picker"}],
                "schedulingProfiles": [profile("default")]}
    if pd_threshold_tokens >= 1:
        decider = {"type": "prefix-based-pd-decider", "parameters": {"nonCachedTokens": int(pd_threshold_tokens)}}
    else:
        decider = {"type": "always-disagg-pd-decider"}
    return {"apiVersion": EPP_CONFIG_API_VERSION, "kind": "EndpointPickerConfig",
            "plugins": [{"type": "prefill-filter"}, {"type": "decode-filter"}, *scorers, {"type": "max-score-picker"},
                        decider,
                        {"type": "disagg-profile-handler", "parameters": {"deciders": {"prefill": decider["type"]}}}],
            "schedulingProfiles": [profile("prefill", "prefill-filter"), profile("decode", "decode-filter")]}


def envoy_config() -> dict[str, Any]:
    """Envoy's bootstrap for standalone mode: one HTTP listener whose ext_proc filter asks the EPP
    (same pod, plain HTTP/2 on 127.0.0.1:9002) for an endpoint, and an original-destination
    cluster that forwards to the ``ip:port`` the EPP put in ``x-gateway-destination-endpoint``.
    Field names from Envoy's v3 API (http_connection_manager, ext_proc, cluster ORIGINAL_DST)."""
    ext_proc = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
        "grpc_service": {"envoy_grpc": {"cluster_name": "endpoint-picker"}, "timeout": "10s"},
        "processing_mode": {"request_header_mode": "SEND", "response_header_mode": "SEND",
                            "request_body_mode": "FULL_DUPLEX_STREAMED", "response_body_mode": "FULL_DUPLEX_STREAMED",
                            "request_trailer_mode": "SEND", "response_trailer_mode": "SEND"},
        "message_timeout": "1000s",
    }
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "inference",
        "route_config": {"name": "inference", "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            # timeout 0s: streamed generations may last minutes
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "picked-endpoint", "timeout": "0s"}}]}]},
        "http_filters": [
            {"name": "envoy.filters.http.ext_proc", "typed_config": ext_proc},
            {"name": "envoy.filters.http.router",
             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }
    return {"static_resources": {
        "listeners": [{"name": "inference",
                       "address": {"socket_address": {"address": "0.0.0.0", "port_value": PROXY_PORT}},
                       "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                       "typed_config": manager}]}]}],
        "clusters": [
            {"name": "picked-endpoint", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "10s",
             "original_dst_lb_config": {"use_http_header": True, "http_header_name": "x-gateway-destination-endpoint"}},
            {"name": "endpoint-picker", "type": "STATIC", "connect_timeout": "10s",
             "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                 "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                 "explicit_http_config": {"http2_protocol_options": {}}}},
             "load_assignment": {"cluster_name": "endpoint-picker", "endpoints": [{"lb_endpoints": [{"endpoint": {
                 "address": {"socket_address": {"address": "127.0.0.1", "port_value": EPP_GRPC_PORT}}}}]}]}},
        ]}}


# ------------------------------------------------------------------------------------------ objects


def inference_pool(ref: WorkloadRef) -> dict[str, Any]:
    """The workload's InferencePool: all its vLLM pods, port 8000, picked by its EPP."""
    return {"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
            "metadata": {"name": ref.name, "namespace": ref.namespace},
            "spec": {"selector": {"matchLabels": dict(ref.serving_selector)},
                     "targetPorts": [{"number": SERVING_PORT}], "appProtocol": "http",
                     "endpointPickerRef": {"kind": "Service", "name": ref.epp_name,
                                           "port": {"number": EPP_GRPC_PORT}, "failureMode": "FailOpen"}}}


def http_route(ref: WorkloadRef, gateway_name: str, gateway_namespace: str | None) -> dict[str, Any]:
    """HTTPRoute from the named Gateway to the workload's InferencePool (Gateway API v1; a Gateway
    in another namespace must allow routes from this one in its listeners)."""
    parent = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway_name}
    if gateway_namespace:
        parent["namespace"] = gateway_namespace
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": ref.name, "namespace": ref.namespace},
            "spec": {"parentRefs": [parent], "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": ref.name}]}]}}


def epp_objects(ref: WorkloadRef, mode: str, policy: RoutingPolicy, pd_threshold_tokens: int | None) -> list[dict[str, Any]]:
    """The EPP of one workload (``inferencePool`` or ``standalone`` mode): ServiceAccount, Role,
    RoleBinding, ConfigMap, Deployment, and in ``inferencePool`` mode the Service the InferencePool
    names. A hash of the ConfigMap's data goes on the pod template, so that a changed config
    restarts the picker. ``pd_threshold_tokens`` as in ``epp_config``."""
    if mode not in ("inferencePool", "standalone"):
        raise ValueError(f"routing mode {mode!r} runs no endpoint picker")
    name, ns = ref.epp_name, ref.namespace
    data = {EPP_CONFIG_FILE: yaml.safe_dump(epp_config(pd_threshold_tokens), sort_keys=False)}
    if mode == "standalone":
        data[ENVOY_CONFIG_FILE] = yaml.safe_dump(envoy_config(), sort_keys=False)
    config_hash = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    common = ["--config-file", f"{CONFIG_DIR}/{EPP_CONFIG_FILE}", "--grpc-port", str(EPP_GRPC_PORT),
              "--grpc-health-port", str(EPP_HEALTH_PORT), "--metrics-port", str(EPP_METRICS_PORT),
              "--zap-encoder", "json", "--tracing=false", "--metrics-endpoint-auth=false"]
    if mode == "inferencePool":
        args = ["--pool-name", ref.name, "--pool-namespace", ns, "--pool-group", "inference.networking.k8s.io", *common]
    else:
        selector = ",".join(f"{k}={v}" for k, v in sorted(ref.serving_selector.items()))
        # the proxy reaches the picker on loopback in the same pod: plain HTTP/2, no certificate
        args = ["--endpoint-selector", selector, "--endpoint-target-ports", str(SERVING_PORT), *common,
                "--secure-serving=false"]
    # gRPC probes need Kubernetes >= 1.24 (the local test control plane is 1.20): TCP probes on the
    # health port instead, which EPP opens once its configuration loaded
    probe = {"tcpSocket": {"port": "grpc-health"}, "periodSeconds": 10, "failureThreshold": 3}
    epp = {
        "name": "epp", "image": policy.endpoint_picker_image, "args": args,
        "env": [{"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "grpc", "containerPort": EPP_GRPC_PORT, "protocol": "TCP"},
                  {"name": "grpc-health", "containerPort": EPP_HEALTH_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": EPP_METRICS_PORT, "protocol": "TCP"}],
        "readinessProbe": probe, "livenessProbe": {**probe, "initialDelaySeconds": 5},
        "resources": EPP_RESOURCES, "securityContext": dict(RESTRICTED_CONTAINER),
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    containers = [epp]
    if mode == "standalone":
        containers.append({
            "name": "proxy", "image": policy.proxy_image, "command": ["envoy"],
            "args": ["-c", f"{CONFIG_DIR}/{ENVOY_CONFIG_FILE}", "--log-level", "warn"],
            "ports": [{"name": "http", "containerPort": PROXY_PORT, "protocol": "TCP"}],
            "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5},
            "resources": PROXY_RESOURCES, "securityContext": dict(RESTRICTED_CONTAINER),
            "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                             {"name": "tmp", "mountPath": "/tmp"}],
        })
    pod_labels = {**ref.router_selector, "app.kubernetes.io/name": "llm-d-epp", "app.kubernetes.io/component": "router"}
    objects = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name, "namespace": ns},
         "rules": epp_rules(mode)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name, "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
         "spec": {
             # one active picker: its prefix-cache and in-flight accounting are local to the process;
             # Recreate, so that an update never runs two pickers at once (llm-d-router's chart default)
             "replicas": 1, "strategy": {"type": "Recreate"},
             "selector": {"matchLabels": dict(ref.router_selector)},
             "template": {
                 "metadata": {"labels": pod_labels, "annotations": {"llmfleet.dev/config-hash": config_hash}},
                 "spec": {
                     "serviceAccountName": name, "automountServiceAccountToken": True,  # the EPP watches pods
                     "priorityClassName": ref.priority_class, "enableServiceLinks": False,
                     "terminationGracePeriodSeconds": 130,
                     "securityContext": {"runAsNonRoot": True, "runAsUser": EPP_UID, "runAsGroup": EPP_UID,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": containers,
                     "volumes": [{"name": "config", "configMap": {"name": name}}, {"name": "tmp", "emptyDir": {}}],
                 }}}},
    ]
    if mode == "inferencePool":
        objects.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
                        "spec": {"selector": dict(ref.router_selector), "ports": [
                            {"name": "grpc-ext-proc", "port": EPP_GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                            {"name": "http-metrics", "port": EPP_METRICS_PORT, "targetPort": "metrics",
                             "protocol": "TCP"}]}})
    return objects
