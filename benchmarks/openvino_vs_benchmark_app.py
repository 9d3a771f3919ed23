"""Is the OpenVINO runner as fast as OpenVINO's own benchmark_app? Requirement: within 5 %.

Both tools measure the same ONNX file from the model store, on the CPU, with the same performance
hint, streams (if given), batch size, inference precision and duration, one after the other and
interleaved (R B R B R B), so slow drifts of a shared machine hit both alike:

  R  bench-ctl run --image openvino --model M --batch-sizes B --launcher local --json
       --set hint=H [--set streams=N] --set policy.min_time_s=T --set policy.max_time_s=T ...
     (the runner: synchronous `infer()` on one infer request, float32 numpy input)
  B  .bench/envs/openvino/bin/python .bench/envs/openvino/bin/benchmark_app -m M/model.onnx -d CPU
       -hint H -api sync -b B -shape [B,...] -ip f32 -infer_precision P [-nstreams N] -t T
     (with the throughput hint `-api async -nireq N`, N = the requests the runner keeps in flight.
     `-api sync`: one infer request, `infer()` in a loop, which is what the runner does; benchmark_app
     then ignores -nireq. `-ip f32`: benchmark_app would otherwise feed images as u8 and add a
     conversion to the model. P is the precision the runner reported for its first run.)

Printed: throughput of every round, medians, the ratio runner / benchmark_app of the medians, the
per-round ratios (their spread is the noise), and a verdict line. `--dynamic` adds a third tool,
benchmark_app on the model with its batch dimension left dynamic (as the runner with
--set static_shapes=false), which tells a static-shape advantage apart from a runner overhead.

Exit codes: 0 PASS, 1 FAIL (or a run failed), 2 a precondition is missing (nothing measured).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    EXIT_FAIL,
    REPO,
    LoadMeter,
    ScratchHome,
    bench_ctl,
    ctl_run,
    die,
    ensure_local_env,
    fmt_list,
    median,
    read_manifest,
    require_model,
    say,
    spread,
)

LIMIT = 0.05
QUIET_CORES = 0.2  # a round is quiet when other processes used at most this much CPU during it
PRECISION_TO_OV = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
OV_TYPE_TO_PRECISION = {
    "float32": "fp32",
    "f32": "fp32",
    "bfloat16": "bf16",
    "bf16": "bf16",
    "float16": "fp16",
    "f16": "fp16",
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model", default="resnet50", help="model in the store (default resnet50; mobilenetv2 is quicker)"
    )
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--hint", choices=["latency", "throughput"], default="latency", help="performance hint")
    p.add_argument(
        "--streams", type=int, default=None, help="number of streams (default: chosen by the hint)"
    )
    p.add_argument(
        "--precision",
        choices=["f32", "bf16", "f16"],
        default=None,
        help="inference precision for both (default: the device default, as the runner reports it)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds of timed inference per measurement, both tools (default 10, mobilenetv2 6)",
    )
    p.add_argument("--rounds", type=int, default=5, help="rounds of (runner, benchmark_app) (default 5)")
    p.add_argument(
        "--dynamic",
        action="store_true",
        help="also run benchmark_app on the dynamic-batch model (diagnoses a static-shape advantage)",
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the scratch state folder (runs and result database)"
    )
    args = p.parse_args()
    if args.batch < 1 or args.rounds < 1 or (args.streams is not None and args.streams < 1):
        p.error("--batch, --rounds and --streams must be >= 1")
    if args.duration is None:
        args.duration = 6.0 if args.model == "mobilenetv2" else 10.0
    if args.duration <= 0:
        p.error("--duration must be > 0")
    return args


def shape_text(manifest: dict[str, Any], batch: int | str) -> str:
    return "[" + ",".join(str(batch if d is None else d) for d in manifest["input_shape"]) + "]"


class BenchmarkApp:
    """OpenVINO's benchmark_app from the openvino local environment."""

    def __init__(
        self, env: Path, model_dir: Path, manifest: dict[str, Any], args: argparse.Namespace
    ) -> None:
        self.python = env / "bin" / "python"
        self.script = env / "bin" / "benchmark_app"
        if not self.script.exists():
            die(
                f"benchmark_app is missing from {env / 'bin'} (it ships with the openvino wheel)",
                "rebuild it: rm -rf .bench/envs/openvino && bench-ctl images build --local openvino",
            )
        self.onnx = model_dir / manifest["files"]["onnx"]["path"]
        self.manifest = manifest
        self.args = args
        # Requests the runner keeps in flight (its throughput hint is asynchronous); 1 = sync.
        self.nireq = 1

    def command(self, precision: str, dynamic: bool = False) -> list[str]:
        a = self.args
        # Run the console script with the environment's interpreter: environments built by older
        # versions of bench-ctl have scripts whose shebang names a folder that no longer exists.
        cmd = [
            str(self.python),
            str(self.script),
            "-m",
            str(self.onnx),
            "-d",
            "CPU",
            "-hint",
            a.hint,
            *(["-api", "async", "-nireq", str(self.nireq)] if self.nireq > 1 else ["-api", "sync"]),
            "-b",
            str(a.batch),
            "-ip",
            "f32",
            "-infer_precision",
            precision,
            "-t",
            f"{a.duration:g}",
        ]
        if dynamic:
            cmd += [
                "-shape",
                shape_text(self.manifest, "?"),
                "-data_shape",
                shape_text(self.manifest, a.batch),
            ]
        else:
            cmd += ["-shape", shape_text(self.manifest, a.batch)]
        if a.streams is not None:
            cmd += ["-nstreams", str(a.streams)]
        return cmd

    def run(self, precision: str, dynamic: bool = False) -> dict[str, Any]:
        cmd = self.command(precision, dynamic)
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, cwd=REPO, timeout=self.args.duration + 600
            )
        except subprocess.TimeoutExpired:
            die(f"benchmark_app did not finish: {' '.join(cmd)}", code=EXIT_FAIL)
        text = proc.stdout + proc.stderr
        fps = re.search(r"Throughput:\s+([0-9.]+)\s*FPS", text)
        if proc.returncode != 0 or not fps:
            tail = "\n    ".join(text.strip().splitlines()[-12:])
            die(f"benchmark_app failed (exit {proc.returncode}): {' '.join(cmd)}\n    {tail}", code=EXIT_FAIL)

        def grab(pattern: str) -> str | None:
            found = re.findall(pattern, text, re.MULTILINE)  # the last one: after reshaping, preprocessing
            return found[-1] if found else None

        ov_type = grab(r"INFERENCE_PRECISION_HINT: <Type: '(\w+)'>")
        return {
            "throughput_sps": float(fps.group(1)),
            "iterations": int(grab(r"Count:\s+(\d+) iterations") or 0),
            "duration_s": float(grab(r"Duration:\s+([0-9.]+) ms") or "nan") / 1000,
            "latency_p50_ms": float(grab(r"Median:\s+([0-9.]+) ms") or "nan"),
            "latency_min_ms": float(grab(r"Min:\s+([0-9.]+) ms") or "nan"),
            "streams": grab(r"^\[ INFO \]\s+NUM_STREAMS: (\d+)"),
            "threads": grab(r"^\[ INFO \]\s+INFERENCE_NUM_THREADS: (\d+)"),
            "precision": OV_TYPE_TO_PRECISION.get(ov_type or "", ov_type),
            "input": grab(r"Model inputs:\s*\n\[ INFO \]\s+(.*)"),
            "command": cmd,
        }


def runner_sets(args: argparse.Namespace) -> list[str]:
    sets = [
        f"hint={args.hint}",
        f"policy.min_time_s={args.duration:g}",
        f"policy.max_time_s={args.duration:g}",
        "policy.keep_latencies=false",
        # benchmark_app warms up with one inference; so does the runner here (default: >= 0.5 s).
        "policy.warmup_iterations=1",
        "policy.warmup_min_s=0",
    ]
    if args.streams is not None:
        sets.append(f"streams={args.streams}")
    if args.precision is not None:
        sets.append(f"precision={args.precision}")
    return sets


def runner_figures(result: dict[str, Any]) -> dict[str, Any]:
    m = result["measurements"][0]
    compile_note = next((p.get("note") or "" for p in result["phases"] if p["name"] == "compile"), "")
    streams = re.search(r"streams=(\d+)", compile_note)
    threads = re.search(r"threads=(\d+)", compile_note)
    return {
        "throughput_sps": m["throughput_sps"],
        "iterations": m["iterations"],
        "duration_s": m["duration_s"],
        "latency_p50_ms": m["latency_p50_ms"],
        "latency_min_ms": m["latency_min_ms"],
        "streams": streams.group(1) if streams else None,
        "threads": threads.group(1) if threads else None,
        "precision": result.get("precision"),
        "run_id": result["run_id"],
    }


def round_line(r: int, label: str, f: dict[str, Any]) -> str:
    return (
        f"round {r}: {label:13s} {f['throughput_sps']:9.2f} samples/s  p50 {f['latency_p50_ms']:8.2f} ms  "
        f"({f['iterations']} it in {f['duration_s']:.1f} s; other load {f['other_cores']:.2f} cores)"
    )


def main() -> int:
    args = parse_args()
    ctl = bench_ctl()
    model_dir = require_model(args.model)
    manifest = read_manifest(model_dir)
    if manifest["input_shape"].count(None) != 1:
        die(
            f"model {args.model!r} has input shape {manifest['input_shape']}; "
            "expected one dynamic (batch) dimension"
        )
    env = ensure_local_env(ctl, "openvino")
    bapp = BenchmarkApp(env, model_dir, manifest, args)
    sets = runner_sets(args)

    tools = ["runner", "benchmark_app"] + (["benchmark_app (dynamic batch)"] if args.dynamic else [])
    say(
        f"OpenVINO runner vs benchmark_app: model {args.model}, batch {args.batch}, hint {args.hint}, "
        f"streams {args.streams or 'auto'}, {args.duration:g} s per measurement, {args.rounds} round(s) of "
        f"{' / '.join(tools)}"
    )
    say(
        f"runner:        {ctl} run --image openvino --model {args.model} --batch-sizes {args.batch} "
        f"--launcher local --json " + " ".join(f"--set {s}" for s in sets)
    )
    figures: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
    precision_ov = args.precision
    started = time.monotonic()
    with ScratchHome(envs=["openvino"], models=[model_dir], keep=args.keep) as home:
        say(f"(scratch BENCH_HOME/BENCH_DB: {home.root}; the user's results.duckdb is not touched)")
        for r in range(1, args.rounds + 1):
            with LoadMeter() as load:
                result = ctl_run(
                    ctl, home, "openvino", args.model, str(args.batch), sets, timeout_s=args.duration + 600
                )
            res = runner_figures(result)
            res["other_cores"] = load.other_cores
            figures["runner"].append(res)
            if precision_ov is None:
                if res["precision"] not in PRECISION_TO_OV:
                    die(
                        f"the runner reported precision {res['precision']!r}; no -infer_precision for it",
                        code=EXIT_FAIL,
                    )
                precision_ov = PRECISION_TO_OV[res["precision"]]
            if r == 1:
                bapp.nireq = int(result["measurements"][0].get("in_flight") or 1)
                say("benchmark_app: " + " ".join(bapp.command(precision_ov)))
                if args.dynamic:
                    say("dynamic:       " + " ".join(bapp.command(precision_ov, dynamic=True)))
            say(round_line(r, "runner", res))
            variants = [("benchmark_app", False)] + (
                [("benchmark_app (dynamic batch)", True)] if args.dynamic else []
            )
            for name, dynamic in variants:
                with LoadMeter() as load:
                    b = bapp.run(precision_ov, dynamic)
                b["other_cores"] = load.other_cores
                figures[name].append(b)
                say(round_line(r, "bapp dynamic" if dynamic else "benchmark_app", b))

    # Same configuration? Streams, threads and precision as each tool's compiled model reports them.
    say()
    say("configuration as each compiled model reports it (first round):")
    mismatch = []
    for t in tools:
        f = figures[t][0]
        say(
            f"  {t:30s} streams={f['streams']} threads={f['threads']} precision={f['precision']}"
            + (f"  input: {f['input']}" if f.get("input") else "")
        )
    base = figures["runner"][0]
    for t in tools[1:]:
        for key in ("streams", "threads", "precision"):
            if figures[t][0][key] != base[key]:
                mismatch.append(f"{key}: runner {base[key]} vs {t} {figures[t][0][key]}")
    if mismatch:
        say("  WARNING: the configurations differ: " + "; ".join(mismatch))

    say()
    head = f"{'tool':30s} {'median':>10s} {'min':>10s} {'max':>10s} {'spread':>8s}"
    say(f"{head}   (samples/s, {args.rounds} runs)")
    med: dict[str, float] = {}
    for t in tools:
        values = [f["throughput_sps"] for f in figures[t]]
        med[t] = median(values)
        say(f"{t:30s} {med[t]:10.2f} {min(values):10.2f} {max(values):10.2f} {spread(values):8.1%}")
    runner_v = [f["throughput_sps"] for f in figures["runner"]]
    bapp_v = [f["throughput_sps"] for f in figures["benchmark_app"]]
    paired = [rv / bv for rv, bv in zip(runner_v, bapp_v, strict=True)]
    ratio_all = med["runner"] / med["benchmark_app"]
    say(f"ratio of the medians, runner / benchmark_app (all rounds): {ratio_all:.3f}")
    say(f"per-round ratios runner / benchmark_app: {fmt_list(paired, '{:.3f}')}, median {median(paired):.3f}")
    say(f"best round of each (least disturbed), runner / benchmark_app: {max(runner_v) / max(bapp_v):.3f}")
    # Latency cross-check, less sensitive to bursts of other load than throughput (a mean): the
    # ratio benchmark_app / runner of per-inference latency, so > 1 means the runner is faster, as above.
    # benchmark_app times the C++ inference only, the runner the Python call around it (~µs more).
    for stat in ("p50", "min"):
        lr = median([f[f"latency_{stat}_ms"] for f in figures["benchmark_app"]]) / median(
            [f[f"latency_{stat}_ms"] for f in figures["runner"]]
        )
        say(f"latency cross-check, benchmark_app / runner {stat} latency (median of rounds): {lr:.3f}")
    if args.dynamic:
        dyn = med["benchmark_app (dynamic batch)"]
        say(
            f"benchmark_app static / dynamic batch: {med['benchmark_app'] / dyn:.3f}; "
            f"runner / benchmark_app dynamic batch: {med['runner'] / dyn:.3f}"
        )

    # Quiet rounds: neither measurement of the round shared the machine with more than QUIET_CORES
    # of other load. When there are at least two, the verdict uses them only.
    quiet = [
        i
        for i in range(args.rounds)
        if max(figures["runner"][i]["other_cores"], figures["benchmark_app"][i]["other_cores"]) <= QUIET_CORES
    ]
    other = [f["other_cores"] for t in tools for f in figures[t]]
    say(
        f"noise: run-to-run spread (max-min)/median up to {max(spread(runner_v), spread(bapp_v)):.1%} "
        "per tool, "
        f"per-round ratios {min(paired):.3f}..{max(paired):.3f}; other processes used "
        f"{min(other):.2f}..{max(other):.2f} of {os.cpu_count()} cores during the measurements; "
        f"{len(quiet)} quiet round(s) (other load <= {QUIET_CORES} cores); "
        f"{time.monotonic() - started:.0f} s in all"
    )
    used = quiet if len(quiet) >= 2 else list(range(args.rounds))
    r_used = [runner_v[i] for i in used]
    b_used = [bapp_v[i] for i in used]
    ratio = median(r_used) / median(b_used)
    basis = f"{len(used)} quiet rounds" if len(quiet) >= 2 else f"all {len(used)} rounds"
    if len(quiet) >= 2:
        say(
            f"quiet rounds {[i + 1 for i in quiet]}: runner {fmt_list(r_used)}, "
            f"benchmark_app {fmt_list(b_used)} samples/s; ratio of the medians {ratio:.3f}"
        )
    used_noise = max(spread(r_used), spread(b_used))
    if used_noise > LIMIT:
        say(
            f"note: the spread of the rounds the verdict uses is {used_noise:.1%}, more than the {LIMIT:.0%} "
            "limit, so this verdict is not conclusive on this machine; rerun when it is quieter, or with "
            "more --rounds / a longer --duration"
        )
    ok = abs(ratio - 1) <= LIMIT
    say(
        f"OpenVINO runner / benchmark_app throughput: {ratio:.3f}x ({basis}; limit: within {LIMIT:.0%}): "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
