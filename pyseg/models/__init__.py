"""Segmentation models by name: ``create_model(name, num_classes, **kwargs)``, ``list_models()``.

Every model maps (B,3,H,W) float (normalised RGB) -> logits (B,num_classes,H,W) at the input size, is randomly
initialised unless ``pretrained_backbone`` names weights (``"imagenet"``: torchvision's ImageNet weights through
its weights API and cache) or a local torchvision-layout state_dict file (see :mod:`pyseg.models.pretrained`),
checks its input size up front, and offers ``model.param_groups()`` /
:func:`split_params` -> (backbone params, head params).

Models (input H, W accepted):
- ``deconvnet_vgg16``: DeconvNet, VGG16-BN, fc6 7x7 (Noh et al. 2015); H, W divisible by 32 and >= 224
  (``fc6_padding=3``: any multiple of 32). 251.8M parameters with 21 classes (paper: 252M).
- ``deeplabv1_vgg16``: DeepLab v1 LargeFOV, VGG16(-BN), output stride 8; H, W >= 8. 20.5M.
- ``deeplabv2_vgg16``: DeepLab v2 ASPP-L (rates 6/12/18/24, summed), VGG16(-BN), OS 8; H, W >= 8. 37.9M.
- ``deeplabv2_resnet101``: DeepLab v2 ASPP-L, ResNet-101 dilated, OS 8; H, W >= 32. 44.0M.
- ``deeplabv3_resnet{18,50,101}``: DeepLab v3, ASPP + image pooling, OS 16 or 8; H, W >= 32. 15.3/39.0/58.0M.
- ``deeplabv3plus_resnet{18,50,101}``: DeepLab v3+, 48-ch low-level decoder, OS 16 or 8; H, W >= 32.
  16.6/40.4/59.3M.

The ``*_resnet18`` models are light (about 13-16M parameters) and meant for the CPU demo.
"""

from __future__ import annotations

import difflib
import inspect
import numbers
from collections.abc import Callable
from functools import partial

from torch import nn

from .common import SegmentationModel, split_params
from .deconvnet import DeconvNet
from .deeplab_resnet import DeepLabV2ResNet, DeepLabV3, DeepLabV3Plus
from .deeplab_vgg import DeepLabV1LargeFOV, DeepLabV2VGG16

__all__ = ["create_model", "list_models", "split_params", "SegmentationModel", "DeconvNet", "DeepLabV1LargeFOV",
           "DeepLabV2VGG16", "DeepLabV2ResNet", "DeepLabV3", "DeepLabV3Plus"]

_MODELS: dict[str, Callable[..., SegmentationModel]] = {
    "deconvnet_vgg16": DeconvNet,
    "deeplabv1_vgg16": DeepLabV1LargeFOV,
    "deeplabv2_vgg16": DeepLabV2VGG16,
    "deeplabv2_resnet101": partial(DeepLabV2ResNet, depth=101),
    "deeplabv3_resnet18": partial(DeepLabV3, depth=18),
    "deeplabv3_resnet50": partial(DeepLabV3, depth=50),
    "deeplabv3_resnet101": partial(DeepLabV3, depth=101),
    "deeplabv3plus_resnet18": partial(DeepLabV3Plus, depth=18),
    "deeplabv3plus_resnet50": partial(DeepLabV3Plus, depth=50),
    "deeplabv3plus_resnet101": partial(DeepLabV3Plus, depth=101),
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_MODELS)


def _accepted_kwargs(factory: Callable) -> list[str]:
    fixed = factory.keywords if isinstance(factory, partial) else {}
    func = factory.func if isinstance(factory, partial) else factory
    params = inspect.signature(func).parameters
    return [p for p in params if p not in ("self", "num_classes") and p not in fixed]


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build model ``name`` with ``num_classes`` output channels; kwargs go to the model (see each class).

    Raises ValueError for an unknown name (listing the choices and the closest match) and TypeError for a
    keyword the model does not take (listing those it does).
    """
    if not isinstance(name, str) or name not in _MODELS:
        close = difflib.get_close_matches(str(name), list(_MODELS), n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} Choices: {', '.join(list_models())}")
    factory = _MODELS[name]
    accepted = _accepted_kwargs(factory)
    bad = [k for k in kwargs if k not in accepted]
    if bad:
        raise TypeError(f"model {name!r} does not take {', '.join(map(repr, bad))}; "
                        f"it accepts: {', '.join(accepted)}")
    if isinstance(num_classes, numbers.Integral) and not isinstance(num_classes, bool):
        num_classes = int(num_classes)  # e.g. a NumPy integer
    return factory(num_classes=num_classes, **kwargs)
