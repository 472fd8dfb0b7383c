"""Tenancy rules (FleetPolicy.spec.tenancy): which rule covers a namespace, and what it allows.

The operator refuses workloads that break them (tests/integration/test_tenancy.py shows it on the
control plane); here the rules themselves, and the GPU quota that `llmfleet plan` applies too.
"""

import pytest

from llmfleet.api.loader import load_fleet
from llmfleet.api.models import DEFAULT_IMAGE, FleetPolicy, LLMWorkload
from llmfleet.api.tenancy import flags_of, gpu_quotas, image_allowed, rule_for, violation
from llmfleet.solver.milp import solve
from llmfleet.solver.problem import build_problem


def policy(rules, tiers=None, default_tier=None):
    spec = {"tenancy": {"rules": rules, **({"defaultTier": default_tier} if default_tier else {})}}
    if tiers:
        spec["priorityTiers"] = tiers
    return FleetPolicy.model_validate({"apiVersion": "llmfleet.dev/v1alpha1", "kind": "FleetPolicy",
                                       "metadata": {"name": "default"}, "spec": spec})


def workload(ns="team-a", tier="standard", image=None, args=()):
    serving = {"extraArgs": list(args), **({"image": image} if image else {})}
    return LLMWorkload.model_validate({
        "apiVersion": "llmfleet.dev/v1alpha1", "kind": "LLMWorkload", "metadata": {"name": "w", "namespace": ns},
        "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct", "priority": tier, "serving": serving,
                 "traffic": {"requestRatePerSecond": 1, "inputTokens": {"p50": 100, "p90": 200, "p99": 300},
                             "outputTokens": {"p50": 50, "p90": 100, "p99": 200}},
                 "slo": {"ttft": "1s", "tpot": "100ms"}}})


def test_the_first_rule_whose_names_and_labels_match_applies():
    p = policy([{"namespaces": ["ml-*"], "namespaceSelector": {"tier": "gold"}, "tiers": ["critical"]},
                {"namespaces": ["ml-*"], "tiers": ["high"]},
                {"namespaceSelector": {"team": "b"}, "maxGPUs": 3}])
    assert rule_for(p, "ml-x", {"tier": "gold"})[0] == 0
    assert rule_for(p, "ml-x", {"tier": "silver"})[0] == 1
    assert rule_for(p, "ml-x", None)[0] == 1  # labels unknown: a selector cannot match
    assert rule_for(p, "other", {"team": "b"})[0] == 2
    assert rule_for(p, "other", {}) is None


def test_without_a_rule_only_the_default_tier_image_and_no_arguments():
    p = policy([])
    assert violation(p, workload()) is None
    assert "spec.priority" in violation(p, workload(tier="high"))
    assert "spec.serving.image" in violation(p, workload(image="docker.io/attacker/anything:latest"))
    assert "spec.serving.extraArgs" in violation(p, workload(args=["--max-model-len", "4096"]))
    # with custom tiers and no `standard`, the default tier is the lowest one
    custom = policy([], tiers=[{"name": "gold", "value": 100}, {"name": "bronze", "value": 1}])
    assert custom.spec.default_tier == "bronze"


def test_a_rule_opens_exactly_what_it_lists():
    p = policy([{"namespaces": ["team-a"], "tiers": ["high"], "images": ["registry.example.com/vllm/", "vllm/vllm-openai:"],
                 "extraArgs": ["--max-model-len", "--enable-prefix-caching"]}])
    assert violation(p, workload(tier="high", image="registry.example.com/vllm/serve:1",
                                 args=["--max-model-len=8192", "--enable-prefix-caching"])) is None
    assert violation(p, workload(image="vllm/vllm-openai:v0.12.0")) is None
    assert "critical" in violation(p, workload(tier="critical"))
    # a prefix must end the registry or repository: no look-alike hosts
    assert "spec.serving.image" in violation(p, workload(image="registry.example.com.evil.io/vllm/serve:1"))
    assert "--trust-remote-code" in violation(p, workload(args=["--trust-remote-code"]))
    assert "--chat-template" in violation(p, workload(args=["--max-model-len", "4096", "--chat-template", "/etc/x"]))
    # what llmfleet sets from the plan can never be overridden, even when listed
    q = policy([{"namespaces": ["team-a"], "extraArgs": ["--port"]}])
    assert "set by llmfleet" in violation(q, workload(args=["--port", "9000"]))
    # P/D needs the same KV block size on prefill and decode pods (vLLM NixlConnector): a tenant's
    # own --block-size would break the handshake, so the plan's is the only one
    r = policy([{"namespaces": ["team-a"], "extraArgs": ["--block-size"]}])
    assert "--block-size is set by llmfleet" in violation(r, workload(args=["--block-size=16"]))


def test_flag_parsing_and_image_prefixes():
    assert flags_of(["--a", "1", "--b=2", "-5", "-c", "0.5"]) == ["--a", "--b", "-c"]
    assert image_allowed(DEFAULT_IMAGE, []) and not image_allowed("vllm/vllm-openai:latest", [])
    assert image_allowed("r.io/x:1", ["r.io/x:1"]) and not image_allowed("r.io/x:2", ["r.io/x:1"])


def test_rules_naming_unknown_tiers_make_the_policy_invalid():
    with pytest.raises(ValueError, match=r"tenancy.rules\[0\].tiers: 'gold'"):
        policy([{"namespaces": ["a"], "tiers": ["gold"]}])
    with pytest.raises(ValueError, match="needs namespaces or namespaceSelector"):
        policy([{"tiers": ["high"]}])


def test_llmfleet_plan_holds_a_namespace_to_its_gpu_quota(tmp_path):
    """The quota is a constraint of the MILP (CLI and operator alike); Namespace documents among the
    files give the labels a selector matches."""
    w = workload(ns="team-a").model_dump(mode="json", by_alias=True, exclude_none=True)
    w["spec"]["traffic"]["requestRatePerSecond"] = 40  # far more than 2 GPUs serve
    w["spec"]["serving"] = {"tensorParallelSizes": [1], "disaggregation": "never"}
    w["spec"]["slo"] = {"ttft": "2s", "tpot": "150ms"}
    import yaml
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a", "labels": {"team": "a"}}}, w,
            {"apiVersion": "llmfleet.dev/v1alpha1", "kind": "GPUPool", "metadata": {"name": "l4"},
             "spec": {"gpuType": "L4", "gpusPerNode": 8, "maxGPUs": 16}},
            {"apiVersion": "llmfleet.dev/v1alpha1", "kind": "FleetPolicy", "metadata": {"name": "default"},
             "spec": {"tenancy": {"rules": [{"namespaceSelector": {"team": "a"}, "maxGPUs": 2}]}}}]
    f = tmp_path / "fleet.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    fleet = load_fleet([f])
    assert fleet.namespace_labels == {"team-a": {"team": "a"}}
    fp = build_problem(fleet)
    assert fp.gpu_quotas == {"team-a": (2, frozenset({"team-a/w"}))}
    plan = solve(fp)
    assert plan.total_gpus == 2 and plan.status == "shortage"
    assert any("GPU quota of namespace team-a reached (2/2 GPUs)" in m for m in plan.messages)
    # labels unknown (no Namespace document): the selector rule does not cover team-a, no quota
    assert gpu_quotas(fleet.policy, fleet.workloads, {}) == {}
    fleet.namespace_labels = {}
    assert solve(build_problem(fleet)).total_gpus > 2
