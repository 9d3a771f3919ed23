"""The GPU acceptance check: every GPU path of the fleet run for real, or skipped with its reason.

`run_check()` runs the `gpu`-marked tests with pytest in a child process (the plugin
`gpucheck.plugin` writes one record per test), maps the tests to the paths in `PATHS`
and returns a `Report`; `render()` makes one line per path and a summary of it. `make gpu-check`
is `python -m gpucheck.check`; `bench-ctl doctor --selftest` is to call `run_check()` too.

The same module tells the tests why a path cannot run here (`skip_reason`) and which interpreter
has a path's frameworks (`interpreter_for`): the running one, or the image's local environment.

It imports nothing beyond the standard library, because it must start on a bare GPU machine
(Python, PyTorch and the driver; not our dependencies) and install what the tests need first,
from a wheelhouse made beforehand with `python -m gpucheck.check wheels` (`make gpu-wheels`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from controller.paths import REPO_ROOT
from schemas.devices import nvidia_gpu_present

# The state folder when the check started; pytest's fixtures later point BENCH_HOME elsewhere.
HOME_ENV = "BENCH_SELFTEST_HOME"
HOME = Path(os.environ.get(HOME_ENV) or os.environ.get("BENCH_HOME") or REPO_ROOT / ".bench").resolve()
WHEELHOUSE_ENV = "BENCH_GPU_WHEELS"
RECORD_ENV = "BENCH_SELFTEST_RECORD"
DEFAULT_WHEELHOUSE = HOME / "gpu-wheels"
WORK_DIR = HOME / "gpu-check"
DEFAULT_TIMEOUT_S = 450.0  # the tests' share of the 8 minutes the check may take on a GPU
TESTS_DIR = REPO_ROOT / "tests"

# What the check brings to a machine that lacks it, pinned as in the torch image.
WHEEL_PACKAGES = (
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
    "onnx2torch",
    "psutil",
)
PIN_SOURCE = REPO_ROOT / "images" / "torch" / "requirements.lock"
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
# The model shipped beside the wheels (the store's copy, without its SavedModel).
SHIPPED_MODEL = "mobilenetv2"
SHIPPED_ROLES = ("onnx", "reference_input", "reference_output")

Verdict = Literal["verified", "skipped", "failed"]


class CheckError(Exception):
    """The check cannot start at all (no pytest, no pydantic and no wheelhouse, ...)."""


# --------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class Need:
    """A package a path needs, as an interpreter would import it."""

    package: str  # what one installs
    module: str  # its top-level import name
    builds: tuple[str, ...] = ()  # distributions that count (a GPU build); empty: any providing `module`
    library: str | None = None  # a shared library that also satisfies the need
    hint: str = ""


PYDANTIC = Need("pydantic", "pydantic", hint="make gpu-wheels brings it")
PSUTIL = Need("psutil", "psutil", hint="make gpu-wheels brings it")
TORCH = Need("torch", "torch")
ONNX = Need("onnx", "onnx")
ONNX2TORCH = Need("onnx2torch", "onnx2torch", hint="make gpu-wheels brings it")
NVML = Need("nvidia-ml-py", "pynvml")
TENSORRT = Need(
    "tensorrt", "tensorrt", hint="its wheels come from pypi.nvidia.com: build the trt10 environment"
)
CUDA_PYTHON = Need("cuda-python", "cuda")
ORT_GPU = Need("onnxruntime-gpu", "onnxruntime", builds=("onnxruntime-gpu",))
TRT_LIBS = Need(
    "tensorrt-cu12-libs", "tensorrt_libs", library="nvinfer", hint="libnvinfer, for the TensorRT provider"
)
TF_GPU = Need(
    "tensorflow",
    "tensorflow",
    builds=("tensorflow", "tensorflow-gpu", "tf-nightly"),
    hint="pip install 'tensorflow[and-cuda]'",
)
TORCH_RUN = (PYDANTIC, TORCH, ONNX, ONNX2TORCH)


@dataclass(frozen=True)
class GpuPath:
    key: str
    title: str
    needs: tuple[Need, ...] = ()
    image: str | None = None  # the image whose local environment may have the needs
    docker: bool = False  # needs a Docker engine with the NVIDIA container runtime


PATHS: tuple[GpuPath, ...] = (
    GpuPath("preflight", "GPU host seen, CUDA images pass preflight", (PYDANTIC, PSUTIL)),
    GpuPath("torch-eager", "PyTorch eager on cuda:0 vs fp32 reference", TORCH_RUN, "torch"),
    GpuPath("torch-compile", "torch.compile on cuda:0 vs fp32 reference", TORCH_RUN, "torch"),
    GpuPath("torch-cudagraphs", "CUDA graphs on cuda:0 vs fp32 reference", TORCH_RUN, "torch"),
    GpuPath(
        "nvml", "NVML: power, energy counter, memory, clocks, throttling", (PYDANTIC, TORCH, NVML), "torch"
    ),
    GpuPath("energy", "energy_j_per_4096 of a real run", (*TORCH_RUN, NVML), "torch"),
    GpuPath(
        "tensorrt", "TensorRT build, cache hit, fp16 recorded", (PYDANTIC, TENSORRT, CUDA_PYTHON), "trt10"
    ),
    GpuPath("ort-cuda", "ONNX Runtime CUDA provider, I/O binding", (PYDANTIC, ORT_GPU), "ort-gpu"),
    GpuPath(
        "ort-tensorrt",
        "ONNX Runtime TensorRT provider, I/O binding",
        (PYDANTIC, ORT_GPU, TRT_LIBS),
        "ort-gpu",
    ),
    GpuPath("tf-xla", "TensorFlow on GPU with XLA", (PYDANTIC, TF_GPU), "tf"),
    GpuPath("docker-gpu", "Docker GPU device request", (), docker=True),
)
BY_KEY = {p.key: p for p in PATHS}
GENERIC = "gpu"  # a `gpu` test that names no path: it needs a GPU, nothing more


def marker_key(args: Sequence[object]) -> str:
    """The path a `@pytest.mark.gpu("key")` marker names (GENERIC when it names none)."""
    if not args:
        return GENERIC
    key = str(args[0])
    if key not in BY_KEY:
        raise ValueError(f"unknown GPU path {key!r} in a gpu marker; known: {', '.join(BY_KEY)}")
    return key


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Interpreter:
    """A Python that may run a path: the running one (site is None) or an image's local environment."""

    executable: str
    label: str
    site: Path | None = None

    def has_module(self, module: str) -> bool:
        if self.site is None:
            try:
                return importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                return False
        s = self.site
        return (s / module).is_dir() or (s / f"{module}.py").exists() or any(s.glob(f"{module}.*.so"))

    @functools.cached_property
    def distributions(self) -> dict[str, str]:
        """Installed distributions, normalized name -> version."""
        if self.site is None:
            found: dict[str, str] = {}
            for dist in importlib.metadata.distributions():
                name = dist.metadata["Name"]
                if name:
                    found.setdefault(_norm(name), dist.version)
            return found
        found = {}
        for info in self.site.glob("*.dist-info"):
            name, _, version = info.name.removesuffix(".dist-info").partition("-")
            found[_norm(name)] = version
        return found

    def missing(self, need: Need) -> str | None:
        """Why `need` is not met here, or None."""
        where = "" if self.site is None else f" in {self.label}"
        if need.library is not None and _has_library(need.library):
            return None
        notes = [need.hint] if need.hint else []
        if self.has_module(need.module):
            if not need.builds or any(_norm(b) in self.distributions for b in need.builds):
                return None
            prefix = _norm(need.module)
            others = [f"{n} {v}" for n, v in sorted(self.distributions.items()) if n.startswith(prefix)]
            if others:
                here = "here" if self.site is None else "there"
                notes.insert(0, f"{', '.join(others)} {here} is a CPU build")
        more = f" ({'; '.join(notes)})" if notes else ""
        return f"package {need.package} not installed{where}{more}"

    def env(self) -> dict[str, str]:
        """Environment for a child process: the running interpreter gets the repository on its path;
        a local environment has its own (a `.pth` file) and must not see this one's."""
        env = dict(os.environ)
        if self.site is None:
            parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
            env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *parts])
        else:
            env.pop("PYTHONPATH", None)
        return env


def _has_library(name: str) -> bool:
    import ctypes.util

    return ctypes.util.find_library(name) is not None


def running_interpreter() -> Interpreter:
    return Interpreter(sys.executable, "this Python")


def env_interpreter(image: str) -> Interpreter | None:
    root = HOME / "envs" / image
    python = root / "bin" / "python"
    site = next(iter(sorted((root / "lib").glob("python3*/site-packages"))), None)
    if not python.exists() or site is None:
        return None
    return Interpreter(str(python), f".bench/envs/{image}", site)


def resolve(path: GpuPath) -> tuple[Interpreter | None, list[str]]:
    """The first interpreter with everything `path` needs, else (None, what the closest one lacks)."""
    candidates = [running_interpreter()]
    if path.image is not None:
        env = env_interpreter(path.image)
        if env is not None:
            candidates.append(env)
    best: list[str] | None = None
    for interp in candidates:
        missing = [m for m in (interp.missing(n) for n in path.needs) if m is not None]
        if not missing:
            return interp, []
        if best is None or len(missing) <= len(best):  # a tie: the image's environment says more
            best = missing
    return None, best or []


def interpreter_for(key: str) -> Interpreter | None:
    return resolve(BY_KEY[key])[0]


@functools.cache
def gpu_absence() -> str | None:
    """Why this machine has no usable NVIDIA GPU, or None when it has one."""
    if nvidia_gpu_present():
        return None
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "no NVIDIA GPU: no /dev/nvidia* device, no nvidia-smi"
    try:
        proc = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"no NVIDIA GPU: nvidia-smi -L failed ({e})"
    if proc.returncode == 0 and "GPU " in proc.stdout:
        return None
    said = (proc.stderr or proc.stdout).strip().splitlines()[:1] or ["no GPU listed"]
    return f"no NVIDIA GPU: nvidia-smi -L says {said[0]!r}"


@functools.cache
def gpu_name() -> str | None:
    """`name, driver` of GPU 0 from nvidia-smi, for the report's header."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        proc = subprocess.run(
            [smi, "--query-gpu=name,driver_version", "--format=csv,noheader", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = proc.stdout.strip().splitlines()[:1]
    if proc.returncode != 0 or not line:
        return None
    name, _, driver = line[0].partition(",")
    return f"{name.strip()} (driver {driver.strip()})" if driver else name.strip()


NVIDIA_CDI_SPECS = ("/etc/cdi/nvidia*.yaml", "/var/run/cdi/nvidia*.yaml", "/etc/cdi/nvidia*.json")


@functools.cache
def docker_absence() -> str | None:
    """Why Docker cannot hand a GPU to a container here, or None when it can."""
    socket = Path("/var/run/docker.sock")
    if importlib.util.find_spec("docker") is None:
        if not socket.exists() and "DOCKER_HOST" not in os.environ:
            return "no Docker engine: no /var/run/docker.sock"
        return "package docker not installed (the Docker SDK for Python)"
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            info = client.info()
        finally:
            client.close()
    except Exception as e:
        return f"no Docker engine answering ({type(e).__name__}: {str(e)[:120]})"
    runtimes = sorted(info.get("Runtimes") or {})
    if "nvidia" in runtimes or shutil.which("nvidia-container-runtime-hook"):
        return None
    if any(any(Path("/").glob(spec.lstrip("/"))) for spec in NVIDIA_CDI_SPECS):
        return None
    return (
        "no NVIDIA container runtime: no nvidia-container-runtime-hook, no nvidia CDI spec, and "
        f"docker's runtimes are {', '.join(runtimes) or 'none'} (install nvidia-container-toolkit)"
    )


def skip_reason(key: str) -> str | None:
    """Why the path `key` cannot run here (the first reason, then what else is missing), or None."""
    reasons: list[str] = []
    gpu = gpu_absence()
    if gpu is not None:
        reasons.append(gpu)
    if key == GENERIC:
        return reasons[0] if reasons else None
    path = BY_KEY[key]
    if path.docker:
        docker = docker_absence()
        if docker is not None:
            reasons.append(docker)
    if path.needs:
        interp, missing = resolve(path)
        if interp is None:
            reasons.extend(missing)
    if not reasons:
        return None
    return reasons[0] + ("; also " + "; ".join(reasons[1:]) if len(reasons) > 1 else "")


# --------------------------------------------------------------------------- wheelhouse


def _pinned_blocks(lock: Path, packages: Sequence[str]) -> dict[str, list[str]]:
    """`name==version` with its `--hash` lines, for each package, from a uv-compiled lock file."""
    wanted = {_norm(p) for p in packages}
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lock.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            name = _norm(re.split(r"[=<>\[ ;]", line, maxsplit=1)[0])
            current = blocks.setdefault(name, []) if name in wanted else None
            if current is not None:
                current.append(line)
        elif current is not None and line.strip().startswith("--hash"):
            current.append(line)
    missing = wanted - set(blocks)
    if missing:
        raise CheckError(f"{lock} pins no {', '.join(sorted(missing))}")
    return blocks


def _wheel_name(path: Path) -> tuple[str, str, str]:
    """(normalized distribution, version, python tags) of a wheel file."""
    parts = path.name.removesuffix(".whl").split("-")
    return _norm(parts[0]), parts[1], parts[-3]


def _size_mb(paths: Sequence[Path]) -> float:
    return sum(p.stat().st_size for p in paths if p.is_file()) / 1e6


@dataclass
class Wheelhouse:
    dest: str
    wheels: list[str]
    wheels_mb: float
    model: str | None
    model_mb: float

    @property
    def total_mb(self) -> float:
        return self.wheels_mb + self.model_mb


def build_wheelhouse(
    dest: Path,
    python_version: str = "3.12",
    with_model: bool = True,
    log: Callable[[str], None] = print,
) -> Wheelhouse:
    """Download the pinned wheels for `python_version` (manylinux x86_64, hash-checked) into `dest`,
    and copy the model store's mobilenetv2 (ONNX and reference files) beside them."""
    blocks = _pinned_blocks(PIN_SOURCE, WHEEL_PACKAGES)
    pins = {name: block[0].split("==")[1].split()[0] for name, block in blocks.items()}
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):  # other versions of our packages: pip would pick the newest
        name, version, _ = _wheel_name(old)
        if name in pins and pins[name] != version:
            old.unlink()
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
        req.write("\n".join(line for block in blocks.values() for line in block) + "\n")
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        cmd += ["--no-deps", "--require-hashes", "--only-binary=:all:", "--implementation", "cp"]
        cmd += ["--python-version", python_version, "-d", str(dest), "-r", req.name]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        log(f"downloading {len(blocks)} pinned wheels for Python {python_version} into {dest}")
        proc = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        os.unlink(req.name)
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln] or proc.stderr.splitlines()[-1:]
        raise CheckError(f"pip download failed: {' / '.join(errors)[:500]}")
    wheels = sorted(dest.glob("*.whl"))
    model_files: list[Path] = []
    model = None
    if with_model:
        model_files = _copy_model(HOME / "models" / SHIPPED_MODEL, dest / "models" / SHIPPED_MODEL, log)
        model = SHIPPED_MODEL if model_files else None
    return Wheelhouse(
        dest=str(dest),
        wheels=[w.name for w in wheels],
        wheels_mb=_size_mb(wheels),
        model=model,
        model_mb=_size_mb(model_files),
    )


def _copy_model(src: Path, dst: Path, log: Callable[[str], None]) -> list[Path]:
    manifest = src / "manifest.json"
    if not manifest.exists():
        log(f"no {src.name} in the model store ({src}): the check will make a small ONNX model instead")
        return []
    files = json.loads(manifest.read_text())["files"]
    dst.mkdir(parents=True, exist_ok=True)
    copied = [dst / "manifest.json"]
    shutil.copyfile(manifest, copied[0])
    for role in SHIPPED_ROLES:
        rel = files[role]["path"]
        shutil.copyfile(src / rel, dst / rel)
        copied.append(dst / rel)
    return copied


def install_wheels(wheelhouse: Path, site: Path, use_pip: bool | None = None) -> str:
    """Install every distribution of the wheelhouse into `site` (no index, no dependencies); a
    marker skips the work when the same wheels are already there. Returns what it did."""
    wheels = sorted(wheelhouse.glob("*.whl"))
    if not wheels:
        raise CheckError(f"no wheels in {wheelhouse}: run `make gpu-wheels` where the package index answers")
    stamp = "\n".join([sys.version, *(w.name for w in wheels)])
    marker = site / ".installed-from"
    if marker.exists() and marker.read_text() == stamp:
        return f"wheels from {_rel(wheelhouse)} already installed in {_rel(site)}"
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    names = sorted({_wheel_name(w)[0] for w in wheels})
    if use_pip is None:
        use_pip = importlib.util.find_spec("pip") is not None
    if use_pip:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        cmd += ["--no-index", "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade"]
        cmd += ["--find-links", str(wheelhouse), "--target", str(site), *names]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            said = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln] or proc.stderr.splitlines()[-1:]
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
            raise CheckError(
                f"installing the wheelhouse failed: {' / '.join(said)[:400]} "
                f"(this is Python {version}: make gpu-wheels PYVER={version})"
            )
        how = "pip"
    else:
        chosen = _compatible(wheels)
        for wheel in chosen:
            with zipfile.ZipFile(wheel) as z:
                z.extractall(site)
        missing = sorted(set(names) - {_wheel_name(w)[0] for w in chosen})
        if missing:
            raise CheckError(f"the wheelhouse has no wheel of {', '.join(missing)} for this Python")
        how = "unpacked (no pip here)"
    marker.write_text(stamp)
    return f"installed {len(names)} packages from {_rel(wheelhouse)} into {_rel(site)} ({how})"


def _compatible(wheels: Sequence[Path]) -> list[Path]:
    """One wheel per distribution that this interpreter can use (tags read from the file name)."""
    major, minor = sys.version_info.major, sys.version_info.minor
    ours = f"cp{major}{minor}"
    machine = platform.machine()
    chosen: dict[str, Path] = {}
    for wheel in wheels:
        pys, abis, plats = (set(part.split(".")) for part in wheel.name.removesuffix(".whl").split("-")[-3:])
        stable_abi = "abi3" in abis and any(
            p.startswith("cp3") and p[3:].isdigit() and int(p[3:]) <= minor for p in pys
        )
        py_ok = bool(pys & {"py3", f"py{major}{minor}", ours}) or stable_abi
        abi_ok = bool(abis & {"none", "abi3", ours})
        plat_ok = "any" in plats or any(
            p.startswith(("manylinux", "linux")) and p.endswith(machine) for p in plats
        )
        if py_ok and abi_ok and plat_ok:
            chosen.setdefault(_wheel_name(wheel)[0], wheel)
    return list(chosen.values())


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


# Modules the tests import in this interpreter: pytest and numpy must be here; the wheelhouse
# brings the others (onnx2torch only matters where PyTorch is).
REQUIRED_HERE = ("pytest", "numpy")
FROM_WHEELHOUSE = ("pydantic", "pydantic_core", "annotated_types", "typing_inspection", "psutil")
WITH_TORCH = ("onnx2torch",)


@dataclass
class Preparation:
    paths: list[str] = field(default_factory=list)  # put first on the tests' PYTHONPATH
    note: str = ""


def _lacking() -> list[str]:
    wanted = [*FROM_WHEELHOUSE, *(WITH_TORCH if importlib.util.find_spec("torch") is not None else ())]
    return [m for m in wanted if importlib.util.find_spec(m) is None]


def prepare(wheelhouse: Path) -> Preparation:
    """Make this interpreter able to run the tests: install the wheelhouse where modules lack."""
    absent = [m for m in REQUIRED_HERE if importlib.util.find_spec(m) is None]
    if absent:
        raise CheckError(f"{', '.join(absent)} not installed in {sys.executable}; the check needs them")
    lacking = _lacking()
    if not lacking:
        return Preparation(note="every package the check needs is installed here")
    has_pydantic = importlib.util.find_spec("pydantic") is not None
    if not any(wheelhouse.glob("*.whl")):
        if not has_pydantic:
            raise CheckError(
                f"pydantic is not installed and there is no wheelhouse at {_rel(wheelhouse)}: run "
                "`make gpu-wheels` where the package index answers and bring that folder along"
            )
        return Preparation(note=f"no wheelhouse at {_rel(wheelhouse)}; missing here: {', '.join(lacking)}")
    site = WORK_DIR / f"site-cp{sys.version_info.major}{sys.version_info.minor}"
    try:
        note = install_wheels(wheelhouse, site)
    except CheckError as e:
        if not has_pydantic:
            raise
        return Preparation(note=f"{e}; missing here: {', '.join(lacking)}")
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    still = _lacking()
    if "pydantic" in still:
        raise CheckError(f"pydantic is still not importable after installing {_rel(wheelhouse)}")
    return Preparation(
        paths=[str(site)], note=note + (f"; still missing: {', '.join(still)}" if still else "")
    )


GPU_MARK = re.compile(r"^\s*(@pytest\.mark\.gpu\b|pytestmark\s*=.*\bpytest\.mark\.gpu\b)", re.MULTILINE)


def gpu_test_files() -> list[Path]:
    """Test files with `gpu`-marked tests (read as text: importing them needs their dependencies)."""
    return sorted(p for p in TESTS_DIR.glob("test_*.py") if GPU_MARK.search(p.read_text(encoding="utf-8")))


# --------------------------------------------------------------------------- the check


@dataclass
class Outcome:
    path: str
    nodeid: str
    outcome: str  # passed, failed, skipped
    reason: str = ""
    detail: str = ""
    seconds: float = 0.0


@dataclass
class PathVerdict:
    key: str
    title: str
    verdict: Verdict
    why: str
    tests: int
    seconds: float


@dataclass
class Report:
    python: str
    gpu: str | None
    setup: str
    verdicts: list[PathVerdict]
    seconds: float
    log: str
    pytest_exit: int | None
    problems: list[str] = field(default_factory=list)  # collection errors, timeout

    @property
    def counts(self) -> dict[str, int]:
        return {v: sum(1 for p in self.verdicts if p.verdict == v) for v in ("verified", "skipped", "failed")}

    @property
    def ok(self) -> bool:
        return self.counts["failed"] == 0 and bool(self.verdicts)


def read_records(path: Path) -> tuple[list[Outcome], list[str]]:
    records: list[Outcome] = []
    errors: list[str] = []
    if not path.exists():
        return records, errors
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError, TypeError):
            doc = json.loads(line)
            if "collect_error" in doc:
                errors.append(f"cannot collect {doc['collect_error']}: {doc.get('reason', '')}")
            else:
                records.append(Outcome(**doc))
    return records, errors


def judge(path: GpuPath, records: Sequence[Outcome], unfinished: str | None) -> PathVerdict:
    """One verdict from a path's tests: any failure fails it; else any pass verifies it."""
    seconds = sum(r.seconds for r in records)
    failed = [r for r in records if r.outcome == "failed"]
    passed = [r for r in records if r.outcome == "passed"]
    skipped = [r for r in records if r.outcome == "skipped"]
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return PathVerdict(path.key, path.title, "failed", failed[0].reason + more, len(records), seconds)
    if not records:
        return PathVerdict(path.key, path.title, "failed", unfinished or "no test ran", 0, seconds)
    if passed:
        why = "; ".join(r.detail for r in passed if r.detail)
        if skipped:
            why += f"{'; ' if why else ''}{len(skipped)} part(s) skipped: {skipped[0].reason}"
        return PathVerdict(path.key, path.title, "verified", why, len(records), seconds)
    return PathVerdict(path.key, path.title, "skipped", skipped[0].reason, len(records), seconds)


def run_check(
    wheelhouse: Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Run every GPU path's tests once and judge each path. Raises CheckError if it cannot start."""
    t0 = time.monotonic()
    wheelhouse = (wheelhouse or Path(os.environ.get(WHEELHOUSE_ENV) or DEFAULT_WHEELHOUSE)).resolve()
    prep = prepare(wheelhouse)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    log_path = WORK_DIR / "pytest.log"
    fd, record_name = tempfile.mkstemp(prefix="records-", suffix=".jsonl", dir=WORK_DIR)
    os.close(fd)
    record = Path(record_name)
    env = dict(os.environ)
    old = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([*prep.paths, str(REPO_ROOT), *old])
    env.update({RECORD_ENV: str(record), WHEELHOUSE_ENV: str(wheelhouse), HOME_ENV: str(HOME)})
    env["PYTHONUNBUFFERED"] = "1"
    files = [str(p) for p in gpu_test_files()]
    cmd = [sys.executable, "-m", "pytest", "-p", "gpucheck.plugin", "-p", "no:cacheprovider"]
    # One test file that cannot be imported must not stop the others: its paths fail, with the error.
    cmd += ["-m", "gpu", "-q", "-rs", "--continue-on-collection-errors", "--rootdir", str(REPO_ROOT), *files]
    exit_code: int | None = None
    unfinished: str | None = None
    seen = 0
    with log_path.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                exit_code = proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    unfinished = f"not finished within the check's {timeout_s:.0f} s"
                    break
            finally:
                if progress is not None:
                    records, _ = read_records(record)
                    for r in records[seen:]:
                        if r.outcome != "skipped":
                            progress(
                                f"  ... {r.path}: {r.nodeid.split('::')[-1]} {r.outcome} ({r.seconds:.1f} s)"
                            )
                    seen = len(records)
    records, problems = read_records(record)
    record.unlink(missing_ok=True)
    if unfinished:
        problems.append(f"pytest was stopped: {unfinished}")
    elif exit_code not in (0, 1):
        tail = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()][-1:]
        unfinished = f"pytest exited with {exit_code}: {tail[0] if tail else 'no output'}"
        problems.append(unfinished)
    if problems and not unfinished:
        unfinished = problems[0]
    keys = [p.key for p in PATHS]
    extra = sorted({r.path for r in records} - set(keys))
    verdicts = [judge(p, [r for r in records if r.path == p.key], unfinished) for p in PATHS]
    verdicts += [
        judge(GpuPath(k, "other gpu tests"), [r for r in records if r.path == k], None) for k in extra
    ]
    return Report(
        python=f"Python {sys.version.split()[0]} ({sys.executable})",
        gpu=gpu_name() if gpu_absence() is None else None,
        setup=prep.note,
        verdicts=verdicts,
        seconds=time.monotonic() - t0,
        log=_rel(log_path),
        pytest_exit=exit_code,
        problems=problems,
    )


def render(report: Report) -> list[str]:
    """One line per path, then the summary."""
    lines = [
        f"GPU acceptance check: {report.python}; GPU: {report.gpu or 'none'}",
        f"setup: {report.setup}",
    ]
    width = max(len(v.key) for v in report.verdicts) + 2
    for v in report.verdicts:
        lines.append(f"  {v.key:<{width}}{v.verdict:<9}{v.title}" + (f" ({v.why})" if v.why else ""))
    lines += [f"problem: {p}" for p in report.problems]
    c = report.counts
    lines.append(
        f"summary: {c['verified']} verified, {c['skipped']} skipped, {c['failed']} failed "
        f"of {len(report.verdicts)} GPU paths in {report.seconds:.0f} s (pytest log: {report.log})"
    )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["wheels"]:
        parser = argparse.ArgumentParser(
            prog="python -m gpucheck.check wheels",
            description="Download the wheels the GPU check needs on a bare machine, and the test model.",
        )
        parser.add_argument(
            "--python-version", default="3.12", help="the GPU machine's Python (default 3.12)"
        )
        parser.add_argument("--dest", type=Path, default=DEFAULT_WHEELHOUSE)
        parser.add_argument("--no-model", action="store_true", help="ship no model (the check makes one)")
        w = parser.parse_args(args[1:])
        try:
            house = build_wheelhouse(w.dest, w.python_version, with_model=not w.no_model)
        except CheckError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        model = f" + {house.model} {house.model_mb:.1f} MB" if house.model else ""
        print(
            f"wheelhouse {_rel(Path(house.dest))}: {len(house.wheels)} wheels {house.wheels_mb:.1f} MB"
            f"{model} = {house.total_mb:.1f} MB"
        )
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m gpucheck.check",
        description="GPU acceptance check: one line per GPU path (verified, skipped or failed, and why). "
        "`wheels` prepares the wheelhouse for a bare GPU machine.",
    )
    parser.add_argument("--wheelhouse", type=Path, default=None, help=f"default {_rel(DEFAULT_WHEELHOUSE)}")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds for the tests")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    a = parser.parse_args(args)
    try:
        report = run_check(a.wheelhouse, a.timeout, progress=None if a.json else _say)
    except CheckError as e:
        print(f"error: the GPU check cannot run: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(asdict(report), indent=1))
    else:
        for line in render(report):
            print(line)
    return 0 if report.ok else 1


def _say(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
