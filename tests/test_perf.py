import json
from dataclasses import replace
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from llmfleet.api.models import ModelArchitecture
from llmfleet.catalog.gpus import get_gpu, gpu_catalog
from llmfleet.catalog.models import model_catalog, resolve_model
from llmfleet.perf.calibration import (decode_holdout_report, fit, fit_splitwise_2023, fit_vllm_v1,
                                       load_all_reduce, load_mlenergy, load_splitwise, mdape)
from llmfleet.perf import capacity as capacity_module
from llmfleet.perf.capacity import (capacity_rps, kv_capacity_tokens, mdl_wait_quantile_s, replica_curves,
                                   replica_rate_rps, scheduler_limits, shared_steady_states, weights_fit)
from llmfleet.perf.steptime import (PROFILES, PerfParams, all_reduce_s, decode_time_s, default_params, load_profile,
                                    prefill_time_s)

from bench.capacity_accuracy import burstiness_of, poisson_requests, predicted_capacity_rps, simulated_capacity_rps
from conftest import EXAMPLES, PROFILE_DATA


@pytest.fixture
def splitwise():
    return load_splitwise(PROFILE_DATA / "splitwise_perf_model.csv")


def test_held_out_gpu_accuracy(splitwise):
    """Fit on A100-80GB only, predict the H100 measurements: within 20% median error."""
    p = fit(splitwise[splitwise["gpu"] == "A100-80G"])
    held = mdape(splitwise[splitwise["gpu"] == "H100-SXM"], p)
    assert held["n"] > 50
    assert held["ttft_mdape_pct"] < 20
    assert held["tpot_mdape_pct"] < 20


@pytest.mark.parametrize("name, fit_profile", [("vllm-v1", fit_vllm_v1), ("splitwise-2023", fit_splitwise_2023)])
def test_each_profile_is_reproducible_from_its_fit(name, fit_profile):
    """Each shipped profile is what its fit (bench/fit_profiles.py --write) gives on the measurements
    vendored in data/profiles: nobody edited a constant by hand."""
    refit = json.loads(fit_profile(PROFILE_DATA).to_json())
    shipped = json.loads(load_profile(name).to_json())
    assert refit.keys() == shipped.keys()
    for key, value in shipped.items():
        # floats to 1e-4: a least-squares fit differs in its last digits between BLAS builds and CPUs
        if isinstance(value, list):  # the all-reduce fits: one dict per (table, TP)
            assert len(refit[key]) == len(value), key
            for got, want in zip(refit[key], value):
                assert got.keys() == want.keys(), key
                for k, v in want.items():
                    assert got[k] == (pytest.approx(v, rel=1e-4, abs=1e-12) if isinstance(v, float) else v), (key, k)
        elif isinstance(value, float):
            assert refit[key] == pytest.approx(value, rel=1e-4, abs=1e-12), key
        else:
            assert refit[key] == value, key


def test_default_profile_is_todays_vllm():
    assert default_params().name == "vllm-v1"
    assert default_params().all_reduce, "collectives come from the measured NCCL tables"
    with pytest.raises(ValueError, match="allowed: vllm-v1, splitwise-2023"):
        load_profile("vllm-v0")


def test_all_reduce_fit_follows_the_measured_nccl_tables():
    """Vidur's NCCL all-reduce medians (DGX A100 and H100, 2 KB-64 MB) against the latency +
    bus-bandwidth fit of the default profile (at the full NCCL latency, before the share vLLM's
    custom all-reduce keeps): within 12% median error for every TP degree."""
    table = load_all_reduce(PROFILE_DATA / "vidur_all_reduce_medians.csv")
    p = replace(default_params(), all_reduce_latency_scale=1.0)
    for (node, tp), rows in table.groupby(["node", "num_workers"]):
        gpu = get_gpu({"h100_dgx": "H100-SXM", "a100_dgx": "A100-80G"}[node])
        pred = all_reduce_s(gpu, int(tp), rows["size_bytes"].to_numpy(float), p)
        err = np.median(np.abs(pred / (rows["median_ms"].to_numpy() / 1e3) - 1))
        assert err < 0.12, (node, tp, err)


def test_more_tp_never_slows_a_dense_decode_step():
    """At equal batch and context, a dense model's decode step on 2k GPUs is never slower than on
    k: the weights and KV read per GPU halve, and measured all-reduce latency barely grows with TP
    (the fitted ring hop constant of the Splitwise-era model broke this: 70B on 8 H100s slower than
    on 4)."""
    p = default_params()
    dense = [m for m in model_catalog().values() if m.num_experts <= 1]
    batches = np.array([1.0, 8.0, 64.0, 256.0, 1024.0])
    for model in dense:
        for gpu in gpu_catalog().values():
            tps = [tp for tp in (1, 2, 4, 8) if weights_fit(model, gpu, tp)]
            for small, large in zip(tps, tps[1:]):
                ctx = batches * 1500.0
                t_small = decode_time_s(model, gpu, small, batches, ctx, p)
                t_large = decode_time_s(model, gpu, large, batches, ctx, p)
                assert (t_large <= t_small * (1 + 1e-9)).all(), (model.name, gpu.name, small, large)


def test_decode_step_generalises_across_models():
    """Leave-one-model-out and leave-one-TP-out on ML.ENERGY's dense H100 rows (modern vLLM):
    refit without a group and predict its median ITL. The issue aims at 15% per split; today the
    median split is within it, the worst models (Llama-3.1-405B FP8, the only TP-8 model, and the
    70B models, the only TP-4 ones) reach 15-18% and leaving out all TP-4 rows 23%, so each model
    must stay below 20% and each TP degree below 25% (bench/perf_accuracy.py prints the table)."""
    rows = load_mlenergy(PROFILE_DATA / "mlenergy_h100_configurations.csv")
    report = decode_holdout_report(rows[rows["dense"]], default_params())
    assert {r["held_out"] for r in report if r["split"] == "model"} >= {"meta-llama/Llama-3.1-8B",
                                                                         "meta-llama/Llama-3.1-70B"}
    assert np.median([r["held_out_mdape_pct"] for r in report]) < 15.0
    for r in report:
        assert r["held_out_mdape_pct"] < (20.0 if r["split"] == "model" else 25.0), r


def test_llama_8b_decode_on_h100_is_near_its_weight_streaming_floor():
    """The issue's measurement: vLLM 0.11 decodes Llama-3.1-8B at batch 8 on H100 in 7.3 ms (the
    ML.ENERGY row); the Splitwise-era model said 12.2 ms. Streaming 16 GB of BF16 weights at
    3.35 TB/s takes 4.8 ms, so the step must sit between that floor and 1.25x the measurement."""
    model, gpu = resolve_model("meta-llama/Llama-3.1-8B-Instruct"), get_gpu("H100-SXM")
    t = float(decode_time_s(model, gpu, 1, 8, 8 * 700))
    assert model.weight_bytes / gpu.mem_bandwidth_bytes_per_s < t < 1.25 * 7.3e-3


@pytest.mark.parametrize("gpu, seqs, budget", [("H100-SXM", 1024, 8192), ("H200", 1024, 8192),
                                               ("A100-80G", 256, 2048), ("L40S", 256, 2048), ("L4", 256, 2048)])
def test_scheduler_limits_follow_vllm_defaults(gpu, seqs, budget):
    """vLLM V1 (EngineArgs.get_batch_defaults, OpenAI server): 1024 sequences and 8192 tokens on
    GPUs with >= 70 GiB except A100; 256 and 2048 otherwise. A workload's own values win."""
    assert scheduler_limits(get_gpu(gpu)) == (seqs, budget)
    assert scheduler_limits(get_gpu(gpu), 640, 16384) == (640, 16384)


@pytest.mark.parametrize("case", [
    ("meta-llama/Llama-3.1-8B", "H100-SXM", 1, 1000, 250, 1.0, 0.05),
    ("meta-llama/Llama-3.1-8B", "L40S", 1, 1000, 250, 1.0, 0.1),
    ("meta-llama/Llama-3.1-70B", "H100-SXM", 4, 1000, 250, 2.0, 0.1),
])
def test_colocated_capacity_matches_the_chunked_prefill_simulator(case):
    """The analytic colocated capacity (chunked prefill, mixed iterations) within 5% of the
    largest Poisson rate at which the simulator, scheduling iterations as vLLM V1 does, meets the
    SLO (bench/capacity_accuracy.py prints more cases): measured +2%, +0% and +3%. With each
    prompt costing an iteration of its own, as before prompts that arrive together shared one
    (``prompts_per_mixed_iteration``), +8%, +9% and +6%."""
    predicted, simulated = predicted_capacity_rps(*case), simulated_capacity_rps(*case)
    assert simulated > 0
    assert predicted == pytest.approx(simulated, rel=0.05)


def test_kv_capacity_against_distserve_measurement(shared_data):
    """DistServe measured the KV-cache capacity of vLLM for OPT-13B at TP1 on A100-80GB
    (shared/data/profiles/distserve/max_num_tokens.csv); our memory model should land near it."""
    rows = pd.read_csv(shared_data / "profiles" / "distserve" / "max_num_tokens.csv")
    measured = rows[(rows.model == "facebook/opt-13b") & (rows.tp == 1) & (rows.pp == 1)].max_num_tokens.item()
    # OPT-13B config.json: 40 layers, hidden 5120, 40 heads (MHA), FFN 20480, vocab 50272, 12.85B params
    opt13b = resolve_model("facebook/opt-13b", ModelArchitecture(
        num_layers=40, hidden_size=5120, num_attention_heads=40, num_kv_heads=40, intermediate_size=20480,
        vocab_size=50272, params_billion=12.85))
    ours = kv_capacity_tokens(opt13b, get_gpu("A100-80G"), 1, gpu_memory_utilization=0.9)
    assert ours == pytest.approx(measured, rel=0.25)


def test_mdl_wait_quantile_against_simulated_queue():
    """The closed-form M/D/1 waiting-time quantile vs an exact simulation (Lindley's recursion)."""
    rng = np.random.default_rng(7)
    service = 0.2
    for rho in (0.5, 0.8):
        gaps = rng.exponential(service / rho, 400_000)
        w = np.empty_like(gaps)
        w[0] = 0.0
        for i in range(1, len(gaps)):  # W_n = max(0, W_{n-1} + S - A_n)
            w[i] = max(0.0, w[i - 1] + service - gaps[i])
        for q in (0.9, 0.99):
            approx = mdl_wait_quantile_s(np.array(rho / service), service, q)
            assert approx == pytest.approx(np.quantile(w[1000:], q), rel=0.2), (rho, q)


def test_clumped_arrivals_wait_as_a_replayed_gamma_queue_does():
    """``arrival_scv``: arrivals whose gaps are Gamma with c_a² 3.7 and 7.3 (ServeGen's fitted CVs,
    ``bench/bursty_verify.py``), prompts of one size (deterministic service) or exponential, replayed
    by Lindley's recursion: the wait's p90 and p99 within 25% of the replay at ρ 0.2-0.8. Kingman's
    prefactor ρ (the same v, Poisson's probability of waiting) puts the p90 at ρ 0.2 at under 0.6
    of the replay: clumped arrivals land in each other's work far more often than ρ. With
    exponential service the form is the GI/M/1 queue's exact tail, σ exp(-μ(1-σ)t), σ the root
    of σ = (1 + c²(1-σ)/ρ)^(-1/c²) (Kleinrock 1975, §6.4), found here independently."""
    from scipy import optimize
    rng = np.random.default_rng(11)
    service = 0.1
    for c_a2 in (3.7, 7.3):
        for c_s2 in (0.0, 1.0):
            for rho in (0.2, 0.5, 0.8):
                n = 200_000
                gaps = rng.gamma(1.0 / c_a2, service / rho * c_a2, n)
                svc = np.full(n, service) if c_s2 == 0 else rng.exponential(service, n)
                w = np.zeros(n)
                for i in range(1, n):  # W_n = max(0, W_{n-1} + S_{n-1} - A_n)
                    w[i] = max(0.0, w[i - 1] + svc[i - 1] - gaps[i])
                for q in (0.9, 0.99):
                    replay = np.quantile(w[2000:], q)
                    ours = float(mdl_wait_quantile_s(np.array(rho / service), service, q, c_a2 + c_s2,
                                                     arrival_scv=c_a2))
                    assert ours == pytest.approx(replay, rel=0.25), (c_a2, c_s2, rho, q, ours, replay)
                    if rho == 0.2 and q == 0.9:
                        kingman = float(mdl_wait_quantile_s(np.array(rho / service), service, q, c_a2 + c_s2))
                        assert kingman < 0.6 * replay, (c_a2, c_s2, kingman, replay)
                    if c_s2 == 1.0:
                        sigma = optimize.brentq(lambda x: (1 + c_a2 * (1 - x) / rho) ** (-1 / c_a2) - x, 1e-9, 1 - 1e-9)
                        exact = max(0.0, np.log(sigma / (1 - q)) * service / (1 - sigma))
                        assert ours == pytest.approx(exact, rel=1e-6)


def test_a_load_held_for_a_minute_waits_as_a_replayed_queue_does():
    """``window_s``: an M/D/1 queue that starts empty and is loaded at ρ for 60 s, replayed by
    Lindley's recursion (400 windows): at and past saturation, where the stationary quantile is
    infinite, the windowed quantile stays within 25% of the replay's over the window's arrivals;
    below it, the stationary one is kept where it is the smaller."""
    rng = np.random.default_rng(3)
    service, window = 0.1, 60.0
    for rho in (1.0, 1.2, 1.5):
        waits = []
        for _ in range(400):
            arrivals = np.sort(rng.uniform(0.0, window, rng.poisson(rho / service * window)))
            w, prev = 0.0, 0.0
            for t in arrivals:  # W_n = max(0, W_{n-1} + S - A_n), the first from an empty queue
                w = max(0.0, w - (t - prev))
                waits.append(w)
                w += service
                prev = t
        for q in (0.9, 0.99):
            assert not np.isfinite(mdl_wait_quantile_s(np.array(rho / service), service, q))
            held = mdl_wait_quantile_s(np.array(rho / service), service, q, window_s=window)
            assert held == pytest.approx(np.quantile(waits, q), rel=0.25), (rho, q)
    stationary = mdl_wait_quantile_s(np.array(0.5 / service), service, 0.9)
    assert mdl_wait_quantile_s(np.array(0.5 / service), service, 0.9, window_s=window) == stationary


def test_a_pooled_queue_waits_as_erlang_c_says():
    """``servers``: M/M/2 (v = 2, exponential service) has the textbook closed forms
    P(wait) = 2ρ²/(1+ρ) and P(W > t) = P(wait) exp(-2μ(1-ρ)t), so its q-quantile is exact here;
    one server is Kingman's ρ."""
    from llmfleet.perf.capacity import erlang_c
    for rho in (0.5, 0.8, 0.95):
        assert erlang_c(2, np.array(rho)) == pytest.approx(2 * rho**2 / (1 + rho))
        assert erlang_c(1, np.array(rho)) == pytest.approx(rho)
        for q in (0.9, 0.99):
            exact = max(0.0, np.log(2 * rho**2 / (1 + rho) / (1 - q)) / (2 * (1 - rho)))
            assert mdl_wait_quantile_s(np.array(rho), 1.0, q, 2.0, servers=2) == pytest.approx(exact)


def test_short_prompts_wait_behind_long_ones_as_a_replayed_prefill_queue_does():
    """``prefill_ttft_quantiles_s``: a prefill replica serving 1k- and 16k-token prompts (80/20
    by count, Poisson, 70% busy) replayed first-come first-served by Lindley's recursion with each
    prompt's prefill time: both buckets' TTFT p90 and p99 within 25% of the replay's. The short
    prompts' p99 is set by the long ones ahead of them: several times their own prefill time,
    which a queue of short prompts alone (what each bucket at util x κ assumed) would not give."""
    from llmfleet.perf.capacity import prefill_ttft_quantiles_s, prefill_ttft_share_within
    gpu, p = get_gpu("H100-SXM"), default_params()
    inp = np.array([1000.0, 16000.0])
    t = prefill_time_s(LLAMA8B, gpu, 1, inp, p=p)
    share = np.array([0.8, 0.2])
    rate = 0.7 / float(share @ t)
    rng = np.random.default_rng(5)
    n = 300_000
    kind = rng.choice(2, n, p=share)
    service, gaps = t[kind], rng.exponential(1.0 / rate, n)
    w = np.zeros(n)
    for i in range(1, n):  # W_n = max(0, W_{n-1} + S_{n-1} - A_n)
        w[i] = max(0.0, w[i - 1] + service[i - 1] - gaps[i])
    ttft = w + service
    model = prefill_ttft_quantiles_s(LLAMA8B, gpu, 1, inp, rate * share, [90.0, 99.0], np.zeros(2), 0.0, p)
    for k, q in enumerate((90, 99)):
        for b in range(2):
            replay = np.percentile(ttft[5000:][kind[5000:] == b], q)
            assert model[k][b] == pytest.approx(replay, rel=0.25), (q, b)
    assert model[1][0] > 3 * t[0]
    # the same distribution read at a target (what predicted attainment counts): at the short
    # prompts' modelled p90, the model says 90% of them are within, and so does the replay
    target = float(model[0][0])
    within = prefill_ttft_share_within(LLAMA8B, gpu, 1, inp, rate * share, target, np.zeros(2), 0.0, p)
    assert within[0] == pytest.approx(0.9, abs=0.005)
    assert np.mean(ttft[5000:][kind[5000:] == 0] <= target) == pytest.approx(0.9, abs=0.03)


def test_pooled_prefill_replicas_of_different_speeds_wait_as_a_replayed_least_loaded_router_does():
    """``prefill_queue`` and ``prefill_ttft_quantiles_s(queue=)``: a TP-1 and a TP-4 H100 prefill
    replica pooled behind a router that sends each prompt to the replica with the fewest
    outstanding prompts (ties at random: llm-d's endpoint picker, as ``sim.engine`` routes), 1k
    and 16k-token prompts 80/20, Poisson, the pool 70% and 85% busy, replayed first come first
    served per replica: each replica's TTFT p90 and p99 of both buckets, from the pooled queue at
    the rates the replay gave it, within 25% of the replay's. One wait for the whole pool, with
    the spread between the replicas' speeds counted as service variability, put the TP-1
    replica's p90 at 0.56-0.78 of its replay and the TP-4 one's at 1.5-2.5 times: the slow
    replica has as many prompts ahead as the fast one and works through them 2-3 times slower.
    (At 50% busy the TP-1 replica's short prompts' p90 is 1.34 x the model's: Kingman's
    exponential tail is light at low load, as for one server.)"""
    from collections import deque

    from llmfleet.perf.capacity import prefill_queue, prefill_service_moments, prefill_ttft_quantiles_s
    gpu, p = get_gpu("H100-SXM"), default_params()
    inp, share, tps = np.array([1000.0, 16000.0]), np.array([0.8, 0.2]), (1, 4)
    service = np.array([prefill_time_s(LLAMA8B, gpu, tp, inp, p=p) for tp in tps])  # (replica, bucket) s
    for rho in (0.7, 0.85):
        rng = np.random.default_rng(11)
        n = 100_000
        rate = rho * sum(1.0 / float(share @ t) for t in service)
        kind, arrival = rng.choice(2, n, p=share), np.cumsum(rng.exponential(1.0 / rate, n))
        ends, free = [deque(), deque()], [0.0, 0.0]
        where, ttft = np.zeros(n, dtype=int), np.zeros(n)
        for i, t in enumerate(arrival):
            for q in ends:
                while q and q[0] <= t:
                    q.popleft()
            counts = [len(q) for q in ends]
            ties = [r for r in (0, 1) if counts[r] == min(counts)]
            r = ties[int(rng.integers(len(ties)))] if len(ties) > 1 else ties[0]
            free[r] = max(t, free[r]) + service[r][kind[i]]
            ends[r].append(free[r])
            where[i], ttft[i] = r, free[r] - t
        span = float(arrival[-1] - arrival[0])
        rates = [np.array([np.sum((where == r) & (kind == b)) for b in (0, 1)]) / span for r in (0, 1)]
        parts = []
        for r, tp in enumerate(tps):
            _, times, mean_b, square_b = prefill_service_moments(LLAMA8B, gpu, tp, inp, np.zeros(2), None, p)
            parts.append((1, rates[r], mean_b, square_b, times))
        queue = prefill_queue(parts)
        for r, tp in enumerate(tps):
            model = prefill_ttft_quantiles_s(LLAMA8B, gpu, tp, inp, rates[r], [90.0, 99.0], np.zeros(2), 0.0, p,
                                             queue=queue)
            for k, q in enumerate((90, 99)):
                for b in (0, 1):
                    mine = (where == r) & (kind == b) & (np.arange(n) >= 2000)
                    ratio = np.percentile(ttft[mine], q) / model[k][b]
                    assert 0.75 <= ratio <= 1.25, (rho, tp, q, b, ratio)


LLAMA8B = resolve_model("meta-llama/Llama-3.1-8B-Instruct")


def replay_one_replica(key: str, model, gpu, tp: int, sizes_in: np.ndarray, sizes_out: np.ndarray,
                       mix_rps: np.ndarray, requests: pd.DataFrame):
    """``requests`` replayed by the simulator on one colocated replica of ``model`` on ``gpu`` at
    TP ``tp`` (SLOs loose enough to keep every request; size buckets of ``sizes_in`` x
    ``sizes_out`` tokens, planned arrivals ``mix_rps`` req/s each): the replay's per-request
    record (``Simulation.rq``)."""
    from llmfleet.sim.engine import Simulation
    from llmfleet.sim.scenario import SimGroup, SimWorkload
    from llmfleet.workload.demand import bucket_index

    i, j = bucket_index(np.asarray(sizes_in, dtype=float), np.asarray(sizes_out, dtype=float))
    w = SimWorkload(key, model, ttft_s=10.0, tpot_s=1.0, percentile=99.0, gpu_memory_utilization=0.9,
                    buckets=[(int(a), int(b)) for a, b in zip(i, j)],
                    groups=[SimGroup("colocated", "pool", gpu, tp, 1, np.asarray(mix_rps, dtype=float), "net", 1e12)])
    sim = Simulation(w, requests)
    sim.run()
    return sim.rq


BUCKETS_IN = np.array([300.0, 1100.0, 3900.0])
BUCKETS_OUT = np.array([90.0, 380.0, 170.0])


def kappa(gpu="A100-80G", tp=1, ttft=1.0, tpot=0.1, pct=90.0):
    return capacity_rps(LLAMA8B, get_gpu(gpu), tp, BUCKETS_IN, BUCKETS_OUT, ttft, tpot, pct)


def test_a_colocated_replica_queues_every_size_together():
    """``latencies_at_rate(mix_rps=)``: with one bucket the mix is that bucket, so its TTFT is the
    bucket's own (one prompt queue of one size, the capacity curves' exactly) and its TPOT at
    least the capacity curves' (``shared_batch`` adds the busy periods those leave out: the
    arrivals' swing over a request's life, which holds more decodes and prompt chunks in it);
    with a mix of 300- and 3,900-token prompts, the short ones wait behind the long ones (a
    longer TTFT than in a queue of short prompts alone) and the long ones behind short ones (a
    shorter one than alone). Every request decodes in the same batch and meets the same prompt
    chunks, so the TPOTs move towards each other: the short requests' rises above what they see
    alone (long prompts' chunks and contexts in their batch), the long ones' falls."""
    from llmfleet.perf.capacity import Burstiness, latencies_at_rate
    gpu = get_gpu("H100-SXM")
    inp, out = np.array([300.0, 3900.0]), np.array([90.0, 170.0])
    burst = Burstiness(1.0, np.zeros(2))
    kappa = capacity_rps(LLAMA8B, gpu, 1, inp, out, 2.0, 0.1, 99.0, burst=burst)
    equivalent = 0.8 * kappa
    [(curve_ttft, curve_tpot)] = latencies_at_rate(LLAMA8B, gpu, 1, inp, out, equivalent, [99.0], burst=burst)
    alone_ttft, alone_tpot = np.zeros(2), np.zeros(2)
    for b in range(2):
        [(ttft, tpot)] = latencies_at_rate(LLAMA8B, gpu, 1, inp[b:b + 1], out[b:b + 1], equivalent[b:b + 1],
                                           [99.0], burst=Burstiness(1.0, np.zeros(1)),
                                           mix_rps=equivalent[b:b + 1])
        assert ttft[0] == pytest.approx(curve_ttft[b]) and tpot[0] >= curve_tpot[b]
        alone_ttft[b], alone_tpot[b] = ttft[0], tpot[0]
    mix = 0.8 * np.array([0.5, 0.5]) / float(np.sum(np.array([0.5, 0.5]) / kappa))  # Σ rate/κ = 0.8
    [(ttft, tpot)] = latencies_at_rate(LLAMA8B, gpu, 1, inp, out, equivalent, [99.0], burst=burst, mix_rps=mix)
    assert ttft[0] > alone_ttft[0] and ttft[1] < alone_ttft[1]
    assert tpot[0] > alone_tpot[0] and tpot[1] < alone_tpot[1]
    assert abs(tpot[0] - tpot[1]) < abs(alone_tpot[0] - alone_tpot[1])


@pytest.mark.parametrize("model_id, gpu_name, tp, inp, out, load", [
    ("meta-llama/Llama-3.1-8B", "H100-SXM", 1, 1000, 250, 0.5),
    ("meta-llama/Llama-3.1-8B", "H100-SXM", 1, 1000, 250, 0.8),
    ("meta-llama/Llama-3.1-8B", "A100-80G", 1, 3000, 150, 0.5),
])
def test_poisson_arrivals_swing_a_colocated_replica_through_busy_periods(model_id, gpu_name, tp, inp, out, load):
    """One colocated replica, 6,000 requests of one size arriving as a Poisson stream at
    ``load`` x the most it sustains (the peak of its rate curve within the KV cache,
    ``mix_rate_rps``): the p90 and p99 TPOT the model predicts (``latencies_at_rate`` with the
    mix, ``shared_batch``) are within 25% of the simulator's, over the requests after the first
    tenth (the replica starts empty). Poisson arrivals run above their mean over some lives too,
    and the prompts' busy period amplifies that: measured replay over model 0.99 / 0.96, 1.00 /
    0.94 and 1.07 / 1.12 (p90 / p99, in the order of the cases; 1.00 / 0.99, 1.16 / 1.07 and
    1.01 / 1.07 while each prompt cost an iteration of its own, before
    ``prompts_per_mixed_iteration``). With the count's excess over Poisson only (none for
    Poisson arrivals) and the prompts met added at the mean step, as before that: 1.09 / 1.16,
    1.40 / 1.54 and 1.34 / 1.70."""
    from llmfleet.perf.capacity import POISSON, latencies_at_rate, mix_rate_rps

    model, gpu = resolve_model(model_id), get_gpu(gpu_name)
    sizes_in, sizes_out = np.array([float(inp)]), np.array([float(out)])
    curve = mix_rate_rps(model, gpu, tp, sizes_in, sizes_out, np.array([1.0]))
    fits = int(kv_capacity_tokens(model, gpu, tp) // (inp + out))  # requests the KV cache holds
    rate = load * float(curve[:fits].max())
    rq = replay_one_replica("test/poisson", model, gpu, tp, sizes_in, sizes_out, np.array([rate]),
                            poisson_requests(rate, 6000, inp, out, seed=1))
    tpot = ((rq.finish - rq.first) / (rq.out - 1))[len(rq.out) // 10:]
    predicted = latencies_at_rate(model, gpu, tp, sizes_in, sizes_out, np.array([rate]), [90.0, 99.0], burst=POISSON,
                                  mix_rps=np.array([rate]))
    for pct, (_, tpot_pred) in zip((90.0, 99.0), predicted):
        assert tpot_pred[0] == pytest.approx(float(np.percentile(tpot, pct)), rel=0.25), pct


def test_the_arrival_rate_over_a_window_has_the_quantiles_rate_quantile_gives():
    """``_rate_quantile``: the arrival rate over a window, relative to its mean, is read as a
    Gamma of variance c² / n (c² the count's index of dispersion over the window, n its mean
    arrivals). Against the windows of a replayed stream (independent: counts of generated
    arrivals): Poisson at 22 req/s over 0.5-5 s windows (11-110 arrivals) and Gamma gaps of
    CV² 4 at the same rate, with c² measured on the stream (``arrival_dispersion``): the p90
    within 5% of the windows' (measured 0.98-1.03x) and the p99 within 12% (1.00-1.11x, the
    most where clumped arrivals are fewest: 11 in 0.5 s). The excess over Poisson alone (c² - 1) / n, as the busy
    periods read it before, puts a Poisson stream's p99 at 1 (measured: 1.22-1.73)."""
    from llmfleet.perf.capacity import _rate_quantile
    from llmfleet.workload.demand import arrival_dispersion

    rng = np.random.default_rng(5)
    rate, n = 22.0, 200_000
    streams = {"poisson": np.cumsum(rng.exponential(1.0 / rate, n)),
               "gamma": np.cumsum(rng.gamma(1.0 / 4.0, 4.0 / rate, n))}
    for name, arrival in streams.items():
        for window in (0.5, 1.0, 2.0, 5.0):
            counts = np.bincount((arrival // window).astype(int))[1:-1].astype(float)
            mean = counts.mean()
            dispersion = arrival_dispersion(arrival, window) if name == "gamma" else 1.0
            for q, rel in ((0.9, 0.05), (0.99, 0.12)):
                measured = float(np.quantile(counts / mean, q))
                assert float(_rate_quantile(q, dispersion, mean)) == pytest.approx(measured, rel=rel), (name, window, q)
            if name == "poisson":
                assert float(np.quantile(counts / mean, 0.99)) > 1.2


@pytest.mark.parametrize("rate_rps", [6.0, 10.0])
def test_bursty_arrivals_hold_a_colocated_replica_in_a_busy_period(rate_rps):
    """One H100 replica of Llama-3.1-8B, 20,000 requests of 100 output tokens and log-normal
    prompts of mean 1,000 tokens arriving with Gamma gaps of CV² 4 (``poisson_requests``): the
    p99 TPOT the model predicts (``latencies_at_rate`` with the burstiness the planner measures:
    the dispersion at 5 s and over each window, ``demand_from_trace``) is within 25% of the
    simulator's replay (replay over model: measured 1.11 and 1.26; 1.05 and 1.19 before the busy
    periods took the Poisson part of the swing and read the load over the life it lengthens,
    ``_busy_load``). A burst holds the replica above its mean load for seconds and the prompts'
    chunks take a larger share of its iterations, which lengthens every decoding life and lets
    more prompts in: TPOT = t_d / (1 - share), a busy period. Before that, the prompts a request
    met were added at the mean step (t_d + extra): replay over model 1.35 and 1.70."""
    import dataclasses

    from llmfleet.perf.capacity import latencies_at_rate
    from llmfleet.workload.demand import demand_from_trace

    gpu = get_gpu("H100-SXM")
    trace = poisson_requests(rate_rps, 20_000, 1000, 100, seed=3, bursty=True)
    burst = dataclasses.replace(burstiness_of(trace), arrival_idc=demand_from_trace(trace).arrival_idc)
    rq = replay_one_replica("bench/burst", LLAMA8B, gpu, 1, np.array([1000]), np.array([100]), np.array([rate_rps]),
                            trace)
    tpot = (rq.finish - rq.first) / (rq.out - 1)
    simulated = float(np.percentile(tpot[np.isfinite(tpot)], 99))
    [(_, predicted)] = latencies_at_rate(LLAMA8B, gpu, 1, np.array([float(trace["input_tokens"].mean())]),
                                         np.array([100.0]), np.array([rate_rps]), [99.0], burst=burst,
                                         mix_rps=np.array([rate_rps]))
    assert predicted[0] == pytest.approx(simulated, rel=0.25)


@pytest.mark.parametrize("arrival_scv", [3.7, 7.3])
def test_a_decode_replica_under_bursts_holds_the_batch_of_a_busy_period(tmp_path, arrival_scv):
    """One H100 decode-only replica of Llama-3.1-8B behind four prefill replicas, fed the Azure
    LLM inference 2023 conversation trace played 4x faster (22 req/s, a mean batch of about 80)
    with its gaps redrawn from a Gamma of CV² 3.7 and 7.3 (ServeGen's fitted client median and
    all-client p80; ``bench/bursty_verify.py``): the p99 TPOT the model predicts for each size
    bucket (``shared_batch``, decode only, with the burstiness ``demand_from_trace`` measures),
    averaged over the requests, is within 25% of the simulator's p99 (measured replay over model
    1.09 and 1.01; 1.21 and 1.08 with the count's excess over Poisson alone, as before). A
    burst sustained over a request's life holds more requests in the batch, each step reads more
    KV, every life lengthens and the batch grows further: a busy period whose batch is the fixed
    point K = g λ Ō t_d(K). The count's quantile at one instant, with the mean life, gave 1.72 and
    1.64."""
    from conftest import write_gamma_arrivals

    from llmfleet.perf.capacity import Burstiness, shared_batch
    from llmfleet.sim.engine import Simulation
    from llmfleet.sim.scenario import SimGroup, SimWorkload
    from llmfleet.workload.demand import demand_from_trace
    from llmfleet.workload.traces import load_trace

    gpu = get_gpu("H100-SXM")
    azure = load_trace(EXAMPLES / "traces" / "azure_llm_2023_conv.csv", "azure")
    write_gamma_arrivals(azure, tmp_path / "bursty.csv", arrival_scv, seed=1)
    trace = load_trace(tmp_path / "bursty.csv", "csv")
    trace["arrival_s"] = trace["arrival_s"] / 4.0  # the timeline a rateScale of 4 replays
    demand = demand_from_trace(trace)
    cells = np.argwhere(demand.share > 0)
    rows, cols = cells[:, 0], cells[:, 1]
    rate = demand.rate_mean_rps * demand.share[rows, cols]
    w = SimWorkload("bench/decode", LLAMA8B, ttft_s=10.0, tpot_s=1.0, percentile=99.0, gpu_memory_utilization=0.9,
                    buckets=[(int(r), int(c)) for r, c in cells], pd_threshold_tokens=1,
                    groups=[SimGroup("prefill", "pool", gpu, 1, 4, rate, "net", 1e12),
                            SimGroup("decode", "pool", gpu, 1, 1, rate, "net", 1e12)])
    sim = Simulation(w, trace)
    sim.run()
    rq = sim.rq
    tpot = (rq.finish - rq.first) / np.maximum(rq.out - 1, 1)
    simulated = float(np.percentile(tpot[np.isfinite(tpot) & (rq.out > 1)], 99))
    burst = Burstiness(demand.arrival_scv, demand.input_scv[rows, cols], arrival_idc=demand.arrival_idc)
    [state] = shared_batch(LLAMA8B, gpu, 1, demand.input_tokens[rows, cols], demand.output_tokens[rows, cols], rate,
                           [99.0], burst=burst, chunked_prefill=False)
    predicted = float(np.average(state.tpot_s, weights=rate))
    assert predicted == pytest.approx(simulated, rel=0.25)


def test_capacity_shrinks_as_slo_tightens():
    loose, tight = kappa(tpot=0.2), kappa(tpot=0.05)
    assert (loose >= tight).all() and (loose > tight).any()
    assert (kappa(ttft=2.0) >= kappa(ttft=0.3)).all()
    assert (kappa(pct=50) >= kappa(pct=99)).all()


def test_shared_steady_states_compute_the_curves_once_and_change_no_result(monkeypatch):
    """A workload asks for the same replica's curves at its SLO percentile, at a raised planning
    percentile and for its power draw: within ``shared_steady_states`` the percentile-free steady
    state is computed once, and every result is the one computed alone, bit for bit."""
    gpu = get_gpu("H100-SXM")
    alone = [kappa("H100-SXM", pct=90.0), kappa("H100-SXM", pct=97.0),
             replica_rate_rps(LLAMA8B, gpu, 1, BUCKETS_IN, BUCKETS_OUT)]
    calls = []
    real = capacity_module.decode_time_s
    monkeypatch.setattr(capacity_module, "decode_time_s", lambda *a, **k: calls.append(1) or real(*a, **k))
    with shared_steady_states():
        shared = [kappa("H100-SXM", pct=90.0), kappa("H100-SXM", pct=97.0),
                  replica_rate_rps(LLAMA8B, gpu, 1, BUCKETS_IN, BUCKETS_OUT)]
    assert len(calls) == 1  # the decode-only step curve of the one steady state
    for a, b in zip(alone, shared):
        assert np.array_equal(a, b)
    kappa("H100-SXM", pct=90.0)
    assert len(calls) == 2  # the block's end dropped the memo
    with pytest.raises(ValueError):  # shared arrays: no caller may change another's curve
        replica_curves(LLAMA8B, gpu, 1, BUCKETS_IN, BUCKETS_OUT, 90.0).rate[0, 0] = 0.0


def test_capacity_grows_with_a_faster_gpu():
    assert (kappa("H100-SXM") > kappa("A100-80G")).all()
    assert (kappa("A100-80G") > kappa("L4", tp=2)).all()


def test_capacity_is_zero_when_prefill_alone_misses_ttft():
    gpu = get_gpu("L4")
    t_prefill = float(prefill_time_s(LLAMA8B, gpu, 2, 3900.0))
    k = capacity_rps(LLAMA8B, gpu, 2, BUCKETS_IN, BUCKETS_OUT, t_prefill * 0.9, 0.5, 90)
    assert k[2] == 0.0 and k[0] > 0.0


@pytest.mark.parametrize("name", PROFILES)
def test_profiles_name_their_sources(name):
    data = json.loads(resources.files("llmfleet.perf").joinpath("profiles", f"{name}.json").read_text())
    assert data["name"] == name
    assert "Splitwise" in data["source"] or "ML.ENERGY" in data["source"]
    assert PerfParams.from_json(json.dumps(data)) == load_profile(name)


def test_bursty_traffic_lowers_capacity_and_kingman_tracks_the_simulator_better():
    """Gamma inter-arrivals of CV² 4 with spread prompt lengths: the capacity model with the
    measured burstiness (Kingman's G/G/1 correction, wider batch quantiles) predicts less than for
    Poisson arrivals of one size, and is closer to what the simulator sustains at the SLO than the
    M/D/1 model it replaces (bench/capacity_accuracy.py prints every case; bursty traffic remains
    over-predicted by 18-90% there)."""
    case = ("meta-llama/Llama-3.1-8B", "L40S", 1, 1000, 250, 1.0, 0.1)
    burst = burstiness_of(poisson_requests(10.0, 20_000, 1000, 250, bursty=True))
    assert burst.arrival_scv > 3.0 and burst.service_scv > 0.1
    kingman = predicted_capacity_rps(*case, burst=burst)
    mdl = predicted_capacity_rps(*case)
    simulated = simulated_capacity_rps(*case, bursty=True)
    assert kingman < mdl
    assert abs(kingman / simulated - 1) < abs(mdl / simulated - 1)


def test_mdl_max_rate_is_the_largest_rate_whose_wait_quantile_fits_the_budget():
    # the definition, by bisection on the wait quantile itself (which increases with the rate):
    # the closed form (the Wright omega function) must give the same rate, and 0 for no budget
    from llmfleet.perf.capacity import mdl_max_rate, mdl_wait_quantile_s

    rng = np.random.default_rng(7)
    service = 10 ** rng.uniform(-4, 1, 5000)
    budget = 10 ** rng.uniform(-5, 2, 5000) * rng.choice([-1.0, 1.0, 1.0, 1.0], 5000)
    for q, v in ((0.5, 1.0), (0.9, 0.3), (0.99, rng.uniform(0.2, 8.0, 5000)), (0.999, 5.0)):
        lo, hi = np.zeros(5000), np.where(budget > 0, 1.0 / service, 0.0)
        for _ in range(60):
            mid = (lo + hi) / 2.0
            good = mdl_wait_quantile_s(mid, service, q, v) <= budget
            lo, hi = np.where(good, mid, lo), np.where(good, hi, mid)
        got = mdl_max_rate(service, budget, q, v)
        assert np.all(got[budget <= 0] == 0.0)
        assert np.allclose(got, lo, rtol=1e-12, atol=0.0)
        pos = budget > 0
        vv = np.broadcast_to(v, budget.shape)[pos]
        assert np.all(mdl_wait_quantile_s(got[pos] * (1 - 1e-9), service[pos], q, vv) <= budget[pos])


def test_a_decode_replica_of_one_size_reads_the_same_batch_alone_or_as_a_mix():
    """``shared_batch`` of a decode-only replica with one bucket is ``decode_curves`` read at the
    offered rate at light load (the shared batch of a one-size mix is that size's batch), and at
    least that at heavy load, Poisson or bursty arrivals alike: it holds the batch that the
    arrivals' swing sustains over a request's life (``_sustained_batch``), which the capacity
    curves leave out, and which at light load stays below the count's quantile at one instant.
    With 2k- and 32k-token contexts mixed at the same load, the short requests decode beside
    long contexts: a longer TPOT than alone."""
    from llmfleet.perf.capacity import Burstiness, decode_capacity_rps, decode_tpot_at_rate, shared_batch

    def mixed_tpot(i, o, mix, burst):
        [sb] = shared_batch(LLAMA8B, gpu, 1, i, o, mix, [90.0], burst=burst, chunked_prefill=False)
        return sb.tpot_s
    gpu = get_gpu("H100-SXM")
    inp, out = np.array([2000.0, 32000.0]), np.array([300.0, 300.0])
    for burst in (Burstiness(1.0, np.zeros(1)), Burstiness(4.0, np.zeros(1))):
        for b in range(2):
            cap = decode_capacity_rps(LLAMA8B, gpu, 1, inp[b:b + 1], out[b:b + 1], 0.05, 90.0, burst=burst)
            for load in (0.1, 0.9):
                rate = load * cap
                alone = decode_tpot_at_rate(LLAMA8B, gpu, 1, inp[b:b + 1], out[b:b + 1], rate, 90.0, burst=burst)
                mixed = mixed_tpot(inp[b:b + 1], out[b:b + 1], rate, burst)
                assert np.isfinite(alone).all()
                if load < 0.5:
                    assert mixed == pytest.approx(alone)
                else:
                    assert (mixed >= alone * (1 - 1e-9)).all()
    burst = Burstiness(1.0, np.zeros(2))
    cap = decode_capacity_rps(LLAMA8B, gpu, 1, inp, out, 0.05, 90.0, burst=burst)
    alone = decode_tpot_at_rate(LLAMA8B, gpu, 1, inp, out, 0.5 * cap, 90.0, burst=burst)
    mix = 0.5 / float(np.sum(0.5 / cap)) * np.array([0.5, 0.5])  # half the load from each size
    mixed = mixed_tpot(inp, out, mix, burst)
    assert mixed[0] > alone[0]


def test_the_quantile_functions_equal_scipy_stats():
    # Independent reference: scipy.stats itself, which the capacity model used before it computed
    # these from scipy.special (importing scipy.stats cost every command 1.3 s); means from 0 (a
    # rare term) to well past any batch, the percentiles an SLO uses and the extremes.
    from scipy import stats

    q = np.array([1e-6, 0.05, 0.5, 0.9, 0.95, 0.99, 0.999, 0.9999])[:, None]
    means = np.concatenate([[0.0, 1e-9, 0.03, 0.5], np.arange(1.0, 1025.0), [1e4, 3.7e4]])[None, :]
    assert np.array_equal(capacity_module._poisson_ppf(q, means), stats.poisson.ppf(q, means), equal_nan=True)
    for dispersion in (0.5, 1.22, 3.7, 7.3):
        assert np.array_equal(capacity_module._gamma_ppf(q, means / dispersion, dispersion),
                              stats.gamma.ppf(q, means / dispersion, scale=dispersion), equal_nan=True)
    assert np.isnan(capacity_module._gamma_ppf(0.9, 0.0, 1.0))  # no terms: undefined, as scipy.stats has it


def test_a_colocated_replica_serves_each_prompt_at_its_own_length():
    """One colocated H100 TP-1 replica of Llama-3.1-8B, an hour of Poisson arrivals at 2 and 6
    req/s: 85% prompts of 300 tokens, 15% spread evenly over 2,048-8,191 tokens (one size bucket,
    as the Azure conversation trace's 2k-8k prompts are), 64 output tokens each. The long bucket's
    TTFT p50 and p90 from ``latencies_at_rate`` with the mix (its lengths given at
    ``INPUT_LENGTH_PROBS``, as a trace gives them) are within 15% of the simulator's, its p99
    within 25% (replay / model over seeds 1-5: p50 0.96-1.00, p90 1.01-1.12, p99 0.93-1.22; the
    p99 at 6 req/s carries the queue's own shortfall at load, ``bench/ttft_by_bucket.py``).
    Served at the bucket's mean prompt, as the colocated read-out did before, its p90 was 0.209 s
    against 0.317 s replayed at 2 req/s (1.52x): a bucket's long prompts set its high
    percentiles."""
    from llmfleet.perf.capacity import Burstiness, latencies_at_rate
    from llmfleet.workload.demand import INPUT_LENGTH_PROBS

    model, gpu = resolve_model("meta-llama/Llama-3.1-8B-Instruct"), get_gpu("H100-SXM")
    rng = np.random.default_rng(3)
    mean_long = 2048.0 + 6144.0 / 2.0
    scv_long = (6144.0 ** 2 / 12.0) / mean_long ** 2  # a uniform's variance over its mean squared
    lengths = np.vstack([np.full(len(INPUT_LENGTH_PROBS), 300.0), 2048.0 + 6144.0 * INPUT_LENGTH_PROBS])
    for rate in (2.0, 6.0):
        n = int(rate * 3600)
        long = rng.random(n) < 0.15
        requests = pd.DataFrame({"arrival_s": np.cumsum(rng.exponential(1.0 / rate, n)),
                                 "input_tokens": np.where(long, rng.integers(2048, 8192, n), 300),
                                 "output_tokens": np.full(n, 64)})
        mix = np.array([0.85 * rate, 0.15 * rate])
        rq = replay_one_replica("test/lengths", model, gpu, 1, np.array([300.0, mean_long]), np.array([64.0, 64.0]),
                                mix, requests)
        replayed = (rq.first - rq.arrival)[rq.inp >= 2048]
        predicted = latencies_at_rate(model, gpu, 1, np.array([300.0, mean_long]), np.array([64.0, 64.0]), mix,
                                      [50.0, 90.0, 99.0], burst=Burstiness(service_scv=np.array([0.0, scv_long])),
                                      mix_rps=mix, lengths=lengths)
        for pct, (ttft, _), rel in zip((50.0, 90.0, 99.0), predicted, (0.15, 0.15, 0.25)):
            assert float(np.percentile(replayed, pct)) == pytest.approx(float(ttft[1]), rel=rel), (rate, pct)


def _bursty_replay(key: str, model, gpu, input_tokens: int, output_tokens: int, c_a2: float, rate_rps: float,
                   rng: np.random.Generator):
    """An hour of Gamma-renewal arrivals of squared CV ``c_a2`` at ``rate_rps`` req/s (drawn from
    ``rng``), every request of one size, replayed on one colocated TP-1 replica
    (``replay_one_replica``): (the replay's requests, the replica's mean arrivals as a one-bucket
    mix (req/s), the ``Burstiness`` the planner estimates from the arrivals as from a trace's,
    ``demand_from_trace``)."""
    from llmfleet.perf.capacity import Burstiness
    from llmfleet.workload.demand import demand_from_trace

    n = int(rate_rps * 3600)
    arrival = np.cumsum(rng.gamma(1.0 / c_a2, c_a2 / rate_rps, n))
    requests = pd.DataFrame({"arrival_s": arrival, "input_tokens": input_tokens, "output_tokens": output_tokens})
    d = demand_from_trace(requests)
    mix = np.array([n / (arrival[-1] - arrival[0])])
    rq = replay_one_replica(key, model, gpu, 1, np.array([float(input_tokens)]), np.array([float(output_tokens)]),
                            mix, requests)
    burst = Burstiness(d.arrival_scv, 0.0, queue_arrival_scv=d.arrival_scv_at(1.0),
                       arrival_idc=d.arrival_idc, followers=d.arrival_followers)
    return rq, mix, burst


def test_a_prompt_that_arrives_in_a_clump_gets_its_first_token_with_the_clump():
    """One colocated H100 TP-1 replica of Llama-3.1-8B, an hour of Gamma-renewal arrivals of CV²
    3.7 and 7.3 (ServeGen's bursty clients; half of the gaps under 3% of the mean at 7.3) at 3 and
    8 req/s, 1,000-token prompts and 128-token answers. vLLM's scheduler takes every waiting
    prompt into the next iteration's token budget and the first token comes when the iteration
    ends, so the first prompt of a clump waits for the ones behind it, which a first-come-first-
    served queue does not have. The burstiness is estimated from the arrivals as a trace's is
    (``demand_from_trace``, clump mates included: ``Demand.arrival_followers``). With the clump
    mates (``capacity.with_followers``) the replay's TTFT over ``latencies_at_rate``'s is within
    25% at p50 and p99 and 20% at p90 (seeds 1-3: p50 1.05-1.24, p90 1.06-1.19, p99 0.99-1.29);
    without them the p90 is 1.26-1.57x short (p50 1.45-2.06x)."""
    from llmfleet.perf.capacity import latencies_at_rate

    model, gpu = resolve_model("meta-llama/Llama-3.1-8B-Instruct"), get_gpu("H100-SXM")
    inp, out = np.array([1000.0]), np.array([128.0])
    rng = np.random.default_rng(2)
    for c_a2 in (3.7, 7.3):
        for rate in (3.0, 8.0):
            rq, mix, burst = _bursty_replay("test/clumps", model, gpu, 1000, 128, c_a2, rate, rng)
            replayed = rq.first - rq.arrival
            assert burst.followers_within(0.03) > 0.4  # clumps
            for b, within in ((burst, True), (replace(burst, followers=()), False)):
                predicted = latencies_at_rate(model, gpu, 1, inp, out, mix, [50.0, 90.0, 99.0], burst=b, mix_rps=mix)
                ratio = [float(np.percentile(replayed, pct)) / float(t[0])
                         for pct, (t, _) in zip((50.0, 90.0, 99.0), predicted)]
                if within:
                    assert ratio == pytest.approx([1.0, 1.0, 1.0], rel=0.25) and abs(ratio[1] - 1.0) < 0.2, (c_a2, rate)
                else:
                    assert ratio[1] > 1.25, (c_a2, rate)


def test_a_short_answer_behind_a_burst_of_prompts_decodes_at_the_full_budget_step(monkeypatch):
    """One colocated H100 TP-1 replica of Llama-3.1-8B serving code completions (1,500-token
    prompts, 12-token answers: the medians of the Azure 2023 code trace, Splitwise ISCA 2024) on
    an hour of Gamma-renewal arrivals of CV² 3.7 and 7.3 (ServeGen's bursty clients) at 9 and 12
    req/s. A request that waited for its prefill finds the prompts that arrived meanwhile queued
    behind it, and its few decode iterations each carry a full token budget of their chunks
    (``capacity.after_backlog_tpot_s``). With that backlog the replay's p90 TPOT over
    ``latencies_at_rate``'s is within 25%; read over the decoding life alone (the backlog left
    out) the model is at least 1.4x short (when written: 0.99-1.05 with it, 1.51-2.84 without)."""
    from llmfleet.perf import capacity as capacity_module
    from llmfleet.perf.capacity import latencies_at_rate

    model, gpu = resolve_model("meta-llama/Llama-3.1-8B-Instruct"), get_gpu("H100-SXM")
    inp, out = np.array([1500.0]), np.array([12.0])
    for seed, (c_a2, rate) in enumerate(((3.7, 9.0), (3.7, 12.0), (7.3, 9.0), (7.3, 12.0))):
        rq, mix, burst = _bursty_replay("test/backlog", model, gpu, 1500, 12, c_a2, rate, np.random.default_rng(seed))
        replayed = float(np.percentile((rq.finish - rq.first) / (rq.out - 1), 90.0))
        with_backlog = float(latencies_at_rate(model, gpu, 1, inp, out, mix, [90.0], burst=burst, mix_rps=mix)[0][1][0])
        with monkeypatch.context() as m:
            m.setattr(capacity_module, "after_backlog_tpot_s", lambda tpot_s, *args, **kwargs: tpot_s)
            life_only = float(latencies_at_rate(model, gpu, 1, inp, out, mix, [90.0], burst=burst, mix_rps=mix)[0][1][0])
        assert replayed / with_backlog == pytest.approx(1.0, rel=0.25), (c_a2, rate)
        assert replayed / life_only > 1.4, (c_a2, rate)


def test_a_decode_replica_that_prefills_short_prompts_holds_up_every_answer_behind_its_backlog(monkeypatch):
    """One H100 TP-2 decode replica of Llama-3.1-8B that prefills the prompts under a P/D
    threshold of 4,000 tokens itself (1,500-token prompts, 12-token answers: the medians of the
    Azure 2023 code trace, Splitwise ISCA 2024), beside one H100 TP-4 prefill replica that takes
    the 6,000-token prompts (8-token answers), a sixth of the requests, on an hour of
    Gamma-renewal arrivals of CV² 3.7 and 7.3 (ServeGen's bursty clients) at 12 req/s. The local
    prompts queue for the decode replica's token budget: a local request finds the prompts that
    came while it waited queued behind it, and a request prefilled on the prefill replica joins
    the batch with those then queued ahead of it; either way its few decode iterations each carry
    a full budget of their chunks (``capacity._latencies_in_mix`` with ``prefill_share``).

    Replay over model, when written: the local requests' p99 TPOT 1.19-1.23 (1.46-1.82 with the
    decoding life alone, as before); the remote ones' p90 0.86-1.15 and p99 1.23-1.43 (1.25-1.81
    before: the queue's time-average work, ``capacity.time_average_work``, is short of what a
    request that comes in a burst meets). Asserted: local p99 within 25% and more than 1.4x short
    without the backlog; remote p90 within 25%, p99 within 50% and nearer than without. The local
    prompts' TTFT is within 25% at p90 and p99 (1.05-1.14); a remote prompt's is the prefill
    replica's (inf here), to which the decode replica adds the time from the KV's arrival to the
    end of its next iteration (``capacity.decode_first_token_delay_s``): within 25% of the
    replay's at p90 and p99 (1.13-1.18 and 0.96-0.98 when written; the TPOT target that stood
    for it before is a constant; at p50 the time-average work errs low under CV² 7.3: 4.9x)."""
    from llmfleet.perf.capacity import WAIT_PROBS, Burstiness, decode_first_token_delay_s, latencies_at_rate
    from llmfleet.sim.engine import Simulation
    from llmfleet.sim.scenario import SimGroup, SimWorkload
    from llmfleet.workload.demand import bucket_index, demand_from_trace

    model, gpu = resolve_model("meta-llama/Llama-3.1-8B-Instruct"), get_gpu("H100-SXM")
    inp, out = np.array([1500.0, 6000.0]), np.array([12.0, 8.0])
    local_share = np.array([1.0, 0.0])
    i, j = bucket_index(inp, out)
    for seed, c_a2 in enumerate((3.7, 7.3)):
        rng = np.random.default_rng(seed)
        n = 12 * 3600
        arrival = np.cumsum(rng.gamma(1.0 / c_a2, c_a2 / 12.0, n))
        long = rng.random(n) < 1.0 / 6.0
        requests = pd.DataFrame({"arrival_s": arrival, "input_tokens": np.where(long, 6000, 1500),
                                 "output_tokens": np.where(long, 8, 12)})
        mix = np.bincount(long.astype(int), minlength=2) / (arrival[-1] - arrival[0])
        w = SimWorkload("test/local-prefill", model, ttft_s=10.0, tpot_s=1.0, percentile=99.0,
                        gpu_memory_utilization=0.9, buckets=[(int(a), int(b)) for a, b in zip(i, j)],
                        groups=[SimGroup("prefill", "pool", gpu, 4, 1, mix * (1.0 - local_share), "net", 1e12),
                                SimGroup("decode", "pool", gpu, 2, 1, mix, "net", 1e12)],
                        pd_threshold_tokens=4000)
        sim = Simulation(w, requests)
        sim.run()
        rq = sim.rq
        assert np.all(rq.decode_group[long] == 1) and np.all(rq.entry_group[~long] == 1)  # local and remote as planned
        tpot = (rq.finish - rq.first) / (rq.out - 1)
        ttft = rq.first - rq.arrival
        replayed = np.array([np.percentile(tpot[~long], 99.0), np.percentile(tpot[long], 99.0)])
        d = demand_from_trace(requests)
        burst = Burstiness(d.arrival_scv, 0.0, queue_arrival_scv=d.arrival_scv_at(1.0), arrival_idc=d.arrival_idc,
                           followers=d.arrival_followers)

        def model_at(pct):
            return latencies_at_rate(model, gpu, 2, inp, out, mix, [pct], burst=burst, mix_rps=mix,
                                     prefill_share=local_share)[0]

        with_backlog = model_at(99.0)[1]
        with monkeypatch.context() as m:
            m.setattr(capacity_module, "after_backlog_tpot_s", lambda tpot_s, *args, **kwargs: tpot_s)
            life_only = model_at(99.0)[1]
        (local, remote), before = replayed / with_backlog, replayed / life_only
        assert local == pytest.approx(1.0, rel=0.25) and before[0] > 1.4, c_a2
        assert 0.75 <= remote < min(1.5, before[1]), c_a2
        remote_p90 = np.percentile(tpot[long], 90.0) / model_at(90.0)[1][1]
        assert remote_p90 == pytest.approx(1.0, rel=0.25), c_a2
        # a remote request's first token comes at the end of the decode replica's next iteration
        # (the KV transfer here takes no time): full of local prompt chunks in a backlog
        delay = decode_first_token_delay_s(model, gpu, 2, inp, out, mix, burst=burst, prefill_share=local_share)
        after_prefill = (rq.first - rq.prefill_end)[long]
        for pct in (90.0, 99.0):
            predicted = float(np.interp(pct / 100.0, WAIT_PROBS, delay))
            assert np.percentile(after_prefill, pct) / predicted == pytest.approx(1.0, rel=0.25), (c_a2, pct)
        for pct in (90.0, 99.0):
            ttft_local = model_at(pct)[0]
            assert np.isinf(ttft_local[1])  # the remote prompts' TTFT is the prefill replica's
            assert np.percentile(ttft[~long], pct) / ttft_local[0] == pytest.approx(1.0, rel=0.25), (c_a2, pct)
