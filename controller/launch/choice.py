"""Where runs go (a plain enum: the CLI's options read it at start-up)."""

from __future__ import annotations

from enum import StrEnum


class LauncherChoice(StrEnum):
    """Where runs go: `auto` is Docker when the daemon answers and the image is built, else local."""

    auto = "auto"
    local = "local"
    docker = "docker"
    slurm = "slurm"  # each run a Slurm job (bench-ctl run and sweep; see controller/launch/slurm.py)
