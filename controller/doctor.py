"""`bench-ctl doctor`: can this host measure, and what will its numbers lack?

Each check says what it found and what that means for the figures (energy columns that stay
NULL, GPU cells recorded as unsupported, noise from frequency scaling or other load). A host
"cannot measure" only when results could not be made or kept: no writable store or run folder,
a full disk."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import psutil
from pydantic import BaseModel

from controller.catalog import hosts
from controller.catalog import models as model_store
from controller.errors import BenchError
from controller.paths import REPO_ROOT, Paths
from controller.store import db as store
from probes import energy, fingerprint
from schemas.manifest import KERAS_MODELS

Level = Literal["ok", "note", "warn", "fail"]
MIN_FREE_GB = 1.0  # below: results cannot be kept
LOW_FREE_GB = 10.0  # below: a large model export or image build will fail
BUSY_CORES = 0.5  # other processes' cores, on average over the sample, that make the host busy
DEFAULT_SAMPLE_S = 5.0  # long enough to see load that comes and goes every second or two


class Finding(BaseModel):
    check: str
    level: Level
    found: str
    meaning: str


class Diagnosis(BaseModel):
    host: hosts.HostIdentity
    host_key: str
    findings: list[Finding]

    @property
    def can_measure(self) -> bool:
        return not any(f.level == "fail" for f in self.findings)


def _docker() -> tuple[Finding, Any | None]:
    try:
        import docker

        c = docker.from_env(timeout=3)
        version = c.version().get("Version", "?")
        return (
            Finding(
                check="docker",
                level="ok",
                found=f"Docker {version} answers",
                meaning="runs use the pinned images where they are built",
            ),
            c,
        )
    except Exception as e:
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        return (
            Finding(
                check="docker",
                level="note",
                found=f"no Docker engine answers ({why})",
                meaning="runs use local environments (.bench/envs, built from the same locks); "
                "images cannot be built or used here",
            ),
            None,
        )


def _nvidia_runtime(client: Any | None, gpus: list[str]) -> Finding:
    if client is None:
        return Finding(check="nvidia-runtime", level="note", found="no Docker", meaning="nothing to check")
    try:
        runtimes = set((client.info().get("Runtimes") or {}).keys())
    except Exception:
        runtimes = set()
    if "nvidia" in runtimes:
        return Finding(
            check="nvidia-runtime",
            level="ok",
            found="the NVIDIA container runtime is registered",
            meaning="GPU images can run in containers",
        )
    return Finding(
        check="nvidia-runtime",
        level="warn" if gpus else "note",
        found="no NVIDIA container runtime (runtimes: " + (", ".join(sorted(runtimes)) or "none") + ")",
        meaning="GPU runs cannot use containers: they use local environments"
        if gpus
        else "not needed on a host without GPUs",
    )


def _gpus() -> list[Finding]:
    from probes import gpu as gpu_core

    nvml = gpu_core.load_nvml()
    listed = hosts.nvidia_gpus()
    if nvml is None:
        if listed:
            return [
                Finding(
                    check="gpus",
                    level="warn",
                    found=f"the driver lists {', '.join(listed)} but NVML does not answer",
                    meaning="no power, energy, clock or device-memory readings: those columns stay NULL",
                )
            ]
        return [
            Finding(
                check="gpus",
                level="note",
                found="no NVIDIA GPU (NVML finds no driver)" if _has_pynvml() else "no NVIDIA GPU (no NVML)",
                meaning="GPU cells of a plan are recorded as unsupported here; no GPU energy or memory",
            )
        ]
    findings = []
    count = nvml.nvmlDeviceGetCount()
    names = []
    counters = 0
    for i in range(count):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        names.append(gpu_core.device_info(nvml, i).get("name", "?"))
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(h)
            counters += 1
        except Exception:
            pass
    driver = gpu_core.device_info(nvml, 0).get("driver", "?") if count else "?"
    findings.append(
        Finding(
            check="gpus",
            level="ok" if count else "note",
            found=f"{count} GPU(s) through NVML: {', '.join(names) or 'none'} (driver {driver})",
            meaning="GPU runs measure power, device memory, clocks and throttling",
        )
    )
    if count:
        findings.append(
            Finding(
                check="gpu-energy",
                level="ok" if counters == count else "warn",
                found=f"energy counter on {counters} of {count} GPU(s)",
                meaning="energy per 4096 predictions from the counter"
                if counters == count
                else "where it is missing, energy is integrated from sampled power (coarser)",
            )
        )
    return findings


def _has_pynvml() -> bool:
    import importlib.util

    return importlib.util.find_spec("pynvml") is not None


def _rapl(root: Path = energy.POWERCAP) -> Finding:
    domains, unreadable = energy.rapl_packages(root)
    if domains:
        return Finding(
            check="cpu-energy",
            level="ok",
            found=f"RAPL package counters: {', '.join(d.name for d in domains)}",
            meaning="CPU runs get energy_j_per_4096 (package energy, all processes on the socket)",
        )
    if unreadable:
        return Finding(
            check="cpu-energy",
            level="warn",
            found=f"RAPL counters exist but are not readable by this user ({unreadable[0]})",
            meaning="CPU runs have no energy figures; run as root, or make energy_uj readable",
        )
    return Finding(
        check="cpu-energy",
        level="note",
        found="no RAPL (powercap) counters: typical of virtual machines",
        meaning="CPU runs have no energy figures (energy_j_per_4096 stays NULL)",
    )


def _frequency() -> list[Finding]:
    governor = fingerprint.cpu_governor()
    turbo = fingerprint.turbo()
    out = []
    if governor is None:
        out.append(
            Finding(
                check="cpu-governor",
                level="note",
                found="no cpufreq governor exposed (virtual machine?)",
                meaning="clocks are the hypervisor's: expect more spread between repetitions",
            )
        )
    else:
        out.append(
            Finding(
                check="cpu-governor",
                level="ok" if governor == "performance" else "warn",
                found=f"governor {governor}",
                meaning="steady clocks"
                if governor == "performance"
                else "clocks follow load: warm-up and spread grow; `cpupower frequency-set -g performance`",
            )
        )
    if turbo is not None:
        out.append(
            Finding(
                check="cpu-turbo",
                level="warn" if turbo else "ok",
                found="turbo on" if turbo else "turbo off",
                meaning="clocks depend on temperature and neighbours: repetitions vary more"
                if turbo
                else "clocks do not depend on temperature",
            )
        )
    return out


LOAD_STEP_S = 0.5  # the load is read this often while sampling, so that bursts show as peaks
BUSIEST = 3  # other processes named
NOISY_SHARE = 0.2  # share of noisy measurements in the store above which the host is called busy


def _processes() -> dict[int, psutil.Process]:
    """Every other process, its CPU counter started (cpu_percent's first call only primes it)."""
    found = {}
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            proc.cpu_percent(None)
            found[proc.pid] = proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _busiest(procs: dict[int, psutil.Process]) -> list[str]:
    """The processes that used the most CPU since `_processes`, as "name (pid) 85%" (of a core)."""
    used = []
    for pid, proc in procs.items():
        try:
            pct = proc.cpu_percent(None)
            name = " ".join(proc.cmdline()[:3]) or proc.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if pct >= 5:
            used.append((pct, f"{name[:60]} (pid {pid}) {pct:.0f}%"))
    return [text for _, text in sorted(used, reverse=True)[:BUSIEST]]


def sample_load(sample_s: float) -> tuple[list[float], list[str]]:
    """Busy cores (all processes but this one, which sleeps) every LOAD_STEP_S over `sample_s`
    seconds, and the busiest other processes over the whole time."""
    cores = psutil.cpu_count() or 1
    procs = _processes()
    psutil.cpu_percent(None)
    steps = []
    end = time.monotonic() + sample_s
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(LOAD_STEP_S, left))
        steps.append(psutil.cpu_percent(None) / 100 * cores)
    return steps, _busiest(procs)


def _load(sample_s: float) -> Finding:
    cores = psutil.cpu_count() or 1
    steps, busiest = sample_load(sample_s)
    mean, peak = sum(steps) / len(steps), max(steps)
    load = fingerprint.load_average()
    level: Level = "warn" if mean > BUSY_CORES or peak > 1.0 else "ok"
    found = (
        f"{mean:.2f} of {cores} cores busy on average over {sample_s:g}s, {peak:.2f} at the peak "
        f"(load average {', '.join(map(str, load or []))})"
    )
    if busiest:
        found += "; busiest: " + ", ".join(busiest)
    return Finding(
        check="other-load",
        level=level,
        found=found,
        meaning="runs made now wait for quiet, leave out the windows in which they are starved and take "
        "longer; a run starved throughout is noisy and compare gives it no verdict"
        if level == "warn"
        else "quiet enough to measure",
    )


def _store_noise(paths: Paths) -> Finding | None:
    """How many of this host's stored measurements were noisy: the load a sample cannot see."""
    if not paths.db.exists():
        return None
    host = socket.gethostname()
    try:
        _, rows = store.read(
            paths.db,
            "SELECT count(*) FILTER (WHERE noisy), count(*) FROM results "
            "WHERE host = ? AND status = 'ok' AND batch_size IS NOT NULL",
            [host],
        )
    except BenchError:
        return None  # the store finding says what is wrong with it
    noisy, total = (int(x or 0) for x in rows[0])
    if total == 0:
        return Finding(
            check="stored-noise",
            level="note",
            found=f"no measurements from {host} in the store yet",
            meaning="nothing to tell about this host's load over time",
        )
    share = noisy / total
    return Finding(
        check="stored-noise",
        level="warn" if share > NOISY_SHARE else "ok",
        found=f"{noisy} of {total} measurements from {host} in the store are noisy ({share:.0%})",
        meaning="this host is often busy: expect longer runs, noisy ones made again and verdicts withheld"
        if share > NOISY_SHARE
        else "this host has mostly been quiet when it measured",
    )


def _disk(paths: Paths) -> Finding:
    folder = paths.home if paths.home.exists() else paths.home.parent
    while not folder.exists():
        folder = folder.parent
    free_gb = shutil.disk_usage(folder).free / 2**30
    level: Level = "fail" if free_gb < MIN_FREE_GB else ("warn" if free_gb < LOW_FREE_GB else "ok")
    return Finding(
        check="disk",
        level=level,
        found=f"{free_gb:.1f} GiB free under {folder}",
        meaning={
            "fail": "results and run folders cannot be kept: free space first",
            "warn": "a model export (VGG19 needs ~5 GB) or an image build may not fit",
            "ok": "room for models, environments and results",
        }[level],
    )


def _store(paths: Paths) -> Finding:
    db = paths.db
    try:
        if db.exists():
            with store.reader(db) as con:
                n = con.execute("SELECT count(*) FROM runs").fetchone()
            writable = os.access(db, os.W_OK) and os.access(db.parent, os.W_OK)
            return Finding(
                check="store",
                level="ok" if writable else "fail",
                found=f"{db}: {n[0] if n else 0} runs" + ("" if writable else ", read-only"),
                meaning="results are stored here"
                if writable
                else "results could not be stored: pass another --db",
            )
    except BenchError as e:
        older = "older than this code" in e.message
        return Finding(
            check="store",
            level="note" if older else "fail",
            found=e.message,
            meaning="the next run or sweep upgrades it" if older else (e.hint or "pass another --db"),
        )
    parent = db.parent
    while not parent.exists():
        parent = parent.parent
    ok = os.access(parent, os.W_OK)
    return Finding(
        check="store",
        level="ok" if ok else "fail",
        found=f"{db} does not exist yet" + ("" if ok else f"; {parent} is not writable"),
        meaning="the first run creates it" if ok else "results could not be stored: pass another --db",
    )


def _images(paths: Paths) -> Finding:
    from controller.launch import build as images

    rows = images.status(paths)
    built = [r.name for r in rows if r.image_id and not r.image_stale]
    stale = [r.name for r in rows if r.image_id and r.image_stale]
    local = [r.name for r in rows if r.local_env == "current"]
    parts = [f"images built: {', '.join(built) or 'none'}"]
    if stale:
        parts.append(f"stale (older code or lock): {', '.join(stale)}")
    parts.append(f"local environments: {', '.join(local) or 'none'}")
    return Finding(
        check="images",
        level="warn" if stale else "ok",
        found="; ".join(parts),
        meaning="stale images are not used (runs fall back to local environments): `make images`"
        if stale
        else "missing environments are built on first use",
    )


def _models(paths: Paths) -> Finding:
    have = model_store.list_names(paths)
    missing = [m for m in KERAS_MODELS if m not in have]
    return Finding(
        check="models",
        level="note" if missing else "ok",
        found=f"in the store: {', '.join(have) or 'none'}",
        meaning=f"export the study's others when needed: bench-ctl models export {' '.join(missing)}"
        if missing
        else "every study model is exported",
    )


def diagnose(paths: Paths, load_sample_s: float = DEFAULT_SAMPLE_S) -> Diagnosis:
    """Every check, in the order a reader wants them."""
    identity = hosts.identity()
    docker_finding, client = _docker()
    findings = [_store(paths), _disk(paths), docker_finding]
    findings += _gpus()
    findings.append(_nvidia_runtime(client, identity.gpus))
    findings.append(_rapl())
    findings += _frequency()
    findings.append(_load(load_sample_s))
    stored = _store_noise(paths)
    if stored is not None:
        findings.append(stored)
    findings.append(_images(paths))
    findings.append(_models(paths))
    return Diagnosis(host=identity, host_key=identity.key, findings=findings)


class SelfTest(NamedTuple):
    """The GPU acceptance check's outcome: its report (JSON) or its printed lines, and whether it passed."""

    ok: bool
    report: dict[str, Any] | None
    lines: list[str]


def gpu_selftest(as_json: bool, on_line: Callable[[str], None] | None = None) -> SelfTest:
    """Run the GPU acceptance check (`gpucheck`, beside the controller in the repository) in its own
    process, as `make gpu-check` does: it is test tooling, not part of the controller."""
    if not (REPO_ROOT / "gpucheck").is_dir():
        raise BenchError(
            f"the GPU check (gpucheck/) is not beside this installation ({REPO_ROOT})",
            "run it from a checkout of the repository: make gpu-check",
        )
    cmd = [sys.executable, "-m", "gpucheck.check", *(["--json"] if as_json else [])]
    lines: list[str] = []
    # stderr goes to a file: a pipe read only after stdout ends would stall a chatty check.
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if on_line is not None and not as_json:
                on_line(lines[-1])
        code = proc.wait()
        stderr.seek(0)
        err = stderr.read().strip()
    if code not in (0, 1):
        last = err.splitlines()[-1] if err else f"it exited {code}"
        raise BenchError(f"the GPU self-test cannot run: {last}", "see `make gpu-check`", exit_code=1)
    report = json.loads("\n".join(lines)) if as_json else None
    return SelfTest(ok=code == 0, report=report, lines=[] if as_json else lines)
