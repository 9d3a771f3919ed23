"""Outputs vs reference: max abs error, error relative to the reference's range, top-1/top-5."""

from __future__ import annotations

import numpy as np
import pytest

from runners.core.accuracy import compare


def reference(n: int = 8, classes: int = 10) -> np.ndarray:
    """Peaked softmax-like rows with a clear, distinct top-5 (classes i..i+4 in decreasing order)."""
    ref = np.full((n, classes), 0.01, dtype=np.float32)
    for i in range(n):
        for rank, p in enumerate([0.5, 0.2, 0.1, 0.06, 0.04]):
            ref[i, (i + rank) % classes] = p
    return ref


def test_identical_outputs() -> None:
    ref = reference()
    acc = compare(ref.copy(), ref, "test-fp32")
    assert acc.reference == "test-fp32"
    assert acc.samples == 8
    assert acc.max_abs_err == 0.0 and acc.rel_err == 0.0
    assert acc.top1_agreement == 1.0 and acc.top5_agreement == 1.0


def test_small_noise_keeps_agreement_and_rel_err_is_relative_to_range() -> None:
    ref = reference()
    out = ref.astype(np.float64)
    out[3, 7] += 0.0049
    acc = compare(out, ref, "r")
    assert acc.max_abs_err == pytest.approx(0.0049, rel=1e-4)
    spread = float(ref.max() - ref.min())  # 0.5 - 0.01
    assert acc.rel_err == pytest.approx(0.0049 / spread, rel=1e-4)
    assert acc.top1_agreement == 1.0 and acc.top5_agreement == 1.0


def test_top1_disagreement_in_one_sample() -> None:
    ref = reference()
    out = ref.copy()
    a, b = out[2, 2], out[2, 3]
    out[2, 2], out[2, 3] = b, a  # swap top-1 and top-2: same top-5 set
    acc = compare(out, ref, "r")
    assert acc.top1_agreement == pytest.approx(7 / 8)
    assert acc.top5_agreement == 1.0


def test_top5_disagreement_in_one_sample() -> None:
    ref = reference()
    out = ref.copy()
    i = 5
    fifth, outside = (i + 4) % 10, (i + 6) % 10
    out[i, fifth], out[i, outside] = out[i, outside], out[i, fifth]  # 5th class leaves the top-5
    acc = compare(out, ref, "r")
    assert acc.top1_agreement == 1.0
    assert acc.top5_agreement == pytest.approx(7 / 8)


def test_fewer_than_five_classes() -> None:
    ref = np.array([[0.7, 0.2, 0.1], [0.05, 0.15, 0.8]], dtype=np.float32)
    acc = compare(ref[:, ::-1].copy(), ref, "r")
    assert acc.top1_agreement == 0.0
    assert acc.top5_agreement == 1.0  # top-k uses all 3 classes: same set


def test_trailing_dims_are_flattened() -> None:
    ref = reference()
    acc = compare(ref.reshape(8, 1, 1, 10), ref, "r")
    assert acc.max_abs_err == 0.0


def test_constant_reference_uses_absolute_error() -> None:
    ref = np.zeros((2, 3), dtype=np.float32)
    out = ref + 0.25
    acc = compare(out, ref, "r")
    assert acc.rel_err == acc.max_abs_err == 0.25


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_outputs_rejected(bad: float) -> None:
    ref = reference()
    out = ref.copy()
    out[0, 0] = bad
    with pytest.raises(ValueError, match="NaN or infinity"):
        compare(out, ref, "r")


def test_wrong_number_of_classes_rejected() -> None:
    ref = reference()
    with pytest.raises(ValueError, match="does not match"):
        compare(np.zeros((8, 11), dtype=np.float32), ref, "r")


@pytest.mark.parametrize("shape", [(4, 20), (10, 8)])
def test_batch_dimension_mismatch_rejected(shape: tuple[int, int]) -> None:
    ref = reference()
    with pytest.raises(ValueError):
        compare(np.zeros(shape, dtype=np.float32), ref, "r")
