"""kopf handlers: every change to an LLMWorkload, GPUPool or FleetPolicy (and to the status of a
Deployment llmfleet manages) wakes one cluster-wide planner task; the plan is joint, so no
handler reconciles a single object. Bursts are debounced, a timer re-plans every
``FleetPolicy.spec.replanIntervalSeconds``, and a plan whose solver stopped at its time limit is
followed at once by re-plans from it (``FollowUps``).

With leader election (``LLMFLEET_LEADER_ELECTION``, leader.py) every replica runs these handlers
but only the one holding the Lease starts its planner; the others only watch.

On SIGTERM (or a lost Lease) writes stop at once (``Kube.stop_writes``): the apply in progress is
abandoned before its next request, the Lease is released, and the process exits within
``LLMFLEET_SHUTDOWN_TIMEOUT_SECONDS`` whatever a solve in progress does.

Settings come from the environment so that ``kopf run -m llmfleet.operator`` and
``llmfleet operator`` behave the same:
    LLMFLEET_TRACE_DIR          folder relative trace paths are read from (default: the cwd)
    LLMFLEET_DEBOUNCE_SECONDS   quiet time gathered before a reconcile (default 1.0)
    LLMFLEET_API_TIMEOUT_SECONDS        timeout of one API request (default kube.DEFAULT_API_TIMEOUT_S)
    LLMFLEET_SHUTDOWN_TIMEOUT_SECONDS   most time from SIGTERM to exit (default 20)
    LLMFLEET_LEADER_ELECTION    "1": elect one active replica with a Lease (default off)
    LLMFLEET_LEASE_NAME, LLMFLEET_LEASE_NAMESPACE, LLMFLEET_LEASE_DURATION_SECONDS,
    LLMFLEET_RENEW_DEADLINE_SECONDS, LLMFLEET_RETRY_PERIOD_SECONDS   see leader.ElectionSettings
    LLMFLEET_METRICS_PORT       port of the operator's own /metrics (default 9102; 0: off)
    LLMFLEET_PROMETHEUS_URL     Prometheus to read workload telemetry from (default: none, telemetry
                                off: every workload is planned from its declared traffic)
    LLMFLEET_TELEMETRY_SCRAPE_INTERVAL_SECONDS   scrape interval of the vLLM job (default 15)
    LLMFLEET_TELEMETRY_WINDOW_SECONDS            rate() window (default 60; >= 4 scrape intervals)
    LLMFLEET_TELEMETRY_STALE_INTERVALS           samples older than this many scrape intervals are
                                                 stale (default 3)
    LLMFLEET_SCALE_DOWN_STABILISATION_SECONDS    demand must stay below the band this long before a
                                                 scale-down (default 300, Kubernetes HPA)
    LLMFLEET_SCALE_DOWN_COOLDOWN_SECONDS         no scale-down this soon after a change (default 300)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import threading
from pathlib import Path

import kopf

from llmfleet.api.loader import ManifestError, parse_document
from llmfleet.api.models import API_GROUP, API_VERSION
from llmfleet.operator.kube import DEFAULT_API_TIMEOUT_S, ApiUnavailable, Kube, WritesStopped
from llmfleet.operator.leader import (DEFAULT_LEASE_DURATION_S, DEFAULT_RENEW_DEADLINE_S, DEFAULT_RETRY_PERIOD_S,
                                      ElectionSettings, LeaderElector)
from llmfleet.operator import selfmetrics
from llmfleet.operator.live import LiveDemand
from llmfleet.operator.planner import FleetPlanner
from llmfleet.operator.render import LABEL_MANAGED_BY, MANAGED_BY
from llmfleet.solver.plan import Plan
from llmfleet.solver.problem import available_cpus

log = logging.getLogger("llmfleet.operator")

CUSTOM_RESOURCES = ("llmworkloads", "gpupools", "fleetpolicies")
DEFAULT_REPLAN_INTERVAL_S = 300.0
FAILURE_BACKOFF_S = 5.0
CRD_WAIT_S = 30
DEFAULT_SHUTDOWN_TIMEOUT_S = 20.0
"""Most time from SIGTERM to exit, s: under the 30 s a pod gets by default
(``terminationGracePeriodSeconds``, Kubernetes pod lifecycle) with room for the kubelet's own steps"""

STOP_FLAG = threading.Event()
"""Set to stop kopf (``kopf.run(stop_flag=STOP_FLAG)``, as ``llmfleet operator`` does): the SIGTERM
handler installed at start-up stops writes first, then sets it"""


def _in_daemon_thread(fn):
    """Run ``fn`` in a daemon thread and return an awaitable of its result. Not the default
    executor (``asyncio.to_thread``): the interpreter joins those threads at exit, so a solve in
    progress would hold the process past its grace period."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def deliver(ok: bool, value) -> None:
        if not fut.done():
            fut.set_result(value) if ok else fut.set_exception(value)

    def target() -> None:
        try:
            result, ok = fn(), True
        except BaseException as err:  # noqa: BLE001 (handed to the awaiting task)
            result, ok = err, False
        try:
            loop.call_soon_threadsafe(deliver, ok, result)
        except RuntimeError:
            pass  # the loop closed meanwhile: the process is exiting

    threading.Thread(target=target, name="llmfleet-reconcile", daemon=True).start()
    return fut


FOLLOW_UPS = 3
"""re-plans at most, one after another, that go on from a plan whose MILP stopped at its time limit
(``FollowUps``)"""


SHED_TOL_RPS = 1e-3
"""req/s within which two plans' shed counts as equal (``FollowUps``): plan documents give shedRps
to 1e-4 req/s, and the routing LPs solve to HiGHS's feasibility tolerance"""


@dataclasses.dataclass
class FollowUps:
    """When to re-plan at once, with no change to any input: after a plan whose MILP stopped at its
    time limit (status ``feasible``: the gap not proven), as the operator's first plan of a large
    fleet does; after an incremental re-plan that had no time to check some kept workloads
    against their best plans alone (``Plan.unchecked_kept``: its gap covers only what it planned);
    and after a shortage whose phases stopped at their time limit (a first plan of a fleet whose
    pools are too small may leave a group over-provisioned while others shed).
    The re-plan starts from that plan (the running one): the workloads its one-by-one checks show
    optimal stay, the others move to their best plans alone where that saves more than the churn;
    in a shortage, idle replicas go to the short workloads.
    Without it those moves wait for the next change to any workload, which then moves many
    workloads that did not change (bench/operator_replan.py, 100 workloads, a first plan stopped at
    $4,132/h: 78 Deployments created and 70 deleted among the others at the first one-workload
    change, to $3,040/h; at a 10-s limit, a first plan at $3,702/h followed up once to an
    incremental "optimal" $3,201/h with kept workloads unchecked: 22 created and 19 deleted among
    the others at the first change, to $3,031/h; with binding pools (``--scarcity 0.3``), a first
    plan stopped at 30 s with a silver group a replica over: 12 Deployments of 3 other workloads
    touched at the first change). At most ``FOLLOW_UPS`` in a row, and only while each improves:
    sheds less, tier by tier from the highest (a shortage), or costs less at the same shed."""

    done: int = 0
    best: tuple[tuple[float, ...], float] | None = None

    def after(self, status: str | None, cost_per_hour: float | None, unchecked_kept: int = 0,
              stopped: bool = False, shed_by_tier: tuple[float, ...] = ()) -> bool:
        """Whether to re-plan at once after a solve that gave ``status`` at ``cost_per_hour`` (USD/h;
        None without a plan), with ``unchecked_kept`` kept workloads not checked against their best
        plans alone (``Plan.unchecked_kept``), ``stopped``: a phase stopped at its time limit
        (``Plan.phases``), and ``shed_by_tier``: req/s shed per tier, highest tier first
        (``shed_by_tier``). Updates the count: a plan proven optimal with every kept workload
        checked, a shortage whose phases all finished, no plan, no improvement over the previous
        follow-up or ``FOLLOW_UPS`` reached end the series."""
        score = (tuple(shed_by_tier), cost_per_hour)
        improving = self.best is None or (cost_per_hour is not None and _better(score, self.best))
        unproven = (status == "feasible" or (status == "optimal" and unchecked_kept > 0)
                    or (status == "shortage" and stopped))
        if not unproven or cost_per_hour is None or not improving or self.done >= FOLLOW_UPS:
            self.done, self.best = 0, None
            return False
        self.done += 1
        self.best = score
        return True


def _better(new: tuple[tuple[float, ...], float], old: tuple[tuple[float, ...], float]) -> bool:
    """Whether the plan scored ``new`` (req/s shed per tier, highest first; cost, USD/h) improves
    on ``old``: less shed at the first tier where they differ by more than ``SHED_TOL_RPS``, or
    the same shed and a cost lower by more than one part in a million."""
    for a, b in zip(new[0], old[0]):
        if abs(a - b) > SHED_TOL_RPS:
            return a < b
    return new[1] < old[1] * (1.0 - 1e-6)


def shed_by_tier(plan: Plan) -> tuple[float, ...]:
    """req/s the plan sheds per tier, highest tier value first (``WorkloadResult.tier_value``)."""
    shed: dict[int, float] = {}
    for r in plan.workloads:
        shed[r.tier_value] = shed.get(r.tier_value, 0.0) + r.shed_rps
    return tuple(shed[t] for t in sorted(shed, reverse=True))


def stopped_at_limit(plan: Plan) -> bool:
    """Whether one of the plan's solver phases (``Plan.phases``) stopped at, or was not run for, the
    time limit (HiGHS "Time limit reached"; "not run: time limit")."""
    return any("time limit" in str(p.get("status") or "").lower() for p in plan.phases)


class PlannerLoop:
    """Runs ``FleetPlanner.reconcile`` in a worker thread whenever woken (after a quiet period of
    ``debounce_s``), when a drift back-off ends, at least every re-plan interval (then with a
    fresh solve), and at once after a plan its time limit stopped short (``FollowUps``). With
    ``leading`` it waits for this replica to hold the Lease first."""

    def __init__(self, planner: FleetPlanner, debounce_s: float, leading: asyncio.Event | None = None):
        self.planner = planner
        self.debounce_s = debounce_s
        self.wake_event = asyncio.Event()
        self.generations: dict[str, int | None] = {}
        self.leading = leading
        self.in_flight: asyncio.Future | None = None
        self.follow_ups = FollowUps()

    @property
    def active(self) -> bool:
        """Whether this replica reconciles (no election, or it holds the Lease)."""
        return self.leading is None or self.leading.is_set()

    def wake(self, reason: str) -> None:
        log.debug("planner woken: %s", reason)
        self.wake_event.set()

    async def run(self) -> None:
        if self.leading is not None:
            await self.leading.wait()
        loop = asyncio.get_running_loop()
        interval = DEFAULT_REPLAN_INTERVAL_S
        replan_at = loop.time() + interval
        self.wake_event.set()  # plan once at start-up (or on taking over): converge after a restart
        while not self.planner.kube.writes_stopped:
            retry_s = self.planner.fights.next_retry_s()
            timeout = max(0.0, replan_at - loop.time())
            if retry_s is not None:
                timeout = min(timeout, retry_s + 0.1)
            try:
                await asyncio.wait_for(self.wake_event.wait(), timeout=timeout)
            except asyncio.TimeoutError:
                pass
            if loop.time() >= replan_at:
                self.planner.invalidate()  # periodic re-plan: solve afresh
                replan_at = loop.time() + interval
            await asyncio.sleep(self.debounce_s)
            self.wake_event.clear()
            try:
                self.in_flight = _in_daemon_thread(self.planner.reconcile)
                report = await self.in_flight
                interval = self.planner.replan_interval_s or DEFAULT_REPLAN_INTERVAL_S
                if report.solved:
                    replan_at = loop.time() + interval
                if report.errors:
                    log.warning("reconcile finished with errors: %s", "; ".join(report.errors))
                elif report.solved:
                    log.info("new plan (%s, mode %s): %d changes", report.plan.status if report.plan else "none",
                             report.mode, sum(c["action"] != "unchanged" for c in report.diff))
                plan = report.plan
                if report.solved and self.follow_ups.after(plan.status if plan else None,
                                                           plan.cost_per_hour if plan else None,
                                                           plan.unchecked_kept if plan else 0,
                                                           stopped_at_limit(plan) if plan else False,
                                                           shed_by_tier(plan) if plan else ()):
                    why = ("the solver stopped at its time limit" if plan.status == "feasible" else
                           "the solver's phases stopped at their time limit with demand shed"
                           if plan.status == "shortage" else
                           f"{plan.unchecked_kept} kept workload(s) not yet checked against their best plan alone")
                    log.info("%s: re-planning from this plan (%d of at most %d)", why, self.follow_ups.done, FOLLOW_UPS)
                    self.planner.invalidate()
                    self.wake_event.set()
            except WritesStopped as err:
                log.info("reconcile abandoned: %s", err)
                return
            except ApiUnavailable as err:  # already logged once by the call; no traceback for an outage
                log.warning("reconcile failed (%s); retrying in %.0fs", err, FAILURE_BACKOFF_S)
                await asyncio.sleep(FAILURE_BACKOFF_S)
                self.wake_event.set()
            except Exception:
                log.exception("reconcile failed; retrying in %.0fs", FAILURE_BACKOFF_S)
                await asyncio.sleep(FAILURE_BACKOFF_S)
                self.wake_event.set()
            finally:
                self.in_flight = None


QUIET_LOGGERS = ("kopf.objects", "kopf.activities", "leaderelection")
"""Loggers that speak per handler call or per retry (kopf's "Handler ... succeeded", the Lease
library's "yet to finish lease_duration" every retry period): WARNING and up only, unless -v"""

_signals_owned = False
exit_code = 0
"""The process's exit status after ``kopf.run`` returns: 1 when it stopped because it lost the Lease"""


def own_signals() -> threading.Event:
    """Let the operator handle SIGTERM/SIGINT itself (stop writes first, then stop kopf); returns
    the flag to pass as ``kopf.run(stop_flag=...)``. ``llmfleet operator`` calls it; under
    ``kopf run`` kopf's own handlers stay and writes stop in the cleanup handler instead."""
    global _signals_owned
    _signals_owned = True
    return STOP_FLAG


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise kopf.PermanentError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise kopf.PermanentError(f"{name}={raw!r} must be positive")
    return value


def _env_int(name: str, default: int, low: int, high: int | None, kind: str, allowed: str) -> int:
    """The whole number in environment variable ``name`` (``default`` when unset or empty).

    Raises:
        kopf.PermanentError: not a whole number (named ``kind``), or outside ``low``..``high``
            (None: no upper limit), with ``allowed`` saying what is.
    """
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise kopf.PermanentError(f"{name}={raw[:40]!r} is not {kind}") from None
    if value < low or (high is not None and value > high):
        raise kopf.PermanentError(f"{name}={raw[:40]!r} must be {allowed}")
    return value


def _env_port(name: str, default: int) -> int:
    return _env_int(name, default, 0, 65535, "a port number", "a port in 0-65535 (0: off)")


def planner_workers_from_env() -> int:
    """Processes the planner's capacity model may use (``build_problem(workers=)``):
    ``LLMFLEET_PLANNER_WORKERS`` (``llmfleet operator --planner-workers``, the chart's
    ``operator.plannerWorkers``; default 1), at most ``available_cpus()`` (the pod's CPU limit or
    cpuset), so a pod limited to one CPU models in its own process whatever it is told.

    Raises:
        kopf.PermanentError: the variable is not a whole number >= 1.
    """
    value = _env_int("LLMFLEET_PLANNER_WORKERS", 1, 1, None, "a whole number", ">= 1")
    return min(value, available_cpus()) if value > 1 else 1  # loky is imported only when asked


def live_demand_from_env() -> LiveDemand | None:
    """The telemetry side of the planner from ``LLMFLEET_PROMETHEUS_URL`` and friends (module
    docstring); None without a URL. Raises kopf.PermanentError for a bad setting."""
    url = os.environ.get("LLMFLEET_PROMETHEUS_URL", "").strip()
    if not url:
        return None
    from llmfleet.telemetry.client import TelemetryClient
    from llmfleet.telemetry.stability import StabilityPolicy

    scrape_s = _env_float("LLMFLEET_TELEMETRY_SCRAPE_INTERVAL_SECONDS", 15.0)
    try:
        client = TelemetryClient(url, window_s=_env_float("LLMFLEET_TELEMETRY_WINDOW_SECONDS", max(60.0, 4 * scrape_s)),
                                 scrape_interval_s=scrape_s,
                                 stale_after_intervals=_env_float("LLMFLEET_TELEMETRY_STALE_INTERVALS", 3.0))
    except ValueError as err:
        raise kopf.PermanentError(f"telemetry settings: {err}") from None

    def count(key: str, decision) -> None:
        ns, name = key.split("/", 1)
        selfmetrics.DECISIONS.labels(ns, name, decision.action.value, decision.reason).inc()

    return LiveDemand(client,
                      scale_down_stabilisation_s=_env_float("LLMFLEET_SCALE_DOWN_STABILISATION_SECONDS",
                                                            StabilityPolicy.scale_down_stabilisation_s),
                      cooldown_s=_env_float("LLMFLEET_SCALE_DOWN_COOLDOWN_SECONDS", StabilityPolicy.cooldown_s),
                      on_decision=count)


def _check_series(live: LiveDemand) -> None:
    """The start-up absent() check: say which expected series Prometheus lacks (once, in the log)."""
    from llmfleet.telemetry.client import TelemetryUnavailable

    try:
        required, optional = live.client.missing_series()
    except TelemetryUnavailable as err:
        log.warning("telemetry: Prometheus cannot be read now (%s); workloads hold their plans until it can",
                    err.reason.value)
        return
    if required:
        log.warning("telemetry: no series at all for %s: check the scrape configuration "
                    "(examples/monitoring/); workloads hold their plans while it is missing", ", ".join(required))
    if optional:
        log.info("telemetry: optional series absent: %s", ", ".join(optional))


def _force_exit(timeout_s: float) -> None:
    """The last resort when shutdown outlasts its bound (a hung solve or request): exit now."""
    log.error("shutdown took longer than %.0fs; exiting without waiting further", timeout_s)
    logging.shutdown()
    os._exit(exit_code or 1)


def begin_shutdown(memo: kopf.Memo, reason: str, code: int = 0) -> None:
    """Stop every write now, arm the exit deadline, and ask kopf to stop (idempotent)."""
    global exit_code
    if getattr(memo, "shutting_down", False):
        return
    memo.shutting_down = True
    exit_code = exit_code or code
    kube: Kube | None = getattr(memo, "kube", None)
    if kube is not None:
        kube.stop_writes(reason)
    timeout_s = getattr(memo, "shutdown_timeout_s", DEFAULT_SHUTDOWN_TIMEOUT_S)
    log.info("%s: no more writes; exiting within %.0fs", reason, timeout_s)
    timer = threading.Timer(timeout_s, _force_exit, (timeout_s,))
    timer.daemon = True
    timer.start()
    if _signals_owned:
        STOP_FLAG.set()
    elif code:  # under `kopf run`, stop kopf the way it knows (a lost Lease: nothing else stops it)
        os.kill(os.getpid(), signal.SIGTERM)


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    # the planner records its own Events; kopf's per-handler events would duplicate them
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # scan the API once at start-up instead of watching CustomResourceDefinitions: the operator
    # then needs no access to CRDs (least privilege); the CRDs must exist before it starts
    settings.scanning.disabled = True
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    api_timeout_s = _env_float("LLMFLEET_API_TIMEOUT_SECONDS", DEFAULT_API_TIMEOUT_S)
    shutdown_timeout_s = _env_float("LLMFLEET_SHUTDOWN_TIMEOUT_SECONDS", DEFAULT_SHUTDOWN_TIMEOUT_S)
    settings.networking.request_timeout = api_timeout_s  # kopf's own non-watch requests
    settings.networking.connect_timeout = min(5.0, api_timeout_s)
    settings.process.ultimate_exiting_timeout = shutdown_timeout_s  # under `kopf run`: kopf's own backstop
    trace_dir = Path(os.environ.get("LLMFLEET_TRACE_DIR") or Path.cwd())
    debounce_s = float(os.environ.get("LLMFLEET_DEBOUNCE_SECONDS", "1.0"))
    workers = planner_workers_from_env()
    namespaces = [ns for ns in os.environ.get("LLMFLEET_NAMESPACES", "").split(",") if ns]
    kube = Kube(namespaces=namespaces or None, timeout_s=api_timeout_s)
    for attempt in range(CRD_WAIT_S):
        try:
            kube.resource("LLMWorkload")
            break
        except Exception as err:  # CRDs just applied may take a moment to be served
            if attempt == CRD_WAIT_S - 1:  # exit; the Deployment restarts us once they are installed
                raise kopf.PermanentError(f"the llmfleet CRDs are not served by this cluster ({err}); "
                                          "install them first: kubectl apply -f crds/") from err
            await asyncio.sleep(1.0)
    memo.kube = kube
    memo.shutdown_timeout_s = shutdown_timeout_s
    aio_loop = asyncio.get_running_loop()
    if _signals_owned:
        def on_signal(signum: int, _frame) -> None:
            # writes stop in the signal handler itself, the moment Python takes the signal (an
            # asyncio handler would wait for the event loop's next turn while the planner thread
            # keeps applying); the rest of the shutdown runs on the loop
            name = signal.Signals(signum).name
            kube.stop_writes(f"received {name}")
            aio_loop.call_soon_threadsafe(begin_shutdown, memo, f"received {name}")

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
    leading: asyncio.Event | None = None
    memo.elector = None
    if os.environ.get("LLMFLEET_LEADER_ELECTION", "").lower() in ("1", "true", "yes"):
        try:
            election = ElectionSettings(
                lease_name=os.environ.get("LLMFLEET_LEASE_NAME") or "llmfleet",
                namespace=os.environ.get("LLMFLEET_LEASE_NAMESPACE") or "default",
                lease_duration_s=int(_env_float("LLMFLEET_LEASE_DURATION_SECONDS", DEFAULT_LEASE_DURATION_S)),
                renew_deadline_s=_env_float("LLMFLEET_RENEW_DEADLINE_SECONDS", DEFAULT_RENEW_DEADLINE_S),
                retry_period_s=_env_float("LLMFLEET_RETRY_PERIOD_SECONDS", DEFAULT_RETRY_PERIOD_S))
        except ValueError as err:
            raise kopf.PermanentError(str(err)) from None
        leading = asyncio.Event()

        def lost() -> None:
            # stop writing in this very thread, before the event loop even hears of it
            kube.stop_writes("lost the leader Lease")
            aio_loop.call_soon_threadsafe(begin_shutdown, memo, "lost the leader Lease", 1)

        memo.elector = LeaderElector(election, lambda: aio_loop.call_soon_threadsafe(leading.set), lost,
                                     api_timeout_s=min(api_timeout_s, max(1.0, election.renew_deadline_s / 3)))
        memo.elector.start()
    live = live_demand_from_env()
    selfmetrics.serve(_env_port("LLMFLEET_METRICS_PORT", selfmetrics.DEFAULT_METRICS_PORT))
    if live is not None:
        await asyncio.get_running_loop().run_in_executor(None, _check_series, live)
    loop = PlannerLoop(FleetPlanner(kube, trace_dir, live, workers=workers), debounce_s, leading)
    memo.planner_loop = loop
    memo.planner_task = asyncio.create_task(loop.run())
    log.info("llmfleet operator started (trace dir %s, debounce %.1fs, API timeout %.0fs, %d planner process(es)%s%s)",
             trace_dir, debounce_s, api_timeout_s, workers, ", leader election on" if leading is not None else "",
             ", telemetry on" if live is not None else "")


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_) -> None:
    """Stop writes (if SIGTERM did not already), let the reconcile in progress notice it for a
    bounded time, hand the Lease back, and stop the planner task."""
    begin_shutdown(memo, "operator stopping")
    loop: PlannerLoop | None = getattr(memo, "planner_loop", None)
    if loop is not None and loop.in_flight is not None:
        try:  # abandoned at its next write; a solve in progress is not waited for past this
            await asyncio.wait_for(asyncio.shield(loop.in_flight), timeout=memo.shutdown_timeout_s / 2)
        except asyncio.TimeoutError:
            log.warning("the reconcile in progress did not end within %.0fs; leaving it",
                        memo.shutdown_timeout_s / 2)
        except Exception:  # noqa: BLE001 (WritesStopped and the like: it ended, which is all we wait for)
            pass
    elector: LeaderElector | None = getattr(memo, "elector", None)
    if elector is not None:
        await asyncio.get_running_loop().run_in_executor(None, elector.release)
    task = getattr(memo, "planner_task", None)
    if task:
        task.cancel()
    log.info("llmfleet operator stopped")


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
        if loop.active:  # a standby stays quiet; the leader says it once
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


@kopf.on.event("", "v1", "services", labels={LABEL_MANAGED_BY: MANAGED_BY})
def _on_child_service(event: dict, body: kopf.Body, memo: kopf.Memo, **_) -> None:
    """A managed Service changed (a hand-edited selector, a deletion): repair it in the next
    reconcile rather than at the next periodic re-plan."""
    loop: PlannerLoop | None = getattr(memo, "planner_loop", None)
    if loop is not None:
        loop.wake(f"service {body.get('metadata', {}).get('name')} {event.get('type')}")
