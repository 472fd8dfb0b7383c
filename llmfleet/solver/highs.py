"""HiGHS for the fleet MILP: one model reused across solves, without solver chatter on stdout.

PuLP states the model (``solver.milp``: its variables and objectives as PuLP expressions, its bulk
rows kept as plain lists by ``RowProblem``); ``HighsModel`` hands it to HiGHS once, through
highspy, and solves it as often as the lexicographic phases need, each from the last phase's
solution.

highspy prints a two-line banner ("Running HiGHS 1.16.0 ... Copyright ...") from C++ straight to
file descriptor 1 when the first ``Highs`` object of a process is constructed, before any option
(``output_flag``) can be set. Python-level redirection (``contextlib.redirect_stdout``) cannot see
it, so that one construction runs with fd 1 pointed at a temporary file; the banner is then logged
at DEBUG. Every later construction is silent and runs with ``output_flag = False``.

Improving MIP solutions are reported through ``llmfleet.progress`` with the incumbent, the dual
bound and the gap as HiGHS computes them (``cbMipImprovingSolution``).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Iterable

import highspy
import numpy as np
import pulp

from llmfleet import progress

log = logging.getLogger(__name__)

_banner_lock = threading.Lock()
_banner_done = False


def _quiet_first_construction() -> None:
    """Construct one ``Highs`` with fd 1 redirected, once per process, so its banner goes to the log."""
    global _banner_done
    with _banner_lock:
        if _banner_done:
            return
        sys.stdout.flush()
        saved = os.dup(1)
        with tempfile.TemporaryFile(mode="w+b") as sink:
            os.dup2(sink.fileno(), 1)
            try:
                highspy.Highs()
            finally:
                os.dup2(saved, 1)
                os.close(saved)
            sink.seek(0)
            banner = sink.read().decode("utf-8", "replace").strip()
        if banner:
            log.debug("HiGHS banner (kept off stdout): %s", banner.replace("\n", " | "))
        _banner_done = True


@dataclass
class SolveResult:
    """What one ``HighsModel.solve`` found.

    Attributes:
        status: HiGHS's model status in words ("Optimal", "Time limit reached", "Infeasible", ...).
        values: shape (columns,), the best solution found (None: none found).
        objective: its objective value (None: none found), in the objective's unit.
        dual_bound: HiGHS's proven bound on the objective (None: none proven, e.g. stopped before
            the root LP was solved, or an LP solve).
        gap: (objective - bound) / objective as HiGHS reports it (None without both).
        seconds: wall-clock time of the solve, s.
    """

    status: str
    values: np.ndarray | None
    objective: float | None
    dual_bound: float | None
    gap: float | None
    seconds: float

    @property
    def has_solution(self) -> bool:
        return self.values is not None


def _improving_reporter(model: "weakref.ref[HighsModel]"):
    """HiGHS's improving-solution callback for ``model``, through a weak reference: a bound method
    would make the model and its ``Highs`` a reference cycle, which only Python's full garbage
    collection frees, so every model a plan builds (the whole PuLP problem with it) outlived its
    solve, and those collections took a fifth of a re-plan's time at 100 workloads."""
    def report(event) -> None:
        target = model()
        if target is not None:
            target._on_improving(event)
    return report


class RowProblem(pulp.LpProblem):
    """A PuLP problem that also keeps its rows as HiGHS takes them, in the order they are added
    (``row_terms``: [(variable, coefficient), ...] per row; ``row_lower``/``row_upper``: bounds,
    None where open), and takes rows without making PuLP constraint objects (``add_row``).

    The fleet MILP has tens of thousands of small rows (50 workloads x 10 pools: 52,000); as PuLP
    constraints (an ``LpAffineExpression`` and an ``LpConstraint`` each, registered by name) they
    took most of the model's build, and reading them back for HiGHS most of ``HighsModel``'s. Rows
    added the usual way (``prob += expression <= bound, name``) are PuLP constraints as before,
    and kept here too, so that both kinds keep their order. ``HighsModel`` reads the rows from
    here; the columns are the variables of those rows, sorted by name as
    ``pulp.LpProblem.variables`` sorts them.
    """

    def __init__(self, name: str = "NoName", sense: int = pulp.LpMinimize):
        super().__init__(name, sense)
        self.row_terms: list = []
        self.row_lower: list = []
        self.row_upper: list = []
        self.row_names: list[str] = []

    def addConstraint(self, constraint: pulp.LpConstraint, name=None):
        super().addConstraint(constraint, name)
        self.row_names.append(constraint.name)
        self.row_terms.append(list(constraint.items()))
        self.row_lower.append(constraint.getLb())
        self.row_upper.append(constraint.getUb())

    def add_row(self, terms: list, lower: float | None, upper: float | None, name: str) -> None:
        """Add the row ``lower`` <= Σ coefficient x variable <= ``upper`` (None: open on that
        side) named ``name`` (``row_names``: for reading the model, not checked for uniqueness);
        ``terms`` [(variable, coefficient)], a variable given twice counts with its last
        coefficient, as in ``pulp.LpAffineExpression``.

        Raises:
            ValueError: a bound is NaN or infinite (PuLP refuses such a right-hand side too).
        """
        if (lower is not None and not math.isfinite(lower)) or (upper is not None and not math.isfinite(upper)):
            raise ValueError(f"row {name}: bounds must be finite, got {lower}, {upper}")
        self.row_names.append(name)
        self.row_terms.append(list(dict(terms).items()))
        self.row_lower.append(lower)
        self.row_upper.append(upper)

    def columns(self) -> list[pulp.LpVariable]:
        """The variables of the rows and of the objective, sorted by name (the columns HiGHS gets)."""
        seen: dict[str, pulp.LpVariable] = {}
        if self.objective:
            seen.update((v.name, v) for v in self.objective)
        for terms in self.row_terms:
            for v, _ in terms:
                seen[v.name] = v
        return [seen[name] for name in sorted(seen)]

    def rows(self):
        """(terms, lower, upper) of every row, in the order added (``add_row``'s form)."""
        return zip(self.row_terms, self.row_lower, self.row_upper)


def problem_rows(prob: pulp.LpProblem) -> Iterable[tuple[Iterable[tuple[pulp.LpVariable, float]], float | None,
                                                          float | None]]:
    """(terms, lower, upper) of every row of ``prob``, in the order they were added: terms as
    (variable, coefficient) pairs, bounds in the row's units, None where open. A ``RowProblem``'s
    row lists, or a plain problem's PuLP constraints. Raises nothing."""
    if isinstance(prob, RowProblem):
        return prob.rows()
    return ((con.items(), con.getLb(), con.getUb()) for con in prob.constraints())


class HighsModel:
    """One HiGHS model of a PuLP problem, built once and reused across solves.

    The fleet MILP is solved in lexicographic phases (one objective per priority tier, then the
    cost), each starting from the previous phase's solution. PuLP rebuilds the solver model on
    every ``solve`` (one ``addCol``/``addRow`` per element, seconds at fleet scale) and passes no
    start to HiGHS through highspy; this class passes the matrix once (``Highs.passModel``, row-wise
    arrays) and changes only the objective, bounds and added rows between solves, with the
    incumbent given as a start (``Highs.setSolution``).

    Args:
        prob: the PuLP problem (variables, constraints); its objective is not used.
        threads: HiGHS threads (1: the planner shares its machine with the operator).

    Raises:
        RuntimeError: HiGHS rejects the model (a malformed bound or coefficient).
    """

    def __init__(self, prob: pulp.LpProblem, threads: int = 1):
        _quiet_first_construction()
        self.prob = prob
        inf = highspy.kHighsInf
        self.variables = prob.columns() if isinstance(prob, RowProblem) else prob.variables()
        rows = problem_rows(prob)
        self.index = {v.name: i for i, v in enumerate(self.variables)}
        lower = np.array([-inf if v.lowBound is None else v.lowBound for v in self.variables], dtype=float)
        upper = np.array([inf if v.upBound is None else v.upBound for v in self.variables], dtype=float)
        self.integer = np.array([v.cat == pulp.LpInteger for v in self.variables], dtype=bool)
        starts, cols, vals, row_lo, row_hi = [0], [], [], [], []
        index = self.index
        for terms, lo, hi in rows:
            for var, a in terms:
                if a:
                    cols.append(index[var.name])
                    vals.append(a)
            starts.append(len(cols))
            row_lo.append(-inf if lo is None else lo)
            row_hi.append(inf if hi is None else hi)
        lp = highspy.HighsLp()
        lp.num_col_ = len(self.variables)
        lp.num_row_ = len(row_lo)
        lp.col_cost_ = np.zeros(len(self.variables))
        lp.col_lower_ = lower
        lp.col_upper_ = upper
        lp.row_lower_ = np.array(row_lo, dtype=float)
        lp.row_upper_ = np.array(row_hi, dtype=float)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = np.array(starts, dtype=np.int32)
        lp.a_matrix_.index_ = np.array(cols, dtype=np.int32)
        lp.a_matrix_.value_ = np.array(vals, dtype=float)
        lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                           for i in self.integer]
        self.h = highspy.Highs()
        self._abs_gap_default = float(self.h.getOptionValue("mip_abs_gap")[1])  # restored after an abs_gap solve
        self.h.setOptionValue("output_flag", False)
        self.h.setOptionValue("threads", threads)
        if self.h.passModel(lp) == highspy.HighsStatus.kError:
            raise RuntimeError("HiGHS rejected the fleet model")
        self.label, self.unit = "MILP", "$/h"
        self._t0 = time.perf_counter()
        self.memo: dict = {}
        """what callers work out once per model from its columns (``milp._count_index``)"""
        if hasattr(self.h, "cbMipImprovingSolution"):
            self.h.cbMipImprovingSolution.subscribe(_improving_reporter(weakref.ref(self)))

    def _on_improving(self, event) -> None:
        d = event.data_out
        gap_text = f", gap {d.mip_gap:.2%}" if d.mip_gap == d.mip_gap and d.mip_gap < 1e30 else ""
        bound_text = f", bound {d.mip_dual_bound:.4g}" if abs(d.mip_dual_bound) < 1e30 else ""
        progress.report(f"{self.label}: incumbent {d.objective_function_value:.4g} {self.unit}{bound_text}{gap_text} "
                        f"after {time.perf_counter() - self._t0:.1f}s")

    @property
    def num_columns(self) -> int:
        return len(self.variables)

    def coefficients(self, expr: pulp.LpAffineExpression) -> tuple[np.ndarray, np.ndarray, float]:
        """(column indices, coefficients, constant) of a linear expression (or one variable) over
        the model's variables."""
        if not isinstance(expr, pulp.LpAffineExpression):
            expr = pulp.LpAffineExpression(expr)
        idx = np.array([self.index[v.name] for v in expr], dtype=np.int32)
        val = np.array([expr[v] for v in expr], dtype=float)
        return idx, val, float(expr.constant)

    def value(self, expr: pulp.LpAffineExpression, values: np.ndarray) -> float:
        """``expr`` at the solution ``values`` (shape (columns,))."""
        idx, val, const = self.coefficients(expr)
        return float(values[idx] @ val) + const if len(idx) else const

    def set_objective(self, expr: pulp.LpAffineExpression) -> None:
        """Minimise ``expr`` in the following solves."""
        idx, val, const = self.coefficients(expr)
        cost = np.zeros(self.num_columns)
        np.add.at(cost, idx, val)
        self.h.changeColsCost(self.num_columns, np.arange(self.num_columns, dtype=np.int32), cost)
        self.h.changeObjectiveOffset(const)

    def add_upper(self, expr: pulp.LpAffineExpression, upper: float) -> None:
        """Add the row ``expr <= upper``."""
        idx, val, const = self.coefficients(expr)
        self.h.addRow(-highspy.kHighsInf, upper - const, len(idx), idx, val)

    def bounds(self, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) bounds of ``columns`` as they stand now."""
        lp = self.h.getLp()
        return np.asarray(lp.col_lower_)[columns].copy(), np.asarray(lp.col_upper_)[columns].copy()

    def set_bounds(self, columns: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        """Change the bounds of ``columns`` (int indices) to ``lower``/``upper`` (same shape)."""
        columns = np.asarray(columns, dtype=np.int32)
        if len(columns):
            self.h.changeColsBounds(len(columns), columns, np.asarray(lower, dtype=float), np.asarray(upper, dtype=float))

    def solve(self, time_limit_s: float, gap: float, start: np.ndarray | None = None, relax: bool = False,
              label: str = "fleet MILP", unit: str = "$/h", abs_gap: float = 0.0) -> SolveResult:
        """Solve for the current objective within ``time_limit_s`` (wall clock, s) to relative
        ``gap``, from the feasible ``start`` (shape (columns,); HiGHS checks it and ignores an
        infeasible one); ``relax``: the LP relaxation (integrality dropped for this solve only).
        ``abs_gap``: HiGHS also stops once the incumbent is within this much of the bound, in the
        objective's units (0: HiGHS's own default, read from the library when the model is built)."""
        self.label, self.unit, self._t0 = label, unit, time.perf_counter()
        if self.num_columns == 0:  # nothing to decide (HiGHS reports an empty model without a solution)
            offset = float(self.h.getObjectiveOffset()[1])
            return SolveResult("Optimal", np.zeros(0), offset, offset, 0.0, 0.0)
        self.h.setOptionValue("time_limit", max(float(time_limit_s), 0.01))
        self.h.setOptionValue("mip_rel_gap", float(gap))
        self.h.setOptionValue("mip_abs_gap", float(abs_gap) if abs_gap > 0 else self._abs_gap_default)
        cols = np.arange(self.num_columns, dtype=np.int32)
        if relax:
            self.h.changeColsIntegrality(self.num_columns, cols, np.zeros(self.num_columns, dtype=np.uint8))
        elif start is not None:
            sol = highspy.HighsSolution()
            sol.col_value = np.asarray(start, dtype=float)
            sol.value_valid = True
            self.h.setSolution(sol)
        self.h.run()
        seconds = time.perf_counter() - self._t0
        status = self.h.modelStatusToString(self.h.getModelStatus())
        info = self.h.getInfo()
        if info.primal_solution_status != 2:  # kSolutionStatusFeasible
            result = SolveResult(status, None, None, None, None, seconds)
        else:
            values = np.asarray(self.h.getSolution().col_value, dtype=float).copy()
            bound = None if relax or abs(info.mip_dual_bound) >= 1e30 else float(info.mip_dual_bound)
            gap_now = None if relax or info.mip_gap != info.mip_gap or info.mip_gap >= 1e30 else float(info.mip_gap)
            result = SolveResult(status, values, float(info.objective_function_value), bound, gap_now, seconds)
        if relax:  # after reading the results: a model change clears HiGHS's status and solution
            self.h.changeColsIntegrality(self.num_columns, cols, self.integer.astype(np.uint8))
        return result

    def write_back(self, values: np.ndarray) -> None:
        """Put a solution into the PuLP variables (``varValue``) and mark the problem solved."""
        for v, x in zip(self.variables, values):
            v.varValue = float(round(x)) if v.cat == pulp.LpInteger else float(x)
        self.prob.status, self.prob.sol_status = pulp.LpStatusOptimal, pulp.LpSolutionIntegerFeasible
