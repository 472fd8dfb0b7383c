"""Performance under a power cap (llmfleet.perf.powercap), checked against published cap figures."""

import numpy as np
import pytest

from bench.powercap_accuracy import RTX_3090, clock_lock_decode_slowdown, predicted, published, splitwise_ratios
from llmfleet.catalog.gpus import get_gpu, gpu_catalog
from llmfleet.catalog.models import resolve_model
from llmfleet.perf.capacity import decode_capacity_rps, prefill_capacity_rps, replica_curves
from llmfleet.perf.power import gpu_power_watts, model_utilisation
from llmfleet.perf.powercap import (cap_levels, capped_draw_watts, capped_perf_params, check_cap, clock_fraction,
                                    decode_slowdown, power_range, prefill_slowdown)
from llmfleet.perf.steptime import default_params, prefill_time_s

from conftest import PROFILE_DATA

GPUS = list(gpu_catalog().values())
H100 = get_gpu("H100-SXM")


@pytest.mark.parametrize("gpu", GPUS, ids=lambda g: g.name)
def test_lower_cap_is_never_faster(gpu):
    r = power_range(gpu)
    caps = np.linspace(r.max_watts, r.min_watts or 0.3 * r.default_watts, 200)
    pre = prefill_slowdown(gpu, caps)
    assert (np.diff(pre) >= -1e-12).all() and pre[0] == 1.0
    for u in (0.0, 0.3, 1.0, 3.0):
        draw = float(gpu_power_watts(gpu, "decode", u))
        dec = decode_slowdown(gpu, caps, draw, u)
        assert (np.diff(dec) >= -1e-12).all() and (dec >= 1.0).all()


@pytest.mark.parametrize("gpu", GPUS, ids=lambda g: g.name)
def test_decode_is_unaffected_by_any_cap_at_or_above_its_draw(gpu):
    u = np.array([0.0, 0.05, 0.2, 1.0, 5.0])
    draw = gpu_power_watts(gpu, "decode", u)
    for cap in cap_levels(gpu):
        above = cap >= draw
        assert (decode_slowdown(gpu, cap, draw, u)[above] == 1.0).all()
        # and its draw at load is the prediction, the cap only clips it
        assert (capped_draw_watts(draw, cap) == np.minimum(draw, cap)).all()


def test_memory_bound_decode_barely_slows_even_below_its_draw():
    """Below its draw the clock falls, but a memory-bound step's compute term stays hidden: at u 0.05
    a decode step drawing 500 W on an H100 loses nothing at the 200 W minimum, while a step at the
    ridge (u 1.5) does."""
    assert float(decode_slowdown(H100, 200.0, 500.0, 0.05)) == 1.0
    assert float(decode_slowdown(H100, 200.0, 500.0, 1.5)) > 1.2
    # 2501.08219: 180 of 2842 MHz costs decode 1-6 % end to end; the roofline step loses < 6 %
    assert clock_lock_decode_slowdown() < 1.06


def test_prefill_at_70_percent_cap_slows_by_double_digits():
    """The issue's sources: double-digit prefill losses at about a 70 % cap. From k = 3 and the 0.10
    static share alone: ((0.7 - 0.1) / 0.9)^(-1/3) = 1.145 on every GPU whose prefill draws its TDP."""
    expected = ((0.7 - 0.1) / 0.9) ** (-1 / 3)
    for gpu in GPUS:
        assert float(prefill_slowdown(gpu, 0.7 * gpu.tdp_watts)) == pytest.approx(expected, rel=1e-9)
    assert 1.10 < expected < 1.20


def test_reproduces_splitwise_power_capped_h100_within_5_percent():
    """Splitwise (ISCA 2024) HHcap: H100 prompt phases x 1.30 and token phases x 1.00 at 50 % of TDP
    (the h100-80gb-pcap rows of data/profiles/splitwise_perf_model.csv). Tolerance 5 %: Splitwise
    states 1.3, rounded to two digits, and the cap is stated, not measured, per GPU."""
    prompt, token, rows = splitwise_ratios(str(PROFILE_DATA / "splitwise_perf_model.csv"))
    assert rows >= 2000 and prompt == pytest.approx(1.30, abs=0.005) and token == pytest.approx(1.0, abs=0.005)
    assert float(prefill_slowdown(H100, 350.0)) == pytest.approx(prompt, rel=0.05)
    # a token phase drawing less than 350 W (Splitwise A100 Llama-2-70B TP 8: 0.44 TDP) loses nothing
    assert float(decode_slowdown(H100, 350.0, 0.44 * H100.tdp_watts, 0.1)) == pytest.approx(token, abs=0.005)


def test_reproduces_measured_rtx3090_prefill_at_180w_within_5_percent():
    """club-3090 issue #104: 1,641.64 prefill tok/s at the default limit (drawing 300.78 W) and
    1,317.85 at a 180 W cap: x 1.246. Predicted from the two constants alone: x 1.224."""
    assert float(prefill_slowdown(RTX_3090, 180.0, 300.78)) == pytest.approx(1641.64 / 1317.85, rel=0.05)


def test_every_in_domain_published_case_within_6_percent():
    """bench/powercap_accuracy.py's table: in-domain median |error| 0.8 %, largest 5.0 % (Splitwise
    server cap read literally), bound with one point of margin. The out-of-domain consumer-card
    cases (<60 % of TDP) are predicted too fast, which the bench shows."""
    cases = published(str(PROFILE_DATA / "splitwise_perf_model.csv"))
    errs = [abs(predicted(p) / p.slowdown - 1) for p in cases if p.in_domain]
    assert len(errs) >= 8 and max(errs) < 0.06
    assert all(predicted(p) < p.slowdown for p in cases if not p.in_domain)


@pytest.mark.parametrize("gpu", GPUS, ids=lambda g: g.name)
def test_cap_levels_are_default_85_70_and_minimum_within_range(gpu):
    r = power_range(gpu)
    levels = cap_levels(gpu)
    assert levels == sorted(levels, reverse=True) and len(set(levels)) == len(levels)
    assert levels[0] == r.default_watts
    assert levels[1] == pytest.approx(0.85 * r.default_watts) and levels[2] == pytest.approx(0.70 * r.default_watts)
    if r.min_watts is not None:
        assert levels[-1] == r.min_watts and len(levels) == 4
    else:
        assert len(levels) == 3
    for cap in levels:
        assert check_cap(gpu, cap) == cap


def test_levels_below_the_minimum_are_clipped_to_it():
    """A GPU whose 70 % level falls below its minimum gets the minimum in its place, once."""
    import dataclasses
    tight = dataclasses.replace(H100, name="tight", min_power_cap_watts=560.0)
    assert cap_levels(tight) == [700.0, 595.0, 560.0]


@pytest.mark.parametrize("bad", [150.0, 701.0, 0.0, -5.0, float("nan"), "lots"])
def test_out_of_range_cap_names_the_gpu_and_its_range(bad):
    with pytest.raises(ValueError) as e:
        check_cap(H100, bad)
    msg = str(e.value)
    assert "H100-SXM" in msg and "200-700 W" in msg and "default 700 W" in msg


def test_gpu_without_known_minimum_accepts_any_positive_cap_up_to_its_maximum():
    b200 = get_gpu("B200")
    assert check_cap(b200, 100.0) == 100.0
    with pytest.raises(ValueError, match="B200.*minimum unknown"):
        check_cap(b200, 1001.0)


def test_capped_params_scale_replica_curves_and_capacity():
    """The capacity model under a cap, through PerfParams alone: prompts slow, decode-bound rates do not."""
    m = resolve_model("meta-llama/Llama-3.1-8B")
    p = default_params()
    capped = capped_perf_params(p, H100, 490.0)
    assert capped_perf_params(p, H100, 700.0) is p
    assert capped.eff_compute == pytest.approx(p.eff_compute / float(prefill_slowdown(H100, 490.0)))
    t, tc = prefill_time_s(m, H100, 1, 8000, p=p), prefill_time_s(m, H100, 1, 8000, p=capped)
    assert 1.05 < tc / t <= float(prefill_slowdown(H100, 490.0)) + 1e-9
    inp, out = np.array([1000.0, 4000.0]), np.array([200.0, 200.0])
    base, cap = replica_curves(m, H100, 1, inp, out, 90, p), replica_curves(m, H100, 1, inp, out, 90, capped)
    assert (cap.prefill_s >= base.prefill_s).all() and (cap.prefill_s > base.prefill_s).any()
    assert (cap.rate <= base.rate + 1e-12).all()
    pf = prefill_capacity_rps(m, H100, 1, inp, 2.0, 90, np.zeros(2), 0.05, p)
    pfc = prefill_capacity_rps(m, H100, 1, inp, 2.0, 90, np.zeros(2), 0.05, capped)
    assert (pfc < pf).all()
    # a decode-only replica at its own decode draw (below the cap) keeps its capacity
    draw = float(gpu_power_watts(H100, "decode", model_utilisation(m, H100, 64)))
    assert draw < 595.0
    dec = capped_perf_params(p, H100, 595.0, draw_watts=draw)
    assert dec is p
    assert (decode_capacity_rps(m, H100, 1, inp, out, 0.05, 90, dec) == decode_capacity_rps(m, H100, 1, inp, out, 0.05, 90, p)).all()
    with pytest.raises(ValueError, match="H100-SXM"):
        capped_perf_params(p, H100, 150.0)


def test_clock_fraction_follows_the_cube_law():
    """x^3 = (C - P_static) / (draw - P_static), P_static = 70 W on a 700 W H100."""
    x = float(clock_fraction(H100, 385.0, 700.0))
    assert x**3 == pytest.approx((385 - 70) / (700 - 70))
    assert float(clock_fraction(H100, 60.0, 700.0)) == 0.0
    assert np.isinf(prefill_slowdown(H100, 60.0))
