"""`--set IMAGE:KEY=VALUE` sets an option for one image of a multi-image command (and a plan's
`set`/`sweep` tables take the same keys); a prefix naming an image the command does not run is
one line with a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.errors import BenchError
from controller.paths import Paths
from controller.run import planning
from controller.run.request import RunRequest
from tests.conftest import Bench, Cli


def test_each_image_gets_its_own_options(bench: Bench, fake_model: Path) -> None:
    req = RunRequest(
        image="null,ort",
        model="fake",
        batch_sizes=[1],
        sets=["null:work_us=100", "ort:intra_op_threads=1", "policy.max_time_s=2"],
        sweeps=["null:tag=a,b"],
    )
    planned = planning.prepare(req, Paths.from_env())
    by_image: dict[str, list[dict[str, object]]] = {}
    for p in planned:
        by_image.setdefault(p.image.name, []).append(p.spec.options.model_dump())
    assert [o["work_us"] for o in by_image["null"]] == [100.0, 100.0]
    assert sorted(str(o["tag"]) for o in by_image["null"]) == ["a", "b"]
    assert [o["intra_op_threads"] for o in by_image["ort"]] == [1]
    assert all(p.spec.policy.max_time_s == 2 for p in planned)


def test_an_option_without_a_prefix_still_goes_to_every_image(bench: Bench, fake_model: Path) -> None:
    with pytest.raises(BenchError, match="unknown option 'work_us' for onnxruntime"):
        planning.prepare(
            RunRequest(image="null,ort", model="fake", batch_sizes=[1], sets=["work_us=100"]),
            Paths.from_env(),
        )


def test_a_prefix_naming_another_image_is_refused(cli: Cli, bench: Bench, fake_model: Path) -> None:
    r = cli("run", "-i", "null", "-m", "fake", "--launcher", "local", "--set", "ort:intra_op_threads=1")
    assert r.exit_code == 2
    assert "names image 'ort'" in r.stderr and "hint" in r.stderr
    assert bench.run_dirs() == []


def test_a_plan_sets_an_option_for_one_image(
    cli: Cli, bench: Bench, fake_model: Path, tmp_path: Path
) -> None:
    plan = tmp_path / "p.toml"
    plan.write_text(
        'name = "p"\n[[runs]]\nimages = ["null", "ort"]\nmodels = ["fake"]\nbatch_sizes = [1]\n'
        'set = { "null:work_us" = 50, "ort:intra_op_threads" = 1 }\n'
    )
    r = cli("sweep", str(plan), "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    bad = tmp_path / "bad.toml"
    bad.write_text(plan.read_text().replace('"ort:intra_op_threads"', '"tf:threads"'))
    r = cli("sweep", str(bad), "--dry-run")
    assert r.exit_code == 2 and "names image 'tf'" in r.stderr
