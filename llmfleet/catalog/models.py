"""Model catalogue: the architecture numbers the performance model needs.

Every entry is transcribed from the model's published Hugging Face ``config.json`` (the
``source`` field names the repository; where the values were read from a copy of that file, the
comment above the entry names the copy); parameter counts are the model cards' figures. A
workload whose model is not here gives ``spec.architecture`` instead.

What the model does not represent (all conservative, i.e. it over-estimates memory and time):

- Sliding-window attention. gemma-3 (5 of every 6 layers attend to a 1024-token window) and
  gpt-oss (every other layer, 128-token window) keep far less KV cache on those layers; here
  every layer is full attention, so their KV bytes per token and attention FLOPs are too high.
- gpt-oss ships MXFP4 expert weights, its default serving precision. The catalogue describes the
  architecture in BF16 like every other entry; precision is chosen per workload
  (``spec.serving.quantization``, applied by ``llmfleet.perf.precision.with_precision``).
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
    head_dim: int | None = None
    """attention head dimension; None: hidden_size // num_attention_heads (the config.json default).
    Qwen3, gemma-3 and gpt-oss set ``head_dim`` explicitly and differently (gemma-3-27b: 5376 / 32
    = 168, but head_dim 128), and it decides the KV-cache size"""

    def __post_init__(self) -> None:
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)

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


def _m(name, layers, hidden, heads, kv, inter, vocab, params, active=None, ctx=4096, experts=(1, 1),
       head_dim=None, read_from=None):
    """One entry. ``inter`` is ``intermediate_size`` (for MoE models ``moe_intermediate_size``, the
    MLP width of one expert); ``ctx`` is ``max_position_embeddings``; ``experts`` is
    (``num_experts`` or ``num_local_experts``, ``num_experts_per_tok``); ``read_from`` names the copy
    of config.json the values were read from when it was not the Hugging Face repository itself."""
    source = f"huggingface.co/{name}/blob/main/config.json"
    if read_from:
        source += f" (values read from {read_from})"
    return ModelSpec(name, layers, hidden, heads, kv, inter, vocab, params, active or params,
                     max_context_tokens=ctx, num_experts=experts[0], experts_per_token=experts[1],
                     source=source, head_dim=head_dim)


# Where the values of the entries below were read (config.json copies stored in public repositories,
# looked up for this catalogue):
_QWEN3_COPY = "the verbatim config.json copy in github.com/citsjtu2020/LLM-Prof sglang/Model_Config.md"
_QWEN3_235B_COPY = ("THUDM/slime scripts/models/qwen3-235B-A22B.sh (Megatron arguments converted from the config) "
                    "and a qwen3_moe test fixture naming Qwen/Qwen3-235B-A22B; the two agree")
_GPT_OSS_120B_COPY = "openai/gpt-oss gpt_oss/torch/model.py ModelConfig defaults (the 120b checkpoint)"
_GPT_OSS_20B_COPY = "two independent gpt_oss test fixtures (24 layers, 32 local experts; the rest as 120b)"
_GEMMA3_12B_COPY = "a verbatim text_config copy of gemma-3-12b in a public LTX-2.3 conversion script"
_GEMMA3_27B_COPY = ("AI-Hypercomputer/maxtext configs/models/gemma3-27b.yml (Google) for the shapes; "
                    "vocab 262208 and 131072 positions from the HF text_config, see the comment below")


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
    # Qwen3 (dense): config.json sets head_dim 128; it equals hidden/heads for 8B (4096/32) and 14B
    # (5120/40) but not for 32B (5120/64 = 80). Totals are the model cards' "Number of
    # Parameters" (8.2B, 14.8B, 32.8B). ctx is config.json's max_position_embeddings (40960); the
    # cards state 32,768 tokens natively, 131,072 with YaRN.
    _m("Qwen/Qwen3-8B", 36, 4096, 32, 8, 12288, 151936, 8.2, ctx=40960, head_dim=128, read_from=_QWEN3_COPY),
    _m("Qwen/Qwen3-14B", 40, 5120, 40, 8, 17408, 151936, 14.8, ctx=40960, head_dim=128, read_from=_QWEN3_COPY),
    _m("Qwen/Qwen3-32B", 64, 5120, 64, 8, 25600, 151936, 32.8, ctx=40960, head_dim=128, read_from=_QWEN3_COPY),
    # Qwen3 MoE: 128 routed experts, 8 per token, no shared expert, every layer MoE (mlp_only_layers
    # empty); inter is moe_intermediate_size; head_dim 128 although hidden/heads is 64 for both. Totals / active from the model cards: 30.5B / 3.3B and
    # 235B / 22B. Qwen3-Coder-30B-A3B-Instruct has the 30B-A3B shapes (aliased below). The 2507
    # releases keep these shapes; their cards advertise a longer native context than the 40960
    # positions here, so a long-context workload on a 2507 model should give spec.architecture.
    _m("Qwen/Qwen3-30B-A3B", 48, 2048, 32, 4, 768, 151936, 30.5, active=3.3, ctx=40960, experts=(128, 8),
       head_dim=128, read_from=_QWEN3_COPY),
    _m("Qwen/Qwen3-235B-A22B", 94, 4096, 64, 4, 1536, 151936, 235.0, active=22.0, ctx=40960, experts=(128, 8),
       head_dim=128, read_from=_QWEN3_235B_COPY),
    # gpt-oss: every layer MoE with top-4 routing; inter (2880) is one expert's width; head_dim 64
    # (64 heads x 64 = 4096 != hidden 2880). Sliding window of 128 tokens on every other layer, and
    # MXFP4 expert weights as shipped: see the module docstring. Totals / active from the model
    # cards (117B / 5.1B and 21B / 3.6B; the gpt-oss model card's parameter table gives 116.83B /
    # 5.13B and 20.91B / 3.61B, which are used here).
    _m("openai/gpt-oss-120b", 36, 2880, 64, 8, 2880, 201088, 116.83, active=5.13, ctx=131072, experts=(128, 4),
       head_dim=64, read_from=_GPT_OSS_120B_COPY),
    _m("openai/gpt-oss-20b", 24, 2880, 64, 8, 2880, 201088, 20.91, active=3.61, ctx=131072, experts=(32, 4),
       head_dim=64, read_from=_GPT_OSS_20B_COPY),
    # gemma-3 (the text_config of the multimodal -it checkpoints): head_dim 256 (12b; 3840/16 = 240)
    # and 128 (27b; 5376/32 = 168). Sources conflict on vocab: Google's MaxText configs give 262144
    # (the tokenizer), the Hugging Face config.json 262208 (embedding rows incl. image tokens and
    # padding); the config.json value is used because vLLM loads that embedding. Totals from the
    # Gemma 3 technical report (Table 1: vision encoder 0.417B + embedding + non-embedding):
    # 12.2B and 27.4B, i.e. what vLLM loads for Gemma3ForConditionalGeneration; the model cards
    # say 12B and 27B. 5 of every 6 layers use a 1024-token sliding window (module docstring).
    _m("google/gemma-3-12b-it", 48, 3840, 16, 8, 15360, 262208, 12.2, ctx=131072, head_dim=256,
       read_from=_GEMMA3_12B_COPY),
    _m("google/gemma-3-27b-it", 62, 5376, 32, 16, 21504, 262208, 27.4, ctx=131072, head_dim=128,
       read_from=_GEMMA3_27B_COPY),
)


def normalize_model_id(model_id: str) -> str:
    """Canonical lookup key: the repository name, lower-case, without -hf/-instruct/-chat/-it/-thinking,
    Mistral's -v0.N revision suffix, Qwen's -2507 release suffix and a trailing -FP8, and without the
    ``Meta-`` prefix of Llama 3 ids.

    None of the stripped suffixes changes the architecture: instruction or reasoning tuning and a
    later release of the same shapes keep config.json's numbers, and ``-FP8`` names a checkpoint's
    precision, which the workload sets separately (``spec.serving.quantization``), not its shapes.
    """
    name = model_id.rsplit("/", 1)[-1].lower()
    name = re.sub(r"^meta-(?=llama)", "", name)
    name = re.sub(r"-fp8$", "", name)
    name = re.sub(r"-2507$", "", name)
    name = re.sub(r"-(hf|instruct|chat|it|thinking)(?=-|$)", "", name)
    name = re.sub(r"-v0\.\d+$", "", name)
    return name


_BY_KEY = {normalize_model_id(m.name): m for m in _CATALOG}
_BY_KEY["bloom-176b"] = _BY_KEY["bloom"]
# Qwen3-Coder-30B-A3B-Instruct: the Qwen3-30B-A3B shapes (48 layers, hidden 2048, 32/4 heads, 128
# experts of 768, top-8; a qwen3_moe checkpoint). No copy of its config.json was found to check every
# number; ML.ENERGY's record (30B total, 3B active, MoE) agrees, and its longer native context is not
# modelled (as for the 2507 releases above).
_BY_KEY["qwen3-coder-30b-a3b"] = _BY_KEY["qwen3-30b-a3b"]


def model_catalog() -> dict[str, ModelSpec]:
    """All catalogued models by their Hugging Face id."""
    return {m.name: m for m in _CATALOG}


def resolve_model(model_id: str, override: ModelArchitecture | None = None) -> ModelSpec:
    """The ModelSpec for a workload: the override when given, else the catalogue entry.

    ``meta-llama/Llama-3.1-8B-Instruct`` and ``meta-llama/Meta-Llama-3.1-8B`` both resolve to the
    Llama-3.1-8B entry (instruction tuning does not change the architecture), and
    ``Qwen/Qwen3-235B-A22B-Instruct-2507-FP8`` to Qwen3-235B-A22B (see ``normalize_model_id``).

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
            head_dim=override.head_dim,
        )
    try:
        return _BY_KEY[normalize_model_id(model_id)]
    except KeyError:
        raise KeyError(
            f"model {model_id!r} is not in the catalogue; give spec.architecture, or use one of: "
            + ", ".join(m.name for m in _CATALOG)
        ) from None
