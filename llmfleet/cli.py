"""Command line: ``llmfleet plan | crds | operator``.

    llmfleet plan -f examples/                 # table: workload, GPU, TP, replicas, $/h, TTFT, TPOT
    llmfleet plan -f examples/ -o json         # the Plan as JSON (or -o yaml)
    llmfleet plan --melange input.json         # solve a Mélange-format input

Exit status: 0 with a plan that serves all demand, 2 for invalid input (the message names the
file and field), 3 when some demand cannot be served or no plan exists (the plan and the reasons
are still printed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from llmfleet.api.loader import ManifestError, load_fleet
from llmfleet.solver.baseline import cheapest_full_service, single_type_baselines
from llmfleet.solver.melange import MelangeInputError, load_melange
from llmfleet.solver.milp import solve
from llmfleet.solver.plan import Plan
from llmfleet.solver.problem import build_problem

EXIT_INVALID = 2
EXIT_UNSERVED = 3

err_console = Console(stderr=True)


@contextmanager
def progress(message: str, enabled: bool):
    """A spinner on stderr while ``message`` runs (only on a terminal; rich draws nothing otherwise),
    and the elapsed time once it is done when that took more than a second."""
    t0 = time.perf_counter()
    if enabled:
        with err_console.status(message):
            yield
    else:
        yield
    elapsed = time.perf_counter() - t0
    if enabled and elapsed > 1.0:
        err_console.print(f"[dim]{message.rstrip('.…')} took {elapsed:.1f}s[/dim]")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.0f}"


def plan_table(plan: Plan, title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for col, just in (("WORKLOAD", "left"), ("GPU", "left"), ("ROLE", "left"), ("TP", "right"), ("REPLICAS", "right"),
                      ("GPUS", "right"), ("$/H", "right"), ("REQ/S", "right"), ("UTIL", "right"),
                      ("TTFT ms", "right"), ("TPOT ms", "right")):
        t.add_column(col, justify=just)
    for a in plan.assignments:
        t.add_row(a.workload, a.gpu_type, a.role, str(a.tp), str(a.replicas), str(a.gpus), f"{a.cost_per_hour:.2f}",
                  f"{a.rate_rps:.2f}", f"{a.utilization:.0%}", _ms(a.ttft_s), _ms(a.tpot_s))
    return t


def _summary(plan: Plan) -> str:
    if plan.cost_per_hour is None:
        return f"status {plan.status}: no plan ({plan.solver}, {plan.solve_time_s:.2f}s)"
    bounds = [b for b in (plan.dual_bound, plan.lp_bound) if b is not None]
    lp_text = f"LP bound ${plan.lp_bound:.2f}/h, " if plan.lp_bound is not None else ""
    bound_text = f"{lp_text}best bound ${max(bounds):.2f}/h, gap {plan.gap:.2%}; " if bounds else ""
    return (f"status {plan.status}: ${plan.cost_per_hour:.2f}/h, {plan.total_gpus} GPUs; {bound_text}"
            f"solved by {plan.solver} in {plan.solve_time_s:.2f}s")


def _saving(plan: Plan, baselines: dict[str, Plan]) -> dict | None:
    """Saving of ``plan`` against the cheapest single-type fleet that serves all demand, USD/h."""
    best = cheapest_full_service(baselines)
    if best is None or plan.cost_per_hour is None:
        return None
    gpu_type, base = best
    return {"againstGPUType": gpu_type, "baselineCostPerHour": round(base.cost_per_hour, 4),
            "savingPerHour": round(base.cost_per_hour - plan.cost_per_hour, 4),
            "savingFraction": round(1 - plan.cost_per_hour / base.cost_per_hour, 4)}


def _print_report(console: Console, plan: Plan, baselines: dict[str, Plan], saving: dict | None, source: str) -> None:
    console.print(plan_table(plan, f"Fleet plan for {source}"))
    console.print(_summary(plan), highlight=False)
    for r in plan.workloads:
        if r.shed_rps > 1e-6:
            console.print(f"[yellow]unserved:[/yellow] {r.workload}: {r.shed_rps:.2f} of {r.demand_rps:.2f} req/s", highlight=False)
    for m in plan.messages:
        console.print(f"[yellow]note:[/yellow] {m}", highlight=False)
    if not baselines:
        return
    bt = Table(title="Single-GPU-type fleets meeting the same SLOs (availability ignored)", title_justify="left")
    bt.add_column("GPU")
    bt.add_column("$/H", justify="right")
    bt.add_column("GPUS", justify="right")
    bt.add_column("STATUS")
    for t, p in sorted(baselines.items(), key=lambda kv: (not kv[1].serves_all_demand, kv[1].cost_per_hour or 0)):
        full = p.serves_all_demand
        bt.add_row(t, f"{p.cost_per_hour:.2f}" if full else "-", str(p.total_gpus) if full else "-",
                   "meets all SLOs" if full else "cannot serve all demand")
    console.print(bt)
    if saving:
        console.print(f"saving: ${saving['savingPerHour']:.2f}/h ({saving['savingFraction']:.1%}) against the cheapest "
                      f"single-type fleet ({saving['againstGPUType']}, ${saving['baselineCostPerHour']:.2f}/h)", highlight=False)
    elif plan.cost_per_hour is not None:
        console.print("saving: no single GPU type can serve all workloads within their SLOs", highlight=False)


def cmd_plan(args: argparse.Namespace) -> int:
    # rich assumes 80 columns when stdout is not a terminal (CI logs, pipes): widen so no cell is cut
    console = Console() if sys.stdout.isatty() else Console(width=160)
    show_progress = args.output == "table"
    try:
        with progress("Building the capacity model…", show_progress):
            if args.melange:
                fp = load_melange(args.melange, time_limit_s=args.time_limit or 30.0)
                source = args.melange
            else:
                fp = build_problem(load_fleet(args.filename))
                if args.time_limit:
                    fp.time_limit_s = args.time_limit
                source = ", ".join(args.filename)
    except (ManifestError, MelangeInputError) as err:
        err_console.print(f"[red]error:[/red] {err}", highlight=False)
        return EXIT_INVALID

    with progress("Solving the fleet MILP…", show_progress):
        plan = solve(fp)
    baselines = {}
    if not args.no_baseline:
        with progress("Solving single-GPU-type baselines…", show_progress):
            baselines = single_type_baselines(fp)
    saving = _saving(plan, baselines)

    if args.output in ("json", "yaml"):
        doc = plan.to_dict()
        doc["baselines"] = {t: {"status": p.status, "costPerHour": None if p.cost_per_hour is None else round(p.cost_per_hour, 4)}
                            for t, p in baselines.items()}
        if saving:
            doc["saving"] = saving
        print(json.dumps(doc, indent=2) if args.output == "json" else yaml.safe_dump(doc, sort_keys=False))
    else:
        _print_report(console, plan, baselines, saving, source)
    return EXIT_UNSERVED if plan.status in ("shortage", "infeasible") else 0


def cmd_crds(args: argparse.Namespace) -> int:
    from llmfleet.api.crds import crd_files, write_crds
    from llmfleet.api.models import API_GROUP

    if args.check:
        out = Path(args.directory)
        stale = [n for n, text in crd_files().items() if not (out / n).exists() or (out / n).read_text() != text]
        ours = [p for p in out.glob(f"{API_GROUP}_*.yaml")] if out.is_dir() else []
        extra = sorted(p.name for p in ours if p.name not in crd_files())
        if stale or extra:
            err_console.print(f"[red]error:[/red] {out} is out of date with llmfleet/api/models.py: "
                              f"{', '.join(stale + extra)}; run `llmfleet crds -d {out}`", highlight=False)
            return 1
        print(f"{out}: up to date")
        return 0
    for path in write_crds(args.directory):
        print(f"wrote {path}")
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    import logging
    import os

    # before kopf and the kubernetes client are imported: the client fixes its default
    # kubeconfig path from $KUBECONFIG at import time
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = str(Path(args.kubeconfig).resolve())
    import kopf

    os.environ["LLMFLEET_TRACE_DIR"] = str(Path(args.trace_dir).resolve())
    os.environ["LLMFLEET_DEBOUNCE_SECONDS"] = str(args.debounce_seconds)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import llmfleet.operator  # noqa: F401  (registers the handlers)

    kopf.run(clusterwide=True, standalone=args.peering is None, peering_name=args.peering,
             liveness_endpoint=args.liveness)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="llmfleet", description="Cost-optimal heterogeneous GPU fleets for LLM serving.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="choose the GPU mix, TP and replicas for LLMWorkloads and GPUPools",
                       description="Solve the fleet plan for YAML documents (LLMWorkload, GPUPool, FleetPolicy).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-f", "--filename", action="append", metavar="PATH",
                     help="YAML file or folder of them (repeatable), as for kubectl apply -f")
    src.add_argument("--melange", metavar="FILE", help="solve a Mélange-format input JSON instead")
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    p.add_argument("--time-limit", type=float, metavar="SECONDS", help="override FleetPolicy spec.solver.timeLimitSeconds")
    p.add_argument("--no-baseline", action="store_true", help="skip the single-GPU-type comparison")
    p.set_defaults(func=cmd_plan)

    c = sub.add_parser("crds", help="write the CustomResourceDefinitions generated from the API models",
                       description="Write the CRDs (LLMWorkload, GPUPool, FleetPolicy) generated from the pydantic models.")
    c.add_argument("-d", "--directory", default="crds",
                   help="output folder (default: crds; the Helm chart keeps a copy in helm/llmfleet/crds)")
    c.add_argument("--check", action="store_true", help="only check that the folder is up to date (exit 1 if not)")
    c.set_defaults(func=cmd_crds)

    o = sub.add_parser("operator", help="run the Kubernetes operator (kopf) against the current kubeconfig",
                       description="Watch LLMWorkloads, GPUPools and the FleetPolicy; plan jointly; reconcile "
                                   "Deployments, Services and PriorityClasses.")
    o.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config or in-cluster)")
    o.add_argument("--trace-dir", default=".", help="folder that relative spec.traffic.trace.path values are read from")
    o.add_argument("--debounce-seconds", type=float, default=1.0, help="quiet time gathered before a reconcile")
    o.add_argument("--peering", metavar="NAME", help="kopf peering object for several replicas (default: standalone)")
    o.add_argument("--liveness", metavar="URL", help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz")
    o.add_argument("-v", "--verbose", action="store_true")
    o.set_defaults(func=cmd_operator)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def entrypoint() -> None:
    """Console-script entry point: exit with ``main``'s status."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
