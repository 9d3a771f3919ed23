"""Small helpers shared by the harness and the ensemble driver."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from schemas import ModelManifest
from schemas.manifest import default_values

INPUT_SEED = 20240101


def log(msg: str) -> None:
    """Progress for the controller: one line on stderr (stdout is left alone)."""
    print(f"[runner] {msg}", file=sys.stderr, flush=True)


Inputs = dict[str, np.ndarray]  # input name -> batch, the first axis the samples


def input_batch(
    manifest: ModelManifest, batch_size: int, dims: dict[str, int] | None = None, seed: int = INPUT_SEED
) -> Inputs:
    """A seeded batch of every input, at these dimension values (the manifest's defaults for
    those not given), identical for every framework. Each input is made by its manifest's
    `values` rule: floats uniform in [0, 1), integers uniform in [low, high), masks all ones."""
    rng = np.random.default_rng(seed)
    at = {**manifest.dims, **(dims or {})}
    batch: Inputs = {}
    for t in manifest.inputs:
        shape = t.concrete(batch_size, at)
        rule = t.values or default_values(t.name, t.dtype)
        if rule.kind == "ones":
            batch[t.name] = np.ones(shape, dtype=t.dtype)
        elif rule.kind == "integers":
            assert rule.low is not None and rule.high is not None
            batch[t.name] = rng.integers(rule.low, rule.high, size=shape).astype(t.dtype)
        else:
            batch[t.name] = rng.random(shape, dtype=np.float32).astype(t.dtype)
    return batch


def batch_len(inputs: Inputs) -> int:
    """The number of samples of a batch of inputs."""
    return len(next(iter(inputs.values())))


def load_arrays(path: Path, names: list[str]) -> Inputs:
    """Arrays saved by the exporter: an .npz of name -> array, or one .npy for a single name."""
    if path.suffix == ".npz":
        with np.load(path) as z:
            missing = [n for n in names if n not in z.files]
            if missing:
                raise ValueError(f"{path.name} has no array {missing[0]!r}")
            return {n: z[n] for n in names}
    if len(names) != 1:
        raise ValueError(f"{path.name} holds one array; the model has {len(names)}: {', '.join(names)}")
    return {names[0]: np.load(path)}


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
