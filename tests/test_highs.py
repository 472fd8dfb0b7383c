"""HiGHS through PuLP: nothing on the process's stdout, incumbents reported as progress.

highspy >= 1.16 prints a banner from C++ on file descriptor 1 when a process constructs its first
``Highs``; the check runs in a fresh interpreter so that this really is the first construction.
"""

import subprocess
import sys

SCRIPT = r"""
import pulp
from llmfleet import progress
from llmfleet.solver.highs import QuietHiGHS

lines = []
prob = pulp.LpProblem("knapsack", pulp.LpMaximize)
x = [pulp.LpVariable(f"x{i}", 0, 3, cat=pulp.LpInteger) for i in range(40)]
prob += pulp.lpSum((7 + (i * 13) % 11) * v for i, v in enumerate(x))
prob += pulp.lpSum((5 + (i * 7) % 9) * v for i, v in enumerate(x)) <= 211
prob += pulp.lpSum((3 + (i * 5) % 7) * v for i, v in enumerate(x)) <= 157
with progress.reporting(lines.append):
    prob.solve(QuietHiGHS(msg=False, label="test MILP", unit="points"))
import sys
print("\n".join(lines), file=sys.stderr)
print("status", pulp.LpStatus[prob.status], file=sys.stderr)
"""


def test_no_banner_on_stdout_and_incumbents_as_progress():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "", f"solver output reached stdout: {r.stdout[:300]!r}"
    assert "Running HiGHS" not in r.stderr
    assert "status Optimal" in r.stderr
    assert "test MILP: incumbent" in r.stderr and "points" in r.stderr
