"""Progress of long work (problem build, MILP solve, simulation), reported to whoever listens.

The library never prints. The CLI installs a reporter (``reporting(...)``) that writes these lines
to stderr, so that ``-o json`` keeps stdout to exactly one document; the operator installs none
and the calls cost nothing. The reporter is held in a ``ContextVar``, so concurrent planners
(threads, asyncio tasks) do not see each other's reporter.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

Reporter = Callable[[str], None]

_reporter: ContextVar[Reporter | None] = ContextVar("llmfleet_progress", default=None)


def report(message: str) -> None:
    """Send one progress line (no trailing newline) to the installed reporter, if any."""
    r = _reporter.get()
    if r is not None:
        r(message)


@contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Install ``reporter`` for the code run inside the block."""
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)
