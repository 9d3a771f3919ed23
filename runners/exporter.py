"""Build model-store folders: `python -m runners.exporter keras|onnx ...`.

`keras` runs in the tf image: a Keras application with seeded random weights (nothing downloaded),
saved as SavedModel and ONNX (tf2onnx), with a reference batch and TensorFlow fp32 reference outputs.
`onnx` runs in the ort image: a user's ONNX file, any inputs and outputs (runners/model_inputs.py),
reference outputs from ONNX Runtime fp32, and optionally the user's labelled data. Bad input (a
dimension without a value, data that does not fit) is refused in one line with a hint, written to
EXPORT_REFUSAL_FILE, exit code 2.

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
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from runners.core.accuracy import top_k
from runners.core.common import Inputs, batch_len, input_batch
from runners.model_inputs import (
    Data,
    DimNames,
    InputError,
    Options,
    dim_values,
    fixed,
    read_data,
    read_inputs,
    read_outputs,
    scored_output,
    sequence_dim,
    with_values,
)
from schemas import ArtifactFile, ModelManifest
from schemas.atomic import write_atomic
from schemas.manifest import EXPORT_PROGRESS_FILE, KERAS_MODELS, DataInfo, InputValues, TensorInfo
from schemas.model_flags import EXPORT_REFUSAL_FILE

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


def export_onnx(
    name: str, source: Path, out: Path, seed: int, options: Options | None = None
) -> ModelManifest:
    """A user's ONNX file with every input and output it declares (runners/model_inputs.py), a
    reference batch (the user's first samples, or made by the harness's own rule) and ONNX
    Runtime fp32 outputs for it, and with labelled data, ONNX Runtime's accuracy on all of it."""
    import onnxruntime as ort

    options = options or Options()
    step(f"reading {source} with ONNX Runtime")
    shutil.copyfile(source, out / "model.onnx")
    sess = _session(ort, source, out / "model.onnx")
    names = DimNames()
    inputs = read_inputs(sess.get_inputs(), names, REFERENCE_SAMPLES)
    data = None
    if options.data is not None:
        step("checking the data")
        data = read_data(options.data, inputs)
        fixed_batch = any(fixed((list(t.shape) or [None])[0]) for t in sess.get_inputs())
        if fixed_batch and data.samples < REFERENCE_SAMPLES:
            raise InputError(
                f"--data has {data.samples} samples; the model's batch is fixed at {REFERENCE_SAMPLES}",
                f"give at least {REFERENCE_SAMPLES} samples",
            )
    dims = dim_values(inputs, options.dims, data.dims if data else {})
    inputs = [_with_layout(t) for t in with_values(inputs, options.int_ranges)]
    seq = sequence_dim(inputs, dims, options.seq_dim)
    if data is not None:
        ref_in = {n: a[:REFERENCE_SAMPLES] for n, a in data.arrays.items()}
    else:
        ref_in = _generated(inputs, dims, seed)
    step(f"reference outputs from ONNX Runtime fp32 (batch {batch_len(ref_in)})")
    ref_out = _run(sess, ref_in, inputs, generated=data is None)
    outputs = read_outputs(sess.get_outputs(), names, ref_out, batch_len(ref_in))
    files = _save_reference(out, inputs, outputs, ref_in, ref_out)
    info = None
    if data is not None:
        assert options.data is not None
        shutil.copyfile(options.data, out / "data.npz")
        files["data"] = artifact(out, "data.npz")
        info = _data_info(sess, data, inputs, outputs, batch_len(ref_in))
    return ModelManifest(
        name=name,
        source="onnx",
        created_at=datetime.now(UTC),
        inputs=inputs,
        outputs=outputs,
        dims=dims,
        sequence_dim=seq,
        data=info,
        parameters=_parameters(out / "model.onnx"),
        seed=seed,
        reference="onnxruntime-fp32",
        reference_peak_mean=_peak_mean(outputs[0], ref_out[0]),
        export_peak_mem_mb=peak_rss_mb(),
        files={"onnx": artifact(out, "model.onnx"), **files},
        tools={"onnxruntime": ort.__version__},
    )


def _peak_mean(output: TensorInfo, ref: np.ndarray) -> float | None:
    """The reference batch's mean top-1 probability, for an output of class probabilities (rows
    of non-negative scores summing to 1); None for others, logits included."""
    if not output.class_scores:
        return None
    p = ref.astype(np.float64)
    if p.min() < 0 or not np.allclose(p.sum(axis=1), 1, atol=1e-3):
        return None
    return float(p.max(axis=1).mean())


def _session(ort: Any, source: Path, path: Path) -> Any:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"{source} is not a loadable ONNX model: {str(e).splitlines()[0]}") from None


def _with_layout(t: TensorInfo) -> TensorInfo:
    """An image input's channel order, where its three fixed sample dimensions tell it."""
    sample = t.shape[1:]
    if not t.dtype.startswith("float") or len(sample) != 3 or not all(isinstance(d, int) for d in sample):
        return t
    layout = "NHWC" if sample[-1] in (1, 3) else "NCHW" if sample[0] in (1, 3) else None
    return t.model_copy(update={"layout": layout})


def _generated(inputs: list[TensorInfo], dims: dict[str, int], seed: int) -> Inputs:
    """The reference batch by the harness's own rule (runners.core.common.input_batch), which
    reads it from a manifest: a draft holding the inputs and dimensions."""
    draft = ModelManifest(
        name="draft",
        source="onnx",
        created_at=datetime.now(UTC),
        inputs=inputs,
        outputs=[TensorInfo(name="draft", shape=[None])],
        dims=dims,
        reference="draft",
        files={},
    )
    return input_batch(draft, REFERENCE_SAMPLES, seed=seed)


def _run(sess: Any, batch: Inputs, inputs: list[TensorInfo], generated: bool) -> list[np.ndarray]:
    """Every output of the model on `batch`. A failure on generated integer inputs is most often
    indices beyond a table (token ids past the vocabulary): the hint names their ranges."""
    try:
        return [np.asarray(o) for o in sess.run(None, batch)]
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        ints = [t for t in inputs if t.values is not None and t.values.kind == "integers"]
        if generated and ints:
            drawn = ", ".join(f"{t.name} from [{t.values.low}, {t.values.high})" for t in ints if t.values)
            raise InputError(
                f"ONNX Runtime failed on the reference batch: {first}",
                f"integer inputs were drawn ({drawn}): give each its valid range with --int-range NAME=LO:HI",
            ) from None
        raise ExportError(f"ONNX Runtime failed on the reference batch: {first}") from None


def _save_reference(
    out: Path, inputs: list[TensorInfo], outputs: list[TensorInfo], ref_in: Inputs, ref_out: list[np.ndarray]
) -> dict[str, ArtifactFile]:
    """reference_input and reference_output: .npy for a model of one float32 input and one
    output (as before models had several), else .npz of name -> array."""
    if len(inputs) == 1 and inputs[0].dtype == "float32" and len(outputs) == 1:
        np.save(out / "reference_input.npy", ref_in[inputs[0].name])
        np.save(out / "reference_output.npy", ref_out[0])
        suffix = ".npy"
    else:
        savez(out / "reference_input.npz", {t.name: ref_in[t.name] for t in inputs})
        savez(out / "reference_output.npz", {t.name: a for t, a in zip(outputs, ref_out, strict=True)})
        suffix = ".npz"
    return {role: artifact(out, role + suffix) for role in ("reference_input", "reference_output")}


def savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """numpy.savez for any tensor names: numpy.savez takes `file` and `allow_pickle` as its own
    keywords, and ONNX names them freely. Same format (a zip of NAME.npy), read by numpy.load."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, a in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)


def _data_info(
    sess: Any, data: Data, inputs: list[TensorInfo], outputs: list[TensorInfo], size: int
) -> DataInfo:
    """The data's record; with labels, ONNX Runtime fp32's top-1 and top-5 on every sample, in
    batches of the reference batch's size as the harness scores a framework (the last one
    padded with copies of its first sample)."""
    if data.labels is None:
        return DataInfo(samples=data.samples)
    which, scored = scored_output(outputs, data.labels)
    step(f"accuracy of ONNX Runtime fp32 on {data.samples} labelled samples")
    scores = []
    for start in range(0, data.samples, size):
        part = {n: a[start : start + size] for n, a in data.arrays.items()}
        got = batch_len(part)
        if got < size:
            part = {n: np.concatenate([a, np.repeat(a[:1], size - got, axis=0)]) for n, a in part.items()}
        scores.append(_run(sess, part, inputs, generated=False)[which][:got])
    top1, top5 = top_k(np.concatenate(scores), data.labels.astype(np.int64))
    log(
        f"fp32 accuracy on {data.samples} samples: top-1 {top1:.1%}"
        + (f", top-5 {top5:.1%}" if top5 is not None else "")
    )
    return DataInfo(
        samples=data.samples, labels=True, fp32_top1=top1, fp32_top5=top5, scored_output=scored.name
    )


def _parameters(path: Path) -> int | None:
    """Weights in the initializers, where the onnx package is installed (the ort image has none)."""
    try:
        import onnx
    except ImportError:
        return None
    return int(sum(np.prod(t.dims) for t in onnx.load(str(path)).graph.initializer))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.exporter", description=__doc__)
    sub = parser.add_subparsers(dest="source", required=True)
    k = sub.add_parser("keras", help="export a Keras application with seeded random weights")
    k.add_argument("--name", required=True, choices=sorted(KERAS_MODELS))
    o = sub.add_parser("onnx", help="register a user's ONNX file")
    o.add_argument("--name", required=True)
    o.add_argument("--onnx", required=True, type=Path)
    o.add_argument("--dim", action="append", default=[], metavar="NAME=N", help="a named dimension's default")
    o.add_argument(
        "--int-range", action="append", default=[], metavar="NAME=LO:HI", help="an integer input's values"
    )
    o.add_argument(
        "--data", type=Path, help="the user's samples: .npz of one array per input, optional labels"
    )
    o.add_argument("--seq-dim", help="the dimension that counts tokens")
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
                options = Options.read(args.dim, args.int_range, args.data, args.seq_dim)
                manifest = export_onnx(args.name, args.onnx, args.out, args.seed, options)
        except InputError as e:
            write_atomic(args.out / EXPORT_REFUSAL_FILE, json.dumps({"message": str(e), "hint": e.hint}))
            print(f"error: {e} (hint: {e.hint})", file=sys.stderr)
            return 2
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
