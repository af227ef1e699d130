"""data: the download and split stages."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, Strict, model_validator

from advlab.params.fields import Flag, Rule, Section, choice, integer

DATASETS = ("cifar10", "fashion_mnist", "synthetic")
DEFAULT_SOURCE = "source"  # the repository's placeholder folder (download while it is empty)
OFFICIAL_TRAIN_SIZE = {"cifar10": 50_000, "fashion_mnist": 60_000}  # images, verified files


class Data(Section):
    dataset: choice(DATASETS) = "cifar10"
    source: Annotated[str, Strict(), Field(min_length=1, description=(
        f"a folder (a non-empty string); the default {DEFAULT_SOURCE!r}, while it holds none of "
        "the dataset's files, downloads them"))] = DEFAULT_SOURCE
    verify: Flag = True
    train_size: integer(gt=0) = 40_000
    val_size: integer(ge=0) = 10_000  # 0: no validation (train.keep last, no robust validation)
    synthetic_train: integer(gt=0) = 50_000
    synthetic_test: integer(gt=0) = 10_000

    @model_validator(mode="after")
    def _split_fits(self) -> Data:
        """The official training set's size is known here for synthetic data and for verified
        official files; other data (verify: false) is checked by the split stage."""
        if self.dataset == "synthetic":
            available, what = self.synthetic_train, "synthetic_train: the generated training set"
        elif self.verify:
            available, what = (OFFICIAL_TRAIN_SIZE[self.dataset],
                               f"images in the official {self.dataset} training set")
        else:
            return self
        total = self.train_size + self.val_size
        if total > available:
            raise Rule(("train_size", "val_size"), total,
                       f"<= {available} ({what}): train and validation images are drawn, "
                       "disjoint, from the official training set")
        return self


