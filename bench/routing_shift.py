"""Plans made the old way (per-bucket routing) against plans made the new way (load-balanced
routing, DESIGN §7a), both replayed under the router that is deployed, on the planning trace and
on shifted length mixes at the same request rate.

The examples are planned on the Azure conversation hour twice:

- ``old``: every workload with Mélange's per-bucket shares (``FleetProblem.pin_buckets``): each
  (input x output length) bucket pinned to particular groups, as plans were made before routing
  was modelled; the simulator's ``plan-shares`` router is what that plan assumed;
- ``new``: one load-balanced length mix per workload, P/D by one prompt-length threshold.

Each plan's ``chat-8b`` groups are then replayed under ``load-aware`` routing (llm-d's endpoint
picker: least outstanding requests over the workload's decode-capable pods, prompts at or above the
P/D threshold through a prefill pod) on the same arrivals with four length mixes:

- the Azure conversation hour itself (the planning trace);
- heavier: lengths resampled from the Azure requests whose prompt is above the median;
- 5% Mooncake: 5% of the requests take the lengths of Mooncake FAST'25 synthetic requests
  (long-context prompts, ../shared/data/traces, Apache-2.0), the rest keep their own;
- Mooncake: every request takes Mooncake lengths (the issue's "Mooncake against Azure at matched
  request rate"; both plans are overloaded many times over, shown for completeness).

    python bench/routing_shift.py
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from llmfleet.api.loader import load_fleet
from llmfleet.sim.engine import simulate
from llmfleet.sim.scenario import from_plan
from llmfleet.solver.milp import solve
from llmfleet.solver.problem import build_problem
from llmfleet.workload.traces import load_trace

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MOONCAKE = ROOT.parent / "shared" / "data" / "traces" / "mooncake_fast25_synthetic.jsonl"


def resample_lengths(trace, source, fraction: float, seed: int = 0):
    """The same arrivals; a ``fraction`` of the requests (at random) take the (input, output)
    lengths of requests drawn from ``source``."""
    rng = np.random.default_rng(seed)
    out = trace.copy()
    rows = np.flatnonzero(rng.random(len(trace)) < fraction)
    pick = source.iloc[rng.integers(len(source), size=len(rows))]
    out.iloc[rows, out.columns.get_loc("input_tokens")] = pick["input_tokens"].to_numpy()
    out.iloc[rows, out.columns.get_loc("output_tokens")] = pick["output_tokens"].to_numpy()
    return out


def main() -> None:
    fp = build_problem(load_fleet([EXAMPLES]))
    azure = load_trace(EXAMPLES / "traces" / "azure_llm_2023_conv.csv", "azure")
    heavy = azure[azure["input_tokens"] > azure["input_tokens"].median()]
    mixes = [("Azure hour (planning trace)", azure), ("heavier (above-median prompts)", resample_lengths(azure, heavy, 1.0))]
    if MOONCAKE.is_file():
        mooncake = load_trace(MOONCAKE, "mooncake")
        mixes += [("5% Mooncake lengths", resample_lengths(azure, mooncake, 0.05)),
                  ("Mooncake lengths", resample_lengths(azure, mooncake, 1.0))]
    print(f"{'plan':<5}{'$/h':>8}{'GPUs':>6}  chat-8b groups")
    plans = {}
    for name, pinned in (("old", True), ("new", False)):
        t0 = time.perf_counter()
        plan = solve(dataclasses.replace(fp, pin_buckets=pinned))
        chat = next(w for w in from_plan(plan, fp) if w.key == "default/chat-8b")
        plans[name] = chat
        groups = ", ".join(f"{g.replicas}x {g.pool}/tp{g.tp}/{g.role}" for g in chat.groups)
        gpus = sum(a.gpus for a in plan.assignments)
        print(f"{name:<5}{plan.cost_per_hour:>8.2f}{gpus:>6}  {groups} (P/D threshold "
              f"{plan.pd_threshold_tokens.get(chat.key, 'none')}; solved in {time.perf_counter() - t0:.1f}s)")
    print()
    print(f"{'length mix':<32}{'plan':<5}{'router':<13}{'attainment':>11}{'TTFT p90 ms':>13}{'TPOT p90 ms':>13}  busiest group")
    for mix, trace in mixes:
        for name, chat in plans.items():
            routers = ("plan-shares", "load-aware") if name == "old" and mix.startswith("Azure") else ("load-aware",)
            for router in routers:
                r = simulate(chat, trace, router=router)
                busiest = max(r.groups, key=lambda g: g.busy_fraction)
                print(f"{mix:<32}{name:<5}{router:<13}{r.attainment:>11.1%}{r.ttft_p90_s * 1e3:>13.0f}"
                      f"{r.tpot_p90_s * 1e3:>13.0f}  {busiest.name} {busiest.busy_fraction:.0%} busy")


if __name__ == "__main__":
    main()
