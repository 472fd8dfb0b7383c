"""Demand forecast accuracy on held-back days of ServeGen's 14-day request rates.

ServeGen (alibaba/ServeGen, data/language/m-large; shared/data/traces/servegen_language_m_large)
gives each of 162 clients' request rate per 600 s window over 14 days. The series forecast is a
model's total rate (the sum over clients) and, for single clients, client 142 (strongly diurnal)
and client 148 (its level swings from day to day). Forecasters see every window before the forecast origin; the
state-space model's parameters are fitted on days 0-9 only; days 10-13 (576 windows) are held
back and scored with a rolling origin at every window, for the next 1 and 3 windows (10 and
30 minutes ahead), at the 0.9 quantile:

- pinball: mean pinball loss / mean rate (the proper score of a quantile forecast; lower is better);
- coverage: share of held-back windows whose actual rate is <= the forecast (target 0.90);
- over: mean capacity above the actual, max(forecast - actual, 0), / mean rate;
- under: mean shortfall, max(actual - forecast, 0), / mean rate.

The last block knocks out 10% of the windows at random plus one 3-hour outage in the held-back
days (unknown, never 0) and scores only windows whose actual rate is known; ``unknown`` counts
windows with a known actual whose forecast was refused (``UnknownDemand``) because neither of
the two windows before it was known; those are not scored (the operator holds the fleet there).

    python bench/forecast_accuracy.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from llmfleet.telemetry.forecast import (LastValueForecaster, SeasonalNaiveQuantileForecaster,
                                         SeasonalQuantileForecaster, StateSpaceForecaster, evaluate,
                                         load_servegen_rates)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces" / "servegen_language_m_large"
STEP_S = 600.0
DAY = 144
TRAIN_DAYS = 10
QUANTILE = 0.9


def methods(train: np.ndarray):
    return [LastValueForecaster(STEP_S, QUANTILE), SeasonalNaiveQuantileForecaster(STEP_S, QUANTILE),
            SeasonalQuantileForecaster(STEP_S, QUANTILE), StateSpaceForecaster(STEP_S, QUANTILE).fit(train)]


def rows(label: str, series: np.ndarray, horizons=(1, 3)):
    for h in horizons:
        for f in methods(series[:TRAIN_DAYS * DAY]):
            t0 = time.perf_counter()
            a = evaluate(f, series, TRAIN_DAYS * DAY, horizon_steps=h)
            print(f"{label:<25} {h * STEP_S / 60:>4.0f} min  {a.method:<28} {a.pinball_rel:>7.4f} {a.coverage:>8.3f} "
                  f"{a.over_provision_rel:>6.3f} {a.under_provision_rel:>6.3f} {a.n:>5} {a.n_unknown:>7} "
                  f"{time.perf_counter() - t0:>5.1f}", flush=True)


def main() -> int:
    if not DATA.is_dir():
        print(f"{DATA}: not found (the ServeGen rates ship in shared/data)", file=sys.stderr)
        return 1
    print(f"{'series':<25} {'ahead':>8}  {'method':<28} {'pinball':>7} {'coverage':>8} {'over':>6} {'under':>6} "
          f"{'n':>5} {'unknown':>7} {'sec':>5}")
    total = load_servegen_rates(DATA)
    rows("total (162 clients)", total)
    rows("client 142 (diurnal)", load_servegen_rates(DATA, [142]), horizons=(1,))
    rows("client 148 (weekly)", load_servegen_rates(DATA, [148]), horizons=(1,))
    gappy = total.copy()
    rng = np.random.default_rng(0)
    gappy[rng.random(len(gappy)) < 0.10] = np.nan
    outage = TRAIN_DAYS * DAY + DAY + 60  # day 11, 10:00, for 3 hours
    gappy[outage:outage + 18] = np.nan
    rows("total, 10% + 3 h unknown", gappy, horizons=(1,))
    return 0


if __name__ == "__main__":
    sys.exit(main())
