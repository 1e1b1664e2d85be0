"""DeepLab v2 (ResNet-101, ASPP-L), v3 and v3+ on torchvision ResNets.

- v2: Chen et al., TPAMI 2018 ("DeepLab: ... Atrous Convolution, and Fully Connected CRFs"): ResNet-101 with
  conv4/conv5 dilated 2/4 (output stride 8); ASPP-L = four 3x3 convs (2048 -> classes) at rates 6/12/18/24 whose
  score maps are summed; bilinear upsampling to the input size. (The paper's multi-scale input fusion is not
  included.)
- v3: Chen, Papandreou, Schroff, Adam, "Rethinking Atrous Convolution for Semantic Image Segmentation", 2017:
  output stride 16 (rates 6/12/18) or 8 (rates doubled: 12/24/36); ASPP = 1x1 conv + three 3x3 atrous convs +
  image pooling, each 256 ch with BN + ReLU, concatenated -> 1x1 conv 256 (BN, ReLU) -> 1x1 conv classes.
- v3+: Chen, Zhu, Papandreou, Schroff, Adam, "Encoder-Decoder with Atrous Separable Convolution", ECCV 2018:
  the v3 encoder (stride 16) + decoder: upsample to stride 4, concat with layer1 features reduced to 48 ch
  (1x1 conv, BN, ReLU), two 3x3 convs (256, BN, ReLU), 1x1 conv classes, upsample x4. Plain (not separable)
  3x3 convs, as in the paper's ResNet-101 variant.

All map (B,3,H,W) -> (B,num_classes,H,W) for any H, W >= 32 (feature maps are ceil(H/stride) in size).
The image-pooling branch applies its BN after broadcasting the pooled vector to the feature map, so a training
batch of one image does not fail (BN of a single value); for B >= 2 this equals BN on the pooled vectors
(the running variance's unbiased correction uses B*h*w instead of B samples).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import ResNetBackbone
from .common import SegmentationModel, conv_bn_relu
from .pretrained import load_backbone_weights


class _ResNetSeg(SegmentationModel):
    min_size = 32

    def _make_backbone(self, depth: int, output_stride: int, pretrained_backbone: str | None) -> None:
        self.backbone = ResNetBackbone(depth, output_stride)
        if pretrained_backbone is not None:
            load_backbone_weights(self.backbone, pretrained_backbone, f"resnet{depth}")


class DeepLabV2ResNet(_ResNetSeg):
    """DeepLab v2 ASPP-L on a ResNet (paper: ResNet-101), output stride 8.

    Args: num_classes; depth (101; 50/18 also accepted); rates (6, 12, 18, 24); pretrained_backbone
    (``"imagenet"``, ``"imagenet1k_v2"`` or a local torchvision resnet state_dict file; see
    :mod:`pyseg.models.pretrained`).
    """

    def __init__(self, num_classes: int, depth: int = 101, rates: tuple[int, ...] = (6, 12, 18, 24),
                 pretrained_backbone: str | None = None):
        super().__init__(num_classes)
        self._make_backbone(depth, 8, pretrained_backbone)
        c = self.backbone.out_channels
        self.aspp = nn.ModuleList(nn.Conv2d(c, num_classes, 3, padding=r, dilation=r) for r in rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        f = self.backbone(x)["out"]
        out = self.aspp[0](f)
        for conv in self.aspp[1:]:
            out = out + conv(f)
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ImagePooling(nn.Module):
    """Global average pool -> 1x1 conv -> broadcast to (H,W) -> BN -> ReLU. (B,Cin,H,W) -> (B,Cout,H,W)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.adaptive_avg_pool2d(x, 1)).expand(-1, -1, x.shape[-2], x.shape[-1])
        return F.relu(self.bn(y))


class ASPP(nn.Module):
    """DeepLab v3 ASPP: (B,cin,h,w) -> (B,channels,h,w) (1x1 + three atrous 3x3 + pooling, concat, 1x1)."""

    def __init__(self, cin: int, rates: tuple[int, int, int], channels: int = 256, dropout: float = 0.1):
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(cin, channels, 1)] + [conv_bn_relu(cin, channels, 3, dilation=r) for r in rates]
            + [ImagePooling(cin, channels)]
        )
        self.project = nn.Sequential(conv_bn_relu(len(self.branches) * channels, channels, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


def _aspp_rates(output_stride: int) -> tuple[int, int, int]:
    if output_stride == 16:
        return (6, 12, 18)
    if output_stride == 8:
        return (12, 24, 36)
    raise ValueError(f"DeepLab v3/v3+ output_stride must be 16 or 8, got {output_stride!r}")


class DeepLabV3(_ResNetSeg):
    """DeepLab v3 on a ResNet. (B,3,H,W) -> (B,num_classes,H,W).

    Args: num_classes; depth (18/50/101); output_stride 16 (default) or 8; aspp_channels (256);
    pretrained_backbone (``"imagenet"``, ``"imagenet1k_v2"``
    or a local torchvision resnet state_dict file).
    """

    def __init__(self, num_classes: int, depth: int = 101, output_stride: int = 16, aspp_channels: int = 256,
                 pretrained_backbone: str | None = None):
        super().__init__(num_classes)
        rates = _aspp_rates(output_stride)
        self._make_backbone(depth, output_stride, pretrained_backbone)
        self.aspp = ASPP(self.backbone.out_channels, rates, aspp_channels)
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        out = self.classifier(self.aspp(self.backbone(x)["out"]))
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


class DeepLabV3Plus(_ResNetSeg):
    """DeepLab v3+ on a ResNet. (B,3,H,W) -> (B,num_classes,H,W); decoder at stride 4.

    Args: num_classes; depth (18/50/101); output_stride 16 (default) or 8; aspp_channels (256);
    low_level_channels (48); decoder_channels (256); pretrained_backbone (``"imagenet"``, ``"imagenet1k_v2"``
    or a local torchvision resnet state_dict file).
    """

    def __init__(self, num_classes: int, depth: int = 101, output_stride: int = 16, aspp_channels: int = 256,
                 low_level_channels: int = 48, decoder_channels: int = 256, pretrained_backbone: str | None = None):
        super().__init__(num_classes)
        rates = _aspp_rates(output_stride)
        self._make_backbone(depth, output_stride, pretrained_backbone)
        self.aspp = ASPP(self.backbone.out_channels, rates, aspp_channels)
        self.reduce = conv_bn_relu(self.backbone.low_channels, low_level_channels, 1)
        self.decoder = nn.Sequential(
            conv_bn_relu(aspp_channels + low_level_channels, decoder_channels, 3),
            conv_bn_relu(decoder_channels, decoder_channels, 3),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        feats = self.backbone(x)
        low = self.reduce(feats["low"])
        high = F.interpolate(self.aspp(feats["out"]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        out = self.classifier(self.decoder(torch.cat([high, low], dim=1)))
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
