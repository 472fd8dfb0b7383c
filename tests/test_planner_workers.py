"""The operator's planner spreads its capacity model over worker processes when told to
(``llmfleet operator --planner-workers``, the chart's ``operator.plannerWorkers``)."""

from __future__ import annotations

import threading

import kopf
import pytest
import yaml

from llmfleet import progress
from llmfleet.operator import handlers
from llmfleet.operator.handlers import planner_workers_from_env
from llmfleet.operator.planner import FleetPlanner, parse_cluster

from test_solver import two_model_fleet


def parsed_fleet(tmp_path):
    """The objects of ``fleet.yaml`` in ``tmp_path`` as the operator reads them from the API
    server, with a FleetPolicy that lets their namespaces use their tiers."""
    docs = list(yaml.safe_load_all((tmp_path / "fleet.yaml").read_text()))
    workloads = [d for d in docs if d["kind"] == "LLMWorkload"]
    for d in docs:
        d["metadata"].setdefault("generation", 1)
    policy = {"apiVersion": "llmfleet.dev/v1alpha1", "kind": "FleetPolicy",
              "metadata": {"name": "default", "generation": 1},
              "spec": {"tenancy": {"rules": [{"namespaces": sorted({d["metadata"]["namespace"] for d in workloads}),
                                              "tiers": sorted({d["spec"]["priority"] for d in workloads})}]}}}
    return parse_cluster(workloads, [d for d in docs if d["kind"] == "GPUPool"], [policy])


def test_the_operator_planner_models_in_worker_processes_and_plans_the_same(tmp_path):
    # Independent reason: a workload's capacity model depends only on its own inputs
    # (test_solver's two-process test), so the planner's plan is the same with 2 workers. The
    # operator runs other threads (kopf, the API watches), under which the workers come from a
    # fork server: a second thread stands for them here.
    two_model_fleet(tmp_path)
    parsed = parsed_fleet(tmp_path)
    assert len(parsed.workloads) >= 8 and not parsed.invalid
    one, _, failed = FleetPlanner(None)._plan(parsed, held={})
    assert not failed and one.status == "optimal"
    lines = []
    done = threading.Event()
    other = threading.Thread(target=done.wait)
    other.start()
    try:
        with progress.reporting(lines.append):
            two, _, _ = FleetPlanner(None, workers=2)._plan(parsed, held={})
    finally:
        done.set()
        other.join()
    assert any("2 processes" in line for line in lines)  # the workers did model them
    assert not any("ran in one process" in n for n in two.messages)
    assert two.cost_per_hour == pytest.approx(one.cost_per_hour)
    assert sorted((a.workload, a.pool, a.tp, a.role, a.replicas) for a in two.assignments) == \
        sorted((a.workload, a.pool, a.tp, a.role, a.replicas) for a in one.assignments)


@pytest.mark.parametrize("raw, expected", [(None, 1), ("", 1), ("1", 1), ("2", 2), ("3", 3), ("512", 3)])
def test_planner_workers_come_from_the_environment_within_the_cpus(monkeypatch, raw, expected):
    # a pod that may use 3 CPUs: what it is told, up to 3
    monkeypatch.setattr(handlers, "available_cpus", lambda: 3)
    if raw is None:
        monkeypatch.delenv("LLMFLEET_PLANNER_WORKERS", raising=False)
    else:
        monkeypatch.setenv("LLMFLEET_PLANNER_WORKERS", raw)
    assert planner_workers_from_env() == expected


@pytest.mark.parametrize("raw", ["0", "-2", "two", "1.5"])
def test_bad_planner_workers_stop_the_start_with_the_variable_named(monkeypatch, raw):
    monkeypatch.setenv("LLMFLEET_PLANNER_WORKERS", raw)
    with pytest.raises(kopf.PermanentError, match="LLMFLEET_PLANNER_WORKERS"):
        planner_workers_from_env()
