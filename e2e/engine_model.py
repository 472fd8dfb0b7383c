"""What an emulated vLLM engine answers: a request's lengths and latencies, from llmfleet's
performance model with every forward pass ``slowdown`` times the profile's.

The vLLM emulator (``vllm_emulator.py``) reports only what it is told. ``ModelEngine`` decides it:
for the load each pod carries now, the model's TTFT and TPOT quantile functions (on the solver's
``QUANTILE_GRID``) for the workload's length mix, with the step-time scale ``slowdown``; each
request draws one TTFT and one TPOT from them (inverse transform, linear between grid points: the
distribution whose mean ``solver.milp.predicted_mean_latency`` integrates). So an engine 30%
slower than the profile is the profile's own queueing and batching with 30% longer steps, which is
what calibration (``operator.calibration``) must find from the endpoints' histograms.

Lengths are drawn uniformly inside one of vLLM's length-histogram buckets each (prompt
``prompt_tokens`` and output ``output_tokens``, both (lo, hi] ranges of the 1-2-5 grid), so the
length mix the operator reads back (mass spread uniformly within vLLM's buckets,
``telemetry.lengths``) is the engine's own: only its speed is unknown to the operator.

Past saturation (the model has no finite latency at that load) the queue would grow without bound;
the engine then reports ``SATURATED_TTFT_S`` rather than modelling the growth.
"""

from __future__ import annotations

import dataclasses
import math
import random
import threading

import numpy as np

from llmfleet.api.loader import FleetSpec
from llmfleet.api.models import FleetPolicy, GPUPool, LLMWorkload
from llmfleet.operator.live import observed_demand
from llmfleet.solver.milp import QUANTILE_GRID, _latencies_by_bucket
from llmfleet.solver.problem import build_problem
from llmfleet.telemetry.lengths import to_planner_buckets
from llmfleet.workload.demand import INPUT_EDGES_TOKENS, OUTPUT_EDGES_TOKENS

SATURATED_TTFT_S = 30.0
"""TTFT reported past saturation, s: beyond any SLO llmfleet plans for"""
UTIL_STEP = 0.02
"""the load (per-pod rate over a replica's modelled capacity) is rounded to this before the model
is evaluated, so a steady load costs one evaluation"""


class ModelEngine:
    """Requests of one workload served by an engine ``slowdown`` times slower than the profile.

    Args:
        manifests: the FleetPolicy, GPUPool and LLMWorkload (dicts) the operator plans from; the
            workload must plan a colocated group on the pool (its first configuration is used).
        slowdown: step-time scale of the real engine over the profile (1: as modelled).
        prompt_tokens, output_tokens: (lo, hi] of the lengths, on vLLM's histogram bounds.
        seed: of the draws.
    """

    def __init__(self, manifests: list[dict], slowdown: float, prompt_tokens: tuple[int, int] = (200, 500),
                 output_tokens: tuple[int, int] = (50, 100), seed: int = 7):
        by_kind = {m["kind"]: m for m in manifests}
        wl = LLMWorkload.model_validate(by_kind["LLMWorkload"])
        spec = FleetSpec(workloads=[wl], pools=[GPUPool.model_validate(by_kind["GPUPool"])],
                         policy=FleetPolicy.model_validate(by_kind["FleetPolicy"]))
        demand = observed_demand(1.0, _uniform(prompt_tokens, INPUT_EDGES_TOKENS),
                                 _uniform(output_tokens, OUTPUT_EDGES_TOKENS))
        fp = build_problem(spec, demands={wl.key: demand})
        self.params = fp.params
        self.workload = fp.workloads[0]
        colocated = [c for c in self.workload.configs if c.role == "colocated"]
        if not colocated:
            raise ValueError("ModelEngine: the workload has no colocated configuration on the pool")
        self.config = dataclasses.replace(colocated[0], step_time_scale=slowdown)
        # a replica's capacity for the mix as modelled (the utilisation the quantiles are taken at)
        share = self.workload.share
        self.capacity_rps = 1.0 / float(np.sum(share / colocated[0].capacity_rps))
        self.slowdown = slowdown
        self.prompt_tokens, self.output_tokens = prompt_tokens, output_tokens
        self._rng = random.Random(seed)
        self._quantiles: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def quantiles(self, per_pod_rps: float) -> tuple[np.ndarray, np.ndarray]:
        """(TTFT, TPOT) quantile functions on ``[0] + QUANTILE_GRID + [100]`` %, s, at a pod's load."""
        util = max(UTIL_STEP, round(per_pod_rps / self.capacity_rps / UTIL_STEP) * UTIL_STEP)
        with self._lock:
            hit = self._quantiles.get(util)
        if hit is not None:
            return hit
        bucket_rps = per_pod_rps * self.workload.share
        _, t1, t2 = _latencies_by_bucket(self.workload, self.config, bucket_rps, util, self.params,
                                         [float(q) for q in QUANTILE_GRID])
        # one length bucket in the mix (``_uniform``): its quantiles are the mix's
        ttft = [float(t[0]) for t in t1]
        tpot = [float(t[0]) for t in t2]
        ends = lambda a: np.array([a[0], *a, a[-1]])  # noqa: E731
        out = (ends(ttft), ends(tpot))
        with self._lock:
            self._quantiles[util] = out
        return out

    def request(self, per_pod_rps: float) -> tuple[int, int, float, float]:
        """One request at a pod carrying ``per_pod_rps``: (prompt tokens, output tokens, TTFT s, ITL s)."""
        ttft_q, tpot_q = self.quantiles(per_pod_rps)
        probs = np.concatenate([[0.0], QUANTILE_GRID / 100.0, [1.0]])
        with self._lock:
            u1, u2 = self._rng.random(), self._rng.random()
            prompt = self._rng.randint(self.prompt_tokens[0] + 1, self.prompt_tokens[1])
            output = self._rng.randint(self.output_tokens[0] + 1, self.output_tokens[1])
        if not (np.isfinite(ttft_q).all() and np.isfinite(tpot_q).all()):
            finite = tpot_q[np.isfinite(tpot_q)]
            return prompt, output, SATURATED_TTFT_S, float(finite.max()) if len(finite) else 1.0
        return prompt, output, float(np.interp(u1, probs, ttft_q)), float(np.interp(u2, probs, tpot_q))


def _uniform(bounds: tuple[int, int], edges: np.ndarray):
    """The planner-grid distribution of lengths uniform on the integers in (lo, hi], as the operator
    reads it back from vLLM's histogram (``telemetry.lengths.to_planner_buckets``)."""
    lo, hi = bounds
    dist = to_planner_buckets([lo, hi, math.inf], [0.0, 1.0, 1.0], edges)
    if int(np.count_nonzero(dist.share)) != 1:
        raise ValueError(f"lengths ({lo}, {hi}] straddle a planner bucket edge {edges.tolist()}: pick a range "
                         "inside one planner bucket")
    return dist
