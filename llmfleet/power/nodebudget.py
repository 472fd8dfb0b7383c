"""One node as a power domain for reactive capping (``llmfleet.power.reactive``, POLCA): the node's
budget, and the translation from the agent's view of its pods to the controller's ``PowerDomain``.

Pure: no NVML, no Kubernetes calls. The agent (``llmfleet.power.agent``) measures, calls the
controller and applies its caps; this module only says what the domain is:

- one group per annotated pod that the agent alone caps (a pod's GPUs run one model replica in
  lockstep, so they share one cap); pods sharing a GPU, pods on the safe cap and pods whose GPUs
  another writer holds are left out (their GPUs still count in the draw);
- the group's tier value is the pod's ``spec.priority``: the integer the API server's Priority
  admission resolves from the pod's PriorityClass (the operator renders ``llmfleet-<tier>``
  classes from ``FleetPolicy.spec.priorityTiers``, so the order is the policy's);
- its planned cap is the pod's ``llmfleet.dev/gpu-power-limit-watts`` annotation (clamped to the
  device range), its floor and ceiling the device's NVML limit constraints;
- the domain's draw is the sum of the NVML power readings of the GPUs the agent manages; one
  failed reading makes it ``UNKNOWN`` (the controller then holds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmfleet.power.kube import PodInfo
from llmfleet.power.reactive import DEFAULT_SETTINGS, UNKNOWN, CappingSettings, GroupPower, PowerDomain

# llmfleet.operator.render.PRIORITY_CLASS_PREFIX and LABEL_WORKLOAD (a test checks they match;
# importing them would pull kopf into the agent)
PRIORITY_CLASS_PREFIX = "llmfleet-"
LABEL_WORKLOAD = "llmfleet.dev/workload"

# The priority of a pod without spec.priority: Kubernetes gives pods with no PriorityClass (and no
# globalDefault class) priority zero (Kubernetes docs, "Pod Priority and Preemption").
DEFAULT_PRIORITY = 0


def _positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"node power budget: {name} {value!r} must be a positive number")
    return float(value)


@dataclass(frozen=True)
class NodeBudget:
    """The power budget of one node's GPUs.

    domain: the domain's name (the node's name); budget_watts: the limit the measured draw of the
    GPUs the agent manages must stay within, W (e.g. Dynamo's rack watts x 0.85 - overhead sizing:
    8 x 700 W x 0.85 - 500 W = 4,260 W for an 8-GPU H100 node); oversubscription: the factor f >= 1
    by which the planned caps may exceed the budget (``reactive.PowerDomain``), or None for
    automatic: f = max(1, Σ limits of the measured GPUs / budget), i.e. the node is treated as
    oversubscribed exactly when its GPUs' limits (planned caps, and the limits in force on GPUs the
    controller does not cap) could together draw more than the budget (when they cannot, a GPU
    never draws above its limit, so the limits already keep the node within budget);
    settings: the controller's thresholds and steps.

    Raises ValueError naming the field when a value is not a positive number or f < 1."""

    domain: str
    budget_watts: float
    oversubscription: float | None = None
    settings: CappingSettings = DEFAULT_SETTINGS

    def __post_init__(self) -> None:
        if not self.domain or not isinstance(self.domain, str):
            raise ValueError(f"node power budget: domain {self.domain!r} must be a non-empty name (the node's)")
        _positive("budget_watts", self.budget_watts)
        if self.oversubscription is not None and _positive("oversubscription", self.oversubscription) < 1:
            raise ValueError(f"node power budget: oversubscription {self.oversubscription!r} must be >= 1 "
                             "(1 = not oversubscribed)")

    def factor(self, planned_watts: float) -> float:
        """The oversubscription factor for a domain whose GPUs' limits sum to ``planned_watts`` W."""
        if self.oversubscription is not None:
            return float(self.oversubscription)
        return max(1.0, planned_watts / self.budget_watts)


@dataclass(frozen=True)
class PodCaps:
    """What the agent knows of one capped pod: its GPUs (UUIDs), the cap it has set on them now,
    the planned cap, and the device range, all mW per GPU (NVML's unit)."""

    pod: PodInfo
    uuids: tuple[str, ...]
    cap_mw: int
    planned_mw: int
    min_mw: int
    max_mw: int


def group_name(pod: PodInfo) -> str:
    """The controller's group name of a pod: ``namespace/name``."""
    return f"{pod.namespace}/{pod.name}"


def tier_of(pod: PodInfo) -> tuple[str, int]:
    """(tier name, tier value) of a pod: the value is ``spec.priority`` (``DEFAULT_PRIORITY`` when
    absent); the name is the PriorityClass without the operator's ``llmfleet-`` prefix, or
    ``priority-<value>`` for a pod without a class."""
    value = pod.priority if isinstance(pod.priority, int) and not isinstance(pod.priority, bool) else DEFAULT_PRIORITY
    name = pod.priority_class
    if name.startswith(PRIORITY_CLASS_PREFIX):
        name = name[len(PRIORITY_CLASS_PREFIX):]
    return name or f"priority-{value}", value


def build_domain(budget: NodeBudget, pods: list[PodCaps], other_limits_watts: float = 0.0) -> PowerDomain:
    """The node's ``PowerDomain``: one group per pod (``group_name``), caps in W per GPU.
    ``other_limits_watts``: Σ the limits in force, W, of the measured GPUs that are in no group (a
    pod on the safe cap, a second writer's GPU): they count in the automatic oversubscription.

    Raises ValueError (from ``GroupPower``, naming the pod) when a pod's planned cap is outside its
    device range; the agent clamps planned caps into the range first, so this means a bug."""
    groups = []
    for p in pods:
        tier, value = tier_of(p.pod)
        groups.append(GroupPower(
            name=group_name(p.pod), workload=p.pod.labels.get(LABEL_WORKLOAD) or p.pod.name, tier=tier,
            tier_value=value, gpus=len(p.uuids), cap_watts=p.cap_mw / 1000.0, planned_cap_watts=p.planned_mw / 1000.0,
            min_watts=p.min_mw / 1000.0, max_watts=p.max_mw / 1000.0))
    planned = sum(g.planned_cap_watts * g.gpus for g in groups) + other_limits_watts
    return PowerDomain(budget.domain, float(budget.budget_watts), budget.factor(planned), tuple(groups))


def draw_watts(readings_mw: dict[str, int | None]) -> float | None:
    """The domain's draw, W: the sum of the GPUs' NVML power readings (mW); ``UNKNOWN`` when there is
    no GPU or any reading is missing (None): a partial sum would understate the draw."""
    if not readings_mw or any(v is None for v in readings_mw.values()):
        return UNKNOWN
    return sum(readings_mw.values()) / 1000.0
