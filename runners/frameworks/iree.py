"""IREE: the ONNX artifact imported to MLIR (IREE's ONNX importer) and compiled ahead of time by
iree-compile, for the CPU (llvm-cpu, with the host's CPU features) or CUDA; run by IREE's runtime.

Import and compilation both happen in the compile phase. Compiled modules (.vmfb) are cached,
keyed by the ONNX file's digest, IREE's version, the target (CPU model and features, or GPU
architecture), the input shapes and the options that change code generation. With static shapes
(the default) there is one module per set of input shapes the run feeds: every dimension of every
input fixed, the named ones (a sequence length) as well as the batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probes import gpu
from probes.fingerprint import cpu_flags, cpu_model
from runners.base import Runner, Unsupported
from runners.core import cores
from runners.core.common import Inputs
from runners.core.shapes import ShapeKey, batch_shapes, output_shape, shape_dims, shape_key, shapes_note
from schemas.atomic import write_atomic
from schemas.devices import nvidia_gpu_present
from schemas.frameworks.iree import IreeOptions

# Older CUDA architectures to fall back to (as PTX) when iree-compile lacks the GPU's own.
FALLBACK_CUDA_ARCHS = ("sm_89", "sm_86", "sm_80")


def _sm(arch: str) -> int:
    return int(arch.removeprefix("sm_").rstrip("a"))


class CompileError(RuntimeError):
    """iree-compile (or the ONNX importer) refused the model; the message is the tool's reason."""


def compiler_reason(stderr: str, limit: int = 3) -> str:
    """The tool's `error:` lines (its reason), else its last lines, shortened."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [re.sub(r"^.*?error: ", "", ln) for ln in lines if "error:" in ln]
    chosen = errors[:limit] or lines[-limit:]
    return " / ".join(s[:400] for s in chosen) or "no output"


def cache_key(
    onnx_sha256: str,
    version: str,
    target: dict[str, str],
    shapes: dict[str, list[int]] | None,
    options: IreeOptions,
) -> str:
    codegen = {"target_cpu", "opt_level"}
    if options.ukernels != "default":  # so that modules compiled before the option keep their keys
        codegen.add("ukernels")
    payload = {
        "onnx": onnx_sha256,
        "iree": version,
        "target": target,
        "shapes": shapes,
        "options": options.model_dump(include=codegen),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


class IreeRunner(Runner[IreeOptions]):
    devices = ("cpu", "cuda")

    def import_framework(self) -> None:
        if self.spec.device.startswith("cuda") and not nvidia_gpu_present():
            raise Unsupported(
                f"IREE's CUDA target needs an NVIDIA GPU; this host has none for {self.spec.device} "
                "(no /dev/nvidia* device)"
            )
        import iree.compiler
        import iree.runtime

        self.compiler = iree.compiler
        self.rt = iree.runtime
        self._threads = None if self.spec.device.startswith("cuda") else self.options.threads or cores.given()
        if self._threads is not None:
            self.rt.flags.parse_flags(f"--task_topology_group_count={self._threads}")

    def version(self) -> str:
        from importlib import metadata

        return metadata.version("iree-base-runtime")

    def read_model(self) -> None:
        import onnx

        self.onnx = onnx
        self.proto = onnx.load(str(self.model_path("onnx")))
        # The compiled function takes the graph's inputs (not its weights) in the graph's order,
        # and returns its outputs in the graph's order.
        self._order, self._outputs = self.onnx_io(self.proto.graph)

    def _target(self, arch: str | None = None) -> tuple[dict[str, str], list[str]]:
        """The target description (for the cache key) and iree-compile's target flags."""
        if self.spec.device.startswith("cuda"):
            arch = arch or self._cuda_arch()
            return {"device": "cuda", "arch": arch}, [
                "--iree-hal-target-device=cuda",
                f"--iree-cuda-target={arch}",
            ]
        cpu = self.options.target_cpu
        target = {"device": "llvm-cpu", "cpu": cpu, "machine": os.uname().machine}
        if cpu == "host":
            target["model"] = cpu_model()
            target["features"] = hashlib.sha256(" ".join(cpu_flags()).encode()).hexdigest()[:16]
        return target, [
            "--iree-hal-target-device=local",
            "--iree-hal-local-target-device-backends=llvm-cpu",
            f"--iree-llvmcpu-target-cpu={cpu}",
            *self._ukernel_flags(),
        ]

    def _ukernel_flags(self) -> list[str]:
        """llvm-cpu's microkernels flag; none for "default" (iree-compile's own choice)."""
        ukernels = self.options.ukernels
        return [] if ukernels == "default" else [f"--iree-llvmcpu-enable-ukernels={ukernels}"]

    def _cuda_arch(self) -> str:
        nvml = gpu.load_nvml()
        if nvml is None:
            raise Unsupported("IREE's CUDA target needs the GPU's compute capability; NVML is unavailable")
        handle = nvml.nvmlDeviceGetHandleByIndex(gpu.physical_index(self.spec.device))
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        return f"sm_{major}{minor}"

    def _supported_cuda_target(
        self, target: dict[str, str], flags: list[str]
    ) -> tuple[dict[str, str], list[str]]:
        """The GPU's own architecture when this iree-compile knows it; else the newest older one it
        knows, as PTX that the driver compiles for the GPU when the module loads (CUDA's forward
        compatibility). iree-compile 3.13 knows sm_80..sm_89, not sm_90 (H100, H200)."""
        probe = self._with_shapes(self.compile_shapes()[0])
        for arch in [target["arch"], *(a for a in FALLBACK_CUDA_ARCHS if _sm(a) < _sm(target["arch"]))]:
            candidate, candidate_flags = self._target(arch)
            with tempfile.TemporaryDirectory(prefix="iree-probe-") as tmp:
                try:
                    self._import(probe, Path(tmp))
                    self._compile_mlir(
                        Path(tmp) / "model.mlir", [*candidate_flags, "--compile-to=executable-configurations"]
                    )
                except CompileError as e:
                    if "missing GPU target" in str(e) or "Unknown CUDA target" in str(e):
                        continue
                    raise
            if arch != target["arch"]:
                candidate["ptx_for"] = target["arch"]
            return candidate, candidate_flags
        raise CompileError(f"iree-compile knows no CUDA target for {target['arch']} or older")

    def _with_shapes(self, shapes: dict[str, list[int]] | None) -> Any:
        """The ONNX graph with every input's dimensions fixed to these shapes (None: left
        dynamic), and its outputs' at what those fix (the batch, named dimensions); an output
        dimension they do not fix is cleared, for the compiler to infer."""
        if shapes is None:
            return self.proto
        proto = self.onnx.ModelProto()
        proto.CopyFrom(self.proto)
        for value in proto.graph.input:
            if value.name in shapes:
                _set_dims(value.type.tensor_type.shape.dim, shapes[value.name])
        batch, dims = shape_dims(self.manifest, shapes)
        infos = {t.name: t for t in self.manifest.outputs}
        only = self.manifest.outputs[0] if len(proto.graph.output) == 1 else None
        for value in proto.graph.output:
            info = infos.get(value.name) or only
            dim = value.type.tensor_type.shape.dim
            if info is not None and len(info.shape) == len(dim):
                _set_dims(dim, output_shape(info, batch, dims))
            else:
                _set_dims(dim, [d.dim_value if d.HasField("dim_value") else None for d in dim])
        return proto

    def _build(self, shapes: dict[str, list[int]] | None, flags: list[str], work: Path) -> bytes:
        """Import (ONNX -> MLIR) and compile one module."""
        return self._compile_mlir(self._import(self._with_shapes(shapes), work), flags)

    def _import(self, proto: Any, work: Path) -> Path:
        """ONNX -> MLIR (IREE's ONNX importer) in `work`."""
        from iree.compiler.tools.import_onnx import __main__ as importer

        onnx_file, mlir_file = work / "model.onnx", work / "model.mlir"
        self.onnx.save(proto, str(onnx_file))
        try:
            importer.main(importer.parse_arguments([str(onnx_file), "-o", str(mlir_file)]))
        except Exception as e:
            raise CompileError(f"IREE's ONNX importer failed: {compiler_reason(str(e))}") from None
        return mlir_file

    def _compile_mlir(self, mlir_file: Path, flags: list[str]) -> bytes:
        try:
            vmfb: bytes = self.compiler.compile_file(
                str(mlir_file),
                input_type="onnx",
                extra_args=[*flags, f"--iree-opt-level={self.options.opt_level}"],
            )
        except self.compiler.CompilerToolError as e:
            raise CompileError(f"iree-compile failed: {compiler_reason(str(e))}") from None
        return vmfb

    def compile(self) -> tuple[bool | None, str | None]:
        o = self.options
        target, flags = self._target()
        if target.get("device") == "cuda":
            target, flags = self._supported_cuda_target(target, flags)
        planned = sorted(self.compile_shapes(), key=lambda one: shape_key(one, self._order))
        plans: list[dict[str, list[int]] | None] = [*planned] if o.static_shapes else [None]
        cache = self.cache_dir / "iree"
        digest = self.manifest.files["onnx"].sha256
        built: dict[ShapeKey | None, Path] = {}
        modules: dict[ShapeKey | None, bytes] = {}
        for one in plans:
            key = None if one is None else shape_key(one, self._order)
            path = cache / f"{cache_key(digest, self.version(), target, one, o)}.vmfb"
            if o.cache and path.exists():
                modules[key] = path.read_bytes()
                continue
            with tempfile.TemporaryDirectory(prefix="iree-") as tmp:
                modules[key] = self._build(one, flags, Path(tmp))
            built[key] = path
        self._load(modules)
        if o.cache:
            cache.mkdir(parents=True, exist_ok=True)
            for key, path in built.items():
                write_atomic(path, modules[key])
                # What the module is, for people and tools (iree-benchmark-module) reading the cache.
                about = {
                    "inputs": None if key is None else dict(zip(self._order, map(list, key), strict=True)),
                    "function": self.function_name,
                    "flags": flags,
                    "iree": self.version(),
                }
                write_atomic(path.with_suffix(".json"), json.dumps(about, indent=1) + "\n")
        hit = not built if o.cache else None
        ptx = f" (PTX, compiled by the driver for {target['ptx_for']})" if "ptx_for" in target else ""
        keys = [k for k in modules if k is not None]
        note = (
            f"target={' '.join(flags[1:])}{ptx}, opt={o.opt_level}, "
            f"shapes={'static ' + shapes_note(keys) if o.static_shapes else 'dynamic'}"
        )
        return hit, note

    def _load(self, modules: dict[ShapeKey | None, bytes]) -> None:
        rt = self.rt
        if self.spec.device.startswith("cuda"):
            device = rt.get_device(f"cuda://{gpu.physical_index(self.spec.device)}")
            self.config = rt.Config(device=device)
        else:
            self.config = rt.Config("local-task")
        self.functions: dict[ShapeKey | None, Any] = {}
        self.contexts = []
        for key, vmfb in modules.items():
            module = rt.VmModule.copy_buffer(self.config.vm_instance, vmfb)
            context = rt.SystemContext(config=self.config)
            context.add_vm_module(module)
            name = next(f for f in module.function_names if f != "__init" and not f.endswith("$async"))
            self.functions[key] = context.modules[module.name][name]
            self.contexts.append(context)
        self.function_name = name

    def prepare(self, inputs: Inputs) -> Any:
        key = shape_key(batch_shapes(inputs), self._order) if self.options.static_shapes else None
        function = self.functions.get(key)
        if function is None:
            raise RuntimeError(f"no compiled module for input shapes {batch_shapes(inputs)}")
        # In the graph's order, each in its own dtype (integer ids stay integers).
        return function, [np.ascontiguousarray(inputs[n]) for n in self._order]

    def run(self, prepared: Any) -> Any:
        # Host inputs in, host outputs out: the copies are part of what an application sees.
        # On the CPU, to_host maps the result's buffer, which a later call may reuse once the
        # result is dropped: each output is copied out, as an application keeping it must.
        function, arrays = prepared
        result = function(*arrays)
        results = result if isinstance(result, list | tuple) else [result]
        return [np.array(results[i].to_host(), copy=True) for i in self._outputs]

    def threads_used(self) -> int | None:
        return self._threads

    def effective_precision(self) -> str:
        return "fp32"  # compiled as imported: no demotion flags are passed

    def close(self) -> None:
        self.functions = {}
        self.contexts = []


def _set_dims(dims: Any, values: Sequence[int | None]) -> None:
    """Set an ONNX shape's dimensions: a value fixes one, None clears it (unknown)."""
    for dim, value in zip(dims, values, strict=True):
        dim.Clear()
        if value is not None:
            dim.dim_value = value
