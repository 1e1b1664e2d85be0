"""DeconvNet (Noh, Hong, Han, "Learning Deconvolution Network for Semantic Segmentation", ICCV 2015).

Encoder: VGG16-BN conv layers whose 2x2 max pools keep their switches; fc6 = 7x7 conv (512->4096) and
fc7 = 1x1 conv (4096->4096), each with BN + ReLU. Decoder mirrors the encoder: deconv-fc6 = 7x7 transposed conv
(4096->512), then for each stage (5..1) max-unpooling with the saved switches followed by 3x3 transposed convs
(stride 1) with BN + ReLU, channel counts mirrored (512,512,512 | 512,512,256 | 256,256,128 | 128,64 | 64,64), and a
1x1 score conv (64->num_classes). About 252M parameters, as the paper states.

Input size: H and W must be divisible by 32 (five unpoolings restore the exact size). fc6 as in the paper is a
*valid* 7x7 conv, so the pool5 map must be at least 7x7: H, W >= 224. ``fc6_padding=3`` ('same' 7x7, same
parameter count) lifts that to any multiple of 32 (>= 32), e.g. 64x64 for tests or 128x128 demos.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbones import VGG16Features
from .common import SegmentationModel
from .pretrained import load_backbone_weights, vgg_fc_to_conv

# Decoder channels per stage, from stage 5 down to stage 1: the mirror of VGG16_STAGES.
_DECODER = ((512, 512, 512), (512, 512, 256), (256, 256, 128), (128, 64), (64, 64))


def _deconv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DeconvNet(SegmentationModel):
    """DeconvNet on VGG16-BN. ``forward``: (B,3,H,W) -> logits (B,num_classes,H,W).

    Args:
        num_classes: output channels.
        fc6_padding: 0 (paper: valid 7x7 fc6, needs H,W >= 224) or 3 ('same', any multiple of 32).
        fc_channels: width of fc6/fc7 (paper 4096); smaller values give a light model for demos.
        pretrained_backbone: ``"imagenet"`` (torchvision's ``vgg16_bn`` ImageNet weights, downloaded once into
            torch's hub cache) or a local ``vgg16_bn`` state_dict file. The 13 conv layers (and their BN) load by
            key; when the state has VGG16's classifier, fc6 (a (4096, 25088) linear layer over the 512x7x7 pool5
            map) becomes the 7x7 conv fc6 by reshaping to (4096, 512, 7, 7), and fc7 the 1x1 conv fc7, as in the
            paper; their BN layers and the decoder start from random weights. fc6/fc7 load only with
            ``fc_channels=4096``.
    """

    size_multiple = 32

    def __init__(self, num_classes: int, fc6_padding: int = 0, fc_channels: int = 4096,
                 pretrained_backbone: str | None = None):
        super().__init__(num_classes)
        if fc6_padding not in (0, 3):
            raise ValueError(f"fc6_padding must be 0 (paper, valid 7x7) or 3 ('same'), got {fc6_padding!r}")
        if isinstance(fc_channels, bool) or not isinstance(fc_channels, int) or fc_channels < 1:
            raise ValueError(f"fc_channels must be a positive int, got {fc_channels!r}")
        self.min_size = 224 if fc6_padding == 0 else 32
        if fc6_padding == 0:
            self.size_hint = "create_model(..., fc6_padding=3) accepts any multiple of 32."
        self.backbone = VGG16Features("deconvnet", batch_norm=True)
        fc = fc_channels
        self.fc = nn.Sequential(
            nn.Conv2d(512, fc, 7, padding=fc6_padding), nn.BatchNorm2d(fc), nn.ReLU(inplace=True),  # fc6
            nn.Conv2d(fc, fc, 1), nn.BatchNorm2d(fc), nn.ReLU(inplace=True),  # fc7
            nn.ConvTranspose2d(fc, 512, 7, padding=fc6_padding), nn.BatchNorm2d(512), nn.ReLU(inplace=True),
        )
        self.unpool = nn.MaxUnpool2d(2, 2)
        stages = []
        cin = 512
        for chans in _DECODER:
            layers = []
            for c in chans:
                layers.append(_deconv_bn_relu(cin, c))
                cin = c
            stages.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(stages)
        self.score = nn.Conv2d(64, num_classes, 1)
        if pretrained_backbone is not None:
            loaded = load_backbone_weights(self.backbone, pretrained_backbone, "vgg16_bn")
            if fc_channels == 4096:
                vgg_fc_to_conv(loaded, self.fc[0], self.fc[3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x, switches, sizes = self.backbone(x)
        x = self.fc(x)
        for stage, idx, size in zip(self.decoder, reversed(switches), reversed(sizes)):
            x = stage(self.unpool(x, idx, output_size=size))
        return self.score(x)
