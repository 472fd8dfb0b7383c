"""Loaders for public LLM request traces, all returning the same frame.

Every loader returns a ``pandas.DataFrame`` sorted by arrival with columns
``arrival_s`` (float seconds from the first request), ``input_tokens`` and ``output_tokens``
(int >= 1). Schemas are the ones the traces' owners publish:

- ``azure``: Azure LLM inference trace 2023 (Azure/AzurePublicDataset, CC-BY-4.0):
  ``TIMESTAMP, ContextTokens, GeneratedTokens``; TIMESTAMP is a wall-clock datetime.
- ``mooncake``: Mooncake FAST'25 traces (kvcache-ai/Mooncake, Apache-2.0), JSON lines with
  ``timestamp`` (ms), ``input_length``, ``output_length``, ``hash_ids``.
- ``burstgpt``: BurstGPT (HPMLL/BurstGPT, CC-BY-4.0): ``Timestamp`` (s), ``Session ID``,
  ``Elapsed time``, ``Model``, ``Request tokens``, ``Response tokens``, ``Total tokens``,
  ``Log Type``. Rows with 0 response tokens are failed requests in that trace and are dropped.
- ``csv``: a generic CSV with ``timestamp`` (s), ``input_tokens``, ``output_tokens``.

Timestamps rounded to 10 ms or coarser with requests sharing one (BurstGPT's whole seconds) are
spread uniformly within their tick (``spread_ticks``).

A trace path can come from a tenant's LLMWorkload, and error messages reach its status. So no
message ever quotes the file's content: a header is described only by the expected column names it
holds, and a bad value only by its row and column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

TRACE_COLUMNS = ("arrival_s", "input_tokens", "output_tokens")

MAX_TRACE_TOKENS = 10_000_000
"""Largest token count accepted in a trace row: above any served model's context window (Llama 4
Scout, 10M tokens); larger counts are corrupt rows, not requests"""

FORMAT_COLUMNS: dict[str, tuple[str, ...]] = {
    "azure": ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
    "mooncake": ("timestamp", "input_length", "output_length"),
    "burstgpt": ("Timestamp", "Request tokens", "Response tokens"),
    "csv": ("timestamp", "input_tokens", "output_tokens"),
}
"""Required columns of each format (the owners' published schemas, module docstring)"""

_KNOWN_COLUMNS = {c for cols in FORMAT_COLUMNS.values() for c in cols}


TIMESTAMP_TICKS_S = (60.0, 1.0, 0.1, 0.01)
"""timestamp resolutions ``timestamp_tick_s`` recognises, s, coarsest first. The finest is the
shortest window over which clump mates are measured (``demand.FOLLOWER_WINDOWS_S``, 10 ms):
timestamps rounded to it or coarser merge requests that came up to a tick apart into one instant
(BurstGPT's ``Timestamp`` is whole seconds); a millisecond trace (Mooncake) is kept as it is"""

SPREAD_SEED = 0
"""seed of the uniform spread within a tick (``spread_ticks``): the same file gives the same arrivals,
so the same plan and the same replay"""


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file, the column and the row."""


def _describe_header(columns) -> str:
    """What a header holds, told only through the column names we know (never the text itself)."""
    known = [c for c in map(str, columns) if c in _KNOWN_COLUMNS]
    return (f"found {', '.join(known)}" if known
            else "its first line holds none of the expected column names")


def _require(df: pd.DataFrame, fmt: str, path: Path, label: str) -> None:
    cols = FORMAT_COLUMNS[fmt]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise TraceError(f"{path}: not in the {label} format: expected columns {', '.join(cols)}; "
                         f"missing {', '.join(missing)}; {_describe_header(df.columns)}")


def _row(values: pd.Series, position: int) -> int:
    """Row number in the file (0 = first data row) of ``values``' element at ``position``: the
    frames keep the reader's row index, also after rows are filtered out."""
    return int(values.index[position])


def _numbers(values: pd.Series, column: str, path: Path, first_line: int) -> pd.Series:
    """``values`` as floats; any non-numeric cell is an error naming its row and column."""
    out = pd.to_numeric(values, errors="coerce")
    bad = out.isna() & values.notna()
    if bad.any():
        row = _row(values, np.flatnonzero(bad.to_numpy())[0])
        raise TraceError(f"{path}: line {first_line + row}: column {column}: not a number "
                         f"({int(bad.sum())} such rows)")
    return out.astype(float)


def _tokens(values: pd.Series, column: str, path: Path, first_line: int) -> pd.Series:
    out = _numbers(values, column, path, first_line)
    arr = out.to_numpy()
    bad = ~np.isnan(arr) & ((arr < 0) | (arr > MAX_TRACE_TOKENS) | (arr != np.floor(arr)))
    if bad.any():
        row = _row(values, np.flatnonzero(bad)[0])
        raise TraceError(f"{path}: line {first_line + row}: column {column}: token count must be a whole number "
                         f"from 0 to {MAX_TRACE_TOKENS:,} ({int(bad.sum())} such rows)")
    return out


def _finish(arrival_s: pd.Series, inp: pd.Series, out: pd.Series, path: Path, first_line: int,
            columns: tuple[str, str, str]) -> pd.DataFrame:
    """Checked, sorted frame. ``first_line``: file line of the frame's first row (for messages)."""
    arrival = _numbers(arrival_s, columns[0], path, first_line)
    arr = arrival.to_numpy()
    bad = ~np.isnan(arr) & ~np.isfinite(arr)
    if bad.any():
        raise TraceError(f"{path}: line {first_line + _row(arrival, np.flatnonzero(bad)[0])}: column {columns[0]}: "
                         "not a finite time")
    df = pd.DataFrame({"arrival_s": arrival,
                       "input_tokens": _tokens(inp, columns[1], path, first_line),
                       "output_tokens": _tokens(out, columns[2], path, first_line)})
    df = df.dropna()
    if df.empty:
        raise TraceError(f"{path}: trace has no usable requests")
    df["input_tokens"] = df["input_tokens"].astype(int).clip(lower=1)
    df["output_tokens"] = df["output_tokens"].astype(int).clip(lower=1)
    df = df.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    df["arrival_s"] -= df["arrival_s"].iloc[0]
    return spread_ticks(df)


def timestamp_tick_s(arrival_s: np.ndarray) -> float | None:
    """The resolution of a trace's timestamps: the coarsest of ``TIMESTAMP_TICKS_S`` that every
    arrival is a whole multiple of, counted from the first (s), or None (finer than 10 ms)."""
    arrival_s = np.asarray(arrival_s, dtype=float)
    rel = arrival_s - arrival_s.min() if len(arrival_s) else arrival_s
    for tick in TIMESTAMP_TICKS_S:
        x = rel / tick
        if np.all(np.abs(x - np.round(x)) <= 1e-6):
            return tick
    return None


def spread_ticks(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` (sorted, ``arrival_s`` from 0) with arrivals spread uniformly within their timestamp's
    tick where the timestamps are rounded to 10 ms or coarser (``timestamp_tick_s``) and some
    requests share one: the file no longer says how those requests were spaced, and taken as
    simultaneous they would be planned and replayed as clumps that share a prefill iteration (the
    Azure conversation trace, 5.5 req/s, floored to whole seconds shows 2.9 clump mates per
    request within 10 ms against 0.014 as recorded, ``demand.arrival_followers``).
    A uniform spread is the least-informed arrival time within the tick; seeded
    (``SPREAD_SEED``) so that a file always gives the same arrivals. Traces with no shared
    timestamp are kept as they are (a tick may be their real spacing). The tick spread over, s,
    is in ``df.attrs["spread_tick_s"]``."""
    arrival = df["arrival_s"].to_numpy()
    tick = timestamp_tick_s(arrival)
    if tick is None or len(arrival) < 2 or not (np.diff(arrival) == 0).any() or arrival[-1] <= arrival[0]:
        # (all at one instant: no resolution to speak of, and no rate; ``demand_from_trace`` says so)
        return df
    rng = np.random.default_rng(SPREAD_SEED)
    df = df.assign(arrival_s=arrival + rng.uniform(0.0, tick, len(arrival)))
    df = df.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    df["arrival_s"] -= df["arrival_s"].iloc[0]
    df.attrs["spread_tick_s"] = tick
    return df


def load_azure(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    _require(df, "azure", path, "Azure LLM inference")
    ts = pd.to_datetime(df["TIMESTAMP"], format="mixed", errors="coerce")
    bad = ts.isna() & df["TIMESTAMP"].notna()
    if bad.any():
        raise TraceError(f"{path}: line {2 + int(np.flatnonzero(bad.to_numpy())[0])}: column TIMESTAMP: not a date-time "
                         f"({int(bad.sum())} such rows)")
    arrival = (ts - ts.min()).dt.total_seconds()
    return _finish(arrival, df["ContextTokens"], df["GeneratedTokens"], path, 2, FORMAT_COLUMNS["azure"])


def load_mooncake(path: Path) -> pd.DataFrame:
    df = pd.read_json(path, lines=True)
    _require(df, "mooncake", path, "Mooncake")
    ms = _numbers(df["timestamp"], "timestamp", path, 1)
    return _finish(ms / 1000.0, df["input_length"], df["output_length"], path, 1, FORMAT_COLUMNS["mooncake"])


def load_burstgpt(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    _require(df, "burstgpt", path, "BurstGPT")
    response = _tokens(df["Response tokens"], "Response tokens", path, 2)
    df = df[response > 0]  # 0 response tokens: a failed request in that trace
    return _finish(df["Timestamp"], df["Request tokens"], df["Response tokens"], path, 2, FORMAT_COLUMNS["burstgpt"])


def load_generic_csv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    _require(df, "csv", path, "generic CSV")
    return _finish(df["timestamp"], df["input_tokens"], df["output_tokens"], path, 2, FORMAT_COLUMNS["csv"])


LOADERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "azure": load_azure,
    "mooncake": load_mooncake,
    "burstgpt": load_burstgpt,
    "csv": load_generic_csv,
}


def load_trace(path: str | Path, fmt: str) -> pd.DataFrame:
    """Load a trace file of format ``azure``, ``mooncake``, ``burstgpt`` or ``csv``.

    Returns:
        DataFrame with columns ``arrival_s``, ``input_tokens``, ``output_tokens``, one row per request;
        timestamps of a coarse resolution with requests sharing one are spread within their tick
        (``spread_ticks``; the tick, s, in ``attrs["spread_tick_s"]``).

    Raises:
        TraceError: unknown format, missing file, missing columns, a non-numeric, negative or absurd
            value (row and column named), or no usable rows. Never quotes the file's content.
    """
    path = Path(path)
    if fmt not in LOADERS:
        raise TraceError(f"trace format {fmt!r} is not supported; allowed: {', '.join(LOADERS)}")
    if not path.is_file():
        raise TraceError(f"{path}: trace file not found")
    try:
        return LOADERS[fmt](path)
    except TraceError:
        raise
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not a {fmt} trace: not UTF-8 text") from None
    except pd.errors.EmptyDataError:
        raise TraceError(f"{path}: trace is empty") from None
    except pd.errors.ParserError:
        raise TraceError(f"{path}: not a {fmt} trace: rows do not parse as {'JSON lines' if fmt == 'mooncake' else 'CSV'}") from None
    except (ValueError, KeyError, TypeError, OSError, RecursionError) as err:
        # pandas' messages can quote the offending text: say only what kind of failure it was
        raise TraceError(f"{path}: cannot read as {fmt} trace ({type(err).__name__})") from None


def detect_format(path: str | Path) -> str:
    """The trace format of a file from its extension and header: ``mooncake`` for JSON lines,
    else the CSV format whose required columns the header holds.

    Raises:
        TraceError: missing file, or a header no format matches (described without its text).
    """
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: trace file not found")
    if path.suffix in (".jsonl", ".json"):
        return "mooncake"
    try:
        header = set(pd.read_csv(path, nrows=0).columns)
    except (ValueError, UnicodeDecodeError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
        raise TraceError(f"{path}: not a CSV trace with a header row; give --format") from None
    for fmt in ("azure", "burstgpt", "csv"):
        if set(FORMAT_COLUMNS[fmt]) <= header:
            return fmt
    raise TraceError(f"{path}: unknown trace format ({_describe_header(header)}); expected the columns of one of: "
                     + "; ".join(f"{fmt} ({', '.join(cols)})" for fmt, cols in FORMAT_COLUMNS.items()))


def spread_note(trace: pd.DataFrame) -> str:
    """What ``spread_ticks`` did to ``trace``, for plan messages and replay sources ("" if nothing)."""
    tick = trace.attrs.get("spread_tick_s")
    if tick is None:
        return ""
    return (f"trace timestamps are whole multiples of {tick:g} s and some requests share one: arrivals spread "
            f"uniformly within each {tick:g} s (seeded), else they would be planned and replayed as clumps")

