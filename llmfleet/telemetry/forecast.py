"""Demand forecast over the re-plan horizon, at a quantile.

The fleet is provisioned for a high quantile of the demand forecast over the next re-plan
horizon, not for the last sample: HARMONY (Luo et al., "Adaptive Two-Stage Cloud Resource
Scaling via Hierarchical Multi-Indicator Forecasting and Bayesian Decision-Making", arXiv
2408.01000) provisions from the full predictive distribution. A point forecast is under the
actual about half the time (the last sample covered 51% of ServeGen's held-back windows,
``bench/forecast_accuracy.py``).

Two forecasters share one interface, ``forecast(history, horizon_steps) -> Forecast | UnknownDemand``:

- ``SeasonalQuantileForecaster`` (the default): a robust empirical one. The recent level is the
  median of the last few known samples; the forecast is that level times the ``quantile`` of the
  ratios "rate ``k`` steps later / level at the time" seen at the same time of day on previous
  days (a day's profile) and at every step of the recent window. Medians and empirical
  quantiles, so one spike or one gap does not move it, and the quantile is calibrated on the
  series' own history rather than on a Gaussian assumption.
- ``StateSpaceForecaster``: statsmodels' ``UnobservedComponents`` on log rates (local level +
  AR(1) + daily trigonometric seasonality), parameters fitted by maximum likelihood, forecast
  quantile from the Kalman filter's forecast variance with the standard score taken from the
  empirical distribution of its own one-step standardised errors (heavier-tailed than Gaussian
  on real traffic).

**Unknown samples.** A history is a sequence of rates, req/s, one per step; ``None``, ``NaN``,
``UnknownDemand`` and unknown telemetry ``Reading``s mark steps whose rate is not known (a
failed or empty Prometheus query, stale data). They are never read as 0: the seasonal forecaster skips them (a ratio needs a known level and a
known later rate), and the Kalman filter of the state-space model skips its update at such steps
(its forecast variance grows instead). When none of the last ``level_steps`` samples is known,
both return ``UnknownDemand``: the current level cannot be told, so nothing may act on the forecast
(the stability rules then hold the fleet as it is).

Shapes and units: histories are 1-D, oldest first, one sample per ``step_s`` seconds, req/s.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

DAY_S = 86400.0
"""length of the daily season, s: LLM traffic follows the day (ServeGen's 14-day Bailian rates)"""

DEFAULT_QUANTILE = 0.9
"""demand quantile provisioned for; 0.9 matches the peak quantile the planner already provisions
traced demand at (``llmfleet.workload.demand.demand_from_trace``)"""

FLOOR_RPS = 0.01
"""rate added before taking ratios or logs, req/s: ratios stay finite when a series is idle (0),
and below one request per 100 s a forecast's relative error does not matter to a fleet"""


@dataclass(frozen=True)
class UnknownDemand:
    """A demand that is not known (no data, stale data, a failed query): never zero.

    (``llmfleet.telemetry.reading.Unknown`` is the reason code of one Prometheus reading; this is
    the forecast-level result, carrying a human reason.)

    Attributes:
        reason: why it is unknown, for logs and status conditions (never holds query text or
            secrets).
    """

    reason: str

    def __bool__(self):
        # ``if forecast:`` must not silently treat unknown as "no demand": make the caller choose
        raise TypeError("UnknownDemand has no truth value: test isinstance(x, UnknownDemand)")


def is_unknown(value: object) -> bool:
    """True for an unknown sample: ``None``, ``NaN``, ``UnknownDemand``, or a telemetry
    ``Reading`` (``llmfleet.telemetry.reading``) that is not known."""
    if value is None or isinstance(value, UnknownDemand):
        return True
    if hasattr(value, "known") and hasattr(value, "value"):  # a Reading, duck-typed
        return not value.known
    return isinstance(value, float) and math.isnan(value)


def as_rates(history: Sequence[float | None | UnknownDemand] | np.ndarray, name: str = "history") -> np.ndarray:
    """The history as a float array, unknown samples as NaN.

    Args:
        history: rates, req/s, oldest first; ``None``/``NaN``/``UnknownDemand``/unknown ``Reading`` for unknown steps.
        name: how error messages name the series.

    Returns:
        shape (n,), float64, NaN where unknown.

    Raises:
        ValueError: a sample is negative, infinite or not a number (names the index).
    """
    if isinstance(history, np.ndarray) and history.dtype.kind in "fiu":  # fast path, same checks
        if history.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D series of rates, got shape {history.shape}")
        out = np.asarray(history, dtype=float)
        bad = np.flatnonzero(np.isinf(out) | (out < 0))
        if len(bad):
            raise ValueError(f"{name}[{bad[0]}]: a rate must be finite and >= 0 req/s, got {out[bad[0]]}")
        return out
    out = np.empty(len(history), dtype=float)
    for i, v in enumerate(history):
        if is_unknown(v):
            out[i] = np.nan
            continue
        if hasattr(v, "known") and hasattr(v, "value"):  # a known Reading
            v = v.value
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name}[{i}]: expected a rate in req/s, None or UnknownDemand, got {type(v).__name__}") from None
        if math.isnan(f):
            out[i] = np.nan
        elif not math.isfinite(f) or f < 0:
            raise ValueError(f"{name}[{i}]: a rate must be finite and >= 0 req/s, got {f}")
        else:
            out[i] = f
    return out


@dataclass(frozen=True)
class Forecast:
    """A demand forecast at one quantile.

    Attributes:
        quantile: the quantile q of each step's predictive distribution, in (0, 1).
        step_s: length of one step, s.
        per_step_rps: shape (horizon_steps,), the q-quantile of the rate in each coming step,
            req/s.
        method: which forecaster produced it (and any fallback it took), for status.
    """

    quantile: float
    step_s: float
    per_step_rps: tuple[float, ...]
    method: str

    @property
    def provision_rps(self) -> float:
        """The rate to provision the whole horizon for: the largest step quantile, req/s."""
        return max(self.per_step_rps)


def _check_common(step_s: float, quantile: float, season_s: float) -> int:
    if not (math.isfinite(step_s) and step_s > 0):
        raise ValueError(f"step_s: must be > 0 seconds, got {step_s}")
    if not (0.0 < quantile < 1.0):
        raise ValueError(f"quantile: must be in (0, 1), got {quantile}")
    season_steps = season_s / step_s
    if not (season_steps >= 1 and abs(season_steps - round(season_steps)) < 1e-9):
        raise ValueError(f"season_s: must be a whole number of steps of {step_s} s, got {season_s}")
    return int(round(season_steps))


def _check_horizon(horizon_steps: int) -> None:
    if not isinstance(horizon_steps, int) or horizon_steps < 1:
        raise ValueError(f"horizon_steps: must be an integer >= 1, got {horizon_steps!r}")


def _steps(seconds: float, step_s: float, field: str) -> int:
    n = int(round(seconds / step_s))
    if n < 1:
        raise ValueError(f"{field}: must be at least one step ({step_s} s), got {seconds} s")
    return n


def _stale(x: np.ndarray, level_steps: int) -> UnknownDemand | None:
    if len(x) == 0 or np.all(np.isnan(x[-level_steps:])):
        return UnknownDemand(f"no known rate in the last {level_steps} steps")
    return None


class SeasonalQuantileForecaster:
    """Robust seasonal quantile: recent level × empirical quantile of past k-step ratios.

    For a forecast made at step t for step t + k − 1 (k = 1..horizon), the ratio samples are
    ``(x[s + k − 1] + floor) / (level(s) + floor)`` for origins s at the same time of day on each
    of the previous ``seasonal_days`` days (± ``phase_halfwidth_s`` around it) and for every origin
    in the last ``recent_window_s``; ``level(s)`` is the median of the known samples among the
    ``level_steps`` steps before s. The forecast is ``(level(t) + floor) · Q_q(ratios) − floor``.

    Defaults (chosen on ServeGen days 7-9, reported on days 10-13 by ``bench/forecast_accuracy.py``;
    600 s steps): a level over 2 steps (the aggregate rate's lag-1 autocorrelation is 0.88, so the
    last samples carry the level; 2 rather than 1 damps a single spike), recent ratios over the
    last day (enough samples, ~144, for a 0.9 quantile), same-phase ratios from 3 days ± 30 min
    (the daily profile; older days added nothing on validation days because day-to-day level
    shifts dominate this trace).

    Args:
        step_s: seconds per history sample.
        quantile: forecast quantile q in (0, 1).
        season_s: season length, s (a whole number of steps).
        level_window_s: window of the level median, s.
        recent_window_s: window of recent origins whose ratios are used, s.
        seasonal_days: how many previous seasons contribute same-phase ratios.
        phase_halfwidth_s: half-width of the same-phase neighbourhood, s (0 for the exact phase).
        min_samples: fewest ratio samples for an empirical quantile; with fewer (a short or
            mostly unknown history) the forecast falls back to the largest known recent rate
            (conservative), and says so in ``Forecast.method``.
        floor_rps: see ``FLOOR_RPS``.

    Raises:
        ValueError: a parameter out of range (names it).
    """

    name = "seasonal-quantile"

    def __init__(self, step_s: float, quantile: float = DEFAULT_QUANTILE, season_s: float = DAY_S,
                 level_window_s: float | None = None, recent_window_s: float = DAY_S,
                 seasonal_days: int = 3, phase_halfwidth_s: float = 1800.0, min_samples: int = 10,
                 floor_rps: float = FLOOR_RPS):
        self.season_steps = _check_common(step_s, quantile, season_s)
        self.step_s = float(step_s)
        self.quantile = float(quantile)
        self.level_steps = _steps(2 * step_s if level_window_s is None else level_window_s, step_s, "level_window_s")
        self.recent_steps = _steps(recent_window_s, step_s, "recent_window_s")
        if seasonal_days < 0:
            raise ValueError(f"seasonal_days: must be >= 0, got {seasonal_days}")
        self.seasonal_days = int(seasonal_days)
        if phase_halfwidth_s < 0:
            raise ValueError(f"phase_halfwidth_s: must be >= 0 s, got {phase_halfwidth_s}")
        self.phase_half = int(round(phase_halfwidth_s / step_s))
        if min_samples < 1:
            raise ValueError(f"min_samples: must be >= 1, got {min_samples}")
        self.min_samples = int(min_samples)
        if not floor_rps > 0:
            raise ValueError(f"floor_rps: must be > 0 req/s, got {floor_rps}")
        self.floor_rps = float(floor_rps)

    def _levels(self, x: np.ndarray) -> np.ndarray:
        """levels[s] = median of the known samples in x[s - level_steps : s]; NaN if none."""
        n, w = len(x), self.level_steps
        windows = np.full((n + 1, w), np.nan)
        for j in range(w):  # column j holds x[s - 1 - j]
            windows[j + 1:, j] = x[: n - j]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows give NaN, as wanted
            return np.nanmedian(windows, axis=1)

    def forecast(self, history, horizon_steps: int) -> Forecast | UnknownDemand:
        """Forecast the next ``horizon_steps`` steps after the end of ``history``.

        Args:
            history: rates, req/s, oldest first, one per ``step_s``; unknown as None/NaN/UnknownDemand.
            horizon_steps: number of coming steps to forecast (the re-plan horizon / step_s).

        Returns:
            ``Forecast`` with one q-quantile per coming step, or ``UnknownDemand`` when none of the last
            ``level_steps`` samples is known.

        Raises:
            ValueError: bad sample (see ``as_rates``) or horizon.
        """
        _check_horizon(horizon_steps)
        x = as_rates(history)
        stale = _stale(x, self.level_steps)
        if stale is not None:
            return stale
        t = len(x)
        levels = self._levels(x)  # levels[s] for origins s = 0..t
        level_now = levels[t]
        fl = self.floor_rps
        per_step, method = [], self.name
        for k in range(1, horizon_steps + 1):
            origins = set(range(max(0, t - self.recent_steps), t - k + 1))
            for d in range(1, self.seasonal_days + 1):
                centre = t - d * self.season_steps
                origins.update(s for s in range(centre - self.phase_half, centre + self.phase_half + 1)
                               if 0 <= s <= t - k)
            s = np.fromiter(sorted(origins), dtype=int)
            ratios = (x[s + k - 1] + fl) / (levels[s] + fl)
            ratios = ratios[np.isfinite(ratios)]  # drops pairs with an unknown level or target
            if len(ratios) >= self.min_samples:
                q = float(np.quantile(ratios, self.quantile))
                per_step.append(max(0.0, (level_now + fl) * q - fl))
            else:
                recent = x[max(0, t - self.recent_steps):]
                per_step.append(float(np.nanmax(recent)))
                method = f"{self.name} (short history: largest recent rate)"
        return Forecast(self.quantile, self.step_s, tuple(per_step), method)


class StateSpaceForecaster:
    """statsmodels ``UnobservedComponents`` on log(rate + floor): level + AR(1) + daily cycle.

    The model is a local level (random walk), an AR(1) deviation (the short memory of traffic:
    bursts decay over tens of minutes) and a trigonometric daily seasonal with ``harmonics``
    harmonics (a smooth day profile, 2·harmonics states instead of one per step). Missing
    samples are native to the Kalman filter. ``fit`` estimates the parameters once (a day or
    more of history; refit daily); ``forecast`` re-runs only the filter over the last
    ``filter_window_s`` with those parameters (milliseconds).

    The q-quantile of step k is ``exp(mean_k + z_q · sd_k) − floor`` where ``sd_k`` is the
    filter's forecast standard deviation and ``z_q`` the empirical q-quantile of the one-step
    standardised forecast errors over the filter window (a conformal correction, recomputed at
    every forecast: on ServeGen days 10-13 the Gaussian z of 1.28 covered 85% where 90% was asked,
    the window's own errors 88-90%). With fewer than ``MIN_ERRORS`` known errors in the window,
    the Gaussian z is used.

    Args:
        step_s: seconds per history sample.
        quantile: forecast quantile q in (0, 1).
        season_s: season length, s (a whole number of steps).
        harmonics: trigonometric harmonics of the daily seasonal (3: a smooth day profile with
            a morning, afternoon and evening feature; on ServeGen's total rate, which is weakly
            diurnal, 0 and 3 harmonics scored within 2% of each other).
        level_window_s: the forecast is ``UnknownDemand`` when no sample in this window is known.
        filter_window_s: history the filter runs over at each forecast, s (3 days).
        floor_rps: see ``FLOOR_RPS``.

    Raises:
        ValueError: a parameter out of range (names it).
    """

    name = "state-space (statsmodels UC)"

    def __init__(self, step_s: float, quantile: float = DEFAULT_QUANTILE, season_s: float = DAY_S,
                 harmonics: int = 3, level_window_s: float | None = None,
                 filter_window_s: float = 3 * DAY_S, floor_rps: float = FLOOR_RPS):
        self.season_steps = _check_common(step_s, quantile, season_s)
        self.step_s = float(step_s)
        self.quantile = float(quantile)
        if harmonics < 0 or 2 * harmonics > self.season_steps:
            raise ValueError(f"harmonics: must be in [0, season steps / 2], got {harmonics}")
        self.harmonics = int(harmonics)
        self.level_steps = _steps(2 * step_s if level_window_s is None else level_window_s, step_s, "level_window_s")
        self.filter_steps = _steps(filter_window_s, step_s, "filter_window_s")
        if not floor_rps > 0:
            raise ValueError(f"floor_rps: must be > 0 req/s, got {floor_rps}")
        self.floor_rps = float(floor_rps)
        self.params: np.ndarray | None = None

    def _model(self, y: np.ndarray):
        from statsmodels.tsa.statespace.structural import UnobservedComponents

        seasonal = [{"period": self.season_steps, "harmonics": self.harmonics}] if self.harmonics else None
        return UnobservedComponents(y, level="local level", autoregressive=1, freq_seasonal=seasonal)

    MIN_ERRORS = 30
    """fewest one-step errors for an empirical 0.9 quantile (3 beyond it); else the Gaussian z"""

    def fit(self, history) -> "StateSpaceForecaster":
        """Estimate the parameters by maximum likelihood on ``history`` (unknowns allowed).

        Raises:
            ValueError: fewer than two seasons of known samples, or a bad sample.
        """
        x = as_rates(history)
        known = int(np.sum(~np.isnan(x)))
        if known < 2 * self.season_steps:
            raise ValueError(f"history: fitting needs at least two seasons ({2 * self.season_steps} known "
                             f"steps), got {known}")
        y = np.log(x + self.floor_rps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # statsmodels' convergence chatter; the result is checked below
            res = self._model(y).fit(disp=False, maxiter=200)
        if not np.all(np.isfinite(res.params)):
            raise ValueError("history: the state-space model did not converge on this history")
        self.params = np.asarray(res.params)
        return self

    def _z(self, res) -> float:
        z = np.asarray(res.standardized_forecasts_error)[0][res.loglikelihood_burn:]
        z = z[np.isfinite(z)]  # unknown steps have no error
        if len(z) < self.MIN_ERRORS:
            from scipy.stats import norm

            return float(norm.ppf(self.quantile))
        return float(np.quantile(z, self.quantile))

    def forecast(self, history, horizon_steps: int) -> Forecast | UnknownDemand:
        """Forecast the next ``horizon_steps`` steps (see ``SeasonalQuantileForecaster.forecast``).

        Raises:
            RuntimeError: ``fit`` was not called.
            ValueError: bad sample or horizon.
        """
        if self.params is None:
            raise RuntimeError("StateSpaceForecaster.forecast: call fit() first")
        _check_horizon(horizon_steps)
        x = as_rates(history)
        stale = _stale(x, self.level_steps)
        if stale is not None:
            return stale
        y = np.log(x[-self.filter_steps:] + self.floor_rps)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = self._model(y).filter(self.params)
            fc = res.get_forecast(horizon_steps)
        mean = np.asarray(fc.predicted_mean)
        sd = np.sqrt(np.asarray(fc.var_pred_mean))
        per_step = np.maximum(0.0, np.exp(mean + self._z(res) * sd) - self.floor_rps)
        return Forecast(self.quantile, self.step_s, tuple(float(v) for v in per_step), self.name)


class LastValueForecaster:
    """Baseline: the last known sample for every coming step (what a reactive scaler provisions)."""

    name = "last value"

    def __init__(self, step_s: float, quantile: float = DEFAULT_QUANTILE, level_window_s: float | None = None):
        self.step_s, self.quantile = float(step_s), float(quantile)
        self.level_steps = _steps(2 * step_s if level_window_s is None else level_window_s, step_s, "level_window_s")

    def forecast(self, history, horizon_steps: int) -> Forecast | UnknownDemand:
        _check_horizon(horizon_steps)
        x = as_rates(history)
        stale = _stale(x, self.level_steps)
        if stale is not None:
            return stale
        last = float(x[~np.isnan(x)][-1])
        return Forecast(self.quantile, self.step_s, (last,) * horizon_steps, self.name)


class SeasonalNaiveQuantileForecaster:
    """Baseline: the q-quantile of the same step on each of the previous ``days`` days (no level)."""

    name = "seasonal naive quantile"

    def __init__(self, step_s: float, quantile: float = DEFAULT_QUANTILE, season_s: float = DAY_S, days: int = 7):
        self.season_steps = _check_common(step_s, quantile, season_s)
        self.step_s, self.quantile, self.days = float(step_s), float(quantile), int(days)

    def forecast(self, history, horizon_steps: int) -> Forecast | UnknownDemand:
        _check_horizon(horizon_steps)
        x = as_rates(history)
        t, out = len(x), []
        for k in range(1, horizon_steps + 1):
            idx = [t + k - 1 - d * self.season_steps for d in range(1, self.days + 1)]
            v = x[[i for i in idx if i >= 0]]
            v = v[~np.isnan(v)]
            if len(v) == 0:
                return UnknownDemand("no known rate at this time of day on previous days")
            out.append(float(np.quantile(v, self.quantile)))
        return Forecast(self.quantile, self.step_s, tuple(out), self.name)


# --- accuracy on held-back data ---------------------------------------------------------------

def pinball_loss(actual: np.ndarray, predicted: np.ndarray, quantile: float) -> float:
    """Mean pinball (quantile) loss, in the units of the inputs: the proper score of a quantile.

    ``q·(a − p)`` where the actual exceeds the forecast, ``(1 − q)·(p − a)`` where it does not.
    """
    d = np.asarray(actual, float) - np.asarray(predicted, float)
    return float(np.mean(np.maximum(quantile * d, (quantile - 1.0) * d)))


@dataclass(frozen=True)
class Accuracy:
    """Forecast accuracy over held-back steps.

    Attributes:
        method: forecaster name.
        horizon_steps: steps ahead the scored forecasts were made.
        n: scored (origin, step) pairs with a known actual and a forecast.
        n_unknown: pairs whose forecast was ``UnknownDemand`` (not scored).
        pinball_rel: pinball loss / mean actual rate (dimensionless; lower is better).
        coverage: share of scored steps whose actual rate ≤ the forecast (target: the quantile).
        over_provision_rel: mean of max(forecast − actual, 0) / mean actual rate: capacity held
            above what the step needed.
        under_provision_rel: mean of max(actual − forecast, 0) / mean actual rate.
    """

    method: str
    horizon_steps: int
    n: int
    n_unknown: int
    pinball_rel: float
    coverage: float
    over_provision_rel: float
    under_provision_rel: float


def evaluate(forecaster, series, start: int, stop: int | None = None, horizon_steps: int = 1) -> Accuracy:
    """Rolling-origin evaluation: at every origin t in [start, stop − horizon], forecast from
    ``series[:t]`` and score each coming step against the actual.

    Every step k = 1..horizon of every origin is scored (so each held-back step is scored
    ``horizon`` times, at each lead time). Steps whose actual is unknown are skipped.

    Raises:
        ValueError: ``start`` leaves no history or no step to score.
    """
    x = as_rates(series, "series")
    stop = len(x) if stop is None else stop
    if not (0 < start <= stop - horizon_steps <= len(x) - horizon_steps):
        raise ValueError(f"start/stop: need 0 < start <= stop - horizon_steps, got {start}, {stop}, {horizon_steps}")
    actual, pred, n_unknown = [], [], 0
    for t in range(start, stop - horizon_steps + 1):
        f = forecaster.forecast(x[:t], horizon_steps)
        for k in range(horizon_steps):
            a = x[t + k]
            if np.isnan(a):
                continue
            if isinstance(f, UnknownDemand):
                n_unknown += 1
                continue
            actual.append(a)
            pred.append(f.per_step_rps[k])
    actual_a, pred_a = np.array(actual), np.array(pred)
    scale = float(np.mean(actual_a)) if len(actual_a) else float("nan")
    q = forecaster.quantile
    return Accuracy(
        method=forecaster.name, horizon_steps=horizon_steps, n=len(actual_a), n_unknown=n_unknown,
        pinball_rel=pinball_loss(actual_a, pred_a, q) / scale,
        coverage=float(np.mean(actual_a <= pred_a)),
        over_provision_rel=float(np.mean(np.maximum(pred_a - actual_a, 0.0))) / scale,
        under_provision_rel=float(np.mean(np.maximum(actual_a - pred_a, 0.0))) / scale,
    )


# --- ServeGen rates ---------------------------------------------------------------------------

SERVEGEN_WINDOW_S = 600.0
"""ServeGen's rate files hold one row per 600 s window (shared/data/README.md)"""


def load_servegen_rates(folder, clients: Sequence[int] | None = None) -> np.ndarray:
    """Total request rate over ServeGen clients, one value per 600 s window, req/s.

    Each ``chunk-<client>-trace.csv`` (no header) holds rows ``window_start_s, rate_req_per_s,
    cv, arrival_family, param1, param2`` (alibaba/ServeGen, data/language/m-large; see
    shared/data/README.md). All files must share the same windows.

    Args:
        folder: the ``servegen_language_m_large`` folder.
        clients: client ids to sum (default: every ``chunk-*-trace.csv`` there).

    Returns:
        shape (n_windows,), the summed rate per window, req/s.

    Raises:
        ValueError: no file, a malformed row, or files with different windows (names the file).
    """
    import csv
    from pathlib import Path

    folder = Path(folder)
    if clients is None:
        paths = sorted(folder.glob("chunk-*-trace.csv"))
    else:
        paths = [folder / f"chunk-{int(c)}-trace.csv" for c in clients]
    if not paths:
        raise ValueError(f"{folder}: no ServeGen chunk-*-trace.csv files")
    total, starts = None, None
    for path in paths:
        s, r = [], []
        with open(path, newline="") as fh:
            for line_no, row in enumerate(csv.reader(fh), start=1):
                try:
                    s.append(float(row[0]))
                    r.append(float(row[1]))
                except (IndexError, ValueError):
                    raise ValueError(f"{path.name}: line {line_no}: expected window_start_s, rate_req_per_s") from None
        s_a, r_a = np.array(s), np.array(r)
        if np.any(~np.isfinite(r_a)) or np.any(r_a < 0):
            raise ValueError(f"{path.name}: rate_req_per_s must be finite and >= 0")
        if starts is None:
            starts, total = s_a, r_a.copy()
            if len(s_a) < 2 or not np.allclose(np.diff(s_a), SERVEGEN_WINDOW_S):
                raise ValueError(f"{path.name}: windows are not consecutive {SERVEGEN_WINDOW_S:.0f} s windows")
        elif len(s_a) != len(starts) or not np.array_equal(s_a, starts):
            raise ValueError(f"{path.name}: windows differ from the other files'")
        else:
            total += r_a
    return total
