"""Adversarial attacks, one module per attack, named in one registry (registry.py):
FGSM (the lab's Problem 5), PGD, APGD-CE, APGD-T and FAB-T (AutoAttack's gradient attacks) and
Square (its query-only one); robustness.py sweeps them over eps and the worst case over attacks;
metrics.py writes attack.json and attack.csv."""

from advlab.attacks.apgd import apgd, apgd_ce, apgd_t
from advlab.attacks.core import no_tf32, uniform_start
from advlab.attacks.fab import fab_t
from advlab.attacks.fgsm import fgsm_gradient_sign, perturb
from advlab.attacks.metrics import csv_rows, save_metrics, summary
from advlab.attacks.pgd import adversarial_batch, pgd, pgd_until_fooled, training_attack
from advlab.attacks.registry import ATTACKS, WORST_CASE, title
from advlab.attacks.robustness import AttackResult, attack_subset, fgsm_sweep, sweep, worst_case
from advlab.attacks.square import square

__all__ = [
    "ATTACKS", "WORST_CASE", "AttackResult", "adversarial_batch", "apgd", "apgd_ce", "apgd_t",
    "attack_subset", "csv_rows", "fab_t", "fgsm_gradient_sign", "fgsm_sweep", "no_tf32", "perturb",
    "pgd", "pgd_until_fooled", "save_metrics", "square", "summary", "sweep", "title",
    "training_attack", "uniform_start", "worst_case",
]
