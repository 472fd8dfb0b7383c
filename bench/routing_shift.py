"""The same plan under the router a plan assumed and under the one deployed, on the planning
trace and on a shifted length mix.

The examples are planned on the Azure conversation hour. Each plan is then replayed, for the
``chat-8b`` workload, (a) on that hour and (b) on the same arrivals with a heavier length mix (each
request's input and output lengths drawn from the Azure requests whose prompt is above the
median: the "grown buckets" of a length-mix shift at the same request rate), under two routers:

- ``plan-shares``: the plan's per-bucket shares (what plans and ``--verify`` assumed before
  routing was modelled; it needs each request's output length, which no router knows);
- ``load-aware``: what llm-d's endpoint picker does (least outstanding requests over every pod of
  the workload; prompts above the plan's P/D threshold through prefill pods).

    python bench/routing_shift.py
"""

from __future__ import annotations

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


def heavier_mix(trace, seed: int = 0):
    """The same arrivals, lengths resampled from the requests whose prompt is above the median."""
    rng = np.random.default_rng(seed)
    heavy = trace[trace["input_tokens"] > trace["input_tokens"].median()]
    pick = heavy.iloc[rng.integers(len(heavy), size=len(trace))]
    out = trace.copy()
    out["input_tokens"] = pick["input_tokens"].to_numpy()
    out["output_tokens"] = pick["output_tokens"].to_numpy()
    return out


def main() -> None:
    fleet = load_fleet([EXAMPLES])
    fp = build_problem(fleet)
    plan = solve(fp)
    chat = next(w for w in from_plan(plan, fp) if w.key == "default/chat-8b")
    azure = load_trace(EXAMPLES / "traces" / "azure_llm_2023_conv.csv", "azure")
    groups = ", ".join(f"{g.replicas}x {g.pool}/tp{g.tp}/{g.role}" for g in chat.groups)
    print(f"plan: ${plan.cost_per_hour:.2f}/h; chat-8b on {groups}; P/D threshold "
          f"{plan.pd_threshold_tokens.get(chat.key, 'none')}")
    print(f"{'traffic':<34}{'router':<13}{'attainment':>11}{'TTFT p90 ms':>13}{'TPOT p90 ms':>13}  busiest group")
    for name, trace in (("Azure conversation hour", azure), ("same arrivals, heavier length mix", heavier_mix(azure))):
        for router in ("plan-shares", "load-aware"):
            r = simulate(chat, trace, router=router)
            busiest = max(r.groups, key=lambda g: g.busy_fraction)
            print(f"{name:<34}{router:<13}{r.attainment:>11.1%}{r.ttft_p90_s * 1e3:>13.0f}{r.tpot_p90_s * 1e3:>13.0f}"
                  f"  {busiest.name} {busiest.busy_fraction:.0%} busy")


if __name__ == "__main__":
    main()
