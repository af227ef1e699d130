"""base: the run as a whole (seed, device, precision)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, Strict, field_validator

from advlab.params.fields import Section, choice, integer

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # base.precision
DEVICE = re.compile(r"^(auto|cpu|cuda|mps|cuda:\d+)$")


class Base(Section):
    seed: integer(ge=0) = 0
    device: Annotated[str, Strict(), Field(
        description="auto, cpu, cuda, cuda:N or mps", json_schema_extra={"pattern": DEVICE.pattern}
    )] = "auto"
    precision: choice(PRECISIONS) = "auto"

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not DEVICE.match(value):
            raise ValueError(cls.model_fields["device"].description)
        return value


