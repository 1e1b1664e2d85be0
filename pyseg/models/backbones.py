"""Backbones built from torchvision building blocks (random init; weights come from :mod:`.pretrained`).

- :class:`VGG16Features`: the 13 conv layers of VGG16 (optionally with batch norm) kept in torchvision's
  ``features`` layout, so a local torchvision ``vgg16``/``vgg16_bn`` state_dict loads by key.
  Two variants: ``"deconvnet"`` (2x2 max pools that return their switches, output stride 32) and
  ``"largefov"`` (DeepLab: 3x3 pools, pool4/pool5 stride 1, conv5 dilation 2, output stride 8).
- :class:`ResNetBackbone`: torchvision ResNet-18/50/101 without ``avgpool``/``fc``; layer3/layer4 can be
  dilated instead of strided (output stride 32, 16 or 8). Keys match torchvision's ``resnet*`` state_dict.

Weights (ImageNet by name or a local file) are loaded by :mod:`pyseg.models.pretrained`.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

# Channels of the five VGG16 stages (conv layers per stage: 2, 2, 3, 3, 3).
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class VGG16Features(nn.Module):
    """VGG16 conv layers in torchvision's ``features`` layout.

    Args:
        variant: ``"deconvnet"``: five 2x2/stride-2 max pools with ``return_indices=True``; ``forward`` returns
            ``(x, switches, sizes)`` with x (B,512,H/32,W/32), one switch tensor and pre-pool size per stage.
            ``"largefov"`` (DeepLab v1/v2): pools 1-3 are 3x3/stride 2/pad 1, pools 4-5 are 3x3/stride 1/pad 1,
            conv5 uses dilation 2; ``forward`` returns x (B,512,ceil(H/8),ceil(W/8)).
        batch_norm: use torchvision ``vgg16_bn`` (BN after every conv) instead of ``vgg16``.
    """

    def __init__(self, variant: str = "deconvnet", batch_norm: bool = True):
        super().__init__()
        if variant not in ("deconvnet", "largefov"):
            raise ValueError(f"VGG16Features variant must be 'deconvnet' or 'largefov', got {variant!r}")
        self.variant = variant
        # torchvision's own layer builder (same module indices as vgg16[_bn].features), without building the
        # 120M-parameter classifier; initialised like torchvision's VGG.
        features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=batch_norm)
        for m in features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        pool_idx = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
        assert len(pool_idx) == 5
        for stage, i in enumerate(pool_idx):
            if variant == "deconvnet":
                features[i] = nn.MaxPool2d(2, 2, return_indices=True)
            else:
                stride = 2 if stage < 3 else 1
                features[i] = nn.MaxPool2d(3, stride, padding=1)
        if variant == "largefov":
            for m in features[pool_idx[3] + 1 : pool_idx[4]]:
                if isinstance(m, nn.Conv2d):
                    m.dilation, m.padding = (2, 2), (2, 2)
        self.features = features
        self._pool_idx = pool_idx
        self.out_channels = 512

    def forward(self, x: torch.Tensor):
        if self.variant == "largefov":
            return self.features(x)
        switches, sizes = [], []
        for i, m in enumerate(self.features):
            if i in self._pool_idx:
                sizes.append(x.shape[-2:])
                x, idx = m(x)
                switches.append(idx)
            else:
                x = m(x)
        return x, switches, sizes


def _dilate_basic_layer(layer: nn.Sequential, dilation: int, previous: int) -> None:
    """Turn a strided torchvision BasicBlock layer into a dilated one (torchvision refuses dilation there).

    Mirrors torchvision's Bottleneck rule: the first block keeps the previous dilation, later blocks use the
    new one; the stride of the first block (and its downsample) becomes 1.
    """
    for bi, block in enumerate(layer):
        d = previous if bi == 0 else dilation
        if bi == 0:
            block.conv1.stride = (1, 1)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
        block.conv1.dilation, block.conv1.padding = (d, d), (d, d)
        block.conv2.dilation, block.conv2.padding = (dilation, dilation), (dilation, dilation)


class ResNetBackbone(nn.Module):
    """torchvision ResNet trunk returning intermediate features.

    Args:
        depth: 18, 50 or 101.
        output_stride: 32 (plain), 16 (layer4 dilated 2) or 8 (layer3 dilated 2, layer4 dilated 4).

    ``forward(x)`` with x (B,3,H,W) returns a dict: ``"low"`` = layer1 output (B,C1,H/4,W/4) and ``"out"`` =
    layer4 output (B,C4,H/os,W/os) (sizes rounded up). C1/C4: 64/512 for ResNet-18, 256/2048 for 50/101.
    """

    def __init__(self, depth: int = 101, output_stride: int = 8):
        super().__init__()
        ctors = {18: torchvision.models.resnet18, 50: torchvision.models.resnet50, 101: torchvision.models.resnet101}
        if depth not in ctors:
            raise ValueError(f"ResNet depth must be one of {sorted(ctors)}, got {depth!r}")
        dil = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}
        if output_stride not in dil:
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        if depth == 18:
            net = ctors[depth](weights=None)
            if output_stride <= 16:
                _dilate_basic_layer(net.layer4, 2 if output_stride == 16 else 4, 1 if output_stride == 16 else 2)
            if output_stride == 8:
                _dilate_basic_layer(net.layer3, 2, 1)
        else:
            net = ctors[depth](weights=None, replace_stride_with_dilation=dil[output_stride])
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.depth = depth
        self.output_stride = output_stride
        self.low_channels = 64 if depth == 18 else 256
        self.out_channels = 512 if depth == 18 else 2048

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        x = self.layer4(self.layer3(self.layer2(low)))
        return {"low": low, "out": x}
