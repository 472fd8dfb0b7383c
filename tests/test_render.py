"""Rendering of plan groups into Kubernetes manifests (no cluster needed)."""

from __future__ import annotations

import json

import numpy as np

from llmfleet.api.models import LLMWorkload
from llmfleet.operator.render import (
    ANNOTATION_SPEC_HASH, deployment_name, dns_name, render_deployment, render_priority_class, spec_hash,
)
from llmfleet.solver.plan import Assignment

WORKLOAD = LLMWorkload.model_validate({
    "apiVersion": "llmfleet.dev/v1alpha1", "kind": "LLMWorkload",
    "metadata": {"name": "chat-8b", "namespace": "team-a", "uid": "1234"},
    "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct",
             "traffic": {"requestRatePerSecond": 2, "inputTokens": {"p50": 100, "p90": 200, "p99": 300},
                         "outputTokens": {"p50": 100, "p90": 200, "p99": 300}},
             "slo": {"ttft": "1s", "tpot": "100ms"}, "priority": "high",
             "serving": {"extraArgs": ["--max-model-len", "8192"]}},
})


def assignment(tp=2, replicas=3, role="colocated", pool="h100-sxm"):
    return Assignment(workload="team-a/chat-8b", pool=pool, gpu_type="H100-SXM", tp=tp, replicas=replicas,
                      gpus=tp * replicas, cost_per_hour=1.0, rate_rps=1.0, utilization=0.5,
                      bucket_rate_rps=np.zeros(1), role=role)


def test_deployment_runs_vllm_with_the_planned_tp_gpus_priority_and_power_cap():
    d = render_deployment(WORKLOAD, assignment(), {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, 550.0, 3)
    assert d["metadata"]["name"] == "chat-8b-h100-sxm-tp2" and d["metadata"]["namespace"] == "team-a"
    assert d["spec"]["replicas"] == 3
    pod = d["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"] == ["vllm", "serve"]
    assert c["args"][:4] == ["meta-llama/Llama-3.1-8B-Instruct", "--tensor-parallel-size", "2", "--port"]
    assert c["args"][-2:] == ["--max-model-len", "8192"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2"  # a string: SSA wants quantities typed
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert pod["priorityClassName"] == "llmfleet-high"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert d["spec"]["template"]["metadata"]["annotations"]["llmfleet.dev/gpu-power-limit-watts"] == "550"
    assert d["metadata"]["ownerReferences"] == [{"apiVersion": "llmfleet.dev/v1alpha1", "kind": "LLMWorkload",
                                                 "name": "chat-8b", "uid": "1234", "controller": True,
                                                 "blockOwnerDeletion": True}]
    assert d["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "llmfleet"
    # the selector is immutable in apps/v1: it must not depend on anything the plan can change
    assert d["spec"]["selector"]["matchLabels"] == {"llmfleet.dev/workload": "chat-8b",
                                                    "llmfleet.dev/group": "chat-8b-h100-sxm-tp2"}


def test_external_replicas_leave_the_field_out_and_the_hash_tracks_content():
    a = render_deployment(WORKLOAD, assignment(), {}, 700, 3)
    b = render_deployment(WORKLOAD, assignment(replicas=4), {}, 700, 4)
    ext = render_deployment(WORKLOAD, assignment(), {}, 700, None)
    assert "replicas" not in ext["spec"]
    assert a["metadata"]["annotations"][ANNOTATION_SPEC_HASH] != b["metadata"]["annotations"][ANNOTATION_SPEC_HASH]
    assert a["metadata"]["annotations"][ANNOTATION_SPEC_HASH] == spec_hash(a)


def test_prefill_and_decode_roles_get_kv_transfer_flags_and_only_decode_takes_requests():
    p = render_deployment(WORKLOAD, assignment(role="prefill"), {}, 700, 1)
    d = render_deployment(WORKLOAD, assignment(role="decode"), {}, 700, 1)
    assert p["metadata"]["name"].endswith("-prefill") and d["metadata"]["name"].endswith("-decode")
    for dep in (p, d):
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        cfg = json.loads(args[args.index("--kv-transfer-config") + 1])
        assert cfg == {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
    plain = render_deployment(WORKLOAD, assignment(), {}, 700, 1)
    assert "--kv-transfer-config" not in plain["spec"]["template"]["spec"]["containers"][0]["args"]
    # with NixlConnector the decode side pulls the KV cache: requests enter a decode pod (its
    # P/D sidecar); a prefill pod is reached only through the sidecar
    assert d["spec"]["template"]["metadata"]["labels"].get("llmfleet.dev/entrypoint") == "true"
    assert plain["spec"]["template"]["metadata"]["labels"].get("llmfleet.dev/entrypoint") == "true"
    assert "llmfleet.dev/entrypoint" not in p["spec"]["template"]["metadata"]["labels"]


def test_vllm_pods_set_user_for_a_uid_without_a_passwd_entry():
    env = {e["name"]: e.get("value") for e in
           render_deployment(WORKLOAD, assignment(), {}, 700, 1)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["USER"] and env["HOME"]  # torch >= 2.11 calls getpass.getuser() at import (vllm#44548)


def test_names_are_dns_labels_and_long_ones_stay_unique():
    long_a = deployment_name("a" * 60, "pool-x", 8, "decode")
    long_b = deployment_name("a" * 60, "pool-y", 8, "decode")
    assert len(long_a) <= 52 and long_a != long_b
    assert dns_name("H100_SXM.80GB") == "h100-sxm-80gb"


def test_priority_class_per_tier():
    pc = render_priority_class("critical", 1_000_000)
    assert (pc["metadata"]["name"], pc["value"], pc["globalDefault"]) == ("llmfleet-critical", 1_000_000, False)


def test_rendered_pods_are_hardened_and_pass_the_restricted_pod_security_standard():
    from pss import baseline_violations, restricted_violations

    for role, tp in (("colocated", 1), ("prefill", 4), ("decode", 8)):
        d = render_deployment(WORKLOAD, assignment(tp=tp, role=role), {}, 700, 1)
        pod = d["spec"]["template"]["spec"]
        assert restricted_violations(pod) == [] and baseline_violations(pod) == []  # the decode sidecar too
        assert pod["automountServiceAccountToken"] is False
        assert len(pod["containers"]) == (2 if role == "decode" else 1)
        c = pod["containers"][0]
        # CPU and memory requested and limited, scaled by TP (defaults 4 cores and 32 GiB per GPU)
        assert c["resources"]["requests"]["cpu"] == f"{4000 * tp}m" and c["resources"]["limits"]["cpu"] == f"{8000 * tp}m"
        assert c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"] == f"{32 * tp}Gi"
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]
        assert shm == {"medium": "Memory", "sizeLimit": f"{2 * tp}Gi"}
        # a non-root vLLM needs a writable HOME and caches
        env = {e["name"]: e.get("value") for e in c["env"]}
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert env["HOME"] in mounts and env["HF_HOME"].startswith(env["HOME"])


def test_the_pod_security_checker_refuses_each_kind_of_violation():
    from pss import baseline_violations, restricted_violations

    good = render_deployment(WORKLOAD, assignment(), {}, 700, 1)["spec"]["template"]["spec"]

    def broken(change):
        pod = json.loads(json.dumps(good))
        change(pod)
        return pod

    c = lambda pod: pod["containers"][0]  # noqa: E731
    assert baseline_violations(broken(lambda p: p.update(hostNetwork=True)))
    assert baseline_violations(broken(lambda p: c(p)["securityContext"].update(privileged=True)))
    assert baseline_violations(broken(lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}})))
    assert baseline_violations(broken(lambda p: c(p)["securityContext"].update(capabilities={"add": ["SYS_ADMIN"]})))
    assert restricted_violations(broken(lambda p: c(p)["securityContext"].update(allowPrivilegeEscalation=True)))
    assert restricted_violations(broken(lambda p: (p["securityContext"].pop("runAsNonRoot"),
                                                  c(p)["securityContext"].pop("runAsNonRoot"))))
    assert restricted_violations(broken(lambda p: c(p)["securityContext"].update(capabilities={"drop": []})))
    assert restricted_violations(broken(lambda p: (p["securityContext"].pop("seccompProfile"),
                                                  c(p)["securityContext"].pop("seccompProfile"))))
