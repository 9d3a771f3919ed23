"""Transformer encoders for the model store: `bench-ctl models export bert-tiny` (schemas.encoders).

Two steps, two images. The torch image builds the encoder with seeded random weights and exports
it to ONNX (`runners.transformer`); the file is then registered exactly as a user's ONNX file is
(`models.add`, ort image): its inputs and outputs read from the file, `seq` at its default
(DEFAULT_SEQ), token ids drawn from the vocabulary, reference outputs from ONNX Runtime fp32. The
manifest says where the model came from (source `pytorch`) and records the torch side's versions,
configuration and weight initialisation in its `tools`."""

from __future__ import annotations

import json
from pathlib import Path

from controller.catalog import models
from controller.catalog.images import get_image
from controller.errors import BenchError, did_you_mean
from controller.launch.base import Launcher, LineSink
from controller.paths import Paths
from schemas import ModelManifest
from schemas.encoders import DEFAULT_SEQ, TRANSFORMER_MODELS, TRANSFORMER_REPORT

BUILD_IMAGE = "torch"
SEQ_DIM = "seq"
# What the torch step's report must hold, and the manifest's `tools` keys they become.
REPORTED_TOOLS = {"torch": "torch", "onnx": "onnx", "exporter": "torch_onnx_export", "config": "config"}


def is_transformer(name: str) -> bool:
    return name in TRANSFORMER_MODELS


def check_transformer_name(name: str) -> str:
    models.check_name(name)
    if not is_transformer(name):
        raise BenchError(f"unknown transformer {name!r}", did_you_mean(name, list(TRANSFORMER_MODELS)))
    return name


def add_options(name: str) -> models.AddOptions:
    """How the ONNX file is registered: `seq` at its default, token ids within the vocabulary,
    token types within their table, and `seq` as the dimension that counts tokens."""
    c = TRANSFORMER_MODELS[name]
    return models.AddOptions(
        dims={SEQ_DIM: DEFAULT_SEQ},
        int_ranges={"input_ids": (0, c.vocab), "token_type_ids": (0, c.type_vocab)},
        seq_dim=SEQ_DIM,
    )


def export(
    paths: Paths, name: str, launcher: Launcher, log: LineSink, force: bool = False, seed: int = 0
) -> ModelManifest:
    """Build `name` in the torch image, then register its ONNX file as `models add` does (ort
    image); both run through `launcher`."""
    check_transformer_name(name)
    models._check_absent(paths, name, force)
    with models.writing(paths, name) as work:
        report = build_onnx(name, launcher, log, work.folder, seed)
        return models.add(
            paths,
            name,
            work.folder / "model.onnx",
            launcher,
            log,
            force=force,
            seed=seed,
            options=add_options(name),
            amend=lambda m: provenance(m, report),
        )


def build_onnx(name: str, launcher: Launcher, log: LineSink, folder: Path, seed: int) -> dict[str, object]:
    """Run `runners.transformer` into `folder` (created here); returns its report."""
    from controller.launch import deaths

    image = get_image(BUILD_IMAGE)
    launcher.prepare(image, log)
    folder.mkdir()
    args = ["--name", name, "--seed", str(seed), "--out", launcher.inside(folder)]
    outcome = launcher.run_tool(image, "runners.transformer", args, folder, models.EXPORT_TIMEOUT_S, log)
    if outcome.timed_out:
        raise BenchError(f"building {name} timed out", "retry; check memory and CPU load", exit_code=1)
    if outcome.exit_code != 0:
        lines = [ln for ln in outcome.stderr_tail.splitlines() if ln.strip()]
        detail = lines[-1].removeprefix("error: ") if lines else f"exit code {outcome.exit_code}"
        container = launcher.name == "docker"
        if outcome.oom_killed or deaths.signal_of(outcome.exit_code, container) is not None:
            detail = deaths.describe_exit(outcome.exit_code, outcome.oom_killed, container)
            cause = deaths.likely_cause(outcome.exit_code, outcome.oom_killed, container)
            detail += f": {cause}" if cause else ""
        kept = models._keep_log(folder, f"bench-ctl: building the encoder failed: {detail}")
        raise BenchError(
            f"building {name} in the {BUILD_IMAGE} image failed: {detail}",
            f"full log: {kept}" if kept else None,
            exit_code=1,
        )
    try:
        report = json.loads((folder / TRANSFORMER_REPORT).read_text())
        missing = [k for k in (*REPORTED_TOOLS, "init") if k not in report]
    except (OSError, ValueError) as e:
        raise BenchError(f"building {name}: no readable {TRANSFORMER_REPORT} ({e})", None, 1) from None
    if missing or not (folder / "model.onnx").is_file():
        what = f"{TRANSFORMER_REPORT} lacks {', '.join(missing)}" if missing else "no model.onnx"
        raise BenchError(
            f"building {name}: {what}", f"rebuild the image: bench-ctl images build {BUILD_IMAGE}", 1
        )
    (folder / "tool.log").unlink(missing_ok=True)
    return dict(report)


def provenance(manifest: ModelManifest, report: dict[str, object]) -> ModelManifest:
    """The registered manifest as the torch step made the model: source, opset, parameters (the
    ort image cannot count them: it has no onnx package), FLOPs, versions, and the peak memory
    of the two steps, the larger."""
    tools = {key: str(report[k]) for k, key in REPORTED_TOOLS.items()}
    peak = report.get("peak_mem_mb")
    if isinstance(peak, int | float) and peak > (manifest.export_peak_mem_mb or 0):
        manifest = manifest.model_copy(update={"export_peak_mem_mb": float(peak)})
    return manifest.model_copy(
        update={
            "source": "pytorch",
            "onnx_opset": _int(report, "opset", manifest.onnx_opset),
            "parameters": manifest.parameters or _int(report, "parameters", None),
            "flops_per_sample": _int(report, "flops_per_sample", None),
            "tools": {**manifest.tools, **tools, "init": str(report["init"]), "flops": FLOPS_NOTE},
        }
    )


def _int(report: dict[str, object], key: str, default: int | None) -> int | None:
    value = report.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


FLOPS_NOTE = (
    f"2 x MACs of one sample at seq={DEFAULT_SEQ}: projections, feed-forward, attention products, pooler"
)
