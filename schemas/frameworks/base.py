"""What every framework's options model is: the one place a framework declares itself."""

from __future__ import annotations

from typing import ClassVar

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
