"""A BERT-shaped encoder with seeded random weights, exported to ONNX (torch image):
`python -m runners.transformer --name bert-tiny --out DIR --seed N` writes DIR/model.onnx and
DIR/transformer.json (torch version, configuration, parameters, what the outputs looked like).

Written here rather than taken from `transformers`: nothing is downloaded and the graph holds only
what every framework's ONNX importer reads (opset 17: LayerNormalization, Erf for GELU, Softmax).
Inputs `input_ids`, `attention_mask`, `token_type_ids`, int64 [batch, seq]; outputs
`last_hidden_state` [batch, seq, hidden] and `pooler_output` [batch, hidden]; batch and seq are
dynamic, seq at most the configuration's `max_positions`.

Random weights must not make a degenerate benchmark: outputs that hardly depend on the input make
agreement between frameworks mean little. With BERT's own initialisation (normal, std 0.02) the
attention of bert-tiny is uniform (its entropy 1.000 of the uniform's, bert-base 0.993), and with
unit-variance layers alone the states of different inputs converge in twelve layers (bert-base's
pooler outputs of two samples had a cosine of 0.98). So: each linear layer keeps unit variance (std
1/sqrt(fan_in)); the queries are scaled so that attention logits have a standard deviation of
about ATTENTION_LOGIT_STD; each feed-forward output projection has rows of mean zero, so that the
mean of GELU's outputs (positive, the same for every token) does not pile up as a direction that
all inputs share; biases and layer norms are random but small (a framework's fusion that drops one
still shows in the outputs). The outputs on a seeded reference batch are checked before anything
is written (`check_outputs`): bert-tiny's attention entropy is 0.56 of the uniform's, bert-base's
0.78, and the closest two reference samples' pooler outputs have a cosine of 0.60 and 0.80.

The TorchScript exporter (`dynamo=False`) is used: the torch.export route needs onnxscript, which
the image does not hold, and the TorchScript route writes the same graph from the same weights
byte for byte, so an export is reproducible from its seed.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from schemas.encoders import DEFAULT_SEQ, TRANSFORMER_MODELS, TRANSFORMER_REPORT, EncoderConfig

OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUTS = ("last_hidden_state", "pooler_output")
# Added to the attention logits of masked tokens. Not the dtype's minimum, which turns into -inf
# (then NaN after a fully masked row) in the fp16 and bf16 runs of other frameworks.
MASK_BIAS = -10000.0
ATTENTION_LOGIT_STD = 3.0
BIAS_STD = 0.02
REFERENCE_SAMPLES = 4
LN_EPS = 1e-12


class ExportError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[transformer] {msg}", file=sys.stderr, flush=True)


class KeepLeading(torch.autograd.Function):  # type: ignore[misc]
    """Reshape [batch, seq, ...] to [batch, seq, *tail], the last of `tail` -1. Traced as it is
    written, the target shape is computed from the input's (Shape, Gather, Concat); exported here
    as one Reshape to the constant [0, 0, *tail] (0: that dimension of the input), which every
    importer reads, and which onnx2torch's module compiles under torch.compile (a computed shape
    does not: torch.Size of a traced tensor). torch's own shape inference needs the -1."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, tail: tuple[int, ...]) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], *tail)

    @staticmethod
    def symbolic(g: Any, x: Any, tail: tuple[int, ...]) -> Any:
        shape = g.op("Constant", value_t=torch.tensor([0, 0, *tail], dtype=torch.int64))
        return g.op("Reshape", x, shape)


class SelfAttention(nn.Module):  # type: ignore[misc]  # torch is untyped for mypy here
    def __init__(self, c: EncoderConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = c.heads, c.hidden // c.heads
        self.query = nn.Linear(c.hidden, c.hidden)
        self.key = nn.Linear(c.hidden, c.hidden)
        self.value = nn.Linear(c.hidden, c.hidden)
        self.output = nn.Linear(c.hidden, c.hidden)
        self.norm = nn.LayerNorm(c.hidden, eps=LN_EPS)
        self.probs: torch.Tensor | None = None  # kept for `check_outputs` when `keep_probs`
        self.keep_probs = False

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, seq, hidden] -> [batch, heads, seq, head_dim]."""
        return KeepLeading.apply(x, (self.heads, -1)).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        logits = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + mask_bias
        probs = logits.softmax(dim=-1)
        if self.keep_probs:
            self.probs = probs
        ctx = KeepLeading.apply((probs @ v).transpose(1, 2), (-1,))
        return self.norm(x + self.output(ctx))


class Block(nn.Module):  # type: ignore[misc]
    def __init__(self, c: EncoderConfig) -> None:
        super().__init__()
        self.attention = SelfAttention(c)
        self.up = nn.Linear(c.hidden, c.intermediate)
        self.down = nn.Linear(c.intermediate, c.hidden)
        self.norm = nn.LayerNorm(c.hidden, eps=LN_EPS)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask_bias)
        return self.norm(x + self.down(nn.functional.gelu(self.up(x))))


class Encoder(nn.Module):  # type: ignore[misc]
    """Embeddings (word + position + token type, then a layer norm), the blocks, and the pooler:
    tanh of a linear layer on the first token's state."""

    def __init__(self, c: EncoderConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(c.vocab, c.hidden)
        self.position = nn.Embedding(c.max_positions, c.hidden)
        self.token_type = nn.Embedding(c.type_vocab, c.hidden)
        self.norm = nn.LayerNorm(c.hidden, eps=LN_EPS)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.pooler = nn.Linear(c.hidden, c.hidden)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # The first `seq` rows: the exporter traces the slice with the input's length as its end.
        positions = self.position.weight[: input_ids.shape[1]]
        x = self.norm(self.word(input_ids) + positions + self.token_type(token_type_ids))
        # [batch, 1, 1, seq]: 0 where a token is attended, MASK_BIAS where it is padding.
        mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * MASK_BIAS
        for block in self.blocks:
            x = block(x, mask_bias)
        return x, torch.tanh(self.pooler(x[:, 0]))


def build(c: EncoderConfig, seed: int) -> Encoder:
    """The encoder with weights drawn from one seeded generator (see the module's docstring)."""
    gen = torch.Generator().manual_seed(seed)
    model = Encoder(c)
    model.eval()

    def normal(t: torch.Tensor, std: float, mean: float = 0.0) -> None:
        t.copy_(torch.randn(t.shape, generator=gen) * std + mean)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                normal(module.weight, 1.0)
            elif isinstance(module, nn.Linear):
                normal(module.weight, 1 / math.sqrt(module.in_features))
                normal(module.bias, BIAS_STD)
            elif isinstance(module, nn.LayerNorm):
                normal(module.weight, 0.1, mean=1.0)
                normal(module.bias, BIAS_STD)
        for block in model.blocks:
            # Unit-variance queries and keys give logits of std ~1: scale the queries to the target.
            block.attention.query.weight.mul_(ATTENTION_LOGIT_STD)
            block.down.weight.sub_(block.down.weight.mean(dim=1, keepdim=True))
    return model


def reference_inputs(c: EncoderConfig, seed: int, seq: int = DEFAULT_SEQ) -> dict[str, torch.Tensor]:
    """Seeded tokens, two segments, and padding at the end of every sample but the first."""
    rng = np.random.default_rng(seed)
    n = REFERENCE_SAMPLES
    ids = rng.integers(0, c.vocab, size=(n, seq))
    lengths = [seq, *rng.integers(seq // 4, seq, size=n - 1).tolist()]
    mask = np.array([[1] * k + [0] * (seq - k) for k in lengths])
    types = np.array([[0] * (k // 2) + [1] * (seq - k // 2) for k in lengths]) * mask
    arrays = (ids, mask, types)
    return {name: torch.from_numpy(a.astype(np.int64)) for name, a in zip(INPUTS, arrays, strict=True)}


def check_outputs(model: Encoder, inputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """Statistics of the reference batch's outputs; ExportError where they are degenerate (not
    finite, the pooler saturated or flat, samples that cannot be told apart, uniform attention)."""
    for block in model.blocks:
        block.attention.keep_probs = True
    try:
        with torch.no_grad():
            hidden, pooled = model(*(inputs[n] for n in INPUTS))
        probs = [b.attention.probs for b in model.blocks]
    finally:
        for block in model.blocks:
            block.attention.keep_probs, block.attention.probs = False, None
    if not (torch.isfinite(hidden).all() and torch.isfinite(pooled).all()):
        raise ExportError("the reference outputs are not all finite")
    # Attention of the first sample (no padding): entropy as a share of the uniform's log(seq).
    first = torch.stack([p[0] for p in probs if p is not None])
    entropy = -(first * first.clamp_min(1e-30).log()).sum(-1).mean()
    unit = nn.functional.normalize(pooled, dim=-1)
    cosine = unit @ unit.T
    n = len(pooled)
    stats = {
        "attention_entropy_share": float(entropy / math.log(first.shape[-1])),
        "pooler_abs_mean": float(pooled.abs().mean()),
        "pooler_std_across_samples": float(pooled.std(dim=0).mean()),
        "pooler_max_cosine_between_samples": float((cosine - 2 * torch.eye(n)).max()),
        "hidden_std": float(hidden.std()),
    }
    log("reference batch: " + ", ".join(f"{k} {v:.3f}" for k, v in stats.items()))
    problems = [
        (stats["attention_entropy_share"] > 0.95, "attention is nearly uniform"),
        (stats["pooler_abs_mean"] > 0.95, "the pooler's tanh is saturated"),
        (stats["pooler_std_across_samples"] < 0.05, "the pooler output hardly depends on the input"),
        (stats["pooler_max_cosine_between_samples"] > 0.95, "two samples give nearly the same pooler output"),
    ]
    bad = [what for failed, what in problems if failed]
    if bad:
        raise ExportError(f"degenerate random weights: {'; '.join(bad)}")
    return stats


def export(model: Encoder, inputs: dict[str, torch.Tensor], path: Path) -> None:
    """torch.onnx.export's TorchScript route, opset OPSET, batch and seq dynamic by those names."""
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "seq"} for n in INPUTS}
    axes |= {"last_hidden_state": {0: "batch", 1: "seq"}, "pooler_output": {0: "batch"}}
    with warnings.catch_warnings():
        # It says the torch.export route is the default now; that route needs onnxscript.
        warnings.filterwarnings(
            "ignore", message="You are using the legacy TorchScript", category=DeprecationWarning
        )
        torch.onnx.export(
            model,
            tuple(inputs[n] for n in INPUTS),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes=axes,
            do_constant_folding=True,
        )


def flops_per_sample(c: EncoderConfig, seq: int) -> int:
    """2 x multiply-accumulates of one sample of `seq` tokens: the projections, the feed-forward,
    the attention's two matrix products, and the pooler."""
    per_token = c.layers * (4 * c.hidden * c.hidden + 2 * c.hidden * c.intermediate + 2 * seq * c.hidden)
    return 2 * (seq * per_token + c.hidden * c.hidden)


def run(name: str, out: Path, seed: int) -> dict[str, Any]:
    import onnx

    c = TRANSFORMER_MODELS[name]
    started = time.monotonic()
    log(f"building {name} ({c.as_text()}) with seeded random weights, seed {seed}")
    model = build(c, seed)
    inputs = reference_inputs(c, seed)
    stats = check_outputs(model, inputs)
    path = out / "model.onnx"
    log(f"exporting to ONNX (TorchScript exporter, opset {OPSET})")
    export(model, inputs, path)
    onnx.checker.check_model(str(path))
    params = sum(p.numel() for p in model.parameters())
    report = {
        "name": name,
        "seed": seed,
        "config": c.as_text(),
        "parameters": params,
        "flops_per_sample": flops_per_sample(c, DEFAULT_SEQ),
        "torch": str(torch.__version__),
        "onnx": str(onnx.__version__),
        "exporter": "torch.onnx.export(dynamo=False)",
        "opset": OPSET,
        "init": (
            f"normal: embeddings std 1, linear std 1/sqrt(fan_in), queries x{ATTENTION_LOGIT_STD}, "
            f"feed-forward output rows of mean 0, biases std {BIAS_STD}, layer norm scales 1 +- 0.1; "
            f"torch.Generator seed {seed}"
        ),
        "reference_stats": stats,
        "export_s": round(time.monotonic() - started, 2),
        # ru_maxrss is in KiB on Linux: this process's high-water mark, in MiB.
        "peak_mem_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    (out / TRANSFORMER_REPORT).write_text(json.dumps(report, indent=1) + "\n")
    log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {params:,} parameters) in {report['export_s']} s")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.transformer", description=__doc__)
    parser.add_argument("--name", required=True, choices=sorted(TRANSFORMER_MODELS))
    parser.add_argument("--out", required=True, type=Path, help="folder to write model.onnx into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        report = run(args.name, args.out, args.seed)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    print(json.dumps({"name": report["name"], "dir": str(args.out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
