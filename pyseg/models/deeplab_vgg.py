"""DeepLab v1 LargeFOV and DeepLab v2 ASPP-L on VGG16.

- v1: Chen, Papandreou, Kokkinos, Murphy, Yuille, "Semantic Image Segmentation with Deep Convolutional Nets and
  Fully Connected CRFs", ICLR 2015 (DeepLab-LargeFOV): VGG16 with pool4/pool5 3x3 stride 1, conv5 dilation 2,
  fc6 3x3 dilation 12 (1024 ch), fc7 1x1 (1024), dropout 0.5 after each, fc8 1x1 -> classes; output stride 8,
  bilinear upsampling x8 to the input size. 20.5M parameters with 21 classes (paper's VGG16 without BN).
- v2: Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous Convolution, and
  Fully Connected CRFs", TPAMI 2018: ASPP-L = four parallel fc6(3x3, rate 6/12/18/24, 1024)-fc7(1x1, 1024)-
  fc8(1x1, classes) branches on pool5 whose score maps are summed.

Both accept any input size H, W >= 8 (the pools pad, so the stride-8 map has ceil(H/8) rows).
``batch_norm=True`` (default; torchvision ``vgg16_bn`` layout) adds BN after each VGG conv, which the papers did
not have but which makes training from random initialisation workable; ``batch_norm=False`` is the papers'.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import VGG16Features
from .common import SegmentationModel
from .pretrained import load_backbone_weights, vgg_fc_to_conv


def _fc_branch(num_classes: int, rate: int, channels: int = 1024, dropout: float = 0.5) -> nn.Sequential:
    """fc6 (3x3, dilation ``rate``, 512->channels) - fc7 (1x1) - fc8 (1x1 -> classes), ReLU + dropout."""
    return nn.Sequential(
        nn.Conv2d(512, channels, 3, padding=rate, dilation=rate), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
        nn.Conv2d(channels, channels, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
        nn.Conv2d(channels, num_classes, 1),
    )


class _DeepLabVGG(SegmentationModel):
    min_size = 8
    rates: tuple[int, ...] = ()

    def __init__(self, num_classes: int, batch_norm: bool = True, pretrained_backbone: str | None = None,
                 fc_channels: int = 1024, dropout: float = 0.5):
        super().__init__(num_classes)
        self.backbone = VGG16Features("largefov", batch_norm=batch_norm)
        self.branches = nn.ModuleList(_fc_branch(num_classes, r, fc_channels, dropout) for r in self.rates)
        if pretrained_backbone is not None:
            loaded = load_backbone_weights(self.backbone, pretrained_backbone, "vgg16_bn" if batch_norm else "vgg16")
            for branch in self.branches:  # v2's ASPP-L: every branch starts from the same fc6/fc7
                vgg_fc_to_conv(loaded, branch[0], branch[3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        size = x.shape[-2:]
        f = self.backbone(x)
        out = self.branches[0](f)
        for b in self.branches[1:]:
            out = out + b(f)
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)


class DeepLabV1LargeFOV(_DeepLabVGG):
    """DeepLab v1 LargeFOV (VGG16). (B,3,H,W) -> logits (B,num_classes,H,W); features at stride 8.

    Args: num_classes; batch_norm (VGG16-BN layout, default True); pretrained_backbone (``"imagenet"``:
    torchvision's ``vgg16_bn`` or ``vgg16`` ImageNet weights, matching ``batch_norm``, downloaded once into torch's
    hub cache; or a local state_dict file of that layout); fc_channels (1024); dropout (0.5).

    Pretrained fc6/fc7, converted as the paper did: VGG16's fc6 (4096 x 512x7x7) is decimated to a 3x3 kernel
    (taps at rows/columns 0, 3, 6), applied with dilation 12, and to 1024 filters (every 4th); fc7 (4096 x 4096)
    keeps every 4th row and column -> a 1x1 conv 1024 -> 1024. fc8 starts from random weights.
    """

    rates = (12,)


class DeepLabV2VGG16(_DeepLabVGG):
    """DeepLab v2 ASPP-L on VGG16: four branches at rates 6/12/18/24, summed. Shapes and arguments as DeepLab
    v1; with pretrained weights every branch's fc6/fc7 starts from the same decimated VGG16 fc6/fc7."""

    rates = (6, 12, 18, 24)
