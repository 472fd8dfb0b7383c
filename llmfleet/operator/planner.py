"""The cluster-wide planner: one reconcile reads every LLMWorkload, GPUPool and the FleetPolicy,
solves them jointly with the planner core, and makes the cluster follow the plan.

A reconcile is idempotent and safe to interrupt: children have deterministic names and are
written with server-side apply, so a restarted operator converges to the same objects with no
duplicates. Nothing running changes for an object that fails validation (its children are frozen
and its GPUs stay counted as taken), nor when the solve fails (every child is kept), nor in
``mode: plan``/``advisory`` (the plan and the diff go to the FleetPolicy status for review).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import DynamicApiError

from llmfleet.api.loader import POLICY_NAME, FleetSpec, ManifestError, parse_document
from llmfleet.api.models import (FleetPolicy, FleetPolicyStatus, GPUPool, GPUPoolStatus, LLMWorkload,
                                 LLMWorkloadStatus)
from llmfleet.api import tenancy
from llmfleet.jsonsafe import finite_or_null
from llmfleet.operator.conditions import condition, set_condition
from llmfleet.operator.drift import FightTracker, Verdict, drifted_fields, fingerprint, last_foreign_writer
from llmfleet.operator.kube import Kube, WritesStopped, now_rfc3339
from llmfleet.operator import selfmetrics
from llmfleet.operator.calibration import Calibration, GroupLoad
from llmfleet.operator.live import LiveDemand, plan_views
from llmfleet.operator.render import (
    ANNOTATION_EXTERNAL_REPLICAS, ANNOTATION_SPEC_HASH, LABEL_MANAGED_BY, LABEL_POOL, LABEL_TP, LABEL_WORKLOAD,
    MANAGED_BY, ChildKey, deployment_name, group_deployment_name, priority_class_name, render_plan,
    render_priority_class,
)
from llmfleet.solver.churn import config_key, picker_factors
from llmfleet.solver.placement import ClusterNodes, nodes_from_cluster, pool_inventory
from llmfleet.solver.milp import solve
from llmfleet.solver.plan import Assignment, Plan
from llmfleet.solver.problem import build_problem, minimum_gpus, resolve_pool, workload_demand

RESERVED_NAMES = {("Service", "kubernetes")}
"""Children llmfleet never creates, whatever exists: the API server's own Service is named
``kubernetes`` (in ``default``), and clients in every namespace resolve that name"""

log = logging.getLogger(__name__)

MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
CHILD_KINDS = ("Deployment", "Service", "ConfigMap", "ServiceAccount", "Role", "RoleBinding", "InferencePool",
               "HTTPRoute")
"""Kinds of the children llmfleet applies and prunes (those the cluster serves: the last two are CRDs)"""
APPLY_ORDER = {"ServiceAccount": 0, "Role": 1, "RoleBinding": 2, "ConfigMap": 3, "Deployment": 4, "Service": 5,
               "InferencePool": 6, "HTTPRoute": 7}
"""Within a tier, a picker's identity and config exist before its Deployment, its pool before its route"""
HANDOFF_MANAGER = "llmfleet-replicas-handoff"
ALONE_OPTIMA_PER_WORKLOAD = 20
"""the planner's memos of plans shown optimal alone and of cheaper plans alone not yet made are
each cleared past this many tokens per workload (each workload adds one per plan of it checked; a
design choice that bounds their memory)"""
STATUS_MODELS = {"LLMWorkload": LLMWorkloadStatus, "GPUPool": GPUPoolStatus, "FleetPolicy": FleetPolicyStatus}


@dataclass
class Parsed:
    """The cluster's llmfleet objects after validation."""

    workloads: dict[str, tuple[dict, LLMWorkload]] = field(default_factory=dict)   # key -> (raw, model)
    pools: dict[str, tuple[dict, GPUPool]] = field(default_factory=dict)
    policy: tuple[dict, FleetPolicy] | None = None
    invalid: dict[tuple[str, str], tuple[dict, str]] = field(default_factory=dict)  # (kind, key) -> (raw, msg)
    reasons: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, key) -> reason, default InvalidSpec
    ignored_policies: list[dict] = field(default_factory=list)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    policy_in_force: FleetPolicy | None = None
    """the policy the planner acts on: the cluster's valid ``default``, else the last valid one seen,
    else (an invalid policy and none valid before) the defaults in ``mode: plan``"""

    @property
    def policy_model(self) -> FleetPolicy:
        """The FleetPolicy in force (see ``policy_in_force``); the model defaults when there is none."""
        if self.policy_in_force is not None:
            return self.policy_in_force
        return self.policy[1] if self.policy else FleetPolicy(metadata={"name": POLICY_NAME})

    def refuse(self, kind: str, key: str, message: str, reason: str = "InvalidSpec") -> None:
        """Take a valid object out of the plan: it gets Planned=False with ``reason`` and ``message``."""
        table = self.workloads if kind == "LLMWorkload" else self.pools
        raw = table.pop(key)[0]
        self.invalid[(kind, key)] = (raw, message)
        self.reasons[(kind, key)] = reason


@dataclass
class ReconcileReport:
    """What one reconcile did (for logs and tests)."""

    plan: Plan | None
    solved: bool
    mode: str
    diff: list[dict]
    applied: bool
    errors: list[str]


def _key(raw: dict) -> str:
    md = raw["metadata"]
    return f"{md['namespace']}/{md['name']}" if md.get("namespace") else md["name"]


def _for_parsing(raw: dict) -> dict:
    """The object without status (written by us, and by kopf's own bookkeeping)."""
    return {k: v for k, v in raw.items() if k != "status"}


def parse_cluster(workloads: list[dict], pools: list[dict], policies: list[dict],
                  last_valid_policy: FleetPolicy | None = None,
                  namespace_labels: dict[str, dict[str, str]] | None = None) -> Parsed:
    """Validate the raw objects with the API models; invalid ones are kept with their message.

    The admin's controls fail safe: an invalid ``default`` FleetPolicy never falls back to the
    built-in defaults (``mode: apply``); the last valid policy stays in force, or, with none seen,
    the defaults in ``mode: plan``, which change nothing. Every valid workload is then checked
    against the tier list and the tenancy rules of the policy in force.
    """
    out = Parsed(namespace_labels=dict(namespace_labels or {}))
    for kind, items in (("LLMWorkload", workloads), ("GPUPool", pools), ("FleetPolicy", policies)):
        for raw in items:
            key = _key(raw)
            if kind == "FleetPolicy" and raw["metadata"]["name"] != POLICY_NAME:
                out.ignored_policies.append(raw)
                continue
            try:
                obj = parse_document(_for_parsing(raw), f"{kind} {key}")
            except ManifestError as err:
                out.invalid[(kind, key)] = (raw, str(err))
                continue
            if kind == "LLMWorkload":
                out.workloads[key] = (raw, obj)
            elif kind == "GPUPool":
                out.pools[key] = (raw, obj)
            else:
                out.policy = (raw, obj)
    if ("FleetPolicy", POLICY_NAME) in out.invalid:
        out.policy_in_force = last_valid_policy or FleetPolicy(metadata={"name": POLICY_NAME}, spec={"mode": "plan"})
    policy = out.policy_model
    tiers = [t.name for t in policy.spec.priority_tiers]
    for key, (raw, w) in list(out.workloads.items()):
        if w.spec.priority not in tiers:
            out.refuse("LLMWorkload", key, f"LLMWorkload {key}: spec.priority: {w.spec.priority!r} is not a tier of "
                                           f"FleetPolicy {POLICY_NAME}; allowed: {', '.join(tiers)}")
            continue
        why = tenancy.violation(policy, w, out.namespace_labels.get(w.namespace))
        if why:
            out.refuse("LLMWorkload", key, f"LLMWorkload {key}: {why}", "NotAllowed")
    # a minimum no pool or quota can hold makes that workload unplannable, not the whole fleet
    offered = sum(p.spec.max_gpus for _, p in out.pools.values())
    for key, (raw, w) in list(out.workloads.items()):
        need = minimum_gpus(w)
        found = tenancy.rule_for(policy, w.namespace, out.namespace_labels.get(w.namespace))
        quota = found[1].max_gpus if found else None
        if need > offered or (quota is not None and need > quota):
            limit = (f"the GPU quota of namespace {w.namespace} ({quota})" if quota is not None and need > quota
                     else f"all GPUPools together ({offered} GPUs)")
            out.refuse("LLMWorkload", key, f"LLMWorkload {key}: spec.serving.minReplicas: {w.spec.serving.min_replicas} "
                                           f"replicas need at least {need} GPUs, more than {limit}", "ExceedsCapacity")
    return out


def _by_key(kind: str, items: list[dict]) -> dict[ChildKey, dict]:
    """Live objects of one kind indexed by ChildKey (list items may lack ``kind``)."""
    return {ChildKey.of({"kind": kind, **item}): item for item in items}


def _workload_owner_uids(obj: dict) -> set[str]:
    """UIDs of the LLMWorkloads that control ``obj`` as llmfleet's child: empty unless it carries the
    managed-by label and a controller owner reference to an ``llmfleet.dev`` LLMWorkload."""
    md = obj.get("metadata") or {}
    if (md.get("labels") or {}).get(LABEL_MANAGED_BY) != MANAGED_BY:
        return set()
    return {ref.get("uid") for ref in md.get("ownerReferences") or []
            if ref.get("kind") == "LLMWorkload" and ref.get("controller")
            and str(ref.get("apiVersion", "")).startswith("llmfleet.dev/")}


def owned_by(obj: dict, workload_uid: str) -> bool:
    """Whether a live object is llmfleet's child of the LLMWorkload with ``workload_uid``."""
    return workload_uid in _workload_owner_uids(obj)


def owned_by_a_workload(obj: dict) -> bool:
    """Whether a live object is a child llmfleet made for some LLMWorkload. Only such objects are
    ever pruned: a foreign object that merely carries the label is left alone."""
    return bool(_workload_owner_uids(obj))


def _short_error(err: Exception) -> str:
    """An API error as 'HTTP 409: <the server's message>' (the client's str() holds headers and body)."""
    status = getattr(err, "status", None)
    body = getattr(err, "body", None)
    message = ""
    if body:
        try:
            message = json.loads(body).get("message", "")
        except (ValueError, AttributeError, TypeError):
            message = ""
    if status:
        return f"HTTP {status}" + (f": {message[:300]}" if message else "")
    return f"{type(err).__name__}: {str(err)[:300]}"


def cluster_nodes(kube: Kube, parsed: Parsed) -> ClusterNodes | None:
    """The valid pools' live nodes: Ready, schedulable nodes matching each pool's nodeSelector,
    with the GPUs pods llmfleet does not manage request on them (``placement.nodes_from_cluster``).
    None when Nodes or Pods cannot be listed (the operator then plans by maxGPUs and says so)."""
    selectors = {k: p.spec.node_selector for k, (_, p) in parsed.pools.items()}
    try:
        nodes = kube.list("Node")
        pods = kube.list("Pod", field_selector="status.phase!=Succeeded,status.phase!=Failed", cluster_wide=True)
        return nodes_from_cluster(selectors, nodes, pods)
    except (ApiException, DynamicApiError, ValueError) as err:
        log.warning("cannot read the pools' nodes (%s); planning by GPUPool spec.maxGPUs only", _short_error(err))
        return None


def available_gpus(parsed: Parsed, cluster: ClusterNodes | None) -> dict[str, int]:
    """GPUs each valid pool offers the plan: ``spec.maxGPUs``, and for a pool that is not
    autoscaled at most the free GPUs of its live nodes (0 with none)."""
    free: dict[str, int] = {}
    for n in (cluster.nodes if cluster else []):
        free[n.pool] = free.get(n.pool, 0) + n.free_gpus
    return {k: p.spec.max_gpus if cluster is None or p.spec.autoscaled else min(p.spec.max_gpus, free.get(k, 0))
            for k, (_, p) in parsed.pools.items()}


def live_pool_nodes(parsed: Parsed, cluster: ClusterNodes | None) -> list:
    """The live nodes of the valid pools that are not autoscaled (what placement packs onto)."""
    fixed = {k for k, (_, p) in parsed.pools.items() if not p.spec.autoscaled}
    return [n for n in (cluster.nodes if cluster else []) if n.pool in fixed]


def running_groups(problem, deployments: list[dict]) -> dict:
    """The plan in force, as ``FleetProblem.current`` takes it: replicas per group key
    (``solver.churn.group_key``) of the live Deployments whose name is the rendering of one of
    ``problem``'s configurations (``render.deployment_name``); others are ignored. A Deployment
    whose replicas an autoscaler owns counts with the replicas it has."""
    by_name = {}
    for w in problem.workloads:
        if w.workload is None:
            continue
        for c in w.configs:
            name = deployment_name(w.workload.metadata.name, c.pool.name, c.tp, c.role, c.cap_watts)
            by_name[(w.workload.namespace, name)] = config_key(w.key, c)
    out: dict = {}
    for d in deployments:
        meta = d.get("metadata") or {}
        key = by_name.get((meta.get("namespace"), meta.get("name")))
        replicas = (d.get("spec") or {}).get("replicas")
        if replicas is None:
            replicas = (d.get("status") or {}).get("replicas") or 0
        if key is not None and int(replicas) > 0:
            out[key] = out.get(key, 0) + int(replicas)
    return out


def _deployment_gpus(dep: dict) -> int:
    labels = dep["metadata"].get("labels", {})
    return int(labels.get(LABEL_TP, "0")) * int(dep.get("spec", {}).get("replicas") or 0)


def _owns_replicas(dep: dict, manager: str) -> bool:
    """Whether field manager ``manager`` owns ``spec.replicas`` of a live Deployment."""
    return any(mf.get("manager") == manager and "f:replicas" in (mf.get("fieldsV1") or {}).get("f:spec", {})
               for mf in dep["metadata"].get("managedFields") or [])


class FleetPlanner:
    """Reconciles the whole fleet. Thread-safe: one reconcile runs at a time.

    Args:
        kube: API access.
        trace_dir: folder that relative ``spec.traffic.trace.path`` values are read from.
        live: telemetry-driven demand (``live.LiveDemand``) for workloads with
            ``spec.traffic.source`` observed or max; None: telemetry off, every workload declared.
        workers: processes the capacity model of the workloads to model is spread over
            (``build_problem(workers=)``; ``handlers.planner_workers_from_env``); 1: this process.
    """

    def __init__(self, kube: Kube, trace_dir: Path | None = None, live: LiveDemand | None = None,
                 workers: int = 1):
        self.kube = kube
        self.workers = workers
        self.trace_dir = trace_dir or Path.cwd()
        self.live = live
        # correction of the capacity model from observed latency (needs telemetry)
        self.calibration = Calibration(live.client.window_s) if live is not None else None
        self._lock = threading.Lock()
        self._cache: tuple[str, Plan] | None = None
        # the last plan solved and its FleetProblem: the plan in force for telemetry (the views of
        # the running plan, calibration), kept when the periodic re-plan drops the cache
        self._last: tuple[Plan, Any] | None = None
        # each workload's capacity model, reused while its inputs are unchanged (build_problem)
        self._capacity: dict = {}
        # plans shown optimal for their workload alone (FleetProblem.alone_optima): a re-plan keeps
        # those as they run without solving them again
        self._alone_optima: set = set()
        # cheaper plans alone found for running workloads that could not move yet
        # (FleetProblem.alone_moves): tried again without solving them alone again
        self._alone_moves: dict = {}
        self._cluster: ClusterNodes | None = None  # the pools' live nodes at the last reconcile
        self.replan_interval_s: float | None = None
        self.last_valid_policy: FleetPolicy | None = None
        # drift repair (drift.py): children confirmed equal to their rendering, by (fingerprint of
        # the live object, spec hash of the manifest); a dry run is sent only when either moved
        self._confirmed: dict[ChildKey, tuple[str, str]] = {}
        self.fights = FightTracker()
        self._drift: dict[ChildKey, tuple[list[str], str | None, Verdict]] = {}
        self._child_errors: dict[str, list[str]] = {}
        self._contested: dict[str, list[tuple[str, str, int]]] = {}

    def invalidate(self) -> None:
        """Forget the cached plan: the next reconcile solves afresh."""
        self._cache = None

    # ------------------------------------------------------------------ solve
    def _plan(self, parsed: Parsed, held: dict[str, int], inference_pool_crd: bool = True,
              running: list[dict] | None = None,
              cluster: ClusterNodes | None = None, started: float | None = None
              ) -> tuple[Plan | None, bool, dict[tuple[str, str], str]]:
        """Solve (or reuse the cached plan for identical inputs).

        Returns (plan, solved_now, objects that failed while building the problem). ``held``
        maps pool name -> GPUs taken by frozen children, removed from its availability;
        ``inference_pool_crd``: whether the cluster serves InferencePools (the routing mode when
        ``FleetPolicy.spec.routing.mode`` is unset, and so what the planner may assume);
        ``running``: the live Deployments llmfleet manages (the plan in force, ``running_groups``);
        ``cluster``: the pools' live nodes (``cluster_nodes``; None: unknown, plan by maxGPUs);
        ``started``: ``time.perf_counter()`` when the reconcile began (the log line's cluster read
        is counted from it; None: from this call).
        """
        started = time.perf_counter() if started is None else started
        policy = parsed.policy_model
        workloads = {k: w for k, (_, w) in parsed.workloads.items()}
        avail = available_gpus(parsed, cluster)
        pools = {k: p.model_copy(update={"spec": p.spec.model_copy(
            update={"max_gpus": max(0, avail[k] - held.get(k, 0))})}) for k, (_, p) in parsed.pools.items()}
        live_nodes = live_pool_nodes(parsed, cluster)
        failed: dict[tuple[str, str], str] = {}
        while True:
            if not workloads or not pools:
                return None, False, failed
            demands = {k: d for k, d in (self.live.demands() if self.live else {}).items() if k in workloads}
            digest = hashlib.sha256(json.dumps(
                [[(k, w.spec.model_dump(mode="json")) for k, w in sorted(workloads.items())],
                 [(k, p.spec.model_dump(mode="json")) for k, p in sorted(pools.items())],
                 policy.spec.model_dump(mode="json"), str(self.trace_dir),
                 {ns: parsed.namespace_labels.get(ns) for ns in sorted({k.split("/")[0] for k in workloads})},
                 inference_pool_crd, self.live.fingerprint() if self.live else None,
                 self.calibration.fingerprint() if self.calibration and policy.spec.calibrate else None,
                 sorted((n.pool, n.name, n.allocatable_gpus, n.foreign_gpus) for n in live_nodes)],
                sort_keys=True).encode()).hexdigest()
            if self._cache and self._cache[0] == digest:
                return self._cache[1], False, failed
            spec = FleetSpec(workloads=list(workloads.values()), pools=list(pools.values()), policy=policy,
                             namespace_labels=parsed.namespace_labels,
                             base_dir=self.trace_dir)
            t_build = time.perf_counter()
            try:
                scales = self.calibration.step_scales() if self.calibration and policy.spec.calibrate else None
                problem = build_problem(spec, demands=demands or None, inference_pool_crd=inference_pool_crd,
                                        cache=self._capacity, step_scales=scales, workers=self.workers)
                # a calibration that leaves a workload no configuration at all (its SLO unattainable
                # at the observed speed) would plan it away: model it as profiled instead, and say so
                lost = {wp.workload.spec.model for wp in problem.workloads
                        if not wp.configs and wp.workload is not None and any(k[0] == wp.workload.spec.model
                                                                               for k in scales or {})}
                if lost:
                    self.calibration.withhold(lost)
                    problem = build_problem(spec, demands=demands or None, inference_pool_crd=inference_pool_crd,
                                            cache=self._capacity, step_scales=self.calibration.step_scales(),
                                            workers=self.workers)
            except ManifestError as err:
                if err.obj is None:
                    raise
                failed[err.obj] = str(err)
                (workloads if err.obj[0] == "LLMWorkload" else pools).pop(err.obj[1], None)
                continue
            # the running Deployments are the plan in force: the re-plan starts from them and pays
            # for every replica it starts or stops (solver.churn), so one workload's change does
            # not reshuffle the others
            problem.current = running_groups(problem, running or [])
            for memo in (self._alone_optima, self._alone_moves):
                if len(memo) > ALONE_OPTIMA_PER_WORKLOAD * len(problem.workloads):
                    memo.clear()  # tokens of inputs long gone; the next re-plans re-check
            problem.alone_optima = self._alone_optima
            problem.alone_moves = self._alone_moves
            # the thresholds the pickers were configured with: the last plan's (after a restart the
            # first re-plan may choose another among equal ones)
            problem.current_pd_thresholds = dict(self._last[0].pd_threshold_tokens) if self._last else {}
            # and the κ factors the last plan's groups were planned at for the endpoint picker's split
            # (else every re-plan would undo them); after a restart the first re-plan checks afresh
            problem.current_capacity_factors = picker_factors(self._last[0]) if self._last else {}
            # and what its shortage left short: a workload still short as it was keeps its groups
            # where nothing freed GPUs for it (after a restart the first re-plan plans every short
            # one afresh; so does a re-plan after no plan at all, whose "shortfall" is everything)
            last = self._last[0] if self._last else None
            problem.current_shortfall = ({r.workload: (r.shed_rps, r.replicas_short) for r in last.workloads
                                          if r.shed_rps > 0 or r.replicas_short > 0}
                                         if last is not None and last.status == "shortage" else {})
            if cluster is not None:
                # pools that are not autoscaled: the live nodes (their node shapes and free GPUs);
                # autoscaled ones keep the nodes their gpusPerNode would give (build_problem)
                problem.nodes = [n for n in problem.nodes or [] if n.pool not in {m.pool for m in live_nodes}
                                 and parsed.pools[n.pool][1].spec.autoscaled] + live_nodes
            # the FleetPolicy's limit bounds the MILP here, not the capacity model before it
            # (llmfleet plan counts both): a reconcile re-models only the workloads that changed,
            # and a fleet's first plan (at start-up, after a fail-over), which later re-plans keep
            # wherever it serves in full, should not lose MILP time to its capacity model
            # (bench/operator_replan.py, 300 workloads: a MILP of 60 s reaches the $6,794/h
            # optimum, one of 30 s, about what a 29 s capacity model would leave, stops at $8,770/h).
            # The log line below gives both times.
            t0 = time.perf_counter()
            plan = solve(problem)
            # where a re-plan's time goes: the solve, and before it reading the cluster (the
            # reconcile's lists) and the capacity model (only changed workloads are re-modelled)
            log.info("solved %d workloads on %d pools: %s, %s USD/h in %.2fs (before it: cluster read %.2fs, "
                     "capacity model %.2fs)", len(workloads), len(pools), plan.status, plan.cost_per_hour,
                     time.perf_counter() - t0, t_build - started, t0 - t_build)
            selfmetrics.SOLVES.inc()
            d = plan.to_dict()
            selfmetrics.PLAN_COST.set(d["costPerHour"] if d.get("costPerHour") is not None else float("nan"))
            selfmetrics.PLAN_GAP.set(d["gap"] if d.get("gap") is not None else float("nan"))
            self._cache = (digest, plan)
            self._last = (plan, problem)
            return plan, True, failed

    # ------------------------------------------------------------------ reconcile
    def reconcile(self) -> ReconcileReport:
        with self._lock:
            t0 = time.perf_counter()
            try:
                report = self._reconcile()
            except Exception:
                selfmetrics.RECONCILES.labels("error").inc()
                raise
            finally:
                selfmetrics.RECONCILE_SECONDS.observe(time.perf_counter() - t0)
            selfmetrics.RECONCILES.labels("error" if report.errors else "ok").inc()
            return report

    def _reconcile(self) -> ReconcileReport:
        started = time.perf_counter()
        kube = self.kube
        namespace_labels = {ns["metadata"]["name"]: ns["metadata"].get("labels") or {} for ns in kube.list("Namespace")}
        parsed = parse_cluster(kube.list("LLMWorkload"), kube.list("GPUPool"), kube.list("FleetPolicy"),
                               self.last_valid_policy, namespace_labels)
        if parsed.policy is not None:
            self.last_valid_policy = parsed.policy[1]
        policy_raw = parsed.policy[0] if parsed.policy else None
        policy = parsed.policy_model
        mode = policy.spec.mode
        self.replan_interval_s = policy.spec.replan_interval_seconds
        inference_pool_crd = kube.serves("InferencePool")
        routing_mode = policy.spec.routing.effective_mode(inference_pool_crd)
        live_children = self._live_children()
        live_deps = [obj for key, obj in live_children.items() if key.kind == "Deployment"]

        if self.live is not None and self.live.due(self.replan_interval_s):
            self._telemetry_tick(parsed, live_deps, policy)

        # workloads that failed validation: their children are frozen and keep their GPUs
        frozen_ns = {key for (kind, key) in parsed.invalid if kind == "LLMWorkload"}
        held: dict[str, int] = {}
        for d in live_deps:
            if self._workload_key(d) in frozen_ns:
                pool = d["metadata"]["labels"].get(LABEL_POOL, "")
                held[pool] = held.get(pool, 0) + _deployment_gpus(d)

        errors: list[str] = []
        cluster = cluster_nodes(kube, parsed)
        self._cluster = cluster
        try:
            plan, solved, failed = self._plan(parsed, held, inference_pool_crd, live_deps, cluster, started)
        except Exception as err:  # a solver crash must never touch running children
            log.exception("planning failed")
            plan, solved, failed = None, False, {}
            errors.append(f"planning failed: {err}")
        for (kind, key), msg in failed.items():
            table = parsed.workloads if kind == "LLMWorkload" else parsed.pools
            raw = table.pop(key)[0]
            parsed.invalid[(kind, key)] = (raw, msg)
            if kind == "LLMWorkload":
                frozen_ns.add(key)

        usable = plan is not None and plan.cost_per_hour is not None
        desired: dict[ChildKey, dict] = {}
        group_of: dict[str, list[tuple[Assignment, dict]]] = {}
        if usable:
            external = {f"{k.namespace}/{k.name}" for k, d in live_children.items() if k.kind == "Deployment"
                        and (d["metadata"].get("annotations") or {}).get(ANNOTATION_EXTERNAL_REPLICAS) == "true"}
            manifests = render_plan(plan, {k: w for k, (_, w) in parsed.workloads.items()},
                                    {k: p for k, (_, p) in parsed.pools.items()}, policy, routing_mode, external)
            # PriorityClasses are created apart (only when missing, never updated, never pruned)
            desired = {ChildKey.of(m): m for m in manifests if m["kind"] != "PriorityClass"}
            for a in plan.assignments:
                w = parsed.workloads[a.workload][1]
                key = ChildKey("Deployment", w.namespace, group_deployment_name(w.metadata.name, a))
                group_of.setdefault(a.workload, []).append((a, desired[key]))

        if usable:
            for wkey, msg in self._name_conflicts(desired, live_children).items():
                # never act on an object llmfleet does not own: this workload is left out of the apply
                parsed.refuse("LLMWorkload", wkey, msg, "NameConflict")
                frozen_ns.add(wkey)
                group_of.pop(wkey, None)
                for ck in [ck for ck, m in desired.items() if self._workload_key(m) == wkey]:
                    del desired[ck]
        diff = self._diff(desired, live_children, frozen_ns) if usable else []
        # children that no longer exist need no memory; fights are reported on their workload
        self._confirmed = {k: v for k, v in self._confirmed.items() if k in live_children}
        self.fights.forget(set(live_children))
        self._contested = {}
        for ck, m in desired.items():
            if n := self.fights.contested(ck):
                self._contested.setdefault(self._workload_key(m), []).append((ck.kind, ck.name, n))
        self._child_errors = {}
        applied = False
        if usable and mode == "apply":
            errors += self._apply(desired, diff, live_deps, parsed, policy)
            applied = True
            live_deps = kube.list("Deployment", label_selector=MANAGED_SELECTOR)

        self._write_statuses(parsed, policy_raw, plan, solved, usable, group_of, live_deps, diff, applied, errors,
                             mode)
        return ReconcileReport(plan, solved, mode, diff, applied, errors)

    def _telemetry_tick(self, parsed: Parsed, live_deps: list[dict], policy: FleetPolicy) -> None:
        """Read telemetry and decide, per live workload, whether its demand in force changes
        (``live.LiveDemand.tick``); the views of the running plan come from the cached plan."""
        workloads = {k: w for k, (_, w) in parsed.workloads.items()}

        def declared(key: str):
            try:
                return workload_demand(workloads[key], self.trace_dir)
            except ManifestError:
                return None  # the solve reports it on the object

        # the plan in force: the last one solved (the periodic re-plan drops the cache just before
        # this tick, and the views must still see the running groups' capacities)
        last_plan, last_problem = self._last if self._last else (None, None)
        views = plan_views(last_plan.assignments if last_plan else [], live_deps, LABEL_WORKLOAD,
                           group_deployment_name)
        self.live.tick(workloads, declared, views, self.replan_interval_s, policy.spec.hysteresis)
        if last_plan is not None and self.live.snapshot is not None and policy.spec.calibrate:
            self._calibrate(last_plan, last_problem, live_deps, views, policy)
        for key, st in self.live.workloads.items():
            ns, name = key.split("/", 1)
            age = st.telemetry.age_s if st.telemetry is not None else None
            selfmetrics.TELEMETRY_AGE.labels(ns, name).set(age.value if age is not None and age.known
                                                           else float("nan"))
            obs = st.observed
            selfmetrics.DEMAND.labels(ns, name, "observed").set(obs.value if obs is not None and obs.known
                                                                else float("nan"))
            selfmetrics.DEMAND.labels(ns, name, "forecast").set(
                st.forecast_rps if st.forecast_rps is not None else float("nan"))
            if st.state is not None:
                selfmetrics.DEMAND.labels(ns, name, "planned").set(st.state.planned_demand_rps)

    def _calibrate(self, plan: Plan, problem, live_deps: list[dict], views: dict, policy: FleetPolicy) -> None:
        """Feed this tick's per-group latency to the calibration (``operator.calibration``); a
        scale in force that moved makes the next solve model those groups with it."""
        problems = {wp.key: wp for wp in problem.workloads}
        ready = {(d["metadata"].get("namespace"), d["metadata"]["name"]):
                 int((d.get("status") or {}).get("availableReplicas") or 0) for d in live_deps}
        groups = []
        for a in plan.assignments:
            st, wp = self.live.workloads.get(a.workload), problems.get(a.workload)
            if st is None or st.telemetry is None or wp is None or wp.workload is None or a.config is None:
                continue
            if (views.get(a.workload) is not None and views[a.workload].rollout_in_progress) \
                    or (st.settle_until_s is not None and self.live.clock() < st.settle_until_s):
                continue  # a window that mixes old and new pods (or loads) says nothing about either
            ns, name = a.workload.split("/", 1)
            dep = group_deployment_name(name, a)
            groups.append(GroupLoad(a.workload, wp.workload.spec.model, a.gpu_type, a.tp, a.role, wp, a.config,
                                    a.bucket_rate_rps, a.rate_rps, a.utilization, a.replicas,
                                    ready.get((ns, dep), 0), st.telemetry.groups.get(dep)))
        if self.calibration.observe(groups, problem.params, policy.spec.hysteresis):
            log.info("step-time calibration in force changed: %s", ", ".join(
                f"{m} {g} TP{tp} {role} x{f:.3g}" for (m, g, tp, role), f in sorted(self.calibration.step_scales().items()))
                or "none (the profile as is)")

    def _live_children(self) -> dict[ChildKey, dict]:
        """Every object of ``CHILD_KINDS`` that carries llmfleet's managed-by label, of the kinds
        the cluster serves."""
        live: dict[ChildKey, dict] = {}
        for kind in CHILD_KINDS:
            if kind in ("InferencePool", "HTTPRoute") and not self.kube.serves(kind):
                continue
            live.update(_by_key(kind, self.kube.list(kind, label_selector=MANAGED_SELECTOR)))
        return live

    def _name_conflicts(self, desired: dict[ChildKey, dict], live: dict[ChildKey, dict]) -> dict[str, str]:
        """Workloads whose children would take the name of an object llmfleet does not own for them.

        An object of that name that lacks llmfleet's label or an owner reference to the workload
        (the API server's ``kubernetes`` Service, a team's own Deployment) is never written to; names
        in ``RESERVED_NAMES`` are refused whether or not they exist yet. Objects missing from the
        managed lists are looked up one by one, which only happens for children about to be created.

        Returns:
            workload key -> message naming the object (in the workload's own namespace).
        """
        out: dict[str, str] = {}
        for key, manifest in desired.items():
            wkey = self._workload_key(manifest)
            if wkey in out:
                continue
            if (key.kind, key.name) in RESERVED_NAMES:
                out[wkey] = (f"LLMWorkload {wkey}: its {key.kind} would be named {key.name!r}, a name Kubernetes "
                             "reserves; rename the workload")
                continue
            cur = live.get(key)
            if cur is None:
                cur = self.kube.get(key.kind, key.name, key.namespace or None)
            if cur is not None and not owned_by(cur, manifest["metadata"]["ownerReferences"][0]["uid"]):
                out[wkey] = (f"LLMWorkload {wkey}: {key.kind} {key.namespace}/{key.name} already exists and is not "
                             "llmfleet's for this workload; llmfleet leaves it alone (rename the workload, or remove "
                             "that object)")
        return out

    @staticmethod
    def _workload_key(child: dict) -> str:
        md = child["metadata"]
        return f"{md.get('namespace')}/{md.get('labels', {}).get(LABEL_WORKLOAD, '')}"

    def _diff(self, desired: dict[ChildKey, dict], live: dict[ChildKey, dict], frozen_ns: set[str]) -> list[dict]:
        """Changes that take the cluster to ``desired``; children of frozen workloads are kept.

        A child whose spec hash and replicas match is checked for drift (``_drift_of``): a field
        llmfleet manages changed by someone else makes it an update (``drift``: the fields), unless
        its writer is being backed off (``FightTracker``), then it stays as it is for now."""
        changes = []
        self._drift = {}
        for key, manifest in desired.items():
            cur = live.get(key)
            want = manifest.get("spec", {}).get("replicas") if key.kind == "Deployment" else None
            have = cur.get("spec", {}).get("replicas") if cur and key.kind == "Deployment" else None
            drift: list[str] = []
            if cur is None:
                action = "create"
            elif (cur["metadata"].get("annotations") or {}).get(ANNOTATION_SPEC_HASH) != \
                    manifest["metadata"]["annotations"][ANNOTATION_SPEC_HASH]:
                action = "update"  # our manifest changed
            else:
                # someone scaled the Deployment by hand, or changed another field llmfleet sets
                drift = (["spec.replicas"] if want is not None and want != have else []) or self._drift_of(key, cur,
                                                                                                          manifest)
                action = "unchanged"
                if drift:
                    verdict = self.fights.drifted(key)
                    self._drift[key] = (drift, last_foreign_writer(cur), verdict)
                    action = "update" if verdict.repair else "unchanged"
            if want is None and key.kind == "Deployment":
                want = have  # replicas owned by an external autoscaler
            changes.append({"action": action, "kind": key.kind, "namespace": key.namespace, "name": key.name,
                            "replicasFrom": have, "replicasTo": want})
        for key, cur in live.items():
            if key in desired or self._workload_key(cur) in frozen_ns or not owned_by_a_workload(cur):
                continue
            have = cur.get("spec", {}).get("replicas") if key.kind == "Deployment" else None
            changes.append({"action": "delete", "kind": key.kind, "namespace": key.namespace, "name": key.name,
                            "replicasFrom": have, "replicasTo": None})
        return changes

    def _drift_of(self, key: ChildKey, cur: dict, manifest: dict) -> list[str]:
        """Fields llmfleet manages that differ on the live child ``cur`` (drift.py); a dry-run apply
        is sent only when the child changed since it was last confirmed."""
        mark = (fingerprint({"kind": key.kind, **cur}), manifest["metadata"]["annotations"][ANNOTATION_SPEC_HASH])
        if self._confirmed.get(key) == mark:
            return []
        try:
            dry = self.kube.apply(manifest, force=True, dry_run=True)
        except Exception as err:  # could not check: say so, and try again next reconcile
            log.warning("drift check of %s %s/%s failed: %s", key.kind, key.namespace, key.name, _short_error(err))
            return []
        fields = drifted_fields({"kind": key.kind, **cur}, dry)
        if key.kind == "Service" and (cur.get("spec") or {}).get("selector") != manifest["spec"].get("selector"):
            # a selector key someone else added stays theirs under server-side apply (the map is
            # granular) and still changes which pods get traffic: the selector is llmfleet's whole
            fields = sorted(set(fields) | {"spec.selector"})
        if not fields:
            self._confirmed[key] = mark
        return fields

    def _apply(self, desired: dict[ChildKey, dict], diff: list[dict], live_deps: list[dict], parsed: Parsed,
               policy: FleetPolicy) -> list[str]:
        """Carry out ``diff``: PriorityClasses first, then growing groups (highest tier first) before
        shrinking ones, so serving capacity is made before it is broken; deletions last.

        Errors are returned and also kept per workload (``_child_errors``) for its own status.
        Raises WritesStopped (shutdown, lost lease): the rest of the apply is abandoned; every
        write is a whole server-side apply or delete, so what was written is consistent."""
        errors = []
        self._child_errors = {}
        tier_values = {t.name: t.value for t in policy.spec.priority_tiers}
        in_use = {w.spec.priority for _, w in parsed.workloads.values()}
        for tier in sorted(in_use):
            try:
                if self.kube.get("PriorityClass", priority_class_name(tier)) is None:
                    self.kube.apply(render_priority_class(tier, tier_values[tier]))
            except WritesStopped:
                raise
            except Exception as err:
                errors.append(f"PriorityClass {priority_class_name(tier)}: {_short_error(err)}")
        live = _by_key("Deployment", live_deps)

        def order(change: dict) -> tuple:
            manifest = desired[ChildKey(change["kind"], change["namespace"], change["name"])]
            workload = f"{change['namespace']}/{manifest['metadata']['labels'][LABEL_WORKLOAD]}"
            tier_value = tier_values[parsed.workloads[workload][1].spec.priority]
            shrinking = (change["replicasTo"] or 0) < (change["replicasFrom"] or 0)
            return (shrinking, -tier_value, APPLY_ORDER.get(change["kind"], len(APPLY_ORDER)), change["name"])

        # only real changes: re-applying an unchanged child still bumps its managedFields, and the
        # watch event that follows would wake the planner again, forever
        for change in sorted((c for c in diff if c["action"] in ("create", "update")), key=order):
            key = ChildKey(change["kind"], change["namespace"], change["name"])
            manifest = desired[key]
            try:
                cur = live.get(key)
                if cur is not None and "replicas" not in manifest["spec"] and _owns_replicas(cur, "llmfleet"):
                    # hand spec.replicas to another field manager first, or omitting it from our
                    # apply would reset it to the default of 1
                    self.kube.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                                     "metadata": {"name": key.name, "namespace": key.namespace},
                                     "spec": {"replicas": cur["spec"].get("replicas", 1)}},
                                    field_manager=HANDOFF_MANAGER)
                # force only what llmfleet owns (checked in _name_conflicts); a create is never forced
                result = self.kube.apply(manifest, force=change["action"] == "update")
                if key.kind == "Service" and result.get("spec", {}).get("selector") != manifest["spec"].get("selector"):
                    # drop selector keys other managers own (apply cannot remove another's field)
                    result = self.kube.json_patch(key.kind, key.name, key.namespace, [
                        {"op": "replace", "path": "/spec/selector", "value": manifest["spec"]["selector"]}])
                self._confirmed[key] = (fingerprint({"kind": key.kind, **result}),
                                        manifest["metadata"]["annotations"][ANNOTATION_SPEC_HASH])
                if key in self._drift:
                    self._report_repair(key, result)
            except WritesStopped:
                raise
            except Exception as err:
                msg = f"{key.kind} {key.namespace}/{key.name}: {_short_error(err)}"
                errors.append(msg)
                self._child_errors.setdefault(self._workload_key(manifest), []).append(msg)
        for change in diff:
            if change["action"] == "delete":
                try:
                    self.kube.delete(change["kind"], change["name"], change["namespace"] or None)
                    self._confirmed.pop(ChildKey(change["kind"], change["namespace"], change["name"]), None)
                except WritesStopped:
                    raise
                except Exception as err:
                    errors.append(f"delete {change['kind']} {change['namespace']}/{change['name']}: "
                                  f"{_short_error(err)}")
        return errors

    def _report_repair(self, key: ChildKey, result: dict) -> None:
        """One log line and an Event on the child naming the fields restored; a Warning Event when
        its writer keeps reverting them (llmfleet now backs off)."""
        fields, writer, verdict = self._drift[key]
        by = f" (changed by field manager {writer})" if writer else ""
        obj = {"apiVersion": result.get("apiVersion"), "kind": key.kind, "metadata": result["metadata"]}
        log.info("restored %s %s/%s: %s%s", key.kind, key.namespace, key.name, ", ".join(fields), by)
        self.kube.event(obj, "DriftRepaired", f"restored {', '.join(fields)}{by}")
        if verdict.contested:
            msg = (f"{', '.join(fields)} changed by another writer{by} {verdict.strikes} times within "
                   f"{self.fights.window_s / 60:.0f} min; llmfleet restores them at most once per "
                   f"{verdict.backoff_s:.0f}s from now on. Stop the other writer"
                   + (f", or annotate the Deployment {ANNOTATION_EXTERNAL_REPLICAS}=true to hand it spec.replicas"
                      if fields == ["spec.replicas"] else "") + ".")
            log.warning("%s %s/%s: %s", key.kind, key.namespace, key.name, msg)
            self.kube.event(obj, "DriftContested", msg, warning=True)

    # ------------------------------------------------------------------ status and events
    def _write_statuses(self, parsed: Parsed, policy_raw: dict | None, plan: Plan | None, solved: bool,
                        usable: bool, group_of: dict[str, list[tuple[Assignment, dict]]], live_deps: list[dict],
                        diff: list[dict], applied: bool, errors: list[str], mode: str) -> None:
        """Status and events of every llmfleet object after a reconcile."""
        for (kind, key), (raw, msg) in parsed.invalid.items():
            st = dict(raw.get("status") or {})
            gen = raw["metadata"].get("generation")
            reason = parsed.reasons.get((kind, key), "InvalidSpec")
            if kind == "FleetPolicy":
                in_force = parsed.policy_model
                consequence = (f"the last valid FleetPolicy stays in force (mode {in_force.spec.mode})"
                               if self.last_valid_policy is not None and in_force is self.last_valid_policy
                               else "no valid FleetPolicy seen yet: planning in mode plan, nothing is changed")
            else:
                consequence = "running children are left unchanged"
            conds = set_condition(st.get("conditions") or [], "Planned", False, reason, f"{msg}; {consequence}", gen)
            if kind == "LLMWorkload":
                conds = set_condition(conds, "Degraded", True, reason, msg, gen)
            self._set_status(kind, raw, {**st, "observedGeneration": gen, "conditions": conds},
                             event=(reason, msg, True))
        live = _by_key("Deployment", live_deps)
        for key, (raw, _) in parsed.workloads.items():
            self._workload_status(raw, key, parsed, plan, usable, group_of.get(key, []), live, errors, mode)
        self._pool_statuses(parsed, plan if usable else None)
        for raw in parsed.ignored_policies:
            self._set_status("FleetPolicy", raw, {"conditions": set_condition(
                (raw.get("status") or {}).get("conditions") or [], "Planned", False, "Ignored",
                f"llmfleet reads only the FleetPolicy named {POLICY_NAME!r}", raw["metadata"].get("generation"))},
                None)
        if policy_raw is not None:
            self._policy_status(policy_raw, plan, solved, usable, diff, applied, errors, mode)

    def _workload_status(self, raw: dict, key: str, parsed: Parsed, plan: Plan | None, usable: bool,
                         groups: list[tuple[Assignment, dict]], live: dict[ChildKey, dict], errors: list[str],
                         mode: str) -> None:
        """Conditions, plan slice, cost and readiness of one valid LLMWorkload."""
        gen = raw["metadata"].get("generation")
        st = dict(raw.get("status") or {})
        conds = st.get("conditions") or []
        # a tenant reads only about its own namespace: other workloads' messages and errors stay out
        namespace = key.split("/", 1)[0]
        others = [k for k in parsed.workloads if k != key] + [k for (kind, k) in parsed.invalid if kind == "LLMWorkload"]
        plan_msgs = "; ".join(_own(plan.messages, key, others)) if plan and plan.messages else ""
        errors = [e for e in errors if f" {namespace}/" in f" {e}" or f"/{namespace}/" in e]
        # Ready always from the live Deployments of this reconcile, whatever the plan did
        running = [d for d in live.values() if self._workload_key(d) == key]
        if not usable:
            why = "; ".join(errors) or plan_msgs or "no plan"
            reason = "Infeasible" if plan is not None and plan.status == "infeasible" else "PlanFailed"
            conds = set_condition(conds, "Planned", False, reason, f"{why}; the running children are kept", gen)
            want = sum(int(d.get("spec", {}).get("replicas") or 0) for d in running)
            have = sum(int(d.get("status", {}).get("availableReplicas") or 0) for d in running)
            conds = set_condition(conds, "Ready", want > 0 and have >= want,
                                  "Available" if want > 0 and have >= want else "ReplicasNotReady",
                                  f"{have}/{want} replicas of the running children available (no new plan)", gen)
            self._set_status("LLMWorkload", raw, {**st, "observedGeneration": gen, "conditions": conds,
                                                  "readyReplicas": have, "ready": f"{have}/{st.get('replicas', want)}"},
                             ("PlanFailed", why, True))
            return
        slice_ = [self._group_status(a, m) for a, m in groups]
        replicas = sum(a.replicas for a, _ in groups)
        gpus = sum(a.gpus for a, _ in groups)
        cost = sum(a.cost_per_hour for a, _ in groups)
        ready = sum(int((live.get(ChildKey.of(m)) or {}).get("status", {}).get("availableReplicas") or 0)
                    for _, m in groups)
        r = next((r for r in plan.workloads if r.workload == key), None)
        own_errors = self._child_errors.get(key, [])
        if own_errors:  # the API server refused a child: the plan is not in force for this workload
            conds = set_condition(conds, "Planned", False, "ApplyFailed",
                                  f"{'; '.join(own_errors)}; the running children are kept", gen)
        else:
            conds = set_condition(conds, "Planned", True, "Planned" if mode == "apply" else "PlannedForReview",
                                  f"{replicas} replicas on {gpus} GPUs, ${cost:.2f}/h"
                                  + ("" if mode == "apply" else f" (FleetPolicy mode {mode}: not applied)"), gen)
        all_ready = replicas > 0 and ready >= replicas
        conds = set_condition(conds, "Ready", all_ready, "Available" if all_ready else "ReplicasNotReady",
                              f"{ready}/{replicas} replicas available", gen)
        if r is not None and r.shed_rps > 1e-6:
            conds = set_condition(conds, "Degraded", True, "CapacityShortage",
                                  f"{r.shed_rps:.2f} of {r.demand_rps:.2f} req/s cannot be served within the SLO "
                                  f"(tier {r.tier}): {plan_msgs}", gen)
        elif bad_pools := sorted({d["metadata"].get("labels", {}).get(LABEL_POOL) for d in running}
                                 & {k for kind, k in parsed.invalid if kind == "GPUPool"}):
            # only a workload that runs on an invalid pool loses by it (its children there stay)
            conds = set_condition(conds, "Degraded", True, "InvalidGPUPool",
                                  f"GPUPool {', '.join(bad_pools)} is invalid and was left out of the plan; "
                                  "this workload's children on it are kept", gen)
        else:
            conds = set_condition(conds, "Degraded", False, "AsPlanned", "", gen)
        contested = self._contested.get(key, [])
        if contested:
            conds = set_condition(conds, "Contested", True, "ForeignWriter", "; ".join(
                f"{kind} {name}: fields changed back by another writer {n} times; llmfleet backs off"
                for kind, name, n in sorted(set(contested))), gen)
        elif condition(conds, "Contested"):
            conds = set_condition(conds, "Contested", False, "NoConflict", "", gen)
        event = None
        old_groups = [(g.get("pool"), g.get("tensorParallelSize"), g.get("role"), g.get("replicas"))
                      for g in st.get("plan") or []]
        new_groups = [(g["pool"], g["tensorParallelSize"], g["role"], g["replicas"]) for g in slice_]
        if sorted(old_groups, key=str) != sorted(new_groups, key=str):
            event = ("PlanChanged", "plan: " + (", ".join(
                f"{g['replicas']}x {g['gpuType']} TP{g['tensorParallelSize']} {g['role']}" for g in slice_)
                or "no replicas") + ("" if mode == "apply" else f" (mode {mode}, not applied)"), False)
        ttfts = [a.ttft_s for a, _ in groups if a.ttft_s is not None]
        tpots = [a.tpot_s for a, _ in groups if a.tpot_s is not None]
        live_fields: dict = {}
        if self.live is not None:
            live_fields, live_conds = self.live.status(key, parsed.workloads[key][1])
            if live_fields and self.calibration is not None:
                # None removes the field when calibration is switched off (JSON merge patch)
                live_fields["calibration"] = self.calibration.status(
                    parsed.workloads[key][1].spec.model, [(a.gpu_type, a.tp, a.role) for a, _ in groups]
                ) if parsed.policy_model.spec.calibrate else None
            for type_, value, reason, message in live_conds:
                conds = set_condition(conds, type_, value, reason, message, gen)
        self._set_status("LLMWorkload", raw, {**live_fields,
            "observedGeneration": gen, "conditions": conds, "plan": slice_,
            "demandRps": round(r.demand_rps, 3) if r else None, "servedRps": round(r.served_rps, 3) if r else None,
            "gpus": gpus, "costPerHour": round(cost, 4),
            "replicas": replicas, "readyReplicas": ready, "ready": f"{ready}/{replicas}",
            "predictedTtftSeconds": round(max(ttfts), 4) if ttfts else None,
            "predictedTpotSeconds": round(max(tpots), 5) if tpots else None,
            "predictedPowerWatts": round(sum(a.gpu_watts * a.gpus for a, _ in groups), 1) if groups else None,
        }, event)

    def _pool_statuses(self, parsed: Parsed, plan: Plan | None) -> None:
        """GPUs planned on each valid pool and the price in effect; ``plan`` None keeps the last count."""
        pool_gpus: dict[str, int] = {}
        for a in (plan.assignments if plan else []):
            pool_gpus[a.pool] = pool_gpus.get(a.pool, 0) + a.gpus
        inventory = pool_inventory(self._cluster.nodes) if self._cluster else {}
        avail = available_gpus(parsed, self._cluster)
        for key, (raw, p) in parsed.pools.items():
            gen = raw["metadata"].get("generation")
            st = dict(raw.get("status") or {})
            try:
                price = resolve_pool(p).cost_per_gpu_hour
            except ManifestError:  # unknown GPU type or no price: the plan already says so
                price = None
            inv = inventory.get(key, {"nodes": 0, "allocatableGPUs": 0, "foreignGPUs": 0, "freeGPUs": 0})
            if self._cluster is None:
                inv = {k: None for k in inv}
                why = "the operator cannot list Nodes and Pods: planned by spec.maxGPUs only"
            elif p.spec.autoscaled:
                why = "autoscaled: planned up to spec.maxGPUs, whatever the nodes present"
            elif inv["nodes"] == 0:
                why = ("no Ready, schedulable node matches spec.nodeSelector: nothing is planned on this pool "
                       "(set spec.autoscaled: true when a node autoscaler adds its nodes)")
            else:
                why = f"planned within the {inv['freeGPUs']} GPUs free on its {inv['nodes']} node(s)"
            conds = set_condition(st.get("conditions") or [], "Planned", True, "Valid", why, gen)
            self._set_status("GPUPool", raw, {**st, "observedGeneration": gen, "conditions": conds,
                                              "plannedGPUs": pool_gpus.get(key, 0) if plan else st.get("plannedGPUs"),
                                              "costPerGPUHour": price, **inv, "availableGPUs": avail[key]}, None)

    def _policy_status(self, policy_raw: dict, plan: Plan | None, solved: bool, usable: bool, diff: list[dict],
                       applied: bool, errors: list[str], mode: str) -> None:
        """The whole plan, its cost, bound, gap and the diff, on the FleetPolicy named default."""
        gen = policy_raw["metadata"].get("generation")
        st = dict(policy_raw.get("status") or {})
        plan_msgs = "; ".join(plan.messages) if plan and plan.messages else ""
        if usable:
            conds = set_condition(st.get("conditions") or [], "Planned", True, plan.status.capitalize(),
                                  plan_msgs or f"{plan.status}: ${plan.cost_per_hour:.2f}/h", gen)
        else:
            why = "; ".join(errors) or plan_msgs or ("no valid LLMWorkload or GPUPool" if plan is None else "no plan")
            conds = set_condition(st.get("conditions") or [], "Planned", False,
                                  (plan.status.capitalize() if plan else "NothingToPlan"), why, gen)
        ok = applied and not errors
        conds = set_condition(conds, "Applied", ok,
                              "Applied" if ok else ("ApplyFailed" if errors else f"Mode{mode.capitalize()}"),
                              "; ".join(errors) if errors else ("" if applied else f"mode {mode}: children unchanged"),
                              gen)
        new = {"observedGeneration": gen, "conditions": conds, "applied": applied,
               "diff": [{k: v for k, v in c.items() if v not in (None, "")} for c in diff if c["action"] != "unchanged"]}
        # telemetry on: the series no workload is credited with, as of the last successful read;
        # off (or no read yet): None removes the field (unknown is shown as absent, never as 0)
        new["telemetry"] = self.live.telemetry_status() if self.live is not None else None
        if plan is not None:
            d = plan.to_dict()
            new.update({
                "planStatus": plan.status, "costPerHour": d["costPerHour"], "lpBound": d["lpBound"],
                "gap": d["gap"], "solveTimeSeconds": d["solveTimeSeconds"], "solver": plan.solver,
                "totalGPUs": plan.total_gpus, "messages": list(plan.messages),
                "plan": [self._group_status(a, None, with_workload=True) for a in plan.assignments],
            })
            if solved:
                new["lastPlanTime"] = now_rfc3339()
        event = None
        if errors:
            event = ("ApplyFailed", "; ".join(errors), True)
        elif solved and plan is not None:
            event = ("Planned", f"{plan.status}: " + (f"${plan.cost_per_hour:.2f}/h on {plan.total_gpus} GPUs"
                                                    if plan.cost_per_hour is not None else plan_msgs), not usable)
        self._set_status("FleetPolicy", policy_raw, {**st, **new}, event)

    @staticmethod
    def _group_status(a: Assignment, manifest: dict | None, with_workload: bool = False) -> dict:
        g = {"pool": a.pool, "gpuType": a.gpu_type, "tensorParallelSize": a.tp, "role": a.role,
             "replicas": a.replicas, "gpus": a.gpus, "costPerHour": round(a.cost_per_hour, 4),
             "rateRps": round(a.rate_rps, 3), "utilization": round(a.utilization, 3),
             "deployment": manifest["metadata"]["name"] if manifest else
             group_deployment_name(a.workload.split("/", 1)[-1], a)}
        if with_workload:
            g = {"workload": a.workload, **g}
        return g

    def _set_status(self, kind: str, raw: dict, status: dict, event: tuple[str, str, bool] | None) -> None:
        """Patch the status when it changed; record ``event`` only then (no event storms)."""
        old = raw.get("status") or {}
        # a computed value is never allowed to break the status write: NaN/inf become null (the API
        # server answers a patch holding them with HTTP 500)
        clean = finite_or_null({k: v for k, v in status.items() if v is not None})
        # the CRD's structural schema silently prunes unknown keys: check against the model that
        # generated it, or a misspelt key would differ from the stored status on every reconcile
        STATUS_MODELS[kind].model_validate(clean)
        if _strip_times(clean) == _strip_times({k: v for k, v in old.items() if k in clean or k in status}):
            return
        # JSON merge patch: null removes keys we no longer report
        patch = {**{k: None for k in old if k not in clean and k in status}, **clean}
        md = raw["metadata"]
        self.kube.patch_status(kind, md["name"], md.get("namespace"), patch)
        if event:
            reason, message, warning = event
            old_cond = condition(old.get("conditions") or [], "Planned")
            if warning and old_cond and old_cond.get("reason") == reason and old_cond.get("message", "").startswith(message):
                return
            self.kube.event({"apiVersion": raw["apiVersion"], "kind": kind, "metadata": md}, reason, message, warning)


def _own(messages: list[str], key: str, other_keys: list[str]) -> list[str]:
    """The plan messages a workload's own status may show: those about it, and fleet-wide ones that
    name no other workload (so a tenant never learns another namespace's workloads or traffic)."""
    return [m for m in messages if m.startswith(f"{key} ") or m.startswith(f"{key}:")
            or not any(other in m for other in other_keys)]


def _strip_times(status: dict) -> Any:
    """Status without timestamps, to compare what changed in substance."""
    out = {k: v for k, v in status.items() if k != "lastPlanTime"}
    if "conditions" in out:
        out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in out["conditions"]]
    return out
