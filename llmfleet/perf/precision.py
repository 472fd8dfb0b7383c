"""Serving precision: what ``spec.serving.quantization`` and ``kvCacheDtype`` change, and where they run.

A precision changes three numbers of the performance model: bytes per weight (what a decode step
streams and what must fit in memory), bytes per KV-cache element, and the tensor-core peak of the
GEMMs. Which GPUs run which precision follows vLLM's quantization documentation
(docs.vllm.ai, "Supported Hardware" table and "FP8 W8A8"):

- ``bf16``: every GPU; 2 bytes per weight, BF16 peak.
- ``fp8`` (W8A8, rendered as ``--quantization fp8``: vLLM quantizes a BF16 checkpoint to FP8 at
  load time): FP8 GEMMs on compute capability >= 8.9 (Ada, Hopper, Blackwell) and on AMD MI300
  (CDNA3); on Ampere vLLM runs the same checkpoint weight-only (W8A16, FP8 Marlin), so weights are
  1 byte but GEMMs run at the BF16 peak.
- ``int8`` (W8A16): a pre-quantized checkpoint (compressed-tensors), whose own config tells vLLM
  the method, so no flag is rendered; 1 byte per weight, BF16 GEMMs; NVIDIA Ampere and newer
  (Marlin kernels, not on AMD).
- ``fp4`` (NVFP4, W4A4): a pre-quantized checkpoint (ModelOpt NVFP4); 0.5 byte per weight, FP4 GEMMs;
  Blackwell only.
- ``kvCacheDtype: fp8`` (``--kv-cache-dtype fp8``, E4M3): 1 byte per KV element, on GPUs with FP8
  tensor cores (Ada, Hopper, Blackwell, CDNA3); ``auto`` keeps the model dtype (2 bytes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from llmfleet.catalog.gpus import GPUType
from llmfleet.catalog.models import ModelSpec


@dataclass(frozen=True)
class Precision:
    """One weight precision: bytes per weight, the GEMM dtype on GPUs that accelerate it, the GPU
    architectures vLLM runs it on, and the ``vllm serve`` flags that select it."""

    bytes_per_weight: float
    compute_dtype: str
    architectures: frozenset[str]
    flags: tuple[str, ...] = ()


_NVIDIA_AMPERE_ON = frozenset({"ampere", "ada", "hopper", "blackwell"})
_ALL = _NVIDIA_AMPERE_ON | {"cdna3"}

WEIGHT_PRECISIONS: dict[str, Precision] = {
    "bf16": Precision(2.0, "bf16", _ALL),
    "fp8": Precision(1.0, "fp8", _ALL, ("--quantization", "fp8")),
    "int8": Precision(1.0, "bf16", _NVIDIA_AMPERE_ON),
    "fp4": Precision(0.5, "fp4", frozenset({"blackwell"})),
}
"""quantization -> Precision (sources in the module docstring)"""

FP8_KV_ARCHITECTURES = frozenset({"ada", "hopper", "blackwell", "cdna3"})
"""GPUs with FP8 tensor cores, where vLLM's FP8 (E4M3) KV cache runs"""


def unsupported(gpu: GPUType, quantization: str, kv_cache_dtype: str) -> str | None:
    """Why ``gpu`` cannot serve this precision (naming the field), or None when it can.

    A GPU described only by ``GPUPool.spec.gpu`` has no known architecture: it serves bf16 with the
    model's own KV dtype only.
    """
    arch = gpu.architecture
    if quantization != "bf16" and arch not in WEIGHT_PRECISIONS[quantization].architectures:
        return (f"spec.serving.quantization {quantization} does not run on {gpu.name} "
                f"({arch or 'architecture unknown'}; runs on {', '.join(sorted(WEIGHT_PRECISIONS[quantization].architectures))})")
    if kv_cache_dtype == "fp8" and arch not in FP8_KV_ARCHITECTURES:
        return (f"spec.serving.kvCacheDtype fp8 does not run on {gpu.name} ({arch or 'architecture unknown'}; "
                f"runs on {', '.join(sorted(FP8_KV_ARCHITECTURES))})")
    return None


def with_precision(model: ModelSpec, quantization: str, kv_cache_dtype: str) -> ModelSpec:
    """``model`` as served at this precision: bytes per weight, KV bytes per element and GEMM dtype.

    A model whose architecture already declares a byte width below BF16 (an FP8 checkpoint described
    in ``spec.architecture.bytesPerWeight``) keeps it when ``quantization`` is bf16.
    """
    prec = WEIGHT_PRECISIONS[quantization]
    bytes_per_weight = model.bytes_per_weight if quantization == "bf16" else prec.bytes_per_weight
    kv = 1.0 if kv_cache_dtype == "fp8" else model.kv_bytes_per_element
    return dataclasses.replace(model, bytes_per_weight=bytes_per_weight, kv_bytes_per_element=kv,
                               compute_dtype=prec.compute_dtype)


def vllm_flags(quantization: str, kv_cache_dtype: str) -> list[str]:
    """The ``vllm serve`` flags that select this precision."""
    flags = list(WEIGHT_PRECISIONS[quantization].flags)
    if kv_cache_dtype == "fp8":
        flags += ["--kv-cache-dtype", "fp8"]
    return flags
