"""The transformer encoders `bench-ctl models export` builds with seeded random weights (no download).

Plain constants, importable without pydantic or torch: the controller checks names and fills in the
model's dimensions and input ranges from them, and the torch image's `runners.transformer` builds
the network from the same numbers."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Final


@dataclass(frozen=True)
class EncoderConfig:
    """A BERT-shaped encoder: embeddings (word, position, token type), `layers` post-norm blocks of
    multi-head self-attention and a GELU feed-forward, a tanh pooler on the first token."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int = 30522
    max_positions: int = 512
    type_vocab: int = 2

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not a multiple of heads {self.heads}")

    def as_text(self) -> str:
        """`layers=2 hidden=128 ...`: how a manifest's `tools` records the shape."""
        return " ".join(f"{k}={v}" for k, v in asdict(self).items())


# What `runners.transformer` writes beside model.onnx: versions, configuration, parameters.
TRANSFORMER_REPORT: Final = "transformer.json"
# The length a run uses unless it sets `dim.seq`: the manifest's default for `seq`.
DEFAULT_SEQ: Final = 128

TRANSFORMER_MODELS: Final = {
    "bert-base": EncoderConfig(layers=12, hidden=768, heads=12, intermediate=3072),
    # Small enough to export and run in seconds on a laptop CPU: for tests, CI and the demo.
    "bert-tiny": EncoderConfig(layers=2, hidden=128, heads=2, intermediate=512),
}
