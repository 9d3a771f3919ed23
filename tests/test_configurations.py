"""One configuration, one name: options at their defaults, threads at the cores given.

Truths by construction: an ONNX Runtime run with `intra_op_threads` at the cores its runner was
given computes as the default (0: those cores) does, so its runs pool with the default's in one
column and one sweep cell; on a runner given other cores the same number is another
configuration. Synthetic results have throughputs set by their scale.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Any

import duckdb
import pytest

from controller.catalog import hosts
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
