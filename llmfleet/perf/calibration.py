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
from llmfleet.perf.precision import with_precision
from llmfleet.perf.steptime import AllReduceFit, PerfParams, decode_time_s, prefill_time_s, step_time_s

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


# --------------------------------------------------------------------------------------------
# Today's vLLM (the ``vllm-v1`` profile): ML.ENERGY decode, Splitwise prompts, Vidur collectives.

MLENERGY_PRECISION = {"bfloat16": "bf16", "fp8": "fp8"}
"""ML.ENERGY ``weight_precision`` -> ``spec.serving.quantization``. MXFP4 (gpt-oss) runs on H100
as weight-only FP4 with BF16 GEMMs, a precision llmfleet does not plan, so those rows are left out."""

MLENERGY_PROMPT_TOKENS = {"lm-arena-chat": 128.0, "gpqa": 256.0, "sourcegraph-fim": 1024.0}
"""mean prompt per ML.ENERGY task, tokens. ML.ENERGY does not publish its prompt lengths, so these
are assumptions: lm-arena-chat holds single human turns (LMSYS-Chat-1M, Zheng et al., ICLR 2024,
reports a mean user prompt of 69.5 tokens; the chat template adds about 50); GPQA questions with
their four options run a few hundred tokens; code-completion (FIM) prompts carry file context.
They matter only through the prompt chunks mixed into decode steps (a few % of step time at these
output lengths); ``bench/perf_accuracy.py`` prints the fit's sensitivity to them."""

MLENERGY_GPU = {"H100": "H100-SXM"}

DECODE_FITTED = ("eff_bandwidth", "t_fixed_s", "t_seq_s", "layer_overhead_bytes", "all_reduce_latency_scale")
DECODE_SCALE = np.array([1.0, 1e-3, 1e-5, 1e7, 1.0])
DECODE_LOWER = np.array([0.3, 0.0, 0.0, 0.0, 0.05])
DECODE_UPPER = np.array([0.92, 0.1, 1e-3, 1e9, 1.0])
"""bounds of the decode fit; 0.92 is the physical ceiling of HBM streaming (the STREAM figure of
HBM3 is about 90-93% of its peak)"""

PROMPT_FIT_MIN_TOKENS = 512
"""prompts shorter than this (batch tokens) are launch- and latency-bound, not compute-bound, so
they say nothing about the GEMM efficiency"""

TRTLLM_MODEL = {"LLaMA 7B": "meta-llama/Llama-2-7b-hf", "LLaMA 70B": "meta-llama/Llama-2-70b-hf"}
TRTLLM_GPU = {"H100-SXM-80GB": "H100-SXM", "L40S": "L40S", "A100-SXM-80GB(assumed)": "A100-80G"}
TRTLLM_PRECISION = {"FP8": "fp8", "FP16": "bf16"}


def load_prompt_timings(data_dir: str | Path) -> pd.DataFrame:
    """Every measured prompt time in ``data_dir`` long enough to be compute-bound.

    Splitwise's prompt rows (vLLM 2023, BF16, A100/H100) and TensorRT-LLM v0.6's batch-1 first-token
    latencies (NVIDIA/TensorRT-LLM docs/source/performance.md, Apache-2.0; FP8 on H100 and L40S,
    FP16 on A100; catalogued models only).

    Returns:
        DataFrame with ``source``, ``model``, ``quantization``, ``gpu``, ``tp``, ``batch``,
        ``prompt_tokens`` (per request) and ``prefill_s``.
    """
    data_dir = Path(data_dir)
    sw = load_splitwise(data_dir / "splitwise_perf_model.csv")
    sw = sw.drop_duplicates(["model", "gpu", "tp", "batch", "prompt_tokens"])
    frames = [pd.DataFrame({"source": "splitwise", "model": sw["model"], "quantization": "bf16", "gpu": sw["gpu"],
                            "tp": sw["tp"], "batch": sw["batch"], "prompt_tokens": sw["prompt_tokens"],
                            "prefill_s": sw["prefill_s"]})]
    trt = pd.read_csv(data_dir / "trtllm_v0.6_h100_l40s_a100.csv")
    trt = trt[(trt["metric"] == "first_token_latency_bs1") & trt["model"].isin(TRTLLM_MODEL)]
    frames.append(pd.DataFrame({"source": "tensorrt-llm", "model": trt["model"].map(TRTLLM_MODEL),
                                "quantization": trt["precision"].map(TRTLLM_PRECISION), "gpu": trt["gpu"].map(TRTLLM_GPU),
                                "tp": trt["tp"].astype(int), "batch": 1.0, "prompt_tokens": trt["isl"].astype(float),
                                "prefill_s": trt["value"] / 1e3}))
    df = pd.concat(frames, ignore_index=True)
    return df[df["batch"] * df["prompt_tokens"] >= PROMPT_FIT_MIN_TOKENS].reset_index(drop=True)


def predict_prompts(df: pd.DataFrame, p: PerfParams) -> np.ndarray:
    """Predicted prompt time, s, of each ``load_prompt_timings`` row (one pass over the batch)."""
    out = np.empty(len(df))
    for (name, quant, gpu_name, tp), idx in df.groupby(["model", "quantization", "gpu", "tp"]).groups.items():
        rows = df.loc[idx]
        model = with_precision(resolve_model(name), quant, "auto")
        n = rows["batch"] * rows["prompt_tokens"]
        out[df.index.get_indexer(idx)] = prefill_time_s(model, get_gpu(gpu_name), int(tp), n,
                                                        rows["batch"] * rows["prompt_tokens"] ** 2, p)
    return out


def fit_prompt_compute(df: pd.DataFrame, start: PerfParams) -> PerfParams:
    """Fit ``eff_compute`` alone on compute-bound prompt timings (soft-L1 on log error), the other
    constants held at ``start``."""

    def residuals(x: np.ndarray) -> np.ndarray:
        return np.log(predict_prompts(df, replace(start, eff_compute=float(x[0]))) / df["prefill_s"].to_numpy())

    res = least_squares(residuals, [start.eff_compute], bounds=([0.05], [1.0]), loss="soft_l1", f_scale=0.1)
    return replace(start, eff_compute=float(res.x[0]))


def load_mlenergy(path: str | Path) -> pd.DataFrame:
    """ML.ENERGY Benchmark v3 rows this model can describe (ml-energy/leaderboard, Apache-2.0).

    Keeps rows whose model is catalogued (``resolve_model``) and whose precision is planned
    (``MLENERGY_PRECISION``); hybrid Mamba models are left out.

    Returns:
        DataFrame with ``model`` (catalogue name), ``model_id`` (as measured), ``dense`` (not MoE), ``quantization``,
        ``gpu``, ``tp``, ``batch`` (mean running batch), ``output_tokens`` (mean), ``max_num_seqs``,
        ``itl_s`` (median inter-token latency, s), ``throughput_tps`` (output tokens/s) and
        ``power_w`` (``avg_power_watts`` as recorded).
    """
    raw = pd.read_csv(path)
    raw = raw[raw["weight_precision"].isin(MLENERGY_PRECISION) & (raw["architecture"] != "Mamba-Transformer Hybrid")]
    rows = []
    for r in raw.itertuples():
        try:
            model = resolve_model(r.model_id)
        except KeyError:
            continue
        rows.append({"model": model.name, "model_id": r.model_id, "dense": model.num_experts <= 1, "quantization": MLENERGY_PRECISION[r.weight_precision],
                     "gpu": MLENERGY_GPU[r.gpu_model], "tp": int(r.num_gpus), "batch": float(r.avg_batch_size),
                     "output_tokens": float(r.avg_output_len), "max_num_seqs": int(r.max_num_seqs),
                     "itl_s": float(r.median_itl_ms) / 1e3, "throughput_tps": float(r.output_throughput_tokens_per_sec),
                     "power_w": float(r.avg_power_watts), "task": r.task})
    return pd.DataFrame(rows)


def predict_itl(df: pd.DataFrame, p: PerfParams, prompt_tokens: dict[str, float] | None = None) -> np.ndarray:
    """Predicted inter-token latency, s, for each ``load_mlenergy`` row.

    vLLM V1 folds prompt chunks into decode steps, so at a steady mean batch B with outputs of O
    tokens and prompts of I tokens every step carries B x I / O prompt tokens on average besides
    its B decode tokens (each finished request is replaced by a new prompt); the step is
    ``step_time_s`` of that mix at a mean decode context of I + O / 2 per sequence.

    Args:
        prompt_tokens: mean prompt per task (default ``MLENERGY_PROMPT_TOKENS``).
    """
    prompts = prompt_tokens or MLENERGY_PROMPT_TOKENS
    out = np.empty(len(df))
    for (name, quant, gpu_name, tp), idx in df.groupby(["model", "quantization", "gpu", "tp"]).groups.items():
        rows = df.loc[idx]
        model = with_precision(resolve_model(name), quant, "auto")
        b, o = rows["batch"].to_numpy(), rows["output_tokens"].to_numpy()
        i = rows["task"].map(prompts).to_numpy(dtype=float)
        n_p = b * i / o
        out[df.index.get_indexer(idx)] = step_time_s(model, get_gpu(gpu_name), int(tp), n_p, n_p * i / 2.0,
                                                     b, b * (i + o / 2.0), p)
    return out


def fit_decode(df: pd.DataFrame, start: PerfParams, prompt_tokens: dict[str, float] | None = None) -> PerfParams:
    """Least-squares fit of ``DECODE_FITTED`` on log(predicted / measured) ITL (soft-L1 loss) within
    ``DECODE_UPPER``, the collectives held at ``start``."""
    x0 = np.array([getattr(start, f) for f in DECODE_FITTED]) / DECODE_SCALE

    def params_of(x: np.ndarray) -> PerfParams:
        return replace(start, **dict(zip(DECODE_FITTED, (x * DECODE_SCALE).tolist())))

    def residuals(x: np.ndarray) -> np.ndarray:
        return np.log(predict_itl(df, params_of(x), prompt_tokens) / df["itl_s"].to_numpy())

    res = least_squares(residuals, x0, bounds=(DECODE_LOWER / DECODE_SCALE, DECODE_UPPER / DECODE_SCALE),
                        loss="soft_l1", f_scale=0.1)
    return params_of(res.x)


def load_all_reduce(path: str | Path) -> pd.DataFrame:
    """Vidur's NCCL all-reduce medians (``data/profiles/vidur_all_reduce_medians.csv``: ``node``,
    ``num_workers``, ``size_bytes``, ``median_ms``; single-node rows, median over ranks)."""
    return pd.read_csv(path)


ALL_REDUCE_TABLE_GPU = {"h100_dgx": "H100-SXM", "a100_dgx": "A100-80G"}
"""the GPU each Vidur table was measured on (DGX H100, DGX A100 80GB)"""


def fit_all_reduce(df: pd.DataFrame) -> tuple[AllReduceFit, ...]:
    """Fit latency + 2(tp-1)/tp x bytes / busbw per (table, TP) in log space (soft-L1), busbw as a
    fraction of the table GPU's datasheet interconnect bandwidth."""
    fits = []
    for (table, tp), rows in df.groupby(["node", "num_workers"]):
        size, t = rows["size_bytes"].to_numpy(float), rows["median_ms"].to_numpy(float) / 1e3
        bw = get_gpu(ALL_REDUCE_TABLE_GPU[table]).interconnect_gbps * 1e9
        volume = 2.0 * (tp - 1) / tp * size

        def residuals(x: np.ndarray) -> np.ndarray:
            return np.log((x[0] * 1e-6 + volume / (x[1] * bw)) / t)

        res = least_squares(residuals, [20.0, 0.5], bounds=([0.0, 0.01], [1e4, 1.0]), loss="soft_l1", f_scale=0.1)
        fits.append(AllReduceFit(table=str(table), tp=int(tp), latency_s=float(res.x[0]) * 1e-6,
                                 bus_fraction=float(res.x[1])))
    return tuple(fits)


def fit_vllm_v1(data_dir: str | Path) -> PerfParams:
    """The ``vllm-v1`` profile from the measurements in ``data_dir`` (``data/profiles``).

    1. Collectives: ``fit_all_reduce`` on Vidur's DGX A100/H100 NCCL tables.
    2. Everything else (GEMM and bandwidth efficiencies, per-step, per-sequence and per-layer
       overheads, the share of NCCL latency left under vLLM's custom all-reduce): ``fit_decode``
       on the ML.ENERGY H100 rows of dense models the catalogue describes (vLLM V1, CUDA graphs,
       chunked prefill), whose steps mix decode tokens with prompt chunks, so the GEMM efficiency
       is fitted on today's kernels too. MoE rows are left out of the fit and reported as held
       out: vLLM's fused-MoE kernels run below the dense roofline (Qwen3-235B-A22B is measured
       about 20% slower than predicted), which one shared set of constants cannot absorb without
       distorting the dense models. This is what fits prompts best: ML.ENERGY records
       no TTFT, and Splitwise's prompt timings come from 2023 kernels (pre-FlashAttention-3) that run
       prompts about 1.6x slower; ``bench/perf_accuracy.py`` reports both.
    """
    data_dir = Path(data_dir)
    p = PerfParams(eff_compute=0.5, eff_bandwidth=0.8, t_fixed_s=0.002, layer_overhead_bytes=1e7, t_seq_s=1e-5,
                   all_reduce_latency_scale=0.5,
                   all_reduce=fit_all_reduce(load_all_reduce(data_dir / "vidur_all_reduce_medians.csv")),
                   name="vllm-v1")
    dec = load_mlenergy(data_dir / "mlenergy_h100_configurations.csv")
    prompts = load_prompt_timings(data_dir)
    for _ in range(3):
        p = fit_prompt_compute(prompts, p)
        p = fit_decode(dec[dec["dense"]], p)
    return replace(p, source=(
        "vllm-v1: fitted on ML.ENERGY Benchmark v3 H100 rows of dense models (ml-energy/leaderboard, Apache-2.0), "
        "prompts on Splitwise perf_model.csv (Mutinifni/splitwise-sim, MIT) and TensorRT-LLM v0.6 "
        "first-token latencies (NVIDIA/TensorRT-LLM, Apache-2.0), all-reduce on "
        "Vidur DGX A100/H100 NCCL tables (microsoft/vidur, MIT); bench/fit_profiles.py"))


def fit_splitwise_2023(data_dir: str | Path) -> PerfParams:
    """The ``splitwise-2023`` profile: ``fit`` on every Splitwise row (pre-CUDA-graph vLLM)."""
    p = fit(load_splitwise(Path(data_dir) / "splitwise_perf_model.csv"), source=(
        "splitwise-2023: fit on all non-pcap rows of Splitwise perf_model.csv (A100-80GB, H100; "
        "Llama-2-70B, BLOOM-176B; Mutinifni/splitwise-sim, MIT); bench/fit_profiles.py"))
    return replace(p, name="splitwise-2023")


def itl_mdape(df: pd.DataFrame, p: PerfParams) -> float:
    """Median absolute percentage error of ``predict_itl`` against the measured ITL, %."""
    return float(np.median(np.abs(predict_itl(df, p) / df["itl_s"].to_numpy() - 1)) * 100)


def decode_holdout_report(df: pd.DataFrame, start: PerfParams) -> list[dict]:
    """Leave-one-model-out and leave-one-TP-out refits of the decode constants on ML.ENERGY rows.

    Returns:
        One dict per held-out group: ``split`` ("model" or "TP"), ``held_out`` (its name), ``n``,
        ``held_out_mdape_pct`` and ``in_sample_mdape_pct`` (of the fit on the other rows).
    """
    out = []
    for split, col in (("model", "model"), ("TP", "tp")):
        for value in sorted(df[col].unique()):
            mask = df[col] == value
            if mask.all():
                continue
            p = fit_decode(df[~mask], start)
            out.append({"split": split, "held_out": str(value), "n": int(mask.sum()),
                        "held_out_mdape_pct": itl_mdape(df[mask], p), "in_sample_mdape_pct": itl_mdape(df[~mask], p)})
    return out


def prompt_holdout_report(df: pd.DataFrame, start: PerfParams) -> list[dict]:
    """Leave-one-GPU-out, leave-one-model-out and leave-one-source-out refits of ``eff_compute`` on
    ``load_prompt_timings`` rows.

    Returns:
        One dict per held-out group: ``split``, ``held_out``, ``n`` and ``held_out_mdape_pct`` (%).
    """
    out = []
    for split, col in (("GPU", "gpu"), ("model", "model"), ("source", "source")):
        for value in sorted(df[col].unique()):
            mask = (df[col] == value).to_numpy()
            if mask.all():
                continue
            p = fit_prompt_compute(df[~mask].reset_index(drop=True), start)
            held = df[mask].reset_index(drop=True)
            err = np.median(np.abs(predict_prompts(held, p) / held["prefill_s"].to_numpy() - 1)) * 100
            out.append({"split": split, "held_out": str(value), "n": int(mask.sum()), "held_out_mdape_pct": float(err)})
    return out
