"""The attacks of adversarial training, and the PGD-k accuracy of its robust validation.

train.adversarial picks the images a step trains on (adversarial_batch) and its loss
(training_loss), each as its paper sets it:

- fgsm_rs (Wong, Rice and Kolter 2020): one step of 1.25 * eps from a uniform random start in
  the eps-ball, projected back onto the ball.
- pgd (Madry et al. 2018): adv_steps steps of 2.5 * eps / adv_steps from a random start.
- n_fgsm (de Jorge et al. 2022): noise uniform in [-2 eps, 2 eps], then one step of eps, and
  no projection onto the eps-ball (only onto the valid pixels): up to 3 eps from x.
- trades (Zhang et al. 2019): adv_steps steps of 2.5 * eps / adv_steps ascending
  KL(p(x) || p(x')) from x plus noise of 0.001 (uniform here, the paper's is Gaussian, so
  that every mode shares one random start), projected onto the eps-ball; the loss is
  CE(f(x), y) + trades_beta * KL(p(x) || p(x')), the clean term on the clean images.

The adversarial examples are made with the model in eval mode (as TRADES does), so the attack
does not update BatchNorm's running statistics and the model is left in the mode it was in.
`start` is the random start, noise uniform in [-1, 1] (core.uniform_start): train_epoch passes
its rank's slice of the global batch's noise. Every mode's example is detached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.core import Draws, judge, loss_gradient, uniform_start
from advlab.attacks.pgd import pgd, pgd_until_fooled
from advlab.data.images import ImageSet, batches, to_float
from advlab.params.attack import Pgd
from advlab.params.train import Train

FGSM_RS_STEP_SCALE = 1.25  # Wong, Rice and Kolter 2020: step 1.25 * eps from a random start
MADRY_STEP_SCALE = 2.5  # Madry et al. 2018: steps * step size = 2.5 * eps
N_FGSM_NOISE = 2.0  # de Jorge et al. 2022: noise in [-2 eps, 2 eps], then a step of eps
TRADES_START = 0.001  # Zhang et al. 2019: the attack starts at x + 0.001 * noise


def training_attack(cfg: Train) -> Pgd:
    """The PGD settings of cfg.adversarial (fgsm_rs, pgd or trades), as the papers set them."""
    if cfg.adversarial == "fgsm_rs":
        return Pgd(steps=1, step_scale=FGSM_RS_STEP_SCALE, random_start=True)
    return Pgd(steps=cfg.adv_steps, step_scale=MADRY_STEP_SCALE, random_start=True)


def kl_divergence(logits: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Per image KL(clean || softmax(logits)), `clean` being probabilities: TRADES's term."""
    return F.kl_div(F.log_softmax(logits, 1), clean, reduction="none").sum(1)


def n_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
           start: torch.Tensor) -> torch.Tensor:
    """N-FGSM: x + 2 eps * start, then one signed-gradient step of eps, never projected onto
    the eps-ball; both points clamped to [0, 1]."""
    noisy = (x + N_FGSM_NOISE * eps * start).clamp(0, 1)
    return (noisy + eps * loss_gradient(model, noisy, y)[2].sign()).clamp(0, 1)


def trades_example(model: nn.Module, x: torch.Tensor, cfg: Train,
                   start: torch.Tensor) -> torch.Tensor:
    """TRADES's inner maximization: PGD on KL(p(x) || p(x')) from x + 0.001 * start."""
    if cfg.adv_eps == 0:
        return x
    clean = F.softmax(judge(model, x), 1)
    settings = training_attack(cfg)
    step_size = settings.step_scale * cfg.adv_eps / settings.steps
    return pgd(model, x, clean, cfg.adv_eps, settings.steps, step_size,
               start * (TRADES_START / cfg.adv_eps), loss=kl_divergence)


def adversarial_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      cfg: Train, start: torch.Tensor | None = None) -> torch.Tensor:
    """The images a training step attacks with: x itself for `none`, else cfg.adversarial's
    example at cfg.adv_eps (PGD's last iterate: training wants the hardest point). `start`
    None draws the random start from the global generator."""
    if cfg.adversarial == "none":
        return x
    start = uniform_start(x) if start is None else start
    if cfg.adversarial == "n_fgsm":
        return n_fgsm(model, x, y, cfg.adv_eps, start).detach()
    if cfg.adversarial == "trades":
        return trades_example(model, x, cfg, start).detach()
    settings = training_attack(cfg)
    step_size = settings.step_scale * cfg.adv_eps / settings.steps
    return pgd(model, x, y, cfg.adv_eps, settings.steps, step_size, start).detach()


def training_loss(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                  cfg: Train) -> torch.Tensor:
    """The batch's mean loss with train.label_smoothing: cross-entropy on x_adv (x_adv is x
    without adversarial training), or for trades CE(f(x), y) + trades_beta * KL(p(x) || p(x_adv))
    averaged over the batch (two forward passes, in the model's training mode)."""
    if cfg.adversarial != "trades":
        return F.cross_entropy(model(x_adv), y, label_smoothing=cfg.label_smoothing)
    logits = model(x)
    clean = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    return clean + cfg.trades_beta * kl_divergence(model(x_adv), F.softmax(logits, 1)).mean()


def robust_draws(data: ImageSet, seed: int, cfg: Train) -> Draws:
    """The fixed random starts of the robust validation: keyed per image by base.seed."""
    index = torch.arange(len(data), device=data.labels.device)
    return Draws.keyed(seed, "robust validation", cfg.adv_eps, index, data.shape)


def robust_accuracy(model: nn.Module, data: ImageSet, draws: Draws, cfg: Train,
                    batch_size: int) -> torch.Tensor:
    """PGD-k accuracy at train.adv_eps (k = train.robust_val_steps, steps of 2.5 * eps / k from
    the random starts of `draws`, the attack stage's PGD): the fraction of `data` classified
    correctly both clean and at every iterate, by the judge. A 0-d tensor on the data's
    device."""
    was_training = model.training
    model.eval()
    settings = Pgd(steps=cfg.robust_val_steps, step_scale=MADRY_STEP_SCALE, random_start=True)
    robust = torch.zeros((), device=data.labels.device)
    for index in batches(len(data), batch_size, device=data.labels.device):
        x, y = to_float(data.images[index]), data.labels[index]
        right = judge(model, x).argmax(1) == y
        x, y = x[right], y[right]
        judged = pgd_until_fooled(model, x, y, cfg.adv_eps, settings, draws[index[right]])
        robust += (judged.logits.argmax(1) == y).sum()
    model.train(was_training)
    return robust / len(data)
