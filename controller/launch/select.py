"""`select_launcher`: which launcher runs an image here."""

from __future__ import annotations

from controller.catalog.images import ImageInfo
from controller.errors import BenchError
from controller.launch.base import Launcher, LauncherChoice, LineSink
from controller.launch.identity import image_tag
from controller.launch.local import LocalLauncher
from controller.paths import Paths


def select_launcher(choice: LauncherChoice, image: ImageInfo, paths: Paths, log: LineSink) -> Launcher:
    """`local`, `docker`, or `auto`: Docker when the daemon answers and the image is built, else local."""
    if choice == LauncherChoice.local:
        return LocalLauncher(paths)
    from controller.launch import docker as docker_launcher

    if choice == LauncherChoice.docker:
        launcher = docker_launcher.DockerLauncher.connect(paths)
        launcher.require_image(image)
        return launcher
    if choice == LauncherChoice.slurm:
        raise BenchError(
            "--launcher slurm submits `bench-ctl run` runs only; this runs here", "use local or docker"
        )
    reason = docker_launcher.unavailable_reason(image, paths)
    if reason is None:
        log(f"launcher: docker (image {image_tag(image)} is built)")
        return docker_launcher.DockerLauncher.connect(paths)
    log(f"launcher: local ({reason})")
    return LocalLauncher(paths)
