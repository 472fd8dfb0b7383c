"""Re-planning against the running plan: what starting and stopping replicas cost (issue 15 item 2).

A running fleet must not be reshuffled because one workload moved. So a re-plan knows the running
plan (``llmfleet plan --current PLAN.json``, the ``-o json`` of an earlier plan) and pays, in its
objective, for every replica it starts or stops:

- starting a replica costs the GPU time until it serves: its weights read from storage, each GPU
  of the TP group reading its shard in parallel at ``STORAGE_BYTES_PER_S``, plus ``ENGINE_START_S``;
- stopping one costs its drain: the in-flight requests finish first, about one request's life
  (TTFT + TPOT x the mean output length at the SLO targets).

Both are one-off GPU time, in USD at the replica's price; the objective spreads them over the
re-plan interval (``FleetPolicy.spec.replanIntervalSeconds``), at least the 300 s a change stands
before a scale-down may undo it (``problem.MIN_CHURN_HORIZON_S``): a move that saves less per
hour, over that time, than it costs is not made. Among equal-cost plans the running one wins.

Sources: ``STORAGE_BYTES_PER_S`` from ServerlessLLM (Fu et al., OSDI 2024): LLaMA-2-70B (about
130 GB) takes 84 s to load with Safetensors from local SSD, about 1.6 GB/s. ``ENGINE_START_S`` is
a design figure for vLLM V1's start after the weights (torch.compile and CUDA-graph capture, which
its docs describe as taking tens of seconds), not a measurement.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

STORAGE_BYTES_PER_S = 1.6e9
"""read bandwidth of a model's weights per TP group member, bytes/s (ServerlessLLM, OSDI 2024)"""
ENGINE_START_S = 60.0
"""vLLM V1 engine start after the weights are in memory, s (design figure, module docstring)"""

GroupKey = tuple[str, str, int, str, float | None]
"""(workload, pool, TP, role, power cap W or None): one Deployment"""


def group_key(workload: str, pool: str, tp: int, role: str, cap_watts: float | None) -> GroupKey:
    """The key of one group. The cap is rounded to 0.1 W, as a plan document writes it
    (``Assignment.to_dict``), so that a plan read back matches the configurations it came from."""
    return (workload, pool, int(tp), role, None if cap_watts is None else round(float(cap_watts), 1))


def config_key(workload: str, c) -> GroupKey:
    """The group key of a ``problem.ReplicaConfig`` of ``workload``."""
    return group_key(workload, c.pool.name, c.tp, c.role, c.cap_watts)


def assignment_key(a) -> GroupKey:
    """The group key of a ``plan.Assignment``."""
    return group_key(a.workload, a.pool, a.tp, a.role, getattr(a.config, "cap_watts", None))


def _document_key(a: dict) -> GroupKey:
    """The group key of one entry of a plan document's ``assignments`` (``Assignment.to_dict``).

    Raises:
        KeyError, TypeError, ValueError: a key missing or of the wrong type (callers name it).
    """
    return group_key(str(a["workload"]), str(a["pool"]), int(a["tensorParallelSize"]), str(a["role"]),
                     a.get("powerCapWatts"))


def current_from_document(doc: Any, where: str = "--current") -> dict[GroupKey, int]:
    """Running replicas per group from a plan document (``llmfleet plan -o json``).

    Raises:
        ValueError: not a plan document (names ``where`` and the key at fault).
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("assignments"), list):
        raise ValueError(f"{where}: expected a plan document with an 'assignments' list (write it with "
                         "`llmfleet plan -o json`)")
    out: Counter = Counter()
    for i, a in enumerate(doc["assignments"]):
        try:
            key = _document_key(a)
            replicas = int(a["replicas"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: assignments[{i}]: needs workload, pool, tensorParallelSize, role and "
                             "replicas (as `llmfleet plan -o json` writes them)") from None
        if replicas < 0:
            raise ValueError(f"{where}: assignments[{i}].replicas must not be negative")
        out[key] += replicas
    return dict(out)


def pd_thresholds_from_document(doc: dict, where: str = "--current") -> dict[str, int]:
    """The running plan's P/D thresholds (workload key -> prompt tokens) from a plan document's
    ``pdThresholdTokens``; empty when it has none (a plan without P/D, or an older document).

    Raises:
        ValueError: a threshold that is not a whole number of tokens >= 0 (names ``where`` and the key).
    """
    raw = doc.get("pdThresholdTokens") or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: pdThresholdTokens must map workload keys to prompt tokens")
    out = {}
    for key, tokens in raw.items():
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ValueError(f"{where}: pdThresholdTokens[{key!r}] must be a whole number of tokens >= 0")
        out[str(key)] = tokens
    return out


def shortfall_from_document(doc: dict, where: str = "--current") -> dict[str, tuple[float, int]]:
    """How the running plan left each workload that fell short (workload key -> (req/s shed,
    minimum replicas not met); ``FleetProblem.current_shortfall``) from a plan document's
    ``workloads[*].shedRps`` and ``minReplicasShort`` (0 where an older document lacks it); empty
    when it has none.

    Raises:
        ValueError: an entry without a workload key, a shedRps that is not a number >= 0 or a
            minReplicasShort that is not a whole number >= 0 (names ``where`` and the entry).
    """
    out = {}
    for i, w in enumerate(doc.get("workloads") or []):
        if not isinstance(w, dict) or not isinstance(w.get("workload"), str):
            raise ValueError(f"{where}: workloads[{i}] needs a workload key (as `llmfleet plan -o json` writes it)")
        shed, short = w.get("shedRps", 0.0), w.get("minReplicasShort", 0)
        if isinstance(shed, bool) or not isinstance(shed, (int, float)) or not shed >= 0:
            raise ValueError(f"{where}: workloads[{i}].shedRps must be a number of req/s >= 0")
        if isinstance(short, bool) or not isinstance(short, int) or short < 0:
            raise ValueError(f"{where}: workloads[{i}].minReplicasShort must be a whole number >= 0")
        if shed > 0 or short > 0:
            out[w["workload"]] = (float(shed), short)
    return out


def picker_factors_from_document(doc: dict, where: str = "--current") -> dict[GroupKey, float]:
    """The running plan's κ factors for the endpoint picker's split (group key -> factor, only
    those below 1) from its assignments' ``pickerCapacityFactor``; empty when it has none (no
    group was lowered, or an older document). ``current_from_document`` has checked the keys.

    Raises:
        ValueError: a factor that is not a number in (0, 1] (names ``where`` and the assignment).
    """
    out = {}
    for i, a in enumerate(doc.get("assignments") or []):
        factor = a.get("pickerCapacityFactor", 1.0) if isinstance(a, dict) else 1.0
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor <= 1:
            raise ValueError(f"{where}: assignments[{i}].pickerCapacityFactor must be a number in (0, 1]")
        if factor < 1:
            out[_document_key(a)] = float(factor)
    return out


def picker_factors(plan) -> dict[GroupKey, float]:
    """A plan's κ factors for the endpoint picker's split (group key -> factor, only those below
    1; ``Assignment.picker_capacity_factor``): what a re-plan against it carries
    (``FleetProblem.current_capacity_factors``), as ``picker_factors_from_document`` reads them."""
    return {assignment_key(a): a.picker_capacity_factor for a in plan.assignments if a.picker_capacity_factor < 1}


def start_cost_usd(w, c) -> float:
    """USD of GPU time one replica of config ``c`` of workload ``w`` spends starting (module docstring)."""
    load_s = w.model.weight_bytes / c.tp / STORAGE_BYTES_PER_S if w.model is not None else 0.0
    return c.cost_per_replica_hour * (load_s + ENGINE_START_S) / 3600.0


def stop_cost_usd(w, c) -> float:
    """USD of GPU time one replica of config ``c`` spends draining its in-flight requests."""
    if w.workload is None:
        return 0.0
    slo = w.workload.spec.slo
    mean_out = float((w.share * w.output_tokens).sum()) if len(w.share) else 0.0
    drain_s = slo.ttft + slo.tpot * mean_out
    return c.cost_per_replica_hour * drain_s / 3600.0


def churn_report(plan, current: dict[GroupKey, int]) -> dict:
    """Groups and replicas the plan starts and stops against the running ``current`` plan."""
    new: Counter = Counter()
    for a in plan.assignments:
        new[assignment_key(a)] += a.replicas
    started = {k: new[k] - current.get(k, 0) for k in new if new[k] > current.get(k, 0)}
    stopped = {k: current[k] - new.get(k, 0) for k in current if current[k] > new.get(k, 0)}
    fmt = lambda k: {"workload": k[0], "pool": k[1], "tensorParallelSize": k[2], "role": k[3],  # noqa: E731
                     "powerCapWatts": k[4]}
    return {"replicasStarted": sum(started.values()), "replicasStopped": sum(stopped.values()),
            "groupsStarted": [{**fmt(k), "replicas": v} for k, v in sorted(started.items(), key=str)],
            "groupsStopped": [{**fmt(k), "replicas": v} for k, v in sorted(stopped.items(), key=str)],
            "workloadsChanged": sorted({k[0] for k in [*started, *stopped]})}
