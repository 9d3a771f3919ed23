"""Generated bad input: every case is refused the same way, whatever it is.

For the CLI: exit 2, one line on stderr with a hint, no traceback, no run folder, no row. For a
runner spec: exit 2 and nothing written. For a result file: skipped with its reason, nothing stored.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import Result

from controller.run import planning
from controller.store import ingest as ingestion
from runners import harness
from schemas import MeasurementPolicy
from tests.conftest import Bench, Cli, result_factory, write_fake_model

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
VALID_SIZES = re.compile(r"[0-9]{1,9}(,[0-9]{1,9})*")

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


def refused(result: Result, bench: Bench) -> None:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and "(hint: " in lines[0], result.stderr
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert bench.run_dirs() == [] and bench.count("runs") == 0


@pytest.fixture
def fake(bench: Bench) -> Path:
    return write_fake_model(bench.models / "fake")


@SETTINGS
@given(sizes=st.text(max_size=12))
def test_batch_sizes(cli: Cli, bench: Bench, fake: Path, sizes: str) -> None:
    good = VALID_SIZES.fullmatch(sizes) and all(1 <= int(x) <= 65536 for x in sizes.split(","))
    assume(not good or len(set(sizes.split(","))) != len(sizes.split(",")))
    assume(not sizes.startswith("-"))  # read as an option by the parser: a usage error, tested elsewhere
    refused(cli("run", "-i", "null", "-m", "fake", "--launcher", "local", "-b", sizes), bench)


POLICY_FLOATS = ["min_time_s", "max_time_s", "window_s", "tolerance", "warmup_min_s"]


@SETTINGS
@given(key=st.sampled_from(POLICY_FLOATS), value=st.text(max_size=10))
def test_policy_values(cli: Cli, bench: Bench, fake: Path, key: str, value: str) -> None:
    try:
        MeasurementPolicy.model_validate({key: value})
        good = True
    except ValidationError:
        good = False
    assume(not good and value.strip().lower() not in planning.NONE_WORDS)
    result = cli("run", "-i", "null", "-m", "fake", "--launcher", "local", "--set", f"policy.{key}={value}")
    refused(result, bench)


@SETTINGS
@given(key=st.text(min_size=1, max_size=12), value=st.text(max_size=8))
def test_unknown_options(cli: Cli, bench: Bench, fake: Path, key: str, value: str) -> None:
    assume(key.strip() not in ("work_us", "fault") and "=" not in key and not key.startswith("-"))
    assume(not key.strip().startswith("policy."))
    result = cli("run", "-i", "null", "-m", "fake", "--launcher", "local", "--set", f"{key}={value}")
    refused(result, bench)


@SETTINGS
@given(name=st.text(max_size=70))
def test_model_names(cli: Cli, bench: Bench, name: str) -> None:
    assume(not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", name) and not name.startswith("-"))
    refused(cli("run", "-i", "null", "-m", name, "--launcher", "local"), bench)


def _spec_doc(model: Path) -> dict[str, Any]:
    return {
        "run_id": "20250101T000000Z-null-fake-0abc12",
        "image": "null",
        "model": "fake",
        "model_dir": str(model),
        "cache_dir": str(model.parent / "cache"),
        "batch_sizes": [1],
        "policy": {"min_time_s": 0.1, "max_time_s": 0.2},
        "options": {"framework": "null"},
    }


def _mutate(doc: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(doc))
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


SPEC_PATHS = [
    ["run_id"],
    ["image"],
    ["model"],
    ["device"],
    ["batch_sizes"],
    ["policy", "min_time_s"],
    ["policy", "max_time_s"],
    ["policy", "tolerance"],
    ["options", "framework"],
    ["options", "work_us"],
    ["options", "fault"],
    ["schema_version"],
    ["members"],
    ["unexpected"],
]


@SETTINGS
@given(path=st.sampled_from(SPEC_PATHS), value=JSON_VALUES)
def test_runner_spec_is_valid_or_exit_2(path: list[str], value: Any) -> None:
    """The entrypoint either accepts a spec or refuses it with exit 2, writing nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = write_fake_model(root / "fake")
        spec = root / "spec.json"
        text = json.dumps(_mutate(_spec_doc(model), path, value), allow_nan=True)
        spec.write_text(text)
        try:
            harness.read_spec(spec)
        except harness.SpecError:
            (root / "out").mkdir()
            code = harness.main(["--spec", str(spec), "--out", str(root / "out" / "result.json")])
            assert code == 2
            assert list((root / "out").iterdir()) == []


RESULT_PATHS = [
    ["status"],
    ["run_id"],
    ["started_at"],
    ["framework"],
    ["schema_version"],
    ["measurements"],
    ["peak_host_mem_mb"],
    ["accuracy"],
    ["spec", "batch_sizes"],
    ["spec", "options"],
    ["extra_field"],
]


@SETTINGS
@given(path=st.sampled_from(RESULT_PATHS), value=JSON_VALUES)
def test_result_files_are_stored_or_skipped(bench: Bench, path: list[str], value: Any) -> None:
    """A result file is stored whole, or reported and skipped; never a crash, never half a run."""
    doc = json.loads(result_factory()().model_dump_json())
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "result.json"
        f.write_text(json.dumps(_mutate(doc, path, value), allow_nan=True))
        report = ingestion.ingest_paths([f], bench.db)
    assert len(report.ingested) + len(report.failed) == 1
    if report.failed:
        assert all(why and "\n" not in why for why in report.failed.values())
    half = bench.rows(
        "SELECT count(*) FROM runs r WHERE status = 'ok' AND NOT EXISTS "
        "(SELECT 1 FROM measurements m WHERE m.run_id = r.run_id)"
    )
    assert not half or half[0][0] == 0
