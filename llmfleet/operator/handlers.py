"""kopf handlers: every change to an LLMWorkload, GPUPool or FleetPolicy (and to the status of a
Deployment llmfleet manages) wakes one cluster-wide planner task; the plan is joint, so no
handler reconciles a single object. Bursts are debounced, and a timer re-plans every
``FleetPolicy.spec.replanIntervalSeconds``.

Settings come from the environment so that ``kopf run -m llmfleet.operator`` and
``llmfleet operator`` behave the same:
    LLMFLEET_TRACE_DIR          folder relative trace paths are read from (default: the cwd)
    LLMFLEET_DEBOUNCE_SECONDS   quiet time gathered before a reconcile (default 1.0)
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import kopf

from llmfleet.api.loader import ManifestError, parse_document
from llmfleet.api.models import API_GROUP, API_VERSION
from llmfleet.operator.kube import Kube
from llmfleet.operator.planner import FleetPlanner
from llmfleet.operator.render import LABEL_MANAGED_BY, MANAGED_BY

log = logging.getLogger("llmfleet.operator")

CUSTOM_RESOURCES = ("llmworkloads", "gpupools", "fleetpolicies")
DEFAULT_REPLAN_INTERVAL_S = 300.0
FAILURE_BACKOFF_S = 5.0
CRD_WAIT_S = 30


class PlannerLoop:
    """Runs ``FleetPlanner.reconcile`` in a worker thread whenever woken (after a quiet period of
    ``debounce_s``) and at least every re-plan interval (then with a fresh solve)."""

    def __init__(self, planner: FleetPlanner, debounce_s: float):
        self.planner = planner
        self.debounce_s = debounce_s
        self.wake_event = asyncio.Event()
        self.generations: dict[str, int | None] = {}

    def wake(self, reason: str) -> None:
        log.debug("planner woken: %s", reason)
        self.wake_event.set()

    async def run(self) -> None:
        interval = DEFAULT_REPLAN_INTERVAL_S
        self.wake_event.set()  # plan once at start-up: converge after a restart
        while True:
            try:
                await asyncio.wait_for(self.wake_event.wait(), timeout=interval)
            except asyncio.TimeoutError:
                self.planner.invalidate()  # periodic re-plan: solve afresh
            await asyncio.sleep(self.debounce_s)
            self.wake_event.clear()
            try:
                report = await asyncio.to_thread(self.planner.reconcile)
                interval = self.planner.replan_interval_s or DEFAULT_REPLAN_INTERVAL_S
                if report.errors:
                    log.warning("reconcile finished with errors: %s", "; ".join(report.errors))
                elif report.solved:
                    log.info("new plan (%s, mode %s): %d changes", report.plan.status if report.plan else "none",
                             report.mode, sum(c["action"] != "unchanged" for c in report.diff))
            except Exception:
                log.exception("reconcile failed; retrying in %.0fs", FAILURE_BACKOFF_S)
                await asyncio.sleep(FAILURE_BACKOFF_S)
                self.wake_event.set()


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    # the planner records its own Events; kopf's per-handler events would duplicate them
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # scan the API once at start-up instead of watching CustomResourceDefinitions: the operator
    # then needs no access to CRDs (least privilege); the CRDs must exist before it starts
    settings.scanning.disabled = True
    trace_dir = Path(os.environ.get("LLMFLEET_TRACE_DIR") or Path.cwd())
    debounce_s = float(os.environ.get("LLMFLEET_DEBOUNCE_SECONDS", "1.0"))
    namespaces = [ns for ns in os.environ.get("LLMFLEET_NAMESPACES", "").split(",") if ns]
    kube = Kube(namespaces=namespaces or None)
    for attempt in range(CRD_WAIT_S):
        try:
            kube.resource("LLMWorkload")
            break
        except Exception as err:  # CRDs just applied may take a moment to be served
            if attempt == CRD_WAIT_S - 1:  # exit; the Deployment restarts us once they are installed
                raise kopf.PermanentError(f"the llmfleet CRDs are not served by this cluster ({err}); "
                                          "install them first: kubectl apply -f crds/") from err
            await asyncio.sleep(1.0)
    loop = PlannerLoop(FleetPlanner(kube, trace_dir), debounce_s)
    memo.planner_loop = loop
    memo.planner_task = asyncio.create_task(loop.run())
    log.info("llmfleet operator started (trace dir %s, debounce %.1fs)", trace_dir, debounce_s)


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_) -> None:
    task = getattr(memo, "planner_task", None)
    if task:
        task.cancel()


def _on_custom_resource(event: dict, body: kopf.Body, memo: kopf.Memo, **_) -> None:
    """Validate the object (the planner writes the condition) and wake the planner when its spec
    changed or it was deleted; status writes (our own) do not wake it."""
    loop: PlannerLoop | None = getattr(memo, "planner_loop", None)
    if loop is None:
        return
    md = body.get("metadata", {})
    key = f"{body.get('kind')}/{md.get('namespace') or ''}/{md.get('name')}"
    generation = md.get("generation")
    if event.get("type") == "DELETED":
        loop.generations.pop(key, None)
        loop.wake(f"{key} deleted")
        return
    if loop.generations.get(key) == generation:
        return
    loop.generations[key] = generation
    try:
        parse_document({k: v for k, v in dict(body).items() if k != "status"}, key)
    except ManifestError as err:
        log.warning("%s is invalid: %s", key, err)
    loop.wake(f"{key} generation {generation}")


for _plural in CUSTOM_RESOURCES:
    kopf.on.event(API_GROUP, API_VERSION, _plural)(_on_custom_resource)


@kopf.on.event("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: MANAGED_BY})
def _on_child_deployment(event: dict, body: kopf.Body, memo: kopf.Memo, **_) -> None:
    """A managed Deployment changed (availability, a manual edit, a deletion): refresh status and
    repair drift with the cached plan (no new solve)."""
    loop: PlannerLoop | None = getattr(memo, "planner_loop", None)
    if loop is not None:
        loop.wake(f"deployment {body.get('metadata', {}).get('name')} {event.get('type')}")
