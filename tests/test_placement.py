"""Node-level placement (solver/placement.py): CP-SAT against brute force, fragmentation, tier
order, foreign pods, determinism, node-shape cuts for the MILP."""

import itertools
import random

import numpy as np
import pytest

from llmfleet.api.loader import load_fleet
from llmfleet.solver.milp import solve
from llmfleet.solver.placement import (Node, ReplicaGroup, groups_from_plan, limits_from_placement, nodes_from_cluster,
                                       offline_nodes, place, pod_gpu_request, pool_inventory, shape_cuts)
from llmfleet.solver.plan import Assignment, Plan
from llmfleet.solver.problem import build_problem

from conftest import EXAMPLES

TPS = (1, 2, 4, 8)


# --------------------------------------------------------------------------------- brute force


def _score(groups, nodes, y):
    """The placement's lexicographic key, computed from its definition (module docstring): replicas
    placed per tier (highest tier first), then fewer stranded GPUs (free mod largest TP of the
    pool), then fewer nodes touched. Larger is better."""
    tiers = sorted({g.tier_value for g in groups}, reverse=True)
    placed = [sum(sum(y[gi]) for gi, g in enumerate(groups) if g.tier_value == t) for t in tiers]
    stranded = used = 0
    for ni, n in enumerate(nodes):
        pool_groups = [g for g in groups if g.pool == n.pool]
        left = n.free_gpus - sum(g.tp * y[gi][ni] for gi, g in enumerate(groups))
        if pool_groups:
            stranded += left % max(g.tp for g in pool_groups)
        used += any(y[gi][ni] for gi in range(len(groups)))
    return (*placed, -stranded, -used)


def brute_force(groups, nodes):
    """Best key over every way to split each group's replicas over the nodes of its pool."""
    options = []
    for g in groups:
        eligible = [ni for ni, n in enumerate(nodes) if n.pool == g.pool]
        opts = []
        for counts in itertools.product(range(g.replicas + 1), repeat=len(eligible)):
            if sum(counts) <= g.replicas:
                row = [0] * len(nodes)
                for ni, c in zip(eligible, counts):
                    row[ni] = c
                opts.append(row)
        options.append(opts)
    best = None
    for y in itertools.product(*options):
        if all(sum(g.tp * y[gi][ni] for gi, g in enumerate(groups)) <= n.free_gpus for ni, n in enumerate(nodes)):
            key = _score(groups, nodes, y)
            best = key if best is None or key > best else best
    return best


def result_matrix(groups, nodes, result):
    index = {n.name: ni for ni, n in enumerate(nodes)}
    y = [[0] * len(nodes) for _ in groups]
    for b in result.bindings:
        gi = next(i for i, g in enumerate(groups) if g.key == (b.workload, b.pool, b.tp, b.role))
        y[gi][index[b.node]] += b.replicas
    return y


def random_case(rng: random.Random, pools=("p",)):
    nodes = []
    for pool in pools:
        for i in range(rng.randint(1, 3)):
            alloc = rng.choice([2, 4, 8])
            nodes.append(Node(f"{pool}-n{i}", pool, alloc, rng.randint(0, alloc // 2) if rng.random() < 0.5 else 0))
    groups = [ReplicaGroup(f"w{k}", rng.choice(pools), rng.choice(TPS), rng.randint(1, 3), rng.choice([10, 100, 1000]))
              for k in range(rng.randint(1, 3))]
    return groups, nodes


@pytest.mark.parametrize("pools", [("p",), ("p", "q")])
def test_cp_sat_matches_brute_force_on_small_cases(pools):
    """200 random small cases: CP-SAT reaches exactly the brute-force optimum of the lexicographic
    key (per-tier placed replicas, stranded GPUs, nodes used), and its placement is feasible;
    among them cases where the best-fit hint met a phase's lower bound and CP-SAT was skipped."""
    rng = random.Random(20240611 + len(pools))
    skipped = 0
    for case in range(100):
        groups, nodes = random_case(rng, pools)
        result = place(groups, nodes)
        assert result.status == "optimal"
        skipped += any(status == "AT_BOUND" for _, status in result.phases)
        y = result_matrix(groups, nodes, result)
        for ni, n in enumerate(nodes):
            assert sum(g.tp * y[gi][ni] for gi, g in enumerate(groups)) <= n.free_gpus
        assert _score(groups, nodes, y) == brute_force(groups, nodes), (case, groups, nodes)
        for g, row in zip(groups, y):  # every unplaced replica is reported, with a reason
            missing = g.replicas - sum(row)
            reported = sum(u.replicas for u in result.unplaced if (u.workload, u.pool, u.tp, u.role) == g.key)
            assert reported == missing
    assert skipped > 0


# --------------------------------------------------------------------------------- fragmentation


def test_free_gpus_split_two_plus_two_cannot_host_tp4():
    """4 GPUs are free in the pool, but 2 on each node: a TP-4 group (one pod of 4 GPUs) fits
    neither node, and the reason says so in numbers."""
    nodes = [Node("a", "h100", 8, foreign_gpus=6), Node("b", "h100", 8, foreign_gpus=6)]
    result = place([ReplicaGroup("default/llama-70b", "h100", 4, 1, 1000)], nodes)
    assert result.bindings == []
    [u] = result.unplaced
    assert (u.replicas, u.reason_code) == (1, "fragmented")
    assert "free GPUs 2+2 over 2 nodes cannot host a TP-4 group" in u.reason
    assert "12 held by other pods" in u.reason


def test_same_free_count_on_one_node_places_tp4():
    nodes = [Node("a", "h100", 8, foreign_gpus=4), Node("b", "h100", 8, foreign_gpus=8)]
    result = place([ReplicaGroup("default/llama-70b", "h100", 4, 1, 1000)], nodes)
    assert result.all_placed
    assert [(b.node, b.replicas) for b in result.bindings] == [("a", 1)]
    assert result.nodes_used == {"h100": ["a"]}
    assert result.free_after == {"a": 0, "b": 0}


def test_packing_keeps_a_whole_node_for_the_largest_tp():
    """Two TP-4 groups and one TP-8 on two 8-GPU nodes fit only if both TP-4 share a node; with
    the TP-8 absent, packing still puts both TP-4 on one node (fewer nodes touched) and leaves a
    whole node free."""
    nodes = offline_nodes("p", 16, 8)
    full = place([ReplicaGroup("a", "p", 4, 2, 10), ReplicaGroup("b", "p", 8, 1, 10)], nodes)
    assert full.all_placed and full.stranded_gpus == {"p": 0}
    only4 = place([ReplicaGroup("a", "p", 4, 2, 10)], nodes)
    assert only4.all_placed and len(only4.nodes_used["p"]) == 1
    assert sorted(only4.free_after.values()) == [0, 8]


def test_node_too_small_and_no_nodes_reasons():
    result = place([ReplicaGroup("w", "a10g", 8, 1, 10), ReplicaGroup("v", "l4", 1, 2, 10)],
                   offline_nodes("a10g", 8, 4))
    reasons = {u.pool: u for u in result.unplaced}
    assert reasons["a10g"].reason_code == "node_too_small"
    assert "largest: 4 allocatable" in reasons["a10g"].reason
    assert (reasons["l4"].reason_code, reasons["l4"].replicas) == ("no_nodes", 2)


# --------------------------------------------------------------------------------- tier order


def test_higher_tier_placed_first_when_capacity_is_short():
    """One 8-GPU node. bronze (listed first) wants TP-8, gold TP-4: gold is placed, bronze is
    reported with the GPUs gold took."""
    groups = [ReplicaGroup("bronze", "p", 8, 1, 1_000), ReplicaGroup("gold", "p", 4, 1, 1_000_000)]
    result = place(groups, offline_nodes("p", 8, 8))
    assert result.placed(("gold", "p", 4, "colocated")) == 1
    [u] = result.unplaced
    assert (u.workload, u.reason_code) == ("bronze", "capacity")
    assert "4 used by higher tiers" in u.reason


def test_one_higher_tier_replica_outweighs_any_number_of_lower_ones():
    """Eight TP-1 bronze replicas or one TP-8 gold replica fit an 8-GPU node; a count-maximising
    packer would take the eight, the tier order takes gold."""
    groups = [ReplicaGroup("bronze", "p", 1, 8, 1_000), ReplicaGroup("gold", "p", 8, 1, 100_000)]
    result = place(groups, offline_nodes("p", 8, 8))
    assert result.placed_by_tier == {100_000: 1, 1_000: 0}
    assert result.unplaced[0].replicas == 8


# --------------------------------------------------------------------------------- live nodes


def _node(name, gpus, labels=None, ready=True, unschedulable=False, taints=None):
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {"unschedulable": unschedulable, "taints": taints or []},
            "status": {"allocatable": {"cpu": "64", "nvidia.com/gpu": str(gpus)} if gpus is not None else {"cpu": "8"},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def _pod(name, node, gpus, labels=None, phase="Running", limits_only=False, init_gpus=None):
    res = {"limits": {"nvidia.com/gpu": str(gpus)}} if limits_only else {
        "requests": {"nvidia.com/gpu": str(gpus)}, "limits": {"nvidia.com/gpu": str(gpus)}}
    spec = {"nodeName": node, "containers": [{"name": "main", "resources": res}, {"name": "side", "resources": {}}]}
    if init_gpus is not None:
        spec["initContainers"] = [{"name": "init", "resources": {"requests": {"nvidia.com/gpu": str(init_gpus)}}}]
    return {"metadata": {"name": name, "namespace": "ml", "labels": labels or {}}, "spec": spec, "status": {"phase": phase}}


def test_nodes_from_cluster_subtracts_foreign_pods_only():
    h100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    nodes = [_node("h-0", 8, h100), _node("h-1", 8, h100), _node("h-2", 8, h100, unschedulable=True),
             _node("h-3", 8, h100, ready=False), _node("h-4", 8, h100, taints=[{"key": "dedicated", "value": "x",
                                                                                 "effect": "NoSchedule"}]),
             _node("h-5", 8, h100, taints=[{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]),
             _node("l4-0", 8, {"nvidia.com/gpu.product": "NVIDIA-L4"}), _node("cpu-0", None, h100)]
    pods = [_pod("training", "h-0", 6),                                        # foreign: counted
            _pod("vllm", "h-1", 8, labels={"llmfleet.dev/workload": "chat"}),  # llmfleet's own: not counted
            _pod("done", "h-1", 8, phase="Succeeded"),                         # finished: released
            _pod("notebook", "h-5", 1, limits_only=True, init_gpus=3),         # max(1, init 3) = 3
            _pod("pending", None, 8)]
    got = nodes_from_cluster({"h100": h100}, list(reversed(nodes)), pods)
    assert [(n.name, n.allocatable_gpus, n.foreign_gpus, n.free_gpus) for n in got.nodes] == [
        ("h-0", 8, 6, 2), ("h-1", 8, 0, 8), ("h-5", 8, 3, 5)]
    assert all(n.pool == "h100" for n in got.nodes)
    notes = "\n".join(got.notes)
    assert "h-2" in notes and "cordoned" in notes and "h-3" in notes and "not Ready" in notes
    assert "taint dedicated:NoSchedule" in notes
    assert pool_inventory(got.nodes) == {"h100": {"nodes": 3, "allocatableGPUs": 24, "foreignGPUs": 9, "freeGPUs": 15}}
    # the foreign pod's GPUs are not offered: a TP-4 group cannot go to h-0
    result = place([ReplicaGroup("w", "h100", 4, 3, 10)], got.nodes)
    assert result.placed(("w", "h100", 4, "colocated")) == 3
    assert "h-0" not in result.nodes_used["h100"]


def test_pod_gpu_request_rules_and_bad_quantities():
    assert pod_gpu_request(_pod("a", "n", 2)) == 2
    assert pod_gpu_request(_pod("a", "n", 2, limits_only=True)) == 2
    assert pod_gpu_request(_pod("a", "n", 1, init_gpus=4)) == 4
    with pytest.raises(ValueError, match=r"Pod ml/bad container 'main'.*'half' is not a whole number"):
        pod_gpu_request(_pod("bad", "n", "half"))
    with pytest.raises(ValueError, match=r"Node h-0 status.allocatable"):
        nodes_from_cluster({"p": {}}, [_node("h-0", "0.5")], [])


def test_node_matching_two_pools_counts_once():
    got = nodes_from_cluster({"spot": {"zone": "a"}, "ondemand": {}}, [_node("n", 8, {"zone": "a"})], [])
    assert [(n.name, n.pool) for n in got.nodes] == [("n", "ondemand")]
    assert "matches the nodeSelector of pools ondemand, spot" in got.notes[0]


# --------------------------------------------------------------------------------- determinism


def test_same_input_in_any_order_gives_the_same_placement():
    rng = random.Random(7)
    nodes = [Node(f"n{i:02d}", f"p{i % 3}", 8, rng.choice([0, 0, 1, 2, 3, 6])) for i in range(30)]
    groups = [ReplicaGroup(f"w{k}", f"p{k % 3}", rng.choice(TPS), rng.randint(1, 4), rng.choice([1, 10, 100]))
              for k in range(24)]
    first = place(groups, nodes)
    assert first.unplaced  # capacity is short, so the choice of what to leave out matters too
    for seed in range(3):
        g2, n2 = groups[:], nodes[:]
        random.Random(seed).shuffle(g2)
        random.Random(seed + 100).shuffle(n2)
        again = place(g2, n2)
        assert again.bindings == first.bindings
        assert again.unplaced == first.unplaced


# --------------------------------------------------------------------------------- MILP feedback


def test_shape_cuts_are_exact_for_divisible_tp_degrees():
    """For TP {1,2,4,8}: a random plan meets every cut of its pool exactly when ``place`` places
    all of it (the cuts are necessary and sufficient, shape_cuts docstring)."""
    rng = random.Random(11)
    agree = {True: 0, False: 0}
    for _ in range(200):
        nodes = [Node(f"n{i}", "p", 8, rng.randint(0, 8)) for i in range(rng.randint(1, 4))]
        counts = {tp: rng.randint(0, 3) for tp in TPS}
        groups = [ReplicaGroup(f"w{tp}", "p", tp, n, 10) for tp, n in counts.items() if n]
        cuts = shape_cuts(nodes, {"p": TPS})
        assert all(c.exact and c.max_gpus is not None for c in cuts)
        meets = all(sum(tp * n for tp, n in counts.items() if tp >= c.min_tp) <= c.max_gpus for c in cuts)
        assert place(groups, nodes).all_placed == meets
        agree[meets] += 1
    assert agree[True] > 20 and agree[False] > 20  # both sides exercised


def test_shape_cuts_for_non_divisible_degrees_use_counts():
    """Free 8 and 5 GPUs. TP 2: floor(8/2) + floor(5/2) = 6 groups, but a TP-3 group uses 3 GPUs, not
    a multiple of 2, so no GPU form. TP 3: floor(8/3) + floor(5/3) = 3 groups = 9 GPUs."""
    cuts = shape_cuts([Node("a", "p", 8, 0), Node("b", "p", 8, 3)], {"p": [2, 3]})
    assert [(c.min_tp, c.max_gpus, c.max_groups, c.exact) for c in cuts] == [(2, None, 6, False), (3, 9, 3, False)]


def test_limits_from_placement_for_a_re_solve():
    """Two 4-GPU nodes hold 8 GPUs, but TP-3 and TP-2 groups cannot share one (3 + 2 > 4): the
    limit for TP-2 is what was placed, 0."""
    groups = [ReplicaGroup("a", "p", 3, 2, 100), ReplicaGroup("b", "p", 2, 1, 10)]
    result = place(groups, offline_nodes("p", 8, 4))
    assert result.placed(("a", "p", 3, "colocated")) == 2
    [limit] = limits_from_placement(groups, result)
    assert (limit.pool, limit.tp, limit.max_replicas) == ("p", 2, 0)
    assert result.unplaced[0].reason_code == "fragmented"


# --------------------------------------------------------------------------------- inputs


def test_offline_nodes_from_gpus_per_node():
    assert [(n.name, n.allocatable_gpus) for n in offline_nodes("a10g", 20, 8)] == [
        ("a10g-0", 8), ("a10g-1", 8), ("a10g-2", 4)]
    assert offline_nodes("x", 0, 8) == []
    with pytest.raises(ValueError, match="GPUPool x: spec.gpusPerNode"):
        offline_nodes("x", 8, 0)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="node 'a' given twice"):
        place([], [Node("a", "p", 8), Node("a", "q", 8)])
    with pytest.raises(ValueError, match="workload 'w' in pool p: tp must be >= 1"):
        place([ReplicaGroup("w", "p", 0, 1, 1)], [])


def test_real_plan_from_the_examples_is_placed():
    """The MILP's plan for examples/ on nodes of each pool's gpusPerNode (examples/gpupools.yaml)."""
    fp = build_problem(load_fleet([EXAMPLES]))
    plan = solve(fp)
    groups = groups_from_plan(plan, {w.key: w.tier_value for w in fp.workloads})
    assert sum(g.replicas * g.tp for g in groups) == plan.total_gpus
    nodes = [n for p in fp.pools.values() for n in offline_nodes(p.name, p.max_gpus, p.gpus_per_node)]
    result = place(groups, nodes)
    assert result.all_placed and result.status == "optimal"
    assert sum(b.replicas * b.tp for b in result.bindings) == plan.total_gpus


def test_groups_from_plan_needs_every_tier():
    a = Assignment("ns/w", "p", "H100-SXM", 2, 3, 6, 0.0, 1.0, 0.5, np.zeros(1))
    plan = Plan("optimal", 0.0, None, None, None, 0.0, "test", [a, a], [], [])
    [g] = groups_from_plan(plan, {"ns/w": 7})
    assert (g.replicas, g.tier_value) == (6, 7)
    with pytest.raises(ValueError, match="workload 'ns/w'.*no tier value"):
        groups_from_plan(plan, {})
