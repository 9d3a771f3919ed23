"""Build images offline from locked wheels, and report what is built.

The host downloads every wheel named in `requirements.lock` (hash-checked, with the host's pip
configuration) into `.bench/wheels/NAME/`; `docker build` then runs with no network and installs
only from that wheelhouse. The image is built under a temporary tag and tagged only on success.

A build leaves no untagged images: the result of each intermediate stage (the installed wheels) is
tagged `inference-bench/NAME:stage-STAGE`, where it serves as the next build's cache; an image
this build replaced (the previous `:latest` or stage image, or an older one carrying our
`bench.image` label) is removed once nothing tags it; a failed build removes what it made.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from controller.catalog.images import RUNTIME_PACKAGES, ImageInfo, code_hash, get_image, images
from controller.errors import BenchError
from controller.launch.base import LineSink
from controller.launch.envs import LocalEnv
from controller.launch.identity import IMAGE_PREFIX, client, find_image, image_tag, stale_reason
from controller.paths import REPO_ROOT, Paths

LOCAL_BASE = f"{IMAGE_PREFIX}/base:bookworm"


class ImageStatus(BaseModel):
    name: str
    framework: str
    framework_version: str | None
    devices: list[str]
    buildable: bool
    skip_reason: str | None
    lock_hash: str | None
    image_id: str | None = None
    image_stale: bool = False
    size_mb: float | None = None
    local_env: str


def status(paths: Paths) -> list[ImageStatus]:
    try:
        c: Any = client(timeout=3)
    except BenchError:
        c = None
    rows = []
    for info in images().values():
        env = LocalEnv(info, paths)
        local = "current" if env.is_current() else ("stale" if env.python.exists() else "no")
        row = ImageStatus(
            name=info.name,
            framework=info.framework,
            framework_version=info.framework_version,
            devices=info.devices,
            buildable=info.buildable,
            skip_reason=info.skip_reason,
            lock_hash=info.lock_hash,
            local_env=local,
        )
        found = find_image(c, info) if c is not None else None
        if found is not None:
            row.image_id = found.id
            row.image_stale = stale_reason(found, info) is not None
            row.size_mb = found.attrs.get("Size", 0) / 1e6
        rows.append(row)
    return rows


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *RUNTIME_PACKAGES, "images"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def download_wheels(info: ImageInfo, paths: Paths, log: LineSink) -> Path:
    """Fetch the locked wheels (hash-checked) into the image's wheelhouse."""
    house = paths.wheels / info.name
    house.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--require-hashes",
        "--python-version",
        info.python,
        "--implementation",
        "cp",
        "--platform",
        "manylinux2014_x86_64",
        "--platform",
        "manylinux_2_17_x86_64",
        "--platform",
        "manylinux_2_27_x86_64",
        "--platform",
        "manylinux_2_28_x86_64",
        "--platform",
        "linux_x86_64",
        "-r",
        str(info.lock_file),
        "-d",
        str(house),
    ]
    log(f"{info.name}: downloading locked wheels into {house}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
        raise BenchError(
            f"image {info.name}: step `pip download` failed: {lines[-1] if lines else proc.returncode}",
            "check access to the package index (pip configuration)",
            exit_code=1,
        )
    return house


def default_base(c: Any, info: ImageInfo) -> str:
    """The locally built Debian base if present (no registry here), else the catalog's pinned base."""
    try:
        c.images.get(LOCAL_BASE)
        return LOCAL_BASE
    except Exception:
        return info.base


def _context(info: ImageInfo, house: Path) -> Path:
    ctx = Path(tempfile.mkdtemp(prefix=f"bench-build-{info.name}-"))
    shutil.copyfile(info.dir / "Dockerfile", ctx / "Dockerfile")
    shutil.copyfile(info.lock_file, ctx / "requirements.lock")
    (ctx / "wheels").mkdir()
    for whl in house.iterdir():
        try:
            (ctx / "wheels" / whl.name).hardlink_to(whl)
        except OSError:
            shutil.copyfile(whl, ctx / "wheels" / whl.name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in RUNTIME_PACKAGES:
        shutil.copytree(REPO_ROOT / pkg, ctx / "app" / pkg, ignore=ignore)
    return ctx


FROM_STEP = re.compile(r"^Step \d+/\d+ : FROM\s+\S+(?:\s+AS\s+(\S+))?", re.IGNORECASE)
STEP_RESULT = re.compile(r"^ ---> ([0-9a-f]{12,64})$")


@dataclass
class BuildTrace:
    """What the build's output says it made: every step's image, each stage's result."""

    stages: list[tuple[str, str | None]] = field(default_factory=list)  # (name, result id)
    made: list[str] = field(default_factory=list)  # short ids of the images of steps after FROM
    last_step: str = "start"
    _after_from: bool = False

    def line(self, line: str) -> None:
        if line.startswith("Step "):
            self.last_step = line
            m = FROM_STEP.match(line)
            if m is not None:
                self.stages.append((m.group(1) or str(len(self.stages)), None))
                self._after_from = True
            return
        m = STEP_RESULT.match(line)
        if m is not None:
            if not self._after_from:  # the image a FROM names is not ours
                self.made.append(m.group(1))
            self._after_from = False

    def result(self, image_id: str) -> None:
        """A stage finished (the daemon's `aux` message) with this image."""
        if self.stages:
            self.stages[-1] = (self.stages[-1][0], image_id)

    def intermediate(self) -> list[tuple[str, str]]:
        """(stage name, image id) of every stage but the last."""
        return [(name, result) for name, result in self.stages[:-1] if result is not None]


def stage_tag(name: str) -> str:
    return "stage-" + re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:100]


def _tags_of(c: Any, info: ImageInfo) -> dict[str, str]:
    """{tag: image id} of `inference-bench/NAME:*` now."""
    repo = f"{IMAGE_PREFIX}/{info.name}"
    found: dict[str, str] = {}
    for img in c.images.list(name=repo):
        for ref in img.tags:
            name, _, tag = ref.rpartition(":")
            if name == repo:
                found[tag] = img.id
    return found


def _remove_untagged(c: Any, candidates: set[str], info: ImageInfo, log: LineSink) -> None:
    """Remove the candidates (full or short ids) that nothing tags any more and no image builds on,
    and every such image labelled as one of ours for this name (left by earlier builds)."""
    try:
        dangling = c.images.list(filters={"dangling": True})
    except Exception as e:
        log(f"{info.name}: could not list untagged images: {type(e).__name__}: {e}")
        return
    for img in dangling:
        short = img.id.removeprefix("sha256:")[:12]
        ours = (img.labels or {}).get("bench.image") == info.name
        if not ours and img.id not in candidates and short not in candidates:
            continue
        try:
            c.images.remove(img.id)  # no force: an image a container still uses stays
        except Exception as e:
            why = (str(e).splitlines() or [""])[0][:200]
            log(f"{info.name}: kept untagged image {short}: {type(e).__name__}: {why}")
            continue
        log(f"{info.name}: removed untagged image {short}")


def _stream_build(
    c: Any,
    ctx: Path,
    info: ImageInfo,
    tag: str,
    base_image: str,
    labels: dict[str, str],
    trace: BuildTrace,
    on_line: LineSink,
) -> str:
    """Run `docker build` (intermediate containers removed, even on failure); returns the image id."""
    image_id = None
    for chunk in c.api.build(
        path=str(ctx),
        tag=tag,
        buildargs={"BASE_IMAGE": base_image},
        network_mode="none",
        rm=True,
        forcerm=True,
        labels=labels,
        decode=True,
    ):
        if "stream" in chunk:
            for line in chunk["stream"].splitlines():
                trace.line(line)
                if line.strip():
                    on_line(line)
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
            trace.result(image_id)
        if "error" in chunk:
            raise BenchError(
                f"image {info.name}: build failed at {trace.last_step}: {chunk['error'].strip()}",
                f"see the build output above; nothing was tagged {image_tag(info)}",
                exit_code=1,
            )
    if image_id is None:
        raise BenchError(f"image {info.name}: build produced no image", None, exit_code=1)
    return str(image_id)


def build_image(info: ImageInfo, paths: Paths, base: str | None, log: LineSink, on_line: LineSink) -> str:
    """Build one image offline; returns its id. Tags it only when the whole build succeeded."""
    c = client()
    if not info.buildable:
        raise BenchError(f"image {info.name} cannot be built here: {info.skip_reason}", None, exit_code=1)
    if not (info.dir / "Dockerfile").exists():
        raise BenchError(
            f"image {info.name} has no Dockerfile", f"add images/{info.name}/Dockerfile", exit_code=1
        )
    house = download_wheels(info, paths, log)
    base_image = base or default_base(c, info)
    ctx = _context(info, house)
    labels = {
        "bench.image": info.name,
        "bench.lock-hash": info.lock_hash or "",
        "bench.framework": info.framework,
        "bench.framework-version": info.framework_version or "",
        "bench.git-commit": git_commit(),
        "bench.code-hash": code_hash(),
        "bench.base-image": base_image,
    }
    repo = f"{IMAGE_PREFIX}/{info.name}"
    temp_tag = f"{repo}:building"
    before = _tags_of(c, info)
    trace = BuildTrace()
    log(f"{info.name}: docker build (base {base_image}, no network)")
    try:
        image_id = _stream_build(c, ctx, info, temp_tag, base_image, labels, trace, on_line)
    except BaseException:
        _remove_untagged(c, set(trace.made), info, log)
        raise
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    img = c.images.get(image_id)
    img.tag(repo, tag="latest")
    stage_tags = {stage_tag(name): result for name, result in trace.intermediate()}
    for tag, result in stage_tags.items():
        c.images.get(result).tag(repo, tag=tag)
    for tag in [temp_tag] + [f"{repo}:{t}" for t in before if t.startswith("stage-") and t not in stage_tags]:
        try:
            c.images.remove(tag, noprune=True)  # the tag only
        except Exception:
            pass
    replaced = {old for tag, old in before.items() if tag != "building"} - {image_id, *stage_tags.values()}
    _remove_untagged(c, replaced | set(trace.made), info, log)
    log(f"{info.name}: built {image_tag(info)} ({image_id[7:19]}, {img.attrs.get('Size', 0) / 1e6:,.0f} MB)")
    return image_id


def build(
    paths: Paths, names: list[str], base: str | None, local_env: bool, log: LineSink, on_line: LineSink
) -> list[str]:
    """Build the named images (default: all), skipping with a reason those that cannot be built here."""
    targets = [get_image(n) for n in names] if names else list(images().values())
    if not local_env:
        client()  # fail once, with the hint to start the daemon, rather than once per image
    failures = []
    for info in targets:
        if not info.buildable:
            log(f"{info.name}: skipped: {info.skip_reason}")
            if names:
                failures.append(info.name)
            continue
        action: Callable[[], Any]
        if local_env:

            def action(info: ImageInfo = info) -> Any:
                return LocalEnv(info, paths).ensure(log)
        else:

            def action(info: ImageInfo = info) -> Any:
                return build_image(info, paths, base, log, on_line)

        try:
            action()
        except BenchError as e:
            log(f"{info.name}: FAILED: {e}")
            failures.append(info.name)
    return failures
