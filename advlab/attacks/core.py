"""What every attack shares: one judge, fp32 input gradients in eval mode, projection onto the
eps-ball, and random draws keyed per image.

Pixels are in [0, 1] and the model normalizes them itself, so eps is in pixel units and every
adversarial image is clamped to [0, 1] as well as to the L-infinity ball around x.

One judge. Every decision an attack takes about an image (fooled, so stop; which images a
restart or a further target works on; APGD-T's target ranking; Square's margin) and the verdict
recorded in attack.json are made on logits of `judge`: the evaluation's forward pass, in the
context of evaluate.predict_logits (the model's autocast precision, its fp32 last layer,
reproducible cuDNN, TF32 on CUDA in fp32). And they are made on the very same logits: an attack
returns with each point the judge's logits of it (`Judged`), and the sweep records those,
never a second forward pass, which in another batch could round a margin near zero to the other
side (kernels round differently per batch shape). Clean predictions are predict_logits', as
in the test stage, so accuracy at eps = 0 is the test accuracy exactly.

Gradients stay fp32 (strict, no TF32): `loss_gradient`'s own forward pass. Where the
evaluation runs in exactly that arithmetic (fp32 off CUDA) the logits of that pass are the
judge's (`attack_gradient` returns them at no cost); elsewhere (autocast, TF32) the judge runs
once more on the same points.

Random draws (`Draws`) are keyed per (base.seed, attack, eps, image index in the attacked
set) and drawn by a counter-based hash: an image's draws do not depend on the batch size, on
the device, or on which other images are attacked.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from advlab.core.device import evaluating, no_tf32

# per-image loss of (logits, labels): the attack ascends it
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


@torch.no_grad()
def judge(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The judge: float32 logits of x as the evaluation computes them (predict_logits' context),
    with the model in eval mode (its mode is restored). Under no_grad, not inference_mode (the
    same kernels): attacks write its logits into their own tensors."""
    was_training = model.training
    model.eval()
    with evaluating(model, x.device):
        logits = model(x).float()
    model.train(was_training)
    return logits


class Judged(NamedTuple):
    """What an attack returns: per image its point and the judge's logits of that point, the
    very logits the attack decided on (the sweep records them)."""

    x: torch.Tensor  # (n, C, H, W) in the eps-ball around the input, clamped to [0, 1]
    logits: torch.Tensor  # (n, classes) float32: judge(model, x) as the attack computed it


def loss_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  loss: Loss = cross_entropy) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, per-image loss, grad_x of the summed loss) in fp32 with the model in eval mode.

    The loss is summed, not averaged, over the batch: each image's gradient is then exactly its
    own loss's gradient, not scaled by 1/batch (which could underflow small entries to 0).
    The model's mode is restored and its parameters' .grad are left untouched."""
    was_training = model.training
    model.eval()
    with torch.enable_grad(), no_tf32():
        x = x.detach().float().requires_grad_(True)
        logits = model(x).float()
        values = loss(logits, y)
        (grad,) = torch.autograd.grad(values.sum(), x)
    model.train(was_training)
    return logits.detach(), values.detach(), grad


def attack_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    loss: Loss = cross_entropy) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """loss_gradient with the judge's logits of x in place of the fp32 pass's: what the
    evaluation attacks decide on."""
    logits, values, grad = loss_gradient(model, x, y, loss)
    if not gradient_pass_is_the_judge(model, x.device):
        logits = judge(model, x)
    return logits, values, grad


def gradient_pass_is_the_judge(model: nn.Module, device: torch.device) -> bool:
    """fp32 without autocast off CUDA: evaluating() and no_tf32() change nothing there, so the
    gradient's forward pass computes what judge() computes."""
    return getattr(model, "precision", torch.float32) == torch.float32 and device.type != "cuda"


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """x_adv clipped to the L-infinity ball of radius eps around x, then to [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0, 1)


def uniform_start(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise uniform in [-1, 1], x's shape: a random start is x + eps * noise (training's).

    generator None draws from the global generator (training seeds it per epoch)."""
    return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1


MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, m: int) -> torch.Tensor:
    """x * m mod 2^32 for int64 x in [0, 2^32), in 16-bit halves so that nothing overflows."""
    return (x * (m & 0xFFFF) + (((x * (m >> 16)) & 0xFFFF) << 16)) & MASK32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (Wellons' lowbias32) of int64 x in [0, 2^32), elementwise."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _word(value: int) -> torch.Tensor:
    return mix32(torch.tensor(value & MASK32, dtype=torch.int64))


@dataclass(frozen=True)
class Draws:
    """An attack's randomness at one eps for n images: one 32-bit key per image, and streams of
    numbered draws from it. Draw j of stream s for image i is a hash of (key_i, s, j): a pure
    function of the image's key, so the same on any batch, device, or set of other images."""

    keys: torch.Tensor  # (n,) int64 in [0, 2^32)
    shape: tuple[int, ...]  # one image's shape (C, H, W)

    @classmethod
    def keyed(cls, seed: int, attack: str, eps: float, index: torch.Tensor,
              shape: tuple[int, ...]) -> Draws:
        """The draws of the images numbered `index` (in the attacked set) for attack at eps."""
        eps_bits = struct.unpack("<I", struct.pack("<f", eps))[0]
        key = _word(seed ^ (seed >> 32))
        for part in (zlib.crc32(attack.encode()), eps_bits):
            key = mix32(key ^ part)
        return cls(mix32(key.to(index.device) ^ (index.long() & MASK32)), tuple(shape))

    def __getitem__(self, index: torch.Tensor) -> Draws:
        return Draws(self.keys[index], self.shape)

    def _bits(self, stream: int, count: int) -> torch.Tensor:
        """(n, count) int64 hashes in [0, 2^32): draws 0..count-1 of stream."""
        streamed = mix32(self.keys ^ _word(stream).to(self.keys.device))[:, None]
        counter = torch.arange(count, device=self.keys.device)
        return mix32(streamed ^ mix32(counter + 0x9E3779B9))

    def uniform(self, stream: int, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """(n, *shape) float32 uniform in [0, 1) (24 bits); shape None: one image's."""
        shape = self.shape if shape is None else shape
        count = 1
        for size in shape:
            count *= size
        return ((self._bits(stream, count) >> 8).float() * 2.0 ** -24).view(-1, *shape)

    def noise(self, stream: int) -> torch.Tensor:
        """(n, C, H, W) uniform in [-1, 1): a random start x + eps * noise."""
        return self.uniform(stream) * 2 - 1

    @property
    def start(self) -> torch.Tensor:
        """The first random start: noise of stream 0."""
        return self.noise(0)

    def integers(self, stream: int, high: int, count: int = 1) -> torch.Tensor:
        """(n, count) int64 uniform in [0, high), high < 2^31 (Lemire's multiply-shift)."""
        return (self._bits(stream, count) * high) >> 32
