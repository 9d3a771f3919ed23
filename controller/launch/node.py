"""What a Slurm job runs on its node: one planned run, with the launchers of a local run.

    python -m controller.launch.node --home BENCH_HOME --timeout SECONDS RUN_DIR

It reads `RUN_DIR/spec.json`, picks Docker where this node's daemon answers and the image is
built (else the locked environment on the shared file system), runs the runner and writes
`RUN_DIR/result.json` with the job id and node name. It stores nothing: the controller ingests.
A problem of the node (no environment, no image) is a result with status error, not a gap.
SIGTERM (scancel, the time limit) stops the runner; the controller then records Slurm's state.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

from controller.catalog.images import ImageInfo, get_image
from controller.errors import BenchError, Terminated
from controller.launch.base import RESULT_FILE, SPEC_FILE, Launcher, LauncherChoice, failed_result
from controller.launch.select import select_launcher
from controller.paths import Paths
from schemas import LaunchInfo, RunResult, RunSpec
from schemas.atomic import write_atomic


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _terminate(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def allocated_gpu(device: str) -> str:
    """`cuda:N` of the job (N counts the GPUs Slurm gave it, CUDA_VISIBLE_DEVICES) as the machine's
    own index, which Docker's device request takes."""
    index = int(device.split(":")[1])
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if index < len(visible) and visible[index].isdigit():
        return f"cuda:{visible[index]}"
    return device


def for_launcher(spec: RunSpec, launcher: Launcher, image: ImageInfo) -> RunSpec:
    """The spec as the chosen launcher's runner sees it (its folders) and, in a container, with the
    GPU Slurm allocated named by the machine's index."""
    spec = launcher.runner_view(spec, image)
    if launcher.name == "docker" and spec.device.startswith("cuda:"):
        return RunSpec.model_validate({**spec.model_dump(), "device": allocated_gpu(spec.device)})
    return spec


def node_name() -> str:
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def node_paths(home: Path, node: str) -> Paths:
    """The state folder as a node uses it: shared, except the framework caches, which are the
    node's own (an engine or compiled blob is built for one machine's CPU or GPU, and a runner
    locks its cache while compiling: a lock that holds on a local disk)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", node)
    return Paths(home=home, db=home / "unused.duckdb", cache_home=home / "cache" / "nodes" / safe)


def run_job(run_dir: Path, paths: Paths, timeout_s: float, choice: str = "auto") -> RunResult:
    """Run the spec of `run_dir` here and return its result, with this job's id and node."""
    job_id = os.environ.get("SLURM_JOB_ID")
    node = node_name()
    spec = RunSpec.model_validate_json((run_dir / SPEC_FILE).read_text())
    image = get_image(spec.image)
    started = datetime.now(UTC)
    _log(f"[node] job {job_id} on {node}: run {spec.run_id}")
    try:
        launcher = select_launcher(LauncherChoice(choice), image, paths, _log)
        spec = for_launcher(spec, launcher, image)
        launcher.prepare(image, _log)
        result = launcher.launch(image, spec, run_dir, timeout_s, _log)
    except BenchError as e:
        info = LaunchInfo(
            launcher="slurm", host=socket.gethostname(), image_ref=image.name, lock_hash=image.lock_hash
        )
        result = failed_result(spec, "error", f"on node {node}: {e}", started, info)
    launch = result.launch or LaunchInfo(launcher="slurm", image_ref=image.name)
    return result.model_copy(update={"launch": launch.model_copy(update={"job_id": job_id, "node": node})})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m controller.launch.node", description=__doc__.splitlines()[0]
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--home", type=Path, required=True, help="the state folder (BENCH_HOME)")
    parser.add_argument("--timeout", type=float, required=True, help="seconds before the runner is killed")
    parser.add_argument("--launcher", choices=["auto", "local", "docker"], default="auto")
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    run_dir = args.run_dir.resolve()
    if not (run_dir / SPEC_FILE).is_file():
        _log(f"[node] {run_dir / SPEC_FILE} is not visible on this node")
        return 2
    paths = node_paths(args.home.resolve(), node_name())
    try:
        result = run_job(run_dir, paths, args.timeout, args.launcher)
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Terminated) else signal.SIGINT
        _log(f"[node] stopped by {signal.Signals(signum).name}: the runner was killed")
        return 128 + signum
    write_atomic(run_dir / RESULT_FILE, result.model_dump_json(indent=1) + "\n")
    _log(f"[node] result: {result.status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
