"""Which Docker image is an image of the catalog, and whether a built one is still current: its
tag, and the labels (lock hash, code hash) that `images build` puts on it. Used by the catalog
commands and by the Docker launcher."""

from __future__ import annotations

from typing import Any

from controller.catalog.images import ImageInfo, code_hash
from controller.errors import BenchError

IMAGE_PREFIX = "inference-bench"
START_HINT = (
    "start it: `sudo dockerd --iptables=false --bridge=none &` (see docs/images.md), or use --launcher local"
)


def image_tag(image: ImageInfo) -> str:
    return f"{IMAGE_PREFIX}/{image.name}:latest"


def client(timeout: int = 5) -> Any:
    import docker

    try:
        c = docker.from_env(timeout=timeout)
        c.ping()
        return c
    except Exception as e:  # the SDK raises several types for "no daemon"
        raise BenchError(f"Docker daemon not reachable ({type(e).__name__})", START_HINT) from None


def find_image(c: Any, image: ImageInfo) -> Any | None:
    import docker

    try:
        return c.images.get(image_tag(image))
    except docker.errors.ImageNotFound:
        return None


def stale_reason(found: Any, image: ImageInfo) -> str | None:
    """Why a built image no longer matches the repository (lock file or runner code), or None."""
    labels = found.labels or {}
    if labels.get("bench.lock-hash") != image.lock_hash:
        return f"image {image_tag(image)} was built from an older requirements.lock"
    if labels.get("bench.code-hash") != code_hash():
        return f"image {image_tag(image)} was built from older schemas/runners code"
    return None
