"""GPU catalogue: datasheet specs and default list prices, shipped with the package.

Source of every row: ``gpus.csv`` beside this file, started from ``shared/data/gpu_specs.csv``
and extended; every row keeps its ``spec_source``, ``price_source`` and ``interconnect_source``,
each stating its confidence where the value was recalled rather than read from a stored copy.
Spec values are dense (no 2:4 sparsity) tensor-core peaks; memory, bandwidth and TDP are per GPU.

Price basis (one for all default prices)
----------------------------------------
``PRICE_BASIS``: AWS EC2 on-demand list prices, us-east-1, Linux, per GPU-hour = the instance's
hourly price / its GPUs, for the smallest instance that carries the GPU (multi-GPU G-family
instances cost more per GPU; the 8-GPU P-family instances are the only size). Values as recorded in
``PRICE_SNAPSHOT`` (they include AWS's June 2025 P4/P5 price cut). Capacity-block, savings-plan and
spot prices are never used: they are a different price class, and mixing them is how a capacity-block
H200 came to look cheaper than an on-demand H100.

A GPU AWS does not sell on demand (H100 PCIe and NVL, GH200, L40, A40, GB200, MI300X, MI325X) has a
``price_source`` that starts with ``PRICE_EXCEPTION`` and says what was used instead: the nearest
documented list price (a hyperscaler's on-demand list where one exists, else a neocloud list, which is
typically about half the hyperscaler price and so not comparable with the basis) or no price at all,
in which case a pool must set ``GPUPool.spec.costPerGPUHour``. Prices are defaults that
``GPUPool.spec.costPerGPUHour`` overrides; they are never used where a pool gives its own.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources


PRICE_BASIS = "AWS EC2 on-demand us-east-1"
"""how every in-basis ``price_source`` starts: ``<PRICE_BASIS>: <instance> $<price>/h / <n> GPU(s) (...)``"""

PRICE_SNAPSHOT = ("SkyPilot AWS catalogue, skypilot-org/skypilot-catalog catalogs/v8/aws/vms.csv at commit "
                  "00148f2af3672e2229b4f7bf8157d5a3f36e3c35 (2026; AWS Price List values; the p5en price matches "
                  "dstack's AWS offer listing of 2026-08-06)")
"""where the in-basis prices were read, and when"""

PRICE_EXCEPTION = "NOT IN BASIS (no AWS on-demand offer)"
"""how the ``price_source`` of a GPU outside the basis starts"""


@dataclass(frozen=True)
class GPUType:
    """Datasheet description of one GPU type (per GPU)."""

    name: str
    memory_gb: float
    mem_bandwidth_gbps: float
    """HBM/GDDR bandwidth, GB/s"""
    peak_bf16_tflops: float
    """dense BF16 tensor-core peak, TFLOPS"""
    tdp_watts: float
    interconnect_gbps: float
    """per-GPU bandwidth available to an intra-node all-reduce, GB/s (NVLink or PCIe)"""
    min_power_cap_watts: float | None = None
    """lowest power limit the driver accepts (nvidia-smi's Min Power Limit), W; None where not found"""
    default_cost_per_gpu_hour: float | None = None
    spec_source: str = ""
    price_source: str = ""
    peak_fp8_tflops: float | None = None
    """dense FP8 tensor-core peak, TFLOPS (None: no FP8 tensor cores)"""
    peak_fp4_tflops: float | None = None
    """dense FP4 tensor-core peak, TFLOPS (None: no FP4 tensor cores)"""
    architecture: str | None = None
    """ampere, ada, hopper (incl. GH200), blackwell (B200, GB200 and the RTX PRO 6000) or cdna3 (AMD
    MI300X, MI325X): decides which precisions vLLM runs (``perf.precision``); None for a GPU described
    only by ``GPUPool.spec.gpu``"""
    max_power_limit_watts: float | None = None
    """highest power limit the driver accepts (nvidia-smi's Max Power Limit), W; None: the TDP"""
    power_limit_source: str = ""
    """where the power-limit range was read (``gpus.csv``), with its confidence"""

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9

    @property
    def mem_bandwidth_bytes_per_s(self) -> float:
        return self.mem_bandwidth_gbps * 1e9

    @property
    def peak_flops(self) -> float:
        """Dense BF16 peak, FLOP/s."""
        return self.peak_bf16_tflops * 1e12

    def peak_flops_for(self, dtype: str) -> float:
        """Dense tensor-core peak of GEMMs in ``dtype`` (``bf16``, ``fp8``, ``fp4``), FLOP/s; a dtype the
        GPU has no tensor cores for runs at the BF16 peak (weight-only kernels dequantize to BF16)."""
        peak = {"fp8": self.peak_fp8_tflops, "fp4": self.peak_fp4_tflops}.get(dtype)
        return (peak or self.peak_bf16_tflops) * 1e12


def _float(s: str) -> float | None:
    return float(s) if s.strip() else None


@cache
def gpu_catalog() -> dict[str, GPUType]:
    """All catalogued GPU types by name (``A10G``, ``L4``, ``L40S``, ``A100-40G``, ``A100-80G``,
    ``H100-SXM``, ``H100-PCIe``, ``H200``, ``B200``, ``MI300X``, ``A40``, ``H100-NVL``, ``GH200-96G``,
    ``GH200-144G``, ``L40``, ``RTX-PRO-6000``, ``GB200``, ``MI325X``)."""
    text = resources.files(__package__).joinpath("gpus.csv").read_text()
    out = {}
    for r in csv.DictReader(text.splitlines()):
        out[r["name"]] = GPUType(
            name=r["name"],
            memory_gb=float(r["memory_gb"]),
            mem_bandwidth_gbps=float(r["mem_bandwidth_gbps"]),
            peak_bf16_tflops=float(r["peak_bf16_tflops"]),
            tdp_watts=float(r["tdp_watts"]),
            interconnect_gbps=float(r["interconnect_gbps"]),
            min_power_cap_watts=_float(r["min_power_cap_watts"]),
            default_cost_per_gpu_hour=_float(r["default_cost_per_gpu_hour"]),
            spec_source=r["spec_source"],
            price_source=r["price_source"],
            peak_fp8_tflops=_float(r["peak_fp8_tflops"]),
            peak_fp4_tflops=_float(r["peak_fp4_tflops"]),
            architecture=r["architecture"] or None,
            max_power_limit_watts=_float(r["max_power_limit_watts"]),
            power_limit_source=r["power_limit_source"],
        )
    return out


def get_gpu(name: str) -> GPUType:
    """Look up a catalogued GPU type by name (case-insensitive).

    Raises:
        KeyError: naming the unknown type and listing the catalogued ones.
    """
    cat = gpu_catalog()
    for key, gpu in cat.items():
        if key.lower() == name.lower():
            return gpu
    raise KeyError(f"unknown GPU type {name!r}; catalogued: {', '.join(cat)} (or give GPUPool.spec.gpu)")
