"""Reactive capping (POLCA) wired into the node power agent: the node's GPUs are one power domain,
the agent measures their draw through NVML, calls the controller (llmfleet.power.reactive) and
applies its caps through the same NVML path.

Same stand-ins as tests/test_power_agent.py: the NVML fake (device constraints as NVML enforces
them; here its GPUs also draw min(demand, enforced limit), as a GPU held to a power limit does), the
real PodResources client against a real gRPC server, the Kubernetes side in memory.

The node, used by every test: 4 H100 SXM (NVML range 200-700 W), two pods planned at 700 W per GPU:
``batch-0`` on A, B in the ``low`` tier (PriorityClass llmfleet-low, priority 1,000) and ``chat-0``
on C, D in the ``critical`` tier (priority 1,000,000): planned 4 x 700 = 2,800 W under a node
budget of 2,200 W, so the automatic oversubscription is 2,800 / 2,200 = 1.27. With the
controller's defaults: T1 = 0.90 x 2,200 = 1,980 W, T2 = 0.95 x 2,200 = 2,090 W, release
R = 0.85 x 2,200 = 1,870 W, raise ceiling (R + T1) / 2 = 1,925 W; one step = 10 % of 700 W = 70 W.
Every expected value below is worked out from these numbers in the comments.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pynvml
import pytest
from prometheus_client import CollectorRegistry

from e2e.ports import free_port
from llmfleet.power.agent import ANNOTATION_APPLIED, ANNOTATION_REQUEST, PowerAgent, StateFile
from llmfleet.power.kube import PodInfo
from llmfleet.power.nodebudget import NodeBudget, draw_watts, tier_of
from llmfleet.power.nvml import FakeDevices, h100_sxm
from llmfleet.power.podresources import PodResourcesClient
from power_fakes import FakeKubelet, MemoryNodePods, short_socket_path

A, B, C, D = (f"GPU-{i}{i}{i}{i}0000-0000-0000-0000-00000000000{i}" for i in range(4))
W = 1000  # mW per W
NODE = "gpu-1"
BUDGET_W = 2200.0
LOW, CRITICAL = 1_000, 1_000_000  # FleetPolicy's default tier values, as the PriorityClasses carry them


class Node:
    def __init__(self, tmp_path: Path):
        self.kubelet = FakeKubelet(short_socket_path(tmp_path)).start()
        self.client = PodResourcesClient(self.kubelet.socket_path, timeout_s=5)
        self.devices = FakeDevices([h100_sxm(u) for u in (A, B, C, D)])
        self.pods = MemoryNodePods()
        self.state_path = tmp_path / "state" / "state.json"

    def close(self) -> None:
        self.client.close()
        self.kubelet.stop()

    def agent(self, budget: NodeBudget | None = NodeBudget(NODE, BUDGET_W)) -> PowerAgent:
        return PowerAgent(self.devices, self.pods, self.client, self.state_path, registry=CollectorRegistry(),
                          clock=lambda: 1_000.0, budget=budget)

    def run_pod(self, name: str, gpus: list[str], watts: str, priority: int | None, tier: str = "") -> None:
        self.pods.add("llm", name, {ANNOTATION_REQUEST: watts}, priority=priority,
                      priority_class=f"llmfleet-{tier}" if tier else "", labels={"llmfleet.dev/workload": name[:-2]})
        self.kubelet.give("llm", name, gpus)

    def demand(self, watts_by_gpu: dict[str, float]) -> None:
        for uuid, watts in watts_by_gpu.items():
            self.devices.gpus[uuid].demand_mw = int(watts * W)

    def limits_w(self) -> tuple[float, ...]:
        return tuple(self.devices.enforced_limit_mw(u) / W for u in (A, B, C, D))

    def draw_w(self) -> float:
        return sum(self.devices.power_usage_mw(u) for u in (A, B, C, D)) / W

    def report(self, name: str) -> dict:
        return json.loads(self.pods.annotation("llm", name, ANNOTATION_APPLIED))

    def events(self, reason: str | None = None) -> list[tuple[str, str, str, bool]]:
        return [e for e in self.pods.events if reason is None or e[1] == reason]


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path)
    n.run_pod("batch-0", [A, B], "700", LOW, "low")
    n.run_pod("chat-0", [C, D], "700", CRITICAL, "critical")
    try:
        yield n
    finally:
        n.close()


def metric(agent: PowerAgent, name: str, **labels) -> float | None:
    return agent.metrics.registry.get_sample_value(name, {"domain": NODE, **labels})


def surge(node: Node, agent: PowerAgent) -> None:
    """Steady at 1,900 W (2 x 550 + 2 x 400, between R and T1: hold), then the batch pod surges to
    600 W per GPU: 2 x 600 + 800 = 2,000 W > T1 (below T2). Level 1 lowers the low tier only:
    700 -> 630 W (draw still 2,000: the GPUs demand less than their cap), -> 560 W (draw
    2 x 560 + 800 = 1,920 W, between R and T1: hold)."""
    node.demand({A: 550, B: 550, C: 400, D: 400})
    for _ in range(3):
        assert agent.reconcile()
    assert node.limits_w() == (700, 700, 700, 700) and not node.events("PowerCapLowered")
    node.demand({A: 600, B: 600})
    for _ in range(4):
        assert agent.reconcile()


# ---- the surge --------------------------------------------------------------------------------------

def test_surge_above_threshold_1_lowers_only_the_lowest_tier_pods_gpus(node):
    agent = node.agent()
    surge(node, agent)
    assert node.limits_w() == (560, 560, 700, 700)
    assert node.draw_w() == 1920
    assert node.devices.writes == {A: 2, B: 2, C: 0, D: 0}  # 630, then 560; the critical pod untouched
    # one Event per action, on the pod, reason and type from the controller's action records
    lowered = node.events("PowerCapLowered")
    assert [(pod, warning) for pod, _, _, warning in lowered] == [("llm/batch-0", True)] * 2
    assert "from 700 W to 630 W per GPU" in lowered[0][2] and "from 630 W to 560 W per GPU" in lowered[1][2]
    assert "above threshold 1" in lowered[0][2]
    # the report annotation follows, without repeating the Event as PowerLimitApplied
    assert [r for _, r, _, _ in node.pods.events] == ["PowerLimitApplied", "PowerLimitApplied",
                                                      "PowerCapLowered", "PowerCapLowered"]
    report = node.report("batch-0")
    assert report["status"] == "applied" and report["limitWatts"] == {A: 560.0, B: 560.0}
    assert "reactive cap 560.0 W, below the planned 700.0 W" in report["message"]
    assert node.report("chat-0") == {"status": "applied", "limitWatts": {C: 700.0, D: 700.0}, "message": ""}
    # the controller's metrics, in the agent's registry
    assert metric(agent, "llmfleet_power_capping_actions_total", direction="lower", tier="low") == 2
    assert metric(agent, "llmfleet_power_capping_actions_total", direction="lower", tier="critical") is None
    assert metric(agent, "llmfleet_power_capping_group_cap_watts", group="llm/batch-0", tier="low") == 560
    assert metric(agent, "llmfleet_power_capping_withheld_watts") == 2 * (700 - 560)
    assert metric(agent, "llmfleet_power_capping_domain_draw_watts") == 1920
    assert metric(agent, "llmfleet_power_capping_domain_budget_watts") == BUDGET_W
    assert metric(agent, "llmfleet_power_capping_level") == 0
    # the reactive cap is remembered by GPU, next to what the agent set and read back
    saved = json.loads(node.state_path.read_text())["gpus"]
    assert saved[A]["reactive_cap_mw"] == saved[A]["target_mw"] == saved[A]["observed_mw"] == 560_000
    assert "reactive_cap_mw" not in saved[C]


def test_past_threshold_2_every_tier_steps_down(node):
    # every GPU demands 700 W: 2,800 W > T2. Both tiers step together: 630 (2,520 W > T2), 560
    # (2,240 W > T2), 490 (1,960 W: between R and T1, hold)
    agent = node.agent()
    node.demand({A: 700, B: 700, C: 700, D: 700})
    for _ in range(5):
        agent.reconcile()
    assert node.limits_w() == (490, 490, 490, 490)
    assert {pod for pod, *_ in node.events("PowerCapLowered")} == {"llm/batch-0", "llm/chat-0"}
    assert all("above threshold 2" in m for _, _, m, _ in node.events("PowerCapLowered"))


def test_caps_stop_at_the_device_minimum(node):
    # a 500 W budget cannot be met even at the 200 W minimum (4 x 200 = 800 W > T2 = 475 W): every
    # GPU steps down to 200 W (700 - 7 x 70 = 210, then 200) and stays there; NVML (the fake refuses
    # anything below 200 W) is never asked for less
    agent = node.agent(budget=NodeBudget(NODE, 500.0))
    node.demand({A: 700, B: 700, C: 700, D: 700})
    for _ in range(10):
        agent.reconcile()
    assert node.limits_w() == (200, 200, 200, 200)
    assert node.report("batch-0")["status"] == node.report("chat-0")["status"] == "applied"
    assert node.devices.writes == {u: 8 for u in (A, B, C, D)}
    assert metric(agent, "llmfleet_power_capping_holds_total", reason="exhausted") == 2  # passes 9 and 10


def test_a_refused_reactive_cap_is_reported_not_announced(node):
    agent = node.agent()
    node.demand({A: 550, B: 550, C: 400, D: 400})
    agent.reconcile()
    node.devices.permitted = False  # e.g. CAP_SYS_ADMIN lost
    node.demand({A: 600, B: 600})
    agent.reconcile()
    assert node.limits_w() == (700, 700, 700, 700)
    assert not node.events("PowerCapLowered")
    assert node.events()[-1][:2] == ("llm/batch-0", "PowerLimitFailed")
    assert StateFile(node.state_path).load()[A].reactive_cap_mw is None  # not in force, not remembered
    node.devices.permitted = True  # the next pass decides again from 700 W, applies and announces it
    agent.reconcile()
    assert node.limits_w()[:2] == (630, 630) and node.report("batch-0")["status"] == "applied"
    assert [(pod, m.split(":")[0]) for pod, _, m, _ in node.events("PowerCapLowered")] == [
        ("llm/batch-0", "lower the cap of llm/batch-0 (tier low, 2 GPU(s)) from 700 W to 630 W per GPU")]


def test_failing_readings_change_nothing(node):
    agent = node.agent()
    surge(node, agent)
    writes, events = dict(node.devices.writes), len(node.pods.events)
    # every GPU now demands 700 W: the true draw, 2 x 560 + 2 x 700 = 2,520 W, is past T2, but one
    # GPU's reading fails: the draw is unknown, so the agent holds
    node.demand({A: 700, B: 700, C: 700, D: 700})
    node.devices.gpus[C].usage_error = pynvml.NVML_ERROR_GPU_IS_LOST
    for _ in range(3):
        assert agent.reconcile()
    assert node.limits_w() == (560, 560, 700, 700) and node.devices.writes == writes
    assert len(node.pods.events) == events
    assert metric(agent, "llmfleet_power_capping_holds_total", reason="unknown-draw") == 3
    assert metric(agent, "llmfleet_power_capping_level") == -1
    # the reading is back: the same draw now acts (level 2: both tiers step down)
    node.devices.gpus[C].usage_error = None
    agent.reconcile()
    assert node.limits_w() == (490, 490, 630, 630)


def test_falling_demand_lifts_caps_back_to_the_plan_with_hysteresis(node):
    agent = node.agent()
    surge(node, agent)
    # demand falls to 300 W per GPU: 2 x 300 + 2 x 300 = 1,200 W < R. A raise needs 3 intervals in
    # a row below R, then lifts by min(step 70, gap to plan 140, headroom (1,925 - 1,200) / 2 GPUs)
    # = 70 W, and the count starts again: 630 W after the 3rd pass, 700 W after the 6th
    node.demand({A: 300, B: 300, C: 300, D: 300})
    seen = []
    for _ in range(7):
        agent.reconcile()
        seen.append(node.limits_w()[0])
    assert seen == [560, 560, 630, 630, 630, 700, 700]
    raised = node.events("PowerCapRaised")
    assert [(pod, warning) for pod, _, _, warning in raised] == [("llm/batch-0", False)] * 2
    assert node.limits_w() == (700, 700, 700, 700)
    assert node.report("batch-0") == {"status": "applied", "limitWatts": {A: 700.0, B: 700.0}, "message": ""}
    assert "reactive_cap_mw" not in json.loads(node.state_path.read_text())["gpus"][A]
    assert metric(agent, "llmfleet_power_capping_withheld_watts") == 0
    # a draw between R and T1 holds: no oscillation at a constant load
    node.demand({A: 550, B: 550, C: 400, D: 400})
    for _ in range(5):
        agent.reconcile()
    assert node.limits_w() == (700, 700, 700, 700) and len(node.events("PowerCapRaised")) == 2


def test_own_reactive_caps_are_not_a_second_writer(node):
    agent = node.agent()
    surge(node, agent)
    for _ in range(3):
        agent.reconcile()
    assert not node.events("PowerLimitSecondWriter")
    assert node.report("batch-0")["status"] == "applied"
    # a restarted agent reads its reactive caps back from the state: no write, no second writer
    writes = dict(node.devices.writes)
    again = node.agent()
    for _ in range(2):
        again.reconcile()
    assert node.devices.writes == writes and node.limits_w() == (560, 560, 700, 700)
    assert not node.events("PowerLimitSecondWriter")
    # a real second writer is still seen, and reactive capping leaves that pod alone
    node.devices.external_set(A, 650 * W)
    node.demand({A: 700, B: 700, C: 700, D: 700})
    again.reconcile()
    assert node.report("batch-0")["status"] == "second-writer"
    assert node.events("PowerLimitSecondWriter")[-1][0] == "llm/batch-0"
    assert node.devices.writes[A] == writes[A] and node.devices.writes[B] == writes[B]


def test_pods_the_agent_does_not_cap_alone_count_in_the_draw_only(node):
    # a pod with an unreadable annotation on D holds the safe cap (0.70 x 700 = 490 W); the critical
    # pod now has C only. Limits 3 x 700 + 490 = 2,590 W > the budget: oversubscribed (f = 1.18)
    # only because D counts. Draw 2 x 600 + 300 + 490 = 1,990 W > T1, below T2: only the low tier
    # steps (630: still 1,990 W; 560: 1,910 W, hold); D stays at its safe cap
    node.pods.remove("llm", "chat-0")
    node.kubelet.remove("llm", "chat-0")
    node.run_pod("chat-0", [C], "700", CRITICAL, "critical")
    node.run_pod("odd-0", [D], "lots", LOW, "low")
    node.demand({A: 600, B: 600, C: 300, D: 700})
    agent = node.agent()
    for _ in range(4):
        agent.reconcile()
    assert node.limits_w() == (560, 560, 700, 490)
    assert node.report("odd-0")["status"] == "safe-cap"
    assert {pod for pod, *_ in node.events("PowerCapLowered")} == {"llm/batch-0"}


# ---- budget off: exactly as before ----------------------------------------------------------------------

def test_without_a_budget_nothing_changes(node):
    agent = node.agent(budget=None)
    surge(node, agent)
    node.demand({A: 700, B: 700, C: 700, D: 700})
    agent.reconcile()
    assert node.limits_w() == (700, 700, 700, 700) and node.devices.writes == {A: 0, B: 0, C: 0, D: 0}
    assert [r for _, r, _, _ in node.pods.events] == ["PowerLimitApplied", "PowerLimitApplied"]
    names = {m.name for m in agent.metrics.registry.collect()}
    assert not {n for n in names if n.startswith("llmfleet_power_capping")}
    assert all("reactive_cap_mw" not in g for g in json.loads(node.state_path.read_text())["gpus"].values())


def test_turning_the_budget_off_returns_to_the_planned_caps(node):
    agent = node.agent()
    surge(node, agent)
    assert StateFile(node.state_path).load()[A].reactive_cap_mw == 560_000
    off = node.agent(budget=None)  # restarted without --node-budget-watts
    off.reconcile()
    assert node.limits_w() == (700, 700, 700, 700)
    assert node.report("batch-0") == {"status": "applied", "limitWatts": {A: 700.0, B: 700.0}, "message": ""}


def test_explicit_oversubscription_1_keeps_the_plan(node):
    # f = 1 declares the node not oversubscribed: the controller never lowers, whatever the draw
    agent = node.agent(budget=NodeBudget(NODE, BUDGET_W, oversubscription=1.0))
    node.demand({A: 700, B: 700, C: 700, D: 700})
    for _ in range(3):
        agent.reconcile()
    assert node.limits_w() == (700, 700, 700, 700)
    assert metric(agent, "llmfleet_power_capping_level") == 0


# ---- the pieces ------------------------------------------------------------------------------------------

def test_tier_comes_from_the_pods_resolved_priority():
    assert tier_of(PodInfo("llm", "a", priority=1_000, priority_class="llmfleet-low")) == ("low", 1_000)
    assert tier_of(PodInfo("llm", "b", priority=2_000_000_000, priority_class="system-node-critical")) == (
        "system-node-critical", 2_000_000_000)
    assert tier_of(PodInfo("llm", "c")) == ("priority-0", 0)  # no class, no priority: Kubernetes' zero


def test_constants_match_the_operators():
    from llmfleet.operator.render import LABEL_WORKLOAD, PRIORITY_CLASS_PREFIX
    from llmfleet.power import nodebudget

    assert (nodebudget.PRIORITY_CLASS_PREFIX, nodebudget.LABEL_WORKLOAD) == (PRIORITY_CLASS_PREFIX, LABEL_WORKLOAD)


def test_draw_is_unknown_when_any_reading_is_missing():
    assert draw_watts({A: 400_000, B: 250_500}) == 650.5
    assert draw_watts({A: 400_000, B: None}) is None
    assert draw_watts({}) is None


@pytest.mark.parametrize("kwargs, field", [
    ({"budget_watts": 0}, "budget_watts"), ({"budget_watts": float("nan")}, "budget_watts"),
    ({"budget_watts": 100, "oversubscription": 0.8}, "oversubscription"),
    ({"budget_watts": 100, "domain": ""}, "domain"),
])
def test_bad_budget_is_refused_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        NodeBudget(**{"domain": NODE, **kwargs})


@pytest.mark.parametrize("argv, words", [
    (["--node-budget-watts", "-5"], "argument --node-budget-watts: node budget '-5' must be a number of watts"),
    (["--oversubscription", "0.5"], "argument --oversubscription: oversubscription '0.5' must be 'auto' or a factor"),
])
def test_bad_flags_exit_2_naming_the_flag(argv, words, capsys):
    from llmfleet.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["power-agent", *argv])
    assert exit_.value.code == 2 and words in capsys.readouterr().err


# ---- the command: flags in, metrics out on /metrics ------------------------------------------------------

METRICS_DRIVER = r'''
import sys, threading
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests"]
import llmfleet.power.kube as kube, llmfleet.power.nvml as nvml
from power_fakes import FakeKubelet, MemoryNodePods
from llmfleet.cli import main

gpus = [nvml.h100_sxm("GPU-a"), nvml.h100_sxm("GPU-b")]
for g in gpus:
    g.demand_mw = 700_000
devices = nvml.FakeDevices(gpus)
pods = MemoryNodePods()
pods.add("llm", "batch-0", {"llmfleet.dev/gpu-power-limit-watts": "700"}, priority=1000, priority_class="llmfleet-low")
kubelet = FakeKubelet(sys.argv[2]).start()
kubelet.give("llm", "batch-0", ["GPU-a", "GPU-b"])
nvml.PynvmlDevices = lambda: devices
kube.KubeNodePods = lambda node_name: pods

def watch():
    while devices.writes["GPU-a"] == 0:
        threading.Event().wait(0.02)
    print("capped", flush=True)
threading.Thread(target=watch, daemon=True).start()
rc = main(["power-agent", "--node-name", "n1", "--pod-resources-socket", sys.argv[2], "--state-file", sys.argv[3],
           "--interval-seconds", "0.05", "--metrics-port", sys.argv[4], "--node-budget-watts", "1000"])
print("exit", rc, flush=True)
kubelet.stop()
'''


def test_the_command_caps_reactively_and_serves_the_metrics(tmp_path):
    """`llmfleet power-agent --node-budget-watts 1000` on 2 GPUs planned at 700 W that draw 700 W:
    1,400 W > T2 = 950 W, so the one pod's GPUs step down, and the controller's metrics appear on
    the agent's /metrics (the default registry, served by prometheus_client's HTTP server)."""
    import signal

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", METRICS_DRIVER, str(Path(__file__).resolve().parents[1]),
                             short_socket_path(tmp_path), str(tmp_path / "state.json"), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().split() == ["capped"]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert out.split() == ["exit", "0"]
    assert 'llmfleet_power_capping_domain_budget_watts{domain="n1"} 1000.0' in text
    assert 'llmfleet_power_capping_actions_total{direction="lower",domain="n1",tier="low"}' in text
    assert 'llmfleet_power_agent_managed_gpus 2.0' in text
