"""One fleet for several traffic scenarios (issue 14 item 5): ``llmfleet plan --scenarios``."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd

from conftest import EXAMPLES
from test_cli import LLMFLEET


def heavier(tmp_path):
    """The Azure hour with every request's lengths drawn from the requests whose prompt is above the
    median: the same arrivals, about twice the work."""
    df = pd.read_csv(EXAMPLES / "traces" / "azure_llm_2023_conv.csv")
    rng = np.random.default_rng(0)
    heavy = df[df["ContextTokens"] > df["ContextTokens"].median()]
    pick = heavy.iloc[rng.integers(len(heavy), size=len(df))]
    df["ContextTokens"] = pick["ContextTokens"].to_numpy()
    df["GeneratedTokens"] = pick["GeneratedTokens"].to_numpy()
    path = tmp_path / "azure_heavier.csv"
    df.to_csv(path, index=False)
    return path


def plan(*args):
    r = subprocess.run([LLMFLEET, "plan", "-f", EXAMPLES, "-o", "json", "--no-baseline", *map(str, args)],
                       capture_output=True, text=True, timeout=600)
    return r.returncode, json.loads(r.stdout) if r.stdout else None, r.stderr


def test_one_fleet_serves_every_scenario_and_says_so(tmp_path):
    trace = heavier(tmp_path)
    rc, single, err = plan()
    assert rc == 0, err
    rc, robust, err = plan("--scenarios", trace)
    assert rc == 0, err  # every scenario meets its target in simulation, or the exit status says so
    (sc,) = robust["scenarios"]
    assert sc["traffic"] == str(trace)
    (res,) = sc["workloads"]
    assert res["workload"] == "default/chat-8b" and res["meetsTarget"]
    # serving the heavier mix too costs more than the planning trace alone, and the workload
    # whose traffic the scenario changes is where the cost goes (more GPUs, or faster ones)
    assert robust["costPerHour"] > single["costPerHour"]
    chat = lambda d: sum(a["costPerHour"] for a in d["assignments"] if a["workload"] == "default/chat-8b")  # noqa: E731
    assert chat(robust) > chat(single)


def test_scenarios_need_a_trace_driven_workload(tmp_path):
    trace = heavier(tmp_path)
    (tmp_path / "w.yaml").write_text((EXAMPLES / "workloads.yaml").read_text().split("---")[1])
    (tmp_path / "p.yaml").write_text((EXAMPLES / "gpupools.yaml").read_text())
    r = subprocess.run([LLMFLEET, "plan", "-f", tmp_path / "w.yaml", "-f", tmp_path / "p.yaml", "--scenarios", trace],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--scenarios" in r.stderr and "spec.traffic.trace" in r.stderr
