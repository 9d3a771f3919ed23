"""Where things live: the repository, the state folder `.bench/` and the result database."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from controller.errors import BenchError

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Paths:
    """All locations, derived from a state folder (BENCH_HOME, default `<repo>/.bench`)."""

    home: Path
    db: Path
    cache_home: Path | None = None  # framework caches elsewhere (a Slurm node keeps its own)

    @classmethod
    def from_env(cls, db: str | Path | None = None) -> Paths:
        home = Path(os.environ.get("BENCH_HOME") or REPO_ROOT / ".bench").resolve()
        _check_folder(home)
        db_path = Path(db or os.environ.get("BENCH_DB") or REPO_ROOT / "results.duckdb")
        return cls(home=home, db=db_path.resolve())

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def runs(self) -> Path:
        return self.home / "runs"

    @property
    def envs(self) -> Path:
        return self.home / "envs"

    @property
    def cache(self) -> Path:
        return self.cache_home or self.home / "cache"

    @property
    def wheels(self) -> Path:
        return self.home / "wheels"

    @property
    def images(self) -> Path:
        return REPO_ROOT / "images"


def _check_folder(home: Path) -> None:
    """The state folder, or the nearest part of its path that exists, must be a folder: a file
    there would fail every command later, deep inside, as NotADirectoryError."""
    for part in (home, *home.parents):
        if part.exists():
            if not part.is_dir():
                where = "" if part == home else f" (its parent {part})"
                raise BenchError(
                    f"BENCH_HOME {home}{where} is a file, not a folder",
                    "point BENCH_HOME at a folder (it is created when missing), or unset it",
                )
            return
