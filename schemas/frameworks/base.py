"""What every framework's options model is: the one place a framework declares itself."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Final

from schemas.strict import Strict


class FrameworkOptions(Strict):
    """Options of one framework. A subclass is the framework's declaration: its `framework` field
    (a one-value Literal with that value as default) is the name the spec, the image catalog
    (`images/*/image.toml`) and the results use, and `runner` names the class that runs it, as
    `module:Class` imported only inside an image, so the controller never imports a framework."""

    framework: str
    runner: ClassVar[str]
    # The option that sets how many threads the framework computes with (None: it has none, or
    # they do not compute on the CPU); its default is the cores the runner was given.
    threads_option: ClassVar[str | None] = None

    @classmethod
    def framework_name(cls) -> str:
        default = cls.model_fields["framework"].default
        if not isinstance(default, str):
            raise TypeError(f"{cls.__name__}.framework needs its name as default")
        return default


# --------------------------------------------------------------------------- search spaces
# A framework declares the values `bench-ctl tune` tries on the option's own field:
# `Field(0, ..., json_schema_extra=tunable(1, 2, 4, CORES))`. CORES stands for the cores the
# runner is given (a threads option); values above them are dropped for this host.
CORES: Final = "cores"
# A scenario knob's values can be the batch sizes the search is given (the server's max_batch).
BATCH_SIZES: Final = "batch_sizes"
TUNE_KEY: Final = "tune"
PRECISION_KEY: Final = "tune_changes_precision"


def tunable(*values: Any, changes_precision: bool = False) -> dict[str, Any]:
    """Field metadata: the values a search tries for this option (the default need not be
    among them: it is always a candidate). `changes_precision`: the option changes what the
    framework computes in (a search keeps it at its default unless `--precision any`)."""
    if not values:
        raise ValueError("a tunable option needs at least one value")
    return {TUNE_KEY: list(values), PRECISION_KEY: changes_precision}


def declared(field: Any) -> list[Any] | None:
    """The values a field's `tunable` metadata declares, or None when it declares none."""
    extra = field.json_schema_extra
    if not isinstance(extra, dict) or TUNE_KEY not in extra:
        return None
    raw = extra[TUNE_KEY]
    assert isinstance(raw, list)
    return raw


def search_space(
    model: type[FrameworkOptions], cores: int, allow_precision: bool = False
) -> dict[str, list[Any]]:
    """Option name -> the values to try on this host, each list starting with the default
    (values above `cores` dropped from threads options, CORES resolved, duplicates removed)."""
    space: dict[str, list[Any]] = {}
    for name, field in model.model_fields.items():
        raw = declared(field)
        if raw is None or (is_precision(field) and not allow_precision):
            continue
        values: list[Any] = [field.default]
        threads = name == model.threads_option
        for v in raw:
            v = cores if v == CORES else v
            if threads and isinstance(v, int) and v > cores:
                continue
            if v not in values and not same_as_default(model, name, v, cores):
                values.append(v)
        space[name] = values
    return space


def scenario_space(
    model: type[Strict], batch_sizes: list[int], below: float | None = None
) -> dict[str, list[Any]]:
    """A scenario's knobs (e.g. the server's `max_batch` and `max_delay_ms`) -> the values a
    search tries, the default first: BATCH_SIZES resolves to `batch_sizes` (largest first: the
    default None means the largest), and a time knob's values at or above `below` (the latency
    bound, in its unit) are left out, as no such delay can hold it."""
    space: dict[str, list[Any]] = {}
    for name, field in model.model_fields.items():
        raw = declared(field)
        if raw is None:
            continue
        if raw == [BATCH_SIZES]:
            space[name] = sorted(set(batch_sizes), reverse=True)
            continue
        values = [v for v in [field.default, *raw] if below is None or v < below]
        space[name] = list(dict.fromkeys(values))
    return space


# --------------------------------------------------------------------------- configurations


def whole_cores(cpu_limit: float | None) -> int | None:
    """The whole cores a runner computes on, from the cores it may use (its affinity within its
    CPU quota, which may be fractional), as `runners/core/cores.py` counts them; None: unknown."""
    return None if cpu_limit is None else max(1, math.floor(cpu_limit))


def same_as_default(model: type[FrameworkOptions], name: str, value: Any, cores: int | None) -> bool:
    """Whether option `name` at `value` is the configuration its default is: the default itself,
    or, for a threads option whose default (0 or None) means the cores the runner is given, that
    number when it is known (`cores`)."""
    default = model.model_fields[name].default
    if value == default:
        return True
    return (
        name == model.threads_option
        and default in (0, None)
        and cores is not None
        and isinstance(value, int)
        and not isinstance(value, bool)
        and value == cores
    )


def configuration(options: FrameworkOptions, cores: int | None) -> dict[str, Any]:
    """The options as the configuration they make (what names a variant and keys a sweep cell):
    every option spelled out, those at a value the same as their default (`same_as_default`) at
    the default. The spec keeps what the user gave: on another host the same number of threads
    may not be all the cores."""
    model = type(options)
    return {
        k: model.model_fields[k].default
        if k in model.model_fields and same_as_default(model, k, v, cores)
        else v
        for k, v in options.model_dump().items()
    }


def precision_options(model: type[FrameworkOptions]) -> list[str]:
    """The options whose values change the precision the framework computes in."""
    return [name for name, field in model.model_fields.items() if is_precision(field)]


def is_precision(field: Any) -> bool:
    """Whether a field's `tunable` metadata says it changes the precision computed in."""
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(PRECISION_KEY))
