"""The shared contracts: RunSpec, RunResult, ModelManifest, JSON Schema files, upgrade()."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas import (
    SCHEMA_VERSION,
    MeasurementPolicy,
    ModelManifest,
    NullOptions,
    OnnxRuntimeOptions,
    OpenVinoOptions,
    RunResult,
    RunSpec,
    SchemaVersionError,
    load_result,
    upgrade,
)
from schemas.generate import JSON_DIR, MODELS, rendered
from tests.conftest import MakeResult


def spec_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "run_id": "20250101T000000Z-null-fake-abc123",
        "image": "null",
        "model": "fake",
        "model_dir": "/models/fake",
        "cache_dir": "/cache/null",
        "batch_sizes": [1, 2],
        "options": {"framework": "null"},
    }
    doc.update(over)
    return doc


def test_valid_spec_defaults() -> None:
    spec = RunSpec.model_validate(spec_doc())
    assert spec.schema_version == SCHEMA_VERSION == 2
    assert spec.device == "cpu"
    assert spec.framework == "null"
    assert isinstance(spec.policy, MeasurementPolicy)
    # Round trip through JSON gives the same spec.
    assert RunSpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize("where", ["top", "options", "policy"])
def test_extra_fields_forbidden_in_spec(where: str) -> None:
    doc = spec_doc()
    if where == "top":
        doc["nosuchkey"] = 1
    elif where == "options":
        doc["options"] = {"framework": "null", "nosuchkey": 1}
    else:
        doc["policy"] = {"nosuchkey": 1}
    with pytest.raises(ValidationError, match="nosuchkey"):
        RunSpec.model_validate(doc)


def test_extra_fields_forbidden_in_result_and_manifest(make_result: MakeResult) -> None:
    doc = json.loads(make_result().model_dump_json())
    doc["extra"] = True
    with pytest.raises(ValidationError, match="extra"):
        RunResult.model_validate(doc)
    doc = json.loads(make_result().model_dump_json())
    doc["measurements"][0]["extra"] = True
    with pytest.raises(ValidationError):
        RunResult.model_validate(doc)


def test_manifest_extra_field_forbidden(fake_model: Path) -> None:
    doc = json.loads((fake_model / "manifest.json").read_text())
    ModelManifest.model_validate(doc)
    doc["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        ModelManifest.model_validate(doc)


def test_models_are_frozen() -> None:
    spec = RunSpec.model_validate(spec_doc())
    with pytest.raises(ValidationError):
        spec.model = "other"  # type: ignore[misc]


@pytest.mark.parametrize("version", [0, 3, "1"])
def test_spec_schema_version_must_be_current(version: int | str) -> None:
    with pytest.raises(ValidationError, match="schema_version"):
        RunSpec.model_validate(spec_doc(schema_version=version))


def test_a_version_1_spec_reads_as_version_2_with_no_dimensions() -> None:
    spec = RunSpec.model_validate(spec_doc(schema_version=1))
    assert spec.schema_version == 2 and spec.dims == {} and spec.sequence_dim is None


def test_a_version_1_manifest_reads_as_one_input_and_one_output() -> None:
    from schemas import ModelManifest

    doc = {
        "manifest_version": 1,
        "name": "m",
        "source": "onnx",
        "created_at": "2026-01-01T00:00:00Z",
        "input_name": "x",
        "input_shape": [None, 3, 8, 8],
        "input_layout": "NCHW",
        "output_name": "y",
        "output_shape": [None, 10],
        "reference": "onnxruntime-fp32",
        "files": {},
    }
    m = ModelManifest.model_validate(doc)
    assert m.manifest_version == 2 and [t.name for t in m.inputs] == ["x"] and m.outputs[0].name == "y"
    assert m.input_shape == [None, 3, 8, 8] and m.input_layout == "NCHW" and m.outputs[0].class_scores
    assert m.inputs[0].values is not None and m.inputs[0].values.kind == "uniform"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"dims": {}}, "no default"),
        ({"dims": {"seq": 0}}, "value >= 1"),
        ({"sequence_dim": "len"}, "not one of dims"),
    ],
)
def test_a_manifest_names_a_default_for_every_dimension(change: dict[str, object], error: str) -> None:
    from schemas import ModelManifest

    doc: dict[str, object] = {
        "name": "m",
        "source": "onnx",
        "created_at": "2026-01-01T00:00:00Z",
        "inputs": [{"name": "ids", "dtype": "int64", "shape": [None, "seq"]}],
        "outputs": [{"name": "h", "shape": [None, "seq", 4]}],
        "dims": {"seq": 8},
        "reference": "onnxruntime-fp32",
        "files": {},
    }
    assert ModelManifest.model_validate(doc).dim_names == ["seq"]
    with pytest.raises(ValidationError, match=error):
        ModelManifest.model_validate({**doc, **change})


@pytest.mark.parametrize(
    ("options", "cls"),
    [
        ({"framework": "null", "fault": "raise"}, NullOptions),
        ({"framework": "onnxruntime", "intra_op_threads": 2}, OnnxRuntimeOptions),
        ({"framework": "openvino", "hint": "throughput", "precision": "bf16"}, OpenVinoOptions),
    ],
)
def test_options_union_discriminates_on_framework(options: dict[str, Any], cls: type) -> None:
    spec = RunSpec.model_validate(spec_doc(options=options))
    assert type(spec.options) is cls
    assert spec.framework == options["framework"]


@pytest.mark.parametrize(
    "options",
    [
        {"framework": "pytorch"},  # unknown discriminator
        {},  # no discriminator
        {"framework": "onnxruntime", "hint": "latency"},  # an openvino option under onnxruntime
        {"framework": "null", "fault": "explode"},
        {"framework": "onnxruntime", "intra_op_threads": -1},
        {"framework": "openvino", "streams": 0},
    ],
)
def test_bad_options_rejected(options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RunSpec.model_validate(spec_doc(options=options))


@pytest.mark.parametrize("sizes", [[0], [-1], [1, 0], [], [1, 1], ["a"], [1.5]])
def test_bad_batch_sizes(sizes: list[int | float | str]) -> None:
    with pytest.raises(ValidationError, match="batch_sizes"):
        RunSpec.model_validate(spec_doc(batch_sizes=sizes))


@pytest.mark.parametrize("name", ["a/b", "../x", "/abs", "UPPER", "", "-dash", "x" * 65, "a b"])
def test_model_name_with_path_or_bad_chars_rejected(name: str) -> None:
    with pytest.raises(ValidationError, match="model"):
        RunSpec.model_validate(spec_doc(model=name))


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "my-model.v1", "0"])
def test_model_name_accepted(name: str) -> None:
    assert RunSpec.model_validate(spec_doc(model=name)).model == name


@pytest.mark.parametrize("device", ["gpu", "cuda", "cuda:x", "CPU", "cuda:0 "])
def test_bad_device_rejected(device: str) -> None:
    with pytest.raises(ValidationError, match="device"):
        RunSpec.model_validate(spec_doc(device=device))


def test_policy_consistency() -> None:
    with pytest.raises(ValidationError, match="max_time_s"):
        MeasurementPolicy(min_time_s=5, max_time_s=1)
    with pytest.raises(ValidationError, match="max_iterations"):
        MeasurementPolicy(min_iterations=10, max_iterations=5)
    with pytest.raises(ValidationError):
        MeasurementPolicy(stable_windows=1)
    with pytest.raises(ValidationError):
        MeasurementPolicy(tolerance=1.0)


def test_result_consistency_rules(make_result: MakeResult) -> None:
    ok = make_result()
    doc = json.loads(ok.model_dump_json())
    # ok must measure exactly the spec's batch sizes
    bad = json.loads(ok.model_dump_json())
    bad["measurements"] = bad["measurements"][:1]
    with pytest.raises(ValidationError, match="batch sizes"):
        RunResult.model_validate(bad)
    # non-ok needs a message
    bad = dict(doc, status="error", message=None, measurements=[])
    with pytest.raises(ValidationError, match="message"):
        RunResult.model_validate(bad)
    # run ids must agree
    bad = dict(doc, run_id="other")
    with pytest.raises(ValidationError, match="run_id"):
        RunResult.model_validate(bad)
    # time runs forward
    bad = dict(doc, finished_at="2000-01-01T00:00:00Z")
    with pytest.raises(ValidationError, match="finished_at"):
        RunResult.model_validate(bad)
    # percentiles ordered
    bad = json.loads(ok.model_dump_json())
    bad["measurements"][0]["latency_p50_ms"] = bad["measurements"][0]["latency_max_ms"] + 1
    with pytest.raises(ValidationError, match="ordered"):
        RunResult.model_validate(bad)


def test_load_time_is_sum_of_phases(make_result: MakeResult) -> None:
    assert make_result().load_time_s == pytest.approx(1.0)


# --------------------------------------------------------------------------- JSON Schema files


def test_json_schema_files_exist_for_every_model() -> None:
    assert set(rendered()) == set(MODELS)
    for name in MODELS:
        assert (JSON_DIR / name).is_file(), f"schemas/json/{name} is missing"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_json_schema_files_match_models(name: str) -> None:
    """Drift test: schemas/json/* must be what `make schemas` writes from the pydantic models."""
    committed = (JSON_DIR / name).read_text()
    assert committed == rendered()[name], f"schemas/json/{name} is stale: run `make schemas`"


def test_generate_check_reports_fresh_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m schemas.generate --check` passes on freshly written files and flags edits."""
    import schemas.generate as gen

    monkeypatch.setattr(gen, "JSON_DIR", tmp_path)
    assert gen.main([]) == 0
    assert gen.main(["--check"]) == 0
    (tmp_path / "run_spec.schema.json").write_text("{}\n")
    assert gen.main(["--check"]) == 1


# --------------------------------------------------------------------------- upgrade


def test_upgrade_current_version_is_identity(make_result: MakeResult) -> None:
    doc = json.loads(make_result().model_dump_json())
    assert upgrade(dict(doc)) == doc


def test_upgrade_refuses_newer_version_with_hint(make_result: MakeResult) -> None:
    doc = json.loads(make_result().model_dump_json())
    doc["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(SchemaVersionError, match="newer") as info:
        upgrade(doc)
    assert "hint:" in str(info.value)
    assert "update bench-ctl" in str(info.value)


@pytest.mark.parametrize("version", [None, 0, -1, "1", 1.0])
def test_upgrade_refuses_missing_or_invalid_version(version: int | float | str | None) -> None:
    doc: dict[str, Any] = {} if version is None else {"schema_version": version}
    with pytest.raises(SchemaVersionError, match="schema_version"):
        upgrade(doc)


def test_load_result_round_trip_and_newer_file(tmp_path: Path, make_result: MakeResult) -> None:
    result = make_result()
    path = tmp_path / "result.json"
    path.write_text(result.model_dump_json())
    assert load_result(path) == result
    doc = json.loads(path.read_text())
    doc["schema_version"] = 99
    path.write_text(json.dumps(doc))
    with pytest.raises(SchemaVersionError, match="99"):
        load_result(path)
    path.write_text("[1, 2]")
    with pytest.raises(SchemaVersionError, match="not a JSON object"):
        load_result(path)
