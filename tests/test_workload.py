import numpy as np
import pandas as pd
import pytest

from llmfleet.api.loader import load_fleet
from llmfleet.api.models import TrafficSpec
from llmfleet.solver.problem import build_problem
from llmfleet.workload.demand import (INPUT_LENGTH_PROBS, arrival_dispersion, arrival_followers, demand_from_spec,
                                      demand_from_trace, histogram, input_length_quantiles, rate_levels, windowed_rates)
from llmfleet.workload.traces import TraceError, load_trace

from conftest import EXAMPLES


@pytest.fixture(scope="module")
def azure():
    return load_trace(EXAMPLES / "traces" / "azure_llm_2023_conv.csv", "azure")


def test_azure_sample_matches_published_statistics(azure):
    # shared/data/README.md: 19,366 rows, 5.5 req/s mean, input p50/p90/p99 = 1020/2734/4142, output 129/424/601
    assert len(azure) == 19366
    assert len(azure) / azure["arrival_s"].max() == pytest.approx(5.5, abs=0.1)
    assert np.percentile(azure["input_tokens"], [50, 90, 99]) == pytest.approx([1020, 2734, 4142], rel=0.01)
    assert np.percentile(azure["output_tokens"], [50, 90, 99]) == pytest.approx([129, 424, 601], rel=0.01)
    assert azure["arrival_s"].is_monotonic_increasing and azure["arrival_s"].iloc[0] == 0


def test_mooncake_trace(shared_data):
    t = load_trace(shared_data / "traces" / "mooncake_fast25_synthetic.jsonl", "mooncake")
    assert len(t) == 3993
    # README: input p50 11.6k tokens
    assert np.median(t["input_tokens"]) == pytest.approx(11600, rel=0.05)


def test_burstgpt_schema_and_failed_requests(tmp_path):
    f = tmp_path / "burst.csv"
    f.write_text(
        "Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "10.5,1,2.0,ChatGPT,300,120,420,Conversation log\n"
        "5.0,2,1.0,GPT-4,800,0,800,API log\n"  # a failed request: no response
        "12.0,3,3.0,ChatGPT,50,500,550,Conversation log\n"
    )
    t = load_trace(f, "burstgpt")
    assert t["input_tokens"].tolist() == [300, 50]
    assert t["output_tokens"].tolist() == [120, 500]
    assert t["arrival_s"].tolist() == [0.0, 1.5]


def test_timestamps_in_whole_seconds_are_spread_within_their_second(azure, shared_data, tmp_path):
    # BurstGPT's Timestamp is whole seconds. The Azure conversation trace written so (floored,
    # 5.5 req/s: most seconds hold several requests) would read as clumps of simultaneous
    # requests; spread within each second, it has the clump mates of the trace as recorded.
    floored = np.floor(azure["arrival_s"].to_numpy())
    f = tmp_path / "burst.csv"
    pd.DataFrame({"Timestamp": floored, "Session ID": 0, "Elapsed time": 1.0, "Model": "ChatGPT",
                  "Request tokens": azure["input_tokens"], "Response tokens": azure["output_tokens"],
                  "Total tokens": 0, "Log Type": "Conversation log"}).to_csv(f, index=False)
    t = load_trace(f, "burstgpt")
    assert t.attrs["spread_tick_s"] == 1.0
    assert len(t) == len(azure) and sorted(t["input_tokens"]) == sorted(azure["input_tokens"])
    assert t["arrival_s"].is_monotonic_increasing and t["arrival_s"].iloc[0] == 0
    recorded = arrival_followers(azure["arrival_s"].to_numpy(), 0.01)
    assert arrival_followers(floored, 0.01) > 1.0 > 0.05 > recorded  # floored: clumps of whole seconds
    assert arrival_followers(t["arrival_s"].to_numpy(), 0.01) == pytest.approx(recorded, abs=0.03)
    # each request stays within a tick of its second (the spread moves none across more)
    assert np.abs(t["arrival_s"].to_numpy() - np.sort(floored - floored[0])).max() < 1.0
    assert load_trace(f, "burstgpt")["arrival_s"].equals(t["arrival_s"])  # seeded: the same every time
    # the plan says so: the example fleet with its chat trace in whole seconds
    fleet = tmp_path / "fleet"
    (fleet / "traces").mkdir(parents=True)
    f.rename(fleet / "traces" / "burst.csv")
    for doc in EXAMPLES.glob("*.yaml"):
        text = doc.read_text().replace("path: traces/azure_llm_2023_conv.csv", "path: traces/burst.csv")
        (fleet / doc.name).write_text(text.replace("format: azure", "format: burstgpt"))
    notes = build_problem(load_fleet([fleet])).notes
    assert [n for n in notes if "spread" in n] == [
        "default/chat-8b: trace timestamps are whole multiples of 1 s and some requests share one: arrivals spread "
        "uniformly within each 1 s (seeded), else they would be planned and replayed as clumps"]
    # Mooncake's milliseconds are fine enough: kept as they are (11 shared timestamps and all)
    mc = load_trace(shared_data / "traces" / "mooncake_fast25_synthetic.jsonl", "mooncake")
    assert "spread_tick_s" not in mc.attrs and int((mc["arrival_s"].diff() == 0).sum()) == 11
    # whole seconds no two requests share may be the real spacing: kept
    regular = tmp_path / "regular.csv"
    regular.write_text("timestamp,input_tokens,output_tokens\n" + "".join(f"{k},100,10\n" for k in range(20)))
    assert load_trace(regular, "csv")["arrival_s"].tolist() == [float(k) for k in range(20)]


def test_an_unchanged_trace_is_read_once_and_an_edited_one_again(azure, tmp_path, monkeypatch):
    # the operator asks for a trace-declared workload's demand on every telemetry tick and
    # re-plan; a big trace took seconds to read each time
    from llmfleet.api.loader import ManifestError
    from llmfleet.solver import problem
    reads = []
    real = problem.load_trace
    monkeypatch.setattr(problem, "load_trace", lambda path, fmt: reads.append(path) or real(path, fmt))
    (tmp_path / "traces").mkdir()
    f = tmp_path / "traces" / "t.csv"
    half = azure[azure["arrival_s"] < 1800]
    pd.DataFrame({"timestamp": half["arrival_s"], "input_tokens": half["input_tokens"],
                  "output_tokens": half["output_tokens"]}).to_csv(f, index=False)
    w = next(w for w in load_fleet([EXAMPLES]).workloads if w.spec.traffic.trace is not None)
    w = w.model_copy(update={"spec": w.spec.model_copy(update={"traffic": w.spec.traffic.model_copy(update={
        "trace": w.spec.traffic.trace.model_copy(update={"path": "traces/t.csv", "format": "csv"})})})})
    first = problem.workload_demand(w, tmp_path)
    assert problem.workload_demand(w, tmp_path).rate_mean_rps == first.rate_mean_rps
    assert len(reads) == 1
    # the whole hour written over it: read again, and the rate is the new file's
    pd.DataFrame({"timestamp": azure["arrival_s"], "input_tokens": azure["input_tokens"],
                  "output_tokens": azure["output_tokens"]}).to_csv(f, index=False)
    whole = problem.workload_demand(w, tmp_path)
    assert len(reads) == 2
    assert whole.rate_mean_rps / w.spec.traffic.trace.rate_scale == pytest.approx(
        len(azure) / azure["arrival_s"].max(), rel=1e-3)
    # a broken file is refused each time, and read again once it is fixed
    f.write_text("timestamp,input_tokens,output_tokens\n" + "5,100,10\n" * 30)
    for _ in range(2):
        with pytest.raises(ManifestError, match="trace spans no time"):
            problem.workload_demand(w, tmp_path)
    assert len(reads) == 4
    f.write_text("timestamp,input_tokens,output_tokens\n" + "".join(f"{k},100,10\n" for k in range(30)))
    assert problem.workload_demand(w, tmp_path).rate_mean_rps > 0 and len(reads) == 5


def test_generic_csv_and_missing_column(tmp_path):
    good = tmp_path / "g.csv"
    good.write_text("timestamp,input_tokens,output_tokens\n2,10,5\n1,20,6\n")
    t = load_trace(good, "csv")
    assert t["input_tokens"].tolist() == [20, 10]
    bad = tmp_path / "b.csv"
    bad.write_text("time,input_tokens,output_tokens\n1,2,3\n")
    with pytest.raises(TraceError, match="missing timestamp"):
        load_trace(bad, "csv")
    with pytest.raises(TraceError, match="allowed: azure, mooncake, burstgpt, csv"):
        load_trace(good, "parquet")


def test_demand_from_trace(azure):
    d = demand_from_trace(azure, peak_quantile=0.9, window_s=60)
    assert d.share.sum() == pytest.approx(1.0)
    assert d.rate_mean_rps == pytest.approx(5.53, abs=0.01)
    rates = windowed_rates(azure["arrival_s"].to_numpy(), 60)
    assert d.rate_plan_rps == pytest.approx(np.quantile(rates, 0.9))
    assert d.rate_plan_rps > d.rate_mean_rps  # the trace is bursty: the p90 minute is above the mean
    # bucket means are means of the requests in them: they lie inside the bucket edges
    for i, j in d.buckets():
        assert d.input_edges[i] <= d.input_tokens[i, j] < d.input_edges[i + 1]
    assert d.mean_input_tokens == pytest.approx(azure["input_tokens"].mean())
    # windows far shorter than the gaps between requests (1 ms; spec.traffic.rateWindowSeconds
    # allows it) are mostly empty, and their p90 rate is 0 req/s: the plan keeps the mean rate
    assert np.quantile(windowed_rates(azure["arrival_s"].to_numpy(), 0.001), 0.9) == 0.0
    tiny = demand_from_trace(azure, peak_quantile=0.9, window_s=0.001)
    assert tiny.rate_plan_rps == pytest.approx(d.rate_mean_rps)


def test_demand_from_percentiles_resembles_the_trace_it_summarises(azure):
    spec = TrafficSpec(request_rate_per_second=5.5, input_tokens={"p50": 1020, "p90": 2734, "p99": 4142},
                       output_tokens={"p50": 129, "p90": 424, "p99": 601})
    d = demand_from_spec(spec)
    assert d.share.sum() == pytest.approx(1.0)
    assert d.mean_input_tokens == pytest.approx(azure["input_tokens"].mean(), rel=0.25)
    assert d.mean_output_tokens == pytest.approx(azure["output_tokens"].mean(), rel=0.25)


def test_arrival_dispersion_measures_burstiness_within_the_minute():
    """Index of dispersion of 5-second counts: about 1 for Poisson arrivals whatever their rate,
    about the squared CV of the inter-arrival times for a renewal stream (gamma gaps of CV² 4
    give 4), and minute-to-minute swings of the rate (which the planning quantile covers) do not
    count as burstiness."""
    rng = np.random.default_rng(11)
    poisson = np.cumsum(rng.exponential(0.1, 60_000))
    assert arrival_dispersion(poisson) == pytest.approx(1.0, abs=0.1)
    bursty = np.cumsum(rng.gamma(0.25, 0.4, 60_000))
    assert arrival_dispersion(bursty) == pytest.approx(4.0, rel=0.2)
    # Poisson within each minute, the rate alternating 2 and 20 req/s from one minute to the next
    swings = np.concatenate([m * 60 + np.sort(rng.uniform(0, 60, rng.poisson(60 * (2 if m % 2 else 20))))
                             for m in range(60)])
    assert arrival_dispersion(swings) == pytest.approx(1.0, abs=0.15)
    assert arrival_dispersion(np.array([0.0, 1.0, 2.0])) == 1.0  # shorter than a minute: no estimate


def test_bucket_length_variability():
    """Within a bucket, the variance of the prompt lengths over their squared mean: 0 for one size,
    (50² + 50²) / 2 / 150² for prompts of 100 and 200 tokens (one bucket, [128, 512))."""
    share, mean_in, _, scv = histogram(np.array([150.0, 150.0]), np.array([50.0, 50.0]))
    assert scv[share > 0] == pytest.approx(0.0)
    share, mean_in, _, scv = histogram(np.array([130.0, 270.0]), np.array([50.0, 50.0]))
    assert mean_in[share > 0] == pytest.approx(200.0)
    assert scv[share > 0] == pytest.approx(70.0**2 / 200.0**2)


def test_a_bucket_keeps_its_prompt_lengths_quantiles():
    """``input_length_quantiles``: prompts of 1,001..1,400 tokens (one bucket, [512, 2048)) and
    one of 40,000 ([32768, ...)): the first bucket's median is 1,200.5, its lowest and highest
    lengths 1,001 and 1,400 (probabilities 0 and 1 - 1e-5, within a token of the top); the lone
    prompt's bucket is 40,000 throughout; empty buckets are 0."""
    inp = np.concatenate([np.arange(1001.0, 1401.0), [40000.0]])
    out = np.full(len(inp), 100.0)
    q = input_length_quantiles(inp, out)
    assert q.shape == (6, 5, len(INPUT_LENGTH_PROBS))
    small, large = q[2, 1], q[5, 1]  # outputs of 100 tokens: [32, 128)
    assert small[0] == 1001.0 and small[-1] == pytest.approx(1400.0, abs=1.0)
    assert np.interp(0.5, INPUT_LENGTH_PROBS, small) == pytest.approx(1200.5)
    assert np.all(np.diff(small) >= 0)
    assert np.all(large == 40000.0)
    assert q.sum() == pytest.approx(small.sum() + large.sum())


def test_azure_trace_carries_its_burstiness(azure):
    d = demand_from_trace(azure)
    assert d.arrival_scv >= 1.0 and d.input_scv is not None and (d.input_scv >= 0).all()


def test_rate_levels_keep_the_minutes_a_trace_spends_at_each_load():
    """20 minutes at 2 req/s then 10 at 6 req/s (and a trailing low minute, a partial window):
    the mean of the 30 full minutes is 10/3 req/s, so the levels are 0.6 and 1.8 x the mean,
    holding 2,400 and 3,600 of the 6,000 requests (0.4 and 0.6: the low minutes end exactly at a
    level edge, so no level mixes the two loads), however finely each side is cut."""
    low = np.arange(0.0, 1200.0, 0.5)
    high = 1200.0 + np.arange(0.0, 600.0, 1.0 / 6.0)
    tail = 1800.0 + np.arange(0.0, 59.0, 0.5)
    levels = rate_levels(np.concatenate([low, high, tail]))
    assert sum(share for _, share in levels) == pytest.approx(1.0)
    by_rate = {}
    for rate, share in levels:
        key = min((0.6, 1.8), key=lambda r: abs(r - rate))
        assert rate == pytest.approx(key, rel=0.02)
        by_rate[key] = by_rate.get(key, 0.0) + share
    assert by_rate[0.6] == pytest.approx(0.4, rel=0.02) and by_rate[1.8] == pytest.approx(0.6, rel=0.02)
    assert len(levels) > 2  # the top of the request order is cut finer: 60% of requests in several levels
    assert rate_levels(np.arange(0.0, 90.0)) == ((1.0, 1.0),)  # one full minute: no swing to measure


def test_a_declared_rate_has_one_load_level():
    d = demand_from_spec(TrafficSpec(request_rate_per_second=3.0, input_tokens={"p50": 500, "p90": 2000, "p99": 4000},
                                     output_tokens={"p50": 100, "p90": 400, "p99": 800}))
    assert d.rate_levels == ((1.0, 1.0),)


def test_a_scaled_trace_is_measured_on_the_timeline_it_is_replayed_on(azure):
    """The simulator replays a trace ``rateScale`` times faster (arrival times divided by it,
    ``sim.engine``), so its demand at rateScale 4 is the demand of the trace whose arrival times
    are divided by 4: the same rates, burstiness and one-minute load levels of the replayed
    timeline, not those of the recorded one with the rates multiplied."""
    scaled = demand_from_trace(azure, rate_scale=4.0)
    fast = azure.assign(arrival_s=(azure["arrival_s"] - azure["arrival_s"].min()) / 4.0)
    replayed = demand_from_trace(fast)
    assert scaled.rate_mean_rps == pytest.approx(replayed.rate_mean_rps)
    assert scaled.rate_plan_rps == pytest.approx(replayed.rate_plan_rps)
    assert scaled.arrival_scv == pytest.approx(replayed.arrival_scv)
    assert np.array(scaled.arrival_idc) == pytest.approx(np.array(replayed.arrival_idc))
    assert np.array(scaled.rate_levels) == pytest.approx(np.array(replayed.rate_levels))
    # one replayed minute is four recorded ones: its swings are smaller, its 5-s bursts larger
    recorded = demand_from_trace(azure)
    assert scaled.rate_plan_rps < 4.0 * recorded.rate_plan_rps
    assert scaled.arrival_scv > recorded.arrival_scv


def test_the_burstiness_of_clustered_arrivals_grows_with_the_window():
    """``Demand.arrival_idc``: clusters of 8 requests spread uniformly over 2 s, their starts a
    Poisson stream (a Neyman-Scott process). Over windows much shorter than a cluster the counts
    are nearly Poisson (index of dispersion near 1); over windows much longer they count whole
    clusters, index 8 (the cluster size: variance 8² per cluster over mean 8). Poisson arrivals
    give about 1 at every window. ``arrival_scv_at`` interpolates between the windows measured."""
    rng = np.random.default_rng(5)
    starts = np.cumsum(rng.exponential(1.0, 4000))
    clustered = np.sort((starts[:, None] + rng.uniform(0.0, 2.0, (len(starts), 8))).ravel())
    frame = lambda a: pd.DataFrame({"arrival_s": a, "input_tokens": 500, "output_tokens": 100})  # noqa: E731
    d = demand_from_trace(frame(clustered))
    idc = dict(d.arrival_idc)
    assert idc[0.5] < 3.0 and idc[5.0] > 5.0 and idc[0.5] < idc[1.0] < idc[2.0] < idc[5.0]
    assert d.arrival_scv == pytest.approx(idc[5.0])  # the TPOT side's window, BURST_WINDOW_S
    assert idc[1.0] < d.arrival_scv_at(1.5) < idc[2.0]
    assert d.arrival_scv_at(0.1) == idc[0.5] and d.arrival_scv_at(60.0) == idc[20.0]  # held at the ends
    poisson = demand_from_trace(frame(np.cumsum(rng.exponential(0.125, 32000))))
    assert all(v == pytest.approx(1.0, abs=0.15) for _, v in poisson.arrival_idc)


def test_the_requests_that_follow_one_in_its_clump_are_counted():
    """``Demand.arrival_followers``: clusters of 8 requests spread uniformly over 2 s, their starts
    a Poisson stream. Besides the Poisson part (the rate x the window, taken out), a request meets
    the 7 others of its cluster within τ after it with probability E[min(τ, 2 - x)] / 2 each, x
    uniform on [0, 2]: 7 (τ/2 - τ²/8), 0.341 at 0.1 s and 2.625 at 1 s. Poisson arrivals have none.
    A request kept by a random 30% thinning keeps 30% of its followers
    (``Burstiness.thinned``)."""
    from llmfleet.perf.capacity import Burstiness
    rng = np.random.default_rng(7)
    starts = np.cumsum(rng.exponential(1.0, 12000))
    clustered = np.sort((starts[:, None] + rng.uniform(0.0, 2.0, (len(starts), 8))).ravel())
    frame = lambda a: pd.DataFrame({"arrival_s": a, "input_tokens": 500, "output_tokens": 100})  # noqa: E731
    followers = dict(demand_from_trace(frame(clustered)).arrival_followers)
    for window_s in (0.1, 1.0):
        assert followers[window_s] == pytest.approx(7.0 * (window_s / 2.0 - window_s ** 2 / 8.0), rel=0.1)
    poisson = demand_from_trace(frame(np.cumsum(rng.exponential(0.125, 32000))))
    assert all(v == pytest.approx(0.0, abs=0.05) for _, v in poisson.arrival_followers)
    kept = dict(demand_from_trace(frame(clustered[rng.random(len(clustered)) < 0.3])).arrival_followers)
    thinned = Burstiness(followers=tuple(followers.items())).thinned(0.3)
    for window_s in (0.1, 1.0):
        assert thinned.followers_within(window_s) == pytest.approx(kept[window_s], rel=0.15)
