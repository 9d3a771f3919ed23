"""The report's summary (the fastest configuration per model and batch size, its verdict against
the runner-up, its cost with a price per hour) and figure G (each tune search's trials), on
results whose truth is set by construction; a plan's price; bad input refused with nothing written."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.analysis import stats
from controller.analysis.figures import summary
from controller.analysis.figures.data import RunPoint, TuneTrial
from controller.store import db as store
from schemas import RunResult
from schemas.frameworks.null import NullOptions, null_landscape
from tests.conftest import Bench, Cli, MakeResult

GROUP = "20250101T000000Z-tune-abcdef"
RUNS = '\n[[runs]]\nimages = ["null"]\nmodels = ["fake"]\nbatch_sizes = [1]\n'


def _ingest(db: Path, results: list[RunResult]) -> None:
    with store.connect(db) as con:
        for r in results:
            store.ingest(con, r)


def _jitter(center: float, n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(center * (1 + 0.01 * z)) for z in rng.standard_normal(n)]


def _runs(make_result: MakeResult, image: str, scales: list[float], **kw: Any) -> list[RunResult]:
    return [make_result(image=image, scale=s, repetition=i, **kw) for i, s in enumerate(scales, 1)]


def _trial(make_result: MakeResult, knob_a: int, rep: int, group: str = GROUP) -> RunResult:
    """A run of a tune search over knob_a (knob_b fixed at 1, as --set would), its work the null
    landscape's: knob_a = 3 is the fastest of 0..3, knob_a = 0 the defaults."""
    r = make_result(image="null", scale=null_landscape(knob_a, 1) * (1 + 0.005 * rep), repetition=rep + 1)
    options = NullOptions(landscape=True, knob_a=knob_a, knob_b=1)
    return r.model_copy(update={"spec": r.spec.model_copy(update={"group": group, "options": options})})


def _point(image: str, value: float, noisy: bool = False, bs: int = 1) -> RunPoint:
    return RunPoint("m", image, "", "h", "cpu", bs, f"{image}-{value}", value, 1000 / value, 0.01, noisy,
                    "fp32", None, None)  # fmt: skip


def _page(out: Path) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", (out / "index.html").read_text())))


def _section(out: Path, anchor: str) -> str:
    page = (out / "index.html").read_text()
    start = page.index(f'<section id="{anchor}">')
    return page[start : page.index("</section>", start)]


# --------------------------------------------------------------------------- the summary


def test_the_fastest_configuration_is_called_faster_than_the_runner_up() -> None:
    """Truth: `fast` 1.25x `base`, `slow` 0.5x; the runner-up is `base`, by the comparison rule."""
    points = [_point("base", v) for v in _jitter(1000, 5, 1)] + [
        _point("fast", v) for v in _jitter(1250, 5, 2)
    ]
    points += [_point("slow", v) for v in _jitter(500, 5, 3)]
    [row] = summary.fastest(points, price_per_hour=3.6)
    assert (row.fastest, row.runner_up, row.configurations) == ("fast", "base", 3)
    assert row.verdict == "faster" and row.message.startswith("faster: ratio 1.2")
    fast = [p.throughput_sps for p in points if p.image == "fast"]
    assert row.throughput.value == pytest.approx(np.mean(fast)) and row.throughput.runs == 5
    assert row.throughput.low is not None and row.throughput.low < row.throughput.value
    # $3.6 an hour is $0.001 a second: a million inferences at 1250/s cost $0.8.
    assert row.cost is not None and row.cost.value == pytest.approx(np.mean([1000 / t for t in fast]))
    assert summary.fastest(points)[0].cost is None


def test_no_verdict_whose_interval_includes_one() -> None:
    """Every run of `a` above every run of `b` (the rank test's smallest p for 5 against 5), but one
    run of `b` far off: the ratio's interval includes 1, so no difference is called."""
    a, b = [10.0, 10.1, 10.2, 10.3, 10.4], [9.9, 9.95, 9.97, 9.98, 3.0]
    v = stats.verdict(a, b, True)
    assert v.p_value is not None and v.p_value < 0.05 and not stats.excludes_one(v.ratio)
    [row] = summary.fastest([_point("a", x) for x in a] + [_point("b", x) for x in b])
    assert row.fastest == "a" and row.verdict == "no significant difference"
    assert "interval includes 1" in row.message


def test_too_few_runs_or_noisy_ones_decide_nothing() -> None:
    [row] = summary.fastest(
        [_point("a", x) for x in (20, 20.1, 20.2)] + [_point("b", x) for x in (10, 10.1, 10.2)]
    )
    assert row.verdict == "insufficient data" and "at least 4" in row.message
    noisy = [_point("a", x, noisy=True) for x in (20, 20.1, 20.2, 20.3)] + [
        _point("b", x) for x in _jitter(10, 4, 1)
    ]
    [row] = summary.fastest(noisy)
    assert row.verdict == "no significant difference" and "noisy" in row.message
    [alone] = summary.fastest([_point("a", 5.0)])
    assert alone.runner_up is None and alone.verdict is None and alone.throughput.method == "batch-means"


def test_a_row_per_batch_size_and_host() -> None:
    points = [
        _point("a", 10.0, bs=1),
        _point("b", 20.0, bs=1),
        _point("a", 40.0, bs=8),
        _point("b", 30.0, bs=8),
    ]
    points.append(RunPoint("m", "c", "", "other", "cpu", 1, "x", 99.0, 1.0, None, False, None, None, None))
    rows = summary.fastest(points)
    assert [(r.host, r.point, r.fastest) for r in rows] == [
        ("h", "b1", "b"),
        ("h", "b8", "a"),
        ("other", "b1", "c"),
    ]


def test_the_report_opens_with_the_summary_and_its_cost(
    cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path
) -> None:
    _ingest(
        bench.db,
        _runs(make_result, "base", _jitter(1.0, 5, 1)) + _runs(make_result, "fast", _jitter(0.8, 5, 2)),
    )
    out = tmp_path / "report"
    r = cli("report", "--db", bench.db, "--out", out, "--price-per-hour", "3.6", "--json")
    assert r.exit_code == 0, r.output
    page = (out / "index.html").read_text()
    assert page.index('<section id="summary">') < page.index('<section id="a">')
    text = _page(out)
    assert "$ per 1M inferences at $3.6/h" in text
    rows = re.findall(r"<tr><td>fake</td>.*?</tr>", _section(out, "summary"))
    assert len(rows) == 2 and all("<b>fast</b>" in row and "faster: ratio" in row for row in rows)
    # The summary's SQL runs as it is in `bench-ctl query`, and its runs are the store's.
    sql = next(
        s
        for s in (html.unescape(x) for x in re.findall(r"<pre>(.*?)</pre>", page, re.S))
        if "within_run_ci_rel" in s
    )
    got = json.loads(cli("query", sql, "--db", bench.db, "--format", "json").stdout)
    assert len(got) == 20 and {g["image"] for g in got} == {"base", "fast"}
    # Its cost is compare's.
    cmp = json.loads(cli("compare", "-m", "fake", "--db", bench.db, "--metric", "cost_per_million",
                         "--price-per-hour", "3.6", "--host", "testhost", "--json").stdout)  # fmt: skip
    cost = cmp["rows"][0]["cells"]["fast"]["value"]
    assert f"{cost:.4g}" in rows[0]
    plain = tmp_path / "plain"
    assert cli("report", "--db", bench.db, "--out", plain).exit_code == 0
    assert "per 1M inferences" not in _page(plain)


def test_the_summary_names_energy_net_and_gross(
    cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path
) -> None:
    runs = []
    for r in _runs(make_result, "gpu", [1.0, 1.0]):
        ms = [
            m.model_copy(update={"energy_j_per_4096": 4096.0, "energy_j_per_4096_net": 2048.0})
            for m in r.measurements
        ]
        runs.append(r.model_copy(update={"measurements": ms}))
    _ingest(bench.db, runs)
    out = tmp_path / "report"
    assert cli("report", "--db", bench.db, "--out", out).exit_code == 0
    text = _page(out)
    assert "J per inference: net (idle power subtracted) / gross" in text and "0.5 / 1" in text
    assert "energy_j_per_4096_net" in _section(out, "c") and "gross" in _section(out, "c")


# --------------------------------------------------------------------------- figure G


def test_a_search_marks_its_defaults_best_and_front(make_result: MakeResult) -> None:
    """knob_a 0..3 at knob_b 1 (fixed, so not searched): the defaults are knob_a = 0 whatever
    knob_b is; the best is knob_a = 3; at one batch size the front is the best alone."""
    trials = []
    for a in range(4):
        for rep in range(3):
            r = _trial(make_result, a, rep)
            m = r.measurements[0]
            trials.append(TuneTrial("fake", "null", "", "h", "null", GROUP, 1, r.run_id,
                                    r.spec.options.model_dump_json(), m.throughput_sps, m.latency_mean_ms,
                                    a == 2 and rep == 0))  # fmt: skip
    [search] = summary.searches(trials)
    assert [c.label for c in search.candidates] == [
        f"null b1 knob_a={a}" if a else "null b1 defaults" for a in range(4)
    ]
    assert [c.is_default for c in search.candidates] == [True, False, False, False]
    assert [c.label for c in search.best] == ["null b1 knob_a=3"] and list(search.front) == list(search.best)
    # The noisy trial is left out of its candidate's means.
    two = search.candidates[2]
    assert two.throughput_sps == pytest.approx(np.mean([t.throughput_sps for t in two.trials if not t.noisy]))


def test_figure_g_draws_each_search(cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path) -> None:
    trials = [_trial(make_result, a, rep) for a in range(4) for rep in range(3)]
    trials += [_trial(make_result, a, 0, group="20250102T000000Z-tune-123456") for a in (0, 3)]
    _ingest(bench.db, [*trials, *_runs(make_result, "other", [1.0])])
    out = tmp_path / "report"
    r = cli("report", "--db", bench.db, "--out", out, "--json")
    assert r.exit_code == 0, r.output
    outcome = json.loads(r.stdout)
    assert "g_tune.png" in outcome["figures"] and "G" not in outcome["empty"]
    assert {"g_tune.png", "g_tune.svg"} <= set(json.loads((out / "bench-report.json").read_text())["files"])
    assert (out / "g_tune.svg").read_text().count("best: null b") == 2  # a star per search
    g = _section(out, "g")
    assert 'src="g_tune.png"' in g and "Candidates (12 rows)" in g and "Trials (28 rows)" in g
    assert "defaults" in g and "best, front" in g
    sql = next(html.unescape(s) for s in re.findall(r"<pre>(.*?)</pre>", g, re.S))
    got = json.loads(cli("query", sql, "--db", bench.db, "--format", "json").stdout)
    assert len(got) == 2 * 14 and {x["group_id"] for x in got} == {GROUP, "20250102T000000Z-tune-123456"}
    # A store without a search: G says how to make one.
    plain = tmp_path / "plain"
    other = tmp_path / "other.duckdb"
    _ingest(other, _runs(make_result, "other", [1.0]))
    r = cli("report", "--db", other, "--out", plain, "--json")
    assert r.exit_code == 0 and "G" in json.loads(r.stdout)["empty"]
    assert "No tune searches" in _page(plain) and not (plain / "g_tune.png").exists()


def _cell_of(knob_a: int) -> str:
    return f"{knob_a:08x}cafe"


def test_a_recorded_search_is_its_cells_and_its_answer_names_the_best(
    cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path
) -> None:
    """Two calls (group ids) of one search, the second going on from the first: with the
    search's record, G draws them as one search, its star on the candidate the answer names
    (knob_a = 1: a latency bound ruled out the faster ones, say), not the fastest; and the
    summary gives the question's newest answer."""
    trials = []
    for a in range(4):
        for rep in range(3):
            group = GROUP if rep < 2 else "20250102T000000Z-tune-fedcba"
            t = _trial(make_result, a, rep, group=group)
            trials.append(t.model_copy(update={"spec": t.spec.model_copy(update={"cell": _cell_of(a)})}))
    _ingest(bench.db, trials)
    best = {"label": "null b1 knob_a=1", "image": "null", "batch_size": 1, "options": {"knob_a": 1},
            "runs": 3, "mean": 123.4, "low": 120.0, "high": 126.8, "throughput_sps": 123.4,
            "latency_mean_ms": 8.1, "cell": _cell_of(1)}  # fmt: skip
    answer = {"images": [{"image": "null", "best": best}], "winner": best, "runner_up": None,
              "winner_verdict": None}  # fmt: skip
    with store.connect(bench.db) as con:
        for sid, when, ans in (("s-old", "2025-01-01", None), ("s-new", "2025-01-02", json.dumps(answer))):
            con.execute(
                "INSERT INTO searches VALUES (?, 'fake', 'testhost', ['null'], 'offline', 'throughput', "
                "'p99 <= 9 ms', 'latency_p99_ms', 9, [1], ?, '{}', ?, ?, NULL, ?, ?)",
                [sid, [_cell_of(a) for a in range(4)], when, when, best["label"] if ans else None, ans],
            )
    out = tmp_path / "report"
    r = cli("report", "--db", bench.db, "--out", out)
    assert r.exit_code == 0, r.output
    g = _section(out, "g")
    assert "Candidates (8 rows)" in g  # one search over both calls' trials (b1 and b8 each)
    rows = [html.unescape(re.sub(r"<[^>]+>", " ", row)) for row in re.findall(r"<tr>(.*?)</tr>", g, re.S)]
    candidates = [row for row in rows if "s-new" in row and ("defaults" in row or "knob_a=" in row)]
    assert len(candidates) == 8 and all("s-new" in row for row in candidates), candidates
    marked = [row for row in candidates if "best" in row]
    assert len(marked) == 1 and "knob_a=1" in marked[0], marked
    page = _page(out)
    assert "each question asked of bench-ctl tune" in page
    assert "offline, throughput, p99 <= 9 ms, b1 s-new null b1 knob_a=1 123.4 [120.0, 126.8] (n=3)" in page


def test_the_tune_group_mark_is_tunes() -> None:
    from controller.analysis.figures.data import TUNE_GROUP_MARK
    from controller.run import tune

    assert TUNE_GROUP_MARK == tune.TUNE_GROUP_MARK and TUNE_GROUP_MARK in tune.tune_group_id()


# --------------------------------------------------------------------------- the price


def test_a_plans_price_prices_the_report(
    cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path, fake_model: Path
) -> None:
    _ingest(bench.db, _runs(make_result, "base", [1.0, 1.0]))
    plan = tmp_path / "priced.toml"
    plan.write_text(f'name = "priced"\nprice_per_hour = 2.5\n{RUNS}')
    out = tmp_path / "report"
    r = cli("report", "--db", bench.db, "--out", out, "--plan", plan)
    assert r.exit_code == 0, r.output
    assert "$ per 1M inferences at $2.5/h" in _page(out)
    dry = cli("sweep", plan, "--dry-run")  # a sweep reads the priced plan as any other
    assert dry.exit_code == 0, dry.output


@pytest.mark.parametrize(
    ("args", "plan_text", "needle"),
    [
        (["--price-per-hour", "0"], None, "is not a price"),
        (["--price-per-hour", "nan"], None, "is not a price"),
        (["--price-per-hour", "2", "--plan", "PLAN"], "price_per_hour = 2\n", "both give a price"),
        (["--plan", "PLAN"], "", "has no price_per_hour"),
        (["--plan", "PLAN"], "price_per_hour = -1\n", "price_per_hour"),
        (["--plan", "PLAN"], "price_per_hour = inf\n", "price_per_hour"),
    ],
)
def test_a_bad_price_is_one_line_and_writes_nothing(
    cli: Cli,
    bench: Bench,
    make_result: MakeResult,
    tmp_path: Path,
    args: list[str],
    plan_text: str | None,
    needle: str,
) -> None:
    _ingest(bench.db, _runs(make_result, "base", [1.0]))
    plan = tmp_path / "plan.toml"
    if plan_text is not None:
        plan.write_text(
            f'name = "p"\n{plan_text}\n[[runs]]\nimages = ["null"]\nmodels = ["fake"]\nbatch_sizes = [1]\n'
        )
    out = tmp_path / "report"
    r = cli("report", "--db", bench.db, "--out", out, *[str(plan) if a == "PLAN" else a for a in args])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and needle in lines[0] and "hint" in lines[0], r.output
    assert not out.exists()
