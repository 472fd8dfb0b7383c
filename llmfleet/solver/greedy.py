"""A tier-respecting greedy fleet plan: the fleet MILP's first incumbent (issue 15).

Under binding availability the lexicographic phases of ``solver.milp`` start from this plan, so
that a phase stopped by the time limit still returns a plan in which no tier lost GPUs to a lower
one: the greedy serves the tiers strictly in order, highest first, and each phase only improves on
the plan it starts from while keeping the higher tiers' results fixed.

The greedy chooses replica counts only. A workload's options are its colocated configurations and
its P/D pairs (a prefill and a decode configuration of one KV domain, every prompt through the
prefill pods); an option needs, per unit share of the workload's requests, some replicas' worth of
each of its configurations (``Option.per_share``). Tier by tier, each workload in turn takes whole
replicas of its options in order of GPUs per unit share until it is served or nothing fits; a
workload keeps to one kind (colocated, or P/D in one KV domain, as the router and the MILP
require). The turn order is the one of four that serves the tier the most requests per second:
most requests per GPU of the most GPU-efficient option first (a tier's GPUs serve as many requests
as they can), fewest options first (an efficient workload does not take the only pool another
can use), largest GPU need first (first-fit decreasing), and (workload, option) pairs by requests
per GPU (a workload's worse options wait their turn). Then the tier's ``minReplicas``. Every
limit that bounds replica counts alone is respected exactly: the model rows whose variables are
all replica counts (pool availability, node shapes, placement limits, power budgets, GPU quotas),
read from the model itself, so no limit is written twice. The routing shares, P/D thresholds and
shed follow from the counts in ``milp`` (a solve with them fixed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pulp

from llmfleet.solver.highs import problem_rows

_EPS = 1e-9
_BISECTIONS = 14
"""halvings of a share that does not fit whole: to 0.01% of the workload's requests"""


@dataclass(frozen=True)
class Option:
    """One way to serve a workload.

    Attributes:
        kind: "colocated", or ("pd", KV domain group) for a P/D pair.
        per_share: ((config index, replicas per unit share of the workload's requests), ...),
            replicas > 0; one entry for a colocated configuration, prefill then decode for a pair.
        gpus_per_share: Σ replicas per share x TP: what the greedy ranks by.
        serving: the config index whose replicas count toward ``minReplicas`` (colocated or decode).
    """

    kind: object
    per_share: tuple[tuple[int, float], ...]
    gpus_per_share: float
    serving: int


def _count_rows(prob: pulp.LpProblem, count_vars: set[str]) -> list[tuple[dict[str, float], float]]:
    """The ``<=`` rows of ``prob`` over replica-count variables only, with positive coefficients,
    as ({variable name: coefficient}, right-hand side) (``highs.problem_rows``)."""
    rows = ((terms, upper) for terms, lower, upper in problem_rows(prob) if lower is None and upper is not None)
    out = []
    for terms, rhs in rows:
        coef: dict[str, float] | None = {}
        for v, a in terms:  # most rows hold a routing share: stop at the first such column
            if not a:
                continue
            if a < 0 or v.name not in count_vars:
                coef = None
                break
            coef[v.name] = a
        if coef:
            out.append((coef, rhs))
    return out


def count_rows(prob: pulp.LpProblem, n: dict) -> list[tuple[dict[tuple[int, int], float], float]]:
    """The rows of ``prob`` that bound replica counts alone (``n``: (wi, ci) -> variable), as
    ({(wi, ci): coefficient}, right-hand side): what ``greedy_replicas`` respects."""
    names = {v.name: key for key, v in n.items()}
    return [({names[name]: a for name, a in coef.items()}, rhs) for coef, rhs in _count_rows(prob, set(names))]


def greedy_replicas(workloads: list, rows: list, options: dict[int, list[Option]], tier_of, service: bool,
                    fixed: dict | None = None, tiers: set | None = None,
                    served: frozenset = frozenset()) -> dict[tuple[int, int], int]:
    """Replica counts of a tier-respecting greedy plan.

    Args:
        workloads: the fleet's ``WorkloadProblem`` list (index wi).
        rows: the model's rows over replica counts alone (``count_rows``), which bound the counts.
        options: wi -> the workload's ``Option`` list (any order).
        tier_of: wi -> priority value (higher first).
        service: kube-proxy routing (``routing.mode: service``): one group per workload.
        fixed: (wi, ci) -> replicas already decided (a phase's result for the higher tiers); they
            take their room first and are kept.
        tiers: the priority values to allocate (None: all); other workloads get only ``fixed``.
        served: workloads that ``fixed`` already serves in full with their minimums met, as the
            caller found on the model itself (the options' per-share loads are this greedy's
            estimate, which can read a running P/D group with a threshold as short): they get
            only ``fixed``.

    Returns:
        (wi, ci) -> replicas, only positive counts, ``fixed`` included.
    """
    rows_of: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for r, (coef, _) in enumerate(rows):
        for key, a in coef.items():
            rows_of.setdefault(key, []).append((r, a))
    room = np.array([rhs for _, rhs in rows], dtype=float)
    counts: dict[tuple[int, int], int] = {}

    def fit(wi: int, parts: list[tuple[int, int]]) -> bool:
        """Do ``parts`` ((config, replicas), ...) fit all together in what the rows leave?"""
        need: dict[int, float] = {}
        for ci, k in parts:
            for r, a in rows_of.get((wi, ci), []):
                need[r] = need.get(r, 0.0) + a * k
        return all(room[r] + 1e-7 >= v for r, v in need.items())

    def add(wi: int, parts: list[tuple[int, int]]) -> None:
        for ci, k in parts:
            for r, a in rows_of.get((wi, ci), []):
                room[r] -= a * k
            counts[wi, ci] = counts.get((wi, ci), 0) + k

    def take(wi: int, opt: Option, share: float) -> float:
        """Add the most of ``share`` (of the workload's requests) that ``opt`` fits, in whole
        replicas of each part; returns the share it serves."""
        parts = lambda s: [(ci, math.ceil(s * per - 1e-9)) for ci, per in opt.per_share]  # noqa: E731
        if not fit(wi, parts(share)):
            if not fit(wi, [(ci, 1) for ci, _ in opt.per_share]):
                return 0.0  # any share needs a replica of each part: none fits (the bisection's 0, at once)
            lo, hi = 0.0, share
            for _ in range(_BISECTIONS):  # the largest share whose replicas fit
                mid = (lo + hi) / 2.0
                lo, hi = (mid, hi) if fit(wi, parts(mid)) else (lo, mid)
            share = lo
        chosen = parts(share)
        if share <= _EPS or any(k <= 0 for _, k in chosen):
            return 0.0
        add(wi, chosen)
        return min(share, min(k / per for (_, k), (_, per) in zip(chosen, opt.per_share)))

    for key, k in (fixed or {}).items():
        if k > 0:
            add(key[0], [(key[1], k)])
    ranked = {wi: sorted(opts, key=lambda o: (o.gpus_per_share, o.per_share)) for wi, opts in options.items()}

    def efficiency(wi: int) -> float:
        opts = ranked.get(wi)
        return workloads[wi].rate_rps / opts[0].gpus_per_share if opts else 0.0

    def serve(steps: list[tuple[int, list[Option]]]) -> tuple[float, dict[int, object]]:
        """Serve from what is left, step by step: each step (workload, options) takes what it can
        of the workload's requests still unserved on those options in turn. Returns the req/s the
        steps' workloads are served and the kind each got."""
        kind_of: dict[int, object] = {}
        left: dict[int, float] = {}
        for wi, _ in steps:
            if wi in left:
                continue
            left[wi] = 1.0
            for opt in ranked.get(wi, []):  # what replicas it already has (``fixed``) serve
                have = min(counts.get((wi, ci), 0) / per for ci, per in opt.per_share)
                if have > 0:
                    left[wi] -= have
                    kind_of[wi] = opt.kind
        for wi, opts in steps:
            for opt in opts:
                if left[wi] <= 1e-9:
                    break
                if wi in kind_of and (service or opt.kind != kind_of[wi]):
                    continue  # one kind per workload; one group under service routing
                got = take(wi, opt, left[wi])
                if got > 0:
                    kind_of[wi] = opt.kind
                    left[wi] -= got
        return sum((1.0 - max(v, 0.0)) * workloads[wi].rate_rps for wi, v in left.items()), kind_of

    for tier in sorted({tier_of(wi) for wi in range(len(workloads))}, reverse=True):
        if tiers is not None and tier not in tiers:
            continue
        members = sorted((wi for wi in range(len(workloads)) if tier_of(wi) == tier and wi not in served),
                         key=lambda wi: (-efficiency(wi), workloads[wi].key))
        # the most requests per GPU first serves the most with the GPUs there are, unless an
        # efficient workload takes the only pool another one can use: then the least flexible
        # first (fewest options) or the largest first can serve more. Where the first order
        # leaves some of the tier unserved, the others are tried from the same state and the one
        # serving the most req/s of the tier kept (the first on ties).
        demand_rps = sum(workloads[wi].rate_rps for wi in members)
        orders = [members,
                  sorted(members, key=lambda wi: (len(ranked.get(wi, [])), -efficiency(wi), workloads[wi].key)),
                  # GPUs to serve all of it on its most GPU-efficient option (per_share is per
                  # unit share of its requests)
                  sorted(members, key=lambda wi: (-(ranked[wi][0].gpus_per_share if ranked.get(wi) else 0.0),
                                                  workloads[wi].key))]
        steps = [[(wi, ranked.get(wi, [])) for wi in order] for order in orders]
        # and (workload, option) pairs, most requests per GPU first: a workload whose best pools
        # are full waits for its next option's turn instead of taking GPUs that other workloads
        # serve more requests with (bench/solver_scale.py's binding fleets: the greedy's silver
        # shed 193.5 -> 191.7 req/s at 300 workloads; at 50, seed 1, the plan's 7.5% -> 7.3%)
        pairs = sorted(((wi, opt) for wi in members for opt in ranked.get(wi, [])),
                       key=lambda p: (-workloads[p[0]].rate_rps / p[1].gpus_per_share, workloads[p[0]].key))
        steps.append([(wi, [opt]) for wi, opt in pairs])
        start_room, start_counts = room.copy(), dict(counts)
        best = None
        for step in steps:
            room[:] = start_room  # in place: ``fit`` and ``add`` hold these
            counts.clear()
            counts.update(start_counts)
            got, kinds = serve(step)
            if best is None or got > best[0] + 1e-9:
                best = (got, kinds, room.copy(), dict(counts))
            if got >= demand_rps * (1.0 - 1e-9):
                break  # the whole tier is served: no order can do better
        _, kind_of, best_room, best_counts = best
        room[:] = best_room
        counts.clear()
        counts.update(best_counts)
        for wi in members:  # then the tier's minimums, before any lower tier is served
            short = (workloads[wi].min_replicas or 0) - sum(
                k for (wj, ci), k in counts.items() if wj == wi and any(o.serving == ci for o in ranked.get(wi, [])))
            for opt in ranked.get(wi, []):
                if short <= 0:
                    break
                if wi in kind_of and opt.kind != kind_of[wi]:
                    continue
                if service and wi in kind_of and not any(counts.get((wi, ci), 0) for ci, _ in opt.per_share):
                    continue
                # the serving part's replicas, with one of each other part where it has none yet
                others = [(ci, 1) for ci, _ in opt.per_share if ci != opt.serving and not counts.get((wi, ci), 0)]
                for k in range(short, 0, -1):
                    if fit(wi, others + [(opt.serving, k)]):
                        add(wi, others + [(opt.serving, k)])
                        kind_of[wi] = opt.kind
                        short -= k
                        break
    return counts
