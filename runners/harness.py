"""Drive one runner through the phases of a `RunSpec` and build its `RunResult`.

Exit codes of the entrypoint: 0 when a result was written (whatever its status), 2 for an invalid
spec (nothing written), anything else is a harness bug or a killed process.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from probes import fingerprint, gpu, parent
from runners import ensemble, scenarios
from runners.base import Runner, Unsupported
from runners.core import accuracy, barrier, cores, noise
from runners.core.cachelock import cache_lock
from runners.core.common import Timer, batch_len, load_arrays, log
from runners.core.trackers import peak_rss_mb
from runners.registry import runner_class
from runners.state import RunState
from schemas import EnsembleMember, Measurement, ModelManifest, Phase, RunResult, RunSpec
from schemas.atomic import write_atomic
from schemas.result import DataAccuracy


class SpecError(Exception):
    """The spec file is missing or invalid: exit 2, write nothing."""


def now() -> datetime:
    return datetime.now(UTC)


def read_spec(path: Path) -> RunSpec:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad UTF-8 or JSON
        raise SpecError(f"cannot read spec {path}: {type(e).__name__}: {str(e)[:200]}") from None
    try:
        return RunSpec.model_validate(doc)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        raise SpecError(
            f"invalid spec {path}: {where}: {first['msg']} ({e.error_count()} error(s))"
        ) from None


# Lines of framework errors that say where in the framework's C++ it failed, not what failed.
_BOILERPLATE = re.compile(r"^(Exception from \S+:\d+:|Check '.*' failed at \S+:\d+:)$")


def _error_message(e: BaseException) -> str:
    """The exception type and its informative lines (up to three), on one line."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    useful = [ln for ln in lines if not _BOILERPLATE.match(ln)] or lines
    text = " / ".join(useful[:3])
    return f"{type(e).__name__}: {text}"[:2000] if text else type(e).__name__


def execute(spec: RunSpec) -> RunResult:
    """Run every phase; failures become a result with a status, never an exception."""
    started = now()
    state = RunState()
    status, message = "ok", None
    loaded: list[Runner[Any]] = []
    try:
        members = spec.members or [EnsembleMember(model=spec.model, model_dir=spec.model_dir)]
        manifests = [_manifest(m) for m in members]
        cls = runner_class(spec.framework)
        loaded = [
            cls(spec, man, Path(m.model_dir), Path(spec.cache_dir))
            for m, man in zip(members, manifests, strict=True)
        ]
        loaded[0].check_device()
        tracker = _gpu_tracker(spec, state)
        runner: Runner[Any]
        if len(loaded) == 1:
            runner = loaded[0]
            _load(runner, state)
            _reference(runner, manifests[0], state)
        else:  # an ensemble: its members, behind the same contract, receive every query together
            ensemble.load(loaded, state, _load)
            ensemble.reference(loaded, state)
            runner = ensemble.Together(loaded)
            loaded.append(runner)
        _fit(runner, loaded[0].options_model.threads_option, state)
        state.measurements.extend(_tokens(spec, scenarios.measure(runner, manifests[0], tracker)))
    except Unsupported as e:
        status, message = "unsupported", str(e) or "unsupported"
        log(f"unsupported: {message}")
    except MemoryError as e:
        status, message = "error", f"out of memory: {_error_message(e)} (memory limit {_limit(spec)})"
        traceback.print_exc(file=sys.stderr)
        log(f"error: {message}")
    except Exception as e:  # a framework failure is a result, not a crash
        status, message = "error", _error_message(e)
        traceback.print_exc(file=sys.stderr)
        log(f"error: {message}")
    finally:
        for runner in loaded:
            try:
                runner.close()
            except Exception:
                traceback.print_exc(file=sys.stderr)
    if status != "ok" and spec.barrier is not None:
        barrier.abort(spec.barrier, message or status)
    fw_version = state.framework_version
    return RunResult(
        run_id=spec.run_id,
        spec=spec,
        status=status,
        message=message,
        started_at=started,
        finished_at=now(),
        framework=spec.framework,
        framework_version=fw_version,
        precision=state.precision,
        phases=state.phases,
        accuracy=state.accuracy,
        measurements=state.measurements,
        peak_host_mem_mb=peak_rss_mb(),
        threads=state.threads,
        warnings=state.warnings,
        fingerprint=fingerprint.collect(spec.framework, fw_version or "unknown", state.gpus),
    )


def _tokens(spec: RunSpec, measurements: list[Measurement]) -> list[Measurement]:
    """Measurements of a model with a sequence dimension with tokens/s beside samples/s."""
    if spec.sequence_dim is None or spec.sequence_dim not in spec.dims:
        return measurements
    per = spec.dims[spec.sequence_dim]
    return [m.model_copy(update={"tokens_per_s": m.throughput_sps * per}) for m in measurements]


def _fit(runner: Runner[Any], option: str | None, state: RunState) -> None:
    """The threads the framework computes with, against the cores this runner was given and
    those other load leaves free now: a one-line warning naming the option when they do not fit."""
    state.threads = runner.threads_used()
    if state.threads is None:
        return
    probe = noise.Probe()
    try:
        other = noise.other_load(probe)
    finally:
        probe.close()
    warning = cores.fit_warning(runner.name, state.threads, option, cores.given(), other)
    log(f"{state.threads} thread(s) on {cores.given()} core(s) given, {other or 0:.2f} busy elsewhere")
    if warning is not None:
        log(f"warning: {warning}")
        state.warnings.append(warning)


def _limit(spec: RunSpec) -> str:
    mb = spec.policy.memory_limit_mb
    return f"{mb} MB" if mb else "none set: the host's memory"


def _manifest(member: EnsembleMember) -> ModelManifest:
    path = Path(member.model_dir) / "manifest.json"
    try:
        return ModelManifest.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"model {member.model!r} has no manifest at {path}") from None


def _gpu_tracker(spec: RunSpec, state: RunState) -> gpu.GpuTracker | None:
    """NVML tracker for a GPU run, with idle power read before anything is loaded."""
    if not spec.device.startswith("cuda"):
        return None
    nvml = gpu.load_nvml()
    if nvml is None:
        log("NVML unavailable: no power, energy or device memory readings")
        return None
    index = gpu.physical_index(spec.device)
    try:
        state.gpus = [gpu.device_info(nvml, index)]
        tracker = gpu.GpuTracker(nvml, index)
    except Exception as e:
        log(f"NVML cannot read GPU {index}: {e}")
        return None
    tracker.measure_idle(1.0)
    log(
        f"GPU {index} {tracker.name}: idle {tracker.idle_power_w or 0:.0f} W, "
        f"{tracker.baseline_mem_mb or 0:.0f} MB used before loading"
    )
    return tracker


def _load(runner: Runner[Any], state: RunState) -> None:
    phases = state.phases
    with Timer() as t:
        runner.import_framework()
    phases.append(Phase(name="import", seconds=t.seconds))
    state.framework_version = runner.version()
    log(f"{runner.name} {state.framework_version}: import {t.seconds:.2f}s")
    with Timer() as t:
        runner.read_model()
    phases.append(Phase(name="model_read", seconds=t.seconds))
    # Waiting for another runner to finish writing the shared cache is not compiling: not timed.
    with cache_lock(runner.cache_dir, log), Timer() as t:
        hit, note = runner.compile()
    phases.append(Phase(name="compile", seconds=t.seconds, cache_hit=hit, note=note))
    cache = "" if hit is None else (" (cache hit)" if hit else " (cache miss)")
    log(f"compile {t.seconds:.2f}s{cache}")
    state.precision = runner.effective_precision()


def _reference(runner: Runner[Any], manifest: ModelManifest, state: RunState) -> None:
    """First inference, on the reference batch: timed as a phase and checked against the
    reference, every output; then, when the model has labelled data, accuracy on it."""
    ref_in = load_arrays(runner.model_path("reference_input"), [t.name for t in manifest.inputs])
    ref_out = load_arrays(runner.model_path("reference_output"), [t.name for t in manifest.outputs])
    prepared = runner.prepare(ref_in)
    with Timer() as t:
        out = runner.run(prepared)
    state.phases.append(Phase(name="first_inference", seconds=t.seconds, note=f"batch {batch_len(ref_in)}"))
    got = runner.to_numpy(out)
    data = _data_accuracy(runner, manifest, state) if manifest.data and manifest.data.labels else None
    acc = accuracy.compare_outputs(got, list(ref_out.values()), manifest.outputs, manifest.reference, data)
    state.accuracy = acc
    top = (
        f", top-1 {acc.top1_agreement:.0%}, top-5 {acc.top5_agreement or 0:.0%}"
        if acc.top1_agreement is not None
        else ""
    )
    cos = f", cosine >= {acc.cosine_min:.6f}" if acc.cosine_min is not None else ""
    worst = f" (worst of {len(acc.outputs)} outputs: {acc.worst_output})" if len(acc.outputs) > 1 else ""
    log(
        f"first inference {t.seconds:.2f}s; vs {acc.reference}: max abs err {acc.max_abs_err:.3g} "
        f"(rel {acc.rel_err:.3g}){top}{cos}{worst}"
    )
    if data is not None:
        fp32 = f" (fp32 reference {data.fp32_top1:.1%})" if data.fp32_top1 is not None else ""
        log(f"accuracy on {data.samples} labelled samples: top-1 {data.top1:.1%}{fp32}")


def _data_accuracy(runner: Runner[Any], manifest: ModelManifest, state: RunState) -> DataAccuracy:
    """Every labelled sample of the model's data through the framework, in batches of the
    reference batch's size (a shape every runner has compiled; the last batch is padded with
    copies of its first sample), scored against the labels. Timed as its own phase."""
    info = manifest.data
    assert info is not None and info.scored_output is not None
    names = [t.name for t in manifest.inputs]
    arrays = load_arrays(runner.model_path("data"), [*names, "labels"])
    labels = arrays.pop("labels").astype(np.int64)
    size = runner.reference_samples()
    which = [t.name for t in manifest.outputs].index(info.scored_output)
    scores = []
    with Timer() as t:
        for start in range(0, len(labels), size):
            part = {n: a[start : start + size] for n, a in arrays.items()}
            got = len(next(iter(part.values())))
            if got < size:
                part = {n: np.concatenate([a, np.repeat(a[:1], size - got, axis=0)]) for n, a in part.items()}
            scores.append(runner.to_numpy(runner.run(runner.prepare(part)))[which][:got])
    top1, top5 = accuracy.top_k(np.concatenate(scores), labels)
    state.phases.append(Phase(name="data_accuracy", seconds=t.seconds, note=f"{len(labels)} samples"))
    return DataAccuracy(
        samples=len(labels),
        output=info.scored_output,
        top1=top1,
        top5=top5,
        fp32_top1=info.fp32_top1,
        fp32_top5=info.fp32_top5,
    )


def check_out(path: Path) -> None:
    """Refuse, before measuring anything, an output path the result could not be written to."""
    folder = path.parent
    if path.is_dir():
        raise SpecError(f"--out {path} is a folder; give a file path")
    if not folder.is_dir():
        raise SpecError(f"--out {path}: folder {folder} does not exist")
    try:  # os.access is wrong for root on read-only mounts: really create a file
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe."):
            pass
    except OSError as e:
        raise SpecError(f"--out {path}: cannot write in {folder}: {e.strerror or e}") from None


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m runners", description=__doc__)
    parser.add_argument("--spec", required=True, type=Path, help="RunSpec JSON file")
    parser.add_argument("--out", required=True, type=Path, help="where to write the RunResult JSON")
    args = parser.parse_args(argv)
    try:
        check_out(args.out)
        spec = read_spec(args.spec)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    parent.watch()
    result = execute(spec)
    write_atomic(args.out, result.model_dump_json(indent=1) + "\n")
    log(f"status {result.status}; result written to {args.out}")
    return 0
