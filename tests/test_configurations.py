"""One configuration, one name: options at their defaults, threads at the cores given, and
`compare` with many configurations (`--only`, `--top`, labels never cut).

Truths by construction: an ONNX Runtime run with `intra_op_threads` at the cores its runner was
given computes as the default (0: those cores) does, so its runs pool with the default's in one
column and one sweep cell; on a runner given other cores the same number is another
configuration. Synthetic results have throughputs set by their scale.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
from pathlib import Path
from typing import Any

import duckdb
import pytest
from rich.console import Console

from controller.analysis import comparison
from controller.catalog import hosts
from controller.cli import render
from controller.errors import BenchError
from controller.paths import Paths
from controller.run import planning, plans
from controller.store import db as store
from schemas import FRAMEWORK_OPTION_MODELS, RunResult
from schemas.frameworks.base import configuration, same_as_default
from schemas.frameworks.null import NullOptions
from schemas.frameworks.ort import OnnxRuntimeOptions
from tests.conftest import Bench, Cli, MakeResult

HERE = socket.gethostname()


def _ort(make_result: MakeResult, cpu_limit: float | None, scale: float = 1.0, **options: Any) -> RunResult:
    """A stored-to-be ONNX Runtime result of a runner given `cpu_limit` cores."""
    r = make_result(image="ort", scale=scale, host=HERE)
    assert r.fingerprint is not None
    return r.model_copy(
        update={
            "framework": "onnxruntime",
            "spec": r.spec.model_copy(update={"options": OnnxRuntimeOptions(**options)}),
            "fingerprint": r.fingerprint.model_copy(update={"cpu_limit": cpu_limit}),
        }
    )


def _compare(cli: Cli, *args: str) -> dict[str, Any]:
    result = cli("compare", "--model", "fake", "--json", *args)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


# --------------------------------------------------------------------------- one configuration


def test_threads_at_the_cores_given_are_the_default(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    """Two cores given: intra_op_threads=2 is the default (0), also with a quota of 2.5 cores
    (two whole ones); 1 thread is another configuration, and so is 2 on a runner given 4 cores."""
    runs = {
        "default": [_ort(make_result, 2.0) for _ in range(3)],
        "two": [_ort(make_result, 2.0, intra_op_threads=2) for _ in range(2)]
        + [_ort(make_result, 2.5, intra_op_threads=2)],
        "one": [_ort(make_result, 2.0, scale=2.0, intra_op_threads=1) for _ in range(3)],
        "two of four": [_ort(make_result, 4.0, scale=0.5, intra_op_threads=2) for _ in range(3)],
        "unknown cores": [_ort(make_result, None, intra_op_threads=2)],
    }
    with store.connect(bench.db) as con:
        for group in runs.values():
            for r in group:
                store.ingest(con, r)
    variants = dict(store.query(bench.db, "SELECT run_id, variant FROM runs")[1])
    expected = {
        "default": "",
        "two": "",
        "one": "intra_op_threads=1",
        "two of four": "intra_op_threads=2",
        "unknown cores": "intra_op_threads=2",
    }
    for name, group in runs.items():
        assert {variants[r.run_id] for r in group} == {expected[name]}, name
    doc = _compare(cli)
    assert doc["labels"] == ["ort", "ort [intra_op_threads=1]", "ort [intra_op_threads=2]"]
    for row in doc["rows"]:
        assert row["cells"]["ort"]["runs"] == 6  # the default's three and the three at two threads
        assert row["cells"]["ort [intra_op_threads=2]"]["runs"] == 4


def test_an_option_at_its_declared_default_gives_no_variant() -> None:
    """Every option of every framework, given at its default (as `--set` would spell it or as
    the model holds it), names no variant; any other value of it does."""
    for framework, model in FRAMEWORK_OPTION_MODELS.items():
        for name, field in model.model_fields.items():
            options = model.model_validate({"framework": framework, name: field.default})
            assert store.options_variant(options, cores=2) == "", (framework, name)
    typed = planning.parse_sets(
        "onnxruntime",
        ["graph_optimization=all", "intra_op_threads=0", "cache=true", "provider=auto", "trt_fp16=True"],
    )
    options = OnnxRuntimeOptions.model_validate({"framework": "onnxruntime", **typed.options})
    assert store.options_variant(options) == ""
    assert store.options_variant(OnnxRuntimeOptions(graph_optimization="basic")) == "graph_optimization=basic"
    assert store.options_variant(NullOptions(threads=2), cores=2) == "threads=2"  # null's default is 1


def test_only_a_threads_option_whose_default_means_the_cores_follows_them() -> None:
    assert same_as_default(OnnxRuntimeOptions, "intra_op_threads", 4, 4)
    assert not same_as_default(OnnxRuntimeOptions, "intra_op_threads", 4, 2)
    assert not same_as_default(OnnxRuntimeOptions, "intra_op_threads", 4, None)
    assert not same_as_default(OnnxRuntimeOptions, "inter_op_threads", 4, 4)  # not the threads option
    openvino = FRAMEWORK_OPTION_MODELS["openvino"]
    assert same_as_default(openvino, "threads", 8, 8) and not same_as_default(openvino, "streams", 8, 8)
    assert not same_as_default(NullOptions, "threads", 1 + 1, 2)  # its default is 1 thread, not the cores
    kept = configuration(OnnxRuntimeOptions(intra_op_threads=3), 2)
    assert kept["intra_op_threads"] == 3 and configuration(OnnxRuntimeOptions(intra_op_threads=2), 2) == (
        OnnxRuntimeOptions().model_dump()
    )


def test_stored_variants_are_named_again_by_the_new_rule(bench: Bench, make_result: MakeResult) -> None:
    """Runs stored by code of the earlier rule (variant `intra_op_threads=2` at two cores given)
    are renamed on the next write; a read before it refuses, as for a change of defaults."""
    at_cores, elsewhere = (
        _ort(make_result, 2.0, intra_op_threads=2),
        _ort(make_result, 8.0, intra_op_threads=2),
    )
    with store.connect(bench.db) as con:
        store.ingest(con, at_cores)
        store.ingest(con, elsewhere)
    with duckdb.connect(str(bench.db)) as con:  # as the earlier rule named them, under its hash
        con.execute("UPDATE runs SET variant = 'intra_op_threads=2'")
        con.execute("UPDATE store_meta SET value = 'rule-1' WHERE key = 'defaults'")
    with pytest.raises(BenchError, match="older than this code"):
        store.read(bench.db, "SELECT 1")
    with store.connect(bench.db):
        pass
    rows = dict(store.read(bench.db, "SELECT run_id, variant FROM runs")[1])
    assert rows == {at_cores.run_id: "", elsewhere.run_id: "intra_op_threads=2"}


# --------------------------------------------------------------------------- sweep cells


def _plan(folder: Path, body: str) -> list[plans.Cell]:
    path = folder / "t.toml"
    path.write_text(f'name = "t"\nrepetitions = 1\n{body}')
    return plans.cells(plans.load(path), Paths.from_env(), hosts.identity().key)


ORT = '[[runs]]\nimages = ["ort"]\nmodels = ["fake"]\nbatch_sizes = [1]\n'


def test_threads_at_the_cores_here_are_the_default_cell(
    bench: Bench, fake_model: Path, tmp_path: Path
) -> None:
    cores = planning.cores_given()
    assert cores is not None
    [default] = _plan(tmp_path, ORT)
    [typed] = _plan(tmp_path, ORT + f"set = {{ intra_op_threads = {cores} }}\n")
    [explicit_zero] = _plan(tmp_path, ORT + "set = { intra_op_threads = 0, graph_optimization = 'all' }\n")
    assert typed.key == default.key == explicit_zero.key
    options = typed.spec.options
    assert isinstance(options, OnnxRuntimeOptions) and options.intra_op_threads == cores  # as given
    [more] = _plan(tmp_path, ORT + f"set = {{ intra_op_threads = {cores + 1} }}\n")
    assert more.key != default.key
    # A sweep over the default and the cores is one cell here; another thread count is its own.
    swept = _plan(tmp_path, ORT + f"sweep = {{ intra_op_threads = [0, {cores}, {cores + 1}] }}\n")
    assert [c.options for c in swept] == ["intra_op_threads=0", f"intra_op_threads={cores + 1}"]
    assert swept[0].key == default.key
    # Two tables naming it, one each way, repeat a configuration: refused, saying why.
    with pytest.raises(BenchError, match="repeats a configuration") as twice:
        _plan(tmp_path, ORT + "\n" + ORT + f"set = {{ intra_op_threads = {cores} }}\n")
    assert f"intra_op_threads={cores} is the cores a runner here is given" in twice.value.message


def test_cells_without_such_options_keep_their_keys(bench: Bench, fake_model: Path, tmp_path: Path) -> None:
    """The key of a cell with no threads option at the cores is the hash it always was."""
    swept = _plan(
        tmp_path, ORT + "sweep = { intra_op_threads = [0, 64], graph_optimization = ['basic', 'all'] }\n"
    )
    nulls = _plan(tmp_path, '[[runs]]\nimages = ["null"]\nmodels = ["fake"]\nbatch_sizes = [1, 2]\n')
    for cell in [*swept, *nulls]:
        spec = cell.spec
        what = {
            "image": cell.image.name,
            "model": spec.model,
            "members": [m.model for m in spec.members],
            "batch_sizes": spec.batch_sizes,
            "device": spec.device,
            "options": spec.options.model_dump(),
            "policy": spec.policy.model_dump(exclude=set(plans.RUN_COUNT_KEYS)),
            "scenario": spec.scenario.model_dump(),
            "host": hosts.identity().key,
            "lock": cell.image.lock_hash,
        }
        assert cell.key == hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:20]


# --------------------------------------------------------------------------- many configurations


def _many(bench: Bench, make_result: MakeResult, n: int = 12) -> list[str]:
    """`n` configurations of the null runner told apart by their tag, the k-th taking k times
    the time of the first: throughput falls with k. Two runs each at batch 1 and 2."""
    labels = []
    with store.connect(bench.db) as con:
        for k in range(1, n + 1):
            options = NullOptions(tag=f"a-rather-long-configuration-name-{k:02d}")
            for rep in (1, 2):
                r = make_result(image="null", scale=float(k) * (1 + rep / 1000), host=HERE, repetition=rep)
                store.ingest(
                    con, r.model_copy(update={"spec": r.spec.model_copy(update={"options": options})})
                )
            labels.append(f"null [tag=a-rather-long-configuration-name-{k:02d}]")
    return labels


@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_labels_are_never_cut(bench: Bench, make_result: MakeResult, width: int) -> None:
    """Twelve configurations on any terminal: every label whole (folded onto lines at most), no
    ellipsis; the configurations are the rows, as a column each would not fit."""
    labels = _many(bench, make_result)
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, highlight=False, emoji=False)
    render.comparison(console, comparison.compare(bench.db, "fake", baseline=labels[0]))
    text = buffer.getvalue()
    table = [line for line in text.splitlines() if re.search("[│┃┏└]", line)]
    assert "…" not in text and max(len(line) for line in table) <= width
    # The first column, line after line: a label folded onto lines reads whole without the frame.
    first = "".join(line.split("│")[1].strip() for line in table if line.startswith("│"))
    for label in labels:
        assert label.replace(" ", "") in first.replace(" ", ""), label
    assert "a row per configuration" in text
    cli_text = _many_text(bench)
    assert "a row per configuration" in cli_text and all(label in cli_text for label in labels)


def _many_text(bench: Bench) -> str:
    """What `bench-ctl compare` prints off a terminal (160 columns)."""
    from typer.testing import CliRunner

    from controller.cli.app import app

    return CliRunner().invoke(app, ["compare", "--model", "fake", "--db", str(bench.db)]).stdout


def test_few_configurations_stay_columns(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    _many(bench, make_result, n=2)
    text = cli("compare", "--model", "fake", env={"COLUMNS": "200"}).stdout
    assert "a row per configuration" not in text and "┃ batch" in text


def test_top_keeps_the_best_at_the_largest_batch(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    labels = _many(bench, make_result)
    doc = _compare(cli, "--top", "3")
    assert doc["labels"] == labels[:3]  # the fastest: least work
    assert all(set(row["cells"]) == set(labels[:3]) for row in doc["rows"])
    assert doc["not_shown"] == ["--top 3: the 3 best of 12 by throughput_sps at b2"]
    slowest = _compare(cli, "--top", "2", "--metric", "latency_p50_ms")  # lower is better
    assert slowest["labels"] == labels[:2]
    with_base = _compare(cli, "--top", "2", "--baseline", labels[-1])
    assert with_base["labels"] == [*labels[:2], labels[-1]]
    assert with_base["rows"][0]["verdicts"][labels[0]]["verdict"] == "insufficient data"  # 2 runs each
    text = cli("compare", "--model", "fake", "--top", "3", env={"COLUMNS": "200"}).stdout
    assert "--top 3: the 3 best of 12" in text and labels[3] not in text
    for bad in ("0", "-1"):
        r = cli("compare", "--model", "fake", "--top", bad)
        assert r.exit_code == 2 and "--top" in r.stderr and "hint" in r.stderr


def test_top_leaves_out_what_the_largest_batch_did_not_measure(
    cli: Cli, bench: Bench, make_result: MakeResult
) -> None:
    """The fastest configuration measured batch 1 only: it cannot rank at batch 2."""
    labels = _many(bench, make_result, n=3)
    with store.connect(bench.db) as con:
        r = make_result(image="fast", scale=0.1, host=HERE, batch_sizes=(1,))
        store.ingest(con, r)
    doc = _compare(cli, "--top", "2")
    assert doc["labels"] == labels[:2]
    assert doc["not_shown"] == [
        "--top 2: the 2 best of 3 by throughput_sps at b2; 1 not measured at b2 left out"
    ]


def test_only_keeps_the_labels_holding_a_text(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    labels = _many(bench, make_result)
    doc = _compare(cli, "--only", "name-1")
    assert doc["labels"] == labels[9:12]  # 10, 11, 12
    assert doc["not_shown"] == ["9 of 12 configuration(s) left out by --only 'name-1'"]
    either = _compare(cli, "--only", "name-03", "--only", "name-07", "--top", "1")
    assert either["labels"] == [labels[2]]
    kept = _compare(cli, "--only", "name-05", "--baseline", labels[0])
    assert kept["labels"] == [labels[0], labels[4]]
    r = cli("compare", "--model", "fake", "--only", "nothing-like-it")
    assert r.exit_code == 2 and "matches no configuration" in r.stderr and "hint" in r.stderr
    plain = _compare(cli)
    assert plain["labels"] == labels and plain["not_shown"] == []


def test_only_in_two_host_views_and_top_refused(cli: Cli, bench: Bench, make_result: MakeResult) -> None:
    with store.connect(bench.db) as con:
        for host in ("old-node", "new-node"):
            for image in ("ort", "openvino"):
                store.ingest(con, make_result(image=image, host=host))
    doc = _compare(cli, "--hosts", "old-node,new-node", "--only", "openvino")
    assert {row["label"] for row in doc["rows"]} == {"openvino"}
    assert doc["left_out"] == ["1 of 2 configuration(s) left out by --only 'openvino'"]
    r = cli("compare", "--model", "fake", "--hosts", "old-node,new-node", "--top", "1")
    assert r.exit_code == 2 and "--top" in r.stderr and "hint" in r.stderr
