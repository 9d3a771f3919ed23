"""Co-located ensembles as separate processes (local) or containers (Docker) started together.

The threads mode (`--ensemble`) loads every member in one runner. This mode gives each member its
own runner, as separate deployments would share a device: each member is first measured alone,
then all members are launched at once with a file barrier that lines up their steady states, for
a fixed duration so the measurements overlap. An ensemble prediction needs every member's
output, so ensemble predictions per second is the slowest member's co-located throughput; each
member's slowdown is its throughput alone over its throughput co-located.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from pydantic import BaseModel

from controller.errors import BenchError
from controller.launch.base import LineSink
from controller.paths import Paths
from controller.run import pipeline, planning
from schemas import Barrier, RunResult

DEFAULT_DURATION_S = 10.0


class MemberRow(BaseModel):
    model: str
    alone_sps: float | None
    colocated_sps: float | None
    slowdown: float | None


class ColocatedRow(BaseModel):
    batch_size: int
    ensemble_sps: float | None
    members: list[MemberRow]


class Colocated(BaseModel):
    group: str
    rows: list[ColocatedRow]
    runs: list[RunResult]


def _fixed_duration(sets: list[str]) -> list[str]:
    """Every run measures for the same fixed time, so co-located steady states overlap fully."""
    keys = {s.partition("=")[0].strip() for s in sets}
    duration = next(
        (s.partition("=")[2] for s in sets if s.partition("=")[0].strip() == "policy.min_time_s"),
        str(DEFAULT_DURATION_S),
    )
    extra = [] if "policy.min_time_s" in keys else [f"policy.min_time_s={duration}"]
    if "policy.max_time_s" in keys:
        raise BenchError("--colocate processes measures a fixed duration", "set policy.min_time_s only")
    return [*sets, *extra, f"policy.max_time_s={duration}", "policy.max_iterations=100000000"]


def run(req: planning.RunRequest, paths: Paths, log: LineSink, on_line: LineSink) -> Colocated:
    """Each member measured alone, then all started together, meeting at a barrier before each
    steady state; one planned configuration per member, run through one executor."""
    models = req.models
    if len(models) < 2:
        raise BenchError("--colocate processes needs at least two models", "e.g. --model resnet50,vgg19")
    base = req.model_copy(update={"ensemble": False, "sets": _fixed_duration(req.sets)})
    planned = pipeline.prepare(base, paths)
    for p in planned:
        if p.unsupported is not None:
            raise BenchError(f"cannot co-locate here: {p.unsupported}", "run on a host with the device")
    pipeline.check_destinations(paths)
    image = planned[0].image
    group = planning.new_run_id(image.name, "colocated")
    barrier_dir = paths.runs / f"{group}.barrier"
    barrier_dir.mkdir(parents=True)
    here = pipeline.Here(paths, log, on_line, req.launcher, shared=[barrier_dir])

    runs: list[RunResult] = []
    alone: dict[str, RunResult] = {}
    for p in planned:
        log(f"{p.request.model}: alone")
        alone[p.request.model] = pipeline.execute_here(p, here, group=group, role="alone")
        runs.append(alone[p.request.model])

    launcher = here.launcher_for(image)
    log(f"{', '.join(models)}: co-located, {len(models)} {launcher.name} runners started together")
    with ThreadPoolExecutor(max_workers=len(planned)) as pool:
        futures = {
            p.request.model: pool.submit(
                pipeline.execute_here,
                p,
                here,
                group=group,
                role="colocated",
                barrier=Barrier(dir=str(barrier_dir), party=p.request.model, parties=models),
            )
            for p in planned
        }
        together = {m: f.result() for m, f in futures.items()}
    runs.extend(together.values())
    return Colocated(group=group, rows=summarize(models, req.batch_sizes, alone, together), runs=runs)


def summarize(
    models: list[str], batch_sizes: list[int], alone: dict[str, RunResult], together: dict[str, RunResult]
) -> list[ColocatedRow]:
    def sps(result: RunResult, bs: int) -> float | None:
        return next((m.throughput_sps for m in result.measurements if m.batch_size == bs), None)

    rows = []
    for bs in batch_sizes:
        members = []
        for m in models:
            a, t = sps(alone[m], bs), sps(together[m], bs)
            members.append(
                MemberRow(model=m, alone_sps=a, colocated_sps=t, slowdown=a / t if a and t else None)
            )
        values = [mm.colocated_sps for mm in members]
        ensemble = min(v for v in values if v is not None) if all(v is not None for v in values) else None
        rows.append(ColocatedRow(batch_size=bs, ensemble_sps=ensemble, members=members))
    return rows
