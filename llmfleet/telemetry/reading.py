"""A telemetry value, or UNKNOWN with the reason: never a silent 0.

Reading a missing, empty, NaN or stale series as 0 scaled fleets down (AIBrix PR #2592, KEDA's
default for an empty result, Dynamo #6985): every quantity llmfleet reads is a ``Reading``, and
code that wants a float must say what to do when it is unknown (``value_or``) or get an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum


class Unknown(str, Enum):
    """Why a quantity is not known. The value is the Kubernetes-style reason (CamelCase)."""

    MISSING_SERIES = "MissingSeries"
    """the metric name has no series at all in Prometheus (renamed, not scraped, wrong suffix)"""
    EMPTY_RESULT = "EmptyResult"
    """the metric exists but nothing for this workload or group (no pod scraped, labels dropped)"""
    NAN = "NotANumber"
    """the query gave NaN: e.g. a NaN gauge, or a ratio or quantile over a window without traffic"""
    STALE = "Stale"
    """the newest sample is older than the allowed age (a multiple of the scrape interval)"""
    TARGET_DOWN = "TargetDown"
    """a scrape target of the workload is down, so a sum over its pods would undercount"""
    INCONSISTENT = "InconsistentSeries"
    """the series contradict each other (more requests left the engines than completed)"""
    UNREACHABLE = "PrometheusUnreachable"
    """no answer from Prometheus (connection refused, timeout)"""
    QUERY_ERROR = "QueryError"
    """Prometheus answered with an error (bad query, overload) or a malformed result"""


@dataclass(frozen=True)
class Reading:
    """One quantity: a finite float, or UNKNOWN with a reason.

    Attributes:
        value: the value in the unit its name says; None when unknown.
        unknown: the reason when unknown, else None.
        detail: a short human explanation (the metric or query involved); never secrets.
        age_s: age of the newest sample behind the value, s, where known.
    """

    value: float | None = None
    unknown: Unknown | None = None
    detail: str = ""
    age_s: float | None = None

    def __post_init__(self):
        if (self.value is None) == (self.unknown is None):
            raise ValueError("a Reading has exactly one of value and unknown")
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError(f"a known Reading must be finite, got {self.value!r}: use Reading.of()")

    @classmethod
    def of(cls, value: float, detail: str = "", age_s: float | None = None) -> "Reading":
        """A known value; NaN or ±inf become UNKNOWN(NAN) rather than an error."""
        v = float(value)
        if not math.isfinite(v):
            return cls(unknown=Unknown.NAN, detail=detail or f"value {v!r}", age_s=age_s)
        return cls(value=v, detail=detail, age_s=age_s)

    @classmethod
    def missing(cls, reason: Unknown, detail: str = "") -> "Reading":
        return cls(unknown=reason, detail=detail)

    @property
    def known(self) -> bool:
        return self.unknown is None

    def value_or(self, default: float) -> float:
        """The value, or ``default`` when unknown: the caller names its safe fallback."""
        return self.value if self.value is not None else default

    def require(self) -> float:
        """The value. Raises ``UnknownTelemetry`` when unknown."""
        if self.value is None:
            raise UnknownTelemetry(self)
        return self.value

    def __bool__(self):
        # ``if reading:`` would treat UNKNOWN like 0 or a value like True: make the caller choose
        raise TypeError("a Reading has no truth value: test .known, or use .value_or()/.require()")

    def __float__(self):
        return self.require()

    def __str__(self):
        if self.known:
            return f"{self.value:g}"
        return f"UNKNOWN({self.unknown.value}{': ' + self.detail if self.detail else ''})"


class UnknownTelemetry(RuntimeError):
    """A quantity was required but is unknown; ``reading`` says why."""

    def __init__(self, reading: Reading):
        super().__init__(str(reading))
        self.reading = reading
