"""What `bench-ctl models add` accepts besides the ONNX file: `--dim NAME=N`, `--int-range
NAME=LO:HI` and `--data FILE.npz`, with their limits.

bench-ctl refuses bad syntax before anything runs; the exporter, which alone knows the model's
inputs, parses the same words again and checks them against the model. One parser serves both,
so that both refuse in the same words."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Self

from schemas.limits import MAX_DIM
from schemas.manifest import DIM_NAME_RE, DTYPE_RANGES

# `--data`: one array per input plus optional labels. The file is read whole into memory by the
# exporter and by every run that scores it, and every labelled sample goes through the framework
# once per run: 2 GiB and 100,000 samples are far more than an accuracy check needs.
MAX_DATA_BYTES: Final = 2 << 30
MAX_DATA_SAMPLES: Final = 100_000
LABELS: Final = "labels"  # the array of `--data` that holds the labels
# Written by the exporter into its output folder when it refuses its input ({"message", "hint"}):
# bench-ctl then fails with that line and exit code 2, as for any other bad input.
EXPORT_REFUSAL_FILE: Final = "export-refusal.json"


def parse_dim(text: str) -> tuple[str, int]:
    """`NAME=N` of `--dim`: a dimension name and its value, 1 to MAX_DIM. Raises ValueError."""
    name, sep, value = text.partition("=")
    if not sep or not DIM_NAME_RE.fullmatch(name.strip()):
        raise ValueError(f"--dim {text!r} is not NAME=N")
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"--dim {text!r}: {value!r} is not a whole number") from None
    if not 1 <= n <= MAX_DIM:
        raise ValueError(f"--dim {text!r}: a dimension goes from 1 to {MAX_DIM:,}")
    return name.strip(), n


def parse_int_range(text: str) -> tuple[str, int, int]:
    """`NAME=LO:HI` of `--int-range`: an input's name and the range [LO, HI) its values are drawn
    from. Raises ValueError."""
    name, sep, rng = text.rpartition("=")
    low, colon, high = rng.partition(":")
    if not sep or not name.strip() or not colon:
        raise ValueError(f"--int-range {text!r} is not NAME=LO:HI")
    try:
        lo, hi = int(low), int(high)
    except ValueError:
        raise ValueError(f"--int-range {text!r}: {low!r} and {high!r} must be whole numbers") from None
    if lo >= hi:
        raise ValueError(f"--int-range {text!r}: LO must be below HI (HI is exclusive)")
    return name.strip(), lo, hi


def check_int_range(name: str, dtype: str, low: int, high: int) -> None:
    """[low, high) must hold values of `dtype` only. Raises ValueError."""
    least, most = DTYPE_RANGES[dtype]
    if low < least or high - 1 > most:
        raise ValueError(
            f"--int-range {name}={low}:{high}: input {name} is {dtype}, which holds {least} to {most}"
        )


def unique(flag: str, names: list[str]) -> None:
    """A name given twice to one flag is a mistake, not an override. Raises ValueError."""
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{flag} {twice[0]} is given twice")


class FlagError(ValueError):
    """A flag of `models add` given wrongly: the line and its hint."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def parse_flags(dims: list[str], int_ranges: list[str]) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    """Every `--dim` and `--int-range` given: name -> value, name -> [LO, HI). Raises FlagError."""
    try:
        parsed_dims = [parse_dim(d) for d in dims]
        unique("--dim", [n for n, _ in parsed_dims])
    except ValueError as e:
        raise FlagError(str(e), "e.g. --dim seq=128") from None
    try:
        ranges = [parse_int_range(r) for r in int_ranges]
        unique("--int-range", [n for n, _, _ in ranges])
    except ValueError as e:
        raise FlagError(str(e), "e.g. --int-range input_ids=0:30522 (HI exclusive)") from None
    return dict(parsed_dims), {n: (lo, hi) for n, lo, hi in ranges}


@dataclass(frozen=True)
class ModelFlags:
    """What `models add` takes besides the ONNX file (docs/models.md), as bench-ctl and the
    exporter both parse it."""

    dims: dict[str, int] = field(default_factory=dict)
    int_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)
    data: Path | None = None
    seq_dim: str | None = None

    @classmethod
    def parse(
        cls, dims: list[str], int_ranges: list[str], data: Path | None = None, seq_dim: str | None = None
    ) -> Self:
        """The flags' syntax checked (the model is not known here). Raises FlagError."""
        parsed_dims, ranges = parse_flags(dims, int_ranges)
        if seq_dim is not None and not DIM_NAME_RE.fullmatch(seq_dim):
            raise FlagError(f"--seq-dim {seq_dim!r} is not a dimension name", "e.g. --seq-dim seq")
        return cls(parsed_dims, ranges, data, seq_dim)
