"""`bench-ctl models add NAME FILE.onnx` takes any model: several inputs and outputs, integer,
boolean and float16 inputs, named dynamic dimensions (`--dim`), integer value ranges
(`--int-range`) and the user's labelled data (`--data`), with ONNX Runtime fp32's accuracy on it.

Bad input is one line with a hint, exit code 2, and nothing in the store. The tests that run the
exporter need the ort environment (marked `frameworks`); the flag syntax is refused before it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from runners.model_inputs import DimNames, InputError, read_inputs, read_outputs
from schemas import ModelManifest, RunResult
from schemas.manifest import InputValues
from schemas.model_flags import MAX_DATA_BYTES
from tests import onnx_models
from tests.conftest import SHORT_POLICY, Bench, Cli

frameworks = pytest.mark.frameworks


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test models, built once: tests/onnx_models.py and one without class scores."""
    root = tmp_path_factory.mktemp("onnx")
    for build in (
        onnx_models.bert_like,
        onnx_models.two_outputs,
        onnx_models.float16_input,
        onnx_models.classifier,
    ):
        build(root / f"{build.__name__}.onnx")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 2])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx_models.OPSET)])
    model.ir_version = onnx_models.IR_VERSION
    onnx.save(model, str(root / "identity.onnx"))
    return root


@pytest.fixture
def ort_env(ensure_env: Callable[[str], Path]) -> Path:
    return ensure_env("ort")


def add(cli: Cli, name: str, model: Path, *flags: str | Path) -> Any:
    return cli("models", "add", name, model, *flags, "--launcher", "local")


def manifest(bench: Bench, name: str) -> ModelManifest:
    return ModelManifest.model_validate_json((bench.models / name / "manifest.json").read_text())


def refused(result: Any, bench: Bench, name: str, words: str) -> None:
    """Exit code 2, one error line (with a hint) holding `words`, only the exporter's progress
    besides it, and nothing left in the store or beside it."""
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and words in errors[0] and "(hint: " in errors[0], result.stderr
    others = [ln for ln in result.stderr.splitlines() if ln.strip() and not ln.startswith("error:")]
    assert all(ln.startswith("  [export] ") for ln in others), result.stderr
    assert not (bench.models / name).exists()
    assert sorted(p.name for p in bench.models.iterdir()) == [], "work folders, claims or a kept log"
    staging = bench.home / "staging"
    assert not staging.exists() or not list(staging.iterdir())


def save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def token_data(n: int = 20, seq: int = 6, **change: np.ndarray) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(0).integers(0, 100, (n, seq))
    arrays = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {**arrays, **change}


# --------------------------------------------------------------------------- models of any shape


@frameworks
def test_bert_like_with_named_dimension(cli: Cli, bench: Bench, ort_env: Path, onnx_dir: Path) -> None:
    r = add(cli, "bert", onnx_dir / "bert_like.onnx", "--dim", "seq=8", "--int-range", "token_type_ids=0:2")
    assert r.exit_code == 0, r.output
    m = manifest(bench, "bert")
    assert [(t.name, t.dtype, t.shape) for t in m.inputs] == [
        (n, "int64", [None, "seq"]) for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    assert [t.values for t in m.inputs] == [
        InputValues(kind="integers", low=0, high=100),
        InputValues(kind="ones"),
        InputValues(kind="integers", low=0, high=2),
    ]
    assert m.dims == {"seq": 8} and m.sequence_dim == "seq"
    assert [(t.name, t.shape) for t in m.outputs] == [
        ("last_hidden_state", [None, "seq", 16]),
        ("pooler_output", [None, 16]),
    ]
    assert m.data is None and m.reference == "onnxruntime-fp32"
    with np.load(bench.models / "bert" / m.files["reference_input"].path) as z:
        assert sorted(z.files) == sorted(t.name for t in m.inputs)
        assert z["input_ids"].shape == (8, 8) and z["input_ids"].dtype == np.int64
        assert (z["attention_mask"] == 1).all() and set(np.unique(z["token_type_ids"])) <= {0, 1}
    with np.load(bench.models / "bert" / m.files["reference_output"].path) as z:
        assert z["last_hidden_state"].shape == (8, 8, 16) and z["pooler_output"].shape == (8, 16)
    assert "input  input_ids int64 [N, seq], integers in [0, 100)" in r.stdout
    assert "output last_hidden_state float32 [N, seq, 16]" in r.stdout and "seq=8" in r.stdout


@frameworks
def test_bert_like_without_dimension_value_is_refused(
    cli: Cli, bench: Bench, ort_env: Path, onnx_dir: Path
) -> None:
    r = add(cli, "bert", onnx_dir / "bert_like.onnx")
    refused(r, bench, "bert", "input input_ids has dimension 'seq' with no value: give --dim seq=N")


@frameworks
def test_int_range_of_a_mask_replaces_the_ones_and_seq_dim_is_chosen(
    cli: Cli, bench: Bench, ort_env: Path, onnx_dir: Path
) -> None:
    r = add(
        cli,
        "bert",
        onnx_dir / "bert_like.onnx",
        *("--dim", "seq=4", "--seq-dim", "seq"),
        *("--int-range", "attention_mask=0:2", "--int-range", "token_type_ids=0:2"),
    )
    assert r.exit_code == 0, r.output
    m = manifest(bench, "bert")
    assert m.inputs[1].values == InputValues(kind="integers", low=0, high=2)
    assert m.sequence_dim == "seq" and m.dims == {"seq": 4}


@frameworks
def test_two_outputs_and_float16_input(cli: Cli, bench: Bench, ort_env: Path, onnx_dir: Path) -> None:
    assert add(cli, "two", onnx_dir / "two_outputs.onnx").exit_code == 0
    m = manifest(bench, "two")
    assert [(t.name, t.dtype, t.shape) for t in m.outputs] == [
        ("logits", "float32", [None, 10]),
        ("embedding", "float32", [None, 4]),
    ]
    assert m.dims == {} and m.sequence_dim is None
    with np.load(bench.models / "two" / m.files["reference_output"].path) as z:
        assert z["logits"].shape == (8, 10) and z["embedding"].shape == (8, 4)

    assert add(cli, "half", onnx_dir / "float16_input.onnx").exit_code == 0
    m = manifest(bench, "half")
    assert [(t.name, t.dtype, t.shape, t.values) for t in m.inputs] == [
        ("x", "float16", [None, 8], InputValues(kind="uniform"))
    ]
    with np.load(bench.models / "half" / m.files["reference_input"].path) as z:
        assert z["x"].dtype == np.float16 and z["x"].shape == (8, 8)


@frameworks
def test_one_float_input_one_output_keeps_npy_files(
    cli: Cli, bench: Bench, ort_env: Path, onnx_dir: Path
) -> None:
    assert add(cli, "cls", onnx_dir / "classifier.onnx").exit_code == 0
    m = manifest(bench, "cls")
    assert m.files["reference_input"].path == "reference_input.npy"
    assert m.files["reference_output"].path == "reference_output.npy"
    ref = np.load(bench.models / "cls" / "reference_input.npy")
    assert ref.shape == (8, 8) and ref.dtype == np.float32 and ref.min() >= 0 and ref.max() < 1
    # The classifier's outputs are probabilities: their peak is recorded.
    assert m.reference_peak_mean is not None and 0.1 < m.reference_peak_mean <= 1


# --------------------------------------------------------------------------- refusals


REFUSALS: list[tuple[str, str, list[str], dict[str, dict[str, Any]], str]] = [
    # (case, model, flags, the data to give (see _data_file; {}: no --data), words of the error)
    (
        "dim naming nothing",
        "bert_like",
        ["--dim", "seq=8", "--dim", "foo=3"],
        {},
        "no dimension 'foo'; its dimensions: seq",
    ),
    (
        "int range beyond the dtype",
        "bert_like",
        ["--dim", "seq=8", "--int-range", "input_ids=0:99999999999999999999"],
        {},
        "input input_ids is int64, which holds",
    ),
    ("int range of a float", "classifier", ["--int-range", "x=0:3"], {}, "--int-range is for integer inputs"),
    (
        "int range of no input",
        "bert_like",
        ["--dim", "seq=8", "--int-range", "ids=0:3"],
        {},
        "no input 'ids'",
    ),
    ("data missing an input", "classifier", [], {"arrays": {"z": "x"}}, "--data has no array for input x"),
    (
        "data of the wrong dtype",
        "classifier",
        [],
        {"arrays": {"x": "float64"}},
        "input x is float64, the model takes float32",
    ),
    (
        "data with an extra array",
        "classifier",
        [],
        {"arrays": {"x": "x", "extra": "x"}},
        "'extra' is neither",
    ),
    (
        "data of the wrong shape",
        "classifier",
        [],
        {"arrays": {"x": "narrow"}},
        "the model takes [samples, 8]",
    ),
    (
        "labels not integers",
        "classifier",
        [],
        {"arrays": {"x": "x", "labels": "float"}},
        "labels are float32",
    ),
    ("labels out of range", "classifier", [], {"arrays": {"x": "x", "labels": "big"}}, "10 classes (0 to 9)"),
    ("labels per sample", "classifier", [], {"arrays": {"x": "x", "labels": "short"}}, "one class index per"),
    (
        "labels without class scores",
        "identity",
        [],
        {"arrays": {"x": "cube", "labels": "ok"}},
        "no output of the model is class scores",
    ),
    (
        "data samples differ",
        "bert_like",
        [],
        {"tokens": {"attention_mask": 19}},
        "input input_ids has 20 samples, input attention_mask has 19",
    ),
    (
        "data seq differs",
        "bert_like",
        [],
        {"tokens": {"attention_mask": -1}},
        "input input_ids has seq=6, input attention_mask has seq=5",
    ),
    (
        "dim against the data",
        "bert_like",
        ["--dim", "seq=7"],
        {"tokens": {}},
        "--dim seq=7 disagrees with --data",
    ),
    ("data not npz", "classifier", [], {"junk": {}}, "--data: not a NumPy .npz file"),
    (
        "seq dim naming nothing",
        "bert_like",
        ["--dim", "seq=8", "--int-range", "token_type_ids=0:2", "--seq-dim", "length"],
        {},
        "--seq-dim length: the model has no dimension 'length'; its dimensions: seq",
    ),
]


def _data_file(path: Path, spec: dict[str, dict[str, Any]]) -> Path | None:
    """The data a refusal case gives: arrays for the classifier (64 samples of 8 features) or the
    identity model, token data for bert_like (one input changed), or a file that is no .npz."""
    if not spec:
        return None
    rng = np.random.default_rng(1)
    x = rng.random((64, 8), dtype=np.float32)
    made: dict[str, np.ndarray] = {
        "x": x,
        "float64": x.astype(np.float64),
        "narrow": x[:, :4],
        "cube": rng.random((64, 3, 2), dtype=np.float32),
        "float": np.zeros(64, np.float32),
        "big": np.full(64, 12),
        "short": np.zeros(10, np.int64),
        "ok": np.zeros(64, np.int64),
    }
    if "junk" in spec:
        path.write_bytes(b"not numpy at all")
        return path
    if "tokens" in spec:
        arrays = token_data()
        for name, n in spec["tokens"].items():
            arrays[name] = arrays[name][:n] if n > 0 else arrays[name][:, :n]
        return save(path, **arrays)
    return save(path, **{name: made[kind] for name, kind in spec["arrays"].items()})


@frameworks
@pytest.mark.parametrize(("case", "model", "flags", "data", "words"), REFUSALS, ids=[c[0] for c in REFUSALS])
def test_bad_input_is_one_line_exit_2_and_nothing_stored(
    cli: Cli,
    bench: Bench,
    ort_env: Path,
    onnx_dir: Path,
    tmp_path: Path,
    case: str,
    model: str,
    flags: list[str],
    data: dict[str, dict[str, Any]],
    words: str,
) -> None:
    given = _data_file(tmp_path / "data.npz", data)
    extra = ["--data", str(given)] if given else []
    r = add(cli, "mine", onnx_dir / f"{model}.onnx", *flags, *extra)
    refused(r, bench, "mine", words)


SYNTAX: list[tuple[list[str], str]] = [
    (["--dim", "seq"], "--dim 'seq' is not NAME=N"),
    (["--dim", "seq=0"], "a dimension goes from 1 to"),
    (["--dim", "seq=x"], "'x' is not a whole number"),
    (["--dim", "seq=8", "--dim", "seq=9"], "--dim seq is given twice"),
    (["--int-range", "ids=5:1"], "LO must be below HI"),
    (["--int-range", "ids=0-5"], "is not NAME=LO:HI"),
    (["--int-range", "ids=a:b"], "must be whole numbers"),
    (["--seq-dim", "no such"], "is not a dimension name"),
    (["--data", "missing.npz"], "--data no such file"),
    (["--data", "."], "is a folder, not a data file"),
    (["--data", "huge.npz"], "has 2.0 GiB; at most 2 GiB"),
]


@pytest.mark.parametrize(("flags", "words"), SYNTAX, ids=[" ".join(f) for f, _ in SYNTAX])
def test_bad_flag_syntax_is_refused_before_the_exporter_runs(
    cli: Cli, bench: Bench, onnx_dir: Path, tmp_path: Path, flags: list[str], words: str
) -> None:
    """No environment is needed: the exporter never starts."""
    with (tmp_path / "huge.npz").open("wb") as f:
        f.truncate(MAX_DATA_BYTES + 1)  # sparse: no disk taken
    flags = [str(tmp_path / f) if f in ("missing.npz", ".", "huge.npz") else f for f in flags]
    r = add(cli, "mine", onnx_dir / "classifier.onnx", *flags)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and words in lines[0] and "(hint: " in lines[0], r.stderr
    assert list(bench.models.iterdir()) == []


# --------------------------------------------------------------------------- data and accuracy


def _labelled(onnx_file: Path, n: int, wrong: int) -> tuple[np.ndarray, np.ndarray]:
    """n samples and the classifier's own fp32 predictions as labels, `wrong` of them changed to
    another class: ONNX Runtime's top-1 on them is exactly (n - wrong) / n."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    labels = onnx_models.classifier_predictions(onnx_file, x)
    changed = rng.choice(n, size=wrong, replace=False)
    labels[changed] = (labels[changed] + rng.integers(1, 10, size=wrong)) % 10
    return x, labels


@frameworks
def test_data_accuracy_is_the_known_truth(
    cli: Cli, bench: Bench, ort_env: Path, onnx_dir: Path, tmp_path: Path
) -> None:
    model = onnx_dir / "classifier.onnx"
    x, labels = _labelled(model, 64, 0)
    r = add(cli, "right", model, "--data", save(tmp_path / "right.npz", x=x, labels=labels))
    assert r.exit_code == 0, r.output
    m = manifest(bench, "right")
    assert m.data is not None and m.data.samples == 64 and m.data.labels and m.data.scored_output == "probs"
    assert m.data.fp32_top1 == 1.0 and m.data.fp32_top5 == 1.0
    assert "64 samples with labels: ONNX Runtime fp32 top-1 100.0%" in r.stdout
    # The data is the user's file, byte for byte, and the reference batch its first samples.
    assert (bench.models / "right" / "data.npz").read_bytes() == (tmp_path / "right.npz").read_bytes()
    assert m.files["data"].path == "data.npz"
    assert np.array_equal(np.load(bench.models / "right" / "reference_input.npy"), x[:8])

    x, labels = _labelled(model, 100, 10)
    assert add(cli, "tenth", model, "--data", save(tmp_path / "tenth.npz", x=x, labels=labels)).exit_code == 0
    data = manifest(bench, "tenth").data
    assert data is not None and data.fp32_top1 == 0.9


@frameworks
def test_data_sets_the_dimensions_and_a_short_set_is_the_reference_batch(
    cli: Cli, bench: Bench, ort_env: Path, onnx_dir: Path, tmp_path: Path
) -> None:
    arrays = token_data(n=5, seq=6)
    r = add(cli, "bert", onnx_dir / "bert_like.onnx", "--data", save(tmp_path / "t.npz", **arrays))
    assert r.exit_code == 0, r.output
    m = manifest(bench, "bert")
    assert m.dims == {"seq": 6} and m.data is not None and m.data.samples == 5 and not m.data.labels
    with np.load(bench.models / "bert" / m.files["reference_input"].path) as z:
        assert all(np.array_equal(z[n], a) for n, a in arrays.items())


@frameworks
def test_an_ort_run_scores_the_data(
    cli: Cli, bench: Bench, ort_env: Path, onnx_dir: Path, tmp_path: Path
) -> None:
    model = onnx_dir / "classifier.onnx"
    x, labels = _labelled(model, 100, 10)
    assert add(cli, "tenth", model, "--data", save(tmp_path / "tenth.npz", x=x, labels=labels)).exit_code == 0
    r = cli("run", "--image", "ort", "--model", "tenth", "-b", "1", "--launcher", "local", *SHORT_POLICY)
    assert r.exit_code == 0, r.output
    (run_dir,) = bench.run_dirs()
    result = RunResult.model_validate_json((run_dir / "result.json").read_text())
    assert result.accuracy is not None and result.accuracy.data is not None
    got = result.accuracy.data
    assert got.samples == 100 and got.output == "probs"
    assert got.top1 == 0.9 and got.fp32_top1 == 0.9


# --------------------------------------------------------------------------- naming, without ORT


class Arg:
    def __init__(self, name: str, type: str, shape: list[Any]) -> None:
        self.name, self.type, self.shape = name, type, shape


def test_dimension_names_from_onnx_symbols() -> None:
    """An identifier symbol keeps its name and is one dimension wherever it appears; others get
    `dim_<tensor>_<axis>`; outputs share the inputs' names."""
    names = DimNames()
    inputs = read_inputs(
        [
            Arg("a:0", "tensor(float)", ["N", "my-dim", None, 3]),
            Arg("b", "tensor(bool)", [None, "seq"]),
            Arg("c", "tensor(int32)", [-1, "seq"]),
        ],
        names,
        8,
    )
    assert [t.shape for t in inputs] == [[None, "dim_a_0_1", "dim_a_0_2", 3], [None, "seq"], [None, "seq"]]
    assert [t.dtype for t in inputs] == ["float32", "bool", "int32"]
    outputs = read_outputs(
        [Arg("y", "tensor(float)", ["N", "my-dim", "seq", "other"])], names, [np.zeros((8, 2, 5, 4))], 8
    )
    assert outputs[0].shape == [None, "dim_a_0_1", "seq", "other"]


@pytest.mark.parametrize(
    ("arg", "words"),
    [
        (Arg("x", "tensor(double)", ["N", 3]), "input x is tensor(double)"),
        (Arg("x", "tensor(string)", ["N"]), "input x is tensor(string)"),
        (Arg("x", "tensor(float)", []), "input x is a scalar"),
        (Arg("x", "tensor(float)", [4, 3]), "fixed batch dimension 4"),
    ],
)
def test_inputs_bench_ctl_cannot_make_are_refused(arg: Arg, words: str) -> None:
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        read_inputs([arg], DimNames(), 8)


def test_a_killed_adds_staged_data_goes_with_its_work_folder(bench: Bench) -> None:
    from controller.catalog import models as model_store
    from controller.paths import Paths

    paths = Paths.from_env()
    stem = ".mine.k3x9q0ab"
    (paths.models / stem).mkdir()
    staging = paths.home / "staging"
    staging.mkdir()
    for suffix in (".onnx", ".npz"):
        (staging / f"{stem}{suffix}").write_bytes(b"staged")
    assert model_store.clean_stale_work(paths) == [stem]
    assert list(staging.iterdir()) == [] and list(paths.models.iterdir()) == []
