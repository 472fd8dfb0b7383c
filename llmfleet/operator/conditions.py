"""Kubernetes-convention status conditions (type, status, reason, message, lastTransitionTime,
observedGeneration), kept as plain dicts in the camelCase form the API server stores."""

from __future__ import annotations

from llmfleet.operator.kube import now_rfc3339


def set_condition(conditions: list[dict], type_: str, status: bool | None, reason: str, message: str,
                  generation: int | None) -> list[dict]:
    """Return a new condition list with ``type_`` set.

    ``lastTransitionTime`` changes only when the status flips, as the conventions require.
    ``status`` None means Unknown.
    """
    value = "Unknown" if status is None else ("True" if status else "False")
    old = next((c for c in conditions if c.get("type") == type_), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == value else now_rfc3339()
    # never an empty message: the 1.20 API server reads "" in a merge patch as null
    new = {"type": type_, "status": value, "reason": reason, "message": (message or reason)[:2000],
           "lastTransitionTime": since, "observedGeneration": generation}
    return [c for c in conditions if c.get("type") != type_] + [new]


def condition(conditions: list[dict], type_: str) -> dict | None:
    """The condition of type ``type_`` in a status's list, or None."""
    return next((c for c in conditions or [] if c.get("type") == type_), None)
