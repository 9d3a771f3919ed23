"""The run pipeline: one owner for planning, launching and keeping.

`bench-ctl run` plans each configuration once and reads each model's manifest once, touches the
store twice (checked before measuring, one transaction after), and no command but the pipeline
plans a spec."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import Bench, Cli

REPO = Path(__file__).resolve().parents[1]
SHORT = ["--set", "policy.min_time_s=0.2", "--set", "policy.max_time_s=0.5", "--set", "policy.window_s=0.05"]


def test_run_plans_once_reads_manifests_once_and_opens_the_store_twice(
    cli: Cli, bench: Bench, fake_model: Path, null_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.catalog import models as model_store
    from controller.run import planning
    from controller.store import db
    from controller.store import file as storefile

    calls: dict[str, int] = {"plan": 0, "manifest": 0, "open": 0}

    def counted(name: str, real):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(planning, "plan", counted("plan", planning.plan))
    monkeypatch.setattr(model_store, "read_manifest", counted("manifest", model_store.read_manifest))
    db.ensure_store(bench.db)  # an existing store, as after the first command
    monkeypatch.setattr(storefile, "open_store", counted("open", storefile.open_store))
    result = cli("run", "--image", "null", "--model", "fake", "-b", "1,2", "--launcher", "local", *SHORT)
    assert result.exit_code == 0, result.stderr
    assert calls == {"plan": 1, "manifest": 1, "open": 2}


def test_repetitions_and_sweeps_plan_each_configuration_once(
    cli: Cli, bench: Bench, fake_model: Path, null_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.run import planning

    plans = 0
    real = planning.plan

    def counting(*args, **kwargs):
        nonlocal plans
        plans += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(planning, "plan", counting)
    args = ["run", "--image", "null", "--model", "fake", "-b", "1", "--launcher", "local", *SHORT]
    result = cli(*args, "--sweep", "work_us=0,10", "--repeat", "2", "--set", "policy.noisy_reruns=0")
    assert result.exit_code == 0, result.stderr
    assert plans == 2  # two configurations, four runs
    rows = bench.rows("SELECT count(*), count(DISTINCT run_id) FROM runs")
    assert rows == [(4, 4)]


def test_only_the_pipeline_plans_a_spec() -> None:
    """`planning.plan` is called from `planning.prepare` only: commands, rounds, sweeps, reruns,
    the fleet and co-location never plan a spec by themselves."""
    callers = []
    for path in sorted((REPO / "controller").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
                if name == "plan":
                    callers.append(path.relative_to(REPO).as_posix())
    assert callers == ["controller/run/planning.py"]
