"""The report marks the points made with noisy runs: a ring around each, and the count in the
panel's title, so that a low point is not read as the framework's."""

from __future__ import annotations

from pathlib import Path

from controller.analysis.figures.data import ThroughputPoint
from controller.analysis.figures.plots import NOISY_RING, Palette, throughput


def _point(batch: int, sps: float, noisy: bool) -> ThroughputPoint:
    return ThroughputPoint("fake", "null", "", "h", batch, 5, sps, sps * 0.98, sps * 1.02, "t", "none", noisy)


def test_noisy_points_are_ringed_and_counted(tmp_path: Path) -> None:
    points = [_point(1, 100.0, False), _point(2, 150.0, True), _point(4, 190.0, False)]
    drawn = throughput(points, [], Palette(["null"], [""]), tmp_path)
    assert drawn is not None
    svg = (tmp_path / drawn.svg).read_text()
    assert "1 of 3 points with noisy runs (ringed)" in svg
    assert svg.count(NOISY_RING) >= 1
    (tmp_path / "quiet").mkdir()
    quiet = throughput([_point(1, 100.0, False)], [], Palette(["null"], [""]), tmp_path / "quiet")
    assert quiet is not None
    quiet_svg = (tmp_path / "quiet" / quiet.svg).read_text()
    assert NOISY_RING not in quiet_svg and "noisy" not in quiet_svg
