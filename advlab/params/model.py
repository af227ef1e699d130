"""model: the model the test, attack and report stages evaluate: the train stage's, or one
trained elsewhere (advlab/models/external.py reads the forms such a file may take)."""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from advlab.params.fields import Section, number

TRAINED_MODEL = "models/model.pt"  # the train stage's output (dvc.yaml)


class Normalization(BaseModel):
    """Per-channel mean and std the model expects its input normalized by; a value, not a
    section (`model.normalize` is one key, read and declared as a whole)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: tuple[number(finite=True), ...]
    std: tuple[number(gt=0, finite=True), ...]

    @model_validator(mode="after")
    def _one_of_each_per_channel(self) -> Normalization:
        if not self.mean or len(self.mean) != len(self.std):
            raise ValueError("mean and std must have the same, non-zero length")
        return self


class Model(Section):
    file: Annotated[str, Strict(), Field(
        min_length=1, description=f"the path of a model file: {TRAINED_MODEL} (the train "
        "stage's) or one trained elsewhere (TorchScript, or a state_dict of train.model)",
    )] = TRAINED_MODEL
    normalize: Annotated[Normalization | None, Field(
        description="null (the model takes pixels in [0, 1]) or {mean: [...], std: [...]}, "
        "one finite number per channel each, std > 0"),
    ] = None

    @property
    def trained_here(self) -> bool:
        """The train stage's model, whose training record metrics/train.* holds."""
        return os.path.normpath(self.file) == TRAINED_MODEL  # ./models/model.pt is it too
