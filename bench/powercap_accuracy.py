"""Predicted step-time slowdowns under a power cap (``llmfleet.perf.powercap``) against published ones.

Neither constant of the model (k = 3, the static share 0.10 of TDP) is fitted to any figure here.

    python bench/powercap_accuracy.py

Published figures (each row names its source):

- Splitwise (Patel et al., ISCA 2024): the ``h100-80gb-pcap`` rows of the vendored
  ``data/profiles/splitwise_perf_model.csv`` are the H100 rows with prompt times x 1.3 and token
  times x 1.0, Splitwise's figures for the Splitwise-HHcap token machines (server at 70 % of rated
  power: splitwise-sim ``configs/hardware_repo/skus/dgx-h100-pcap.yaml`` tdp 7,140 W = 0.70 x the
  10,200 W of ``dgx-h100.yaml``; the paper states the GPUs' share of it as 50 % of TDP, 350 W). The
  server figure read literally leaves 7,140 - (10,200 - 8 x 700) = 2,540 W for 8 GPUs, 317.5 W each:
  both readings are printed.
- club-3090 (noonghunna/club-3090 issue #104, 2026-05-09): one RTX 3090, prefill-heavy runs of
  17,472-token prompts, 1,641.64 tok/s at the 350 W default limit drawing 300.78 W, 1,658.00 tok/s
  at 340 W (drawing 309.16 W, not binding), 1,317.85 tok/s at a 180 W cap (drawing 175.01 W).
- LLM Garage, "Tokens-per-Second Test Bench: Power Limit Sweep" (Feb 2026): six RTX 3090s,
  llama.cpp, 198K-token context; prefill 9,893 / 9,326 / 8,436 / 5,941 / 2,549 / 1,390 tok/s at
  350 / 300 / 250 / 200 / 150 / 100 W. Its uncapped draw is not given (taken as the 350 W limit).
- Ma et al., arXiv 2605.11999: decode on an H200 draws 137-300 W of 700 W and no cap above that
  triggers; Maliakel et al., arXiv 2501.08219: 1-6 % more latency from 2842 down to 180 MHz
  (RTX PRO 6000 Blackwell, 1B-32B models, decode 77-91 % of the time).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from llmfleet.catalog.gpus import GPUType, get_gpu
from llmfleet.catalog.models import resolve_model
from llmfleet.perf.power import gpu_power_watts, model_utilisation
from llmfleet.perf.powercap import capped_perf_params, clock_fraction, decode_slowdown, prefill_slowdown
from llmfleet.perf.steptime import decode_time_s, default_params

SPLITWISE_CSV = "data/profiles/splitwise_perf_model.csv"

RTX_3090 = GPUType(name="RTX-3090", memory_gb=24, mem_bandwidth_gbps=936, peak_bf16_tflops=71, tdp_watts=350,
                   interconnect_gbps=32, min_power_cap_watts=100, max_power_limit_watts=350,
                   power_limit_source="club-3090 issue #104: power envelope 100 W (min) -> 350 W (default) -> 350 W (max)")
"""The consumer card of two published sweeps; only its power limits enter the prefill figures."""


@dataclass(frozen=True)
class Published:
    """One published slowdown (step time capped / uncapped) of a phase under a cap."""

    source: str
    gpu: GPUType
    phase: str
    cap_watts: float
    draw_watts: float
    """the phase's uncapped draw per GPU, W (measured where the source gives it)"""
    slowdown: float
    in_domain: bool = True
    """False: a regime the model does not claim (consumer boards below ~60 % of TDP)"""


def splitwise_ratios(path: str = SPLITWISE_CSV) -> tuple[float, float, int]:
    """Median prompt-time and token-time ratios of the power-capped H100 rows to the H100 rows,
    matched on (model, TP, prompt, batch, tokens), and the number of matched rows."""
    s = pd.read_csv(path)
    key = ["model", "tensor_parallel", "prompt_size", "batch_size", "token_size"]
    j = s[s.hardware == "h100-80gb"].merge(s[s.hardware == "h100-80gb-pcap"], on=key, suffixes=("", "_cap"))
    return float((j.prompt_time_cap / j.prompt_time).median()), float((j.token_time_cap / j.token_time).median()), len(j)


def published(path: str = SPLITWISE_CSV) -> list[Published]:
    """The published prefill and decode figures of the module docstring."""
    h100 = get_gpu("H100-SXM")
    prompt, token, _ = splitwise_ratios(path)
    out = [
        Published("Splitwise HHcap, GPU at 50% TDP", h100, "prefill", 350.0, h100.tdp_watts, prompt),
        Published("Splitwise HHcap, server 70% read literally", h100, "prefill", 317.5, h100.tdp_watts, prompt),
        # token phase: Splitwise A100 token phases of Llama-2-70B TP 8 draw 0.44 TDP (perf.power docstring)
        Published("Splitwise HHcap tokens, GPU at 50% TDP", h100, "decode", 350.0, 0.44 * h100.tdp_watts, token),
        Published("club-3090 #104, 340 W (not binding)", RTX_3090, "prefill", 340.0, 300.78, 1641.64 / 1658.00),
        Published("club-3090 #104, 180 W", RTX_3090, "prefill", 180.0, 300.78, 1641.64 / 1317.85),
    ]
    garage = {300: 9326, 250: 8436, 200: 5941, 150: 2549, 100: 1390}
    for cap, tps in garage.items():
        out.append(Published(f"LLM Garage 6x3090, {cap} W", RTX_3090, "prefill", float(cap), 350.0, 9893 / tps,
                             in_domain=cap / 350.0 >= 0.6))
    h200 = get_gpu("H200")
    for draw in (137.0, 300.0):
        out.append(Published(f"2605.11999 H200 decode drawing {draw:g} W, 490 W cap", h200, "decode", 490.0, draw, 1.0))
    return out


def predicted(p: Published) -> float:
    """The model's slowdown for a published case (decode at a memory-bound u of 0.05)."""
    if p.phase == "prefill":
        return float(prefill_slowdown(p.gpu, p.cap_watts, p.draw_watts))
    return float(decode_slowdown(p.gpu, p.cap_watts, p.draw_watts, 0.05))


def clock_lock_decode_slowdown(clock_fraction_: float = 180 / 2842, model_id: str = "Qwen/Qwen3-8B",
                               batch: int = 8, context_tokens: int = 1000) -> float:
    """Decode step slowdown of ``model_id`` on an RTX PRO 6000 with the SM clock at
    ``clock_fraction_`` (2501.08219's 180 of 2842 MHz), from the roofline (eff_compute x the fraction)."""
    from dataclasses import replace

    gpu, m, p = get_gpu("RTX-PRO-6000"), resolve_model(model_id), default_params()
    slow = replace(p, eff_compute=p.eff_compute * clock_fraction_)
    t0 = decode_time_s(m, gpu, 1, batch, batch * context_tokens, p)
    return float(decode_time_s(m, gpu, 1, batch, batch * context_tokens, slow) / t0)


def main() -> int:
    pd.set_option("display.width", 200)
    rows = []
    for p in published():
        pred = predicted(p)
        rows.append({"source": p.source, "gpu": p.gpu.name, "phase": p.phase, "cap_W": p.cap_watts,
                     "draw_W": round(p.draw_watts, 1), "published": round(p.slowdown, 3), "predicted": round(pred, 3),
                     "error_%": round((pred / p.slowdown - 1) * 100, 1), "in_domain": p.in_domain})
    df = pd.DataFrame(rows)
    print(df.to_string(index=False))
    dom = df[df.in_domain]
    print(f"\nin-domain cases: {len(dom)}, median |error| {dom['error_%'].abs().median():.1f} %, "
          f"max |error| {dom['error_%'].abs().max():.1f} %")
    print(f"\n2501.08219 clock lock 180/2842 MHz, Qwen3-8B decode step batch 8 on RTX PRO 6000: "
          f"x {clock_lock_decode_slowdown():.3f} (published: 1-6 % end to end)")
    h100 = get_gpu("H100-SXM")
    m = resolve_model("meta-llama/Llama-3.1-70B")
    print("\nH100-SXM, Llama-3.1-70B TP 4 decode at batch 64: draw and slowdown per cap level")
    u = float(model_utilisation(m, h100, 64))
    draw = float(gpu_power_watts(h100, "decode", u))
    for cap in (700.0, 595.0, 490.0, 350.0, 200.0):
        print(f"  cap {cap:5.0f} W: prefill x {float(prefill_slowdown(h100, cap)):.3f}; decode (draw {draw:.0f} W, "
              f"u {u:.3f}) x {float(decode_slowdown(h100, cap, draw, u)):.3f}, clock {float(clock_fraction(h100, cap, draw)):.3f}; "
              f"eff_compute {capped_perf_params(default_params(), h100, cap).eff_compute:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
