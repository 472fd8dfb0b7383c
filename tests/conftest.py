"""Shared fixtures: paths to the project's examples and to ../shared/data."""

from pathlib import Path

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


def mooncake_fleet(folder: Path, shared: Path, slo: str, priority: str = "high",
                   serving: str = "{tensorParallelSizes: [1, 2, 4]}") -> Path:
    """``folder`` holding the example GPU pools and FleetPolicy and one LLMWorkload ``mc``
    (Llama-3.1-8B) replaying the Mooncake FAST'25 synthetic trace from ``shared`` at rateScale
    0.25 (about 1 req/s of 15k-token prompts), with ``slo``, ``priority`` and ``serving`` as YAML
    flow mappings; returns ``folder``."""
    import shutil

    shutil.copy(shared / "traces" / "mooncake_fast25_synthetic.jsonl", folder / "mc.jsonl")
    for name in ("gpupools.yaml", "fleetpolicy.yaml"):
        shutil.copy(EXAMPLES / name, folder / name)
    (folder / "w.yaml").write_text(f"""
apiVersion: llmfleet.dev/v1alpha1
kind: LLMWorkload
metadata: {{name: mc, namespace: default}}
spec:
  model: meta-llama/Llama-3.1-8B-Instruct
  traffic:
    trace: {{path: mc.jsonl, format: mooncake, rateScale: 0.25}}
  slo: {slo}
  priority: {priority}
  serving: {serving}
""")
    return folder
