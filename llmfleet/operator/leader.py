"""Leader election among operator replicas with a ``coordination.k8s.io/v1`` Lease, through the
Kubernetes Python client's own implementation (``kubernetes.leaderelection``: ``LeaderElection``,
``electionconfig.Config``, ``resourcelock.leaselock.LeaseLock``), the same protocol as client-go's
(kube-controller-manager and kube-scheduler elect their leader with it).

Only the replica holding the Lease reconciles; the others watch and stay quiet. The leader renews
the Lease every ``retry_period_s``; when it cannot renew within ``renew_deadline_s`` it stops
writing at once and exits (its pod restarts as a standby), before any standby may take the
Lease (``lease_duration_s`` > ``renew_deadline_s``). A standby takes an unrenewed Lease at most
``lease_duration_s + retry_period_s`` after the leader's last renewal; a leader that shuts down
cleanly releases it, and a standby then takes it within ``retry_period_s``.

This module adds only what the library leaves out: a timeout on the Lease calls (through the
operator's ``TimeoutApiClient``), network errors reported as a failed attempt instead of killing
the election thread, and releasing the Lease on shutdown (client-go's ``ReleaseOnCancel``).
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Callable

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from llmfleet.operator.kube import TimeoutApiClient, bounded_configuration

log = logging.getLogger(__name__)

DEFAULT_LEASE_DURATION_S = 15
DEFAULT_RENEW_DEADLINE_S = 10
DEFAULT_RETRY_PERIOD_S = 2
"""client-go's defaults, as kube-controller-manager and kube-scheduler use them
(``--leader-elect-lease-duration=15s``, ``--leader-elect-renew-deadline=10s``,
``--leader-elect-retry-period=2s``, Kubernetes component reference): a standby takes over within
17 s of a crash, and a leader cut off from the API server stops 5 s before anyone may take over"""


@dataclass(frozen=True)
class ElectionSettings:
    """Timing and identity of the election.

    Args:
        lease_name: name of the Lease (``coordination.k8s.io/v1``) the replicas share.
        namespace: the Lease's namespace (the operator's own, the chart's release namespace).
        lease_duration_s: how long a standby waits, after it last saw the Lease renewed, before
            it takes the Lease, s (an integer: the Lease stores whole seconds).
        renew_deadline_s: how long the leader keeps retrying a failed renewal before it steps down, s.
        retry_period_s: time between two attempts to acquire or renew, s.

    Raises:
        ValueError: values the election cannot work with, naming the setting (the library itself
            would call ``sys.exit`` on them).
    """

    lease_name: str = "llmfleet"
    namespace: str = "default"
    lease_duration_s: int = DEFAULT_LEASE_DURATION_S
    renew_deadline_s: float = DEFAULT_RENEW_DEADLINE_S
    retry_period_s: float = DEFAULT_RETRY_PERIOD_S

    def __post_init__(self) -> None:
        if not self.lease_name or not self.namespace:
            raise ValueError("leader election: the lease name and namespace must not be empty")
        if self.retry_period_s < 1:
            raise ValueError(f"leader election: retry period {self.retry_period_s}s must be at least 1s")
        # the library's own rules (electionconfig.Config): jitter factor 1.2
        if self.renew_deadline_s <= 1.2 * self.retry_period_s:
            raise ValueError(f"leader election: renew deadline {self.renew_deadline_s}s must exceed 1.2 x the "
                             f"retry period ({self.retry_period_s}s)")
        if self.lease_duration_s <= self.renew_deadline_s:
            raise ValueError(f"leader election: lease duration {self.lease_duration_s}s must exceed the renew "
                             f"deadline ({self.renew_deadline_s}s)")

    @property
    def takeover_bound_s(self) -> float:
        """Longest time from a leader's crash to a standby holding the Lease, s."""
        return self.lease_duration_s + self.retry_period_s


def identity() -> str:
    """``<pod or host name>_<random>``: unique even for two replicas on one host (as client-go)."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class _BoundedLeaseLock(LeaseLock):
    """The library's LeaseLock with a timeout on every call, network errors returned as a failed
    attempt (the library catches only ApiException, so a timeout would end its thread while the
    leader went on working), and no acquire or renew after ``release``."""

    def __init__(self, name: str, namespace: str, ident: str, api: client.CoordinationV1Api):
        super().__init__(name, namespace, ident)
        self.api_instance = api
        self.released = threading.Event()

    def get(self, name, namespace):
        try:
            return super().get(name, namespace)
        except (urllib3.exceptions.HTTPError, OSError) as err:
            log.warning("leader election: reading Lease %s/%s failed (%s)", namespace, name, type(err).__name__)
            return False, err

    def create(self, name, namespace, election_record):
        if self.released.is_set():
            return False
        try:
            return super().create(name, namespace, election_record)
        except (urllib3.exceptions.HTTPError, OSError) as err:
            log.warning("leader election: creating Lease %s/%s failed (%s)", namespace, name, type(err).__name__)
            return False

    def update(self, name, namespace, updated_record):
        if self.released.is_set():
            return False
        try:
            return super().update(name, namespace, updated_record)
        except (urllib3.exceptions.HTTPError, OSError) as err:
            log.warning("leader election: renewing Lease %s/%s failed (%s)", namespace, name, type(err).__name__)
            return False


class LeaderElector:
    """Runs the election in a daemon thread and calls back on its transitions.

    Args:
        settings: see ElectionSettings.
        on_started_leading: called (in the election's thread) once this replica holds the Lease.
        on_stopped_leading: called (in the election's thread) when it lost the Lease (could not
            renew within the deadline, or the election failed); never called after ``release``.
        api_timeout_s: timeout of one Lease request, s; kept under the renew deadline so a hung
            API server leaves time for another attempt before the deadline.
    """

    def __init__(self, settings: ElectionSettings, on_started_leading: Callable[[], None],
                 on_stopped_leading: Callable[[], None], api_timeout_s: float | None = None):
        self.settings = settings
        self.identity = identity()
        self.leading = threading.Event()
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        timeout_s = api_timeout_s or max(1.0, settings.renew_deadline_s / 3)
        api = client.CoordinationV1Api(TimeoutApiClient(bounded_configuration(), timeout_s))
        self._api = api
        self.lock = _BoundedLeaseLock(settings.lease_name, settings.namespace, self.identity, api)
        config = electionconfig.Config(self.lock, lease_duration=settings.lease_duration_s,
                                       renew_deadline=settings.renew_deadline_s,
                                       retry_period=settings.retry_period_s,
                                       onstarted_leading=self._started, onstopped_leading=self._stopped)
        self._election = leaderelection.LeaderElection(config)
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def start(self) -> "LeaderElector":
        log.info("leader election: %s is a candidate for Lease %s/%s (lease %ss, renew deadline %ss, retry %ss)",
                 self.identity, self.settings.namespace, self.settings.lease_name, self.settings.lease_duration_s,
                 self.settings.renew_deadline_s, self.settings.retry_period_s)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self._election.run()  # returns only once leadership is lost
        except Exception:  # a bug or an unexpected error: never keep working without the Lease
            log.exception("leader election failed")
            if self.leading.is_set() and not self.lock.released.is_set():
                self._stopped()

    def _started(self) -> None:
        self.leading.set()
        log.info("leader election: %s holds Lease %s/%s and reconciles", self.identity, self.settings.namespace,
                 self.settings.lease_name)
        self._on_started()

    def _stopped(self) -> None:
        was = self.leading.is_set()
        self.leading.clear()
        if self.lock.released.is_set():
            return  # our own release at shutdown
        if was:
            log.error("leader election: %s lost Lease %s/%s (not renewed within %ss)", self.identity,
                      self.settings.namespace, self.settings.lease_name, self.settings.renew_deadline_s)
        self._on_stopped()

    def release(self) -> bool:
        """Stop acquiring and renewing, and hand the Lease back when this replica holds it, so that a
        standby takes over within one retry period instead of a whole lease duration. Call only
        once this replica has stopped writing. Returns whether the Lease was released."""
        self.lock.released.set()
        if not self.leading.is_set():
            return False
        s = self.settings
        for _ in range(3):  # a renewal in flight may bump the resourceVersion under us: re-read
            try:
                lease = self._api.read_namespaced_lease(s.lease_name, s.namespace)
                if lease.spec is None or lease.spec.holder_identity != self.identity:
                    return False
                # an empty holder is what the library's candidates take at once (try_acquire_or_renew)
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                self._api.replace_namespaced_lease(s.lease_name, s.namespace, lease)
                self.leading.clear()
                log.info("leader election: %s released Lease %s/%s", self.identity, s.namespace, s.lease_name)
                return True
            except ApiException as err:
                if err.status != 409:
                    log.warning("leader election: releasing the Lease failed (HTTP %s)", err.status)
                    return False
            except (urllib3.exceptions.HTTPError, OSError) as err:
                log.warning("leader election: releasing the Lease failed (%s)", type(err).__name__)
                return False
        return False
