"""Cost per million inferences and energy per inference: `compare --metric cost_per_million
--price-per-hour X` (price / 3600 / samples per second x 1e6, lower is better), the energy columns
named gross and net, a plan's price; checked against values computed from the stored runs."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.analysis import metrics
from controller.store import db as store
from schemas import RunResult
from tests.conftest import TUNE_ONE_NULL, Bench, Cli, MakeResult

HERE = socket.gethostname()


def _store(db: Path, results: list[RunResult]) -> None:
    with store.connect(db) as con:
        for r in results:
            store.ingest(con, r)


def _runs(make_result: MakeResult, image: str, scales: list[float], **kw: Any) -> list[RunResult]:
    return [make_result(image=image, scale=s, host=HERE, repetition=i, **kw) for i, s in enumerate(scales, 1)]


def _jitter(center: float, n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(center * (1 + 0.01 * z)) for z in rng.standard_normal(n)]


def _text(cli: Cli, *args: str) -> str:
    """compare's table, its words joined (a title wraps to the table's width)."""
    r = cli("compare", "-m", "fake", *args, env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    return " ".join(r.stdout.split())


def _with_energy(result: RunResult, gross: float, net: float) -> RunResult:
    ms = [
        m.model_copy(update={"energy_j_per_4096": gross, "energy_j_per_4096_net": net})
        for m in result.measurements
    ]
    return result.model_copy(update={"measurements": ms})


def test_cost_per_million_is_each_runs_price_over_its_throughput(
    cli: Cli, bench: Bench, make_result: MakeResult
) -> None:
    """Truth: `fast` takes 0.8x the time, so it costs 0.8x per inference: lower, called faster
    (better) by the comparison rule; a cell is the mean of its runs' own costs."""
    _store(
        bench.db,
        _runs(make_result, "base", _jitter(1.0, 5, 1)) + _runs(make_result, "fast", _jitter(0.8, 5, 2)),
    )
    r = cli("compare", "-m", "fake", "--metric", "cost_per_million", "--price-per-hour", "2.5",
            "--baseline", "base", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["higher_is_better"] is False and doc["price_per_hour"] == 2.5
    _, rows = store.query(
        bench.db,
        "SELECT image, batch_size, throughput_sps FROM results WHERE status = 'ok' ORDER BY started_at",
    )
    for row in doc["rows"]:
        for image in ("base", "fast"):
            costs = [2.5 / 3600 / t * 1e6 for i, bs, t in rows if i == image and bs == row["batch_size"]]
            cell = row["cells"][image]
            assert cell["runs"] == 5 and cell["value"] == pytest.approx(sum(costs) / 5, rel=1e-9)
            assert cell["low"] < cell["value"] < cell["high"]
        v = row["verdicts"]["fast"]
        assert v["verdict"] == "faster" and v["ratio_low"] < 0.8 < v["ratio_high"] < 1
    text = _text(cli, "--metric", "cost_per_million", "--price-per-hour", "2.5")
    assert "$ per 1M inferences at $2.5/h" in text and "lower is better" in text


def test_one_runs_cost_has_its_within_run_interval(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    """A cost is in proportion to the mean iteration time: one run's interval is that time's."""
    _store(bench.db, _runs(make_result, "once", [1.0], within_rel=0.02))
    r = cli("compare", "-m", "fake", "--metric", "cost_per_million", "--price-per-hour", "1", "--json")
    cell = json.loads(r.stdout)["rows"][0]["cells"]["once"]
    assert cell["method"] == "batch-means"
    assert (cell["low"], cell["high"]) == pytest.approx((cell["value"] * 0.98, cell["value"] * 1.02))
    assert metrics.cost_per_million(3.6, 1000.0) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--metric", "cost_per_million"], "needs the host's price"),
        (["--price-per-hour", "2"], "prices one metric"),
        (["--metric", "cost_per_million", "--price-per-hour", "0"], "is not a price"),
        (["--metric", "cost_per_million", "--price-per-hour", "-1"], "is not a price"),
        (["--metric", "cost_per_million", "--price-per-hour", "inf"], "is not a price"),
        (["--metric", "energy_j_per_4096_net"], "with energy_j_per_4096_net"),
    ],
)
def test_bad_cost_input_is_one_line(
    cli: Cli, bench: Bench, make_result: MakeResult, args: list[str], needle: str
) -> None:
    _store(bench.db, _runs(make_result, "base", [1.0]))
    r = cli("compare", "-m", "fake", *args)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and needle in lines[0] and "hint" in lines[0], r.stderr


def test_energy_compares_gross_and_net_by_name(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    """Gross (idle power included) and net (subtracted) are two metrics, each named as such."""
    runs = [_with_energy(r, 40.0 + i, 10.0 + i) for i, r in enumerate(_runs(make_result, "gpu", [1.0] * 4))]
    _store(bench.db, runs)
    for metric, mean in (("energy_j_per_4096", 41.5), ("energy_j_per_4096_net", 11.5)):
        doc = json.loads(cli("compare", "-m", "fake", "--metric", metric, "--json").stdout)
        assert doc["higher_is_better"] is False
        assert doc["rows"][0]["cells"]["gpu"]["value"] == pytest.approx(mean)
    assert "net (idle power subtracted)" in _text(cli, "--metric", "energy_j_per_4096_net")
    assert "gross (idle power included)" in _text(cli, "--metric", "energy_j_per_4096")


# --------------------------------------------------------------------------- tune


def test_tune_prices_each_images_best_and_defaults(cli: Cli, bench: Bench, fake_model: Path) -> None:
    """One candidate (both knobs fixed): its five trials are real null runs; the answer's cost is
    the price over the mean throughput the answer gives."""
    args = list(TUNE_ONE_NULL)
    args += [
        "--set",
        "policy.min_time_s=0.2",
        "--set",
        "policy.max_time_s=0.4",
        "--set",
        "policy.warmup_min_s=0.05",
    ]
    r = cli(*args, "--price-per-hour", "7.2", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    [im] = doc["images"]
    assert doc["price_per_hour"] == 7.2
    for f in (im["best"], im["default"], doc["winner"], *doc["pareto"]):
        assert f["cost_per_million"] == pytest.approx(7.2 / 3600 / f["throughput_sps"] * 1e6)
    text = cli(*args, "--price-per-hour", "7.2", env={"COLUMNS": "200"})  # the trials are stored: no run
    assert text.exit_code == 0 and "$ per 1M inferences at $7.2/h" in text.stdout
    assert f"null: best ${im['best']['cost_per_million']:.4g}, defaults $" in text.stdout
    plain = json.loads(cli(*args, "--json").stdout)
    assert plain["price_per_hour"] is None and plain["images"][0]["best"]["cost_per_million"] is None


@pytest.mark.parametrize("price", ["0", "-2", "nan"])
def test_tune_refuses_a_price_that_is_not_one(cli: Cli, bench: Bench, fake_model: Path, price: str) -> None:
    r = cli("tune", "-m", "fake", "-i", "null", "--launcher", "local", "--price-per-hour", price)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "is not a price" in lines[0] and "hint" in lines[0]
    assert bench.run_dirs() == [] and bench.count("runs") == 0
