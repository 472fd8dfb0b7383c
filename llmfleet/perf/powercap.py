"""Performance of a GPU under a power cap, per phase.

A power cap (``nvidia-smi -pl``, NVML ``nvmlDeviceSetPowerManagementLimit``) is enforced by lowering
the SM clock until the board's draw fits under it; the HBM clock is not what the cap moves. So the
cap costs a step only through its compute term:

- Power against clock. Board power = a static part (leakage, idle memory, board) + a dynamic part
  of the SMs, alpha C V^2 f; with the voltage following the clock across the DVFS range, V ~ f, the
  dynamic part grows as f^k with k = 3 (CMOS dynamic power; Mei, Wang and Chu, "A survey and
  measurement study of GPU DVFS on energy conservation", Digital Communications and Networks 2017,
  use the same f V^2 form). A step that would draw ``draw_watts`` uncapped runs under a cap C below
  that draw at the clock fraction

      x = ((C - P_static) / (draw - P_static)) ^ (1 / k)        (x = 1 when C >= draw)

  P_static = i x TDP with i = 0.10, the idle draw the power model uses (``perf.power``:
  nvidia-smi of idle H100 SXM GPUs reads 69-73 W of 700 W).
- Prefill is compute-bound and draws about the TDP (``perf.power``, f_p = 1, from Splitwise's A100
  prompt phases), so any cap below the TDP slows it by 1/x: 6 % at 85 % of TDP, 15 % at 70 %, 31 %
  at 50 %.
- Decode is memory-bound: it draws far below the TDP (137-300 W of 700 W on an H200, Ma et al.,
  arXiv 2605.11999) and is nearly insensitive to the SM clock (1-6 % more latency from 2842 MHz
  down to 180 MHz, Maliakel et al., arXiv 2501.08219). A cap above its draw costs it nothing; below,
  the clock falls to x of the same law at the decode draw, and the step slows only if its compute
  term, divided by x, overtakes its memory term (the roofline of ``perf.steptime``).
- Draw at load: min(the predicted draw, the cap).

Validation (``bench/powercap_accuracy.py``, ``tests/test_powercap.py``), neither k nor i fitted to it:

- Splitwise (Patel et al., ISCA 2024): the power-capped H100 rows of ``splitwise_perf_model.csv``
  take prompts x 1.30 (median over 2,700 rows) and tokens x 1.00 at the Splitwise-HHcap cap (GPUs at
  50 % of TDP; server at 70 % of its rated power: splitwise-sim ``dgx-h100-pcap`` 7,140 W = 0.70 x
  10,200 W). This model: x 1.31 at 350 W.
- A measured RTX 3090 prefill sweep (club-3090 issue #104, vLLM-class serving, 17.5k-token prompts):
  1,641.6 prefill tok/s at the 350 W default (drawing 300.8 W) and 1,317.9 tok/s at a 180 W cap,
  i.e. x 1.246; this model: x 1.22.
- Out of domain: a llama.cpp sweep on six RTX 3090s (LLM Garage, Feb 2026) falls much faster below
  ~60 % of TDP (x 1.67 at 200 W, x 3.9 at 150 W) than this model (x 1.24, x 1.40): consumer boards
  also throttle their GDDR6X clocks there. Datacenter caps stay within the catalogued range.

Every function takes watts per GPU. ``cap_levels`` gives the planner's levels per GPU type.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from llmfleet.catalog.gpus import GPUType
from llmfleet.perf.power import PowerParams, default_power, gpu_power_watts
from llmfleet.perf.steptime import PerfParams, default_params

CLOCK_POWER_EXPONENT = 3.0
"""k: dynamic power ~ f V^2 with V ~ f across the DVFS range (module docstring)"""

CAP_FRACTIONS = (1.0, 0.85, 0.70)
"""the planner's cap levels as fractions of the default limit (issue 17), besides the device minimum"""


@dataclass(frozen=True)
class PowerRange:
    """The power limits a GPU type's driver accepts, W per GPU (``catalog/gpus.csv``)."""

    gpu: str
    min_watts: float | None
    """nvidia-smi's Min Power Limit; None where no source was found (caps checked against max only)"""
    default_watts: float
    """Default Power Limit = the TDP"""
    max_watts: float
    """Max Power Limit (the TDP where the catalogue has none)"""
    source: str

    def describe(self) -> str:
        low = f"{self.min_watts:g}" if self.min_watts is not None else "(minimum unknown) 0"
        return f"{low}-{self.max_watts:g} W (default {self.default_watts:g} W)"


def power_range(gpu: GPUType) -> PowerRange:
    """The allowed power-limit range of ``gpu`` from the catalogue (``min_power_cap_watts``,
    ``tdp_watts``, ``max_power_limit_watts``, ``power_limit_source``)."""
    top = gpu.max_power_limit_watts if gpu.max_power_limit_watts is not None else gpu.tdp_watts
    return PowerRange(gpu.name, gpu.min_power_cap_watts, gpu.tdp_watts, max(top, gpu.tdp_watts),
                      gpu.power_limit_source)


def check_cap(gpu: GPUType, cap_watts: float) -> float:
    """An explicit cap, W, if the device accepts it.

    Raises:
        ValueError: naming the GPU type and its allowed range, when the cap is not a positive
            number within it.
    """
    r = power_range(gpu)
    try:
        cap = float(cap_watts)
    except (TypeError, ValueError):
        raise ValueError(f"power cap for GPU {gpu.name}: {cap_watts!r} is not a number of watts; "
                         f"allowed {r.describe()}") from None
    low = r.min_watts if r.min_watts is not None else 0.0
    if not np.isfinite(cap) or cap <= 0 or cap < low or cap > r.max_watts:
        raise ValueError(f"power cap {cap:g} W is outside the allowed range of GPU {gpu.name}: {r.describe()}")
    return cap


def cap_levels(gpu: GPUType) -> list[float]:
    """The planner's cap levels for ``gpu``, W, highest first: the default limit, 85 % and 70 % of it
    and the device minimum, each clipped to the allowed range, duplicates dropped. A GPU whose
    minimum is unknown gets the three fractions only."""
    r = power_range(gpu)
    low = r.min_watts if r.min_watts is not None else 0.0
    levels = [min(max(f * r.default_watts, low), r.max_watts) for f in CAP_FRACTIONS]
    if r.min_watts is not None:
        levels.append(r.min_watts)
    out: list[float] = []
    for w in sorted(levels, reverse=True):
        if not out or out[-1] - w > 1e-6:
            out.append(round(w, 3))
    return out


def static_watts(gpu: GPUType, power: PowerParams | None = None) -> float:
    """P_static, W: the idle fraction of the power model (``PowerParams.idle_fraction``) x TDP."""
    return (power or default_power()).idle_fraction * gpu.tdp_watts


def clock_fraction(gpu: GPUType, cap_watts, draw_watts, power: PowerParams | None = None,
                   exponent: float = CLOCK_POWER_EXPONENT) -> np.ndarray:
    """x in (0, 1]: the SM clock, as a fraction of the uncapped one, at which a step that would draw
    ``draw_watts`` fits under ``cap_watts`` (module docstring). 1 where the cap is at or above the
    draw; 0 where the cap does not exceed the static draw (the step cannot run there).

    Vectorised over ``cap_watts`` and ``draw_watts`` (numpy broadcasting). The cap is not range-checked
    here (``check_cap`` does that)."""
    cap = np.asarray(cap_watts, dtype=float)
    draw = np.asarray(draw_watts, dtype=float)
    ps = static_watts(gpu, power)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (cap - ps) / (draw - ps)
    x = np.where(ratio > 0, np.abs(ratio) ** (1.0 / exponent), 0.0)
    return np.where(cap >= draw, 1.0, np.minimum(x, 1.0))


def prefill_draw_watts(gpu: GPUType, power: PowerParams | None = None) -> float:
    """The uncapped draw of compute-bound prefill, W (``perf.power``: f_p x TDP, i.e. the TDP)."""
    return float(gpu_power_watts(gpu, "prefill", 0.0, 0.0, power))


def prefill_slowdown(gpu: GPUType, cap_watts, draw_watts=None, power: PowerParams | None = None) -> np.ndarray:
    """Step-time factor (>= 1) of a compute-bound prefill step under ``cap_watts``: 1 / x at its
    uncapped draw (default ``prefill_draw_watts``). inf where the cap does not exceed the static draw.
    Vectorised over ``cap_watts``."""
    draw = prefill_draw_watts(gpu, power) if draw_watts is None else draw_watts
    x = clock_fraction(gpu, cap_watts, draw, power)
    with np.errstate(divide="ignore"):
        return np.where(x > 0, 1.0 / x, np.inf)


def decode_slowdown(gpu: GPUType, cap_watts, draw_watts, utilisation=0.0, perf: PerfParams | None = None,
                    power: PowerParams | None = None) -> np.ndarray:
    """Step-time factor (>= 1) of a decode step drawing ``draw_watts`` uncapped, under ``cap_watts``.

    The SM clock falls to x (``clock_fraction`` at the decode draw); the step's compute term grows
    by 1/x and its memory term does not, so with r = t_compute / t_memory at full clock the step
    slows by max(r / x, 1) / max(r, 1): 1 for any cap at or above the draw, and 1 below it until the
    compute term overtakes the memory term.

    Args:
        draw_watts: the step's uncapped draw per GPU, W (``perf.power.gpu_power_watts`` /
            ``replica_gpu_watts``).
        utilisation: u of the step (``perf.power.decode_utilisation``: FLOPs per weight byte over
            the GPU's ridge point); r = u x eff_bandwidth / eff_compute of ``perf`` (KV reads, which
            add bytes, are left out, so r errs high and the factor errs conservative).
        perf: calibration profile (default ``steptime.default_params()``).

    Vectorised over ``cap_watts``, ``draw_watts`` and ``utilisation``.
    """
    p = perf or default_params()
    r = np.maximum(np.asarray(utilisation, dtype=float), 0.0) * p.eff_bandwidth / p.eff_compute
    x = clock_fraction(gpu, cap_watts, draw_watts, power)
    with np.errstate(divide="ignore"):
        capped = np.where(x > 0, np.maximum(r / np.where(x > 0, x, 1.0), 1.0), np.inf)
    return capped / np.maximum(r, 1.0)


def capped_draw_watts(draw_watts, cap_watts) -> np.ndarray:
    """Power drawn at load under a cap, W: min(the predicted draw, the cap). Vectorised."""
    return np.minimum(np.asarray(draw_watts, dtype=float), np.asarray(cap_watts, dtype=float))


def capped_perf_params(p: PerfParams, gpu: GPUType, cap_watts: float, draw_watts: float | None = None,
                       power: PowerParams | None = None) -> PerfParams:
    """``p`` with the cap applied, for any step-time or capacity function (``steptime.*_time_s``,
    ``capacity.replica_curves``, ``decode_curves``, ``prefill_capacity_rps``, ...).

    The cap scales the achieved compute rate (``eff_compute``) by x, the clock fraction at
    ``draw_watts`` (default: the prefill draw, the TDP: the draw of the compute-bound steps whose
    compute term is the one that binds); bandwidth, host and collective terms are unchanged. A
    decode-only replica may pass its predicted decode draw instead (higher x, less slowdown).

    Raises:
        ValueError: when the cap is outside the GPU's allowed range (``check_cap``).
    """
    cap = check_cap(gpu, cap_watts)
    draw = prefill_draw_watts(gpu, power) if draw_watts is None else draw_watts
    x = float(clock_fraction(gpu, cap, draw, power))
    if x <= 0:
        raise ValueError(f"power cap {cap:g} W of GPU {gpu.name} does not exceed its static draw "
                         f"{static_watts(gpu, power):g} W")
    if x >= 1.0:
        return p
    return replace(p, eff_compute=p.eff_compute * x, name=f"{p.name}@{cap:g}W",
                   source=f"{p.source}; eff_compute x {x:.4f} under a {cap:g} W cap (perf.powercap)")
