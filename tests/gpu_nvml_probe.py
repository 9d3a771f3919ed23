"""Load one GPU steadily and read it with the runners' NVML tracker: `python tests/gpu_nvml_probe.py`.

Run by `tests/test_gpu_paths.py` (path `nvml`) in the interpreter that has PyTorch and
nvidia-ml-py. Writes a JSON file: the tracker's telemetry over the loaded window, the energy
integrated from its power samples over the same window, the device's static facts, the raw
throttle-reason mask and what the load allocated. The load runs before the window opens too, so
power is steady when it starts (NVML reports power averaged over about a second on recent GPUs).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from probes import gpu

if TYPE_CHECKING:
    from torch import Tensor


def burn(torch: ModuleType, tensors: tuple[Tensor, Tensor, Tensor], seconds: float) -> int:
    """Half-precision matrix products back to back for `seconds`; returns how many."""
    a, b, c = tensors
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(10):
            torch.mm(a, b, out=c)
        torch.cuda.synchronize(a.device)
        n += 10
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=6.0, help="the measured window")
    parser.add_argument("--warmup", type=float, default=2.0, help="load before the window opens")
    args = parser.parse_args(argv)
    nvml = gpu.load_nvml()
    if nvml is None:
        args.out.write_text(
            json.dumps({"error": "NVML did not initialize (pynvml import or nvmlInit failed)"})
        )
        return 0
    info = gpu.device_info(nvml, args.index)
    tracker = gpu.GpuTracker(nvml, args.index, interval_s=0.02)
    tracker.measure_idle(1.0)  # before this process touches the GPU

    import torch

    device = torch.device("cuda", args.index)
    n = 8192
    tensors = (
        torch.randn((n, n), device=device, dtype=torch.float16),
        torch.randn((n, n), device=device, dtype=torch.float16),
        torch.empty((n, n), device=device, dtype=torch.float16),
    )
    burn(torch, tensors, args.warmup)
    t0 = time.monotonic()
    with tracker:
        products = burn(torch, tensors, args.seconds)
    seconds = time.monotonic() - t0
    reasons_fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
        nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None
    )
    mask: int | None = None
    mask_error: str | None = None
    try:
        mask = int(reasons_fn(tracker.handle)) if reasons_fn is not None else None
        if reasons_fn is None:
            mask_error = "this nvidia-ml-py has no clock-event (throttle) reason query"
    except Exception as e:
        mask_error = f"{type(e).__name__}: {e}"
    doc = {
        "telemetry": tracker.telemetry().model_dump(mode="json"),
        "integrated_j": tracker.integrated_energy_j(),
        "device": info,
        "reasons_mask": mask,
        "reasons_error": mask_error,
        "allocated_mb": torch.cuda.memory_allocated(device) / gpu.MB,
        "tflops": 2 * n**3 * products / seconds / 1e12,
    }
    args.out.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
