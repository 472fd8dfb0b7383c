"""Routing objects (no cluster needed): per routing mode, what the renderer produces for a plan;
InferencePools against the Gateway API Inference Extension's real CRD (../shared/data/crds);
endpoint-picker configs against llm-d's documented plugin names (tests/epp_config.py); every
built-in object against Kubernetes' schemas; every pod against the restricted Pod Security Standard.
"""

from __future__ import annotations

import copy
import io
import json
from contextlib import redirect_stdout
from types import SimpleNamespace

import jsonschema
import kubernetes_validate
import numpy as np
import pytest
import yaml

from epp_config import epp_config_errors
from llmfleet.api.models import FleetPolicy, GPUPool, LLMWorkload, RoutingPolicy
from llmfleet.operator import routing
from llmfleet.operator.rbac import EPP_RULES, OPERATOR_RULES, epp_rules
from llmfleet.operator.render import DEFAULT_PD_THRESHOLD_TOKENS, render_plan
from llmfleet.solver.plan import Assignment, Plan
from pss import restricted_violations

KUBE_VERSION = "1.28.0"


def workload(name="chat-8b", uid="uid-1"):
    md = {"name": name, "namespace": "team-a", **({"uid": uid} if uid else {})}
    return LLMWorkload.model_validate({
        "apiVersion": "llmfleet.dev/v1alpha1", "kind": "LLMWorkload", "metadata": md,
        "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct",
                 "traffic": {"requestRatePerSecond": 2, "inputTokens": {"p50": 100, "p90": 200, "p99": 300},
                             "outputTokens": {"p50": 100, "p90": 200, "p99": 300}},
                 "slo": {"ttft": "1s", "tpot": "100ms"}, "priority": "high"}})


POOLS = {name: GPUPool.model_validate({
    "apiVersion": "llmfleet.dev/v1alpha1", "kind": "GPUPool", "metadata": {"name": name},
    "spec": {"gpuType": gpu, "maxGPUs": 16, "nodeSelector": {"nvidia.com/gpu.product": product}}})
    for name, gpu, product in (("h100", "H100-SXM", "NVIDIA-H100-80GB-HBM3"), ("l40s", "L40S", "NVIDIA-L40S"))}
CONFIG = SimpleNamespace(pool=SimpleNamespace(gpu=SimpleNamespace(tdp_watts=700.0)))


def group(role, pool="h100", tp=1, replicas=2, key="team-a/chat-8b"):
    return Assignment(workload=key, pool=pool, gpu_type=POOLS[pool].spec.gpu_type, tp=tp, replicas=replicas,
                      gpus=tp * replicas, cost_per_hour=1.0, rate_rps=1.0, utilization=0.5,
                      bucket_rate_rps=np.zeros(1), config=CONFIG, role=role)


def plan(*groups, thresholds=None):
    p = Plan(status="optimal", cost_per_hour=1.0, lp_bound=1.0, dual_bound=None, gap=0.0, solve_time_s=0.1,
             solver="test", assignments=list(groups), workloads=[], messages=[])
    if thresholds is not None:
        p.pd_threshold_tokens = thresholds
    return p


PD_PLAN = (group("colocated", "l40s"), group("prefill", "h100", tp=2, replicas=1), group("decode", "h100", tp=1))


def render(p, mode, routing_spec=None, w=None):
    w = w or workload()
    policy = FleetPolicy(metadata={"name": "default"}, spec={"routing": routing_spec or {}})
    return render_plan(p, {w.key: w}, POOLS, policy, mode)


def by_kind(objs):
    out = {}
    for o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


def one(objs, kind, name=None):
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(pod, name):
    return next(c for c in pod["containers"] if c["name"] == name)


def epp_config_of(objs):
    cm = one(objs, "ConfigMap")
    return yaml.safe_load(cm["data"][routing.EPP_CONFIG_FILE])


# ------------------------------------------------------------------ InferencePool against the real CRD


def _openapi_to_jsonschema(node):
    """OpenAPI v3 (CRD) -> JSON Schema draft 4: x-kubernetes-* keys dropped (their CEL rules are
    checked by ``cel_rule_errors``), nullable as a type union."""
    if isinstance(node, list):
        return [_openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _openapi_to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    return node


@pytest.fixture
def pool_validator(shared_data):
    crd = yaml.safe_load((shared_data / "crds" / "inference.networking.k8s.io_inferencepools.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    assert (crd["spec"]["group"], crd["spec"]["names"]["kind"]) == ("inference.networking.k8s.io", "InferencePool")
    return jsonschema.Draft4Validator(_openapi_to_jsonschema(version["schema"]["openAPIV3Schema"]))


def cel_rule_errors(pool: dict) -> list[str]:
    """The CRD's two x-kubernetes-validations rules, as written there:
    endpointPickerRef ``self.kind != 'Service' || has(self.port)`` and targetPorts
    ``self.all(p1, self.exists_one(p2, p1.number==p2.number))``."""
    spec, errors = pool["spec"], []
    ref = spec.get("endpointPickerRef") or {}
    if ref.get("kind", "Service") == "Service" and "port" not in ref:
        errors.append("port is required when kind is 'Service' or unspecified (defaults to 'Service')")
    numbers = [p["number"] for p in spec.get("targetPorts", [])]
    if len(numbers) != len(set(numbers)):
        errors.append("port number must be unique")
    return errors


def test_rendered_inference_pool_validates_against_the_real_crd(pool_validator):
    objs = render(plan(*PD_PLAN), "inferencePool")
    pool = one(objs, "InferencePool")
    pool_validator.validate(pool)
    assert cel_rule_errors(pool) == []
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1" and pool["metadata"]["name"] == "chat-8b"
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    assert pool["spec"]["endpointPickerRef"] == {"kind": "Service", "name": "chat-8b-epp", "port": {"number": 9002},
                                                 "failureMode": "FailOpen"}
    # the selector takes every vLLM pod of the workload (colocated, prefill, decode) and not the picker
    selector = pool["spec"]["selector"]["matchLabels"]
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in by_kind(objs)["Deployment"]}
    chosen = {name for name, labels in pods.items() if selector.items() <= labels.items()}
    assert chosen == {n for n in pods if n != "chat-8b-epp"} and len(chosen) == 3
    # and the validator does refuse what the API server refuses
    bad = copy.deepcopy(pool)
    bad["spec"]["targetPorts"] = []
    with pytest.raises(jsonschema.ValidationError):
        pool_validator.validate(bad)
    bad = copy.deepcopy(pool)
    bad["spec"]["selector"]["matchLabels"] = {"k": "not a label value!"}
    with pytest.raises(jsonschema.ValidationError):
        pool_validator.validate(bad)
    bad = copy.deepcopy(pool)
    del bad["spec"]["endpointPickerRef"]["port"]
    bad["spec"]["targetPorts"] *= 2
    assert len(cel_rule_errors(bad)) == 2


# ------------------------------------------------------------------ endpoint-picker configs


def test_colocated_workload_gets_one_profile_over_all_pods():
    cfg = epp_config_of(render(plan(group("colocated", "l40s"), group("colocated", "h100")), "inferencePool"))
    assert epp_config_errors(cfg) == []
    assert cfg["apiVersion"] == "llm-d.ai/v1alpha1" and cfg["kind"] == "EndpointPickerConfig"
    assert [p["name"] for p in cfg["schedulingProfiles"]] == ["default"]
    types = {p["type"] for p in cfg["plugins"]}
    assert {"single-profile-handler", "prefix-cache-scorer", "queue-scorer", "kv-cache-utilization-scorer"} <= types
    assert not types & {"prefill-filter", "disagg-profile-handler"}


def test_pd_workload_gets_prefill_and_decode_profiles_with_the_plans_threshold():
    cfg = epp_config_of(render(plan(*PD_PLAN, thresholds={"team-a/chat-8b": 1500}), "inferencePool"))
    assert epp_config_errors(cfg) == []
    assert {p["name"] for p in cfg["schedulingProfiles"]} == {"prefill", "decode"}
    decider = next(p for p in cfg["plugins"] if p["type"] == "prefix-based-pd-decider")
    assert decider["parameters"] == {"nonCachedTokens": 1500}
    handler = next(p for p in cfg["plugins"] if p["type"] == "disagg-profile-handler")
    assert handler["parameters"] == {"deciders": {"prefill": "prefix-based-pd-decider"}}
    refs = {p["name"]: [r["pluginRef"] for r in p["plugins"]] for p in cfg["schedulingProfiles"]}
    assert "prefill-filter" in refs["prefill"] and "decode-filter" in refs["decode"]


def test_a_plan_without_a_threshold_sends_every_prompt_through_a_prefill_pod():
    assert DEFAULT_PD_THRESHOLD_TOKENS == 0
    for p in (plan(*PD_PLAN), plan(*PD_PLAN, thresholds={})):
        cfg = epp_config_of(render(p, "standalone"))
        assert epp_config_errors(cfg) == []
        assert "always-disagg-pd-decider" in {x["type"] for x in cfg["plugins"]}
        assert "prefix-based-pd-decider" not in {x["type"] for x in cfg["plugins"]}


def test_the_config_checker_refuses_what_the_picker_refuses():
    good = routing.epp_config(100)
    assert epp_config_errors(good) == []

    def broken(change):
        cfg = copy.deepcopy(good)
        change(cfg)
        return epp_config_errors(cfg)

    assert broken(lambda c: c["plugins"].append({"type": "no-such-scorer"}))
    assert broken(lambda c: c["plugins"].append({"type": "models-responder"}))  # Alpha
    assert broken(lambda c: c["plugins"].append({"type": "single-profile-handler"}))  # two handlers
    assert broken(lambda c: c["schedulingProfiles"][0]["plugins"].append({"pluginRef": "missing"}))
    assert broken(lambda c: c["schedulingProfiles"].pop())  # no decode profile
    assert broken(lambda c: c.update(apiVersion="llm-d.ai/v9"))
    assert broken(lambda c: c.update(schedulingProfile=[]))  # misspelt field: strict decoding
    assert broken(lambda c: c["plugins"][-2]["parameters"].update(nonCachedTokens=-1))


# ------------------------------------------------------------------ per routing mode


def test_inference_pool_mode_objects():
    objs = render(plan(*PD_PLAN), "inferencePool", {"gatewayRef": {"name": "inference-gw", "namespace": "gw"}})
    kinds = by_kind(objs)
    assert set(kinds) == {"Deployment", "InferencePool", "ServiceAccount", "Role", "RoleBinding", "ConfigMap",
                          "Service", "HTTPRoute", "PriorityClass"}
    svc = one(objs, "Service")
    assert svc["metadata"]["name"] == "chat-8b-epp"  # no plain workload Service bypassing the picker
    assert {p["port"] for p in svc["spec"]["ports"]} == {9002, 9090}
    epp = one(objs, "Deployment", "chat-8b-epp")
    pod = epp["spec"]["template"]["spec"]
    args = container(pod, "epp")["args"]
    assert args[args.index("--pool-name") + 1] == "chat-8b" and args[args.index("--pool-namespace") + 1] == "team-a"
    assert args[args.index("--pool-group") + 1] == "inference.networking.k8s.io"
    assert args[args.index("--config-file") + 1] == "/config/epp-config.yaml"
    assert "--endpoint-selector" not in args and [c["name"] for c in pod["containers"]] == ["epp"]
    assert svc["spec"]["selector"] == epp["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["selector"].items() <= epp["spec"]["template"]["metadata"]["labels"].items()
    assert pod["serviceAccountName"] == "chat-8b-epp" and pod["priorityClassName"] == "llmfleet-high"
    role = one(objs, "Role")
    assert role["rules"] == epp_rules("inferencePool") == EPP_RULES
    binding = one(objs, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "chat-8b-epp"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "chat-8b-epp", "namespace": "team-a"}]
    route = one(objs, "HTTPRoute")
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                            "name": "inference-gw", "namespace": "gw"}]
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "chat-8b"}]
    assert "HTTPRoute" not in by_kind(render(plan(*PD_PLAN), "inferencePool"))


def test_standalone_mode_runs_the_picker_with_its_proxy_behind_the_workload_service():
    objs = render(plan(*PD_PLAN), "standalone")
    assert "InferencePool" not in by_kind(objs) and "HTTPRoute" not in by_kind(objs)
    epp = one(objs, "Deployment", "chat-8b-epp")
    pod = epp["spec"]["template"]["spec"]
    args = container(pod, "epp")["args"]
    assert args[args.index("--endpoint-selector") + 1] == "app.kubernetes.io/name=vllm,llmfleet.dev/workload=chat-8b"
    assert args[args.index("--endpoint-target-ports") + 1] == "8000" and "--pool-name" not in args
    assert "--secure-serving=false" in args  # the proxy dials plain HTTP/2 on loopback
    assert {e["name"] for e in container(pod, "epp")["env"]} >= {"NAMESPACE", "POD_NAME"}
    proxy = container(pod, "proxy")
    assert proxy["image"] == RoutingPolicy().proxy_image and proxy["ports"][0]["containerPort"] == routing.PROXY_PORT
    svc = one(objs, "Service")
    assert svc["metadata"]["name"] == "chat-8b" and svc["spec"]["selector"] == epp["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert one(objs, "Role")["rules"] == epp_rules("standalone")
    assert not any("inferencepools" in r["resources"] for r in epp_rules("standalone"))
    envoy = yaml.safe_load(one(objs, "ConfigMap")["data"][routing.ENVOY_CONFIG_FILE])
    ext_proc = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"][0]["typed_config"]
    assert ext_proc["processing_mode"]["request_body_mode"] == "FULL_DUPLEX_STREAMED"
    clusters = {c["name"]: c for c in envoy["static_resources"]["clusters"]}
    assert clusters["picked-endpoint"]["original_dst_lb_config"]["http_header_name"] == "x-gateway-destination-endpoint"
    epp_addr = clusters["endpoint-picker"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert epp_addr["socket_address"]["port_value"] == routing.EPP_GRPC_PORT


def test_service_mode_is_the_plain_service():
    objs = render(plan(group("colocated", "l40s")), "service")
    assert set(by_kind(objs)) == {"Deployment", "Service", "PriorityClass"}
    assert one(objs, "Service")["spec"]["selector"] == {"llmfleet.dev/workload": "chat-8b",
                                                        "llmfleet.dev/entrypoint": "true"}
    with pytest.raises(ValueError, match="routing mode"):
        render(plan(group("colocated", "l40s")), "roundRobin")


def test_pd_pods_are_labelled_and_carry_the_nixl_side_channel_and_the_sidecar():
    objs = render(plan(*PD_PLAN), "inferencePool")
    deps = {d["metadata"]["labels"].get("llmfleet.dev/role"): d for d in by_kind(objs)["Deployment"]}
    pods = {role: d["spec"]["template"] for role, d in deps.items() if role}
    assert pods["prefill"]["metadata"]["labels"]["llm-d.ai/role"] == "prefill"
    assert pods["decode"]["metadata"]["labels"]["llm-d.ai/role"] == "decode"
    assert "llm-d.ai/role" not in pods["colocated"]["metadata"]["labels"]  # decode-filter keeps it, prefill-filter not
    images, block_sizes = set(), set()
    for role in ("prefill", "decode"):
        vllm = container(pods[role]["spec"], "vllm")
        env = {e["name"]: e for e in vllm["env"]}
        assert env["VLLM_NIXL_SIDE_CHANNEL_HOST"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        assert env["VLLM_NIXL_SIDE_CHANNEL_PORT"]["value"] == "5600"
        assert {"name": "nixl", "containerPort": 5600, "protocol": "TCP"} in vllm["ports"]
        images.add(vllm["image"])
        block_sizes.add(vllm["args"][vllm["args"].index("--block-size") + 1])
        assert json.loads(vllm["args"][vllm["args"].index("--kv-transfer-config") + 1])["kv_connector"] == "NixlConnector"
    assert len(images) == 1 and block_sizes == {"128"}
    decode = pods["decode"]["spec"]
    vllm, sidecar = container(decode, "vllm"), container(decode, "disagg-sidecar")
    assert vllm["args"][vllm["args"].index("--port") + 1] == "8200"
    assert vllm["readinessProbe"]["httpGet"]["port"] == "vllm"
    assert sidecar["image"] == RoutingPolicy().disagg_sidecar_image
    assert sidecar["args"] == ["--port=8000", "--model-server-port=8200", "--kv-connector=nixlv2", "--secure-proxy=false"]
    assert sidecar["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert pods["decode"]["metadata"]["annotations"]["prometheus.io/port"] == "8200"
    prefill = container(pods["prefill"]["spec"], "vllm")
    assert prefill["args"][prefill["args"].index("--port") + 1] == "8000"
    assert [c["name"] for c in pods["prefill"]["spec"]["containers"]] == ["vllm"]
    colocated = container(pods["colocated"]["spec"], "vllm")
    assert "--block-size" not in colocated["args"] and "VLLM_NIXL_SIDE_CHANNEL_HOST" not in str(colocated["env"])
    # the pinned images and block size are the policy's to change
    custom = render(plan(*PD_PLAN), "inferencePool", {"disaggSidecarImage": "registry.example.com/sidecar:1",
                                                      "pdBlockSizeTokens": 64, "endpointPickerImage": "r/epp:2"})
    dec = next(d for d in by_kind(custom)["Deployment"] if d["metadata"]["name"].endswith("-decode"))
    assert container(dec["spec"]["template"]["spec"], "disagg-sidecar")["image"] == "registry.example.com/sidecar:1"
    assert "64" in container(dec["spec"]["template"]["spec"], "vllm")["args"]
    assert container(one(custom, "Deployment", "chat-8b-epp")["spec"]["template"]["spec"], "epp")["image"] == "r/epp:2"


@pytest.mark.parametrize("mode", ["inferencePool", "standalone", "service"])
def test_every_builtin_object_is_valid_kubernetes_and_every_pod_is_restricted(mode):
    objs = render(plan(*PD_PLAN), mode, {"gatewayRef": {"name": "gw"}})
    checked = 0
    for o in objs:
        md = o["metadata"]
        if o["kind"] != "PriorityClass":
            assert md["labels"]["app.kubernetes.io/managed-by"] == "llmfleet"
            assert md["labels"]["llmfleet.dev/workload"] == "chat-8b"
            assert md["ownerReferences"][0]["uid"] == "uid-1" and md["ownerReferences"][0]["controller"] is True
            assert md["annotations"]["llmfleet.dev/spec-hash"]
        if o["apiVersion"].startswith(("inference.networking.k8s.io/", "gateway.networking.k8s.io/")):
            continue
        kubernetes_validate.validate(o, KUBE_VERSION, strict=True)
        checked += 1
        if o["kind"] == "Deployment":
            assert restricted_violations(o["spec"]["template"]["spec"]) == [], o["metadata"]["name"]
    assert checked >= (5 if mode == "service" else 9)


def test_the_operator_holds_every_permission_it_grants_to_a_picker():
    """Kubernetes refuses a Role that grants more than its creator holds (RBAC escalation check)."""
    held = {(g, r, v) for rule in OPERATOR_RULES for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}
    granted = {(g, r, v) for rule in EPP_RULES for g in rule["apiGroups"] for r in rule["resources"]
               for v in rule["verbs"]}
    assert granted <= held
    assert {v for _, _, v in granted} == {"get", "list", "watch"}  # the picker only reads


def test_workloads_from_files_render_without_owner_references():
    objs = render(plan(*PD_PLAN), "inferencePool", w=workload(uid=None))
    assert not any("ownerReferences" in o["metadata"] for o in objs)


def test_render_command_prints_what_the_operator_would_apply(tmp_path):
    from llmfleet.cli import main
    from conftest import EXAMPLES

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["render", "-f", str(EXAMPLES), "-q"]) == 0
    docs = list(yaml.safe_load_all(out.getvalue()))
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "InferencePool", "ConfigMap", "Role", "PriorityClass"} <= kinds  # offline: inferencePool
    for d in docs:
        if d["kind"] == "ConfigMap":
            assert epp_config_errors(yaml.safe_load(d["data"][routing.EPP_CONFIG_FILE])) == []
    assert main(["render", "-f", str(EXAMPLES), "-q", "-o", str(tmp_path)]) == 0
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.yaml"))
    assert len(written) == len(docs) and "default/inferencepool-chat-8b.yaml" in written
    assert any(w.startswith("_cluster/priorityclass-") for w in written)
