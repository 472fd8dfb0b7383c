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

from llmfleet.perf.calibration import fit, holdout_report, load_splitwise, mdape

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

    p = fit(df, source="fit on all non-pcap rows of Splitwise perf_model.csv (A100-80GB, H100; Llama-2-70B, BLOOM-176B)")
    print(f"all rows in-sample: {mdape(df, p)}")
    print(f"parameters: {p}")
    if args.write:
        out = ROOT / "llmfleet" / "perf" / "calibration.json"
        out.write_text(p.to_json() + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
