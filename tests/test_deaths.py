"""Exit codes and signals named for people."""

from __future__ import annotations

from pathlib import Path

from controller.launch.deaths import describe_exit, describe_memory, likely_cause, oom_kills, signal_of


def test_signals_from_exit_codes() -> None:
    assert signal_of(-9) == 9
    assert signal_of(137, container=True) == 9
    assert signal_of(137) is None  # a local process may exit 137 by itself
    assert signal_of(0) is None and signal_of(None) is None


def test_describe() -> None:
    assert describe_exit(-9) == "killed by SIGKILL (exit -9)"
    assert describe_exit(143, container=True) == "killed by SIGTERM (exit 143)"
    assert describe_exit(3) == "exited with code 3"
    assert "out of memory" in describe_exit(-9, oom_killed=True)
    assert "out of memory" in describe_exit(137, oom_killed=True, container=True)


def test_oom_counter(tmp_path: Path) -> None:
    vmstat = tmp_path / "vmstat"
    vmstat.write_text("nr_free_pages 1\noom_kill 7\n")
    assert oom_kills(vmstat) == 7
    assert oom_kills(tmp_path / "missing") is None


def test_likely_cause_only_for_unconfirmed_sigkill() -> None:
    assert likely_cause(-9) == "most likely out of memory (the kernel's OOM killer)"
    assert likely_cause(137, container=True) is not None
    assert likely_cause(137) is None  # a local process that exited 137 by itself
    assert likely_cause(-9, oom_killed=True) is None  # describe_exit already says it
    assert likely_cause(-15) is None and likely_cause(3) is None and likely_cause(None) is None


def test_describe_memory() -> None:
    assert describe_memory(812.4) == "812 MB"
    assert describe_memory(1024) == "1.0 GB"
    assert describe_memory(23_960) == "23.4 GB"
