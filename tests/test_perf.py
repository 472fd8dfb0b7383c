import json
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from llmfleet.api.models import ModelArchitecture
from llmfleet.catalog.gpus import get_gpu
from llmfleet.catalog.models import resolve_model
from llmfleet.perf.calibration import fit, load_splitwise, mdape
from llmfleet.perf.capacity import capacity_rps, kv_capacity_tokens, mdl_wait_quantile_s
from llmfleet.perf.steptime import PerfParams, default_params, prefill_time_s


@pytest.fixture
def splitwise(shared_data):
    return load_splitwise(shared_data / "profiles" / "splitwise_perf_model.csv")


def test_held_out_gpu_accuracy(splitwise):
    """Fit on A100-80GB only, predict the H100 measurements: within 20% median error."""
    p = fit(splitwise[splitwise["gpu"] == "A100-80G"])
    held = mdape(splitwise[splitwise["gpu"] == "H100-SXM"], p)
    assert held["n"] > 50
    assert held["ttft_mdape_pct"] < 20
    assert held["tpot_mdape_pct"] < 20


def test_shipped_calibration_is_the_fit_of_the_data(splitwise):
    """calibration.json must be reproducible from the measurements (bench/perf_accuracy.py --write)."""
    shipped = default_params()
    refit = fit(splitwise)
    for name in ("eff_compute", "eff_bandwidth", "layer_overhead_bytes"):
        assert getattr(refit, name) == pytest.approx(getattr(shipped, name), rel=0.02), name


def test_kv_capacity_against_distserve_measurement(shared_data):
    """DistServe measured the KV-cache capacity of vLLM for OPT-13B at TP1 on A100-80GB
    (shared/data/profiles/distserve/max_num_tokens.csv); our memory model should land near it."""
    rows = pd.read_csv(shared_data / "profiles" / "distserve" / "max_num_tokens.csv")
    measured = rows[(rows.model == "facebook/opt-13b") & (rows.tp == 1) & (rows.pp == 1)].max_num_tokens.item()
    # OPT-13B config.json: 40 layers, hidden 5120, 40 heads (MHA), FFN 20480, vocab 50272, 12.85B params
    opt13b = resolve_model("facebook/opt-13b", ModelArchitecture(
        num_layers=40, hidden_size=5120, num_attention_heads=40, num_kv_heads=40, intermediate_size=20480,
        vocab_size=50272, params_billion=12.85))
    ours = kv_capacity_tokens(opt13b, get_gpu("A100-80G"), 1, gpu_memory_utilization=0.9)
    assert ours == pytest.approx(measured, rel=0.25)


def test_mdl_wait_quantile_against_simulated_queue():
    """The closed-form M/D/1 waiting-time quantile vs an exact simulation (Lindley's recursion)."""
    rng = np.random.default_rng(7)
    service = 0.2
    for rho in (0.5, 0.8):
        gaps = rng.exponential(service / rho, 400_000)
        w = np.empty_like(gaps)
        w[0] = 0.0
        for i in range(1, len(gaps)):  # W_n = max(0, W_{n-1} + S - A_n)
            w[i] = max(0.0, w[i - 1] + service - gaps[i])
        for q in (0.9, 0.99):
            approx = mdl_wait_quantile_s(np.array(rho / service), service, q)
            assert approx == pytest.approx(np.quantile(w[1000:], q), rel=0.2), (rho, q)


LLAMA8B = resolve_model("meta-llama/Llama-3.1-8B-Instruct")
BUCKETS_IN = np.array([300.0, 1100.0, 3900.0])
BUCKETS_OUT = np.array([90.0, 380.0, 170.0])


def kappa(gpu="A100-80G", tp=1, ttft=1.0, tpot=0.1, pct=90.0):
    return capacity_rps(LLAMA8B, get_gpu(gpu), tp, BUCKETS_IN, BUCKETS_OUT, ttft, tpot, pct)


def test_capacity_shrinks_as_slo_tightens():
    loose, tight = kappa(tpot=0.2), kappa(tpot=0.05)
    assert (loose >= tight).all() and (loose > tight).any()
    assert (kappa(ttft=2.0) >= kappa(ttft=0.3)).all()
    assert (kappa(pct=50) >= kappa(pct=99)).all()


def test_capacity_grows_with_a_faster_gpu():
    assert (kappa("H100-SXM") > kappa("A100-80G")).all()
    assert (kappa("A100-80G") > kappa("L4", tp=2)).all()


def test_capacity_is_zero_when_prefill_alone_misses_ttft():
    gpu = get_gpu("L4")
    t_prefill = float(prefill_time_s(LLAMA8B, gpu, 2, 3900.0))
    k = capacity_rps(LLAMA8B, gpu, 2, BUCKETS_IN, BUCKETS_OUT, t_prefill * 0.9, 0.5, 90)
    assert k[2] == 0.0 and k[0] > 0.0


def test_calibration_json_names_its_source():
    data = json.loads(resources.files("llmfleet.perf").joinpath("calibration.json").read_text())
    assert "Splitwise" in data["source"]
    PerfParams(**data)  # every key is a parameter
