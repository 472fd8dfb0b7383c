"""Accuracy of the performance model on measurements it was not fitted on.

Fits the step-time model (llmfleet.perf.steptime) on part of the Splitwise vLLM measurements and
prints the median absolute percentage error (MdAPE) of predicted prefill time (TTFT of the batch)
and decode iteration time (TPOT) on the held-out part: another GPU type, another TP degree,
another model. With --write, refits on all rows and writes llmfleet/perf/calibration.json, the
calibration the planner ships with.

    python bench/perf_accuracy.py [--data ../shared/data] [--write]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

import numpy as np
import pandas as pd

from llmfleet.catalog.gpus import get_gpu
from llmfleet.catalog.models import resolve_model
from llmfleet.perf.calibration import fit, holdout_report, load_splitwise, mdape
from llmfleet.perf.steptime import decode_time_s, default_params

ASSUMED_PROMPT_TOKENS = 512
"""ML.ENERGY does not publish the prompt lengths of its lm-arena-chat runs; we assume this mean"""

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--write", action="store_true", help="refit on all rows and write calibration.json")
    args = ap.parse_args()
    df = load_splitwise(Path(args.data) / "profiles" / "splitwise_perf_model.csv")

    table = Table(title="Performance model: held-out accuracy on Splitwise vLLM measurements (MdAPE, %)")
    for col in ("fit on", "predict", "rows", "TTFT MdAPE %", "TPOT MdAPE %", "in-sample TTFT %", "in-sample TPOT %"):
        table.add_column(col, justify="right" if "%" in col or col == "rows" else "left")
    for r in holdout_report(df):
        h, s = r["held_out"], r["in_sample"]
        table.add_row(r["fit_on"], r["predict"], str(h["n"]), f"{h['ttft_mdape_pct']:.1f}", f"{h['tpot_mdape_pct']:.1f}",
                      f"{s['ttft_mdape_pct']:.1f}", f"{s['tpot_mdape_pct']:.1f}")
    Console(width=140).print(table)

    mlenergy_table(Path(args.data) / "profiles" / "mlenergy_h100_configurations.csv")

    p = fit(df, source="fit on all non-pcap rows of Splitwise perf_model.csv (A100-80GB, H100; Llama-2-70B, BLOOM-176B)")
    print(f"all rows in-sample: {mdape(df, p)}")
    print(f"parameters: {p}")
    if args.write:
        out = ROOT / "llmfleet" / "perf" / "calibration.json"
        out.write_text(p.to_json() + "\n")
        print(f"wrote {out}")


def mlenergy_table(path: Path) -> None:
    """Shipped model vs ML.ENERGY's measured median ITL (modern vLLM, CUDA graphs, chunked
    prefill) on H100 for the catalogued Llama-3.1 models: a second held-out check, from another
    vLLM generation than the Splitwise data the calibration was fitted on."""
    rows = pd.read_csv(path)
    rows = rows[rows["model_id"].isin(["meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-70B-Instruct"])
                & (rows["task"] == "lm-arena-chat")]
    table = Table(title=f"Decode step vs ML.ENERGY median ITL on H100 (prompt assumed {ASSUMED_PROMPT_TOKENS} tokens)")
    for col in ("model", "TP", "batch", "measured ms", "predicted ms", "error %"):
        table.add_column(col, justify="left" if col == "model" else "right")
    errors = []
    gpu = get_gpu("H100-SXM")
    for r in rows.sort_values(["model_id", "avg_batch_size"]).itertuples():
        model = resolve_model(r.model_id)
        batch = float(r.avg_batch_size)
        ctx = batch * (ASSUMED_PROMPT_TOKENS + r.avg_output_len / 2)
        pred = float(decode_time_s(model, gpu, int(r.num_gpus), batch, ctx, default_params())) * 1e3
        err = pred / r.median_itl_ms - 1
        errors.append(abs(err))
        table.add_row(r.model_id.split("/")[-1], str(r.num_gpus), f"{batch:.0f}", f"{r.median_itl_ms:.1f}",
                      f"{pred:.1f}", f"{err:+.0%}")
    Console(width=140).print(table)
    print(f"ML.ENERGY MdAPE of the decode step: {np.median(errors) * 100:.1f}% over {len(errors)} configurations")


if __name__ == "__main__":
    main()
