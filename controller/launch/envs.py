"""Local environments: an image's lock file materialized as a virtual environment with uv.

`.bench/envs/NAME/` holds the venv, a marker with the lock hash it was built from, and `app/`
with links to `schemas`, `probes` and `runners` only (never `controller`), put on the path by a `.pth` file:
the same code and the same pinned packages as the image, without Docker.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from controller.catalog.images import RUNTIME_PACKAGES, ImageInfo
from controller.errors import BenchError
from controller.paths import REPO_ROOT, Paths

MARKER = "bench-lock-hash"


def uv_bin() -> str:
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if not found:
            raise BenchError("uv is not installed", "run `make setup`") from None
        return found


class LocalEnv:
    def __init__(self, image: ImageInfo, paths: Paths) -> None:
        self.image = image
        self.root = paths.envs / image.name

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def built_hash(self) -> str | None:
        marker = self.root / MARKER
        return marker.read_text().strip() if marker.exists() else None

    def is_current(self) -> bool:
        return self.python.exists() and self.built_hash() == self.image.lock_hash

    def ensure(self, log: Callable[[str], None] | None = None) -> Path:
        """Build (or rebuild after a lock change) and return the interpreter path."""
        if self.is_current():
            return self.python
        if not self.image.local_env:
            raise BenchError(
                f"image {self.image.name} runs only as a Docker image ({self.image.description})",
                self.image.skip_reason or f"build it: make images IMAGES={self.image.name}",
            )
        if not self.image.lock_file.exists():
            hint = (
                self.image.skip_reason
                or f"pin it: make locks (from images/{self.image.name}/requirements.in)"
            )
            raise BenchError(f"image {self.image.name} has no requirements.lock", hint)
        if log:
            log(
                f"building local environment for {self.image.name} in {self.root} "
                "(uv, from requirements.lock)"
            )
        # Built in place (console scripts such as benchmark_app hard-code their interpreter's
        # path); the marker, written last, is what makes the folder count as an environment.
        root = self.root.parent.resolve() / self.root.name
        shutil.rmtree(root, ignore_errors=True)
        root.parent.mkdir(parents=True, exist_ok=True)
        uv = uv_bin()
        env = {**os.environ, "VIRTUAL_ENV": str(root)}
        steps = [
            [uv, "venv", "--quiet", "--python", sys.executable, str(root)],
            [
                uv,
                "pip",
                "sync",
                "--quiet",
                "--python",
                str(root / "bin" / "python"),
                str(self.image.lock_file),
            ],
        ]
        for cmd in steps:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                shutil.rmtree(root, ignore_errors=True)
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise BenchError(
                    f"building the local environment of {self.image.name} failed at `{' '.join(cmd[:3])}`: "
                    f"{tail[0]}",
                    "check network access to the package index, then retry",
                    exit_code=1,
                )
        app = root / "app"
        app.mkdir()
        for pkg in RUNTIME_PACKAGES:
            (app / pkg).symlink_to(REPO_ROOT / pkg, target_is_directory=True)
        site = next((root / "lib").glob("python3*/site-packages"))
        (site / "bench_runtime.pth").write_text(f"{app}\n")
        (root / MARKER).write_text(f"{self.image.lock_hash}\n")
        return self.python

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def runtime_dir(paths: Paths) -> Path:
    """This checkout's `schemas`, `probes` and `runners`, linked into one folder that a local runner puts
    first on its path. Environments are shared between checkouts of the repository (their `app/`
    names the checkout that built them); the code a run executes is that of the checkout that
    launched it."""
    folder = paths.home / "runtime" / hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    for pkg in RUNTIME_PACKAGES:
        link = folder / pkg
        if not link.is_symlink():
            with contextlib.suppress(FileExistsError):  # another run of this checkout made it
                link.symlink_to(REPO_ROOT / pkg, target_is_directory=True)
    return folder


def ensure_env(image: ImageInfo, paths: Paths, log: Callable[[str], None] | None = None) -> Path:
    return LocalEnv(image, paths).ensure(log)
