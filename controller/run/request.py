"""What a command asks to measure, with its input rules as validators: `run`, `sweep` (a plan's
`[[runs]]` become requests) and `rerun` refuse the same bad input in the same words."""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import BaseModel, ValidationError, field_validator

from controller.errors import BenchError
from controller.launch.choice import LauncherChoice
from schemas.limits import DEVICE_RE, MAX_TIMEOUT_S, check_batch_sizes

# Batch sizes when -b is not given: a server pads formed groups up to the next size, so it wants
# close steps; a single stream sends one sample; a multi-stream query holds 8 by default.
DEFAULT_BATCH_SIZES = {"server": [1, 2, 4, 8], "single-stream": [1], "multi-stream": [8]}
OFFLINE_BATCH_SIZES = [1, 8, 32]
FLAGS = {
    "batch_sizes": "--batch-sizes",
    "timeout_s": "--timeout",
    "device": "--gpu",
    "scenario": "--scenario",
}
HINTS = {
    "batch_sizes": "e.g. --batch-sizes 1,8,32",
    "timeout_s": "e.g. --timeout 600",
    "device": "e.g. --gpu 0, or --cpu",
}


class RunRequest(BaseModel):
    """What one `bench-ctl run` asks for; `image` and `model` may be comma-separated lists."""

    image: str
    model: str
    batch_sizes: list[int]
    device: str | None = None
    sets: list[str] = []
    sweeps: list[str] = []
    ensemble: bool = False
    launcher: LauncherChoice = LauncherChoice.auto
    timeout_s: float | None = None
    scenario: str = "offline"

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, v: list[int]) -> list[int]:
        return check_batch_sizes(v)

    @field_validator("timeout_s")
    @classmethod
    def _timeout(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and 0 < v <= MAX_TIMEOUT_S):
            raise ValueError(f"must be a positive number of seconds, at most {MAX_TIMEOUT_S:,}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str | None) -> str | None:
        if v is not None and not DEVICE_RE.fullmatch(v):
            raise ValueError("a GPU index goes from 0 to 999")
        return v

    @field_validator("scenario")
    @classmethod
    def _scenario(cls, v: str) -> str:
        return v.strip()

    @property
    def models(self) -> list[str]:
        return _items(self.model)

    @property
    def images(self) -> list[str]:
        return _items(self.image)


def _items(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def request(**fields: Any) -> RunRequest:
    """A validated request; a broken rule is one line naming the flag, with a hint (exit 2)."""
    try:
        return RunRequest.model_validate(fields)
    except ValidationError as e:
        err = e.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        msg = str(err["msg"]).removeprefix("Value error, ")
        given = fields.get(field)
        said = repr(",".join(str(b) for b in given) if isinstance(given, list) else given)
        if field == "device" and isinstance(given, str):
            said = given.partition(":")[2]  # the index the user typed after --gpu
        hint = HINTS.get(field, "see --help")
        raise BenchError(f"{FLAGS.get(field, field)} {said}: {msg}", hint) from None


def parse_batch_sizes(text: str) -> list[int]:
    """`-b 1,8,32` as integers; the rules on them are the request's."""
    items = [x.strip() for x in text.split(",")]
    if not all(re.fullmatch(r"[0-9]{1,9}", x) for x in items):
        raise BenchError(
            f"--batch-sizes {text!r} is not a comma-separated list of integers", HINTS["batch_sizes"]
        )
    return [int(x) for x in items]


def from_flags(
    *,
    image: str,
    model: str,
    batch_sizes: str | None,
    cpu: bool,
    gpu: int | None,
    sets: list[str],
    sweeps: list[str],
    repeat: int | None,
    ensemble: bool,
    launcher: LauncherChoice,
    timeout_s: float | None,
    scenario: str,
) -> RunRequest:
    """The request `bench-ctl run`'s flags stand for."""
    if cpu and gpu is not None:
        raise BenchError("--cpu and --gpu exclude each other", "choose one")
    sets = list(sets)
    if repeat is not None:
        if repeat < 1:
            raise BenchError(f"--repeat {repeat}: must be at least 1", "e.g. --repeat 5")
        if any(x.partition("=")[0].strip() == "policy.repetitions" for x in sets):
            raise BenchError("--repeat and --set policy.repetitions both given", "give one of them")
        sets.append(f"policy.repetitions={repeat}")
    sizes = (
        parse_batch_sizes(batch_sizes)
        if batch_sizes is not None
        else DEFAULT_BATCH_SIZES.get(scenario.strip(), OFFLINE_BATCH_SIZES)
    )
    return request(
        image=image,
        model=model,
        batch_sizes=sizes,
        device="cpu" if cpu else (None if gpu is None else f"cuda:{gpu}"),
        sets=sets,
        sweeps=sweeps,
        ensemble=ensemble,
        launcher=launcher,
        timeout_s=timeout_s,
        scenario=scenario,
    )
