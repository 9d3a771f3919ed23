"""Every framework declares the values a search tries, each a value its options model accepts; the
null runner's landscape is the known answer a search is checked against, and its runs take the
work the landscape says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas import ModelManifest, RunResult, RunSpec
from schemas.frameworks import OPTION_MODELS, FrameworkOptions
from schemas.frameworks.base import CORES, TUNE_KEY, precision_options, search_space, tunable
from schemas.frameworks.iree import IreeOptions
from schemas.frameworks.null import (
    KNOB_A_VALUES,
    KNOB_B_VALUES,
    NULL_CLIFF_A,
    NULL_CLIFF_FACTOR,
    NULL_NEAR_TIE,
    NULL_OPTIMUM,
    NullOptions,
    null_landscape,
)
from tests.conftest import Cli

MODELS = sorted(OPTION_MODELS.items())
IDS = [name for name, _ in MODELS]
# The options that change what a framework computes in: a search leaves them alone by default.
PRECISION_OPTIONS = {
    "openvino": ["precision"],
    "tensorrt": ["precision"],
    "torch": ["precision"],
    "litert": ["precision"],
}


def declared(model: type[FrameworkOptions]) -> dict[str, list[Any]]:
    """Option -> the values its field declares, as written (CORES unresolved)."""
    found = {}
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and TUNE_KEY in extra:
            values = extra[TUNE_KEY]
            assert isinstance(values, list)
            found[name] = values
    return found


@pytest.mark.parametrize(("framework", "model"), MODELS, ids=IDS)
def test_every_framework_has_a_search_space(framework: str, model: type[FrameworkOptions]) -> None:
    for allow in (False, True):
        space = search_space(model, cores=2, allow_precision=allow)
        assert space, f"{framework} declares nothing to search"
        # Something besides the defaults, on the smallest host the study runs on.
        assert any(len(values) > 1 for values in space.values()), (framework, space)


@pytest.mark.parametrize(("framework", "model"), MODELS, ids=IDS)
@pytest.mark.parametrize("cores", [1, 2, 64])
def test_every_declared_value_validates(framework: str, model: type[FrameworkOptions], cores: int) -> None:
    for name, values in search_space(model, cores, allow_precision=True).items():
        for value in values:
            options = model.model_validate({name: value})
            assert getattr(options, name) == value, (framework, name, value)
    for name, values in declared(model).items():
        for value in values:
            model.model_validate({name: cores if value == CORES else value})


@pytest.mark.parametrize(("framework", "model"), MODELS, ids=IDS)
def test_the_default_comes_first_and_values_once(framework: str, model: type[FrameworkOptions]) -> None:
    for name, values in search_space(model, 8, allow_precision=True).items():
        assert values[0] == model.model_fields[name].default, (framework, name)
        assert len(values) == len({json.dumps(v) for v in values}), (framework, name, values)
        assert CORES not in values


def test_threads_above_the_cores_are_left_out_and_cores_resolved() -> None:
    from schemas.frameworks.ov import OpenVinoOptions

    # threads (the threads option): None is the cores given, so `cores` adds nothing to it.
    assert search_space(OpenVinoOptions, 2)["threads"] == [None, 1]
    assert search_space(OpenVinoOptions, 3)["threads"] == [None, 1, 2]
    assert search_space(OpenVinoOptions, 64)["threads"] == [None, 1, 2, 4]
    # streams is no threads option: CORES becomes the number, nothing is left out.
    assert search_space(OpenVinoOptions, 2)["streams"] == [None, 1, 2]
    assert search_space(OpenVinoOptions, 16)["streams"] == [None, 1, 2, 16]
    for _, model in MODELS:
        option = model.threads_option
        if option is None or option not in declared(model):
            continue
        for cores in (1, 2, 3):
            values = search_space(model, cores)[option]
            assert all(v in (0, None) or v <= cores for v in values), (model, cores, values)


def test_tunable_needs_a_value() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        tunable()


@pytest.mark.parametrize(("framework", "model"), MODELS, ids=IDS)
def test_precision_options_only_when_allowed(framework: str, model: type[FrameworkOptions]) -> None:
    assert precision_options(model) == PRECISION_OPTIONS.get(framework, [])
    kept = search_space(model, 4)
    allowed = search_space(model, 4, allow_precision=True)
    for name in precision_options(model):
        assert name not in kept and len(allowed[name]) > 1, (framework, name)
    assert {k: v for k, v in allowed.items() if k not in precision_options(model)} == kept


def test_study_ablations_and_gpu_only_values_are_no_candidates() -> None:
    assert "disable" not in search_space(OPTION_MODELS["onnxruntime"], 2)["graph_optimization"]
    assert search_space(OPTION_MODELS["torch"], 2)["mode"] == ["eager", "compile"]
    trt = search_space(OPTION_MODELS["tensorrt"], 2, allow_precision=True)
    assert "int8" not in trt["precision"]  # needs calibration data only the user has


# --------------------------------------------------------------------------- IREE microkernels


def iree_runner(model_dir: Path, tmp_path: Path, **options: Any) -> Any:
    from runners.frameworks.iree import IreeRunner

    spec = RunSpec(
        run_id="x",
        image="iree",
        model=model_dir.name,
        model_dir=str(model_dir),
        cache_dir=str(tmp_path),
        device="cpu",
        options={"framework": "iree", **options},
    )
    manifest = ModelManifest.model_validate_json((model_dir / "manifest.json").read_text())
    return IreeRunner(spec, manifest, model_dir, tmp_path)


def test_iree_ukernels_flag_and_cache_key(fake_model: Path, tmp_path: Path) -> None:
    from runners.frameworks.iree import cache_key

    flag = "--iree-llvmcpu-enable-ukernels"
    by_default = iree_runner(fake_model, tmp_path)._target()[1]
    assert not any(f.startswith(flag) for f in by_default), "the default passes no flag, as before"
    assert iree_runner(fake_model, tmp_path, ukernels="all")._target()[1] == [*by_default, f"{flag}=all"]
    assert iree_runner(fake_model, tmp_path, ukernels="none")._target()[1] == [*by_default, f"{flag}=none"]
    keys = {
        u: cache_key("digest", "3.13.0", {"device": "llvm-cpu"}, None, IreeOptions(ukernels=u))
        for u in ("default", "none", "all", "mmt4d")
    }
    assert len(set(keys.values())) == 4, "each microkernel choice is its own module"
    # Modules compiled before the option existed keep their keys.
    assert keys["default"] == cache_key("digest", "3.13.0", {"device": "llvm-cpu"}, None, IreeOptions())


# --------------------------------------------------------------------------- the null landscape


def grid() -> dict[tuple[int, int], float]:
    return {(a, b): null_landscape(a, b) for a in KNOB_A_VALUES for b in KNOB_B_VALUES}


def test_null_landscape_has_one_optimum_a_near_tie_and_a_cliff() -> None:
    points = grid()
    best = min(points.values())
    assert best == 1.0 and [p for p, f in points.items() if f == best] == [NULL_OPTIMUM]
    ranked = sorted(points, key=points.__getitem__)
    assert ranked[1] == NULL_NEAR_TIE and 1.0 < points[NULL_NEAR_TIE] <= 1.01
    third = points[ranked[2]]
    assert third >= 1.05, "only the near-tie is within 5 % of the optimum"
    ordinary = [f for (a, _), f in points.items() if a != NULL_CLIFF_A and f > 1.01]
    assert min(ordinary) >= 1.05 and max(ordinary) <= 1.5
    for b in KNOB_B_VALUES:
        below = null_landscape(NULL_CLIFF_A - 1, b)
        assert null_landscape(NULL_CLIFF_A, b) >= 2.5 * below, "the cliff: at least 2.5x its neighbour"
    # The default is a point of the landscape, not the answer.
    defaults = NullOptions(landscape=True)
    assert (defaults.knob_a, defaults.knob_b) != NULL_OPTIMUM and defaults.work_factor() >= 1.05
    assert NullOptions().work_factor() == 1.0 == NullOptions(knob_a=7).work_factor(), "off by default"
    assert search_space(NullOptions, 2) == {"knob_a": list(KNOB_A_VALUES), "knob_b": list(KNOB_B_VALUES)}
    with pytest.raises(ValueError, match="no landscape point"):
        null_landscape(8, 0)
    assert NULL_CLIFF_FACTOR == 3.0


@pytest.mark.usefixtures("null_env")
@pytest.mark.parametrize(
    "point", [NULL_OPTIMUM, (0, 0), (NULL_CLIFF_A, 1)], ids=["optimum", "default", "cliff"]
)
def test_a_null_run_takes_the_landscapes_work(
    cli: Cli, fake_model: Path, short_policy: list[str], point: tuple[int, int]
) -> None:
    """The fastest iteration of a null run is work_us times the landscape's factor (15 %: the
    busy loop overshoots, never undershoots, and a loaded 2-core host only adds)."""
    work_us = 2000.0
    a, b = point
    result = cli(
        "run",
        "--image",
        "null",
        "--model",
        "fake",
        "--launcher",
        "local",
        "--batch-sizes",
        "1",
        *short_policy,
        "--set",
        f"work_us={work_us:g}",
        "--set",
        "landscape=true",
        "--set",
        f"knob_a={a}",
        "--set",
        f"knob_b={b}",
        "--json",
    )
    assert result.exit_code == 0, result.output
    run = RunResult.model_validate(json.loads(result.stdout))
    expected_ms = work_us * null_landscape(a, b) / 1000
    (m,) = run.measurements
    assert expected_ms <= m.latency_min_ms * 1.001, "less time than the work it was given"
    assert m.latency_min_ms <= expected_ms * 1.15, (m.latency_min_ms, expected_ms)
