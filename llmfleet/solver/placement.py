"""Node-level placement of a plan's replicas with OR-Tools CP-SAT (DESIGN §6).

The fleet MILP counts GPUs per pool. Kubernetes schedules pods onto nodes, and a replica of TP
degree t is one pod that requests t GPUs (``nvidia.com/gpu``), so all t GPUs must be free on ONE
node. This module checks a plan against the nodes of each pool, in the spirit of Priority Matters
(CP-SAT pod packing under priorities, lexicographic by priority):

1. ``place``: put every replica on a node of its pool. Lexicographic objective, one CP-SAT solve
   per phase, each phase's optimum kept as a constraint of the next:
     a. for each tier value, highest first: maximise the replicas of that tier placed (a later phase
        can never lower an earlier tier's count, so no higher-tier replica is ever traded for any
        number of lower-tier ones, also when a phase stops at the time limit);
     b. minimise stranded GPUs: free GPUs left on a node beyond a multiple of the largest TP the
        pool's groups use (``free mod T``), which no group of that size can use;
     c. minimise the nodes touched (whole nodes stay free for other work or scale-down).
   What does not fit is reported per group with the reason (``Unplaced``). Within a tier every
   replica counts one, whatever its TP degree (Priority Matters counts pods per priority the same
   way). Groups of one TP degree are interchangeable on a node, so the model has one integer per
   (node, TP degree) and one per group, not one per (group, node); nodes with equal free GPUs are
   filled in name order (symmetry breaking). A best-fit-decreasing packing is the first hint; a
   tier the hint places completely needs no solve, nor does a phase b or c where the hint already
   meets a lower bound (``_incumbent_at_bound``), as with whole nodes of equal size.
2. ``shape_cuts``: linear constraints for the MILP from the free GPUs per node, exact when the
   TP degrees of a pool divide one another (1, 2, 4, 8): a plan that satisfies them always places.
   ``limits_from_placement``: per (pool, TP) limits from a placement that left replicas out, for
   a re-solve where the TP degrees are not such a chain.
3. ``offline_nodes`` (nodes from ``GPUPool.spec.gpusPerNode`` and ``maxGPUs``) and
   ``nodes_from_cluster`` (live Node and Pod objects: allocatable ``nvidia.com/gpu`` minus the GPUs
   that pods llmfleet does not manage request). Pure functions: no API call here.

Determinism: groups and nodes are put in a canonical order, CP-SAT runs one search worker with a
fixed seed and a deterministic-time limit per phase, so the same input in any order gives the same
placement. The wall-clock ``time_limit_s`` is a safety net; if it is what stops a phase (a much
slower machine), the result says so (``status == "feasible"``) and may differ between runs.

Running llmfleet pods are not subtracted from the free GPUs: the placement is the target layout of
the whole plan, as if llmfleet's pods were scheduled afresh.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ortools.sat.python import cp_model

STRANDED, NODES_USED = "stranded GPUs", "nodes used"
"""the names of the placement's last two phases (after the tiers), as ``PlacementResult.phases`` shows them"""
GPU_RESOURCE = "nvidia.com/gpu"
"""extended resource the NVIDIA device plugin advertises (and llmfleet's pods request)"""
LABEL_WORKLOAD = "llmfleet.dev/workload"
"""label on every pod llmfleet renders (``operator.render.LABEL_WORKLOAD``); pods without it are foreign"""
DEFAULT_TOLERATIONS = ({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},)
"""the tolerations llmfleet's Deployments carry (``operator.render.render_deployment``)"""


# ------------------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class Node:
    """One node of a pool.

    Attributes:
        allocatable_gpus: ``status.allocatable["nvidia.com/gpu"]`` (offline: the pool's ``gpusPerNode``).
        foreign_gpus: GPUs requested by pods on the node that llmfleet does not manage.
    """

    name: str
    pool: str
    allocatable_gpus: int
    foreign_gpus: int = 0

    @property
    def free_gpus(self) -> int:
        """GPUs llmfleet's replicas may use on this node (never negative)."""
        return max(0, self.allocatable_gpus - self.foreign_gpus)


@dataclass(frozen=True)
class ReplicaGroup:
    """``replicas`` replicas of one workload on one (pool, TP, role), each needing ``tp`` GPUs on one node.

    ``tier_value`` is the PriorityClass value of the workload's tier (``WorkloadProblem.tier_value``,
    from ``FleetPolicy.spec.priorityTiers``): higher is placed first.
    """

    workload: str
    pool: str
    tp: int
    replicas: int
    tier_value: int
    role: str = "colocated"

    @property
    def key(self) -> tuple[str, str, int, str]:
        return (self.workload, self.pool, self.tp, self.role)


def groups_from_plan(plan, tier_values: Mapping[str, int]) -> list[ReplicaGroup]:
    """The replica groups of a ``solver.plan.Plan`` (``plan.assignments``), one per (workload,
    pool, TP, role); assignments of the same key are merged.

    Args:
        tier_values: workload key -> tier value, e.g. ``{w.key: w.tier_value for w in problem.workloads}``.

    Raises:
        ValueError: an assignment whose workload has no tier value (names the workload).
    """
    merged: dict[tuple, int] = defaultdict(int)
    for a in plan.assignments:
        if a.workload not in tier_values:
            raise ValueError(f"plan assignment of workload {a.workload!r} (pool {a.pool}, TP {a.tp}): "
                             f"no tier value given for this workload")
        if a.replicas > 0:
            merged[(a.workload, a.pool, a.tp, a.role)] += a.replicas
    return [ReplicaGroup(w, p, tp, n, int(tier_values[w]), role) for (w, p, tp, role), n in merged.items()]


def offline_nodes(pool: str, max_gpus: int, gpus_per_node: int) -> list[Node]:
    """Nodes of a pool planned offline: ``max_gpus // gpus_per_node`` full nodes of
    ``gpus_per_node`` GPUs (``GPUPool.spec.gpusPerNode``) plus one node holding the remainder, since
    ``spec.maxGPUs`` caps what the fleet may use. Names are ``<pool>-<i>``.

    Also the model of an autoscaled pool (Karpenter, Cluster Autoscaler): nodes of the pool's shape
    up to ``maxGPUs``, whatever is present now.

    Raises:
        ValueError: ``gpus_per_node`` < 1 or ``max_gpus`` < 0 (names the pool and field).
    """
    if gpus_per_node < 1:
        raise ValueError(f"GPUPool {pool}: spec.gpusPerNode must be at least 1, got {gpus_per_node}")
    if max_gpus < 0:
        raise ValueError(f"GPUPool {pool}: spec.maxGPUs must not be negative, got {max_gpus}")
    full, rest = divmod(max_gpus, gpus_per_node)
    sizes = [gpus_per_node] * full + ([rest] if rest else [])
    width = len(str(max(len(sizes) - 1, 0)))
    return [Node(f"{pool}-{i:0{width}d}", pool, g) for i, g in enumerate(sizes)]


# ------------------------------------------------------------------------------ live cluster nodes


@dataclass
class ClusterNodes:
    """Nodes built from live objects, and why other nodes were left out (one line each)."""

    nodes: list[Node]
    notes: list[str] = field(default_factory=list)


def _gpu_count(resources: Mapping | None, where: str) -> int:
    raw = (resources or {}).get(GPU_RESOURCE)
    if raw is None:
        return 0
    try:
        # extended resources are whole numbers (Kubernetes "Extended resources": no fractions)
        value = int(str(raw))
    except ValueError:
        raise ValueError(f"{where}[{GPU_RESOURCE!r}]: {str(raw)[:40]!r} is not a whole number of GPUs") from None
    if value < 0:
        raise ValueError(f"{where}[{GPU_RESOURCE!r}]: {value} is negative")
    return value


def pod_gpu_request(pod: Mapping) -> int:
    """GPUs a pod holds on its node: its effective request, as the scheduler computes it
    (Kubernetes docs, "Init containers: resource sharing within containers"): the larger of the sum
    over ``spec.containers`` and the largest single ``spec.initContainers`` request. For an extended
    resource a limit without a request means a request of the same amount.

    Args:
        pod: a Pod as a camelCase dict (the API's JSON, kopf's bodies, or
            ``ApiClient().sanitize_for_serialization(v1pod)``).

    Raises:
        ValueError: a GPU amount that is not a non-negative whole number (names the pod and container).
    """
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    ref = f"Pod {meta.get('namespace', '')}/{meta.get('name', '')}"

    def one(c: Mapping, kind: str) -> int:
        res = c.get("resources") or {}
        where = f"{ref} {kind} {c.get('name', '')!r} resources"
        req = _gpu_count(res.get("requests"), f"{where}.requests")
        return req if GPU_RESOURCE in (res.get("requests") or {}) else _gpu_count(res.get("limits"), f"{where}.limits")

    main = sum(one(c, "container") for c in spec.get("containers") or [])
    init = max((one(c, "initContainer") for c in spec.get("initContainers") or []), default=0)
    return max(main, init)


def _tolerated(taint: Mapping, tolerations: Iterable[Mapping]) -> bool:
    """Kubernetes toleration matching (core/v1 Toleration): empty effect matches every effect;
    operator Exists with an empty key matches every taint; Equal compares the value."""
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator", "Equal") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def nodes_from_cluster(pool_selectors: Mapping[str, Mapping[str, str]], node_objs: Iterable[Mapping],
                       pod_objs: Iterable[Mapping],
                       tolerations: Iterable[Mapping] = DEFAULT_TOLERATIONS) -> ClusterNodes:
    """The nodes of each pool from live Node and Pod objects.

    A node belongs to a pool when its labels contain every pair of the pool's
    ``spec.nodeSelector``. Its GPUs are ``status.allocatable["nvidia.com/gpu"]``; the GPUs held by
    pods bound to it (``spec.nodeName``) that are not finished (phase not Succeeded or Failed) and
    do not carry the ``llmfleet.dev/workload`` label count as foreign. Left out, each with a note:
    nodes without allocatable GPUs, cordoned (``spec.unschedulable``), not Ready, or with a
    NoSchedule/NoExecute taint that llmfleet's pods do not tolerate (``tolerations``). A node that
    matches several pools goes to the first of them by name (its GPUs must not count twice).

    Args:
        pool_selectors: pool name -> ``spec.nodeSelector``.
        node_objs, pod_objs: Node and Pod objects as camelCase dicts (the API's JSON, kopf's
            bodies, or ``ApiClient().sanitize_for_serialization(obj)``); pods of all namespaces.

    Returns:
        ``ClusterNodes`` with nodes sorted by name.

    Raises:
        ValueError: a GPU amount that is not a non-negative whole number (names the object and field).
    """
    foreign: dict[str, int] = defaultdict(int)
    for pod in pod_objs:
        node_name = (pod.get("spec") or {}).get("nodeName")
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if not node_name or LABEL_WORKLOAD in labels:
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue  # finished pods release their GPUs
        foreign[node_name] += pod_gpu_request(pod)
    tolerations = list(tolerations)
    nodes, notes = [], []
    for obj in sorted(node_objs, key=lambda n: (n.get("metadata") or {}).get("name", "")):
        meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        name, labels = meta.get("name", ""), meta.get("labels") or {}
        pools = sorted(p for p, sel in pool_selectors.items() if all(labels.get(k) == v for k, v in sel.items()))
        if not pools:
            continue
        allocatable = _gpu_count(status.get("allocatable"), f"Node {name} status.allocatable")
        if allocatable == 0:
            continue  # a node without GPUs (a CPU node an empty nodeSelector also matches)
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        blocking = [t for t in spec.get("taints") or []
                    if t.get("effect") in ("NoSchedule", "NoExecute") and not _tolerated(t, tolerations)]
        if spec.get("unschedulable"):
            notes.append(f"Node {name}: left out of pool {pools[0]}: cordoned (spec.unschedulable)")
        elif not ready:
            notes.append(f"Node {name}: left out of pool {pools[0]}: not Ready")
        elif blocking:
            notes.append(f"Node {name}: left out of pool {pools[0]}: taint {blocking[0].get('key')}:"
                         f"{blocking[0].get('effect')} not tolerated by llmfleet's pods")
        else:
            if len(pools) > 1:
                notes.append(f"Node {name}: matches the nodeSelector of pools {', '.join(pools)}; counted in {pools[0]}")
            nodes.append(Node(name, pools[0], allocatable, foreign.get(name, 0)))
    return ClusterNodes(nodes, notes)


def pool_inventory(nodes: Iterable[Node]) -> dict[str, dict[str, int]]:
    """Per pool: ``nodes``, ``allocatableGPUs``, ``foreignGPUs`` (held by other pods) and ``freeGPUs``
    (what llmfleet may use), for the GPUPool status. Pools sorted by name."""
    inv: dict[str, dict[str, int]] = {}
    for n in sorted(nodes, key=lambda n: (n.pool, n.name)):
        row = inv.setdefault(n.pool, {"nodes": 0, "allocatableGPUs": 0, "foreignGPUs": 0, "freeGPUs": 0})
        row["nodes"] += 1
        row["allocatableGPUs"] += n.allocatable_gpus
        row["foreignGPUs"] += min(n.foreign_gpus, n.allocatable_gpus)
        row["freeGPUs"] += n.free_gpus
    return inv


# ------------------------------------------------------------------------------------------ result


@dataclass(frozen=True)
class Binding:
    """``replicas`` replicas of a group placed on ``node``."""

    workload: str
    pool: str
    tp: int
    role: str
    node: str
    replicas: int


@dataclass(frozen=True)
class Unplaced:
    """Replicas of a group that fit no node, and why.

    ``reason_code``: ``no_nodes`` (the pool has no usable node), ``node_too_small`` (no node of the
    pool has ``tp`` allocatable GPUs), ``fragmented`` (enough free GPUs in total, but no node has
    ``tp`` of them), ``capacity`` (fewer free GPUs than ``tp`` left in the pool).
    """

    workload: str
    pool: str
    tp: int
    role: str
    tier_value: int
    replicas: int
    reason_code: str
    reason: str

    def to_dict(self) -> dict:
        return {"workload": self.workload, "pool": self.pool, "tensorParallelSize": self.tp, "role": self.role,
                "tierValue": self.tier_value, "replicas": self.replicas, "reasonCode": self.reason_code,
                "reason": self.reason}


@dataclass
class PlacementResult:
    """A placement.

    Attributes:
        status: ``optimal`` (every phase proven optimal) or ``feasible`` (a phase stopped at its limit).
        bindings: replicas per (group, node), in canonical order.
        unplaced: groups with replicas that fit nowhere, with the reason.
        placed_by_tier, wanted_by_tier: replicas placed / planned per tier value.
        stranded_gpus: per pool, free GPUs left that no group of the largest TP in use can take.
        nodes_used: per pool, names of the nodes holding at least one replica.
        free_after: per node, GPUs still free after the placement.
        phases: (phase name, CP-SAT status name) per phase, in order; ``ALL_PLACED`` and
            ``AT_BOUND`` for a phase whose best-fit hint was already optimal (no solve).
        solve_time_s: wall time of the whole placement, s.
    """

    status: str
    bindings: list[Binding]
    unplaced: list[Unplaced]
    placed_by_tier: dict[int, int]
    wanted_by_tier: dict[int, int]
    stranded_gpus: dict[str, int]
    nodes_used: dict[str, list[str]]
    free_after: dict[str, int]
    phases: list[tuple[str, str]]
    solve_time_s: float

    @property
    def all_placed(self) -> bool:
        return not self.unplaced

    def placed(self, key: tuple[str, str, int, str]) -> int:
        """Replicas placed of the group with key (workload, pool, tp, role)."""
        return sum(b.replicas for b in self.bindings if (b.workload, b.pool, b.tp, b.role) == key)

    def to_dict(self) -> dict:
        return {
            "status": self.status, "solveTimeSeconds": round(self.solve_time_s, 3),
            "nodesUsed": {p: len(v) for p, v in sorted(self.nodes_used.items())},
            "strandedGPUs": dict(sorted(self.stranded_gpus.items())),
            "bindings": [{"workload": b.workload, "pool": b.pool, "tensorParallelSize": b.tp, "role": b.role,
                          "node": b.node, "replicas": b.replicas} for b in self.bindings],
            "unplaced": [u.to_dict() for u in self.unplaced],
        }


# ------------------------------------------------------------------------------------------- place


def _canonical(groups: Iterable[ReplicaGroup], nodes: Iterable[Node]) -> tuple[list[ReplicaGroup], list[Node]]:
    """Validate and sort: groups by (tier desc, pool, workload, role, tp), merged by key; nodes by name."""
    merged: dict[tuple, ReplicaGroup] = {}
    for g in groups:
        if g.tp < 1 or g.replicas < 0:
            raise ValueError(f"replica group of workload {g.workload!r} in pool {g.pool}: tp must be >= 1 and "
                             f"replicas >= 0 (got tp={g.tp}, replicas={g.replicas})")
        old = merged.get(g.key)
        if old is not None and old.tier_value != g.tier_value:
            raise ValueError(f"workload {g.workload!r}: two tier values given ({old.tier_value}, {g.tier_value})")
        merged[g.key] = ReplicaGroup(g.workload, g.pool, g.tp, g.replicas + (old.replicas if old else 0),
                                     g.tier_value, g.role)
    out_groups = sorted((g for g in merged.values() if g.replicas > 0),
                        key=lambda g: (-g.tier_value, g.pool, g.workload, g.role, g.tp))
    seen: dict[str, Node] = {}
    for n in nodes:
        if n.name in seen:
            raise ValueError(f"node {n.name!r} given twice (pools {seen[n.name].pool} and {n.pool})")
        if n.allocatable_gpus < 0 or n.foreign_gpus < 0:
            raise ValueError(f"node {n.name!r}: allocatable_gpus and foreign_gpus must not be negative")
        seen[n.name] = n
    return out_groups, sorted(seen.values(), key=lambda n: n.name)


def _trim(nodes: list[Node], replicas: int) -> list[Node]:
    """Keep at most ``replicas`` nodes of each free size: each replica sits on one node, so more
    identical nodes than replicas cannot change the optimum; the first by name are kept."""
    kept, count = [], defaultdict(int)
    for n in nodes:
        if n.free_gpus == 0:
            continue
        if count[n.free_gpus] < replicas:
            count[n.free_gpus] += 1
            kept.append(n)
    return kept


def _greedy(groups: list[ReplicaGroup], free: list[int], start: list[list[int]] | None = None) -> list[list[int]]:
    """Best-fit decreasing, tier by tier (largest TP first within a tier): each replica goes to the
    node with the fewest free GPUs that still hold it (ties: node order). Starts from ``start``.
    Returns y[g][n]."""
    y = [row[:] for row in start] if start else [[0] * len(free) for _ in groups]
    left = [f - sum(groups[g].tp * y[g][n] for g in range(len(groups))) for n, f in enumerate(free)]
    order = sorted(range(len(groups)), key=lambda g: (-groups[g].tier_value, -groups[g].tp, g))
    for g in order:
        tp = groups[g].tp
        for _ in range(groups[g].replicas - sum(y[g])):
            fits = [n for n in range(len(free)) if left[n] >= tp]
            if not fits:
                break
            n = min(fits, key=lambda n: (left[n], n))
            y[g][n] += 1
            left[n] -= tp
    return y


def _by_tp(groups: list[ReplicaGroup], y: list[list[int]], n_nodes: int, tps: list[int]) -> list[dict[int, int]]:
    """Per node, replicas of each TP degree in y[g][n]."""
    return [{t: sum(y[g][n] for g in range(len(groups)) if groups[g].tp == t) for t in tps} for n in range(n_nodes)]


def _same_shape_classes(free: list[int]) -> list[list[int]]:
    """Indices of nodes with equal free GPUs, each class in node order."""
    classes: dict[int, list[int]] = defaultdict(list)
    for n, f in enumerate(free):
        classes[f].append(n)
    return [c for _, c in sorted(classes.items()) if len(c) > 1]


def _sorted_within_classes(x: list[dict[int, int]], classes: list[list[int]]) -> list[dict[int, int]]:
    """Permute node loads within each class of equal nodes so that GPUs used never increase along
    the class (the symmetry-breaking order of the model); the first node by name gets the most."""
    x = [dict(row) for row in x]
    for members in classes:
        rows = sorted((x[n] for n in members), key=lambda r: -sum(t * k for t, k in r.items()))
        for n, row in zip(members, rows):
            x[n] = row
    return x


def _spread(groups: list[ReplicaGroup], placed: list[int], x: list[dict[int, int]]) -> list[list[int]]:
    """y[g][n] from replicas placed per group and replicas per (node, TP): each TP degree's node
    slots, in node order, go to that degree's groups in canonical order."""
    y = [[0] * len(x) for _ in groups]
    for t in sorted({g.tp for g in groups}):
        slots = [n for n in range(len(x)) for _ in range(x[n].get(t, 0))]
        for g in (g for g in range(len(groups)) if groups[g].tp == t):
            for n in slots[:placed[g]]:
                y[g][n] += 1
            slots = slots[placed[g]:]
    return y


def _solve_pool(groups: list[ReplicaGroup], nodes: list[Node], det_limit_s: float, deadline: float,
                seed: int, phases: list[tuple[str, str]], pool: str) -> tuple[list[list[int]], bool]:
    """Lexicographic CP-SAT solves for one pool. Returns y[g][n] and whether every phase was optimal.

    Groups of one TP degree are interchangeable on a node, so the model counts replicas per
    (node, TP degree) and per group, tied per degree, instead of one variable per (group, node).
    """
    free = [n.free_gpus for n in nodes]
    G, N = len(groups), len(nodes)
    tps = sorted({g.tp for g in groups})
    per_tp = {t: sum(g.replicas for g in groups if g.tp == t) for t in tps}
    m = cp_model.CpModel()
    x = [{t: m.new_int_var(0, min(free[n] // t, per_tp[t]), f"x{n}_{t}") for t in tps} for n in range(N)]
    p = [m.new_int_var(0, g.replicas, f"p{gi}") for gi, g in enumerate(groups)]
    used_gpus = [sum(t * x[n][t] for t in tps) for n in range(N)]
    for n in range(N):
        m.add(used_gpus[n] <= free[n])
    for t in tps:
        m.add(sum(p[g] for g in range(G) if groups[g].tp == t) == sum(x[n][t] for n in range(N)))
    classes = _same_shape_classes(free)
    for members in classes:  # symmetry breaking: equal nodes filled in name order
        for a, b in zip(members, members[1:]):
            m.add(used_gpus[a] >= used_gpus[b])
    big_tp = max(tps)
    stranded, used = [], []
    for n in range(N):
        # free GPUs left = big_tp * q + r with 0 <= r < big_tp; minimising r leaves q = left // big_tp
        q = m.new_int_var(0, free[n] // big_tp, f"q{n}")
        r = m.new_int_var(0, big_tp - 1, f"r{n}")
        m.add(free[n] - used_gpus[n] == big_tp * q + r)
        stranded.append(r)
        u = m.new_bool_var(f"used{n}")
        m.add(used_gpus[n] <= free[n] * u)
        used.append(u)
    tiers = sorted({g.tier_value for g in groups}, reverse=True)
    objectives = [(f"{pool}: tier {t}", None, [g for g in range(G) if groups[g].tier_value == t]) for t in tiers]
    objectives += [(f"{pool}: {STRANDED}", STRANDED, sum(stranded)), (f"{pool}: {NODES_USED}", NODES_USED, sum(used))]

    y0 = _greedy(groups, free)
    best_p = [sum(row) for row in y0]
    best_x = _sorted_within_classes(_by_tp(groups, y0, N, tps), classes)
    all_optimal = True
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1  # one worker: a deterministic search
    solver.parameters.random_seed = seed
    solver.parameters.max_deterministic_time = det_limit_s
    for name, phase, obj in objectives:
        if isinstance(obj, list):  # a tier: maximise its replicas placed
            bound = sum(groups[g].replicas for g in obj)
            if sum(best_p[g] for g in obj) == bound:
                m.add(sum(p[g] for g in obj) == bound)  # the incumbent places the whole tier
                phases.append((name, "ALL_PLACED"))
                continue
            expr = sum(p[g] for g in obj)
            m.maximize(expr)
        else:
            expr = obj
            value = _incumbent_at_bound(phase, groups, best_p, best_x, free, big_tp)
            if value is not None:
                m.add(expr <= value)  # the incumbent is optimal: no solve needed
                phases.append((name, "AT_BOUND"))
                continue
            m.minimize(expr)
        m.clear_hints()
        for n in range(N):
            for t in tps:
                m.add_hint(x[n][t], best_x[n][t])
        for g in range(G):
            m.add_hint(p[g], best_p[g])
        solver.parameters.max_time_in_seconds = max(0.01, deadline - time.monotonic())
        status = solver.solve(m)
        phases.append((name, solver.status_name(status)))
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            all_optimal = False  # no solution in time: keep the previous one, which meets every constraint so far
            break
        all_optimal &= status == cp_model.OPTIMAL
        best_p = [int(solver.value(v)) for v in p]
        best_x = [{t: int(solver.value(x[n][t])) for t in tps} for n in range(N)]
        value = int(round(solver.objective_value))
        m.add(expr >= value if isinstance(obj, list) else expr <= value)  # keep this phase's result later
        if deadline - time.monotonic() <= 0:
            all_optimal = False
            break
    # a phase cut short may leave room; fill it greedily (adds replicas only, so no tier loses)
    return _greedy(groups, free, _spread(groups, best_p, best_x)), all_optimal


def _incumbent_at_bound(phase: str, groups: list[ReplicaGroup], placed: list[int], x: list[dict[int, int]],
                        free: list[int], big_tp: int) -> int | None:
    """The incumbent's value of ``phase`` (``STRANDED`` or ``NODES_USED``) when it equals a lower
    bound of that phase (so CP-SAT could not improve on it), else None. The bounds hold only with
    every replica placed (then the GPUs used, U, are fixed): stranded GPUs sum to the free GPUs
    left modulo the largest TP ``big_tp`` per node, so at least (Σ free - U) mod ``big_tp``;
    nodes used at least ceil(U / largest free count)."""
    if any(placed[g] != groups[g].replicas for g in range(len(groups))):
        return None
    used = [sum(t * k for t, k in row.items()) for row in x]
    total = sum(used)
    if phase == STRANDED:
        value, bound = sum((f - u) % big_tp for f, u in zip(free, used)), (sum(free) - total) % big_tp
    else:
        value, bound = sum(1 for u in used if u > 0), -(-total // max(free))
    return value if value <= bound else None


def _free_list(values: list[int]) -> str:
    vals = sorted((v for v in values if v > 0), reverse=True)
    shown = "+".join(str(v) for v in vals[:8]) + ("+..." if len(vals) > 8 else "")
    return f"{shown} over {len(vals)} node{'s' if len(vals) != 1 else ''}"


def _reason(g: ReplicaGroup, missing: int, pool_nodes: list[Node], free_after: dict[str, int],
            used_higher: int, used_other: int) -> Unplaced:
    """Why ``missing`` replicas of ``g`` fit no node of its pool, in numbers."""
    what = f"{missing} replica{'s' if missing != 1 else ''} of TP-{g.tp}"
    if not pool_nodes:
        code, why = "no_nodes", f"pool {g.pool} has no node with allocatable GPUs"
    elif max(n.allocatable_gpus for n in pool_nodes) < g.tp:
        code, why = "node_too_small", (f"no node of pool {g.pool} has {g.tp} GPUs "
                                       f"(largest: {max(n.allocatable_gpus for n in pool_nodes)} allocatable)")
    else:
        left = [free_after[n.name] for n in pool_nodes]
        alloc = sum(n.allocatable_gpus for n in pool_nodes)
        held = sum(min(n.foreign_gpus, n.allocatable_gpus) for n in pool_nodes)
        books = (f"pool {g.pool}: {alloc} GPUs allocatable on {len(pool_nodes)} nodes, {held} held by other pods, "
                 f"{used_higher} used by higher tiers, {used_other} by this and lower tiers")
        if sum(left) >= g.tp:
            code, why = "fragmented", f"free GPUs {_free_list(left)} cannot host a TP-{g.tp} group ({books})"
        elif sum(left) > 0:
            code, why = "capacity", f"only {sum(left)} GPUs free ({_free_list(left)}), a TP-{g.tp} group needs {g.tp} ({books})"
        else:
            code, why = "capacity", f"no GPU left free ({books})"
    return Unplaced(g.workload, g.pool, g.tp, g.role, g.tier_value, missing, code,
                    f"{g.workload}: {what} in pool {g.pool} not placed: {why}")


def place(groups: Iterable[ReplicaGroup], nodes: Iterable[Node], time_limit_s: float = 10.0,
          seed: int = 0) -> PlacementResult:
    """Place every replica of ``groups`` on one node of its pool (module docstring: objective).

    Args:
        groups: the plan's replica groups (``groups_from_plan``).
        nodes: the nodes of every pool (``offline_nodes``, ``nodes_from_cluster``).
        time_limit_s: wall-clock bound on the whole placement, s; each CP-SAT phase also gets an
            equal share of it as deterministic time, which is what normally stops it.
        seed: CP-SAT ``random_seed``.

    Returns:
        ``PlacementResult``. Pools are independent (a node belongs to one pool) and solved one by one.

    Raises:
        ValueError: a node named twice, negative GPU counts, a group with tp < 1 or negative
            replicas, one workload with two tier values.
    """
    if time_limit_s <= 0:
        raise ValueError(f"time_limit_s must be positive, got {time_limit_s}")
    t0 = time.monotonic()
    deadline = t0 + time_limit_s
    groups, nodes = _canonical(groups, nodes)
    by_pool_groups: dict[str, list[ReplicaGroup]] = defaultdict(list)
    for g in groups:
        by_pool_groups[g.pool].append(g)
    by_pool_nodes: dict[str, list[Node]] = defaultdict(list)
    for n in nodes:
        by_pool_nodes[n.pool].append(n)
    n_solves = sum(len({g.tier_value for g in gs}) + 2 for gs in by_pool_groups.values())
    det_limit_s = time_limit_s / max(1, n_solves)

    phases: list[tuple[str, str]] = []
    all_optimal = True
    placed_count: dict[tuple, int] = {}
    bindings: list[Binding] = []
    free_after = {n.name: n.free_gpus for n in nodes}
    for pool in sorted(by_pool_groups):
        gs = by_pool_groups[pool]
        model_nodes = _trim(by_pool_nodes.get(pool, []), sum(g.replicas for g in gs))
        if not model_nodes:
            continue
        y, optimal = _solve_pool(gs, model_nodes, det_limit_s, deadline, seed, phases, pool)
        all_optimal &= optimal
        for gi, g in enumerate(gs):
            placed_count[g.key] = sum(y[gi])
            for ni, n in enumerate(model_nodes):
                if y[gi][ni]:
                    bindings.append(Binding(g.workload, g.pool, g.tp, g.role, n.name, y[gi][ni]))
                    free_after[n.name] -= g.tp * y[gi][ni]

    unplaced = []
    for pool in sorted(by_pool_groups):
        gs = by_pool_groups[pool]
        for g in gs:
            missing = g.replicas - placed_count.get(g.key, 0)
            if missing:
                higher = sum(h.tp * placed_count.get(h.key, 0) for h in gs if h.tier_value > g.tier_value)
                other = sum(h.tp * placed_count.get(h.key, 0) for h in gs if h.tier_value <= g.tier_value)
                unplaced.append(_reason(g, missing, by_pool_nodes.get(pool, []), free_after, higher, other))
    wanted, got = defaultdict(int), defaultdict(int)
    for g in groups:
        wanted[g.tier_value] += g.replicas
        got[g.tier_value] += placed_count.get(g.key, 0)
    stranded, used = {}, {}
    for pool, gs in by_pool_groups.items():
        big = max(g.tp for g in gs)
        stranded[pool] = sum(free_after[n.name] % big for n in by_pool_nodes.get(pool, []))
        used[pool] = sorted({b.node for b in bindings if b.pool == pool})
    return PlacementResult("optimal" if all_optimal else "feasible", bindings, unplaced,
                           dict(sorted(got.items(), reverse=True)), dict(sorted(wanted.items(), reverse=True)),
                           stranded, used, free_after, phases, time.monotonic() - t0)


# --------------------------------------------------------------------------------- cuts for the MILP


@dataclass(frozen=True)
class ShapeCut:
    """A node-shape constraint for the MILP over the configs c of ``pool`` with ``tp_c >= min_tp``
    (all workloads, all roles):

        Σ_c tp_c · n_c <= max_gpus        when ``max_gpus`` is not None, else
        Σ_c n_c        <= max_groups

    ``exact``: the pool's TP degrees form a divisible chain, so this pool's cuts together are
    necessary and sufficient for its groups to fit its nodes.
    """

    pool: str
    min_tp: int
    max_gpus: int | None
    max_groups: int
    exact: bool


def _divisible_chain(tps: list[int]) -> bool:
    return all(b % a == 0 for a, b in zip(tps, tps[1:]))


def shape_cuts(nodes: Iterable[Node], tps_by_pool: Mapping[str, Iterable[int]]) -> list[ShapeCut]:
    """Linear cuts that make the MILP's GPU counts respect node shapes, from free GPUs per node.

    For a pool with free GPUs f_n on its nodes and each TP degree t the MILP may use there:
    ``max_groups(t) = Σ_n floor(f_n / t)``: a node holds at most floor(f_n/t) groups of t or more
    GPUs, so the count cut is always valid. Where every TP degree >= t in the pool is a multiple of
    t, the groups of TP >= t on a node use a multiple of t GPUs, at most t·floor(f_n/t), so
    ``max_gpus(t) = t · max_groups(t)`` is valid too (the stronger form, given then).

    Exactness for a divisible chain t_1 | t_2 | ... | t_k (e.g. 1, 2, 4, 8): place the groups
    largest first. Once the groups of TP >= t_i are placed anywhere, every node's remaining free
    GPUs drop by a multiple of t_i, so the number of TP-t_i slots left,
    Σ_n floor(f_n/t_i) - (GPUs of TP >= t_{i+1} groups)/t_i, does not depend on where they went.
    Hence the TP-t_i groups fit iff the GPU cut at t_i holds, for every i: a plan meeting all of a
    pool's cuts is placed completely by ``place`` (and by any first-fit in decreasing TP order,
    such as the kube-scheduler given pods largest first).

    Args:
        nodes: nodes of every pool.
        tps_by_pool: per pool, the TP degrees its configs may use; pools absent get no cut.

    Returns:
        One cut per (pool, TP degree), sorted by pool then TP. A pool without nodes gets cuts of 0.
    """
    free: dict[str, list[int]] = defaultdict(list)
    for n in nodes:
        free[n.pool].append(n.free_gpus)
    cuts = []
    for pool in sorted(tps_by_pool):
        tps = sorted(set(int(t) for t in tps_by_pool[pool]))
        if any(t < 1 for t in tps):
            raise ValueError(f"pool {pool}: TP degrees must be >= 1, got {tps}")
        exact = _divisible_chain(tps)
        for t in tps:
            groups = sum(f // t for f in free.get(pool, []))
            gpu_form = all(u % t == 0 for u in tps if u >= t)
            cuts.append(ShapeCut(pool, t, t * groups if gpu_form else None, groups, exact))
    return cuts


@dataclass(frozen=True)
class PoolTPLimit:
    """At most ``max_replicas`` replicas of TP ``tp`` in ``pool`` summed over workloads and roles
    (Σ_{c: pool, tp_c = tp} n_c <= max_replicas)."""

    pool: str
    tp: int
    max_replicas: int


def limits_from_placement(groups: Iterable[ReplicaGroup], result: PlacementResult) -> list[PoolTPLimit]:
    """Per (pool, TP) with unplaced replicas, a limit of the replicas the placement did place there.

    Contract for the re-solve loop (needed only when ``shape_cuts`` are not exact, i.e. a pool's TP
    degrees are not a divisible chain): add these limits to the MILP, re-solve, place again, and
    repeat until ``result.all_placed``. This is a restriction, not a valid inequality: it may cut
    off a better plan that packs differently, but each round either places everything or lowers an
    integer bound (and a bound of 0 always places), so the loop ends. Combine it with ``shape_cuts``.
    """
    placed: dict[tuple[str, int], int] = defaultdict(int)
    for key in sorted({g.key for g in groups}):
        placed[(key[1], key[2])] += result.placed(key)
    short = sorted({(u.pool, u.tp) for u in result.unplaced})
    return [PoolTPLimit(pool, tp, placed[(pool, tp)]) for pool, tp in short]
