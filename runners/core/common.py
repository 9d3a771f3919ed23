"""Small helpers shared by the harness and the ensemble driver."""

from __future__ import annotations

import sys
import time

import numpy as np

from schemas import ModelManifest

INPUT_SEED = 20240101


def log(msg: str) -> None:
    """Progress for the controller: one line on stderr (stdout is left alone)."""
    print(f"[runner] {msg}", file=sys.stderr, flush=True)


def input_batch(manifest: ModelManifest, batch_size: int, seed: int = INPUT_SEED) -> np.ndarray:
    """A seeded random batch in the model's input shape, identical for every framework."""
    shape = [batch_size if d is None else d for d in manifest.input_shape]
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
