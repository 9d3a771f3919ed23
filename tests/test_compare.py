"""`compare` and the `summary` view over repeated runs, checked against known truths.

Synthetic results have throughputs set by construction: a configuration 25 % faster must be
called faster with the true ratio inside its interval; two identical ones must not differ; one run
must say it is one run; hosts are never mixed.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.analysis import stats
from controller.store import db as store
from tests.conftest import Bench, Cli, MakeResult

HERE = socket.gethostname()


def _store(
    db: Path, make_result: MakeResult, image: str, scales: list[float], host: str = HERE, **kw: Any
) -> None:
    with store.connect(db) as con:
        for i, scale in enumerate(scales, 1):
            store.ingest(con, make_result(image=image, scale=scale, host=host, repetition=i, **kw))


def _jitter(center: float, n: int, seed: int, cv: float = 0.01) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(center * (1 + cv * z)) for z in rng.standard_normal(n)]


def _compare(cli: Cli, *args: str) -> dict[str, Any]:
    result = cli("compare", "--model", "fake", "--json", *args)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def test_a_faster_configuration_is_called_faster(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    _store(bench.db, make_result, "base", _jitter(1.0, 5, 1))
    _store(bench.db, make_result, "fast", _jitter(0.8, 5, 2))  # 0.8x the time: 1.25x the throughput
    doc = _compare(cli, "--baseline", "base")
    assert doc["labels"] == ["base", "fast"] and doc["hosts"] == [HERE]
    for row in doc["rows"]:
        v = row["verdicts"]["fast"]
        assert v["verdict"] == "faster", v["message"]
        assert v["ratio_low"] < 1.25 < v["ratio_high"]
        assert "base" not in row["verdicts"]
        cell = row["cells"]["fast"]
        assert cell["runs"] == 5 and cell["method"] == "t" and cell["low"] < cell["value"] < cell["high"]
    slower = _compare(cli, "--baseline", "fast")
    assert all(row["verdicts"]["base"]["verdict"] == "slower" for row in slower["rows"])
    latency = _compare(cli, "--baseline", "base", "--metric", "latency_p50_ms")
    assert all(row["verdicts"]["fast"]["verdict"] == "faster" for row in latency["rows"])


def test_identical_configurations_do_not_differ(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    _store(bench.db, make_result, "aaa", _jitter(1.0, 6, 3))
    _store(bench.db, make_result, "bbb", _jitter(1.0, 6, 4))
    doc = _compare(cli, "--baseline", "aaa")
    assert all(row["verdicts"]["bbb"]["verdict"] == "no significant difference" for row in doc["rows"])


def test_three_runs_are_not_enough_for_a_verdict(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    _store(bench.db, make_result, "base", [1.0, 1.01, 0.99])
    _store(bench.db, make_result, "fast", [0.5, 0.51, 0.49])
    doc = _compare(cli, "--baseline", "base")
    v = doc["rows"][0]["verdicts"]["fast"]
    assert v["verdict"] == "insufficient data" and "at least 4" in v["message"]


def test_one_run_says_so(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    _store(bench.db, make_result, "once", [1.0], within_rel=0.02)
    _store(bench.db, make_result, "bare", [1.0])
    doc = _compare(cli)
    once, bare = doc["rows"][0]["cells"]["once"], doc["rows"][0]["cells"]["bare"]
    assert once["runs"] == 1 and once["method"] == "batch-means"
    assert once["low"] == pytest.approx(once["value"] / 1.02) and once["high"] == pytest.approx(
        once["value"] / 0.98
    )
    assert bare["method"] == "none" and bare["low"] is None
    text = cli("compare", "--model", "fake", env={"COLUMNS": "200"}).stdout
    assert "1 run: within-run interval" in text and "1 run: no interval" in text


def test_summary_view_agrees_with_compare(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    scales = _jitter(1.0, 5, 7, cv=0.03)
    _store(bench.db, make_result, "base", scales)
    doc = _compare(cli)
    _, rows = store.query(
        bench.db,
        "SELECT batch_size, repetitions, throughput_sps, throughput_ci_low, throughput_ci_high, ci_method, "
        "cv, latency_p50_ci_low FROM summary WHERE image = 'base' ORDER BY batch_size",
    )
    assert len(rows) == len(doc["rows"]) == 2
    for (bs, n, mean, low, high, method, cv, p50_low), row in zip(rows, doc["rows"], strict=True):
        cell = row["cells"]["base"]
        assert (bs, n, method) == (row["batch_size"], 5, "t")
        assert (mean, low, high) == pytest.approx((cell["value"], cell["low"], cell["high"]), rel=1e-9)
        assert p50_low is not None and cv == pytest.approx(stats.cv([1 / s for s in scales]), rel=1e-4)


def test_hosts_are_never_mixed(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    _store(bench.db, make_result, "base", [1.0, 1.0], host="elsewhere")
    r = cli("compare", "--model", "fake")
    assert r.exit_code == 2 and "elsewhere" in r.stderr and "--across-hosts" in r.stderr
    _store(bench.db, make_result, "base", [0.5, 0.5])
    doc = _compare(cli)
    assert doc["hosts"] == [HERE] and doc["rows"][0]["cells"]["base"]["runs"] == 2
    doc = _compare(cli, "--host", "elsewhere")
    assert doc["hosts"] == ["elsewhere"]
    doc = _compare(cli, "--across-hosts")  # two hosts: each configuration on both, new/old
    assert (doc["old_host"], doc["new_host"]) == ("elsewhere", HERE)
    _store(bench.db, make_result, "base", [0.7, 0.7], host="third")
    doc = _compare(cli, "--across-hosts")  # more: one column per configuration and host
    assert doc["labels"] == [f"base on {h}" for h in sorted(["elsewhere", "third", HERE])]
    r = cli("compare", "--model", "fake", "--host", "nowhere")
    assert r.exit_code == 2 and "nowhere" in r.stderr and "hint" in r.stderr


def test_new_hardware_against_old_host_by_host(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    """Truth: the new host's iterations take half the time (scale 0.5), so throughput new/old is 2,
    called faster; a configuration only one host measured shows as such."""
    _store(bench.db, make_result, "ort", _jitter(1.0, 5, seed=1), host="old-node")
    _store(bench.db, make_result, "ort", _jitter(0.5, 5, seed=2), host="new-node")
    _store(bench.db, make_result, "openvino", [1.0, 1.0], host="new-node")
    doc = _compare(cli, "--hosts", "old-node,new-node")
    rows = {(r["label"], r["batch_size"]): r for r in doc["rows"]}
    for bs in (1, 2):
        v = rows[("ort", bs)]["verdict"]
        assert v["verdict"] == "faster" and v["ratio"] == pytest.approx(2.0, rel=0.03)
        assert v["ratio_low"] < 2.0 < v["ratio_high"]
        assert rows[("openvino", bs)]["old"] is None and rows[("openvino", bs)]["verdict"] is None
    text = cli("compare", "--model", "fake", "--hosts", "old-node,new-node")
    assert text.exit_code == 0 and "new/old" in text.stdout and "not measured" in text.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["compare", "--model", "fake", "--baseline", "nosuch"],
        ["compare", "--model", "fake", "--host", "h", "--across-hosts"],
        ["compare", "--model", "fake", "--hosts", "a"],
        ["compare", "--model", "fake", "--hosts", f"{HERE},nowhere"],
        ["compare", "--model", "fake", "--hosts", f"{HERE},{HERE}"],
        ["compare", "--model", "fake", "--hosts", "a,b", "--across-hosts"],
    ],
)
def test_compare_bad_input(cli: Cli, bench: Bench, make_result: MakeResult, args: list[str]) -> None:
    _store(bench.db, make_result, "base", [1.0])
    r = cli(*args)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "hint" in lines[0]


@pytest.mark.parametrize(
    "extra",
    [
        ["--repeat", "0"],
        ["--repeat", "x"],
        ["--set", "policy.target_ci=-1"],
        ["--set", "policy.target_ci=1.5"],
        ["--repeat", "3", "--set", "policy.repetitions=2"],
        ["--image", "null,null"],
    ],
)
def test_run_bad_repetition_input(cli: Cli, bench: Bench, fake_model: Path, extra: list[str]) -> None:
    args = ["run", "--model", "fake", "--launcher", "local", "-b", "1"]
    if "--image" not in extra:
        args += ["--image", "null"]
    r = cli(*args, *extra)
    assert r.exit_code == 2, r.output
    assert bench.run_dirs() == [] and bench.count("runs") == 0


def test_two_builds_of_an_image_are_never_pooled(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    """Truth: the image rebuilt from a new lock (framework 2.0) runs in half the time. A
    configuration shows only the newest build's runs (throughput 2x the old build's, which the
    summary view keeps as its own group) and says what it left out; a batch size only the old build
    measured is not mixed in."""
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    with store.connect(bench.db) as con:
        for i in range(5):
            for lock, version, scale, day in (("old", "1.0", 1.0, 0), ("new", "2.0", 0.5, 1)):
                store.ingest(
                    con,
                    make_result(
                        image="ort", scale=scale, host=HERE, lock_hash=lock, framework_version=version,
                        started_at=t0 + timedelta(days=day, minutes=i),
                        batch_sizes=(1, 2, 4) if lock == "old" else (1, 2),
                    ),
                )  # fmt: skip
    doc = _compare(cli)
    assert [row["batch_size"] for row in doc["rows"]] == [1, 2]
    _, groups = store.query(
        bench.db, "SELECT lock_hash, throughput_sps FROM summary WHERE batch_size = 1 ORDER BY lock_hash"
    )
    (new, new_sps), (old, old_sps) = groups
    assert (new, old) == ("new", "old") and new_sps == pytest.approx(2 * old_sps, rel=0.05)
    cell = doc["rows"][0]["cells"]["ort"]
    assert cell["runs"] == 5 and cell["value"] == pytest.approx(new_sps, rel=1e-9)
    assert doc["left_out"] == [
        f"5 run(s) of ort on {HERE} from an earlier build (null 1.0) left out: a configuration shows "
        "the newest build that measured it (the others stay in `results`)"
    ]
    text = cli("compare", "--model", "fake", env={"COLUMNS": "200"}).stdout
    assert "from an earlier build (null 1.0) left out" in text
    # The report draws the same: one point per batch size, the new build's.
    from controller.analysis.figures.data import memory_sql, throughput_sql
    from controller.analysis.figures.selection import Selection

    for where in (None, "batch_size <= 4"):
        _, points = store.query(bench.db, throughput_sql(Selection(where=where)))
        assert [(p[4], p[5]) for p in points] == [(1, 5), (2, 5)]  # batch size, runs
        assert points[0][6] == pytest.approx(new_sps, rel=1e-9)
    _, selected = store.query(
        bench.db, memory_sql(Selection()).replace("ensemble_members IS NOT NULL", "true")
    )
    assert [p[4] for p in selected] == [1, 2] and all(p[5] == 5 for p in selected)


def test_builds_newest_against_the_one_before(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    """Truth: three builds of ort; build 2 (framework 2.0) takes the time of build 1, build 3
    (3.0) half of it. `--builds ort` puts build 3 against build 2: faster, with the true ratio 2
    inside the interval; build 1 is named as left out. Another image's builds are not involved."""
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    with store.connect(bench.db) as con:
        for day, (lock, version, center) in enumerate(
            (("l1", "1.0", 1.0), ("l2", "2.0", 1.0), ("l3", "3.0", 0.5))
        ):
            for i, scale in enumerate(_jitter(center, 5, seed=day)):
                store.ingest(
                    con,
                    make_result(
                        image="ort", scale=scale, host=HERE, lock_hash=lock, framework_version=version,
                        started_at=t0 + timedelta(days=day, minutes=i),
                    ),
                )  # fmt: skip
        store.ingest(con, make_result(image="openvino", host=HERE, lock_hash="o1", started_at=t0))
    doc = _compare(cli, "--builds", "ort")
    assert (doc["image"], doc["host"]) == ("ort", HERE)
    assert doc["old_build"] == "null 2.0, lock l2" and doc["new_build"] == "null 3.0, lock l3"
    assert doc["left_out"] == ["earlier build left out: null 1.0, lock l1"]
    assert [(r["label"], r["batch_size"]) for r in doc["rows"]] == [("ort", 1), ("ort", 2)]
    for row in doc["rows"]:
        v = row["verdict"]
        assert v["verdict"] == "faster" and v["ratio_low"] < 2.0 < v["ratio_high"], v
        assert row["old"]["runs"] == row["new"]["runs"] == 5
    text = cli("compare", "--model", "fake", "--builds", "ort", env={"COLUMNS": "200"}).stdout
    assert "two builds of ort" in text and "faster" in text and "old: null 2.0, lock l2" in text
    one = cli("compare", "--model", "fake", "--builds", "openvino")
    assert one.exit_code == 2 and "one build of openvino" in one.stderr and "make locks" in one.stderr
    typo = cli("compare", "--model", "fake", "--builds", "ortt")
    assert typo.exit_code == 2 and "did you mean 'ort'" in typo.stderr
    both = cli("compare", "--model", "fake", "--builds", "ort", "--baseline", "ort")
    assert both.exit_code == 2 and "--builds compares two builds" in both.stderr


def _noisy_store(
    db: Path, make_result: MakeResult, image: str, scales: list[float], noisy: list[bool]
) -> None:
    """Runs as `_store` makes them, those flagged in `noisy` measured while other load starved the
    runner (their throughput 10 % lower, as such runs' is)."""
    with store.connect(db) as con:
        for i, (scale, flag) in enumerate(zip(scales, noisy, strict=True), 1):
            r = make_result(image=image, scale=scale * (1.1 if flag else 1.0), host=HERE, repetition=i)
            update = {"noisy": flag, "other_cpu_cores": 1.4 if flag else 0.05}
            store.ingest(
                con,
                r.model_copy(update={"measurements": [m.model_copy(update=update) for m in r.measurements]}),
            )


def test_noisy_runs_give_no_verdict(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    """Truth: `fast` takes 0.8 of the time, but 8 of the 10 runs are noisy: one clean run of each
    cannot decide, and the comparison says why instead of judging noise; --include-noisy judges
    every run (the noisy ones 10 % slower, which here still leaves fast ahead)."""
    flags = [True, True, False, True, True]
    _noisy_store(bench.db, make_result, "base", _jitter(1.0, 5, 1), flags)
    _noisy_store(bench.db, make_result, "fast", _jitter(0.8, 5, 2), flags)
    doc = _compare(cli, "--baseline", "base")
    for row in doc["rows"]:
        v = row["verdicts"]["fast"]
        assert v["verdict"] == "no significant difference" and v["note"] == "8 of 10 runs noisy", v
        assert v["p_value"] is None and "--include-noisy" in v["message"]
        cell = row["cells"]["base"]
        assert cell["runs"] == 1 and cell["noisy_left_out"] == 4 and not cell["noisy"]
    text = cli("compare", "--model", "fake", "--baseline", "base", env={"COLUMNS": "200"}).stdout
    assert "n.s.: 8 of 10 runs noisy" in text and "(4 noisy left out)" in text
    assert "--include-noisy counts them" in text
    judged = _compare(cli, "--baseline", "base", "--include-noisy")
    for row in judged["rows"]:
        assert row["verdicts"]["fast"]["verdict"] == "faster" and row["verdicts"]["fast"]["note"] is None
        assert row["cells"]["base"]["runs"] == 5 and row["cells"]["base"]["noisy"]


def test_clean_runs_decide_and_noisy_ones_are_left_out(
    cli: Cli, bench: Bench, make_result: MakeResult
) -> None:
    """Truth: `fast` is 1.25x the throughput. Five clean runs of each decide; the sixth run of
    `base`, noisy and 10 % slower, is left out of its cell and of the verdict, which says so."""
    _noisy_store(bench.db, make_result, "base", _jitter(1.0, 6, 3), [False] * 5 + [True])
    _noisy_store(bench.db, make_result, "fast", _jitter(0.8, 5, 4), [False] * 5)
    doc = _compare(cli, "--baseline", "base")
    clean = stats.mean_ci([1 / s for s in _jitter(1.0, 6, 3)[:5]])
    for row in doc["rows"]:
        v, cell = row["verdicts"]["fast"], row["cells"]["base"]
        assert v["verdict"] == "faster" and "1 noisy run left out" in v["message"]
        assert v["ratio_low"] < 1.25 < v["ratio_high"]
        assert (cell["runs"], cell["noisy_left_out"], cell["noisy"]) == (5, 1, False)
    first = doc["rows"][0]["cells"]["base"]["value"]
    assert doc["rows"][0]["batch_size"] == 1 and first == pytest.approx(clean.estimate * 1000, rel=0.02)
