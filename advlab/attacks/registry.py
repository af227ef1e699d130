"""Every attack by name: adding one is a module with its function, a settings class in
params.py (its `attack.<section>`, and its name in params.METHODS, which params.yaml's schema
lists), and one entry here. The stage, the report, TensorBoard,
the plots and params validation all read this table.

An attack's `run(model, x, y, eps, settings, draws)` takes float images x in [0, 1] that
the model classifies correctly and returns a core.Judged: per image a point of the eps-ball
(clamped to [0, 1]), the first that fooled the model, else the attack's best, and the logits
core.judge gave that point, on which the attack decided (the sweep records them: one judge,
see core.py). Every decision it takes about an image comes from core.judge's logits
(core.attack_gradient returns them with the gradient). `draws` (core.Draws) holds its
randomness, keyed per image: draws.start, draws.noise(stream), draws.uniform(stream, shape),
draws.integers(stream, high, count), draws[index] for a subset. FGSM has no `run`: its one
gradient serves every eps (the sweep's fast path, robustness.py) and it attacks every image,
as in the lab.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from advlab.attacks.apgd import apgd_ce, apgd_t
from advlab.attacks.core import Draws, Judged
from advlab.attacks.fab import fab_t
from advlab.attacks.pgd import pgd_until_fooled
from advlab.attacks.square import square
from advlab.params.attack import METHODS
from advlab.params.fields import ParamsError

Run = Callable[[nn.Module, torch.Tensor, torch.Tensor, float, object, Draws], Judged]


@dataclass(frozen=True)
class Attack:
    name: str  # in attack.methods / attack.ensemble, attack.json, attack.csv, TensorBoard
    title: str  # for people: the report, the figures
    section: str | None  # its settings: params.attack.<section>; None: no settings
    run: Run | None  # None: FGSM's shared-gradient path in robustness.py
    gradient_free: bool = False
    min_classes: int = 2  # classes the attack needs (the DLR loss of apgd_t ranks 4 logits)


ATTACKS: dict[str, Attack] = {a.name: a for a in (
    Attack("fgsm", "FGSM", None, None),
    Attack("pgd", "PGD", "pgd", pgd_until_fooled),  # type: ignore[arg-type]
    Attack("apgd_ce", "APGD-CE", "apgd_ce", apgd_ce),  # type: ignore[arg-type]
    Attack("apgd_t", "APGD-T", "apgd_t", apgd_t, min_classes=4),  # type: ignore[arg-type]
    Attack("fab_t", "FAB-T", "fab_t", fab_t),  # type: ignore[arg-type]
    Attack("square", "Square", "square", square, gradient_free=True),  # type: ignore[arg-type]
)}
if tuple(ATTACKS) != METHODS:  # params.yaml's schema lists the names: they must agree
    raise ImportError(f"advlab.params.METHODS {METHODS} != the registry's {tuple(ATTACKS)}")
WORST_CASE = "worst_case"  # the cascade's row in attack.json / attack.csv (not an attack)


def title(name: str) -> str:
    """How people read a method name: FGSM, APGD-T, worst case; unknown names upper-cased."""
    if name == WORST_CASE:
        return "worst case"
    return ATTACKS[name].title if name in ATTACKS else name.upper()


def settings_of(name: str, attack_params: object) -> object:
    """The attack's settings from params.attack (None for an attack without settings)."""
    section = ATTACKS[name].section
    return None if section is None else getattr(attack_params, section)


def check_classes(attack_params: object, num_classes: int) -> None:
    """Refuses, naming the key, an attack in attack.methods or attack.ensemble that needs more
    classes than the data has."""
    for key in ("methods", "ensemble"):
        for name in getattr(attack_params, key):
            if num_classes < (need := ATTACKS[name].min_classes):
                raise ParamsError(
                    f"params: attack.{key} holds {name}, which needs at least {need} classes; "
                    f"the data has {num_classes}: remove {name} from attack.{key}")
