"""Read Mélange's solver input and solve it with llmfleet's formulation.

Mélange (Griggs et al., "Mélange: Cost Efficient Large Language Model Serving by Exploiting GPU
Heterogeneity", 2024; tyler-griggs/melange-release) takes a JSON object with

- ``gpu_info``: ``{name: {"cost": USD/h, "tputs": [[req/s per input bucket][per output bucket]]}}``
  (a list of ``{"name", "cost", "tputs"}`` is accepted too); a throughput of 0 means the SLO is
  unreachable on that GPU for that bucket;
- ``workload_distribution``: the share of requests per (input, output) bucket (normalised here);
- ``total_request_rate``: req/s;
- ``slice_factor``: how finely Mélange slices each bucket. Ignored: llmfleet's traffic shares are
  continuous, which is the limit of an infinitely fine slice.

Each GPU becomes a pool of unlimited availability and one replica config (TP 1) whose capacity
per bucket is the profiled throughput.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from llmfleet.catalog.gpus import GPUType
from llmfleet.solver.problem import UNLIMITED_GPUS, FleetProblem, PoolInfo, ReplicaConfig, WorkloadProblem


class MelangeInputError(ValueError):
    """Input JSON that does not follow Mélange's format; the message names the key."""


def _number(value, key: str, minimum: float = 0.0, strict: bool = False) -> float:
    """A finite JSON number >= ``minimum`` (> when ``strict``); booleans and strings are refused."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (strict and value == minimum):
        raise MelangeInputError(f"{key} must be a finite number {'>' if strict else '>='} {minimum:g}, "
                                f"got {type(value).__name__ if not ok else value}")
    return float(value)


def _matrix(value, key: str) -> np.ndarray:
    """A rectangular, non-empty 2-D list of finite non-negative numbers as an array."""
    if not isinstance(value, list) or not value or not all(isinstance(row, list) for row in value):
        raise MelangeInputError(f"{key} must be a 2-D matrix: a non-empty list of rows (lists of numbers)")
    width = len(value[0])
    for i, row in enumerate(value):
        if len(row) != width or not row:
            raise MelangeInputError(f"{key}[{i}] has {len(row)} entries; row 0 has {width}: rows must be of equal, "
                                    "non-zero length")
        for j, v in enumerate(row):
            _number(v, f"{key}[{i}][{j}]")
    return np.asarray(value, dtype=float)


def _gpu_entries(gpu_info) -> list[tuple[str, float, np.ndarray]]:
    if isinstance(gpu_info, dict):
        items = list(gpu_info.items())
    elif isinstance(gpu_info, list) and all(isinstance(g, dict) for g in gpu_info):
        items = [(g.get("name"), g) for g in gpu_info]
    else:
        raise MelangeInputError("gpu_info must be an object {name: {cost, tputs}} or a list of {name, cost, tputs}")
    if not items:
        raise MelangeInputError("gpu_info lists no GPU")
    out = []
    for name, g in items:
        if not isinstance(name, str) or not name:
            raise MelangeInputError("gpu_info: every GPU needs a non-empty string name")
        label = f"gpu_info[{name[:60]!r}]"
        if not isinstance(g, dict) or "cost" not in g or "tputs" not in g:
            raise MelangeInputError(f"{label} needs 'cost' (USD/h) and 'tputs' (2-D req/s)")
        cost = _number(g["cost"], f"{label}.cost (USD/h)")
        out.append((name, cost, _matrix(g["tputs"], f"{label}.tputs")))
    return out


def problem_from_melange(data: dict, time_limit_s: float = 30.0, relative_gap: float = 1e-4) -> FleetProblem:
    """Build a one-workload FleetProblem from a Mélange input object.

    Raises:
        MelangeInputError: missing keys, shapes that disagree, negative values.
    """
    for key in ("gpu_info", "workload_distribution", "total_request_rate"):
        if key not in data:
            raise MelangeInputError(f"missing key {key!r} (Mélange input needs gpu_info, workload_distribution, total_request_rate)")
    dist = _matrix(data["workload_distribution"], "workload_distribution")
    rate = _number(data["total_request_rate"], "total_request_rate (req/s)", strict=True)
    if dist.sum() <= 0:
        raise MelangeInputError("workload_distribution must not be all zero")
    gpus = _gpu_entries(data["gpu_info"])
    cells = np.argwhere(dist > 0)
    share = dist[cells[:, 0], cells[:, 1]] / dist.sum()
    pools, configs = {}, []
    for name, cost, tputs in gpus:
        if tputs.shape != dist.shape:
            raise MelangeInputError(f"gpu_info[{name!r}].tputs has shape {tputs.shape}; workload_distribution has {dist.shape}")
        gpu = GPUType(name=name, memory_gb=0, mem_bandwidth_gbps=0, peak_bf16_tflops=0, tdp_watts=0,
                      interconnect_gbps=0, spec_source="Mélange input")
        pool = PoolInfo(name=name, gpu=gpu, max_gpus=UNLIMITED_GPUS, gpus_per_node=1, cost_per_gpu_hour=cost)
        pools[name] = pool
        kappa = tputs[cells[:, 0], cells[:, 1]]
        if (kappa > 0).any():
            configs.append(ReplicaConfig(pool=pool, tp=1, capacity_rps=kappa, cost_per_replica_hour=cost))
    w = WorkloadProblem(key="melange", workload=None, model=None, demand=None, rate_rps=rate, share=share,
                        input_tokens=cells[:, 0].astype(float), output_tokens=cells[:, 1].astype(float),
                        tier="standard", tier_value=0, min_replicas=0, configs=configs)
    return FleetProblem([w], pools, time_limit_s=time_limit_s, relative_gap=relative_gap)


def load_melange(path: str | Path, **kwargs) -> FleetProblem:
    """Read a Mélange input JSON file.

    Raises:
        MelangeInputError: unreadable file, not UTF-8, bad JSON (line and column, never the text),
            or a format error; every message starts with the file's path.
    """
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as err:
        raise MelangeInputError(f"{path}: cannot read: {err.strerror or type(err).__name__}") from None
    except UnicodeDecodeError:
        raise MelangeInputError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise MelangeInputError(f"{path}: not valid JSON: line {err.lineno}, column {err.colno}: {err.msg}") from None
    except RecursionError:
        raise MelangeInputError(f"{path}: not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise MelangeInputError(f"{path}: expected a JSON object with gpu_info, workload_distribution, total_request_rate")
    try:
        return problem_from_melange(data, **kwargs)
    except MelangeInputError as err:
        raise MelangeInputError(f"{path}: {err}") from None
