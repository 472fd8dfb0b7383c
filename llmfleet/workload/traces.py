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
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

TRACE_COLUMNS = ("arrival_s", "input_tokens", "output_tokens")


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file and the column."""


def _require(df: pd.DataFrame, cols: tuple[str, ...], path: Path, fmt: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise TraceError(
            f"{path}: not a {fmt} trace: missing column(s) {', '.join(missing)}; found {', '.join(map(str, df.columns))}"
        )


def _finish(arrival_s: pd.Series, inp: pd.Series, out: pd.Series, path: Path) -> pd.DataFrame:
    df = pd.DataFrame({"arrival_s": arrival_s.astype(float), "input_tokens": inp, "output_tokens": out})
    df = df.dropna()
    if df.empty:
        raise TraceError(f"{path}: trace has no usable requests")
    df["input_tokens"] = df["input_tokens"].astype(int).clip(lower=1)
    df["output_tokens"] = df["output_tokens"].astype(int).clip(lower=1)
    df = df.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    df["arrival_s"] -= df["arrival_s"].iloc[0]
    return df


def load_azure(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    _require(df, ("TIMESTAMP", "ContextTokens", "GeneratedTokens"), path, "Azure LLM inference")
    ts = pd.to_datetime(df["TIMESTAMP"], format="mixed")
    arrival = (ts - ts.min()).dt.total_seconds()
    return _finish(arrival, df["ContextTokens"], df["GeneratedTokens"], path)


def load_mooncake(path: Path) -> pd.DataFrame:
    df = pd.read_json(path, lines=True)
    _require(df, ("timestamp", "input_length", "output_length"), path, "Mooncake")
    return _finish(df["timestamp"] / 1000.0, df["input_length"], df["output_length"], path)


def load_burstgpt(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    _require(df, ("Timestamp", "Request tokens", "Response tokens"), path, "BurstGPT")
    df = df[df["Response tokens"] > 0]
    return _finish(df["Timestamp"], df["Request tokens"], df["Response tokens"], path)


def load_generic_csv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    _require(df, ("timestamp", "input_tokens", "output_tokens"), path, "generic CSV")
    return _finish(df["timestamp"], df["input_tokens"], df["output_tokens"], path)


LOADERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "azure": load_azure,
    "mooncake": load_mooncake,
    "burstgpt": load_burstgpt,
    "csv": load_generic_csv,
}


def load_trace(path: str | Path, fmt: str) -> pd.DataFrame:
    """Load a trace file of format ``azure``, ``mooncake``, ``burstgpt`` or ``csv``.

    Returns:
        DataFrame with columns ``arrival_s``, ``input_tokens``, ``output_tokens``, one row per request.

    Raises:
        TraceError: unknown format, missing file, missing columns or no usable rows.
    """
    path = Path(path)
    if fmt not in LOADERS:
        raise TraceError(f"trace format {fmt!r} is not supported; allowed: {', '.join(LOADERS)}")
    if not path.is_file():
        raise TraceError(f"{path}: trace file not found")
    try:
        return LOADERS[fmt](path)
    except (ValueError, KeyError) as err:
        if isinstance(err, TraceError):
            raise
        raise TraceError(f"{path}: cannot read as {fmt} trace: {err}") from None


def detect_format(path: str | Path) -> str:
    """The trace format of a file from its extension and header: ``mooncake`` for JSON lines,
    else the CSV format whose required columns the header holds.

    Raises:
        TraceError: missing file, or a header no format matches.
    """
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: trace file not found")
    if path.suffix in (".jsonl", ".json"):
        return "mooncake"
    header = set(pd.read_csv(path, nrows=0).columns)
    for fmt, cols in (("azure", {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}),
                      ("burstgpt", {"Timestamp", "Request tokens", "Response tokens"}),
                      ("csv", {"timestamp", "input_tokens", "output_tokens"})):
        if cols <= header:
            return fmt
    raise TraceError(f"{path}: unknown trace format (columns {', '.join(sorted(header))}); "
                     f"give one of {', '.join(LOADERS)}")
