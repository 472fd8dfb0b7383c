"""Drift repair on a real control plane: fields llmfleet sets on its children, changed by hand, are
restored by one write with an Event naming the field; fields others own stay theirs; an idle
operator writes nothing; a writer that keeps reverting is backed off, not fought at full speed.

Counts of writes come from the API server's audit log (requests of the operator's ServiceAccount).
"""

from __future__ import annotations

import json
import threading
import time

from llmfleet.operator.drift import FightTracker
from llmfleet.operator.render import ANNOTATION_EXTERNAL_REPLICAS

from .audit import describe, received_s, writes
from .conftest import wait_until
from .test_operator_ha import POLICY, POOL, workload

SA = "system:serviceaccount:llmfleet-system:llmfleet-operator"
NAME = "chat-8b-l4-tp1"
IMAGE = "vllm/vllm-openai"  # prefix of the image the workload's rendering sets (the default image)


def operator_writes(cluster, since_s: float | None = None, resource: str | None = None, name: str | None = None,
                    include_dry_run: bool = False) -> list[dict]:
    return [e for e in writes(cluster.lc.audit_events(SA), since_s=since_s, include_dry_run=include_dry_run)
            if (resource is None or e["objectRef"].get("resource") == resource)
            and (name is None or e["objectRef"].get("name") == name)]


def events(cluster, reason: str, name: str) -> list[dict]:
    return [e for e in cluster.get_json("events")["items"]
            if e["reason"] == reason and e["involvedObject"]["name"] == name]


def settle(cluster, quiet_s: float = 3.0, timeout_s: float = 60.0) -> None:
    """Wait until the operator has written nothing for ``quiet_s``."""
    def quiet() -> bool:
        last = writes(cluster.lc.audit_events(SA), include_dry_run=True)
        return not last or time.time() - max(received_s(e) for e in last) >= quiet_s
    wait_until(quiet, timeout_s, f"{quiet_s:.0f}s without a write by the operator", interval_s=0.5)


def container(dep: dict) -> dict:
    return dep["spec"]["template"]["spec"]["containers"][0]


def test_hand_edits_restored_in_one_write_foreign_fields_kept_and_idle_is_silent(cluster, operator):
    cluster.lc.add_gpu_node("l4-0", "NVIDIA-L4", 8)
    cluster.apply([POLICY])
    cluster.apply(POOL + "---" + workload("chat-8b", 2))
    want = wait_until(lambda: cluster.deployments().get(NAME), 60, "the Deployment")
    want_svc = wait_until(lambda: cluster.get_json("service", "chat-8b"), 30, "the Service")
    wait_until(lambda: (cluster.condition(cluster.workload("chat-8b"), "Ready") or {}).get("status") == "True",
               60, "Ready")
    settle(cluster)

    # an idle operator is silent: not one write, not even a dry run, for 10 s
    t0 = time.time()
    time.sleep(10)
    idle = operator_writes(cluster, since_s=t0, include_dry_run=True)
    assert not idle, f"the idle operator wrote: {describe(idle)}"

    # 1. the image, changed to another registry's
    t0 = time.time()
    cluster.kubectl("set", "image", f"deployment/{NAME}", "vllm=registry.example.com/evil/vllm:latest")
    dep = wait_until(lambda: (d := cluster.deployments()[NAME]) and container(d)["image"] == container(want)["image"]
                     and d, 30, "the image restored")
    print(f"image restored in {time.time() - t0:.2f}s")
    assert len(operator_writes(cluster, since_s=t0, resource="deployments", name=NAME)) == 1
    ev = wait_until(lambda: events(cluster, "DriftRepaired", NAME), 10, "a DriftRepaired Event")
    assert "spec.template.spec.containers[vllm].image" in ev[-1]["message"], ev[-1]["message"]
    assert "kubectl" in ev[-1]["message"]  # the foreign writer's field manager is named

    # 2. the container arguments
    settle(cluster)
    t0 = time.time()
    args = container(dep)["args"]
    cluster.kubectl("patch", "deployment", NAME, "--type=json", "-p", json.dumps(
        [{"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": args[:1] + ["--enforce-eager"]}]))
    wait_until(lambda: container(cluster.deployments()[NAME])["args"] == args, 30, "the arguments restored")
    print(f"args restored in {time.time() - t0:.2f}s")
    assert len(operator_writes(cluster, since_s=t0, resource="deployments", name=NAME)) == 1
    ev = wait_until(lambda: [e for e in events(cluster, "DriftRepaired", NAME) if "args" in e["message"]], 10,
                    "an Event naming the arguments")
    assert "spec.template.spec.containers[vllm].args" in ev[-1]["message"]

    # 3. the Service's selector, replaced by hand
    settle(cluster)
    t0 = time.time()
    cluster.kubectl("patch", "service", "chat-8b", "--type=json", "-p", json.dumps(
        [{"op": "replace", "path": "/spec/selector", "value": {"app": "someone-else"}}]))
    wait_until(lambda: cluster.get_json("service", "chat-8b")["spec"]["selector"] == want_svc["spec"]["selector"],
               30, "the selector restored")
    print(f"Service selector restored in {time.time() - t0:.2f}s")
    # one reconcile: the apply, then a JSON patch dropping the selector key another manager now owns
    # (server-side apply cannot remove another manager's map key; Service selectors are granular maps)
    assert len(operator_writes(cluster, since_s=t0, resource="services", name="chat-8b")) <= 2
    assert "app" not in cluster.get_json("service", "chat-8b")["spec"]["selector"]
    ev = wait_until(lambda: events(cluster, "DriftRepaired", "chat-8b"), 10, "an Event on the Service")
    assert "spec.selector" in ev[-1]["message"]

    # 4. fields others own stay theirs: an autoscaler's replicas (opt-out annotation) and a
    # user's own annotation survive, while llmfleet's image is still restored
    settle(cluster)
    cluster.kubectl("annotate", "deployment", NAME, f"{ANNOTATION_EXTERNAL_REPLICAS}=true", "team.example.com/owner=ml")
    wait_until(lambda: not any(m.get("manager") == "llmfleet" and "f:replicas" in (m.get("fieldsV1") or {}).get(
        "f:spec", {}) for m in cluster.deployments()[NAME]["metadata"]["managedFields"]), 30, "replicas handed over")
    cluster.kubectl("scale", "deployment", NAME, "--replicas=3")
    cluster.kubectl("set", "image", f"deployment/{NAME}", "vllm=registry.example.com/evil/vllm:latest")
    dep = wait_until(lambda: (d := cluster.deployments()[NAME]) and container(d)["image"] == container(want)["image"]
                     and d, 30, "the image restored next to the autoscaler's replicas")
    time.sleep(2)
    dep = cluster.deployments()[NAME]
    assert dep["spec"]["replicas"] == 3
    assert dep["metadata"]["annotations"]["team.example.com/owner"] == "ml"

    # and quiet again once nothing differs
    settle(cluster)
    t0 = time.time()
    time.sleep(5)
    assert not operator_writes(cluster, since_s=t0, include_dry_run=True)
    assert "Handler" not in operator.log(), "kopf's per-handler lines stay below INFO"


def test_a_foreign_writer_reverting_the_image_is_backed_off_and_reported(cluster, operator):
    cluster.lc.add_gpu_node("l4-0", "NVIDIA-L4", 8)
    cluster.apply([POLICY])
    cluster.apply(POOL + "---" + workload("chat-8b", 2))
    want = wait_until(lambda: cluster.deployments().get(NAME), 60, "the Deployment")
    settle(cluster)

    # another controller sets its own image every 0.5 s for 25 s
    stop = threading.Event()
    foreign = []

    def fight() -> None:
        while not stop.is_set():
            if container(cluster.deployments()[NAME])["image"] != "registry.example.com/evil/vllm:latest":
                cluster.kubectl("set", "image", f"deployment/{NAME}", "vllm=registry.example.com/evil/vllm:latest")
                foreign.append(time.time())
            stop.wait(0.5)

    t0 = time.time()
    writer = threading.Thread(target=fight, daemon=True)
    writer.start()
    time.sleep(25)
    stop.set()
    writer.join(10)
    ours = operator_writes(cluster, since_s=t0, resource="deployments", name=NAME)
    # FightTracker's defaults: 3 repairs, then at most one per back-off (10 s, 20 s, ...): in 25 s
    # the 4th repair comes after 10 s and the 5th only after a further 20 s
    tracker = FightTracker()
    most = tracker.threshold + 2
    print(f"fight over 25 s: {len(foreign)} foreign writes, {len(ours)} operator writes (at most {most})")
    assert tracker.threshold <= len(ours) <= most
    # not at full speed: after the third repair, the next waits out the first back-off
    times = sorted(received_s(e) for e in ours)
    if len(times) > tracker.threshold:
        assert times[tracker.threshold] - times[tracker.threshold - 1] >= tracker.base_backoff_s - 0.5
    warn = wait_until(lambda: events(cluster, "DriftContested", NAME), 10, "a DriftContested Warning")
    assert warn[-1]["type"] == "Warning" and "containers[vllm].image" in warn[-1]["message"]
    w = wait_until(lambda: (w := cluster.workload("chat-8b")) and cluster.condition(w, "Contested") and w, 30,
                   "the Contested condition")
    assert cluster.condition(w, "Contested")["status"] == "True"
    assert NAME in cluster.condition(w, "Contested")["message"]
    # once the other writer stops, llmfleet's image comes back after the back-off ends
    wait_until(lambda: container(cluster.deployments()[NAME])["image"] == container(want)["image"],
               tracker.max_backoff_s, "the image restored after the back-off")
