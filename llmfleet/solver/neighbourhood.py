"""Large-neighbourhood search for the fleet MILP's phases (``solver.milp``).

Where GPUs bind, a phase of the whole model (tens of thousands of columns) given the second or two
that a 10-s limit leaves it often ends where it started, at the greedy plan: HiGHS spends the time
on the root LP and its cuts. The same model with every replica count fixed except those of two
pools is small once HiGHS's presolve has removed the fixed part: at 50 workloads most solve in
0.1-0.2 s. Searching such neighbourhoods one after another from the incumbent (large-neighbourhood
search, Shaw, CP 1998; pools as the neighbourhoods, since pool capacity is what couples the
workloads) moves replicas between two pools at a time: a higher tier's group to another pool, to
free the GPUs a lower tier can use there. It finds no bound: the phase's HiGHS solve that follows
proves what it can, from the better incumbent.

Neighbourhoods (``milp._search_space``): each workload of the phase's tier that falls short, with
all its pools free (a workload serves one kind of group, so serving more can take a whole other
plan of it), in turn with the pool pairs, the pools where those workloads fall short first; a
pair that holds every pool is the whole model and is left out.

Measured on ``bench/solver_scale.py``'s binding fleets (its fleets and scarce pools, solved by
``milp.solve`` directly; one run each on one machine; shed % of demand gold / silver / bronze,
before -> after this search and ``milp._top_up``):
- 50 workloads, 10-s limit: seed 0 1.1/13.2/98.6 -> 0.0/10.5/100.0; seed 1 0.0/8.3/84.6 ->
  0.0/7.5/76.2; seed 2 0.0/7.9/67.2 -> 0.0/7.9/64.1.
- 50 workloads, 30-s limit: seed 0 0.0/9.7/89.9 -> 0.0/8.5/88.0; seed 1 0.0/8.3/84.6 ->
  0.0/6.3/74.7; seed 2 0.0/7.9/67.2 -> 0.0/6.1/37.3 (the whole-model phases found nothing better
  than at 10 s in seeds 1 and 2).
- 300 workloads, 60-s limit: 0.0/30.1/100.0 -> 0.0/29.5/100.0. One pool pair given 20 s alone
  lowers silver's shed from 192 to 160 req/s there (gold held in full): at this size the search
  is short of time.
"""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass

import numpy as np

from llmfleet.solver.highs import HighsModel

SUB_LIMIT_S = 0.3
"""the shortest time limit of one neighbourhood's solve, s (``SUB_PER_SEARCH`` gives longer ones a
longer search): most take 0.1-0.2 s at 50 workloads x 10 pools (bench/solver_scale.py); one cut
short keeps its best solution"""

SUB_PER_SEARCH = 4
"""a neighbourhood's solve may take at least 1/SUB_PER_SEARCH of the search's time: at 300
workloads x 10 pools (bench/solver_scale.py) 0.3 s was too short for HiGHS to improve any
neighbourhood (19 solved, none improved, in 6.8 s)"""

@dataclass
class SearchResult:
    """What ``improve`` did: the best solution (shape (columns,)), the objective at the start and
    at the end, how many neighbourhoods it solved and how many of them improved it, and its
    wall-clock seconds."""

    values: np.ndarray
    start_objective: float
    objective: float
    solved: int
    improved: int
    seconds: float


def pool_pairs(columns: np.ndarray, pool_of_column: list[str], weight: dict[str, float] | None = None,
               seed: int = 0) -> list[np.ndarray]:
    """The neighbourhoods: for each pair of pools, the ``columns`` (replica counts, int indices) of
    those two pools. Pairs with more ``weight`` (pool -> how much of the objective could gain
    there, e.g. the shed req/s of the workloads that have a configuration in it) come first; among
    equal weights, a fixed pseudo-random order (``seed``), so that a short search does not always
    try the same pools first, yet two runs try them in the same order. One pool alone is one
    neighbourhood. ``pool_of_column``: the pool of each column of ``columns``, same length."""
    pools = sorted(set(pool_of_column))
    by_pool = {p: columns[[i for i, q in enumerate(pool_of_column) if q == p]] for p in pools}
    pairs = list(itertools.combinations(pools, 2)) or [(p,) for p in pools]
    random.Random(seed).shuffle(pairs)
    weight = weight or {}
    pairs.sort(key=lambda pair: -sum(weight.get(p, 0.0) for p in pair))
    return [np.concatenate([by_pool[p] for p in pair]).astype(np.int32) for pair in pairs]


def improve(model: HighsModel, objective, start: np.ndarray, until: float, columns: np.ndarray,
            neighbourhoods: list[np.ndarray], label: str, gap: float = 1e-4, abs_gap: float = 0.0) -> SearchResult:
    """Lower ``objective`` (a PuLP expression; the model's objective must already be set to it, or
    to it plus a tie-break) from the feasible ``start`` until ``until`` (``time.perf_counter``),
    by solving one neighbourhood at a time: the ``columns`` not in it fixed at the incumbent's
    values, those in it at their bounds as they stand. Passes over the neighbourhoods repeat while
    one of them improves the incumbent and time remains. ``gap``, ``abs_gap``: each
    neighbourhood's solve stops within them (``HighsModel.solve``); the phase's own, since a
    tighter one only spends the search's time proving what the phase does not ask (on a
    9-workload shortage, 1e-4 with a tie-break term made every sub-solve run to its limit).

    The bounds of ``columns`` are as they were when this returns. Returns a ``SearchResult``; its
    ``values`` are ``start`` when nothing better was found.
    """
    t0 = time.perf_counter()
    # a larger model takes longer to presolve in every sub-problem: at least 1/SUB_PER_SEARCH of the search
    sub_limit = max(SUB_LIMIT_S, (until - t0) / SUB_PER_SEARCH)
    lower, upper = model.bounds(columns)
    best, best_value = start, model.value(objective, start)
    first = best_value
    solved = improved = 0
    position = {int(c): k for k, c in enumerate(columns)}
    try:
        while True:
            better = False
            for free in neighbourhoods:
                left = until - time.perf_counter()
                if left <= 0.02 or best_value <= 1e-9:
                    break
                fixed = np.ones(len(columns), dtype=bool)
                fixed[[position[int(c)] for c in free]] = False
                held = best[columns[fixed]].round()
                model.set_bounds(columns[fixed], held, held)
                res = model.solve(min(sub_limit, left), gap, best, label=label, abs_gap=abs_gap)
                model.set_bounds(columns, lower, upper)
                solved += 1
                if res.has_solution:
                    value = model.value(objective, res.values)
                    if value < best_value - max(1e-6, 1e-6 * best_value):
                        best, best_value, better = res.values, value, True
                        improved += 1
            if not better or until - time.perf_counter() <= 0.02 or best_value <= 1e-9:
                break
    finally:
        model.set_bounds(columns, lower, upper)
    return SearchResult(best, first, best_value, solved, improved, time.perf_counter() - t0)
