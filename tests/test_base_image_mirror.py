"""images/base/build-base.sh takes its Debian mirror from the host's apt sources (PRINT_MIRROR=1
prints the choice without building anything, APT_SOURCES names the files to read)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from controller.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "images" / "base" / "build-base.sh"
FALLBACK = "http://deb.debian.org/debian"

pytestmark = pytest.mark.skipif(shutil.which("awk") is None, reason="no awk")


def mirror(tmp_path: Path, files: dict[str, str], **env: str) -> str:
    paths = []
    for name, text in files.items():
        path = tmp_path / name
        path.write_text(text)
        paths.append(str(path))
    run_env = {k: v for k, v in os.environ.items() if k not in ("MIRROR", "SUITE")}
    run_env.update({"PRINT_MIRROR": "1", "APT_SOURCES": " ".join(paths) or str(tmp_path / "none"), **env})
    proc = subprocess.run(["sh", str(SCRIPT)], env=run_env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


SECURITY_FIRST = """\
Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://mirror.example/debian/
  http://second.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
"""


def test_deb822_main_mirror_not_security(tmp_path: Path) -> None:
    out = mirror(tmp_path, {"debian.sources": SECURITY_FIRST})
    assert out.startswith("http://mirror.example/debian ("), out
    assert "debian.sources" in out


def test_the_suite_wins_over_another_release(tmp_path: Path) -> None:
    other = "Types: deb\nURIs: http://old.example/debian\nSuites: bullseye\nComponents: main\n"
    same = "deb [arch=amd64 signed-by=/k.gpg] http://same.example/debian bookworm main non-free\n"
    files = {"a-other.sources": other, "sources.list": same}
    assert mirror(tmp_path, files).startswith("http://same.example/debian ")
    # Another suite asked for: the bullseye mirror is a Debian mirror too, and ranks first for it.
    assert mirror(tmp_path, files, SUITE="bullseye").startswith("http://old.example/debian ")


def test_non_debian_disabled_and_non_main_entries_are_skipped(tmp_path: Path) -> None:
    files = {
        "ubuntu.sources": "Types: deb\nURIs: http://archive.ubuntu.example/ubuntu\nSuites: noble\n"
        "Components: main\n",
        "off.sources": "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n"
        "Components: main\n",
        "src.sources": "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n"
        "Components: main\n",
        "contrib.list": "deb http://contrib.example/debian bookworm contrib\n",
        "cdrom.list": "deb cdrom:[Debian]/ bookworm main\n",
        "vendor.list": "deb https://packages.vendor.example/apt cloud-sdk-bookworm main\n",
    }
    out = mirror(tmp_path, files)
    assert out.startswith(f"{FALLBACK} (fallback"), out


def test_no_sources_falls_back_and_mirror_overrides(tmp_path: Path) -> None:
    assert mirror(tmp_path, {}).startswith(f"{FALLBACK} (fallback")
    out = mirror(tmp_path, {"debian.sources": SECURITY_FIRST}, MIRROR="http://chosen.example/debian/")
    assert out == "http://chosen.example/debian (from MIRROR)"
