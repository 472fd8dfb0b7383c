"""Drift of llmfleet's children: which fields llmfleet manages a foreign writer changed, and whether
that writer keeps changing them (a fight), in which case llmfleet backs off instead of reverting
at full speed.

Detection compares the live object with the object a server-side apply of llmfleet's rendering
would leave (``Kube.apply(..., dry_run=True)``): the API server itself merges the manifest into
the live object under field manager ``llmfleet`` with the same defaulting, so the comparison sees
exactly the fields llmfleet owns and nothing else. Fields llmfleet does not set (an autoscaler's
``spec.replicas`` behind ``llmfleet.dev/replicas-managed-externally``, a user's own annotation or
env entry) are not in the manifest and come back unchanged. A dry run is sent only when the live
object changed since llmfleet last confirmed it (``fingerprint``), so an idle fleet sends nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

VOLATILE_METADATA = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid", "selfLink")
"""Metadata the API server itself writes on every change: never drift"""
OUR_MANAGERS = ("llmfleet", "llmfleet-replicas-handoff")
CONTROLLERS = ("kube-controller-manager",)
"""Managers that write a Deployment's status and revision annotation: not foreign writers of llmfleet's fields"""
MAX_PATHS = 20


def comparable(obj: dict) -> dict:
    """``obj`` without status, its type (list items lack it) and the metadata the API server
    rewrites on every write."""
    out = {k: v for k, v in obj.items() if k not in ("status", "kind", "apiVersion")}
    out["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in VOLATILE_METADATA}
    return out


def _keyed(items: list) -> dict | None:
    """A list of objects as name -> item when every item has a unique ``name`` (containers, env,
    ports, volumes): differences are then named by the item, not its index."""
    if not items or not all(isinstance(i, dict) and "name" in i for i in items):
        return None
    names = [i["name"] for i in items]
    return dict(zip(names, items)) if len(set(names)) == len(names) else None


def differing_paths(live: Any, want: Any, prefix: str = "") -> list[str]:
    """Dotted paths (``spec.template.spec.containers[vllm].image``, ``spec.selector.app``) where
    ``live`` and ``want`` differ; list items with a ``name`` are named, others indexed."""
    if isinstance(live, dict) and isinstance(want, dict):
        out: list[str] = []
        for k in sorted(set(live) | set(want)):
            out += differing_paths(live.get(k), want.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(live, list) and isinstance(want, list):
        a, b = _keyed(live), _keyed(want)
        if a is not None and b is not None:
            return [p for n in sorted(set(a) | set(b)) for p in differing_paths(a.get(n), b.get(n), f"{prefix}[{n}]")]
        if len(live) == len(want):
            return [p for i, (x, y) in enumerate(zip(live, want)) for p in differing_paths(x, y, f"{prefix}[{i}]")]
    return [] if live == want else [prefix or "(object)"]


def drifted_fields(live: dict, dry_run_result: dict) -> list[str]:
    """Fields a forced server-side apply of llmfleet's manifest would change on ``live`` (at most
    ``MAX_PATHS``; empty when nothing differs)."""
    return differing_paths(comparable(live), comparable(dry_run_result))[:MAX_PATHS]


def fingerprint(live: dict) -> str:
    """What must stay equal for a confirmed child to be still as llmfleet left it.

    A Deployment's ``metadata.generation`` moves on every spec change (the API server bumps it;
    status writes by the Deployment controller do not), so status churn does not cost a dry run;
    other kinds have no generation, and their ``resourceVersion`` serves (they have no status
    churn). Labels, annotations and owner references are compared directly: they do not move a
    generation."""
    md = live.get("metadata") or {}
    version = md.get("generation") if live.get("kind") == "Deployment" and md.get("generation") else \
        ("rv", md.get("resourceVersion"))
    doc = [version, md.get("labels"), md.get("annotations"), md.get("ownerReferences")]
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def last_foreign_writer(live: dict) -> str | None:
    """The field manager other than llmfleet and the controllers that wrote ``live`` last (from
    ``metadata.managedFields``), e.g. ``kubectl-edit`` or ``kubectl-set``; None when unknown."""
    entries = [m for m in (live.get("metadata") or {}).get("managedFields") or []
               if m.get("manager") not in OUR_MANAGERS + CONTROLLERS and not m.get("subresource") == "status"]
    if not entries:
        return None
    return max(entries, key=lambda m: m.get("time") or "").get("manager")


@dataclass
class Verdict:
    """What to do about drift found on one child."""

    repair: bool
    """write now (False: backing off)"""
    strikes: int
    """drifts of this child counted within the window, this one included"""
    backoff_s: float
    """no repair of this child for this long after this one (0: none)"""
    contested: bool
    """a foreign writer keeps reverting llmfleet's fields (``strikes >= FightTracker.threshold``)"""


@dataclass
class FightTracker:
    """Counts how often a child drifts; from the ``threshold``-th drift within ``window_s`` it is
    a fight: each repair is followed by an exponentially growing pause (``base_backoff_s``,
    doubled per further drift, at most ``max_backoff_s``) in which the child is left as the
    foreign writer keeps it.

    Constants: three reverts in a row rule out a one-off hand edit or a rollout race (client-go's
    workqueue treats the first failures of an item as transient in the same way, with an
    exponential per-item back-off, ``workqueue.DefaultControllerRateLimiter``: 5 ms doubling to
    1000 s); 10 s doubling to 5 min keeps a fight below one write per 5 min after six rounds,
    and a 15 min window outlasts the longest pause so the count is not forgotten mid-fight.
    """

    threshold: int = 3
    window_s: float = 900.0
    base_backoff_s: float = 10.0
    max_backoff_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _strikes: dict[Any, list[float]] = field(default_factory=dict)
    _until: dict[Any, float] = field(default_factory=dict)

    def blocked_for(self, key: Any) -> float:
        """Seconds left in ``key``'s back-off (0 when it may be repaired now)."""
        return max(0.0, self._until.get(key, 0.0) - self.clock())

    def drifted(self, key: Any) -> Verdict:
        """Record drift found on ``key`` and say whether to repair it now. Drift seen during a
        back-off is not counted again (the writer is the same one)."""
        now = self.clock()
        left = self._until.get(key, 0.0) - now
        strikes = [t for t in self._strikes.get(key, []) if now - t <= self.window_s]
        if left > 0:
            return Verdict(False, len(strikes), left, len(strikes) >= self.threshold)
        strikes.append(now)
        self._strikes[key] = strikes
        n = len(strikes)
        backoff = 0.0
        if n >= self.threshold:
            backoff = min(self.max_backoff_s, self.base_backoff_s * 2 ** (n - self.threshold))
            self._until[key] = now + backoff
        return Verdict(True, n, backoff, n >= self.threshold)

    def contested(self, key: Any) -> int:
        """Drifts of ``key`` within the window when it is in a fight, else 0."""
        now = self.clock()
        n = len([t for t in self._strikes.get(key, []) if now - t <= self.window_s])
        return n if n >= self.threshold else 0

    def next_retry_s(self) -> float | None:
        """Seconds until the earliest back-off ends (a reconcile is due then), None if none runs."""
        now = self.clock()
        left = [u - now for u in self._until.values() if u > now]
        return min(left) if left else None

    def forget(self, keys: set) -> None:
        """Drop children that no longer exist."""
        for table in (self._strikes, self._until):
            for k in [k for k in table if k not in keys]:
                del table[k]
