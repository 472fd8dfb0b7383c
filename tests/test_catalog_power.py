"""The catalogue's power-limit ranges: present for every GPU, consistent with the TDP, sourced, and
equal to the published nvidia-smi readings where a stored copy was found."""

import pytest

from llmfleet.catalog.gpus import get_gpu, gpu_catalog

GPUS = list(gpu_catalog().values())

NVIDIA_SMI = {
    # GPU: (Min Power Limit, Max Power Limit) as printed by nvidia-smi -q in the cited public thread
    "H100-SXM": (200.0, 700.0),   # stackhpc/ansible-slurm-appliance PR #975
    "A100-40G": (100.0, 400.0),   # NVIDIA/nvidia-docker issue #1648 (A100 SXM4, 400 W)
    "A100-80G": (100.0, 400.0),
    "A40": (100.0, 300.0),        # NVIDIA/nvidia-docker issue #1447 (300 W, 1740 MHz board)
}


@pytest.mark.parametrize("gpu", GPUS, ids=lambda g: g.name)
def test_every_gpu_has_a_sourced_power_limit_range_around_its_tdp(gpu):
    assert gpu.max_power_limit_watts is not None and gpu.max_power_limit_watts >= gpu.tdp_watts
    if gpu.min_power_cap_watts is not None:
        assert 0 < gpu.min_power_cap_watts < gpu.tdp_watts
        # no datacenter part accepts less than a tenth of its TDP
        assert gpu.min_power_cap_watts >= 0.1 * gpu.tdp_watts
    src = gpu.power_limit_source
    assert len(src) > 30
    # a row either cites where it was read or says it was not verified / not found
    assert any(w in src for w in ("nvidia-smi", "datasheet", "brief", "spec", "not found", "unverified", "TDP"))


@pytest.mark.parametrize("name", NVIDIA_SMI)
def test_ranges_match_the_published_nvidia_smi_readings(name):
    gpu = get_gpu(name)
    assert (gpu.min_power_cap_watts, gpu.max_power_limit_watts) == NVIDIA_SMI[name]
    assert "nvidia-smi" in gpu.power_limit_source and "#" in gpu.power_limit_source


def test_unverified_and_unknown_minimums_say_so():
    for gpu in GPUS:
        if gpu.min_power_cap_watts is None:
            assert "not found" in gpu.power_limit_source, gpu.name
        elif gpu.name not in NVIDIA_SMI and "GH200" not in gpu.name:
            assert "unverified" in gpu.power_limit_source, gpu.name
