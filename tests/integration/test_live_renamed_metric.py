"""A metric the arrival estimate needs is renamed on every pod while demand falls (issue 16,
scenario (d): "a renamed or missing metric: a clear condition and no action"), end to end: the
real control plane, the operator process with ``--prometheus-url``, a real Prometheus scraping
the emulated vLLM endpoints (fixtures and settings of test_live_telemetry.py).

Without a router counter, the operator estimates arrivals from vLLM alone: completions plus the
change in requests running and waiting over the window (``promql.vllm_arrival_rate``). A new vLLM
release that renames ``vllm:num_requests_waiting`` (here to ``vllm:num_requests_waiting_v2``,
each pod restarted into it, as an upgrade does) leaves that estimate without one of its inputs.
Read as 0, or dropped from the sum, the missing gauge would let the fall in demand that happens at
the same moment (9 -> 1 req/s) through as a scale-down. What must happen instead: the workload's
``TelemetryStale`` condition is True with reason ``MissingSeries`` and a message naming the
missing metric, every re-plan tick holds (``llmfleet_decisions_total{action="Hold",
reason="TelemetryUnknown"}``), and no replica goes away for longer than the scale-down
stabilisation and cooldown plus two re-plan intervals. Then the old name is restored on every pod
(the control that the test can fail): the fall is seen and the fleet scales down.
"""

from __future__ import annotations

import time

from llmfleet.telemetry import metrics as m

from . import test_live_telemetry as live
from .conftest import wait_until
from .test_live_telemetry import INTERVAL_S, NAME, NS, STABILISE_S, decisions, telemetry_condition

prom, live_operator = live.prom, live.live_operator  # the fixtures, shared with the other live scenarios

RENAMED = m.VLLM_WAITING  # vllm:num_requests_waiting: a term of the vLLM-only arrival estimate
NEW_NAME = RENAMED + "_v2"


def _restart_all(fleet, renames: dict[str, str]) -> int:
    """Restart every emulated pod exposing its metrics under ``renames``; the number restarted.
    Under the fleet's lock (no pod added or removed meanwhile) and each pod's own (no request
    recorded half into the old registry and half into the new one)."""
    with fleet._lock:
        pods = list(fleet.pods.values())
        for pod in pods:
            with pod._lock:
                pod.renames = dict(renames)
                pod.restart()
    return len(pods)


def test_renamed_metric_while_demand_falls_holds_the_fleet_with_a_clear_condition(cluster, prom, live_operator):
    op, fleet = live_operator
    high, unknown_before = live.settle_at_9_rps_with_history(cluster, op, fleet)

    # the upgrade: every pod restarts exposing the waiting gauge under a new name, and demand
    # falls at the same moment, so reading the missing gauge as 0 (or low) would scale down
    log_from = len(op.log().splitlines())  # the log says MissingSeries at start-up too (no pod yet)
    t_ren = time.monotonic()
    assert _restart_all(fleet, {RENAMED: NEW_NAME}) == high
    fleet.rate_rps = 1.0
    window_s = 2 * STABILISE_S + 2 * INTERVAL_S  # beyond stabilisation + cooldown + two ticks
    stale = wait_until(lambda: (c := telemetry_condition(cluster)) and c["status"] == "True"
                       and c["reason"] == "MissingSeries" and c, 30, "TelemetryStale=True, MissingSeries")
    t_stale = time.monotonic() - t_ren
    seen = []  # (status, reason) of the condition every 2 s from then to the end of the window
    while time.monotonic() - t_ren < window_s:
        c = telemetry_condition(cluster)
        seen.append((c["status"], c["reason"]) if c else None)
        time.sleep(2.0)
    down = fleet.decreases(t_ren)
    changes = fleet.changes(t_ren)
    held = decisions(op.metrics_url).get(("Hold", "TelemetryUnknown"), 0) - unknown_before
    last = telemetry_condition(cluster)
    wl = cluster.workload(NAME, NS)["status"]

    # the fix: the old name again (a rollback, or the scrape config's relabelling taught the new
    # name); the fall in demand is now seen and, after the stabilisation window, acted on
    t_fix = time.monotonic()
    assert _restart_all(fleet, {}) == high
    wait_until(lambda: fleet.current() < high, 120, "a scale-down once the metric is back", interval_s=1.0)
    fixed_s = time.monotonic() - t_fix
    low = fleet.current()
    fresh = wait_until(lambda: (c := telemetry_condition(cluster)) and c["status"] == "False" and c, 30,
                       "TelemetryStale=False")
    log_lines = [ln for ln in op.log().splitlines()[log_from:]
                 if "Hold (TelemetryUnknown)" in ln and "MissingSeries" in ln]

    print(f"renamed {RENAMED} -> {NEW_NAME} for {t_fix - t_ren:.0f}s with demand 9 -> 1 req/s: replicas "
          f"{high} -> {changes[-1][1] if changes else high}, scale-downs {len(down)}, replica changes {len(changes)}; "
          f"TelemetryStale after {t_stale:.1f}s: {stale['reason']}: {stale['message']}; conditions seen {len(seen)} "
          f"{sorted(set(seen), key=str)}; observed {wl.get('observedDemandRps')} req/s; Hold/TelemetryUnknown "
          f"decisions {held:.0f}; after the fix: scale-down {high} -> {low} in {fixed_s:.1f}s, "
          f"TelemetryStale {fresh['reason']}: {fresh['message']}")
    assert down == [] and changes == []
    assert stale["reason"] == "MissingSeries" and RENAMED in stale["message"]
    assert "nothing scales down" in stale["message"]
    assert last["status"] == "True" and last["reason"] == "MissingSeries" and RENAMED in last["message"]
    assert seen and all(s == ("True", "MissingSeries") for s in seen)  # clear, and it stays so
    assert wl.get("observedDemandRps") is None  # unknown, not 0
    assert held >= 3  # the ticks ran and held
    assert log_lines  # the operator's log says why it holds (once, when its cause changes)
    assert low < high
