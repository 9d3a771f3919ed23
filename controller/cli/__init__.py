"""`bench-ctl`: one module per command group; `app` is the root command."""

from controller.cli.app import app, main

__all__ = ["app", "main"]
