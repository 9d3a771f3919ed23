"""Are the IREE and LiteRT runners as fast as each framework's own benchmark tool? Goal: >= 0.95.

Same model file, same batch, one after the other and interleaved (R T R T ...), so slow drifts of
a shared machine hit both alike:

  IREE    R  bench-ctl run --image iree --model M --batch-sizes B --launcher local --json
             (compiles the module into a scratch cache: one .vmfb per batch size, with a .json
             beside it naming its batch, function and iree-compile flags)
          T  .bench/envs/iree/bin/iree-benchmark-module --module=<that .vmfb> --device=local-task
             --function=F --input=@<B samples>.npy --benchmark_min_time=<D>s
             (the same compiled module; IREE's C++ loop, no Python, input staged once)
  LiteRT  R  bench-ctl run --image litert --model M --batch-sizes 1 ... (converts the SavedModel)
          T  .bench/envs/litert/bin/litert-benchmark --model=<that .tflite> --num_threads=N
             --num_runs=<enough for D seconds>  (the wheel's own tool: CompiledModel API, batch 1,
             the model's own input shape; the runner uses the Interpreter API with XNNPACK)

Printed per framework: both throughputs of every round, the medians and their ratio runner/tool,
the per-round ratios (their spread is the noise) and a verdict line.

Exit codes: 0 every ratio >= 0.95, 1 a ratio below (or a run failed), 2 a precondition is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

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

GOAL = 0.95


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--framework", choices=["iree", "litert", "both"], default="both")
    p.add_argument("--model", default="mobilenetv2", help="model in the store (default mobilenetv2)")
    p.add_argument("--batch", type=int, default=1, help="IREE batch size (LiteRT's tool runs batch 1)")
    p.add_argument("--duration", type=float, default=6.0, help="seconds per measurement (default 6)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of (runner, tool) (default 3)")
    p.add_argument("--keep", action="store_true", help="keep the scratch state folder")
    args = p.parse_args()
    if args.batch < 1 or args.rounds < 1 or args.duration <= 0:
        p.error("--batch and --rounds must be >= 1, --duration > 0")
    return args


def runner_sets(duration: float) -> list[str]:
    return [
        f"policy.min_time_s={duration:g}",
        f"policy.max_time_s={duration:g}",
        "policy.keep_latencies=false",
        "policy.warmup_iterations=3",
        "policy.warmup_min_s=0",
    ]


def run_tool(cmd: list[str], timeout_s: float) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        die(f"did not finish: {' '.join(cmd)}", code=EXIT_FAIL)
    text = proc.stdout + proc.stderr
    if proc.returncode != 0:
        tail = "\n    ".join(text.strip().splitlines()[-10:])
        die(f"failed (exit {proc.returncode}): {' '.join(cmd)}\n    {tail}", code=EXIT_FAIL)
    return text


class IreeTool:
    """iree-benchmark-module on the module the runner compiled for the batch size."""

    def __init__(self, env: Path, home: ScratchHome, batch: int, manifest: dict[str, Any]) -> None:
        self.exe = env / "bin" / "iree-benchmark-module"
        if not self.exe.exists():
            die(f"{self.exe} is missing (it ships with the iree-base-runtime wheel)")
        self.cache = home.root / "cache" / "iree" / "iree"
        self.batch = batch
        shape = [batch, *manifest["input_shape"][1:]]
        self.input = home.root / f"input-{batch}.npy"
        np.save(self.input, np.random.default_rng(0).random(shape, dtype=np.float32))

    def command(self, duration: float) -> list[str]:
        abouts = [json.loads(p.read_text()) | {"path": p} for p in sorted(self.cache.glob("*.json"))]
        match = [a for a in abouts if a["batch"] == self.batch]
        if len(match) != 1:
            die(
                f"expected one module for batch {self.batch} in {self.cache}, found {len(match)}",
                code=EXIT_FAIL,
            )
        about = match[0]
        return [
            str(self.exe),
            f"--module={about['path'].with_suffix('.vmfb')}",
            "--device=local-task",
            f"--function={about['function']}",
            f"--input=@{self.input}",
            f"--benchmark_min_time={duration:g}s",
        ]

    def measure(self, duration: float) -> float:
        text = run_tool(self.command(duration), duration * 3 + 120)
        found = re.search(r"items_per_second=([0-9.]+)([kM]?)/s", text)
        if not found:
            die(f"no items_per_second in iree-benchmark-module's output:\n{text[-800:]}", code=EXIT_FAIL)
        calls = float(found.group(1)) * {"": 1, "k": 1e3, "M": 1e6}[found.group(2)]
        return calls * self.batch


class LiteRTTool:
    """litert-benchmark (the wheel's tool) on the .tflite the runner converted."""

    def __init__(self, env: Path, home: ScratchHome) -> None:
        self.exe = env / "bin" / "litert-benchmark"
        self.python = env / "bin" / "python"
        if not self.exe.exists():
            die(f"{self.exe} is missing (it ships with the ai-edge-litert wheel)")
        self.cache = home.root / "cache" / "litert" / "litert"
        self.out = home.root / "litert-benchmark.json"
        self.threads = len(os.sched_getaffinity(0))

    def command(self, runs: int) -> list[str]:
        models = sorted(self.cache.glob("*.tflite"))
        if len(models) != 1:
            die(f"expected one converted model in {self.cache}, found {len(models)}", code=EXIT_FAIL)
        return [
            str(self.python),
            str(self.exe),
            f"--model={models[0]}",
            f"--num_threads={self.threads}",
            f"--num_runs={runs}",
            "--warmup_runs=3",
            f"--result_json={self.out}",
        ]

    def measure(self, runs: int, duration: float) -> float:
        run_tool(self.command(runs), duration * 5 + 120)
        latency = json.loads(self.out.read_text())["latency"]
        return 1000.0 / float(latency["avg_ms"])  # batch 1: samples per second


def compare(name: str, runner: list[float], tool: list[float], loads: list[float]) -> bool:
    say()
    say(f"{name}: {'':18s} {'median':>10s} {'min':>10s} {'max':>10s} {'spread':>8s}  (samples/s)")
    for label, values in (("runner", runner), ("own tool", tool)):
        say(
            f"  {label:24s} {median(values):10.2f} {min(values):10.2f} {max(values):10.2f} "
            f"{spread(values):8.1%}"
        )
    paired = [r / t for r, t in zip(runner, tool, strict=True)]
    ratio = median(runner) / median(tool)
    say(f"  per-round ratios runner / tool: {fmt_list(paired, '{:.3f}')}")
    say(
        f"  other processes used {min(loads):.2f}..{max(loads):.2f} of {os.cpu_count()} cores during the runs"
    )
    ok = ratio >= GOAL
    say(f"  {name} runner / own tool throughput: {ratio:.3f} (goal >= {GOAL}): {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> int:
    args = parse_args()
    ctl = bench_ctl()
    model_dir = require_model(args.model)
    manifest = read_manifest(model_dir)
    frameworks = ["iree", "litert"] if args.framework == "both" else [args.framework]
    envs = {f: ensure_local_env(ctl, f) for f in frameworks}
    sets = runner_sets(args.duration)
    verdicts = []
    started = time.monotonic()
    with ScratchHome(envs=frameworks, models=[model_dir], keep=args.keep) as home:
        say(f"(scratch BENCH_HOME/BENCH_DB: {home.root}; the user's results.duckdb is not touched)")
        for fw in frameworks:
            batch = args.batch if fw == "iree" else 1
            say()
            say(
                f"{fw}: model {args.model}, batch {batch}, {args.duration:g} s per measurement, "
                f"{args.rounds} round(s) of runner / own tool"
            )
            say(
                f"runner: {ctl} run --image {fw} --model {args.model} --batch-sizes {batch} "
                + " ".join(f"--set {s}" for s in sets)
            )
            tool: IreeTool | LiteRTTool = (
                IreeTool(envs[fw], home, batch, manifest) if fw == "iree" else LiteRTTool(envs[fw], home)
            )
            runner_v: list[float] = []
            tool_v: list[float] = []
            loads: list[float] = []
            for r in range(1, args.rounds + 1):
                with LoadMeter() as load:
                    result = ctl_run(
                        ctl, home, fw, args.model, str(batch), sets, timeout_s=args.duration + 900
                    )
                runner_sps = result["measurements"][0]["throughput_sps"]
                runner_v.append(runner_sps)
                loads.append(load.other_cores)
                with LoadMeter() as load:
                    if isinstance(tool, IreeTool):
                        if r == 1:
                            say("own tool: " + " ".join(tool.command(args.duration)))
                        tool_sps = tool.measure(args.duration)
                    else:
                        runs = max(20, int(runner_sps * args.duration))
                        if r == 1:
                            say("own tool: " + " ".join(tool.command(runs)))
                        tool_sps = tool.measure(runs, args.duration)
                tool_v.append(tool_sps)
                loads.append(load.other_cores)
                say(f"round {r}: runner {runner_sps:9.2f} samples/s   own tool {tool_sps:9.2f} samples/s")
            verdicts.append(compare(fw, runner_v, tool_v, loads))
    say(f"\n{time.monotonic() - started:.0f} s in all")
    return 0 if all(verdicts) else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
