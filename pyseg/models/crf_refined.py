"""A segmentation model followed by the dense-CRF layer, trained end to end (``model.crf`` in a config).

``CRFRefined(net, crf, mean, std)`` maps the normalised (B, 3, H, W) input to the net's logits refined by
:class:`pyseg.crf.layer.CRFLayer`. The layer needs the raw RGB image: it is recovered from the input by
undoing the normalisation, ``rgb = (x * std + mean) * 255``, which gives back the augmented uint8 values
exactly after rounding. ``crf_spec`` is what a checkpoint stores to rebuild it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pyseg.crf import CRFParams

CRF_KEYS = ("iterations", "params", "learn")


def parse_crf_spec(spec) -> dict:
    """``model.crf`` of a config as {"iterations": int, "params": dict of CRFParams, "learn": [...]}.

    ``params`` may be a preset name, a dict of CRFParams fields or a ``.json`` file of them (as
    ``pyseg-tune-crf --out`` writes); errors name the key."""
    from pyseg.crf.layer import LEARNABLE

    if not isinstance(spec, dict):
        raise ValueError(f"model.crf must be a mapping like {{iterations: 5, params: deeplab, learn: [compat, "
                         f"weights]}}, got {spec!r}")
    unknown = sorted(set(spec) - set(CRF_KEYS))
    if unknown:
        raise ValueError(f"model.crf: unknown keys {unknown}; expected some of {list(CRF_KEYS)}")
    params = spec.get("params", "krahenbuhl")
    if isinstance(params, str) and params.lower().endswith(".json"):
        try:  # e.g. pyseg-tune-crf's output: the layer starts from the tuned CRF
            params = CRFParams.from_file(params)
        except ValueError as e:
            raise ValueError(f"model.crf.params: {e}") from None
    elif isinstance(params, str):
        params = CRFParams.preset(params)
    elif isinstance(params, dict):
        try:
            params = CRFParams(**params)
        except TypeError as e:
            raise ValueError(f"model.crf.params: {e}") from None
    else:
        raise ValueError(f"model.crf.params must be a preset ({', '.join(CRFParams.presets())}), a mapping of "
                         f"CRF parameters or a .json file of them, got {params!r}")
    iterations = spec.get("iterations", 5)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"model.crf.iterations must be an integer >= 1, got {iterations!r}")
    learn = spec.get("learn", list(LEARNABLE))
    if isinstance(learn, str) or not all(x in LEARNABLE for x in learn):
        raise ValueError(f"model.crf.learn must be a list of some of {list(LEARNABLE)}, got {learn!r}")
    return {"iterations": iterations, "params": params.to_dict(), "learn": list(learn)}


class CRFRefined(nn.Module):
    """net -> CRF layer. ``forward(x)``: (B, 3, H, W) normalised images -> (B, L, H, W) refined logits."""

    def __init__(self, net: nn.Module, spec: dict, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        from pyseg.crf.layer import CRFLayer

        spec = parse_crf_spec(spec)
        self.net = net
        self.spec = spec
        self.crf = CRFLayer(net.num_classes, CRFParams(**spec["params"]), spec["iterations"], spec["learn"])
        self.num_classes = net.num_classes
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        rgb = (x.float() * self.std + self.mean) * 255.0
        return self.crf(logits.float(), rgb)

    def param_groups(self):
        """(backbone params, head params) of the net; the CRF's are :meth:`crf_parameters`."""
        groups = getattr(self.net, "param_groups", None)
        return groups() if callable(groups) else ([], list(self.net.parameters()))

    def crf_parameters(self) -> list:
        return list(self.crf.parameters())


def with_crf(model: nn.Module, spec: dict | None) -> nn.Module:
    """``model`` followed by the CRF layer of ``spec`` (a config's ``model.crf``, or a checkpoint's "crf"), with
    the ImageNet normalisation every pyseg transform uses; ``model`` itself when ``spec`` is None."""
    if spec is None:
        return model
    from pyseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    return CRFRefined(model, spec, IMAGENET_MEAN, IMAGENET_STD)
