"""The fault suite: real failures inflicted on real runs, and the store checked after each.

Each case runs `bench-ctl` as a user would (a subprocess, the null runner in its local environment),
breaks something (kills a process, fills a disk, corrupts a file, crowds the store), then checks:
the store opens, no run has half its rows, nothing is stored twice, no runner process is left
behind, and every run that produced a result can be stored. `tests/test_faults.py` runs every case
under pytest; `make faults` (`python -m tests.faults`) prints one line per case and a total, with
the number of hostile-input regression tests (tests/test_hostile*.py) that `make test` runs beside.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import psutil

REPO = Path(__file__).resolve().parents[1]

SHORT = ["--set", "policy.min_time_s=0.2", "--set", "policy.max_time_s=1", "--set", "policy.window_s=0.05"]
LONG = ["--set", "policy.min_time_s=30", "--set", "policy.max_time_s=60", "--set", "work_us=200"]


class Skip(Exception):
    """The case cannot run on this host (e.g. mounting a small disk needs root)."""


@dataclass
class Outcome:
    name: str
    survived: bool = False
    rows_lost: int = 0
    orphans: int = 0
    detail: str = ""
    skipped: str | None = None
    seconds: float = 0.0


@dataclass
class Case:
    """A scratch state folder and store for one case, and the bench-ctl processes it started."""

    root: Path
    home: Path = field(init=False)
    db: Path = field(init=False)

    def __post_init__(self) -> None:
        from tests.conftest import write_fake_model

        self.home = self.root / "home"
        (self.home / "models").mkdir(parents=True)
        (self.home / "envs").symlink_to((REPO / ".bench" / "envs").resolve(), target_is_directory=True)
        write_fake_model(self.home / "models" / "fake")
        self.db = self.root / "results.duckdb"

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "BENCH_HOME": str(self.home), "BENCH_DB": str(self.db), **extra}

    def start(self, *args: str, db: Path | None = None) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "controller.cli", *args]
        env = self.env() if db is None else self.env(BENCH_DB=str(db))
        # SIGINT as a foreground command gets it: a suite started in the background (`make test &`)
        # has SIGINT ignored, and an ignored signal stays ignored in its children.
        return subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip

    def bench(
        self, *args: str, db: Path | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        proc = self.start(*args, db=db)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def run_args(self, *extra: str) -> list[str]:
        return ["run", "--image", "null", "--model", "fake", "-b", "1", "--launcher", "local", *extra]

    def runner_pids(self) -> list[int]:
        """Runner (or tool) processes started for this case: their command line names its home."""
        found = []
        needle = str(self.home)
        for p in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                cmd = " ".join(p.info["cmdline"] or [])
                if needle in cmd and "runners" in cmd and "controller.cli" not in cmd:
                    found.append(p.info["pid"])
        return found

    def wait_runner(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.runner_pids()
            if pids:
                return pids[0]
            time.sleep(0.05)
        raise AssertionError("the runner never started")

    def wait_log(self, needle: str, timeout: float = 60) -> None:
        """Until some run's log says `needle` (e.g. the runner reached its steady state)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for log in (self.home / "runs").glob("*/runner.log"):
                with contextlib.suppress(OSError):
                    if needle in log.read_text():
                        return
            time.sleep(0.05)
        raise AssertionError(f"no run log says {needle!r}")

    def orphans(self, grace_s: float = 5.0) -> int:
        deadline = time.monotonic() + grace_s
        while self.runner_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self.runner_pids()
        for pid in left:  # never leave them to skew the next case
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(left)

    def results_on_disk(self) -> set[str]:
        """Run ids of valid result files kept in run folders."""
        from schemas import load_result

        ids = set()
        for f in (self.home / "runs").glob("*/result.json"):
            with contextlib.suppress(Exception):
                ids.add(load_result(f).run_id)
        return ids


@dataclass
class StoreCheck:
    opens: bool
    runs: set[str]
    half_rows: int
    detail: str = ""


def check_store(db: Path) -> StoreCheck:
    """Open the store read-only and count rows that betray a half-written run."""
    if not db.exists():
        return StoreCheck(True, set(), 0, "no store")
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error as e:
        return StoreCheck(False, set(), 0, f"store does not open: {str(e).splitlines()[0]}")
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "runs" not in tables:  # killed before its first migration committed: an empty store
            return StoreCheck(True, set(), 0)
        runs = {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}
        half = con.execute(
            """SELECT (SELECT count(*) FROM runs r WHERE status = 'ok'
                       AND NOT EXISTS (SELECT 1 FROM measurements m WHERE m.run_id = r.run_id))
                    + (SELECT count(*) FROM measurements m
                       WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.run_id = m.run_id))"""
        ).fetchone()
        return StoreCheck(True, runs, int(half[0]) if half else 0)
    finally:
        con.close()


def verdict(
    case: Case, name: str, ok: bool, detail: str, db: Path | None = None, broken_store: bool = False
) -> Outcome:
    """Common checks after a fault: store, half rows, orphans, results on disk not stored.

    `broken_store`: the case broke the store on purpose; it is not expected to open."""
    store = check_store(db or case.db)
    if broken_store:
        store = StoreCheck(True, case.results_on_disk(), 0)
    orphans = case.orphans()
    kept = case.results_on_disk()
    lost = len(kept - store.runs) if store.opens else len(kept)
    notes = [detail] + ([store.detail] if store.detail else [])
    good = ok and store.opens and store.half_rows == 0 and orphans == 0
    return Outcome(name, good, lost + store.half_rows, orphans, "; ".join(n for n in notes if n))


@contextlib.contextmanager
def small_disk(path: Path, size_kb: int) -> Iterator[Path]:
    """A tmpfs of `size_kb` mounted at `path` (needs root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        raise Skip("mounting a small file system needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise Skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    return (lines[-1] if lines else "")[:160]


def fill(folder: Path) -> None:
    with contextlib.suppress(OSError), (folder / "filler").open("wb") as f:
        while True:
            f.write(b"\0" * 65536)


# --------------------------------------------------------------------------- cases

CASES: dict[str, Callable[[Case], Outcome]] = {}


def case(fn: Callable[[Case], Outcome]) -> Callable[[Case], Outcome]:
    CASES[fn.__name__.replace("_", "-")] = fn
    return fn


def _kill_runner_midway(c: Case, sig: signal.Signals) -> tuple[subprocess.Popen[str], str, str]:
    proc = c.start(*c.run_args(*LONG))
    pid = c.wait_runner()
    c.wait_log("first inference")  # the runner is past loading, into warm-up and steady state
    time.sleep(1.0)
    os.kill(pid, sig)
    out, err = proc.communicate(timeout=60)
    return proc, out, err


@case
def runner_sigkill_mid_steady_state(c: Case) -> Outcome:
    proc, out, _ = _kill_runner_midway(c, signal.SIGKILL)
    store = check_store(c.db)
    said = [ln.strip() for ln in out.splitlines() if "SIGKILL" in ln]
    ok = proc.returncode == 1 and len(store.runs) == 1 and bool(said)
    return verdict(c, "runner-sigkill-mid-steady-state", ok, said[0][:160] if said else out[-300:])


@case
def runner_out_of_memory_local(c: Case) -> Outcome:
    done = c.bench(*c.run_args("--set", "fault=oom", "--set", "policy.memory_limit_mb=300"))
    ok = done.returncode == 1 and "out of memory" in done.stdout + done.stderr
    return verdict(c, "runner-out-of-memory-local", ok and len(check_store(c.db).runs) == 1, "")


@case
def runner_timeout(c: Case) -> Outcome:
    done = c.bench(*c.run_args("--set", "fault=hang", "--timeout", "3"))
    ok = done.returncode == 1 and "timeout" in done.stdout
    return verdict(c, "runner-timeout", ok and len(check_store(c.db).runs) == 1, "")


def _signal_bench_ctl(c: Case, sig: signal.Signals) -> Outcome:
    proc = c.start(*c.run_args(*LONG))
    c.wait_runner()
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    ok = proc.returncode != 0
    said = " | ".join(err.strip().splitlines()[-3:])
    return verdict(
        c, f"bench-ctl-{sig.name.lower()}-during-run", ok, f"bench-ctl exit {proc.returncode}: {said}"
    )


@case
def bench_ctl_sigint_during_run(c: Case) -> Outcome:
    return _signal_bench_ctl(c, signal.SIGINT)


@case
def bench_ctl_sigterm_during_run(c: Case) -> Outcome:
    return _signal_bench_ctl(c, signal.SIGTERM)


@case
def bench_ctl_sigkill_during_run(c: Case) -> Outcome:
    return _signal_bench_ctl(c, signal.SIGKILL)


def _results_to_ingest(c: Case, n: int) -> Path:
    from tests.conftest import result_factory

    make = result_factory()
    folder = c.root / "to-ingest"
    for i in range(n):
        r = make(run_id=f"20250101T000000Z-null-fake-{i:06x}", batch_sizes=tuple(range(1, 30)))
        (folder / r.run_id).mkdir(parents=True)
        (folder / r.run_id / "result.json").write_text(r.model_dump_json())
    return folder


def _workers_of(proc: subprocess.Popen[str], timeout: float = 60) -> list[psutil.Process]:
    """bench-ctl's worker processes (drawing, validating), once it has started them."""
    deadline = time.monotonic() + timeout
    found: dict[int, psutil.Process] = {}
    settle = deadline  # a pool forks its workers one after another: wait briefly for the next
    while time.monotonic() < min(deadline, settle) and proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            found |= {w.pid: w for w in psutil.Process(proc.pid).children(recursive=True)}
        if len(found) > 1:
            break
        if found and settle == deadline:
            settle = time.monotonic() + 0.3
        time.sleep(0.02)
    return list(found.values())


def _survivors(workers: list[psutil.Process], grace_s: float = 5.0) -> int:
    """Workers still alive `grace_s` after bench-ctl died; they are killed after being counted."""
    deadline = time.monotonic() + grace_s

    def alive() -> list[psutil.Process]:
        left = []
        for w in workers:
            with contextlib.suppress(psutil.Error):
                if w.is_running() and w.status() != psutil.STATUS_ZOMBIE:
                    left.append(w)
        return left

    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = alive()
    for w in left:
        with contextlib.suppress(psutil.Error):
            w.kill()
    return len(left)


def _signal_ingest(c: Case, sig: signal.Signals) -> Outcome:
    folder = _results_to_ingest(c, 300)
    proc = c.start("ingest", str(folder))
    workers = _workers_of(proc)  # validating workers: the signal comes while they work
    proc.send_signal(sig)
    proc.wait(timeout=60)
    left = _survivors(workers)
    proc.communicate(timeout=60)  # a worker left behind would hold its pipes open until killed
    store = check_store(c.db)
    again = c.bench("ingest", str(folder))  # the same command afterwards completes the batch
    after = check_store(c.db)
    pooled = bool(workers) or len(os.sched_getaffinity(0)) < 2  # one core: ingest reads in-process
    ok = store.opens and again.returncode == 0 and len(after.runs) == 300 and pooled
    name = f"bench-ctl-{sig.name.lower()}-during-ingest"
    detail = f"{len(store.runs)} of 300 stored before the signal, {len(after.runs)} after"
    out = verdict(c, name, ok, f"{detail}; {len(workers)} worker(s), {left} left behind")
    out.orphans += left
    out.survived = out.survived and not left
    return out


@case
def bench_ctl_sigint_during_ingest(c: Case) -> Outcome:
    return _signal_ingest(c, signal.SIGINT)


@case
def bench_ctl_sigkill_during_ingest(c: Case) -> Outcome:
    return _signal_ingest(c, signal.SIGKILL)


@case
def bench_ctl_sigkill_during_report(c: Case) -> Outcome:
    if len(os.sched_getaffinity(0)) < 2:
        raise Skip("one core: the report draws in-process, with no workers to leave behind")
    folder = _results_to_ingest(c, 40)
    c.bench("ingest", str(folder))
    proc = c.start("report", "--out", str(c.root / "report"))
    workers = _workers_of(proc)  # drawing workers: killed while they draw
    proc.kill()
    proc.wait(timeout=60)
    left = _survivors(workers)
    proc.communicate(timeout=60)  # a worker left behind would hold its pipes open until killed
    again = c.bench("report", "--out", str(c.root / "report"))  # and the next report is whole
    ok = bool(workers) and again.returncode == 0 and (c.root / "report" / "index.html").is_file()
    out = verdict(c, "bench-ctl-sigkill-during-report", ok, f"{len(workers)} worker(s), {left} left behind")
    out.orphans += left
    out.survived = out.survived and not left
    return out


@case
def full_disk_under_the_store(c: Case) -> Outcome:
    with small_disk(c.root / "small", 8192) as disk:
        db = disk / "results.duckdb"
        first = c.bench(*c.run_args(*SHORT), db=db)
        fill(disk)
        second = c.bench(*c.run_args(*SHORT), db=db)
        said = "measured, but not stored" in second.stderr and "bench-ctl ingest" in second.stderr
        ok = (
            first.returncode == 0
            and second.returncode == 1
            and said
            and "internal error" not in second.stderr
        )
        out = verdict(c, "full-disk-under-the-store", ok, _error_line(second.stderr), db=db)
        # The result kept on disk is not lost: it can be stored once there is room.
        (disk / "filler").unlink()
        c.bench("ingest", str(c.home / "runs"), db=db)
        out.rows_lost = len(c.results_on_disk() - check_store(db).runs)
        return out


@case
def full_disk_under_the_run_folder(c: Case) -> Outcome:
    with small_disk(c.home / "runs", 64) as disk:
        fill(disk)
        done = c.bench(*c.run_args(*SHORT))
        ok = done.returncode != 0 and "internal error" not in done.stderr and "Traceback" not in done.stderr
        return verdict(c, "full-disk-under-the-run-folder", ok, _error_line(done.stderr))


@case
def tampered_model(c: Case) -> Outcome:
    onnx = c.home / "models" / "fake" / "model.onnx"
    data = onnx.read_bytes()
    onnx.write_bytes(data[:-2] + b"!\n")
    done = c.bench(*c.run_args(*SHORT))
    ok = done.returncode == 2 and "sha256" in done.stderr and not check_store(c.db).runs
    return verdict(c, "tampered-model", ok, "")


@case
def truncated_model(c: Case) -> Outcome:
    ref = c.home / "models" / "fake" / "reference_output.npy"
    ref.write_bytes(ref.read_bytes()[:20])
    done = c.bench(*c.run_args(*SHORT))
    ok = done.returncode == 2 and "truncated" in done.stderr and not check_store(c.db).runs
    return verdict(c, "truncated-model", ok, "")


@case
def corrupt_store(c: Case) -> Outcome:
    c.bench(*c.run_args(*SHORT))
    data = bytearray(c.db.read_bytes())
    for i in range(4096, min(len(data), 4096 * 64), 97):  # scribble over blocks, keep the header
        data[i] ^= 0x5A
    c.db.write_bytes(bytes(data))
    done = c.bench(*c.run_args(*SHORT))
    runs_before = len(list((c.home / "runs").iterdir()))
    ok = done.returncode != 0 and "internal error" not in done.stderr and runs_before == 1
    return verdict(c, "corrupt-store", ok, _error_line(done.stderr), broken_store=True)


@case
def read_only_store(c: Case) -> Outcome:
    c.bench(*c.run_args(*SHORT))
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(c.db)], capture_output=True).returncode != 0:
            raise Skip("chattr +i is not supported here")
    else:
        c.db.chmod(0o444)
    try:
        run = c.bench(*c.run_args(*SHORT))
        query = c.bench("query", "SELECT count(*) AS n FROM runs", "-f", "csv")
        ok = run.returncode != 0 and "read-only" in run.stderr and query.stdout.split() == ["n", "1"]
        ok = ok and len(list((c.home / "runs").iterdir())) == 1  # refused before measuring
        return verdict(c, "read-only-store", ok, _error_line(run.stderr))
    finally:
        subprocess.run(["chattr", "-i", str(c.db)], capture_output=True)
        c.db.chmod(0o644)


@case
def eight_concurrent_runs(c: Case) -> Outcome:
    procs = [c.start(*c.run_args(*SHORT)) for _ in range(8)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    codes = [p.returncode for p in procs]
    store = check_store(c.db)
    ok = codes == [0] * 8 and len(store.runs) == 8
    said = [e.strip().splitlines()[-1] for e, code in zip(errs, codes, strict=True) if code and e.strip()]
    detail = f"exit codes {codes}, {len(store.runs)} stored" + (f"; first failure: {said[0]}" if said else "")
    return verdict(c, "8-concurrent-runs", ok, detail)


@case
def eight_concurrent_queries(c: Case) -> Outcome:
    c.bench(*c.run_args(*SHORT))
    writer = c.start(*c.run_args(*SHORT))  # a writer at the same time
    procs = [c.start("query", "SELECT count(*) AS n FROM runs", "-f", "csv") for _ in range(8)]
    outs = [p.communicate(timeout=120) for p in procs]
    writer.wait(timeout=300)
    codes = [p.returncode for p in procs]
    ok = codes == [0] * 8 and all(o[0].split()[0] == "n" for o in outs)
    return verdict(c, "8-concurrent-queries", ok, f"exit codes {codes}")


def _docker_ready() -> None:
    """Skip unless a daemon answers and the null image is built from the current code."""
    from controller.catalog.images import get_image
    from controller.launch.docker import unavailable_reason
    from controller.paths import Paths

    why = unavailable_reason(get_image("null"), Paths.from_env())
    if why is not None:
        raise Skip(f"Docker: {why} (make images IMAGES=null)")


def _containers(owner: int) -> list[str]:
    """Containers still running for the bench-ctl process `owner`."""
    done = subprocess.run(
        [
            "docker",
            "ps",
            "-q",
            "--filter",
            "label=bench.role=runner",
            "--filter",
            f"label=bench.owner-pid={owner}",
        ],
        capture_output=True,
        text=True,
    )
    return done.stdout.split()


@case
def runner_out_of_memory_docker(c: Case) -> Outcome:
    _docker_ready()
    args = c.run_args("--set", "fault=oom", "--set", "policy.memory_limit_mb=128")
    done = c.bench(*[("docker" if a == "local" else a) for a in args])
    said = "out of memory" in done.stdout + done.stderr
    ok = done.returncode == 1 and said and len(check_store(c.db).runs) == 1
    return verdict(c, "runner-out-of-memory-docker", ok, _error_line(done.stderr) if not ok else "")


@case
def bench_ctl_sigkill_during_docker_run(c: Case) -> Outcome:
    _docker_ready()
    args = [("docker" if a == "local" else a) for a in c.run_args(*LONG)]
    proc = c.start(*args)
    deadline = time.monotonic() + 120
    while not _containers(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if not _containers(proc.pid):
        proc.kill()
        return Outcome("bench-ctl-sigkill-during-docker-run", detail="the container never started")
    time.sleep(1.0)
    proc.kill()
    proc.wait()
    orphaned = len(_containers(proc.pid))
    # SIGKILL cannot be caught: the container is reaped by the next bench-ctl that uses Docker.
    nxt = c.bench(*[("docker" if a == "local" else a) for a in c.run_args(*SHORT)])
    left = len(_containers(proc.pid))
    out = verdict(
        c,
        "bench-ctl-sigkill-during-docker-run",
        orphaned == 1 and nxt.returncode == 0 and "orphaned" in nxt.stderr,
        f"{orphaned} container orphaned, {left} left after the next run",
    )
    out.orphans += left
    return out


# --------------------------------------------------------------------------- driver


def run_case(name: str) -> Outcome:
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fault-") as tmp:
        c = Case(Path(tmp))
        try:
            out = CASES[name](c)
        except Skip as e:
            out = Outcome(name, skipped=str(e))
        except Exception as e:
            out = Outcome(name, False, detail=f"case failed: {type(e).__name__}: {e}")
            out.orphans = c.orphans()
    out.name, out.seconds = name, time.monotonic() - start
    return out


def hostile_tests() -> int:
    """How many hostile-input regression tests `make test` runs beside these cases, as pytest
    collects them (one per case of bad input; a parametrized case counts each of its inputs)."""
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_hostile*.py"))
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"collecting {' '.join(files)} failed: {done.stdout[-500:]}")
    return sum("::" in line for line in done.stdout.splitlines())


def main() -> int:
    from controller.catalog.images import get_image
    from controller.launch.envs import LocalEnv
    from controller.paths import Paths

    home = (REPO / ".bench").resolve()
    LocalEnv(get_image("null"), Paths(home=home, db=home / "unused.duckdb")).ensure()
    names = sys.argv[1:] or list(CASES)
    outcomes = []
    for name in names:
        out = run_case(name)
        outcomes.append(out)
        state = "skipped" if out.skipped else ("survived" if out.survived else "FAILED")
        extra = out.skipped or out.detail
        print(
            f"{name:38} {state:9} rows lost {out.rows_lost}  orphans {out.orphans}  "
            f"{out.seconds:5.1f}s  {extra}",
            flush=True,
        )
    ran = [o for o in outcomes if not o.skipped]
    summary = {
        "cases": len(outcomes),
        "survived": sum(o.survived for o in ran),
        "skipped": len(outcomes) - len(ran),
        "rows_lost": sum(o.rows_lost for o in ran),
        "orphans_left": sum(o.orphans for o in ran),
        "hostile_tests": hostile_tests(),
    }
    print(
        f"total: {summary['cases']} cases, {summary['survived']} survived, {summary['skipped']} skipped, "
        f"{summary['rows_lost']} rows lost, {summary['orphans_left']} orphans left; and "
        f"{summary['hostile_tests']} hostile-input regression tests in tests/test_hostile*.py (make test)"
    )
    print(json.dumps(summary))
    return 0 if summary["survived"] == len(ran) and not summary["rows_lost"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
