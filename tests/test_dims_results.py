"""Results carry the model's named dimensions as data: `dims`, `sequence_dim` and tokens/s are
columns (`WHERE dims['seq'] = 64`), `compare`, the `summary` view and the report give one row per
batch size and value of the dimensions (runs at seq=16 and seq=64 are never one mean), agreement
per output and accuracy on labelled data are stored and shown, an older store is upgraded with the
dimensions its specs hold, and Parquet carries it all.

Throughputs are set by construction: a run at seq=64 is 4x slower per sample than one at seq=16,
so a mean pooled over both would lie between them, far from either."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import duckdb
import pytest
from rich.console import Console

from controller.analysis import comparison
from controller.store import db as store
from schemas import RunResult
from tests.conftest import Bench, Cli, MakeResult

HERE = socket.gethostname()
SEQS = (16, 64)
REPS = 4

ACCURACY: dict[str, Any] = {
    "reference": "test-fp32",
    "samples": 8,
    "max_abs_err": 0.02,
    "rel_err": 0.004,
    "top1_agreement": 1.0,
    "top5_agreement": 1.0,
    "cosine_min": 0.9991,
    "worst_output": "hidden",
    "outputs": [
        {
            "name": "logits",
            "max_abs_err": 0.01,
            "rel_err": 0.001,
            "top1_agreement": 1.0,
            "top5_agreement": 1.0,
            "cosine_min": 0.9999,
        },
        {"name": "hidden", "max_abs_err": 0.02, "rel_err": 0.004, "cosine_min": 0.9991},
    ],
    "data": {
        "samples": 500,
        "output": "logits",
        "top1": 0.76,
        "top5": 0.93,
        "fp32_top1": 0.761,
        "fp32_top5": 0.931,
    },
}


def with_dims(
    r: RunResult,
    dims: dict[str, int],
    sequence_dim: str | None = "seq",
    accuracy: dict[str, Any] | None = None,
) -> RunResult:
    """`r` at the given dimensions, with the tokens/s a runner reports (samples/s x the sequence
    dimension's value), validated as a result file is."""
    doc = r.model_dump(mode="json")
    doc["spec"]["dims"] = dims
    doc["spec"]["sequence_dim"] = sequence_dim
    if sequence_dim is not None:
        for m in doc["measurements"]:
            m["tokens_per_s"] = m["throughput_sps"] * dims[sequence_dim]
    if accuracy is not None:
        doc["accuracy"] = accuracy
    return RunResult.model_validate(doc)


def sweep(
    make_result: MakeResult, image: str = "base", speed: float = 1.0, host: str = HERE, **kw: Any
) -> list[RunResult]:
    """REPS repetitions at each of SEQS, at batch sizes 1 and 2; seq=64 is 4x slower per sample."""
    out = []
    for seq in SEQS:
        for i in range(REPS):
            scale = seq / 16 * (1 + 0.01 * (i - 1.5)) / speed
            r = make_result(image=image, scale=scale, host=host, repetition=i + 1)
            out.append(with_dims(r, {"seq": seq}, **kw))
    return out


def ingest(db: Path, results: list[RunResult]) -> None:
    with store.connect(db) as con:
        store.ingest_many(con, [(r, None) for r in results])


def mean_of(results: list[RunResult], seq: int, batch_size: int, field: str = "throughput_sps") -> float:
    values = [
        getattr(m, field)
        for r in results
        if r.spec.dims["seq"] == seq
        for m in r.measurements
        if m.batch_size == batch_size
    ]
    assert len(values) == REPS
    return sum(values) / len(values)


# --------------------------------------------------------------------------- the store


def test_dims_are_columns_sql_can_select_on(bench: Bench, make_result: MakeResult) -> None:
    results = sweep(make_result)
    plain = make_result(image="plain")
    ingest(bench.db, [*results, plain])
    _, rows = store.query(
        bench.db,
        "SELECT dims['seq'] AS seq, typeof(dims['seq']), sequence_dim, sequence_length, throughput_sps, "
        "tokens_per_s FROM results WHERE dims['seq'] = 64",
    )
    assert len(rows) == REPS * 2
    for seq, kind, sequence_dim, length, sps, tokens in rows:
        assert (seq, kind, sequence_dim, length) == (64, "BIGINT", "seq", 64)
        assert tokens == pytest.approx(sps * 64, rel=1e-12)
    _, types = store.query(bench.db, "SELECT column_name, column_type FROM (DESCRIBE runs)")
    assert dict(types)["dims"] == "MAP(VARCHAR, BIGINT)" and dict(types)["sequence_dim"] == "VARCHAR"
    # A model without named dimensions: an empty map, no sequence length, no tokens/s.
    _, rows = store.query(
        bench.db,
        "SELECT dims, cardinality(dims), sequence_length, tokens_per_s FROM results WHERE image = 'plain'",
    )
    assert rows and all(row == ({}, 0, None, None) for row in rows)


def test_runs_at_the_same_dims_group_together_whatever_their_order(
    bench: Bench, make_result: MakeResult
) -> None:
    """A MAP compares its entries in order: the store sorts them, so `GROUP BY dims` and a literal
    map find the runs at the same dimensions however their spec listed them."""
    a = with_dims(make_result(), {"seq": 16, "heads": 4})
    b = with_dims(make_result(), {"heads": 4, "seq": 16})
    ingest(bench.db, [a, b])
    _, rows = store.query(bench.db, "SELECT dims, count(*) FROM runs GROUP BY dims")
    assert rows == [({"heads": 4, "seq": 16}, 2)]
    _, rows = store.query(bench.db, "SELECT count(*) FROM runs WHERE dims = MAP {'heads': 4, 'seq': 16}")
    assert rows == [(2,)]


def test_agreement_per_output_and_data_accuracy_are_columns(bench: Bench, make_result: MakeResult) -> None:
    r = with_dims(make_result(), {"seq": 16}, accuracy=ACCURACY)
    ingest(bench.db, [r])
    cols, rows = store.query(
        bench.db,
        "SELECT DISTINCT top1_agreement, cosine_min, worst_output, accuracy_outputs, data_output, "
        "data_samples, data_top1, data_top5, data_fp32_top1, data_fp32_top5 FROM results",
    )
    [row] = store.rows_as_dicts(cols, rows)
    assert row["cosine_min"] == 0.9991 and row["worst_output"] == "hidden"
    assert [o["name"] for o in json.loads(row["accuracy_outputs"])] == ["logits", "hidden"]
    assert json.loads(row["accuracy_outputs"])[1]["top1_agreement"] is None  # hidden states: no classes
    assert (row["data_output"], row["data_samples"]) == ("logits", 500)
    assert (row["data_top1"], row["data_top5"], row["data_fp32_top1"], row["data_fp32_top5"]) == (
        0.76,
        0.93,
        0.761,
        0.931,
    )


def test_summary_has_a_group_per_seq(bench: Bench, make_result: MakeResult) -> None:
    results = sweep(make_result)
    ingest(bench.db, results)
    _, rows = store.query(
        bench.db,
        "SELECT batch_size, dims['seq'], sequence_length, repetitions, throughput_sps, tokens_per_s "
        "FROM summary ORDER BY batch_size, dims['seq']",
    )
    assert [(bs, seq, length, n) for bs, seq, length, n, _, _ in rows] == [
        (bs, seq, seq, REPS) for bs in (1, 2) for seq in SEQS
    ]
    for bs, seq, _, _, sps, tokens in rows:
        assert sps == pytest.approx(mean_of(results, seq, bs), rel=1e-9)
        assert tokens == pytest.approx(mean_of(results, seq, bs, "tokens_per_s"), rel=1e-9)


# --------------------------------------------------------------------------- compare


def _compare(cli: Cli, *args: str) -> dict[str, Any]:
    result = cli("compare", "--model", "fake", "--json", *args)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def test_compare_gives_a_row_per_seq_and_never_pools(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    base = sweep(make_result)
    fast = sweep(make_result, image="fast", speed=1.25)
    ingest(bench.db, [*base, *fast])
    doc = _compare(cli, "--baseline", "base")
    points = [(row["batch_size"], row["dims"], row["point"]) for row in doc["rows"]]
    assert points == [(bs, {"seq": seq}, f"b{bs} seq={seq}") for bs in (1, 2) for seq in SEQS]
    for row in doc["rows"]:
        seq, bs = row["dims"]["seq"], row["batch_size"]
        cell = row["cells"]["base"]
        assert cell["runs"] == REPS and cell["method"] == "t"
        assert cell["value"] == pytest.approx(mean_of(base, seq, bs), rel=1e-9)
        assert cell["tokens_per_s"] == pytest.approx(mean_of(base, seq, bs, "tokens_per_s"), rel=1e-9)
        # Each seq is judged on its own runs: pooled, the 4x spread would hide the 1.25x.
        v = row["verdicts"]["fast"]
        assert v["verdict"] == "faster", v["message"]
        assert v["ratio_low"] < 1.25 < v["ratio_high"]
    text = cli("compare", "--model", "fake", env={"COLUMNS": "250"}).stdout
    assert "batch, dims" in text and "b1 seq=16" in text and "b2 seq=64" in text
    assert "tokens/s" in text


def test_compare_on_tokens_per_second(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    results = sweep(make_result)
    ingest(bench.db, [*results, make_result(model="plain")])
    doc = _compare(cli, "--metric", "tokens_per_s")
    assert doc["higher_is_better"] is True
    for row in doc["rows"]:
        seq, bs = row["dims"]["seq"], row["batch_size"]
        assert row["cells"]["base"]["value"] == pytest.approx(mean_of(results, seq, bs, "tokens_per_s"))
    refused = cli("compare", "--model", "plain", "--metric", "tokens_per_s")
    assert refused.exit_code == 2 and "tokens/s" in refused.output and "sequence" in refused.output


def test_compare_shows_data_accuracy_beside_fp32(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    ingest(bench.db, sweep(make_result, accuracy=ACCURACY))
    doc = _compare(cli)
    data = doc["rows"][0]["cells"]["base"]["data"]
    assert (data["top1"], data["fp32_top1"], data["samples"]) == (0.76, 0.761, 500)
    text = cli("compare", "--model", "fake", env={"COLUMNS": "250"}).stdout
    assert "data top-1 76.0 % vs fp32 76.1 %" in text


def test_two_hosts_are_compared_per_seq(bench: Bench, make_result: MakeResult) -> None:
    old, new = sweep(make_result, host="old"), sweep(make_result, host="new", speed=1.25)
    ingest(bench.db, [*old, *new])
    pair = comparison.compare_hosts(bench.db, "fake", "old", "new")
    assert [(r.batch_size, r.dims, r.point) for r in pair.rows] == [
        (bs, {"seq": seq}, f"b{bs} seq={seq}") for bs in (1, 2) for seq in SEQS
    ]
    for row in pair.rows:
        assert row.old is not None and row.old.runs == REPS
        assert row.old.value == pytest.approx(mean_of(old, row.dims["seq"], row.batch_size), rel=1e-9)
        assert row.verdict is not None and row.verdict.verdict == "faster"


def test_a_run_prints_its_dims_and_tokens(make_result: MakeResult, tmp_path: Path) -> None:
    from controller.cli import render

    r = with_dims(make_result(), {"seq": 64})
    console = Console(record=True, width=200)
    render.run_summary(console, r, tmp_path)
    text = console.export_text()
    assert "fake seq=64" in text and "tokens/s" in text
    expected = f"{r.measurements[0].tokens_per_s:,.1f}"
    assert expected in text


# --------------------------------------------------------------------------- the report


def test_report_draws_throughput_against_seq(
    cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path
) -> None:
    ingest(bench.db, [*sweep(make_result, accuracy=ACCURACY), *sweep(make_result, image="fast", speed=1.25)])
    out = tmp_path / "report"
    result = cli("report", "--db", str(bench.db), "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert "A" not in outcome["empty"]
    svg = (out / "a_throughput.svg").read_text()
    assert "Throughput against seq (n runs" in svg
    assert ">seq<" in svg  # the x axis
    for line in ("base b1", "base b2", "fast b1", "fast b2"):  # a line per image and batch size
        assert f"{line} n={REPS}" in svg
    page = (out / "index.html").read_text()
    # The numbers: a point per batch size and seq, with its tokens/s.
    assert "tokens_per_s" in page and "seq=16" in page and "seq=64" in page
    # F: the output that agreed least, cosine, and the labelled data beside fp32.
    assert "hidden" in page and "0.9991" in page
    assert "76.0 % (fp32 76.1 %)" in page
    assert "Agreement per output" in page


def test_report_sql_never_pools_dims(bench: Bench, make_result: MakeResult) -> None:
    from controller.analysis.figures.data import read_all
    from controller.analysis.figures.selection import Selection

    results = sweep(make_result)
    ingest(bench.db, results)
    with store.reader(bench.db) as con:
        data = read_all(con, Selection(), len(results))
    got = sorted((p.batch_size, p.dims["seq"], p.repetitions, p.throughput_sps) for p in data.throughput)
    assert [(bs, seq, n) for bs, seq, n, _ in got] == [(bs, seq, REPS) for bs in (1, 2) for seq in SEQS]
    for bs, seq, _, sps in got:
        assert sps == pytest.approx(mean_of(results, seq, bs), rel=1e-9)
    assert sorted(r.dims["seq"] for r in data.accuracy) == list(SEQS)
    assert sorted(r.dims["seq"] for r in data.load) == list(SEQS)


# --------------------------------------------------------------------------- upgrade and transfer


def _old_store(db: Path, version: int) -> duckdb.DuckDBPyConnection:
    """A store as the code of `version` left it."""
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE store_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    for step in store.MIGRATIONS[:version]:
        con.execute(step if isinstance(step, str) else step())
    con.execute("INSERT INTO store_meta VALUES ('version', ?)", [str(version)])
    return con


def _insert_as_of_then(con: duckdb.DuckDBPyConnection, r: RunResult) -> None:
    """The rows today's code would store for `r`, less the columns the old store lacks."""
    for table, rows in (
        ("runs", [store.run_row(r, None)]),
        (
            "measurements",
            [
                dict(
                    zip(
                        ["run_id", *store.MEASUREMENT_COLUMNS],
                        store.measurement_row(r.run_id, m),
                        strict=True,
                    )
                )
                for m in r.measurements
            ],
        ),
    ):
        known = {str(c[0]) for c in con.execute(f"SELECT name FROM pragma_table_info('{table}')").fetchall()}
        for row in rows:
            cols = [c for c in row if c in known]
            con.execute(
                f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                [row[c] for c in cols],
            )


def test_an_older_store_gets_the_dims_its_specs_hold(bench: Bench, make_result: MakeResult) -> None:
    """A store of version 14 (before these columns): its runs get the dimensions and sequence
    dimension their stored spec names, tokens/s as the runner computes it, and a run stored
    without its spec an empty map."""
    con = _old_store(bench.db, 14)
    r = with_dims(make_result(), {"seq": 64, "heads": 2})
    bare = make_result(image="bare")
    _insert_as_of_then(con, r)
    _insert_as_of_then(con, bare)
    con.execute("UPDATE runs SET spec = NULL WHERE image = 'bare'")
    con.close()
    store.ensure_store(bench.db)  # migrates
    _, rows = store.query(
        bench.db, "SELECT image, dims, sequence_dim, throughput_sps, tokens_per_s FROM results ORDER BY ALL"
    )
    assert len(rows) == 4
    for image, dims, sequence_dim, sps, tokens in rows:
        if image == "bare":
            assert (dims, sequence_dim, tokens) == ({}, None, None)
        else:
            assert list(dims.items()) == [("heads", 2), ("seq", 64)] and sequence_dim == "seq"
            assert tokens == pytest.approx(sps * 64, rel=1e-12)
    _, version = store.query(bench.db, "SELECT value FROM store_meta WHERE key = 'version'")
    assert version == [(str(store.STORE_VERSION),)]


def test_parquet_carries_dims_tokens_and_accuracy(
    cli: Cli, bench: Bench, make_result: MakeResult, tmp_path: Path
) -> None:
    from tests.test_transfer import fingerprints

    ingest(bench.db, [*sweep(make_result, accuracy=ACCURACY), make_result(image="plain")])
    out = tmp_path / "export"
    assert cli("export", "--out", out).exit_code == 0
    other = tmp_path / "other.duckdb"
    imported = cli("import", out, "--db", other)
    assert imported.exit_code == 0, imported.output
    assert fingerprints(other) == fingerprints(bench.db)
    sql = (
        "SELECT dims['seq'], count(*), avg(tokens_per_s / throughput_sps), any_value(data_top1), "
        "any_value(worst_output) FROM results WHERE dims['seq'] IS NOT NULL GROUP BY ALL ORDER BY ALL"
    )
    _, rows = store.query(other, sql)
    assert [(seq, n, top1, worst) for seq, n, _, top1, worst in rows] == [
        (seq, REPS * 2, 0.76, "hidden") for seq in SEQS
    ]
    assert all(ratio == pytest.approx(seq) for seq, _, ratio, _, _ in rows)
