"""Models with several inputs and outputs, integer and float16 inputs and a named dynamic
dimension, end to end through the real frameworks (local launcher): every output of every run
agrees with ONNX Runtime's fp32 reference, at the sequence lengths a sweep sets.

The models are built here (tests/onnx_models.py) and registered with `models add` (its reference
outputs come from ONNX Runtime fp32). Slow: marked `frameworks`.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from controller.cli.app import app
from schemas import ModelManifest, RunResult
from tests import onnx_models
from tests.conftest import SHORT_POLICY, Bench, Cli

pytestmark = pytest.mark.frameworks

REPO = Path(__file__).resolve().parents[1]
IMAGES = ("ort", "openvino", "iree", "torch")
REFERENCE_SAMPLES = 8
FP32_REL_ERR = 1e-3
COSINE_MIN = 0.9999


@dataclass(frozen=True)
class Model:
    build: Callable[[Path], Path]
    add: list[str] = field(default_factory=list)  # models add's options
    data: Callable[[Path], dict[str, np.ndarray]] | None = None  # samples, from the ONNX file
    run: list[str] = field(default_factory=list)  # run's options besides the batch sizes


def bert_data(onnx: Path) -> dict[str, np.ndarray]:
    """Token ids, types and a mask with padding in half the samples: the mask must be honoured."""
    rng = np.random.default_rng(5)
    mask = np.ones((REFERENCE_SAMPLES, 8), np.int64)
    mask[::2, -3:] = 0
    return {
        "input_ids": rng.integers(0, 100, mask.shape),
        "attention_mask": mask,
        "token_type_ids": rng.integers(0, 2, mask.shape),
    }


def labelled(onnx: Path) -> dict[str, np.ndarray]:
    """Samples labelled with the classifier's own fp32 predictions: every framework scores 100 %."""
    x = np.random.default_rng(6).random((24, 8), dtype=np.float32)
    return {"x": x, "labels": onnx_models.classifier_predictions(onnx, x)}


MODELS = {
    "bert_like": Model(
        onnx_models.bert_like,
        add=["--dim", "seq=8", "--int-range", "input_ids=0:100", "--int-range", "token_type_ids=0:2"],
        data=bert_data,
        # The reference batch at seq=8 (the data's), the measurements at 16 and 64.
        run=["--sweep", "dim.seq=16,64"],
    ),
    "two_outputs": Model(onnx_models.two_outputs),
    "float16_input": Model(onnx_models.float16_input),
    "classifier": Model(onnx_models.classifier, data=labelled),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, ensure_env: Callable[[str], Path]) -> Path:
    """The models, registered once for the module by `models add` in a home of their own."""
    ensure_env("ort")
    root = tmp_path_factory.mktemp("multi-input-models")
    home = root / "home"
    (home / "models").mkdir(parents=True)
    env = {"BENCH_HOME": str(home), "BENCH_DB": str(root / "add.duckdb")}
    for name, model in MODELS.items():
        onnx = model.build(root / f"{name}.onnx")
        args = ["models", "add", name, str(onnx), *model.add, "--launcher", "local"]
        if model.data is not None:
            np.savez(root / f"{name}.npz", **model.data(onnx))  # type: ignore[arg-type]
            args += ["--data", str(root / f"{name}.npz")]
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
    return home / "models"


def run_json(cli: Cli, image: str, model: str, *args: str) -> list[RunResult]:
    """The runs of one `run` command (an image's variants and a sweep make several)."""
    result = cli(
        "run", "--image", image, "--model", model, "--launcher", "local", *SHORT_POLICY, *args, "--json"
    )
    assert result.stdout.strip(), result.output
    doc = json.loads(result.stdout)
    runs = [RunResult.model_validate(d) for d in (doc if isinstance(doc, list) else [doc])]
    for run in runs:
        assert run.status == "ok", f"{image} {model}: {run.status}: {run.message}\n{result.stderr[-3000:]}"
    assert result.exit_code == 0, result.output
    return runs


def check_agrees(run: RunResult, manifest: ModelManifest) -> None:
    """Every output of the run agrees with the fp32 reference; labelled data scores as in fp32."""
    acc = run.accuracy
    assert acc is not None and acc.reference == "onnxruntime-fp32" and acc.samples == REFERENCE_SAMPLES
    assert [o.name for o in acc.outputs] == [t.name for t in manifest.outputs]
    for out, info in zip(acc.outputs, manifest.outputs, strict=True):
        assert out.rel_err < FP32_REL_ERR, out
        assert out.cosine_min is not None and out.cosine_min > COSINE_MIN, out
        if info.class_scores:
            assert out.top1_agreement == 1.0 and out.top5_agreement == 1.0, out
        else:
            assert out.top1_agreement is None, out
    assert acc.rel_err < FP32_REL_ERR and acc.worst_output in [t.name for t in manifest.outputs]
    if manifest.data is not None and manifest.data.labels:
        assert acc.data is not None and acc.data.samples == manifest.data.samples
        assert acc.data.top1 == manifest.data.fp32_top1 == 1.0, acc.data


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("image", IMAGES)
def test_every_output_agrees(
    image: str, model: str, store: Path, cli: Cli, bench: Bench, ensure_env: Callable[[str], Path]
) -> None:
    ensure_env(image)
    (bench.models / model).symlink_to(store / model, target_is_directory=True)
    manifest = ModelManifest.model_validate_json((store / model / "manifest.json").read_text())
    runs = run_json(cli, image, model, "-b", "1,2", *MODELS[model].run)
    for run in runs:
        check_agrees(run, manifest)
        assert [m.batch_size for m in run.measurements] == [1, 2]
        assert all(m.throughput_sps > 0 and m.iterations >= 1 for m in run.measurements)
        if manifest.sequence_dim is None:
            assert run.spec.dims == {} and all(m.tokens_per_s is None for m in run.measurements)
        else:
            seq = run.spec.dims[manifest.sequence_dim]
            for m in run.measurements:
                assert m.tokens_per_s == pytest.approx(m.throughput_sps * seq)
    if manifest.sequence_dim is not None:  # each length of the sweep was measured
        assert sorted({r.spec.dims["seq"] for r in runs}) == [16, 64]
    rows = bench.rows("SELECT status, count(*) FROM results GROUP BY status")
    assert rows == [("ok", 2 * len(runs))]


@pytest.mark.parametrize(("image", "framework"), [("tf", "tensorflow"), ("litert", "litert")])
def test_savedmodel_images_refuse_these_models_with_a_reason(
    image: str,
    framework: str,
    store: Path,
    cli: Cli,
    bench: Bench,
    ensure_env: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    """TensorFlow and LiteRT run a Keras export's SavedModel: a model registered from ONNX is
    unsupported, said before any process starts, and by the runner itself for a spec made by hand."""
    (bench.models / "bert_like").symlink_to(store / "bert_like", target_is_directory=True)
    result = cli("run", "--image", image, "--model", "bert_like", "--launcher", "local", "--json")
    run = RunResult.model_validate_json(result.stdout)
    assert run.status == "unsupported" and "SavedModel" in (run.message or ""), run.message
    python = ensure_env(image)
    spec = {
        "run_id": f"{image}-by-hand",
        "image": image,
        "model": "bert_like",
        "model_dir": str(store / "bert_like"),
        "cache_dir": str(tmp_path / "cache"),
        "batch_sizes": [1],
        "options": {"framework": framework},
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [str(python), "-m", "runners", "--spec", str(tmp_path / "spec.json"), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_hand = RunResult.model_validate_json(out.read_text())
    assert by_hand.status == "unsupported" and "SavedModel" in (by_hand.message or ""), by_hand.message
    assert "Traceback" not in proc.stderr
