"""Stopping a DuckDB statement while it runs: on Ctrl-C, SIGTERM or SIGHUP, or at a deadline.

DuckDB's Python client runs a statement without returning to the interpreter, so Python's signal
handlers, and KeyboardInterrupt with them, wait until the statement ends (minutes, for a big
query). The interpreter's C-level handler still writes the signal's number to the wakeup file
descriptor at once: a watcher thread reads it and calls the connection's `interrupt()`. The
statement then ends with DuckDB's InterruptException, which `stopper` turns back into what
stopped it: KeyboardInterrupt, `Terminated(signum)`, or a one-line error for the deadline.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import duckdb

from controller.errors import BenchError, Terminated

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """Raised by `Stop.check` between steps that are not a DuckDB statement (copying a file)."""


class Stop:
    """Why the work was stopped, if it was; interrupts the connection it watches."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.timed_out = False
        self._con: duckdb.DuckDBPyConnection | None = None
        # Reentrant: the signal handler runs in the main thread, maybe while it holds the lock.
        self._lock = threading.RLock()

    @property
    def stopped(self) -> bool:
        return self.signum is not None or self.timed_out

    def stop(self, signum: int | None = None) -> None:
        with self._lock:
            if signum is None:
                self.timed_out = True
            elif self.signum is None:
                self.signum = signum
            self._interrupt()

    def check(self) -> None:
        if self.stopped:
            raise Stopped

    @contextmanager
    def watching(self, con: duckdb.DuckDBPyConnection) -> Iterator[None]:
        """Interrupt `con` when stopped (at once if already), until the block ends; the
        connection is forgotten before its owner closes it."""
        with self._lock:
            self._con = con
            if self.stopped:
                self._interrupt()
        try:
            yield
        finally:
            with self._lock:
                self._con = None

    def _interrupt(self) -> None:
        if self._con is not None:
            try:
                self._con.interrupt()
            except duckdb.Error:
                pass  # nothing running any more


@contextmanager
def stopper(timeout_s: float | None, what: str) -> Iterator[Stop]:
    """Work that Ctrl-C, SIGTERM, SIGHUP or `timeout_s` seconds stop within a moment; the block
    ends with what stopped it (also when it came after the last statement)."""
    stop = Stop()
    timer = threading.Timer(timeout_s, stop.stop) if timeout_s else None
    with _signals(stop):
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            yield stop
            stop.check()
        except Exception as e:
            if stop.stopped:
                raise _why(stop, timeout_s, what) from None
            if isinstance(e, duckdb.InterruptException):
                raise KeyboardInterrupt from None
            raise
        finally:
            if timer is not None:
                timer.cancel()


def _why(stop: Stop, timeout_s: float | None, what: str) -> BaseException:
    if stop.signum == signal.SIGINT:
        return KeyboardInterrupt()
    if stop.signum is not None:
        return Terminated(stop.signum)
    return BenchError(
        f"the {what} ran past --timeout {timeout_s:g} s and was stopped",
        "narrow it (WHERE, LIMIT, fewer rows), or give a longer --timeout",
        exit_code=1,
    )


@contextmanager
def _signals(stop: Stop) -> Iterator[None]:
    """Signals stop `stop` while the block runs; the handlers before it are restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; a deadline still stops the work
        return
    r, w = os.pipe()
    os.set_blocking(w, False)
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    watcher = threading.Thread(target=_watch, args=(r, stop), daemon=True, name="bench-stop")
    watcher.start()

    def record(signum: int, _frame: FrameType | None) -> None:
        stop.stop(signum)

    try:
        for s, handler in previous.items():
            if handler is not signal.SIG_IGN:  # a command started with a signal ignored keeps it so
                signal.signal(s, record)
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        signal.set_wakeup_fd(old_fd)
        os.write(w, b"\0")  # no signal is 0: it ends the watcher
        watcher.join()
        os.close(r)
        os.close(w)


def _watch(fd: int, stop: Stop) -> None:
    while True:
        data = os.read(fd, 64)
        for signum in data:
            if signum == 0:
                return
            stop.stop(signum)
