"""Simulator against measurements: the same configuration and load, simulated and measured.

1. Splitwise batch sweeps (vLLM on DGX A100-80GB and H100, Llama-2-70B TP 2/4/8 and BLOOM-176B
   TP 8; batch 1-64 at 512 prompt / 128 output tokens; shared/data/profiles/splitwise_perf_model.csv).
   B requests arrive together at an idle replica, prefill as one batch (that vLLM ran without
   chunking) and decode together: simulated TTFT and TPOT against the measured ``prompt_time`` and
   ``token_time``, with the Splitwise-era profile (``splitwise-2023``), which was fitted on these
   rows, so the table also shows the simulator with a calibration fitted on the *other* GPU type
   only (held out).
2. ML.ENERGY H100 (vLLM with chunked prefill, lm-arena-chat; mlenergy_h100_configurations.csv):
   for each Llama-3.1 8B/70B configuration, a saturated replica with the measured
   ``max_num_seqs`` and average output length (the prompt length is not published; the
   calibration's assumption ``MLENERGY_PROMPT_TOKENS`` is used), with the default ``vllm-v1``
   profile: simulated median TPOT against the measured median ITL, and the simulated time-average
   batch against the measured ``avg_batch_size``. The profile's decode constants were fitted on
   these rows through the analytic steady state (``calibration.predict_itl``), so this checks that
   the simulator's iteration-by-iteration scheduling reproduces that steady state.

    python bench/sim_accuracy.py [--data data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from llmfleet.catalog.gpus import get_gpu
from llmfleet.catalog.models import resolve_model
from llmfleet.perf.calibration import MLENERGY_PROMPT_TOKENS, fit, load_splitwise
from llmfleet.perf.steptime import default_params, load_profile
from llmfleet.sim.engine import Simulation
from llmfleet.sim.scenario import SimGroup, SimWorkload

ROOT = Path(__file__).resolve().parents[1]
"""ML.ENERGY does not publish its lm-arena-chat prompt lengths (as in bench/perf_accuracy.py)"""


def one_replica(model_id: str, gpu: str, tp: int, gmu: float = 0.9) -> SimWorkload:
    """A workload served by one colocated replica (SLOs irrelevant here: we read latencies)."""
    g = get_gpu(gpu)
    return SimWorkload("bench/one", resolve_model(model_id), ttft_s=1e9, tpot_s=1e9, percentile=50,
                       gpu_memory_utilization=gmu, buckets=[],
                       groups=[SimGroup("colocated", gpu, g, tp, 1, np.zeros(0), f"pool/{gpu}", 1e10)])


def batch_trace(n: int, prompt: int, output: int) -> pd.DataFrame:
    return pd.DataFrame({"arrival_s": np.zeros(n), "input_tokens": np.full(n, prompt), "output_tokens": np.full(n, output)})


def splitwise(data: Path, console: Console) -> None:
    df = load_splitwise(data / "profiles" / "splitwise_perf_model.csv")
    sweep = df[(df["prompt_tokens"] == 512) & (df["output_tokens"] == 128)]
    held = {gpu: fit(df[df["gpu"] != gpu]) for gpu in sweep["gpu"].unique()}  # calibrated on the other GPU
    t = Table(title="Splitwise batch sweeps (512 in / 128 out): simulated vs measured")
    for col in ("model", "GPU", "TP", "batch", "TTFT meas ms", "TTFT sim ms", "TTFT held-out ms",
                "TPOT meas ms", "TPOT sim ms", "TPOT held-out ms"):
        t.add_column(col, justify="left" if col in ("model", "GPU") else "right")
    err = {"ttft": [], "tpot": [], "ttft_h": [], "tpot_h": []}
    for r in sweep.sort_values(["model", "gpu", "tp", "batch"]).itertuples():
        b = int(r.batch)
        out = {}
        for tag, p in (("", load_profile("splitwise-2023")), ("_h", held[r.gpu])):
            w = one_replica(r.model, r.gpu, r.tp)
            res = Simulation(w, batch_trace(b, 512, 128), p=p, max_batched_tokens=b * 512).run()
            out["ttft" + tag], out["tpot" + tag] = res.ttft_p50_s, res.tpot_p50_s
        for k in out:
            meas = r.prefill_s if k.startswith("ttft") else r.decode_step_s
            err[k].append(abs(out[k] / meas - 1))
        t.add_row(r.model.split("/")[-1], r.gpu, str(r.tp), str(b), f"{r.prefill_s * 1e3:.0f}", f"{out['ttft'] * 1e3:.0f}",
                  f"{out['ttft_h'] * 1e3:.0f}", f"{r.decode_step_s * 1e3:.1f}", f"{out['tpot'] * 1e3:.1f}",
                  f"{out['tpot_h'] * 1e3:.1f}")
    console.print(t)
    console.print(f"Splitwise sweeps, {len(sweep)} configurations, MdAPE: TTFT {np.median(err['ttft']):.1%}, "
                  f"TPOT {np.median(err['tpot']):.1%} (shipped calibration, which saw these rows); held out "
                  f"(calibrated on the other GPU type): TTFT {np.median(err['ttft_h']):.1%}, TPOT {np.median(err['tpot_h']):.1%}",
                  highlight=False)


def mlenergy(data: Path, console: Console) -> None:
    rows = pd.read_csv(data / "profiles" / "mlenergy_h100_configurations.csv")
    rows = rows[rows["model_id"].isin(["meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-70B-Instruct"])
                & (rows["task"] == "lm-arena-chat")]
    t = Table(title=f"ML.ENERGY H100 saturated replicas (prompts assumed {MLENERGY_PROMPT_TOKENS['lm-arena-chat']:.0f} "
                    "tokens): simulated vs measured")
    for col in ("model", "TP", "max seqs", "batch meas", "batch sim", "ITL p50 meas ms", "TPOT p50 sim ms", "error"):
        t.add_column(col, justify="left" if col == "model" else "right")
    errors, batch_err = [], []
    for r in rows.sort_values(["model_id", "num_gpus", "max_num_seqs"]).itertuples():
        seqs = int(r.max_num_seqs)
        w = one_replica(r.model_id, "H100-SXM", int(r.num_gpus))
        n = 3 * seqs  # three generations of requests keep the batch full
        prompt = int(MLENERGY_PROMPT_TOKENS[r.task])
        res = Simulation(w, batch_trace(n, prompt, int(round(r.avg_output_len))), p=default_params(), max_num_seqs=seqs).run()
        e = res.tpot_p50_s * 1e3 / r.median_itl_ms - 1
        errors.append(abs(e))
        batch_err.append(abs(res.groups[0].mean_batch / r.avg_batch_size - 1))
        t.add_row(r.model_id.split("/")[-1], str(r.num_gpus), str(seqs), f"{r.avg_batch_size:.0f}", f"{res.groups[0].mean_batch:.0f}",
                  f"{r.median_itl_ms:.1f}", f"{res.tpot_p50_s * 1e3:.1f}", f"{e:+.0%}")
    console.print(t)
    console.print(f"ML.ENERGY, {len(errors)} configurations: TPOT-vs-ITL MdAPE {np.median(errors):.1%}, "
                  f"average batch MdAPE {np.median(batch_err):.1%}", highlight=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "data"), help="folder holding profiles/ (default: the vendored data/)")
    args = ap.parse_args()
    console = Console(width=160)
    splitwise(Path(args.data), console)
    mlenergy(Path(args.data), console)


if __name__ == "__main__":
    main()
