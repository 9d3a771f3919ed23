"""The model store: `.bench/models/NAME/` folders with a validated `manifest.json`."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import re
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from controller import claims
from controller.catalog.images import get_image
from controller.errors import BenchError, did_you_mean
from controller.launch.base import Launcher, LineSink
from controller.paths import Paths
from schemas import MODEL_NAME_RE, ModelManifest
from schemas.atomic import write_atomic
from schemas.encoders import TRANSFORMER_MODELS
from schemas.manifest import KERAS_MODELS
from schemas.model_flags import FlagError, ModelFlags

EXPORT_TIMEOUT_S = 3600.0
# What `models export` builds: the study's Keras applications and the transformer encoders.
EXPORTABLE = [*KERAS_MODELS, *TRANSFORMER_MODELS]


class ModelEntry(BaseModel):
    name: str
    source: str
    input_shape: list[int | None]
    input_layout: str | None
    parameters: int | None
    flops_per_sample: int | None
    onnx_opset: int | None
    reference: str
    onnx_sha256: str
    size_mb: float
    path: str
    export_peak_mem_mb: float | None = None
    inputs: int = 1
    data_samples: int | None = None


def check_name(name: str) -> str:
    if not MODEL_NAME_RE.fullmatch(name):
        raise BenchError(
            f"invalid model name {name!r}",
            "use lowercase letters, digits, '_', '-' or '.', no paths (e.g. resnet50)",
        )
    return name


def read_manifest(paths: Paths, name: str) -> ModelManifest:
    folder = paths.models / check_name(name)
    try:
        return ModelManifest.model_validate_json((folder / "manifest.json").read_text())
    except FileNotFoundError:
        known = list_names(paths)
        hint = did_you_mean(name, known)
        study = difflib.get_close_matches(name, EXPORTABLE, n=1)
        if name in EXPORTABLE:
            hint = f"export it first: bench-ctl models export {name}"
        elif study and not difflib.get_close_matches(name, known, n=1):
            hint = f"did you mean {study[0]!r}? export it: bench-ctl models export {study[0]}"
        raise BenchError(f"model {name!r} is not in the store ({paths.models})", hint) from None
    except ValidationError as e:
        raise BenchError(
            f"model {name!r} has an invalid manifest: {e.errors()[0]['msg']}",
            f"re-export it: bench-ctl models export {name} --force",
        ) from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class DigestCache:
    """sha256 of files, remembered by (size, mtime): verifying an unchanged model costs a stat."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.entries: dict[str, list[Any]] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def digest(self, file: Path) -> tuple[str, int]:
        st = file.stat()
        key = str(file.resolve())
        hit = self.entries.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return str(hit[2]), st.st_size
        digest = _sha256(file)
        self.entries[key] = [st.st_size, st.st_mtime_ns, digest]
        self.changed = True
        return digest, st.st_size

    def save(self) -> None:
        """Write the cache when it learnt something, forgetting files that are gone (models removed
        or re-exported), so it stays as small as the model store."""
        if self.changed:
            self.entries = {k: v for k, v in self.entries.items() if Path(k).is_file()}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps(self.entries))


def _artifact_digest(cache: DigestCache, path: Path) -> tuple[str, int]:
    """As the exporter records it: a file's sha256, or for a folder the sha256 of its sorted
    (relative path, file sha256) lines."""
    if not path.is_dir():
        return cache.digest(path)
    h, size = hashlib.sha256(), 0
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest, n = cache.digest(f)
        h.update(f"{f.relative_to(path)}\0{digest}\n".encode())
        size += n
    return h.hexdigest(), size


def verify(paths: Paths, manifest: ModelManifest) -> None:
    """Check every file of a model against its manifest before it is measured."""
    folder = paths.models / manifest.name
    cache = DigestCache(paths.cache / "model-digests.json")
    hint = (
        f"re-export it: bench-ctl models export {manifest.name} --force"
        if manifest.source in ("keras", "pytorch")
        else f"register it again: bench-ctl models add {manifest.name} FILE.onnx --force"
    )
    try:
        for role, art in manifest.files.items():
            path = folder / art.path
            if not path.exists():
                raise BenchError(f"model {manifest.name!r}: {art.path} ({role}) is missing", hint)
            if not path.is_dir() and path.stat().st_size != art.bytes:
                raise BenchError(
                    f"model {manifest.name!r}: {art.path} has {path.stat().st_size:,} bytes, its manifest "
                    f"says {art.bytes:,} (truncated or replaced)",
                    hint,
                )
            digest, _ = _artifact_digest(cache, path)
            if digest != art.sha256:
                raise BenchError(
                    f"model {manifest.name!r}: {art.path} does not match the sha256 in its manifest "
                    "(changed since it was stored)",
                    hint,
                )
    finally:
        with contextlib.suppress(OSError):
            cache.save()


def remove(paths: Paths, name: str) -> Path:
    """Delete a model's folder from the store (and what killed writes left there)."""
    check_name(name)
    clean_stale_work(paths)
    folder = paths.models / name
    if not folder.is_dir():
        raise BenchError(
            f"model {name!r} is not in the store ({paths.models})", did_you_mean(name, list_names(paths))
        )
    if folder.is_symlink():
        folder.unlink()
    else:
        shutil.rmtree(folder)
    return folder


def list_names(paths: Paths) -> list[str]:
    """The models of the store: folders with a manifest and a model's name (never the hidden work
    folder of an export or `models add` in progress, or one that was killed)."""
    if not paths.models.exists():
        return []
    found = (p.parent.name for p in paths.models.glob("*/manifest.json"))
    return sorted(name for name in found if MODEL_NAME_RE.fullmatch(name))


def list_models(paths: Paths) -> list[ModelEntry]:
    entries = []
    for name in list_names(paths):
        m = read_manifest(paths, name)
        size = sum(f.bytes for f in m.files.values())
        entries.append(
            ModelEntry(
                name=m.name,
                source=m.source,
                input_shape=m.input_shape,
                input_layout=m.input_layout,
                parameters=m.parameters,
                flops_per_sample=m.flops_per_sample,
                onnx_opset=m.onnx_opset,
                reference=m.reference,
                onnx_sha256=m.files["onnx"].sha256,
                size_mb=size / 1e6,
                path=str(paths.models / name),
                export_peak_mem_mb=m.export_peak_mem_mb,
                inputs=len(m.inputs),
                data_samples=m.data.samples if m.data else None,
            )
        )
    return entries


def _check_absent(paths: Paths, name: str, force: bool) -> None:
    if (paths.models / name / "manifest.json").exists() and not force:
        raise BenchError(f"model {name!r} already exists in the store", "pass --force to rebuild it")


def _build(
    paths: Paths,
    name: str,
    image_name: str,
    launcher: Launcher,
    args: list[str],
    log: LineSink,
    work: Work,
    readable: list[Path] | None = None,
    shown_as: dict[str, str] | None = None,
    amend: Callable[[ModelManifest], ModelManifest] | None = None,
) -> ModelManifest:
    """Run the exporter into the work folder, then move it into place.

    `shown_as` maps paths the exporter sees to what the user typed, for error messages. An
    exporter killed by a signal (the OOM killer's SIGKILL) is named as such, with the step it was
    in and the peak memory it had reached, from the progress file it keeps while it runs.
    `amend` changes the exporter's manifest before it is stored: what the caller knows of how the
    model was made (a transformer built in the torch image)."""
    from controller.launch import deaths
    from schemas.manifest import EXPORT_PROGRESS_FILE

    final = paths.models / name
    image = get_image(image_name)
    launcher.prepare(image, log)
    tmp = work.folder
    tmp.mkdir()
    try:
        out_arg = launcher.model_dir(tmp.name)
        outcome = launcher.run_tool(
            image,
            "runners.exporter",
            [*args, "--out", out_arg],
            tmp,
            EXPORT_TIMEOUT_S,
            log,
            readable=readable,
        )
        if outcome.timed_out:
            raise BenchError(f"exporting {name} timed out", "retry; check memory and CPU load", exit_code=1)
        if outcome.exit_code != 0:
            _raise_refusal(tmp, shown_as or {})
            last = [ln for ln in outcome.stderr_tail.splitlines() if ln.strip()]
            detail = last[-1] if last else f"exit code {outcome.exit_code}"
            oom = bool(getattr(outcome, "oom_killed", False))
            container = launcher.name == "docker"
            if oom or deaths.signal_of(outcome.exit_code, container) is not None:
                progress: dict[str, object] = {}
                with contextlib.suppress(OSError, ValueError):
                    progress = dict(json.loads((tmp / EXPORT_PROGRESS_FILE).read_text()))
                detail = deaths.describe_exit(outcome.exit_code, oom, container)
                cause = deaths.likely_cause(outcome.exit_code, oom, container)
                if cause:
                    detail += f": {cause}"
                at = progress.get("step")
                if isinstance(at, str) and at:
                    detail += f", while {at}"
                peak = progress.get("peak_mem_mb")
                if isinstance(peak, int | float) and peak > 0:
                    detail += f"; peak memory {deaths.describe_memory(float(peak))}"
            for inner, outer in (shown_as or {}).items():
                detail = detail.replace(inner, outer)
            detail = detail.removeprefix("error: ")
            kept = _keep_log(tmp, f"bench-ctl: the exporter failed: {detail}")
            raise BenchError(
                f"exporting {name} failed: {detail}",
                f"full log: {kept}" if kept else None,
                exit_code=1,
            )
        (tmp / "tool.log").unlink(missing_ok=True)
        (tmp / EXPORT_PROGRESS_FILE).unlink(missing_ok=True)
        manifest = ModelManifest.model_validate_json((tmp / "manifest.json").read_text())
        if amend is not None:
            manifest = ModelManifest.model_validate(amend(manifest).model_dump())
            (tmp / "manifest.json").write_text(manifest.model_dump_json(indent=1) + "\n")
        _readable(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        return manifest
    except BaseException:
        if tmp.exists() and _keep_log(tmp) is None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _raise_refusal(tmp: Path, shown_as: dict[str, str]) -> None:
    """The exporter refused its input (EXPORT_REFUSAL_FILE): that line and hint, exit code 2,
    nothing kept (no log: the message is all there is to say)."""
    from schemas.model_flags import EXPORT_REFUSAL_FILE

    try:
        doc = json.loads((tmp / EXPORT_REFUSAL_FILE).read_text())
        message, hint = str(doc["message"]), str(doc["hint"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    for inner, outer in shown_as.items():
        message, hint = message.replace(inner, outer), hint.replace(inner, outer)
    (tmp / "tool.log").unlink(missing_ok=True)
    raise BenchError(message, hint)


def _readable(folder: Path) -> None:
    """The store is mounted read-only into containers running as another user: open it to reading."""
    for p in [folder, *folder.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def _keep_log(tmp: Path, note: str | None = None) -> Path | None:
    """Keep only the log of a failed export, out of the way of the store's listing; drop the rest.

    `note` (how the exporter ended) is appended to the log."""
    log = tmp / "tool.log"
    if not log.exists():
        return None
    if note:
        with contextlib.suppress(OSError), log.open("a") as f:
            f.write(f"{note}\n")
    dest = tmp.parent / ".failed-exports"
    dest.mkdir(exist_ok=True)
    kept = dest / f"{tmp.name.strip('.')}.log"
    shutil.move(str(log), kept)
    shutil.rmtree(tmp, ignore_errors=True)
    return kept


def check_export_name(name: str) -> str:
    """A name `models export` can build, checked before any environment or image is touched."""
    check_name(name)
    if name not in EXPORTABLE:
        raise BenchError(
            f"unknown model {name!r} to export",
            did_you_mean(name, EXPORTABLE) + "; register your own ONNX file with `bench-ctl models add`",
        )
    return name


def export_image(name: str) -> str:
    """The image `export` builds `name` in, that a launcher is chosen for."""
    return "torch" if name in TRANSFORMER_MODELS else "tf"


@dataclass(frozen=True)
class Work:
    """Where one write of the store works: a hidden folder beside the models, moved into place
    when complete, and a staged copy of the user's file (`models add`)."""

    folder: Path
    staged: Path
    staged_data: Path


STAGING = "staging"
# `.NAME.XXXXXXXX` (tempfile's 8 random characters): the names `writing` gives work folders.
WORK_NAME_RE = re.compile(r"\.[a-z0-9][a-z0-9_.-]{0,63}\.[a-z0-9_]{8}")


@contextmanager
def writing(paths: Paths, name: str) -> Iterator[Work]:
    """A work folder for writing model `name`, claimed by this process while it lives (see
    controller/claims.py): first, the work folders of killed writes are removed."""
    try:
        paths.models.mkdir(parents=True, exist_ok=True)
        clean_stale_work(paths)
        claim = claims.take_new(paths.models, f".{name}.")
    except OSError as e:
        raise claims.unwritable(paths.models, e) from None
    folder = claim.path.with_suffix("")
    staging = paths.home / STAGING
    work = Work(
        folder=folder, staged=staging / f"{folder.name}.onnx", staged_data=staging / f"{folder.name}.npz"
    )
    try:
        yield work
    finally:
        work.staged.unlink(missing_ok=True)
        work.staged_data.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        claim.release()


def clean_stale_work(paths: Paths) -> list[str]:
    """Remove what killed writes left (work folders, staged files, claims) and no live process
    holds; returns their names. A write in progress, here or on another host, is left alone."""
    stems: set[str] = set()
    for folder in (paths.models, paths.home / STAGING):
        with contextlib.suppress(OSError):
            for p in folder.iterdir():
                stem = p.name.removesuffix(claims.LOCK_SUFFIX).removesuffix(".onnx").removesuffix(".npz")
                if WORK_NAME_RE.fullmatch(stem):
                    stems.add(stem)
    removed = []
    for stem in sorted(stems):
        claim = claims.take(paths.models / f"{stem}{claims.LOCK_SUFFIX}")
        if claim is None:
            continue  # held: a write in progress
        if not claim.locked:
            claim.drop()  # no locks on this file system: a live write cannot be told apart
            continue
        shutil.rmtree(paths.models / stem, ignore_errors=True)
        (paths.home / STAGING / f"{stem}.onnx").unlink(missing_ok=True)
        (paths.home / STAGING / f"{stem}.npz").unlink(missing_ok=True)
        claim.release()
        removed.append(stem)
    return removed


def export(
    paths: Paths, name: str, launcher: Launcher, log: LineSink, force: bool = False, seed: int = 0
) -> ModelManifest:
    """Export one of the study's Keras applications (tf image) or a transformer encoder (torch
    image, then registered as `add` does: controller/catalog/transformers.py), with seeded
    random weights."""
    check_export_name(name)
    if name in TRANSFORMER_MODELS:
        from controller.catalog import transformers

        return transformers.export(paths, name, launcher, log, force, seed)
    _check_absent(paths, name, force)
    with writing(paths, name) as work:
        return _build(paths, name, "tf", launcher, ["keras", "--name", name, "--seed", str(seed)], log, work)


def check_onnx_file(path: Path) -> Path:
    """A user's model file, refused before anything runs unless it is a regular file: a folder is
    no model, and reading a FIFO or device would wait for a writer or never end."""
    _check_regular(path, "an ONNX file", "give the path of an .onnx file", "model.onnx")
    return path


def check_data_file(path: Path) -> Path:
    """`--data`: a regular file of at most MAX_DATA_BYTES (its arrays are checked by the
    exporter, which knows the model's inputs)."""
    from schemas.model_flags import MAX_DATA_BYTES

    hint = "give the path of an .npz file: numpy.savez(FILE, INPUT=array, ..., labels=labels)"
    size = _check_regular(path, "a data file", hint, "data.npz", flag="--data ")
    if size > MAX_DATA_BYTES:
        raise BenchError(
            f"--data {path} has {size / (1 << 30):.1f} GiB; at most {MAX_DATA_BYTES >> 30} GiB",
            "a few thousand labelled samples are plenty for an accuracy check",
        )
    return path


def _check_regular(path: Path, what: str, hint: str, example: str, flag: str = "") -> int:
    """The size of a regular file; anything else is refused."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise BenchError(f"{flag}no such file: {path}", hint) from None
    except OSError as e:
        raise BenchError(f"{flag}cannot read {path}: {e.strerror or e}", hint) from None
    if stat.S_ISDIR(st.st_mode):
        raise BenchError(f"{flag}{path} is a folder, not {what}", f"{hint}, e.g. {path / example}")
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _SPECIAL_FILES if test(st.st_mode)), "special file")
        raise BenchError(f"{flag}{path} is a {kind}, not a regular file", hint)
    return st.st_size


class AddOptions(ModelFlags):
    """What `models add` takes besides the ONNX file (docs/models.md), syntax checked: the
    exporter checks them against the model."""

    @classmethod
    def read(
        cls, dims: list[str], int_ranges: list[str], data: Path | None = None, seq_dim: str | None = None
    ) -> AddOptions:
        """Refuses bad syntax in one line with a hint (exit code 2), before anything runs."""
        try:
            options = cls.parse(dims, int_ranges, data, seq_dim)
        except FlagError as e:
            raise BenchError(str(e), e.hint) from None
        if data is not None:
            check_data_file(data)
        return options

    def args(self, data_inside: str | None) -> list[str]:
        """The exporter's arguments for these options (`data_inside`: the staged data's path as
        the exporter sees it)."""
        out = [a for n, v in self.dims.items() for a in ("--dim", f"{n}={v}")]
        out += [a for n, (lo, hi) in self.int_ranges.items() for a in ("--int-range", f"{n}={lo}:{hi}")]
        if data_inside is not None:
            out += ["--data", data_inside]
        if self.seq_dim is not None:
            out += ["--seq-dim", self.seq_dim]
        return out


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def add(
    paths: Paths,
    name: str,
    onnx_file: Path,
    launcher: Launcher,
    log: LineSink,
    force: bool = False,
    seed: int = 0,
    options: AddOptions | None = None,
    amend: Callable[[ModelManifest], ModelManifest] | None = None,
) -> ModelManifest:
    """Register a user's ONNX file with its inputs and outputs, named dimensions at their
    defaults and optionally the user's data; reference outputs come from ONNX Runtime fp32 (ort
    image). Input the exporter refuses is a BenchError with exit code 2, and nothing is stored."""
    options = options or AddOptions()
    check_name(name)
    check_onnx_file(onnx_file)
    if options.data is not None:
        check_data_file(options.data)
    src = onnx_file.resolve()
    _check_absent(paths, name, force)
    with writing(paths, name) as work:
        # The exporter reads the files from inside the state folder: no extra mount for Docker.
        staged = work.staged
        staged.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, staged)
        shown_as = {launcher.inside(staged): str(onnx_file)}
        data_inside = None
        if options.data is not None:
            shutil.copyfile(options.data.resolve(), work.staged_data)
            data_inside = launcher.inside(work.staged_data)
            shown_as[data_inside] = str(options.data)
        return _build(
            paths,
            name,
            "ort",
            launcher,
            [
                "onnx",
                "--name",
                name,
                "--onnx",
                launcher.inside(staged),
                "--seed",
                str(seed),
                *options.args(data_inside),
            ],
            log,
            work,
            readable=[staged.parent],
            shown_as=shown_as,
            amend=amend,
        )
