"""Shared fixtures: paths to the project's examples and to ../shared/data."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SHARED_DATA = ROOT.parent / "shared" / "data"
PROFILE_DATA = ROOT / "data" / "profiles"
"""measurements vendored in the repository (NOTICE): what the calibration profiles are fitted on"""


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, which every developer checkout and CI run has beside the project."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present: these tests read the real measurements there")
    return SHARED_DATA


def write_gamma_arrivals(trace: pd.DataFrame, path: Path, arrival_scv: float, seed: int) -> None:
    """``trace`` (``load_trace``'s columns) written to ``path`` in the ``csv`` trace format with
    its inter-arrival times redrawn from a Gamma distribution of squared coefficient of variation
    ``arrival_scv`` (seeded), rescaled so that the span, and so the mean rate, is the trace's:
    the same requests, arriving in bursts."""
    n, span = len(trace), float(trace["arrival_s"].iloc[-1] - trace["arrival_s"].iloc[0])
    gaps = np.random.default_rng(seed).gamma(1.0 / arrival_scv, span / (n - 1) * arrival_scv, n - 1)
    arrival = np.concatenate([[0.0], np.cumsum(gaps)])
    pd.DataFrame({"timestamp": (arrival * span / arrival[-1]).round(6), "input_tokens": trace["input_tokens"],
                  "output_tokens": trace["output_tokens"]}).to_csv(path, index=False)


def mooncake_fleet(folder: Path, shared: Path, slo: str, priority: str = "high",
                   serving: str = "{tensorParallelSizes: [1, 2, 4]}", arrival_scv: float | None = None) -> Path:
    """``folder`` holding the example GPU pools and FleetPolicy and one LLMWorkload ``mc``
    (Llama-3.1-8B) replaying the Mooncake FAST'25 synthetic trace from ``shared`` at rateScale
    0.25 (about 1 req/s of 15k-token prompts), with ``slo``, ``priority`` and ``serving`` as YAML
    flow mappings; returns ``folder``. ``arrival_scv``: replay instead the same requests with
    inter-arrival times drawn from a Gamma distribution of this squared coefficient of variation
    (seeded; the trace's span and so its mean rate kept), a bursty variant of it."""
    import shutil

    from llmfleet.workload.traces import load_trace

    src = shared / "traces" / "mooncake_fast25_synthetic.jsonl"
    if arrival_scv is None:
        shutil.copy(src, folder / "mc.jsonl")
        trace = "{path: mc.jsonl, format: mooncake, rateScale: 0.25}"
    else:
        write_gamma_arrivals(load_trace(src, "mooncake"), folder / "mc.csv", arrival_scv, seed=1)
        trace = "{path: mc.csv, format: csv, rateScale: 0.25}"
    for name in ("gpupools.yaml", "fleetpolicy.yaml"):
        shutil.copy(EXAMPLES / name, folder / name)
    write_llama_workload(folder, "mc", trace, slo, priority, serving)
    return folder


def write_llama_workload(folder: Path, name: str, trace: str, slo: str, priority: str, serving: str) -> None:
    """``folder/w.yaml``: an LLMWorkload ``name`` (namespace default, Llama-3.1-8B-Instruct)
    replaying ``trace`` with ``slo`` and ``serving``, each a YAML flow mapping, at ``priority``."""
    (folder / "w.yaml").write_text(f"""
apiVersion: llmfleet.dev/v1alpha1
kind: LLMWorkload
metadata: {{name: {name}, namespace: default}}
spec:
  model: meta-llama/Llama-3.1-8B-Instruct
  traffic:
    trace: {trace}
  slo: {slo}
  priority: {priority}
  serving: {serving}
""")
