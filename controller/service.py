"""Service functions behind the commands: plan a run, launch it, store it, compare results."""

from __future__ import annotations

import math
import os
import secrets
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psutil
from pydantic import BaseModel, ValidationError

from controller import models as model_store
from controller import store
from controller.catalog import ImageInfo, get_image, images
from controller.errors import BenchError, did_you_mean
from controller.launchers import select_launcher
from controller.launchers.base import Launcher, LineSink, failed_result
from controller.launchers.local import LocalLauncher
from controller.paths import Paths
from schemas import (
    FRAMEWORK_OPTION_MODELS,
    LaunchInfo,
    MeasurementPolicy,
    ModelManifest,
    RunResult,
    RunSpec,
    load_result,
)
from schemas.atomic import write_atomic

LauncherChoice = Literal["auto", "local", "docker"]
MAX_SWEEP_RUNS = 256
INPUT_MEMORY_FRACTION = 0.25  # refuse batches whose input alone needs more of the host's memory
NONE_WORDS = {"none", "null", "auto", "default"}


def parse_sets(framework: str, sets: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`key=value` pairs -> (framework options, policy overrides). `policy.KEY=V` goes to the policy."""
    options: dict[str, Any] = {}
    policy: dict[str, Any] = {}
    option_model = FRAMEWORK_OPTION_MODELS[framework]
    valid = [k for k in option_model.model_fields if k != "framework"]
    seen: set[str] = set()
    for item in sets:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BenchError(
                f"--set {item!r} is not key=value", f"e.g. --set {valid[0] if valid else 'key'}=VALUE"
            )
        if key in seen:
            raise BenchError(f"--set {key} is given twice", "give each option once")
        seen.add(key)
        target, fields, prefix = options, option_model.model_fields, ""
        if key.startswith("policy."):
            key, target, fields, prefix = key[7:], policy, MeasurementPolicy.model_fields, "policy."
        if key not in fields or key == "framework":
            names = [f"{prefix}{k}" for k in fields if k != "framework"]
            raise BenchError(
                f"unknown option {prefix}{key!r} for {framework}",
                f"valid: {', '.join(names) or 'none'}; policy.KEY sets the measurement policy",
            )
        target[key] = (
            None
            if value.strip().lower() in NONE_WORDS
            and not fields[key].is_required()
            and _accepts_none(fields[key])
            else value
        )
    return options, policy


def _accepts_none(field: Any) -> bool:
    return "None" in repr(field.annotation)


def _validation_message(e: ValidationError, what: str) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    got = err.get("input")
    sep = "" if what.endswith(".") else " "
    return f"{what}{sep}{loc}={got!r}: {err['msg']}" if loc else f"{what}: {err['msg']}"


def new_run_id(image: str, model: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{image}-{model}-{secrets.token_hex(3)}"


class RunRequest(BaseModel):
    image: str
    model: str
    batch_sizes: list[int]
    device: str | None = None
    sets: list[str] = []
    sweeps: list[str] = []
    ensemble: bool = False

    @property
    def models(self) -> list[str]:
        return [m.strip() for m in self.model.split(",") if m.strip()]

    launcher: LauncherChoice = "auto"
    timeout_s: float | None = None


def plan(req: RunRequest, paths: Paths, launcher: Launcher, image: ImageInfo) -> RunSpec:
    """Validate everything a user typed into one `RunSpec`; raise BenchError on the first problem."""
    options, policy = parse_sets(image.framework, req.sets)
    try:
        policy_model = MeasurementPolicy.model_validate(policy)
    except ValidationError as e:
        raise BenchError(_validation_message(e, "--set policy."), "see `bench-ctl run --help`") from None
    models = req.models
    members = [{"model": m, "model_dir": launcher.model_dir(m)} for m in models] if req.ensemble else []
    model = "+".join(models) if req.ensemble else req.model
    try:
        return RunSpec.model_validate(
            {
                "run_id": new_run_id(image.name, model.replace("+", "_")),
                "image": image.name,
                "model": model,
                "model_dir": launcher.model_dir(models[0]),
                "members": members,
                "cache_dir": launcher.cache_dir(image),
                "device": req.device or default_device(image),
                "batch_sizes": req.batch_sizes,
                "policy": policy_model,
                "options": {"framework": image.framework, **options},
            }
        )
    except ValidationError as e:
        err = e.errors()[0]
        if err["loc"] and err["loc"][0] == "options":
            valid = ", ".join(
                k for k in FRAMEWORK_OPTION_MODELS[image.framework].model_fields if k != "framework"
            )
            raise BenchError(
                f"--set {err['loc'][-1]}={err.get('input')!r}: {err['msg']}",
                f"options of {image.framework}: {valid}",
            ) from None
        raise BenchError(_validation_message(e, "invalid"), "see `bench-ctl run --help`") from None


def default_device(image: ImageInfo) -> str:
    """CPU where the image can run on it, else its first GPU."""
    return "cpu" if "cpu" in image.devices else "cuda:0"


def host_has_nvidia_gpu() -> bool:
    return any(Path("/dev").glob("nvidia[0-9]*"))


def preflight(image: ImageInfo, req: RunRequest) -> str | None:
    """Why the run cannot happen on this host at all (recorded as unsupported), or None."""
    device = req.device or default_device(image)
    kind = device.split(":")[0]
    if kind not in image.devices:
        return f"image {image.name} runs on {', '.join(image.devices)}, not {kind}"
    if kind == "cuda" and not host_has_nvidia_gpu():
        return f"image {image.name} needs an NVIDIA GPU for {device}; this host has none (no /dev/nvidia*)"
    return None


def default_timeout(spec: RunSpec) -> float:
    p = spec.policy
    per_batch = p.max_time_s + max(p.warmup_min_s, 1.0) * 4 + 60
    return 900 + per_batch * len(spec.batch_sizes)


def check_runnable(image: ImageInfo) -> None:
    if image.framework not in FRAMEWORK_OPTION_MODELS:
        raise BenchError(
            f"image {image.name!r} has no benchmark runner for {image.framework} yet",
            "images with runners: "
            + ", ".join(sorted(n for n, i in images().items() if i.framework in FRAMEWORK_OPTION_MODELS)),
        )


def expand(req: RunRequest, image: ImageInfo) -> list[RunRequest]:
    """One request per combination of `--sweep KEY=A,B` values (and the image's default sweep,
    for keys the user neither set nor swept), in a stable order."""
    axes: dict[str, list[str]] = {}
    set_keys = {item.partition("=")[0].strip() for item in req.sets}
    for item in req.sweeps:
        key, sep, values = item.partition("=")
        key = key.strip()
        choices = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not choices:
            raise BenchError(f"--sweep {item!r} is not KEY=V1,V2,...", "e.g. --sweep mode=eager,compile")
        if key in set_keys or key in axes:
            raise BenchError(f"--sweep {key} given twice, or also with --set", "keep one of them")
        axes[key] = choices
    for key, choices in image.default_sweep.items():
        if key not in set_keys and key not in axes:
            axes[key] = list(choices)
    total = math.prod(len(c) for c in axes.values())
    if total > MAX_SWEEP_RUNS:
        raise BenchError(
            f"--sweep asks for {total:,} runs (more than {MAX_SWEEP_RUNS})",
            "sweep fewer values at a time",
        )
    combos: list[list[str]] = [[]]
    for key, choices in axes.items():
        combos = [[*c, f"{key}={v}"] for c in combos for v in choices]
    return [req.model_copy(update={"sets": [*req.sets, *c], "sweeps": []}) for c in combos]


def run_all(req: RunRequest, paths: Paths, log: LineSink, on_line: LineSink) -> list[RunResult]:
    """Validate every combination first (nothing runs if one is wrong), then run them in turn."""
    requests = validate(req, paths)
    check_destinations(paths)
    results = []
    for i, r in enumerate(requests, 1):
        if len(requests) > 1:
            log(f"run {i}/{len(requests)}: {' '.join(r.sets[len(req.sets) :])}")
        results.append(run(r, paths, log, on_line))
    return results


def validate(req: RunRequest, paths: Paths) -> list[RunRequest]:
    """Every request the user's command stands for, each checked by planning it (nothing runs)."""
    image = get_image(req.image)
    check_runnable(image)
    models = req.models
    if not models:
        raise BenchError("--model is empty", "e.g. --model resnet50, or --model resnet50,vgg19 --ensemble")
    manifests = [model_store.read_manifest(paths, m) for m in models]
    if req.ensemble and len({tuple(m.input_shape) for m in manifests}) > 1:
        shapes = ", ".join(f"{m.name} {m.input_shape}" for m in manifests)
        raise BenchError(
            f"--ensemble members take different inputs ({shapes})",
            "an ensemble feeds one batch to every member: choose models with the same input shape",
        )
    for m in manifests:
        check_batch_memory(m, req.batch_sizes)
        model_store.verify(paths, m)
    if req.ensemble and len(models) < 2:
        raise BenchError(
            "--ensemble needs at least two models", "e.g. --model resnet50,densenet201,vgg19 --ensemble"
        )
    if len(set(models)) != len(models):
        raise BenchError(f"--model {req.model!r} names a model twice", "name each model once")
    per_model = [req] if req.ensemble else [req.model_copy(update={"model": m}) for m in models]
    requests = [r for one in per_model for r in expand(one, image)]
    for r in requests:
        plan(r, paths, LocalLauncher(paths), image)
    return requests


def check_batch_memory(manifest: ModelManifest, batch_sizes: list[int]) -> None:
    """Refuse batch sizes whose input batch alone could not fit in this host's memory."""
    per_sample = 4 * math.prod(d or 1 for d in manifest.input_shape[1:])
    budget = psutil.virtual_memory().total * INPUT_MEMORY_FRACTION
    too_big = [b for b in batch_sizes if b * per_sample > budget]
    if too_big:
        raise BenchError(
            f"batch size {too_big[0]:,} of {manifest.name} needs {too_big[0] * per_sample / 2**30:.1f} GiB "
            f"for its input alone (this host has {psutil.virtual_memory().total / 2**30:.0f} GiB)",
            "choose smaller batch sizes",
        )


def run(req: RunRequest, paths: Paths, log: LineSink, on_line: LineSink, db: Path | None = None) -> RunResult:
    """Plan, launch, validate, keep the raw JSON, ingest. Framework failures come back as results."""
    image = get_image(req.image)
    check_runnable(image)
    for m in req.models:
        model_store.read_manifest(paths, m)
    reason = preflight(image, req)
    if reason is not None:
        # Nothing to launch: validate the request all the same, then record why it cannot run here.
        local = LocalLauncher(paths)
        spec = plan(req, paths, local, image)
        run_dir = paths.runs / spec.run_id
        run_dir.mkdir(parents=True)
        (run_dir / "spec.json").write_text(spec.model_dump_json(indent=1) + "\n")
        now = datetime.now(UTC)
        info = LaunchInfo(
            launcher="preflight", host=socket.gethostname(), image_ref=image.name, lock_hash=image.lock_hash
        )
        result = failed_result(spec, "unsupported", reason, now, info)
        log(f"not launched: {reason}")
        return keep(result, run_dir, paths, db)
    launcher = select_launcher(req.launcher, image, paths, log)
    spec = plan(req, paths, launcher, image)
    launcher.prepare(image, log)
    return execute(image, spec, launcher, paths, req.timeout_s, on_line, db=db)


def execute(
    image: ImageInfo,
    spec: RunSpec,
    launcher: Launcher,
    paths: Paths,
    timeout_s: float | None,
    on_line: LineSink,
    shared: list[Path] | None = None,
    db: Path | None = None,
) -> RunResult:
    """Launch one planned spec in its own run folder, then keep and store its result."""
    run_dir = paths.runs / spec.run_id
    try:
        run_dir.mkdir(parents=True)
        result = launcher.launch(
            image, spec, run_dir, timeout_s or default_timeout(spec), on_line, shared or []
        )
    except OSError as e:
        raise run_folder_error(run_dir, e) from None
    return keep(result, run_dir, paths, db)


def run_folder_error(folder: Path, e: OSError) -> BenchError:
    return BenchError(
        f"cannot write the run folder {folder}: {e.strerror or e}",
        "free space there, or point BENCH_HOME at a writable disk",
        exit_code=1,
    )


def check_destinations(paths: Paths) -> None:
    """The store and the run folders can take a result: checked before anything is measured."""
    store.check_writable(paths.db)
    check_run_folder(paths)


def check_run_folder(paths: Paths) -> None:
    """Fail before measuring when run folders cannot be written (full disk, read-only mount)."""
    try:
        paths.runs.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=paths.runs, prefix=".probe.") as probe:
            probe.write(b"\0" * 65536)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as e:
        raise run_folder_error(paths.runs, e) from None


def keep(result: RunResult, run_dir: Path, paths: Paths, db: Path | None = None) -> RunResult:
    """Write the result atomically beside the run (with the launch information the runner could
    not know), then store it in one transaction."""
    final = run_dir / "result.json"
    try:
        write_atomic(final, result.model_dump_json(indent=1) + "\n")
    except OSError as e:
        raise run_folder_error(run_dir, e) from None
    try:
        with store.connect(db or paths.db) as con:
            store.ingest(con, result, final)
    except BenchError as e:
        raise BenchError(
            f"measured, but not stored: {e.message}",
            f"the result is kept in {run_dir}/; store it with: bench-ctl ingest {run_dir}"
            + (f" --db {db or paths.db}" if (db or paths.db) != Paths.from_env().db else ""),
            exit_code=1,
        ) from None
    return result


class IngestReport(BaseModel):
    ingested: list[str]
    failed: dict[str, str]


def _result_files(targets: list[Path]) -> tuple[list[Path], dict[str, str]]:
    """Regular result files named or found under the targets (never FIFOs or devices)."""
    files: list[Path] = []
    skipped: dict[str, str] = {}
    for t in targets:
        if t.is_dir():
            files.extend(sorted(p for p in t.rglob("result.json") if p.is_file()))
        elif t.is_file():
            files.append(t)
        elif t.exists():
            skipped[str(t)] = "not a regular file"
        else:
            raise BenchError(f"no such file or folder: {t}", "give result.json files or run folders")
    return files, skipped


def _load_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        return f"invalid result: {where}: {first['msg']} ({e.error_count()} error(s))"
    if isinstance(e, UnicodeDecodeError):
        return "not UTF-8 text"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def ingest_paths(targets: list[Path], db: Path) -> IngestReport:
    """Validate and store result files (or every result.json under given folders).

    Each file is its own transaction: a bad file is reported and skipped, the others are stored."""
    files, failed = _result_files(targets)
    if not files and not failed:
        raise BenchError("no result.json found in the given paths", "results live under .bench/runs/RUN_ID/")
    ok: list[str] = []
    results = []
    for f in files:
        try:
            results.append((load_result(f), f))
        except (ValidationError, ValueError, OSError, RecursionError) as e:
            failed[str(f)] = _load_error(e)
    if results:
        with store.connect(db) as con:
            for result, f in results:
                try:
                    store.ingest(con, result, f.resolve())
                    ok.append(result.run_id)
                except BenchError as e:
                    failed[str(f)] = e.message
    return IngestReport(ingested=ok, failed=failed)


class CompareRow(BaseModel):
    batch_size: int
    values: dict[str, float | None]
    precision: dict[str, str | None]
    rel_err: dict[str, float | None]


class Comparison(BaseModel):
    model: str
    metric: str
    images: list[str]
    rows: list[CompareRow]


COMPARABLE = (
    "throughput_sps",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "latency_mean_ms",
    "peak_host_mem_mb",
    "load_time_s",
)


def compare(db: Path, model: str, metric: str = "throughput_sps", device: str | None = None) -> Comparison:
    """Latest ok run per image (and variant, device) and batch size for one model.

    Rows are batch sizes; columns are images, labelled with their non-default options."""
    if metric not in COMPARABLE:
        raise BenchError(f"unknown metric {metric!r}", did_you_mean(metric, list(COMPARABLE)))
    where = "WHERE status = 'ok' AND model = ?" + (" AND device = ?" if device else "")
    params = [model, device] if device else [model]
    sql = f"""
        SELECT image || CASE WHEN coalesce(variant, '') = '' THEN '' ELSE ' [' || variant || ']' END
                     || CASE WHEN device = 'cpu' THEN '' ELSE ' @' || device END AS label,
               batch_size, {metric}, precision, rel_err FROM (
            SELECT *, row_number() OVER (PARTITION BY image, variant, device, batch_size
                                         ORDER BY started_at DESC) AS k
            FROM results {where}
        ) WHERE k = 1 ORDER BY batch_size, label"""
    _, rows = store.read(db, sql, params)
    if not rows:
        raise BenchError(
            f"no successful results for model {model!r}",
            f"run one: bench-ctl run --image ort --model {model}",
        )
    labels = sorted({r[0] for r in rows})
    by_bs: dict[int, CompareRow] = {}
    for image, bs, value, precision, rel in rows:
        row = by_bs.setdefault(bs, CompareRow(batch_size=bs, values={}, precision={}, rel_err={}))
        row.values[image], row.precision[image], row.rel_err[image] = value, precision, rel
    return Comparison(model=model, metric=metric, images=labels, rows=[by_bs[k] for k in sorted(by_bs)])
