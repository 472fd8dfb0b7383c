"""A one-workload change among many, on the local control plane (e2e/controlplane): how long the
operator takes to re-plan, and which Deployments it touches (issue 15: only that workload's).

    python bench/operator_replan.py [--workloads 100] [--changes 2]

The fleet is ``bench/solver_scale.py``'s (catalogue models, three real length profiles, three
tiers, ten GPU pools), with ample pools (``autoscaled``: the cluster has no nodes), applied with kubectl to a cluster where the operator runs
(``llmfleet operator``, as the chart runs it). Once its Deployments have settled (no change for
``--settle`` seconds), one workload's ``spec.traffic.requestRatePerSecond`` is raised by 20% with
``kubectl patch``, and the Deployments settle again. For each change it prints:

- the seconds from the patch to the operator's "solved" log line (kubectl, the watch event,
  debounce, the reconcile's reads of the cluster, capacity model of the changed fleet, MILP) and
  the line itself, which gives the MILP's time and, before it, the cluster read and the capacity
  model;
- the Deployments created, deleted and changed (``metadata.generation`` or ``spec.replicas``),
  split into the changed workload's and every other workload's.

Target: no other workload's Deployment touched; the re-plan in under 5 s (issue 15 item 3).

With ``--scarcity F`` the pools are binding instead, as in ``bench/solver_scale.py`` (a) and (c):
each pool's ``maxGPUs`` is the share F of the GPUs an ample plan of the same fleet uses there
(``llmfleet``'s solver, run here first with a 120-s limit), in whole nodes, so the operator's plans
shed and every re-plan is one under a shortage (the running plan's shortfall read from its last
plan).

It also prints the operator's memory (issue 15 item 7; the chart's ``resources`` are set from it)
after the first plan, after each change and at the end: the operator process's peak resident set
(``VmHWM`` in ``/proc/<pid>/status``, the kernel's high-water mark, so a peak between reports
counts) and its resident set now (``VmRSS``). With ``--planner-workers 1`` (the default, as the
chart's) the operator does not fork (checked by sampling its descendants once, in the run the
chart's figures come from); the worker processes of ``--planner-workers N`` are not counted.
Linux only.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from e2e.controlplane.localcluster import LocalCluster  # noqa: E402
from solver_scale import (AMPLE_GPUS, POOLS, build, fleet_documents, length_profiles, scarce_caps,  # noqa: E402
                          timed_solve, workload_specs)

SOLVED = re.compile(r"solved (\d+) workloads on (\d+) pools: (\w+), ([\d.]+|None) USD/h in ([\d.]+)s")


def deployments(cluster: LocalCluster, namespace: str) -> dict[str, tuple[str, int, int]]:
    """name -> (uid, generation, spec.replicas) of the Deployments in ``namespace``."""
    items = json.loads(cluster.kubectl("get", "deployments", "-n", namespace, "-o", "json").stdout)["items"]
    return {d["metadata"]["name"]: (d["metadata"]["uid"], d["metadata"].get("generation", 0),
                                    d["spec"].get("replicas") or 0) for d in items}


def planning(log: Path) -> bool:
    """Whether the operator's log shows a plan still coming: a solve not yet applied ("solved"
    with no "new plan" or "reconcile finished with errors" line after it), or a follow-up announced ("re-planning from this plan",
    ``operator.handlers.FollowUps``) with no solve after it. A follow-up's solve writes no
    Deployment for as long as it runs (20 s and more at 100 workloads), so quiet Deployments
    alone read as settled while the plan was still moving."""
    busy = False
    for line in log.read_text(errors="replace").splitlines():
        if SOLVED.search(line) or "re-planning from this plan" in line:
            busy = True
        elif "new plan (" in line or "reconcile finished with errors" in line:
            busy = False
    return busy


def settle(cluster: LocalCluster, namespace: str, quiet_s: float, timeout_s: float, log: Path) -> dict:
    """Wait until the Deployments exist and have not changed for ``quiet_s`` while the operator
    has no plan coming (``planning``); return them."""
    t0 = time.monotonic()
    last, since = None, time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        now = deployments(cluster, namespace)
        if now != last or planning(log):
            last, since = now, time.monotonic()
        elif now and time.monotonic() - since >= quiet_s:
            return now
        time.sleep(1.0)
    raise RuntimeError(f"Deployments did not settle within {timeout_s:.0f} s")


def solved_lines(log: Path) -> list[tuple[float, str]]:
    """(seconds the solve took, the line) for each 'solved' line of the operator's log so far."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = SOLVED.search(line)
        if m:
            out.append((float(m.group(5)), line))
    return out


def _status_kib(pid: int, field: str) -> int:
    """``field`` (VmRSS, VmHWM) of /proc/<pid>/status in KiB; 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def memory_line(pid: int, when: str) -> str:
    """The operator's peak resident set (VmHWM: the kernel's high-water mark, so a peak between two
    reports counts) and its resident set now (VmRSS)."""
    hwm, rss = _status_kib(pid, "VmHWM"), _status_kib(pid, "VmRSS")
    return f"operator memory {when}: peak RSS (VmHWM) {hwm / 1024:.0f} MiB, RSS now {rss / 1024:.0f} MiB"


def replan_messages(cluster: LocalCluster) -> list[str]:
    """The plan's messages about the re-plan itself (what it held, planned afresh and moved), from
    the FleetPolicy's status (``status.messages``)."""
    policy = json.loads(cluster.kubectl("get", "fleetpolicies", "default", "-o", "json").stdout)
    return [m for m in (policy.get("status") or {}).get("messages") or [] if "re-plan" in m]


def diff(before: dict, after: dict, workload: str) -> dict[str, dict[str, list[str]]]:
    """Deployments created, deleted and changed, for ``workload``'s own and for the others'."""
    out = {"changed workload": {"created": [], "deleted": [], "changed": []},
           "other workloads": {"created": [], "deleted": [], "changed": []}}
    mine = lambda name: name.startswith(f"{workload}-")  # noqa: E731 (render.deployment_name)
    for name in set(before) | set(after):
        side = out["changed workload" if mine(name) else "other workloads"]
        if name not in before:
            side["created"].append(name)
        elif name not in after:
            side["deleted"].append(name)
        elif before[name][0] != after[name][0] or before[name][1:] != after[name][1:]:
            side["changed"].append(name)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", type=int, default=100)
    ap.add_argument("--changes", type=int, default=2, help="workloads changed, one after the other")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--settle", type=float, default=20.0, help="quiet seconds that count as settled")
    ap.add_argument("--time-limit", type=float, default=30.0, help="FleetPolicy spec.solver.timeLimitSeconds")
    ap.add_argument("--planner-workers", type=int, default=1,
                    help="llmfleet operator --planner-workers (capacity model processes; default 1)")
    ap.add_argument("--scarcity", type=float, default=None,
                    help="binding pools: this share of an ample plan's GPUs per pool (bench/solver_scale.py's 0.3)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llmfleet-replan-"))
    specs = workload_specs(args.workloads, args.seed, length_profiles())
    caps = {name: AMPLE_GPUS for name, _, _ in POOLS}
    if args.scarcity is not None:
        ample, _ = timed_solve(build(fleet_documents(specs, caps, 120.0, 0.01))[0])
        caps = scarce_caps(ample, args.scarcity)
        print(f"binding pools: {args.scarcity:g} of an ample plan's GPUs ({ample.status}, {ample.total_gpus} GPUs): "
              + ", ".join(f"{name} {n}" for name, n in caps.items()), flush=True)
    docs = fleet_documents(specs, caps, args.time_limit, 0.01)
    for d in docs:
        if d["kind"] == "GPUPool":  # no nodes in this cluster: the pools are bounded by maxGPUs alone
            d["spec"]["autoscaled"] = True
        if d["kind"] == "FleetPolicy":  # the bench namespace may use every tier (spec.tenancy)
            tiers = [t["name"] for t in d["spec"]["priorityTiers"]]
            d["spec"]["tenancy"] = {"rules": [{"namespaces": [docs[0]["metadata"]["namespace"]], "tiers": tiers}]}
    namespace = docs[0]["metadata"]["namespace"]
    (work / "fleet.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    cluster = LocalCluster(work / "k8s").start()
    op = None
    try:
        cluster.kubectl("apply", "-f", str(REPO / "crds"))
        time.sleep(2)
        cluster.kubectl("create", "namespace", namespace)
        log = work / "operator.log"
        op = subprocess.Popen(
            [sys.executable, "-m", "llmfleet.cli", "operator", "--kubeconfig", str(cluster.admin_kubeconfig),
             "--debounce-seconds", "0.5", "--metrics-port", "0", "--planner-workers", str(args.planner_workers)],
            stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=REPO)
        time.sleep(5)
        t0 = time.monotonic()
        cluster.kubectl("apply", "-f", str(work / "fleet.yaml"))
        # the operator may solve while the apply is still creating workloads: wait for a plan of all
        while not any(int(SOLVED.search(line).group(1)) == args.workloads for _, line in solved_lines(log)):
            if time.monotonic() - t0 > 1800:
                raise RuntimeError(f"no plan of all {args.workloads} workloads within 1800 s")
            time.sleep(1.0)
        before = settle(cluster, namespace, args.settle, 1800, log)
        first = solved_lines(log)
        print(f"{args.workloads} workloads applied: {len(before)} Deployments settled after "
              f"{time.monotonic() - t0 - args.settle:.0f} s; last solve: {first[-1][1] if first else '-'}", flush=True)
        print(f"  {memory_line(op.pid, 'after the first plan')}", flush=True)
        workloads = [d for d in docs if d["kind"] == "LLMWorkload"]
        for k in range(args.changes):
            w = workloads[(7 + 31 * k) % len(workloads)]
            name = w["metadata"]["name"]
            rate = float(w["spec"]["traffic"]["requestRatePerSecond"]) * 1.2
            w["spec"]["traffic"]["requestRatePerSecond"] = round(rate, 4)
            seen = len(solved_lines(log))
            t1 = time.monotonic()
            cluster.kubectl("patch", "llmworkload", name, "-n", namespace, "--type", "merge",
                            "-p", json.dumps({"spec": {"traffic": {"requestRatePerSecond": round(rate, 4)}}}))
            while len(solved_lines(log)) <= seen:
                if time.monotonic() - t1 > 600:
                    raise RuntimeError("no re-plan within 600 s")
                time.sleep(0.1)
            to_solved = time.monotonic() - t1
            solve_s, line = solved_lines(log)[-1]
            after = settle(cluster, namespace, args.settle, 600, log)
            d = diff(before, after, name)
            print(f"change {k + 1}: {namespace}/{name} rate +20% -> {rate:.3f} req/s; patch to 'solved' line "
                  f"{to_solved:.2f} s (debounce 0.5 s, capacity model, MILP; the MILP itself {solve_s:.2f} s)")
            print(f"  operator: {line.split('] ')[-1]}")
            for message in replan_messages(cluster):
                print(f"  plan: {message}")
            for side, changes in d.items():
                print(f"  {side}: " + ", ".join(f"{len(v)} {k2}" for k2, v in changes.items())
                      + ("" if not any(changes.values()) else f"  {sorted(sum(changes.values(), []))[:6]}"))
            print(f"  {memory_line(op.pid, f'after change {k + 1}')}")
            sys.stdout.flush()
            before = after
        print(memory_line(op.pid, "at the end"), flush=True)
    finally:
        if op:
            op.terminate()
            op.wait(30)
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
