"""Plain constants of the contracts, importable without pydantic (the CLI's start-up reads them)."""

from __future__ import annotations

import re
from typing import Final

MAX_BATCH_SIZE: Final = 65536
MAX_DIM: Final = 1 << 20  # a dynamic dimension (a sequence length) is at most this
# Matched with fullmatch: `cpu`, or `cuda:N` with N the GPU's index.
DEVICE_RE: Final = re.compile(r"cpu|cuda:[0-9]{1,3}")
MAX_TIMEOUT_S: Final = 7 * 86_400  # a runner is killed after at most a week

# The study's networks (Keras applications, seeded random weights): store name -> Keras class.
KERAS_MODELS: Final = {
    "vgg19": "VGG19",
    "resnet50": "ResNet50",
    "densenet201": "DenseNet201",
    "efficientnetb0": "EfficientNetB0",
    "mobilenetv2": "MobileNetV2",
}


def check_batch_sizes(sizes: list[int]) -> list[int]:
    """The one rule for a list of batch sizes, in the words `run`, `sweep` and a plan all print:
    at least one, each from 1 to MAX_BATCH_SIZE, none twice. Raises ValueError."""
    if not sizes:
        raise ValueError("give at least one batch size")
    bad = [b for b in sizes if not 1 <= b <= MAX_BATCH_SIZE]
    if bad:
        raise ValueError(f"batch sizes go from 1 to {MAX_BATCH_SIZE}, not {bad[0]}")
    twice = sorted({b for b in sizes if sizes.count(b) > 1})
    if twice:
        raise ValueError(f"batch size {twice[0]} is given twice")
    return sizes
