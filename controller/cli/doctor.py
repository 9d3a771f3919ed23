"""`bench-ctl doctor`: whether this host can measure, and what its numbers will lack."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from controller.cli.console import DbOpt, JsonOpt, handles_errors, info, out, safe
from controller.cli.lazy import lazy
from controller.paths import Paths

if TYPE_CHECKING:
    from controller import doctor
else:
    doctor = lazy("controller.doctor")

commands = typer.Typer()

STYLE = {"ok": "green", "note": "cyan", "warn": "yellow", "fail": "red"}


@commands.command("doctor")
@handles_errors
def doctor_command(
    run_selftest: Annotated[
        bool,
        typer.Option(
            "--selftest",
            help="also run every GPU path for real (the same check as `make gpu-check`): "
            "NVML energy against integrated power, device memory, throttle flags, the GPU runners",
        ),
    ] = False,
    sample_s: Annotated[
        float | None,
        typer.Option(
            "--sample-s",
            help="seconds to watch the other load (read every 0.5 s: periodic load shows as peaks); "
            "default 5",
            min=0.5,
            max=600,
        ),
    ] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check this host before a sweep: Docker and the NVIDIA container runtime, GPUs through NVML
    and their energy counters, CPU energy (RAPL), CPU governor and turbo, other load over
    --sample-s seconds and the busiest other processes, free disk, the store and how many of this
    host's measurements in it were noisy, which images are built or stale and which models are
    exported. Each finding says what it means for the numbers. Exit 0 when the host can measure,
    1 (with the reasons) when it cannot."""
    paths = Paths.from_env(db)
    d = doctor.diagnose(paths) if sample_s is None else doctor.diagnose(paths, sample_s)
    report = None
    if run_selftest:
        if not as_json:
            info("GPU self-test: every GPU path run for real (a few minutes on a GPU host)")
        report = doctor.gpu_selftest(as_json, on_line=info)
    if as_json:
        doc = d.model_dump() | {"can_measure": d.can_measure}
        if report is not None:
            doc["selftest"] = report.report
        print(json.dumps(doc, indent=1, default=str))
    else:
        t = Table("check", "", "found", "what it means for the numbers")
        for f in d.findings:
            t.add_row(f.check, f"[{STYLE[f.level]}]{f.level}[/]", safe(f.found), safe(f.meaning))
        out.print(t)
        out.print(f"host {d.host.hostname}, identity {d.host_key} (sweeps key their cells on it)")
        fails = [f for f in d.findings if f.level == "fail"]
        if fails:
            out.print("[red]this host cannot measure:[/] " + "; ".join(safe(f.found) for f in fails))
        else:
            out.print("[green]this host can measure[/]" + _caveats(d))
    if not d.can_measure or (report is not None and not report.ok):
        raise typer.Exit(1)


def _caveats(d: doctor.Diagnosis) -> str:
    warned = [f.check for f in d.findings if f.level == "warn"]
    return f" (with warnings: {', '.join(warned)})" if warned else ""
