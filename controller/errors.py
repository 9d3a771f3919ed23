"""One error type for everything a user can fix: a message, a hint, an exit code."""

from __future__ import annotations


class BenchError(Exception):
    def __init__(self, message: str, hint: str | None = None, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


def did_you_mean(value: str, choices: list[str]) -> str:
    """A short 'valid names' hint, closest match first."""
    import difflib

    close = difflib.get_close_matches(value, choices, n=1)
    listing = ", ".join(sorted(choices)) or "none yet"
    return f"did you mean {close[0]!r}? valid: {listing}" if close else f"valid: {listing}"


class Terminated(KeyboardInterrupt):
    """bench-ctl received SIGTERM (or SIGHUP): unwind like Ctrl-C, so runners are stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
