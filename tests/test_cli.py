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
