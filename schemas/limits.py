"""Plain constants of the contracts, importable without pydantic (the CLI's start-up reads them)."""

from __future__ import annotations

from typing import Final

MAX_BATCH_SIZE: Final = 65536
MAX_TIMEOUT_S: Final = 7 * 86_400  # a runner is killed after at most a week

# The study's networks (Keras applications, seeded random weights): store name -> Keras class.
KERAS_MODELS: Final = {
    "vgg19": "VGG19",
    "resnet50": "ResNet50",
    "densenet201": "DenseNet201",
    "efficientnetb0": "EfficientNetB0",
    "mobilenetv2": "MobileNetV2",
}
