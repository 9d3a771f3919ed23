"""`bench-ctl rerun`: the same specs, measured again on this host.

A stored run's spec becomes the request a user would have typed (`--set` for every option,
policy value and scenario option that differs from its default), so it is checked and planned
here like any new run: another host's model store, launchers and devices, the same measurement."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from controller.errors import BenchError
from controller.run.planning import RunRequest
from controller.run.plans import RUN_COUNT_KEYS
from controller.store import db as store
from schemas import SCENARIO_MODELS, MeasurementPolicy, RunSpec, load_result


def _text(v: Any) -> str:
    if v is None:
        return "none"
    return str(v).lower() if isinstance(v, bool) else str(v)


def _changed(model: BaseModel, defaults: dict[str, Any], skip: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    return [
        (k, v)
        for k, v in model.model_dump().items()
        if k not in skip and (k not in defaults or defaults[k] != v)
    ]


def request_of(spec: RunSpec) -> RunRequest:
    """The request that plans this spec again: image, model (or ensemble), batch sizes, device,
    scenario, and a `--set` for everything that differs from the defaults."""
    options = spec.options
    defaults = store.option_defaults(options.framework)
    sets = [f"{k}={_text(v)}" for k, v in _changed(options, defaults, ("framework",))]
    policy = _changed(spec.policy, MeasurementPolicy().model_dump(), RUN_COUNT_KEYS)
    sets += [f"policy.{k}={_text(v)}" for k, v in policy]
    sc = spec.scenario
    fields = SCENARIO_MODELS[sc.name].model_fields
    defaults = {k: f.default for k, f in fields.items() if not f.is_required()}
    sets += [f"{sc.name}.{k}={_text(v)}" for k, v in _changed(sc, defaults, ("name",))]
    members = [m.model for m in spec.members]
    return RunRequest(
        image=spec.image,
        model=",".join(members) if members else spec.model,
        batch_sizes=spec.batch_sizes,
        device=spec.device,
        sets=sets,
        ensemble=bool(members),
        scenario=sc.name,
    )


def _spec(run_id: str, spec_json: str | None, result_path: str | None) -> RunSpec:
    if spec_json:
        try:
            return RunSpec.model_validate_json(spec_json)
        except ValidationError as e:  # stored by another version, or imported from one
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "spec"
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise BenchError(
                f"run {run_id}: its stored spec is not valid here ({where}: {msg})",
                "run the same configuration with `bench-ctl run`, choosing its options again",
            ) from None
    if result_path and Path(result_path).is_file():
        try:
            return load_result(Path(result_path)).spec
        except (ValidationError, ValueError, OSError):
            pass
    raise BenchError(
        f"run {run_id} was stored without its spec and its result file is gone",
        "rerun a run stored by this version, or run the same options with `bench-ctl run`",
    )


def requests_for(db: Path, run_id: str | None, group: str | None) -> list[tuple[RunRequest, int]]:
    """Each distinct configuration of the chosen runs, with how many runs it had, in first-run order."""
    if (run_id is None) == (group is None):
        raise BenchError(
            "give one of RUN_ID, --group G or --plan PLAN",
            "e.g. bench-ctl rerun 20261129T080544Z-null-resnet50-4cfeed",
        )
    if not (run_id or group or "").strip():
        raise BenchError(
            "an empty " + ("RUN_ID" if run_id is not None else "--group") + " was given",
            'list the stored runs with: bench-ctl query "SELECT run_id, group_id, image, model FROM runs"',
        )
    where, value = ("run_id = ?", run_id) if run_id else ("group_id = ?", group)
    _, rows = store.read(
        db, f"SELECT run_id, spec, result_path FROM runs WHERE {where} ORDER BY started_at", [value]
    )
    if not rows:
        what = f"run {run_id!r}" if run_id else f"group {group!r}"
        raise BenchError(
            f"no {what} in {db}",
            'list them with: bench-ctl query "SELECT run_id, group_id, image, model FROM runs"',
        )
    counts: Counter[str] = Counter()
    first: dict[str, RunRequest] = {}
    for rid, spec_json, result_path in rows:
        req = request_of(_spec(rid, spec_json, result_path))
        key = json.dumps(req.model_dump(), sort_keys=True)
        counts[key] += 1
        first.setdefault(key, req)
    return [(req, counts[key]) for key, req in first.items()]
