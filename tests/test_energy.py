"""CPU energy from RAPL, checked against a FAKE powercap tree (files written by the test, laid out
as the kernel's /sys/class/powercap): these machines expose no RAPL, so no real counter is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller import doctor
from probes import energy
from runners.core.trackers import HostTrackers
from schemas import GpuTelemetry, MeasurementPolicy
from tests.conftest import Bench, Cli, MakeResult


def fake_powercap(root: Path, packages: dict[int, int], max_range: int = 262_143_328_850) -> Path:
    """A fake powercap tree: package domains with counters (µJ), each with a core sub-domain."""
    for i, uj in packages.items():
        zone = root / f"intel-rapl:{i}"
        zone.mkdir(parents=True)
        (zone / "name").write_text(f"package-{i}\n")
        (zone / "energy_uj").write_text(f"{uj}\n")
        (zone / "max_energy_range_uj").write_text(f"{max_range}\n")
        sub = root / f"intel-rapl:{i}:0"
        sub.mkdir()
        (sub / "name").write_text("core\n")
        (sub / "energy_uj").write_text("5\n")
        (sub / "max_energy_range_uj").write_text(f"{max_range}\n")
    psys = root / "intel-rapl:9"  # a platform domain: not a package, not counted
    psys.mkdir()
    (psys / "name").write_text("psys\n")
    (psys / "energy_uj").write_text("1\n")
    (psys / "max_energy_range_uj").write_text("10\n")
    return root


def set_counter(root: Path, i: int, uj: int) -> None:
    (root / f"intel-rapl:{i}" / "energy_uj").write_text(f"{uj}\n")


def test_packages_only_and_availability(tmp_path: Path) -> None:
    root = fake_powercap(tmp_path / "powercap", {0: 1_000, 1: 2_000})
    domains, unreadable = energy.rapl_packages(root)
    assert [d.name for d in domains] == ["package-0", "package-1"] and not unreadable
    assert energy.availability(root) == "rapl: package-0, package-1"
    assert energy.availability(tmp_path / "none").startswith("unavailable: no RAPL package counters")


def test_tracker_sums_packages_and_survives_a_wrap(tmp_path: Path) -> None:
    root = fake_powercap(tmp_path / "powercap", {0: 10_000_000, 1: 999_000_000}, max_range=1_000_000_000)
    with energy.CpuEnergyTracker(root) as t:
        set_counter(root, 0, 13_000_000)  # +3 J
        set_counter(root, 1, 1_000_000)  # wrapped: +2 J
    assert t.energy_j == pytest.approx(5.0)
    assert t.per_predictions(samples=1024) == pytest.approx(20.0)  # 5 J per 1024 -> 20 J per 4096


def test_unreadable_counters_are_reported_not_read(tmp_path: Path) -> None:
    root = fake_powercap(tmp_path / "powercap", {0: 1})
    counter = root / "intel-rapl:0" / "energy_uj"
    counter.unlink()
    counter.mkdir()  # reading it fails as a root-only counter would for a user
    domains, unreadable = energy.rapl_packages(root)
    assert not domains and unreadable == [str(counter)]
    assert "not readable" in energy.availability(root)
    with energy.CpuEnergyTracker(root) as t:
        pass
    assert t.energy_j is None and t.per_predictions(100) is None


def test_host_trackers_give_cpu_runs_energy_and_gpu_runs_keep_the_gpus(
    tmp_path: Path, make_result: MakeResult
) -> None:
    root = fake_powercap(tmp_path / "powercap", {0: 0})
    m = make_result(batch_sizes=(8,)).measurements[0]
    with HostTrackers(root) as host:
        set_counter(root, 0, 4_000_000)  # 4 J over the steady state
    policy = MeasurementPolicy()
    cpu = host.apply(m, policy)
    samples = m.batch_size * m.iterations
    assert cpu.cpu_energy_j == pytest.approx(4.0) and cpu.energy_source == "rapl"
    assert cpu.energy_j_per_4096 == pytest.approx(4.0 / samples * 4096)
    from probes import gpu

    class Done:  # a GPU tracker that has finished: its telemetry only
        def telemetry(self) -> GpuTelemetry:
            return GpuTelemetry(
                device_index=0, name="fake", samples=3, duration_s=1.0, energy_j=30.0, energy_source="counter"
            )

    on_gpu = gpu.with_telemetry(cpu, Done())  # type: ignore[arg-type]
    assert on_gpu.energy_source == "nvml-counter" and on_gpu.cpu_energy_j == pytest.approx(4.0)
    assert on_gpu.energy_j_per_4096 == pytest.approx(30.0 / samples * 4096)


def test_without_rapl_the_columns_stay_null_and_the_run_says_why(
    tmp_path: Path, make_result: MakeResult
) -> None:
    m = make_result().measurements[0]
    with HostTrackers(tmp_path / "no-powercap") as host:
        pass
    out = host.apply(m, MeasurementPolicy())
    assert out.cpu_energy_j is None and out.energy_j_per_4096 is None and out.energy_source is None


def test_doctor_reads_rapl(tmp_path: Path) -> None:
    assert doctor._rapl(fake_powercap(tmp_path / "p", {0: 1})).level == "ok"
    assert doctor._rapl(tmp_path / "absent").level == "note"


def test_doctor_here(cli: Cli, bench: Bench) -> None:
    """On this host: the findings a CPU-only machine gives, each with its consequence; exit 0."""
    result = cli("doctor", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    found = {f["check"]: f for f in doc["findings"]}
    assert {"store", "disk", "docker", "gpus", "cpu-energy", "other-load", "images", "models"} <= set(found)
    assert all(f["meaning"] for f in doc["findings"]) and doc["can_measure"] is True
    if not Path("/dev/nvidia0").exists():
        assert found["gpus"]["level"] == "note" and "unsupported" in found["gpus"]["meaning"]
    if not list(Path("/sys/class/powercap").glob("intel-rapl:*")):
        assert "NULL" in found["cpu-energy"]["meaning"]


def test_doctor_fails_on_a_store_it_cannot_write(cli: Cli, bench: Bench, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    bad = folder / "results.duckdb"
    bad.write_text("not a database")
    result = cli("doctor", "--db", bad)
    assert result.exit_code == 1 and "cannot measure" in result.output
