"""Scenario (a) of issue 16, with real parts end to end: a day of ServeGen-shaped diurnal traffic
compressed into minutes. The fleet follows demand, attains the SLO, and changes no more often than
the demand asks.

The parts are those of test_live_telemetry.py (the real control plane, the operator process with
``--prometheus-url``, a real Prometheus scraping one emulated vLLM ``/metrics`` per pod through the
shipped relabelling), with the endpoints answering as ``e2e.engine_model.ModelEngine`` at the
profile's speed (calibration on, as by default).

The day: ServeGen's total language rate of its first day (../shared/data/traces/
servegen_language_m_large, 144 windows of 600 s), smoothed over 70 minutes (the per-window noise
of the summed clients would otherwise dominate a compressed day) and mapped linearly onto
[``LOW_RPS``, ``HIGH_RPS``], then played in ``DAY_S`` seconds.

Figures the test prints: attainment over the day (requests with TTFT and ITL within the SLO, on
the requests the endpoints served), replica changes against the changes the demand itself asks for
(the required replicas, ceil(rate x (1 + headroom) / capacity), rise and fall), scale-downs, and a
PNG of demand and planned replicas over the compressed day (``LLMFLEET_FIGURES_DIR``, else the
test's temporary folder).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np

from e2e.engine_model import ModelEngine
from llmfleet.telemetry.forecast import load_servegen_rates

from . import test_live_telemetry as live
from .conftest import wait_until
from .test_live_telemetry import manifests, telemetry_condition

prom, live_operator = live.prom, live.live_operator  # the fixtures of the closed-loop test bed

SERVEGEN = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "traces" / "servegen_language_m_large"
DAY_S = 480.0
LOW_RPS, HIGH_RPS = 1.5, 8.0
SLO = {"ttft": "350ms", "tpot": "150ms"}
TTFT_SLO_S, TPOT_SLO_S = 0.35, 0.15
LENGTHS = {"inputTokens": {"p50": 350, "p90": 470, "p99": 497}, "outputTokens": {"p50": 75, "p90": 95, "p99": 100}}
TARGET = 0.90
HEADROOM = 0.1  # FleetPolicy spec.headroom default


def day_rates() -> np.ndarray:
    """ServeGen's first day, smoothed (70 min moving mean, wrapping) and mapped onto [LOW, HIGH], req/s."""
    rates = load_servegen_rates(SERVEGEN)[:144]
    smooth = np.convolve(np.pad(rates, 3, mode="wrap"), np.ones(7) / 7, mode="valid")
    return LOW_RPS + (HIGH_RPS - LOW_RPS) * (smooth - smooth.min()) / (smooth.max() - smooth.min())


def rate_at(rates: np.ndarray, t_s: float) -> float:
    """The day's rate ``t_s`` seconds into the compressed day (linear between window centres)."""
    x = (np.arange(len(rates)) + 0.5) * DAY_S / len(rates)
    return float(np.interp(t_s, x, rates))


def plot(path: Path, demand: list[tuple[float, float]], replicas: list[tuple[float, int]],
         required: list[tuple[float, int]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot([t for t, _ in demand], [r for _, r in demand], color="tab:blue", label="demand (req/s)")
    ax.set_xlabel("compressed day (s)")
    ax.set_ylabel("req/s")
    ax2 = ax.twinx()
    ax2.step([t for t, _ in replicas], [n for _, n in replicas], where="post", color="tab:red",
             label="planned replicas")
    ax2.step([t for t, _ in required], [n for _, n in required], where="post", color="tab:gray",
             linestyle=":", label="replicas the demand needs")
    ax2.set_ylabel("replicas")
    ax2.set_ylim(0, max(n for _, n in replicas + required) + 1)
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper left")
    ax.set_title("llmfleet on a ServeGen day compressed into %.0f s" % DAY_S)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def test_a_compressed_day_is_followed_within_the_slo_and_bounded_churn(cluster, live_operator, tmp_path):
    op, fleet = live_operator
    rates = day_rates()
    docs = manifests(float(rates[0]), calibrate=True, slo=SLO, lengths=LENGTHS)
    engine = ModelEngine(docs, slowdown=1.0)
    fleet.request = engine.request
    fleet.rate_rps = float(rates[0])
    cluster.apply(docs)
    wait_until(lambda: fleet.current() > 0 and fleet.emulated() == fleet.current()
               and (c := telemetry_condition(cluster)) is not None and c["status"] == "False",
               120, "a settled fleet with fresh telemetry", interval_s=1.0)

    t0 = time.monotonic()
    demand: list[tuple[float, float]] = []
    while (now := time.monotonic() - t0) < DAY_S:
        fleet.rate_rps = rate_at(rates, now)
        demand.append((now, fleet.rate_rps))
        time.sleep(0.5)
    t_end = time.monotonic()

    served = [(ttft, itl) for t, ttft, itl in fleet.served if t0 <= t < t_end]
    attained = sum(1 for ttft, itl in served if ttft <= TTFT_SLO_S and itl <= TPOT_SLO_S) / len(served)
    start = next((n for t, n in reversed(fleet.replicas) if t < t0), fleet.replicas[0][1])
    replicas = [(0.0, start)] + [(t - t0, n) for t, n in fleet.replicas if t0 <= t < t_end]
    churn = sum(abs(b - a) for (_, a), (_, b) in zip(replicas, replicas[1:]))
    downs = sum(1 for (_, a), (_, b) in zip(replicas, replicas[1:]) if b < a)
    # what the demand itself asks for: the replicas of the engine's modelled capacity at each rate
    required = [(t, max(1, math.ceil(r * (1 + HEADROOM) / engine.capacity_rps))) for t, r in demand]
    required = [p for i, p in enumerate(required) if i == 0 or p[1] != required[i - 1][1]]
    needed = sum(abs(b - a) for (_, a), (_, b) in zip(required, required[1:]))
    figures = Path(os.environ.get("LLMFLEET_FIGURES_DIR") or tmp_path)
    figures.mkdir(parents=True, exist_ok=True)
    png = figures / "compressed-day.png"
    plot(png, demand, replicas + [(DAY_S, replicas[-1][1])], required + [(DAY_S, required[-1][1])])
    print(f"ServeGen day 0 in {DAY_S:.0f}s, {LOW_RPS}-{HIGH_RPS} req/s: attainment {attained:.1%} of {len(served)} "
          f"requests (SLO p90: TTFT {TTFT_SLO_S}s, ITL {TPOT_SLO_S}s); replicas {min(n for _, n in replicas)}-"
          f"{max(n for _, n in replicas)}, changes {len(replicas) - 1} (churn {churn} replicas, {downs} scale-downs) "
          f"against {needed} replica steps the demand asks for; plot {png}")
    assert attained >= TARGET
    assert max(n for _, n in replicas) >= max(n for _, n in required)  # it followed the peak up
    assert min(n for _, n in replicas[1:] or replicas) <= min(n for _, n in required) + 1  # and came down
    assert churn <= 1.5 * needed + 2  # no more churn than the demand asks for, give or take
    assert png.stat().st_size > 10_000
