"""Model summaries: a per-layer table with output shapes and parameters, totals and MACs.

Shapes and MACs come from a forward pass of a twin of the model built on the meta device (no
memory, no arithmetic), so even ViT-G summarises in about a second. MACs are counted by
``torch.utils.flop_counter`` on the actual operators (convolution, matmuls, attention bmm's), one
multiply-accumulate = 2 FLOPs, the convention of timm's and the papers' "GMACs"/"GFLOPs" tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@dataclass
class LayerRow:
    """One line of the summary table."""

    name: str
    kind: str
    shape: str  # output shape ("[-1, 197, 768]", batch as -1), a parameter's own shape, or "-"
    params: int
    depth: int


@dataclass
class ModelSummary:
    """What :func:`summarize` measured. ``format()`` renders it as a text table."""

    title: str
    input_shape: tuple[int, ...]
    rows: list[LayerRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    torchsummary_params: int = 0
    torchsummary_left_out: list[str] = field(default_factory=list)
    macs: int = 0

    def format(self) -> str:
        """The summary as a fixed-width text table."""
        width = max([len("  " * r.depth + r.name) for r in self.rows] + [20]) + 2
        kind_w = max([len(r.kind) for r in self.rows] + [4]) + 2
        head = f"{'Layer':<{width}}{'Type':<{kind_w}}{'Output Shape':<22}{'Param #':>14}"
        rule = "=" * len(head)
        lines = [self.title, rule, head, rule]
        for r in self.rows:
            lines.append(f"{'  ' * r.depth + r.name:<{width}}{r.kind:<{kind_w}}{r.shape:<22}{r.params:>14,}")
        lines += [
            rule,
            f"Input shape: {list(self.input_shape)}",
            f"Total params: {self.total_params:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.total_params - self.trainable_params:,}",
            f"MACs per image: {self.macs / 1e9:.3f} G ({2 * self.macs / 1e9:.3f} GFLOPs)",
            f"Params size (fp32): {self.total_params * 4 / 2**20:.2f} MB",
            f"torchsummary would print 'Total params: {self.torchsummary_params:,}': it counts only the "
            f"'weight' and 'bias' of submodules, leaving out {', '.join(self.torchsummary_left_out) or 'nothing'}",
            rule,
        ]
        return "\n".join(lines)


def _input_shape(model: nn.Module) -> tuple[int, ...]:
    return (1, *model.input_shape)


def measure_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on one input of ``input_shape`` (no batch dimension).

    Counted by ``torch.utils.flop_counter`` on a twin of the model built on the meta device.
    """
    with torch.device("meta"):
        twin = type(model)(model.cfg).eval().requires_grad_(False)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        twin(torch.zeros((1, *input_shape), device="meta"))
    return counter.get_total_flops() // 2


def _shape(out: object) -> str:
    if isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor):
        return "-"
    return "[" + ", ".join(["-1", *map(str, out.shape[1:])]) + "]"


def summarize(model: nn.Module, input_shape: tuple[int, ...] | None = None, depth: int | None = None) -> ModelSummary:
    """Measure a model: per-layer output shapes and parameters, totals and MACs for one input.

    Args:
        model: A vitlab model (anything with a ``cfg`` it was built from).
        input_shape: Input with batch, e.g. ``(1, 3, 384, 384)``; defaults to the config's size.
        depth: Show modules down to this many levels (``blocks.0.attn`` is level 3); deeper modules
            are folded into their ancestor's parameter count. None shows every module.

    Returns:
        A :class:`ModelSummary`; rows' parameter counts plus the top-level parameters sum to the total.
    """
    input_shape = tuple(input_shape or _input_shape(model))
    with torch.device("meta"):
        twin = type(model)(model.cfg).eval().requires_grad_(False)

    shapes: dict[str, str] = {}
    called: list[str] = []  # modules in the order their forward starts
    hooks = []
    for name, module in twin.named_modules():
        if name:

            def pre_hook(mod: nn.Module, args: object, name: str = name) -> None:
                called.append(name)

            def hook(mod: nn.Module, args: object, out: object, name: str = name) -> None:
                shapes[name] = _shape(out)

            hooks.append(module.register_forward_pre_hook(pre_hook))
            hooks.append(module.register_forward_hook(hook))
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            twin(torch.zeros(input_shape, device="meta"))
    finally:
        for h in hooks:
            h.remove()

    modules = dict(model.named_modules())
    rows: list[LayerRow] = [
        LayerRow(pname, "Parameter", str(list(p.shape)), p.numel(), 0)
        for pname, p in model.named_parameters(recurse=False)
    ]
    order = {n: i for i, n in reversed(list(enumerate(called)))}  # first call of each module
    for name in modules:  # containers that never run themselves (ModuleList) sit before their first child
        if name and name not in order:
            children = [i for n, i in order.items() if n.startswith(name + ".")]
            order[name] = min(children) - 0.5 if children else len(called)
    names = sorted((n for n in modules if n), key=lambda n: (order[n], n))
    for name in names:
        level = name.count(".") + 1
        if depth is not None and level > depth:
            continue
        module = modules[name]
        folded = depth is not None and level == depth
        own = count_params(module) if folded else sum(p.numel() for p in module.parameters(recurse=False))
        rows.append(LayerRow(name, type(module).__name__, shapes.get(name, "-"), own, level - 1))

    # torchsummary hooks every submodule except Sequential/ModuleList and sums `weight` + `bias` of those
    # that ran; parameters under any other attribute name are not seen.
    ts_count, left_out = 0, []
    for name, module in modules.items():
        if not name or isinstance(module, (nn.Sequential, nn.ModuleList)) or name not in shapes:
            continue
        for pname, p in module.named_parameters(recurse=False):
            if pname in ("weight", "bias"):
                ts_count += p.numel()
    for pname, _ in model.named_parameters():
        leaf = pname.rsplit(".", 1)[-1]
        if leaf not in ("weight", "bias"):
            left_out.append(pname)
    title = f"{type(model).__name__}  ({_describe(model)})"
    return ModelSummary(
        title=title,
        input_shape=input_shape,
        rows=rows,
        total_params=count_params(model),
        trainable_params=count_params(model, trainable_only=True),
        torchsummary_params=ts_count,
        torchsummary_left_out=_compress(left_out),
        macs=counter.get_total_flops() // 2 // input_shape[0],
    )


def _describe(model: nn.Module) -> str:
    return model.cfg.describe()


def _compress(names: list[str]) -> list[str]:
    """Fold per-block names (``blocks.3.ls1.gamma``) into one pattern (``blocks.*.ls1.gamma``)."""
    out: list[str] = []
    for n in names:
        parts = n.split(".")
        pattern = ".".join("*" if p.isdigit() else p for p in parts)
        if pattern not in out:
            out.append(pattern)
    return out
