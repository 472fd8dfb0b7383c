"""Average GPU power draw of a serving replica against its load and phase.

Per GPU, with TDP from the GPU's datasheet (``GPUType.tdp_watts``):

    P = TDP x (i + (1 - i) x f)                          i = idle_fraction, f in [0, 1]
    f_decode(u)      = a0 + (a1 - a0) x u / (u + u_half)  memory-bound token generation
    f_prefill        = f_p                               compute-bound prompts
    f_mixed(u, phi)  = phi x f_prefill + (1 - phi) x f_decode(u)

- ``u``, the load of a decode step: its arithmetic intensity over the GPU's ridge point,

      u = [2 x B x N_active / (N_total x bytes per weight)] / [peak FLOP/s of the GEMM dtype / HBM bandwidth]

  the FLOPs a step of B sequences does per weight byte it reads, over the FLOPs per byte at which
  the GPU turns compute-bound (``decode_utilisation``). u << 1: the step streams weights with idle
  tensor cores; u -> 1 and beyond: the tensor cores saturate. It is what the planner knows of a
  configuration (batch, model, precision, GPU), it carries to other GPUs through their datasheets,
  and TP cancels out of it (weights and work split alike).
- mixed: iterations that carry decodes and prompt chunks together (vLLM's chunked prefill) are
  one forward pass whose u counts all their tokens; ``phi`` is the share of the time spent in
  prefill-only iterations besides (0 in the chunked-prefill steady state the planner models).

Why u: the ML.ENERGY H100 rows all run at their full batch (avg_batch_size / max_num_seqs = 0.99
median, 0.85 minimum), so a load fraction relative to max_num_seqs explains nothing; across rows
the draw per GPU rises with the batch and falls with weight bytes per FLOP. Binned medians of
P / TDP by octile (``python -m llmfleet.perf.power``): by u 0.62 -> 0.66 -> 0.68 -> 0.69 -> 0.71
-> 0.79 -> 0.83 -> 0.87 (Spearman 0.67); by batch per GPU 0.61 -> 0.84 (0.70); by batch alone
0.63 -> 0.83 (0.51); by median ITL 0.68 -> 0.84 (0.32); output length shows no trend (-0.06).
With u the saturating curve has the lowest leave-one-model-out error of the forms tried
(constant, log, power, Hill; u, batch, batch per GPU, active FLOPs per GPU).

Sources of the constants (``power.json``, written by ``python -m llmfleet.perf.power --write``):

- a0, a1, u_half: fitted (``fit_power``) on the ML.ENERGY Benchmark v3 H100 rows
  (``data/profiles/mlenergy_h100_configurations.csv``, Apache-2.0): vLLM serving LMArena chat,
  GPQA and Sourcegraph FIM requests at a fixed max_num_seqs, outputs of 230-9,550 tokens, so the
  time is dominated by decode with the short prompts interleaved. ``avg_power_watts`` is the sum
  over the replica's ``num_gpus`` GPUs, not a per-GPU figure: rows with 8 GPUs reach 4,875 W (7 x
  the 700 W TDP of one H100 SXM), and divided by ``num_gpus`` every row lies between 231 and 694 W,
  below the TDP; also avg_power_watts = energy_per_token_joules x output_throughput exactly.
  Median of the per-GPU draw: 0.74 TDP.
- i = 0.10: nvidia-smi of idle H100 SXM5 80GB HBM3 GPUs (P0, 0 % util, no process) reads 69-73 W
  of 700 W (digitalocean/do-dcgm-exporter README, 73 W; an 8-GPU node in a Nebius Ray-cluster
  README, 69-72 W). The ML.ENERGY rows cannot identify it apart from a0 (only i + (1-i) a0 is
  fitted); it sets how the curve scales to a GPU with another TDP.
- f_p: prefill is compute-bound and draws about the TDP. Patel et al., "Characterizing Power
  Management Opportunities for LLMs in the Cloud" (ASPLOS 2024): prompt phases reach or exceed
  the TDP, token phases draw well below it; Splitwise (Patel et al., ISCA 2024) builds on it.
  Their A100 measurements (``data/profiles/splitwise_perf_model.csv``, ``peak_power`` as a
  fraction of TDP) give a median peak of 1.02 TDP over requests whose prompt phase lasts >= 1 s
  (long enough for the power sensor's averaging window): f_p = min(that, 1), a GPU's power limit
  caps a sustained draw at TDP (``prefill_load_from_splitwise``).

Held-out error (``power_holdout_report``; figures in ``power.json``), median absolute % error of
the per-GPU draw over the 274 rows, each group predicted by a fit without it:

    split                    this model   0.74 x TDP (best constant)   TDP
    in sample                   7.2 %          12.0 %                  34.9 %
    leave one model out (22)    7.8 %          12.8 %                  34.9 %
    leave one TP degree out (4) 8.2 %          14.4 %                  34.9 %

Known biases. At equal u the draw falls with TP (residual -4 % at TP 1, +6 % at TP 8: collectives
leave the GPUs waiting); a TP term lowers the leave-one-TP-out error but raises the
leave-one-model-out one, so it is left out: the model errs high at large TP. On another GPU, not
fitted (``splitwise_token_phase_check``: Splitwise A100 requests spending <= 5 % of their time
in the prompt phase), it predicts 0.64 TDP against 0.64 (BLOOM-176B TP 8), 0.74 / 0.60 / 0.44
(Llama-2-70B TP 2 / 4 / 8): right at small TP, high at TP 8. u of the fitted rows counts the
decoding sequences only (their prompt lengths are not published), while the planner's mixed u also
counts the prompt tokens of each iteration, which errs high too.

In the planner (``replica_gpu_watts``, carried as ``ReplicaConfig.gpu_watts`` into the MILP's
energy cost and power budget) a replica is taken at its capacity κ: the batch at which the
capacity model's steady-state rate reaches κ, averaged over the workload's buckets by the time a
replica spends on each. Prefill-only replicas draw f_p, i.e. the TDP.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from llmfleet.catalog.gpus import GPUType, get_gpu
from llmfleet.catalog.models import ModelSpec
from llmfleet.perf.capacity import decode_curves, replica_rate_rps

MLENERGY_CSV = Path("data/profiles/mlenergy_h100_configurations.csv")
SPLITWISE_CSV = Path("data/profiles/splitwise_perf_model.csv")
"""the vendored measurements, relative to the repository root"""

MLENERGY_GPU = "H100-SXM"
"""ML.ENERGY's ``H100`` rows: the SXM part (80 GB HBM3, 700 W; the per-GPU draw reaches 694 W,
twice the PCIe card's 350 W TDP)"""

MLENERGY_PRECISION = {"bfloat16": (2.0, "bf16"), "fp8": (1.0, "fp8"), "mxfp4": (4.25 / 8, "fp4")}
"""``weight_precision`` -> (bytes per weight, GEMM dtype). MXFP4 stores blocks of 32 4-bit values
with one 8-bit scale (4.25 bits); H100 has no FP4 tensor cores, so ``GPUType.peak_flops_for``
gives it the BF16 peak, as vLLM runs it (weight-only, BF16 GEMMs)."""

PHASES = ("prefill", "decode", "mixed")
ROLE_PHASE = {"prefill": "prefill", "decode": "decode", "colocated": "mixed"}
"""the phase a replica of each MILP role runs"""

SPLITWISE_GPU = {"a100-80gb": "A100-80G"}
SPLITWISE_MODEL = {"llama2-70b": (70.0, 70.0), "bloom-176b": (176.0, 176.0)}
"""Splitwise model -> (total, active) parameters, billions (dense, BF16)"""


@dataclass(frozen=True)
class PowerParams:
    """Constants of the power model (module docstring: form and sources)."""

    idle_fraction: float = 0.10
    """idle draw over TDP (nvidia-smi of idle H100 SXM: 69-73 W of 700 W)"""
    decode_floor: float = 0.5798
    """a0: load f of a decode step as u -> 0 (weights streamed, tensor cores idle); fitted"""
    decode_ceiling: float = 0.9051
    """a1: load f of a decode step as u -> infinity; fitted"""
    half_utilisation: float = 0.1791
    """u_half: u at which f is halfway from a0 to a1; fitted"""
    prefill_load: float = 1.0
    """f_p: load f of compute-bound prefill (Splitwise A100 peak power, capped at 1)"""
    source: str = "defaults"
    fit: dict = field(default_factory=dict, compare=False)
    """held-out errors and row counts of the fit that produced these constants"""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


@cache
def default_power() -> PowerParams:
    """The shipped constants (``power.json``, written by ``python -m llmfleet.perf.power --write``)."""
    text = resources.files(__package__).joinpath("power.json").read_text()
    return PowerParams(**json.loads(text))


def decode_utilisation(gpu: GPUType, batch, active_params_billion, params_billion, bytes_per_weight,
                       compute_dtype: str = "bf16") -> np.ndarray:
    """u of a decode step of ``batch`` sequences: FLOPs per weight byte over the GPU's ridge point.

    Vectorised over ``batch`` and the parameter arguments (numpy broadcasting); ``compute_dtype``
    picks the tensor-core peak (``GPUType.peak_flops_for``)."""
    b = np.maximum(np.asarray(batch, dtype=float), 0.0)
    flops_per_byte = 2.0 * b * np.asarray(active_params_billion, dtype=float) / (
        np.asarray(params_billion, dtype=float) * np.asarray(bytes_per_weight, dtype=float))
    ridge = gpu.peak_flops_for(compute_dtype) / gpu.mem_bandwidth_bytes_per_s
    return flops_per_byte / ridge


def model_utilisation(model: ModelSpec, gpu: GPUType, batch) -> np.ndarray:
    """``decode_utilisation`` of ``model`` as served (precision applied: ``perf.precision.with_precision``)."""
    return decode_utilisation(gpu, batch, model.active_params_billion, model.params_billion,
                              model.bytes_per_weight, model.compute_dtype)


def _decode_load(u, p: PowerParams) -> np.ndarray:
    u = np.maximum(np.asarray(u, dtype=float), 0.0)
    return p.decode_floor + (p.decode_ceiling - p.decode_floor) * u / (u + p.half_utilisation)


def power_fraction(phase: str, utilisation=0.0, prefill_fraction=0.0, params: PowerParams | None = None) -> np.ndarray:
    """P / TDP: the draw of one GPU as a fraction of its TDP (``gpu_power_watts`` without the GPU)."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, not {phase!r}")
    p = params or default_power()
    if phase == "prefill":
        load = np.full(np.shape(utilisation), p.prefill_load)
    else:
        phi = 0.0 if phase == "decode" else np.clip(np.asarray(prefill_fraction, dtype=float), 0.0, 1.0)
        load = phi * p.prefill_load + (1.0 - phi) * _decode_load(utilisation, p)
    return p.idle_fraction + (1.0 - p.idle_fraction) * np.clip(load, 0.0, 1.0)


def gpu_power_watts(gpu: GPUType, phase: str, utilisation=0.0, prefill_fraction=0.0,
                    params: PowerParams | None = None) -> np.ndarray:
    """Average draw of one GPU of a replica, W.

    Args:
        phase: ``prefill`` (compute-bound prompts), ``decode`` (token generation) or ``mixed``
            (both on one replica: continuous batching with interleaved prompts).
        utilisation: u of the iterations (``decode_utilisation`` of the tokens one carries: the
            decode batch, plus the prompt-chunk tokens for ``mixed``; ignored for prefill).
        prefill_fraction: phi, the share of the time a ``mixed`` replica spends in prefill-only
            iterations (0 under chunked prefill).
        params: constants (default: the shipped ``power.json``).

    Vectorised over ``utilisation`` and ``prefill_fraction``. The result lies between the idle draw
    and the TDP, and grows with the utilisation and with the prefill share.
    """
    return gpu.tdp_watts * power_fraction(phase, utilisation, prefill_fraction, params)


# --------------------------------------------------------------------------------------------
# The draw of a planned replica


def _batch_at_rate(rate_curve: np.ndarray, offered: np.ndarray) -> np.ndarray:
    """Smallest batch B (1-based) whose steady-state rate (curve of shape (max_batch, S)) reaches
    the offered rate (S,); the largest batch where none does."""
    reach = rate_curve >= offered[None, :] * (1.0 - 1e-9)
    return np.where(reach.any(axis=0), reach.argmax(axis=0), rate_curve.shape[0] - 1) + 1.0


def replica_gpu_watts(model: ModelSpec, gpu: GPUType, tp: int, role: str, input_tokens, output_tokens,
                      capacity_rps, percentile: float, share=None, perf_params=None,
                      gpu_memory_utilization: float = 0.9, max_num_seqs: int | None = None,
                      max_num_batched_tokens: int | None = None, params: PowerParams | None = None) -> float:
    """Predicted average draw per GPU, W, of a replica loaded to its capacity κ.

    Each bucket the replica serves (κ > 0) is taken at its capacity-defining operating point, the
    batch B at which the capacity model's steady-state rate reaches κ (``perf.capacity``
    ``decode_curves`` / ``replica_rate_rps``):

    - ``decode``: the decode phase at u of B sequences;
    - ``colocated``: the mixed phase at u of the B (1 + I/O) tokens an iteration carries (B decodes
      plus, in the chunked-prefill steady state, B I/O prompt tokens), no prefill-only time;
    - ``prefill``: the prefill phase (compute-bound whole prompts).

    The buckets are averaged with the time a replica serving the workload's mix spends on each
    (share / κ); without ``share`` the largest draw is taken. The draw grows with the load (u with
    the batch), so a replica the MILP loads to at most κ draws at most this on that mix.

    Args:
        role: ``prefill``, ``decode`` or ``colocated`` (``ReplicaConfig.role``).
        input_tokens, output_tokens, capacity_rps, share: shape (S,), the workload's buckets, the
            replica's κ and the share of requests in each bucket.
        percentile: the SLO percentile, % (as the capacity model was given).
        max_num_seqs, max_num_batched_tokens: scheduler limits as the capacity model was given them.
    """
    p = params or default_power()
    phase = ROLE_PHASE[role]
    kappa = np.asarray(capacity_rps, dtype=float)
    served = kappa > 0
    if phase == "prefill" or not served.any():
        return float(gpu_power_watts(gpu, "prefill" if phase == "prefill" else "decode", 0.0, 0.0, p))
    inp = np.asarray(input_tokens, dtype=float)[served]
    out = np.maximum(np.asarray(output_tokens, dtype=float)[served], 1.0)
    if phase == "decode":
        rate = decode_curves(model, gpu, tp, inp, out, percentile, perf_params, gpu_memory_utilization,
                             max_num_seqs=max_num_seqs)[0]
        tokens = _batch_at_rate(rate, kappa[served])
    else:
        rate = replica_rate_rps(model, gpu, tp, inp, out, perf_params, max_num_seqs, max_num_batched_tokens)
        tokens = _batch_at_rate(rate, kappa[served]) * (1.0 + inp / out)
    watts = gpu_power_watts(gpu, phase, model_utilisation(model, gpu, tokens), 0.0, p)
    if share is None:
        return float(np.max(watts))
    return float(np.average(watts, weights=np.asarray(share, dtype=float)[served] / kappa[served]))


def attach_power(configs: list, model: ModelSpec, input_tokens, output_tokens, share, percentile: float,
                 perf_params=None, gpu_memory_utilization: float = 0.9, max_num_seqs: int | None = None,
                 max_num_batched_tokens: int | None = None) -> list:
    """Set ``gpu_watts`` (``replica_gpu_watts``) on each ``solver.problem.ReplicaConfig`` of one
    workload; returns the list."""
    for c in configs:
        c.gpu_watts = replica_gpu_watts(model, c.pool.gpu, c.tp, c.role, input_tokens, output_tokens, c.capacity_rps,
                                        percentile, share, perf_params, gpu_memory_utilization, max_num_seqs,
                                        max_num_batched_tokens)
    return configs


# --------------------------------------------------------------------------------------------
# Fit and held-out error on the ML.ENERGY measurements


def load_mlenergy(path: str | Path = MLENERGY_CSV) -> pd.DataFrame:
    """The ML.ENERGY H100 rows with the per-GPU draw and u.

    Adds ``gpu_watts`` (avg_power_watts / num_gpus: the file's figure is the sum over the GPUs,
    module docstring), ``power_fraction`` (over the H100 SXM TDP), ``bytes_per_weight``,
    ``compute_dtype`` and ``utilisation`` (u at ``avg_batch_size``).

    Raises:
        ValueError: a row of another GPU, an unknown weight precision, or a column missing.
    """
    df = pd.read_csv(path)
    need = {"avg_batch_size", "avg_power_watts", "num_gpus", "max_num_seqs", "model_id", "weight_precision",
            "total_params_b", "activated_params_b", "gpu_model"}
    if need - set(df.columns):
        raise ValueError(f"{path}: missing columns {sorted(need - set(df.columns))}")
    if set(df.gpu_model) != {"H100"}:
        raise ValueError(f"{path}: expected H100 rows only, found {sorted(set(df.gpu_model))}")
    unknown = set(df.weight_precision) - set(MLENERGY_PRECISION)
    if unknown:
        raise ValueError(f"{path}: unknown weight_precision {sorted(unknown)}")
    gpu = get_gpu(MLENERGY_GPU)
    df = df.copy()
    df["gpu_watts"] = df.avg_power_watts / df.num_gpus
    df["power_fraction"] = df.gpu_watts / gpu.tdp_watts
    df["bytes_per_weight"] = df.weight_precision.map(lambda w: MLENERGY_PRECISION[w][0])
    df["compute_dtype"] = df.weight_precision.map(lambda w: MLENERGY_PRECISION[w][1])
    df["utilisation"] = 0.0
    for dtype, idx in df.groupby("compute_dtype").groups.items():
        rows = df.loc[idx]
        df.loc[idx, "utilisation"] = decode_utilisation(gpu, rows.avg_batch_size, rows.activated_params_b,
                                                        rows.total_params_b, rows.bytes_per_weight, dtype)
    return df


def fit_power(df: pd.DataFrame, base: PowerParams | None = None) -> PowerParams:
    """Fit a0, a1 and u_half of the decode curve to the per-GPU draw of ``load_mlenergy`` rows.

    Minimises a robust (soft-L1, scale 5 %) loss of the log ratio predicted / measured, so the
    fit targets the relative error the held-out report measures. ``idle_fraction`` and
    ``prefill_load`` are kept from ``base`` (they do not enter these rows' fit).
    """
    base = base or PowerParams()
    u = df.utilisation.to_numpy()
    y = df.power_fraction.to_numpy()

    def resid(x):  # x = (a0, a1 - a0, u_half): a1 >= a0 keeps the curve rising with the load
        p = replace(base, decode_floor=x[0], decode_ceiling=x[0] + x[1], half_utilisation=x[2])
        return np.log(power_fraction("decode", u, params=p) / y)

    r = least_squares(resid, [0.5, 0.4, 0.2], bounds=([0.0, 0.0, 1e-4], [1.0, 1.0, 100.0]),
                      loss="soft_l1", f_scale=0.05)
    a0, a1, uh = float(r.x[0]), float(r.x[0] + r.x[1]), float(r.x[2])
    return replace(base, decode_floor=round(a0, 4), decode_ceiling=round(a1, 4), half_utilisation=round(uh, 4),
                   source=f"fit_power on {len(df)} ML.ENERGY H100 rows", fit={})


def _mdape(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.median(np.abs(pred / y - 1.0)) * 100.0)


def power_holdout_report(df: pd.DataFrame, base: PowerParams | None = None) -> pd.DataFrame:
    """Median absolute % error of the per-GPU draw: in sample, leave one model out (``model_id``)
    and leave one TP degree out (``num_gpus``).

    Columns: ``model`` (this fit), ``constant`` (the median P/TDP of the training rows x TDP, the
    best single figure) and ``tdp`` (TDP, the planner's former assumption); ``groups``, ``rows``.
    Each held-out group is predicted by a fit on the other rows only.
    """
    y = df.power_fraction.to_numpy()
    rows = []
    p = fit_power(df, base)
    rows.append({"split": "in-sample", "groups": 1, "rows": len(df),
                 "model": _mdape(power_fraction("decode", df.utilisation.to_numpy(), params=p), y),
                 "constant": _mdape(np.full(len(df), np.median(y)), y), "tdp": _mdape(np.ones(len(df)), y)})
    for name, key in (("leave-one-model-out", "model_id"), ("leave-one-TP-out", "num_gpus")):
        pred, const = np.empty(len(df)), np.empty(len(df))
        groups = df[key].to_numpy()
        for g in np.unique(groups):
            test = groups == g
            q = fit_power(df[~test], base)
            pred[test] = power_fraction("decode", df.utilisation.to_numpy()[test], params=q)
            const[test] = np.median(y[~test])
        rows.append({"split": name, "groups": int(len(np.unique(groups))), "rows": len(df),
                     "model": _mdape(pred, y), "constant": _mdape(const, y), "tdp": _mdape(np.ones(len(df)), y)})
    return pd.DataFrame(rows).set_index("split")


def binned_medians(df: pd.DataFrame, column: str, bins: int = 8) -> pd.DataFrame:
    """Median, min and max of P/TDP by quantile bin of ``column`` (how the explanatory variable was chosen)."""
    g = df.groupby(pd.qcut(df[column], bins, duplicates="drop"), observed=True).power_fraction
    return g.agg(["count", "median", "min", "max"])


def prefill_load_from_splitwise(path: str | Path = SPLITWISE_CSV,
                                min_prompt_s: float = 1.0) -> tuple[float, float, int]:
    """f_p from the Splitwise A100 rows: the median ``peak_power`` (fraction of TDP) of requests whose
    prompt phase lasts at least ``min_prompt_s`` (the peak is the prompt phase's draw), capped at 1.

    Returns:
        (f_p, the uncapped median, rows used). Only the A100 rows carry power (H100 rows read 0).
    """
    s = pd.read_csv(path)
    rows = s[s.hardware.isin(list(SPLITWISE_GPU)) & (s.peak_power > 0) & (s.prompt_time >= min_prompt_s * 1e3)]
    med = float(rows.peak_power.median())
    return min(med, 1.0), med, int(len(rows))


def splitwise_token_phase_check(path: str | Path = SPLITWISE_CSV, params: PowerParams | None = None,
                                max_prompt_share: float = 0.05) -> pd.DataFrame:
    """The model on another GPU: Splitwise A100 requests that spend at most ``max_prompt_share`` of
    their time in the prompt phase (``average_power`` ~ the token phase), measured vs predicted
    P/TDP by (model, TP). Not used by the fit."""
    p = params or default_power()
    s = pd.read_csv(path)
    s = s[s.hardware.isin(list(SPLITWISE_GPU)) & (s.average_power > 0) & s.model.isin(list(SPLITWISE_MODEL))]
    s = s[s.prompt_time / s.e2e_time <= max_prompt_share].copy()
    out = []
    for (model, hw, tp), g in s.groupby(["model", "hardware", "tensor_parallel"]):
        total, active = SPLITWISE_MODEL[model]
        gpu = get_gpu(SPLITWISE_GPU[hw])
        u = decode_utilisation(gpu, g.batch_size.to_numpy(), active, total, 2.0)
        phi = (g.prompt_time / g.e2e_time).to_numpy()
        pred = power_fraction("mixed", u, phi, p)
        out.append({"model": model, "gpu": gpu.name, "tp": int(tp), "rows": len(g),
                    "measured": float(g.average_power.median()), "predicted": float(np.median(pred))})
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m llmfleet.perf.power",
        description="Fit the GPU power model on the ML.ENERGY H100 rows and print its held-out error.")
    ap.add_argument("--data", type=Path, default=MLENERGY_CSV,
                    help=f"ML.ENERGY configurations CSV (default {MLENERGY_CSV})")
    ap.add_argument("--splitwise", type=Path, default=SPLITWISE_CSV,
                    help=f"Splitwise perf model CSV (default {SPLITWISE_CSV})")
    ap.add_argument("--write", action="store_true", help="write the constants to llmfleet/perf/power.json")
    args = ap.parse_args(argv)
    pd.set_option("display.width", 200)
    df = load_mlenergy(args.data)
    f_p, f_p_raw, n_p = prefill_load_from_splitwise(args.splitwise)
    base = PowerParams(prefill_load=f_p)
    print(f"{len(df)} rows; per-GPU draw / TDP: median {df.power_fraction.median():.3f}, "
          f"range {df.power_fraction.min():.3f}-{df.power_fraction.max():.3f}")
    for col in ("utilisation", "avg_batch_size"):
        print(f"\nP/TDP by octile of {col} (Spearman {df[[col, 'power_fraction']].corr('spearman').iloc[0, 1]:.2f}):")
        print(binned_medians(df, col).round(3).to_string())
    print(f"\nprefill load f_p: Splitwise A100 median peak power {f_p_raw:.3f} TDP over {n_p} requests "
          f"with a prompt phase >= 1 s -> {f_p:.3f}")
    p = fit_power(df, base)
    report = power_holdout_report(df, base)
    print(f"\nfit: a0 {p.decode_floor}, a1 {p.decode_ceiling}, u_half {p.half_utilisation}, idle {p.idle_fraction}")
    print("\nmedian absolute % error of the per-GPU draw (model; constant median P/TDP; TDP):")
    print(report.round(1).to_string())
    check = splitwise_token_phase_check(args.splitwise, p)
    print("\nother GPU, not fitted: Splitwise A100 token-phase-dominated requests, P/TDP measured vs predicted:")
    print(check.round(3).to_string(index=False))
    if args.write:
        fit = {"rows": len(df), **{f"{split}_mdape_pct": round(float(r.model), 2) for split, r in report.iterrows()},
               "constant_leave-one-model-out_mdape_pct": round(float(report.loc["leave-one-model-out", "constant"]), 2),
               "tdp_mdape_pct": round(float(report.loc["in-sample", "tdp"]), 2),
               "prefill_peak_median": round(f_p_raw, 4), "prefill_rows": n_p}
        p = replace(p, fit=fit,
                    source=f"python -m llmfleet.perf.power --write ({args.data.name}, {args.splitwise.name})")
        target = Path(__file__).with_name("power.json")
        target.write_text(p.to_json())
        print(f"\nwrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
