"""Trace-driven discrete-event simulation of a plan: vLLM-style continuous batching per replica.

Each request of a trace arrives at its recorded time (compressed by the workload's ``rateScale``)
and is routed as the deployed router would route it (``scenario.ROUTERS``). With llm-d's endpoint
picker (``load-aware``) every request first gets the least-loaded decode-capable replica over all
the workload's colocated and decode groups (the EPP's ``decode-filter`` admits pods labelled
``decode`` and pods without a P/D role; its load scorers are approximated by join-shortest-queue
on outstanding requests). A colocated replica serves the request whole; so does a decode replica
when the prompt is shorter than the plan's P/D threshold (its sidecar sees no prefill pick and
passes the request to the local vLLM). A longer prompt on a decode replica is first prefilled on
the least-loaded prefill replica, whose KV cache then moves to that decode replica (the sidecar's
prefill-then-decode handshake); the transfer takes KV bytes / min(sender, receiver bandwidth).
Behind a plain Service (``uniform``) a request goes to a pod at random. ``plan-shares`` (the
plan's per-bucket shares, then join-shortest-queue in the group) is kept for comparison: it uses
each request's output length, which no router knows.

A replica runs iterations as vLLM's scheduler does (V1: decodes first, then prompt chunks in the
token budget ``max_num_batched_tokens``, at most ``max_num_seqs`` sequences; a prompt is admitted
only when its KV fits; when a decode step does not fit the KV cache the newest request is
preempted and recomputed later). Each iteration takes ``perf.steptime.step_time_s`` of its mixed
batch: the same calibrated roofline the planner's capacity model uses, so the simulation checks
the planner's queueing and batching assumptions (M/D/1, Little's law, Poisson interference), not
the step-time fit itself; ``bench/sim_accuracy.py`` compares both with measurements.

Speed: between two events that change a replica's batch (an admission, a completion, a KV limit)
a decode-only replica advances many iterations in one vectorised step (their step times are
computed together), and an arrival in the middle of such a run cuts it at the iteration in
progress. One hour of the Azure conversation trace (19k requests) takes a few seconds.

TTFT is the time from arrival to the first token a client sees: the end of the prefill iteration
for a colocated replica, the end of the first decode iteration on the decode replica for P/D.
TPOT is (finish - first token) / (output tokens - 1), as vLLM's benchmark defines it.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import pandas as pd

from llmfleet.perf.capacity import kv_capacity_tokens, scheduler_limits
from llmfleet.perf.steptime import PerfParams, decode_time_s, load_profile, step_time_s
from llmfleet.sim.scenario import SimGroup, SimWorkload

MAX_JUMP_STEPS = 4096
"""most decode iterations advanced in one vectorised step (bounds the arrays, not the result)"""


class _Requests:
    """State of every request, indexed by request id (numpy arrays, shape (N,))."""

    def __init__(self, arrival_s: np.ndarray, input_tokens: np.ndarray, output_tokens: np.ndarray):
        n = len(arrival_s)
        self.arrival = arrival_s
        self.inp = input_tokens.astype(np.int64)
        self.out = np.maximum(output_tokens.astype(np.int64), 1)
        self.pre_total = np.zeros(n, dtype=np.int64)  # tokens to prefill on the current replica
        self.pre_done = np.zeros(n, dtype=np.int64)
        self.gen = np.zeros(n, dtype=np.int64)  # tokens generated on the current replica
        self.kv = np.zeros(n, dtype=np.int64)  # KV tokens held on the current replica
        self.first = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.prefill_end = np.full(n, np.nan)  # end of the iteration that completed the prompt
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.entry_group = np.full(n, -1)
        self.entry_replica = np.full(n, -1)  # the entry replica's index within its entry group
        self.decode_group = np.full(n, -1)


class Replica:
    """One vLLM instance (a TP group) of a group."""

    def __init__(self, sim: "Simulation", group: SimGroup, w: SimWorkload, p: PerfParams,
                 max_num_seqs: int | None, max_batched_tokens: int | None):
        self.sim, self.g = sim, group
        if group.compute_scale < 1.0:  # a power-capped group: its steps compute at the capped clock
            p = dataclasses.replace(p, eff_compute=p.eff_compute * group.compute_scale)
        self.model, self.p = w.model, p
        self.kv_cap = max(int(kv_capacity_tokens(w.model, group.gpu, group.tp, w.gpu_memory_utilization)), 1)
        self.max_seqs, self.budget = scheduler_limits(group.gpu, max_num_seqs, max_batched_tokens)
        self.waiting: deque[int] = deque()
        self.prefilling: list[int] = []
        self.running: list[int] = []
        self.kv_used = 0
        self.outstanding = 0  # routed here and not yet finished or handed off (for JSQ)
        self.busy_s = 0.0
        self.batch_s = 0.0  # ∫ decode batch size dt, for the time-average batch
        self.version = 0
        self.busy = False
        # the iteration(s) in progress: start time and, for a decode-only run, the cumulative
        # end times of its iterations relative to the start (None for one mixed iteration)
        self.run_start = 0.0
        self.run_cum: np.ndarray | None = None
        self.chunks: list[tuple[int, int]] = []  # prompt chunks of the mixed iteration in progress

    # ---------------------------------------------------------------- admission and scheduling
    def enqueue(self, r: int, now: float) -> None:
        self.waiting.append(r)
        if not self.busy:
            self._start(now)
        elif self.run_cum is not None:
            self._cut_run(now)

    def _cut_run(self, now: float) -> None:
        """End the decode-only run at the iteration in progress at ``now``."""
        cum = self.run_cum
        j = int(np.searchsorted(cum, now - self.run_start, side="right"))
        if j + 1 >= len(cum):
            return
        self.run_cum = cum[: j + 1]
        self.version += 1
        self.sim.push(self.run_start + cum[j], ("iter", self, self.version))

    def _admit(self, rq: _Requests) -> None:
        while self.waiting and len(self.prefilling) + len(self.running) < self.max_seqs:
            r = self.waiting[0]
            need = int(rq.pre_total[r]) if rq.pre_total[r] > 0 else int(rq.inp[r] + rq.gen[r])
            if self.kv_used + need > self.kv_cap and (self.running or self.prefilling):
                break  # wait for memory (a lone request larger than the cache runs anyway)
            self.waiting.popleft()
            rq.kv[r] = need
            self.kv_used += need
            if rq.pre_done[r] < rq.pre_total[r]:
                self.prefilling.append(r)
            else:
                self.running.append(r)

    def _release(self, rq: _Requests, r: int) -> None:
        """Request ``r`` leaves this replica (finished or handed off): free its KV cache."""
        self.kv_used -= int(rq.kv[r])
        rq.kv[r] = 0
        self.outstanding -= 1

    def _preempt_for_decode(self, rq: _Requests) -> None:
        """vLLM's recompute preemption: free the newest running request until a step fits."""
        while self.running and self.kv_used + len(self.running) > self.kv_cap and len(self.running) > 1:
            r = self.running.pop()
            self.kv_used -= int(rq.kv[r])
            rq.kv[r] = 0
            rq.pre_total[r] = rq.inp[r] + rq.gen[r]  # recompute the prompt and what was generated
            rq.pre_done[r] = 0
            rq.preemptions[r] += 1
            self.waiting.appendleft(r)

    def _start(self, now: float) -> None:
        rq = self.sim.rq
        self._admit(rq)
        self._preempt_for_decode(rq)
        if not self.prefilling and not self.running:
            self.busy = False
            self.run_cum = None
            return
        self.busy = True
        self.version += 1
        b = len(self.running)
        ctx = float(rq.kv[self.running].sum()) if b else 0.0
        room = self.budget - b
        if self.prefilling and room > 0:
            # one mixed iteration: every decode plus prompt chunks in the remaining token budget
            chunks = []
            for r in self.prefilling:
                if room <= 0:
                    break
                c = int(min(rq.pre_total[r] - rq.pre_done[r], room))
                chunks.append((r, c))
                room -= c
            n = sum(c for _, c in chunks)
            pairs = sum(c * float(rq.pre_done[r]) + c * c / 2.0 for r, c in chunks)
            dt = float(step_time_s(self.model, self.g.gpu, self.g.tp, n, pairs, b, ctx, self.p))
            self.chunks = chunks
            self.run_cum = None
            self.run_start = now
            self.sim.push(now + dt, ("iter", self, self.version))
            return
        # decode-only run: as many iterations as nothing changes the batch
        self.chunks = []
        out_left = rq.out[self.running] - rq.gen[self.running]
        k = int(min(out_left.min(), MAX_JUMP_STEPS))
        if b:
            k = max(min(k, (self.kv_cap - self.kv_used) // b), 1)
        steps = np.arange(k, dtype=float)
        cum = np.cumsum(decode_time_s(self.model, self.g.gpu, self.g.tp, b, ctx + b * steps, self.p))
        self.run_start = now
        self.run_cum = cum
        self.sim.push(now + cum[-1], ("iter", self, self.version))

    # ---------------------------------------------------------------- iteration end
    def finish_iteration(self, now: float) -> None:
        rq = self.sim.rq
        if self.run_cum is not None:
            k = len(self.run_cum)
            first_step_end = self.run_start + self.run_cum[0]
        else:
            k = 1
            first_step_end = now
        self.busy_s += now - self.run_start
        self.batch_s += len(self.running) * (now - self.run_start)
        self.run_cum = None
        # decodes: k tokens each
        if self.running:
            idx = np.asarray(self.running)
            fresh = idx[np.isnan(rq.first[idx])]
            rq.first[fresh] = first_step_end
            rq.gen[idx] += k
            rq.kv[idx] += k
            self.kv_used += k * len(idx)
            done = idx[rq.gen[idx] >= rq.out[idx]]
            if len(done):
                rq.finish[done] = now
                for r in done.tolist():
                    self._release(rq, r)
                done_set = set(done.tolist())
                self.running = [r for r in self.running if r not in done_set]
        # prompt chunks
        for r, c in self.chunks:
            rq.pre_done[r] += c
            if rq.pre_done[r] < rq.pre_total[r]:
                continue
            self.prefilling.remove(r)
            rq.pre_total[r] = rq.pre_done[r] = 0
            if np.isnan(rq.prefill_end[r]):
                rq.prefill_end[r] = now
            if self.g.role == "prefill":
                self._release(rq, r)
                self.sim.hand_off(r, self, now)
                continue
            if np.isnan(rq.first[r]):  # a colocated prefill emits the first token
                rq.first[r] = now
                rq.gen[r] += 1
            if rq.gen[r] >= rq.out[r]:
                rq.finish[r] = now
                self._release(rq, r)
            else:
                self.running.append(r)
        self.chunks = []
        self._start(now)


@dataclass
class GroupResult:
    """Per group: requests routed, GPU busy fraction (iterations running / span) per replica, mean."""

    name: str
    role: str
    replicas: int
    requests: int
    busy_fraction: float
    attainment: float
    """share of the requests this group served (entry or decode) that met both SLOs"""
    mean_batch: float = 0.0
    """decode batch size averaged over the time the replicas ran iterations"""
    bucket_requests: np.ndarray | None = None
    """shape (S,): requests of each of the plan's size buckets this group served"""
    bucket_own_met: np.ndarray | None = None
    """shape (S,): of those, the ones that met the latency this group's role decides (prefill:
    TTFT; decode: TPOT; colocated: both): what a repair of this group can mend"""
    ttft_s: float = float("nan")
    """TTFT of this group's requests at the SLO percentile, s (prefill and colocated groups)"""
    tpot_s: float = float("nan")
    """TPOT of this group's requests at the SLO percentile, s (decode and colocated groups)"""


@dataclass
class SimulationResult:
    """Simulated latency and SLO attainment of one workload.

    TTFT/TPOT percentiles in seconds; ``attainment`` is the share of requests that met both
    targets (unfinished requests count as misses); ``goodput_rps`` = requests meeting both / span.
    """

    workload: str
    requests: int
    finished: int
    span_s: float
    ttft_p50_s: float
    ttft_p90_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    tpot_p90_s: float
    tpot_p99_s: float
    attainment: float
    target_percentile: float
    goodput_rps: float
    gpu_busy_fraction: float
    preemptions: int
    groups: list[GroupResult]

    @property
    def meets_target(self) -> bool:
        return self.attainment * 100.0 >= self.target_percentile - 1e-9

    def to_dict(self) -> dict:
        r = lambda v, d=4: None if v is None or (isinstance(v, float) and math.isnan(v)) else round(v, d)  # noqa: E731
        return {
            "workload": self.workload, "requests": self.requests, "finished": self.finished, "spanSeconds": r(self.span_s, 1),
            "ttftSeconds": {"p50": r(self.ttft_p50_s), "p90": r(self.ttft_p90_s), "p99": r(self.ttft_p99_s)},
            "tpotSeconds": {"p50": r(self.tpot_p50_s, 5), "p90": r(self.tpot_p90_s, 5), "p99": r(self.tpot_p99_s, 5)},
            "sloAttainment": r(self.attainment), "targetPercentile": self.target_percentile,
            "meetsTarget": self.meets_target, "goodputRps": r(self.goodput_rps), "gpuBusyFraction": r(self.gpu_busy_fraction),
            "preemptions": self.preemptions,
            "groups": [{"group": g.name, "role": g.role, "replicas": g.replicas, "requests": g.requests,
                        "busyFraction": r(g.busy_fraction), "sloAttainment": r(g.attainment),
                        "ttftSecondsAtPercentile": r(g.ttft_s), "tpotSecondsAtPercentile": r(g.tpot_s, 5)}
                       for g in self.groups],
        }


class Simulation:
    """Replay one workload's requests against its groups (see the module docstring)."""

    def __init__(self, w: SimWorkload, trace: pd.DataFrame, seed: int = 0, p: PerfParams | None = None,
                 max_num_seqs: int | None = None, max_batched_tokens: int | None = None,
                 reject_unplanned: bool = False, router: str | None = None):
        """Args:
            seed: of the routing draws. p: step-time calibration (default: the plan's profile).
            router: ``scenario.ROUTERS`` (default: the workload's, i.e. the deployed router).
            max_num_seqs, max_batched_tokens: vLLM's scheduler limits (default: vLLM's defaults for
                each group's GPU, ``perf.capacity.scheduler_limits``).
            reject_unplanned: drop requests of sizes the plan routes nowhere (a plan that sheds
                them, behind a gateway that enforces it); they count as SLO misses. By default
                they are routed like the rest, as happens without admission control.
        """
        if not w.groups:
            raise ValueError(f"{w.key}: the plan gives it no replicas")
        self.w = w
        self.router = router or w.router
        self.p = p or load_profile(w.performance_profile)
        t = trace.sort_values("arrival_s", kind="stable")
        arrival = t["arrival_s"].to_numpy(dtype=float)
        arrival = (arrival - arrival[0]) / w.rate_scale
        self.rq = _Requests(arrival, t["input_tokens"].to_numpy(), t["output_tokens"].to_numpy())
        self.rng = np.random.default_rng(seed)
        self.heap: list = []
        self.seq = 0
        # the workload's own scheduler limits (spec.serving) win over the defaults given here
        seqs, budget = w.max_num_seqs or max_num_seqs, w.max_num_batched_tokens or max_batched_tokens
        self.replicas = [[Replica(self, g, w, self.p, seqs, budget) for _ in range(g.replicas)]
                         for g in w.groups]
        self.replica_index = {id(rep): k for reps in self.replicas for k, rep in enumerate(reps)}
        self.bucket = w.bucket_of(self.rq.inp, self.rq.out)
        self.reject_unplanned = reject_unplanned
        entry = [gi for gi, g in enumerate(w.groups) if g.role != "decode"]
        self.entry = entry
        # where the router's decode profile picks (colocated and decode pods) and its prefill profile
        self.decode_capable = [gi for gi, g in enumerate(w.groups) if g.role != "prefill"]
        self.prefill_groups = [gi for gi, g in enumerate(w.groups) if g.role == "prefill"]
        self.destination: dict[int, Replica] = {}  # request -> decode replica picked at arrival
        self.entry_weights = self._weights(entry)
        # planned[b]: the plan routes bucket b somewhere (index -1, sizes outside every bucket: no)
        self.planned = np.append(np.array([sum(w.groups[gi].bucket_rate_rps[b] for gi in entry) > 0
                                           for b in range(len(w.buckets))], dtype=bool), False)
        self.decode_by_domain: dict[str, tuple[list[int], np.ndarray]] = {}
        for d in {g.kv_domain for g in w.groups if g.role == "decode"}:
            members = [gi for gi, g in enumerate(w.groups) if g.role == "decode" and g.kv_domain == d]
            self.decode_by_domain[d] = (members, self._weights(members))

    def _weights(self, members: list[int]) -> np.ndarray:
        """Routing probabilities, shape (S + 1, len(members)); the last row (sizes the plan has no
        bucket for) follows the groups' total rates, or their replicas when the plan routes none."""
        if not members:
            return np.zeros((len(self.w.buckets) + 1, 0))
        # (S, M); solver round-off can leave shares of -1e-12
        rates = np.clip(np.array([self.w.groups[gi].bucket_rate_rps for gi in members]).T, 0.0, None)
        total = rates.sum(axis=0, keepdims=True)
        if total.sum() <= 0:
            total = np.array([[float(self.w.groups[gi].replicas) for gi in members]])
        rates = np.vstack([rates, total])
        fallback = total / total.sum()
        s = rates.sum(axis=1, keepdims=True)
        return np.where(s > 0, rates / np.where(s > 0, s, 1.0), fallback)

    def push(self, t: float, ev: tuple) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, ev))

    def _pick(self, members: list[int], weights: np.ndarray, b: int) -> int:
        row = weights[b]
        return members[int(self.rng.choice(len(members), p=row))] if len(members) > 1 else members[0]

    @staticmethod
    def _jsq(replicas: list[Replica]) -> Replica:
        return min(replicas, key=lambda rep: rep.outstanding)

    def _least_loaded(self, members: list[int]) -> tuple[int, Replica]:
        """The group and replica with the fewest outstanding requests over all ``members``, ties
        broken at random (the EPP's max-score-picker picks at random among equal scores), so no
        group is favoured for coming first."""
        best, ties = None, []
        for gi in members:
            for rep in self.replicas[gi]:
                if best is None or rep.outstanding < best:
                    best, ties = rep.outstanding, [(gi, rep)]
                elif rep.outstanding == best:
                    ties.append((gi, rep))
        return ties[int(self.rng.integers(len(ties)))] if len(ties) > 1 else ties[0]

    def _pick_uniform(self) -> tuple[int, Replica]:
        """kube-proxy: any pod the Service selects (colocated ones; P/D is never planned behind a
        Service), every pod alike."""
        groups = self.w.groups
        members = [gi for gi in self.entry if groups[gi].role == "colocated"] or self.entry
        pods = [(gi, rep) for gi in members for rep in self.replicas[gi]]
        return pods[int(self.rng.integers(len(pods)))]

    def route(self, r: int, now: float) -> None:
        """Request ``r`` arrives at ``now`` (s): place it as the router does (module docstring)."""
        if not self.entry:
            return  # no colocated or prefill group: the request is never served
        b = self.bucket[r]
        if self.reject_unplanned and not self.planned[b]:
            return
        if self.router == "plan-shares":
            gi = self._pick(self.entry, self.entry_weights, b)
            rep = self._jsq(self.replicas[gi])
        elif self.router == "uniform":
            gi, rep = self._pick_uniform()
        else:
            gi, rep = self._least_loaded(self.decode_capable or self.entry)
            threshold = self.w.pd_threshold_tokens
            long_prompt = threshold is None or self.rq.inp[r] >= threshold
            if self.w.groups[gi].role == "decode":
                self.rq.decode_group[r] = gi
                if long_prompt and self.prefill_groups:
                    self.destination[r] = rep  # the sidecar prefills remotely, then decodes here
                    rep.outstanding += 1  # the picker counts it on the decode pod from the start
                    gi, rep = self._least_loaded(self.prefill_groups)
        self.rq.entry_group[r] = gi
        self.rq.entry_replica[r] = self.replica_index[id(rep)]
        self.rq.pre_total[r] = self.rq.inp[r]
        rep.outstanding += 1
        rep.enqueue(r, now)

    def hand_off(self, r: int, src: Replica, now: float) -> None:
        """A prefill finished: send its KV cache to the request's decode replica (the one picked at
        arrival; under ``plan-shares``, one of the prefill replica's KV-transfer domain)."""
        dst = self.destination.pop(r, None)
        if dst is None:
            dst = self._decode_replica(r, src)
            if dst is None:
                return  # nowhere to decode: the request never finishes (counts as a miss)
            dst.outstanding += 1
        bw = min(src.g.tp * src.g.kv_bytes_per_s_per_gpu, dst.g.tp * dst.g.kv_bytes_per_s_per_gpu)
        self.rq.gen[r] = 0
        self.push(now + float(self.rq.inp[r]) * self.w.model.kv_bytes_per_token / bw, ("kv", dst, r))

    def _decode_replica(self, r: int, src: Replica) -> Replica | None:
        """A decode replica of the prefill replica's KV domain for a request routed without one
        (``plan-shares``, or a plan with no decode-capable group picked at arrival)."""
        members, weights = self.decode_by_domain.get(src.g.kv_domain, ([], None))
        if not members:
            return None
        if self.router == "plan-shares":
            gi = self._pick(members, weights, self.bucket[r])
            rep = self._jsq(self.replicas[gi])
        else:
            gi, rep = self._least_loaded(members)
        self.rq.decode_group[r] = gi
        return rep

    def run(self) -> SimulationResult:
        rq = self.rq
        n = len(rq.arrival)
        nxt = 0
        heap = self.heap
        while nxt < n or heap:
            if nxt < n and (not heap or rq.arrival[nxt] <= heap[0][0]):
                self.route(nxt, float(rq.arrival[nxt]))
                nxt += 1
                continue
            t, _, ev = heapq.heappop(heap)
            if ev[0] == "iter":
                rep, version = ev[1], ev[2]
                if version == rep.version:
                    rep.finish_iteration(t)
            else:  # "kv": the KV cache reached the decode replica
                ev[1].enqueue(ev[2], t)
        return self._result()

    def _result(self) -> SimulationResult:
        rq, w = self.rq, self.w
        ttft = rq.first - rq.arrival
        tpot = np.where(rq.out > 1, (rq.finish - rq.first) / np.maximum(rq.out - 1, 1), 0.0)
        finished = ~np.isnan(rq.finish)
        ttft_ok = finished & (ttft <= w.ttft_s + 1e-9)
        tpot_ok = finished & (tpot <= w.tpot_s + 1e-9)
        good = ttft_ok & tpot_ok
        # a P/D request's TTFT is its prefill group's doing, its TPOT its decode group's
        own_ok = {"prefill": ttft_ok, "decode": tpot_ok}
        span = float(max(np.nanmax(rq.finish) if finished.any() else 0.0, rq.arrival[-1]) - rq.arrival[0]) or 1.0
        q = lambda a, pct: float(np.percentile(a[finished], pct)) if finished.any() else float("nan")  # noqa: E731
        groups, gpu_busy, gpus = [], 0.0, 0
        for gi, (g, reps) in enumerate(zip(w.groups, self.replicas)):
            mine = (rq.decode_group == gi) if g.role == "decode" else (rq.entry_group == gi)
            busy = float(np.mean([rep.busy_s for rep in reps])) / span if reps else 0.0
            busy_total = sum(rep.busy_s for rep in reps)
            in_bucket = mine & (self.bucket >= 0)
            counts = np.bincount(self.bucket[in_bucket], minlength=len(w.buckets))
            own = np.bincount(self.bucket[in_bucket & own_ok.get(g.role, good)], minlength=len(w.buckets))
            done = mine & finished
            pct = lambda a: float(np.percentile(a[done], w.percentile)) if done.any() else float("nan")  # noqa: E731
            groups.append(GroupResult(g.name, g.role, g.replicas, int(mine.sum()), busy,
                                      float(good[mine].mean()) if mine.any() else float("nan"),
                                      sum(rep.batch_s for rep in reps) / busy_total if busy_total else 0.0,
                                      counts, own, pct(ttft), pct(tpot)))
            gpu_busy += busy * g.replicas * g.tp
            gpus += g.replicas * g.tp
        return SimulationResult(
            workload=w.key, requests=len(rq.arrival), finished=int(finished.sum()), span_s=span,
            ttft_p50_s=q(ttft, 50), ttft_p90_s=q(ttft, 90), ttft_p99_s=q(ttft, 99),
            tpot_p50_s=q(tpot, 50), tpot_p90_s=q(tpot, 90), tpot_p99_s=q(tpot, 99),
            attainment=float(good.mean()), target_percentile=w.percentile,
            goodput_rps=float(good.sum()) / span, gpu_busy_fraction=gpu_busy / gpus if gpus else 0.0,
            preemptions=int(rq.preemptions.sum()), groups=groups,
        )


def simulate(w: SimWorkload, trace: pd.DataFrame, seed: int = 0, **kwargs) -> SimulationResult:
    """Replay ``trace`` (columns ``arrival_s``, ``input_tokens``, ``output_tokens``) against the
    groups of ``w``; see ``Simulation`` for the keyword arguments.

    Raises:
        ValueError: the workload has no groups.
    """
    return Simulation(w, trace, seed, **kwargs).run()
