"""`bench-ctl models export bert-tiny`: a BERT-shaped encoder built in the torch environment with
seeded random weights, registered as a user's ONNX file is (ONNX Runtime fp32 reference outputs).

The export and the ONNX Runtime run are `frameworks` tests (real torch and ONNX Runtime, local
launcher); bert-tiny is exported once per module (15 to 20 s on two cores), and its torch step run
again to check that the same seed gives the same file. Names and the plan are checked without any
environment."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cli.app import app
from controller.paths import REPO_ROOT, Paths
from schemas import ModelManifest, RunResult
from schemas.encoders import DEFAULT_SEQ, TRANSFORMER_MODELS
from tests.conftest import SHORT_POLICY, Bench, Cli

TINY = TRANSFORMER_MODELS["bert-tiny"]


@dataclass
class Exported:
    home: Path
    env: dict[str, str]
    manifest: ModelManifest
    seconds: float
    output: str

    @property
    def folder(self) -> Path:
        return self.home / "models" / "bert-tiny"


def export(env: dict[str, str], *more: str) -> tuple[float, str]:
    started = time.monotonic()
    result = CliRunner().invoke(app, ["models", "export", "bert-tiny", "--launcher", "local", *more], env=env)
    assert result.exit_code == 0, f"export failed:\n{result.output}"
    return time.monotonic() - started, result.output


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, session_home: Path, ensure_env: Callable[[str], Path]
) -> Exported:
    """bert-tiny exported once into a home of this module."""
    ensure_env("torch")
    ensure_env("ort")
    root = tmp_path_factory.mktemp("transformer")
    home = root / "home"
    (home / "models").mkdir(parents=True)
    (home / "envs").symlink_to(session_home / "envs", target_is_directory=True)
    env = {"BENCH_HOME": str(home), "BENCH_DB": str(root / "results.duckdb")}
    seconds, output = export(env)
    manifest = ModelManifest.model_validate_json((home / "models/bert-tiny/manifest.json").read_text())
    return Exported(home, env, manifest, seconds, output)


@pytest.mark.frameworks
def test_the_manifest_is_that_of_a_bert_encoder(exported: Exported) -> None:
    m = exported.manifest
    assert m.source == "pytorch" and m.reference == "onnxruntime-fp32" and m.onnx_opset == 17
    assert [(t.name, t.dtype, t.shape) for t in m.inputs] == [
        ("input_ids", "int64", [None, "seq"]),
        ("attention_mask", "int64", [None, "seq"]),
        ("token_type_ids", "int64", [None, "seq"]),
    ]
    values = {t.name: t.values for t in m.inputs}
    ids, types, mask = values["input_ids"], values["token_type_ids"], values["attention_mask"]
    assert ids is not None and (ids.kind, ids.low, ids.high) == ("integers", 0, TINY.vocab)
    assert types is not None and (types.kind, types.low, types.high) == ("integers", 0, TINY.type_vocab)
    assert mask is not None and mask.kind == "ones"
    assert m.dims == {"seq": DEFAULT_SEQ} and m.sequence_dim == "seq"
    assert [(t.name, t.shape) for t in m.outputs] == [
        ("last_hidden_state", [None, "seq", TINY.hidden]),
        ("pooler_output", [None, TINY.hidden]),
    ]
    # Parameters: the embeddings, four projections and a feed-forward per layer, the pooler.
    h, i, layers = TINY.hidden, TINY.intermediate, TINY.layers
    embeddings = (TINY.vocab + TINY.max_positions + TINY.type_vocab) * h + 2 * h
    block = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    assert m.parameters == embeddings + layers * block + h * h + h
    assert m.tools["torch"].startswith("2.") and "layers=2 hidden=128 heads=2" in m.tools["config"]
    assert "seed 0" in m.tools["init"] and m.seed == 0
    assert {"onnx", "reference_input", "reference_output"} <= set(m.files)
    assert f"exported bert-tiny: {m.parameters:,} parameters" in exported.output
    print(f"bert-tiny exported in {exported.seconds:.1f} s")


@pytest.mark.frameworks
def test_the_store_verifies_it(exported: Exported) -> None:
    from controller.catalog import models

    models.verify(Paths(home=exported.home, db=exported.home / "unused.duckdb"), exported.manifest)


def build(python: Path, out: Path, seed: int) -> str:
    """The torch step alone (`runners.transformer`): the sha256 of the ONNX file it writes."""
    cmd = [
        str(python),
        "-m",
        "runners.transformer",
        "--name",
        "bert-tiny",
        "--out",
        str(out),
        "--seed",
        str(seed),
    ]
    subprocess.run(cmd, cwd=REPO_ROOT, check=True, capture_output=True)
    return hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()


@pytest.mark.frameworks
def test_the_same_seed_gives_the_same_onnx_file_and_another_seed_another(
    exported: Exported, ensure_env: Callable[[str], Path], tmp_path: Path
) -> None:
    stored = exported.manifest.files["onnx"].sha256
    assert hashlib.sha256((exported.folder / "model.onnx").read_bytes()).hexdigest() == stored
    python = ensure_env("torch")
    assert build(python, tmp_path / "seed0", 0) == stored
    assert build(python, tmp_path / "seed1", 1) != stored


@pytest.mark.frameworks
def test_onnx_runtime_runs_it_at_32_tokens(exported: Exported) -> None:
    args = ["run", "-m", "bert-tiny", "-i", "ort", "--launcher", "local", "--batch-sizes", "1,2"]
    args += ["--set", "dim.seq=32", *SHORT_POLICY, "--json"]
    result = CliRunner().invoke(app, args, env=exported.env)
    assert result.stdout.strip(), result.output
    r = RunResult.model_validate_json(result.stdout)
    assert result.exit_code == 0 and r.status == "ok", f"{r.message}\n{result.stderr}"
    assert r.spec.dims == {"seq": 32} and r.spec.sequence_dim == "seq"
    assert [m.batch_size for m in r.measurements] == [1, 2]
    for m in r.measurements:
        assert m.tokens_per_s == pytest.approx(m.throughput_sps * 32)
    acc = r.accuracy
    assert acc is not None and acc.reference == "onnxruntime-fp32"
    assert acc.cosine_min is not None and acc.cosine_min > 0.9999, acc
    assert [o.name for o in acc.outputs] == ["last_hidden_state", "pooler_output"]


# --------------------------------------------------------------------------- without environments


def test_an_unknown_name_is_refused_with_the_names_that_exist(cli: Cli, bench: Bench) -> None:
    r = cli("models", "export", "bert-tinny", "--launcher", "local")
    assert r.exit_code == 2
    assert "unknown model 'bert-tinny'" in r.output and "did you mean 'bert-tiny'" in r.output
    assert not list(bench.models.iterdir())


def test_the_help_names_the_transformers(cli: Cli) -> None:
    r = cli("models", "export", "--help")
    assert r.exit_code == 0 and "bert-tiny" in r.output and "bert-base" in r.output


def test_the_plan_sweeps_four_frameworks_over_two_sequence_lengths(cli: Cli, bench: Bench) -> None:
    r = cli("sweep", "plans/transformer.toml", "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["missing_models"] == ["bert-tiny"]
    cells = doc["cells"]
    assert {c["image"] for c in cells} == {"ort", "openvino", "iree", "torch"}
    for image in ("ort", "openvino", "iree"):
        assert sorted(c["options"] for c in cells if c["image"] == image) == ["dim.seq=128", "dim.seq=32"]
    assert all(c["batch_sizes"] == [1, 8] and c["model"] == "bert-tiny" for c in cells)
