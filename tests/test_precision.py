"""Serving precision (spec.serving.quantization, kvCacheDtype): bytes, peaks, flags and refusals.

Expected values come from the definitions, not from the code: FP8 and INT8 weights are 1 byte,
NVFP4 half a byte, an FP8 KV element 1 byte (vLLM quantization docs); peaks from the datasheets in
llmfleet/catalog/gpus.csv (H100-SXM: 989 TFLOPS BF16, 1979 FP8 dense).
"""

import numpy as np
import pytest

from llmfleet.catalog.gpus import get_gpu
from llmfleet.catalog.models import resolve_model
from llmfleet.perf.capacity import kv_capacity_tokens
from llmfleet.perf.precision import unsupported, vllm_flags, with_precision
from llmfleet.perf.steptime import decode_time_s, prefill_time_s

from test_bad_input import POOL, WORKLOAD, assert_refused, plan_files, run

LLAMA_8B = resolve_model("meta-llama/Llama-3.1-8B-Instruct")


def test_bytes_per_weight_and_kv_element():
    assert with_precision(LLAMA_8B, "bf16", "auto").weight_bytes == pytest.approx(LLAMA_8B.params_billion * 2e9)
    assert with_precision(LLAMA_8B, "fp8", "auto").weight_bytes == pytest.approx(LLAMA_8B.params_billion * 1e9)
    assert with_precision(LLAMA_8B, "int8", "auto").weight_bytes == pytest.approx(LLAMA_8B.params_billion * 1e9)
    assert with_precision(LLAMA_8B, "fp4", "auto").weight_bytes == pytest.approx(LLAMA_8B.params_billion * 0.5e9)
    kv16 = with_precision(LLAMA_8B, "bf16", "auto").kv_bytes_per_token
    # Llama-3.1-8B: 32 layers x 8 KV heads x 128 head dim x (K and V) x 2 bytes = 131072 bytes per token
    assert kv16 == pytest.approx(32 * 8 * 128 * 2 * 2)
    assert with_precision(LLAMA_8B, "bf16", "fp8").kv_bytes_per_token == pytest.approx(kv16 / 2)


def test_gemm_peaks_by_dtype_and_architecture():
    h100, a100 = get_gpu("H100-SXM"), get_gpu("A100-80G")
    assert h100.peak_flops_for("bf16") == 989e12 and h100.peak_flops_for("fp8") == 1979e12
    # Ampere has no FP8 tensor cores: vLLM runs FP8 checkpoints weight-only (W8A16), GEMMs in BF16
    assert a100.peak_flops_for("fp8") == a100.peak_flops_for("bf16") == 312e12


def test_fp8_speeds_up_compute_bound_prefill_only_where_fp8_tensor_cores_exist():
    fp8 = with_precision(LLAMA_8B, "fp8", "auto")
    h100, a100 = get_gpu("H100-SXM"), get_gpu("A100-80G")
    n = 8192  # a long prompt: compute-bound
    assert prefill_time_s(fp8, h100, 1, n) < 0.7 * prefill_time_s(LLAMA_8B, h100, 1, n)
    assert prefill_time_s(fp8, a100, 1, n) == pytest.approx(prefill_time_s(LLAMA_8B, a100, 1, n), rel=0.1)
    # memory-bound decode streams half the weight bytes on both
    for gpu in (h100, a100):
        assert decode_time_s(fp8, gpu, 1, 8, 8 * 1000) < decode_time_s(LLAMA_8B, gpu, 1, 8, 8 * 1000)


def test_fp8_kv_doubles_the_kv_cache():
    h100 = get_gpu("H100-SXM")
    bf16 = kv_capacity_tokens(LLAMA_8B, h100, 1)
    assert kv_capacity_tokens(with_precision(LLAMA_8B, "bf16", "fp8"), h100, 1) == pytest.approx(2 * bf16)


def test_which_gpus_run_what():
    assert unsupported(get_gpu("A100-80G"), "fp8", "auto") is None  # W8A16 on Ampere
    assert "fp4" in unsupported(get_gpu("H100-SXM"), "fp4", "auto")
    assert unsupported(get_gpu("B200"), "fp4", "fp8") is None
    assert "int8" in unsupported(get_gpu("MI300X"), "int8", "auto")
    assert "kvCacheDtype" in unsupported(get_gpu("A100-80G"), "bf16", "fp8")
    assert unsupported(get_gpu("L40S"), "fp8", "fp8") is None


def test_flags_match_vllm():
    assert vllm_flags("bf16", "auto") == []
    assert vllm_flags("fp8", "fp8") == ["--quantization", "fp8", "--kv-cache-dtype", "fp8"]
    assert vllm_flags("int8", "auto") == [] and vllm_flags("fp4", "auto") == []  # the checkpoint says it


@pytest.mark.parametrize("serving,field", [
    ("quantization: fp4", "spec.serving.quantization fp4 does not run on H100-SXM"),
    ("kvCacheDtype: fp8", None),
])
def test_a_precision_no_pool_runs_is_refused_naming_the_field(tmp_path, serving, field):
    w = WORKLOAD.replace("minReplicas: 1}", f"minReplicas: 1, {serving}}}")
    if field is None:  # fp8 KV runs on H100: accepted; on an A100-only fleet: refused
        assert run("plan", "-f", plan_files(tmp_path, w), "-q", "--no-baseline").returncode == 0
        a100 = POOL.replace("H100-SXM", "A100-80G").replace("costPerGPUHour: 6.9", "costPerGPUHour: 4")
        assert_refused(run("plan", "-f", plan_files(tmp_path, w, a100)), "LLMWorkload/team-a/chat",
                       "spec.serving.kvCacheDtype fp8 does not run on A100-80G")
    else:
        assert_refused(run("plan", "-f", plan_files(tmp_path, w)), "workload.yaml", "LLMWorkload/team-a/chat", field)


def test_fp8_plans_cheaper_and_renders_the_flag(tmp_path):
    import json

    w8 = WORKLOAD.replace("minReplicas: 1}", "minReplicas: 1, quantization: fp8, kvCacheDtype: fp8}").replace(
        "requestRatePerSecond: 2", "requestRatePerSecond: 30")
    w16 = WORKLOAD.replace("requestRatePerSecond: 2", "requestRatePerSecond: 30")
    cost = {}
    for name, w in (("fp8", w8), ("bf16", w16)):
        d = tmp_path / name
        d.mkdir()
        r = run("plan", "-f", plan_files(d, w), "-o", "json", "--no-baseline", "-q")
        assert r.returncode == 0, r.stderr
        cost[name] = json.loads(r.stdout)["costPerHour"]
    assert cost["fp8"] < cost["bf16"]

    from llmfleet.api.models import LLMWorkload
    from llmfleet.operator.render import vllm_args
    from llmfleet.solver.plan import Assignment
    import yaml
    wl = LLMWorkload.model_validate(yaml.safe_load(w8))
    a = Assignment(workload="team-a/chat", pool="h100", gpu_type="H100-SXM", tp=1, replicas=1, gpus=1,
                   cost_per_hour=1.0, rate_rps=1.0, utilization=0.5, bucket_rate_rps=np.zeros(1))
    args = vllm_args(wl, a)
    assert args[args.index("--quantization") + 1] == "fp8" and args[args.index("--kv-cache-dtype") + 1] == "fp8"


def test_scheduler_limits_are_modelled_rendered_and_simulated(tmp_path):
    """spec.serving.maxNumSeqs bounds the batch in the capacity model, is rendered as vLLM's flag,
    and travels with the plan to the simulator; unset, nothing is rendered."""
    import json

    import yaml

    from llmfleet.api.models import LLMWorkload
    from llmfleet.operator.render import vllm_args
    from llmfleet.perf.capacity import capacity_rps
    from llmfleet.solver.plan import Assignment

    h100 = get_gpu("H100-SXM")
    inp, out = np.array([200.0]), np.array([400.0])  # short prompts, long answers: batch-bound
    kappa = {n: capacity_rps(LLAMA_8B, h100, 1, inp, out, 5.0, 0.2, 90, max_num_seqs=n)[0] for n in (32, 256, 1024)}
    assert kappa[32] < kappa[256] <= kappa[1024]

    w = WORKLOAD.replace("minReplicas: 1}", "minReplicas: 1, maxNumSeqs: 512, maxNumBatchedTokens: 4096}")
    wl = LLMWorkload.model_validate(yaml.safe_load(w))
    a = Assignment(workload="team-a/chat", pool="h100", gpu_type="H100-SXM", tp=1, replicas=1, gpus=1,
                   cost_per_hour=1.0, rate_rps=1.0, utilization=0.5, bucket_rate_rps=np.zeros(1))
    args = vllm_args(wl, a)
    assert args[args.index("--max-num-seqs") + 1] == "512" and args[args.index("--max-num-batched-tokens") + 1] == "4096"
    assert "--max-num-seqs" not in vllm_args(LLMWorkload.model_validate(yaml.safe_load(WORKLOAD)), a)

    r = run("plan", "-f", plan_files(tmp_path, w), "-o", "json", "--no-baseline", "-q")
    assert r.returncode == 0, r.stderr
    sc = json.loads(r.stdout)["scenario"]["workloads"][0]
    assert (sc["maxNumSeqs"], sc["maxNumBatchedTokens"]) == (512, 4096)
    from llmfleet.sim.scenario import from_document
    sim = from_document(json.loads(r.stdout))[0]
    assert (sim.max_num_seqs, sim.max_num_batched_tokens) == (512, 4096)
    import pandas as pd

    from llmfleet.sim.engine import Simulation
    trace = pd.DataFrame({"arrival_s": [0.0, 0.1], "input_tokens": [200, 300], "output_tokens": [50, 60]})
    replica = Simulation(sim, trace).replicas[0][0]
    assert (replica.max_seqs, replica.budget) == (512, 4096)


def test_fp8_is_what_fits_llama_405b_on_one_h100_node():
    """405 billion weights: 810 GB in BF16 exceed 8 x 80 GB; 405 GB in FP8 fit (0.9 of memory usable)."""
    from llmfleet.perf.capacity import weights_fit

    llama_405b = resolve_model("meta-llama/Llama-3.1-405B-Instruct")
    h100, h200 = get_gpu("H100-SXM"), get_gpu("H200")
    assert not weights_fit(llama_405b, h100, 8)
    assert weights_fit(with_precision(llama_405b, "fp8", "auto"), h100, 8)
    assert weights_fit(llama_405b, h200, 8)  # 8 x 141 GB hold the BF16 weights
    assert resolve_model("deepseek-ai/DeepSeek-R1-Distill-Llama-70B").kv_bytes_per_token == \
        resolve_model("meta-llama/Llama-3.3-70B-Instruct").kv_bytes_per_token
