"""The installed ``llmfleet`` console script, run as a user runs it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES

LLMFLEET = shutil.which("llmfleet", path=str(Path(sys.executable).parent))


def run(*args):
    assert LLMFLEET, "the llmfleet console script is not installed in this environment"
    return subprocess.run([LLMFLEET, *args], capture_output=True, text=True, timeout=300)


def test_plan_examples_table():
    r = run("plan", "-f", str(EXAMPLES))
    assert r.returncode == 0, r.stderr
    for header in ("WORKLOAD", "GPU", "TP", "REPLICAS", "GPUS", "$/H", "TTFT ms", "TPOT ms"):
        assert header in r.stdout
    assert "default/chat-8b" in r.stdout and "default/assistant-70b" in r.stdout
    assert "saving:" in r.stdout and "status optimal" in r.stdout


def test_plan_json_is_consistent():
    r = run("plan", "-f", str(EXAMPLES), "-o", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["status"] == "optimal"
    assert doc["costPerHour"] == pytest.approx(sum(a["costPerHour"] for a in doc["assignments"]), abs=1e-3)
    assert doc["totalGPUs"] == sum(a["gpus"] for a in doc["assignments"])
    assert doc["saving"]["baselineCostPerHour"] >= doc["costPerHour"]
    assert doc["baselines"][doc["saving"]["againstGPUType"]]["costPerHour"] == doc["saving"]["baselineCostPerHour"]


def test_plan_melange_example():
    r = run("plan", "--melange", str(EXAMPLES / "melange" / "example.json"), "-o", "json", "--no-baseline")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["costPerHour"] <= 5.69


def test_invalid_input_exits_2_and_names_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((EXAMPLES / "gpupools.yaml").read_text().replace("maxGPUs: 32", "maxGPUs: -1", 1))
    shutil.copy(EXAMPLES / "workloads.yaml", tmp_path / "w.yaml")
    r = run("plan", "-f", str(bad), "-f", str(tmp_path / "w.yaml"))
    assert r.returncode == 2
    assert "spec.maxGPUs" in r.stderr and "greater than or equal to 0" in r.stderr
    assert "Traceback" not in r.stderr


def test_plan_verify_meets_the_target_on_the_shipped_trace():
    r = run("plan", "-f", str(EXAMPLES), "--verify", "-o", "json", "--no-baseline")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    final = doc["verification"]["rounds"][-1]
    assert doc["verification"]["meetsTargets"] and final["costPerHour"] == doc["costPerHour"]
    chat = next(w for w in final["workloads"] if w["workload"] == "default/chat-8b")
    assert chat["requests"] == 19366 and chat["finished"] == 19366  # the whole shipped hour
    assert chat["sloAttainment"] >= chat["targetPercentile"] / 100


def test_verify_repairs_a_plan_made_for_the_median_rate(tmp_path):
    """Planned for the median minute with no headroom, the Azure hour's bursts break the SLO in
    simulation; the repair rounds must add capacity until the target holds."""
    shutil.copytree(EXAMPLES, tmp_path / "ex")
    w = tmp_path / "ex" / "workloads.yaml"
    w.write_text(w.read_text().replace("peakQuantile: 0.9", "peakQuantile: 0.5"))
    p = tmp_path / "ex" / "fleetpolicy.yaml"
    p.write_text(p.read_text().replace("headroom: 0.1", "headroom: 0.0"))
    r = run("plan", "-f", str(tmp_path / "ex"), "--verify", "-o", "json", "--no-baseline")
    assert r.returncode == 0, r.stderr
    rounds = json.loads(r.stdout)["verification"]["rounds"]
    att = [next(x for x in rd["workloads"] if x["workload"] == "default/chat-8b")["sloAttainment"] for rd in rounds]
    assert len(rounds) >= 2 and att[0] < 0.9 <= att[-1]
    assert rounds[0]["capacityCuts"] and rounds[-1]["costPerHour"] > rounds[0]["costPerHour"]


def test_simulate_a_saved_plan(tmp_path):
    r = run("plan", "-f", str(EXAMPLES), "-o", "json", "--no-baseline")
    plan = tmp_path / "plan.json"
    plan.write_text(r.stdout)
    trace = str(EXAMPLES / "traces" / "azure_llm_2023_conv.csv")
    r = run("simulate", str(plan), trace, "--workload", "chat-8b", "--duration", "600", "-o", "json")
    assert r.returncode in (0, 4), r.stderr
    doc = json.loads(r.stdout)
    assert doc["workload"] == "default/chat-8b" and doc["finished"] == doc["requests"] > 1000
    assert {"p50", "p90", "p99"} <= set(doc["ttftSeconds"]) and 0 <= doc["sloAttainment"] <= 1
    # two workloads in the plan: the command asks which one instead of guessing
    r = run("simulate", str(plan), trace)
    assert r.returncode == 2 and "--workload" in r.stderr
    r = run("simulate", str(plan), str(tmp_path / "nope.csv"), "--workload", "chat-8b")
    assert r.returncode == 2 and "trace file not found" in r.stderr and "Traceback" not in r.stderr
