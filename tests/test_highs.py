"""HiGHS for the fleet MILP (``solver.highs.HighsModel``): nothing on the process's stdout,
incumbents reported as progress, one model solved again with another objective, a start and an
added row, and the LP relaxation without losing integrality.

highspy >= 1.16 prints a banner from C++ on file descriptor 1 when a process constructs its first
``Highs``; the check runs in a fresh interpreter so that this really is the first construction.
"""

import gc
import subprocess
import sys
import weakref

import numpy as np
import pulp

from llmfleet.solver.highs import HighsModel

SCRIPT = r"""
import pulp
from llmfleet import progress
from llmfleet.solver.highs import HighsModel

lines = []
prob = pulp.LpProblem("knapsack", pulp.LpMinimize)
x = [prob.add_variable(f"x{i}", 0, 3, cat=pulp.LpInteger) for i in range(40)]
prob += pulp.lpSum((5 + (i * 7) % 9) * v for i, v in enumerate(x)) <= 211, "weight"
prob += pulp.lpSum((3 + (i * 5) % 7) * v for i, v in enumerate(x)) <= 157, "volume"
model = HighsModel(prob)
model.set_objective(pulp.lpSum(-(7 + (i * 13) % 11) * v for i, v in enumerate(x)))
with progress.reporting(lines.append):
    res = model.solve(60, 0.0, label="test MILP", unit="points")
import sys
print("\n".join(lines), file=sys.stderr)
print("status", res.status, file=sys.stderr)
"""


def test_no_banner_on_stdout_and_incumbents_as_progress():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "", f"solver output reached stdout: {r.stdout[:300]!r}"
    assert "Running HiGHS" not in r.stderr
    assert "status Optimal" in r.stderr
    assert "test MILP: incumbent" in r.stderr and "points" in r.stderr


def _small_model():
    """max 3a + 2b with a + b <= 4.5, a <= 2.5 (a, b integer): the optimum a = 2, b = 2 by hand;
    the LP relaxation a = 2.5, b = 2 (value 11.5)."""
    prob = pulp.LpProblem("small", pulp.LpMinimize)
    a = prob.add_variable("a", 0, None, cat=pulp.LpInteger)
    b = prob.add_variable("b", 0, None, cat=pulp.LpInteger)
    prob += a + b <= 4.5, "sum"
    prob += a <= 2.5, "cap"
    return prob, a, b


def test_reused_model_phases_start_and_relaxation():
    prob, a, b = _small_model()
    model = HighsModel(prob)
    model.set_objective(-3 * a - 2 * b)
    lp = model.solve(10, 0.0, relax=True)
    assert lp.objective == -11.5  # a = 2.5, b = 2
    mip = model.solve(10, 0.0, start=np.array([0.0, 0.0]))
    assert mip.objective == -10.0 and model.value(a, mip.values) == 2 and model.value(b, mip.values) == 2
    # a second phase on the same model: keep 3a + 2b >= 10 and minimise a. By hand: b <= 4 - a
    # (integers within a + b <= 4.5), so 3a + 2(4 - a) = a + 8 >= 10 needs a >= 2
    model.add_upper(-3 * a - 2 * b, -10.0)
    model.set_objective(pulp.LpAffineExpression([(a, 1.0)]))
    second = model.solve(10, 0.0, start=mip.values)
    assert second.objective == 2.0
    model.write_back(second.values)
    assert (a.varValue, b.varValue) == (2.0, 2.0)


def test_fixed_bounds_and_restore():
    prob, a, b = _small_model()
    model = HighsModel(prob)
    model.set_objective(-3 * a - 2 * b)
    col = np.array([model.index["a"]], dtype=np.int32)
    saved = model.bounds(col)
    model.set_bounds(col, np.array([0.0]), np.array([0.0]))
    assert model.solve(10, 0.0).objective == -8.0  # a = 0, b = 4
    model.set_bounds(col, *saved)
    assert model.solve(10, 0.0).objective == -10.0


def test_an_absolute_gap_holds_for_its_own_solve_only():
    # A tier phase stops once within its tie-break's weight of the bound (``abs_gap``); the next
    # phase on the same model must again solve to HiGHS's default absolute gap. By hand, the
    # optimum is -10 (a = b = 2) and the LP bound -11.5, so a gap of 12 accepts any feasible
    # point, even the start at 0, while the default gap accepts only the optimum.
    prob, a, b = _small_model()
    model = HighsModel(prob)
    model.set_objective(-3 * a - 2 * b)
    loose = model.solve(10, 0.0, start=np.array([0.0, 0.0]), abs_gap=12.0)
    assert loose.has_solution and -10.0 <= loose.objective <= 0.0
    assert model.h.getOptionValue("mip_abs_gap")[1] == 12.0
    exact = model.solve(10, 0.0, start=np.array([0.0, 0.0]))
    assert exact.objective == -10.0
    assert model.h.getOptionValue("mip_abs_gap")[1] == 1e-6


def test_a_model_is_freed_as_soon_as_it_is_dropped():
    # The improving-solution callback once held the model through a bound method: a reference
    # cycle (model -> Highs -> callback -> model) that only a full garbage collection frees, so
    # every model of a plan, with its whole PuLP problem, outlived its solve. With collection
    # paused, dropping the last reference must free it at once.
    prob, a, b = _small_model()
    model = HighsModel(prob)
    model.set_objective(-3 * a - 2 * b)
    assert model.solve(10, 0.0).objective == -10.0
    ref = weakref.ref(model)
    was = gc.isenabled()
    gc.disable()
    try:
        del model
        assert ref() is None
    finally:
        if was:
            gc.enable()


def _lp_arrays(model: HighsModel) -> tuple:
    """What HiGHS was given: column names in order, column bounds and integrality, row bounds and
    the row-wise matrix."""
    lp = model.h.getLp()
    return ([v.name for v in model.variables], list(lp.col_lower_), list(lp.col_upper_), list(lp.integrality_),
            list(lp.row_lower_), list(lp.row_upper_), list(lp.a_matrix_.start_), list(lp.a_matrix_.index_),
            list(lp.a_matrix_.value_))


def test_row_problem_gives_highs_what_pulp_constraints_give():
    """Rows added to a ``RowProblem`` with ``add_row`` (no PuLP constraint objects) and the usual
    way (``+=``), interleaved, reach HiGHS exactly as the same rows do as PuLP constraints of a
    plain ``LpProblem``: same row order, bounds, coefficients, and columns sorted by name (the
    variable only in a zero-coefficient term included, as PuLP includes it). The replica-count rows
    the greedy respects are read the same from both."""
    from llmfleet.solver.greedy import count_rows
    from llmfleet.solver.highs import RowProblem

    def build(prob, fast: bool):
        n = {(0, i): prob.add_variable(f"n_0_{i}", 0, None, cat=pulp.LpInteger) for i in range(3)}
        y = prob.add_variable("y", 0, 1)
        z = prob.add_variable("a_zero", 0, 1)

        def row(terms, sense, rhs, name):
            if fast:
                prob.add_row(terms, None if sense == "<=" else rhs, None if sense == ">=" else rhs, name)
            else:
                con = pulp.LpConstraint(pulp.LpAffineExpression(terms), {"<=": -1, ">=": 1, "==": 0}[sense], name, rhs)
                prob.addConstraint(con)

        row([(n[0, 0], 2), (n[0, 1], 4)], "<=", 8, "pool")  # counts only: a greedy row
        prob += n[0, 2] + 3 * y >= 1, "mixed"
        row([(y, 1), (n[0, 1], -5), (z, 0)], "<=", 0, "useful")
        row([(n[0, 2], 1), (n[0, 2], 7)], "==", 2, "twice")  # the last coefficient counts, as in PuLP
        prob += 4 * n[0, 1] + n[0, 2] <= 9, "pool2"  # counts only, added the usual way
        return n

    plain, fast = pulp.LpProblem("plain", pulp.LpMinimize), RowProblem("fast", pulp.LpMinimize)
    n_plain, n_fast = build(plain, False), build(fast, True)
    assert _lp_arrays(HighsModel(fast)) == _lp_arrays(HighsModel(plain))
    names = _lp_arrays(HighsModel(fast))[0]
    assert names == sorted(names) and "a_zero" in names
    assert count_rows(fast, n_fast) == count_rows(plain, n_plain) == [
        ({(0, 0): 2.0, (0, 1): 4.0}, 8.0), ({(0, 1): 4.0, (0, 2): 1.0}, 9.0)]
    assert fast.row_names == ["pool", "mixed", "useful", "twice", "pool2"]


def test_row_problem_refuses_an_infinite_bound():
    from llmfleet.solver.highs import RowProblem

    prob = RowProblem("bad")
    x = prob.add_variable("x", 0, 1)
    for lower, upper in ((None, float("inf")), (float("nan"), None)):
        try:
            prob.add_row([(x, 1)], lower, upper, "broken")
        except ValueError as err:
            assert "broken" in str(err)
        else:
            raise AssertionError("a non-finite bound was accepted")
