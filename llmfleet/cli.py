"""Command line: ``llmfleet plan | render | simulate | crds | operator``.

    llmfleet plan -f examples/                 # table: workload, GPU, role, TP, replicas, $/h, TTFT, TPOT
    llmfleet render -f examples/               # every object the operator would apply, as YAML (-o DIR: files)
    llmfleet plan -f examples/ -o json         # the Plan as JSON (or -o yaml), with its simulation scenario
    llmfleet plan -f examples/ --verify        # replay each workload's traffic, repair until SLOs hold
    llmfleet plan --melange input.json         # solve a Mélange-format input
    llmfleet simulate plan.json TRACE          # replay a trace against a saved plan

Exit status: 0 with a plan that serves all demand, 1 for an operational failure (no cluster to
reach, an internal error), 2 for invalid input (the message names the file, object and field),
3 when some demand cannot be served or no plan exists (the plan and the reasons are still
printed), 4 when the verified plan's simulated SLO attainment stays below a target, 5 when both.

stdout carries only the result (one JSON or YAML document with ``-o json|yaml``); progress,
notes and errors go to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

_IMPORTED_AT = time.perf_counter()
"""when this module began to load: a command run as ``llmfleet`` counts its time limit from here,
so the libraries' import (about 1 s) is inside it"""

from contextlib import contextmanager  # noqa: E402
from pathlib import Path

import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmfleet import __version__, progress
from llmfleet.jsonsafe import finite_or_null
from llmfleet.api.loader import ManifestError, load_fleet, read_yaml_documents
from llmfleet.solver.caps import budget_report, without_caps
from llmfleet.solver.churn import (churn_report, current_from_document, pd_thresholds_from_document,
                                   picker_factors_from_document, shortfall_from_document)
from llmfleet.solver.baseline import available_gpus, cheapest_full_service, fits_pools, single_type_baselines
from llmfleet.solver.melange import MelangeInputError, load_melange
from llmfleet.solver.milp import predicted_attainment, solve, time_left_s
from llmfleet.solver.plan import Plan
from llmfleet.solver.problem import FleetProblem, available_cpus, build_problem, minimum_gpus_shortfall
from llmfleet.sim.engine import simulate
from llmfleet.sim.robust import add_scenarios, load_scenarios, replay
from llmfleet.sim.scenario import ScenarioError, from_document, from_plan, to_document
from llmfleet.sim.verify import best_round, plan_and_verify, workload_traces
from llmfleet.workload.traces import TraceError, detect_format, load_trace, spread_note

EXIT_FAILURE = 1
EXIT_INVALID = 2
EXIT_UNSERVED = 3
EXIT_SLO_MISSED = 4
EXIT_SHED_AND_SLO_MISSED = 5

err_console = Console(stderr=True, soft_wrap=True)  # no hard wraps inside paths in logs


class StderrProgress:
    """Progress lines on stderr, ``[  12.3s] message``: every phase, and the library's own reports
    (capacity model per workload, HiGHS incumbents, simulation rounds) at most once a second."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self.last = -math.inf

    def _print(self, message: str) -> None:
        now = time.perf_counter()
        self.last = now
        print(f"[{now - self.t0:7.1f}s] {message}", file=sys.stderr, flush=True)

    def __call__(self, message: str) -> None:
        if self.enabled and time.perf_counter() - self.last >= 1.0:
            self._print(message)

    @contextmanager
    def step(self, message: str):
        """Announce a phase, route the library's reports here while it runs, and give its duration
        when that was over a second."""
        t0 = time.perf_counter()
        if self.enabled:
            self._print(message)
        with progress.reporting(self if self.enabled else None):
            yield
        elapsed = time.perf_counter() - t0
        if self.enabled and elapsed > 1.0:
            self._print(f"{message} done in {elapsed:.1f}s")


def _error(message: str) -> None:
    # escaped: messages hold field paths such as tenancy.rules[1] that rich would read as markup
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text[:40]!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text[:40]!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.0f}"


def plan_table(plan: Plan, title: str) -> Table:
    """The plan as a table; with a CAP W column (power cap per GPU, its capacity factor and the
    predicted draw) when any group is capped."""
    capped = any(getattr(a.config, "cap_watts", None) is not None for a in plan.assignments)
    t = Table(title=title, title_justify="left")
    cols = [("WORKLOAD", "left"), ("GPU", "left"), ("ROLE", "left"), ("TP", "right"), ("REPLICAS", "right"),
            ("GPUS", "right"), ("$/H", "right"), ("REQ/S", "right"), ("UTIL", "right"), ("TTFT ms", "right"),
            ("TPOT ms", "right")]
    if capped:
        cols.append(("CAP W (κ x, draw W)", "right"))
    for col, just in cols:
        t.add_column(col, justify=just)
    for a in plan.assignments:
        row = [a.workload, a.gpu_type, a.role, str(a.tp), str(a.replicas), str(a.gpus), f"{a.cost_per_hour:.2f}",
               f"{a.rate_rps:.2f}", f"{a.utilization:.0%}", _ms(a.ttft_s), _ms(a.tpot_s)]
        if capped:
            cap = a.config.cap_watts
            row.append("default" if cap is None else
                       f"{cap:.0f} (x{a.config.cap_capacity_factor:.2f}, {a.gpu_watts:.0f})")
        t.add_row(*row)
    return t


def _summary(plan: Plan) -> str:
    if plan.cost_per_hour is None:
        return f"status {plan.status}: no plan ({plan.solver}, {plan.solve_time_s:.2f}s)"
    bounds = [b for b in (plan.dual_bound, plan.lp_bound) if b is not None]
    lp_text = f"LP bound ${plan.lp_bound:.2f}/h, " if plan.lp_bound is not None else ""
    bound_text = f"{lp_text}best bound ${max(bounds):.2f}/h, gap {plan.gap:.2%}; " if bounds else ""
    caps = (f", power caps {plan.limit_watts / 1000:.1f} kW" if abs(plan.limit_watts - plan.tdp_watts) > 1e-6 else "")
    return (f"status {plan.status}: ${plan.cost_per_hour:.2f}/h, {plan.total_gpus} GPUs "
            f"(predicted GPU draw {plan.power_watts / 1000:.1f} kW, TDP {plan.tdp_watts / 1000:.1f} kW{caps}); {bound_text}"
            f"solved by {plan.solver} in {plan.solve_time_s:.2f}s")


def _saving(plan: Plan, baselines: dict[str, Plan], fp: FleetProblem) -> dict | None:
    """Saving of ``plan`` against the cheapest single-type fleet that serves all demand within its
    type's pools, USD/h; None when the plan itself sheds demand (the fleets would not serve the
    same demand) or no single type fits."""
    best = cheapest_full_service(baselines, fp)
    if best is None or plan.cost_per_hour is None or not plan.serves_all_demand:
        return None
    gpu_type, base = best
    return {"againstGPUType": gpu_type, "baselineCostPerHour": round(base.cost_per_hour, 4),
            "savingPerHour": round(base.cost_per_hour - plan.cost_per_hour, 4),
            "savingFraction": round(1 - plan.cost_per_hour / base.cost_per_hour, 4)}


def _phase_text(p: dict) -> str:
    """One solver phase as "name objective (gap, HiGHS status)"; the gap "unproven" when HiGHS
    proved no bound in its time; with the neighbourhood search's progress where one ran
    ("; from 9.87 in 6 neighbourhood solves")."""
    gap = "gap unproven" if p.get("gap") is None else f"gap {p['gap']:.1%}"
    value = "-" if p.get("objective") is None else f"{p['objective']:.4g}"
    search = p.get("neighbourhoods")
    searched = f"; from {search['from']:.4g} in {search['solved']} neighbourhood solves" if search else ""
    return f"{p['phase']} {value} ({gap}, {p.get('status')}{searched})"


def _print_report(console: Console, plan: Plan, baselines: dict[str, Plan], saving: dict | None, source: str,
                  fp: FleetProblem) -> None:
    console.print(plan_table(plan, f"Fleet plan for {source}"))
    console.print(_summary(plan), highlight=False)
    if plan.placement is not None:
        used = ", ".join(f"{p} {len(n)}" for p, n in sorted(plan.placement.nodes_used.items()))
        fits = "every replica placed" if plan.placement.all_placed else "[yellow]some replicas fit no node[/yellow]"
        console.print(f"nodes ({fits}; one TP group per node, GPUPool spec.gpusPerNode): {used}", highlight=False)
    for r in plan.workloads:
        if r.shed_rps > 1e-6:
            console.print(f"[yellow]unserved:[/yellow] {r.workload}: {r.shed_rps:.2f} of {r.demand_rps:.2f} req/s", highlight=False)
    solved = [p for p in plan.phases if p.get("status") != "met by the incumbent"]
    if plan.status == "shortage" and solved:
        console.print("solver phases (highest tier first, each kept for the next): " + "; ".join(
            _phase_text(p) for p in solved), highlight=False)
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
        status = "cannot serve all demand"
        if full:
            status = ("meets all SLOs" if fits_pools(fp, t, p) else
                      f"meets all SLOs with more GPUs than its pools offer ({available_gpus(fp, t)})")
        bt.add_row(t, f"{p.cost_per_hour:.2f}" if full else "-", str(p.total_gpus) if full else "-", status)
    console.print(bt)
    if saving:
        console.print(f"saving: ${saving['savingPerHour']:.2f}/h ({saving['savingFraction']:.1%}) against the cheapest "
                      f"single-type fleet that fits its pools ({saving['againstGPUType']}, "
                      f"${saving['baselineCostPerHour']:.2f}/h)", highlight=False)
    elif plan.cost_per_hour is not None and not plan.serves_all_demand:
        console.print("saving: none claimed: this plan sheds demand, so no fleet here serves the same demand", highlight=False)
    elif plan.cost_per_hour is not None:
        console.print("saving: no single GPU type can serve all workloads within their SLOs and its pools", highlight=False)


def _print_budget(console: Console, b: dict) -> None:
    """The power budget line: this plan's caps against the same budget at default limits."""
    def text(p: dict) -> str:
        cost = "no plan" if p["costPerHour"] is None else f"${p['costPerHour']:.2f}/h"
        shed = f", {p['shedRps']:.2f} req/s shed" if p["shedRps"] > 1e-6 else ", all demand served"
        return f"{cost} on {p['totalGPUs']} GPUs, caps {p['powerCapWatts'] / 1000:.1f} kW{shed}"

    over = f" x {b['oversubscription']:g} oversubscription" if b["oversubscription"] > 1 else ""
    console.print(f"power budget {b['budgetWatts'] / 1000:.1f} kW{over}: with power caps {text(b['withCaps'])}; "
                  f"at default power limits (TDP accounting) {text(b['atDefaultLimits'])}", highlight=False)


class _NoPlan(Exception):
    """The manifests cannot give a plan; ``code`` is the exit status (the message is printed)."""

    def __init__(self, code: int):
        self.code = code


def _fleet_problem(args: argparse.Namespace, steps: StderrProgress):
    """Load ``-f`` manifests and build the fleet problem; invalid input fails (exit 2). Minimum
    replicas beyond the pools get a note, not a refusal: the plan serves the higher tiers first.

    Returns:
        (FleetSpec, FleetProblem).

    Raises:
        _NoPlan: with the exit status, after printing why.
    """
    try:
        fleet = load_fleet(args.filename)
        shortfall = minimum_gpus_shortfall(fleet)
        if shortfall:  # minimums are part of the tier order: plan the higher tiers all the same
            print(f"note: not every minimum can be met: {shortfall}; higher tiers are served first", file=sys.stderr)
        with steps.step(f"Building the capacity model of {len(fleet.workloads)} workload(s) on "
                        f"{len(fleet.pools)} pool(s) (performance profile {fleet.policy.spec.performance_profile})"):
            return fleet, build_problem(fleet, workers=available_cpus())
    except ManifestError as err:
        _error(str(err))
        raise _NoPlan(EXIT_INVALID) from None


def _print_scenarios(console: Console, scenarios, results) -> None:
    t = Table(title="Scenarios: the same fleet replayed against each scenario's traffic", title_justify="left")
    for col, just in (("SCENARIO", "left"), ("WORKLOAD", "left"), ("SLO ATTAIN", "right"), ("TARGET", "right"),
                      ("TTFT p90 ms", "right"), ("TPOT p90 ms", "right"), ("GPU BUSY", "right")):
        t.add_column(col, justify=just)
    for k, (sc, res) in enumerate(zip(scenarios, results), start=1):
        for r in res.values():
            t.add_row(f"{k}: {sc.source}", r.workload, _pct(r.attainment), f"{r.target_percentile:g}%",
                      _ms(r.ttft_p90_s), _ms(r.tpot_p90_s), _pct(r.gpu_busy_fraction))
    console.print(t)


def _read_current(path: str) -> tuple[dict, dict, dict, dict]:
    """The running plan's replicas per group, P/D thresholds, κ factors for the endpoint picker
    and shortfall per workload (``FleetProblem.current``, ``current_pd_thresholds``,
    ``current_capacity_factors``, ``current_shortfall``) from ``--current PLAN.json``.

    Raises:
        ManifestError: unreadable or not a plan document (names the argument and file).
    """
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"--current {path}: file not found (write it with `llmfleet plan -o json`)", None)
    try:
        docs = [d for d in read_yaml_documents(p) if d is not None]  # JSON is YAML
        if len(docs) != 1:
            raise ValueError(f"--current {path}: expected one plan document")
        where = f"--current {path}"
        return (current_from_document(docs[0], where), pd_thresholds_from_document(docs[0], where),
                picker_factors_from_document(docs[0], where), shortfall_from_document(docs[0], where))
    except ValueError as err:
        raise ManifestError(str(err), None) from None


def cmd_plan(args: argparse.Namespace) -> int:
    started = args.started  # the time limit bounds the plan from here: the capacity model counts
    # rich assumes 80 columns when stdout is not a terminal (CI logs, pipes): widen so no cell is cut
    console = Console() if sys.stdout.isatty() else Console(width=160)
    steps = StderrProgress(not args.quiet)
    if args.melange and (args.verify is not None or args.scenarios):
        _error("--verify and --scenarios need manifests (-f): a Mélange input has no model to simulate")
        return EXIT_INVALID
    scenarios = []
    try:
        if args.melange:
            fp = load_melange(args.melange, time_limit_s=args.time_limit or 30.0)
            source = args.melange
        else:
            try:
                fleet, fp = _fleet_problem(args, steps)
            except _NoPlan as stop:
                return stop.code
            if args.time_limit:
                fp.time_limit_s = args.time_limit
            if args.current:
                (fp.current, fp.current_pd_thresholds, fp.current_capacity_factors,
                 fp.current_shortfall) = _read_current(args.current)
            if args.scenarios:
                scenarios = load_scenarios(fleet, fp, args.scenarios)
                with steps.step(f"Modelling {len(scenarios)} traffic scenario(s)"):
                    add_scenarios(fleet, fp, scenarios)
            source = ", ".join(args.filename)
        traces, sources = {}, {}
        if args.verify is not None:
            traces, sources = workload_traces(fp, fleet, None if args.verify == "" else args.verify)
    except (ManifestError, MelangeInputError) as err:
        _error(str(err))
        return EXIT_INVALID

    rounds = []
    if args.verify is not None:
        with steps.step(f"Solving, simulating and repairing (at most {args.verify_rounds} repair rounds)"):
            rounds = plan_and_verify(fp, traces, max_rounds=args.verify_rounds)
        final = best_round(rounds)
        plan = final.plan
    else:
        plan = _solve_in_limit(fp, started, steps)
    baselines = {}
    if not args.no_baseline:
        with steps.step("Solving single-GPU-type baselines"):
            baselines = single_type_baselines(fp)
    saving = _saving(plan, baselines, fp)
    churn = churn_report(plan, fp.current) if fp.current else None
    predicted = predicted_attainment(fp, plan) if plan.cost_per_hour is not None and not args.melange else {}
    scenario_results = []
    if scenarios and plan.cost_per_hour is not None:
        with steps.step(f"Replaying {len(scenarios)} scenario(s) against the plan"):
            scenario_results = replay(plan, fp, scenarios)
    budget = None
    if fp.power_budget_watts is not None and any(c.cap_watts is not None for w in fp.workloads for c in w.configs):
        with steps.step("Solving the same power budget at default power limits (TDP accounting)"):
            budget = budget_report(plan, solve(without_caps(fp)), fp)

    if args.output in ("json", "yaml"):
        doc = plan.to_dict()
        doc["baselines"] = {t: {"status": p.status, "costPerHour": None if p.cost_per_hour is None else round(p.cost_per_hour, 4),
                                "totalGPUs": p.total_gpus, "fitsPools": fits_pools(fp, t, p)}
                            for t, p in baselines.items()}
        if saving:
            doc["saving"] = saving
        if budget:
            doc["powerBudget"] = budget
        if churn is not None:
            doc["churn"] = churn
        if predicted:
            doc["predictedSloAttainment"] = {k: round(v, 4) for k, v in predicted.items()}
        if scenarios:
            doc["scenarios"] = [{"traffic": sc.source, "workloads": [r.to_dict() for r in res.values()]}
                                for sc, res in zip(scenarios, scenario_results)]
        if rounds:
            doc["verification"] = _verification_doc(rounds, sources)
        if not args.melange:
            doc["performanceProfile"] = fp.params.name
            doc["scenario"] = to_document(from_plan(plan, fp))
        doc = finite_or_null(doc)
        print(json.dumps(doc, indent=2, allow_nan=False) if args.output == "json" else yaml.safe_dump(doc, sort_keys=False))
    else:
        _print_report(console, plan, baselines, saving, source, fp)
        if predicted:
            targets = {w.key: w.workload.spec.slo.percentile for w in fp.workloads if w.workload is not None}
            console.print("predicted SLO attainment (capacity model; --verify replays the traffic): " + "; ".join(
                f"{k} {_pct(v)} (target {targets[k]:g}%)" for k, v in predicted.items()), highlight=False)
            short = [k for k, v in predicted.items() if v < targets[k] / 100.0]
            if short and not rounds:
                # the plan sizes each group by its sizes' SLO capacities; the read-out above also
                # swings the load minute by minute and counts bursts and backlogs, and can disagree
                console.print(f"predicted below target: {', '.join(short)}: the plan meets each size's SLO capacity, "
                              "but the read-out of its load swings and bursts misses; run with --verify to replay "
                              "the traffic and add capacity where it misses", highlight=False)
        if budget:
            _print_budget(console, budget)
        if scenario_results:
            _print_scenarios(console, scenarios, scenario_results)
        if churn is not None:
            changed = ", ".join(churn["workloadsChanged"]) or "none"
            console.print(f"churn against {args.current}: {churn['replicasStarted']} replicas started in "
                          f"{len(churn['groupsStarted'])} groups, {churn['replicasStopped']} stopped in "
                          f"{len(churn['groupsStopped'])} groups; workloads changed: {changed}", highlight=False)
        if rounds:
            _print_verification(console, rounds, sources)
    shed = plan.status in ("shortage", "infeasible")
    missed = bool(rounds) and not final.meets_targets
    missed = missed or any(not r.meets_target for res in scenario_results for r in res.values())
    return EXIT_SHED_AND_SLO_MISSED if shed and missed else EXIT_UNSERVED if shed else EXIT_SLO_MISSED if missed else 0


def _pct(v: float) -> str:
    return "-" if v != v else f"{v:.1%}"


def _verification_doc(rounds, sources: dict[str, str]) -> dict:
    return {
        "rounds": [{"costPerHour": r.plan.cost_per_hour and round(r.plan.cost_per_hour, 4),
                    "totalGPUs": r.plan.total_gpus, "meetsTargets": r.meets_targets,
                    "capacityFactors": {k: round(v, 4) for k, v in r.factors.items()},  # below 1 a cut, above a raise
                    "workloads": [res.to_dict() for res in r.results.values()]} for r in rounds],
        "traces": sources,
        "chosenRound": rounds.index(best_round(rounds)),
        "meetsTargets": best_round(rounds).meets_targets,
        "stopReason": rounds[-1].stop_reason,
    }


def _print_verification(console: Console, rounds, sources: dict[str, str]) -> None:
    t = Table(title="Verification: simulated replay of each workload's traffic", title_justify="left")
    for col, just in (("ROUND", "right"), ("$/H", "right"), ("GPUS", "right"), ("WORKLOAD", "left"),
                      ("SLO ATTAIN", "right"), ("TARGET", "right"), ("TTFT p90 ms", "right"),
                      ("TPOT p90 ms", "right"), ("GOODPUT", "right"), ("GPU BUSY", "right")):
        t.add_column(col, justify=just)
    for k, r in enumerate(rounds):
        for res in r.results.values():
            t.add_row(str(k), f"{r.plan.cost_per_hour:.2f}" if r.plan.cost_per_hour is not None else "-",
                      str(r.plan.total_gpus), res.workload, _pct(res.attainment), f"{res.target_percentile:g}%",
                      _ms(res.ttft_p90_s), _ms(res.tpot_p90_s), f"{res.goodput_rps:.2f}", _pct(res.gpu_busy_fraction))
    console.print(t)
    for key, src in sources.items():
        console.print(f"[dim]traffic of {key}: {src}[/dim]", highlight=False)
    for k, r in enumerate(rounds[:-1]):
        for word, changed in (("lowered", {n: f for n, f in r.factors.items() if f <= 1.0}),
                              ("raised", {n: f for n, f in r.factors.items() if f > 1.0})):
            if changed:
                listed = ", ".join(f"{name} x{f:.2f}" for name, f in changed.items())
                console.print(f"round {k}: capacity {word} for {listed}", highlight=False)
    best = best_round(rounds)
    att = "; ".join(f"{res.workload} {_pct(res.attainment)} (target {res.target_percentile:g}%)" for res in best.results.values())
    verdict = "meets every SLO target" if best.meets_targets else "[red]misses an SLO target[/red]"
    why = "the one that meets its targets shedding least" if best.meets_targets else "the closest to its targets"
    chosen = "" if best is rounds[-1] else f" (round {rounds.index(best)}, {why})"
    cost = "-" if best.plan.cost_per_hour is None else f"{best.plan.cost_per_hour:.2f}"
    console.print(f"verified{chosen}: ${cost}/h, {best.plan.total_gpus} GPUs; simulated SLO attainment {att}: {verdict}",
                  highlight=False)
    if rounds[-1].stop_reason:
        console.print(f"stopped after round {len(rounds) - 1}: {rounds[-1].stop_reason}", highlight=False)


def cmd_simulate(args: argparse.Namespace) -> int:
    console = Console() if sys.stdout.isatty() else Console(width=160)
    steps = StderrProgress(not args.quiet)
    plan_path = Path(args.plan)
    if not plan_path.is_file():
        _error(f"{args.plan}: plan file not found (write one with `llmfleet plan -o json > plan.json`)")
        return EXIT_INVALID
    try:
        docs = [d for d in read_yaml_documents(plan_path) if d is not None]  # JSON is YAML
        if len(docs) != 1 or not isinstance(docs[0], dict):
            raise ScenarioError("expected one plan document (a mapping) from `llmfleet plan -o json`")
        workloads = from_document(docs[0])
    except ManifestError as err:
        _error(str(err))
        return EXIT_INVALID
    except ScenarioError as err:
        _error(f"{args.plan}: {err}")
        return EXIT_INVALID
    if args.workload:
        chosen = [w for w in workloads if w.key == args.workload or w.key.split("/", 1)[-1] == args.workload]
        if not chosen:
            _error(f"--workload {args.workload}: not in the plan {args.plan}; it has {', '.join(w.key for w in workloads)}")
            return EXIT_INVALID
    elif len(workloads) == 1:
        chosen = workloads
    else:
        _error(f"the plan {args.plan} has {len(workloads)} workloads ({', '.join(w.key for w in workloads)}); "
               "choose one with --workload")
        return EXIT_INVALID
    w = chosen[0]
    try:
        fmt = args.format if args.format != "auto" else detect_format(args.trace)
        trace = load_trace(args.trace, fmt)
    except TraceError as err:
        _error(f"TRACE: {err}")
        return EXIT_INVALID
    if spread := spread_note(trace):
        err_console.print(f"[yellow]note:[/yellow] {escape(str(args.trace))}: {escape(spread)}", highlight=False)
    if args.rate_scale is not None:
        w.rate_scale = args.rate_scale
    if args.duration is not None:
        trace = trace[trace["arrival_s"] <= args.duration * w.rate_scale]
    if trace.empty:
        _error(f"TRACE: {args.trace}: no request arrives within --duration {args.duration or 0:g}s")
        return EXIT_INVALID
    if not w.groups:
        _error(f"{w.key}: the plan {args.plan} gives it no replicas")
        return EXIT_UNSERVED
    t0 = time.perf_counter()
    with steps.step(f"Simulating {len(trace)} requests of {w.key} at {w.rate_scale:g}x rate"):
        res = simulate(w, trace, seed=args.seed, router=None if args.router == "deployed" else args.router)
    elapsed = time.perf_counter() - t0
    if args.output == "json":
        print(json.dumps(finite_or_null({**res.to_dict(), "simulationSeconds": round(elapsed, 3)}), indent=2,
                         allow_nan=False))
    else:
        t = Table(title=f"{w.key}: {len(trace)} requests of {args.trace} at {w.rate_scale:g}x rate", title_justify="left")
        for col in ("GROUP", "ROLE", "REPLICAS", "REQUESTS", "SLO ATTAIN", "GPU BUSY"):
            t.add_column(col, justify="left" if col in ("GROUP", "ROLE") else "right")
        for g in res.groups:
            t.add_row(g.name, g.role, str(g.replicas), str(g.requests), _pct(g.attainment), _pct(g.busy_fraction))
        console.print(t)
        console.print(f"TTFT p50/p90/p99 {_ms(res.ttft_p50_s)}/{_ms(res.ttft_p90_s)}/{_ms(res.ttft_p99_s)} ms "
                      f"(SLO {_ms(w.ttft_s)} ms); TPOT p50/p90/p99 {_ms(res.tpot_p50_s)}/{_ms(res.tpot_p90_s)}/"
                      f"{_ms(res.tpot_p99_s)} ms (SLO {_ms(w.tpot_s)} ms)", highlight=False)
        console.print(f"SLO attainment {_pct(res.attainment)} (target {w.percentile:g}%), goodput {res.goodput_rps:.2f} req/s, "
                      f"GPU busy {_pct(res.gpu_busy_fraction)}, {res.preemptions} preemptions, "
                      f"{res.finished}/{res.requests} finished; simulated in {elapsed:.1f}s", highlight=False)
    return 0 if res.meets_target else EXIT_SLO_MISSED


REPORT_SHARE = 0.05
"""part of the time limit kept for what follows the plan in ``llmfleet plan``: its predicted SLO
attainment and the output (300 bench workloads: 1.7 s, 3% of a 60 s limit). The baselines and the
power-budget comparison have limits of their own."""


def _solve_in_limit(fp: FleetProblem, started: float, steps: StderrProgress) -> Plan:
    """``solve`` with what is left of ``fp.time_limit_s`` counted from ``started`` (``time_left_s``:
    reading the manifests and the capacity model count; a note when that overruns the limit).
    ``fp.time_limit_s`` is restored afterwards for the comparisons solved after the plan (each
    with its own limit)."""
    limit = fp.time_limit_s
    fp.time_limit_s, overrun = time_left_s(limit, started, REPORT_SHARE * limit)
    if overrun:
        err_console.print(f"[yellow]note:[/yellow] {escape(overrun)}", highlight=False)
    try:
        with steps.step(f"Solving the fleet MILP (time limit {limit:g}s, {fp.time_limit_s:.3g}s of it left "
                        "after the capacity model)"):
            return solve(fp)
    finally:
        fp.time_limit_s = limit


def cmd_render(args: argparse.Namespace) -> int:
    """Solve the fleet in the files and print (or, with ``-o DIR``, write) every object the operator
    would apply for that plan: the same renderer (``operator.render.render_plan``), for review or
    GitOps without the operator. Workloads read from files have no UID, so the objects carry no
    owner reference. The routing mode is the FleetPolicy's ``spec.routing.mode``; unset, it is
    ``inferencePool`` (offline, the InferencePool CRD is assumed installed)."""
    from llmfleet.operator.render import render_plan

    started = args.started
    steps = StderrProgress(not args.quiet)
    try:
        fleet, fp = _fleet_problem(args, steps)
    except _NoPlan as stop:
        return stop.code
    plan = _solve_in_limit(fp, started, steps)
    for m in plan.messages:
        err_console.print(f"[yellow]note:[/yellow] {escape(m)}", highlight=False)
    if plan.cost_per_hour is None:
        _error(f"no plan ({plan.status}): nothing to render")
        return EXIT_UNSERVED
    mode = fleet.policy.spec.routing.effective_mode()
    manifests = render_plan(plan, {w.key: w for w in fleet.workloads}, {p.metadata.name: p for p in fleet.pools},
                            fleet.policy, mode)
    if args.output_dir:
        out = Path(args.output_dir)
        for m in manifests:
            folder = out / (m["metadata"].get("namespace") or "_cluster")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{m['kind'].lower()}-{m['metadata']['name']}.yaml").write_text(
                yaml.safe_dump(m, sort_keys=False))
        if not args.quiet:
            err_console.print(f"wrote {len(manifests)} objects (routing mode {mode}) to {escape(str(out))}",
                              highlight=False)
    else:
        sys.stdout.write(yaml.safe_dump_all(manifests, sort_keys=False))
    return 0 if plan.serves_all_demand else EXIT_UNSERVED


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


def cluster_access_problem(timeout_s: float = 10.0) -> str | None:
    """Why the operator cannot reach a cluster (None when it can): no in-cluster service account and
    no usable kubeconfig, or an API server that does not answer ``/version`` within ``timeout_s``.
    Checked once at start-up so a misconfigured operator exits with one line instead of logging a
    traceback every minute; the message names the source tried, never a credential."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
        source = "the in-cluster service account"
    except config.ConfigException:
        kubeconfig = os.environ.get("KUBECONFIG") or "~/.kube/config"
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError, TypeError, ValueError, KeyError, yaml.YAMLError) as err:
            reason = "file not found" if isinstance(err, FileNotFoundError) else type(err).__name__
            if isinstance(err, config.ConfigException):
                reason = str(err).splitlines()[0][:200]
            return (f"no usable cluster credentials: not running in a pod with a service account, and kubeconfig "
                    f"{kubeconfig} is not usable ({reason}); pass --kubeconfig or set KUBECONFIG")
        source = f"kubeconfig {kubeconfig}"
    try:
        client.VersionApi().get_code(_request_timeout=timeout_s)
    except Exception as err:  # noqa: BLE001 (any failure to reach the API server means the same here)
        status = getattr(err, "status", None)
        what = f"HTTP {status}" if status else type(err).__name__
        return f"cannot reach the Kubernetes API server from {source} ({what}); check the server address and credentials"
    return None


def cmd_operator(args: argparse.Namespace) -> int:
    """Run the operator until SIGTERM/SIGINT or a lost Lease. Returns EXIT_FAILURE only when it
    cannot start; once kopf has run it ends the process itself (status 0, or 1 after a lost Lease)."""
    import logging

    # before kopf and the kubernetes client are imported: the client fixes its default
    # kubeconfig path from $KUBECONFIG at import time
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = str(Path(args.kubeconfig).resolve())
    problem = cluster_access_problem()
    if problem:
        _error(f"operator: {problem}")
        return EXIT_FAILURE
    import kopf

    os.environ["LLMFLEET_TRACE_DIR"] = str(Path(args.trace_dir).resolve())
    os.environ["LLMFLEET_NAMESPACES"] = ",".join(args.namespace or [])
    os.environ["LLMFLEET_DEBOUNCE_SECONDS"] = str(args.debounce_seconds)
    os.environ["LLMFLEET_PLANNER_WORKERS"] = str(args.planner_workers)
    os.environ["LLMFLEET_API_TIMEOUT_SECONDS"] = str(args.api_timeout_seconds)
    os.environ["LLMFLEET_SHUTDOWN_TIMEOUT_SECONDS"] = str(args.shutdown_timeout_seconds)
    os.environ["LLMFLEET_METRICS_PORT"] = str(args.metrics_port)
    if args.prometheus_url:
        os.environ["LLMFLEET_PROMETHEUS_URL"] = args.prometheus_url
    if args.peering:
        args.leader_elect, args.lease_name = True, args.peering
    if args.leader_elect:
        from llmfleet.operator.leader import ElectionSettings

        try:  # check the timing here: one clear line instead of a failed start-up handler
            ElectionSettings(args.lease_name, args.leader_election_namespace or "default", args.lease_duration_seconds,
                             args.renew_deadline_seconds, args.retry_period_seconds)
        except ValueError as err:
            _error(f"operator: {err}")
            return EXIT_FAILURE
        os.environ.update({
            "LLMFLEET_LEADER_ELECTION": "1", "LLMFLEET_LEASE_NAME": args.lease_name,
            "LLMFLEET_LEASE_NAMESPACE": args.leader_election_namespace or _kubeconfig_namespace(),
            "LLMFLEET_LEASE_DURATION_SECONDS": str(args.lease_duration_seconds),
            "LLMFLEET_RENEW_DEADLINE_SECONDS": str(args.renew_deadline_seconds),
            "LLMFLEET_RETRY_PERIOD_SECONDS": str(args.retry_period_seconds)})
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import llmfleet.operator  # noqa: F401  (registers the handlers)
    from llmfleet.operator import handlers

    # standalone always: one active replica is chosen by the Lease (--leader-elect), not by kopf
    # peering, which gives equal-priority replicas no leader and pauses them all
    stop_flag = handlers.own_signals()
    if args.namespace:  # namespaced mode: kopf watches only these namespaces (Roles suffice there)
        kopf.run(namespaces=args.namespace, standalone=True, liveness_endpoint=args.liveness, stop_flag=stop_flag)
    else:
        kopf.run(clusterwide=True, standalone=True, liveness_endpoint=args.liveness, stop_flag=stop_flag)
    # kopf has stopped and the clean-up handler has had its bounded wait; a reconcile it left
    # (a solve in a worker thread, a request on the wire) must not outlive it. Interpreter
    # finalisation would join that thread, or abort the process (SIGABRT) when it writes to a
    # stream being finalised, so flush the logs and exit here, as the shutdown deadline does.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(handlers.exit_code)


def _kubeconfig_namespace() -> str:
    """The namespace the operator runs in: its pod's (in-cluster service account), else the
    kubeconfig context's, else ``default``."""
    from kubernetes import config

    pod_ns = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if pod_ns.is_file():
        return pod_ns.read_text().strip() or "default"
    kubeconfig = (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0] or None
    try:
        _, context = config.list_kube_config_contexts(config_file=kubeconfig)
        return (context or {}).get("context", {}).get("namespace") or "default"
    except (config.ConfigException, OSError, TypeError, KeyError):
        return "default"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="llmfleet", description="Cost-optimal heterogeneous GPU fleets for LLM serving.")
    ap.add_argument("--version", action="version", version=f"llmfleet {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="choose the GPU mix, TP and replicas for LLMWorkloads and GPUPools",
                       description="Solve the fleet plan for YAML documents (LLMWorkload, GPUPool, FleetPolicy).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-f", "--filename", action="append", metavar="PATH",
                     help="YAML file or folder of them (repeatable), as for kubectl apply -f")
    src.add_argument("--melange", metavar="FILE", help="solve a Mélange-format input JSON instead")
    p.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    p.add_argument("--time-limit", type=positive_float, metavar="SECONDS",
                   help="override FleetPolicy spec.solver.timeLimitSeconds: the wall-clock bound of the fleet "
                        "plan from the command's start (manifests, capacity model, MILP phases, read-out and node "
                        "placement; with --verify, of each round's solve)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the single-GPU-type comparison (one more plan per GPU type, each with its own limit, "
                        "after the plan's)")
    p.add_argument("--scenarios", nargs="+", metavar="TRACE",
                   help="plan one fleet that also serves each TRACE in place of the trace-driven workloads' own "
                        "traces (e.g. other hours or another service), and report each one's simulated attainment")
    p.add_argument("--current", metavar="PLAN.json",
                   help="the running plan (`llmfleet plan -o json`): re-plan against it, paying for every replica "
                        "started or stopped, and report the churn")
    p.add_argument("--verify", nargs="?", const="", metavar="TRACE",
                   help="simulate the plan against each workload's traffic (its trace, or Poisson traffic from its "
                        "declared rate and percentiles) and repair it until the SLO attainment meets each target; "
                        "TRACE replaces the trace of trace-driven workloads")
    p.add_argument("--verify-rounds", type=non_negative_int, default=4, metavar="N", help="most repair rounds (default 4)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_plan)

    r = sub.add_parser("render", help="print every Kubernetes object the operator would apply for the plan",
                       description="Solve the fleet plan for the YAML documents and print the objects that run it "
                                   "(vLLM Deployments, routing objects for FleetPolicy spec.routing, PriorityClasses) "
                                   "as YAML documents, the same objects the operator applies; for review or GitOps.")
    r.add_argument("-f", "--filename", action="append", metavar="PATH", required=True,
                   help="YAML file or folder of them (repeatable), as for kubectl apply -f")
    r.add_argument("-o", "--output-dir", metavar="DIR",
                   help="write one file per object, DIR/<namespace>/<kind>-<name>.yaml (cluster-scoped: DIR/_cluster)")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    r.set_defaults(func=cmd_render)

    s = sub.add_parser("simulate", help="replay a request trace against a saved plan",
                       description="Replay TRACE with its real arrival times against PLAN (written by "
                                   "`llmfleet plan -o json`): TTFT/TPOT percentiles, SLO attainment, goodput, GPU busy.")
    s.add_argument("plan", metavar="PLAN", help="plan file from `llmfleet plan -o json` (or -o yaml)")
    s.add_argument("trace", metavar="TRACE", help="request trace (azure, mooncake, burstgpt or csv)")
    s.add_argument("--workload", help="namespace/name (or name) of the workload to replay it for")
    s.add_argument("--format", default="auto", choices=("auto", "azure", "mooncake", "burstgpt", "csv"))
    s.add_argument("--rate-scale", type=positive_float, help="replay at this multiple of the trace's rate "
                                                              "(default: the workload's spec.traffic.trace.rateScale)")
    s.add_argument("--duration", type=positive_float, metavar="SECONDS", help="replay only the first SECONDS of the trace")
    s.add_argument("--seed", type=non_negative_int, default=0, help="seed of the routing draws")
    s.add_argument("--router", choices=("deployed", "plan-shares"), default="deployed",
                   help="route as the deployed router does (default: the endpoint picker's load-aware "
                        "choice, or a Service's uniform one, as the plan records), or by the plan's own "
                        "per-bucket shares (which assume each request's output length is known)")
    s.add_argument("-o", "--output", choices=("table", "json"), default="table")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    s.set_defaults(func=cmd_simulate)

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
    o.add_argument("--planner-workers", type=positive_int, default=1, metavar="N",
                   help="processes the capacity model of many workloads at once is spread over (the first "
                        "plan, a changed pool), at most the CPUs the pod may use; each needs about 200 MiB "
                        "(default 1: the operator's own process)")
    o.add_argument("--namespace", action="append", metavar="NS",
                   help="watch only this namespace's LLMWorkloads and children (repeatable); default: all")
    o.add_argument("--leader-elect", action="store_true",
                   help="run several replicas: only the one holding a coordination.k8s.io Lease reconciles")
    o.add_argument("--leader-election-namespace", metavar="NS",
                   help="namespace of the Lease (default: the pod's namespace, else the kubeconfig context's)")
    o.add_argument("--lease-name", default="llmfleet", help="name of the Lease (default llmfleet)")
    o.add_argument("--lease-duration-seconds", type=int, default=15,
                   help="a standby takes a Lease not renewed for this long (default 15, as client-go)")
    o.add_argument("--renew-deadline-seconds", type=positive_float, default=10.0,
                   help="the leader steps down when it cannot renew for this long (default 10)")
    o.add_argument("--retry-period-seconds", type=positive_float, default=2.0,
                   help="time between Lease attempts (default 2)")
    # kopf peering before 0.2: now a Lease of that name (peering paused every equal-priority replica)
    o.add_argument("--peering", metavar="NAME", help=argparse.SUPPRESS)
    o.add_argument("--api-timeout-seconds", type=positive_float, default=20.0,
                   help="timeout of one Kubernetes API request (default 20)")
    o.add_argument("--shutdown-timeout-seconds", type=positive_float, default=20.0,
                   help="most time from SIGTERM to exit; keep it under the pod's terminationGracePeriodSeconds "
                        "(default 20)")
    o.add_argument("--liveness", metavar="URL", help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz")
    o.add_argument("--prometheus-url", metavar="URL", default="",
                   help="read workload telemetry from this Prometheus (for spec.traffic.source observed/max); "
                        "default: $LLMFLEET_PROMETHEUS_URL, else telemetry off")
    o.add_argument("--metrics-port", type=int, default=9102, help="port of the operator's own /metrics (0: off)")
    o.add_argument("-v", "--verbose", action="store_true")
    o.set_defaults(func=cmd_operator)

    from llmfleet.power.main import add_power_agent_arguments, cmd_power_agent  # light: argparse only

    g = sub.add_parser("power-agent", help="run the node power agent (applies pods' GPU power caps through NVML)",
                       description="Read the llmfleet.dev/gpu-power-limit-watts annotation of the pods on this node, "
                                   "map them to GPUs through the kubelet PodResources API and set the GPUs' power "
                                   "limits through NVML; restore the defaults when the GPUs are idle and on SIGTERM.")
    add_power_agent_arguments(g)
    g.set_defaults(func=cmd_power_agent)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status (argparse exits 2 itself on a bad option).

    An unexpected exception is a bug: it is reported as one line naming its type (its text could
    quote an input file) and exit status 1; ``LLMFLEET_DEBUG=1`` shows the traceback instead.
    """
    args = build_parser().parse_args(argv)
    # the command's start: the process's (its imports included) when run as ``llmfleet``, the call's
    # when called with arguments from Python
    args.started = _IMPORTED_AT if argv is None else time.perf_counter()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `llmfleet plan -o json | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except Exception as err:  # noqa: BLE001
        if os.environ.get("LLMFLEET_DEBUG"):
            raise
        _error(f"internal error ({type(err).__name__}) in `llmfleet {args.command}`; please report it with the "
               "traceback from LLMFLEET_DEBUG=1")
        return EXIT_FAILURE


def entrypoint() -> None:
    """Console-script entry point: exit with ``main``'s status."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
