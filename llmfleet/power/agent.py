"""The power agent's state machine: from the pods on this node to NVML power limits, one pass at a
time (``PowerAgent.reconcile``), plus the restore at shutdown (``PowerAgent.shutdown``).

Each pass:
1. reads the node's pods (Kubernetes) and which GPUs the kubelet gave each pod (PodResources). If
   either read fails, the pass changes nothing: a missing view is never a reason to lift or move a
   cap (DESIGN.md §8: missing telemetry never scales anything down);
2. collects, per GPU, the caps asked by the pods that hold it and carry the annotation
   ``llmfleet.dev/gpu-power-limit-watts`` (set by the operator, llmfleet/operator/render.py). GPUs
   of pods without the annotation, and GPUs of no pod, are never touched;
3. resolves each GPU's target: the request clamped to the device's [min, max] limit; an unreadable
   request, or pods that disagree on one GPU, give the safe cap instead (below) and say so;
4. writes the target through NVML when it changed, reads it back (management and enforced limit)
   and records the outcome: ``applied``, ``mismatch`` (the GPU enforces something else),
   ``second-writer`` (someone else changed a limit the agent set: reported, never fought),
   ``failed`` (an NVML error, e.g. no permission);
5. releases GPUs whose pods are gone for longer than ``idle_grace_s``: the agent restores NVML's
   default limit, unless a second writer holds the GPU (then it just stops managing it);
6. with a node power budget (``NodeBudget``; off by default), caps reactively (below);
7. reports on each annotated pod: the annotation ``llmfleet.dev/gpu-power-limit-applied`` (JSON:
   status, per-GPU enforced watts, message) and, when that report changes, a Kubernetes Event;
   and Prometheus metrics.

Reactive capping (POLCA, ``llmfleet.power.reactive``), only with a node budget: after step 4 the
agent sums the NVML power readings of the GPUs it manages, hands the node as one power domain to
the controller (``nodebudget.build_domain``: one group per pod, tier = the pod's ``spec.priority``)
and writes the caps it returns through the same NVML path (set, read back), each GPU's target
being min(planned cap, reactive cap), never below the device minimum. Each cap change is an Event
on the pod (reason from the controller's action: ``PowerCapLowered``, ``PowerCapRaised``,
``PowerCapClamped``) and the controller's metrics (``llmfleet_power_capping_*``, in the agent's
registry, so on its /metrics). The reactive cap is remembered per GPU (``reactive_cap_mw``), and a
reactive write updates the read-back the second-writer check compares with, so the agent never
takes its own lowered cap for another writer. Without a budget, stored reactive caps are ignored
and every GPU gets its planned cap, exactly as without this feature.

State (the GPUs the agent manages, by UUID, with the limit it set and read back) is written to a
JSON file before every NVML write, so a restarted agent neither rewrites caps that are in place nor
forgets to restore the GPUs it capped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pynvml
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from llmfleet.power.kube import NodePods, PodInfo
from llmfleet.power.nodebudget import NodeBudget, PodCaps, build_domain, draw_watts, group_name
from llmfleet.power.nvml import PowerDevices
from llmfleet.power.podresources import PodResourcesClient
from llmfleet.power.reactive import CappingMetrics, ReactiveCapper

log = logging.getLogger(__name__)

# The operator's annotation (llmfleet.operator.render.ANNOTATION_POWER_LIMIT; a test checks they
# match: importing it here would pull kopf into the agent).
ANNOTATION_REQUEST = "llmfleet.dev/gpu-power-limit-watts"
ANNOTATION_APPLIED = "llmfleet.dev/gpu-power-limit-applied"

# The fallback cap, as a fraction of the GPU's default limit (its TDP on data-centre GPUs), for an
# unreadable request or pods that disagree. Issue 17 asks for "about 70% of TDP": at that cap
# published sweeps it cites report decode losing only a few percent (decode draws 137-300 W of an
# H200's 700 W, arXiv 2605.11999; decode is nearly insensitive to clock frequency, arXiv
# 2501.08219) while prefill slows by double digits, and it sits below the ~0.75 x TDP average
# draw measured under load (ML.ENERGY H100 rows, ../shared/data/profiles), so a GPU whose request
# cannot be trusted still serves and draws no more than a budget sized for typical draw assumed.
# POLCA (Patel et al., ASPLOS 2024) caps low-priority work in the same way rather than stopping it.
SAFE_CAP_FRACTION = 0.70

# Pods gone for less than this keep their GPUs' caps: a Deployment's replacement pod usually gets
# the same GPU within seconds, and one missing pass (API/kubelet lag) must not lift a cap. Three
# default reconcile intervals (10 s each).
DEFAULT_IDLE_GRACE_S = 30.0

APPLIED, MISMATCH, SECOND_WRITER, FAILED, SAFE_CAP = "applied", "mismatch", "second-writer", "failed", "safe-cap"
# the order in which a pod's report takes the worst of its GPUs' outcomes
_SEVERITY = {APPLIED: 0, SAFE_CAP: 1, MISMATCH: 2, SECOND_WRITER: 3, FAILED: 4}
_EVENT_REASON = {APPLIED: "PowerLimitApplied", SAFE_CAP: "PowerLimitSafeCap", MISMATCH: "PowerLimitMismatch",
                 SECOND_WRITER: "PowerLimitSecondWriter", FAILED: "PowerLimitFailed"}


def _watts(mw: int | None) -> float | None:
    return None if mw is None else round(mw / 1000.0, 3)


def parse_request_watts(value: str) -> float | None:
    """The cap a pod asks for, W, from its annotation value (``"350"``, ``"350.5"``); None when it
    is not a finite positive number."""
    try:
        watts = float(value.strip())
    except (ValueError, AttributeError):
        return None
    return watts if math.isfinite(watts) and watts > 0 else None


@dataclass
class ManagedGpu:
    """What the agent remembers of one GPU it manages (persisted by UUID).

    target_mw: the limit the agent last wrote, mW; observed_mw: the management limit read back right
    after that write (a later different value means another writer); status/message: the last
    outcome; pods: "namespace/name" of the pods that asked; idle_since_s: wall-clock time (s since
    the epoch) since when no annotated pod holds it, or None; reactive_cap_mw: the cap reactive
    capping holds it at below the planned cap, mW, or None (only with a node budget)."""

    target_mw: int
    observed_mw: int
    status: str = APPLIED
    message: str = ""
    pods: list[str] = field(default_factory=list)
    idle_since_s: float | None = None
    reactive_cap_mw: int | None = None


@dataclass
class _Request:
    pod: PodInfo
    watts: float | None  # None: unreadable


@dataclass
class _Outcome:
    status: str
    message: str
    enforced_mw: int | None = None
    noteworthy: bool = True  # False: a plain "applied", left out of the pod's report message
    # the planned (clamped) target and the device range, mW: set when the GPU's target was resolved
    planned_mw: int | None = None
    range_mw: tuple[int, int] | None = None


class StateFile:
    """The agent's state on disk: ``{"version": 1, "gpus": {uuid: ManagedGpu fields}}``, written
    atomically (temporary file + rename) so a crash never leaves half a file.

    Raises ValueError on load when the file is not this format (the message names the file)."""

    VERSION = 1

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._written: str | None = None  # the text last written, to skip identical rewrites

    def load(self) -> dict[str, ManagedGpu]:
        """The saved GPUs ({} when the file does not exist)."""
        if not self.path.exists():
            return {}
        try:
            doc = json.loads(self.path.read_text())
            if doc.get("version") != self.VERSION:
                raise ValueError(f"version {doc.get('version')!r}, expected {self.VERSION}")
            return {uuid: ManagedGpu(**fields) for uuid, fields in doc["gpus"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"power agent state file {self.path} is not readable state: "
                             f"{type(err).__name__}") from err

    def save(self, gpus: dict[str, ManagedGpu]) -> None:
        """Replace the file with ``gpus``. ``reactive_cap_mw`` is written only when set, so without
        reactive capping the file is what it always was."""
        doc = {"version": self.VERSION,
               "gpus": {u: {k: v for k, v in asdict(g).items() if k != "reactive_cap_mw" or v is not None}
                        for u, g in sorted(gpus.items())}}
        text = json.dumps(doc, indent=1, sort_keys=True)
        if text == self._written:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self._written = text
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class AgentMetrics:
    """The agent's Prometheus metrics, in ``registry`` (the default registry in production; a
    fresh one per agent in tests). Watts are W; labels: ``gpu`` (UUID), ``outcome``."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else REGISTRY
        kw = {"registry": self.registry}
        self.limit = Gauge("llmfleet_power_agent_gpu_enforced_limit_watts",
                           "Power limit the GPU enforces (NVML enforced limit), for GPUs the agent manages",
                           ["gpu"], **kw)
        self.target = Gauge("llmfleet_power_agent_gpu_target_limit_watts",
                            "Power limit the agent set (after clamping to the device range)", ["gpu"], **kw)
        self.usage = Gauge("llmfleet_power_agent_gpu_power_usage_watts",
                           "Power drawn by each GPU of the node (NVML power usage)", ["gpu"], **kw)
        self.managed = Gauge("llmfleet_power_agent_managed_gpus", "GPUs whose power limit the agent manages", **kw)
        self.outcomes = Counter("llmfleet_power_agent_outcomes_total",
                                "Changes of a GPU's outcome (applied, safe-cap, mismatch, second-writer, failed) "
                                "and releases (restored, released-to-other-writer)", ["outcome"], **kw)
        self.errors = Counter("llmfleet_power_agent_reconcile_errors_total",
                              "Passes skipped because the node's pods or their GPUs could not be read",
                              ["source"], **kw)


class PowerAgent:
    """The state machine. All dependencies are passed in, so the same code runs against the real
    NVML, kubelet and API server and against their test doubles.

    devices: NVML (``PowerDevices``); pods: the Kubernetes side (``NodePods``); podresources: a
    ``PodResourcesClient`` (or anything with ``gpus_by_pod()``); state_file: path of the JSON
    state; idle_grace_s: how long a GPU must be without an annotated pod before its default limit
    is restored; clock: wall-clock seconds (``time.time``), injectable for tests; budget: the
    node's power budget for reactive capping (None: off, the default).

    Raises ValueError at construction when the state file exists but is unreadable: the agent
    refuses to start rather than forget the GPUs it capped (the message names the file).
    """

    def __init__(self, devices: PowerDevices, pods: NodePods, podresources: PodResourcesClient,
                 state_file: str | Path, idle_grace_s: float = DEFAULT_IDLE_GRACE_S,
                 registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time,
                 budget: NodeBudget | None = None):
        self.devices = devices
        self.pods = pods
        self.podresources = podresources
        self.state_file = StateFile(state_file)
        self.idle_grace_s = idle_grace_s
        self.clock = clock
        self.metrics = AgentMetrics(registry)
        self.budget = budget
        self.capper = (ReactiveCapper(budget.settings, CappingMetrics(self.metrics.registry))
                       if budget is not None else None)
        self._capped_series: set[tuple[str, str, str]] = set()  # (domain, group, tier) cap gauges set
        self._capping_notes: tuple[str, ...] = ()
        self.gpus: dict[str, ManagedGpu] = self.state_file.load()
        # last outcome per GPU, also for GPUs not managed (an unknown UUID), so each change is
        # logged and counted once rather than every pass
        self._last_outcome: dict[str, tuple[str, str]] = {u: (g.status, g.message) for u, g in self.gpus.items()}
        self._reported: dict[tuple[str, str], str] = {}  # last report sent per pod
        self.metrics.managed.set(len(self.gpus))
        if self.gpus:
            log.info("resumed managing %d GPU(s) from %s", len(self.gpus), self.state_file.path)

    # ---- one pass -------------------------------------------------------------------------------

    def reconcile(self) -> bool:
        """One pass (module docstring). Returns False when the pass was skipped because the pods
        or their GPUs could not be read (nothing was changed), True otherwise."""
        try:
            pods = self.pods.list_pods()
        except Exception as err:  # noqa: BLE001  (any API failure: skip the pass, change nothing)
            log.warning("cannot list the node's pods (%s); changing nothing this pass", type(err).__name__)
            self.metrics.errors.labels("kubernetes").inc()
            return False
        try:
            gpus_by_pod = self.podresources.gpus_by_pod()
        except Exception as err:  # noqa: BLE001
            log.warning("cannot read PodResources (%s); changing nothing this pass", err)
            self.metrics.errors.labels("podresources").inc()
            return False
        try:
            index_to_uuid = self.devices.uuids()
        except pynvml.NVMLError as err:
            log.warning("cannot list GPUs through NVML (%s); changing nothing this pass", err)
            self.metrics.errors.labels("nvml").inc()
            return False

        requests, pod_gpus, pod_problems = self._requests(pods, gpus_by_pod, index_to_uuid)
        outcomes = {uuid: self._apply(uuid, reqs, self._ceiling(uuid)) for uuid, reqs in requests.items()}
        for uuid in [u for u in self.gpus if u not in requests]:
            self._release(uuid)
        usage_mw = self._observe_usage(index_to_uuid)
        acted: set[tuple[str, str]] = set()
        if self.capper is not None:
            acted = self._cap_reactively(requests, pod_gpus, pod_problems, outcomes, usage_mw)
        self._save()
        self._report(pod_gpus, pod_problems, outcomes, quiet=acted)
        return True

    def _requests(self, pods: list[PodInfo], gpus_by_pod: dict[tuple[str, str], list[str]],
                  index_to_uuid: list[str]):
        """Per GPU UUID the requests of the annotated pods holding it; per pod its GPU UUIDs; per pod
        a problem message when some of its devices cannot be mapped to a GPU."""
        requests: dict[str, list[_Request]] = {}
        pod_gpus: dict[tuple[str, str], tuple[PodInfo, list[str]]] = {}
        problems: dict[tuple[str, str], str] = {}
        for pod in pods:
            if ANNOTATION_REQUEST not in pod.annotations or pod.phase in ("Succeeded", "Failed"):
                continue
            device_ids = gpus_by_pod.get(pod.key)
            if not device_ids:
                continue  # no GPU allocated (yet): nothing to cap
            uuids, unmapped = [], []
            for device_id in device_ids:
                if device_id.startswith("GPU-"):
                    uuids.append(device_id)
                elif device_id.isdigit() and int(device_id) < len(index_to_uuid):
                    uuids.append(index_to_uuid[int(device_id)])  # device plugin's index ID strategy
                else:
                    unmapped.append(device_id)  # e.g. a MIG device: limits are per physical GPU
            if unmapped:
                problems[pod.key] = (f"{len(unmapped)} device(s) of the pod are not whole GPUs this agent can "
                                     "find through NVML (MIG devices or unknown IDs); their limits are untouched")
            watts = parse_request_watts(pod.annotations[ANNOTATION_REQUEST])
            for uuid in uuids:
                requests.setdefault(uuid, []).append(_Request(pod, watts))
            pod_gpus[pod.key] = (pod, sorted(set(uuids)))
        return requests, pod_gpus, problems

    def _target(self, uuid: str, reqs: list[_Request]) -> tuple[int, bool, str, int, int]:
        """(target mW, whether it is the safe cap, why, device minimum mW, device maximum mW) for one
        GPU. Raises NVMLError."""
        low, high = self.devices.limit_constraints_mw(uuid)
        clamp = lambda mw: max(low, min(high, int(round(mw))))  # noqa: E731
        safe_mw = clamp(SAFE_CAP_FRACTION * self.devices.default_limit_mw(uuid))
        names = sorted({f"{r.pod.namespace}/{r.pod.name}" for r in reqs})
        unreadable = sorted(f"{r.pod.namespace}/{r.pod.name}" for r in reqs if r.watts is None)
        if unreadable:
            return safe_mw, True, (f"annotation {ANNOTATION_REQUEST} of pod(s) {', '.join(unreadable)} is not a "
                                   f"positive number of watts; safe cap {_watts(safe_mw)} W "
                                   f"({SAFE_CAP_FRACTION:.0%} of the default limit)"), low, high
        asked_mw = sorted({int(round(r.watts * 1000)) for r in reqs})
        if len(asked_mw) > 1:
            # never above any request (the plan's budget held for each) nor above the safe cap
            target = min(safe_mw, clamp(asked_mw[0]))
            return target, True, (f"pods {', '.join(names)} ask different caps for this GPU "
                                  f"({', '.join(f'{_watts(a)} W' for a in asked_mw)}); safe cap {_watts(target)} W "
                                  f"(the lower of the lowest request and {SAFE_CAP_FRACTION:.0%} of the default "
                                  "limit)"), low, high
        target = clamp(asked_mw[0])
        note = ""
        if target != asked_mw[0]:
            note = (f"requested {_watts(asked_mw[0])} W is outside the GPU's range "
                    f"[{_watts(low)}, {_watts(high)}] W; clamped to {_watts(target)} W")
        return target, False, note, low, high

    def _ceiling(self, uuid: str) -> int | None:
        """The reactive cap of a GPU, mW, or None (none, or reactive capping off: then the GPU gets its
        planned cap whatever an earlier run with a budget left in the state)."""
        st = self.gpus.get(uuid)
        return st.reactive_cap_mw if st is not None and self.capper is not None else None

    def _apply(self, uuid: str, reqs: list[_Request], ceiling_mw: int | None = None) -> _Outcome:
        """Bring one requested GPU to its target; the outcome for the pods' reports. ``ceiling_mw``:
        the reactive cap, which lowers the planned target (never below the device minimum; it does
        not apply to a safe cap, which reactive capping leaves alone)."""
        st = self.gpus.get(uuid)
        pods = sorted({f"{r.pod.namespace}/{r.pod.name}" for r in reqs})
        try:
            target, safe, note, low, high = self._target(uuid, reqs)
            current = self.devices.management_limit_mw(uuid)
        except pynvml.NVMLError as err:
            return self._set_outcome(uuid, st, _Outcome(FAILED, f"NVML cannot read GPU {uuid}: {err}"))
        planned = target
        if ceiling_mw is not None and not safe and ceiling_mw < target:
            target = max(low, ceiling_mw)
            reactive = (f"reactive cap {_watts(target)} W, below the planned {_watts(planned)} W, to keep the node "
                        "within its power budget")
            note = f"{note}; {reactive}" if note else reactive
        resolved = {"planned_mw": None if safe else planned, "range_mw": (low, high)}
        if st is not None:
            st.pods, st.idle_since_s = pods, None
            if current != st.observed_mw:
                # someone else set this GPU's limit since the agent read it back: report, don't fight
                msg = (f"GPU {uuid}: its power limit is {_watts(current)} W but the agent set "
                       f"{_watts(st.observed_mw)} W; another writer changed it, so the agent leaves it alone "
                       "until the GPU is idle or the limit returns to the agent's value")
                return self._set_outcome(uuid, st, _Outcome(SECOND_WRITER, msg, self._enforced(uuid)))
        if st is None:
            # remember the GPU before the first write, so that a crash right after it still restores
            st = ManagedGpu(target_mw=current, observed_mw=current, pods=pods)
            self.gpus[uuid] = st
            self._save()
        if st.target_mw != target:  # write only a changed target: never rewrite our own read-back
            try:
                self.devices.set_limit_mw(uuid, target)
            except pynvml.NVMLError as err:
                return self._set_outcome(uuid, st, _Outcome(
                    FAILED, f"NVML refused power limit {_watts(target)} W on GPU {uuid}: {err}"))
            st.target_mw = target
        try:
            st.observed_mw = self.devices.management_limit_mw(uuid)
            enforced = self.devices.enforced_limit_mw(uuid)
        except pynvml.NVMLError as err:
            return self._set_outcome(uuid, st, _Outcome(FAILED, f"NVML cannot read back GPU {uuid}: {err}"))
        self.metrics.target.labels(uuid).set(target / 1000.0)
        if st.observed_mw != target or enforced != target:
            msg = (f"GPU {uuid}: set {_watts(target)} W, read back management limit {_watts(st.observed_mw)} W and "
                   f"enforced limit {_watts(enforced)} W (a limit set elsewhere, e.g. out of band, wins)")
            return self._set_outcome(uuid, st, _Outcome(MISMATCH, msg + (f"; {note}" if note else ""), enforced,
                                                        **resolved))
        msg = f"GPU {uuid}: power limit {_watts(enforced)} W" + (f"; {note}" if note else "")
        return self._set_outcome(uuid, st, _Outcome(SAFE_CAP if safe else APPLIED, msg, enforced,
                                                    noteworthy=safe or bool(note), **resolved))

    def _enforced(self, uuid: str) -> int | None:
        try:
            return self.devices.enforced_limit_mw(uuid)
        except pynvml.NVMLError:
            return None

    def _set_outcome(self, uuid: str, st: ManagedGpu | None, outcome: _Outcome) -> _Outcome:
        """Record the outcome on the GPU's state; count and log it when it changed."""
        changed = self._last_outcome.get(uuid) != (outcome.status, outcome.message)
        self._last_outcome[uuid] = (outcome.status, outcome.message)
        if st is not None:
            st.status, st.message = outcome.status, outcome.message
        if outcome.enforced_mw is not None:
            self.metrics.limit.labels(uuid).set(outcome.enforced_mw / 1000.0)
        if changed:
            self.metrics.outcomes.labels(outcome.status).inc()
            level = logging.INFO if outcome.status == APPLIED else logging.WARNING
            log.log(level, "%s: %s", outcome.status, outcome.message)
        return outcome

    # ---- releasing GPUs -------------------------------------------------------------------------

    def _release(self, uuid: str, now_s: float | None = None, force: bool = False) -> None:
        """Stop managing a GPU no annotated pod holds: after ``idle_grace_s`` (at once with
        ``force``), restore NVML's default limit, unless another writer changed the limit, which
        is then left as it is. An NVML error keeps the GPU managed, to retry next pass."""
        st = self.gpus[uuid]
        now_s = self.clock() if now_s is None else now_s
        if st.idle_since_s is None:
            st.idle_since_s = now_s
        if not force and now_s - st.idle_since_s < self.idle_grace_s:
            return
        try:
            current = self.devices.management_limit_mw(uuid)
            if current != st.observed_mw:
                log.warning("GPU %s is idle; its limit (%s W) was set by another writer, left as it is",
                            uuid, _watts(current))
                outcome = "released-to-other-writer"
            else:
                default = self.devices.default_limit_mw(uuid)
                if current != default:
                    self.devices.set_limit_mw(uuid, default)
                restored = self.devices.management_limit_mw(uuid)
                if restored != default:
                    log.warning("GPU %s: restored default %s W but read back %s W", uuid, _watts(default),
                                _watts(restored))
                log.info("GPU %s is idle: restored its default power limit %s W", uuid, _watts(default))
                outcome = "restored"
        except pynvml.NVMLError as err:
            log.warning("GPU %s: cannot restore its default power limit (%s); will retry", uuid, err)
            self.metrics.errors.labels("nvml").inc()
            return
        self.metrics.outcomes.labels(outcome).inc()
        for gauge in (self.metrics.limit, self.metrics.target):
            try:
                gauge.remove(uuid)
            except KeyError:
                pass
        del self.gpus[uuid]
        self._last_outcome.pop(uuid, None)

    def shutdown(self) -> None:
        """Restore the default limit of every GPU the agent manages (second writers' GPUs are left
        as they are) and save what could not be restored, for the next start."""
        for uuid in list(self.gpus):
            self._release(uuid, force=True)
        self._save()

    # ---- reporting ------------------------------------------------------------------------------

    def _report(self, pod_gpus, pod_problems, outcomes: dict[str, _Outcome],
                quiet: set[tuple[str, str]] = frozenset()) -> None:
        """Annotate each annotated pod that holds GPUs with its enforcement report, and record an
        Event when the report changed (the annotation is the memory, so a restart re-sends nothing).
        Pods in ``quiet`` got a reactive-capping Event this pass: a plain ``applied`` report of the
        new cap would only repeat it, so it updates the annotation without an Event."""
        live = set(pod_gpus)
        self._reported = {k: v for k, v in self._reported.items() if k in live}
        for key, (pod, uuids) in sorted(pod_gpus.items()):
            gpu_outcomes = [outcomes[u] for u in uuids]
            status = max((o.status for o in gpu_outcomes), key=_SEVERITY.__getitem__, default=FAILED)
            messages = sorted({o.message for o in gpu_outcomes if o.noteworthy})
            if key in pod_problems:
                status = FAILED if not uuids else max(status, MISMATCH, key=_SEVERITY.__getitem__)
                messages.append(pod_problems[key])
            report = {"status": status,
                      "limitWatts": {u: _watts(outcomes[u].enforced_mw) for u in uuids},
                      "message": "; ".join(messages)}
            value = json.dumps(report, sort_keys=True, separators=(",", ":"))
            if value in (pod.annotations.get(ANNOTATION_APPLIED), self._reported.get(key)):
                continue
            self._reported[key] = value  # also when the annotation cannot be written (RBAC, API down)
            self.pods.annotate(pod, ANNOTATION_APPLIED, value)
            if key in quiet and status == APPLIED:
                continue
            limits = ", ".join(f"{u} {_watts(o.enforced_mw)} W" for u, o in zip(uuids, gpu_outcomes))
            text = f"power limits: {limits or 'none'}" + (f"; {report['message']}" if report["message"] else "")
            self.pods.event(pod, _EVENT_REASON[status], text, warning=status != APPLIED)

    def _observe_usage(self, uuids: list[str]) -> dict[str, int | None]:
        """Each GPU's NVML power reading, mW (None where NVML fails), also set as a metric."""
        usage: dict[str, int | None] = {}
        for uuid in uuids:
            try:
                usage[uuid] = self.devices.power_usage_mw(uuid)
            except pynvml.NVMLError:
                usage[uuid] = None  # optional for applying caps; makes reactive capping hold
                continue
            self.metrics.usage.labels(uuid).set(usage[uuid] / 1000.0)
        return usage

    # ---- reactive capping -----------------------------------------------------------------------

    def _cap_reactively(self, requests: dict[str, list[_Request]], pod_gpus, pod_problems,
                        outcomes: dict[str, _Outcome], usage_mw: dict[str, int | None]) -> set[tuple[str, str]]:
        """One interval of reactive capping for this node (module docstring). Updates ``outcomes`` of
        the GPUs it re-applies; returns the keys of the pods it recorded an Event on."""
        capped: list[PodCaps] = []
        for key, (pod, uuids) in sorted(pod_gpus.items()):
            outs = [outcomes[u] for u in uuids]
            # the agent alone caps all of the pod's GPUs, from a readable plan: anything else is left
            # to the rest of the agent (safe cap, second writer, failure) and only counts in the draw
            if (not uuids or key in pod_problems or any(len(requests[u]) != 1 for u in uuids)
                    or any(o.status not in (APPLIED, MISMATCH) or o.planned_mw is None for o in outs)):
                continue
            capped.append(PodCaps(pod, tuple(uuids), cap_mw=min(self.gpus[u].target_mw for u in uuids),
                                  planned_mw=min(o.planned_mw for o in outs),
                                  min_mw=max(o.range_mw[0] for o in outs), max_mw=min(o.range_mw[1] for o in outs)))
        # the draw of every GPU the agent manages or is asked to manage, that NVML knows on this node
        managed = (set(requests) | set(self.gpus)) & set(usage_mw)
        if not managed:
            return set()
        grouped = {u for p in capped for u in p.uuids}
        others_mw = sum(self.gpus[u].observed_mw for u in managed - grouped if u in self.gpus)
        domain = build_domain(self.budget, capped, others_mw / 1000.0)
        decision = self.capper.step(domain, draw_watts({u: usage_mw[u] for u in managed}))
        self._forget_cap_series(domain)
        if decision.notes != self._capping_notes:
            for note in decision.notes:
                log.warning("reactive capping: %s", note)
            self._capping_notes = decision.notes
        for p in capped:
            new_mw = int(round(decision.caps_watts[group_name(p.pod)] * 1000))
            ceiling = None if new_mw >= p.planned_mw else max(p.min_mw, new_mw)
            before = {u: self.gpus[u].reactive_cap_mw for u in p.uuids}
            for uuid in p.uuids:
                self.gpus[uuid].reactive_cap_mw = ceiling
            if new_mw != p.cap_mw:
                for uuid in p.uuids:  # the same path as every write: set, read back, report
                    outcomes[uuid] = self._apply(uuid, requests[uuid], ceiling)
                if any(outcomes[u].status not in (APPLIED, MISMATCH) for u in p.uuids):
                    # NVML refused: the pod's report says so (e.g. PowerLimitFailed); the cap in force
                    # stays what it was, so the next pass decides again from it
                    for uuid in p.uuids:
                        self.gpus[uuid].reactive_cap_mw = before[uuid]
        by_group = {group_name(p.pod): p.pod for p in capped
                    if all(outcomes[u].status in (APPLIED, MISMATCH) for u in p.uuids)}
        acted = set()
        for action in decision.actions:
            pod = by_group.get(action.group)
            if pod is None:
                continue
            log.log(logging.WARNING if action.event_type == "Warning" else logging.INFO, "%s", action.message)
            self.pods.event(pod, action.event_reason, action.message, warning=action.event_type == "Warning")
            acted.add(pod.key)
        return acted

    def _forget_cap_series(self, domain) -> None:
        """Drop the per-group cap gauge of pods no longer in the domain (pods come and go)."""
        series = {(domain.name, g.name, g.tier) for g in domain.groups}
        for labels in self._capped_series - series:
            try:
                self.capper.metrics.cap.remove(*labels)
            except KeyError:
                pass
        self._capped_series = series

    def _save(self) -> None:
        self.state_file.save(self.gpus)
        self.metrics.managed.set(len(self.gpus))

    # ---- the loop -------------------------------------------------------------------------------

    def run(self, stop: threading.Event, interval_s: float = 10.0) -> None:
        """Reconcile every ``interval_s`` until ``stop`` is set (by SIGTERM in ``llmfleet
        power-agent``), then restore the defaults (``shutdown``)."""
        try:
            while not stop.is_set():
                self.reconcile()
                stop.wait(interval_s)
        finally:
            self.shutdown()
