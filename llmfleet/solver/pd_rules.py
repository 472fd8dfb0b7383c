"""Which prefill and decode replicas vLLM's NixlConnector lets exchange KV caches.

A P/D pair only works when the prefill and decode engines pass the connector's handshake. Source:
vLLM docs/features/nixl_connector_compatibility.md ("What must match between P and D"):

- the vLLM and connector versions, the model (architecture, dtype, KV heads, head size, layers),
  the KV-cache dtype and speculative-decoding setup: llmfleet renders every pod of a workload from
  one image, one model, one ``--quantization`` / ``--kv-cache-dtype`` and one ``--block-size``, so
  these match by construction;
- the **attention backend**: vLLM picks it per GPU when none is set. Its CUDA platform
  (vllm/platforms/cuda.py, ``_get_backend_priorities``) prefers FLASHINFER on compute capability
  10.x (B200, GB200) and FLASH_ATTN on every other NVIDIA GPU it supports (Ampere, Ada, Hopper);
  AMD GPUs run ROCm backends. GPUs whose default we have not confirmed (the SM 12.x RTX PRO 6000,
  a GPU described only by ``GPUPool.spec.gpu``) pair only with their own type.
- Tensor parallelism may differ between P and D for dense, MoE and MLA models (heterogeneous TP,
  same page); hybrid SSM/Mamba models need equal TP. The catalogue holds no hybrid SSM model yet,
  so the TP rule never binds today; ``pd_group`` keeps it for when one is added.

The router (llm-d's EPP) picks a prefill pod by load over *all* the workload's prefill pods, not
by network, so every P/D replica of a workload must also share one KV-transfer domain
(``GPUPool.spec.interconnect.domain``). ``pd_group`` is the key that must be equal across a
workload's prefill and decode replicas; the MILP lets each workload use at most one.
"""

from __future__ import annotations

from llmfleet.catalog.gpus import GPUType

_BLACKWELL_SM100 = frozenset({"B200", "GB200"})
"""compute capability 10.x in the catalogue: vLLM's default attention backend is FLASHINFER"""
_FLASH_ATTN_ARCHITECTURES = frozenset({"ampere", "ada", "hopper"})
"""compute capability 8.x/9.x: vLLM's default attention backend is FLASH_ATTN"""


def attention_backend(gpu: GPUType) -> str:
    """vLLM's default attention backend on ``gpu`` for a non-MLA model, as far as the P/D handshake
    is concerned (module docstring). A GPU whose default is not established gets a key of its own
    (``gpu:<name>``), so it pairs only with replicas of the same type."""
    if gpu.name in _BLACKWELL_SM100:
        return "FLASHINFER"
    if gpu.architecture in _FLASH_ATTN_ARCHITECTURES:
        return "FLASH_ATTN"
    if gpu.architecture == "cdna3":
        return "ROCM"
    return f"gpu:{gpu.name}"


def pd_group(kv_domain: str, gpu: GPUType, tp: int, hybrid_ssm: bool = False) -> tuple[str, str, int | None]:
    """The key a prefill and a decode replica of one workload must share: (KV-transfer domain,
    attention backend, TP for hybrid SSM models else None)."""
    return kv_domain, attention_backend(gpu), tp if hybrid_ssm else None


def describe(group: tuple[str, str, int | None]) -> str:
    """A P/D group key in words, for plan messages."""
    domain, backend, tp = group
    where = domain.split("/", 1)[1]
    kind = "interconnect domain" if domain.startswith("net/") else "pool"
    return f"{kind} {where}, attention backend {backend}" + (f", TP {tp}" if tp else "")
