"""Accuracy of the performance model on measurements, per calibration profile and held-out split.

For each dataset vendored in data/profiles it prints the median absolute percentage error (MdAPE) of:

- TTFT: the prefill (prompt) time of the batch (Splitwise; TensorRT-LLM batch-1 first token);
- TPOT/ITL: the decode iteration (Splitwise token time; ML.ENERGY median ITL);
- saturated throughput: output tokens/s at a full batch (ML.ENERGY at its measured batch;
  TensorRT-LLM static-batching peak);
- power: average GPU power against load (ML.ENERGY), from ``llmfleet.perf.power``.

Held-out splits refit the profile's constants without a group and score that group:
leave-one-model-out (LOMO), leave-one-TP-out and, where the data has more than one GPU type,
leave-one-GPU-out (LOGO). "as shipped" rows score the shipped profile on data it was not fitted on
(another engine generation or another engine), which is the question a user asks of it.

    python bench/perf_accuracy.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from llmfleet.catalog.gpus import get_gpu
from llmfleet.catalog.models import resolve_model
from llmfleet.perf import power
from llmfleet.perf.calibration import (MLENERGY_PROMPT_TOKENS, TRTLLM_GPU, TRTLLM_MODEL, TRTLLM_PRECISION,
                                       decode_holdout_report, fit_decode, holdout_report, load_mlenergy,
                                       load_prompt_timings, load_splitwise, mdape, predict_itl, prompt_holdout_report)
from llmfleet.perf.precision import with_precision
from llmfleet.perf.steptime import PROFILES, decode_time_s, load_profile, prefill_time_s

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "profiles"

def pct(x: float) -> str:
    return f"{x:5.1f}%"


def splitwise_section(p_name: str) -> None:
    df = load_splitwise(DATA / "splitwise_perf_model.csv")
    p = load_profile(p_name)
    m = mdape(df, p)
    print(f"  Splitwise (vLLM 2023, A100/H100, Llama-2-70B TP2-8, BLOOM-176B TP8), as shipped: "
          f"TTFT {pct(m['ttft_mdape_pct'])}  TPOT {pct(m['tpot_mdape_pct'])}  (n={m['n']})")
    if p_name == "splitwise-2023":
        for r in holdout_report(df):
            h = r["held_out"]
            print(f"    refit on {r['fit_on']:<12} predict {r['predict']:<12} ({r['split']:<9}): "
                  f"TTFT {pct(h['ttft_mdape_pct'])}  TPOT {pct(h['tpot_mdape_pct'])}  (n={h['n']})")


def prompt_section(p_name: str) -> None:
    """TTFT of compute-bound prompts: the split the vllm-v1 profile's GEMM efficiency is fitted on."""
    if p_name != "vllm-v1":
        return
    rows = load_prompt_timings(DATA)
    print(f"  Prompts >= 512 tokens (Splitwise vLLM + TensorRT-LLM first token; n={len(rows)}), refit of the GEMM efficiency:")
    for r in prompt_holdout_report(rows, load_profile(p_name)):
        print(f"    leave-one-{r['split']}-out {r['held_out']:<28} TTFT {pct(r['held_out_mdape_pct'])} (n={r['n']})")


def mlenergy_section(p_name: str) -> None:
    df = load_mlenergy(DATA / "mlenergy_h100_configurations.csv")
    p = load_profile(p_name)
    pred = predict_itl(df, p)
    itl_err = np.abs(pred / df["itl_s"] - 1)
    tput_err = np.abs((df["batch"] / pred) / df["throughput_tps"] - 1)
    print(f"  ML.ENERGY v3 (vLLM V1, H100 only: no LOGO possible), as shipped: ITL dense "
          f"{pct(np.median(itl_err[df['dense']]) * 100)}  MoE {pct(np.median(itl_err[~df['dense']]) * 100)};  "
          f"saturated throughput {pct(np.median(tput_err) * 100)}  (n={len(df)})")
    if p_name != "vllm-v1":
        return
    for r in decode_holdout_report(df[df["dense"]], p):
        print(f"    {'LOMO' if r['split'] == 'model' else 'leave-one-TP-out'} {r['held_out']:<36} ITL "
              f"{pct(r['held_out_mdape_pct'])} (n={r['n']}; in-sample {pct(r['in_sample_mdape_pct'])})")
    for factor in (0.5, 2.0):
        prompts = {k: v * factor for k, v in MLENERGY_PROMPT_TOKENS.items()}
        refit = fit_decode(df[df["dense"]], p, prompts)
        print(f"    sensitivity: assumed prompts x{factor}: refit in-sample ITL "
              f"{pct(float(np.median(np.abs(predict_itl(df[df['dense']], refit, prompts) / df[df['dense']]['itl_s'] - 1)) * 100))}, "
              f"eff_compute {refit.eff_compute:.2f}, eff_bandwidth {refit.eff_bandwidth:.2f}, "
              f"t_seq {refit.t_seq_s * 1e6:.0f} us")


def trtllm_section(p_name: str) -> None:
    path = DATA / "trtllm_v0.6_h100_l40s_a100.csv"
    p = load_profile(p_name)
    raw = pd.read_csv(path)
    raw = raw[raw["model"].isin(TRTLLM_MODEL)]
    ttft, tput = [], []
    for r in raw.itertuples():
        model = with_precision(resolve_model(TRTLLM_MODEL[r.model]), TRTLLM_PRECISION[r.precision], "auto")
        gpu, tp, b = get_gpu(TRTLLM_GPU[r.gpu]), int(r.tp), float(r.batch_size)
        if r.metric == "first_token_latency_bs1":
            ttft.append(float(prefill_time_s(model, gpu, tp, r.isl, p=p)) * 1e3 / r.value - 1)
        else:  # static batching: one prefill of the batch, then osl decode steps of a growing context
            steps = np.arange(r.osl)
            decode = decode_time_s(model, gpu, tp, b, b * (r.isl + steps), p).sum()
            total = float(prefill_time_s(model, gpu, tp, b * r.isl, b * r.isl**2, p)) + float(decode)
            tput.append(b * r.osl / total / tp / r.value - 1)
    fitted = " (its prompts >= 512 tokens are in the vllm-v1 prompt fit)" if p_name == "vllm-v1" else ""
    print(f"  TensorRT-LLM v0.6 (another engine; FP8 on H100/L40S, FP16 on A100){fitted}, as shipped: "
          f"TTFT {pct(np.median(np.abs(ttft)) * 100)} (median signed {np.median(ttft):+.0%}, n={len(ttft)});  "
          f"peak throughput {pct(np.median(np.abs(tput)) * 100)} (median signed {np.median(tput):+.0%}, n={len(tput)})")


def power_section() -> None:
    df = power.load_mlenergy(DATA / "mlenergy_h100_configurations.csv")
    report = power.power_holdout_report(df)
    print("  power vs load (ML.ENERGY H100, per-GPU average draw; MdAPE %, this model vs a constant "
          "0.74 x TDP vs TDP; one model for all profiles):")
    print("    " + report.round(1).to_string().replace("\n", "\n    "))


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    for name in PROFILES:
        print(f"== profile {name}{' (default)' if name == PROFILES[0] else ''}: {load_profile(name).source}")
        splitwise_section(name)
        prompt_section(name)
        mlenergy_section(name)
        trtllm_section(name)
    power_section()


if __name__ == "__main__":
    main()
