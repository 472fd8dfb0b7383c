"""Values made safe for JSON documents (CLI output, Kubernetes status patches)."""

from __future__ import annotations

import math
from typing import Any


def finite_or_null(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, recursively through dicts and lists.

    JSON has no NaN or infinity: ``jq`` and strict parsers refuse them, and the API server answers a
    status patch holding one with HTTP 500 ("Invalid JSON Patch"). A quantity that is undefined (no
    request routed to a group) is better said as null than as a number.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value
