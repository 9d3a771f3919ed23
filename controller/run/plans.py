"""Plans: a TOML matrix of runs, read, checked and expanded into cells before anything runs.

A cell is one configuration (one image, one model or ensemble, one combination of options, its
batch sizes and scenario): what one `bench-ctl run` of one image measures, `repetitions` times.
Its key hashes what it measures together with this host's identity and the image's lock, so a
sweep can tell which cells are done here and which are due (new hardware or a new lock: all)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from pydantic import ValidationError

from controller.catalog.images import ImageInfo
from controller.errors import BenchError, did_you_mean
from controller.paths import Paths
from controller.run import planning
from schemas import RunSpec
from schemas.encoders import TRANSFORMER_MODELS
from schemas.frameworks.base import configuration
from schemas.manifest import KERAS_MODELS
from schemas.plan import Plan, PlanRuns

# Policy fields that say how many runs a cell gets, not what a run measures: not in its key.
RUN_COUNT_KEYS = ("repetitions", "target_ci", "max_repetitions")
MAX_CELLS = 5000
# The study's plan is 3 kB; a MiB holds thousands of [[runs]] tables, more than MAX_CELLS cells.
MAX_PLAN_BYTES = 2**20


@dataclass(frozen=True)
class Cell:
    """One configuration of a plan, ready to run here."""

    index: int  # 1-based position in the plan
    runs_index: int  # which [[runs]] table it came from (1-based)
    planned: planning.PlannedRun  # the configuration as planned here (every option spelled out)
    repetitions: int
    key: str

    @property
    def request(self) -> planning.RunRequest:
        return self.planned.request

    @property
    def spec(self) -> RunSpec:
        return self.planned.spec

    @property
    def image(self) -> ImageInfo:
        return self.planned.image

    @property
    def unsupported(self) -> str | None:
        """Why this host cannot run it, or None."""
        return self.planned.unsupported

    @property
    def options(self) -> str:
        """The options that make this cell differ from its neighbours, as `k=v` pairs."""
        return " ".join(s for s in self.request.sets if not s.startswith("policy."))

    @property
    def label(self) -> str:
        model = self.request.model.replace(",", "+") if self.request.ensemble else self.request.model
        return " ".join(x for x in (self.image.name, model, self.options) if x)


def _value(v: object) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _read(path: Path) -> str:
    """The plan's text; a FIFO, device or folder is refused at once, and a file too large to be a
    plan before it is read."""
    where = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not wait for a writer
    except FileNotFoundError:
        near = sorted(str(p) for p in path.parent.glob("*.toml")) if path.parent.is_dir() else []
        hint = did_you_mean(str(path), near) if near else "plans live under plans/, e.g. plans/smoke.toml"
        raise BenchError(f"no plan file {where}", hint) from None
    except OSError as e:
        raise BenchError(f"cannot read plan {where}: {e.strerror}", "give a TOML plan file") from None
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        data = b""
        if regular:
            with open(fd, "rb", closefd=False) as f:
                data = f.read(MAX_PLAN_BYTES + 1)
    finally:
        os.close(fd)
    if not regular:
        raise BenchError(
            f"plan {where} is not a regular file", "give a TOML plan file, e.g. plans/smoke.toml"
        )
    if len(data) > MAX_PLAN_BYTES:
        raise BenchError(
            f"plan {where} is larger than {MAX_PLAN_BYTES // 2**10:,} KiB", "split it into smaller plans"
        )
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise BenchError(f"cannot read plan {where}: not UTF-8 text", "give a TOML plan file") from None


def load(path: Path) -> Plan:
    """Read and validate a plan file; one line with a hint on any problem."""
    where = str(path)
    text = _read(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BenchError(f"plan {where} is not TOML: {e}", "see plans/smoke.toml for the format") from None
    except RecursionError:
        raise BenchError(
            f"plan {where} nests arrays or tables too deeply to be read",
            "see plans/smoke.toml for the format",
        ) from None
    runs = raw.get("runs")
    if isinstance(runs, list) and len(runs) > MAX_CELLS:
        raise BenchError(
            f"plan {where} has more than {MAX_CELLS:,} [[runs]] tables", "split it into smaller plans"
        )
    try:
        return Plan.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            in_runs = len(err["loc"]) > 1 and err["loc"][0] == "runs"
            keys = PlanRuns.model_fields if in_runs else Plan.model_fields
            raise BenchError(
                f"plan {where}: unknown key {loc}",
                f"keys of {'[[runs]]' if in_runs else 'a plan'}: {', '.join(keys)}",
            ) from None
        raise BenchError(
            f"plan {where}: {loc}: {msg}" if loc else f"plan {where}: {msg}",
            "see plans/smoke.toml for the format",
        ) from None


def requests_of(plan: Plan) -> list[tuple[int, planning.RunRequest, int]]:
    """Each [[runs]] table as one request per image and model (or ensemble), with its repetitions;
    sweeps are not expanded yet."""
    out = []
    for i, runs in enumerate(plan.runs, 1):
        sets = [f"{k}={_value(v)}" for k, v in runs.set.items()]
        given = {s.partition("=")[0] for s in sets}
        sets += [f"policy.{k}={_value(v)}" for k, v in plan.policy.items() if f"policy.{k}" not in given]
        sweeps = [f"{k}={','.join(_value(v) for v in values)}" for k, values in runs.sweep.items()]
        targets = [(m, False) for m in runs.models] + [(",".join(e), True) for e in runs.ensembles]
        # Model-major: the images (the candidates) of one model are neighbours, so a round of a
        # sweep measures them one after another, as `run --image a,b` interleaves them.
        if (other := planning.foreign_prefix([*sets, *sweeps], runs.images)) is not None:
            item, who = other
            raise BenchError(
                f"[[runs]] #{i}: {item.partition('=')[0]!r} names image {who!r}, not one of its images",
                f"IMAGE:KEY sets KEY for one of: {', '.join(runs.images)}",
            )
        for model, ensemble in targets:
            for image in runs.images:
                device = None if runs.device is None else ("cpu" if runs.device == "cpu" else "cuda:0")
                req = planning.RunRequest(
                    image=image,
                    model=model,
                    batch_sizes=runs.batch_sizes,
                    device=device,
                    sets=planning.sets_for(image, sets),
                    sweeps=planning.sets_for(image, sweeps),
                    ensemble=ensemble,
                    timeout_s=runs.timeout_s,
                    scenario=runs.scenario,
                )
                out.append((i, req, runs.repetitions or plan.repetitions))
    return out


def models_of(plan: Plan) -> list[str]:
    """Every model the plan names, in order of first mention."""
    names: dict[str, None] = {}
    for runs in plan.runs:
        for m in [*runs.models, *(x for e in runs.ensembles for x in e)]:
            names.setdefault(m)
    return list(names)


def missing_models(plan: Plan, paths: Paths) -> list[str]:
    """Models of the plan not in the store; refuses (one line) those that cannot be exported."""
    missing = [m for m in models_of(plan) if not (paths.models / m / "manifest.json").exists()]
    foreign = [m for m in missing if m not in KERAS_MODELS and m not in TRANSFORMER_MODELS]
    if foreign:
        raise BenchError(
            f"the plan names model {foreign[0]!r}, which is not in the store ({paths.models})",
            "add it with `bench-ctl models add NAME FILE.onnx`, or export one of the study's models: "
            + ", ".join([*KERAS_MODELS, *TRANSFORMER_MODELS]),
        )
    return missing


HERE: Final = "here"  # cell_key's cores: those a runner started on this host is given
Cores = int | Literal["here"] | None


def cell_key(spec: RunSpec, image: ImageInfo, host_key: str, cores: Cores = HERE) -> str:
    """What the cell measures (its planned spec, every option spelled out, so a default given or
    left out is the same cell), where, with which locked packages: its identity across sweeps.

    A threads option at the `cores` its runner is given is the same cell as its default (0 or
    None mean them): `here`, a runner started on this host (`planning.cores_given`); None, not
    known when planning (a Slurm node's), the options as planned. Other cells keep their keys."""
    given = planning.cores_given() if isinstance(cores, str) else cores
    what = {
        "image": image.name,
        "model": spec.model,
        "members": [m.model for m in spec.members],
        "batch_sizes": spec.batch_sizes,
        "device": spec.device,
        "options": configuration(spec.options, given),
        "policy": spec.policy.model_dump(exclude=set(RUN_COUNT_KEYS)),
        "scenario": spec.scenario.model_dump(),
        "host": host_key,
        "lock": image.lock_hash,
    }
    if spec.dims:  # models without named dimensions keep the keys they always had
        what["dims"] = spec.dims
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:20]


def planned_cell(
    index: int,
    runs_index: int,
    planned: planning.PlannedRun,
    reps: int,
    host_key: str,
    cores: Cores = HERE,
) -> Cell:
    return Cell(
        index=index,
        runs_index=runs_index,
        planned=planned,
        repetitions=reps,
        key=cell_key(planned.spec, planned.image, host_key, cores),
    )


def cells(
    plan: Plan, paths: Paths, host_key: str, check_models: bool = True, here: bool = True
) -> list[Cell]:
    """The plan's cells in plan order, each checked as `bench-ctl run` would check it.
    `here=False`: they run elsewhere (Slurm nodes), so this host's devices do not matter, nor its
    cores (`cell_key`).

    With `check_models` the models must be in the store (they are read and verified); without it
    (a dry run before export) only the options, scenario and images are checked.

    A [[runs]] table whose values give one configuration twice on this host (a thread count at the
    cores a runner here is given, beside the default) gives it one cell, the first; a plan that
    names one configuration twice as it is written is refused."""
    out: list[Cell] = []
    seen: dict[str, tuple[int, str]] = {}  # cell key -> its [[runs]] table, its key as written
    cores = planning.cores_given() if here else None
    for runs_index, req, reps in requests_of(plan):
        try:
            # Without the models (a dry run before export) only options and images are checked.
            each = planning.prepare(req, paths, here, read_models=check_models)
            planned = [planned_cell(0, runs_index, p, reps, host_key, cores) for p in each]
        except BenchError as e:
            raise BenchError(
                f"[[runs]] #{runs_index} ({req.image}, {req.model}): {e.message}", e.hint
            ) from None
        for cell in planned:
            r, key = cell.request, cell.key
            written = cell_key(cell.spec, cell.image, host_key, None)
            if key in seen:
                first, first_written = seen[key]
                if first == runs_index and first_written != written:
                    continue  # another spelling of a configuration of this table here: one cell
                raise BenchError(
                    f"[[runs]] #{runs_index} repeats a configuration of [[runs]] #{first}: "
                    f"{r.image} {r.model}"
                    + ("" if first_written == written else f" ({_same_as(cell, cores)})"),
                    "name each configuration once: raise `repetitions` to measure it more",
                )
            seen[key] = (runs_index, written)
            out.append(dataclasses.replace(cell, index=len(out) + 1))
            if len(out) > MAX_CELLS:
                raise BenchError(f"the plan has more than {MAX_CELLS:,} cells", "split it into smaller plans")
    if not out:
        raise BenchError("the plan has no cells", "give [[runs]] with images, models and batch_sizes")
    return out


def _same_as(cell: Cell, cores: int | None) -> str:
    """Why a cell written otherwise is a configuration already planned: its threads option."""
    option = type(cell.spec.options).threads_option
    return f"{option}={cores} is the cores a runner here is given, as the default"
