"""The image catalog: `images/NAME/image.toml` plus the pinned `requirements.lock` beside it."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from controller.errors import BenchError, did_you_mean
from controller.paths import REPO_ROOT

IMAGES_DIR = REPO_ROOT / "images"


class ImageInfo(BaseModel):
    """One image of the fleet, as its catalog entry and lock file describe it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    framework: str = Field(description="runner the image serves (schemas framework name)")
    package: str = Field(description="distribution whose version is the framework version")
    devices: list[str]
    description: str
    base: str = Field(description="default base image (build argument BASE_IMAGE)")
    buildable: bool = True
    skip_reason: str | None = None
    local_env: bool = Field(True, description="whether the lock alone makes a working local environment")
    python: str = Field("3.11", description="Python version of the image, for its wheels")
    default_sweep: dict[str, list[str]] = Field(
        default_factory=dict, description="options swept by default, e.g. torch: mode = [eager, compile]"
    )
    framework_version: str | None = None
    lock_hash: str | None = None

    @property
    def dir(self) -> Path:
        return IMAGES_DIR / self.name

    @property
    def lock_file(self) -> Path:
        return self.dir / "requirements.lock"


def _locked_version(lock: Path, package: str) -> str | None:
    pattern = re.compile(rf"^{re.escape(package)}==([^\s\\;]+)", re.IGNORECASE | re.MULTILINE)
    m = pattern.search(lock.read_text()) if lock.exists() else None
    return m.group(1) if m else None


def file_hash(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


RUNTIME_PACKAGES = ("schemas", "probes", "runners")


def runtime_files() -> list[Path]:
    """The code an image carries besides its wheels (what `images build` copies into it)."""
    return sorted(
        p
        for pkg in RUNTIME_PACKAGES
        for p in (REPO_ROOT / pkg).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".json")
    )


def code_hash() -> str:
    """Digest of the runtime code: an image built from other code is stale even if its lock is not."""
    h = hashlib.sha256()
    for p in runtime_files():
        h.update(f"{p.relative_to(REPO_ROOT)}\0".encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def load_image(folder: Path) -> ImageInfo:
    meta = tomllib.loads((folder / "image.toml").read_text())
    lock = folder / "requirements.lock"
    meta.setdefault("name", folder.name)
    meta["framework_version"] = _locked_version(lock, meta["package"]) or meta.get("framework_version")
    meta["lock_hash"] = file_hash(lock)
    return ImageInfo.model_validate(meta)


def images() -> dict[str, ImageInfo]:
    """Every image with an `image.toml`, by name."""
    found = {}
    for toml in sorted(IMAGES_DIR.glob("*/image.toml")):
        info = load_image(toml.parent)
        found[info.name] = info
    return found


def get_image(name: str) -> ImageInfo:
    catalog = images()
    if name not in catalog:
        raise BenchError(f"unknown image {name!r}", did_you_mean(name, list(catalog)))
    return catalog[name]
