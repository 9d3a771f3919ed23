"""Answers that survive a busy host: the null runner's A/A and A/B pairs, quiet and under a load
this script starts and stops itself, side by side.

Each trial is what a user would type, in a fresh store: `bench-ctl run --image null --repeat N`
with two configurations interleaved, then `bench-ctl compare --baseline ... --json`.

- A/A: the same work (`--work-us`, 2000 us per call) under two labels (`tag=a`, `tag=b`). The
  truth: no difference; a verdict of faster or slower is a false positive.
- A/B: 2000 against 2200 us per call. The truth: B takes (2200 + o) / (2000 + o) of A's time per
  call, o being the harness's own time per call (measured first with work 0), about 1.10. B
  must be called slower, and the ratio (A's throughput over B's) should be the truth.

Conditions:

- quiet: whatever else this host runs (say what it was when quoting the figures);
- loaded: and one busy process pinned to one core, busy `--duty` (50 %) of every `--period-ms`
  (100 ms), started before the loaded trials and stopped after them (it also stops by itself if
  this script dies).

Printed per condition: A/A false positives (goal at most 5 %), A/B detected (goal at least 95 %
quiet, 80 % loaded), A/B withheld because the runs were noisy, the mean A/B ratio and its error
against the truth (goal within 3 % loaded), and what the measurement left out (noisy runs, time
in starved windows, time waited for quiet). With T trials a rate is known to about +-1/sqrt(T):
the Wilson intervals say how sure each figure is. The default is short (a few minutes); use
--trials 20 or more for figures worth quoting.

    .venv/bin/python benchmarks/noise_calibration.py [--trials 3] [--repeat 5] [--conditions quiet,loaded]

A real pair (`--real ort,openvino`): two frameworks on one model, where the truth is not known.
Each trial measures the pair quiet, then loaded (`run --image A,B --repeat N`, then `compare
--baseline A --json`), and the loaded verdict must agree with the quiet one or say it could not
decide (no significant difference, withheld for noisy runs, or too little data): a call of faster
or slower that the quiet trial did not make is a failure. A trial whose quiet half could not
decide checks nothing, and is counted apart. `--model` is a model of the store
(linked, not copied), or `small-cnn` (default), a small seeded CNN made here (a few ms per batch on
a CPU core) and registered with `bench-ctl models add`.

    .venv/bin/python benchmarks/noise_calibration.py --real ort,openvino [--model small-cnn] [--trials 2]

Exit codes: 0 every goal met, 1 a goal missed (or a run failed), 2 a precondition is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    EXIT_FAIL,
    REPO,
    ScratchHome,
    bench_ctl,
    die,
    ensure_local_env,
    real_home,
    require_model,
    say,
)
from compare_calibration import ctl, wilson
from harness_overhead import FAKE_MODEL, make_fake_model

# Long enough to find clean windows under load (max_time_s), short enough for many trials.
POLICY = [
    "policy.min_time_s=0.5",
    "policy.max_time_s=5",
    "policy.window_s=0.1",
    "policy.warmup_min_s=0.1",
]
# --raw: measure as before noise was measured through (every window kept, no wait, no rerun).
RAW = ["policy.starved_share=1", "policy.quiet_wait_s=0", "policy.noisy_reruns=0"]
SMALL_CNN = "small-cnn"
# The small CNN: 3x64x64 in, three 3x3 convolutions (32, 64, 64 channels, the last two strided),
# global pooling, 10 classes; seeded He weights, about 64 MFLOP per sample. Needs onnx (the
# controller's environment has none: it runs in an image's local environment that has it).
MAKE_CNN = """
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)
def he(shape, fan_in):
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
w = {
    "w1": he((32, 3, 3, 3), 27), "b1": np.zeros(32, np.float32),
    "w2": he((64, 32, 3, 3), 288), "b2": np.zeros(64, np.float32),
    "w3": he((64, 64, 3, 3), 576), "b3": np.zeros(64, np.float32),
    "w4": he((64, 10), 64), "b4": np.zeros(10, np.float32),
}
nodes = [
    helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
    helper.make_node("Relu", ["c1"], ["r1"]),
    helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
    helper.make_node("Relu", ["c2"], ["r2"]),
    helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], strides=[2, 2]),
    helper.make_node("Relu", ["c3"], ["r3"]),
    helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
    helper.make_node("Flatten", ["g"], ["f"]),
    helper.make_node("Gemm", ["f", "w4", "b4"], ["logits"]),
    helper.make_node("Softmax", ["logits"], ["y"], axis=-1),
]
graph = helper.make_graph(
    nodes, "small_cnn",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 64, 64])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
    [numpy_helper.from_array(v, k) for k, v in w.items()],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
"""
LOAD = """
import os, sys, time
core, duty, period, limit = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
os.sched_setaffinity(0, {core})
parent, end = os.getppid(), time.monotonic() + limit
while time.monotonic() < end and os.getppid() == parent:
    t = time.perf_counter()
    while time.perf_counter() - t < duty * period:
        pass
    time.sleep(period * (1 - duty))
"""


@contextmanager
def background_load(duty: float, period_s: float, limit_s: float) -> Iterator[int]:
    """One process busy `duty` of every `period_s` on one core of this process's, for at most
    `limit_s` seconds; stopped on leaving. Yields the core."""
    core = min(os.sched_getaffinity(0))
    proc = subprocess.Popen([sys.executable, "-c", LOAD, str(core), str(duty), str(period_s), str(limit_s)])
    try:
        time.sleep(0.5)
        yield core
    finally:
        proc.kill()
        proc.wait()


@dataclass
class Tally:
    """One condition's trials."""

    name: str
    trials: int = 0
    false_pos: int = 0
    detected: int = 0
    withheld: int = 0  # A/B given no verdict because of noisy runs
    ratios: list[float] = field(default_factory=list)  # A/B time ratio B/A per trial
    runs: int = 0
    noisy_runs: int = 0
    kept_s: float = 0.0
    discarded_s: float = 0.0
    waited_s: float = 0.0
    seconds: float = 0.0


def trial(
    ctl_path: str, home: ScratchHome, db: Path, sweep: str, repeat: int, work: str, raw: bool
) -> dict[str, Any]:
    """One interleaved `run --repeat` of two configurations and compare's verdict of the second."""
    sets = [x for s in [*POLICY, *(RAW if raw else []), *([work] if work else [])] for x in ("--set", s)]
    ctl(
        ctl_path, home, db, "run", "--image", "null", "--model", FAKE_MODEL, "-b", "1", "--launcher", "local",
        "--repeat", str(repeat), "--sweep", sweep, *sets,
    )  # fmt: skip
    listing = ctl(ctl_path, home, db, "compare", "--model", FAKE_MODEL)
    assert isinstance(listing, dict)
    first = sweep.partition("=")[2].split(",")[0]
    labels = sorted(listing["labels"], key=lambda label: first not in label)  # the baseline first
    doc = ctl(ctl_path, home, db, "compare", "--model", FAKE_MODEL, "--baseline", labels[0])
    assert isinstance(doc, dict)
    verdict: dict[str, Any] = doc["rows"][0]["verdicts"][labels[1]]
    return verdict


def left_out(ctl_path: str, home: ScratchHome, db: Path, tally: Tally) -> None:
    """What the runs of one trial left out: noisy runs, starved windows' time, time waited."""
    sql = (
        "SELECT count(*) AS runs, count(*) FILTER (WHERE noisy) AS noisy, sum(duration_s) AS kept, "
        "sum(coalesce(discarded_s, 0)) AS discarded, sum(coalesce(quiet_wait_s, 0)) AS waited "
        "FROM measurements"
    )
    proc = subprocess.run(
        [ctl_path, "query", sql, "-f", "json"],
        capture_output=True, text=True, env={**home.env(), "BENCH_DB": str(db)}, cwd=REPO,
    )  # fmt: skip
    if proc.returncode != 0:
        die(f"`bench-ctl query` failed (exit {proc.returncode}): {proc.stderr[-600:]}", code=EXIT_FAIL)
    [row] = json.loads(proc.stdout)
    tally.runs += int(row["runs"])
    tally.noisy_runs += int(row["noisy"])
    tally.kept_s += float(row["kept"] or 0)
    tally.discarded_s += float(row["discarded"] or 0)
    tally.waited_s += float(row["waited"] or 0)


def run_condition(
    name: str, ctl_path: str, home: ScratchHome, trials: int, repeat: int, a: float, b: float, raw: bool
) -> Tally:
    tally = Tally(name)
    started = time.monotonic()
    for t in range(trials):
        db = home.root / f"{name}-aa-{t}.duckdb"
        v = trial(ctl_path, home, db, "tag=a,b", repeat, f"work_us={a}", raw)
        left_out(ctl_path, home, db, tally)
        tally.false_pos += v["verdict"] in ("faster", "slower")
        db = home.root / f"{name}-ab-{t}.duckdb"
        w = trial(ctl_path, home, db, f"work_us={a},{b}", repeat, "", raw)
        left_out(ctl_path, home, db, tally)
        tally.detected += w["verdict"] == "slower"
        tally.withheld += bool(w.get("note"))
        tally.ratios.append(1 / w["ratio"])
        tally.trials += 1
        say(
            f"  {name} trial {t + 1}/{trials}: A/A {said(v)}; A/B {said(w)}, time ratio x{1 / w['ratio']:.4f}"
        )
    tally.seconds = time.monotonic() - started
    return tally


def said(v: dict[str, Any]) -> str:
    return str(v["verdict"]) + (f" ({v['note']})" if v.get("note") else "")


def rate(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k}/{n} = {k / n:4.0%} ({lo:.0%}-{hi:.0%})" if n else "-"


def report(tallies: list[Tally], truth: float, repeat: int) -> bool:
    """The side-by-side table and whether every goal was met."""
    goals_met = True
    rows: list[tuple[str, list[str], str]] = []
    detect_goal = {"quiet": 0.95, "loaded": 0.80}

    def check(ok: bool) -> str:
        nonlocal goals_met
        goals_met &= ok
        return "" if ok else " MISSED"

    rows.append(
        (
            "A/A false positives",
            [rate(t.false_pos, t.trials) + check(t.false_pos <= 0.05 * t.trials) for t in tallies],
            "<= 5%",
        )
    )
    detected = [
        rate(t.detected, t.trials) + check(t.detected >= detect_goal[t.name] * t.trials) for t in tallies
    ]
    rows.append(("A/B detected (slower)", detected, ">= 95% quiet, >= 80% loaded"))
    rows.append(("A/B withheld: runs noisy", [rate(t.withheld, t.trials) for t in tallies], ""))
    errors = []
    for t in tallies:
        mean = statistics.fmean(t.ratios) if t.ratios else float("nan")
        err = abs(mean / truth - 1)
        ok = err <= 0.03 or t.name != "loaded"
        errors.append(f"x{mean:.4f}, error {err:.1%}" + check(ok))
    rows.append((f"A/B time ratio (truth x{truth:.4f})", errors, "within 3% loaded"))
    worst = [f"{max(abs(r / truth - 1) for r in t.ratios):.1%}" if t.ratios else "-" for t in tallies]
    rows.append(("worst trial's ratio error", worst, ""))
    rows.append(("runs noisy (left out)", [rate(t.noisy_runs, t.runs) for t in tallies], ""))
    rows.append((
        "time in starved windows", [
            f"{t.discarded_s / (t.kept_s + t.discarded_s):.0%} of {t.kept_s + t.discarded_s:.0f} s measured"
            if t.kept_s + t.discarded_s else "-" for t in tallies
        ], "",
    ))  # fmt: skip
    rows.append(("waited for quiet", [f"{t.waited_s:.0f} s" for t in tallies], ""))
    rows.append(("wall time", [f"{t.seconds:.0f} s" for t in tallies], ""))
    width = max(len(r[0]) for r in rows)
    say(f"\n{tallies[0].trials} trials per condition, {repeat} repetitions per configuration")
    say(f"{'':{width}}  " + "  ".join(f"{t.name:34}" for t in tallies) + "  goal")
    for label, cells, goal in rows:
        say(f"{label:{width}}  " + "  ".join(f"{c:34}" for c in cells) + f"  {goal}")
    return goals_met


def add_model(ctl_path: str, home: ScratchHome, name: str) -> None:
    """The real pair's model in the scratch home: linked from the store, or `small-cnn` made here
    and registered as a user's ONNX file would be (`bench-ctl models add`, reference from ONNX
    Runtime fp32)."""
    stored = real_home() / "models" / name
    if (stored / "manifest.json").exists():
        (home.models / name).symlink_to(stored.resolve(), target_is_directory=True)
        return
    if name != SMALL_CNN:
        require_model(name)  # says how to export it, and exits
    pythons = [real_home() / "envs" / e / "bin" / "python" for e in ("torch", "iree", "tf", "ort")]
    made = home.root / f"{SMALL_CNN}.onnx"
    for python in (p for p in pythons if p.exists()):
        if subprocess.run([str(python), "-c", MAKE_CNN, str(made)], capture_output=True).returncode == 0:
            break
    else:
        die(
            f"no local environment with onnx to make {SMALL_CNN} (tried {', '.join(map(str, pythons))})",
            "bench-ctl images build --local torch, or give --model NAME of a model in the store",
        )
    cmd = [ctl_path, "models", "add", SMALL_CNN, str(made), "--launcher", "local"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=home.env(), cwd=REPO)
    if proc.returncode != 0:
        die(f"`bench-ctl models add` failed (exit {proc.returncode}): {proc.stderr[-600:]}", code=EXIT_FAIL)


def real_trial(
    ctl_path: str, home: ScratchHome, db: Path, images: list[str], model: str, repeat: int, sets: list[str]
) -> dict[str, Any]:
    """One interleaved `run --image A,B --repeat N` and compare's verdict of B against A. A run
    that failed stops the benchmark with its status and message (kept with --keep)."""
    cmd = [
        ctl_path, "run", "--image", ",".join(images), "--model", model, "-b", "1", "--launcher", "local",
        "--repeat", str(repeat), *[x for s in sets for x in ("--set", s)], "--json",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**home.env(), "BENCH_DB": str(db)}, cwd=REPO
    )
    if proc.returncode != 0:
        try:
            failed = [
                f"{r['spec']['image']} run {r['run_id']}: {r['status']}: {r.get('message')}"
                for r in json.loads(proc.stdout)
                if r["status"] != "ok"
            ]
        except (json.JSONDecodeError, KeyError, TypeError):
            failed = [proc.stderr[-600:]]
        die(
            f"`bench-ctl {' '.join(cmd[1:])}` failed (exit {proc.returncode}): {'; '.join(failed)}",
            code=EXIT_FAIL,
        )
    listing = ctl(ctl_path, home, db, "compare", "--model", model)
    assert isinstance(listing, dict)
    labels = sorted(listing["labels"], key=lambda label: label.split()[0] != images[0])  # A first
    doc = ctl(ctl_path, home, db, "compare", "--model", model, "--baseline", labels[0])
    assert isinstance(doc, dict)
    verdict: dict[str, Any] = doc["rows"][0]["verdicts"][labels[1]]
    return verdict


def undecided(v: dict[str, Any]) -> bool:
    """No call of faster or slower: no significant difference, withheld, or too little data."""
    return v["verdict"] not in ("faster", "slower")


def withheld(v: dict[str, Any]) -> bool:
    """No verdict at all: the runs left after the noisy ones could not decide, or too few runs."""
    return bool(v.get("note")) or v["verdict"] == "insufficient data"


AGREE, LOADED_UNDECIDED, NEITHER, UNCHECKED, DISAGREE = (
    "agree",
    "loaded could not decide",
    "neither could decide",
    "unchecked: quiet could not decide",
    "DISAGREE",
)


def agreement(quiet: dict[str, Any], loaded: dict[str, Any]) -> str:
    """The loaded verdict against the quiet one: it must agree or not decide. Where the quiet
    trial could not decide either, there is nothing to check the loaded one against."""
    if withheld(loaded):
        return NEITHER if withheld(quiet) else LOADED_UNDECIDED
    if withheld(quiet):
        return UNCHECKED
    if loaded["verdict"] == quiet["verdict"]:
        return AGREE
    return LOADED_UNDECIDED if undecided(loaded) else DISAGREE


def shown(v: dict[str, Any]) -> str:
    """A verdict with its ratio (B's throughput over A's) and interval."""
    lo, hi = v.get("ratio_low"), v.get("ratio_high")
    interval = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
    return f"{said(v)}, x{v['ratio']:.3f}{interval}"


def run_real(args: argparse.Namespace, ctl_path: str) -> int:
    """--real A,B: each trial quiet, then loaded; the verdicts side by side, and whether they agree."""
    images = [x.strip() for x in args.real.split(",") if x.strip()]
    for image in images:
        ensure_local_env(ctl_path, image)
    sets = [*POLICY, *(RAW if args.raw else []), *args.set]
    quiet, loaded = Tally("quiet"), Tally("loaded")
    outcomes: list[str] = []
    with ScratchHome(envs=images, keep=args.keep) as home:
        add_model(ctl_path, home, args.model)
        say(f"{images[1]} against {images[0]} on {args.model}, batch 1, {args.repeat} repetitions each")
        say(f"host: {os.cpu_count()} cores, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        rows = []
        for t in range(args.trials):
            started = time.monotonic()
            db = home.root / f"real-quiet-{t}.duckdb"
            q = real_trial(ctl_path, home, db, images, args.model, args.repeat, sets)
            left_out(ctl_path, home, db, quiet)
            quiet.seconds += time.monotonic() - started
            say(f"  trial {t + 1}/{args.trials}, quiet: {shown(q)}")
            started = time.monotonic()
            with background_load(args.duty, args.period_ms / 1000, 3600.0) as core:
                db = home.root / f"real-loaded-{t}.duckdb"
                w = real_trial(ctl_path, home, db, images, args.model, args.repeat, sets)
            left_out(ctl_path, home, db, loaded)
            loaded.seconds += time.monotonic() - started
            outcomes.append(agreement(q, w))
            rows.append((t + 1, shown(q), shown(w), outcomes[-1]))
            say(f"  trial {t + 1}/{args.trials}, loaded: {shown(w)}: {outcomes[-1]}")
        say(
            f"\nloaded: one process busy {args.duty:.0%} of every {args.period_ms:g} ms on core {core}; "
            f"ratio: {images[1]}'s throughput over {images[0]}'s, with its 95% interval"
        )
        width = max(len(r[c]) for r in rows for c in (1, 2))
        say(f"{'trial':5}  {'quiet':{width}}  {'loaded':{width}}  outcome")
        for n, qs, ws, outcome in rows:
            say(f"{n:<5}  {qs:{width}}  {ws:{width}}  {outcome}")
        for tally in (quiet, loaded):
            measured = tally.kept_s + tally.discarded_s
            starved = f"{tally.discarded_s / measured:.0%} of {measured:.0f} s" if measured else "-"
            say(
                f"{tally.name}: runs noisy {rate(tally.noisy_runs, tally.runs)}, time in starved windows "
                f"{starved}, waited for quiet {tally.waited_s:.0f} s, wall time {tally.seconds:.0f} s"
            )
        failed = outcomes.count(DISAGREE)
        checked = len(outcomes) - outcomes.count(NEITHER) - outcomes.count(UNCHECKED)
        say(
            f"{checked} of {len(outcomes)} trials checked (the quiet one decided): "
            f"{outcomes.count(AGREE)} agree, {outcomes.count(LOADED_UNDECIDED)} loaded could not decide, "
            f"{failed} disagree"
        )
        say(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return EXIT_FAIL if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=3, help="trials of each pair per condition (default 3)")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per configuration (default 5)")
    parser.add_argument("--work-us", type=float, default=2000.0, help="work per call of A (default 2000)")
    parser.add_argument("--conditions", default="quiet,loaded", help="quiet, loaded or both (default)")
    parser.add_argument(
        "--duty", type=float, default=0.5, help="busy share of each load period (default 0.5)"
    )
    parser.add_argument("--period-ms", type=float, default=100.0, help="load period (default 100 ms)")
    parser.add_argument(
        "--raw", action="store_true", help="measure without measuring through noise (every window kept, "
        "no wait for quiet, no rerun): the figures before the mechanism, for comparison",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument(
        "--real", metavar="A,B", help="a real pair instead of the null runner, e.g. ort,openvino: each "
        "trial quiet and loaded, the verdicts side by side (--conditions is not used)",
    )  # fmt: skip
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="--real: an option for the runs (repeatable), e.g. --set ort:intra_op_threads=1",
    )  # fmt: skip
    parser.add_argument(
        "--model", default=SMALL_CNN, help=f"--real: a model in the store, or {SMALL_CNN} (made here)"
    )
    args = parser.parse_args()
    if args.real is not None:
        if len([x for x in args.real.split(",") if x.strip()]) != 2 or args.trials < 1 or args.repeat < 4:
            parser.error("--real takes two images, e.g. ort,openvino; --trials >= 1, --repeat >= 4")
        if not 0 < args.duty < 1 or args.period_ms <= 0:
            parser.error("--duty between 0 and 1, --period-ms > 0")
        return run_real(args, bench_ctl())
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    if args.trials < 1 or args.repeat < 4 or not conditions or set(conditions) - {"quiet", "loaded"}:
        parser.error(
            "--trials >= 1, --repeat >= 4 (the rule needs 4 runs of each), --conditions quiet,loaded"
        )
    if not 0 < args.duty < 1 or args.period_ms <= 0:
        parser.error("--duty between 0 and 1, --period-ms > 0")
    ctl_path = bench_ctl()
    ensure_local_env(ctl_path, "null")
    with ScratchHome(envs=["null"], keep=args.keep) as home:
        make_fake_model(home.models / FAKE_MODEL)
        from compare_calibration import overhead_us

        o = overhead_us(ctl_path, home)
        a, b = args.work_us, args.work_us * 1.1
        truth = (b + o) / (a + o)
        say(f"null runner: {o:.2f} us of harness per call; A/B true time ratio {truth:.4f}")
        say(f"host: {os.cpu_count()} cores, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        tallies = []
        for name in conditions:
            if name == "quiet":
                tallies.append(run_condition(name, ctl_path, home, args.trials, args.repeat, a, b, args.raw))
                continue
            limit = 3600.0 * args.trials
            with background_load(args.duty, args.period_ms / 1000, limit) as core:
                say(f"loaded: one process busy {args.duty:.0%} of every {args.period_ms:g} ms on core {core}")
                tallies.append(run_condition(name, ctl_path, home, args.trials, args.repeat, a, b, args.raw))
        if args.raw:
            say(
                "--raw: every window kept, no wait for quiet, no rerun (as before noise was measured through)"
            )
        ok = report(tallies, truth, args.repeat)
        say(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if ok else EXIT_FAIL


if __name__ == "__main__":
    raise SystemExit(main())
