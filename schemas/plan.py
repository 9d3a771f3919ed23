"""A plan: the matrix a sweep measures (images x models x options x batch sizes x scenarios), as TOML.

```toml
name = "smoke"
repetitions = 1
policy = { min_time_s = 0.5, max_time_s = 2 }

[[runs]]
images = ["null", "ort"]
models = ["mobilenetv2"]
batch_sizes = [1, 8]
sweep = { "policy.tolerance" = [0.1, 0.2] }
```

Every `[[runs]]` table stands for one `bench-ctl run` command per image: the same options as its flags
(`set` and `sweep` take the keys of `--set` and `--sweep`: framework options, `policy.KEY`, `server.KEY`).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from schemas.limits import check_batch_sizes
from schemas.spec import MAX_TIMEOUT_S, MODEL_NAME_RE
from schemas.strict import Strict

TOML_KINDS = {
    "list": "an array",
    "dict": "a table",
    "datetime": "a date-time",
    "date": "a date",
    "time": "a time",
}


def _option_value(v: object) -> object:
    """A value of `set`, `sweep` or `policy`: text, a number or a boolean, as `--set` takes it; a
    number is finite (NaN and inf would reach the policy or a framework as no usable value)."""
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{v} is not a finite number")
    if not isinstance(v, str | int | float):  # bool is an int
        kind = TOML_KINDS.get(type(v).__name__, type(v).__name__)
        raise ValueError(f"a value is text, a number or true/false, not {kind}")
    return v


OptionValue = Annotated[str | int | float | bool, BeforeValidator(_option_value)]
IMAGE_NAME = r"^[a-z0-9][a-z0-9_.-]*$"


class PlanRuns(Strict):
    """One `[[runs]]` table: each image with each model (and each ensemble), every combination of
    the swept values, all at the given batch sizes."""

    label: str | None = Field(None, max_length=80, description="a name for these runs in listings")
    images: list[Annotated[str, Field(pattern=IMAGE_NAME)]] = Field(min_length=1)
    models: list[str] = Field(default_factory=list, description="models from the model store")
    ensembles: list[list[str]] = Field(
        default_factory=list, description="each a list of models run together on one device"
    )
    batch_sizes: list[int]
    scenario: Literal["offline", "single-stream", "multi-stream", "server"] = "offline"
    device: Literal["cpu", "gpu"] | None = Field(
        None, description="cpu, or gpu (the first GPU); default: the image's own default device"
    )
    set: dict[str, OptionValue] = Field(
        default_factory=dict, description="as --set: framework options, policy.KEY, server.KEY"
    )
    sweep: dict[str, list[OptionValue]] = Field(
        default_factory=dict, description="as --sweep: a run per value (combinations multiply)"
    )
    repetitions: int | None = Field(None, ge=1, le=100, description="overrides the plan's repetitions")
    timeout_s: float | None = Field(
        None, gt=0, le=MAX_TIMEOUT_S, description="seconds before a runner is killed"
    )

    @field_validator("models")
    @classmethod
    def _model_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not MODEL_NAME_RE.fullmatch(name):
                raise ValueError(f"{name!r} is not a model name")
        return v

    @field_validator("ensembles")
    @classmethod
    def _ensemble_members(cls, v: list[list[str]]) -> list[list[str]]:
        for members in v:
            if len(members) < 2 or len(set(members)) != len(members):
                raise ValueError(f"ensemble {members}: give at least two different models")
            for name in members:
                if not MODEL_NAME_RE.fullmatch(name):
                    raise ValueError(f"{name!r} is not a model name")
        return v

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, v: list[int]) -> list[int]:
        return check_batch_sizes(v)

    @field_validator("sweep")
    @classmethod
    def _values(cls, v: dict[str, list[OptionValue]]) -> dict[str, list[OptionValue]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"sweep {key!r} has no values")
        return v

    @model_validator(mode="after")
    def _something(self) -> PlanRuns:
        if not self.models and not self.ensembles:
            raise ValueError("give models or ensembles")
        both = set(self.set) & set(self.sweep)
        if both:
            raise ValueError(f"{', '.join(sorted(both))} both set and swept: keep one")
        return self


class SlurmOptions(Strict):
    """Where, on how many cores and how long Slurm jobs run (`--launcher slurm`): a plan's `[slurm]`
    table, or the flags of the same names. Memory comes from the measurement policy."""

    partition: str | None = Field(None, pattern=r"^[A-Za-z0-9_.,-]+$", description="--partition")
    account: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$", description="--account")
    constraint: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.&|\[\]*:()!-]+$", description="--constraint: node features, e.g. h100"
    )
    time_limit_min: int | None = Field(
        None,
        ge=1,
        le=43_200,
        description="--time: minutes (at most 30 days); default: the run's timeout plus a margin",
    )
    cpus_per_task: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="--cpus-per-task; default: a whole node to itself (--exclusive), no neighbours",
    )

    node_launcher: Literal["auto", "local", "docker"] = Field(
        "auto",
        description="how a node runs the runner: Docker where it has the image (auto), or always one way",
    )

    def merged(self, over: SlurmOptions) -> SlurmOptions:
        """These options with those given in `over` taking precedence."""
        return self.model_copy(update=over.model_dump(exclude_none=True, exclude_defaults=True))


class Plan(Strict):
    """A matrix of runs, measured by `bench-ctl sweep PLAN`; resumable, keyed per host."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = ""
    repetitions: int = Field(1, ge=1, le=100, description="runner processes per cell, interleaved")
    policy: dict[str, OptionValue] = Field(
        default_factory=dict, description="measurement policy for every run (`policy.KEY` in `set` wins)"
    )
    runs: list[PlanRuns] = Field(min_length=1)
    slurm: SlurmOptions | None = Field(None, description="with --launcher slurm: partition, account, ...")
    price_per_hour: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="dollars per hour of the host measuring the plan: the report's cost per 1M inferences "
        "(bench-ctl report --plan PLAN)",
    )
