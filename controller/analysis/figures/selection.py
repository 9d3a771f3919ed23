"""Which results a report shows: `--model`, `--host` and `--where`, as one SQL condition.

The condition is written into every figure's SQL as literals (not parameters), so the SQL printed
beside a figure runs as it is in `bench-ctl query`. `--where` is checked by the same read-only
sandbox as `bench-ctl query` and `export` (`store.run_ids_where`) before anything else is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from controller.errors import BenchError, did_you_mean
from controller.store import db as store


def sql_literal(value: str) -> str:
    """A string as an SQL literal (quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Selection:
    models: list[str] = field(default_factory=list)
    host: str | None = None
    where: str | None = None

    def condition(self, with_where: bool = True) -> str:
        """The selection over `results` columns ('true' when nothing is selected)."""
        parts = []
        if self.models:
            parts.append(f"model IN ({', '.join(sql_literal(m) for m in self.models)})")
        if self.host:
            parts.append(f"host = {sql_literal(self.host)}")
        if with_where and self.where:
            parts.append(f"({self.where})")
        return " AND ".join(parts) or "true"

    def describe(self) -> str:
        parts = []
        if self.models:
            parts.append("models " + ", ".join(self.models))
        if self.host:
            parts.append(f"host {self.host}")
        if self.where:
            parts.append(f"where {self.where}")
        return "; ".join(parts) or "every result in the store"


def check(con: duckdb.DuckDBPyConnection, selection: Selection) -> int:
    """Refuse a selection that shows nothing, saying why; returns the number of selected runs."""
    _, rows = store.fetch(con, "SELECT count(DISTINCT run_id) FROM results")
    if not rows[0][0]:
        raise BenchError(
            "the store holds no results yet, nothing to report",
            "run a benchmark first, e.g. bench-ctl run --image ort --model resnet50 -b 1,8 --repeat 3",
        )
    _, known = store.fetch(con, "SELECT DISTINCT model FROM results ORDER BY model")
    models = [str(r[0]) for r in known]
    for m in selection.models:
        if m not in models:
            raise BenchError(f"no results for model {m!r}", did_you_mean(m, models))
    if selection.host:
        _, known = store.fetch(con, "SELECT DISTINCT host FROM results WHERE host IS NOT NULL ORDER BY host")
        hosts = [str(r[0]) for r in known]
        if selection.host not in hosts:
            raise BenchError(f"no results from host {selection.host!r}", did_you_mean(selection.host, hosts))
    _, rows = store.fetch(con, f"SELECT count(DISTINCT run_id) FROM results WHERE {selection.condition()}")
    if not rows[0][0]:
        raise BenchError(
            f"no results match the selection ({selection.describe()})", "loosen --where, --model or --host"
        )
    return int(rows[0][0])
