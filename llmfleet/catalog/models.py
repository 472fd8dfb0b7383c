"""Model catalogue: the architecture numbers the performance model needs.

Every entry is transcribed from the model's published Hugging Face ``config.json`` (the
``source`` field names the repository); parameter counts are the model cards' figures. A
workload whose model is not here gives ``spec.architecture`` instead.
"""

from __future__ import annotations

import re

import numpy as np
from dataclasses import dataclass

from llmfleet.api.models import ModelArchitecture


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a decoder-only transformer (dense or mixture-of-experts)."""

    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    params_billion: float
    active_params_billion: float
    bytes_per_weight: float = 2.0
    """2 for BF16/FP16 weights"""
    max_context_tokens: int = 4096
    kv_bytes_per_element: float = 2.0
    """KV cache dtype size (vLLM default: the model dtype)"""
    num_experts: int = 1
    """routed experts per MoE layer (1 for dense models)"""
    compute_dtype: str = "bf16"
    """dtype of the GEMMs (``bf16``, ``fp8``, ``fp4``); set by ``perf.precision.with_precision``"""
    experts_per_token: int = 1
    source: str = ""

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def weight_bytes(self) -> float:
        """All weights, bytes (what must fit in GPU memory across the TP group)."""
        return self.params_billion * 1e9 * self.bytes_per_weight

    @property
    def active_weight_bytes(self) -> float:
        """Weights read per decode step at large batch, bytes (MoE: see perf model for small batch)."""
        return self.active_params_billion * 1e9 * self.bytes_per_weight

    def weight_bytes_read(self, batch_tokens: float) -> float:
        """Weight bytes one forward pass over ``batch_tokens`` tokens reads from memory.

        Dense models read every weight. An MoE layer reads only the experts its tokens are routed
        to: with E experts and top-k routing, uniform routing touches E(1-(1-k/E)^B) experts for B
        tokens (expected value), so small decode batches read little more than the active weights.
        """
        if self.num_experts <= 1:
            return self.weight_bytes
        e, k = self.num_experts, self.experts_per_token
        per_expert = (self.params_billion - self.active_params_billion) / (e - k) * 1e9 * self.bytes_per_weight
        dense = self.active_weight_bytes - k * per_expert
        touched = e * (1.0 - (1.0 - k / e) ** np.maximum(batch_tokens, 1.0))
        return dense + per_expert * touched

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes one token occupies across all layers: 2 (K and V) x layers x kv_heads x head_dim x dtype."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.kv_bytes_per_element

    @property
    def linear_flops_per_token(self) -> float:
        """Matrix-multiply FLOPs per token outside attention scores: 2 x active parameters."""
        return 2.0 * self.active_params_billion * 1e9

    @property
    def attention_flops_per_token_per_context(self) -> float:
        """FLOPs of QK^T and AV per token for each token of context it attends to: 4 x layers x hidden."""
        return 4.0 * self.num_layers * self.num_attention_heads * self.head_dim


def _m(name, layers, hidden, heads, kv, inter, vocab, params, active=None, ctx=4096, experts=(1, 1)):
    return ModelSpec(name, layers, hidden, heads, kv, inter, vocab, params, active or params,
                     max_context_tokens=ctx, num_experts=experts[0], experts_per_token=experts[1],
                     source=f"huggingface.co/{name}/blob/main/config.json")


_CATALOG: tuple[ModelSpec, ...] = (
    _m("meta-llama/Llama-2-7b-hf", 32, 4096, 32, 32, 11008, 32000, 6.74),
    _m("meta-llama/Llama-2-13b-hf", 40, 5120, 40, 40, 13824, 32000, 13.0),
    _m("meta-llama/Llama-2-70b-hf", 80, 8192, 64, 8, 28672, 32000, 69.0),
    _m("meta-llama/Llama-3.1-8B", 32, 4096, 32, 8, 14336, 128256, 8.03, ctx=131072),
    _m("meta-llama/Llama-3.1-70B", 80, 8192, 64, 8, 28672, 128256, 70.6, ctx=131072),
    _m("meta-llama/Llama-3.3-70B-Instruct", 80, 8192, 64, 8, 28672, 128256, 70.6, ctx=131072),
    # 405B: 126 layers, hidden 16384, 128 heads, 8 KV heads, MLP 53248 (its config.json); 405 billion
    # parameters as the ML.ENERGY rows in shared/data/profiles record them
    _m("meta-llama/Llama-3.1-405B", 126, 16384, 128, 8, 53248, 128256, 405.0, ctx=131072),
    # the R1 distillation keeps Llama-3.3-70B-Instruct's architecture (its config.json)
    _m("deepseek-ai/DeepSeek-R1-Distill-Llama-70B", 80, 8192, 64, 8, 28672, 128256, 70.6, ctx=131072),
    _m("mistralai/Mistral-7B-v0.1", 32, 4096, 32, 8, 14336, 32000, 7.24, ctx=32768),
    _m("Qwen/Qwen2.5-7B", 28, 3584, 28, 4, 18944, 152064, 7.62, ctx=32768),
    _m("Qwen/Qwen2.5-72B", 80, 8192, 64, 8, 29568, 152064, 72.7, ctx=32768),
    _m("mistralai/Mixtral-8x7B-v0.1", 32, 4096, 32, 8, 14336, 32000, 46.7, active=12.9, ctx=32768, experts=(8, 2)),
    # BLOOM-176B: MHA, non-gated 4x MLP; used by the Splitwise measurements we calibrate on.
    _m("bigscience/bloom", 70, 14336, 112, 112, 57344, 250880, 176.2, ctx=2048),
)


def normalize_model_id(model_id: str) -> str:
    """Canonical lookup key: the repository name, lower-case, without -hf/-instruct/-chat and
    Mistral's -v0.N revision suffix, and without the ``Meta-`` prefix of Llama 3 ids."""
    name = model_id.rsplit("/", 1)[-1].lower()
    name = re.sub(r"^meta-(?=llama)", "", name)
    name = re.sub(r"-(hf|instruct|chat|it)(?=-|$)", "", name)
    name = re.sub(r"-v0\.\d+$", "", name)
    return name


_BY_KEY = {normalize_model_id(m.name): m for m in _CATALOG}
_BY_KEY["bloom-176b"] = _BY_KEY["bloom"]


def model_catalog() -> dict[str, ModelSpec]:
    """All catalogued models by their Hugging Face id."""
    return {m.name: m for m in _CATALOG}


def resolve_model(model_id: str, override: ModelArchitecture | None = None) -> ModelSpec:
    """The ModelSpec for a workload: the override when given, else the catalogue entry.

    ``meta-llama/Llama-3.1-8B-Instruct`` and ``meta-llama/Meta-Llama-3.1-8B`` both resolve to the
    Llama-3.1-8B entry (instruction tuning does not change the architecture).

    Raises:
        KeyError: naming the model and listing the catalogued ones, when there is no override.
    """
    if override is not None:
        return ModelSpec(
            name=model_id,
            num_layers=override.num_layers,
            hidden_size=override.hidden_size,
            num_attention_heads=override.num_attention_heads,
            num_kv_heads=override.num_kv_heads,
            intermediate_size=override.intermediate_size,
            vocab_size=override.vocab_size,
            params_billion=override.params_billion,
            active_params_billion=override.active_params_billion or override.params_billion,
            bytes_per_weight=override.bytes_per_weight,
            max_context_tokens=override.max_context_tokens,
            source="LLMWorkload.spec.architecture",
        )
    try:
        return _BY_KEY[normalize_model_id(model_id)]
    except KeyError:
        raise KeyError(
            f"model {model_id!r} is not in the catalogue; give spec.architecture, or use one of: "
            + ", ".join(m.name for m in _CATALOG)
        ) from None
