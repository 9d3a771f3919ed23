"""Compare a framework's outputs on the reference batch with the reference outputs, per output.

Per output: max abs error and error relative to the reference's spread; top-1 and top-5
agreement for class-score outputs ([batch, classes]); the lowest per-sample cosine similarity for
every float output (embeddings and hidden states say most there). The worst output (largest
relative error) is named, and its errors are the accuracy's own."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from schemas import Accuracy
from schemas.manifest import TensorInfo
from schemas.result import DataAccuracy, OutputAgreement


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    k = min(k, x.shape[1])
    return np.argsort(-x, axis=1, kind="stable")[:, :k]


def agreement(name: str, outputs: np.ndarray, reference: np.ndarray, class_scores: bool) -> OutputAgreement:
    """One output against its reference."""
    if np.shape(outputs)[:1] != reference.shape[:1] or np.size(outputs) != reference.size:
        raise ValueError(
            f"output {name}: shape {list(np.shape(outputs))} does not match the reference's "
            f"{list(reference.shape)}"
        )
    n = max(reference.shape[0], 1) if reference.ndim else 1
    out = np.asarray(outputs, dtype=np.float64).reshape(n, -1)
    ref = np.asarray(reference, dtype=np.float64).reshape(n, -1)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"output {name} contains NaN or infinity")
    err = float(np.max(np.abs(out - ref))) if out.size else 0.0
    spread = float(ref.max() - ref.min()) if ref.size else 0.0
    top1 = top5 = None
    if class_scores and ref.shape[1] > 1:
        top1 = float(np.mean(out.argmax(1) == ref.argmax(1)))
        o5, r5 = _topk(out, 5), _topk(ref, 5)
        top5 = float(np.mean([set(a) == set(b) for a, b in zip(o5, r5, strict=True)]))
    return OutputAgreement(
        name=name,
        max_abs_err=err,
        rel_err=err / spread if spread > 0 else err,
        top1_agreement=top1,
        top5_agreement=top5,
        cosine_min=_cosine_min(out, ref),
    )


def _cosine_min(out: np.ndarray, ref: np.ndarray) -> float | None:
    """The lowest cosine similarity of a sample's output to its reference (1.0 for two zero
    vectors, which agree; None for an output of one number per sample)."""
    if out.shape[1] < 2:
        return None
    dot = np.sum(out * ref, axis=1)
    norms = np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
    both_zero = (np.linalg.norm(out, axis=1) == 0) & (np.linalg.norm(ref, axis=1) == 0)
    cos = np.where(norms > 0, dot / np.where(norms > 0, norms, 1), np.where(both_zero, 1.0, 0.0))
    return float(np.clip(cos.min(), -1.0, 1.0))


def compare_outputs(
    outputs: Sequence[np.ndarray],
    references: Sequence[np.ndarray],
    infos: Sequence[TensorInfo],
    reference_name: str,
    data: DataAccuracy | None = None,
) -> Accuracy:
    """Every output against its reference; the worst named."""
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs, the reference has {len(references)}")
    per = [
        agreement(info.name, o, r, info.class_scores)
        for o, r, info in zip(outputs, references, infos, strict=True)
    ]
    worst = max(per, key=lambda a: a.rel_err)
    scored = next((a for a in per if a.top1_agreement is not None), None)
    cosines = [a.cosine_min for a in per if a.cosine_min is not None]
    return Accuracy(
        reference=reference_name,
        samples=int(np.shape(references[0])[0]) if np.ndim(references[0]) else 1,
        max_abs_err=worst.max_abs_err,
        rel_err=worst.rel_err,
        top1_agreement=scored.top1_agreement if scored else None,
        top5_agreement=scored.top5_agreement if scored else None,
        cosine_min=min(cosines) if cosines else None,
        worst_output=worst.name,
        outputs=per,
        data=data,
    )


def compare(outputs: np.ndarray, reference: np.ndarray, reference_name: str) -> Accuracy:
    """One class-score output against its reference (the study's classifiers)."""
    info = TensorInfo(name="output", shape=[None, *[int(d) for d in reference.shape[1:]]])
    return compare_outputs([outputs], [reference], [info], reference_name)


def top_k(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float | None]:
    """Top-1 and top-5 accuracy of class scores against integer labels (top-5: 5 classes or more)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(len(labels), -1)
    top1 = float(np.mean(scores.argmax(1) == labels))
    if scores.shape[1] < 5:
        return top1, None
    top5 = float(np.mean([lab in row for lab, row in zip(labels, _topk(scores, 5), strict=True)]))
    return top1, top5
