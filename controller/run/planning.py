"""Planning: turn what a user typed into validated `RunSpec`s, before anything runs."""

from __future__ import annotations

import math
import secrets
import typing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import psutil
from pydantic import ValidationError

from controller.catalog import models as model_store
from controller.catalog.images import ImageInfo, get_image, images
from controller.errors import BenchError, did_you_mean
from controller.paths import Paths
from controller.run.request import RunRequest as RunRequest  # re-exported: planning's input
from probes import fingerprint
from schemas import (
    FRAMEWORK_OPTION_MODELS,
    SCENARIO_MODELS,
    MeasurementPolicy,
    ModelManifest,
    MultiStreamScenario,
    RunSpec,
    ServerScenario,
)
from schemas.devices import nvidia_gpu_present
from schemas.frameworks.base import whole_cores
from schemas.limits import MAX_DIM
from schemas.spec import MAX_TIMEOUT_S

MAX_SWEEP_RUNS = 256
INPUT_MEMORY_FRACTION = 0.25  # refuse batches whose input alone needs more of the host's memory
NONE_WORDS = {"none", "null", "auto", "default"}


SCENARIO_PREFIXES = ("server", "multi-stream")  # scenarios with options: `--set PREFIX.KEY=V`


class Sets(NamedTuple):
    options: dict[str, Any]
    policy: dict[str, Any]
    scenario: dict[str, dict[str, Any]]  # scenario name -> its options
    dims: dict[str, str]  # `dim.NAME=N`: a named dynamic dimension of the model's inputs


def parse_sets(framework: str, sets: list[str]) -> Sets:
    """`key=value` pairs -> (framework options, policy overrides, scenario options, dimensions).
    `policy.KEY=V` goes to the policy, `server.KEY=V` (`multi-stream.KEY=V`) to that scenario,
    `dim.NAME=N` to the model's dimensions (checked against the model by `model_dims`)."""
    options: dict[str, Any] = {}
    policy: dict[str, Any] = {}
    scenario: dict[str, dict[str, Any]] = {}
    dims: dict[str, str] = {}
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
        target, fields, prefix, what = options, option_model.model_fields, "", framework
        head, dot, rest = key.partition(".")
        if dot and head == "dim":
            dims[rest] = value.strip()
            continue
        if dot and head == "policy":
            key, target, fields, prefix = rest, policy, MeasurementPolicy.model_fields, "policy."
        elif dot and head in SCENARIO_PREFIXES:
            target = scenario.setdefault(head, {})
            key, fields, prefix, what = (
                rest,
                SCENARIO_MODELS[head].model_fields,
                f"{head}.",
                f"scenario {head}",
            )
        if key not in fields or key in ("framework", "name"):
            names = [f"{prefix}{k}" for k in fields if k not in ("framework", "name")]
            raise BenchError(
                f"unknown option {prefix}{key!r} for {what}",
                f"valid: {', '.join(names) or 'none'}; policy.KEY sets the measurement policy, "
                "server.KEY (multi-stream.KEY) that scenario, dim.NAME a dimension of the model",
            )
        target[key] = (
            None
            if value.strip().lower() in NONE_WORDS
            and not fields[key].is_required()
            and _accepts_none(fields[key])
            else value
        )
    return Sets(options, policy, scenario, dims)


def model_dims(manifests: list[ModelManifest] | None, given: dict[str, str]) -> dict[str, int]:
    """The value of every named dimension of the model for this run: `--set dim.NAME=N` where
    given, else the manifest's default. Without manifests (a dry run before the models exist)
    only the values are checked."""
    values: dict[str, int] = {}
    for name, text in given.items():
        try:
            values[name] = int(text)
        except ValueError:
            raise BenchError(
                f"--set dim.{name}={text!r} is not a whole number", f"e.g. --set dim.{name}=128"
            ) from None
        if not 1 <= values[name] <= MAX_DIM:
            raise BenchError(
                f"--set dim.{name}={values[name]}: a dimension goes from 1 to {MAX_DIM:,}",
                f"e.g. --set dim.{name}=128",
            )
    if manifests is None:
        return values
    manifest = manifests[0]
    known = manifest.dim_names
    for name in values:
        if name not in known:
            if not known:
                raise BenchError(
                    f"--set dim.{name}: model {manifest.name} has no dynamic dimension besides the batch",
                    "its inputs are " + ", ".join(f"{t.name} {t.shape}" for t in manifest.inputs),
                )
            raise BenchError(
                f"--set dim.{name}: model {manifest.name} has no dimension {name!r}",
                did_you_mean(name, known),
            )
    return {**{k: manifest.dims[k] for k in known}, **values}


def scenario_of(name: str, given: dict[str, dict[str, Any]], batch_sizes: list[int]) -> dict[str, Any]:
    """The `scenario` field of a RunSpec, from --scenario and the `server.*` (`multi-stream.*`)
    sets; checked, so that a mistake is one line with a hint."""
    if name not in SCENARIO_MODELS:
        raise BenchError(f"unknown scenario {name!r}", did_you_mean(name, list(SCENARIO_MODELS)))
    for other, opts in given.items():
        if other != name and opts:
            keys = ", ".join(f"{other}.{k}" for k in opts)
            raise BenchError(f"{keys} given to scenario {name}", f"{other} options need --scenario {other}")
    opts = given.get(name, {})
    model = SCENARIO_MODELS[name]
    names = ", ".join(f"{name}.{k}" for k in model.model_fields if k != "name") or "none"
    if name == "server" and "target_qps" not in opts:
        raise BenchError("--scenario server needs an arrival rate", "e.g. --set server.target_qps=100")
    try:
        sc = model.model_validate({"name": name, **opts})
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        said = f"--set {name}.{key}={err.get('input')!r}" if key else f"--scenario {name}"
        raise BenchError(f"{said}: {msg}", f"options of {name}: {names}") from None
    largest = max(batch_sizes)
    if isinstance(sc, ServerScenario) and sc.max_batch is not None and sc.max_batch > largest:
        raise BenchError(
            f"--set server.max_batch={sc.max_batch} is larger than the largest batch size {largest} (-b)",
            f"the batcher pads each group to a -b size: add {sc.max_batch} to -b or lower max_batch",
        )
    if isinstance(sc, MultiStreamScenario) and sc.samples_per_query > largest:
        raise BenchError(
            f"multi-stream.samples_per_query={sc.samples_per_query} is larger than the largest batch size "
            f"{largest} (-b)",
            f"a query runs as one batch padded to a -b size: add {sc.samples_per_query} to -b",
        )
    return sc.model_dump()


def _accepts_none(field: Any) -> bool:
    """Whether the field's type admits None (`int | None`, `Optional[Literal[...]]`)."""
    return type(None) in typing.get_args(field.annotation)


def _validation_message(e: ValidationError, what: str) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    got = err.get("input")
    sep = "" if what.endswith(".") else " "
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{what}{sep}{loc}={got!r}: {msg}" if loc else f"{what.rstrip('.')}: {msg}"


def cores_given() -> int | None:
    """The whole cores a runner started here computes on: this process's affinity within its CPU
    quota, which a local runner inherits (Docker gets the same cpuset); None when neither is
    readable. A threads option at this number is the same configuration as its default here."""
    return whole_cores(fingerprint.cpu_limit())


def new_run_id(image: str, model: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{image}-{model}-{secrets.token_hex(3)}"


def new_group_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + f"-group-{secrets.token_hex(3)}"


def plan(
    req: RunRequest, paths: Paths, image: ImageInfo, manifests: list[ModelManifest] | None = None
) -> RunSpec:
    """Validate everything a user typed into one `RunSpec`; raise BenchError on the first problem.
    Folders are this host's: a launcher translates them for its runner when it starts it.
    `manifests`: the models' (their dimensions are checked and filled in); None in a dry run
    before the models exist."""
    options, policy, scenario_sets, dim_sets = parse_sets(image.framework, req.sets)
    dims = model_dims(manifests, dim_sets)
    scenario = scenario_of(req.scenario, scenario_sets, req.batch_sizes)
    try:
        policy_model = MeasurementPolicy.model_validate(policy)
    except ValidationError as e:
        raise BenchError(_validation_message(e, "--set policy."), "see `bench-ctl run --help`") from None
    models = req.models
    members = [{"model": m, "model_dir": str(paths.models / m)} for m in models] if req.ensemble else []
    model = "+".join(models) if req.ensemble else req.model
    try:
        return RunSpec.model_validate(
            {
                "run_id": new_run_id(image.name, model.replace("+", "_")),
                "image": image.name,
                "model": model,
                "model_dir": str(paths.models / models[0]),
                "members": members,
                "cache_dir": str(paths.cache / image.name),
                "device": req.device or default_device(image),
                "batch_sizes": req.batch_sizes,
                "policy": policy_model,
                "options": {"framework": image.framework, **options},
                "scenario": scenario,
                "dims": dims,
                "sequence_dim": manifests[0].sequence_dim if manifests and not req.ensemble else None,
            }
        )
    except ValidationError as e:
        err = e.errors()[0]
        if err["loc"] and err["loc"][0] == "options":
            valid = ", ".join(
                k for k in FRAMEWORK_OPTION_MODELS[image.framework].model_fields if k != "framework"
            )
            # A check across options (model level) has no field of its own: name what was set.
            field_error = len(err["loc"]) > 2
            given = f"{err['loc'][-1]}={err.get('input')!r}" if field_error else " --set ".join(req.sets)
            raise BenchError(
                f"--set {given}: {err['msg'].removeprefix('Value error, ')}",
                f"options of {image.framework}: {valid}",
            ) from None
        raise BenchError(_validation_message(e, "invalid"), "see `bench-ctl run --help`") from None


def tagged(spec: RunSpec, **tags: Any) -> RunSpec:
    """The spec with run tags set (group, repetition, role, cell, barrier), validated again:
    `model_copy(update=...)` would skip the checks a spec promises its runner."""
    return RunSpec.model_validate({**spec.model_dump(), **tags})


def default_device(image: ImageInfo) -> str:
    """CPU where the image can run on it, else its first GPU."""
    return "cpu" if "cpu" in image.devices else "cuda:0"


def preflight(image: ImageInfo, req: RunRequest, here: bool = True) -> str | None:
    """Why the run cannot happen on this host at all (recorded as unsupported), or None.
    `here=False`: it runs elsewhere (a Slurm node), so this host's devices do not matter."""
    device = req.device or default_device(image)
    kind = device.split(":")[0]
    if kind not in image.devices:
        return f"image {image.name} runs on {', '.join(image.devices)}, not {kind}"
    if here and kind == "cuda" and not nvidia_gpu_present():
        return f"image {image.name} needs an NVIDIA GPU for {device}; this host has none (no /dev/nvidia*)"
    return None


def default_timeout(spec: RunSpec) -> float:
    """Seconds a run may take before its runner is killed: what its policy and scenario can need,
    with room for loading, and never more than a timeout a user may give."""
    return min(MAX_TIMEOUT_S, _needed_s(spec))


def _needed_s(spec: RunSpec) -> float:
    p = spec.policy
    per_batch = p.max_time_s + max(p.warmup_min_s, 1.0) * 4 + 60
    sc = spec.scenario
    if isinstance(sc, ServerScenario):  # one schedule, then at most its drain time
        seconds = max(sc.min_duration_s, sc.min_queries / sc.target_qps)
        return 900 + per_batch * len(spec.batch_sizes) + 1.2 * seconds + 60
    if isinstance(sc, MultiStreamScenario):
        seconds = max(sc.min_duration_s, sc.min_queries * sc.interval_ms / 1000)
        return 900 + per_batch * len(spec.batch_sizes) + 1.2 * seconds + 60
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


@dataclass(frozen=True)
class PlannedRun:
    """One configuration of a command, checked and planned once: what `execute` launches.

    `spec` names this host's folders and a provisional run id; each execution takes a fresh run
    id and its tags from it (`instance`). `unsupported` says why this host (or, for Slurm, the
    cluster) cannot run it at all: executing it records that reason instead of launching."""

    request: RunRequest  # one image, one model (or ensemble), one option combination
    image: ImageInfo
    spec: RunSpec
    unsupported: str | None = None

    def instance(self, **tags: Any) -> RunSpec:
        """The spec of one execution: a fresh run id and the run's tags, validated again."""
        run_id = new_run_id(self.image.name, self.spec.model.replace("+", "_"))
        return tagged(self.spec, run_id=run_id, **tags)

    @property
    def label(self) -> str:
        return " ".join([self.request.image, self.request.model])


def prepare(req: RunRequest, paths: Paths, here: bool = True, read_models: bool = True) -> list[PlannedRun]:
    """Every configuration the user's command stands for (one image, model and option
    combination each), checked and planned once: one manifest read per model, one `--set` parse
    per configuration. Nothing runs, and nothing is planned if one is wrong. Repetitions are not
    expanded here. `here=False`: they run elsewhere (Slurm nodes), so this host's devices do not
    matter. `read_models=False` (a plan's dry run before its models are exported): options,
    scenario and images are checked, the models are not read."""
    names = req.images
    if not names:
        raise BenchError("--image is empty", "e.g. --image ort, or --image ort,openvino")
    if len(set(names)) != len(names):
        raise BenchError(f"--image {req.image!r} names an image twice", "name each image once")
    if (other := foreign_prefix([*req.sets, *req.sweeps], names)) is not None:
        item, who = other
        raise BenchError(
            f"--set/--sweep {item!r} names image {who!r}, which this command does not run",
            f"IMAGE:KEY=VALUE sets KEY for one of the images given: {', '.join(names)}",
        )
    planned = [
        p
        for name in names
        for p in _prepare_one(
            req.model_copy(
                update={"image": name, "sets": sets_for(name, req.sets), "sweeps": sets_for(name, req.sweeps)}
            ),
            paths,
            here,
            read_models,
        )
    ]
    if len(planned) > MAX_SWEEP_RUNS:
        raise BenchError(
            f"this command asks for {len(planned):,} configurations (more than {MAX_SWEEP_RUNS})",
            "run fewer images, models or sweep values at a time",
        )
    return planned


def foreign_prefix(items: list[str], images: list[str]) -> tuple[str, str] | None:
    """The first `IMAGE:KEY=VALUE` item whose IMAGE is none of `images`, with that name."""
    for item in items:
        who, colon, _ = item.partition("=")[0].partition(":")
        if colon and who.strip() not in images:
            return item, who.strip()
    return None


def sets_for(image: str, items: list[str]) -> list[str]:
    """The `--set` (or `--sweep`) items that apply to one image of a command: those without an
    image prefix, and `IMAGE:KEY=VALUE` ones of this image, prefix removed."""
    mine = []
    for item in items:
        key, sep, rest = item.partition("=")
        who, colon, bare = key.partition(":")
        if not colon:
            mine.append(item)
        elif who.strip() == image:
            mine.append(f"{bare.strip()}{sep}{rest}")
    return mine


def _prepare_one(req: RunRequest, paths: Paths, here: bool, read_models: bool) -> list[PlannedRun]:
    image = get_image(req.image)
    check_runnable(image)
    models = req.models
    if not models:
        raise BenchError("--model is empty", "e.g. --model resnet50, or --model resnet50,vgg19 --ensemble")
    if not read_models:
        return [_planned(r, paths, image, here, None) for r in expand(req, image)]
    manifests = [model_store.read_manifest(paths, m) for m in models]
    if req.ensemble and len({tuple(m.input_shape) for m in manifests}) > 1:
        shapes = ", ".join(f"{m.name} {m.input_shape}" for m in manifests)
        raise BenchError(
            f"--ensemble members take different inputs ({shapes})",
            "an ensemble feeds one batch to every member: choose models with the same input shape",
        )
    for m in manifests:
        model_store.verify(paths, m)
    if req.ensemble and len(models) < 2:
        raise BenchError(
            "--ensemble needs at least two models", "e.g. --model resnet50,densenet201,vgg19 --ensemble"
        )
    if len(set(models)) != len(models):
        raise BenchError(f"--model {req.model!r} names a model twice", "name each model once")
    by_name = dict(zip(models, manifests, strict=True))
    per_model = [req] if req.ensemble else [req.model_copy(update={"model": m}) for m in models]
    return [
        _planned(r, paths, image, here, manifests if req.ensemble else [by_name[one.model]])
        for one in per_model
        for r in expand(one, image)
    ]


def _planned(
    req: RunRequest, paths: Paths, image: ImageInfo, here: bool, manifests: list[ModelManifest] | None
) -> PlannedRun:
    spec = plan(req, paths, image, manifests)
    for m in manifests or []:
        check_batch_memory(m, req.batch_sizes, spec.dims)
        check_calibration(spec, m)
    why = preflight(image, req, here=here) or (model_preflight(image, manifests) if manifests else None)
    return PlannedRun(req, image, spec, why)


def check_calibration(spec: RunSpec, manifest: ModelManifest) -> None:
    """int8 (TensorRT) calibrates on samples: the `calibration` file given, else the model's
    own data; a model with neither is refused before anything runs."""
    o = spec.options.model_dump()
    if (
        o.get("precision") == "int8"
        and "calibration" in o
        and not o["calibration"]
        and "data" not in manifest.files
    ):
        raise BenchError(
            f"int8 needs calibration data, and model {manifest.name} has none",
            f"--set calibration=FILE.npz (input name -> samples), or add the model with its samples: "
            f"bench-ctl models add {manifest.name} FILE.onnx --data FILE.npz --force",
        )


# Frameworks that run the model's SavedModel (Keras exports have one), not its ONNX file.
SAVEDMODEL_FRAMEWORKS = ("tensorflow", "litert")


def model_preflight(image: ImageInfo, manifests: list[ModelManifest]) -> str | None:
    """Why this image cannot run these models at all (recorded as unsupported before any process
    starts), or None: TensorFlow and LiteRT run a SavedModel, which only the study's Keras
    exports have (docs/decisions.md: no ONNX-to-TensorFlow conversion)."""
    if image.framework not in SAVEDMODEL_FRAMEWORKS:
        return None
    for m in manifests:
        if "savedmodel" not in m.files:
            return (
                f"image {image.name} runs a TensorFlow SavedModel; model {m.name} has none "
                f"(it came from {m.source}, not a Keras export): use an ONNX image "
                "(ort, openvino, iree, torch)"
            )
    return None


def check_batch_memory(
    manifest: ModelManifest, batch_sizes: list[int], dims: dict[str, int] | None = None
) -> None:
    """Refuse batch sizes whose input batch alone could not fit in this host's memory."""
    per_sample = manifest.sample_bytes(dims)
    budget = psutil.virtual_memory().total * INPUT_MEMORY_FRACTION
    too_big = [b for b in batch_sizes if b * per_sample > budget]
    if too_big:
        raise BenchError(
            f"batch size {too_big[0]:,} of {manifest.name} needs {too_big[0] * per_sample / 2**30:.1f} GiB "
            f"for its input alone (this host has {psutil.virtual_memory().total / 2**30:.0f} GiB)",
            "choose smaller batch sizes",
        )
