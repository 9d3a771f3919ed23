"""Input rules live on the request models: `run`, `sweep` and a plan file refuse the same bad
input with the same words (only the place named before them differs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Bench, Cli

CASES = [
    ("0", "batch sizes go from 1 to 65536, not 0"),
    ("1,1", "batch size 1 is given twice"),
    ("99999999", "batch sizes go from 1 to 65536, not 99999999"),
]


@pytest.mark.parametrize(("sizes", "words"), CASES)
def test_run_and_a_plan_refuse_a_bad_batch_size_in_the_same_words(
    cli: Cli, bench: Bench, fake_model: Path, tmp_path: Path, sizes: str, words: str
) -> None:
    by_run = cli("run", "--image", "null", "--model", "fake", "-b", sizes)
    plan = tmp_path / "bad.toml"
    plan.write_text(
        f"name = 'bad'\n[[runs]]\nimages = ['null']\nmodels = ['fake']\nbatch_sizes = [{sizes}]\n"
    )
    by_sweep = cli("sweep", str(plan), "--dry-run")
    for result in (by_run, by_sweep):
        assert result.exit_code == 2
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and words in lines[0] and "hint:" in lines[0], result.stderr
    assert not bench.db.exists()


def test_the_request_model_holds_the_rules() -> None:
    from pydantic import ValidationError

    from controller.run.request import RunRequest

    with pytest.raises(ValidationError, match="not 0"):
        RunRequest(image="null", model="fake", batch_sizes=[0])
    with pytest.raises(ValidationError, match="at most 604,800"):
        RunRequest(image="null", model="fake", batch_sizes=[1], timeout_s=float("inf"))
    with pytest.raises(ValidationError, match="GPU index"):
        RunRequest(image="null", model="fake", batch_sizes=[1], device="cuda:-1")
