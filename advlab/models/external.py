"""The model the test, attack and report stages evaluate (`model.file`), whatever trained it:
the train stage's own file (save_model's config and state_dict), TorchScript, or a state_dict,
bare or in a checkpoint dict, of the registry architecture `train.model` names.

Nothing here unpickles code: torch files load with weights_only=True, TorchScript through
its own loader. `model.normalize` puts a foreign model's input normalization inside it, so
attacks perturb and clamp [0, 1] pixels and ε keeps its meaning. One forward pass on a test
image checks that a model takes the test images and gives a logit per class.
"""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from advlab.core.device import evaluating
from advlab.core.errors import BadFileError, MissingInputError
from advlab.core.io import load_torch
from advlab.data.images import ImageSet, to_float
from advlab.models.core import Classifier, ModelConfig, Normalize
from advlab.models.files import is_model_file, model_from_file
from advlab.models.registry import arch_options, build_model
from advlab.models.table import Row, parameter_table
from advlab.params.fields import ParamsError
from advlab.params.model import TRAINED_MODEL, Model, Normalization
from advlab.params.train import Train

CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict")  # where checkpoints keep one
DDP_PREFIX = "module."  # DistributedDataParallel's: a state_dict saved from the wrapper
SAVE_HINT = ("a model file is TorchScript (torch.jit.save) or a state_dict "
             "(torch.save(model.state_dict()))")


class ModelFileError(BadFileError):
    """model.file cannot be evaluated on the test set: not a model, not the architecture
    train.model names, or not the test images' shape or classes."""


@dataclass(frozen=True)
class ModelFile:
    """Which model was evaluated: the file, the form it took, its architecture, its digests."""

    path: str
    form: str  # advlab model file | TorchScript | state_dict | checkpoint['<key>']
    arch: str | None  # the registry architecture; None for TorchScript
    md5: str
    sha256: str

    def describe(self) -> str:
        arch = f" of {self.arch}" if self.arch else ""
        return f"{self.path}: {self.form}{arch}, md5 {self.md5}, sha256 {self.sha256}"


class ForeignModel(nn.Module):
    """A model trained elsewhere, run as the pipeline runs its own: pixels in [0, 1] in (its
    normalization first, where model.normalize gives one), float32 logits out."""

    def __init__(self, inner: nn.Module, normalize: Normalization | None):
        super().__init__()
        self.normalize = (Normalize(normalize.mean, normalize.std) if normalize is not None
                          else nn.Identity())
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(self.normalize(x))
        # anything else (a tuple, a dict) as it is: check_takes_test_images names it
        return logits.float() if isinstance(logits, torch.Tensor) else logits


def parameter_rows(model: nn.Module) -> list[Row]:
    """Table 1.3's rows for the registry's models; for a foreign one, whose TorchScript layers
    are not nn.Conv2d and the like, one row with its parameter count."""
    if isinstance(model, ForeignModel):
        count = sum(p.numel() for p in model.parameters())
        return [("the whole model (TorchScript: its layers are not itemized)", "", count)]
    return parameter_table(model)


def load_evaluated(path: str | Path, model: Model, train: Train, test_set: ImageSet,
                   device: torch.device | str = "cpu") -> tuple[nn.Module, ModelFile]:
    """The model in `path`, on `device` in eval mode, checked on a test image, and what it is.

    Reads model.normalize, and train.model with its options for a state_dict."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path} does not exist: model.file names the model to evaluate "
                                f"({TRAINED_MODEL}, the train stage's, is written by dvc repro)")
    normalize = model.normalize
    if normalize is not None and len(normalize.mean) != test_set.shape[0]:
        raise ParamsError(f"params: model.normalize has {len(normalize.mean)} number(s) per "
                          f"list; the test images have {test_set.shape[0]} channel(s): one per "
                          "channel")
    if _is_torchscript(path):
        net, form, arch = ForeignModel(_torchscript(path), normalize), "TorchScript", None
    else:
        net, form, arch = _from_torch_file(path, normalize, train, test_set)
    net = net.to(device).eval()
    check_takes_test_images(net, test_set, path)
    md5, sha256 = file_digests(path)
    return net, ModelFile(str(path), form, arch, md5, sha256)


def _is_torchscript(path: Path) -> bool:
    """torch.jit.save's archive holds constants.pkl; torch.save's does not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _torchscript(path: Path) -> nn.Module:
    """The loaded module; refused if saved in training mode: a trace keeps BatchNorm's batch
    statistics and dropout as they ran then, whatever .eval() sets later."""
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export
        warnings.simplefilter("ignore", FutureWarning)
        try:
            module = torch.jit.load(path, map_location="cpu")
        except RuntimeError as err:
            raise ModelFileError(f"{path} is not a readable TorchScript file "
                                 f"({_last_line(err)})") from err
    if any(m.training for m in module.modules()):
        raise ModelFileError(f"{path} was saved in training mode, which a trace keeps "
                             "(BatchNorm on batch statistics, dropout): save it after "
                             "model.eval()")
    return module


def _from_torch_file(path: Path, normalize: Normalization | None, train: Train,
                     test_set: ImageSet) -> tuple[nn.Module, str, str | None]:
    try:
        blob = load_torch(path)
    except BadFileError as err:
        raise ModelFileError(f"{err}; {SAVE_HINT}") from err
    if is_model_file(blob):
        if normalize is not None:
            raise ModelFileError(f"{path} is an advlab model file, which normalizes its input "
                                 "itself: set model.normalize: null")
        model = model_from_file(blob)
        return model, "advlab model file", model.config.arch
    state, form = _state_dict(blob, path)
    return _registry_model(state, path, normalize, train, test_set), form, train.model


def _is_state_dict(value: object) -> bool:
    return (isinstance(value, Mapping) and len(value) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                    for k, v in value.items()))


def _state_dict(blob: object, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state_dict the file holds, bare or under a checkpoint key, DDP's prefix stripped."""
    if _is_state_dict(blob):
        state, form = blob, "state_dict"
    else:
        key = next((k for k in CHECKPOINT_KEYS
                    if isinstance(blob, Mapping) and _is_state_dict(blob.get(k))), None)
        if key is None:
            raise ModelFileError(f"{path} holds {_kind(blob)}, not a model; {SAVE_HINT}, or a "
                                 "checkpoint dict holding one under "
                                 f"{' or '.join(CHECKPOINT_KEYS)}")
        state, form = blob[key], f"checkpoint['{key}']"
    if all(name.startswith(DDP_PREFIX) for name in state):
        state = {name.removeprefix(DDP_PREFIX): value for name, value in state.items()}
    return dict(state), form


def _kind(blob: object) -> str:
    if isinstance(blob, Mapping):
        keys = list(blob)
        shown = ", ".join(map(str, keys[:5])) + (", ..." if len(keys) > 5 else "")
        return f"a dict of {len(keys)} entries ({shown})" if keys else "an empty dict"
    return f"a {type(blob).__name__}"


def _registry_model(state: dict[str, torch.Tensor], path: Path,
                    normalize: Normalization | None, train: Train,
                    test_set: ImageSet) -> Classifier:
    """train.model sized for the test images, its normalization model.normalize's (or none),
    with the file's weights. A state_dict saved from this project's models holds its own
    normalization buffers, which then stay."""
    channels, size, _ = test_set.shape
    mean, std = ((normalize.mean, normalize.std) if normalize is not None
                 else ((0.0,) * channels, (1.0,) * channels))
    config = ModelConfig(train.model, channels, size, len(test_set.classes), tuple(mean),
                         tuple(std), arch_options(train.model, train))
    model = build_model(config)
    expected = model.state_dict()
    own = [name for name, module in model.named_modules() if isinstance(module, Normalize)]
    buffers = {f"{name}.{b}" for name in own for b in ("mean", "std")}
    held = sorted(buffers & state.keys())
    if held and normalize is not None:
        raise ModelFileError(f"{path} holds its own normalization ({', '.join(held)}): set "
                             "model.normalize: null")
    state = {**{name: expected[name] for name in buffers}, **state}
    _check_fits(expected, state, path, _architecture(config))
    model.load_state_dict(state)
    return model


def _architecture(config: ModelConfig) -> str:
    options = "".join(f", {key} {value}" for key, value in config.options.items())
    return (f"train.model {config.arch}{options} for {config.in_channels}x{config.image_size}x"
            f"{config.image_size} images and {config.num_classes} classes")


def _check_fits(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor],
                path: Path, architecture: str) -> None:
    """The first key the state_dict lacks or holds in another shape, else its first extra."""
    for name, tensor in expected.items():
        if name not in found:
            problem = f"no {name} (expected shape {tuple(tensor.shape)})"
        elif found[name].shape != tensor.shape:
            problem = (f"{name} has shape {tuple(found[name].shape)}, expected "
                       f"{tuple(tensor.shape)}")
        else:
            continue
        raise ModelFileError(f"{path} does not fit {architecture}: {problem}")
    extra = [name for name in found if name not in expected]
    if extra:
        raise ModelFileError(f"{path} does not fit {architecture}: unexpected key {extra[0]} "
                             f"({len(extra)} unexpected)")


def check_takes_test_images(model: nn.Module, test_set: ImageSet, path: str | Path) -> None:
    """One forward pass on the first test image: the model takes the images and gives one
    logit per class."""
    x = to_float(test_set.images[:1])
    shape = "x".join(map(str, test_set.shape))
    try:
        with torch.no_grad(), evaluating(model, x.device):
            logits = model(x)
    except RuntimeError as err:
        raise ModelFileError(f"{path} cannot take the test images ({shape}): "
                             f"{_last_line(err)}") from None
    classes = len(test_set.classes)
    if not isinstance(logits, torch.Tensor):
        raise ModelFileError(f"{path} returns {_kind(logits)}, not a tensor of logits")
    if tuple(logits.shape) != (1, classes):
        raise ModelFileError(f"{path} gives outputs of shape {tuple(logits.shape)} for one "
                             f"image; the test set has {classes} classes: expected (1, {classes})")


def _last_line(err: Exception) -> str:
    """The message's last line: TorchScript puts its interpreter's traceback before it."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1].removeprefix("RuntimeError: ") if lines else type(err).__name__


def file_digests(path: str | Path) -> tuple[str, str]:
    """(md5, sha256) of the file, read in 1 MiB blocks."""
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            md5.update(block)
            sha256.update(block)
    return md5.hexdigest(), sha256.hexdigest()
