"""The operator's only door to the Kubernetes API: list, server-side apply, delete, status and
events, each retried on conflicts and transient errors, each bounded by a timeout.

Built on ``kubernetes.dynamic.DynamicClient`` so that custom and built-in kinds go through the
same calls. Server-side apply uses field manager ``llmfleet`` and forces conflicts, as the
Kubernetes documentation asks of controllers; fields other managers own and llmfleet does not
set (an HPA's replicas, a user's annotations) are left alone.

Every request carries a timeout (``DEFAULT_API_TIMEOUT_S``): the Kubernetes Python client sends
none unless asked (``_request_timeout``), so a hung API server would otherwise block the planner
for good. Writes can be stopped (``Kube.stop_writes``): on SIGTERM or a lost leader lease, no
request that changes the cluster leaves the process after that moment.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError, ResourceNotFoundError

from llmfleet.api.models import API_GROUP, API_VERSION

log = logging.getLogger(__name__)

FIELD_MANAGER = "llmfleet"
RETRY_STATUSES = {409, 429, 500, 502, 503, 504}
T = TypeVar("T")

DEFAULT_API_TIMEOUT_S = 20.0
"""Read timeout of one API request, s. The API server ends a non-watch request itself after its
``--request-timeout`` (default 60 s, kube-apiserver reference); a healthy server answers the
operator's lists and applies in well under a second, so 20 s only ever fires on a hung server
or network, and bounds a whole reconcile's stall to a few such waits instead of forever"""
CONNECT_TIMEOUT_S = 5.0
"""TCP/TLS connect timeout, s: a connect that takes longer than this on a cluster network has failed"""


class ApiUnavailable(RuntimeError):
    """The API server did not answer (timeout, refused or reset connection) after the retries."""


class WritesStopped(RuntimeError):
    """``Kube.stop_writes`` was called (shutdown or lost leadership): the write was not sent."""


class TimeoutApiClient(client.ApiClient):
    """``kubernetes.client.ApiClient`` that puts a (connect, read) timeout on every request that
    does not set its own ``_request_timeout`` (the generated client sends none by default).

    The dynamic client, discovery and the leader election's Lease calls all go through
    ``call_api``, so one override covers them."""

    def __init__(self, configuration: client.Configuration, timeout_s: float = DEFAULT_API_TIMEOUT_S):
        self.timeout = (min(CONNECT_TIMEOUT_S, timeout_s), timeout_s)
        super().__init__(configuration)

    def call_api(self, method, url, header_params=None, body=None, post_params=None, _request_timeout=None):
        return super().call_api(method, url, header_params=header_params, body=body, post_params=post_params,
                                _request_timeout=_request_timeout or self.timeout)


def bounded_configuration() -> client.Configuration:
    """A copy of the loaded default client configuration whose connection pool never retries a
    read on its own: urllib3's default (3 retries of idempotent requests) would multiply every
    timeout by four, silently. Connects are retried twice (a restarting API server)."""
    cfg = client.Configuration.get_default_copy()
    cfg.retries = urllib3.Retry(total=2, connect=2, read=0, redirect=0, status=None, backoff_factor=0.2)
    return cfg


def _is_timeout(err: BaseException) -> bool:
    return isinstance(err, urllib3.exceptions.TimeoutError) or \
        isinstance(getattr(err, "reason", None), urllib3.exceptions.TimeoutError)

KINDS = {
    "LLMWorkload": (f"{API_GROUP}/{API_VERSION}", "LLMWorkload"),
    "GPUPool": (f"{API_GROUP}/{API_VERSION}", "GPUPool"),
    "FleetPolicy": (f"{API_GROUP}/{API_VERSION}", "FleetPolicy"),
    "Deployment": ("apps/v1", "Deployment"),
    "Service": ("v1", "Service"),
    "PriorityClass": ("scheduling.k8s.io/v1", "PriorityClass"),
    "Event": ("v1", "Event"),
    "Namespace": ("v1", "Namespace"),
    # what the pools' GPUs are: Nodes, and the Pods on them that llmfleet does not manage
    "Node": ("v1", "Node"),
    "Pod": ("v1", "Pod"),
    # routing objects (llmfleet.operator.routing); the last two are custom resources a cluster may lack
    "ConfigMap": ("v1", "ConfigMap"),
    "ServiceAccount": ("v1", "ServiceAccount"),
    "Role": ("rbac.authorization.k8s.io/v1", "Role"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    "InferencePool": ("inference.networking.k8s.io/v1", "InferencePool"),
    "HTTPRoute": ("gateway.networking.k8s.io/v1", "HTTPRoute"),
}


def now_rfc3339() -> str:
    """The current UTC time as Kubernetes writes it (RFC 3339, seconds)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_of(err: Exception) -> int | None:
    return getattr(err, "status", None)


def with_retry(fn: Callable[[], T], what: str, attempts: int = 5, base_delay_s: float = 0.2) -> T:
    """Call ``fn``; on 409 Conflict, 429 or 5xx retry with exponential back-off.

    A request that times out is logged (one WARNING line naming the call) and not retried: the
    server did not answer within ``DEFAULT_API_TIMEOUT_S``, and the reconcile is better abandoned
    and tried again later than stalled further. A refused or reset connection is retried like 5xx.

    Raises:
        the last ApiException/DynamicApiError when every attempt failed, or at once for other
        statuses (403, 404, 422: retrying cannot help); ApiUnavailable on a timeout or when the
        server could not be reached.
    """
    for i in range(attempts):
        try:
            return fn()
        except (ApiException, DynamicApiError) as err:
            if _status_of(err) not in RETRY_STATUSES or i == attempts - 1:
                raise
            log.info("%s: HTTP %s, retrying (%d/%d)", what, _status_of(err), i + 1, attempts)
        except urllib3.exceptions.HTTPError as err:
            if _is_timeout(err):
                log.warning("%s: the API server did not answer in time (timeout); abandoning this call", what)
                raise ApiUnavailable(f"{what}: API server timeout") from err
            if i == attempts - 1:
                log.warning("%s: cannot reach the API server (%s)", what, type(getattr(err, "reason", None) or err).__name__)
                raise ApiUnavailable(f"{what}: API server unreachable") from err
            log.info("%s: connection failed, retrying (%d/%d)", what, i + 1, attempts)
        time.sleep(base_delay_s * 2 ** i)
    raise AssertionError("unreachable")


class Kube:
    """Thin, retrying wrapper over the dynamic client. Objects go in and out as plain dicts."""

    def __init__(self, api_client: client.ApiClient | None = None, namespaces: list[str] | None = None,
                 timeout_s: float = DEFAULT_API_TIMEOUT_S):
        """``namespaces``: watch and list namespaced kinds only there (the operator's namespaced
        mode, for Roles instead of a ClusterRole); None lists cluster-wide. ``timeout_s``: read
        timeout of every request, s (when ``api_client`` is not given)."""
        self.namespaces = list(namespaces) if namespaces else None
        if api_client is None:
            if os.environ.get("KUBECONFIG"):
                # read the variable now: the client fixes its default path when first imported
                config.load_kube_config(config_file=os.environ["KUBECONFIG"].split(os.pathsep)[0])
            else:
                try:
                    config.load_incluster_config()
                except config.ConfigException:
                    config.load_kube_config()
            api_client = TimeoutApiClient(bounded_configuration(), timeout_s)
        self.api_client = api_client
        self.dyn = DynamicClient(api_client)
        self.instance = socket.gethostname()
        self._resources: dict[str, Any] = {}
        self._stopped = threading.Event()
        self.stop_reason = ""
        self.writes = 0
        """requests sent that change the cluster (apply, delete, status, event; dry runs excluded)"""

    def stop_writes(self, reason: str) -> None:
        """From now on every write raises WritesStopped before anything is sent (a request already
        on the wire completes, bounded by its timeout). Called on SIGTERM and on a lost lease."""
        if not self._stopped.is_set():
            self.stop_reason = reason
            self._stopped.set()

    @property
    def writes_stopped(self) -> bool:
        return self._stopped.is_set()

    def _before_write(self, what: str) -> None:
        if self._stopped.is_set():
            raise WritesStopped(f"{what} not sent: {self.stop_reason}")
        self.writes += 1

    def resource(self, kind: str):
        """The discovered API resource of one of ``KINDS`` (cached). Raises ResourceNotFoundError
        when the cluster does not serve it, e.g. the CRDs are not installed."""
        if kind not in self._resources:
            api_version, k = KINDS[kind]
            self._resources[kind] = self.dyn.resources.get(api_version=api_version, kind=k)
        return self._resources[kind]

    def serves(self, kind: str) -> bool:
        """Whether the API server serves ``kind`` (e.g. the InferencePool CRD is installed). Asked
        again on every call until it does (the dynamic client re-reads discovery on a miss): a CRD
        may be installed while the operator runs."""
        try:
            self.resource(kind)
            return True
        except ResourceNotFoundError:
            return False

    def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None,
             field_selector: str | None = None, cluster_wide: bool = False) -> list[dict]:
        """All objects of ``kind`` (in ``namespace``, or cluster-wide, or in each of ``self.namespaces``
        in namespaced mode unless ``cluster_wide``), as dicts."""
        res = self.resource(kind)
        if namespace is None and self.namespaces and res.namespaced and not cluster_wide:
            return [item for ns in self.namespaces for item in self.list(kind, ns, label_selector, field_selector)]
        kwargs = {"label_selector": label_selector} if label_selector else {}
        if field_selector:
            kwargs["field_selector"] = field_selector
        if namespace is not None and res.namespaced:
            kwargs["namespace"] = namespace
        # the response's JSON as it is: the dynamic client's own objects (ResourceInstance, then
        # to_dict back) took about 80% of a reconcile's cluster read (py-spy, 100 workloads and
        # 237 Deployments: 461 of 556 samples in list); the body is read inside the retry, where
        # a read timeout is handled
        out = with_retry(lambda: json.loads(res.get(serialize=False, **kwargs).data), f"list {kind}")
        items = out.get("items") or []
        for item in items:  # a List's items carry no kind of their own (ResourceInstance added them too)
            item.setdefault("apiVersion", out.get("apiVersion"))
            item.setdefault("kind", str(out.get("kind", "")).removesuffix("List") or kind)
        return items

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """One object as a dict, or None when it does not exist (or the cluster does not serve its kind)."""
        try:
            res = self.resource(kind)
        except ResourceNotFoundError:
            return None
        try:
            return with_retry(lambda: res.get(name=name, namespace=namespace), f"get {kind} {name}").to_dict()
        except NotFoundError:
            return None

    def apply(self, manifest: dict, field_manager: str = FIELD_MANAGER, force: bool = True,
              dry_run: bool = False) -> dict:
        """Server-side apply ``manifest`` (creates it when missing); returns the live object.

        ``force`` takes over fields other managers own; the planner forces only objects llmfleet
        owns, and creates new ones unforced, so a foreign object that appears between its check and
        the apply makes the API server answer 409 Conflict instead of being taken over.
        ``dry_run``: the API server computes and returns the object as the apply would leave it
        (defaulting, admission and field ownership included) and stores nothing; allowed after
        ``stop_writes``, as it changes nothing."""
        res = self.resource(manifest["kind"])
        md = manifest["metadata"]
        what = f"{'dry-run ' if dry_run else ''}apply {manifest['kind']} {md.get('namespace') or ''}/{md['name']}"
        if not dry_run:
            self._before_write(what)
        extra = {"dry_run": "All"} if dry_run else {}
        return with_retry(
            lambda: res.server_side_apply(body=manifest, name=md["name"], namespace=md.get("namespace"),
                                          field_manager=field_manager, force_conflicts=force, **extra),
            what,
        ).to_dict()

    def json_patch(self, kind: str, name: str, namespace: str | None, operations: list[dict]) -> dict:
        """Apply a JSON patch (RFC 6902) as field manager ``llmfleet``; returns the live object. For
        the rare field a server-side apply cannot set exactly (a map key another manager owns)."""
        res = self.resource(kind)
        what = f"patch {kind} {namespace or ''}/{name}"
        self._before_write(what)
        return with_retry(lambda: res.patch(body=operations, name=name, namespace=namespace,
                                            content_type="application/json-patch+json",
                                            field_manager=FIELD_MANAGER), what).to_dict()

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        """Delete with background propagation; a missing object is not an error."""
        res = self.resource(kind)
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        self._before_write(f"delete {kind} {name}")
        try:
            with_retry(lambda: res.delete(name=name, namespace=namespace, body=body), f"delete {kind} {name}")
        except NotFoundError:
            pass

    def patch_status(self, kind: str, name: str, namespace: str | None, status: dict) -> None:
        """JSON-merge-patch the status subresource (lists are replaced whole)."""
        res = self.resource(kind).subresources["status"]
        body = {"status": status}
        self._before_write(f"status of {kind} {name}")
        try:
            with_retry(lambda: res.patch(body=body, name=name, namespace=namespace,
                                         content_type="application/merge-patch+json"),
                       f"status of {kind} {name}")
        except NotFoundError:
            pass  # deleted meanwhile

    def event(self, obj: dict, reason: str, message: str, warning: bool = False) -> None:
        """Record a core/v1 Event about ``obj`` (events of cluster-scoped objects go to ``default``)."""
        md = obj["metadata"]
        ns = md.get("namespace") or "default"
        now = now_rfc3339()
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{md['name']}.", "namespace": ns},
            "involvedObject": {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": md["name"],
                               "namespace": md.get("namespace"), "uid": md.get("uid"),
                               "resourceVersion": md.get("resourceVersion")},
            "reason": reason, "message": message[:1000], "type": "Warning" if warning else "Normal",
            "source": {"component": FIELD_MANAGER}, "reportingComponent": FIELD_MANAGER,
            "reportingInstance": self.instance, "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            self._before_write(f"event {reason}")
            with_retry(lambda: self.resource("Event").create(body=body, namespace=ns), f"event {reason}")
        except WritesStopped:
            return
        except (ApiException, DynamicApiError, ApiUnavailable) as err:  # never worth failing a reconcile
            log.warning("could not record event %s on %s: HTTP %s", reason, md["name"], _status_of(err) or err)
