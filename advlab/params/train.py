"""train: the train stage (model, optimizer and schedule, adversarial training, what is kept)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, Strict, model_validator

from advlab.params.fields import Flag, Rule, Section, choice, integer, number, yaml_number

MODELS = ("lab_cnn", "preact_resnet18", "wide_resnet", "fast_cnn")  # advlab/models/registry.py
ADVERSARIAL = ("none", "fgsm_rs", "pgd", "trades", "n_fgsm")  # train.adversarial
OPTIMIZERS = ("adam", "sgd")  # train.optimizer
SCHEDULES = ("constant", "onecycle", "cosine", "piecewise", "cyclic")  # train.schedule
KEEP = ("last", "best_val", "best_robust_val")  # train.keep: what models/model.pt holds


class Train(Section):
    model: choice(MODELS) = "lab_cnn"
    epochs: integer(gt=0) = 10
    batch_size: integer(gt=0) = 32
    lr: number(gt=0, finite=True) = 1e-3
    weight_decay: number(ge=0, finite=True) = 0.0
    augment: Flag = False
    gpus: integer(ge=1) = 1
    adversarial: choice(ADVERSARIAL) = "none"
    adv_eps: number(ge=0, le=1) = 8 / 255
    adv_steps: integer(gt=0) = 7
    optimizer: choice(OPTIMIZERS) = "adam"
    momentum: number(ge=0, le=1) = 0.9
    nesterov: Flag = False
    schedule: choice(SCHEDULES) = "constant"
    warmup_epochs: number(ge=0, finite=True) = 0.0
    label_smoothing: number(ge=0, le=1) = 0.0
    ema: Annotated[Annotated[float, Strict(), Field(gt=0, lt=1), BeforeValidator(yaml_number)]
                   | None, Field(description="null (no EMA) or a number in (0, 1)")] = None
    decay_norm_and_bias: Flag = True
    trades_beta: number(ge=0, finite=True) = 6.0
    robust_val_images: integer(ge=0) = 0
    robust_val_steps: integer(gt=0) = 10
    keep: choice(KEEP) = "last"
    depth: integer(gt=0) = 16  # wide_resnet
    width: integer(gt=0) = 4  # wide_resnet
    widths: Annotated[tuple[Annotated[int, Strict(), Field(gt=0)], ...], Field(
        min_length=1, description="a non-empty list of integers > 0")] = (64, 256, 256)
    whiten: Flag = True  # fast_cnn
    compile: Flag = False

    @model_validator(mode="after")
    def _wide_resnet_depth(self) -> Train:
        if self.model == "wide_resnet" and (self.depth < 10 or (self.depth - 4) % 6):
            raise Rule(("depth",), self.depth, "6n + 4 with n >= 1 (10, 16, 22, 28, 34, ...): "
                       "wide_resnet has three stages of n blocks")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Train:
        if self.batch_size < self.gpus:
            raise Rule(("batch_size",), self.batch_size, f"an integer >= gpus ({self.gpus}): "
                       "each process takes a slice of a batch")
        if self.warmup_epochs > self.epochs:
            raise Rule(("warmup_epochs",), self.warmup_epochs,
                       f"a number in [0, epochs] (epochs is {self.epochs})")
        if self.nesterov and self.momentum == 0:
            raise Rule(("nesterov",), self.nesterov, "false with momentum 0 (Nesterov momentum "
                       "needs momentum > 0)")
        if self.keep == "best_robust_val" and self.robust_val_images == 0:
            raise Rule(("keep",), self.keep, "last or best_val with robust_val_images 0 "
                       "(best_robust_val needs the robust validation)")
        return self


