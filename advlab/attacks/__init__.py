"""Adversarial attacks, one module per attack, named in one registry (registry.py):
FGSM (the lab's Problem 5), PGD, APGD-CE, APGD-T and FAB-T (AutoAttack's gradient attacks) and
Square (its query-only one); robustness.py sweeps them over eps and the worst case over attacks;
metrics.py writes attack.json and attack.csv.

Import from the submodules (`from advlab.attacks.pgd import pgd`): this file imports none, so
a stage depends only on the attacks it uses (its import closure, dvc.yaml's deps)."""
