"""Build model-store folders: `python -m runners.exporter keras|onnx ...`.

`keras` runs in the tf image: a Keras application with seeded random weights (nothing downloaded),
saved as SavedModel and ONNX (tf2onnx), with a reference batch and TensorFlow fp32 reference outputs.
`onnx` runs in the ort image: a user's ONNX file, reference outputs from ONNX Runtime fp32.

Random weights give nearly flat softmax outputs, on which top-1 agreement is a coin toss and an
absolute error means nothing. So the classifier is calibrated at export: its bias centres the
reference batch's logits and its kernel is scaled until the reference outputs are clearly peaked.
The outcome is checked and recorded in the manifest (`reference_peak_mean`).

Memory: the exporter's peak resident memory is recorded in the manifest (`export_peak_mem_mb`),
and while it runs, the step it is in and its peak so far are kept in `EXPORT_PROGRESS_FILE` of the
output folder, so that bench-ctl can say how far an exporter got when the kernel killed it. See
`to_onnx` for why the conversion uses pure-Python protobuf, and large networks tf2onnx's
large-model route.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import resource
import shutil
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from schemas import ArtifactFile, ModelManifest
from schemas.atomic import write_atomic
from schemas.manifest import EXPORT_PROGRESS_FILE, KERAS_MODELS, InputValues, TensorInfo

REFERENCE_SAMPLES = 8
TARGET_PEAK = 0.6  # mean top-1 probability wanted on the reference batch
MIN_PEAK = 0.2
OPSET = 17
# Networks with more float32 weights than this take tf2onnx's large-model route (see `to_onnx`).
LARGE_WEIGHTS_BYTES = 256 << 20


class ExportError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[export] {msg}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    """Peak resident memory in MiB: the kernel's high-water mark of this process, or of its
    largest finished child process if that is higher."""
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    return peak * unit / (1 << 20)


class Progress:
    """The step the exporter is in and its peak memory so far, in a small JSON file.

    A background thread rewrites the file whenever the peak has grown by `min_growth_mb`. The
    kernel's OOM killer sends SIGKILL, which no process can catch: this file is what tells
    bench-ctl how far the exporter got and how much memory it had taken.
    """

    def __init__(self, path: Path, interval_s: float = 0.5, min_growth_mb: float = 32.0) -> None:
        self.path = path
        self.interval_s = interval_s
        self.min_growth_mb = min_growth_mb
        self.step = "starting"
        self._written_mb = -1.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="export-progress", daemon=True)

    def __enter__(self) -> Progress:
        self._write()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def enter(self, step: str) -> None:
        with self._lock:
            self.step = step
        self._write()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            if peak_rss_mb() >= self._written_mb + self.min_growth_mb:
                self._write()

    def _write(self) -> None:
        with self._lock:
            peak = peak_rss_mb()
            with contextlib.suppress(OSError):
                write_atomic(self.path, json.dumps({"step": self.step, "peak_mem_mb": round(peak, 1)}))
                self._written_mb = peak


_progress: Progress | None = None


def step(msg: str) -> None:
    """Log the start of a step, and note it for a post-mortem."""
    log(msg)
    if _progress is not None:
        _progress.enter(msg)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def artifact(root: Path, rel: str) -> ArtifactFile:
    """A file's digest, or for a folder the digest of its sorted (path, file digest) list."""
    path = root / rel
    if path.is_dir():
        h, size = hashlib.sha256(), 0
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(path)}\0{sha256_file(f)}\n".encode())
            size += f.stat().st_size
        return ArtifactFile(path=rel, sha256=h.hexdigest(), bytes=size)
    return ArtifactFile(path=rel, sha256=sha256_file(path), bytes=path.stat().st_size)


def reference_batch(shape: list[int], seed: int, n: int = REFERENCE_SAMPLES) -> np.ndarray:
    """Varied images in [0, 1): a coarse random pattern per sample, upsampled, plus fine noise,
    each with its own contrast, so samples differ in more than pixel noise."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    coarse = rng.random((n, 7, 7, c), dtype=np.float32)
    up = np.repeat(np.repeat(coarse, -(-h // 7), axis=1), -(-w // 7), axis=2)[:, :h, :w, :]
    fine = rng.random((n, h, w, c), dtype=np.float32)
    mix = rng.uniform(0.5, 0.9, size=(n, 1, 1, 1)).astype(np.float32)
    return (mix * up + (1 - mix) * fine).astype(np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def calibrate_scale(centered_logits: np.ndarray, target: float = TARGET_PEAK) -> float:
    """Scale s such that softmax(s * logits) has mean top-1 probability close to `target`."""
    lo, hi = 0.0, 1.0
    while softmax(hi * centered_logits).max(axis=1).mean() < target and hi < 1e12:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        if softmax(mid * centered_logits).max(axis=1).mean() < target:
            lo = mid
        else:
            hi = mid
    return hi


def normalize_signal(model: Any, batch: np.ndarray) -> str:
    """Make activations keep their scale through a randomly initialised network.

    With default initialisation the signal of a deep random network vanishes (MobileNetV2's
    penultimate features are about 1e-12), so its outputs do not depend on its input. Networks with
    batch normalisation get their moving statistics from one training-mode pass over the reference
    batch (momentum 0, dropout off); others get layer-sequential unit-variance scaling (LSUV).
    """
    import keras

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if bns:
        for layer in model.layers:
            if isinstance(layer, keras.layers.Dropout):
                layer.rate = 0.0
        for bn in bns:
            bn.momentum = 0.0
        model(batch, training=True)
        return f"batch-norm statistics from the reference batch ({len(bns)} layers)"
    kernels = [
        layer
        for layer in model.layers[:-1]
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and layer.get_weights()
    ]
    small = batch[:2]
    for layer in kernels:
        out = keras.Model(model.inputs, layer.output)(small).numpy()
        std = float(out.std())
        if std > 0:
            layer.set_weights([w / std for w in layer.get_weights()])
    return f"layer-sequential unit variance ({len(kernels)} layers)"


def keras_flops(model: Any) -> int:
    """2 x multiply-accumulates of the convolution and dense layers, per sample."""
    import keras

    macs = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            out = layer.output.shape
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                macs += out[1] * out[2] * kh * kw * cin * layer.depth_multiplier
            else:
                macs += out[1] * out[2] * kh * kw * cin * layer.filters // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            macs += layer.input.shape[-1] * layer.units
    return int(2 * macs)


def export_keras(name: str, out: Path, seed: int) -> ModelManifest:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Before TensorFlow imports protobuf: see `to_onnx`.
    os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    import keras
    import tensorflow as tf
    import tf2onnx
    from google.protobuf import __version__ as protobuf_version  # type: ignore[import-untyped]
    from google.protobuf.internal import api_implementation  # type: ignore[import-untyped]

    if name not in KERAS_MODELS:
        raise ExportError(f"unknown Keras model {name!r}; known: {', '.join(KERAS_MODELS)}")
    step(f"building {name} with seeded random weights")
    keras.utils.set_random_seed(seed)
    model = getattr(keras.applications, KERAS_MODELS[name])(weights=None)
    in_shape = [int(d) for d in model.input_shape[1:]]
    ref_in = reference_batch(in_shape, seed)

    step("normalizing the signal and calibrating the classifier")
    init_note = normalize_signal(model, ref_in)
    log(f"{name}: {init_note}")
    head = model.layers[-1]
    if not isinstance(head, keras.layers.Dense):
        raise ExportError(f"{name}: last layer is {type(head).__name__}, expected the Dense classifier")
    features = keras.Model(model.inputs, head.input)(ref_in).numpy().astype(np.float64)
    kernel, bias = (np.asarray(w, dtype=np.float64) for w in head.get_weights())
    mean_feat = features.mean(axis=0)
    centered = (features - mean_feat) @ kernel
    scale = calibrate_scale(centered)
    head.set_weights(
        [(kernel * scale).astype(np.float32), (-(mean_feat @ kernel) * scale).astype(np.float32)]
    )
    del bias

    ref_out = model(ref_in, training=False).numpy()
    peak = float(ref_out.max(axis=1).mean())
    classes = len(set(ref_out.argmax(axis=1).tolist()))
    log(f"{name}: reference top-1 probability mean {peak:.2f}, {classes} distinct classes in {len(ref_in)}")
    if peak < MIN_PEAK:
        raise ExportError(
            f"{name}: reference outputs stay flat (mean top-1 {peak:.3f}); cannot check accuracy"
        )

    np.save(out / "reference_input.npy", ref_in)
    np.save(out / "reference_output.npy", ref_out)
    step("saving SavedModel")
    model.export(str(out / "saved_model"), verbose=False)
    step(f"converting to ONNX (tf2onnx, opset {OPSET})")
    output_name, route = to_onnx(model, in_shape, out / "model.onnx")
    log(f"ONNX written ({route}); peak memory so far {peak_rss_mb():,.0f} MiB")
    step("checking ONNX against TensorFlow")
    _check_onnx(out / "model.onnx", ref_in, ref_out)
    return ModelManifest(
        name=name,
        source="keras",
        created_at=datetime.now(UTC),
        inputs=[
            TensorInfo(
                name="input", shape=[None, *in_shape], layout="NHWC", values=InputValues(kind="uniform")
            )
        ],
        outputs=[TensorInfo(name=output_name, shape=[None, *[int(d) for d in model.output_shape[1:]]])],
        parameters=int(model.count_params()),
        flops_per_sample=keras_flops(model),
        onnx_opset=OPSET,
        seed=seed,
        reference="tensorflow-fp32",
        reference_peak_mean=peak,
        export_peak_mem_mb=peak_rss_mb(),
        files={
            "onnx": artifact(out, "model.onnx"),
            "savedmodel": artifact(out, "saved_model"),
            "reference_input": artifact(out, "reference_input.npy"),
            "reference_output": artifact(out, "reference_output.npy"),
        },
        tools={
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "tf2onnx": tf2onnx.__version__,
            "onnx_conversion": route,
            "protobuf": f"{protobuf_version} ({api_implementation.Type()})",
            "init": f"glorot (keras default), seed {seed}, then {init_note}",
            "flops": "2 x MACs of Conv2D, DepthwiseConv2D and Dense layers",
        },
    )


def to_onnx(model: Any, in_shape: list[int], path: Path) -> tuple[str, str]:
    """Convert with tf2onnx (opset OPSET) into the single file `path`; (output name, route).

    Memory, measured on VGG19 (548 MiB of weights; numbers in docs/decisions.md):

    - tf2onnx rewrites every node's protobuf attributes after each of its ONNX graph optimizers,
      a dozen passes per round. With protobuf's default upb backend, a replaced sub-message stays
      in its parent's arena until the whole message is freed, so each pass kept one more copy of
      every weight: +0.55 GB per pass, past 24 GB in all. The exporter therefore runs with the
      pure-Python backend (PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python, set before TensorFlow
      is imported), which frees a replaced attribute at once. The converted graph is the same.
    - The default route then still peaks near 12 GB for VGG19: freezing, then Grappler (through
      a serialized MetaGraphDef, copied again inside Grappler) hold several copies of the
      weights at once. Networks with more than LARGE_WEIGHTS_BYTES of weights take tf2onnx's
      large-model route instead: weights are kept out of the TensorFlow graph while it is
      converted, and Grappler does not run. Grappler's constant folding is what folds batch
      norms into convolutions (ResNet50 would keep 53 Mul and 70 Add nodes without it), so the
      study's batch-norm networks, all small, keep the default route. For VGG19 (no batch norm)
      the only difference is that its zero-initialised dense biases stay as Add nodes of zeros,
      which Grappler would have dropped: the outputs are the same.

    The large-model route hands the weights back as a separate store; they are put back into the
    initializers, so that runners read one self-contained `model.onnx` (VGG19's is 0.55 GiB,
    far below protobuf's 2 GiB limit).
    """
    import tensorflow as tf
    import tf2onnx

    spec = (tf.TensorSpec((None, *in_shape), tf.float32, name="input"),)
    weights_bytes = 4 * int(model.count_params())
    if weights_bytes <= LARGE_WEIGHTS_BYTES:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET, output_path=str(path))
        output_name = str(proto.graph.output[0].name)
        route = "tf2onnx.convert.from_keras"
    else:
        log(
            f"{weights_bytes / (1 << 20):,.0f} MiB of weights: tf2onnx's large-model route "
            "(weights kept out of the TensorFlow graph, no Grappler pass)"
        )
        with _numpy_product():
            proto, storage = tf2onnx.convert.from_keras(
                model, input_signature=spec, opset=OPSET, large_model=True
            )
        _inline_external(proto.graph, storage.name_to_tensor_data)
        del storage
        path.write_bytes(proto.SerializeToString())
        output_name = str(proto.graph.output[0].name)
        route = "tf2onnx.convert.from_keras(large_model=True), tensors inlined"
    del proto
    gc.collect()
    return output_name, route


@contextlib.contextmanager
def _numpy_product() -> Iterator[None]:
    """tf2onnx 1.17's large-model route calls numpy.product, which NumPy 2 removed."""
    missing = not hasattr(np, "product")
    if missing:
        np.product = np.prod  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if missing:
            del np.product  # type: ignore[attr-defined]


def _inline_external(graph: Any, data: dict[str, bytes]) -> None:
    """Move tensors tf2onnx left in its external store back into the graph (and subgraphs)."""
    import onnx

    def tensors(g: Any) -> Iterator[Any]:
        yield from g.initializer
        for node in g.node:
            for a in node.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                if a.HasField("g"):
                    yield from tensors(a.g)
                for sub in a.graphs:
                    yield from tensors(sub)

    for t in tensors(graph):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        where = {e.key: e.value for e in t.external_data}
        if where.get("location") not in data:
            raise ExportError(f"tf2onnx left tensor {t.name!r} in an external file that was not produced")
        t.raw_data = data.pop(where["location"])
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT
    if data:
        raise ExportError(f"tf2onnx stored {len(data)} tensors that no part of the graph refers to")


def _check_onnx(path: Path, ref_in: np.ndarray, ref_out: np.ndarray) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        return
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: ref_in})[0]
    err = float(np.abs(got - ref_out).max())
    spread = float(ref_out.max() - ref_out.min())
    top1 = float((got.argmax(axis=1) == ref_out.argmax(axis=1)).mean())
    log(
        f"ONNX vs TensorFlow on the reference batch: max abs err {err:.3g} (spread {spread:.3g}), "
        f"top-1 agreement {top1:.0%}"
    )
    if err > 1e-3 * max(spread, 1e-12) * 100:
        raise ExportError(f"ONNX conversion changed outputs: max abs err {err:.3g} vs spread {spread:.3g}")


def export_onnx(name: str, source: Path, out: Path, seed: int) -> ModelManifest:
    import onnxruntime as ort

    step(f"reading {source} with ONNX Runtime")
    shutil.copyfile(source, out / "model.onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(
            str(out / "model.onnx"), sess_options=so, providers=["CPUExecutionProvider"]
        )
    except Exception as e:
        raise ExportError(f"{source} is not a loadable ONNX model: {str(e).splitlines()[0]}") from None
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    if len(inputs) != 1:
        raise ExportError(f"{source} has {len(inputs)} inputs; only single-input models are supported")
    inp = inputs[0]
    if inp.type != "tensor(float)":
        raise ExportError(f"{source}: input {inp.name} is {inp.type}; only float32 inputs are supported")
    dims = [d if isinstance(d, int) else None for d in inp.shape]
    if any(d is None for d in dims[1:]):
        raise ExportError(f"{source}: input {inp.name} has dynamic dimensions {inp.shape} beyond the batch")
    sample_shape = [int(d) for d in dims[1:] if d is not None]
    layout = None
    if len(sample_shape) == 3:
        layout = "NHWC" if sample_shape[-1] in (1, 3) else "NCHW" if sample_shape[0] in (1, 3) else None
    rng = np.random.default_rng(seed)
    ref_in = rng.random((REFERENCE_SAMPLES, *sample_shape), dtype=np.float32)
    if dims[0] is not None and dims[0] != REFERENCE_SAMPLES:
        raise ExportError(f"{source}: fixed batch dimension {dims[0]}; export it with a dynamic batch")
    ref_out = sess.run([outputs[0].name], {inp.name: ref_in})[0]
    if np.ndim(ref_out) < 2 or np.shape(ref_out)[0] != REFERENCE_SAMPLES:
        raise ExportError(
            f"{source}: output {outputs[0].name} has shape {list(np.shape(ref_out))} for a batch of "
            f"{REFERENCE_SAMPLES}; one output row per sample is needed ([batch, ...])"
        )
    np.save(out / "reference_input.npy", ref_in)
    np.save(out / "reference_output.npy", ref_out)
    params = None
    try:
        import onnx

        params = int(sum(np.prod(t.dims) for t in onnx.load(str(out / "model.onnx")).graph.initializer))
    except ImportError:
        pass
    return ModelManifest(
        name=name,
        source="onnx",
        created_at=datetime.now(UTC),
        inputs=[
            TensorInfo(
                name=inp.name, shape=[None, *sample_shape], layout=layout, values=InputValues(kind="uniform")
            )
        ],
        outputs=[
            TensorInfo(
                name=outputs[0].name,
                shape=[None, *[d if isinstance(d, int) else None for d in outputs[0].shape[1:]]],
            )
        ],
        parameters=params,
        seed=seed,
        reference="onnxruntime-fp32",
        reference_peak_mean=float(ref_out.max(axis=1).mean()) if ref_out.ndim == 2 else None,
        export_peak_mem_mb=peak_rss_mb(),
        files={
            "onnx": artifact(out, "model.onnx"),
            "reference_input": artifact(out, "reference_input.npy"),
            "reference_output": artifact(out, "reference_output.npy"),
        },
        tools={"onnxruntime": ort.__version__},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.exporter", description=__doc__)
    sub = parser.add_subparsers(dest="source", required=True)
    k = sub.add_parser("keras", help="export a Keras application with seeded random weights")
    k.add_argument("--name", required=True, choices=sorted(KERAS_MODELS))
    o = sub.add_parser("onnx", help="register a user's ONNX file")
    o.add_argument("--name", required=True)
    o.add_argument("--onnx", required=True, type=Path)
    for p in (k, o):
        p.add_argument("--out", required=True, type=Path, help="empty folder to fill")
        p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    global _progress
    with Progress(args.out / EXPORT_PROGRESS_FILE) as progress:
        _progress = progress
        try:
            if args.source == "keras":
                manifest = export_keras(args.name, args.out, args.seed)
            else:
                manifest = export_onnx(args.name, args.onnx, args.out, args.seed)
        except ExportError as e:
            print(f"error: {e}", file=sys.stderr)
            return 3
        finally:
            _progress = None
    progress.remove()
    log(f"peak memory {manifest.export_peak_mem_mb or 0:,.0f} MiB")
    (args.out / "manifest.json").write_text(manifest.model_dump_json(indent=1) + "\n")
    log(f"wrote {args.out}/manifest.json")
    print(json.dumps({"name": manifest.name, "dir": str(args.out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
