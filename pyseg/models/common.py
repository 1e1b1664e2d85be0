"""Shared pieces of every pyseg model: input-size checks and backbone/head parameter groups."""

from __future__ import annotations

import numbers

import torch
from torch import nn


class SegmentationModel(nn.Module):
    """Base class: (B,3,H,W) float -> logits (B,num_classes,H,W).

    Subclasses set ``self.backbone`` (the part a pretrained file can initialise) and the input-size rule
    ``size_multiple`` / ``min_size`` (checked by :meth:`check_input` before any work is done).
    """

    size_multiple: int = 1
    min_size: int = 1
    size_hint: str = ""

    def __init__(self, num_classes: int):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = int(num_classes)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise TypeError/ValueError when ``x`` is not a (B,3,H,W) float tensor of an accepted size."""
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} expects a torch.Tensor (B,3,H,W), got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{name} expects input of shape (B,3,H,W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"{name} expects a float tensor (normalised image), got dtype {x.dtype}")
        h, w = x.shape[-2:]
        m, lo = self.size_multiple, self.min_size
        if h % m or w % m or h < lo or w < lo:
            need = []
            if m > 1:
                need.append(f"H and W divisible by {m}")
            if lo > 1:
                need.append(f"H, W >= {lo}")
            ok = max(lo, -(-max(h, w) // m) * m)
            raise ValueError(
                f"{name} needs {' and '.join(need)}; got H={h}, W={w}. Resize or pad the input "
                f"(e.g. to {ok}x{ok}).{(' ' + self.size_hint) if self.size_hint else ''}"
            )

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, head parameters): e.g. for a lower learning rate on the backbone."""
        backbone = list(self.backbone.parameters())
        ids = {id(p) for p in backbone}
        head = [p for p in self.parameters() if id(p) not in ids]
        return backbone, head


def split_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(backbone parameters, head parameters) of a pyseg model (unwraps DataParallel/DDP ``.module``)."""
    model = getattr(model, "module", model)
    if not isinstance(model, SegmentationModel):
        raise TypeError(f"split_params expects a pyseg model from create_model, got {type(model).__name__}")
    return model.param_groups()


def conv_bn_relu(cin: int, cout: int, k: int = 3, dilation: int = 1, bias: bool = False) -> nn.Sequential:
    """k x k conv ('same' padding) + BatchNorm + ReLU."""
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=bias),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )
