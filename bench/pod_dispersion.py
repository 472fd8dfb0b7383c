"""The burstiness one pod sees: the replay's least-loaded picker against the read-out's spread.

The read-out (``milp._latencies_by_bucket``) gives a colocated replica the workload's arrival
dispersion spread over its own group's replicas: d becomes 1 + (d - 1) / n
(``Burstiness.spread_over``). When a workload is split over several groups, the endpoint picker
still chooses among every pod of the workload, so a burst is shared by all of them. This bench
measures what one pod sees in the replay and prints it beside two spreads:

- ``group``: the read-out's, over the group's own replicas;
- ``all``: over every pod the picker chooses among (the workload's colocated and decode pods).

Plans: ``bench/bursty_verify.py``'s Azure cases (the Azure conversation hour at rateScale 4 and
its Gamma variants of CV² 3.7 and 7.3, four SLO sets each), planned and verified by its
``run_case``, whose replay of each round-0 plan (seed 0, ``Case.replay``) records each request's
entry pod (``Simulation.rq.entry_replica``). For every colocated group: the dispersion of each
pod's arrivals over 0.5, 2 and 5 s windows (``workload.demand.arrival_dispersion``), averaged over
the group's pods; both spreads at the same windows (``Burstiness.scv_over``); and the group's
replayed TTFT at the SLO percentile over the read-out's (``bursty_verify``'s "@sim" ratio).

What it showed when written: on the plans split over two groups, one pod's dispersion was
0.83-4.07 in the replay, 1.12-7.12 spread over its group, 1.08-4.06 spread over all pods (mean
|log(model / replay)| 0.549 and 0.139 over 30 group-windows). With the spread over all pods in
the read-out, ``bench/bursty_verify.py``'s slow one-pod groups (L40S TP-2 beside H100s) had
their TTFT under-predicted 1.4-1.8x: their arrivals come mostly while the fast pods are busy,
which a fixed-window dispersion does not carry, and the group's larger dispersion had been
hiding that. So the read-out keeps its spread over the group for now.

    python bench/pod_dispersion.py     # about a minute

Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import bursty_verify as bv
import numpy as np

from llmfleet import progress
from llmfleet.workload.demand import arrival_dispersion
from llmfleet.workload.traces import load_trace

WINDOWS_S = (0.5, 2.0, 5.0)
"""windows the dispersion is measured over, s: about one prefill to a few TTFT targets"""


def pod_dispersion(arrival_s: np.ndarray, pod: np.ndarray, window_s: float) -> float:
    """Mean over the pods in ``pod`` (shape (N,), one label per arrival) of the dispersion of
    each pod's own arrivals (``arrival_s``, s, shape (N,)) over ``window_s``."""
    return float(np.mean([arrival_dispersion(arrival_s[pod == k], window_s) for k in np.unique(pod)]))


def main() -> int:
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    cv_client, cv_upper = bv.servegen_cvs()
    azure = load_trace(bv.AZURE, "azure")
    traces = {"azure": azure, f"azure-g{cv_client ** 2:.1f}": bv.gamma_arrivals(azure, cv_client, seed=1),
              f"azure-g{cv_upper ** 2:.1f}": bv.gamma_arrivals(azure, cv_upper, seed=2)}
    rows, errors = [], {"group": [], "all": []}
    with tempfile.TemporaryDirectory(prefix="pod-dispersion-") as tmp:
        folder = Path(tmp)
        for name, trace in traces.items():
            bv.write_csv(trace, folder / "traces" / f"{name}.csv")
            for slo in bv.SLOS:
                label = f"{name} {slo[0]}"
                object_name = label.replace(" ", "-").replace(".", "-")
                wl = bv.write_workload(folder, object_name, f"{name}.csv", bv.AZURE_SCALE, slo)
                with progress.reporting(lambda msg, label=label: log(f"{label}: {msg}")):
                    case = bv.run_case(folder, wl, name, slo)
                w, sim = case.problem.workloads[0], case.replay
                if sim is None:
                    continue
                scenario, rq = sim.w, sim.rq
                pods = sum(g.replicas for g in scenario.groups if g.role != "prefill")
                split = sum(1 for g in scenario.groups if g.role != "prefill") > 1
                for gi, (g, read) in enumerate(zip(scenario.groups, case.groups)):
                    mine = rq.entry_group == gi
                    if g.role != "colocated" or not mine.any():
                        continue
                    replay = [pod_dispersion(rq.arrival[mine], rq.entry_replica[mine], t) for t in WINDOWS_S]
                    group = [float(w.burst.spread_over(g.replicas).scv_over(t)) for t in WINDOWS_S]
                    every = [float(w.burst.spread_over(pods).scv_over(t)) for t in WINDOWS_S]
                    if split:
                        errors["group"] += [abs(np.log(m / r)) for m, r in zip(group, replay)]
                        errors["all"] += [abs(np.log(m / r)) for m, r in zip(every, replay)]
                    ratio = bv._ratio(read["ttft_sim"], read["ttft_at_sim"])
                    rows.append((label, f"{g.replicas}x {g.name}", float(mine.mean()), split, replay, group, every,
                                 ratio))
    head = (f"{'trace':<13} {'SLO':<12} {'group':<27} {'share':>5} {'split':>5}  "
            + "".join(f"{t:g}s replay/group/all".ljust(24) for t in WINDOWS_S) + "TTFT sim/@sim")
    print("llmfleet bench/pod_dispersion.py: one pod's arrival dispersion in the replay (least-loaded picker) "
          "against the read-out's spread over its group's replicas (group) and over all the workload's pods (all); "
          "bench/bursty_verify.py's Azure plans")
    print(head)
    for label, group_name, share, split, replay, group, every, ratio in rows:
        trace, slo = label.split(" ", 1)
        cells = "".join(f"{r:.2f}/{m:.2f}/{e:.2f}".ljust(24) for r, m, e in zip(replay, group, every))
        print(f"{trace:<13} {slo:<12} {group_name:<27} {share:>5.2f} {'yes' if split else 'no':>5}  {cells}"
              f"{'-' if ratio is None else f'{ratio:.2f}':>13}")
    if errors["group"]:
        print(f"workloads split over groups: mean |log(model / replay)| of one pod's dispersion: spread over its "
              f"group {np.mean(errors['group']):.3f}, over all pods {np.mean(errors['all']):.3f} "
              f"({len(errors['group'])} group-windows)")
    print(f"\nwall time {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
