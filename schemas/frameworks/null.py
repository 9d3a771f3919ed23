"""Options of the null runner: the harness itself, no framework.

With `landscape=true` the null runner is a tuning problem whose answer is known: the work of an
iteration is multiplied by `null_landscape(knob_a, knob_b)`, a fixed function of two searched
options with one optimum, a near-tie within 1 % of it somewhere else, and a cliff. A search is
checked against it (does it find the optimum, or the near-tie, and never the cliff?).
"""

from __future__ import annotations

from typing import ClassVar, Final, Literal

from pydantic import Field

from schemas.frameworks.base import FrameworkOptions, tunable

KNOB_A_VALUES: Final = tuple(range(8))
KNOB_B_VALUES: Final = tuple(range(4))
NULL_OPTIMUM: Final = (5, 1)  # factor 1.0, the one minimum
NULL_NEAR_TIE: Final = (2, 3)  # factor 1.008: within 1 %, far from the optimum
NULL_NEAR_TIE_FACTOR: Final = 1.008
NULL_CLIFF_A: Final = 7  # knob_a = 7 triples the work
NULL_CLIFF_FACTOR: Final = 3.0


def null_landscape(a: int, b: int) -> float:
    """The factor on the null runner's work at knob_a = a, knob_b = b (landscape=true): 1.0 at
    NULL_OPTIMUM, 1.008 at NULL_NEAR_TIE, elsewhere a bowl around the optimum,
    1.05 + 0.06 |a - 5| + 0.05 |b - 1| (1.10 to 1.45), tripled on the cliff a = 7 (3.5 to 3.8).
    The cliff is at the edge of knob_a's range, two steps from the optimum."""
    if a not in KNOB_A_VALUES or b not in KNOB_B_VALUES:
        raise ValueError(f"no landscape point ({a}, {b}): knob_a is 0..7, knob_b 0..3")
    if (a, b) == NULL_OPTIMUM:
        return 1.0
    if (a, b) == NULL_NEAR_TIE:
        return NULL_NEAR_TIE_FACTOR
    bowl = 1.05 + 0.06 * abs(a - NULL_OPTIMUM[0]) + 0.05 * abs(b - NULL_OPTIMUM[1])
    return bowl * NULL_CLIFF_FACTOR if a == NULL_CLIFF_A else bowl


class NullOptions(FrameworkOptions):
    """The harness itself: returns a preallocated zero output. `fault` exercises failure paths."""

    framework: Literal["null"] = "null"
    runner: ClassVar[str] = "runners.frameworks.null:NullRunner"
    work_us: float = Field(
        0.0, ge=0, le=60e6, description="busy work this long per iteration, with the GIL released"
    )
    work_us_per_sample: float = Field(
        0.0,
        ge=0,
        le=60e6,
        description="more busy work per sample of the batch: an iteration works "
        "work_us + work_us_per_sample * batch size",
    )
    landscape: bool = Field(
        False,
        description="multiply an iteration's work by null_landscape(knob_a, knob_b): a search "
        "problem with a known answer (off: the knobs have no effect)",
    )
    knob_a: int = Field(
        0,
        ge=KNOB_A_VALUES[0],
        le=KNOB_A_VALUES[-1],
        description="landscape coordinate (7 is the cliff)",
        json_schema_extra=tunable(*KNOB_A_VALUES),
    )
    knob_b: int = Field(
        0,
        ge=KNOB_B_VALUES[0],
        le=KNOB_B_VALUES[-1],
        description="landscape coordinate",
        json_schema_extra=tunable(*KNOB_B_VALUES),
    )
    threads_option: ClassVar[str | None] = "threads"
    threads: int = Field(
        1,
        ge=1,
        le=256,
        description="threads doing the work at once (each its work_us), as a framework's would",
    )
    tag: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_.-]{0,40}$",
        description="no effect: tells apart identical configurations (A/A calibration)",
    )
    fault: Literal["none", "raise", "exit", "hang", "bad-output", "oom"] = "none"

    def work_factor(self) -> float:
        """What an iteration's work is multiplied by: the landscape's factor, or 1.0 without it."""
        return null_landscape(self.knob_a, self.knob_b) if self.landscape else 1.0
