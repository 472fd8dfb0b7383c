"""Parsing of the unit-bearing scalars that appear in llmfleet custom resources.

Durations are written the way Kubernetes users write them (``500ms``, ``0.2s``, ``1m``) and are
held internally as float seconds. A bare number is refused: a latency SLO without a unit is the
classic source of a 1000x mistake.
"""

from __future__ import annotations

import math
import re

_DURATION_RE = re.compile(r"^\s*(?P<value>\d{1,6}(?:\.\d{1,6})?|\.\d{1,6})\s*(?P<unit>us|µs|ms|s|m)\s*$")
_UNIT_SECONDS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}

#: JSON-schema pattern accepted for duration strings (kept in step with ``_DURATION_RE``).
DURATION_PATTERN = r"^(\d{1,6}(\.\d{1,6})?|\.\d{1,6})(us|µs|ms|s|m)$"
"""at most six digits before and after the point: the schema bounds durations (below 10^6 minutes)
as it bounds every number"""


def parse_duration_s(value: object) -> float:
    """Parse a duration such as ``"500ms"`` or ``"1.5s"`` into seconds.

    Args:
        value: a string ``<number><unit>`` with unit one of ``us``, ``ms``, ``s``, ``m`` (the CRD
            schema's pattern, so the CLI accepts exactly what the API server accepts).

    Returns:
        The duration in seconds (float, > 0 and finite).

    Raises:
        ValueError: for a bare number (string or not: ``ttft: 1`` is refused, as the CRD refuses
            it), NaN or infinity, an unknown unit, or a value that is not positive. The message
            lists the accepted units.
    """
    if not isinstance(value, str):
        kind = "NaN or infinity" if isinstance(value, float) and not math.isfinite(value) else "a bare number"
        raise ValueError(f"expected a duration with a unit, one of us, ms, s, m (for example '500ms' or '2s'), "
                         f"got {kind if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__}")
    match = _DURATION_RE.match(value)
    if not match:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise ValueError(
            f"invalid duration {shown!r}: write a number with a unit, one of us, ms, s, m "
            "(for example '500ms' or '0.2s')"
        )
    seconds = float(match["value"]) * _UNIT_SECONDS[match["unit"]]
    if not (0 < seconds < math.inf):
        raise ValueError(f"duration must be positive and finite, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds the way a user would write them: ``0.5`` -> ``"500ms"``, ``2`` -> ``"2s"``."""
    if seconds < 1:
        return f"{seconds * 1e3:g}ms"
    return f"{seconds:g}s"
