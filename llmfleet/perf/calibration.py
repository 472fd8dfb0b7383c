"""Fit the step-time model's efficiencies on measured vLLM latencies, and measure its error.

Measurements: Splitwise (Patel et al., ISCA 2024; Mutinifni/splitwise-sim ``data/perf_model.csv``,
MIT), vLLM on DGX A100-80GB and DGX H100: Llama-2-70B at TP 2/4/8 and BLOOM-176B at TP 8; batch
1-64 at 512 prompt / 128 output tokens, and prompt 128-8192 / output 128-8192 at batch 1. Five
repetitions per point; we use the median. ``prompt_time`` is the time of the prefill of the whole
batch (``batch x prompt`` tokens), ``token_time`` the time of one decode iteration. The
``h100-80gb-pcap`` rows are not measurements (H100 x 1.3) and are excluded.

The accuracy that matters is on data the fit did not see: ``holdout_report`` fits on one GPU
type (or TP degree) and reports the median absolute percentage error (MdAPE) on the others.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from llmfleet.catalog.gpus import get_gpu
from llmfleet.catalog.models import resolve_model
from llmfleet.perf.steptime import PerfParams, decode_time_s, prefill_time_s

SPLITWISE_GPU = {"a100-80gb": "A100-80G", "h100-80gb": "H100-SXM"}
SPLITWISE_MODEL = {"llama2-70b": "meta-llama/Llama-2-70b-hf", "bloom-176b": "bigscience/bloom"}
FITTED = ("eff_compute", "eff_bandwidth", "t_fixed_s", "layer_overhead_bytes", "alpha_hop_s")


def load_splitwise(path: str | Path) -> pd.DataFrame:
    """Median of the repetitions of each Splitwise configuration.

    Returns:
        DataFrame with ``model``, ``gpu`` (catalogue names), ``tp``, ``prompt_tokens``, ``batch``,
        ``output_tokens``, ``prefill_s`` and ``decode_step_s`` (medians, seconds).
    """
    raw = pd.read_csv(path)
    raw = raw[raw["hardware"].isin(SPLITWISE_GPU)]
    keys = ["model", "hardware", "tensor_parallel", "prompt_size", "batch_size", "token_size"]
    med = raw.groupby(keys, as_index=False)[["prompt_time", "token_time"]].median()
    return pd.DataFrame({
        "model": med["model"].map(SPLITWISE_MODEL),
        "gpu": med["hardware"].map(SPLITWISE_GPU),
        "tp": med["tensor_parallel"].astype(int),
        "prompt_tokens": med["prompt_size"].astype(float),
        "batch": med["batch_size"].astype(float),
        "output_tokens": med["token_size"].astype(float),
        "prefill_s": med["prompt_time"] / 1e3,
        "decode_step_s": med["token_time"] / 1e3,
    })


def predict(df: pd.DataFrame, p: PerfParams) -> tuple[np.ndarray, np.ndarray]:
    """Predicted (prefill_s, decode_step_s) for each row of a ``load_splitwise`` frame.

    The decode step is evaluated at the mean context of the measured generation:
    ``batch x (prompt + output / 2)`` tokens.
    """
    pre = np.empty(len(df))
    dec = np.empty(len(df))
    for (model_id, gpu_name, tp), idx in df.groupby(["model", "gpu", "tp"]).groups.items():
        rows = df.loc[idx]
        model, gpu = resolve_model(model_id), get_gpu(gpu_name)
        pos = df.index.get_indexer(idx)
        n = rows["batch"] * rows["prompt_tokens"]
        pre[pos] = prefill_time_s(model, gpu, int(tp), n, rows["batch"] * rows["prompt_tokens"] ** 2, p)
        ctx = rows["batch"] * (rows["prompt_tokens"] + rows["output_tokens"] / 2)
        dec[pos] = decode_time_s(model, gpu, int(tp), rows["batch"], ctx, p)
    return pre, dec


def fit(df: pd.DataFrame, start: PerfParams | None = None, source: str = "") -> PerfParams:
    """Least-squares fit of the five ``FITTED`` parameters on log(predicted / measured) of both
    prefill and decode times, with a robust (soft-L1) loss so a few anomalous points do not
    dominate (Splitwise's batch-64 TP-2 prompt times are 8x lower than batch 32)."""
    start = start or PerfParams()
    x0 = np.array([getattr(start, f) for f in FITTED])
    scale = np.array([1.0, 1.0, 1e-3, 1e8, 1e-5])

    def params_of(x: np.ndarray) -> PerfParams:
        return replace(start, **dict(zip(FITTED, (x * scale).tolist())))

    def residuals(x: np.ndarray) -> np.ndarray:
        pre, dec = predict(df, params_of(x))
        return np.concatenate([np.log(pre / df["prefill_s"]), np.log(dec / df["decode_step_s"])])

    res = least_squares(residuals, x0 / scale, bounds=([0.05, 0.05, 0, 0, 0], [1.0, 1.0, 1e3, 1e3, 1e3]),
                        loss="soft_l1", f_scale=0.1)
    return replace(params_of(res.x), source=source or "fit on Splitwise perf_model.csv")


def mdape(df: pd.DataFrame, p: PerfParams) -> dict[str, float]:
    """Median absolute percentage error of prefill (TTFT) and decode step (TPOT) predictions, %."""
    pre, dec = predict(df, p)
    return {
        "ttft_mdape_pct": float(np.median(np.abs(pre / df["prefill_s"] - 1)) * 100),
        "tpot_mdape_pct": float(np.median(np.abs(dec / df["decode_step_s"] - 1)) * 100),
        "n": len(df),
    }


def holdout_report(df: pd.DataFrame) -> list[dict]:
    """Fit on one part of the data and score on the rest, for each split we can make.

    Returns:
        One dict per split: ``split``, ``fit_on``, ``predict``, and the ``mdape`` figures of the
        held-out rows (plus the in-sample figures for comparison).
    """
    splits = [
        ("GPU type", df["gpu"] == "A100-80G", "A100-80G", "H100-SXM"),
        ("GPU type", df["gpu"] == "H100-SXM", "H100-SXM", "A100-80G"),
        ("TP degree", df["tp"].isin([2, 4]), "TP 2,4", "TP 8"),
        ("model", df["model"] == "meta-llama/Llama-2-70b-hf", "Llama-2-70B", "BLOOM-176B"),
    ]
    out = []
    for split, mask, fit_on, held in splits:
        p = fit(df[mask])
        out.append({"split": split, "fit_on": fit_on, "predict": held,
                    "in_sample": mdape(df[mask], p), "held_out": mdape(df[~mask], p)})
    return out
