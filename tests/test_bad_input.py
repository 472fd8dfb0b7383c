"""Every bad input to the installed console script: exit 2, a message naming the file, the object
and the field, no traceback, and nothing of a file's content echoed back.

The inputs are small hand-written manifests, each wrong in one way that a user (or an attacker
who controls one LLMWorkload) can write; the accepted baseline is checked first so each case
fails for its own reason only.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from test_cli import LLMFLEET

WORKLOAD = """\
apiVersion: llmfleet.dev/v1alpha1
kind: LLMWorkload
metadata: {name: chat, namespace: team-a}
spec:
  model: meta-llama/Llama-3.1-8B-Instruct
  traffic:
    requestRatePerSecond: 2
    inputTokens: {p50: 500, p90: 1500, p99: 3000}
    outputTokens: {p50: 100, p90: 300, p99: 600}
  slo: {ttft: 2s, tpot: 100ms, percentile: 90}
  priority: standard
  serving: {tensorParallelSizes: [1, 2], minReplicas: 1}
"""

POOL = """\
apiVersion: llmfleet.dev/v1alpha1
kind: GPUPool
metadata: {name: h100}
spec: {gpuType: H100-SXM, gpusPerNode: 8, maxGPUs: 8, costPerGPUHour: 6.9}
"""

TRACE_WORKLOAD = WORKLOAD.replace("""    requestRatePerSecond: 2
    inputTokens: {p50: 500, p90: 1500, p99: 3000}
    outputTokens: {p50: 100, p90: 300, p99: 600}
""", """    trace: {path: %s, format: %s}
""")

SECRET = "s3cr3t-token-line-that-must-never-be-echoed"


def run(*args, cwd=None, env=None):
    return subprocess.run([LLMFLEET, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, **(env or {})})


def plan_files(tmp_path: Path, workload: str = WORKLOAD, pool: str = POOL, extra: str = "") -> Path:
    d = tmp_path / "m"
    d.mkdir(exist_ok=True)
    (d / "workload.yaml").write_text(workload)
    (d / "pool.yaml").write_text(pool + extra)
    return d


def assert_refused(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr
    assert SECRET not in r.stderr + r.stdout
    for n in needles:
        assert n in r.stderr, f"{n!r} not in: {r.stderr}"


def test_baseline_is_accepted(tmp_path):
    r = run("plan", "-f", plan_files(tmp_path), "--no-baseline", "-q")
    assert r.returncode == 0, r.stderr


# ---- YAML itself -----------------------------------------------------------------------------

def test_non_utf8_yaml(tmp_path):
    d = plan_files(tmp_path)
    (d / "workload.yaml").write_bytes(WORKLOAD.encode().replace(b"chat", b"ch\xff\xfet"))
    assert_refused(run("plan", "-f", d), "workload.yaml", "not UTF-8")


def test_deeply_nested_yaml(tmp_path):
    d = plan_files(tmp_path)
    (d / "workload.yaml").write_text(WORKLOAD + "  extra: " + "[" * 5000 + "]" * 5000 + "\n")
    assert_refused(run("plan", "-f", d), "workload.yaml", "nested too deeply")


def test_duplicate_key(tmp_path):
    d = plan_files(tmp_path, WORKLOAD.replace("  priority: standard\n", "  priority: standard\n  priority: critical\n"))
    assert_refused(run("plan", "-f", d), "workload.yaml", "duplicate key 'priority'", "line 12")


def test_yaml_error_reports_position_not_text(tmp_path):
    d = plan_files(tmp_path, WORKLOAD + f"  bad: [{SECRET}\n")
    assert_refused(run("plan", "-f", d), "workload.yaml", "line ")


# ---- numbers and units -----------------------------------------------------------------------

@pytest.mark.parametrize("old,new,field", [
    ("requestRatePerSecond: 2", "requestRatePerSecond: .inf", "spec.traffic.requestRatePerSecond"),
    ("requestRatePerSecond: 2", "requestRatePerSecond: .nan", "spec.traffic.requestRatePerSecond"),
    ("percentile: 90", "percentile: -.inf", "spec.slo.percentile"),
    ("tpot: 100ms", "tpot: .nan", "spec.slo.tpot"),
    ("ttft: 2s", "ttft: 1", "spec.slo.ttft"),
    ("ttft: 2s", "ttft: '1'", "spec.slo.ttft"),
    ("requestRatePerSecond: 2", "requestRatePerSecond: 1e12", "spec.traffic.requestRatePerSecond"),
    ("minReplicas: 1", "minReplicas: -1", "spec.serving.minReplicas"),
])
def test_non_finite_absurd_or_unitless_numbers_in_a_workload(tmp_path, old, new, field):
    assert old in WORKLOAD
    r = run("plan", "-f", plan_files(tmp_path, WORKLOAD.replace(old, new)))
    assert_refused(r, "workload.yaml", "LLMWorkload/chat", field)


@pytest.mark.parametrize("new,field", [("costPerGPUHour: .inf", "spec.costPerGPUHour"),
                                       ("costPerGPUHour: 1e308", "spec.costPerGPUHour"),
                                       ("costPerGPUHour: .nan", "spec.costPerGPUHour")])
def test_non_finite_or_absurd_pool_price(tmp_path, new, field):
    r = run("plan", "-f", plan_files(tmp_path, pool=POOL.replace("costPerGPUHour: 6.9", new)))
    assert_refused(r, "pool.yaml", "GPUPool/h100", field)


# ---- objects and references ------------------------------------------------------------------

def test_unknown_api_group_is_refused_not_skipped(tmp_path):
    r = run("plan", "-f", plan_files(tmp_path, WORKLOAD.replace("llmfleet.dev/v1alpha1", "llmfleet.io/v1alpha1")))
    assert_refused(r, "workload.yaml", "apiVersion", "llmfleet.dev/v1alpha1")


def test_unknown_api_version_is_refused(tmp_path):
    r = run("plan", "-f", plan_files(tmp_path, pool=POOL.replace("v1alpha1", "v1beta1")))
    assert_refused(r, "pool.yaml", "apiVersion", "version not served")


def test_other_groups_are_still_skipped(tmp_path):
    ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n---\n"
    r = run("plan", "-f", plan_files(tmp_path, ns + WORKLOAD), "--no-baseline", "-q")
    assert r.returncode == 0, r.stderr


def test_rate_and_trace_together(tmp_path):
    w = WORKLOAD.replace("    requestRatePerSecond: 2\n", "    requestRatePerSecond: 2\n    trace: {path: t.csv}\n")
    assert_refused(run("plan", "-f", plan_files(tmp_path, w)), "workload.yaml", "spec.traffic",
                   "requestRatePerSecond", "not both")


def test_token_percentiles_beyond_the_context_window(tmp_path):
    # Llama-3.1-8B's context is 131072 tokens (its config.json: max_position_embeddings)
    w = WORKLOAD.replace("{p50: 500, p90: 1500, p99: 3000}", "{p50: 500, p90: 1500, p99: 200000}")
    assert_refused(run("plan", "-f", plan_files(tmp_path, w)), "workload.yaml", "LLMWorkload/team-a/chat",
                   "spec.traffic.inputTokens.p99", "131072")


@pytest.mark.parametrize("arch,message", [
    ("numAttentionHeads: 32, numKvHeads: 64, hiddenSize: 4096", "numKvHeads (64) cannot exceed numAttentionHeads (32)"),
    ("numAttentionHeads: 30, numKvHeads: 8, hiddenSize: 4096", "multiple of numKvHeads"),
    ("numAttentionHeads: 32, numKvHeads: 8, hiddenSize: 4100", "hiddenSize (4100) must be divisible"),
    ("numAttentionHeads: 32, numKvHeads: 8, hiddenSize: 4096, activeParamsBillion: 9", "activeParamsBillion (9.0) cannot exceed"),
])
def test_impossible_architecture(tmp_path, arch, message):
    w = WORKLOAD.replace("  model: meta-llama/Llama-3.1-8B-Instruct\n", "  model: acme/custom-8b\n  architecture: {numLayers: 32, "
                         f"{arch}, intermediateSize: 14336, vocabSize: 128256, paramsBillion: 8}}\n")
    assert_refused(run("plan", "-f", plan_files(tmp_path, w)), "workload.yaml", "spec.architecture", message)


def test_fleet_policy_not_named_default(tmp_path):
    policy = "---\napiVersion: llmfleet.dev/v1alpha1\nkind: FleetPolicy\nmetadata: {name: prod}\nspec: {headroom: 0.5}\n"
    assert_refused(run("plan", "-f", plan_files(tmp_path, extra=policy)), "pool.yaml", "FleetPolicy/prod",
                   "metadata.name", "'default'")


def test_tier_the_policy_lacks(tmp_path):
    policy = ("---\napiVersion: llmfleet.dev/v1alpha1\nkind: FleetPolicy\nmetadata: {name: default}\n"
              "spec: {priorityTiers: [{name: gold, value: 100}]}\n")
    assert_refused(run("plan", "-f", plan_files(tmp_path, extra=policy)), "workload.yaml", "LLMWorkload/team-a/chat",
                   "spec.priority", "'standard'", "allowed: gold")


def test_duplicate_tier_names(tmp_path):
    policy = ("---\napiVersion: llmfleet.dev/v1alpha1\nkind: FleetPolicy\nmetadata: {name: default}\n"
              "spec: {priorityTiers: [{name: standard, value: 100}, {name: standard, value: 5}]}\n")
    assert_refused(run("plan", "-f", plan_files(tmp_path, extra=policy)), "pool.yaml", "spec.priorityTiers", "unique")


def test_unknown_model_names_file_object_and_field(tmp_path):
    w = WORKLOAD.replace("meta-llama/Llama-3.1-8B-Instruct", "acme/never-heard-of-it")
    assert_refused(run("plan", "-f", plan_files(tmp_path, w)), "workload.yaml", "LLMWorkload/team-a/chat", "spec.model")


def test_unknown_gpu_type_names_file_object_and_field(tmp_path):
    r = run("plan", "-f", plan_files(tmp_path, pool=POOL.replace("H100-SXM", "H900")))
    assert_refused(r, "pool.yaml", "GPUPool/h100", "spec.gpuType")


# ---- traces: confinement, content, rows --------------------------------------------------------

def trace_case(tmp_path, path: str, fmt: str = "csv") -> Path:
    return plan_files(tmp_path, TRACE_WORKLOAD % (path, fmt))


def test_trace_path_escaping_with_dotdot_is_refused_and_not_read(tmp_path):
    (tmp_path / "secret.csv").write_text(SECRET + "\n")
    d = trace_case(tmp_path, "../secret.csv")
    assert_refused(run("plan", "-f", d), "workload.yaml", "LLMWorkload/team-a/chat", "spec.traffic.trace.path",
                   "leads outside")


def test_absolute_trace_path_is_refused(tmp_path):
    (tmp_path / "secret.csv").write_text(SECRET + "\n")
    d = trace_case(tmp_path, str(tmp_path / "secret.csv"))
    assert_refused(run("plan", "-f", d), "spec.traffic.trace.path", "absolute paths are not allowed")


def test_symlink_out_of_the_manifest_folder_is_refused(tmp_path):
    (tmp_path / "secret.csv").write_text(SECRET + "\n")
    d = trace_case(tmp_path, "t.csv")
    (d / "t.csv").symlink_to(tmp_path / "secret.csv")
    assert_refused(run("plan", "-f", d), "spec.traffic.trace.path", "leads outside")


def test_a_file_that_is_no_trace_is_described_without_its_content(tmp_path):
    d = trace_case(tmp_path, "t.csv")
    (d / "t.csv").write_text(f"{SECRET},x,y\n1,2,3\n")
    assert_refused(run("plan", "-f", d), "t.csv", "spec.traffic.trace", "expected columns timestamp, input_tokens, "
                   "output_tokens", "none of the expected column names")


@pytest.mark.parametrize("row,message", [
    ("3,-5,10", "line 3: column input_tokens: token count must be a whole number"),
    ("3,50,99999999999", "line 3: column output_tokens: token count must be a whole number"),
    (f"3,{SECRET},10", "line 3: column input_tokens: not a number"),
    ("inf,5,10", "line 3: column timestamp: not a finite time"),
])
def test_bad_trace_rows_are_named_by_line(tmp_path, row, message):
    d = trace_case(tmp_path, "t.csv")
    (d / "t.csv").write_text(f"timestamp,input_tokens,output_tokens\n1,20,5\n{row}\n4,30,6\n")
    assert_refused(run("plan", "-f", d), "t.csv", "LLMWorkload/team-a/chat", message)


def test_a_trace_whose_requests_all_share_one_instant_has_no_rate(tmp_path):
    d = trace_case(tmp_path, "t.csv")
    (d / "t.csv").write_text("timestamp,input_tokens,output_tokens\n5,20,5\n5,30,6\n5,40,7\n")
    assert_refused(run("plan", "-f", d), "t.csv", "LLMWorkload/team-a/chat", "spec.traffic.trace",
                   "trace spans no time: cannot derive a request rate")


def test_trace_requests_beyond_the_context_window_are_named_as_such(tmp_path):
    # one prompt in 20 of 200k tokens, past Llama-3.1-8B's 131,072: no GPU, TP or SLO serves it
    # (vLLM refuses it), within the p90 allowance; the plan says that the trace is the cause
    d = trace_case(tmp_path, "t.csv")
    rows = "".join(f"{k * 0.5},{200000 if k % 20 == 0 else 800},100\n" for k in range(400))
    (d / "t.csv").write_text("timestamp,input_tokens,output_tokens\n" + rows)
    r = run("plan", "-f", d, "--no-baseline", "-o", "json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert ("team-a/chat: 5.0% of requests are longer than meta-llama/Llama-3.1-8B's context window (131072 "
            "input + output tokens): vLLM refuses them on every GPU: SLO misses whatever the plan"
            in json.loads(r.stdout)["messages"])


# ---- Mélange inputs ---------------------------------------------------------------------------

MELANGE = {"gpu_info": {"A10G": {"cost": 1.01, "tputs": [[2, 1], [5, 2]]}},
           "workload_distribution": [[0.2, 0.1], [0.5, 0.2]], "total_request_rate": 30}


@pytest.mark.parametrize("change,message", [
    ({"workload_distribution": [[0.2, 0.1], [0.5]]}, "workload_distribution[1] has 1 entries; row 0 has 2"),
    ({"gpu_info": {"A10G": {"cost": 1.01, "tputs": [[2, "fast"], [5, 2]]}}}, "gpu_info['A10G'].tputs[0][1]"),
    ({"gpu_info": {"A10G": {"cost": 1.01, "tputs": [[2, 1, 3], [5, 2, 3]]}}}, "has shape (2, 3); workload_distribution has (2, 2)"),
    ({"total_request_rate": "lots"}, "total_request_rate"),
    ({"gpu_info": {"A10G": {"cost": -1, "tputs": [[2, 1], [5, 2]]}}}, "gpu_info['A10G'].cost"),
])
def test_malformed_melange_input(tmp_path, change, message):
    f = tmp_path / "melange.json"
    f.write_text(json.dumps({**MELANGE, **change}))
    assert_refused(run("plan", "--melange", f), "melange.json", message)


def test_melange_nan_and_bad_json(tmp_path):
    f = tmp_path / "melange.json"
    f.write_text(json.dumps(MELANGE).replace("30", "NaN"))
    assert_refused(run("plan", "--melange", f), "melange.json", "total_request_rate")
    f.write_text('{"gpu_info": ' + SECRET)
    assert_refused(run("plan", "--melange", f), "melange.json", "not valid JSON: line 1")


# ---- command-line values ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_plan(tmp_path_factory):
    d = tmp_path_factory.mktemp("plan")
    m = plan_files(d)
    r = run("plan", "-f", m, "-o", "json", "--no-baseline", "-q")
    assert r.returncode == 0, r.stderr
    (d / "plan.json").write_text(r.stdout)
    (d / "t.csv").write_text("timestamp,input_tokens,output_tokens\n0,500,100\n1,800,120\n")
    return d


@pytest.mark.parametrize("args,option", [
    (["--duration", "-5"], "--duration"), (["--rate-scale", "0"], "--rate-scale"),
    (["--rate-scale", "nan"], "--rate-scale"), (["--seed", "-1"], "--seed"),
])
def test_simulate_option_values(saved_plan, args, option):
    r = run("simulate", saved_plan / "plan.json", saved_plan / "t.csv", *args)
    assert_refused(r, option)


def test_plan_verify_rounds_must_not_be_negative(tmp_path):
    assert_refused(run("plan", "-f", plan_files(tmp_path), "--verify", "--verify-rounds", "-1"), "--verify-rounds")


def test_simulate_a_plan_file_that_is_not_a_plan(saved_plan, tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"scenario": {"inputEdgesTokens": "x"}}))
    assert_refused(run("simulate", bad, saved_plan / "t.csv"), "p.json", "scenario")
    bad.write_bytes(b"\xff\xfe")
    assert_refused(run("simulate", bad, saved_plan / "t.csv"), "p.json", "not UTF-8")


def test_simulate_names_the_trace_argument(saved_plan, tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text(f"{SECRET}\n1\n")
    assert_refused(run("simulate", saved_plan / "plan.json", bad), "TRACE", "x.csv", "none of the expected column names")


# ---- minimums beyond the pools --------------------------------------------------------------

SCARCE = """
apiVersion: llmfleet.dev/v1alpha1
kind: LLMWorkload
metadata: {name: gold, namespace: prod}
spec:
  model: meta-llama/Llama-3.1-8B-Instruct
  traffic: {requestRatePerSecond: 10, inputTokens: {p50: 500, p90: 1500, p99: 3000}, outputTokens: {p50: 200, p90: 400, p99: 800}}
  slo: {ttft: 1s, tpot: 100ms}
  priority: critical
---
apiVersion: llmfleet.dev/v1alpha1
kind: LLMWorkload
metadata: {name: bronze, namespace: prod}
spec:
  model: meta-llama/Llama-3.1-70B-Instruct
  traffic: {requestRatePerSecond: 1, inputTokens: {p50: 500, p90: 1500, p99: 3000}, outputTokens: {p50: 200, p90: 400, p99: 800}}
  slo: {ttft: 2s, tpot: 150ms}
  priority: low
  serving: {tensorParallelSizes: [4]}
---
apiVersion: llmfleet.dev/v1alpha1
kind: GPUPool
metadata: {name: h100}
spec: {gpuType: H100-SXM, maxGPUs: 4, gpusPerNode: 8}
---
apiVersion: llmfleet.dev/v1alpha1
kind: FleetPolicy
metadata: {name: default}
spec:
  priorityTiers: [{name: critical, value: 1000000}, {name: low, value: 1000}]
"""


def test_a_lower_tiers_minimum_never_blocks_a_higher_tier(tmp_path):
    """Issue 15's case: gold (an 8B model, 10 req/s) and bronze (a 70B model at TP 4, which alone
    needs all 4 GPUs) with the default minReplicas 1 on 4 H100s. Both minimums together need 5
    GPUs; gold is served in full, bronze's minimum is what gives (exit 3, named)."""
    (tmp_path / "fleet.yaml").write_text(SCARCE)
    r = run("plan", "-f", tmp_path, "-o", "json", "--no-baseline")
    assert r.returncode == 3, r.stderr
    assert "need at least 5 GPUs" in r.stderr and "higher tiers are served first" in r.stderr
    doc = json.loads(r.stdout)
    res = {w["workload"]: w for w in doc["workloads"]}
    assert res["prod/gold"]["shedRps"] == 0 and res["prod/bronze"]["servedRps"] == 0
    assert sum(a["gpus"] for a in doc["assignments"] if a["workload"] == "prod/gold") >= 1
    assert any("prod/bronze" in m and "minReplicas 1 not met" in m for m in doc["messages"])


def test_control_characters_in_a_trace_path(tmp_path):
    d = trace_case(tmp_path, 'x.csv')
    (d / "workload.yaml").write_text((d / "workload.yaml").read_text().replace("path: x.csv", 'path: "x\\0.csv"'))
    assert_refused(run("plan", "-f", d), "spec.traffic.trace.path", "control characters")


def test_a_fifo_is_not_read(tmp_path):
    fifo = tmp_path / "w.yaml"
    os.mkfifo(fifo)
    assert_refused(run("plan", "-f", fifo), "w.yaml", "not a regular file")
