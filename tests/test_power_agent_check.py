"""e2e/gpu/power_agent_check.py (for machines with a real GPU) runs here against the NVML fake, so
its own logic is tested where no GPU is: it passes on a well-behaved GPU, restores what it found,
and fails (exit 1) when the limit cannot be set."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from llmfleet.power.nvml import FakeDevices, h100_sxm

REPO = Path(__file__).resolve().parents[1]
UUID = "GPU-12345678-0000-0000-0000-000000000000"


@pytest.fixture
def check_module(monkeypatch):
    spec = importlib.util.spec_from_file_location("power_agent_check", REPO / "e2e" / "gpu" / "power_agent_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    devices = FakeDevices([h100_sxm(UUID)])
    monkeypatch.setattr(module, "PynvmlDevices", lambda: devices)
    monkeypatch.setattr(module, "smi_limits_w", lambda uuid: None)  # no nvidia-smi here
    monkeypatch.setattr(sys, "argv", ["power_agent_check.py"])
    return module, devices


def test_check_passes_and_restores_on_a_conforming_gpu(check_module, capsys):
    module, devices = check_module
    devices.external_set(UUID, 650_000)  # someone's limit before the check
    assert module.main() == 0
    out = capsys.readouterr().out
    assert "set 595.0 W, read back 595.0 W" in out  # 85% of the 700 W default
    assert "refused with NVMLError_InvalidArgument" in out
    assert "agent set the pod's cap: 560.0 W" in out  # the agent pass: 80% of 700 W
    assert devices.management_limit_mw(UUID) == 650_000  # what was there before is back
    assert devices.writes[UUID] >= 4


def test_check_fails_without_permission(check_module, capsys):
    module, devices = check_module
    devices.permitted = False
    assert module.main() == 1
    assert "CAP_SYS_ADMIN" in capsys.readouterr().out
    assert devices.management_limit_mw(UUID) == 700_000
