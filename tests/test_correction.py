"""Correction factors from observed against predicted latency: convergence, clamp, gate, safety."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmfleet.telemetry.correction import CorrectionKey, CorrectionPolicy, CorrectionTable

KEY = CorrectionKey("meta-llama/Llama-3.1-8B", "H100-SXM", 1, "colocated", "ttft")
P90 = 0.9
ENOUGH = 200  # > ceil(10 / 0.1) = 100 samples a p90 needs
PRED_S = 0.400  # the model's predicted p90 TTFT at the observed load


def feed(table, ratios, key=KEY, samples=ENOUGH):
    return [table.update(key, PRED_S * r, PRED_S, samples, P90) for r in ratios]


def test_constant_30pct_slowdown_converges_within_six_windows():
    table = CorrectionTable()
    # alpha 0.4 in log space: after n windows the factor is 1.3^(1 - 0.6^n); n = 6 gives 1.284
    factors = [u.factor for u in feed(table, [1.3] * 20)]
    assert factors[0] == pytest.approx(1.3 ** 0.4, rel=1e-9)  # applied at once (the safe direction)
    assert all(b >= a for a, b in zip(factors, factors[1:]))  # monotone, never overshoots
    assert factors[5] >= 1.3 / 1.02 and max(factors) <= 1.3 + 1e-9
    assert factors[-1] == pytest.approx(1.3, rel=1e-3)


def test_noisy_slowdown_converges_too():
    rng = np.random.default_rng(0)
    table = CorrectionTable()
    # p90 of >=100 samples: ~±8% window-to-window spread
    feed(table, 1.3 * np.exp(rng.normal(0, 0.08, 40)))
    assert table.factor(KEY) == pytest.approx(1.3, rel=0.08)


def test_factor_stays_clamped():
    table = CorrectionTable()
    feed(table, [4.0] * 15)  # the engine 4x slower than modelled: beyond any drift
    assert table.factor(KEY) == 2.0 and table.clamped(KEY)
    feed(table, [0.1] * 30)  # then 10x faster
    assert table.factor(KEY) == 0.5 and table.clamped(KEY)


def test_single_outlier_barely_moves_it():
    table = CorrectionTable()
    feed(table, [1.0] * 10)
    before = table.factor(KEY)
    u = feed(table, [5.0])[0]  # one window 5x slow (a GC pause, a noisy neighbour)
    assert not u.used and "outlier" in u.reason
    assert table.factor(KEY) == pytest.approx(before, rel=0.02)
    feed(table, [1.0])
    assert table.factor(KEY) == pytest.approx(1.0, rel=0.02)
    feed(table, [0.2])  # one window 5x fast
    assert table.factor(KEY) == pytest.approx(1.0, rel=0.02)


def test_a_real_large_shift_is_followed_one_window_late():
    table = CorrectionTable()
    u = feed(table, [1.8] * 8)
    assert not u[0].used and all(x.used for x in u[1:])
    assert table.factor(KEY) == pytest.approx(1.8, rel=0.05)


def test_faster_observations_apply_only_after_three_consistent_windows():
    table = CorrectionTable()
    updates = feed(table, [0.7] * 12)
    factors = [u.factor for u in updates]
    assert factors[0] == factors[1] == 1.0  # two faster windows: still the model's value
    assert factors[2] < 1.0  # the third confirms it
    assert factors[-1] == pytest.approx(0.7, rel=0.02)
    # a slow window breaks the streak: the next faster one does not apply at once
    table2 = CorrectionTable()
    feed(table2, [0.7, 0.7, 1.05, 0.7, 0.7])
    assert table2.factor(KEY) == 1.0 and table2.states[KEY].faster_streak == 2


def test_no_update_from_empty_or_thin_or_unknown_windows():
    table = CorrectionTable()
    for samples in (0, 99):
        u = table.update(KEY, PRED_S * 1.5, PRED_S, samples, P90)
        assert not u.used and f"{samples} samples < 100" in u.reason
    u = table.update(KEY, None, PRED_S, ENOUGH, P90)
    assert not u.used and "unknown" in u.reason
    u = table.update(KEY, float("nan"), PRED_S, ENOUGH, P90)
    assert not u.used
    assert table.factor(KEY) == 1.0 and table.states[KEY].windows == 0
    # a p99 needs 1000 samples
    assert CorrectionPolicy().min_samples(0.99) == 1000


def test_keys_are_independent():
    table = CorrectionTable()
    itl = CorrectionKey(KEY.model, KEY.gpu, KEY.tp, KEY.role, "itl")
    feed(table, [1.3] * 10)
    assert table.factor(itl) == 1.0
    assert table.factor(CorrectionKey(KEY.model, "L40S", 1, "decode", "itl")) == 1.0


def test_round_trip_through_a_status_dict():
    table = CorrectionTable()
    feed(table, [1.3] * 4)
    feed(table, [0.8] * 2, key=CorrectionKey(KEY.model, "L4", 2, "decode", "itl"))
    data = json.loads(json.dumps(table.to_dict()))  # what a status field holds
    row = data["corrections"][0]
    assert set(row) >= {"model", "gpu", "tp", "role", "metric", "factor", "windows", "clamped", "lastReason"}
    back = CorrectionTable.from_dict(data)
    assert back.states.keys() == table.states.keys()
    for k in table.states:
        assert back.factor(k) == pytest.approx(table.factor(k), rel=1e-6)
        assert back.states[k].faster_streak == table.states[k].faster_streak
    # the restored table goes on where the first left off
    assert feed(back, [1.3])[0].factor == pytest.approx(feed(table, [1.3])[0].factor, rel=1e-6)


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="CorrectionKey.role"):
        CorrectionKey("m", "H100-SXM", 1, "router", "ttft")
    with pytest.raises(ValueError, match="CorrectionKey.tp"):
        CorrectionKey("m", "H100-SXM", 0, "decode", "itl")
    table = CorrectionTable()
    with pytest.raises(ValueError, match="predicted_s"):
        table.update(KEY, 0.5, 0.0, ENOUGH, P90)
    with pytest.raises(ValueError, match="observed_s"):
        table.update(KEY, -1.0, 0.5, ENOUGH, P90)
    with pytest.raises(ValueError, match="percentile"):
        table.update(KEY, 0.5, 0.5, ENOUGH, 90)
    with pytest.raises(ValueError, match="alpha"):
        CorrectionPolicy(alpha=0.0)
    with pytest.raises(ValueError, match=r"corrections\[0\].factor"):
        CorrectionTable.from_dict({"corrections": [{"model": "m", "gpu": "g", "tp": 1, "role": "decode",
                                                     "metric": "itl", "factor": 7.0, "estimate": 1.0}]})
    with pytest.raises(ValueError, match=r"corrections\[0\].estimate: missing"):
        CorrectionTable.from_dict({"corrections": [{"model": "m", "gpu": "g", "tp": 1, "role": "decode",
                                                     "metric": "itl", "factor": 1.0}]})
