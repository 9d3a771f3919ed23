"""Atomic writes live in `schemas.atomic`, shared with the controller."""

from schemas.atomic import write_atomic

__all__ = ["write_atomic"]
