"""The shipped catalogues: every GPU row has sources, plausible physics and a price on the one
documented basis; every model entry agrees with facts stated independently of its own numbers
(model-card totals, hand-computed KV-cache sizes); the ML.ENERGY model ids resolve."""

from __future__ import annotations

import csv
import re
from importlib import resources

import pytest
from pydantic import ValidationError

from llmfleet.api.crds import crd
from llmfleet.api.models import ModelArchitecture
from llmfleet.catalog.gpus import PRICE_BASIS, PRICE_EXCEPTION, get_gpu, gpu_catalog
from llmfleet.catalog.models import model_catalog, normalize_model_id, resolve_model
from llmfleet.perf.precision import FP8_KV_ARCHITECTURES, WEIGHT_PRECISIONS, with_precision

from conftest import PROFILE_DATA

GPUS = list(gpu_catalog().values())


# ---- GPUs ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("gpu", GPUS, ids=lambda g: g.name)
def test_every_gpu_row_has_its_sources_and_plausible_physics(gpu):
    for field in ("spec_source", "price_source"):
        assert len(getattr(gpu, field).strip()) > 20, field
    assert 16 <= gpu.memory_gb <= 300
    assert 250 <= gpu.mem_bandwidth_gbps <= 10_000
    assert 50 <= gpu.peak_bf16_tflops <= 3_000
    assert 50 <= gpu.tdp_watts <= 1_500
    assert 32 <= gpu.interconnect_gbps <= 2_000
    if gpu.min_power_cap_watts is not None:
        assert 0 < gpu.min_power_cap_watts < gpu.tdp_watts
    if gpu.peak_fp8_tflops is not None:
        assert gpu.peak_fp8_tflops >= gpu.peak_bf16_tflops
    if gpu.peak_fp4_tflops is not None:
        assert gpu.peak_fp8_tflops is not None and gpu.peak_fp4_tflops >= gpu.peak_fp8_tflops


def test_interconnect_sources_are_given():
    rows = list(csv.DictReader(resources.files("llmfleet.catalog").joinpath("gpus.csv").read_text().splitlines()))
    assert {r["name"] for r in rows} == set(gpu_catalog())
    for r in rows:
        assert r["interconnect_source"].strip(), r["name"]


@pytest.mark.parametrize("gpu", GPUS, ids=lambda g: g.name)
def test_peaks_are_dense_and_match_the_architecture(gpu):
    """Datasheets quote FP8 at twice BF16 and FP4 at twice FP8 for every GPU here, dense and sparse
    alike; a sparse figure copied next to a dense one breaks the ratio (2:4 sparsity doubles it)."""
    assert gpu.architecture in WEIGHT_PRECISIONS["bf16"].architectures
    assert (gpu.peak_fp8_tflops is not None) == (gpu.architecture in FP8_KV_ARCHITECTURES)  # FP8 tensor cores
    assert (gpu.peak_fp4_tflops is not None) == (gpu.architecture in WEIGHT_PRECISIONS["fp4"].architectures)
    if gpu.peak_fp8_tflops:
        assert 1.95 <= gpu.peak_fp8_tflops / gpu.peak_bf16_tflops <= 2.05
    if gpu.peak_fp4_tflops:
        assert 1.95 <= gpu.peak_fp4_tflops / gpu.peak_fp8_tflops <= 2.05


def test_h100_pcie_row_is_the_pcie_card():
    """H100 PCIe product brief and datasheet: 80GB HBM2e, >2,000 GB/s, 350 W; BF16 1,513 and FP8
    3,026 TFLOPS with sparsity. Its price is not the H100 NVL's (the old row's Azure NVL price)."""
    g = get_gpu("H100-PCIe")
    assert (g.memory_gb, g.mem_bandwidth_gbps, g.tdp_watts) == (80, 2000, 350)
    assert g.peak_bf16_tflops == pytest.approx(1513 / 2, abs=1)
    assert g.peak_fp8_tflops == pytest.approx(3026 / 2, abs=1)
    assert "NVL" not in g.price_source.split(".")[0] and "NC40ads" not in g.price_source
    nvl = get_gpu("H100-NVL")
    assert (nvl.memory_gb, nvl.mem_bandwidth_gbps) == (94, 3900)


EXCEPTIONS = {"H100-PCIe", "H100-NVL", "GH200-96G", "GH200-144G", "L40", "A40", "GB200", "MI300X", "MI325X"}
"""GPUs AWS does not sell on demand (listed in llmfleet/catalog/gpus.py's docstring)"""

_BASIS_PRICE = re.compile(r"^: (\S+) \$([\d.]+)/h / (\d+) GPUs? ")


@pytest.mark.parametrize("gpu", GPUS, ids=lambda g: g.name)
def test_every_default_price_is_on_the_one_basis_or_a_flagged_exception(gpu):
    src = gpu.price_source
    if gpu.name in EXCEPTIONS:
        assert src.startswith(PRICE_EXCEPTION), src
        if gpu.default_cost_per_gpu_hour is None:
            assert "set GPUPool.spec.costPerGPUHour" in src
        else:
            assert "list" in src and "$" in src  # names the documented list it used
        return
    assert src.startswith(PRICE_BASIS + ":"), src
    m = _BASIS_PRICE.match(src[len(PRICE_BASIS):])
    assert m, src
    # per GPU-hour = instance price / GPUs, to the 4 decimals the CSV keeps
    assert gpu.default_cost_per_gpu_hour == pytest.approx(float(m[2]) / int(m[3]), abs=6e-5)
    assert "capacity block" not in src.split(";")[0].lower()


def test_on_demand_h200_is_not_cheaper_than_on_demand_h100():
    """The complaint behind the single basis: a capacity-block H200 price undercut the on-demand H100
    price. On one price class the larger, faster part costs more per GPU-hour."""
    h100, h200, b200 = get_gpu("H100-SXM"), get_gpu("H200"), get_gpu("B200")
    assert h100.default_cost_per_gpu_hour < h200.default_cost_per_gpu_hour < b200.default_cost_per_gpu_hour
    a100 = get_gpu("A100-80G")
    assert a100.default_cost_per_gpu_hour < h100.default_cost_per_gpu_hour


# ---- models -------------------------------------------------------------------------------------

# Independent facts: the model cards' totals (and active parameters for MoE), billions, and whether
# config.json ties the input embedding to the LM head (tie_word_embeddings).
CARDS = {
    "Qwen/Qwen3-8B": (8.2, None, False),
    "Qwen/Qwen3-14B": (14.8, None, False),
    "Qwen/Qwen3-32B": (32.8, None, False),
    "Qwen/Qwen3-30B-A3B": (30.5, 3.3, False),
    "Qwen/Qwen3-235B-A22B": (235.0, 22.0, False),
    "openai/gpt-oss-20b": (21.0, 3.6, False),
    "openai/gpt-oss-120b": (117.0, 5.1, False),
    "google/gemma-3-12b-it": (12.0, None, True),
    "google/gemma-3-27b-it": (27.0, None, True),
}


def _derived_params(m, tied: bool) -> tuple[float, float]:
    """Total and active parameters (billions) from the shapes alone: attention (Q and O: hidden x
    heads x head_dim; K and V: hidden x kv_heads x head_dim), a gated MLP of 3 x hidden x inter per
    expert, the embedding and the LM head. Norms, biases and routers are left out (<1%); active
    counts the LM head but not the embedding lookup."""
    attn = 2 * m.hidden_size * m.head_dim * (m.num_attention_heads + m.num_kv_heads)
    mlp = 3 * m.hidden_size * m.intermediate_size
    emb = m.vocab_size * m.hidden_size
    total = m.num_layers * (attn + m.num_experts * mlp) + (1 if tied else 2) * emb
    active = m.num_layers * (attn + m.experts_per_token * mlp) + emb
    return total / 1e9, active / 1e9


@pytest.mark.parametrize("name", CARDS)
def test_new_models_shapes_add_up_to_their_model_cards(name):
    card_total, card_active, tied = CARDS[name]
    m = model_catalog()[name]
    total, active = _derived_params(m, tied)
    assert total == pytest.approx(card_total, rel=0.10)
    assert m.params_billion == pytest.approx(card_total, rel=0.03)
    if card_active is not None:
        assert m.num_experts > 1
        assert active == pytest.approx(card_active, rel=0.10)
        assert m.active_params_billion == pytest.approx(card_active, rel=0.03)
    else:
        assert m.num_experts == 1
    assert m.source.startswith(f"huggingface.co/{name}/")


@pytest.mark.parametrize(("name", "kv_bytes"), [
    ("Qwen/Qwen3-8B", 2 * 36 * 8 * 128 * 2),       # = 147456
    ("Qwen/Qwen3-32B", 2 * 64 * 8 * 128 * 2),      # head_dim 128, not 5120/64 = 80
    ("Qwen/Qwen3-235B-A22B", 2 * 94 * 4 * 128 * 2),
    ("openai/gpt-oss-120b", 2 * 36 * 8 * 64 * 2),  # every layer counted full-attention (conservative)
    ("google/gemma-3-12b-it", 2 * 48 * 8 * 256 * 2),  # head_dim 256, not 3840/16 = 240
    ("google/gemma-3-27b-it", 2 * 62 * 16 * 128 * 2),  # head_dim 128, not 5376/32 = 168
])
def test_kv_cache_bytes_per_token_use_the_configured_head_dim(name, kv_bytes):
    assert model_catalog()[name].kv_bytes_per_token == kv_bytes


def test_qwen3_8b_kv_bytes_is_the_worked_example():
    assert resolve_model("Qwen/Qwen3-8B").kv_bytes_per_token == 147456


def test_attention_flops_use_head_dim_and_precision_keeps_it():
    gemma = resolve_model("google/gemma-3-27b-it")
    assert gemma.head_dim == 128
    assert gemma.attention_flops_per_token_per_context == 4 * 62 * 32 * 128  # not 4 x 62 x 5376
    fp8 = with_precision(gemma, "fp8", "fp8")
    assert fp8.head_dim == 128 and fp8.kv_bytes_per_token == 2 * 62 * 16 * 128 * 1
    # models whose config.json has no head_dim keep hidden / heads
    assert resolve_model("meta-llama/Llama-3.1-70B").head_dim == 8192 // 64


def test_architecture_override_takes_head_dim():
    arch = dict(numLayers=62, hiddenSize=5376, numAttentionHeads=32, numKvHeads=16, intermediateSize=21504,
                vocabSize=262208, paramsBillion=27.4)
    with_hd = resolve_model("my/gemma-like", ModelArchitecture.model_validate({**arch, "headDim": 128}))
    assert with_hd.kv_bytes_per_token == 2 * 62 * 16 * 128 * 2
    without = resolve_model("my/gemma-like", ModelArchitecture.model_validate(arch))
    assert without.kv_bytes_per_token == 2 * 62 * 16 * 168 * 2


def test_head_dim_lifts_the_divisibility_rule_and_is_bounded():
    arch = dict(numLayers=4, hiddenSize=3000, numAttentionHeads=64, numKvHeads=8, intermediateSize=8000,
                vocabSize=1000, paramsBillion=1.0)
    with pytest.raises(ValidationError, match="unless headDim is given"):
        ModelArchitecture.model_validate(arch)
    assert ModelArchitecture.model_validate({**arch, "headDim": 64}).head_dim == 64
    for bad in (0, 2048):
        with pytest.raises(ValidationError, match="headDim"):
            ModelArchitecture.model_validate({**arch, "headDim": bad})
    schema = crd("LLMWorkload")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    head_dim = schema["properties"]["spec"]["properties"]["architecture"]["properties"]["headDim"]
    assert head_dim["type"] == "integer" and head_dim["maximum"] == 1024


@pytest.mark.parametrize(("model_id", "base"), [
    ("Qwen/Qwen3-30B-A3B-Instruct-2507", "Qwen/Qwen3-30B-A3B"),
    ("Qwen/Qwen3-30B-A3B-Thinking-2507", "Qwen/Qwen3-30B-A3B"),
    ("Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", "Qwen/Qwen3-235B-A22B"),
    ("Qwen/Qwen3-235B-A22B-Thinking-2507", "Qwen/Qwen3-235B-A22B"),
    ("Qwen/Qwen3-Coder-30B-A3B-Instruct", "Qwen/Qwen3-30B-A3B"),
    ("google/gemma-3-27b-it", "google/gemma-3-27b-it"),
    ("meta-llama/Llama-3.1-405B-Instruct-FP8", "meta-llama/Llama-3.1-405B"),
])
def test_release_and_precision_suffixes_resolve_to_the_base_architecture(model_id, base):
    m = resolve_model(model_id)
    assert m is resolve_model(base)
    assert m.bytes_per_weight == 2.0  # -FP8 is the checkpoint's precision, set by the workload


def test_normalize_strips_release_reasoning_and_precision_suffixes():
    assert normalize_model_id("Qwen/Qwen3-235B-A22B-Thinking-2507-FP8") == "qwen3-235b-a22b"
    assert normalize_model_id("google/gemma-3-12b-it") == "gemma-3-12b"
    assert normalize_model_id("openai/gpt-oss-20b") == "gpt-oss-20b"


NOT_CATALOGUED = {
    "meta-llama/Llama-4-Scout-17B-16E-Instruct",
    "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8",
    "nvidia/NVIDIA-Nemotron-Nano-9B-v2",   # Mamba-Transformer hybrid: the model has no Mamba layers
    "nvidia/NVIDIA-Nemotron-Nano-12B-v2",
}
"""ML.ENERGY text models the catalogue does not claim (a workload gives spec.architecture)"""


def test_every_mlenergy_model_we_claim_resolves_with_its_recorded_size():
    with open(PROFILE_DATA / "mlenergy_h100_configurations.csv") as f:
        rows = {r["model_id"]: r for r in csv.DictReader(f)}
    claimed = set(rows) - NOT_CATALOGUED
    assert len(claimed) >= 18
    for model_id in sorted(claimed):
        r = rows[model_id]
        m = resolve_model(model_id)
        # ML.ENERGY records sizes rounded to whole billions
        total, active = float(r["total_params_b"]), float(r["activated_params_b"])
        assert abs(m.params_billion - total) <= max(0.1 * total, 0.5), model_id
        assert abs(m.active_params_billion - active) <= max(0.1 * active, 0.5), model_id
        assert (r["architecture"] == "MoE") == (m.num_experts > 1), model_id
    for model_id in NOT_CATALOGUED & set(rows):
        with pytest.raises(KeyError):
            resolve_model(model_id)
