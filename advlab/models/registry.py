"""Every model by name: adding one is a module with its class or builder, its name in
params.MODELS (params.yaml's schema lists them) and one entry here, naming the train params it
reads. The train stage builds through `new_model`; a saved model rebuilds through
`build_model(ModelConfig)`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from advlab.data.images import ImageSet
from advlab.models.core import Classifier, ModelConfig
from advlab.models.fast_cnn import FastCNN
from advlab.models.lab_cnn import LabCNN
from advlab.models.preact_resnet import preact_resnet18
from advlab.models.wide_resnet import wide_resnet
from advlab.params.train import MODELS, Train


@dataclass(frozen=True)
class Architecture:
    name: str  # train.model
    build: Callable[[ModelConfig], Classifier]
    options: tuple[str, ...] = ()  # the train.* params it reads, kept in ModelConfig.options


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("lab_cnn", LabCNN),
    Architecture("preact_resnet18", preact_resnet18),
    Architecture("wide_resnet", wide_resnet, ("depth", "width")),
    Architecture("fast_cnn", FastCNN, ("widths", "whiten")),
)}
if tuple(ARCHITECTURES) != MODELS:  # params.yaml's schema lists the names: they must agree
    raise ImportError(f"advlab.params.MODELS {MODELS} != the registry's {tuple(ARCHITECTURES)}")


def model_config(arch: str, train_set: ImageSet, train: Train | None = None) -> ModelConfig:
    """A model sized for the data, normalizing by the training split's per-channel statistics;
    its options from `train` (default: params.yaml's defaults)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown model {arch!r}; known: {', '.join(ARCHITECTURES)}")
    train = train or Train()
    pixels = train_set.images.transpose(0, 1).reshape(train_set.shape[0], -1).double() / 255
    channels, height, width = train_set.shape
    if height != width:
        raise ValueError(f"images must be square, got {height}x{width}")
    return ModelConfig(arch=arch, in_channels=channels, image_size=height,
                       num_classes=len(train_set.classes),
                       mean=tuple(round(v, 6) for v in pixels.mean(1).tolist()),
                       std=tuple(round(v, 6) for v in pixels.std(1).tolist()),
                       options=arch_options(arch, train))


def arch_options(arch: str, train: Train) -> dict:
    """The train params the architecture reads (wide_resnet: depth, width), as ModelConfig
    holds them."""
    return {key: _plain(getattr(train, key)) for key in ARCHITECTURES[arch].options}


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value  # as the model file holds it


def build_model(config: ModelConfig, train_set: ImageSet | None = None) -> Classifier:
    """The model `config` names, with fresh weights; with `train_set`, also what the model
    computes from the training images (fast_cnn's whitening layer)."""
    if config.arch not in ARCHITECTURES:
        raise ValueError(f"unknown model {config.arch!r}; known: {', '.join(ARCHITECTURES)}")
    model = ARCHITECTURES[config.arch].build(config)
    if train_set is not None:
        model.fit_to_data(train_set.images)
    return model


def new_model(train: Train, train_set: ImageSet) -> Classifier:
    """The untrained model train.model names, sized for and fitted to the training split."""
    return build_model(model_config(train.model, train_set, train), train_set)
