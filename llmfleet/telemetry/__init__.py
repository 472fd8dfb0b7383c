"""Live telemetry from Prometheus: what each workload's pods report (vLLM V1, the endpoint
picker, DCGM), read as values or UNKNOWN with a reason, never as a silent 0 (DESIGN.md §8).

Modules: ``metrics`` (names, types, buckets, target labels), ``promql`` (the queries),
``lengths`` (vLLM length histograms on the planner's buckets), ``reading`` (the result type),
``client`` (``TelemetryClient``: one snapshot per re-plan).
"""
