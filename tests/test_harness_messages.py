"""Failure messages stored in results: short, on one line, saying what failed."""

from __future__ import annotations

from pathlib import Path

from runners.harness import _error_message
from tests.conftest import Bench, Cli


def test_framework_boilerplate_lines_are_dropped() -> None:
    e = RuntimeError(
        "Exception from src/inference/src/cpp/core.cpp:84:\n"
        "Check 'm_model->ParseFromIstream(&model_file)' failed at src/frontends/onnx/graph.cpp:563:\n"
        "FrontEnd API failed with GeneralFailure:\n"
        "Model can't be parsed\n"
    )
    assert (
        _error_message(e) == "RuntimeError: FrontEnd API failed with GeneralFailure: / Model can't be parsed"
    )


def test_plain_messages_keep_their_text_and_type() -> None:
    assert _error_message(ValueError("bad shape")) == "ValueError: bad shape"
    assert _error_message(KeyError()) == "KeyError"
    assert "\n" not in _error_message(RuntimeError("a\nb\nc\nd"))
    assert len(_error_message(RuntimeError("x" * 5000))) <= 2000


def test_runner_traceback_stays_in_the_log(cli: Cli, bench: Bench, fake_model: Path, null_env: Path) -> None:
    result = cli("run", "-i", "null", "-m", "fake", "-b", "1", "--launcher", "local", "--set", "fault=raise")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "injected framework failure" in result.stdout
    run_dir = bench.run_dirs()[0]
    assert "Traceback" in (run_dir / "runner.log").read_text()
    assert f"runner log: {run_dir}/runner.log" in result.stdout.replace("\n", "")
