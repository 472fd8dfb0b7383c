"""Reading the local control plane's audit log (e2e/controlplane: requests of the service accounts
in ``llmfleet-system``, Metadata level): which requests an operator process wrote, and when."""

from __future__ import annotations

from datetime import datetime

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def received_s(event: dict) -> float:
    """When the API server received the request, as a Unix time, s."""
    return datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp()


def writes(events: list[dict], include_leases: bool = False, include_dry_run: bool = False,
           since_s: float | None = None) -> list[dict]:
    """The requests among ``events`` that change the cluster: write verbs, without dry runs
    (``?dryRun=All`` stores nothing) and Lease renewals unless asked, received after ``since_s``.
    The audit log records a request twice (ResponseStarted for watches, ResponseComplete): each
    request is counted once, by its auditID."""
    seen, out = set(), []
    for e in events:
        ref = e.get("objectRef") or {}
        if e.get("verb") not in WRITE_VERBS or e["auditID"] in seen:
            continue
        if not include_leases and ref.get("resource") == "leases":
            continue
        if not include_dry_run and "dryRun=All" in e.get("requestURI", ""):
            continue
        if since_s is not None and received_s(e) < since_s:
            continue
        seen.add(e["auditID"])
        out.append(e)
    return out


def describe(events: list[dict]) -> list[str]:
    """``verb resource/name`` of each event (for failure messages)."""
    return [f"{e['verb']} {(e.get('objectRef') or {}).get('resource')}/{(e.get('objectRef') or {}).get('name')}"
            for e in events]
