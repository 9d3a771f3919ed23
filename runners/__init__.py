"""Code that runs inside a framework image: `python -m runners --spec SPEC.json --out RESULT.json`.

Imports `schemas` only, never `controller`.
"""
