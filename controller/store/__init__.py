"""The store: `results.duckdb` (schema and migrations, connections and locks, ingest, the read-only
query guard, transfer between stores). Commands use the names below; everything else is internal.

The names are resolved on first use, so importing this package costs nothing until a command
touches the store (`bench-ctl --help` never loads DuckDB)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

QUERY_TIMEOUT_S = 300.0  # `query --timeout` default: a runaway query ends, a writer waits at most this

PUBLIC = {
    "check_query_options": "db",
    "ensure_store": "db",
    "query": "db",
    "to_json": "db",
    "variant": "db",
    "ingest_paths": "ingest",
    "export": "transfer",
    "import_export": "transfer",
}

if TYPE_CHECKING:  # the same names, for the type checker (explicit re-exports)
    from controller.store.db import check_query_options as check_query_options
    from controller.store.db import ensure_store as ensure_store
    from controller.store.db import query as query
    from controller.store.db import to_json as to_json
    from controller.store.db import variant as variant
    from controller.store.ingest import ingest_paths as ingest_paths
    from controller.store.transfer import export as export
    from controller.store.transfer import import_export as import_export


def __getattr__(name: str) -> Any:
    if name in PUBLIC:
        value = getattr(importlib.import_module(f"controller.store.{PUBLIC[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["QUERY_TIMEOUT_S", *PUBLIC]
