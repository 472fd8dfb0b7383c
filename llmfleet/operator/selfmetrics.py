"""The operator's own ``/metrics`` (prometheus_client): how long reconciles take, what the plan
costs, how old the telemetry is, and every re-plan decision with its reason.

Series (all prefixed ``llmfleet_``):
    reconcile_duration_seconds (histogram)       one FleetPlanner.reconcile, s
    reconciles_total{result}  (counter)          ok | error
    plan_cost_usd_per_hour (gauge)               cost of the plan in force, USD/h
    plan_gap_ratio (gauge)                       relative MIP gap of that plan (0 = proven optimal)
    plan_solves_total (counter)                  fresh solves
    telemetry_age_seconds{namespace,workload}    age of the newest sample read for the workload, s
                                                 (NaN when unknown)
    demand_rps{namespace,workload,kind}          kind = observed | forecast | planned, req/s
    decisions_total{namespace,workload,action,reason}
                                                 stability decisions per tick (Hold/ReplanUp/
                                                 ReplanDown with the CamelCase reason)

The series live in their own registry (``REGISTRY``), so importing the operator in a test or in
the CLI adds nothing to prometheus_client's global one.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

DEFAULT_METRICS_PORT = 9102
"""port of the operator's /metrics (9102: unused by the operator's other endpoints, 8080 liveness;
the node power agent uses 9402)"""

REGISTRY = CollectorRegistry()

RECONCILE_SECONDS = Histogram(
    "llmfleet_reconcile_duration_seconds", "Duration of one fleet reconcile, s.", registry=REGISTRY,
    # a reconcile is API round trips plus, on a fresh solve, the MILP (time limit 60 s by default)
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0))
RECONCILES = Counter("llmfleet_reconciles", "Fleet reconciles by result (ok or error).", ["result"],
                     registry=REGISTRY)
PLAN_COST = Gauge("llmfleet_plan_cost_usd_per_hour", "Cost of the plan in force, USD per hour.", registry=REGISTRY)
PLAN_GAP = Gauge("llmfleet_plan_gap_ratio", "Relative MIP gap of the plan in force (0: proven optimal).",
                 registry=REGISTRY)
SOLVES = Counter("llmfleet_plan_solves", "Fresh solves of the fleet plan.", registry=REGISTRY)
TELEMETRY_AGE = Gauge("llmfleet_telemetry_age_seconds",
                      "Age of the newest telemetry sample of a workload, s (NaN when unknown).",
                      ["namespace", "workload"], registry=REGISTRY)
DEMAND = Gauge("llmfleet_demand_rps", "Demand of a workload, req/s: observed, forecast, or planned for.",
               ["namespace", "workload", "kind"], registry=REGISTRY)
DECISIONS = Counter("llmfleet_decisions", "Re-plan decisions of the stability rules, by action and reason.",
                    ["namespace", "workload", "action", "reason"], registry=REGISTRY)


def serve(port: int, addr: str = "0.0.0.0") -> bool:
    """Serve ``/metrics`` on ``port`` (0: off). Returns whether it serves; a port in use is logged,
    not fatal (the operator's job is the fleet, not its own metrics)."""
    if port <= 0:
        return False
    try:
        start_http_server(port, addr=addr, registry=REGISTRY)
    except OSError as err:
        log.error("cannot serve /metrics on port %d: %s", port, err)
        return False
    log.info("serving /metrics on %s:%d", addr, port)
    return True
