"""evaluate: validation, test and attack batches."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, Strict

from advlab.params.fields import Section


class Evaluate(Section):
    batch_size: Annotated[Literal["auto"] | Annotated[int, Strict(), Field(gt=0)],
                          Field(description="auto or an integer > 0")] = "auto"

