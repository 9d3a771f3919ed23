"""What a user's ONNX model takes and gives, for `models add` (docs/models.md, "Your own model").

From the declared inputs and outputs of an ONNX Runtime session: each tensor's dtype and shape
(None for the batch, integers for fixed sizes, names for other dynamic dimensions), the value
of every named dimension (`--dim`, or the user's data), and how each input's samples are made
(`--int-range`, schemas.manifest.default_values). The user's data (`--data FILE.npz`) is checked
here against the inputs. Every refusal is an `InputError`: one line and a hint, exit code 2.

Nothing here runs the model: the functions take what a session declares (name, type, shape)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, cast

import numpy as np

from schemas.manifest import DIM_NAME_RE, DTYPES, DType, InputValues, TensorInfo, default_values
from schemas.model_flags import (
    LABELS,
    MAX_DATA_SAMPLES,
    FlagError,
    ModelFlags,
    check_int_range,
)

ORT_DTYPES: Final[dict[str, DType]] = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
}
INTEGER_DTYPES: Final = ("int64", "int32", "bool")
DATA_HINT: Final = (
    "save one array per input, samples first: numpy.savez(FILE, NAME=array, ..., labels=labels)"
)


class InputError(Exception):
    """The model or the options cannot be registered as given: bench-ctl fails with this line
    and its hint, exit code 2."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class Declared(Protocol):
    """An input or output as an ONNX Runtime session declares it (onnxruntime.NodeArg)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def shape(self) -> Any: ...


class Options(ModelFlags):
    """The user's options of `models add`, parsed."""

    @classmethod
    def read(
        cls, dims: list[str], int_ranges: list[str], data: Path | None = None, seq_dim: str | None = None
    ) -> Options:
        """`parse`, its refusal an InputError."""
        try:
            return cls.parse(dims, int_ranges, data, seq_dim)
        except FlagError as e:
            raise InputError(str(e), e.hint) from None


def dtype_of(t: Declared, what: str) -> DType:
    if t.type not in ORT_DTYPES:
        raise InputError(
            f"{what} {t.name} is {t.type}; bench-ctl takes {', '.join(DTYPES)}",
            "export the model with tensors of these types",
        )
    return ORT_DTYPES[t.type]


class DimNames:
    """ONNX dimension symbols -> the manifest's dimension names: a symbol that is an identifier
    keeps its name, others (and dimensions with neither name nor value) get `dim_<tensor>_<axis>`.
    One symbol is one dimension wherever it appears, as in ONNX."""

    def __init__(self) -> None:
        self.by_symbol: dict[str, str] = {}
        self.taken: set[str] = set()

    def name(self, symbol: object, tensor: str, axis: int) -> str:
        if isinstance(symbol, str) and symbol in self.by_symbol:
            return self.by_symbol[symbol]
        if isinstance(symbol, str) and DIM_NAME_RE.fullmatch(symbol):
            name = symbol
        else:
            name = re.sub(r"\W", "_", f"dim_{tensor}_{axis}", flags=re.ASCII)[:56]
        base, n = name, 1
        while name in self.taken:
            n += 1
            name = f"{base}_{n}"
        self.taken.add(name)
        if isinstance(symbol, str):
            self.by_symbol[symbol] = name
        return name

    def shared(self, symbol: object) -> str | None:
        """The name an input gave this symbol, if any."""
        return self.by_symbol.get(symbol) if isinstance(symbol, str) else None


def fixed(d: object) -> int | None:
    """A declared dimension's fixed size, None when it is dynamic (a name, None or -1)."""
    return d if isinstance(d, int) and d >= 1 else None


def read_inputs(declared: list[Declared], names: DimNames, batch: int) -> list[TensorInfo]:
    """The inputs' dtypes and shapes. The first dimension of each must be the batch: dynamic,
    or fixed at `batch` (the reference batch's size, the one size such a model runs at)."""
    infos = []
    for t in declared:
        dtype = dtype_of(t, "input")
        shape = list(t.shape or [])
        if not shape:
            raise InputError(
                f"input {t.name} is a scalar; every input needs the batch as its first dimension",
                "export the model with a batch dimension first",
            )
        first = fixed(shape[0])
        if first is not None and first != batch:
            raise InputError(
                f"input {t.name} has a fixed batch dimension {first}; bench-ctl varies the batch",
                "export it with a dynamic batch: torch.onnx.export(..., dynamic_axes={NAME: {0: 'batch'}})",
            )
        rest: list[int | str | None] = [
            fixed(d) or names.name(d, t.name, axis) for axis, d in enumerate(shape[1:], start=1)
        ]
        infos.append(TensorInfo(name=t.name, dtype=dtype, shape=[None, *rest]))
    return infos


def model_dims(inputs: list[TensorInfo]) -> list[str]:
    """The named dimensions, in the order the inputs first use them."""
    seen: list[str] = []
    for t in inputs:
        seen += [d for d in t.dim_names if d not in seen]
    return seen


def dim_values(inputs: list[TensorInfo], given: dict[str, int], from_data: dict[str, int]) -> dict[str, int]:
    """The default of every named dimension: the data's, else `--dim`; one not given is refused,
    and so is a `--dim` that names no dimension or disagrees with the data."""
    known = model_dims(inputs)
    listing = ", ".join(known) if known else "none besides the batch"
    for name, value in given.items():
        if name not in known:
            raise InputError(
                f"--dim {name}={value}: the model has no dimension {name!r}; its dimensions: {listing}",
                "give --dim for the named dimensions of the model's inputs",
            )
        if name in from_data and from_data[name] != value:
            raise InputError(
                f"--dim {name}={value} disagrees with --data, whose arrays have {name}={from_data[name]}",
                f"leave out --dim {name}: the data sets it",
            )
    values = {**given, **from_data}
    for t in inputs:
        for d in t.dim_names:
            if d not in values:
                raise InputError(
                    f"input {t.name} has dimension {d!r} with no value: give --dim {d}=N",
                    f"e.g. --dim {d}=128: the value runs use unless `--set dim.{d}=N` says otherwise",
                )
    return {d: values[d] for d in known}


def with_values(inputs: list[TensorInfo], int_ranges: dict[str, tuple[int, int]]) -> list[TensorInfo]:
    """Each input with its rule for generated samples: `--int-range` for integer inputs given
    one, else schemas.manifest.default_values (masks all ones, integers in [0, 100))."""
    by_name = {t.name: t for t in inputs}
    integer = [t.name for t in inputs if t.dtype in INTEGER_DTYPES]
    for name, (low, high) in int_ranges.items():
        if name not in by_name or name not in integer:
            what = (
                f"input {name} is {by_name[name].dtype}"
                if name in by_name
                else f"the model has no input {name!r}"
            )
            raise InputError(
                f"--int-range {name}={low}:{high}: {what}; --int-range is for integer inputs",
                f"integer inputs: {', '.join(integer)}" if integer else "the model has no integer input",
            )
        try:
            check_int_range(name, by_name[name].dtype, low, high)
        except ValueError as e:
            raise InputError(str(e), "give a range the input's type holds (HI exclusive)") from None
    out = []
    for t in inputs:
        if t.name in int_ranges:
            low, high = int_ranges[t.name]
            rule = InputValues(kind="integers", low=low, high=high)
        else:
            rule = default_values(t.name, t.dtype)
        out.append(t.model_copy(update={"values": rule}))
    return out


def sequence_dim(inputs: list[TensorInfo], dims: dict[str, int], chosen: str | None) -> str | None:
    """The dimension that counts tokens: `--seq-dim`, else axis 1 of the first integer input
    (token ids) when it is named, else none."""
    if chosen is not None:
        if chosen not in dims:
            listing = ", ".join(dims) if dims else "none besides the batch"
            raise InputError(
                f"--seq-dim {chosen}: the model has no dimension {chosen!r}; its dimensions: {listing}",
                "name one of the model's named dimensions",
            )
        return chosen
    for t in inputs:
        if t.dtype in ("int64", "int32") and len(t.shape) > 1 and isinstance(t.shape[1], str):
            return t.shape[1]
    return None


def read_outputs(
    declared: list[Declared], names: DimNames, got: list[np.ndarray], batch: int
) -> list[TensorInfo]:
    """The outputs' dtypes and shapes, from what the session declares and what it returned on a
    batch of `batch`: one row per sample in every output. A dimension named like an input's is
    that dimension; other dynamic ones get names of their own (not in `dims`: a run does not set
    them). An output whose rank the session does not declare takes the returned sizes."""
    infos = []
    for t, value in zip(declared, got, strict=True):
        dtype = dtype_of(t, "output")
        shape = list(np.shape(value))
        if not shape or shape[0] != batch:
            raise InputError(
                f"output {t.name} has shape {shape} for a batch of {batch}; one row per sample is needed "
                "([batch, ...])",
                "export the model with the batch as the first dimension of every output",
            )
        said = list(t.shape) if isinstance(t.shape, list | tuple) else []
        if len(said) != len(shape):
            rest: list[int | str | None] = list(shape[1:])
        else:
            rest = [
                fixed(d) or names.shared(d) or names.name(d, t.name, axis)
                for axis, d in enumerate(said[1:], start=1)
            ]
        infos.append(TensorInfo(name=t.name, dtype=dtype, shape=[None, *rest]))
    return infos


# --------------------------------------------------------------------------- the user's data


@dataclass(frozen=True)
class Data:
    """The user's samples, checked against the inputs."""

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    dims: dict[str, int]  # the named dimensions' values in the data

    @property
    def samples(self) -> int:
        return len(next(iter(self.arrays.values())))


def read_data(path: Path, inputs: list[TensorInfo]) -> Data:
    """`--data FILE.npz`: one array per input (dtype exactly the input's, first axis the
    samples, fixed dimensions as the model's, named ones alike in every array), optional integer
    `labels`, one per sample. Anything else is refused."""
    try:
        z = np.load(path, allow_pickle=False)
    except OSError as e:
        raise InputError(f"--data: cannot read it: {e.strerror or e}", DATA_HINT) from None
    except (ValueError, EOFError):  # numpy takes what is neither .npy nor .npz for a pickle
        raise InputError("--data: not a NumPy .npz file", DATA_HINT) from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise InputError("--data: a single .npy array, not an .npz of one array per input", DATA_HINT)
    with z:
        names = [t.name for t in inputs]
        missing = [n for n in names if n not in z.files]
        if missing:
            raise InputError(
                f"--data has no array for input {missing[0]}; the model's inputs: {', '.join(names)}",
                DATA_HINT,
            )
        extra = [n for n in z.files if n not in names and n != LABELS]
        if extra:
            raise InputError(
                f"--data: array {extra[0]!r} is neither an input of the model nor {LABELS!r}",
                f"the model's inputs: {', '.join(names)}; remove or rename it",
            )
        try:
            arrays = {n: z[n] for n in names}
            labels = z[LABELS] if LABELS in z.files else None
        except ValueError as e:  # object arrays need pickle, which is refused
            raise InputError(f"--data: {str(e).splitlines()[0]}", DATA_HINT) from None
    dims = _data_dims(inputs, arrays)
    count = len(arrays[names[0]])
    if labels is not None:
        _check_labels_shape(labels, count)
    return Data(arrays=arrays, labels=labels, dims=dims)


def _data_dims(inputs: list[TensorInfo], arrays: dict[str, np.ndarray]) -> dict[str, int]:
    """Each array against its input: dtype, rank, fixed sizes, named sizes alike across arrays,
    the same number of samples in all. Returns the named dimensions' values."""
    dims: dict[str, tuple[int, str]] = {}
    first = inputs[0].name
    count = len(arrays[first]) if arrays[first].ndim else 0
    for t in inputs:
        a = arrays[t.name]
        if a.dtype != np.dtype(t.dtype):
            raise InputError(
                f"--data: input {t.name} is {a.dtype}, the model takes {t.dtype}",
                f"convert it: numpy.savez(..., {t.name}={t.name}.astype(numpy.{t.dtype}))",
            )
        want = ["samples", *[str(d) for d in t.shape[1:]]]
        if a.ndim != len(t.shape):
            raise InputError(
                f"--data: input {t.name} has shape {list(a.shape)}; the model takes [{', '.join(want)}]",
                "the first axis holds the samples, the others one sample's shape",
            )
        if len(a) != count:
            raise InputError(
                f"--data: input {first} has {count} samples, input {t.name} has {len(a)}",
                "give every input the same number of samples",
            )
        for axis, d in enumerate(t.shape[1:], start=1):
            size = int(a.shape[axis])
            if isinstance(d, int) and size != d:
                raise InputError(
                    f"--data: input {t.name} has shape {list(a.shape)}; the model takes [{', '.join(want)}]",
                    f"axis {axis} of {t.name} must be {d}",
                )
            if isinstance(d, str):
                if size < 1:
                    raise InputError(f"--data: input {t.name} has {d}=0", f"give {d} at least 1")
                if d in dims and dims[d][0] != size:
                    raise InputError(
                        f"--data: input {dims[d][1]} has {d}={dims[d][0]}, input {t.name} has {d}={size}",
                        f"{d} is one dimension: pad the arrays to one length",
                    )
                dims.setdefault(d, (size, t.name))
    if not 1 <= count <= MAX_DATA_SAMPLES:
        raise InputError(
            f"--data has {count:,} samples; give 1 to {MAX_DATA_SAMPLES:,}",
            "a few thousand labelled samples are plenty for an accuracy check",
        )
    return {d: v for d, (v, _) in dims.items()}


def _check_labels_shape(labels: np.ndarray, count: int) -> None:
    if labels.dtype.kind not in "iu":
        raise InputError(
            f"--data: {LABELS} are {labels.dtype}; they must be integers (class indices)",
            f"e.g. numpy.savez(..., {LABELS}=classes.astype(numpy.int64))",
        )
    if labels.shape != (count,):
        raise InputError(
            f"--data: {LABELS} have shape {list(labels.shape)}; one class index per sample is [{count}]",
            "give one label per sample, in the order of the samples",
        )


def scored_output(outputs: list[TensorInfo], labels: np.ndarray) -> tuple[int, TensorInfo]:
    """The output the labels score: the first of class scores ([batch, classes]). Labels must be
    class indices of it."""
    scored = next(((i, t) for i, t in enumerate(outputs) if t.class_scores), None)
    if scored is None:
        raise InputError(
            f"--data has {LABELS}, but no output of the model is class scores ([batch, classes], floats)",
            f"leave {LABELS} out of the data; the outputs are "
            + ", ".join(f"{t.name} {t.dtype} {t.shape}" for t in outputs),
        )
    classes = cast(int, scored[1].shape[1])
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        raise InputError(
            f"--data: {LABELS} go from {low} to {high}; output {scored[1].name} has {classes} classes "
            f"(0 to {classes - 1})",
            "labels are class indices of the scored output",
        )
    return scored
