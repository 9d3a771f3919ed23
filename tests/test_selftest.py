"""The GPU acceptance check's machinery, on this machine: skip reasons, verdicts, the wheelhouse."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from gpucheck import check as selftest
from gpucheck.check import Outcome


def test_every_path_has_a_gpu_test_and_a_reason_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make gpu-check` end to end where there is no GPU: every path skipped, with its reason."""
    if selftest.gpu_absence() is None:
        pytest.skip("this machine has an NVIDIA GPU: the check runs for real there (make gpu-check)")
    monkeypatch.setattr(selftest, "WORK_DIR", tmp_path)
    report = selftest.run_check(wheelhouse=tmp_path / "no-wheels", timeout_s=120)
    assert report.pytest_exit == 0 and not report.problems, report
    assert [v.key for v in report.verdicts] == [p.key for p in selftest.PATHS]
    for v in report.verdicts:
        assert v.tests >= 1, v
        assert v.verdict == "skipped" and v.why.startswith("no NVIDIA GPU"), v
    lines = selftest.render(report)
    assert len(lines) == 2 + len(selftest.PATHS) + 1
    assert lines[-1].startswith(f"summary: 0 verified, {len(selftest.PATHS)} skipped, 0 failed")
    assert report.seconds < 60


def test_gpu_test_files_are_found_by_their_marks() -> None:
    names = {p.name for p in selftest.gpu_test_files()}
    assert {"test_gpu_paths.py", "test_catalog.py"} <= names
    assert "test_selftest.py" not in names


def test_marker_key() -> None:
    assert selftest.marker_key(()) == selftest.GENERIC
    assert selftest.marker_key(("torch-eager",)) == "torch-eager"
    with pytest.raises(ValueError, match="unknown GPU path 'torch-eagre'"):
        selftest.marker_key(("torch-eagre",))


def fake_env(home: Path, image: str, dirs: list[str]) -> None:
    """A local environment of `image` under `home/envs` with these folders in its site-packages."""
    root = home / "envs" / image
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").write_text("")
    site = root / "lib" / "python3.11" / "site-packages"
    for d in dirs:
        (site / d).mkdir(parents=True)


def test_skip_reasons_name_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selftest, "HOME", tmp_path)
    monkeypatch.setattr(selftest, "gpu_absence", lambda: None)
    fake_env(tmp_path, "tf", ["tensorflow", "tensorflow_cpu-2.21.0.dist-info", "pydantic"])
    reason = selftest.skip_reason("tf-xla")
    assert reason is not None
    assert reason.startswith("package tensorflow not installed in .bench/envs/tf")
    assert "tensorflow-cpu 2.21.0 there is a CPU build" in reason
    fake_env(tmp_path, "ort-gpu", ["onnxruntime", "onnxruntime_gpu-1.31.1.dist-info", "pydantic"])
    assert selftest.interpreter_for("ort-cuda") is not None
    assert selftest.skip_reason("ort-cuda") is None
    # The preflight test runs in this interpreter, which has pydantic and psutil.
    assert selftest.skip_reason("preflight") is None
    reason = selftest.skip_reason("tensorrt")
    assert reason is not None and "package tensorrt not installed" in reason


def test_skip_reasons_put_the_gpu_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selftest, "gpu_absence", lambda: "no NVIDIA GPU: test")
    monkeypatch.setattr(selftest, "docker_absence", lambda: "no NVIDIA container runtime: test")
    assert selftest.skip_reason("gpu") == "no NVIDIA GPU: test"
    assert selftest.skip_reason("docker-gpu") == "no NVIDIA GPU: test; also no NVIDIA container runtime: test"
    monkeypatch.setattr(selftest, "gpu_absence", lambda: None)
    assert selftest.skip_reason("docker-gpu") == "no NVIDIA container runtime: test"


def outcome(result: str, reason: str = "", detail: str = "") -> Outcome:
    return Outcome(path="nvml", nodeid="t::x", outcome=result, reason=reason, detail=detail, seconds=1.0)


def test_judge() -> None:
    path = selftest.BY_KEY["nvml"]
    v = selftest.judge(path, [outcome("passed", detail="40 W"), outcome("failed", "boom")], None)
    assert (v.verdict, v.why) == ("failed", "boom")
    v = selftest.judge(path, [outcome("passed", detail="40 W"), outcome("skipped", "no model")], None)
    assert v.verdict == "verified" and v.why == "40 W; 1 part(s) skipped: no model"
    v = selftest.judge(path, [outcome("skipped", "no NVIDIA GPU")], None)
    assert (v.verdict, v.why) == ("skipped", "no NVIDIA GPU")
    v = selftest.judge(path, [], "not finished within the check's 450 s")
    assert (v.verdict, v.why) == ("failed", "not finished within the check's 450 s")


def test_pins_come_from_the_torch_image_lock() -> None:
    blocks = selftest._pinned_blocks(selftest.PIN_SOURCE, selftest.WHEEL_PACKAGES)
    assert set(blocks) == set(selftest.WHEEL_PACKAGES)
    for name, block in blocks.items():
        assert block[0].startswith(f"{name}=="), block[0]
        assert any("--hash=sha256:" in line for line in block[1:]), name


def make_wheel(folder: Path, filename: str, module: str) -> Path:
    path = folder / filename
    dist = filename.split("-")[0]
    version = filename.split("-")[1]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{module}/__init__.py", "VALUE = 42\n")
        z.writestr(f"{dist}-{version}.dist-info/METADATA", f"Name: {dist}\nVersion: {version}\n")
        z.writestr(f"{dist}-{version}.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n")
        z.writestr(f"{dist}-{version}.dist-info/RECORD", "")
    return path


def test_wheels_unpack_without_pip(tmp_path: Path) -> None:
    house = tmp_path / "house"
    house.mkdir()
    make_wheel(house, "fake_pkg-1.0-py3-none-any.whl", "fake_pkg")
    make_wheel(house, "other_pkg-2.0-cp27-cp27m-win32.whl", "other_pkg")
    site = tmp_path / "site"
    with pytest.raises(selftest.CheckError, match="no wheel of other-pkg for this Python"):
        selftest.install_wheels(house, site, use_pip=False)
    (house / "other_pkg-2.0-cp27-cp27m-win32.whl").unlink()
    note = selftest.install_wheels(house, site, use_pip=False)
    assert "unpacked" in note and (site / "fake_pkg" / "__init__.py").exists()
    assert "already installed" in selftest.install_wheels(house, site, use_pip=False)


def test_compatible_wheels_by_tags() -> None:
    import sys

    ours = f"cp{sys.version_info.major}{sys.version_info.minor}"
    names = [
        f"pydantic_core-2.50.5-{ours}-{ours}-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "pydantic_core-2.50.5-cp39-cp39-manylinux2014_x86_64.whl",
        "psutil-7.2.2-cp36-abi3-manylinux2010_x86_64.manylinux_2_12_x86_64.whl",
        "pydantic-2.14.4-py3-none-any.whl",
    ]
    chosen = {p.name for p in selftest._compatible([Path(n) for n in names])}
    import platform

    if platform.machine() == "x86_64":
        assert chosen == {names[0], names[2], names[3]}
    else:
        assert chosen == {names[3]}


def test_a_test_file_that_cannot_be_imported_fails_its_paths_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_broken.py").write_text(
        "import pytest\nimport no_such_module_here\n\n\n@pytest.mark.gpu('nvml')\ndef test_x():\n    pass\n"
    )
    (tests / "test_fine.py").write_text(
        "import pytest\n\n\n@pytest.mark.gpu('preflight')\ndef test_y(record_property):\n"
        "    record_property('detail', 'fine')\n"
    )
    monkeypatch.setattr(selftest, "TESTS_DIR", tests)
    monkeypatch.setattr(selftest, "WORK_DIR", tmp_path / "work")
    report = selftest.run_check(wheelhouse=tmp_path / "no-wheels", timeout_s=60)
    verdicts = {v.key: v for v in report.verdicts}
    assert (verdicts["preflight"].verdict, verdicts["preflight"].why) == ("verified", "fine")
    assert verdicts["nvml"].verdict == "failed" and "no_such_module_here" in verdicts["nvml"].why
    assert any("cannot collect" in p and "no_such_module_here" in p for p in report.problems)
    assert not report.ok
