"""HiGHS through PuLP, without solver chatter on the process's stdout.

highspy prints a two-line banner ("Running HiGHS 1.16.0 ... Copyright ...") from C++ straight to
file descriptor 1 when the first ``Highs`` object of a process is constructed, before any option
(``output_flag``) can be set. Python-level redirection (``contextlib.redirect_stdout``) cannot see
it, so that one construction runs with fd 1 pointed at a temporary file; the banner is then logged
at DEBUG. Every later construction is silent and runs with ``output_flag = False`` as PuLP sets it.

Improving MIP solutions are reported through ``llmfleet.progress`` with the incumbent, the dual
bound and the gap as HiGHS computes them (``cbMipImprovingSolution``).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time

import highspy
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


class QuietHiGHS(pulp.HiGHS):
    """``pulp.HiGHS`` (highspy API) that keeps stdout clean and reports incumbents as progress.

    Args: as ``pulp.HiGHS`` (``mip``, ``msg``, ``timeLimit``, ``gapRel``, ``threads``, ...), plus
        label: a few words naming the solve in progress lines (e.g. "fleet MILP");
        unit: the objective's unit in those lines ("$/h", or "req/s shed" for a tier phase).
    """

    def __init__(self, *args, label: str = "MILP", unit: str = "$/h", **kwargs):
        super().__init__(*args, **kwargs)
        self.label = label
        self.unit = unit

    def createAndConfigureSolver(self, lp):  # noqa: N802 (PuLP's method name)
        _quiet_first_construction()
        super().createAndConfigureSolver(lp)
        t0 = time.perf_counter()
        label, unit = self.label, self.unit

        def on_improving(event) -> None:
            d = event.data_out
            gap = d.mip_gap
            gap_text = f", gap {gap:.2%}" if gap == gap and gap < 1e30 else ""
            bound = d.mip_dual_bound
            bound_text = f", bound {bound:.4g}" if abs(bound) < 1e30 else ""
            progress.report(f"{label}: incumbent {d.objective_function_value:.4g} {unit}{bound_text}{gap_text} "
                            f"after {time.perf_counter() - t0:.1f}s")

        # the callback API (``cbMipImprovingSolution``) came with highspy 1.8; older ones solve
        # without incumbent reports
        if hasattr(lp.solverModel, "cbMipImprovingSolution"):
            lp.solverModel.cbMipImprovingSolution.subscribe(on_improving)
