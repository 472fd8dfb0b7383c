"""Power-cap levels as a dimension of the replica configurations (DESIGN §6, §8; issue 17).

Under a FleetPolicy power budget, each (pool, TP, role) configuration of a workload is also
offered at the lower cap levels of its GPU (``perf.powercap.cap_levels``: 85% and 70% of the
default limit and the device minimum). A capped configuration is the same replica with the
compute rate of its steps lowered to the clock the cap allows (``perf.powercap.capped_perf_params``)
and its capacities κ remodelled with it:

- prefill and colocated replicas at the draw of compute-bound steps (about the TDP), so they slow
  as soon as the cap is below the default limit;
- decode replicas at their own predicted draw (``perf.power``): a cap above it costs nothing,
  which is where capping buys power for free (decode draws far below the TDP).

Its predicted draw is min(the draw at load under the capped step times, the cap). The MILP then
chooses the cap with the GPU type, TP and role; the budget bounds Σ GPUs x cap (the guarantee the
power agent enforces), not the predicted draw, unless the policy declares oversubscription.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from llmfleet.api.models import LLMWorkload
from llmfleet.catalog.models import ModelSpec
from llmfleet.perf.capacity import (POISSON, Burstiness, capacity_rps, decode_capacity_rps,
                                    prefill_capacity_rps)
from llmfleet.perf.power import attach_power
from llmfleet.perf.powercap import cap_levels, capped_perf_params
from llmfleet.perf.steptime import PerfParams


def capped_configs(w: LLMWorkload, model: ModelSpec, base: list, inp: np.ndarray, out: np.ndarray,
                   share: np.ndarray, params: PerfParams, percentile: float,
                   burst: Burstiness = POISSON) -> list:
    """The capped variants of the workload's configurations ``base`` (``ReplicaConfig`` with their
    predicted draw attached), each below its GPU's default limit; a variant that serves no bucket
    within the SLO is dropped. ``base`` is not changed.

    Args:
        inp, out, share: shape (S,), the workload's buckets and their shares.
        percentile: the percentile the base capacities were modelled at, %.
        burst: the demand's variability; a colocated variant takes a burst to be spread over
            its base configuration's ``burst_replicas``.
    """
    slo, s = w.spec.slo, w.spec.serving
    gmu = s.gpu_memory_utilization
    out_configs = []
    for c in base:
        gpu = c.pool.gpu
        # the configuration's own calibration (``ReplicaConfig.step_time_scale``), then the cap
        own = params if c.step_time_scale == 1.0 else dataclasses.replace(
            params, step_time_scale=params.step_time_scale * c.step_time_scale)
        for cap in cap_levels(gpu)[1:]:  # the first level is the default limit: the base config
            decode_draw = c.gpu_watts if c.role == "decode" else None
            try:
                p = capped_perf_params(own, gpu, cap, decode_draw)
                p_whole = capped_perf_params(own, gpu, cap)
            except ValueError:
                continue  # a cap at or below the static draw: no clock left
            if c.role == "colocated":
                # a burst spread over as many replicas as the uncapped configuration's κ takes it to
                # be (``ReplicaConfig.burst_replicas``), so that a cap never makes a replica faster
                kappa = capacity_rps(model, gpu, c.tp, inp, out, slo.ttft, slo.tpot, percentile, p, gmu,
                                     s.max_num_seqs, s.max_num_batched_tokens, burst.spread_over(c.burst_replicas))
                extra = {}
            elif c.role == "decode":
                kappa = decode_capacity_rps(model, gpu, c.tp, inp, out, slo.tpot, percentile, p, gmu,
                                            s.max_num_seqs, burst)
                extra = {"whole_capacity_rps": capacity_rps(model, gpu, c.tp, inp, out, slo.ttft, slo.tpot, percentile,
                                                            p_whole, gmu, s.max_num_seqs, s.max_num_batched_tokens,
                                                            burst)}
            else:
                kappa = prefill_capacity_rps(model, gpu, c.tp, inp, slo.ttft, percentile, c.kv_transfer_s, slo.tpot,
                                             p, gmu, burst)
                extra = {}
            if not (kappa > 0).any():
                continue
            # throughput_rps (planned misses) stays the uncapped one: a small optimism on <= the
            # SLO allowance of requests
            both = (kappa > 0) & (c.capacity_rps > 0)
            factor = float(np.median(kappa[both] / c.capacity_rps[both])) if both.any() else 0.0
            v = dataclasses.replace(c, capacity_rps=kappa, cap_watts=float(cap), gpu_watts=None,
                                    cap_capacity_factor=factor, compute_scale=p.eff_compute / params.eff_compute,
                                    **extra)
            attach_power([v], model, inp, out, share, percentile, p, gmu, s.max_num_seqs, s.max_num_batched_tokens)
            out_configs.append(v)
    return out_configs


def without_caps(fp):
    """``fp`` with only the default-limit configurations: the same problem under TDP accounting
    (every GPU counted at its default limit), to show what the caps gain under a power budget."""
    return dataclasses.replace(fp, workloads=[dataclasses.replace(w, configs=[c for c in w.configs if c.cap_watts is None])
                                              for w in fp.workloads])


def budget_report(plan, tdp_plan, fp) -> dict:
    """What the power budget costs and what caps gain: this plan's caps, predicted draw and
    service against the plan for the same budget at default limits (``tdp_plan``, solved on
    ``without_caps(fp)``). Watts and USD/h; served/shed in req/s."""

    def served(p) -> dict:
        return {"status": p.status, "costPerHour": None if p.cost_per_hour is None else round(p.cost_per_hour, 4),
                "servedRps": round(sum(r.served_rps for r in p.workloads), 4),
                "shedRps": round(sum(r.shed_rps for r in p.workloads), 4),
                "powerCapWatts": round(p.limit_watts, 1), "totalGPUs": p.total_gpus}

    return {"budgetWatts": fp.power_budget_watts, "oversubscription": fp.power_oversubscription,
            "withCaps": served(plan), "atDefaultLimits": served(tdp_plan)}
