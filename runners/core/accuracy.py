"""Compare a framework's outputs on the reference batch with the reference outputs."""

from __future__ import annotations

import numpy as np

from schemas import Accuracy


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    k = min(k, x.shape[1])
    return np.argsort(-x, axis=1, kind="stable")[:, :k]


def compare(outputs: np.ndarray, reference: np.ndarray, reference_name: str) -> Accuracy:
    """Max abs error, error relative to the reference's spread, top-1 and top-5 agreement."""
    if np.shape(outputs)[:1] != reference.shape[:1] or np.size(outputs) != reference.size:
        raise ValueError(f"output shape {np.shape(outputs)} does not match reference {reference.shape}")
    out = np.asarray(outputs, dtype=np.float64).reshape(reference.shape[0], -1)
    ref = np.asarray(reference, dtype=np.float64).reshape(reference.shape[0], -1)
    if not np.all(np.isfinite(out)):
        raise ValueError("outputs contain NaN or infinity")
    err = float(np.max(np.abs(out - ref)))
    spread = float(ref.max() - ref.min())
    top1 = float(np.mean(out.argmax(1) == ref.argmax(1)))
    o5, r5 = _topk(out, 5), _topk(ref, 5)
    top5 = float(np.mean([set(a) == set(b) for a, b in zip(o5, r5, strict=True)]))
    return Accuracy(
        reference=reference_name,
        samples=ref.shape[0],
        max_abs_err=err,
        rel_err=err / spread if spread > 0 else err,
        top1_agreement=top1,
        top5_agreement=top5,
    )
