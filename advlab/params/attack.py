"""attack: the attack stage (epsilons, methods, the ensemble and each attack's budget)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, Strict, field_validator, model_validator

from advlab.params.fields import Flag, Rule, Section, distinct_list, integer, number

# attack.methods and attack.ensemble: the names of advlab/attacks/registry.py (which checks
# that they agree; the registry cannot be imported here: it imports modules that import this)
METHODS = ("fgsm", "pgd", "apgd_ce", "apgd_t", "fab_t", "square")
# FGSM has no run per image (its one shared gradient serves every eps): listed in
# attack.methods, it joins the worst case from there, so the cascade takes the others
CASCADE = METHODS[1:]
EPS_STEP = 1000  # attack scalars sit at step round(1000 * eps): TensorBoard steps are integers


class Pgd(Section):
    steps: integer(gt=0) = 10
    step_scale: number(gt=0, finite=True) = 2.5  # step size = step_scale * eps / steps
    random_start: Flag = True


class Apgd(Section):
    steps: integer(gt=0) = 100
    restarts: integer(gt=0) = 1


class ApgdT(Section):
    steps: integer(gt=0) = 100
    targets: integer(gt=0) = 9


class FabT(Section):
    steps: integer(gt=0) = 100
    targets: integer(gt=0) = 9
    alpha_max: number(ge=0, le=1) = 0.1  # the largest bias of a step towards the clean image
    eta: number(ge=1, finite=True) = 1.05  # overshoot past the linearized boundary
    beta: number(gt=0, le=1) = 0.9  # pull-back towards the clean image past the boundary


class Square(Section):
    queries: integer(gt=0) = 5000
    p_init: number(gt=0, le=1) = 0.8
    rescale: Flag = False  # AutoAttack's resc_schedule: the p-schedule scaled to `queries`


class Attack(Section):
    epsilons: distinct_list(number(ge=0, le=1), "a non-empty list of distinct numbers in "
                            "[0, 1] (each is a key of metrics/attack.json)"
                            ) = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
    methods: distinct_list(Literal[METHODS], "a non-empty list of distinct methods from "
                           + ", ".join(METHODS)) = ("fgsm",)
    ensemble: Annotated[tuple[Literal[CASCADE], ...], Field(
        description="a list of distinct methods from " + ", ".join(CASCADE) + " (may be empty; "
        "fgsm counts in the worst case from attack.methods)",
        json_schema_extra={"uniqueItems": True})] = ("apgd_ce", "apgd_t", "fab_t", "square")
    max_images: Annotated[Annotated[int, Strict(), Field(gt=0)] | None, Field(
        description="null (every test image) or an integer > 0")] = None
    pgd: Pgd = Pgd()
    apgd_ce: Apgd = Apgd()
    apgd_t: ApgdT = ApgdT()
    fab_t: FabT = FabT()
    square: Square = Square()

    @field_validator("epsilons", "methods", "ensemble")
    @classmethod
    def _distinct(cls, value: tuple, info: Any) -> tuple:
        if len(set(value)) != len(value):
            raise ValueError(cls.model_fields[info.field_name].description)
        return value

    @model_validator(mode="after")
    def _epsilons_named_apart(self) -> Attack:
        """Each eps has its own metric key (`eps=%g`) and TensorBoard step."""
        for names in (eps_key, eps_step):
            seen: dict[object, float] = {}
            for eps in self.epsilons:
                if (other := seen.setdefault(names(eps), eps)) != eps:
                    raise Rule(("epsilons",), self.epsilons, (
                        f"numbers apart in their metric keys (eps=%g) and TensorBoard steps "
                        f"(round({EPS_STEP}·eps)): {other!r} and {eps!r} both give "
                        f"{names(eps)!r}"))
        return self


def eps_key(eps: float) -> str:
    """An eps's name in attack.json: `dvc metrics show` lists e.g. fgsm.accuracy.eps=0.1."""
    return f"eps={eps:g}"


def eps_step(eps: float) -> int:
    return round(EPS_STEP * eps)


