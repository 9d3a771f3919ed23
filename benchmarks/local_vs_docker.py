"""Same numbers either way? One spec under the local launcher and under Docker, alternately.

The local launcher runs the runner in `.bench/envs/IMAGE` (the image's lock file installed by
uv); the Docker launcher runs it in the image built from the same lock file, with no network, a
cpuset of the same cores, a memory limit and a read-only root file system. Both should give the
same throughput within the machine's noise: a gap larger than the rounds' spread would mean the
container itself costs something (CPU quota, seccomp, a different libc or CPU dispatch).

  L  bench-ctl run --image IMAGE --model M --batch-sizes B --launcher local  --json ...
  D  bench-ctl run --image IMAGE --model M --batch-sizes B --launcher docker --json ...

interleaved (L D L D ...), same policy (fixed duration), in a throw-away state folder whose model
store holds a copy of the model (a container cannot follow links out of its mounts).

Printed: throughput per round, medians, the ratio docker / local of the medians, per-round
ratios (their spread is the noise) and a verdict line. Exit codes: 0 within noise, 1 outside it
(or a run failed), 2 a precondition is missing (no Docker daemon, image not built, no model).
"""

from __future__ import annotations

import argparse
import shutil

from _common import (
    EXIT_FAIL,
    LoadMeter,
    ScratchHome,
    bench_ctl,
    ctl_run,
    die,
    ensure_local_env,
    fmt_list,
    median,
    require_model,
    say,
    spread,
)


def require_image(image: str) -> None:
    import sys

    from controller.catalog.images import get_image
    from controller.errors import BenchError
    from controller.launch.docker import DockerLauncher
    from controller.launch.identity import client
    from controller.paths import Paths

    try:
        DockerLauncher(Paths.from_env(), client()).require_image(get_image(image))
    except BenchError as e:
        print(f"error: {e.message}", file=sys.stderr)
        die(f"Docker image {image} is not usable", e.hint)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--image", default="ort", help="a CPU image built for Docker and locally (default ort)"
    )
    parser.add_argument("--model", default="mobilenetv2")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6.0, help="steady-state seconds per run")
    parser.add_argument("--keep", action="store_true", help="keep the scratch state folder")
    args = parser.parse_args()

    ctl = bench_ctl()
    require_image(args.image)
    ensure_local_env(ctl, args.image)
    model = require_model(args.model)
    sets = [
        f"policy.min_time_s={args.duration}",
        f"policy.max_time_s={args.duration}",
        "policy.warmup_min_s=1",
        "policy.keep_latencies=false",
    ]
    tput: dict[str, list[float]] = {"local": [], "docker": []}
    load: dict[str, list[float]] = {"local": [], "docker": []}
    with ScratchHome(envs=[args.image], keep=args.keep) as home:
        copy = home.models / model.name
        shutil.copytree(model, copy)
        for p in [copy, *copy.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        for r in range(1, args.rounds + 1):
            for launcher in ("local", "docker"):
                with LoadMeter() as meter:
                    result = ctl_run(
                        ctl,
                        home,
                        args.image,
                        model.name,
                        str(args.batch),
                        sets,
                        timeout_s=args.duration * 4 + 600,
                        launcher=launcher,
                    )
                m = result["measurements"][0]
                tput[launcher].append(m["throughput_sps"])
                load[launcher].append(meter.other_cores)
                say(
                    f"round {r}: {launcher:6s}  {m['throughput_sps']:9.2f} samples/s"
                    f"  p50 {m['latency_p50_ms']:8.2f} ms"
                    f"  ({m['iterations']} it; {'host load' if launcher == 'docker' else 'other load'}"
                    f" {meter.other_cores:.2f} cores)"
                )
    ratio = median(tput["docker"]) / median(tput["local"])
    per_round = [d / loc for d, loc in zip(tput["docker"], tput["local"], strict=True)]
    noise = max(spread(tput["local"]), spread(tput["docker"]))
    say()
    say(
        f"local   median {median(tput['local']):.2f} samples/s, rounds {fmt_list(tput['local'])}, "
        f"spread {spread(tput['local']):.1%}"
    )
    say(
        f"docker  median {median(tput['docker']):.2f} samples/s, rounds {fmt_list(tput['docker'])}, "
        f"spread {spread(tput['docker']):.1%}"
    )
    say(f"per-round ratios docker / local: {fmt_list(per_round, '{:.3f}')}")
    say(
        f"other processes used {min(load['local']):.2f}..{max(load['local']):.2f} cores"
        " during the local runs;"
        " during Docker runs the container is outside this script's process tree, so that figure"
        " includes the runner itself"
    )
    within = abs(ratio - 1) <= max(noise, 0.05)
    verdict = "within noise" if within else "OUTSIDE noise"
    say(
        f"docker / local throughput ({args.image}, {model.name}, batch {args.batch}): {ratio:.3f}x "
        f"(noise: rounds spread up to {noise:.1%}, floor 5%): {verdict}"
    )
    return 0 if within else EXIT_FAIL


if __name__ == "__main__":
    raise SystemExit(main())
