"""Fit the shipped calibration profiles from the measurements vendored in data/profiles.

    python bench/fit_profiles.py            # print the fitted constants and what differs
    python bench/fit_profiles.py --write    # write llmfleet/perf/profiles/<name>.json

Profiles (llmfleet.perf.steptime.PROFILES): ``vllm-v1`` (today's vLLM, the default) and
``splitwise-2023`` (the pre-CUDA-graph vLLM of the Splitwise measurements). Each fit is
deterministic, so ``tests/test_perf.py`` refits and compares with the shipped files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llmfleet.perf.calibration import fit_splitwise_2023, fit_vllm_v1
from llmfleet.perf.steptime import load_profile

ROOT = Path(__file__).resolve().parents[1]
FITS = {"vllm-v1": fit_vllm_v1, "splitwise-2023": fit_splitwise_2023}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "profiles"), help="folder of the vendored measurements")
    ap.add_argument("--write", action="store_true", help="write llmfleet/perf/profiles/<name>.json")
    args = ap.parse_args()
    for name, fit in FITS.items():
        p = fit(args.data)
        print(f"== {name}\n{p.to_json()}")
        if args.write:
            out = ROOT / "llmfleet" / "perf" / "profiles" / f"{name}.json"
            out.write_text(p.to_json() + "\n")
            print(f"wrote {out.relative_to(ROOT)}")
        else:
            shipped = json.loads(load_profile(name).to_json())
            changed = [k for k, v in json.loads(p.to_json()).items() if shipped.get(k) != v]
            print(f"differs from the shipped profile in: {', '.join(changed) or 'nothing'}")


if __name__ == "__main__":
    main()
