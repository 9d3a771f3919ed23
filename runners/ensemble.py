"""Co-located ensembles: several models loaded in one runner process, run together on one device.

`Together` puts the members behind the runner contract, so every scenario can drive an ensemble
(a query goes to every member). Offline, per batch size, each member is first measured alone
(its own steady state), then all together:
one ensemble iteration sends the same batch to every member at once (one thread per member;
the frameworks release the GIL while they compute), waits for all, and averages their outputs.
Ensemble throughput is therefore ensemble predictions per second, and each member's slowdown is
its own call's mean latency inside the ensemble over its mean latency alone.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from probes import gpu
from runners.base import Runner
from runners.core import accuracy, measure
from runners.core.common import Inputs, Timer, input_batch, load_arrays, log
from runners.core.trackers import HostTrackers
from runners.state import RunState
from schemas import FrameworkOptions, Measurement, MemberMeasurement, ModelManifest, Phase


class Together(Runner[Any]):
    """The members as one runner: a query goes to every member at once (a thread each; the
    frameworks release the GIL while they compute), and the ensemble's output is the mean of
    theirs. Every scenario drives it through the runner contract, so an ensemble can be served
    (server, single-stream, multi-stream) like one model. Each member's call times are kept."""

    options_model = FrameworkOptions  # the members' own, whichever framework they are
    name = "ensemble"

    def __init__(self, members: list[Runner[Any]]) -> None:
        shapes = {tuple((t.dtype, tuple(t.shape)) for t in r.manifest.inputs) for r in members}
        if len(shapes) != 1 or any(len(r.manifest.inputs) != 1 for r in members):
            raise ValueError(f"ensemble members need the same input shape, got {sorted(map(str, shapes))}")
        first = members[0]
        super().__init__(first.spec, first.manifest, first.model_dir, first.cache_dir)
        self.members = list(members)
        self.member_ns: list[list[int]] = [[] for _ in members]
        self._pool = ThreadPoolExecutor(max_workers=len(members), thread_name_prefix="member")

    def prepare(self, batch: Inputs) -> Any:
        return [r.prepare(self._named(r, batch)) for r in self.members]

    @staticmethod
    def _named(r: Runner[Any], batch: Inputs) -> Inputs:
        """The one input of a batch under this member's own input name."""
        (array,) = batch.values()
        return {r.manifest.inputs[0].name: array}

    def _one(self, i: int, prepared: Any) -> np.ndarray:
        r = self.members[i]
        t0 = time.perf_counter_ns()
        out = r.run(prepared)
        self.member_ns[i].append(time.perf_counter_ns() - t0)
        return r.to_numpy(out)[0]

    def run(self, prepared: Any) -> Any:
        futures = [self._pool.submit(self._one, i, p) for i, p in enumerate(prepared)]
        return np.mean([f.result() for f in futures], axis=0)

    def threads_used(self) -> int | None:
        """Every member's threads, since they compute at once (None if one does not say)."""
        counts = [r.threads_used() for r in self.members]
        return None if None in counts else sum(c for c in counts if c is not None)

    def effective_precision(self) -> str:
        precisions = [r.effective_precision() for r in self.members]
        return precisions[0] if len(set(precisions)) == 1 else "/".join(precisions)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def load(
    runners: list[Runner[Any]], state: RunState, load_one: Callable[[Runner[Any], RunState], None]
) -> None:
    """Load every member in turn; each phase of the result is the sum over members."""
    per_member: list[list[Phase]] = []
    versions, precisions = set(), []
    for r in runners:
        member_state = RunState()
        load_one(r, member_state)
        per_member.append(member_state.phases)
        versions.add(member_state.framework_version or "unknown")
        precisions.append(member_state.precision or "unknown")
    state.framework_version = "/".join(sorted(versions))
    state.precision = precisions[0] if len(set(precisions)) == 1 else "/".join(precisions)
    for i, name in enumerate(("import", "model_read", "compile")):
        phases = [m[i] for m in per_member]
        hits = [p.cache_hit for p in phases]
        hit = None if all(h is None for h in hits) else all(h for h in hits if h is not None)
        note = ", ".join(f"{r.manifest.name} {p.seconds:.2f}s" for r, p in zip(runners, phases, strict=True))
        state.phases.append(
            Phase(name=name, seconds=sum(p.seconds for p in phases), cache_hit=hit, note=note)
        )


def reference(runners: list[Runner[Any]], state: RunState) -> None:
    """First inference of every member on its reference batch; the ensemble's accuracy is its
    averaged outputs against the averaged reference outputs, when the members share inputs."""
    inputs, outputs, refs, seconds = [], [], [], 0.0
    for r in runners:
        (ref_in,) = load_arrays(r.model_path("reference_input"), [r.manifest.inputs[0].name]).values()
        prepared = r.prepare({r.manifest.inputs[0].name: ref_in})
        with Timer() as t:
            out = r.run(prepared)
        seconds += t.seconds
        inputs.append(ref_in)
        outputs.append(r.to_numpy(out)[0].astype(np.float64))
        (ref_out,) = load_arrays(r.model_path("reference_output"), [r.manifest.outputs[0].name]).values()
        refs.append(ref_out.astype(np.float64))
    state.phases.append(Phase(name="first_inference", seconds=seconds, note="sum over members"))
    same_inputs = all(i.shape == inputs[0].shape and np.array_equal(i, inputs[0]) for i in inputs)
    same_outputs = all(o.shape == outputs[0].shape for o in outputs)
    if same_inputs and same_outputs:
        name = "+".join(sorted({r.manifest.reference for r in runners}))
        acc = accuracy.compare(np.mean(outputs, axis=0), np.mean(refs, axis=0), f"mean of {name}")
        state.accuracy = acc
        log(f"ensemble vs reference: rel err {acc.rel_err:.3g}, top-1 {acc.top1_agreement:.0%}")
    else:
        log("members have different reference batches or outputs: no ensemble accuracy")


def measure_batch(
    together: Together, manifest: ModelManifest, batch_size: int, tracker: gpu.GpuTracker | None
) -> Measurement:
    """Offline: each member alone (its own steady state), then all together."""
    runners = together.members
    policy = together.spec.policy
    batch = input_batch(manifest, batch_size, together.spec.dims)
    prepared = together.prepare(batch)

    alone: list[measure.SteadyState] = []
    for r, p in zip(runners, prepared, strict=True):

        def solo(r: Runner[Any] = r, p: Any = p) -> object:
            return r.run(p)

        measure.warm_up(solo, policy)
        alone.append(measure.steady_state(solo, policy))

    def step() -> object:
        return together.run(prepared)

    n_warm, warm_ns = measure.warm_up(step, policy)
    for lst in together.member_ns:
        lst.clear()
    with contextlib.ExitStack() as stack:
        host = stack.enter_context(HostTrackers(policy=policy, threads=len(runners)))
        if tracker is not None:
            stack.enter_context(tracker)
        state = measure.steady_state(step, policy, probe=host.probe)
    state.warmup_iterations, state.warmup_ns = n_warm, warm_ns
    m = measure.summarize(batch_size, state, policy).model_copy(update={"scenario": "offline"})
    m = host.apply(m, policy)
    member_ns = together.member_ns

    members = []
    for r, solo_state, ns in zip(runners, alone, member_ns, strict=True):
        alone_mean = sum(solo_state.latencies_ns) / len(solo_state.latencies_ns)
        together_mean = sum(ns) / len(ns) if ns else alone_mean
        members.append(
            MemberMeasurement(
                model=r.manifest.name,
                alone_throughput_sps=batch_size
                * len(solo_state.latencies_ns)
                / (solo_state.elapsed_ns / 1e9),
                alone_latency_mean_ms=alone_mean / 1e6,
                together_latency_mean_ms=together_mean / 1e6,
                slowdown=together_mean / alone_mean if alone_mean > 0 else 1.0,
            )
        )
    m = m.model_copy(update={"members": members})
    if tracker is not None:
        m = gpu.with_telemetry(m, tracker)
    slow = ", ".join(f"{mm.model} x{mm.slowdown:.2f}" for mm in members)
    log(f"batch {batch_size}: ensemble {m.throughput_sps:.1f} predictions/s; slowdown vs alone: {slow}")
    return m
