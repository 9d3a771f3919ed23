"""The shared device helpers: one `cuda:N` parser, one GPU-presence check, one atomic write."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.atomic import publish_atomic, write_atomic
from schemas.devices import cuda_index, nvidia_gpu_present


def test_cuda_index() -> None:
    assert cuda_index("cpu") is None
    assert cuda_index("cuda:0") == 0
    assert cuda_index("cuda:12") == 12


def test_gpu_presence_needs_a_gpu_node_not_just_the_control_node(tmp_path: Path) -> None:
    (tmp_path / "nvidiactl").touch()
    (tmp_path / "nvidia-uvm").touch()
    assert not nvidia_gpu_present(tmp_path)
    (tmp_path / "nvidia0").touch()
    assert nvidia_gpu_present(tmp_path)


def test_physical_index_follows_the_container_override(monkeypatch: pytest.MonkeyPatch) -> None:
    from probes.gpu import physical_index

    monkeypatch.delenv("BENCH_CUDA_INDEX", raising=False)
    assert physical_index("cuda:3") == 3
    monkeypatch.setenv("BENCH_CUDA_INDEX", "0")
    assert physical_index("cuda:3") == 0
    with pytest.raises(ValueError, match="not a CUDA device"):
        physical_index("cpu")


def test_atomic_writes_leave_only_the_final_file(tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    write_atomic(tmp_path / "a.txt", "text")
    write_atomic(tmp_path / "b.bin", b"\x00\x01")
    (tmp_path / "c.partial").write_bytes(b"framework output")
    publish_atomic(tmp_path / "c.partial", tmp_path / "c.bin")
    assert (tmp_path / "a.txt").read_text() == "text"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "c.bin").read_bytes() == b"framework output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.bin"]
