"""Launchers: where a runner process runs. `select_launcher` picks one for an image."""

from __future__ import annotations

from controller.catalog import ImageInfo
from controller.errors import BenchError
from controller.launchers.base import Launcher, LineSink
from controller.launchers.local import LocalLauncher
from controller.paths import Paths


def select_launcher(choice: str, image: ImageInfo, paths: Paths, log: LineSink) -> Launcher:
    """`local`, `docker`, or `auto`: Docker when the daemon answers and the image is built, else local."""
    if choice == "local":
        return LocalLauncher(paths)
    from controller.launchers import docker as docker_launcher

    if choice == "docker":
        launcher = docker_launcher.DockerLauncher.connect(paths)
        launcher.require_image(image)
        return launcher
    if choice == "slurm":
        raise BenchError(
            "--launcher slurm submits `bench-ctl run` runs only; this runs here", "use local or docker"
        )
    if choice != "auto":
        raise BenchError(f"unknown launcher {choice!r}", "valid: auto, local, docker")
    reason = docker_launcher.unavailable_reason(image, paths)
    if reason is None:
        log(f"launcher: docker (image {docker_launcher.image_tag(image)} is built)")
        return docker_launcher.DockerLauncher.connect(paths)
    log(f"launcher: local ({reason})")
    return LocalLauncher(paths)
