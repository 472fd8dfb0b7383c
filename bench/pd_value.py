"""Where prefill/decode disaggregation pays, on real traffic.

For Llama-3.1-70B-Instruct on two real traces, the Azure LLM inference 2023 conversation hour
(short prompts, shared/data/traces/azure_llm_2023_conv.csv) and the Mooncake FAST'25 synthetic
trace (long prompts, mooncake_fast25_synthetic.jsonl), and for a relaxed and a tight SLO, plan
three fleets from the example GPU pools (A10G, L4, L40S, A100-80G, H100-SXM at their example
prices; availability unlimited; all pools in one KV-transfer domain at 100 Gbit/s per GPU):

    (a) best single GPU type, colocated replicas only (the cheapest of the five);
    (b) heterogeneous, colocated only (spec.serving.disaggregation: never);
    (c) heterogeneous with P/D disaggregation allowed (auto).

Each plan is replayed against its whole trace by the simulator (SLO attainment), then put through
``plan --verify``'s repair loop so the cost compared is that of a plan that passes simulation.
A sweep of the TTFT target (plans only) is saved as a PNG of cost per hour against the TTFT SLO.

    pip install -e '.[bench]'
    python bench/pd_value.py [--data ../shared/data] [--png bench/pd_value.png] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import shutil
import tempfile
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from llmfleet.api.loader import load_fleet
from llmfleet.sim.verify import best_round, plan_and_verify
from llmfleet.solver.milp import solve
from llmfleet.solver.problem import build_problem
from llmfleet.workload.traces import load_trace

ROOT = Path(__file__).resolve().parents[1]
MODEL = "meta-llama/Llama-3.1-70B-Instruct"
KV_GBIT_PER_GPU = 100
"""per-GPU KV-transfer network assumed for every pool: between AWS p4d's 50 Gbit/s per A100 and
p5's 400 Gbit/s per H100 (AWS EC2 instance pages)"""

TRACES = {
    "azure-conv": ("traces/azure_llm_2023_conv.csv", "azure"),
    "mooncake": ("traces/mooncake_fast25_synthetic.jsonl", "mooncake"),
}
# (TTFT s, TPOT s) per trace: relaxed, and tight. Long Mooncake prompts need a longer TTFT.
SLOS = {
    "azure-conv": {"relaxed": (2.0, 0.10), "tight": (1.0, 0.06)},
    "mooncake": {"relaxed": (20.0, 0.20), "tight": (6.0, 0.10)},
}
TTFT_SWEEP = {"azure-conv": [0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0],
              "mooncake": [4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0]}
STRATEGIES = ("best single type, colocated", "heterogeneous, colocated", "heterogeneous, P/D allowed")


def pool_docs(only: str | None = None) -> list[dict]:
    docs = [d for d in yaml.safe_load_all((ROOT / "examples" / "gpupools.yaml").read_text()) if d]
    out = []
    for d in docs:
        if only and d["metadata"]["name"] != only:
            continue
        d = copy.deepcopy(d)
        d["spec"]["maxGPUs"] = 4096
        d["spec"]["interconnect"] = {"domain": "rdma", "bandwidthGbitPerSecondPerGPU": KV_GBIT_PER_GPU}
        out.append(d)
    return out


def workload_doc(trace: Path, fmt: str, ttft_s: float, tpot_s: float, disaggregation: str) -> dict:
    return {"apiVersion": "llmfleet.dev/v1alpha1", "kind": "LLMWorkload",
            "metadata": {"name": "llama-70b", "namespace": "bench"},
            "spec": {"model": MODEL,
                     "traffic": {"trace": {"path": str(trace), "format": fmt}, "peakQuantile": 0.9, "rateWindowSeconds": 60},
                     "slo": {"ttft": f"{ttft_s * 1000:g}ms", "tpot": f"{tpot_s * 1000:g}ms", "percentile": 90},
                     "serving": {"tensorParallelSizes": [1, 2, 4, 8], "disaggregation": disaggregation, "minReplicas": 0}}}


POLICY = {"apiVersion": "llmfleet.dev/v1alpha1", "kind": "FleetPolicy", "metadata": {"name": "default"},
          "spec": {"headroom": 0.1, "solver": {"timeLimitSeconds": 60, "relativeGap": 0.001}}}


def problem(tmp: Path, docs: list[dict]):
    # trace paths are confined to the manifest's folder: copy each trace next to fleet.yaml
    for d in docs:
        trace = ((d.get("spec") or {}).get("traffic") or {}).get("trace")
        if trace and Path(trace["path"]).is_absolute():
            src = Path(trace["path"])
            if not (tmp / src.name).exists():
                shutil.copy(src, tmp / src.name)
            trace["path"] = src.name
    f = tmp / "fleet.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    return build_problem(load_fleet([f]))


def strategy_problems(tmp: Path, trace: Path, fmt: str, ttft_s: float, tpot_s: float):
    """{strategy: [FleetProblem, ...]}; (a) has one problem per GPU type."""
    w_never = workload_doc(trace, fmt, ttft_s, tpot_s, "never")
    singles = [problem(tmp, [w_never, POLICY, pool]) for pool in pool_docs()]
    return {STRATEGIES[0]: singles,
            STRATEGIES[1]: [problem(tmp, [w_never, POLICY, *pool_docs()])],
            STRATEGIES[2]: [problem(tmp, [workload_doc(trace, fmt, ttft_s, tpot_s, "auto"), POLICY, *pool_docs()])]}


def served_fraction(plan) -> float:
    demand = sum(r.demand_rps for r in plan.workloads)
    return sum(r.served_rps for r in plan.workloads) / demand if demand else 0.0


def cheapest(fps):
    """(plan, problem): the plan that serves the most demand (requests whose SLO no configuration
    can meet are shed), then the cheapest; (None, None) when no plan exists."""
    best, best_key = (None, None), None
    for fp in fps:
        plan = solve(fp)
        if plan.cost_per_hour is None:
            continue
        key = (-round(served_fraction(plan), 6), plan.cost_per_hour)
        if best_key is None or key < best_key:
            best, best_key = (plan, fp), key
    return best


def describe(plan) -> str:
    parts = {}
    for a in plan.assignments:
        key = f"{a.gpu_type}" + ("" if a.role == "colocated" else f" {a.role[0].upper()}")
        parts[key] = parts.get(key, 0) + a.gpus
    return " + ".join(f"{n} {k}" for k, n in sorted(parts.items(), key=lambda kv: -kv[1]))


def table(data: Path, console: Console, rounds: int) -> list[dict]:
    rows = []
    t = Table(title=f"{MODEL}: cost and simulated SLO attainment (p90 target) by strategy")
    for col in ("trace", "SLO (TTFT/TPOT)", "strategy", "plan $/h", "GPUs", "planned share", "sim attain",
                "verified $/h", "verified attain", "rounds", "verified fleet (P=prefill, D=decode GPUs)"):
        t.add_column(col, justify="left" if col in ("trace", "SLO (TTFT/TPOT)", "strategy", "verified fleet (P=prefill, D=decode GPUs)") else "right")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (rel, fmt) in TRACES.items():
            path = data / rel
            trace = load_trace(path, fmt)
            for level, (ttft, tpot) in SLOS[name].items():
                probs = strategy_problems(Path(tmp), path, fmt, ttft, tpot)
                for strat in STRATEGIES:
                    plan, fp = cheapest(probs[strat])
                    if plan is None:
                        t.add_row(name, f"{level} {ttft:g}s/{tpot * 1e3:g}ms", strat, "-", "-", "-", "-", "-", "-", "-",
                                  "no fleet")
                        rows.append({"trace": name, "slo": level, "strategy": strat, "cost": None})
                        continue
                    # round 0 re-solves the same problem into the same plan and simulates it. A
                    # plan that sheds sizes no configuration can serve is simulated behind a gateway
                    # that rejects them (they count as misses), not with them flooding it.
                    rnds = plan_and_verify(fp, {fp.workloads[0].key: trace}, max_rounds=rounds,
                                           reject_unplanned=True)
                    sim = next(iter(rnds[0].results.values()))
                    final = best_round(rnds)  # the round deployed (a later one can come out worse)
                    res = next(iter(final.results.values()))
                    rows.append({"trace": name, "slo": level, "strategy": strat, "cost": plan.cost_per_hour,
                                 "served": served_fraction(plan), "attain": sim.attainment,
                                 "verified_cost": final.plan.cost_per_hour,
                                 "verified_attain": res.attainment, "meets": final.meets_targets})
                    t.add_row(name, f"{level} {ttft:g}s/{tpot * 1e3:g}ms", strat, f"{plan.cost_per_hour:.2f}",
                              str(plan.total_gpus), f"{served_fraction(plan):.1%}", f"{sim.attainment:.1%}",
                              f"{final.plan.cost_per_hour:.2f}",
                              f"{res.attainment:.1%}" + ("" if final.meets_targets else " (miss)"),
                              str(len(rnds) - 1), describe(final.plan))
                    console.print(f"{name} {level} {strat}: ${plan.cost_per_hour:.2f}/h -> verified "
                                  f"${final.plan.cost_per_hour:.2f}/h", markup=False, highlight=False)
    console.print(t)
    return rows


def sweep(data: Path, console: Console, png: Path, quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    with tempfile.TemporaryDirectory() as tmp:
        for col, (name, (rel, fmt)) in enumerate(TRACES.items()):
            for row, level in enumerate(("relaxed", "tight")):
                tpot = SLOS[name][level][1]
                ttfts = TTFT_SWEEP[name][::2] if quick else TTFT_SWEEP[name]
                costs = {s: [] for s in STRATEGIES}
                served = {s: [] for s in STRATEGIES}
                for ttft in ttfts:
                    probs = strategy_problems(Path(tmp), data / rel, fmt, ttft, tpot)
                    for s in STRATEGIES:
                        plan, _ = cheapest(probs[s])
                        costs[s].append(plan.cost_per_hour if plan else float("nan"))
                        served[s].append(served_fraction(plan) if plan else 0.0)
                for s in STRATEGIES:
                    console.print(f"sweep {name} TPOT {tpot * 1e3:g}ms {s}: " + ", ".join(
                        f"{t:g}s ${c:.1f}/h ({f:.1%} planned)" for t, c, f in zip(ttfts, costs[s], served[s])),
                        markup=False, highlight=False)
                ax = axes[row][col]
                for s, marker in zip(STRATEGIES, "osD"):
                    full = [c if f >= 0.9999 else float("nan") for c, f in zip(costs[s], served[s])]
                    part = [c if f < 0.9999 else float("nan") for c, f in zip(costs[s], served[s])]
                    line, = ax.plot(ttfts, full, marker=marker, label=s)
                    if any(p == p for p in part):
                        ax.plot(ttfts, part, marker=marker, linestyle=":", fillstyle="none", color=line.get_color(),
                                label=f"{s}: sheds requests no config can serve")
                ax.set_xscale("log")
                ax.set_xlabel("TTFT SLO at p90, s")
                ax.set_ylabel("fleet cost, USD/h")
                ax.set_title(f"{name}, TPOT SLO {tpot * 1e3:g} ms (p90)")
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(fontsize=8)
    fig.suptitle(f"{MODEL}: plan cost against the TTFT SLO (example pools, KV network {KV_GBIT_PER_GPU} Gbit/s/GPU)")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    console.print(f"wrote {png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--png", default=str(ROOT / "bench" / "pd_value.png"))
    ap.add_argument("--rounds", type=int, default=4, help="repair rounds of the verification")
    ap.add_argument("--quick", action="store_true", help="every other TTFT in the sweep")
    args = ap.parse_args()
    console = Console(width=200)
    table(Path(args.data), console, args.rounds)
    sweep(Path(args.data), console, Path(args.png), args.quick)


if __name__ == "__main__":
    main()
