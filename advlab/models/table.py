"""The parameter count by the lab's Table 1.3 formulas, one row per layer with parameters,
checked against PyTorch's own count. A conv or linear layer without bias has no +1; BatchNorm
(not in Table 1.3) has a scale and a shift per channel, none when affine=False. A layer whose
weight is frozen (fast_cnn's whitening) is marked: PyTorch counts it, the optimizer skips it."""

from __future__ import annotations

from torch import nn

Row = tuple[str, str, int]  # (layer, arithmetic, count)


def _row(name: str, layer: nn.Module) -> Row | None:
    kind = type(layer).__name__
    if isinstance(layer, nn.Conv2d):
        inputs = layer.in_channels // layer.groups
        kh, kw = layer.kernel_size
        kernel = f"{kh}²" if kh == kw else f"{kh}·{kw}"
        fan_in, text = inputs * kh * kw, f"{inputs}·{kernel}"
        outputs = layer.out_channels
    elif isinstance(layer, nn.Linear):
        fan_in, text, outputs = layer.in_features, f"{layer.in_features}", layer.out_features
    elif isinstance(layer, nn.BatchNorm2d):
        if not layer.affine:
            return None
        return f"{name} {kind}", f"2·{layer.num_features}", 2 * layer.num_features
    else:
        return None
    if layer.bias is not None:
        fan_in, text = fan_in + 1, f"({text}+1)"
    if not layer.weight.requires_grad:
        kind += " (weight frozen)"
    return f"{name} {kind}", f"{text}·{outputs}", fan_in * outputs


def parameter_table(model: nn.Module) -> list[Row]:
    """(layer, Table 1.3 arithmetic, count) for every layer with parameters.

    Raises if the formulas and PyTorch's own count disagree, so the printed table is checked.
    """
    rows = [row for name, layer in model.named_modules() if (row := _row(name, layer))]
    by_formula = sum(count for *_, count in rows)
    by_torch = sum(p.numel() for p in model.parameters())
    if by_formula != by_torch:
        raise AssertionError(f"Table 1.3 count {by_formula} != PyTorch count {by_torch}")
    return rows


def format_parameter_table(rows: list[Row]) -> str:
    total = sum(r[2] for r in rows)
    width, digits = max(len(r[0]) for r in rows), max(9, len(f"{total:,}"))
    lines = [f"{layer:<{width}}  {formula:<22} = {count:>{digits},}"
             for layer, formula, count in rows]
    return "\n".join([*lines, f"{'total':<{width}}  {'':<22} = {total:>{digits},}"])
