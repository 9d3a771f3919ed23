"""`bench-ctl`: launches runners in their images or local environments, stores results in DuckDB.

Imports `schemas`, never `runners`: a runner is reached only through its entrypoint.
"""
