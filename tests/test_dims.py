"""A model's named dimensions are an axis like the batch size: `--set dim.seq=N`, `--sweep
dim.seq=A,B`, the manifest's default otherwise; results carry them, and tokens/s beside samples/s.
A bad value is one line with a hint, exit 2, and nothing stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas import load_result
from tests.conftest import Bench, Cli, write_seq_model

FAST = ["--set", "policy.min_time_s=0.1", "--set", "policy.max_time_s=1", "--set", "policy.warmup_min_s=0"]


@pytest.fixture
def seq_model(bench: Bench) -> Path:
    return write_seq_model(bench.models / "seqfake")


def results(bench: Bench) -> list[object]:
    return [load_result(d / "result.json") for d in bench.run_dirs()]


def test_the_manifest_default_is_planned_and_stored(cli: Cli, bench: Bench, seq_model: Path) -> None:
    r = cli("run", "-i", "null", "-m", "seqfake", "-b", "2", "--launcher", "local", *FAST)
    assert r.exit_code == 0, r.output
    [res] = [load_result(d / "result.json") for d in bench.run_dirs()]
    assert res.status == "ok", res.message
    assert res.spec.dims == {"seq": 8} and res.spec.sequence_dim == "seq"
    [m] = res.measurements
    assert m.tokens_per_s == pytest.approx(m.throughput_sps * 8)


def test_a_sweep_over_the_sequence_length_measures_each(cli: Cli, bench: Bench, seq_model: Path) -> None:
    r = cli(
        "run",
        "-i",
        "null",
        "-m",
        "seqfake",
        "-b",
        "1",
        "--sweep",
        "dim.seq=16,64",
        "--launcher",
        "local",
        *FAST,
    )
    assert r.exit_code == 0, r.output
    got = sorted(load_result(d / "result.json").spec.dims["seq"] for d in bench.run_dirs())
    assert got == [16, 64]
    for d in bench.run_dirs():
        res = load_result(d / "result.json")
        assert res.status == "ok", res.message
        [m] = res.measurements
        assert m.tokens_per_s == pytest.approx(m.throughput_sps * res.spec.dims["seq"])


@pytest.mark.parametrize(
    ("sets", "needles"),
    [
        (["--set", "dim.seq=0"], ["dim.seq=0", "from 1 to"]),
        (["--set", "dim.seq=abc"], ["not a whole number"]),
        (["--set", "dim.sq=16"], ["no dimension 'sq'", "did you mean 'seq'"]),
        (["--sweep", "dim.seq=16,0"], ["dim.seq=0"]),
    ],
)
def test_a_bad_dimension_is_one_line_and_nothing_runs(
    cli: Cli, bench: Bench, seq_model: Path, sets: list[str], needles: list[str]
) -> None:
    r = cli("run", "-i", "null", "-m", "seqfake", "--launcher", "local", *sets)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "hint" in lines[0], r.stderr
    for needle in needles:
        assert needle in lines[0]
    assert bench.run_dirs() == [] and bench.count("runs") == 0


def test_a_dimension_of_a_model_that_has_none(cli: Cli, bench: Bench, fake_model: Path) -> None:
    r = cli("run", "-i", "null", "-m", "fake", "--launcher", "local", "--set", "dim.seq=16")
    assert r.exit_code == 2
    assert "no dynamic dimension besides the batch" in r.stderr and "hint" in r.stderr
    assert bench.run_dirs() == []


def test_an_image_that_runs_savedmodels_is_unsupported_before_any_process(
    cli: Cli, bench: Bench, fake_model: Path
) -> None:
    """The tf image, given a model with no SavedModel (it came from an ONNX file), records the
    run as unsupported with the reason, without starting a runner."""
    r = cli("run", "-i", "tf", "-m", "fake", "--launcher", "local")
    assert r.exit_code != 2, r.output
    [folder] = bench.run_dirs()
    res = load_result(folder / "result.json")
    assert res.status == "unsupported" and "SavedModel" in (res.message or "")
    assert res.launch is not None and res.launch.launcher == "preflight"
    assert json.loads((folder / "spec.json").read_text())["image"] == "tf"
