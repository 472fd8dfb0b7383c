"""Live demand for the planner: Prometheus telemetry -> forecast -> stability decision -> Demand.

For every LLMWorkload whose ``spec.traffic.source`` is ``observed`` or ``max``, each re-plan
interval (one "tick"):

1. read one ``TelemetryClient.snapshot`` for all such workloads (UNKNOWN, never 0, on failure);
2. append the observed arrival rate (req/s, or unknown) to the workload's history and forecast
   the demand over the coming interval at a high quantile (``SeasonalQuantileForecaster``);
   for ``max`` the declared rate is a floor under the forecast. A rate read less than one rate
   window after telemetry was unknown, after the first read, or after a rollout is *settling*,
   and so is one while any series of the arrival counter is younger than the window
   (``WorkloadTelemetry.young_series``): ``rate()`` over a window that the series (or the new
   pods' series) do not yet fill underestimates (Prometheus extrapolates a counter no further
   back than its start, and a new pod's requests before its first scrape are in no series), and
   the jump when the window fills would read as growth. Settling samples count as unknown for
   the forecast, so no decision is taken on them;
3. ask ``stability.decide`` whether to re-plan: only when the forecast leaves the band around the
   demand the running plan was made for (``FleetPolicy.spec.hysteresis``), a scale-down only after
   the stabilisation window, never on unknown data (the plan in force is held: nothing scales
   down), never while a Deployment of the workload is rolling out;
4. on a re-plan, the workload's *demand in force* becomes ``observed_demand(...)`` at the decided
   rate with the observed length mix and the declared demand's arrival burstiness
   (``with_burstiness``: telemetry's rate windows cannot see it); otherwise it stays what it was
   (the declared demand until the first re-plan). The planner passes the demands in force to
   ``build_problem(demands=...)``.

Between ticks nothing here changes, so the planner's periodic fresh solve gets identical inputs
and gives the same plan (no plan change under constant load).

Each successful read also says how many series lack the workload label (``Snapshot.unattributed``):
their pods' requests are in no workload's demand. ``telemetry_status`` gives the last such figures
for ``FleetPolicy.status.telemetry``; a failed read leaves them as they were.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable, Iterable

import numpy as np

from llmfleet.api.models import LLMWorkload
from llmfleet.telemetry.client import ATTRIBUTABLE, SERIES_OF, Snapshot, TelemetryClient, WorkloadTelemetry
from llmfleet.telemetry.forecast import DAY_S, SeasonalQuantileForecaster, UnknownDemand
from llmfleet.telemetry.lengths import LengthDistribution
from llmfleet.telemetry.reading import Reading
from llmfleet.telemetry.stability import Action, Decision, GroupCapacity, StabilityPolicy, StabilityState, Tick, decide
from llmfleet.workload.demand import INPUT_EDGES_TOKENS, OUTPUT_EDGES_TOKENS, Demand

log = logging.getLogger(__name__)

LIVE_SOURCES = ("observed", "max")
"""``spec.traffic.source`` values that read telemetry"""
HISTORY_STEPS = 2 * 24 * 3600
"""most history samples kept per workload (two days at a 1 s interval; far more at real intervals:
the seasonal forecaster looks back ``seasonal_days`` days)"""
YOUNG_SETTLE_WINDOWS = 2
"""longest run of ticks, in rate windows, held as settling because of young series: one window
fills a new series, the second covers its discovery and first scrape"""
CHECKED_METRICS = tuple(sorted({SERIES_OF[s] for s in ATTRIBUTABLE}))
"""metric names whose series must carry the workload label (``TelemetryClient`` counts those that
do not, per name); DCGM's are not among them: they name the GPU's pod instead"""


# ------------------------------------------------------------------------- demand mapping

def _bucket_scv(edges: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Squared coefficient of variation of the lengths inside each bucket, shape (n,).

    vLLM's histograms give only a bucket's mass and (through the uniform spreading in
    ``lengths.to_planner_buckets``) its mean, not its spread. Lengths are taken as uniform on the
    widest interval inside the bucket that is symmetric about the mean, ``[lo, 2·mean − lo]``
    clipped to the bucket: variance width²/12 (uniform distribution). 0 for empty buckets.
    """
    lo = edges[:-1]
    hi = np.minimum(edges[1:] - 1, np.maximum(2 * mean - lo, lo))
    width = np.maximum(hi - lo, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean > 0, (width ** 2 / 12.0) / np.maximum(mean, 1.0) ** 2, 0.0)


def observed_demand(rate_plan_rps: float, input_lengths: LengthDistribution, output_lengths: LengthDistribution,
                    rate_mean_rps: float | None = None) -> Demand:
    """A planner ``Demand`` from an observed rate and observed length marginals.

    vLLM exports only the two marginals, so the joint (input, output) mix is taken as independent
    (as ``demand_from_spec`` does for declared percentiles): ``share[i, j] = in.share[i] ·
    out.share[j]``, with each cell's mean lengths the marginal bucket means. Arrivals are taken as
    Poisson (``arrival_scv`` 1): Prometheus rates over a window carry no sub-minute burstiness.

    Args:
        rate_plan_rps: the rate to plan for (a forecast quantile), req/s.
        input_lengths, output_lengths: on the planner grids ``INPUT_EDGES_TOKENS`` /
            ``OUTPUT_EDGES_TOKENS`` (``TelemetryClient`` maps them so).
        rate_mean_rps: the observed rate, req/s (default: ``rate_plan_rps``).

    Returns:
        ``Demand`` with shapes (n_in, n_out) = (6, 5).

    Raises:
        ValueError: a negative or non-finite rate, or distributions on other grids (names which).
    """
    for name, v in (("rate_plan_rps", rate_plan_rps), ("rate_mean_rps", rate_mean_rps)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise ValueError(f"observed_demand: {name} must be finite and >= 0 req/s, got {v}")
    for name, dist, edges in (("input_lengths", input_lengths, INPUT_EDGES_TOKENS),
                              ("output_lengths", output_lengths, OUTPUT_EDGES_TOKENS)):
        if not np.array_equal(np.asarray(dist.edges_tokens, float), edges):
            raise ValueError(f"observed_demand: {name} is not on the planner's bucket grid {edges.tolist()}")
        if not math.isclose(float(np.sum(dist.share)), 1.0, abs_tol=1e-6):
            raise ValueError(f"observed_demand: {name}.share must sum to 1, got {float(np.sum(dist.share))}")
    a_in, a_out = np.asarray(input_lengths.share, float), np.asarray(output_lengths.share, float)
    share = np.outer(a_in, a_out)
    share = np.where(share > 1e-12, share, 0.0)  # drop float dust: every non-empty cell costs MILP columns
    share = share / share.sum()
    m_in = np.asarray(input_lengths.mean_tokens, float)
    m_out = np.asarray(output_lengths.mean_tokens, float)
    input_tokens = np.where(share > 0, m_in[:, None], 0.0) * np.ones_like(share)
    output_tokens = np.where(share > 0, m_out[None, :], 0.0) * np.ones_like(share)
    scv = np.where(share > 0, _bucket_scv(INPUT_EDGES_TOKENS, m_in)[:, None], 0.0) * np.ones_like(share)
    mean = rate_plan_rps if rate_mean_rps is None else rate_mean_rps
    return Demand(float(mean), float(rate_plan_rps), share, input_tokens, output_tokens,
                  input_scv=scv, arrival_scv=1.0)


def with_rate(d: Demand, rate_plan_rps: float, rate_mean_rps: float | None = None) -> Demand:
    """``d`` with another planning rate, req/s: the length mix, the length quantiles and the
    arrivals' burstiness (``with_burstiness``) kept."""
    return replace(d, rate_mean_rps=float(rate_plan_rps if rate_mean_rps is None else rate_mean_rps),
                   rate_plan_rps=float(rate_plan_rps))


def with_burstiness(d: Demand, declared: Demand | None) -> Demand:
    """``d`` with the arrival burstiness of ``declared`` (the workload's declared demand): its
    seconds-scale dispersion (``arrival_scv``, ``arrival_idc``), clump mates
    (``arrival_followers``) and minute-to-minute load levels (``rate_levels``, and the length
    mix's minute-to-minute shifts, ``window_counts``, relative to their mean). Telemetry reads
    rates over windows of a minute or more (``TelemetryClient.window_s``) and cannot see how
    requests clump within them, while the queues that decide TTFT build over seconds. A declared
    trace measured that; a declared rate is Poisson (the defaults, which then stay). Without it a
    live re-plan would plan a bursty trace-declared workload as Poisson, for fewer replicas than
    the offline plan of the same trace. ``d`` unchanged when ``declared`` is None."""
    if declared is None:
        return d
    return replace(d, arrival_scv=declared.arrival_scv, arrival_idc=declared.arrival_idc,
                   arrival_followers=declared.arrival_followers, rate_levels=declared.rate_levels,
                   window_counts=declared.window_counts)


# ------------------------------------------------------------------------------ per workload

@dataclass
class PlanView:
    """What the planner knows about a workload's running plan at a tick.

    Attributes:
        groups: colocated groups with per-replica capacity and Ready counts (empty when unknown).
        rollout_in_progress: a Deployment of the workload has not finished rolling out.
    """

    groups: tuple[GroupCapacity, ...] = ()
    rollout_in_progress: bool = False


@dataclass
class WorkloadLive:
    """Telemetry state of one workload (``namespace/name``).

    Attributes:
        history: observed arrival rate per tick, req/s, NaN where unknown or settling.
        settle_until_s: ticks before this time (clock s) are settling (module docstring).
        young_since_s: first tick of the current run of ticks with young series (clock s), or None.
        state: the stability state machine's state (planned demand etc.).
        demand: the demand in force (None: the declared demand is in force).
        observed: the last arrival-rate Reading.
        forecast_rps: last forecast (None when unknown).
        decision: last decision.
        lengths: last known (input, output) length distributions.
        telemetry: last snapshot of the workload.
        changes: re-plans decided so far.
    """

    history: list[float] = field(default_factory=list)
    settle_until_s: float | None = None
    young_since_s: float | None = None
    state: StabilityState | None = None
    demand: Demand | None = None
    observed: Reading | None = None
    forecast_rps: float | None = None
    decision: Decision | None = None
    lengths: tuple[LengthDistribution, LengthDistribution] | None = None
    telemetry: WorkloadTelemetry | None = None
    changes: int = 0


@dataclass(frozen=True)
class Unattributed:
    """Series without the workload label, from one successful telemetry read.

    Attributes:
        series: metric name -> number of its series without the label (``Snapshot.unattributed``:
            only metrics that have such series; all counts > 0).
        targets: up to 20 "instance namespace/pod" of the targets exposing them, sorted
            (``Snapshot.unattributed_targets``).
        at: time of the read, Unix s (``Snapshot.at``).
    """

    series: dict[str, int]
    targets: tuple[str, ...]
    at: float


class LiveDemand:
    """Keeps each live workload's history, forecast and demand in force (see module docstring).

    Args:
        client: reads Prometheus.
        quantile: forecast quantile provisioned for (``forecast.DEFAULT_QUANTILE`` 0.9).
        scale_down_stabilisation_s, cooldown_s: ``StabilityPolicy`` windows, s (defaults there:
            300 s each, Kubernetes HPA and AIBrix KPA).
        clock: monotonic seconds (tests).
        on_decision: called with (workload key, Decision) at every tick (metrics, logs).

    Attributes:
        unattributed: series without the workload label at the last successful read (None before
            one: unknown, not zero).
    """

    def __init__(self, client: TelemetryClient, quantile: float = 0.9,
                 scale_down_stabilisation_s: float = StabilityPolicy.scale_down_stabilisation_s,
                 cooldown_s: float = StabilityPolicy.cooldown_s, clock: Callable[[], float] = time.monotonic,
                 on_decision: Callable[[str, Decision], None] | None = None):
        self.client = client
        self.quantile = quantile
        self.scale_down_stabilisation_s = scale_down_stabilisation_s
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.on_decision = on_decision
        self.workloads: dict[str, WorkloadLive] = {}
        self.last_tick_s: float | None = None
        self.snapshot: Snapshot | None = None
        self.unattributed: Unattributed | None = None

    # ------------------------------------------------------------------ ticks
    def due(self, interval_s: float) -> bool:
        """Whether a tick is due (90% of the interval: the planner's timer fires a little late or early)."""
        return self.last_tick_s is None or self.clock() - self.last_tick_s >= 0.9 * interval_s

    def tick(self, workloads: dict[str, LLMWorkload], declared: Callable[[str], Demand | None],
             views: dict[str, PlanView], interval_s: float, hysteresis: float) -> dict[str, Decision]:
        """One telemetry read and one decision per live workload.

        Args:
            workloads: every valid workload by ``namespace/name`` (only live sources are read).
            declared: key -> the declared demand (None when it cannot be built).
            views: key -> the running plan as the planner sees it.
            interval_s: the re-plan interval (= the forecast step), s.
            hysteresis: relative band (``FleetPolicy.spec.hysteresis``).

        Returns:
            key -> decision of this tick.
        """
        now = self.clock()
        self.last_tick_s = now
        live = {k: w for k, w in workloads.items() if w.spec.traffic.source in LIVE_SOURCES}
        for k in [k for k in self.workloads if k not in live]:
            del self.workloads[k]  # deleted, or back to declared: start afresh if it returns
        if not live:
            self.snapshot = None
            return {}
        pcts = sorted({w.spec.slo.percentile / 100.0 for w in live.values()})
        self.client.quantiles = tuple(pcts)
        keys = [tuple(k.split("/", 1)) for k in live]
        self.snapshot = self.client.snapshot(keys)
        self._note_unattributed(self.snapshot)
        policy = StabilityPolicy(band_up=min(hysteresis, 0.99), band_down=min(hysteresis, 0.99),
                                 scale_down_stabilisation_s=self.scale_down_stabilisation_s,
                                 cooldown_s=self.cooldown_s)
        out = {}
        for key, w in live.items():
            out[key] = self._tick_one(key, w, declared(key), views.get(key, PlanView()), now, interval_s, policy)
            if self.on_decision:
                self.on_decision(key, out[key])
        return out

    def _note_unattributed(self, snap: Snapshot) -> None:
        """Keep the unattributed-series figures of a successful read; log when the set of metrics
        having such series changes (not every tick: the status carries the figures)."""
        if not snap.reachable.known or snap.unattributed is None:
            return  # Prometheus (or that query) not read: unknown is not zero, the last figures stand
        before = set(self.unattributed.series) if self.unattributed is not None else set()
        series = {name: int(n) for name, n in snap.unattributed.items() if n > 0}
        self.unattributed = Unattributed(series, tuple(snap.unattributed_targets[:20]), snap.at)
        if set(series) == before:
            return
        if series:
            # metric names and counts only: the targets (pod names) are in the FleetPolicy status
            log.warning("series without the workload label, in no workload's demand: %s "
                        "(targets in FleetPolicy status.telemetry)",
                        ", ".join(f"{name} {n}" for name, n in sorted(series.items())))
        else:
            log.info("every series llmfleet reads carries the workload label again")

    def _forecaster(self, interval_s: float) -> SeasonalQuantileForecaster:
        # the season must be a whole number of steps: a day rounded to the interval
        season_s = max(1, round(DAY_S / interval_s)) * interval_s
        return SeasonalQuantileForecaster(step_s=interval_s, quantile=self.quantile, season_s=season_s,
                                          recent_window_s=season_s)

    def _tick_one(self, key: str, w: LLMWorkload, declared: Demand | None, view: PlanView, now: float,
                  interval_s: float, policy: StabilityPolicy) -> Decision:
        st = self.workloads.setdefault(key, WorkloadLive())
        tel = self.snapshot.workloads.get(tuple(key.split("/", 1)))
        st.telemetry = tel
        st.observed = tel.arrival_rps if tel is not None else None
        known = st.observed is not None and st.observed.known
        if not known or view.rollout_in_progress or st.settle_until_s is None:
            # the window must fill with samples of the current pods: a new pod's first scrape comes
            # up to one scrape interval after it starts, and rate() needs two samples of it
            st.settle_until_s = now + self.client.window_s + 2 * getattr(self.client, "scrape_interval_s", 0.0)
        # the clock alone cannot tell when a new pod's series starts (service discovery and the
        # first scrape come some seconds after the pod is Ready): Prometheus says which are young
        young = tel.young_series if known and tel is not None else None
        st.young_since_s = (st.young_since_s if st.young_since_s is not None else now) if young else None
        # a series is young for one window after its first scrape; pods replaced faster than that
        # would keep the workload settling, and holding, for good: after YOUNG_SETTLE_WINDOWS the
        # (under-reading) rate is used
        young = young if young and now - st.young_since_s < YOUNG_SETTLE_WINDOWS * self.client.window_s else 0
        settling = known and (now < st.settle_until_s or bool(young))
        st.history.append(st.observed.value if known and not settling else math.nan)
        del st.history[:-HISTORY_STEPS]
        if tel is not None and isinstance(tel.input_lengths, LengthDistribution) \
                and isinstance(tel.output_lengths, LengthDistribution):
            st.lengths = (tel.input_lengths, tel.output_lengths)
        base = st.demand or declared
        if st.state is None:
            # the running plan was made for the declared demand until the first re-plan
            st.state = StabilityState(planned_demand_rps=base.rate_plan_rps if base is not None else 0.0)
        demand: float | UnknownDemand
        if settling:
            st.forecast_rps = None
            st.state = replace(st.state, below_since_s=None, window_peak_rps=0.0, last_tick_s=now)
            st.decision = (Decision(Action.HOLD, "RolloutInProgress", "a Deployment of the workload is rolling out")
                           if view.rollout_in_progress else
                           Decision(Action.HOLD, "Settling", "rate window not yet full of current data ("
                                    + (f"{young} series first scraped inside the {self.client.window_s:g} s window"
                                       if young else f"for {st.settle_until_s - now:.0f} s more") + "); holding"))
            return st.decision
        if not known:
            # this tick's data is unknown: no decision on it, even where the forecaster could still
            # carry an older sample forward
            why = st.observed.unknown.value if st.observed is not None else "workload not in the snapshot"
            demand, st.forecast_rps = UnknownDemand(why), None
        elif isinstance(fc := self._forecaster(interval_s).forecast(st.history, 1), UnknownDemand):
            demand, st.forecast_rps = fc, None
        else:
            demand = st.forecast_rps = fc.provision_rps
            if w.spec.traffic.source == "max" and declared is not None:
                demand = max(demand, declared.rate_plan_rps)  # the declared rate is a floor
        tick = Tick(now_s=now, demand_rps=demand, groups=view.groups, rollout_in_progress=view.rollout_in_progress)
        ready_cap = tick.ready_capacity_rps

        def holds(target_rps: float) -> bool:
            # the new plan is solved for the target; until then the Ready replicas carry it
            return not view.groups or target_rps <= ready_cap

        before = st.state.planned_demand_rps
        previous = st.decision
        decision, new_state = decide(st.state, tick, holds, policy)
        if decision.action == Action.HOLD and (previous is None or _hold_cause(previous) != _hold_cause(decision)):
            log.info("%s: %s (%s): %s", key, decision.action.value, decision.reason, decision.message)
        st.state, st.decision = new_state, decision
        # a re-plan for the rate already planned (Ready replicas short of it: they are coming)
        # changes no input of the solve; rebuilding the mix from this window would
        if decision.action != Action.HOLD and decision.demand_rps is not None \
                and not math.isclose(decision.demand_rps, before, rel_tol=1e-9):
            mean = st.observed.value if st.observed is not None and st.observed.known else None
            if st.lengths is not None:
                st.demand = with_burstiness(observed_demand(decision.demand_rps, *st.lengths, rate_mean_rps=mean),
                                            declared)
            elif base is not None:
                st.demand = with_rate(base, decision.demand_rps, mean)
            st.changes += 1
            log.info("%s: %s (%s): %s", key, decision.action.value, decision.reason, decision.message)
        return decision

    # ------------------------------------------------------------------ for the planner
    def demands(self) -> dict[str, Demand]:
        """key -> the demand in force, for workloads that have re-planned on telemetry."""
        return {k: s.demand for k, s in self.workloads.items() if s.demand is not None}

    def fingerprint(self) -> str:
        """A digest of the demands in force (part of the planner's cache key)."""
        body = {k: [round(d.rate_plan_rps, 9), np.round(d.share, 9).tolist(), np.round(d.input_tokens, 6).tolist(),
                    np.round(d.output_tokens, 6).tolist()] for k, d in sorted(self.demands().items())}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def telemetry_status(self) -> dict | None:
        """``FleetPolicy.status.telemetry`` (``api.models.TelemetryStatus``, camelCase keys) from the
        last successful read, or None before one.

        Returns:
            {"unattributedSeries": metric name -> series count for every name in
            ``CHECKED_METRICS`` (0 where the read found none), "unattributedTargets": up to 20
            "instance namespace/pod", "observedAt": RFC 3339 UTC time of the read, s}.
        """
        u = self.unattributed
        if u is None:
            return None
        return {
            # every checked name, 0 included: the status is written with a JSON merge patch, which
            # merges maps key by key, so a name left out would keep its old count in the object
            "unattributedSeries": {name: u.series.get(name, 0)
                                   for name in sorted({*CHECKED_METRICS, *u.series})},
            "unattributedTargets": list(u.targets),
            "observedAt": datetime.fromtimestamp(u.at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def status(self, key: str, w: LLMWorkload) -> tuple[dict, list[tuple[str, bool | None, str, str]]]:
        """Status fields and conditions (type, status, reason, message) of a live workload.

        ``TelemetryStale`` is True with the Reading's reason when the arrival rate is unknown;
        ``SLOAtRisk`` is True when a group's observed TTFT or ITL at the SLO percentile is above
        the target, Unknown when no group's latency is known (no traffic or no data).
        """
        st = self.workloads.get(key)
        if st is None or w.spec.traffic.source not in LIVE_SOURCES:
            return {}, []
        conds = []
        obs = st.observed
        if obs is None or not obs.known:
            reason = obs.unknown.value if obs is not None else "NotRead"
            detail = obs.detail if obs is not None else "no telemetry read yet"
            conds.append(("TelemetryStale", True, reason,
                          f"arrival rate unknown ({detail}); the plan in force is held, nothing scales down"))
        else:
            conds.append(("TelemetryStale", False, "Fresh", f"arrival rate {obs.value:.3g} req/s"))
        q = w.spec.slo.percentile / 100.0
        ttft, itl = _worst(st.telemetry, "ttft_s", q), _worst(st.telemetry, "itl_s", q)
        label = f"p{w.spec.slo.percentile:g}"
        over = []
        if ttft is not None and ttft > w.spec.slo.ttft:
            over.append(f"TTFT {label} {ttft:.3g}s > {w.spec.slo.ttft:g}s")
        if itl is not None and itl > w.spec.slo.tpot:
            over.append(f"ITL {label} {itl:.3g}s > {w.spec.slo.tpot:g}s")
        if over:
            conds.append(("SLOAtRisk", True, "LatencyAboveTarget", "; ".join(over)))
        elif ttft is None and itl is None:
            conds.append(("SLOAtRisk", None, "LatencyUnknown", "no observed latency (no traffic or no data)"))
        else:
            conds.append(("SLOAtRisk", False, "WithinTarget",
                          f"TTFT {label} {_fmt(ttft)}, ITL {label} {_fmt(itl)} within the SLO"))
        age = st.telemetry.age_s if st.telemetry is not None else None
        fields = {
            "observedDemandRps": round(obs.value, 3) if obs is not None and obs.known else None,
            "forecastDemandRps": round(st.forecast_rps, 3) if st.forecast_rps is not None else None,
            "observedTtftSeconds": round(ttft, 4) if ttft is not None else None,
            "observedItlSeconds": round(itl, 5) if itl is not None else None,
            "telemetryAgeSeconds": round(age.value) if age is not None and age.known else None,
            # DCGM board power of the workload's GPUs (absent where DCGM is not scraped: unknown)
            "observedPowerWatts": (round(st.telemetry.power_watts.value, 1)
                                   if st.telemetry is not None and st.telemetry.power_watts.known else None),
        }
        return fields, conds


def _worst(tel: WorkloadTelemetry | None, attr: str, q: float) -> float | None:
    """Highest known value over groups of ``attr`` at quantile ``q`` (None when none is known)."""
    if tel is None:
        return None
    vals = []
    for g in tel.groups.values():
        r = getattr(g, attr).get(q)
        if r is not None and r.known:
            vals.append(r.value)
    return max(vals) if vals else None


def _fmt(v: float | None) -> str:
    return "unknown" if v is None else f"{v:.3g}s"


def plan_views(assignments: Iterable, live_deps: list[dict], workload_label: str,
               deployment_name: Callable[[str, object], str]) -> dict[str, PlanView]:
    """key -> ``PlanView`` from the cached plan's assignments and the live Deployments.

    A Deployment is rolling out while its controller has not seen its generation, or fewer of its
    replicas are updated or available than it asks for. Group capacity per replica is the plan's
    ``rate_rps / (utilization · replicas)`` for colocated groups; a workload with P/D groups gets
    no capacity figures (its prefill and decode capacities do not add up).
    """
    views: dict[str, PlanView] = {}
    by_name = {(d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in live_deps}
    for d in live_deps:
        md, spec, st = d["metadata"], d.get("spec") or {}, d.get("status") or {}
        key = f"{md.get('namespace')}/{(md.get('labels') or {}).get(workload_label, '')}"
        want = int(spec.get("replicas") or 0)
        rolling = (st.get("observedGeneration") or 0) < (md.get("generation") or 0) \
            or int(st.get("updatedReplicas") or 0) < want or int(st.get("availableReplicas") or 0) < want
        v = views.setdefault(key, PlanView())
        v.rollout_in_progress = v.rollout_in_progress or rolling
    groups: dict[str, list[GroupCapacity]] = {}
    pd: set[str] = set()
    for a in assignments:
        if a.role != "colocated":
            pd.add(a.workload)
            continue
        if a.replicas <= 0 or a.utilization <= 0:
            continue
        ns, name = a.workload.split("/", 1)
        dep = by_name.get((ns, deployment_name(name, a)))
        ready = int(((dep or {}).get("status") or {}).get("availableReplicas") or 0)
        groups.setdefault(a.workload, []).append(GroupCapacity(
            name=f"{a.gpu_type}/tp{a.tp}", replica_capacity_rps=a.rate_rps / (a.utilization * a.replicas),
            desired=a.replicas, ready=ready))
    for key, gs in groups.items():
        if key not in pd:
            views.setdefault(key, PlanView()).groups = tuple(gs)
    return views


def _hold_cause(decision: Decision) -> tuple[str, str | None]:
    """What a hold is logged once for: its reason, and for ``TelemetryUnknown`` also why the
    demand is unknown (its message names the code: PrometheusUnreachable, MissingSeries, ...,
    and has no numbers that change from tick to tick). A renamed metric while Prometheus was
    already unreachable is a new cause an operator must see in the log; the other holds'
    messages carry rates and ages, so they are logged once per reason."""
    return decision.reason, decision.message if decision.reason == "TelemetryUnknown" else None
