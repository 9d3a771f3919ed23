"""Helpers shared by the benchmark scripts: find bench-ctl, a throw-away state folder, run and parse.

Every benchmark drives the real tool: `bench-ctl run --launcher local --json` in a subprocess, with
`BENCH_HOME` and `BENCH_DB` pointing at a temporary folder, so the user's `results.duckdb` and
`.bench/runs/` stay untouched. The temporary folder links (symlinks) the real local environments
and models of `.bench/`, so nothing is rebuilt or re-exported; runs, caches and the database are
fresh and deleted at the end unless `--keep` is given.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runners.core.trackers import HostLoadTracker  # noqa: E402

EXIT_FAIL = 1  # a verdict failed
EXIT_PRECONDITION = 2  # something the benchmark needs is missing; nothing was measured


def die(message: str, hint: str | None = None, code: int = EXIT_PRECONDITION) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"  hint: {hint}", file=sys.stderr)
    sys.exit(code)


def say(message: str = "") -> None:
    print(message, flush=True)


def bench_ctl() -> str:
    """The bench-ctl of the interpreter running this script (the repo's .venv), else the repo's."""
    for candidate in (Path(sys.executable).parent / "bench-ctl", REPO / ".venv" / "bin" / "bench-ctl"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("bench-ctl")
    if found:
        return found
    die(
        "bench-ctl is not installed",
        "run `make setup` (creates .venv with bench-ctl), then `.venv/bin/python benchmarks/...`",
    )


def real_home() -> Path:
    """The user's state folder, exactly as bench-ctl resolves it (controller/paths.py)."""
    return Path(os.environ.get("BENCH_HOME") or REPO / ".bench").resolve()


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("BENCH_DB", None)
    env.update(extra or {})
    # Rich would wrap JSON and tables to the terminal width; keep the output machine-readable.
    env.setdefault("COLUMNS", "200")
    return env


def ensure_local_env(ctl: str, image: str) -> Path:
    """The image's local environment in the real state folder, built first if it is missing or stale.

    Building goes through `bench-ctl images build --local` with the real BENCH_HOME on purpose: an
    environment built under a temporary BENCH_HOME would point its .pth file at that temporary path.
    """
    proc = subprocess.run(
        [ctl, "images", "list", "--json"], capture_output=True, text=True, env=_clean_env(), cwd=REPO
    )
    if proc.returncode != 0:
        die(f"`bench-ctl images list --json` failed (exit {proc.returncode}): {_tail(proc.stderr)}")
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    if image not in rows:
        die(f"image {image!r} is not in the catalog (images/{image}/image.toml)", "bench-ctl images list")
    if rows[image]["local_env"] != "current":
        say(f"building the local environment of {image} (bench-ctl images build --local {image}) ...")
        built = subprocess.run(
            [ctl, "images", "build", "--local", image],
            capture_output=True,
            text=True,
            env=_clean_env(),
            cwd=REPO,
        )
        if built.returncode != 0:
            die(
                f"the local environment of {image} could not be built: {_tail(built.stderr)}",
                f"bench-ctl images build --local {image}",
            )
    env = real_home() / "envs" / image
    if not (env / "bin" / "python").exists():
        die(f"local environment {env} has no bin/python", f"bench-ctl images build --local {image}")
    return env


def require_model(name: str) -> Path:
    folder = real_home() / "models" / name
    if not (folder / "manifest.json").exists():
        die(
            f"model {name!r} is not in the model store ({folder.parent})",
            f"export it first: bench-ctl models export {name}",
        )
    return folder


def _tail(text: str, lines: int = 8) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return "\n    ".join(kept) if kept else "no output"


class ScratchHome:
    """A temporary BENCH_HOME: links to the real envs and models, fresh runs/cache/database."""

    def __init__(self, envs: Sequence[str], models: Sequence[Path] = (), keep: bool = False) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bench-benchmarks-"))
        self.keep = keep
        (self.root / "envs").mkdir()
        (self.root / "models").mkdir()
        for name in envs:
            (self.root / "envs" / name).symlink_to(real_home() / "envs" / name, target_is_directory=True)
        for folder in models:
            (self.root / "models" / folder.name).symlink_to(folder.resolve(), target_is_directory=True)
        self.db = self.root / "results.duckdb"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def env(self) -> dict[str, str]:
        return _clean_env({"BENCH_HOME": str(self.root), "BENCH_DB": str(self.db)})

    def close(self) -> None:
        if self.keep:
            say(f"kept the scratch state folder (runs, result database): {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ScratchHome:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ctl_run(
    ctl: str,
    home: ScratchHome,
    image: str,
    model: str,
    batch_sizes: str,
    sets: Sequence[str],
    timeout_s: float,
    launcher: str = "local",
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """`bench-ctl run ... --launcher L --json`; the RunResult as a dict. Exits on a failed run."""
    cmd = [
        ctl,
        "run",
        "--image",
        image,
        "--model",
        model,
        "--batch-sizes",
        batch_sizes,
        "--launcher",
        launcher,
        "--json",
        "--timeout",
        str(int(timeout_s)),
    ]
    for s in sets:
        cmd += ["--set", s]
    cmd += list(extra)
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=home.env(), cwd=REPO, timeout=timeout_s + 60
        )
    except subprocess.TimeoutExpired:
        die(f"`{' '.join(cmd)}` did not finish in {timeout_s + 60:.0f}s", code=EXIT_FAIL)
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        die(
            f"`{' '.join(cmd)}` exited {proc.returncode} without a JSON result:\n    {_tail(proc.stderr)}",
            code=EXIT_FAIL,
        )
    if proc.returncode != 0 or result.get("status") != "ok":
        die(
            f"run {result.get('run_id')} ended with status {result.get('status')}: {result.get('message')}\n"
            f"    command: {' '.join(cmd)}\n    {_tail(proc.stderr)}",
            code=EXIT_FAIL,
        )
    return result


class LoadMeter(HostLoadTracker):
    """CPU time other processes used while a measurement ran, in cores (0 = the machine was ours).

    The runner's own host-load reading (/proc/stat busy time minus this process's and its waited-for
    children's CPU time), around a whole subprocess here (start-up and compilation included), so it
    flags a disturbed measurement rather than quantifying it exactly. NaN where unreadable."""

    other_cores: float

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        if self.other_cores is None:
            self.other_cores = float("nan")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> float:
    """(max - min) / median: the run-to-run noise of one figure, as a fraction."""
    m = median(values)
    return (max(values) - min(values)) / m if m else float("nan")


def fmt_list(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    return "[" + ", ".join(fmt.format(v) for v in values) + "]"


def read_manifest(model_dir: Path) -> dict[str, Any]:
    """A model's manifest as a dict, with the first input's and output's names, shape and layout
    under their version 1 keys (input_shape: None for the batch, dimensions at their defaults)."""
    from schemas import ModelManifest

    m = ModelManifest.model_validate_json((model_dir / "manifest.json").read_text())
    return {
        **m.model_dump(mode="json"),
        "input_name": m.input_name,
        "input_shape": m.input_shape,
        "input_layout": m.input_layout,
        "output_name": m.output_name,
    }
