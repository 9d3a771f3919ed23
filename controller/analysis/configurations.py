"""Which configurations a comparison shows: `compare --only TEXT` and `--top N`.

A store that swept options holds dozens of configurations of one model; a table of all of them
is unreadable and the question is usually about a few. `--only` keeps those whose label holds a
text (repeated: any of them), as `compare` prints the label; `--top N` then keeps the N best by the
metric at the table's last row, its largest batch size (at its largest values of the model's
dimensions): the point most deployments care about and one where every configuration kept is
measured alike, so they rank on one number. The baseline is always kept: the verdicts are against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from controller.analysis.reports import BuildPair, Comparison, HostPair
from controller.errors import BenchError, did_you_mean


def check(top: int | None) -> None:
    if top is not None and top < 1:
        raise BenchError(f"--top {top}: keep at least 1 configuration", "e.g. --top 5")


def matching(labels: Sequence[str], only: Sequence[str]) -> list[str]:
    """The labels that hold one of the texts of `only` (all of them without); none is refused."""
    if not only:
        return list(labels)
    kept = [label for label in labels if any(text in label for text in only)]
    if not kept:
        given = " ".join(f"--only {text!r}" for text in only)
        raise BenchError(
            f"{given} matches no configuration of this comparison",
            did_you_mean(only[0], list(labels)),
        )
    return kept


def choose(cmp: Comparison, only: Sequence[str] = (), top: int | None = None) -> Comparison:
    """The comparison with the configurations `only` and `top` keep (the baseline besides), its
    rows without the others' cells, and a note for each that left some out."""
    check(top)
    labels = matching(cmp.labels, only)
    notes = []
    if len(labels) < len(cmp.labels):
        notes.append(
            f"{len(cmp.labels) - len(labels)} of {len(cmp.labels)} configuration(s) left out by "
            + " ".join(f"--only {text!r}" for text in only)
        )
    if top is not None and cmp.rows and len(labels) > top:
        last = cmp.rows[-1]
        ranked = sorted(
            (label for label in labels if label in last.cells),
            key=lambda label: -last.cells[label].value if cmp.higher_is_better else last.cells[label].value,
        )
        unmeasured = len(labels) - len(ranked)
        labels = [label for label in labels if label in ranked[:top]]
        notes.append(
            f"--top {top}: the {len(labels)} best of {len(ranked)} by {cmp.metric} at {last.point}"
            + (f"; {unmeasured} not measured at {last.point} left out" if unmeasured else "")
        )
    if cmp.baseline is not None and cmp.baseline not in labels:
        labels = [label for label in cmp.labels if label in labels or label == cmp.baseline]
        notes.append(f"{cmp.baseline}: kept as the baseline")
    if not notes:
        return cmp
    keep = set(labels)
    rows = [
        row.model_copy(
            update={
                "cells": {k: v for k, v in row.cells.items() if k in keep},
                "verdicts": {k: v for k, v in row.verdicts.items() if k in keep},
            }
        )
        for row in cmp.rows
    ]
    rows = [row for row in rows if row.cells]  # a point only left-out configurations measured
    return cmp.model_copy(update={"labels": labels, "rows": rows, "not_shown": notes})


Pair = TypeVar("Pair", HostPair, BuildPair)


def only_pairs(pair: Pair, only: Sequence[str]) -> Pair:
    """A two-host (or two-build) comparison with the rows of the configurations `only` keeps."""
    if not only:
        return pair
    labels = sorted({row.label for row in pair.rows})
    keep = set(matching(labels, only))
    if len(keep) == len(labels):
        return pair
    note = f"{len(labels) - len(keep)} of {len(labels)} configuration(s) left out by " + " ".join(
        f"--only {text!r}" for text in only
    )
    rows = [row for row in pair.rows if row.label in keep]
    return pair.model_copy(update={"rows": rows, "left_out": [*pair.left_out, note]})
